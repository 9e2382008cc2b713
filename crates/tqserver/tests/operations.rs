//! Operations, against the real binary under load: live configuration
//! changes (pool sizes, php-fpm settings, added, moved, re-typed and
//! removed workers, server.yaml) with no failed request; stopping during a
//! long PHP request; SIGKILL leaving no process behind and a restart on the
//! same ports; dropping root.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Project, Tq, alive, children_of, client, free_port, php_dir, run_cli};

/// Clients looping over URLs until stopped: 200s, and everything else.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(usize, Vec<String>)>>,
}

impl Load {
    fn start(urls: &[String]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = urls
            .iter()
            .map(|url| {
                let (url, stop) = (url.clone(), stop.clone());
                tokio::spawn(async move {
                    let c = client();
                    let (mut ok, mut failed) = (0, Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        match c.get(&url).send().await {
                            Ok(r) if r.status() == 200 => {
                                let _ = r.bytes().await;
                                ok += 1;
                            }
                            Ok(r) => {
                                let s = r.status();
                                let b = r.text().await.unwrap_or_default();
                                failed.push(format!(
                                    "{url}: {s} {}",
                                    b.chars().take(200).collect::<String>()
                                ));
                            }
                            Err(e) => failed.push(format!("{url}: {e}")),
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        Self { stop, tasks }
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut ok, mut failed) = (0, Vec::new());
        for t in self.tasks {
            let (o, f) = t.await.unwrap();
            ok += o;
            failed.extend(f);
        }
        (ok, failed)
    }
}

fn php(route: &str, backend: &str, pool: &str, settings: &str) -> String {
    format!(
        "path: {route}\ntype: php\ndocument_root: {}\nphp:\n  backend: {backend}\n{settings}  pool:\n{pool}",
        php_dir().display()
    )
}

const STATIC2: &str = "    manager: static\n    max_workers: 2\n";

/// server.yaml with the port in the file (so a reload can move it).
fn server_yaml(port: u16, extra: &str) -> String {
    format!(
        "server:\n  host: 127.0.0.1\n  port: {port}\n{extra}workers:\n  directory: workers\n  shutdown_grace_period_ms: 3000\nfile_watcher:\n  config: false\n"
    )
}

/// `tqserver reload` against `tq`: exit status and what it printed.
fn reload(p: &Project, tq: &Tq) -> (i32, String) {
    let admin = tq.admin.trim_start_matches("http://");
    let (status, out, err) = run_cli(p.path(), &["reload", "--admin-listen", admin]);
    (status.code().unwrap_or(-1), format!("{out}{err}"))
}

async fn get(url: &str) -> (u16, String) {
    match client().get(url).send().await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// Every process below `pid`, however deep.
fn descendants(pid: u32) -> BTreeSet<u32> {
    let mut all = BTreeSet::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for (c, _) in children_of(p) {
            if all.insert(c) {
                todo.push(c);
            }
        }
    }
    all
}

/// The php-fpm master of `worker` (its configuration file names it) and
/// its children.
fn fpm_pids_of(tq: &Tq, worker: &str) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for m in common::children_named(tq, "php-fpm") {
        let cmdline = std::fs::read(format!("/proc/{m}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains(&format!("php-fpm-{worker}.")) {
            out.insert(m);
            out.extend(descendants(m));
        }
    }
    out
}

async fn wait_gone(pids: &BTreeSet<u32>, secs: u64, what: &str) {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let left: Vec<_> = pids.iter().filter(|&&p| alive(p)).collect();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < until, "{what}: still running: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn python_worker(p: &Project, name: &str, route: &str, run: &str) {
    p.worker(
        name,
        &format!("path: {route}\ntype: command\ncommand:\n  run: {run}\n"),
    );
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/native/app.py"),
        p.path().join("workers").join(name).join("app.py"),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_live_change_keeps_every_request() {
    let p = Project::new("", "");
    let port = free_port();
    let server = p.path().join("config/server.yaml");
    std::fs::write(&server, server_yaml(port, "")).unwrap();
    p.worker("cgi", &php("/c", "cgi", STATIC2, ""));
    // php-fpm on TCP (a port from the range), as the demo blog.
    let fpm_pool = "    manager: static\n    max_workers: 2\n    listen_address: 127.0.0.1\n";
    p.worker("fpm", &php("/f", "fpm", fpm_pool, ""));
    let tq = Tq::start_file_port(p.path(), port, &["--mode", "prod"]);
    assert_eq!(get(&tq.url("/f/pid.php")).await.0, 200);
    let load = Load::start(&[
        tq.url("/c/pid.php"),
        tq.url("/f/pid.php"),
        tq.url("/c/ini.php?k=memory_limit"),
    ]);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 1. The cgi pool: static 2 → dynamic up to 4, in place.
    p.worker(
        "cgi",
        &php(
            "/c",
            "cgi",
            "    manager: dynamic\n    max_workers: 4\n    start_workers: 1\n    min_workers: 1\n    max_spare_workers: 2\n",
            "",
        ),
    );
    let (code, out) = reload(&p, &tq);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("worker cgi:") && out.contains("applied"),
        "{out}"
    );
    let status = common::admin_text(&tq, "/status/cgi?json").await;
    assert!(
        status.contains("\"process manager\":\"dynamic\""),
        "{status}"
    );

    // 2. php-fpm's settings: SIGUSR2, same master.
    let fpm_96m = php(
        "/f",
        "fpm",
        fpm_pool,
        "  settings:\n    memory_limit: 96M\n",
    );
    p.worker("fpm", &fpm_96m);
    let (code, out) = reload(&p, &tq);
    assert_eq!(code, 0, "{out}");
    assert_eq!(get(&tq.url("/f/ini.php?k=memory_limit")).await.1, "96M");
    assert!(tq.log_text().contains("php-fpm reloaded with SIGUSR2"));

    // 2b. Only TQServer's side of it (an access log): php-fpm keeps its
    // children (and their opcache).
    let fpm_children = || {
        common::children_named(&tq, "php-fpm")
            .into_iter()
            .flat_map(|m| children_of(m).into_iter().map(|(p, _)| p))
            .collect::<BTreeSet<u32>>()
    };
    let before = fpm_children();
    p.worker("fpm", &(fpm_96m.clone() + "logging:\n  access_log: true\n"));
    let (code, out) = reload(&p, &tq);
    assert!(code == 0 && out.contains("worker fpm:"), "{out}");
    assert!(
        tq.log_text()
            .contains("php-fpm's own configuration is unchanged: not reloaded")
    );
    assert_eq!(fpm_children(), before);

    // 3. A worker added (through SIGHUP this time).
    p.worker("extra", &php("/n", "cgi", STATIC2, ""));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tq.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    );
    common::wait_log(&tq, "worker extra started at /n", 20).await;
    assert_eq!(get(&tq.url("/n/pid.php")).await.0, 200);

    // 4. Moved to another path.
    p.worker("extra", &php("/n2", "cgi", STATIC2, ""));
    let (code, out) = reload(&p, &tq);
    assert!(code == 0 && out.contains("moved from /n to /n2"), "{out}");
    assert_eq!(get(&tq.url("/n2/pid.php")).await.0, 200);
    assert_eq!(get(&tq.url("/n/pid.php")).await.0, 404);
    let m = common::admin_text(&tq, "/metrics").await;
    assert!(
        m.contains("tqserver_worker_info{worker=\"extra\",route=\"/n2\""),
        "{m}"
    );
    assert!(
        !m.contains("tqserver_worker_info{worker=\"extra\",route=\"/n\","),
        "{m}"
    );

    // 5. Another backend, under its own load: a new pool beside, then
    // the old one stops.
    let moving = Load::start(&[tq.url("/n2/pid.php")]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.worker("extra", &php("/n2", "fpm", STATIC2, ""));
    let (code, out) = reload(&p, &tq);
    assert!(code == 0 && out.contains("worker extra replaced"), "{out}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, failed) = moving.finish().await;
    assert!(failed.is_empty() && ok > 5, "{ok} ok; failed: {failed:?}");

    // 6. An invalid change: refused with file, line and key; nothing moves.
    p.worker(
        "fpm",
        &php("/f", "fpm", &fpm_pool.replace(": 2", ": 0"), ""),
    );
    let (code, out) = reload(&p, &tq);
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("worker.yaml:8: php.pool.max_workers"), "{out}");
    let m = common::admin_text(&tq, "/metrics").await;
    assert!(
        m.contains("tqserver_config_last_reload_successful 0"),
        "{m}"
    );
    assert!(
        m.contains("tqserver_config_reloads_total{result=\"refused\"} 1"),
        "{m}"
    );
    p.worker("fpm", &fpm_96m);

    // 7. Removed: unrouted, drained, stopped.
    let extra_pids = fpm_pids_of(&tq, "extra");
    let kept_pids = fpm_pids_of(&tq, "fpm");
    assert!(!extra_pids.is_empty() && !kept_pids.is_empty());
    // A request in progress on it finishes.
    let slow = {
        let url = tq.url("/n2/sleep.php?ms=1500");
        tokio::spawn(async move { get(&url).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::remove_dir_all(p.path().join("workers/extra")).unwrap();
    let (code, out) = reload(&p, &tq);
    assert!(code == 0 && out.contains("worker extra removed"), "{out}");
    assert_eq!(slow.await.unwrap(), (200, "slept".to_string()));
    let m = common::admin_text(&tq, "/metrics").await;
    assert!(
        m.contains("tqserver_config_last_reload_successful 1"),
        "{m}"
    );
    assert!(!m.contains("tqserver_worker_info{worker=\"extra\""), "{m}");
    // 1, 2, 2b, 4, 5, 7 by `tqserver reload`, 3 by SIGHUP.
    assert!(
        m.contains("tqserver_config_reloads_total{result=\"applied\"} 7"),
        "{m}"
    );
    assert_eq!(get(&tq.url("/n2/pid.php")).await.0, 404);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, failed) = load.finish().await;
    assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
    assert!(ok > 50, "{ok}");
    // The removed worker's processes are gone, every one of them; the
    // other worker's still run.
    wait_gone(&extra_pids, 15, "the removed worker's php-fpm").await;
    assert!(
        kept_pids.iter().all(|&p| alive(p)),
        "the other worker's php-fpm stopped too"
    );

    // 8. server.yaml: a new port (the old listener finishes and closes)
    // and a smaller body limit.
    let port2 = free_port();
    // The log format cannot change while running: said, now and on the
    // next reload.
    std::fs::write(
        &server,
        server_yaml(port2, "  max_body_bytes: 10\n  log_format: json\n"),
    )
    .unwrap();
    let (code, out) = reload(&p, &tq);
    assert!(
        code == 0 && out.contains(&format!("now listening on http://127.0.0.1:{port2}")),
        "{out}"
    );
    let restart = "server.log_file / server.log_format changed: restart tqserver to apply";
    assert!(out.contains(restart), "{out}");
    let (_, again) = reload(&p, &tq);
    assert!(
        again.contains(restart) && !again.contains("now listening"),
        "{again}"
    );
    let url2 = format!("http://127.0.0.1:{port2}");
    assert_eq!(get(&format!("{url2}/f/pid.php")).await.0, 200);
    let r = client()
        .post(format!("{url2}/f/echo.php"))
        .body("more than ten bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    common::wait_refused(port, 10, "the old public port").await;
}

/// A native worker becomes a PHP worker at the same path under load: the
/// PHP pool starts, takes the route once it answers, the Python
/// instance drains and stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_change_under_load_fails_no_request() {
    let p = Project::new("", "");
    let (port, range) = (free_port(), free_port());
    std::fs::write(
        p.path().join("config/server.yaml"),
        server_yaml(port, "").replace(
            "  shutdown_grace_period_ms: 3000\n",
            &format!("  shutdown_grace_period_ms: 3000\n  port_range_start: {range}\n  port_range_end: {}\n", range + 20),
        ),
    )
    .unwrap();
    python_worker(&p, "t", "/t", "[\"python3\", \"app.py\"]");
    let tq = Tq::start_file_port(p.path(), port, &["--mode", "prod"]);
    let until = Instant::now() + Duration::from_secs(30);
    let python = loop {
        let (s, b) = get(&tq.url("/t/pid.php")).await;
        if s == 200 {
            break b;
        }
        assert!(Instant::now() < until, "{}", tq.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(python.contains("pid="), "{python}");
    let load = Load::start(&[tq.url("/t/pid.php"), tq.url("/t/pid.php")]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.worker("t", &php("/t", "cgi", STATIC2, ""));
    let (code, out) = reload(&p, &tq);
    assert!(
        code == 0 && out.contains("worker t replaced (command → php, cgi)"),
        "{out}"
    );
    let (_, body) = get(&tq.url("/t/pid.php")).await;
    assert!(
        body.trim().parse::<u32>().is_ok(),
        "PHP answers now: {body}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, failed) = load.finish().await;
    assert!(
        failed.is_empty() && ok > 10,
        "{ok} ok; failed: {failed:?}\n{}",
        tq.log_text()
    );
    // The Python instance is gone.
    let until = Instant::now() + Duration::from_secs(10);
    while children_of(tq.pid())
        .iter()
        .any(|(_, c)| c.starts_with("python"))
    {
        assert!(Instant::now() < until, "python still runs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_applies_server_yaml_and_new_worker_folders() {
    let p = Project::new("", "file_watcher:\n  debounce_ms: 50\n");
    p.worker("a", &php("/a", "cgi", STATIC2, ""));
    // prod: code is not watched, configuration is.
    let tq = Tq::start(p.path(), &["--mode", "prod"]);
    assert_eq!(get(&tq.url("/b/pid.php")).await.0, 404);
    let load = Load::start(&[tq.url("/a/pid.php")]);
    p.worker("b", &php("/b", "cgi", STATIC2, ""));
    common::wait_log(&tq, "worker b started at /b", 20).await;
    assert_eq!(get(&tq.url("/b/pid.php")).await.0, 200);
    // server.yaml: the body limit, replaced the way editors do.
    let server = p.path().join("config/server.yaml");
    let text = std::fs::read_to_string(&server).unwrap();
    let tmp = p.path().join("config/.server.yaml.swp");
    std::fs::write(
        &tmp,
        text.replace("server:\n", "server:\n  max_body_bytes: 10\n"),
    )
    .unwrap();
    std::fs::rename(&tmp, &server).unwrap();
    common::wait_log(&tq, "server.yaml changed: configuration reloaded", 20).await;
    let (ok, failed) = load.finish().await;
    assert!(
        failed.is_empty() && ok > 10,
        "{ok} ok; failed: {failed:?}\n{}",
        tq.log_text()
    );
    let r = client()
        .post(tq.url("/b/echo.php"))
        .body("more than ten bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}

/// The processes of a project with every kind of worker: php-fpm, php-cgi
/// and a native worker that starts a child of its own.
fn every_kind(grace_ms: u32) -> (Project, u16, u16) {
    let (port, admin, range) = (free_port(), free_port(), free_port());
    let p = Project::new("", "");
    std::fs::write(
        p.path().join("config/server.yaml"),
        format!(
            "server:\n  host: 127.0.0.1\n  port: {port}\nadmin:\n  listen: 127.0.0.1:{admin}\nworkers:\n  directory: workers\n  shutdown_grace_period_ms: {grace_ms}\n  port_range_start: {}\n  port_range_end: {}\n",
            range,
            range + 40
        ),
    )
    .unwrap();
    p.worker("fpm", &php("/f", "fpm", STATIC2, ""));
    p.worker("cgi", &php("/c", "cgi", STATIC2, ""));
    python_worker(
        &p,
        "py",
        "/py",
        "[\"sh\", \"-c\", \"sleep 300 & exec python3 app.py\"]",
    );
    (p, port, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_5_second_php_request_finishes_it_then_leaves_nothing() {
    let (p, port, _) = every_kind(10_000);
    let mut tq = Tq::start_file_port(p.path(), port, &["--mode", "prod"]);
    for u in ["/f/pid.php", "/c/pid.php", "/py/x"] {
        let until = Instant::now() + Duration::from_secs(30);
        while get(&tq.url(u)).await.0 != 200 {
            assert!(Instant::now() < until, "{u}:\n{}", tq.log_text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let tree = descendants(tq.pid());
    // php-fpm master + 2, php-cgi × 2, sh→python + sleep, the watchdog.
    assert!(tree.len() >= 7, "{tree:?}");
    let tags = [common::busy_tag("term-f"), common::busy_tag("term-c")];
    let slow = [
        tq.url(&format!("/f/busy.php?ms=5000&tag={}", tags[0])),
        tq.url(&format!("/c/busy.php?ms=5000&tag={}", tags[1])),
    ]
    .map(|u| tokio::spawn(async move { get(&u).await }));
    // Both are running in PHP before the signal.
    for t in &tags {
        common::busy_pid(t).await;
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tq.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    // busy.php answers "done" only after its whole 5 s of work.
    for s in slow {
        let (status, body) = s.await.unwrap();
        assert_eq!((status, body.as_str()), (200, "done"));
    }
    let status = tq.wait_exit(20).expect("tqserver exits");
    assert!(status.success(), "{status}\n{}", tq.log_text());
    wait_gone(&tree, 5, "after tqserver exited").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_leaves_no_process_and_a_restart_gets_the_same_ports() {
    let (p, port, admin) = every_kind(3000);
    // Both servers share one $TMPDIR: the second finds the first's
    // runtime directory there.
    let tmp = tempfile::tempdir().unwrap();
    let env = [("TMPDIR", tmp.path().to_str().unwrap())];
    let tq = Tq::start_file_port_env(p.path(), port, &["--mode", "prod"], &env);
    let until = Instant::now() + Duration::from_secs(30);
    while get(&tq.url("/py/x")).await.0 != 200 || get(&tq.url("/f/pid.php")).await.0 != 200 {
        assert!(Instant::now() < until, "{}", tq.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tree = descendants(tq.pid());
    assert!(tree.len() >= 7, "{tree:?}");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tq.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    wait_gone(&tree, 5, "after SIGKILL of tqserver").await;
    drop(tq);
    // The same ports, the runtime directory of the dead one cleaned up.
    let tq = Tq::start_file_port_env(
        p.path(),
        port,
        &[
            "--mode",
            "prod",
            "--admin-listen",
            &format!("127.0.0.1:{admin}"),
        ],
        &env,
    );
    let until = Instant::now() + Duration::from_secs(30);
    while get(&tq.url("/f/pid.php")).await.0 != 200 {
        assert!(Instant::now() < until, "{}", tq.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        get(&format!("http://127.0.0.1:{admin}/healthz")).await.0,
        200
    );
    let log = tq.log_text();
    assert!(log.contains("left by tqserver pid"), "{log}");
}

/// The uid a process runs as (real uid, from /proc).
fn uid_of(pid: u32) -> u32 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_as_root_it_runs_as_server_user() {
    let p = Project::new("  user: nobody\n  log_file: logs/tq_{date}.log\n", "");
    p.worker("fpm", &php("/f", "fpm", STATIC2, ""));
    p.worker("cgi", &php("/c", "cgi", STATIC2, ""));
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(p.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Not a pass when not root: the test says what it needs.
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test drops root to server.user: run it as root (the README test command runs as root on CI)"
    );
    let tq = Tq::start(p.path(), &["--mode", "prod"]);
    for u in ["/f/pid.php", "/c/pid.php"] {
        let until = Instant::now() + Duration::from_secs(20);
        while get(&tq.url(u)).await.0 != 200 {
            assert!(Instant::now() < until, "{u}:\n{}", tq.log_text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let log = tq.log_text();
    assert!(log.contains("running as nobody:nogroup"), "{log}");
    // The server log TQServer opened as root is handed over; its folder,
    // created by root, is named as a problem for daily files.
    let file = p.path().join(format!("logs/tq_{}.log", common::today()));
    use std::os::unix::fs::MetadataExt as _;
    assert_eq!(std::fs::metadata(&file).unwrap().uid(), 65534);
    assert!(log.contains("is not writable by nobody"), "{log}");
    let nobody = 65534;
    assert_eq!(uid_of(tq.pid()), nobody);
    let tree = descendants(tq.pid());
    assert!(tree.len() >= 6, "{tree:?}");
    for pid in tree {
        assert_eq!(uid_of(pid), nobody, "pid {pid} runs as root");
    }
    // PHP itself says so too.
    let (_, pid) = get(&tq.url("/f/pid.php")).await;
    assert_eq!(uid_of(pid.trim().parse().unwrap()), nobody);
}

/// One request with `cgi-fcgi -bind -connect` to a FastCGI listener: the
/// PHP process id, or what came back instead.
fn fcgi_pid(addr: &str) -> Result<u32, String> {
    let script = php_dir().join("pid.php");
    let out = std::process::Command::new("cgi-fcgi")
        .args(["-bind", "-connect", addr])
        .env_clear()
        .envs([
            ("REQUEST_METHOD", "GET"),
            ("SCRIPT_FILENAME", script.to_str().unwrap()),
            ("SCRIPT_NAME", "/pid.php"),
        ])
        .output()
        .expect("cgi-fcgi not found: install libfcgi-bin, or run the README test command");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.rsplit("\r\n\r\n")
        .next()
        .and_then(|b| b.trim().parse().ok())
        .ok_or(text)
}

/// `fastcgi.listen` through reloads: a worker added with a listener gets
/// it bound and served; a new address is bound before the old one closes;
/// a worker removed closes its listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fastcgi_listeners_follow_reloads() {
    let p = Project::new("", "");
    let port = free_port();
    std::fs::write(p.path().join("config/server.yaml"), server_yaml(port, "")).unwrap();
    p.worker("a", &php("/a", "cgi", STATIC2, ""));
    let tq = Tq::start_file_port(p.path(), port, &["--mode", "prod"]);
    let dir = tempfile::tempdir().unwrap();
    let (s1, s2) = (dir.path().join("one.sock"), dir.path().join("two.sock"));
    let with = |sock: &std::path::Path| {
        format!(
            "{}fastcgi:\n  listen: unix:{}\n",
            php("/b", "cgi", STATIC2, ""),
            sock.display()
        )
    };
    p.worker("b", &with(&s1));
    let (code, out) = reload(&p, &tq);
    assert!(code == 0 && out.contains("worker b started"), "{out}");
    let one = s1.display().to_string();
    let first = fcgi_pid(&one);
    assert!(first.is_ok(), "{first:?}\n{}", tq.log_text());
    p.worker("b", &with(&s2));
    let (code, out) = reload(&p, &tq);
    assert!(
        code == 0 && out.contains("FastCGI listener now on unix:"),
        "{out}"
    );
    let two = s2.display().to_string();
    assert!(fcgi_pid(&two).is_ok(), "{:?}", fcgi_pid(&two));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fcgi_pid(&one).is_err(), "the old address still answers");
    std::fs::remove_dir_all(p.path().join("workers/b")).unwrap();
    let (code, out) = reload(&p, &tq);
    assert!(code == 0 && out.contains("worker b removed"), "{out}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        fcgi_pid(&two).is_err(),
        "a removed worker's listener still answers"
    );
}

/// admin.listen moved in server.yaml (applied on SIGHUP: `tqserver reload`
/// reads the file, which names the new address, not yet bound): the new
/// address serves, the old one closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_moves_on_reload() {
    let p = Project::new("", "");
    let (port, a1, a2) = (free_port(), free_port(), free_port());
    let server = p.path().join("config/server.yaml");
    let yaml =
        |admin: u16| server_yaml(port, "") + &format!("admin:\n  listen: 127.0.0.1:{admin}\n");
    std::fs::write(&server, yaml(a1)).unwrap();
    p.worker("a", &php("/a", "cgi", STATIC2, ""));
    let tq = Tq::start_from_files(p.path(), port, a1, &["--mode", "prod"]);
    assert_eq!(get(&format!("http://127.0.0.1:{a1}/healthz")).await.0, 200);
    std::fs::write(&server, yaml(a2)).unwrap();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tq.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    );
    common::wait_log(
        &tq,
        &format!("admin listener now on http://127.0.0.1:{a2}"),
        10,
    )
    .await;
    assert_eq!(get(&format!("http://127.0.0.1:{a2}/healthz")).await.0, 200);
    common::wait_refused(a1, 10, "the old admin address").await;
    // The public port never moved.
    assert_eq!(get(&tq.url("/a/pid.php")).await.0, 200);
}

/// `server.drain_delay_ms`: after SIGTERM, `/readyz` answers 503 while new
/// connections are still accepted and served; then TQServer stops as
/// usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_before_the_listener_closes() {
    let p = Project::new("  drain_delay_ms: 4000\n", "");
    p.worker("a", &php("/a", "cgi", STATIC2, ""));
    let mut tq = Tq::start(p.path(), &["--mode", "prod"]);
    assert_eq!(get(&tq.url("/a/pid.php")).await.0, 200);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tq.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    // The server says /readyz answers 503 and that it keeps serving for
    // the delay: both hold while it does.
    common::wait_log(&tq, "still serving for 4s", 10).await;
    assert_eq!(get(&format!("{}/readyz", tq.admin)).await.0, 503);
    // A new connection (get() uses a new client) is still served.
    assert_eq!(get(&tq.url("/a/pid.php")).await.0, 200);
    let status = tq.wait_exit(20).expect("exits after the delay");
    assert!(status.success());
    // The drain began only after the delay, by the server's own clock.
    let log = tq.log_text();
    let at = |needle: &str| {
        let line = log
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle}: {log}"));
        chrono::DateTime::parse_from_rfc3339(line.split_whitespace().next().unwrap()).unwrap()
    };
    let waited = at("stopping: finishing requests") - at("still serving for");
    assert!(
        waited >= chrono::TimeDelta::milliseconds(4000),
        "{waited}: {log}"
    );
}
