#!/usr/bin/env bash
# Native workers through TQServer against the anchor, nginx, in the same run:
#   wrk → index worker                    (direct: the worker's own port, no proxy)
#   wrk → tqserver → index worker         (--mode prod: cargo --release build)
#   wrk → nginx proxy_pass → index worker (upstream keepalive 32, HTTP/1.1)
# on /bench of workers/index (the SDK demo worker, answering
# "Hello, World!"). Rounds alternate; medians go into docs/BENCHMARKS.md.
# Then the reload latency in dev mode: save src/main.rs → first response
# from the new code, 10 times (bench/reload.py).
#
#   bench/native.sh                        # 5 rounds of 10 s each
#   ROUNDS=3 DURATION=5s bench/native.sh   # quicker, noisier
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$(pwd)

rounds=${ROUNDS:-5}
duration=${DURATION:-10s}
threads=2
conns=32

source bench/lib.sh
need_packages nginx:nginx wrk:wrk

cargo build --release --locked -p tqserver >&2

tq_port=$(free_port)
nginx_port=$(free_port)
range=$(( (RANDOM % 200) * 100 + 30000 ))

# A copy of workers/index (its path dependency made absolute) whose target/
# lives in the repository's target/ (so later runs reuse the dependencies),
# apart from workers/index/target: one target dir per source folder, or
# cargo may leave another folder's executable in place.
project() {
    mkdir -p "$1/config" "$1/workers/index/config"
    cp -r "$root_dir/workers/index/src" "$root_dir/workers/index/Cargo.lock" "$1/workers/index/"
    sed "s|path = \"../../crates/tqserver-worker\"|path = \"$root_dir/crates/tqserver-worker\"|" \
        "$root_dir/workers/index/Cargo.toml" > "$1/workers/index/Cargo.toml"
    mkdir -p "$root_dir/target/bench-index-$4"
    ln -s "$root_dir/target/bench-index-$4" "$1/workers/index/target"
    printf 'path: /\ntype: rust\n' > "$1/workers/index/config/worker.yaml"
    cat > "$1/config/server.yaml" <<EOF
server:
  host: 127.0.0.1
  port: $2
workers:
  directory: workers
  port_range_start: $3
  port_range_end: $(( $3 + 50 ))
file_watcher:
  debounce_ms: 50
EOF
}

project "$work/prod" "$tq_port" "$range" prod
(cd "$work/prod" && exec "$root_dir/target/release/tqserver" --mode prod --admin-listen "127.0.0.1:$(free_port)" > "$work/prod.log" 2>&1) &
pids+=($!)
tq_url="http://127.0.0.1:$tq_port/bench"
echo "bench/native.sh: waiting for the release build of workers/index" >&2
for _ in $(seq 1 3000); do
    if curl -fs "$tq_url" 2>/dev/null | grep -q Hello; then break; fi
    sleep 0.2
done
curl -fs "$tq_url" | grep -q Hello || { echo "bench/native.sh: $tq_url does not answer" >&2; cat "$work/prod.log" >&2; exit 1; }
worker_port=$(grep -o 'serves on port(s) [0-9]*' "$work/prod.log" | tail -1 | awk '{print $4}')
direct_url="http://127.0.0.1:$worker_port/bench"

start_nginx "$(cat <<EOF
    upstream index_worker {
        server 127.0.0.1:$worker_port;
        keepalive 32;
    }
    server {
        listen 127.0.0.1:$nginx_port;
        location / {
            proxy_pass http://index_worker;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
EOF
)"
nginx_url="http://127.0.0.1:$nginx_port/bench"
for _ in $(seq 1 100); do curl -fs "$nginx_url" >/dev/null 2>&1 && break; sleep 0.1; done

for u in "$direct_url" "$tq_url" "$nginx_url"; do measure 2s "$u" >/dev/null; done
results="$work/results"
: > "$results"
for r in $(seq 1 "$rounds"); do
    echo "round $r/$rounds" >&2
    echo "nginx $(measure "$duration" "$nginx_url")" >> "$results"
    echo "tqserver $(measure "$duration" "$tq_url")" >> "$results"
    echo "direct $(measure "$duration" "$direct_url")" >> "$results"
done
cat "$results" >&2

# Reload latency, dev mode (debug build).
dev_port=$(free_port)
project "$work/dev" "$dev_port" $(( range + 60 )) dev
(cd "$work/dev" && exec "$root_dir/target/release/tqserver" --mode dev --admin-listen "127.0.0.1:$(free_port)" > "$work/dev.log" 2>&1) &
pids+=($!)
reload=$(python3 "$root_dir/bench/reload.py" "http://127.0.0.1:$dev_port/" "$work/dev/workers/index/src/main.rs" 10)
echo "reload: $reload" >&2

python3 - "$results" "$rounds" "$duration" "$threads" "$conns" "$reload" <<'PY'
import datetime, statistics, sys
results, rounds, duration, threads, conns, reload = sys.argv[1:]
rows = {}
for line in open(results):
    who, rps, p99 = line.split()
    rows.setdefault(who, []).append((float(rps), float(p99)))
med = {w: (statistics.median(r for r, _ in v), statistics.median(p for _, p in v)) for w, v in rows.items()}
times = [float(x) for x in reload.split()]
sys.path.insert(0, "bench")
from benchdoc import machine, write_section
machine = machine()
ratio = lambda w: med[w][0] / med["nginx"][0]
all_rounds = "; ".join(f"{w} " + ", ".join(f"{r:.0f}" for r, _ in v) for w, v in rows.items())
# Proxy cost per request: 1/rps(proxy) - 1/rps(direct), in µs of the 2 cores' time.
cost = lambda w: (1 / med[w][0] - 1 / med["direct"][0]) * 1e6
section = f"""<!-- native:begin (written by bench/native.sh; edit the script, not this section) -->
## Native workers: tqserver against nginx `proxy_pass`

Measured {datetime.date.today().isoformat()} on {machine} with `bench/native.sh`:
`wrk -t{threads} -c{conns} -d{duration} --latency` on `/bench` of `workers/index`
(the Rust demo worker on `tqserver-worker`, release build, one instance),
{rounds} rounds alternating between them, medians shown. nginx proxies with
HTTP/1.1 and an upstream `keepalive 32`, `access_log off`; tqserver runs
`--mode prod`. wrk, the proxies and the worker share the 2 cores.

| path | requests/s | p99 latency | ratio to nginx | added per request |
|---|---:|---:|---:|---:|
| wrk → worker (no proxy) | {med['direct'][0]:.0f} | {med['direct'][1]:.2f} ms | {ratio('direct'):.2f}× | — |
| wrk → nginx → worker | {med['nginx'][0]:.0f} | {med['nginx'][1]:.2f} ms | 1.00× | {cost('nginx'):.0f} µs |
| wrk → tqserver → worker | {med['tqserver'][0]:.0f} | {med['tqserver'][1]:.2f} ms | {ratio('tqserver'):.2f}× | {cost('tqserver'):.0f} µs |

"Added per request" is 1/throughput with the proxy minus 1/throughput
without: the machine time one proxied request costs on top of the worker.

Reload latency, dev mode: `src/main.rs` of the index worker saved → first
response with the new text, polling every 10 ms, debug build, 10 saves:
median **{statistics.median(times):.2f} s** (min {min(times):.2f}, max {max(times):.2f});
every save: {", ".join(f"{t:.2f}" for t in times)} s. This includes the
50 ms debounce, cargo's incremental build and link, the new instance's start
and its first `/health`.

Every round (requests/s): {all_rounds}.
<!-- native:end -->
"""
write_section("native", section)
PY
