#!/usr/bin/env bash
# Compression through TQServer against the anchor, nginx `gzip on`, in the
# same run: a 100 KiB HTML page (generated: words from a fixed vocabulary,
# tags, attributes) from a PHP worker's document root, asked for with
# `Accept-Encoding: gzip`, keep-alive (wrk -t2 -c32). Three pairs:
#   - defaults: nginx `gzip on` (level 1) against TQServer's default (gzip 2, whose output is the size of zlib's level 1);
#   - level 1 against level 1; level 5 against level 5 (`gzip_comp_level`,
#     TQServer's `compression.levels.gzip`);
# and, for information, TQServer's zstd (level 3) and brotli (level 4),
# which Chromium and Firefox ask for first, against nginx's default gzip.
# Each line also gives the bytes on the wire per answer. Rounds alternate;
# medians go into the compress section of docs/BENCHMARKS.md.
#
#   bench/compress.sh                         # 5 rounds of 10 s each
#   ROUNDS=3 DURATION=5s bench/compress.sh    # quicker, noisier
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$(pwd)

rounds=${ROUNDS:-5}
duration=${DURATION:-10s}
threads=2
conns=32

source bench/lib.sh
trap 'echo "bench/compress.sh: line $LINENO failed: $BASH_COMMAND" >&2' ERR
need_packages nginx:nginx wrk:wrk

cargo build --release --locked -p tqserver >&2

tq_port=$(free_port)
nginx_port=$(free_port)
nginx_l5_port=$(free_port)
docroot="$work/public"
mkdir -p "$docroot"
python3 - "$docroot/page.html" <<'PY'
import random, sys
rng = random.Random(17)
words = [w for w in """the of and to in is was for on that by with as at from his it an were are which this
be or has had not have their its but they one first new two all after been other who more time when than
may into some can over also only most such would these three there up about city state year school many
world university made during team under later however where years being both through part used known
while since called national series before game including then against between well during state district
season music group released history served several four each member because early family including main""".split()]
out = ['<!doctype html><html lang="en"><head><meta charset="utf-8"><title>A page</title>'
       '<link rel="stylesheet" href="/style.css"></head><body><main class="content">']
size = 0
while size < 100 * 1024:
    n = rng.randint(20, 80)
    text = " ".join(rng.choice(words) for _ in range(n))
    cls = rng.choice(["lead", "note", "item", "entry", "body"])
    href = f"/wiki/{rng.choice(words)}_{rng.randint(1, 999)}"
    p = f'<p class="{cls}" id="p{rng.randint(1, 99999)}">{text} <a href="{href}">{rng.choice(words)}</a>.</p>\n'
    out.append(p)
    size += len(p)
out.append("</main></body></html>\n")
open(sys.argv[1], "w").write("".join(out)[: 100 * 1024])
PY

mkdir -p "$work/tq/config" "$work/tq/workers/default/config" "$work/tq/workers/l1/config" "$work/tq/workers/l5/config"
cat > "$work/tq/config/server.yaml" <<YAML
server:
  host: 127.0.0.1
  port: $tq_port
workers:
  directory: workers
YAML
cat > "$work/tq/workers/default/config/worker.yaml" <<YAML
path: /
type: php
document_root: $docroot
php:
  pool:
    manager: static
    max_workers: 1
YAML
for level in 1 5; do
    mkdir -p "$work/l$level/l$level"
    cp "$docroot/page.html" "$work/l$level/l$level/page.html"
    cat > "$work/tq/workers/l$level/config/worker.yaml" <<YAML
path: /l$level
type: static
document_root: $work/l$level/l$level
compression:
  levels:
    gzip: $level
YAML
done
(cd "$work/tq" && exec "$root_dir/target/release/tqserver" --mode prod --admin-listen "" > "$work/tq.log" 2>&1) &
pids+=($!)

start_nginx "$(cat <<NGINX
    include /etc/nginx/mime.types;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    gzip on;
    server {
        listen 127.0.0.1:$nginx_port;
        root $docroot;
    }
    server {
        listen 127.0.0.1:$nginx_l5_port;
        root $docroot;
        gzip_comp_level 5;
    }
NGINX
)"

tq="http://127.0.0.1:$tq_port"
ng="http://127.0.0.1:$nginx_port"
ng5="http://127.0.0.1:$nginx_l5_port"
# name who url accept-encoding
cases=(
    "defaults nginx $ng/page.html gzip"
    "defaults tqserver $tq/page.html gzip"
    "level1 nginx $ng/page.html gzip"
    "level1 tqserver $tq/l1/page.html gzip"
    "level5 nginx $ng5/page.html gzip"
    "level5 tqserver $tq/l5/page.html gzip"
    "zstd nginx-gzip $ng/page.html gzip"
    "zstd tqserver $tq/page.html zstd"
    "br nginx-gzip $ng/page.html gzip"
    "br tqserver $tq/page.html br"
)
sizes="$work/sizes"
: > "$sizes"
for c in "${cases[@]}"; do
    read -r name who url enc <<<"$c"
    for _ in $(seq 1 100); do curl -fs -o /dev/null "$url" && break; sleep 0.1; done
    got=$(curl -fs -H "Accept-Encoding: $enc" -D "$work/head" -o "$work/body" "$url" && grep -i '^content-encoding:' "$work/head" | tr -d '\r' | awk '{print $2}')
    [[ "$got" == "$enc" ]] || { echo "bench/compress.sh: $url answered ${got:-identity} for $enc" >&2; cat "$work/tq.log" >&2; exit 1; }
    curl -fs --compressed -H "Accept-Encoding: $enc" "$url" | cmp -s - "$docroot/page.html" || { echo "bench/compress.sh: $url does not decode to the page" >&2; exit 1; }
    echo "$name $who $(stat -c %s "$work/body")" >> "$sizes"
    measure 2s "$url" -H "Accept-Encoding: $enc" >/dev/null
done

results="$work/results"
: > "$results"
for r in $(seq 1 "$rounds"); do
    echo "round $r/$rounds" >&2
    for c in "${cases[@]}"; do
        read -r name who url enc <<<"$c"
        echo "$name $who $(measure "$duration" "$url" -H "Accept-Encoding: $enc")" >> "$results"
    done
done
cat "$results" >&2

python3 - "$results" "$sizes" "$rounds" "$duration" "$threads" "$conns" <<'PY'
import datetime, sys
results, sizes, rounds, duration, threads, conns = sys.argv[1:]
sys.path.insert(0, "bench")
from benchdoc import machine, medians, read_rounds, spread, write_section
rows = read_rounds(results)
med = medians(rows)
size = {(n, w): int(b) for n, w, b in (l.split() for l in open(sizes))}
names = {
    "defaults": ("nginx `gzip on` (level 1)", "TQServer default (gzip 2)"),
    "level1": ("nginx gzip level 1", "TQServer gzip level 1"),
    "level5": ("nginx gzip level 5", "TQServer gzip level 5"),
    "zstd": ("nginx `gzip on` (level 1)", "TQServer zstd level 3"),
    "br": ("nginx `gzip on` (level 1)", "TQServer brotli level 4"),
}
lines = []
for test, (an, tn) in names.items():
    anchor = "nginx" if (test, "nginx") in rows else "nginx-gzip"
    n, t = med[(test, anchor)], med[(test, "tqserver")]
    lines.append(
        f"| {an} | {tn} | {n[0]:.0f} | {t[0]:.0f} | **{t[0] / n[0]:.2f}×** | {size[(test, anchor)]} / {size[(test, 'tqserver')]} "
        f"| {n[1]:.2f} / {t[1]:.2f} ms | ±{spread(rows[(test, anchor)]):.0f}% / ±{spread(rows[(test, 'tqserver')]):.0f}% |"
    )
ratios = "; ".join(
    f"{test} " + ", ".join(f"{t / n:.2f}" for (n, _), (t, _) in zip(rows[(test, 'nginx' if (test, 'nginx') in rows else 'nginx-gzip')], rows[(test, 'tqserver')]))
    for test in names
)
table = "\n".join(lines)
section = f"""<!-- compress:begin (written by bench/compress.sh; edit the script, not this section) -->
## Compression: tqserver against nginx `gzip on`

Measured {datetime.date.today().isoformat()} on {machine()} with `bench/compress.sh`:
{rounds} rounds of {duration} alternating, medians shown. A 100 KiB HTML page
(generated text and tags) from a document root, `Accept-Encoding` as the
row says, keep-alive, no access log; wrk `-t{threads} -c{conns}`; nginx with
Debian's `gzip on` (level 1 unless the row says otherwise). Clients and
servers share the 2 cores. Bytes: one compressed answer's body.

| anchor | tqserver | anchor req/s | tqserver req/s | ratio | bytes (anchor / tqserver) | p99 | round spread |
|---|---|---:|---:|---:|---:|---:|---:|
{table}

Ratio in each round: {ratios}.
<!-- compress:end -->
"""
write_section("compress", section)
PY
