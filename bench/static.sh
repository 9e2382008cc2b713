#!/usr/bin/env bash
# Static files through TQServer against the anchor, nginx, in the same run:
# a 4 KiB CSS file and a 1 MiB JS file from a PHP worker's document root,
# keep-alive (wrk -t2 -c32). nginx with Debian's defaults for files
# (`sendfile on`, `tcp_nopush on`), no open_file_cache, access log off
# (TQServer: no access log either). Rounds alternate; medians go into the
# static section of docs/BENCHMARKS.md.
#
#   bench/static.sh                         # 5 rounds of 10 s each
#   ROUNDS=3 DURATION=5s bench/static.sh    # quicker, noisier
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$(pwd)

rounds=${ROUNDS:-5}
duration=${DURATION:-10s}
threads=2
conns=32

source bench/lib.sh
trap 'echo "bench/static.sh: line $LINENO failed: $BASH_COMMAND" >&2' ERR
need_packages nginx:nginx wrk:wrk

cargo build --release --locked -p tqserver >&2

tq_port=$(free_port)
nginx_port=$(free_port)
docroot="$work/public"
mkdir -p "$docroot"
# Text, as CSS and JS are (not that either server compresses here).
head -c 3072 /dev/urandom | base64 -w 76 | head -c 4096 > "$docroot/style.css"
head -c 786432 /dev/urandom | base64 -w 76 | head -c 1048576 > "$docroot/app.js"

mkdir -p "$work/tq/config" "$work/tq/workers/site/config"
cat > "$work/tq/config/server.yaml" <<YAML
server:
  host: 127.0.0.1
  port: $tq_port
workers:
  directory: workers
YAML
cat > "$work/tq/workers/site/config/worker.yaml" <<YAML
path: /
type: php
document_root: $docroot
php:
  pool:
    manager: static
    max_workers: 1
YAML
(cd "$work/tq" && exec "$root_dir/target/release/tqserver" --mode prod --admin-listen "" > "$work/tq.log" 2>&1) &
pids+=($!)

start_nginx "$(cat <<NGINX
    include /etc/nginx/mime.types;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$nginx_port;
        root $docroot;
    }
NGINX
)"

for base in "http://127.0.0.1:$tq_port" "http://127.0.0.1:$nginx_port"; do
    for f in style.css app.js; do
        for _ in $(seq 1 100); do curl -fs -o /dev/null "$base/$f" && break; sleep 0.1; done
        curl -fs "$base/$f" | cmp -s - "$docroot/$f" || { echo "bench/static.sh: $base/$f is not the file" >&2; cat "$work/tq.log" >&2; exit 1; }
    done
done

for f in style.css app.js; do
    measure 2s "http://127.0.0.1:$nginx_port/$f" >/dev/null
    measure 2s "http://127.0.0.1:$tq_port/$f" >/dev/null
done

results="$work/results"
: > "$results"
for r in $(seq 1 "$rounds"); do
    echo "round $r/$rounds" >&2
    for f in style.css app.js; do
        echo "$f nginx $(measure "$duration" "http://127.0.0.1:$nginx_port/$f")" >> "$results"
        echo "$f tqserver $(measure "$duration" "http://127.0.0.1:$tq_port/$f")" >> "$results"
    done
done
cat "$results" >&2

python3 - "$results" "$rounds" "$duration" "$threads" "$conns" <<'PY'
import datetime, sys
results, rounds, duration, threads, conns = sys.argv[1:]
sys.path.insert(0, "bench")
from benchdoc import machine, medians, read_rounds, spread, write_section
rows = read_rounds(results)
med = medians(rows)
names = {"style.css": "4 KiB CSS file", "app.js": "1 MiB JS file"}
lines = []
for test in ["style.css", "app.js"]:
    n, t = med[(test, "nginx")], med[(test, "tqserver")]
    lines.append(
        f"| {names[test]} | {n[0]:.0f} | {t[0]:.0f} | **{t[0] / n[0]:.2f}×** | {n[1]:.2f} / {t[1]:.2f} ms "
        f"| ±{spread(rows[(test, 'nginx')]):.0f}% / ±{spread(rows[(test, 'tqserver')]):.0f}% |"
    )
ratios = "; ".join(
    f"{names[test]} " + ", ".join(f"{t / n:.2f}" for (n, _), (t, _) in zip(rows[(test, 'nginx')], rows[(test, 'tqserver')]))
    for test in ["style.css", "app.js"]
)
table = "\n".join(lines)
section = f"""<!-- static:begin (written by bench/static.sh; edit the script, not this section) -->
## Static files: tqserver against nginx `sendfile on`

Measured {datetime.date.today().isoformat()} on {machine()} with `bench/static.sh`:
{rounds} rounds of {duration} alternating between the two, medians shown.
The same files from a PHP worker's document root (TQServer) and nginx's
`root` with Debian's defaults for files (`sendfile on`, `tcp_nopush on`,
no `open_file_cache`), keep-alive, no access log; wrk `-t{threads} -c{conns}`.
Clients and servers share the 2 cores.

| file | nginx req/s | tqserver req/s | ratio | p99 nginx / tqserver | round spread (nginx / tqserver) |
|---|---:|---:|---:|---:|---:|
{table}

Ratio in each round: {ratios}.
<!-- static:end -->
"""
write_section("static", section)
PY
