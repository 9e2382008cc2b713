# Shared by the wrk benchmarks (bench/php.sh, native.sh, metrics.sh); sourced,
# not run. Expects to be sourced from the repository root.

# need_packages COMMAND:PACKAGE…: installs the Debian packages whose
# command is missing (as root with apt-get), else says what to install.
need_packages() {
    local need=() pair cmd pkg
    for pair in "$@"; do
        cmd=${pair%%:*}
        pkg=${pair#*:}
        command -v "$cmd" >/dev/null || compgen -G "/usr/sbin/$cmd*" >/dev/null || need+=("$pkg")
    done
    ((${#need[@]})) || return 0
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
    else
        echo "$0: install ${need[*]} first" >&2
        exit 1
    fi
}

# A private work folder, and the pids of what the benchmark starts: all
# stopped (TERM, then KILL) and removed on exit.
work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 1
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# measure DURATION URL [wrk args…]: "requests/s p99-ms" from wrk --latency (uses
# $threads and $conns); non-2xx answers or socket errors are reported.
measure() {
    local out rps p99 errs
    out=$(wrk -t"$threads" -c"$conns" -d"$1" --latency "${@:3}" "$2")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub("us","",v); v=v/1000} else if (v ~ /ms$/) {sub("ms","",v)} else if (v ~ /s$/) {sub("s","",v); v=v*1000}; print v}' <<<"$out")
    errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")
    [[ -z "$errs" ]] || echo "$0: $2: $errs" >&2
    echo "$rps $p99"
}

# start_nginx HTTP_BLOCK: nginx in the foreground on $work/nginx.conf,
# with every bench's settings (worker_processes auto, access_log off)
# around HTTP_BLOCK (the server and upstream blocks); stopped on exit.
start_nginx() {
    local nginx_bin
    nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
    cat > "$work/nginx.conf" <<EOF
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
    access_log off;
$1
}
EOF
    "$nginx_bin" -c "$work/nginx.conf" -g 'daemon off;' &
    pids+=($!)
}

# start_anchor_fpm [CHILDREN]: the anchor's php-fpm, a pool of 2 (or
# CHILDREN) static children on $work/fpm.sock (the same pool TQServer runs
# in the PHP benchmarks); its master's pid is the last of $pids.
start_anchor_fpm() {
    local fpm root_flag="" user_lines=""
    fpm=$(ls /usr/sbin/php-fpm* | sort -V | tail -1)
    if [[ $(id -u) -eq 0 ]]; then root_flag="-R"; user_lines=$'user = root\ngroup = root'; fi
    cat > "$work/fpm.conf" <<EOF
[global]
pid = $work/fpm.pid
error_log = $work/fpm.log
daemonize = no
[bench]
$user_lines
listen = $work/fpm.sock
listen.mode = 0666
pm = static
pm.max_children = ${1:-2}
EOF
    "$fpm" -F -y "$work/fpm.conf" $root_flag &
    pids+=($!)
}

# php_server PORT FASTCGI_PASS [EXTRA]: an nginx server block for PHP in
# $docroot, with Debian's snippets/fastcgi-php.conf inlined (its include
# made absolute).
php_server() {
    cat <<EOF
    server {
        listen 127.0.0.1:$1;
        root $docroot;
        location ~ \.php\$ {
            fastcgi_split_path_info ^(.+?\.php)(/.*)\$;
            try_files \$fastcgi_script_name =404;
            set \$path_info \$fastcgi_path_info;
            fastcgi_param PATH_INFO \$path_info;
            fastcgi_index index.php;
            include /etc/nginx/fastcgi.conf;${3:-}
            fastcgi_pass $2;
        }
    }
EOF
}

# wait_hello URL…: waits (10 s at most each) until every URL answers a
# page containing "Hello"; exits otherwise.
wait_hello() {
    local url
    for url in "$@"; do
        for _ in $(seq 1 100); do
            if curl -fs "$url" | grep -q Hello; then break; fi
            sleep 0.1
        done
        curl -fs "$url" | grep -q Hello || { echo "$0: $url does not answer Hello" >&2; exit 1; }
    done
}
