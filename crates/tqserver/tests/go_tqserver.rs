//! A project moved from the Go TQServer runs unchanged: its layout and
//! its keys (written here in its style, not copied from it), its Bun,
//! Go and PHP workers, its autoscaling, its `max_requests`, and its
//! SOCKS5 egress proxy, with real bun (npm's package), Express (npm),
//! go, php-fpm, curl and openssl s_server.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Project, Tq, client, free_port, php_dir, run_cli};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// The folder with `bun`: on PATH, or where the README test command
/// installs npm's package (target/tools/npm).
fn bun_dir() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let installed =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tools/npm/node_modules/.bin");
    std::env::split_paths(&path)
        .chain([installed])
        .find(|d| d.join("bun").is_file())
        .expect("this test runs Bun workers: run the README test command, which installs npm's bun into target/tools/npm")
}

/// PATH with bun's folder first, for tqserver and its workers.
fn path_with_bun() -> String {
    let mut dirs = vec![bun_dir()];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

async fn get(tq: &Tq, path: &str) -> (u16, String) {
    match client().get(tq.url(path)).send().await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

async fn wait_for(tq: &Tq, path: &str, secs: u64, ok: impl Fn(u16, &str) -> bool) -> String {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let (s, b) = get(tq, path).await;
        if ok(s, &b) {
            return b;
        }
        assert!(
            Instant::now() < until,
            "{path}: last answer {s} {b}\n{}",
            tq.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A server.yaml in the Go TQServer's style, with its keys and values.
fn original_server_yaml(socks_port: u16) -> String {
    let base = free_port();
    format!(
        r#"# TQServer Configuration
server:
  port: 8080
  read_timeout_seconds: 30
  write_timeout_seconds: 30
  idle_timeout_seconds: 120
  log_file: "logs/tqserver_{{date}}.log"

workers:
  directory: "workers"
  port_range_start: {base}
  port_range_end: {}
  startup_delay_ms: 100
  restart_delay_ms: 100
  shutdown_grace_period_ms: 3000
  health_check_timeout_ms: 1000

file_watcher:
  debounce_ms: 50

socks5:
  enabled: true
  port: {socks_port}
  log_file: "logs/socks5_{{date}}.log"
  log_format: "json"
"#,
        base + 40
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_in_the_go_tqservers_layout_runs_unchanged() {
    let p = Project::new("", "");
    std::fs::write(
        p.path().join("config/server.yaml"),
        original_server_yaml(free_port()),
    )
    .unwrap();
    // The blog: PHP on php-fpm, the original's keys.
    p.worker(
        "blog",
        "# Blog Worker Configuration\npath: \"/blog\"\ntype: php\nenabled: true\nphp:\n  settings:\n    max_execution_time: \"30\"\n    memory_limit: \"128M\"\n    display_errors: \"on\"\n  pool:\n    manager: dynamic\n    min_workers: 1\n    max_workers: 3\n    start_workers: 1\n    max_requests: 1000\n    request_timeout: 30\n    idle_timeout: 10\n    listen_address: \"127.0.0.1\"\ndocument_root: ./public\nlogging:\n  level: info\n  access_log: true\n  slow_log:\n    enabled: true\n    threshold: 1s\n",
    );
    let blog = p.path().join("workers/blog/public");
    std::fs::create_dir_all(&blog).unwrap();
    std::fs::write(
        blog.join("index.php"),
        "<?php echo 'blog mode=', getenv('WORKER_SERVER_MODE'), ' name=', getenv('WORKER_NAME'), ' path=', getenv('WORKER_PATH'), ' port=', getenv('WORKER_PORT'), ' uri=', $_SERVER['REQUEST_URI'], \"\\n\";",
    )
    .unwrap();
    // The index: a Go worker at /, with the go: section.
    p.worker(
        "index",
        "# Worker Configuration for Index\npath: \"/\"\ntype: \"go\"\nenabled: true\ngo:\n  go_max_procs: 2\n  go_mem_limit: \"512MiB\"\n  max_requests: 0\nlogging:\n  log_file: \"logs/worker_{name}_{date}.log\"\n",
    );
    let index = p.path().join("workers/index");
    std::fs::create_dir_all(index.join("src")).unwrap();
    std::fs::write(index.join("go.mod"), "module index\n\ngo 1.19\n").unwrap();
    std::fs::copy(fixtures().join("gotq/main.go"), index.join("src/main.go")).unwrap();
    // The API: Bun running Express, from npm, with the original's keys.
    p.worker(
        "api",
        "# Worker Configuration for TypeScript API Service\npath: \"/api\"\ntype: \"bun\"\nenabled: true\nscaling:\n  min_workers: 1\n  max_workers: 5\n  queue_threshold: 10\n  scale_down_delay: 60\nbun:\n  entrypoint: \"index.ts\"\n  env:\n    GREETING: hello\ntimeouts:\n  read_timeout_seconds: 30\n  write_timeout_seconds: 30\n  idle_timeout_seconds: 120\n",
    );
    let api = p.path().join("workers/api");
    std::fs::copy(fixtures().join("gotq/api.ts"), api.join("index.ts")).unwrap();
    std::fs::write(
        api.join("package.json"),
        r#"{ "name": "api-worker", "module": "index.ts", "type": "module", "dependencies": { "express": "^4.18.2" } }"#,
    )
    .unwrap();
    std::fs::create_dir_all(api.join("public")).unwrap();
    std::fs::write(api.join("public/base.css"), "body { margin: 0 }\n").unwrap();
    // The project's shared public folder, and the original's live-reload
    // script there (it talked to the original's /ws/reload).
    std::fs::create_dir_all(p.path().join("server/public")).unwrap();
    std::fs::write(p.path().join("server/public/shared.txt"), "shared\n").unwrap();
    std::fs::write(
        p.path().join("server/public/dev-reload.js"),
        "new WebSocket('ws://' + location.host + '/ws/reload');\n",
    )
    .unwrap();
    // A dev-only worker, as the original's metrics dashboard.
    p.worker(
        "monitoring",
        "path: \"/monitoring\"\ntype: \"bun\"\nenabled: \"development\"\nbun:\n  entrypoint: \"index.ts\"\n",
    );
    std::fs::write(p.path().join("workers/monitoring/index.ts"), "Bun.serve({ port: Number(process.env.PORT), hostname: '127.0.0.1', fetch: () => new Response('monitoring') });\n").unwrap();

    let (status, out, err) = run_cli(p.path(), &["check"]);
    assert!(status.success(), "{out}{err}");
    assert!(!out.contains("warning:"), "nothing to warn about:\n{out}");
    let (status, out, _) = run_cli(p.path(), &["--mode", "prod", "check"]);
    assert!(status.success());
    assert!(
        out.contains("/monitoring      -> monitoring (disabled in prod mode)"),
        "{out}"
    );

    let tq = Tq::start_env(p.path(), &["--mode", "dev"], &[("PATH", &path_with_bun())]);
    // Go at /, its limits in its environment.
    let b = wait_for(&tq, "/hello", 180, |s, _| s == 200).await;
    assert_eq!(
        b,
        "index index path=/hello gomaxprocs=2 gomemlimit=512MiB\n"
    );
    // PHP: the original's variables, WORKER_PORT its FastCGI port.
    let b = wait_for(&tq, "/blog/", 60, |s, _| s == 200).await;
    assert!(
        b.starts_with("blog mode=dev name=blog path=/blog port="),
        "{b}"
    );
    let port: u16 = b
        .split("port=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .expect("a port");
    assert!(port > 0);
    assert!(b.ends_with("uri=/blog/\n"), "{b}");
    // Bun + Express: bun install ran, the prefix is stripped.
    let items = wait_for(&tq, "/api/items", 180, |s, _| s == 200).await;
    assert_eq!(items, r#"[{"id":"1","name":"Item 1"}]"#);
    assert!(p.path().join("workers/api/node_modules/express").is_dir());
    let env: serde_json::Value = serde_json::from_str(&get(&tq, "/api/env?x=1").await.1).unwrap();
    assert_eq!(env["path"], "/env?x=1");
    assert_eq!(env["prefix"], "/api");
    assert_eq!(env["WORKER_NAME"], "api");
    assert_eq!(env["WORKER_PATH"], "/api");
    assert_eq!(env["WORKER_TYPE"], "bun");
    assert_eq!(env["WORKER_MODE"], "dev");
    assert_eq!(env["GREETING"], "hello");
    assert_eq!(env["WORKER_READ_TIMEOUT_SECONDS"], "30");
    assert!(
        env["WORKER_PORT"].as_str().unwrap().parse::<u16>().is_ok(),
        "{env}"
    );
    assert!(
        env["ALL_PROXY"]
            .as_str()
            .unwrap()
            .starts_with("socks5://127.0.0.1:"),
        "{env}"
    );
    assert_eq!(env["TQSERVER_WORKER_UA"], "TQServer/api");
    // Each instance's output in logs/{name}_{port}.log, as the original's.
    let port = env["WORKER_PORT"].as_str().unwrap();
    let out = p.path().join(format!("logs/api_{port}.log"));
    let until = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&out).is_ok_and(|t| t.contains(&format!("api worker on {port}")))
    {
        assert!(Instant::now() < until, "{} has no output", out.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The Go worker's logging.log_file is its log, with its name and date.
    let index_log = p
        .path()
        .join(format!("logs/worker_index_{}.log", common::today()));
    assert!(index_log.is_file(), "{}", index_log.display());
    // The worker's public/ folder is served before the request is proxied.
    let r = client().get(tq.url("/api/base.css")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    assert_eq!(r.text().await.unwrap(), "body { margin: 0 }\n");
    // Then the project's server/public/, by the full path.
    assert_eq!(get(&tq, "/shared.txt").await, (200, "shared\n".to_string()));
    assert_eq!(
        get(&tq, "/api/shared.txt").await.0,
        404,
        "not below a route"
    );
    // The original's pages load /dev-reload.js: TQServer's live reload is
    // injected into pages instead, and that script does nothing.
    let (s, js) = get(&tq, "/dev-reload.js").await;
    assert_eq!(s, 200);
    assert!(
        js.starts_with("// TQServer injects its own live reload"),
        "{js}"
    );
    // The dev-only worker runs in dev mode.
    assert_eq!(
        wait_for(&tq, "/monitoring", 120, |s, _| s == 200).await,
        "monitoring"
    );
}

/// tests/native/app.py at /py with `keys`, started and answering.
async fn python_worker(keys: &str) -> (Project, Tq) {
    let p = Project::new("", "");
    p.worker(
        "py",
        &format!("path: /py\ntype: command\ncommand:\n  run: [\"python3\", \"app.py\"]\n{keys}"),
    );
    std::fs::copy(
        fixtures().join("native/app.py"),
        p.path().join("workers/py/app.py"),
    )
    .unwrap();
    let tq = Tq::start(p.path(), &[]);
    wait_for(&tq, "/py/x", 60, |s, _| s == 200).await;
    (p, tq)
}

/// A command worker of `scaling:` keys: a burst of slow requests grows it
/// to max_workers, idleness brings it back to min_workers, and no request
/// fails on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_scale_up_under_load_and_down_when_idle() {
    let (_p, tq) = python_worker("scaling:\n  min_workers: 1\n  max_workers: 3\n  queue_threshold: 2\n  scale_down_delay: 2\n").await;
    let instances = || async {
        let v: serde_json::Value =
            serde_json::from_str(&common::admin_text(&tq, "/api/dashboard").await).unwrap();
        let w = v["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == "py")
            .unwrap()
            .clone();
        w["pool"]["total"].as_u64().unwrap_or_else(|| panic!("{w}"))
    };
    assert_eq!(instances().await, 1);
    let v: serde_json::Value =
        serde_json::from_str(&common::admin_text(&tq, "/api/dashboard").await).unwrap();
    let py = v["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "py")
        .unwrap();
    assert_eq!(
        py["scaling"],
        serde_json::json!({ "min": 1, "max": 3 }),
        "shown on the dashboard"
    );
    // Eight at a time, each 0.5 s, for 6 s: four in hand per instance.
    let c = client();
    let failures = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let until = Instant::now() + Duration::from_secs(6);
    let mut load = Vec::new();
    for _ in 0..8 {
        let (c, url, f, d) = (
            c.clone(),
            tq.url("/py/x?sleep=0.5"),
            failures.clone(),
            done.clone(),
        );
        load.push(tokio::spawn(async move {
            while Instant::now() < until {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {}
                    _ => {
                        f.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                d.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    let mut most = 0;
    while Instant::now() < until {
        most = most.max(instances().await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for l in load {
        l.await.unwrap();
    }
    assert_eq!(most, 3, "scaled up to max_workers\n{}", tq.log_text());
    assert_eq!(
        failures.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "{}",
        tq.log_text()
    );
    assert!(done.load(std::sync::atomic::Ordering::Relaxed) > 40);
    // Idle for scale_down_delay: back to min_workers, one at a time.
    let until = Instant::now() + Duration::from_secs(30);
    while instances().await > 1 {
        assert!(
            Instant::now() < until,
            "never scaled down\n{}",
            tq.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(tq.log_text().contains("scaling down"), "{}", tq.log_text());
    assert_eq!(get(&tq, "/py/x").await.0, 200);
}

/// `go.max_requests`: an instance is replaced after that many requests,
/// and no request fails (`runtime.max_requests`, the Go TQServer's
/// example file's spelling, is checked in config_check.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_replaces_instances_without_failures() {
    let (_p, tq) = python_worker("go:\n  max_requests: 5\n").await;
    let mut pids = std::collections::BTreeSet::new();
    for i in 0..30 {
        let (s, b) = get(&tq, "/py/x").await;
        assert_eq!(s, 200, "request {i}: {b}\n{}", tq.log_text());
        pids.insert(
            b.split("pid=")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_string(),
        );
        // A replacement starts beside the old instance, which keeps
        // serving until the new one is ready: time for it to be.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(pids.len() >= 3, "replaced after every 5 requests: {pids:?}");
    assert!(
        tq.log_text()
            .contains("(scaling.max_requests); replacing it")
    );
}

/// The egress proxy: curl --socks5-hostname from inside a worker to a
/// local HTTP server and to a local HTTPS server (openssl s_server, a
/// certificate of the test's own); each connection is one log line with
/// the worker found from its socket, the destination and the bytes; the
/// HTTP one with method, URL and status. Metrics count them per worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_calls_go_through_the_socks5_proxy_and_are_logged_by_worker() {
    let socks = free_port();
    let p = Project::new("", "");
    std::fs::write(
        p.path().join("config/server.yaml"),
        original_server_yaml(socks),
    )
    .unwrap();
    out_worker(&p);
    // A PHP worker on php-fpm whose script calls out through curl: its
    // process is a php-fpm child, found through the master TQServer runs.
    p.worker(
        "shop",
        "path: /shop\ntype: php\nphp:\n  pool:\n    manager: static\n    max_workers: 1\n",
    );
    std::fs::create_dir_all(p.path().join("workers/shop/public")).unwrap();
    std::fs::write(
        p.path().join("workers/shop/public/call.php"),
        "<?php $p = substr(getenv('SOCKS5_PROXY'), strlen('socks5://')); echo shell_exec('curl -sS --socks5-hostname ' . escapeshellarg($p) . ' ' . escapeshellarg($_GET['url']) . ' 2>&1');",
    )
    .unwrap();
    // Destinations: python's http.server and openssl's s_server.
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("hello.txt"), "hello from http\n").unwrap();
    let http_port = free_port();
    let mut http = std::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &http_port.to_string(),
        ])
        .current_dir(site.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let cert = common::tls::openssl_cert(site.path(), "dest", "localhost", "DNS:localhost");
    let https_port = free_port();
    let mut https = std::process::Command::new("openssl")
        .args([
            "s_server",
            "-quiet",
            "-www",
            "-accept",
            &https_port.to_string(),
            "-cert",
        ])
        .arg(&cert.cert)
        .arg("-key")
        .arg(&cert.key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let tq = Tq::start(p.path(), &[]);
    wait_for(&tq, "/out/health", 60, |s, _| s == 200).await;
    let url = format!("http://localhost:{http_port}/hello.txt");
    let b = wait_for(&tq, &format!("/out/fetch?url={url}"), 20, |_, b| {
        b.contains("hello")
    })
    .await;
    assert_eq!(b, "hello from http\n");
    let b = get(
        &tq,
        &format!(
            "/out/fetch?url=https://localhost:{https_port}/&cacert={}",
            cert.cert.display()
        ),
    )
    .await
    .1;
    assert!(
        b.contains("s_server"),
        "the HTTPS page through the proxy: {b}"
    );
    let b = wait_for(&tq, &format!("/shop/call.php?url={url}"), 30, |s, _| {
        s == 200
    })
    .await;
    assert_eq!(b, "hello from http\n");
    // Raw sockets: what is not SOCKS5 CONNECT with no authentication is
    // answered as RFC 1928 says and closed, never relayed.
    use std::io::{Read, Write};
    let raw = |send: &[u8]| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", socks)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(send).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    };
    assert_eq!(
        raw(b"GET http://localhost/ HTTP/1.1\r\n\r\n"),
        b"",
        "an HTTP proxy request"
    );
    assert_eq!(raw(&[5, 1, 2]), [5, 0xff], "username/password only");
    let bind = [5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80];
    assert_eq!(
        raw(&bind),
        [5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0],
        "BIND: command not supported"
    );
    // It listens on loopback only: no other address of this machine.
    let listening = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let hex_port = format!(":{socks:04X} ");
    let socks_lines: Vec<&str> = listening
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|a| a.ends_with(hex_port.trim()))
                && l.split_whitespace().nth(3) == Some("0A")
        })
        .collect();
    assert_eq!(socks_lines.len(), 1, "{socks_lines:?}");
    assert!(
        socks_lines[0]
            .split_whitespace()
            .nth(1)
            .unwrap()
            .starts_with("0100007F:"),
        "{socks_lines:?}"
    );
    let log = p
        .path()
        .join(format!("logs/socks5_{}.log", common::today()));
    let until = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|l: &serde_json::Value| l["worker"] == "out")
            .collect();
        if lines.len() >= 2 || Instant::now() > until {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let plain = lines
        .iter()
        .find(|l| l["port"] == http_port)
        .unwrap_or_else(|| panic!("no line for the HTTP call: {lines:?}"));
    assert_eq!(plain["host"], "localhost");
    assert_eq!(plain["method"], "GET");
    assert_eq!(plain["url"], url.as_str());
    assert_eq!(plain["status"], 200);
    assert!(plain["bytes_sent"].as_u64().unwrap() > 50, "{plain}");
    assert!(plain["bytes_received"].as_u64().unwrap() > 16, "{plain}");
    assert!(plain["pid"].as_u64().is_some(), "{plain}");
    let tls = lines
        .iter()
        .find(|l| l["port"] == https_port)
        .unwrap_or_else(|| panic!("no line for the HTTPS call: {lines:?}"));
    assert!(tls["bytes_received"].as_u64().unwrap() > 500, "{tls}");
    assert!(tls.get("method").is_none(), "TLS stays opaque: {tls}");
    let scrape = common::admin_text(&tq, "/metrics").await;
    assert!(
        scrape.contains("tqserver_egress_connections_total{worker=\"out\"} 2"),
        "{scrape}"
    );
    assert!(
        scrape.contains("tqserver_egress_connections_total{worker=\"shop\"} 1"),
        "the PHP worker's call is its own: {scrape}"
    );
    let _ = http.kill();
    let _ = https.kill();
    let _ = http.wait();
    let _ = https.wait();
    let _ = php_dir();
}

/// tests/gotq/https_echo.py on `port` with this certificate.
fn https_echo(port: u16, chain: &Path, key: &Path) -> std::process::Child {
    std::process::Command::new("python3")
        .arg(fixtures().join("gotq/https_echo.py"))
        .arg(port.to_string())
        .arg(chain)
        .arg(key)
        .spawn()
        .unwrap()
}

/// The first JSON line of the egress log `log` that `pick` takes,
/// waited for up to 5 s.
async fn log_line(log: &Path, pick: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(l) = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| pick(l))
        {
            return l;
        }
        assert!(
            Instant::now() < until,
            "no such line in {}:\n{text}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// tests/gotq/out.py at /out: a worker that calls out with curl.
fn out_worker(p: &Project) {
    p.worker(
        "out",
        "path: /out\ntype: command\ncommand:\n  run: [\"python3\", \"out.py\"]\n",
    );
    std::fs::copy(
        fixtures().join("gotq/out.py"),
        p.path().join("workers/out/out.py"),
    )
    .unwrap();
}

/// A CA of the test's own and a certificate it signed for localhost:
/// (CA file, chain file, key file).
fn test_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "egress test CA");
    ca.distinguished_name = dn;
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let files = (
        dir.join("ca.pem"),
        dir.join("leaf.pem"),
        dir.join("leaf.key"),
    );
    std::fs::write(&files.0, ca_cert.pem()).unwrap();
    std::fs::write(&files.1, format!("{}{}", leaf.pem(), ca_cert.pem())).unwrap();
    std::fs::write(&files.2, key.serialize_pem()).unwrap();
    files
}

/// HTTPS inspection in dev mode: the worker's curl trusts the CA TQServer
/// made (it is given SSL_CERT_FILE), TQServer re-originates to the real
/// host and verifies it, and the log has the request's method, URL and
/// body, and the response's status and body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_inspection_logs_the_request_and_response_of_an_https_call() {
    let socks = free_port();
    let p = Project::new("", "");
    let yaml = original_server_yaml(socks).replace(
        "  log_format: \"json\"\n",
        "  log_format: \"json\"\n  https_inspection:\n    enabled: true\n    ca_cert: \"config/tqserver-ca.crt\"\n    ca_key: \"config/tqserver-ca.key\"\n    auto_generate: true\n    log_body: true\n    max_body_size: 16\n",
    );
    std::fs::write(p.path().join("config/server.yaml"), yaml).unwrap();
    out_worker(&p);
    let site = tempfile::tempdir().unwrap();
    let (ca, chain, key) = test_ca(site.path());
    let port = free_port();
    let dest = https_echo(port, &chain, &key);
    // TQServer verifies the host with the test's CA ($SSL_CERT_FILE, as
    // it was started); the worker gets TQServer's CA instead.
    let tq = Tq::start_env(
        p.path(),
        &["--mode", "dev"],
        &[("SSL_CERT_FILE", ca.to_str().unwrap())],
    );
    wait_for(&tq, "/out/health", 60, |s, _| s == 200).await;
    let made = p.path().join("config/tqserver-ca.crt");
    assert!(made.is_file(), "auto_generate made the CA");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(p.path().join("config/tqserver-ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let url = format!("https://localhost:{port}/pay");
    let b = wait_for(
        &tq,
        &format!("/out/fetch?url={url}&data=card%3D4242424242424242"),
        20,
        |_, b| b.contains("got"),
    )
    .await;
    assert_eq!(b, "got 21 bytes");
    let log = p
        .path()
        .join(format!("logs/socks5_{}.log", common::today()));
    let line = log_line(&log, |l| l["worker"] == "out" && l["port"] == port).await;
    assert_eq!(line["tls"], "inspected", "{line}");
    assert_eq!(line["method"], "POST", "{line}");
    assert_eq!(line["url"], url.as_str(), "{line}");
    assert_eq!(line["status"], 201, "{line}");
    // max_body_size: 16 bytes of each body.
    assert_eq!(line["request_body"], "card=42424242424", "{line}");
    assert_eq!(line["response_body"], "got 21 bytes", "{line}");
    // A host whose certificate TQServer cannot verify is refused, and the
    // worker's call fails rather than reaching it unverified.
    let elsewhere = tempfile::tempdir().unwrap();
    let (_, other_chain, other_key) = test_ca(elsewhere.path());
    let other = free_port();
    let untrusted = https_echo(other, &other_chain, &other_key);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = get(
        &tq,
        &format!("/out/fetch?url=https://localhost:{other}/pay&data=x"),
    )
    .await
    .1;
    assert!(!b.contains("got"), "an unverified host was reached: {b}");
    let refused = log_line(&log, |l| l["port"] == other).await;
    let e = refused["error"].as_str().unwrap_or_default();
    assert!(e.contains("TLS to localhost failed"), "{refused}");
    for mut c in [dest, untrusted] {
        let _ = c.kill();
        let _ = c.wait();
    }
}
