#!/usr/bin/env bash
# HTTPS through TQServer against the anchor, nginx, in the same run, with
# the same certificate (ECDSA P-256), TLS 1.3 only, HTTP/2 on:
#   php-h1   wrk (HTTPS keep-alive, HTTP/1.1) → server → php-fpm (2 static children) on hello.php
#   php-h2   h2load (HTTP/2, 32 connections, 1 stream each) → server → php-fpm
#   newconn  wrk with "Connection: close" (a TLS handshake per request) → server → index worker
#   native   wrk (HTTPS keep-alive) → server → the index worker (nginx: proxy_pass, keepalive 32)
# Rounds alternate between nginx and tqserver; medians (and every round)
# go into the TLS section of docs/BENCHMARKS.md.
#
#   bench/tls.sh                          # 5 rounds of 10 s each
#   ROUNDS=3 DURATION=5 bench/tls.sh      # quicker, noisier (DURATION in seconds)
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$(pwd)

rounds=${ROUNDS:-5}
duration=${DURATION:-10}
threads=2
conns=32

source bench/lib.sh
trap 'echo "bench/tls.sh: line $LINENO failed: $BASH_COMMAND" >&2' ERR
need_packages php-fpm:php-fpm nginx:nginx wrk:wrk h2load:nghttp2-client openssl:openssl

cargo build --release --locked -p tqserver >&2

nginx_php=$(free_port)
nginx_native=$(free_port)
tq_port=$(free_port)
tq_tls=$(free_port)
range=$(( (RANDOM % 200) * 100 + 30000 ))
docroot="$root_dir/workers/blog/public"

# One certificate for both servers.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$work/key.pem" -out "$work/cert.pem" -days 7 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null

start_anchor_fpm

# TQServer twice: at its default thread count (one runtime thread per core)
# and with `server.threads: 1`. Each has the PHP worker on php-fpm (the same
# pool) and the index worker (a release build, as in bench/native.sh), prod
# mode, no access log.
# tq_project DIR HTTP_PORT TLS_PORT RANGE THREADS_LINE: writes and starts one.
tq_project() {
    local dir=$1 http=$2 tls=$3 range=$4 threads_line=$5
    mkdir -p "$dir/config" "$dir/workers/blog/config" "$dir/workers/index/config"
    cat > "$dir/config/server.yaml" <<EOF
server:
  host: 127.0.0.1
  port: $http
  $threads_line
  tls:
    port: $tls
    min_version: "1.3"
    certificates:
      - { cert: $work/cert.pem, key: $work/key.pem }
workers:
  directory: workers
  port_range_start: $range
  port_range_end: $(( range + 50 ))
EOF
    cat > "$dir/workers/blog/config/worker.yaml" <<EOF
path: /blog
type: php
document_root: $docroot
php:
  pool:
    manager: static
    max_workers: 2
EOF
    cp -r "$root_dir/workers/index/src" "$root_dir/workers/index/Cargo.lock" "$dir/workers/index/"
    sed "s|path = \"../../crates/tqserver-worker\"|path = \"$root_dir/crates/tqserver-worker\"|" \
        "$root_dir/workers/index/Cargo.toml" > "$dir/workers/index/Cargo.toml"
    ln -s "$root_dir/target/bench-index-prod" "$dir/workers/index/target"
    printf 'path: /\ntype: rust\n' > "$dir/workers/index/config/worker.yaml"
    (cd "$dir" && exec "$root_dir/target/release/tqserver" --mode prod --admin-listen "127.0.0.1:$(free_port)" > "$dir.log" 2>&1) &
    pids+=($!)
}
# tq_wait URL LOG: until the index worker answers.
tq_wait() {
    echo "bench/tls.sh: waiting for the release build of workers/index ($1)" >&2
    for _ in $(seq 1 3000); do
        if curl -kfs "$1" 2>/dev/null | grep -q Hello; then return 0; fi
        sleep 0.2
    done
    echo "bench/tls.sh: $1 does not answer" >&2
    cat "$2" >&2
    exit 1
}
mkdir -p "$root_dir/target/bench-index-prod"
tq1_port=$(free_port)
tq1_tls=$(free_port)
tq_project "$work/tq" "$tq_port" "$tq_tls" "$range" ""
tq_native="https://127.0.0.1:$tq_tls/bench"
tq_wait "$tq_native" "$work/tq.log"
# The second one starts once the first has built the worker (one build).
tq_project "$work/tq1" "$tq1_port" "$tq1_tls" $(( range + 60 )) "threads: 1"
tq1_native="https://127.0.0.1:$tq1_tls/bench"
tq_wait "$tq1_native" "$work/tq1.log"
worker_port=$(grep -o 'serves on port(s) [0-9]*' "$work/tq.log" | tail -1 | awk '{print $4}')

# nginx 1.22 (Debian 12): `listen … ssl http2`; TLS 1.3 only; its
# defaults otherwise (session tickets on, no shared session cache), but
# keepalive_requests: at its default of 1000 nginx sends GOAWAY after 1000
# requests on an HTTP/2 connection, and h2load does not reconnect (its
# clients would sit idle for the rest of the run). TQServer has no such
# limit.
tls_lines="ssl_certificate $work/cert.pem;
        ssl_certificate_key $work/key.pem;
        ssl_protocols TLSv1.3;"
start_nginx "$(cat <<EOF
    include /etc/nginx/mime.types;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$nginx_php ssl http2;
        $tls_lines
        root $docroot;
        location ~ \.php\$ {
            fastcgi_split_path_info ^(.+?\.php)(/.*)\$;
            try_files \$fastcgi_script_name =404;
            set \$path_info \$fastcgi_path_info;
            fastcgi_param PATH_INFO \$path_info;
            fastcgi_index index.php;
            include /etc/nginx/fastcgi.conf;
            fastcgi_pass unix:$work/fpm.sock;
        }
    }
    upstream index_worker {
        server 127.0.0.1:$worker_port;
        keepalive 32;
    }
    server {
        listen 127.0.0.1:$nginx_native ssl http2;
        $tls_lines
        location / {
            proxy_pass http://index_worker;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }
EOF
)"

nginx_php_url="https://127.0.0.1:$nginx_php/hello.php"
tq_php_url="https://127.0.0.1:$tq_tls/blog/hello.php"
nginx_native_url="https://127.0.0.1:$nginx_native/bench"
tq_native_url="$tq_native"
tq1_php_url="https://127.0.0.1:$tq1_tls/blog/hello.php"
tq1_native_url="$tq1_native"
for u in "$nginx_php_url" "$tq_php_url" "$tq1_php_url"; do
    for _ in $(seq 1 100); do curl -kfs "$u" | grep -q Hello && break; sleep 0.1; done
    curl -kfs "$u" | grep -q Hello || { echo "bench/tls.sh: $u does not answer Hello" >&2; exit 1; }
done
for _ in $(seq 1 100); do curl -kfs "$nginx_native_url" >/dev/null && break; sleep 0.1; done
# All negotiate TLS 1.3 with h2 offered (shown, not checked: s_client's
# exit status depends on who closes first).
for p in "$nginx_php" "$tq_tls" "$tq1_tls"; do
    { openssl s_client -connect "127.0.0.1:$p" -alpn h2,http/1.1 </dev/null 2>/dev/null || true; } |
        grep -aE "^New,|ALPN protocol" >&2 || true
done

# h2_run DURATION URL: "requests/s p99-ms" from h2load's per-request log.
h2_run() {
    local log="$work/h2load.log" out rps
    rm -f "$log"
    out=$(h2load -t"$threads" -c"$conns" -m1 -D "$1" --log-file="$log" "$2")
    grep -q " 0 failed, 0 errored" <<<"$out" || echo "bench/tls.sh: $2: $(grep '^requests:' <<<"$out")" >&2
    rps=$(awk '/^finished in/ {print $4}' <<<"$out")
    python3 - "$log" "$rps" <<'PY'
import sys
times = sorted(int(l.split("\t")[2]) for l in open(sys.argv[1]) if l.strip())
p99 = times[min(len(times) - 1, int(len(times) * 0.99))] / 1000 if times else 0
print(sys.argv[2], f"{p99:.2f}")
PY
}

# Warm-up.
measure 2s "$nginx_php_url" >/dev/null
measure 2s "$tq_php_url" >/dev/null
measure 2s "$nginx_native_url" >/dev/null
measure 2s "$tq_native_url" >/dev/null
measure 2s "$tq1_php_url" >/dev/null
measure 2s "$tq1_native_url" >/dev/null

results="$work/results"
: > "$results"
for r in $(seq 1 "$rounds"); do
    echo "round $r/$rounds" >&2
    echo "php-h1 nginx $(measure "${duration}s" "$nginx_php_url")" >> "$results"
    echo "php-h1 tqserver $(measure "${duration}s" "$tq_php_url")" >> "$results"
    echo "php-h1 tqserver-1 $(measure "${duration}s" "$tq1_php_url")" >> "$results"
    echo "php-h2 nginx $(h2_run "$duration" "$nginx_php_url")" >> "$results"
    echo "php-h2 tqserver $(h2_run "$duration" "$tq_php_url")" >> "$results"
    echo "php-h2 tqserver-1 $(h2_run "$duration" "$tq1_php_url")" >> "$results"
    echo "newconn nginx $(measure "${duration}s" "$nginx_native_url" -H 'Connection: close')" >> "$results"
    echo "newconn tqserver $(measure "${duration}s" "$tq_native_url" -H 'Connection: close')" >> "$results"
    echo "newconn tqserver-1 $(measure "${duration}s" "$tq1_native_url" -H 'Connection: close')" >> "$results"
    echo "native nginx $(measure "${duration}s" "$nginx_native_url")" >> "$results"
    echo "native tqserver $(measure "${duration}s" "$tq_native_url")" >> "$results"
    echo "native tqserver-1 $(measure "${duration}s" "$tq1_native_url")" >> "$results"
done
cat "$results" >&2

python3 - "$results" "$rounds" "$duration" "$threads" "$conns" <<'PY'
import datetime, sys
results, rounds, duration, threads, conns = sys.argv[1:]
sys.path.insert(0, "bench")
from benchdoc import machine, medians, read_rounds, spread, write_section
rows = read_rounds(results)
med = medians(rows)
names = {
    "php-h1": "hello.php, HTTPS keep-alive (wrk, HTTP/1.1)",
    "php-h2": "hello.php, HTTP/2 (h2load, 32 connections × 1 stream)",
    "newconn": "a new TLS connection per request (wrk, `Connection: close`), index worker",
    "native": "index worker, HTTPS keep-alive (wrk); nginx `proxy_pass`",
}
lines = []
for test in ["php-h1", "php-h2", "newconn", "native"]:
    n, t, o = med[(test, "nginx")], med[(test, "tqserver")], med[(test, "tqserver-1")]
    lines.append(
        f"| {names[test]} | {n[0]:.0f} | {t[0]:.0f} | **{t[0] / n[0]:.2f}×** | {o[0]:.0f} | **{o[0] / n[0]:.2f}×** "
        f"| {n[1]:.2f} / {t[1]:.2f} / {o[1]:.2f} ms "
        f"| ±{spread(rows[(test, 'nginx')]):.0f}% / ±{spread(rows[(test, 'tqserver')]):.0f}% / ±{spread(rows[(test, 'tqserver-1')]):.0f}% |"
    )
def per_round(test, who):
    return ", ".join(f"{t / n:.2f}" for (n, _), (t, _) in zip(rows[(test, 'nginx')], rows[(test, who)]))
ratios = "; ".join(f"{test} {per_round(test, 'tqserver')} (threads 1: {per_round(test, 'tqserver-1')})"
                   for test in ["php-h1", "php-h2", "newconn", "native"])
table = "\n".join(lines)
section = f"""<!-- tls:begin (written by bench/tls.sh; edit the script, not this section) -->
## HTTPS: tqserver against nginx, same certificate

Measured {datetime.date.today().isoformat()} on {machine()} with `bench/tls.sh`:
{rounds} rounds of {duration} s alternating between the three, medians shown.
All serve the same ECDSA P-256 certificate, TLS 1.3 only, HTTP/2 by
ALPN (nginx 1.22 `listen … ssl http2`, its default session tickets,
`keepalive_requests 1000000` so that h2load's connections are not closed
after 1000 requests;
TQServer `server.tls` with `min_version: "1.3"`). PHP is a php-fpm pool of
2 static children for each; the native rows use the release build of
workers/index, which nginx reaches with `proxy_pass` (keepalive 32).
wrk runs `-t{threads} -c{conns}`; h2load `-t{threads} -c{conns} -m1`, its p99
from its per-request log. Clients, servers and PHP share the 2 cores.
"tqserver" runs at its default thread count (one per core, here 2);
"threads 1" is a second TQServer with `server.threads: 1`, measured in the
same rounds.

| test | nginx req/s | tqserver req/s | ratio | threads 1 req/s | ratio | p99 nginx / tqserver / threads 1 | round spread (nginx / tqserver / threads 1) |
|---|---:|---:|---:|---:|---:|---:|---:|
{table}

Ratio in each round: {ratios}.
<!-- tls:end -->
"""
write_section("tls", section)
PY
