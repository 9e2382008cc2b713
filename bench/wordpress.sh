#!/usr/bin/env bash
# Debian's WordPress front page through TQServer against the anchor, in the
# same run, opcache on (Debian's default for php-fpm and php-cgi):
#   wrk → nginx → php-fpm      (try_files to index.php, Debian's fastcgi
#                               snippet, php-fpm pool of 2 static children)
#   wrk → tqserver → php-fpm   (the php-fpm TQServer starts, the same pool)
#   wrk → tqserver → php-cgi   (TQServer's own pool of 2 static php-cgi)
#   wrk → tqserver → php-cgi, shared_memory (the same, forked from one master)
# on one MariaDB this script starts (its own data folder and socket, no
# network) and one WordPress installed through the anchor (front page with
# the sample post, twentytwentyone theme). Rounds alternate; medians go
# into the wordpress section of docs/BENCHMARKS.md, with each PHP pool's
# memory (the PSS of its processes, so shared pages count once) after the
# rounds. Needs root (Debian's
# WordPress reads /etc/wordpress/config-NAME.php; the file is removed on
# exit).
#
#   bench/wordpress.sh                          # 5 rounds of 10 s each
#   ROUNDS=3 DURATION=5s bench/wordpress.sh     # quicker, noisier
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$(pwd)

rounds=${ROUNDS:-5}
duration=${DURATION:-10s}
threads=2
conns=16

source bench/lib.sh
trap 'echo "bench/wordpress.sh: line $LINENO failed: $BASH_COMMAND" >&2' ERR
need_packages php-fpm:php-fpm php-cgi:php-cgi nginx:nginx wrk:wrk mariadbd:mariadb-server
[[ -f /usr/share/wordpress/wp-settings.php ]] || need_packages wp-not-installed:wordpress
[[ -d /usr/share/wordpress/wp-content/themes/twentytwentyone ]] || need_packages theme-not-installed:wordpress-theme-twentytwentyone
php -m | grep -qx mysqli || need_packages mysqli-not-installed:php-mysql

cargo build --release --locked -p tqserver >&2

# MariaDB.
user_flag=""; [[ $(id -u) -eq 0 ]] && user_flag="--user=root"
mariadb-install-db --no-defaults --datadir="$work/db" --auth-root-authentication-method=normal --skip-test-db $user_flag > "$work/db-install.log" 2>&1
/usr/sbin/mariadbd --no-defaults --datadir="$work/db" --socket="$work/db.sock" --pid-file="$work/db.pid" \
    --log-error="$work/db.log" --skip-networking --innodb-buffer-pool-size=64M $user_flag &
pids+=($!)
for _ in $(seq 1 100); do mariadb --no-defaults --socket="$work/db.sock" -uroot -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
mariadb --no-defaults --socket="$work/db.sock" -uroot -e "CREATE DATABASE wp CHARACTER SET utf8mb4; CREATE USER 'wp'@'localhost' IDENTIFIED BY 'bench-pw'; GRANT ALL ON wp.* TO 'wp'@'localhost';"

# WordPress, the Debian way, with the host taken from the request so
# every front serves its own address.
site=tqbench$$
config=/etc/wordpress/config-$site.php
mkdir -p "$work/content/themes" "$work/content/plugins" "$work/content/uploads"
ln -s /usr/share/wordpress/wp-content/themes/twentytwentyone "$work/content/themes/twentytwentyone"
cat > "$config" <<PHP
<?php
define('DB_NAME', 'wp');
define('DB_USER', 'wp');
define('DB_PASSWORD', 'bench-pw');
define('DB_HOST', 'localhost:$work/db.sock');
define('WP_CONTENT_DIR', '$work/content');
define('WP_HOME', 'http://' . \$_SERVER['HTTP_HOST']);
define('WP_SITEURL', 'http://' . \$_SERVER['HTTP_HOST']);
define('WP_CONTENT_URL', 'http://' . \$_SERVER['HTTP_HOST'] . '/wp-content');
PHP
cleanup_config() { rm -f "$config"; cleanup; }
trap cleanup_config EXIT

nginx_port=$(free_port)
fpm_port=$(free_port)
cgi_port=$(free_port)
shared_port=$(free_port)
docroot=/usr/share/wordpress
start_anchor_fpm
start_nginx "$(cat <<EOF
    include /etc/nginx/mime.types;
    sendfile on;
    keepalive_timeout 65;
    server {
        listen 127.0.0.1:$nginx_port;
        root $docroot;
        index index.php;
        location /wp-content/ { alias $work/content/; }
        location / { try_files \$uri \$uri/ /index.php?\$args; }
        location ~ \.php\$ {
            fastcgi_split_path_info ^(.+?\.php)(/.*)\$;
            try_files \$fastcgi_script_name =404;
            set \$path_info \$fastcgi_path_info;
            fastcgi_param PATH_INFO \$path_info;
            fastcgi_index index.php;
            include /etc/nginx/fastcgi.conf;
            fastcgi_param WORDPRESS_CONFIG $site;
            fastcgi_pass unix:$work/fpm.sock;
        }
    }
EOF
)"

for backend in fpm cgi shared; do
    port_var=${backend}_port
    php_backend=$backend shared=false
    [[ $backend == shared ]] && php_backend=cgi shared=true
    mkdir -p "$work/tq-$backend/config" "$work/tq-$backend/workers/wp/config"
    cat > "$work/tq-$backend/config/server.yaml" <<EOF
server:
  host: 127.0.0.1
  port: ${!port_var}
workers:
  directory: workers
EOF
    cat > "$work/tq-$backend/workers/wp/config/worker.yaml" <<EOF
path: /
type: php
document_root: $docroot
alias:
  "/wp-content": $work/content
php:
  backend: $php_backend
  params:
    WORDPRESS_CONFIG: $site
  pool:
    manager: static
    max_workers: 2
    shared_memory: $shared
EOF
    (cd "$work/tq-$backend" && exec "$root_dir/target/release/tqserver" --mode prod --quiet --admin-listen "127.0.0.1:$(free_port)" 2> "$work/tq-$backend/tq.log") &
    pids+=($!)
    eval "tq_${backend}_pid=$!"
done

nginx_url="http://127.0.0.1:$nginx_port/"
for _ in $(seq 1 100); do curl -fs -o /dev/null "${nginx_url}wp-admin/install.php" && break; sleep 0.1; done
curl -fs -o /dev/null "${nginx_url}wp-admin/install.php?step=2" \
    --data-urlencode weblog_title=Bench --data-urlencode user_name=admin \
    --data-urlencode "admin_password=a long bench passphrase" --data-urlencode "admin_password2=a long bench passphrase" \
    --data-urlencode pw_weak=on --data-urlencode admin_email=admin@example.com --data-urlencode blog_public=0
urls=("$nginx_url" "http://127.0.0.1:$fpm_port/" "http://127.0.0.1:$cgi_port/" "http://127.0.0.1:$shared_port/")
# (The page is read whole before grep: grep -q would stop reading at the
# match, and under pipefail curl's broken pipe would fail the check.)
front() { local page; page=$(curl -fs "$1") && grep -q "Hello world" <<<"$page"; }
for u in "${urls[@]}"; do
    for _ in $(seq 1 100); do front "$u" && break; sleep 0.1; done
    front "$u" || { echo "bench/wordpress.sh: $u has no front page" >&2; cat "$work"/tq-*/tq.log >&2; exit 1; }
    measure 3s "$u" >/dev/null
done

results="$work/results"
: > "$results"
for r in $(seq 1 "$rounds"); do
    echo "round $r/$rounds" >&2
    echo "front nginx $(measure "$duration" "${urls[0]}")" >> "$results"
    echo "front tqserver $(measure "$duration" "${urls[1]}")" >> "$results"
    echo "front tqserver-cgi $(measure "$duration" "${urls[2]}")" >> "$results"
    echo "front tqserver-shared $(measure "$duration" "${urls[3]}")" >> "$results"
done

# Memory of each PHP pool after the rounds: the sum of its processes' PSS
# (a page shared by n processes counts 1/n in each). The anchor's php-fpm
# is the only php-fpm master whose parent is this script.
pss() { local t=0 p v; for p in "$@"; do v=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0); t=$((t + ${v:-0})); done; echo $((t / 1024)); }
tree() { local p; for p in "$@"; do echo "$p"; tree $(pgrep -P "$p"); done; }
memory="$work/memory"
{
    echo "nginx $(pss $(tree "$(cat "$work/fpm.pid")"))"
    echo "tqserver $(pss $(tree $(pgrep -P "$tq_fpm_pid" php-fpm)))"
    echo "tqserver-cgi $(pss $(tree $(pgrep -P "$tq_cgi_pid" php-cgi)))"
    echo "tqserver-shared $(pss $(tree $(pgrep -P "$tq_shared_pid" php-cgi)))"
} > "$memory"
cat "$memory" >&2
cat "$results" >&2
if [[ -n "${PROFILE:-}" ]]; then
    # Where the CPU goes during one run against each front (utime+stime
    # ticks of every process, by command name).
    for u in "${urls[@]}"; do
        before=$(ps -eo comm=,times= | awk '{a[$1]+=$2} END {for (k in a) print k, a[k]}' | sort)
        measure "$duration" "$u" > /dev/null
        after=$(ps -eo comm=,times= | awk '{a[$1]+=$2} END {for (k in a) print k, a[k]}' | sort)
        echo "CPU seconds by process during $duration on $u:" >&2
        join <(echo "$before") <(echo "$after") | awk '$3-$2 > 0 {print "  " $1, $3-$2}' | sort -k2 -nr >&2
    done
fi

python3 - "$results" "$rounds" "$duration" "$threads" "$conns" "$memory" <<'PY'
import datetime, sys
results, rounds, duration, threads, conns, memory = sys.argv[1:]
mem = dict(l.split() for l in open(memory))
sys.path.insert(0, "bench")
from benchdoc import machine, medians, read_rounds, spread, write_section
rows = read_rounds(results)
med = medians(rows)
n = med[("front", "nginx")]
lines = [f"| nginx → php-fpm | {n[0]:.1f} | {n[1]:.1f} ms | 1.00× | ±{spread(rows[('front', 'nginx')]):.0f}% | {mem['nginx']} MiB |"]
whos = [("tqserver", "tqserver → php-fpm"), ("tqserver-cgi", "tqserver → php-cgi (TQServer's pool)"),
        ("tqserver-shared", "tqserver → php-cgi, `shared_memory`")]
for who, name in whos:
    t = med[("front", who)]
    lines.append(f"| {name} | {t[0]:.1f} | {t[1]:.1f} ms | **{t[0] / n[0]:.2f}×** | ±{spread(rows[('front', who)]):.0f}% | {mem[who]} MiB |")
ratios = "; ".join(
    who + " " + ", ".join(f"{t / a:.2f}" for (a, _), (t, _) in zip(rows[("front", "nginx")], rows[("front", who)]))
    for who, _ in whos
)
table = "\n".join(lines)
section = f"""<!-- wordpress:begin (written by bench/wordpress.sh; edit the script, not this section) -->
## WordPress front page: tqserver against nginx → php-fpm

Measured {datetime.date.today().isoformat()} on {machine()} with `bench/wordpress.sh`:
Debian's WordPress 6.1 (twentytwentyone, the sample post) on a local
MariaDB, opcache on, `wrk -t{threads} -c{conns} -d{duration} --latency` on `/`, {rounds}
rounds alternating, medians shown. Every PHP pool has 2 processes (php-fpm
`pm = static`, or TQServer's cgi pool); nginx with `try_files … /index.php`
and Debian's fastcgi snippet, `access_log off`; tqserver `--mode prod`,
no access log. wrk, the servers, PHP and MariaDB share the 2 cores, and
PHP's time dominates: this measures how little the front adds. The memory
is the PHP pool's after the rounds (master included; shared pages count
once): php-cgi processes that each start PHP have an opcache each.

| server | requests/s | p99 | ratio | round spread | PHP pool memory (PSS) |
|---|---:|---:|---:|---:|---:|
{table}

Ratio in each round: {ratios}.
<!-- wordpress:end -->
"""
write_section("wordpress", section)
PY
