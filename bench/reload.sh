#!/usr/bin/env bash
# Configuration reloads under load, against the anchor in the same run:
#   wrk → nginx → php-fpm, reloaded with SIGUSR2 (php-fpm's own graceful
#         reload; `systemctl reload php-fpm`), once with php-fpm's default
#         process_control_timeout = 0 and once with 10s
#   wrk → tqserver → php-fpm, `tqserver reload` after a php.settings edit
#         (TQServer rewrites the pool and sends SIGUSR2)
#   wrk → tqserver → php-cgi, `tqserver reload` after a php.settings edit
#         (the pool's processes roll over in place)
#   wrk → tqserver → php-cgi with shared_memory, the same (a new php-cgi
#         master starts PHP once and forks the new processes)
# Every pool: 4 static processes, workers/blog/public/hello.php. Each run
# is wrk for 12 s with a reload at 1, 3, 5, 7 and 9 s; rounds alternate;
# the PHP servers also run once without reloads per round as their own
# baseline. Medians go into the reload section of docs/BENCHMARKS.md.
#
#   bench/reload.sh                # 3 rounds
#   ROUNDS=1 bench/reload.sh       # quicker
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$(pwd)

rounds=${ROUNDS:-3}
threads=2
conns=32
duration=12

source bench/lib.sh
need_packages php-fpm:php-fpm php-cgi:php-cgi nginx:nginx wrk:wrk
fpm_bin=$(ls /usr/sbin/php-fpm* | sort -V | tail -1)

cargo build --release --locked -p tqserver >&2
tq="$root_dir/target/release/tqserver"
docroot="$root_dir/workers/blog/public"

# The anchor's two php-fpm: php-fpm's default process_control_timeout (0:
# children are killed at once on reload) and 10s (they finish requests).
anchor_fpm() { # NAME PROCESS_CONTROL_TIMEOUT
    local root_flag="" user_lines=""
    if [[ $(id -u) -eq 0 ]]; then root_flag="-R"; user_lines=$'user = root\ngroup = root'; fi
    cat > "$work/$1.conf" <<EOF
[global]
pid = $work/$1.pid
error_log = $work/$1.log
daemonize = no
process_control_timeout = $2
[www]
$user_lines
listen = $work/$1.sock
listen.mode = 0666
pm = static
pm.max_children = 4
php_admin_value[memory_limit] = 64M
EOF
    "$fpm_bin" -F -y "$work/$1.conf" $root_flag &
    pids+=($!)
}
anchor_fpm fpm0 0
anchor_fpm fpm10 10s

nginx0_port=$(free_port)
nginx10_port=$(free_port)
start_nginx "$(php_server "$nginx0_port" "unix:$work/fpm0.sock")
$(php_server "$nginx10_port" "unix:$work/fpm10.sock")"

tq_port=$(free_port)
admin="127.0.0.1:$(free_port)"
mkdir -p "$work/tq/config" "$work/tq/workers/fpm/config" "$work/tq/workers/cgi/config" "$work/tq/workers/shared/config"
cat > "$work/tq/config/server.yaml" <<EOF
server:
  host: 127.0.0.1
  port: $tq_port
workers:
  directory: workers
  shutdown_grace_period_ms: 10000
file_watcher:
  config: false
EOF
tq_worker() { # NAME BACKEND MEMORY [SHARED]
    cat > "$work/tq/workers/$1/config/worker.yaml" <<EOF
path: /$1
type: php
document_root: $docroot
php:
  backend: $2
  settings:
    memory_limit: $3
  pool:
    manager: static
    max_workers: 4
    shared_memory: ${4:-false}
EOF
}
tq_worker fpm fpm 64M
tq_worker cgi cgi 64M
tq_worker shared cgi 64M true
(cd "$work/tq" && exec "$tq" --mode prod --quiet --admin-listen "$admin") &
pids+=($!)

url_fpm0="http://127.0.0.1:$nginx0_port/hello.php"
url_fpm10="http://127.0.0.1:$nginx10_port/hello.php"
url_tqfpm="http://127.0.0.1:$tq_port/fpm/hello.php"
url_tqcgi="http://127.0.0.1:$tq_port/cgi/hello.php"
url_tqshared="http://127.0.0.1:$tq_port/shared/hello.php"
wait_hello "$url_fpm0" "$url_fpm10" "$url_tqfpm" "$url_tqcgi" "$url_tqshared"

# reload WHO N: the Nth reload of one server.
memory=64
reload() {
    case $1 in
        fpm0 | fpm10) kill -USR2 "$(cat "$work/$1.pid")" ;;
        tqfpm | tqcgi)
            memory=$((memory + 1))
            tq_worker "${1#tq}" "${1#tq}" "${memory}M"
            (cd "$work/tq" && "$tq" reload --admin-listen "$admin" >/dev/null) ||
                echo "$0: tqserver reload failed" >&2 ;;
        tqshared)
            memory=$((memory + 1))
            tq_worker shared cgi "${memory}M" true
            (cd "$work/tq" && "$tq" reload --admin-listen "$admin" >/dev/null) ||
                echo "$0: tqserver reload failed" >&2 ;;
        none) ;;
    esac
}

# run WHO URL RELOADS: "requests/s errors p99-ms max-ms", wrk for
# $duration s with RELOADS (a server name, or none) at 1, 3, 5, 7, 9 s.
run() {
    local out rps errs p99 max
    (
        sleep 1
        for i in 1 2 3 4 5; do
            reload "$3"
            sleep 2
        done
    ) &
    local reloader=$!
    out=$(wrk -t"$threads" -c"$conns" -d"${duration}s" --latency "$2")
    wait "$reloader"
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    errs=$(awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(",", ""); n += $4 + $6 + $8 + $10} END {print n + 0}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    max=$(awk '$1=="Latency" {print $4}' <<<"$out")
    echo "$1 $rps $errs $(to_ms "$p99") $(to_ms "$max")"
}
to_ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) {sub("us","",v); v/=1000} else if (v ~ /ms$/) sub("ms","",v); else if (v ~ /s$/) {sub("s","",v); v*=1000}; print v }'; }

results="$work/results"
: > "$results"
for r in $(seq 1 "$rounds"); do
    echo "round $r/$rounds" >&2
    run fpm0 "$url_fpm0" fpm0 >> "$results"
    run fpm10 "$url_fpm10" fpm10 >> "$results"
    run tqfpm "$url_tqfpm" tqfpm >> "$results"
    run tqcgi "$url_tqcgi" tqcgi >> "$results"
    run tqshared "$url_tqshared" tqshared >> "$results"
    run base-nginx "$url_fpm10" none >> "$results"
    run base-tqfpm "$url_tqfpm" none >> "$results"
    run base-tqcgi "$url_tqcgi" none >> "$results"
    run base-tqshared "$url_tqshared" none >> "$results"
done
cat "$results" >&2

python3 - "$results" "$rounds" "$duration" "$threads" "$conns" <<'PY'
import datetime, statistics, sys
results, rounds, duration, threads, conns = sys.argv[1:]
rows = {}
for line in open(results):
    who, rps, errs, p99, mx = line.split()
    rows.setdefault(who, []).append((float(rps), int(errs), float(p99), float(mx)))
med = lambda w, i: statistics.median(v[i] for v in rows[w])
total = lambda w: sum(v[1] for v in rows[w])
sys.path.insert(0, "bench")
from benchdoc import machine, write_section
def row(name, w, base):
    return (f"| {name} | {med(w, 0):.0f} | {med(w, 0) / med(base, 0):.2f}× | {total(w)} | "
            f"{med(w, 2):.1f} ms | {med(w, 3):.0f} ms |")
section = f"""<!-- reload:begin (written by bench/reload.sh; edit the script, not this section) -->
## Configuration reloads under load

Measured {datetime.date.today().isoformat()} on {machine()} with `bench/reload.sh`:
`wrk -t{threads} -c{conns} -d{duration}s --latency` on `hello.php` with five reloads
(at 1, 3, 5, 7 and 9 s), {rounds} rounds alternating between the servers,
medians shown, errors summed over all rounds (non-2xx answers and socket
errors). Every pool is 4 static processes. The anchor is nginx → php-fpm
reloaded with SIGUSR2 (`systemctl reload php-fpm`), with php-fpm's default
`process_control_timeout = 0` and with `10s`; TQServer's reload is
`tqserver reload` after a `php.settings` edit (`memory_limit` + 1 MB),
which rewrites the php-fpm pool and sends SIGUSR2, or rolls the php-cgi
processes over in place. "of no-reload" compares with the same server's
run without reloads in the same round (nginx: the 10s pool).

| server, reloaded 5× | requests/s | of no-reload | errors | p99 | max latency |
|---|---:|---:|---:|---:|---:|
{row("nginx → php-fpm, SIGUSR2, process_control_timeout 0", "fpm0", "base-nginx")}
{row("nginx → php-fpm, SIGUSR2, process_control_timeout 10s", "fpm10", "base-nginx")}
{row("tqserver → php-fpm, `tqserver reload` (SIGUSR2)", "tqfpm", "base-tqfpm")}
{row("tqserver → php-cgi, `tqserver reload` (in place)", "tqcgi", "base-tqcgi")}
{row("tqserver → php-cgi, shared_memory, `tqserver reload` (a new master)", "tqshared", "base-tqshared")}

Without reloads: nginx → php-fpm {med("base-nginx", 0):.0f} requests/s, tqserver → php-fpm
{med("base-tqfpm", 0):.0f}, tqserver → php-cgi {med("base-tqcgi", 0):.0f}, with shared_memory
{med("base-tqshared", 0):.0f}.
<!-- reload:end -->
"""
write_section("reload", section)
PY
