#!/usr/bin/env bash
# What observability costs on the request path, with the anchor in the
# same run:
#   wrk → nginx → php-fpm                       (the anchor; access_log off)
#   wrk → tqserver → php-fpm, observability off (admin listener off: no
#                                                metrics recorded, no access log)
#   wrk → tqserver → php-fpm, observability on  (admin listener on and scraped
#                                                every second, combined access
#                                                log to a file)
#   wrk → tqserver → php-fpm, off again         (a second, identical "off": the
#                                                noise floor of this machine)
# on workers/blog/public/hello.php, each with its own php-fpm pool of 2
# static children. Rounds alternate between them; each round's on/off ratio
# (measured back to back) is compared with its off-again/off ratio, and
# the medians go into the "Observability cost" section of
# docs/BENCHMARKS.md. Goal: on within 3% of off.
#
#   bench/metrics.sh                          # 8 rounds of 10 s each (what is
#                                             # measured is small: more rounds)
#   ROUNDS=3 DURATION=5s bench/metrics.sh     # quicker, noisier
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$(pwd)

rounds=${ROUNDS:-8}
duration=${DURATION:-10s}
threads=2
conns=32

source bench/lib.sh
need_packages php-fpm:php-fpm nginx:nginx wrk:wrk

cargo build --release --locked -p tqserver >&2

nginx_port=$(free_port)
off_port=$(free_port)
on_port=$(free_port)
again_port=$(free_port)
admin_port=$(free_port)
docroot="$root_dir/workers/blog/public"
start_anchor_fpm

start_nginx "$(php_server "$nginx_port" "unix:$work/fpm.sock")"

# tq_project DIR PORT SERVER_EXTRA: a project with the blog's hello.php on
# a php-fpm pool of 2 static children.
tq_project() {
    mkdir -p "$1/config" "$1/workers/blog/config"
    printf 'server:\n  host: 127.0.0.1\n  port: %s\n%s\nworkers:\n  directory: workers\n' "$2" "$3" \
        > "$1/config/server.yaml"
    cat > "$1/workers/blog/config/worker.yaml" <<EOF
path: /blog
type: php
document_root: $docroot
php:
  pool:
    manager: static
    max_workers: 2
EOF
}
tq_project "$work/off" "$off_port" ""
tq_project "$work/again" "$again_port" ""
tq_project "$work/on" "$on_port" "  access_log: $work/access.log"
(cd "$work/off" && exec "$root_dir/target/release/tqserver" --mode prod --quiet --admin-listen "") &
pids+=($!)
(cd "$work/again" && exec "$root_dir/target/release/tqserver" --mode prod --quiet --admin-listen "") &
pids+=($!)
(cd "$work/on" && exec "$root_dir/target/release/tqserver" --mode prod --quiet --admin-listen "127.0.0.1:$admin_port") &
pids+=($!)

nginx_url="http://127.0.0.1:$nginx_port/hello.php"
off_url="http://127.0.0.1:$off_port/blog/hello.php"
on_url="http://127.0.0.1:$on_port/blog/hello.php"
again_url="http://127.0.0.1:$again_port/blog/hello.php"
wait_hello "$nginx_url" "$off_url" "$on_url" "$again_url"
curl -fs "http://127.0.0.1:$admin_port/metrics" | grep -q tqserver_http_requests_total \
    || { echo "bench/metrics.sh: the admin listener has no request metrics" >&2; exit 1; }

# A scraper, as Prometheus would be (every second: harsher than the usual 15 s).
(while sleep 1; do curl -fs -o /dev/null "http://127.0.0.1:$admin_port/metrics" || true; done) &
pids+=($!)

for url in "$nginx_url" "$off_url" "$on_url" "$again_url"; do measure 2s "$url" >/dev/null; done
results="$work/results"
: > "$results"
for r in $(seq 1 "$rounds"); do
    echo "round $r/$rounds" >&2
    echo "nginx $(measure "$duration" "$nginx_url")" >> "$results"
    echo "off $(measure "$duration" "$off_url")" >> "$results"
    echo "on $(measure "$duration" "$on_url")" >> "$results"
    echo "again $(measure "$duration" "$again_url")" >> "$results"
done
cat "$results" >&2
lines=$(wc -l < "$work/access.log")
[[ $lines -gt 0 ]] || { echo "bench/metrics.sh: no access log lines were written" >&2; exit 1; }

python3 - "$results" "$rounds" "$duration" "$threads" "$conns" "$lines" <<'PY'
import datetime, statistics, sys
results, rounds, duration, threads, conns, lines = sys.argv[1:]
rows = {}
for line in open(results):
    who, rps, p99 = line.split()
    rows.setdefault(who, []).append((float(rps), float(p99)))
med = {w: (statistics.median(r for r, _ in v), statistics.median(p for _, p in v)) for w, v in rows.items()}
sys.path.insert(0, "bench")
from benchdoc import machine, write_section
# Each round measures off, on and off-again back to back: the ratio of
# neighbours cancels the drift between rounds. off-again/off shows what
# two identical servers differ by here: the resolution of this bench.
paired = lambda w: statistics.median(a / o for (a, _), (o, _) in zip(rows[w], rows["off"]))
cost = 1 - paired("on")
floor = abs(1 - paired("again"))
by_medians = 1 - med["on"][0] / med["off"][0]
floor_by_medians = abs(1 - med["again"][0] / med["off"][0])
verdict = "met" if cost < 0.03 else "**not met**"
if cost < 0.03 <= by_medians:
    verdict = "met by the paired median, not by the medians of the rows"
ratio = lambda w: med[w][0] / med["nginx"][0]
all_rounds = "; ".join(f"{w} " + ", ".join(f"{r:.0f}" for r, _ in v) for w, v in rows.items())
section = f"""<!-- metrics:begin (written by bench/metrics.sh; edit the script, not this section) -->
## Observability cost

Measured {datetime.date.today().isoformat()} on {machine()} with `bench/metrics.sh`:
`wrk -t{threads} -c{conns} -d{duration} --latency` on `hello.php`, {rounds} rounds
alternating between them, medians shown; every server has its own php-fpm
pool of 2 static children. "Off" runs with `--admin-listen ""` and no access
log, so no request metrics are recorded; "on" records them, has its admin
listener scraped every second, and writes a combined access log line per
request ({int(lines)} lines written in the run).

| server | requests/s | p99 latency | ratio to nginx |
|---|---:|---:|---:|
| nginx → php-fpm (`access_log off`) | {med['nginx'][0]:.0f} | {med['nginx'][1]:.2f} ms | 1.00× |
| tqserver → php-fpm, observability off | {med['off'][0]:.0f} | {med['off'][1]:.2f} ms | {ratio('off'):.2f}× |
| tqserver → php-fpm, metrics + access log on | {med['on'][0]:.0f} | {med['on'][1]:.2f} ms | {ratio('on'):.2f}× |
| tqserver → php-fpm, off again (control) | {med['again'][0]:.0f} | {med['again'][1]:.2f} ms | {ratio('again'):.2f}× |

Cost of observability: **{cost * 100:.1f}%** of throughput as the median
over rounds of on/off measured back to back; **{by_medians * 100:.1f}%** as the
ratio of the rows' medians (goal: under 3%: {verdict}). Two identical "off"
servers differ by {floor * 100:.1f}% and {floor_by_medians * 100:.1f}% the same two ways (the
control row): this 2-core VM moves by several percent from one 10 s run to
the next, which is the size of what is measured here. perf puts all
observability code at about 4% of tqserver's own CPU (formatting the
access line is the largest part), and tqserver uses less of the machine
than PHP does.

Every round (requests/s): {all_rounds}.
<!-- metrics:end -->
"""
write_section("metrics", section)
PY
