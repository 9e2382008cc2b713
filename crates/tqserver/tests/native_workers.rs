//! Native workers end to end: the tqserver binary building a real Rust
//! worker with cargo and running a real Python worker, hot-reloading,
//! restarting and routing. Processes are counted from the OS table.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Project, Tq, alive, children_named, children_of, client, free_port, php_dir};
use reqwest::StatusCode;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/native")
}

/// A project whose workers get ports from a range of their own.
fn project(extra: &str) -> Project {
    let base = free_port();
    Project::new(
        "",
        &format!(
            "  port_range_start: {base}\n  port_range_end: {}\n  max_restarts: 2\n  health_check_wait_timeout_ms: 10000\nfile_watcher:\n  debounce_ms: 50\n{extra}",
            base + 40
        ),
    )
}

fn worker_dir(p: &Project, name: &str) -> PathBuf {
    p.path().join("workers").join(name)
}

/// The value of one series (`name{labels}` exactly as exposed); a
/// missing series is a failure, not a zero.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

/// The Python worker (tests/native/app.py) as a `type: command` worker.
fn python_worker(p: &Project, name: &str, route: &str, extra: &str) {
    p.worker(
        name,
        &format!(
            "path: {route}\ntype: command\ncommand:\n  run: [\"python3\", \"app.py\"]\n{extra}\n"
        ),
    );
    std::fs::copy(
        fixtures().join("app.py"),
        worker_dir(p, name).join("app.py"),
    )
    .unwrap();
}

/// The std-only Rust worker (tests/native/rustw) as a `type: rust` worker.
fn rust_worker(p: &Project, name: &str, route: &str) {
    p.worker(name, &format!("path: {route}\ntype: rust\n"));
    let d = worker_dir(p, name);
    std::fs::create_dir_all(d.join("src")).unwrap();
    std::fs::copy(fixtures().join("rustw/Cargo.toml"), d.join("Cargo.toml")).unwrap();
    std::fs::copy(fixtures().join("rustw/src/main.rs"), d.join("src/main.rs")).unwrap();
}

fn set_version(p: &Project, name: &str, from: &str, to: &str) {
    let f = worker_dir(p, name).join("src/main.rs");
    let text = std::fs::read_to_string(&f).unwrap();
    assert!(text.contains(from), "{from} not in main.rs");
    std::fs::write(&f, text.replace(from, to)).unwrap();
}

async fn get(c: &reqwest::Client, url: &str) -> (StatusCode, String) {
    match c.get(url).send().await {
        Ok(r) => {
            let s = r.status();
            (s, r.text().await.unwrap_or_default())
        }
        Err(e) => (StatusCode::IM_A_TEAPOT, format!("transport error: {e}")),
    }
}

/// Polls `url` until `ok(status, body)` (within `secs`).
async fn wait_for(
    tq: &Tq,
    url: &str,
    secs: u64,
    ok: impl Fn(StatusCode, &str) -> bool,
) -> (StatusCode, String) {
    let c = client();
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let (s, b) = get(&c, &tq.url(url)).await;
        if ok(s, &b) {
            return (s, b);
        }
        assert!(
            Instant::now() < until,
            "{url} never matched; last {s}: {b}\n--- log ---\n{}",
            tq.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pid_in(body: &str) -> u32 {
    body.split_whitespace()
        .find_map(|w| w.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {body:?}"))
}

/// What a hammer saw: 200s, the other answers, versions in order.
type Seen = (usize, Vec<String>, Vec<String>);

/// Requests in a loop from `n` clients until stopped; counts what was
/// not a 200 and which versions answered.
struct Hammer {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Seen>>,
    total: Arc<AtomicUsize>,
}

impl Hammer {
    fn start(url: String, n: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let total = Arc::new(AtomicUsize::new(0));
        let tasks = (0..n)
            .map(|_| {
                let (url, stop, total) = (url.clone(), stop.clone(), total.clone());
                tokio::spawn(async move {
                    let c = client();
                    let (mut ok, mut failures, mut versions) =
                        (0, Vec::new(), Vec::<String>::new());
                    while !stop.load(Ordering::Relaxed) {
                        let (s, b) = get(&c, &url).await;
                        total.fetch_add(1, Ordering::Relaxed);
                        if s == StatusCode::OK {
                            ok += 1;
                            let v = b.split_whitespace().next().unwrap_or("").to_string();
                            if versions.last() != Some(&v) {
                                versions.push(v);
                            }
                        } else {
                            failures
                                .push(format!("{s}: {}", b.chars().take(200).collect::<String>()));
                        }
                    }
                    (ok, failures, versions)
                })
            })
            .collect();
        Self { stop, tasks, total }
    }

    async fn finish(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        let (mut ok, mut failures, mut versions) = (0, Vec::new(), Vec::new());
        for t in self.tasks {
            let (o, f, v) = t.await.unwrap();
            ok += o;
            failures.extend(f);
            for x in v {
                if !versions.contains(&x) {
                    versions.push(x);
                }
            }
        }
        (ok, failures, versions)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_worker_hot_reloads_with_zero_failed_requests_and_shows_build_errors() {
    let p = project("");
    rust_worker(&p, "index", "/");
    let tq = Tq::start(p.path(), &["--mode", "dev"]);
    wait_for(&tq, "/hello", 120, |s, b| s == 200 && b == "v1 /hello\n").await;
    let first = children_named(&tq, "rustw");
    assert_eq!(first.len(), 1, "{first:?}");

    // Save new code while four clients hammer the route.
    let hammer = Hammer::start(tq.url("/x"), 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    set_version(&p, "index", "\"v1\"", "\"v2\"");
    wait_for(&tq, "/x", 60, |s, b| s == 200 && b.starts_with("v2")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let total = hammer.total.load(Ordering::Relaxed);
    let (ok, failures, versions) = hammer.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {total} failed: {failures:?}",
        failures.len()
    );
    assert!(ok > 20, "only {ok} requests");
    assert_eq!(versions, ["v1", "v2"], "the route switched once, v1 to v2");
    // The old instance was drained and stopped; one process serves.
    let until = Instant::now() + Duration::from_secs(10);
    while alive(first[0]) {
        assert!(Instant::now() < until, "the v1 process is still running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(children_named(&tq, "rustw").len(), 1);

    // A syntax error: dev mode answers with the compiler's output (500),
    // and the page reloads itself after the fix.
    set_version(
        &p,
        "index",
        "const VERSION",
        "const VERSION: &str = ;\nconst OLD",
    );
    let (_, page) = wait_for(&tq, "/page", 60, |s, _| s == 500).await;
    assert!(page.contains("did not build"), "{page}");
    assert!(
        page.contains("expected expression"),
        "compiler output: {page}"
    );
    assert!(page.contains("/__tqserver/livereload.js"), "{page}");
    let served = children_named(&tq, "rustw");
    assert_eq!(served.len(), 1, "the old version still runs");
    // Fixed: back to serving, as v3.
    let f = worker_dir(&p, "index").join("src/main.rs");
    std::fs::copy(fixtures().join("rustw/src/main.rs"), &f).unwrap();
    set_version(&p, "index", "\"v1\"", "\"v3\"");
    let (_, page) = wait_for(&tq, "/page", 60, |s, _| s == 200).await;
    assert!(page.contains("<p>v3</p>"), "{page}");
    assert!(
        page.contains("<script src=\"/__tqserver/livereload.js\" data-route=\"/\">"),
        "dev mode injects the live-reload script: {page}"
    );
    drop(tq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prod_mode_keeps_the_old_version_when_a_build_fails() {
    let p = project("  enabled: true\n");
    rust_worker(&p, "index", "/");
    let tq = Tq::start(p.path(), &["--mode", "prod"]);
    wait_for(&tq, "/", 180, |s, b| s == 200 && b == "v1 /\n").await;
    set_version(
        &p,
        "index",
        "const VERSION",
        "const VERSION: &str = ;\nconst OLD",
    );
    common::wait_log(&tq, "build failed", 120).await;
    let c = client();
    let (s, b) = get(&c, &tq.url("/page")).await;
    assert_eq!(s, 200, "{b}");
    assert!(!b.contains("livereload"), "no live reload in prod: {b}");
    assert!(tq.log_text().contains("the previous version keeps serving"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_worker_comes_back_after_kill_9_and_a_crash_loop_stops() {
    let flag = std::env::temp_dir().join(format!("tq-unhealthy-{}", std::process::id()));
    let p = project("");
    python_worker(
        &p,
        "api",
        "/api",
        &format!(
            "env:\n  GREETING: hello\n  UNHEALTHY_FILE: {}\nhealth:\n  interval_ms: 200\n  failures: 2",
            flag.display()
        ),
    );
    python_worker(&p, "crashy", "/crashy", "");
    std::fs::write(worker_dir(&p, "crashy").join("crash.flag"), "").unwrap();
    let tq = Tq::start(p.path(), &["--mode", "dev"]);
    let (_, b) = wait_for(&tq, "/api/x", 30, |s, _| s == 200).await;
    assert!(
        b.contains("name=api route=/api path=/x greeting=hello xff=127.0.0.1"),
        "{b}"
    );
    let first = pid_in(&b);

    // kill -9: a new process serves (the restart delay is 100 ms).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let (_, b) = wait_for(&tq, "/api/x", 30, |s, b| s == 200 && pid_in(b) != first).await;
    let second = pid_in(&b);
    assert!(
        tq.log_text()
            .contains(&format!("instance pid {first} on port"))
    );
    let m = common::admin_text(&tq, "/metrics").await;
    assert_eq!(
        metric(&m, "tqserver_native_restarts_total{worker=\"api\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "tqserver_native_ready_instances{worker=\"api\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "tqserver_native_build_duration_seconds_count{worker=\"api\"}"
        ),
        1.0,
        "{m}"
    );

    // Failing health checks get the instance replaced, new one first.
    std::fs::write(&flag, second.to_string()).unwrap();
    let (_, b) = wait_for(&tq, "/api/x", 30, |s, b| s == 200 && pid_in(b) != second).await;
    std::fs::remove_file(&flag).unwrap();
    assert!(
        tq.log_text().contains("failed its health check"),
        "{}",
        tq.log_text()
    );
    let m = common::admin_text(&tq, "/metrics").await;
    assert!(
        metric(
            &m,
            "tqserver_native_health_check_failures_total{worker=\"api\"}"
        ) >= 2.0,
        "{m}"
    );
    let third = pid_in(&b);
    let until = Instant::now() + Duration::from_secs(10);
    while alive(second) {
        assert!(
            Instant::now() < until,
            "the unhealthy process is still running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The crash loop: 1 start + 2 restarts (workers.max_restarts: 2), then
    // it stays stopped and says why.
    common::wait_log(&tq, "crashy stopped: it failed 3 times in a row", 30).await;
    let (s, page) = get(&client(), &tq.url("/crashy/")).await;
    assert_eq!(s, 503);
    assert!(page.contains("failed 3 times in a row"), "{page}");
    assert!(
        page.contains("crash.flag exists"),
        "the worker's last lines: {page}"
    );
    let starts = tq.log_text().matches("crashing at start").count();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        tq.log_text().matches("crashing at start").count(),
        starts,
        "no more tries"
    );
    // Fixing the files starts it again.
    std::fs::remove_file(worker_dir(&p, "crashy").join("crash.flag")).unwrap();
    wait_for(&tq, "/crashy/x", 30, |s, _| s == 200).await;

    // SIGTERM: every worker process is stopped and reaped.
    let mut tq = tq;
    let pids = children_named(&tq, "python");
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert!(pids.contains(&third));
    let status = tq.stop().unwrap();
    assert!(status.success(), "{status}");
    for pid in pids {
        assert!(!alive(pid), "python worker {pid} outlived tqserver");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_split_on_segment_boundaries_between_root_api_and_blog() {
    let p = project("");
    python_worker(&p, "root", "/", "");
    python_worker(&p, "api", "/api", "");
    p.worker(
        "blog",
        &format!(
            "path: /blog\ntype: php\ndocument_root: {}\nphp:\n  backend: cgi\n  pool:\n    manager: static\n    max_workers: 1\n",
            php_dir().display()
        ),
    );
    let tq = Tq::start(p.path(), &["--mode", "prod"]);
    wait_for(&tq, "/", 30, |s, _| s == 200).await;
    wait_for(&tq, "/api", 30, |s, _| s == 200).await;
    let c = client();
    for (path, expect) in [
        ("/", "name=root"),
        ("/apiary", "name=root"),
        ("/api", "name=api"),
        ("/api/", "name=api"),
        ("/api/users?id=1", "name=api route=/api path=/users?id=1"),
        ("/blogs", "name=root"),
        ("/blog/echo.php/x", "\"SCRIPT_NAME\":\"\\/blog\\/echo.php\""),
    ] {
        let (s, b) = get(&c, &tq.url(path)).await;
        assert_eq!(s, 200, "{path}: {b}");
        assert!(b.contains(expect), "{path} -> {b}");
    }
    // A request body reaches the worker; the answer's status comes back.
    let r = c
        .post(tq.url("/api/upload"))
        .body(vec![7u8; 300_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.text().await.unwrap(), "got 300000 bytes\n");
}

#[test]
fn check_reports_native_workers_and_config_errors_name_file_line_and_key() {
    let p = project("");
    python_worker(
        &p,
        "api",
        "/api",
        "scaling:\n  min_workers: 2\n  max_workers: 1",
    );
    let (status, _, err) = common::run_cli(p.path(), &["check"]);
    assert_eq!(status.code(), Some(78), "{err}");
    assert!(
        err.contains("worker.yaml:")
            && err.contains("scaling.max_workers")
            && err.contains("below scaling.min_workers"),
        "{err}"
    );
    p.worker("api", "path: /api\ntype: command\n");
    let (status, _, err) = common::run_cli(p.path(), &["check"]);
    assert_eq!(status.code(), Some(78), "{err}");
    assert!(err.contains("command.run is missing"), "{err}");
    p.worker(
        "api",
        "path: /api\ntype: command\ncommand:\n  run: [python3, app.py]\n  bulid: [x]\n",
    );
    let (status, _, err) = common::run_cli(p.path(), &["check"]);
    assert_eq!(status.code(), Some(78), "{err}");
    assert!(
        err.contains("worker.yaml:5: command.bulid: unknown key") && err.contains("build"),
        "{err}"
    );
    // The proxy's timeouts: a duration that is no duration, and zero.
    python_worker(
        &p,
        "api",
        "/api",
        "proxy:\n  send_timeout: soon\n  read_timeout: 0\n  read_timout: 1s",
    );
    let (status, _, err) = common::run_cli(p.path(), &["check"]);
    assert_eq!(status.code(), Some(78), "{err}");
    assert!(err.contains("proxy.read_timout: unknown key"), "{err}");
    python_worker(
        &p,
        "api",
        "/api",
        "proxy:\n  send_timeout: soon\n  read_timeout: 0",
    );
    let (status, _, err) = common::run_cli(p.path(), &["check"]);
    assert_eq!(status.code(), Some(78), "{err}");
    assert!(err.contains("proxy.send_timeout"), "{err}");
    assert!(
        err.contains("proxy.read_timeout: must be more than 0"),
        "{err}"
    );
    python_worker(&p, "api", "/api", "proxy:\n  send_timeout: 2m");
    rust_worker(&p, "index", "/");
    let (status, out, err) = common::run_cli(p.path(), &["check"]);
    assert!(status.success(), "{err}");
    assert!(
        out.contains("timeouts: answer head 60s, read 60s, send 120s, upgraded idle 600s"),
        "{out}"
    );
    assert!(
        out.contains("/api") && out.contains("api (command"),
        "{out}"
    );
    assert!(out.contains("index (rust, cargo build"), "{out}");
}

fn go_installed() -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/lib/go/bin".into(), "/usr/local/go/bin".into()])
        .any(|d| d.join("go").is_file())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_worker_is_built_with_go_build() {
    // Not a pass without Go: the test says what it needs.
    assert!(
        go_installed(),
        "this test builds a Go worker: install Go (Debian: apt-get install golang-go), or run the README test command, which does"
    );
    let p = project("");
    p.worker("gow", "path: /go\ntype: go\n");
    let d = worker_dir(&p, "gow");
    std::fs::create_dir_all(d.join("src")).unwrap();
    std::fs::copy(fixtures().join("gow/go.mod"), d.join("go.mod")).unwrap();
    std::fs::copy(fixtures().join("gow/src/main.go"), d.join("src/main.go")).unwrap();
    let tq = Tq::start(p.path(), &["--mode", "dev"]);
    wait_for(&tq, "/go/x", 180, |s, b| s == 200 && b == "go v1 gow /x\n").await;
    assert!(d.join("bin/gow").is_file(), "built into bin/{{name}}");
    let main = d.join("src/main.go");
    let text = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, text.replace("go v1", "go v2")).unwrap();
    wait_for(&tq, "/go/x", 180, |s, b| s == 200 && b.starts_with("go v2")).await;
}

/// The README's run command serves this repository's config/ and
/// workers/: the Rust index at / (built with the SDK) and the PHP blog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_the_rust_index_at_root_and_the_php_blog() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tq = Tq::start(&repo, &["--config", "config/server.yaml", "--mode", "dev"]);
    // The first build compiles hyper and tokio for the worker: minutes on
    // a cold two-core machine.
    let (_, page) = wait_for(&tq, "/", 600, |s, _| s == 200).await;
    assert!(page.contains("Hello from a Rust worker."), "{page}");
    assert!(
        page.contains("Worker <code>index</code> at <code>/</code>, mode <code>dev</code>"),
        "{page}"
    );
    let c = client();
    let (s, b) = get(&c, &tq.url("/bench")).await;
    assert_eq!((s, b.as_str()), (StatusCode::OK, "Hello, World!\n"));
    let (s, b) = get(&c, &tq.url("/health")).await;
    assert_eq!((s, b.as_str()), (StatusCode::OK, "ok\n"));
    let (s, b) = get(&c, &tq.url("/blog/hello.php")).await;
    assert_eq!(s, 200);
    assert!(b.contains("Hello"), "{b}");
    let (s, _) = get(&c, &tq.url("/nothing-here")).await;
    assert_eq!(s, 404, "the index worker answers unknown paths itself");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_instances_scale_up_to_max_workers_and_idle_ones_stop() {
    let p = project("");
    python_worker(
        &p,
        "api",
        "/api",
        "scaling:\n  min_workers: 1\n  max_workers: 3\n  queue_threshold: 4\n  idle_timeout: 1s",
    );
    let tq = Tq::start(p.path(), &["--mode", "prod"]);
    wait_for(&tq, "/api/x", 30, |s, _| s == 200).await;
    assert_eq!(children_named(&tq, "python").len(), 1);
    // 16 clients with 300 ms requests keep every instance busy.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let mut clients = Vec::new();
    for _ in 0..16 {
        let (url, stop, seen) = (tq.url("/api/slow?sleep=0.3"), stop.clone(), seen.clone());
        clients.push(tokio::spawn(async move {
            let c = client();
            let mut failed = 0;
            while !stop.load(Ordering::Relaxed) {
                let (s, b) = get(&c, &url).await;
                if s == 200 {
                    seen.lock().unwrap().insert(pid_in(&b));
                } else {
                    failed += 1;
                }
            }
            failed
        }));
    }
    // Until requests have gone to three instances (a busy machine starts
    // the new ones slowly).
    let until = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().len() < 3 {
        assert!(
            Instant::now() < until,
            "requests never went to 3 instances: {:?}\n{}",
            seen.lock().unwrap(),
            tq.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        assert_eq!(c.await.unwrap(), 0);
    }
    let pids = seen.lock().unwrap().clone();
    assert_eq!(pids.len(), 3, "requests went to all three: {pids:?}");
    assert_eq!(
        children_named(&tq, "python").len(),
        3,
        "never above max_workers"
    );
    // Idle: back to min_workers.
    let until = Instant::now() + Duration::from_secs(30);
    while children_named(&tq, "python").len() > 1 {
        assert!(
            Instant::now() < until,
            "never scaled down:\n{}",
            tq.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for(&tq, "/api/x", 10, |s, _| s == 200).await;
}

/// The proxy's HTTP/1.1 to instances, against Python's http.server:
/// chunked, close-delimited, bodiless and large answers, and a chunked
/// request body, each on connections that are then reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_every_framing_pass_through_the_proxy_both_ways() {
    let p = project("");
    python_worker(&p, "api", "/api", "scaling:\n  request_timeout: 1s");
    let tq = Tq::start(p.path(), &["--mode", "prod"]);
    wait_for(&tq, "/api/x", 30, |s, _| s == 200).await;
    let c = client();
    // No answer within scaling.request_timeout: 504.
    let (s, b) = get(&c, &tq.url("/api/slow?sleep=2")).await;
    assert_eq!(s, 504, "{b}");
    assert!(b.contains("did not answer within 1s"), "{b}");
    for _ in 0..3 {
        let r = c.get(tq.url("/api/chunked")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("x-trailer").is_none());
        assert_eq!(r.text().await.unwrap(), "hello chunked world");

        let (s, b) = get(&c, &tq.url("/api/close")).await;
        assert_eq!((s, b.as_str()), (StatusCode::OK, "read until close"));

        let r = c.get(tq.url("/api/nocontent")).send().await.unwrap();
        assert_eq!(r.status(), 204);
        assert_eq!(r.bytes().await.unwrap().len(), 0);

        let r = c.head(tq.url("/api/x")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-length"], "1234");
        assert_eq!(r.bytes().await.unwrap().len(), 0);

        let r = c.get(tq.url("/api/big?n=3000000")).send().await.unwrap();
        assert_eq!(r.headers()["content-length"], "3000000");
        let body = r.bytes().await.unwrap();
        let expect: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        assert!(body[..] == expect[..], "the 3 MB body arrived intact");

        // A body of unknown length goes chunked.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            (0..50).map(|i| Ok(vec![i as u8; 1000])).collect();
        let r = c
            .post(tq.url("/api/upload"))
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(r.text().await.unwrap(), "got 50000 bytes\n");

        // An instance that refuses a large body before reading it: its
        // answer reaches the client.
        let r = c
            .post(tq.url("/api/early"))
            .body(vec![1u8; 8 << 20])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413);
        assert_eq!(r.text().await.unwrap(), "too big for me\n");

        let (s, b) = get(&c, &tq.url("/api/after")).await;
        assert_eq!(s, 200, "{b}");
    }
    assert!(
        !tq.log_text().contains("upstream error"),
        "{}",
        tq.log_text()
    );
}

/// Editing a native worker's worker.yaml swaps in the new settings the
/// way a code change does (no failed request); an invalid edit is refused
/// with file, line and key, and the running version stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_yaml_edit_swaps_in_new_settings_and_a_bad_edit_is_refused() {
    let p = project("");
    let yaml = |greeting: &str, extra: &str| {
        format!(
            "path: /api\ntype: command\ncommand:\n  run: [\"python3\", \"app.py\"]\nenv:\n  GREETING: {greeting}\n{extra}"
        )
    };
    python_worker(&p, "api", "/api", "env:\n  GREETING: one");
    let tq = Tq::start(p.path(), &["--mode", "dev"]);
    wait_for(&tq, "/api/x", 30, |s, b| {
        s == 200 && b.contains("greeting=one")
    })
    .await;

    let hammer = Hammer::start(tq.url("/api/x"), 2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.worker("api", &yaml("two", ""));
    wait_for(&tq, "/api/x", 30, |s, b| {
        s == 200 && b.contains("greeting=two")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, failures, _) = hammer.finish().await;
    assert!(failures.is_empty(), "{failures:?}");
    assert!(ok > 10);

    // min_workers: 0 is invalid (line 8 of the new file).
    p.worker("api", &yaml("three", "scaling:\n  min_workers: 0\n"));
    common::wait_log(&tq, "still running the previous configuration", 10).await;
    let log = tq.log_text();
    assert!(
        log.contains("worker.yaml:8: scaling.min_workers: must be at least 1"),
        "{log}"
    );
    // Dev mode: pages show the error (as they show a build error) while
    // the previous configuration keeps running behind them.
    let (s, b) = get(&client(), &tq.url("/api/x")).await;
    assert_eq!(s, 500, "{b}");
    assert!(
        b.contains("worker.yaml:8: scaling.min_workers: must be at least 1"),
        "{b}"
    );
    // Fixed: the same settings as running, so nothing restarts; the
    // page is back.
    p.worker("api", &yaml("two", ""));
    wait_for(&tq, "/api/x", 10, |s, b| {
        s == 200 && b.contains("greeting=two")
    })
    .await;
}

/// A worker's output goes to its `logging.log_file`; a process it starts
/// itself (same process group) is stopped with it; and when tqserver is
/// killed with SIGKILL its instances go too, and what they started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_goes_to_the_log_file_and_no_process_outlives_tqserver() {
    let p = project("");
    p.worker(
        "api",
        "path: /api\ntype: command\ncommand:\n  run: [\"sh\", \"-c\", \"sleep 300 & exec python3 app.py\"]\nlogging:\n  log_file: logs/{name}_{date}.log\n",
    );
    std::fs::copy(
        fixtures().join("app.py"),
        worker_dir(&p, "api").join("app.py"),
    )
    .unwrap();
    let mut tq = Tq::start(p.path(), &["--mode", "prod"]);
    let (_, b) = wait_for(&tq, "/api/x", 30, |s, _| s == 200).await;
    let python = pid_in(&b);
    let today = common::today();
    let log = std::fs::read_to_string(p.path().join(format!("logs/api_{today}.log"))).unwrap();
    assert!(log.contains("[api] python worker api on port"), "{log}");
    let sleeper = children_of(python)
        .into_iter()
        .find(|(_, c)| c == "sleep")
        .map(|(p, _)| p)
        .expect("the worker's own child");
    // SIGTERM: the instance and the process it started are gone.
    assert!(tq.stop().unwrap().success());
    assert!(
        !alive(python) && !alive(sleeper),
        "python {python} or sleep {sleeper} outlived tqserver"
    );

    // SIGKILL of tqserver: PR_SET_PDEATHSIG takes the instance down, the
    // watchdog its own child.
    let tq = Tq::start(p.path(), &["--mode", "prod"]);
    let (_, b) = wait_for(&tq, "/api/x", 30, |s, _| s == 200).await;
    let python = pid_in(&b);
    let sleepers: Vec<u32> = children_of(python).into_iter().map(|(p, _)| p).collect();
    assert!(!sleepers.is_empty());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tq.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while alive(python) || sleepers.iter().any(|&s| alive(s)) {
        assert!(
            Instant::now() < until,
            "python {python} or its child {sleepers:?} outlived a killed tqserver"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(tq);
}

/// A worker that closes every connection silently after its answer: no
/// request may be sent on such a dead kept-alive connection, POSTs
/// (which are never sent twice) included: 200 sequential POSTs and GETs
/// from one kept-alive client, none failed.
#[tokio::test]
async fn a_worker_that_closes_kept_connections_silently_fails_no_request() {
    let p = project("");
    p.worker(
        "api",
        "path: /api\ntype: command\ncommand:\n  run: [\"python3\", \"close.py\"]\nhealth:\n  path: /\n",
    );
    std::fs::copy(
        fixtures().join("close.py"),
        worker_dir(&p, "api").join("close.py"),
    )
    .unwrap();
    let tq = Tq::start(p.path(), &[]);
    let c = client();
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while c.get(tq.url("/api/")).send().await.map(|r| r.status()).ok()
        != Some(reqwest::StatusCode::OK)
    {
        assert!(std::time::Instant::now() < until, "{}", tq.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut failed = Vec::new();
    for i in 0..200 {
        let r = c
            .post(tq.url("/api/x"))
            .body(format!("data={i}"))
            .send()
            .await
            .unwrap();
        if r.status() != 200 {
            failed.push(format!("POST {i}: {}", r.status()));
        }
        let r = c.get(tq.url("/api/x")).send().await.unwrap();
        if r.status() != 200 {
            failed.push(format!("GET {i}: {}", r.status()));
        }
    }
    assert!(failed.is_empty(), "{failed:?}\n{}", tq.log_text());
}

/// Writes `total` bytes of body to `s` at about 20 MB/s from a thread of
/// its own, until the whole body is sent or the server stops taking it.
fn upload_slowly(s: &std::net::TcpStream, total: usize) -> std::thread::JoinHandle<usize> {
    use std::io::Write;
    let mut w = s.try_clone().unwrap();
    std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 << 10];
        let mut sent = 0;
        while sent < total {
            if w.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
            std::thread::sleep(Duration::from_millis(3));
        }
        sent
    })
}

/// The worker's answer reaches the client while the request body is
/// still on its way (an early 413 of a 90 MB upload, at once, with or
/// without `Expect: 100-continue`, the client then sending no body); a
/// worker that answers at once and echoes each chunk as it reads gets
/// the body while its answer streams; `proxy.send_timeout` and
/// `proxy.read_timeout` cut a worker that stops reading or sending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_overtake_uploads_and_stalled_workers_are_cut_at_their_timeouts() {
    use common::raw;
    use std::io::{Read, Write};
    let p = project("");
    python_worker(
        &p,
        "api",
        "/api",
        "scaling:\n  request_timeout: 30s\nproxy:\n  send_timeout: 1s\n  read_timeout: 1s",
    );
    let tq = Tq::start(p.path(), &["--mode", "prod"]);
    wait_for(&tq, "/api/x", 30, |s, _| s == 200).await;
    let port = tq.port;
    let big = 90usize << 20; // under server.max_body_bytes; 4.5 s at 20 MB/s
    tokio::task::spawn_blocking(move || {
        // 1. Refusals before the body, the connection closed or kept
        //    open unread: the answer comes within a second, not after
        //    the ten seconds the upload takes.
        for path in ["/api/early", "/api/refuse-open"] {
            let mut s = raw::connect(port, Duration::from_secs(10));
            let began = Instant::now();
            s.write_all(
                format!("POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {big}\r\n\r\n")
                    .as_bytes(),
            )
            .unwrap();
            let writer = upload_slowly(&s, big);
            let r = raw::read_response(&mut s, false, Duration::from_secs(20)).expect(path);
            let took = began.elapsed();
            assert_eq!((r.status, r.text().as_str()), (413, "too big for me\n"), "{path}");
            assert!(took < Duration::from_secs(3), "{path}: the 413 took {took:?}");
            s.shutdown(std::net::Shutdown::Both).unwrap();
            let sent = writer.join().unwrap();
            eprintln!("{path}: 413 after {took:?}, {sent} bytes of the body sent");
        }
        // 2. Expect: 100-continue. A refusal comes instead of a 100, and
        //    the client sends nothing; an acceptance is the worker's 100.
        let mut s = raw::connect(port, Duration::from_secs(10));
        s.write_all(
            format!("POST /api/early HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: {big}\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let r = raw::read_response(&mut s, false, Duration::from_secs(5)).expect("a refusal");
        assert_eq!(r.status, 413, "no 100 before the refusal: {r:?}");
        let mut s = raw::connect(port, Duration::from_secs(10));
        s.write_all(
            b"POST /api/upload HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n",
        )
        .unwrap();
        let r = raw::read_response(&mut s, false, Duration::from_secs(5)).expect("a 100");
        assert_eq!(r.status, 100, "{r:?}");
        s.write_all(b"hello world").unwrap();
        let (rest, _) = raw::read_until_quiet(&mut s, Duration::from_secs(2), Duration::from_secs(10));
        let rest = String::from_utf8_lossy(&rest);
        assert!(rest.starts_with("HTTP/1.1 201"), "{rest}");
        assert!(rest.ends_with("got 11 bytes\n"), "{rest}");
        // 3. Full duplex: each chunk comes back before the next is sent.
        let mut s = raw::connect(port, Duration::from_secs(10));
        s.write_all(b"POST /api/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        for i in 0..5 {
            let word = format!("ping{i}");
            s.write_all(format!("{:x}\r\n{word}\r\n", word.len()).as_bytes()).unwrap();
            while !String::from_utf8_lossy(&got).contains(&word) {
                let n = s.read(&mut buf).expect("the echo of a chunk sent");
                assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&buf[..n]);
            }
        }
        s.write_all(b"0\r\n\r\n").unwrap();
        while !got.ends_with(b"0\r\n\r\n") {
            let n = s.read(&mut buf).expect("the end of the echo");
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
        // 4. A worker that reads nothing: 504 at proxy.send_timeout.
        let mut s = raw::connect(port, Duration::from_secs(10));
        let began = Instant::now();
        s.write_all(
            format!("POST /api/deaf HTTP/1.1\r\nHost: t\r\nContent-Length: {big}\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let writer = upload_slowly(&s, big);
        let r = raw::read_response(&mut s, false, Duration::from_secs(20)).expect("a 504");
        let took = began.elapsed();
        assert_eq!(r.status, 504, "{r:?}");
        assert!(r.text().contains("proxy.send_timeout"), "{}", r.text());
        assert!(took < Duration::from_secs(10), "took {took:?}");
        s.shutdown(std::net::Shutdown::Both).unwrap();
        writer.join().unwrap();
        // 5. A worker silent after 10 of 100 bytes: cut at proxy.read_timeout.
        let mut s = raw::connect(port, Duration::from_secs(10));
        let began = Instant::now();
        s.write_all(b"GET /api/stall HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        assert!(raw::closed_within(&mut s, Duration::from_secs(10)), "never cut");
        let took = began.elapsed();
        assert!(took < Duration::from_secs(5), "cut after {took:?}");
    })
    .await
    .unwrap();
    assert!(
        tq.log_text().contains("proxy.read_timeout"),
        "{}",
        tq.log_text()
    );
}
