#!/usr/bin/env bash
# A Symfony 5.4 and a Laravel 8 application (crates/tqserver/tests/apps/,
# on Debian's php-symfony and php-laravel-framework: a route, a Twig or
# Blade template, an SQLite query) against the anchor, in the same run:
#   wrk → nginx → php-fpm                  (the classic front controller, php-fpm pm = static, 2 children)
#   wrk → tqserver → embed, classic        (the same front controller, 2 processes forked from one master)
#   wrk → tqserver → embed, worker mode    (public/worker.php: the framework booted once per process)
# on /hello/World of each. Rounds alternate; medians go into the
# frameworks section of docs/BENCHMARKS.md.
#
#   bench/frameworks.sh                      # 5 rounds of 10 s each
#   ROUNDS=3 DURATION=5s bench/frameworks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$(pwd)

rounds=${ROUNDS:-5}
duration=${DURATION:-10s}
threads=2
conns=32

source bench/lib.sh
need_packages php-fpm:php-fpm nginx:nginx wrk:wrk
if [[ ! -f /usr/share/php/Symfony/Bundle/FrameworkBundle/autoload.php || ! -f /usr/share/php/Illuminate/autoload.php || ! -f /etc/php/8.2/mods-available/pdo_sqlite.ini ]]; then
    if [[ $(id -u) -eq 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends php-symfony php-laravel-framework php8.2-sqlite3
    else
        echo "$0: install php-symfony php-laravel-framework php8.2-sqlite3 first" >&2
        exit 1
    fi
fi

cargo build --release --locked -p tqserver >&2

# One copy of each app for php-fpm, one per TQServer worker (each writes
# its own caches and database).
copy_app() {
    mkdir -p "$2"
    cp -r "crates/tqserver/tests/apps/$1/." "$2"
    mkdir -p "$2/var" "$2/bootstrap/cache" "$2/storage/framework/views"
    : > "$2/storage/app.sqlite"
}
for app in symfony laravel; do
    copy_app "$app" "$work/fpm/$app"
done

start_anchor_fpm
sf_port=$(free_port)
lv_port=$(free_port)
tq_port=$(free_port)
front() {
    cat <<EOF
    server {
        listen 127.0.0.1:$1;
        root $2;
        location / {
            try_files \$uri /index.php\$is_args\$args;
        }
        location ~ ^/index\.php(/|\$) {
            fastcgi_split_path_info ^(.+\.php)(/.*)\$;
            include /etc/nginx/fastcgi.conf;
            fastcgi_pass unix:$work/fpm.sock;
            internal;
        }
    }
EOF
}
start_nginx "$(cat <<EOF
    include /etc/nginx/mime.types;
    keepalive_timeout 65;
$(front "$sf_port" "$work/fpm/symfony/public")
$(front "$lv_port" "$work/fpm/laravel/public")
EOF
)"

mkdir -p "$work/tq/config"
cat > "$work/tq/config/server.yaml" <<EOF
server:
  host: 127.0.0.1
  port: $tq_port
workers:
  directory: workers
EOF
for app in symfony laravel; do
    for mode in classic worker; do
        name="${app:0:2}-$mode"
        copy_app "$app" "$work/tq/workers/$name"
        worker_key=""
        [[ $mode == worker ]] && worker_key="  worker: public/worker.php"
        mkdir -p "$work/tq/workers/$name/config"
        cat > "$work/tq/workers/$name/config/worker.yaml" <<EOF
path: /$name
type: php
php:
  backend: embed
$worker_key
  pool:
    manager: static
    max_workers: 2
EOF
    done
done
(cd "$work/tq" && exec "$root_dir/target/release/tqserver" --mode prod --quiet --admin-listen "127.0.0.1:$(free_port)") &
pids+=($!)

declare -A url=(
    [nginx-symfony]="http://127.0.0.1:$sf_port/hello/World"
    [tq-symfony-classic]="http://127.0.0.1:$tq_port/sy-classic/hello/World"
    [tq-symfony-worker]="http://127.0.0.1:$tq_port/sy-worker/hello/World"
    [nginx-laravel]="http://127.0.0.1:$lv_port/hello/World"
    [tq-laravel-classic]="http://127.0.0.1:$tq_port/la-classic/hello/World"
    [tq-laravel-worker]="http://127.0.0.1:$tq_port/la-worker/hello/World"
)
order=(nginx-symfony tq-symfony-classic tq-symfony-worker nginx-laravel tq-laravel-classic tq-laravel-worker)
for w in "${order[@]}"; do wait_hello "${url[$w]}"; done
for w in "${order[@]}"; do measure 2s "${url[$w]}" >/dev/null; done
results="$work/results"
: > "$results"
for r in $(seq 1 "$rounds"); do
    echo "round $r/$rounds" >&2
    for w in "${order[@]}"; do
        echo "frameworks $w $(measure "$duration" "${url[$w]}")" >> "$results"
    done
done
cat "$results" >&2

python3 - "$results" "$rounds" "$duration" "$threads" "$conns" <<'PY'
import datetime, sys
results, rounds, duration, threads, conns = sys.argv[1:]
sys.path.insert(0, "bench")
from benchdoc import machine, medians, read_rounds, write_section
machine = machine()
rows = {who: v for (_, who), v in read_rounds(results).items()}
med = medians(rows)
def line(app, label, who):
    anchor = f"nginx-{app}"
    lo = min(r for r, _ in rows[who]) / max(r for r, _ in rows[anchor])
    hi = max(r for r, _ in rows[who]) / min(r for r, _ in rows[anchor])
    ratio = med[who][0] / med[anchor][0]
    spread = "" if who == anchor else f" ({lo:.2f}–{hi:.2f}×)"
    return f"| {label} | {med[who][0]:.0f} | {med[who][1]:.2f} ms | {ratio:.2f}×{spread} |"
table = "\n".join([
    line("symfony", "Symfony: nginx → php-fpm", "nginx-symfony"),
    line("symfony", "Symfony: tqserver → embed, classic", "tq-symfony-classic"),
    line("symfony", "Symfony: tqserver → embed, worker mode", "tq-symfony-worker"),
    line("laravel", "Laravel: nginx → php-fpm", "nginx-laravel"),
    line("laravel", "Laravel: tqserver → embed, classic", "tq-laravel-classic"),
    line("laravel", "Laravel: tqserver → embed, worker mode", "tq-laravel-worker"),
])
all_rounds = "; ".join(f"{w} " + ", ".join(f"{r:.0f}" for r, _ in v) for w, v in rows.items())
section = f"""<!-- frameworks:begin (written by bench/frameworks.sh; edit the script, not this section) -->
## PHP frameworks: Symfony and Laravel, classic and worker mode

Measured {datetime.date.today().isoformat()} on {machine} with `bench/frameworks.sh`:
`wrk -t{threads} -c{conns} -d{duration} --latency` on `/hello/World` of the
test applications in `crates/tqserver/tests/apps/` (Symfony 5.4 on Debian's
php-symfony with Twig, Laravel 8 on Debian's php-laravel-framework with
Blade; each page runs an SQLite query), {rounds} rounds alternating between
them, medians shown. Every pool has 2 processes: php-fpm `pm = static`
behind nginx (`try_files` to the front controller), or TQServer's
`backend: embed` (2 processes forked from one master) running the same
front controller (classic) or `public/worker.php` (worker mode: the kernel
booted once per process). opcache on everywhere (Debian's php.ini);
Symfony in `prod`, Laravel with `debug` off. wrk, the servers and PHP
share the 2 cores.

| server | requests/s | p99 latency | ratio to nginx → php-fpm (spread between rounds) |
|---|---:|---:|---:|
{table}

Every round (requests/s): {all_rounds}.
<!-- frameworks:end -->
"""
write_section("frameworks", section)
PY
