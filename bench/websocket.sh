#!/usr/bin/env bash
# WebSocket echo through TQServer against the anchor, nginx, in the same run:
#   ws_load → echo worker                     (direct: the worker's own port)
#   ws_load → tqserver → echo worker          (a type: command worker)
#   ws_load → nginx proxy_pass → echo worker  (Upgrade / Connection passed)
# The echo worker and the load generator are examples of the tqserver crate
# (crates/tqserver/examples/ws_echo.rs, ws_load.rs; tokio-tungstenite):
# 32 connections, each sending a 32-byte text message and waiting for its
# echo, again and again. Rounds alternate; medians go into
# docs/BENCHMARKS.md.
#
#   bench/websocket.sh                        # 5 rounds of 10 s each
#   ROUNDS=3 DURATION=5 bench/websocket.sh    # quicker, noisier
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$(pwd)

rounds=${ROUNDS:-5}
duration=${DURATION:-10}
conns=32

source bench/lib.sh
need_packages nginx:nginx

cargo build --release --locked -p tqserver --bin tqserver --example ws_echo --example ws_load >&2
echo_bin="$root_dir/target/release/examples/ws_echo"
load_bin="$root_dir/target/release/examples/ws_load"

tq_port=$(free_port)
nginx_port=$(free_port)
range=$(( (RANDOM % 200) * 100 + 30000 ))
mkdir -p "$work/tq/config" "$work/tq/workers/echo/config"
cat > "$work/tq/config/server.yaml" <<EOF
server:
  host: 127.0.0.1
  port: $tq_port
workers:
  directory: workers
  port_range_start: $range
  port_range_end: $(( range + 50 ))
EOF
printf 'path: /\ntype: command\ncommand:\n  run: ["%s"]\n' "$echo_bin" > "$work/tq/workers/echo/config/worker.yaml"
(cd "$work/tq" && exec "$root_dir/target/release/tqserver" --mode prod --admin-listen "127.0.0.1:$(free_port)" > "$work/tq.log" 2>&1) &
pids+=($!)
for _ in $(seq 1 100); do
    grep -q 'serves on port(s)' "$work/tq.log" 2>/dev/null && break
    sleep 0.1
done
worker_port=$(grep -o 'serves on port(s) [0-9]*' "$work/tq.log" | tail -1 | awk '{print $4}')
[[ -n "$worker_port" ]] || { echo "$0: the echo worker did not start" >&2; cat "$work/tq.log" >&2; exit 1; }

start_nginx "$(cat <<EOF
    upstream echo_worker {
        server 127.0.0.1:$worker_port;
        keepalive 32;
    }
    server {
        listen 127.0.0.1:$nginx_port;
        location / {
            proxy_pass http://echo_worker;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Host \$host;
            proxy_read_timeout 600s;
        }
    }
EOF
)"
for _ in $(seq 1 100); do (echo > /dev/tcp/127.0.0.1/$nginx_port) 2>/dev/null && break; sleep 0.1; done

declare -A url=(
    [direct]="ws://127.0.0.1:$worker_port/ws"
    [tqserver]="ws://127.0.0.1:$tq_port/ws"
    [nginx]="ws://127.0.0.1:$nginx_port/ws"
)
for who in direct tqserver nginx; do "$load_bin" "${url[$who]}" "$conns" 1 >/dev/null; done
results="$work/results"
: > "$results"
for r in $(seq 1 "$rounds"); do
    echo "round $r/$rounds" >&2
    for who in nginx tqserver direct; do
        echo "$who $("$load_bin" "${url[$who]}" "$conns" "$duration")" >> "$results"
    done
done
cat "$results" >&2

python3 - "$results" "$rounds" "$duration" "$conns" <<'PY'
import datetime, statistics, sys
results, rounds, duration, conns = sys.argv[1:]
rows = {}
for line in open(results):
    who, rate, p99 = line.split()
    rows.setdefault(who, []).append((float(rate), float(p99)))
med = {w: (statistics.median(r for r, _ in v), statistics.median(p for _, p in v)) for w, v in rows.items()}
spread = {w: (min(r for r, _ in v), max(r for r, _ in v)) for w, v in rows.items()}
sys.path.insert(0, "bench")
from benchdoc import machine, write_section
ratio = lambda w: med[w][0] / med["nginx"][0]
all_rounds = "; ".join(f"{w} " + ", ".join(f"{r:.0f}" for r, _ in v) for w, v in rows.items())
section = f"""<!-- websocket:begin (written by bench/websocket.sh; edit the script, not this section) -->
## WebSocket: tqserver against nginx `proxy_pass`

Measured {datetime.date.today().isoformat()} on {machine()} with `bench/websocket.sh`:
{conns} WebSocket connections (`examples/ws_load.rs`), each sending a 32-byte
text message and waiting for its echo from `examples/ws_echo.rs`
(tokio-tungstenite), for {duration} s, {rounds} rounds alternating, medians
shown. nginx passes `Upgrade` / `Connection`; tqserver runs `--mode prod` with
the echo server as a `type: command` worker. Load generator, proxies and
worker share the 2 cores.

| path | messages/s | p99 round trip | ratio to nginx | lowest–highest round |
|---|---:|---:|---:|---:|
| ws_load → worker (no proxy) | {med['direct'][0]:.0f} | {med['direct'][1]:.2f} ms | {ratio('direct'):.2f}× | {spread['direct'][0]:.0f}–{spread['direct'][1]:.0f} |
| ws_load → nginx → worker | {med['nginx'][0]:.0f} | {med['nginx'][1]:.2f} ms | 1.00× | {spread['nginx'][0]:.0f}–{spread['nginx'][1]:.0f} |
| ws_load → tqserver → worker | {med['tqserver'][0]:.0f} | {med['tqserver'][1]:.2f} ms | {ratio('tqserver'):.2f}× | {spread['tqserver'][0]:.0f}–{spread['tqserver'][1]:.0f} |

Every round (messages/s): {all_rounds}.
<!-- websocket:end -->
"""
write_section("websocket", section)
PY
