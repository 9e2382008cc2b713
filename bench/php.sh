#!/usr/bin/env bash
# PHP through TQServer against the anchor, nginx, in the same run:
#   wrk → nginx → php-fpm                 (stock Debian fastcgi config, php-fpm pool of 2 static children)
#   wrk → tqserver → php-fpm              (the php-fpm TQServer starts, the same pool: 2 static children)
#   wrk → tqserver → php-cgi              (TQServer's own process manager, 2 static php-cgi processes)
#   wrk → tqserver → embedded PHP         (php.backend: embed, 2 processes forked from one master)
#   wrk → tqserver → embed, worker mode   (php.worker: a script that echoes the same, booted once per process)
#   wrk → nginx → tqserver → php-cgi      (nginx fastcgi_pass to TQServer's FastCGI listener, same pool,
#                                          without and with nginx's upstream keep-alive)
# on workers/blog/public/hello.php. Rounds alternate between them;
# medians go into the PHP section of docs/BENCHMARKS.md.
#
#   bench/php.sh                          # 5 rounds of 10 s each
#   ROUNDS=3 DURATION=5s bench/php.sh     # quicker, noisier
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$(pwd)

rounds=${ROUNDS:-5}
duration=${DURATION:-10s}
threads=2
conns=32

source bench/lib.sh
need_packages php-fpm:php-fpm php-cgi:php-cgi nginx:nginx wrk:wrk

cargo build --release --locked -p tqserver >&2

nginx_port=$(free_port)
nginx2_port=$(free_port)
nginx3_port=$(free_port)
tq_port=$(free_port)
docroot="$root_dir/workers/blog/public"
start_anchor_fpm

start_nginx "$(cat <<EOF
    include /etc/nginx/mime.types;
    sendfile on;
    keepalive_timeout 65;
$(php_server "$nginx_port" "unix:$work/fpm.sock")
    # The same, with TQServer's FastCGI listener in place of php-fpm.
$(php_server "$nginx2_port" "unix:$work/tq.sock")
    # And with kept-alive connections to it: TQServer does not tie a
    # connection to a PHP process, so nginx may keep them (unlike php-fpm).
    upstream tqserver_listener {
        server unix:$work/tq.sock;
        keepalive 16;
    }
$(php_server "$nginx3_port" tqserver_listener $'\n            fastcgi_keep_conn on;')
EOF
)"

# TQServer with the same pool, in prod mode, no access log.
mkdir -p "$work/tq/config" "$work/tq/workers/blog/config"
cat > "$work/tq/config/server.yaml" <<EOF
server:
  host: 127.0.0.1
  port: $tq_port
workers:
  directory: workers
EOF
cat > "$work/tq/workers/blog/config/worker.yaml" <<EOF
path: /blog
type: php
document_root: $docroot
php:
  pool:
    manager: static
    max_workers: 2
EOF
mkdir -p "$work/tq/workers/cgi/config"
cat > "$work/tq/workers/cgi/config/worker.yaml" <<EOF
path: /cgi
type: php
document_root: $docroot
php:
  backend: cgi
  pool:
    manager: static
    max_workers: 2
fastcgi:
  listen: unix:$work/tq.sock
  mode: "0666"
EOF
mkdir -p "$work/tq/workers/embed/config"
cat > "$work/tq/workers/embed/config/worker.yaml" <<EOF
path: /embed
type: php
document_root: $docroot
php:
  backend: embed
  pool:
    manager: static
    max_workers: 2
EOF
# Worker mode: the same answer from a worker script's handler.
cat > "$work/hello-worker.php" <<'EOF'
<?php
$hello = static function () {
    echo "Hello\n";
};
while (tqserver_handle_request($hello)) {
}
EOF
mkdir -p "$work/tq/workers/worker/config"
cat > "$work/tq/workers/worker/config/worker.yaml" <<EOF
path: /worker
type: php
document_root: $docroot
php:
  backend: embed
  worker: $work/hello-worker.php
  pool:
    manager: static
    max_workers: 2
EOF
(cd "$work/tq" && exec "$root_dir/target/release/tqserver" --mode prod --quiet --admin-listen "127.0.0.1:$(free_port)") &
pids+=($!)

nginx_url="http://127.0.0.1:$nginx_port/hello.php"
tq_url="http://127.0.0.1:$tq_port/blog/hello.php"
cgi_url="http://127.0.0.1:$tq_port/cgi/hello.php"
embed_url="http://127.0.0.1:$tq_port/embed/hello.php"
worker_url="http://127.0.0.1:$tq_port/worker/hello.php"
listener_url="http://127.0.0.1:$nginx2_port/hello.php"
keepalive_url="http://127.0.0.1:$nginx3_port/hello.php"
wait_hello "$nginx_url" "$tq_url" "$cgi_url" "$embed_url" "$worker_url" "$listener_url" "$keepalive_url"

measure 2s "$nginx_url" >/dev/null
measure 2s "$tq_url" >/dev/null
measure 2s "$cgi_url" >/dev/null
measure 2s "$embed_url" >/dev/null
measure 2s "$worker_url" >/dev/null
measure 2s "$listener_url" >/dev/null
measure 2s "$keepalive_url" >/dev/null
results="$work/results"
: > "$results"
for r in $(seq 1 "$rounds"); do
    echo "round $r/$rounds" >&2
    echo "nginx $(measure "$duration" "$nginx_url")" >> "$results"
    echo "tqserver $(measure "$duration" "$tq_url")" >> "$results"
    echo "tqserver-cgi $(measure "$duration" "$cgi_url")" >> "$results"
    echo "tqserver-embed $(measure "$duration" "$embed_url")" >> "$results"
    echo "tqserver-worker $(measure "$duration" "$worker_url")" >> "$results"
    echo "listener-cgi $(measure "$duration" "$listener_url")" >> "$results"
    echo "listener-keepalive $(measure "$duration" "$keepalive_url")" >> "$results"
done
cat "$results" >&2

python3 - "$results" "$rounds" "$duration" "$threads" "$conns" <<'PY'
import datetime, statistics, sys
results, rounds, duration, threads, conns = sys.argv[1:]
rows = {}
for line in open(results):
    who, rps, p99 = line.split()
    rows.setdefault(who, []).append((float(rps), float(p99)))
med = {w: (statistics.median(r for r, _ in v), statistics.median(p for _, p in v)) for w, v in rows.items()}
sys.path.insert(0, "bench")
from benchdoc import machine, write_section
machine = machine()
ratio = lambda w: med[w][0] / med["nginx"][0]
all_rounds = "; ".join(f"{w} " + ", ".join(f"{r:.0f}" for r, _ in v) for w, v in rows.items())
spread = "; ".join(f"{w} {min(r for r, _ in v) / max(r for r, _ in rows['nginx']):.2f}–{max(r for r, _ in v) / min(r for r, _ in rows['nginx']):.2f}×" for w, v in rows.items() if w != "nginx")
section = f"""<!-- php:begin (written by bench/php.sh; edit the script, not this section) -->
## PHP: tqserver against nginx → php-fpm

Measured {datetime.date.today().isoformat()} on {machine} with `bench/php.sh`:
`wrk -t{threads} -c{conns} -d{duration} --latency` on `hello.php`, {rounds} rounds
alternating between them, medians shown. Every PHP pool has 2
processes: php-fpm `pm = static` with 2 children (nginx's, and the one
tqserver runs), TQServer's own `backend: cgi` pool of 2 static php-cgi
processes, or its `backend: embed` runtime (2 processes forked from one
master that started PHP once; the embed SAPI's php.ini, opcache on as
php-fpm's). nginx uses Debian's `snippets/fastcgi-php.conf` (no upstream
keep-alive), `access_log off`. The worker-mode row runs a script that
boots once per process and echoes the same line from its
`tqserver_handle_request()` handler: on hello.php it measures what a
request costs without compiling and starting a script, not an
application's boot. tqserver runs `--mode prod` without access
log, with its admin listener on (request metrics recorded, as by default).
wrk, the servers and PHP share the 2 cores.

| server | requests/s | p99 latency | ratio to nginx |
|---|---:|---:|---:|
| nginx → php-fpm | {med['nginx'][0]:.0f} | {med['nginx'][1]:.2f} ms | 1.00× |
| tqserver → php-fpm | {med['tqserver'][0]:.0f} | {med['tqserver'][1]:.2f} ms | {ratio('tqserver'):.2f}× |
| tqserver → php-cgi (TQServer's pool) | {med['tqserver-cgi'][0]:.0f} | {med['tqserver-cgi'][1]:.2f} ms | {ratio('tqserver-cgi'):.2f}× |
| tqserver → embedded PHP (`backend: embed`) | {med['tqserver-embed'][0]:.0f} | {med['tqserver-embed'][1]:.2f} ms | {ratio('tqserver-embed'):.2f}× |
| tqserver → embed, worker mode (`php.worker`, the same echo in a handler) | {med['tqserver-worker'][0]:.0f} | {med['tqserver-worker'][1]:.2f} ms | {ratio('tqserver-worker'):.2f}× |
| nginx → tqserver FastCGI listener → php-cgi | {med['listener-cgi'][0]:.0f} | {med['listener-cgi'][1]:.2f} ms | {ratio('listener-cgi'):.2f}× |
| the same, nginx keeping connections alive | {med['listener-keepalive'][0]:.0f} | {med['listener-keepalive'][1]:.2f} ms | {ratio('listener-keepalive'):.2f}× |

The listener rows go over a Unix socket, as nginx's own php-fpm does;
"keeping connections alive" is `fastcgi_keep_conn on` with an upstream
`keepalive 16`, which php-fpm cannot use well (a kept connection holds a
php-fpm child) and TQServer can (it hands each request to a free process).

Every round (requests/s): {all_rounds}.

Widest spread of the ratios between rounds (slowest round against nginx's
fastest, and fastest against its slowest): {spread}.
<!-- php:end -->
"""
write_section("php", section)
PY
