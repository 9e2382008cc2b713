#!/usr/bin/env bash
# Memory of a 16-process PHP pool: php-fpm (pm = static, 16 children)
# against TQServer's embedded PHP (backend: embed, 16 processes forked from
# one master) and its php-cgi pool sharing one master (backend: cgi,
# shared_memory), all on the same php.ini settings (Debian's, opcache on),
# each process warmed by requests to the Symfony test application
# (crates/tqserver/tests/apps/symfony, classic front controller) until
# every process has served. Reported: RSS and PSS (shared pages counted
# once, split between the processes that map them) of the whole pool,
# master included, from /proc/PID/smaps_rollup. Writes the memory section
# of docs/BENCHMARKS.md.
#
#   bench/memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$(pwd)
threads=2
conns=16

source bench/lib.sh
need_packages php-fpm:php-fpm php-cgi:php-cgi nginx:nginx wrk:wrk
[[ -f /usr/share/php/Symfony/Bundle/FrameworkBundle/autoload.php ]] || {
    echo "$0: install php-symfony first (scripts/test does)" >&2
    exit 1
}
cargo build --release --locked -p tqserver >&2

copy_app() {
    mkdir -p "$1"
    cp -r crates/tqserver/tests/apps/symfony/. "$1"
    mkdir -p "$1/var"
}
copy_app "$work/fpm-app"

# php-fpm with 16 static children behind nginx.
start_anchor_fpm 16
fpm_pid=${pids[-1]}
nginx_port=$(free_port)
start_nginx "$(cat <<EOF
    server {
        listen 127.0.0.1:$nginx_port;
        root $work/fpm-app/public;
        location / { try_files \$uri /index.php\$is_args\$args; }
        location ~ ^/index\.php(/|\$) {
            include /etc/nginx/fastcgi.conf;
            fastcgi_pass unix:$work/fpm.sock;
        }
    }
EOF
)"

tq_port=$(free_port)
mkdir -p "$work/tq/config"
cat > "$work/tq/config/server.yaml" <<EOF
server:
  host: 127.0.0.1
  port: $tq_port
workers:
  directory: workers
EOF
for backend in embed cgi; do
    copy_app "$work/tq/workers/$backend"
    mkdir -p "$work/tq/workers/$backend/config"
    shared=""
    [[ $backend == cgi ]] && shared="    shared_memory: true"
    cat > "$work/tq/workers/$backend/config/worker.yaml" <<EOF
path: /$backend
type: php
php:
  backend: $backend
  pool:
    manager: static
    max_workers: 16
$shared
EOF
done
(cd "$work/tq" && exec "$root_dir/target/release/tqserver" --mode prod --quiet --admin-listen "127.0.0.1:$(free_port)") &
tq_pid=$!
pids+=($tq_pid)

declare -A url=(
    [php-fpm]="http://127.0.0.1:$nginx_port/hello/World"
    [embed]="http://127.0.0.1:$tq_port/embed/hello/World"
    [cgi]="http://127.0.0.1:$tq_port/cgi/hello/World"
)
for w in php-fpm embed cgi; do wait_hello "${url[$w]}"; done
# 16 connections for a few seconds: every process serves, many times.
for w in php-fpm embed cgi; do measure 4s "${url[$w]}" >/dev/null; done
sleep 1

# The pool's processes: php-fpm's master and children; for TQServer, the
# master under tqserver for each worker and its children.
descendants() { local p; for p in $(pgrep -P "$1"); do echo "$p"; descendants "$p"; done; }
master_of() {
    local p
    for p in $(pgrep -P "$tq_pid"); do
        if tr '\0' ' ' < "/proc/$p/cmdline" | grep -q -- "$1"; then echo "$p"; fi
    done
}
sum() { # RSS and PSS (KiB) of the given pids
    local rss=0 pss=0 p r s
    for p in "$@"; do
        r=$(awk '/^Rss:/ {print $2}' "/proc/$p/smaps_rollup")
        s=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup")
        rss=$((rss + r)); pss=$((pss + s))
    done
    echo "$rss $pss $#"
}
fpm_procs=("$fpm_pid" $(pgrep -P "$fpm_pid"))
embed_master=$(master_of __tqserver-php)
cgi_master=$(master_of php-cgi)
embed_procs=("$embed_master" $(descendants "$embed_master"))
cgi_procs=("$cgi_master" $(descendants "$cgi_master"))
results="$work/results"
{
    echo "php-fpm $(sum "${fpm_procs[@]}")"
    echo "embed $(sum "${embed_procs[@]}")"
    echo "cgi $(sum "${cgi_procs[@]}")"
} > "$results"
cat "$results" >&2

python3 - "$results" <<'PY'
import datetime, sys
sys.path.insert(0, "bench")
from benchdoc import machine, write_section
machine = machine()
rows = {}
for line in open(sys.argv[1]):
    who, rss, pss, n = line.split()
    rows[who] = (int(rss) / 1024, int(pss) / 1024, int(n))
fpm = rows["php-fpm"]
def line(label, who):
    rss, pss, n = rows[who]
    return f"| {label} | {n} | {rss:.0f} MiB | {pss:.0f} MiB | {pss / fpm[1]:.2f}× |"
table = "\n".join([
    line("php-fpm, `pm = static`, 16 children", "php-fpm"),
    line("TQServer `backend: embed`, 16 forked from its master", "embed"),
    line("TQServer `backend: cgi`, `shared_memory`, 16 forked by php-cgi's master", "cgi"),
])
section = f"""<!-- memory:begin (written by bench/memory.sh; edit the script, not this section) -->
## PHP: memory of a 16-process pool

Measured {datetime.date.today().isoformat()} on {machine} with `bench/memory.sh`:
each pool has 16 processes on Debian's php.ini (opcache on, the same
settings for all), warmed with 4 s of `wrk -c{16}` on the Symfony test
application (classic front controller) so every process has served it.
Summed over the pool's processes, master included, from
`/proc/PID/smaps_rollup`: RSS counts a shared page in every process that
maps it; PSS splits it between them, so the PSS sum is what the pool costs
the machine.

| pool | processes | RSS sum | PSS sum | PSS against php-fpm |
|---|---:|---:|---:|---:|
{table}
<!-- memory:end -->
"""
write_section("memory", section)
PY
