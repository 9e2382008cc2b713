#!/usr/bin/env python3
"""Scale-up under a burst, TQServer's php-cgi pool against php-fpm.

A dynamic pool of 2 processes (at most 16) gets 16 concurrent requests
to bench/php/started.php, which prints when it started running and then
works for a second. Reported: how long after the burst was sent the last
request started running (all 16 processes serving), and the median.

  wrk-free; needs php-cgi, php-fpm, nginx (Debian packages).
  bench/scale.py            # 5 trials each
  TRIALS=3 bench/scale.py

Each trial starts fresh servers, so both pools start from 2 processes.
The result goes into the scale-up section of docs/BENCHMARKS.md.
"""
import datetime, http.client, os, pathlib, shutil, socket
import statistics, subprocess, sys, tempfile, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchdoc  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCROOT = ROOT / "bench" / "php"
TRIALS = int(os.environ.get("TRIALS", "5"))
BURST = 16


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def find(*names):
    for n in names:
        p = shutil.which(n) or (n if os.path.exists(n) else None)
        if p:
            return p
    for d in ("/usr/sbin", "/usr/bin"):
        for f in sorted(os.listdir(d), reverse=True):
            if any(f.startswith(n) for n in names if "/" not in n):
                return os.path.join(d, f)
    sys.exit(f"bench/scale.py: none of {names} installed")


def wait_http(port, path):
    until = time.time() + 20
    while time.time() < until:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"bench/scale.py: nothing answers on :{port}{path}")


def burst(port, path):
    """Sends BURST requests at once; seconds from send to each start."""
    starts, barrier = [], threading.Barrier(BURST + 1)

    def one():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        c.connect()
        barrier.wait()
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            sys.exit(f"bench/scale.py: status {r.status}: {body[:200]!r}")
        starts.append(float(body))

    threads = [threading.Thread(target=one) for _ in range(BURST)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # every connection open
    t0 = time.time()
    barrier.wait()
    for t in threads:
        t.join()
    return sorted(s - t0 for s in starts)


def run_tqserver(work, backend="cgi"):
    port = free_port()
    proj = work / "tq"
    (proj / "config").mkdir(parents=True)
    (proj / "workers/scale/config").mkdir(parents=True)
    (proj / "config/server.yaml").write_text(
        f"server:\n  host: 127.0.0.1\n  port: {port}\nworkers:\n  directory: workers\n")
    (proj / "workers/scale/config/worker.yaml").write_text(
        f"path: /scale\ntype: php\ndocument_root: {DOCROOT}\nphp:\n  backend: {backend}\n"
        "  pool:\n    manager: dynamic\n    start_workers: 2\n    min_workers: 2\n"
        "    max_spare_workers: 4\n    max_workers: 16\n")
    p = subprocess.Popen([str(ROOT / "target/release/tqserver"), "--mode", "prod", "--quiet"],
                         cwd=proj, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return p, port, "/scale/started.php"


def run_fpm(work, fpm_bin, nginx_bin):
    port = free_port()
    root = os.geteuid() == 0
    (work / "fpm.conf").write_text(
        f"[global]\npid = {work}/fpm.pid\nerror_log = {work}/fpm.log\ndaemonize = no\n"
        f"[scale]\n{'user = root' + chr(10) + 'group = root' if root else ''}\n"
        f"listen = {work}/fpm.sock\nlisten.mode = 0666\npm = dynamic\npm.start_servers = 2\n"
        "pm.min_spare_servers = 2\npm.max_spare_servers = 4\npm.max_children = 16\n")
    fpm = subprocess.Popen([fpm_bin, "-F", "-y", str(work / "fpm.conf")] + (["-R"] if root else []),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (work / "nginx.conf").write_text(f"""
daemon off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    server {{
        listen 127.0.0.1:{port};
        root {DOCROOT};
        location ~ \\.php$ {{
            include /etc/nginx/fastcgi.conf;
            fastcgi_pass unix:{work}/fpm.sock;
        }}
    }}
}}
""")
    ngx = subprocess.Popen([nginx_bin, "-c", str(work / "nginx.conf")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return [fpm, ngx], port, "/started.php"


def stop(procs):
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def main():
    fpm_bin = find("php-fpm", "php-fpm8")
    nginx_bin = find("nginx", "/usr/sbin/nginx")
    find("php-cgi")
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "tqserver"],
                   cwd=ROOT, check=True, stdout=sys.stderr)
    results = {"tqserver": [], "tqserver-embed": [], "php-fpm": []}
    for trial in range(TRIALS):
        for who in results:
            with tempfile.TemporaryDirectory() as d:
                work = pathlib.Path(d)
                os.chmod(work, 0o755)
                if who.startswith("tqserver"):
                    p, port, path = run_tqserver(work, "embed" if who.endswith("embed") else "cgi")
                    procs = [p]
                else:
                    procs, port, path = run_fpm(work, fpm_bin, nginx_bin)
                try:
                    wait_http(port, path)
                    time.sleep(1.5)  # settled at 2 processes
                    starts = burst(port, path)
                finally:
                    stop(procs)
            results[who].append(starts)
            print(f"trial {trial + 1} {who}: last start {starts[-1] * 1000:.0f} ms, "
                  f"median {statistics.median(starts) * 1000:.0f} ms", file=sys.stderr)

    def med(who, f):
        return statistics.median(f(s) for s in results[who]) * 1000

    last = {w: med(w, lambda s: s[-1]) for w in results}
    mid = {w: med(w, statistics.median) for w in results}
    machine = benchdoc.machine()
    rounds = "; ".join(f"{w} " + ", ".join(f"{s[-1] * 1000:.0f}" for s in v) for w, v in results.items())
    section = f"""<!-- scale:begin (written by bench/scale.py; edit the script, not this section) -->
## PHP: scale-up under a burst, TQServer's pools against php-fpm

Measured {datetime.date.today().isoformat()} on {machine} with `bench/scale.py`:
a dynamic pool at 2 processes (start 2, min spare 2, max spare 4, at most 16)
gets {BURST} concurrent requests to a script that records when it started and
then works for one second. php-fpm (behind nginx, `pm = dynamic`) checks its
pool once a second and doubles its spawn rate (1, 2, 4, 8…); TQServer
(`backend: cgi`) starts a php-cgi process the moment a request waits, and
with `backend: embed` asks its PHP master to fork one (warm: PHP started
once in the master). Fresh servers every trial; median of {TRIALS} trials.

| pool | all {BURST} requests running after | median request started after |
|---|---:|---:|
| php-fpm (via nginx) | {last['php-fpm']:.0f} ms | {mid['php-fpm']:.0f} ms |
| TQServer php-cgi pool | {last['tqserver']:.0f} ms | {mid['tqserver']:.0f} ms |
| TQServer embedded PHP (forked from its master) | {last['tqserver-embed']:.0f} ms | {mid['tqserver-embed']:.0f} ms |

Every trial, last start (ms): {rounds}.
<!-- scale:end -->
"""
    benchdoc.write_section("scale", section)


if __name__ == "__main__":
    main()
