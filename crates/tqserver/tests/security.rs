//! The holes an outside review found (issue 14), each reproduced against
//! the real binary with the bytes an attacker sends — raw sockets where a
//! client library would normalise them — and real php-fpm, php-cgi,
//! cgi-fcgi and a raw Python worker (tests/native/raw.py) behind it.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::raw::{self, Resp};
use common::{Project, Tq, free_port, php_dir, run_cli};

const CAP: Duration = Duration::from_secs(20);

/// A project whose workers take ports from a range of their own.
fn project(server_extra: &str, top_extra: &str) -> Project {
    let base = free_port();
    Project::new(
        server_extra,
        &format!(
            "  port_range_start: {base}\n  port_range_end: {}\n  health_check_wait_timeout_ms: 20000\n{top_extra}",
            base + 40
        ),
    )
}

/// tests/native/raw.py as a `type: command` worker at `route`.
fn raw_worker(p: &Project, route: &str, extra: &str) {
    p.worker(
        "raw",
        &format!(
            "path: {route}\ntype: command\ncommand:\n  run: [\"python3\", \"raw.py\"]\n{extra}"
        ),
    );
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/native/raw.py");
    std::fs::copy(fixture, p.path().join("workers/raw/raw.py")).unwrap();
}

/// A PHP worker over the test scripts.
fn php_worker(p: &Project, name: &str, route: &str, backend: &str, extra: &str) {
    p.worker(
        name,
        &format!(
            "path: {route}\ntype: php\ndocument_root: {}\nphp:\n  backend: {backend}\n{extra}  pool:\n    manager: static\n    max_workers: 2\n",
            php_dir().display()
        ),
    );
}

fn get_req(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n").into_bytes()
}

/// Sends `req` on its own connection and parses the one response.
fn one(port: u16, req: &[u8]) -> Resp {
    let mut s = raw::connect(port, CAP);
    s.write_all(req).unwrap();
    let head = req.starts_with(b"HEAD ");
    raw::read_response(&mut s, head, CAP).unwrap_or_else(|| {
        panic!(
            "no response to {:?}",
            String::from_utf8_lossy(&req[..req.len().min(200)])
        )
    })
}

/// Waits until GET `path` answers 200 (the worker is up).
fn wait_ok(tq: &Tq, path: &str) {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let got = raw::exchange(tq.port, &get_req(path, "Connection: close\r\n"));
        if got.starts_with(b"HTTP/1.1 200") {
            return;
        }
        assert!(
            Instant::now() < until,
            "{path} never answered 200: {}\n{}",
            String::from_utf8_lossy(&got),
            tq.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------
// 1. Request smuggling into native workers.

#[test]
fn framing_headers_named_in_connection_cannot_smuggle_a_request_into_a_worker() {
    let p = project("", "");
    raw_worker(&p, "/raw", "");
    let tq = Tq::start(p.path(), &[]);
    wait_ok(&tq, "/raw/warm");
    let smuggled = "GET /raw/smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
    for connection in ["content-length", "keep-alive, Content-Length, host"] {
        let req = format!(
            "POST /raw/upload HTTP/1.1\r\nHost: t\r\nConnection: {connection}\r\nContent-Length: {}\r\n\r\n{smuggled}",
            smuggled.len()
        );
        let r = one(tq.port, req.as_bytes());
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            r.text(),
            format!("ok POST /upload {}", smuggled.len()),
            "the worker must see the body as the POST's body"
        );
    }
    // A chunked body whose Transfer-Encoding is named in Connection.
    let req = format!(
        "POST /raw/chunked HTTP/1.1\r\nHost: t\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n",
        smuggled.len()
    );
    let r = one(tq.port, req.as_bytes());
    assert_eq!(r.text(), format!("ok POST /chunked {}", smuggled.len()));
    let seen = one(tq.port, &get_req("/raw/seen", "")).text();
    assert!(
        !seen.contains("smuggled"),
        "a smuggled request reached the worker:\n{seen}"
    );
    // Host named in Connection still reaches the worker: the head always
    // describes the request.
    let head = one(tq.port, &get_req("/raw/head", "Connection: host\r\n")).text();
    assert!(head.to_ascii_lowercase().contains("\nhost: t"), "{head}");
}

// ---------------------------------------------------------------------
// 2. Response splitting through an upstream Content-Length.

/// Two requests on one kept-alive connection: the first answered with a
/// Content-Length shorter than its body; nothing of the rest may be read
/// as the second response.
fn assert_no_split(port: u16, first: &str, second: &str, expect_first_len: usize) {
    let mut s = raw::connect(port, CAP);
    s.write_all(&get_req(first, "")).unwrap();
    let r1 = raw::read_response(&mut s, false, CAP).expect("first response");
    assert_eq!(r1.status, 200, "{r1:?}");
    assert_eq!(r1.body.len(), expect_first_len, "{first}: {r1:?}");
    std::thread::sleep(Duration::from_millis(300));
    // The connection may have been closed after a truncated body; then a
    // second request goes on a new one, and must still see its own answer.
    let r2 = match s.write_all(&get_req(second, "")) {
        Ok(()) => raw::read_response(&mut s, false, CAP),
        Err(_) => None,
    };
    let r2 = r2.unwrap_or_else(|| {
        let mut s = raw::connect(port, CAP);
        s.write_all(&get_req(second, "Connection: close\r\n"))
            .unwrap();
        raw::read_response(&mut s, false, CAP).expect("second response")
    });
    assert!(
        r2.header("x-injected").is_none(),
        "injected response: {r2:?}"
    );
    assert!(!r2.text().contains("injected"), "{r2:?}");
    assert_eq!(r2.status, 200, "{r2:?}");
}

#[test]
fn a_php_content_length_shorter_than_its_body_never_makes_a_second_response() {
    let p = project("", "");
    php_worker(&p, "fpm", "/fpm", "fpm", "");
    php_worker(&p, "cgi", "/cgi", "cgi", "");
    let tq = Tq::start(p.path(), &[]);
    for w in ["/fpm", "/cgi"] {
        wait_ok(&tq, &format!("{w}/pid.php"));
        assert_no_split(
            tq.port,
            &format!("{w}/split.php"),
            &format!("{w}/pid.php"),
            5,
        );
        // Streamed: the declared length is past what is gathered first.
        assert_no_split(
            tq.port,
            &format!("{w}/split.php?big=1"),
            &format!("{w}/pid.php"),
            100_000,
        );
        // Not a number: 502, never passed on.
        let r = one(tq.port, &get_req(&format!("{w}/badcl.php"), ""));
        assert_eq!(r.status, 502, "{w}: {r:?}");
        let r = one(tq.port, &get_req(&format!("{w}/badcl.php?v=3,4"), ""));
        assert_eq!(r.status, 502, "{w}: {r:?}");
        // Longer than the body: never a response that claims bytes it
        // does not carry.
        let got = raw::exchange(
            tq.port,
            &get_req(&format!("{w}/shortcl.php"), "Connection: close\r\n"),
        );
        let (resps, _) = raw::parse_all(&got);
        assert!(
            resps.iter().all(|r| r.status == 502),
            "{w}: {}",
            String::from_utf8_lossy(&got)
        );
    }
}

#[test]
fn a_worker_content_length_shorter_than_its_body_never_poisons_the_next_request() {
    let p = project("", "");
    raw_worker(&p, "/raw", "");
    let tq = Tq::start(p.path(), &[]);
    wait_ok(&tq, "/raw/warm");
    assert_no_split(tq.port, "/raw/short-cl", "/raw/next", 5);
    // The worker's connection, with its stray second response, is never
    // reused for another client's request.
    for i in 0..5 {
        let r = one(tq.port, &get_req(&format!("/raw/after{i}"), ""));
        assert!(r.header("x-injected").is_none(), "{r:?}");
        assert_eq!(r.text(), format!("ok GET /after{i} 0"), "{r:?}");
    }
    let r = one(tq.port, &get_req("/raw/bad-cl", ""));
    assert_eq!(r.status, 502, "{r:?}");
}

// ---------------------------------------------------------------------
// 3. Slow uploads.

/// Starts `n` clients that each declare a 100-byte body and send it a
/// byte every 500 ms until `stop` (at most 60 bytes).
fn tricklers(
    port: u16,
    path: &str,
    n: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let stop = stop.clone();
            let path = path.to_string();
            std::thread::spawn(move || {
                let mut s = raw::connect(port, CAP);
                let head = format!(
                    "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\nContent-Type: text/plain\r\n\r\n"
                );
                s.write_all(head.as_bytes()).unwrap();
                for _ in 0..60 {
                    if stop.load(Ordering::Relaxed) || s.write_all(b"x").is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_uploads_do_not_take_php_processes() {
    let p = project("", "");
    php_worker(&p, "fpm", "/fpm", "fpm", "");
    php_worker(&p, "cgi", "/cgi", "cgi", "");
    let tq = Tq::start(p.path(), &[]);
    let c = common::client();
    for w in ["/fpm", "/cgi"] {
        wait_ok(&tq, &format!("{w}/pid.php"));
        let stop = Arc::new(AtomicBool::new(false));
        // Three tricklers against two processes.
        let t = tricklers(tq.port, &format!("{w}/echo.php"), 3, &stop);
        tokio::time::sleep(Duration::from_millis(500)).await;
        for _ in 0..3 {
            let r = c
                .get(tq.url(&format!("{w}/pid.php")))
                .timeout(Duration::from_secs(15))
                .send()
                .await;
            let ok = r.as_ref().is_ok_and(|r| r.status() == 200);
            assert!(
                ok,
                "{w}: a request waited behind slow uploads: {r:?}\n{}",
                tq.log_text()
            );
        }
        assert!(
            t.iter().all(|h| !h.is_finished()),
            "the uploads were to be still in progress"
        );
        stop.store(true, Ordering::Relaxed);
        for h in t {
            h.join().unwrap();
        }
    }
}

#[test]
fn a_stalled_body_gets_408_and_buffered_bytes_are_bounded() {
    let p = project(
        "  read_timeout_seconds: 1\n  body_buffer_size: 16K\n  max_buffered_bytes: 300K\n",
        "",
    );
    php_worker(&p, "fpm", "/fpm", "fpm", "");
    let tq = Tq::start(p.path(), &[]);
    wait_ok(&tq, "/fpm/pid.php");
    // Two bytes of ten, then silence: 408 once read_timeout passes.
    let mut s = raw::connect(tq.port, CAP);
    s.write_all(b"POST /fpm/echo.php HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nab")
        .unwrap();
    let r = raw::read_response(&mut s, false, CAP).expect("an answer to a stalled body");
    assert_eq!(r.status, 408, "{r:?}");

    // One upload holds 200 KiB of the 300 KiB allowed; a second that
    // would go past it gets 503 at once; the first still completes.
    let chunk = vec![b'y'; 200 << 10];
    let mut first = raw::connect(tq.port, CAP);
    first
        .write_all(
            format!(
                "POST /fpm/echo.php HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
                250 << 10
            )
            .as_bytes(),
        )
        .unwrap();
    first.write_all(&chunk).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut second = raw::connect(tq.port, CAP);
    second
        .write_all(
            format!(
                "POST /fpm/echo.php HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
                250 << 10
            )
            .as_bytes(),
        )
        .unwrap();
    let _ = second.write_all(&chunk);
    let r2 = raw::read_response(&mut second, false, CAP).expect("second answer");
    assert_eq!(r2.status, 503, "{r2:?}\n{}", tq.log_text());
    first.write_all(&vec![b'y'; 50 << 10]).unwrap();
    let r1 = raw::read_response(&mut first, false, CAP).expect("first answer");
    assert_eq!(r1.status, 200, "{r1:?}");
    assert!(
        r1.text()
            .contains(&format!("\"body_length\":{}", 250 << 10)),
        "{r1:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_buffering_off_streams_the_body_to_php_as_it_arrives() {
    let p = project("", "");
    php_worker(&p, "cgi", "/cgi", "cgi", "  request_buffering: false\n");
    let tq = Tq::start(p.path(), &[]);
    wait_ok(&tq, "/cgi/pid.php");
    let stop = Arc::new(AtomicBool::new(false));
    let t = tricklers(tq.port, "/cgi/echo.php", 1, &stop);
    // The process is taken while the body still trickles in.
    let until = Instant::now() + CAP;
    loop {
        let s = common::admin_text(&tq, "/status/cgi?json").await;
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        if v["active processes"].as_u64() == Some(1) {
            break;
        }
        assert!(
            Instant::now() < until,
            "no process took the streaming upload: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for h in t {
        h.join().unwrap();
    }
}

// ---------------------------------------------------------------------
// 4. Open redirect.

#[test]
fn a_trailing_slash_redirect_never_leaves_the_site() {
    let p = project("", "");
    php_worker(&p, "root", "/", "fpm", "");
    let tq = Tq::start(p.path(), &[]);
    wait_ok(&tq, "/pid.php");
    for path in [
        "//evil.example/x/..%2f..%2fsub",
        "//evil.example/..%2fsub",
        "/%5cevil.example/..%2fsub",
        "/./sub",
    ] {
        let r = one(tq.port, &get_req(path, ""));
        assert_eq!(r.status, 301, "{path}: {r:?}");
        let to = r.header("location").unwrap();
        assert_eq!(to, "/sub/", "{path}");
    }
}

// ---------------------------------------------------------------------
// 5. php-cgi over TCP.

#[test]
fn php_cgi_listens_on_loopback_only_and_only_for_tqserver() {
    for (addr, refused) in [("0.0.0.0", true), ("192.0.2.1", true), ("127.0.0.1", false)] {
        let p = project("", "");
        p.worker(
            "cgi",
            &format!(
                "path: /cgi\ntype: php\ndocument_root: {}\nphp:\n  backend: cgi\n  pool:\n    manager: static\n    max_workers: 1\n    listen_address: {addr}\n",
                php_dir().display()
            ),
        );
        let (status, out, err) = run_cli(p.path(), &["check"]);
        if refused {
            assert_eq!(status.code(), Some(78), "{addr}: {out}{err}");
            assert!(
                err.contains("worker.yaml:9: php.pool.listen_address"),
                "{addr}: {err}"
            );
        } else {
            assert!(status.success(), "{addr}: {out}{err}");
        }
    }
    // On loopback, php-cgi is told to take connections from TQServer's
    // address only (FCGI_WEB_SERVER_ADDRS, php-cgi's allowed clients).
    let p = project("", "");
    p.worker(
        "cgi",
        &format!(
            "path: /cgi\ntype: php\ndocument_root: {}\nphp:\n  backend: cgi\n  pool:\n    manager: static\n    max_workers: 1\n    listen_address: 127.0.0.1\n",
            php_dir().display()
        ),
    );
    let tq = Tq::start(p.path(), &[]);
    wait_ok(&tq, "/cgi/pid.php");
    let pids = common::children_named(&tq, "php-cgi");
    assert!(!pids.is_empty());
    for pid in pids {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let env = String::from_utf8_lossy(&env);
        assert!(
            env.split('\0')
                .any(|v| v == "FCGI_WEB_SERVER_ADDRS=127.0.0.1"),
            "{env}"
        );
    }
}

// ---------------------------------------------------------------------
// 6. The runtime directory.

fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_runtime_directory_is_private_whatever_the_umask() {
    let tmp = tempfile::tempdir().unwrap();
    let p = project("", "");
    php_worker(&p, "fpm", "/fpm", "fpm", "");
    php_worker(&p, "cgi", "/cgi", "cgi", "");
    let tq = Tq::start_umask(
        p.path(),
        &[],
        &[("TMPDIR", tmp.path().to_str().unwrap())],
        "000",
    );
    wait_ok(&tq, "/fpm/pid.php");
    wait_ok(&tq, "/cgi/pid.php");
    let dirs: Vec<PathBuf> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("tqserver-")
        })
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let dir = &dirs[0];
    assert_eq!(mode_of(dir), 0o700, "{}", dir.display());
    let (mut confs, mut sockets) = (0, 0);
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let path = e.path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let m = mode_of(&path);
        // Nobody but TQServer (and the pool, which runs as the same user)
        // may read a configuration or connect to a socket; nothing there
        // is writable by anyone else.
        if name.ends_with(".conf") || name.ends_with(".sock") || name == "tqserver.pid" {
            assert_eq!(m & 0o077, 0, "{name} has mode {m:o}");
        }
        assert_eq!(m & 0o022, 0, "{name} has mode {m:o}");
        confs += usize::from(name.ends_with(".conf"));
        sockets += usize::from(name.ends_with(".sock"));
    }
    assert!(
        confs >= 1 && sockets >= 3,
        "expected a php-fpm configuration and sockets in {}",
        dir.display()
    );
}

// ---------------------------------------------------------------------
// 7. The admin listener.

#[test]
fn the_admin_listener_refuses_other_sites_and_checks_its_token() {
    let p = project("", "admin:\n  token: s3cret-token\n");
    php_worker(&p, "fpm", "/fpm", "fpm", "");
    let tq = Tq::start(p.path(), &[]);
    wait_ok(&tq, "/fpm/pid.php");
    let admin_port: u16 = tq.admin.rsplit(':').next().unwrap().parse().unwrap();
    let ask = |path: &str, extra: &str| {
        one(
            admin_port,
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{admin_port}\r\n{extra}\r\n")
                .as_bytes(),
        )
    };
    // Probes never need the token.
    assert_eq!(ask("/healthz", "").status, 200);
    assert_eq!(ask("/readyz", "").status, 200);
    // Everything else needs it when it is set.
    for path in ["/metrics", "/status/fpm?full", "/api/dashboard"] {
        assert_eq!(ask(path, "").status, 401, "{path}");
        assert_eq!(
            ask(path, "Authorization: Bearer wrong\r\n").status,
            401,
            "{path}"
        );
        assert_eq!(
            ask(path, "Authorization: Bearer s3cret-token\r\n").status,
            200,
            "{path}"
        );
    }
    // `tqserver reload` sends the token from the configuration.
    let (status, out, err) = run_cli(
        p.path(),
        &[
            "reload",
            "--admin-listen",
            &format!("127.0.0.1:{admin_port}"),
        ],
    );
    assert!(status.success(), "{out}{err}");
}

#[test]
fn the_admin_listener_refuses_dns_rebinding_and_cross_site_posts() {
    let p = project("", "");
    php_worker(&p, "fpm", "/fpm", "fpm", "");
    let tq = Tq::start(p.path(), &[]);
    wait_ok(&tq, "/fpm/pid.php");
    let admin_port: u16 = tq.admin.rsplit(':').next().unwrap().parse().unwrap();
    // A page on evil.example whose name now resolves to 127.0.0.1.
    let r = one(
        admin_port,
        format!("GET /status/fpm?full HTTP/1.1\r\nHost: evil.example:{admin_port}\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(r.status, 421, "{r:?}");
    // Local names and addresses are fine.
    for host in [
        format!("127.0.0.1:{admin_port}"),
        format!("localhost:{admin_port}"),
        "localhost".to_string(),
    ] {
        let r = one(
            admin_port,
            format!("GET /status/fpm HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status, 200, "{host}: {r:?}");
    }
    // A cross-site form post (text/plain needs no preflight).
    for origin in [
        "Origin: http://evil.example\r\n",
        "Sec-Fetch-Site: cross-site\r\n",
    ] {
        let r = one(
            admin_port,
            format!(
                "POST /reload HTTP/1.1\r\nHost: 127.0.0.1:{admin_port}\r\n{origin}Content-Type: text/plain\r\nContent-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        );
        assert_eq!(r.status, 403, "{origin}: {r:?}");
    }
    assert!(
        !tq.log_text().contains("tqserver reload"),
        "{}",
        tq.log_text()
    );
    // The same request from the command line is fine.
    let r = one(
        admin_port,
        format!(
            "POST /reload HTTP/1.1\r\nHost: 127.0.0.1:{admin_port}\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn check_warns_about_an_admin_listener_off_loopback_without_a_token() {
    let p = Project::new("", "admin:\n  listen: 0.0.0.0:18081\n");
    let (status, out, err) = run_cli(p.path(), &["check"]);
    assert!(status.success(), "{out}{err}");
    let all = format!("{out}{err}");
    assert!(
        all.contains("admin.listen 0.0.0.0:18081 is reachable from other machines")
            && all.contains("admin.token"),
        "{all}"
    );
    let p = Project::new(
        "",
        "admin:\n  listen: 0.0.0.0:18081\n  token: 0123456789abcdef\n",
    );
    let (status, out, err) = run_cli(p.path(), &["check"]);
    assert!(status.success(), "{out}{err}");
    assert!(!format!("{out}{err}").contains("reachable from other machines"));
}

// ---------------------------------------------------------------------
// 8. Values written into php-fpm's configuration.

#[test]
fn a_newline_in_a_value_cannot_inject_php_fpm_configuration() {
    let cases = [
        (
            "    listen_address: \"/tmp/x.sock\\nphp_admin_value[auto_prepend_file] = /tmp/evil.php\"\n",
            "",
            "php.pool.listen_address",
        ),
        (
            "",
            "  settings:\n    memory_limit: \"128M\\nphp_admin_value[auto_prepend_file] = /tmp/evil.php\"\n",
            "php.settings.memory_limit",
        ),
        (
            "",
            "  settings:\n    \"x]\\nphp_admin_value[auto_prepend_file\": \"/tmp/evil.php\"\n",
            "php.settings",
        ),
        (
            "",
            "  settings:\n    error_log: \"/tmp/a\\\"b\"\n",
            "php.settings.error_log",
        ),
    ];
    for (pool, php, key) in cases {
        let p = project("", "");
        p.worker(
            "fpm",
            &format!(
                "path: /fpm\ntype: php\ndocument_root: {}\nphp:\n{php}  pool:\n    manager: static\n    max_workers: 1\n{pool}",
                php_dir().display()
            ),
        );
        let (status, out, err) = run_cli(p.path(), &["check"]);
        assert_eq!(status.code(), Some(78), "{key}: {out}{err}");
        assert!(err.contains("worker.yaml:"), "{err}");
        assert!(err.contains(key), "{key}: {err}");
    }
}

// ---------------------------------------------------------------------
// Hardening: HTTP/2 and connection timeouts.

/// An HTTP/2 frame header + payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[test]
fn a_ping_only_http2_connection_is_closed_at_the_idle_timeout() {
    let p = project("  idle_timeout_seconds: 2\n", "");
    let tq = Tq::start(p.path(), &[]);
    let mut s = raw::connect(tq.port, Duration::from_millis(300));
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    s.write_all(&h2_frame(4, 0, 0, &[])).unwrap();
    let until = Instant::now() + CAP;
    let mut closed = false;
    while Instant::now() < until {
        if s.write_all(&h2_frame(6, 0, 0, b"12345678")).is_err() {
            closed = true;
            break;
        }
        if raw::closed_within(&mut s, Duration::from_millis(300)) {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "a connection that only pings stayed open past idle_timeout"
    );
}

#[test]
fn a_silent_connection_is_closed_at_the_header_read_timeout() {
    let p = project(
        "  read_timeout_seconds: 1\n  idle_timeout_seconds: 120\n",
        "",
    );
    let tq = Tq::start(p.path(), &[]);
    // Nothing at all, and an HTTP/2 preface with no request after it.
    let mut silent = raw::connect(tq.port, CAP);
    let mut preface = raw::connect(tq.port, CAP);
    preface
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .unwrap();
    preface.write_all(&h2_frame(4, 0, 0, &[])).unwrap();
    assert!(
        raw::closed_within(&mut silent, CAP),
        "silent connection kept"
    );
    assert!(
        raw::closed_within(&mut preface, CAP),
        "HTTP/2 preface only: kept"
    );
}

// ---------------------------------------------------------------------
// Hardening: header limits and Host.

#[test]
fn header_limits_and_host_rules_are_nginx_s() {
    let p = project("", "");
    php_worker(&p, "fpm", "/fpm", "fpm", "");
    let tq = Tq::start(p.path(), &[]);
    wait_ok(&tq, "/fpm/pid.php");
    let many: String = (0..40)
        .map(|i| format!("X-Pad-{i}: {}\r\n", "a".repeat(1000)))
        .collect();
    let r = one(tq.port, &get_req("/fpm/pid.php", &many));
    assert_eq!(r.status, 431, "{r:?}");
    // A little under the limit is fine.
    let some: String = (0..20)
        .map(|i| format!("X-Pad-{i}: {}\r\n", "a".repeat(1000)))
        .collect();
    assert_eq!(one(tq.port, &get_req("/fpm/pid.php", &some)).status, 200);
    let r = one(tq.port, b"GET /fpm/pid.php HTTP/1.1\r\nAccept: */*\r\n\r\n");
    assert_eq!(r.status, 400, "HTTP/1.1 without Host: {r:?}");
    let r = one(
        tq.port,
        b"GET /fpm/pid.php HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    );
    assert_eq!(r.status, 400, "two Host headers: {r:?}");
    let r = one(tq.port, b"GET /fpm/pid.php HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200, "HTTP/1.0 needs no Host: {r:?}");
}

// ---------------------------------------------------------------------
// Hardening: a worker that stops sending mid-body.

#[test]
fn a_worker_silent_mid_body_is_cut_at_its_read_timeout() {
    let p = project("", "");
    raw_worker(&p, "/raw", "scaling:\n  request_timeout: 2s\n");
    let tq = Tq::start(p.path(), &[]);
    wait_ok(&tq, "/raw/warm");
    let mut s = raw::connect(tq.port, CAP);
    s.write_all(&get_req("/raw/stall-body", "")).unwrap();
    let (got, closed) = raw::read_until_quiet(&mut s, CAP, CAP);
    assert!(closed, "the response was never cut");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("0123456789"), "{text}");
}

// ---------------------------------------------------------------------
// Hardening: forwarding headers, trusted proxies, the PROXY protocol.

#[test]
fn forwarding_headers_from_clients_are_replaced_unless_the_client_is_trusted() {
    let spoof = "Proxy: http://evil\r\nX_Forwarded_For: 1.1.1.1\r\nX-Forwarded-For: 6.6.6.6\r\n\
                 X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\nForwarded: for=6.6.6.6\r\n";
    // Untrusted (the default).
    let p = project("", "");
    raw_worker(&p, "/raw", "");
    php_worker(&p, "fpm", "/fpm", "fpm", "");
    let tq = Tq::start(p.path(), &[]);
    wait_ok(&tq, "/raw/warm");
    wait_ok(&tq, "/fpm/pid.php");
    let head = one(tq.port, &get_req("/raw/head", spoof))
        .text()
        .to_ascii_lowercase();
    for gone in [
        "proxy:",
        "x_forwarded_for",
        "6.6.6.6",
        "evil.example",
        "forwarded:",
        "https",
    ] {
        assert!(!head.contains(gone), "{gone} reached the worker:\n{head}");
    }
    for kept in [
        "x-forwarded-for: 127.0.0.1",
        "x-forwarded-proto: http",
        "x-forwarded-host: t",
    ] {
        assert!(head.contains(kept), "{kept} not in:\n{head}");
    }
    let php: serde_json::Value =
        serde_json::from_str(&one(tq.port, &get_req("/fpm/echo.php", spoof)).text()).unwrap();
    assert_eq!(php["REMOTE_ADDR"], "127.0.0.1");
    assert_eq!(php["REQUEST_SCHEME"], "http");
    assert!(php["HTTPS"].is_null(), "{php}");
    assert!(php["HTTP_X_FORWARDED_FOR"].is_null(), "{php}");
    assert!(php["HTTP_FORWARDED"].is_null(), "{php}");
    drop(tq);

    // Trusted: nginx's realip (the rightmost untrusted address).
    let p = project("  trusted_proxies: [\"127.0.0.0/8\", \"10.0.0.0/8\"]\n", "");
    raw_worker(&p, "/raw", "");
    php_worker(&p, "fpm", "/fpm", "fpm", "");
    let tq = Tq::start(p.path(), &[]);
    wait_ok(&tq, "/raw/warm");
    wait_ok(&tq, "/fpm/pid.php");
    let chain = "X-Forwarded-For: 6.6.6.6, 203.0.113.5, 10.1.2.3\r\nX-Forwarded-Proto: https\r\n";
    let head = one(tq.port, &get_req("/raw/head", chain))
        .text()
        .to_ascii_lowercase();
    assert!(
        head.contains("x-forwarded-for: 6.6.6.6, 203.0.113.5, 10.1.2.3, 127.0.0.1"),
        "{head}"
    );
    assert!(head.contains("x-forwarded-proto: https"), "{head}");
    let php: serde_json::Value =
        serde_json::from_str(&one(tq.port, &get_req("/fpm/echo.php", chain)).text()).unwrap();
    assert_eq!(php["REMOTE_ADDR"], "203.0.113.5", "{php}");
    assert_eq!(php["REQUEST_SCHEME"], "https", "{php}");
    assert_eq!(php["HTTPS"], "on", "{php}");
}

#[test]
fn the_proxy_protocol_gives_the_client_address_from_a_trusted_balancer() {
    let p = project(
        "  trusted_proxies: [\"127.0.0.1/32\"]\n  proxy_protocol: true\n",
        "",
    );
    php_worker(&p, "fpm", "/fpm", "fpm", "");
    let tq = Tq::start(p.path(), &[]);
    let req = "GET /fpm/echo.php HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let until = Instant::now() + Duration::from_secs(30);
    // v1, text.
    let v1 = format!("PROXY TCP4 203.0.113.7 127.0.0.1 5555 {}\r\n{req}", tq.port);
    let body = loop {
        let got = raw::exchange(tq.port, v1.as_bytes());
        if got.starts_with(b"HTTP/1.1 200") {
            break raw::parse_one(&got, false).unwrap().0.text();
        }
        assert!(
            Instant::now() < until,
            "{}\n{}",
            String::from_utf8_lossy(&got),
            tq.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let php: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(php["REMOTE_ADDR"], "203.0.113.7", "{php}");
    assert_eq!(php["REMOTE_PORT"], "5555", "{php}");
    // v2, binary: PROXY, TCP over IPv4, 198.51.100.9:4444 → 127.0.0.1.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[0x21, 0x11, 0, 12]);
    v2.extend_from_slice(&[198, 51, 100, 9, 127, 0, 0, 1]);
    v2.extend_from_slice(&4444u16.to_be_bytes());
    v2.extend_from_slice(&tq.port.to_be_bytes());
    v2.extend_from_slice(req.as_bytes());
    let got = raw::exchange(tq.port, &v2);
    let php: serde_json::Value =
        serde_json::from_str(&raw::parse_one(&got, false).unwrap().0.text()).unwrap();
    assert_eq!(php["REMOTE_ADDR"], "198.51.100.9", "{php}");
    assert_eq!(php["REMOTE_PORT"], "4444", "{php}");
    // From a trusted address, a connection without the header is refused.
    let got = raw::exchange(tq.port, req.as_bytes());
    assert!(
        !got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

// ---------------------------------------------------------------------
// Hardening: the FastCGI listener forwards the script it checked.

#[test]
fn the_fastcgi_listener_runs_the_script_it_checked() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let elsewhere = t.path().join("elsewhere");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(elsewhere.join("d")).unwrap();
    std::fs::write(root.join("who.php"), "<?php echo 'inside';").unwrap();
    std::fs::write(elsewhere.join("who.php"), "<?php echo 'outside';").unwrap();
    std::os::unix::fs::symlink(elsewhere.join("d"), root.join("link")).unwrap();
    let root = root.canonicalize().unwrap();
    let port = free_port();
    let p = project("", "");
    for backend in ["fpm", "cgi"] {
        p.worker(
            "app",
            &format!(
                "path: /app\ntype: php\ndocument_root: {}\nphp:\n  backend: {backend}\n  pool:\n    manager: static\n    max_workers: 1\nfastcgi:\n  listen: 127.0.0.1:{port}\n",
                root.display()
            ),
        );
        let tq = Tq::start(p.path(), &[]);
        wait_ok(&tq, "/app/who.php");
        // Lexically `link/..` is the root; the kernel resolves the link
        // first and lands in `elsewhere`.
        let filename = format!("{}/link/../who.php", root.display());
        let out = std::process::Command::new("cgi-fcgi")
            .args(["-bind", "-connect", &format!("127.0.0.1:{port}")])
            .env_clear()
            .envs([
                ("REQUEST_METHOD", "GET"),
                ("SCRIPT_FILENAME", filename.as_str()),
                ("SCRIPT_NAME", "/who.php"),
            ])
            .output()
            .expect("cgi-fcgi not found: install libfcgi-bin, or run the README test command");
        let out = String::from_utf8_lossy(&out.stdout);
        assert!(!out.contains("outside"), "{backend}: {out}");
        assert!(out.ends_with("inside"), "{backend}: {out}");
    }
}

// ---------------------------------------------------------------------
// Hardening: logs are opened before privileges are dropped.

#[test]
fn logs_in_a_root_owned_folder_work_with_server_user() {
    // Not a pass when not root: the test says what it needs.
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test drops root to server.user: run it as root (the README test command runs as root on CI)"
    );
    let logs = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(logs.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = project("  user: nobody\n", "");
    std::fs::set_permissions(p.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    p.worker(
        "fpm",
        &format!(
            "path: /fpm\ntype: php\ndocument_root: {}\nphp:\n  pool:\n    manager: static\n    max_workers: 1\nlogging:\n  log_file: {d}/fpm.log\n  access_log: {d}/fpm-access.log\n",
            php_dir().display(),
            d = logs.path().display()
        ),
    );
    let tq = Tq::start(p.path(), &[]);
    wait_ok(&tq, "/fpm/pid.php");
    let until = Instant::now() + CAP;
    let access = logs.path().join("fpm-access.log");
    while !std::fs::read_to_string(&access)
        .unwrap_or_default()
        .contains("/fpm/pid.php")
    {
        assert!(Instant::now() < until, "no access line:\n{}", tq.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        tq.log_text().contains("running as nobody"),
        "{}",
        tq.log_text()
    );
}
