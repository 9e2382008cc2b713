//! Worker mode (`php.worker` on `backend: embed`): the worker script in
//! tests/php_worker/ boots once per process and loops on
//! `tqserver_handle_request()`. State kept across requests, nothing of
//! one request's superglobals, headers or output in the next, fatal
//! errors, exit() and exceptions costing only their request, the memory
//! threshold, `max_requests`, request_timeout, FrankenPHP's function name,
//! and new code on `tqserver reload` and on a file change, with no failed
//! request.

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Project, Tq, client, run_cli};
use serde_json::Value;

fn worker_dir() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/php_worker")
}

/// A worker-mode app at /app on `script`, `extra` under `php:`.
fn project(script: &str, extra: &str, args: &[&str]) -> (Project, Tq) {
    let p = Project::new("", "");
    p.worker("app", &yaml(&worker_dir(), script, extra));
    let tq = Tq::start(p.path(), args);
    (p, tq)
}

fn yaml(root: &std::path::Path, script: &str, extra: &str) -> String {
    format!(
        "path: /app\ntype: php\ndocument_root: {}\nphp:\n  backend: embed\n  worker: {}\n{extra}\n",
        root.display(),
        root.join(script).display()
    )
}

/// A POST of an urlencoded form.
fn form(c: &reqwest::Client, url: &str, body: &str) -> reqwest::RequestBuilder {
    c.post(url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body.to_string())
}

async fn json(c: &reqwest::Client, url: &str) -> Value {
    let r = c.get(url).send().await.unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.json().await.unwrap()
}

/// The JSON answer to `req`.
async fn json_of(req: reqwest::RequestBuilder) -> Value {
    req.send().await.unwrap().json().await.unwrap()
}

/// The text answer to `req`.
async fn text_of(req: reqwest::RequestBuilder) -> String {
    req.send().await.unwrap().text().await.unwrap()
}

async fn count(c: &reqwest::Client, tq: &Tq) -> (u64, u64, String) {
    let v = json(c, &tq.url("/app/count")).await;
    (
        v["count"].as_u64().unwrap(),
        v["pid"].as_u64().unwrap(),
        v["booted"].as_str().unwrap().to_string(),
    )
}

/// One process: its static counter goes up request after request, and
/// each request sees only its own superglobals, headers, cookies, body,
/// uploads, status and output buffers.
#[tokio::test]
async fn state_is_kept_and_nothing_of_a_request_reaches_the_next() {
    let uploads = tempfile::tempdir().unwrap();
    let (_p, tq) = project(
        "worker.php",
        &format!(
            "  settings:\n    upload_tmp_dir: {}\n  pool:\n    max_workers: 1",
            uploads.path().display()
        ),
        &[],
    );
    // No cookie store: what a request sees is what it sent.
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (n1, pid, booted) = count(&c, &tq).await;
    let (n2, pid2, booted2) = count(&c, &tq).await;
    assert_eq!((n2, pid2, &booted2), (n1 + 1, pid, &booted));

    // Headers, a cookie and a status for one request only.
    let r = c
        .get(tq.url("/app/state?set=a"))
        .header("Cookie", "k=v")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-set"], "a");
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("c=a")
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["get"]["set"], "a");
    assert_eq!(v["cookie"]["k"], "v");
    assert_eq!(v["script"], "/app/worker.php");
    assert_eq!(v["filename"], "worker.php");
    assert_eq!(v["worker"], "app");
    let r = c.get(tq.url("/app/state")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-set").is_none());
    assert!(r.headers().get("set-cookie").is_none());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["get"], serde_json::json!([]));
    assert_eq!(v["cookie"], serde_json::json!([]));
    assert_eq!(v["request"], serde_json::json!([]));
    assert_eq!(
        v["headers"],
        serde_json::json!(["Content-Type: application/json"])
    );
    // php.ini's output_buffering: the level every request starts at.
    let ob = v["ob"].clone();

    // A form, then an upload, then a raw body: each only in its request.
    let v: Value = json_of(form(&c, &tq.url("/app/state"), "a=1&b=2")).await;
    assert_eq!(v["post"]["a"], "1");
    assert_eq!(v["input"], "a=1&b=2");
    let data = vec![7u8; 300_000];
    let mut multipart = b"--XyZ\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\ny\r\n--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"f.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
    multipart.extend_from_slice(&data);
    multipart.extend_from_slice(b"\r\n--XyZ--\r\n");
    let v: Value = json_of(
        c.post(tq.url("/app/state"))
            .header("Content-Type", "multipart/form-data; boundary=XyZ")
            .body(multipart),
    )
    .await;
    assert_eq!(v["post"]["x"], "y");
    assert_eq!(v["files"]["f"][0], "f.bin");
    assert_eq!(v["files"]["f"][1], 300_000);
    assert_eq!(v["files"]["f"][2], common::sha256_hex(&data));
    let v: Value = json_of(c.put(tq.url("/app/state")).body("raw body")).await;
    assert_eq!(v["method"], "PUT");
    assert_eq!(v["input"], "raw body");
    assert_eq!(v["post"], serde_json::json!([]));
    assert_eq!(v["files"], serde_json::json!([]));
    // The upload's temporary file went with its request, and request
    // bodies (php://input) leave no descriptor behind.
    assert_eq!(std::fs::read_dir(uploads.path()).unwrap().count(), 0);
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    // 3 MB: past php://temp's 2 MiB in memory, a temporary file each (the
    // first one warms up what PHP opens once).
    let big = || {
        c.put(tq.url("/app/state"))
            .body(vec![b'x'; 3_000_000])
            .send()
    };
    assert_eq!(big().await.unwrap().status(), 200);
    let before = fds();
    for _ in 0..8 {
        assert_eq!(big().await.unwrap().status(), 200);
    }
    // Eight bodies kept would be eight descriptors more; PHP may open one
    // or two of its own once (CI saw one).
    let after = fds();
    assert!(after <= before + 2, "{before} descriptors, then {after}");

    // An output buffer left open is that request's answer, not the next's.
    let t = c.get(tq.url("/app/buffer")).send().await.unwrap();
    assert_eq!(t.text().await.unwrap(), "left in a buffer");
    let v = json(&c, &tq.url("/app/state")).await;
    assert_eq!(v["ob"], ob);
    assert_eq!(v["input"], "");

    // Sessions start fresh in every request and persist through the
    // save handler.
    let cookie = {
        let r = c.get(tq.url("/app/session")).send().await.unwrap();
        let sid = r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        assert_eq!(r.text().await.unwrap(), "1");
        sid
    };
    let r = c
        .get(tq.url("/app/session"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "2");
    let r = c.get(tq.url("/app/session")).send().await.unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        "1",
        "another client, another session"
    );

    // Files are served as they are; every other path goes to the worker.
    let r = c.get(tq.url("/app/style.css")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "body { color: red }\n");
    let r = c.get(tq.url("/app/classic.php")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.unwrap(), "no route for classic.php");
    let t = text_of(c.get(tq.url("/app/sapi"))).await;
    assert_eq!(t, "fpm-fcgi 1 franken");

    // Still the same process, booted once, counting every request.
    let (n, pid3, booted3) = count(&c, &tq).await;
    assert_eq!((pid3, booted3), (pid, booted));
    assert!(n >= n2 + 10, "{n}");
}

/// A fatal error, exit() and an uncaught exception each cost only their
/// own request: the answer is sent (500 for the errors), and the next
/// request — a POST, which is never retried — succeeds. exit() and the
/// fatal error end the worker script, which boots again (in the same
/// process: PHP frees what it held); an exception does not end it.
#[tokio::test]
async fn fatal_errors_exit_and_exceptions_cost_only_their_request() {
    let (_p, tq) = project("worker.php", "  pool:\n    max_workers: 1", &[]);
    let c = client();
    let post_state = || async {
        let r = form(&c, &tq.url("/app/state"), "p=1").send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", tq.log_text());
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["post"]["p"], "1");
    };
    let (_, pid, boot) = count(&c, &tq).await;

    let r = c.get(tq.url("/app/error")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    post_state().await;
    let r = c.get(tq.url("/app/throw")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    post_state().await;
    let (_, same, same_boot) = count(&c, &tq).await;
    assert_eq!(
        (same, &same_boot),
        (pid, &boot),
        "an exception does not end the worker"
    );

    let r = c.get(tq.url("/app/fatal")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(r.text().await.unwrap(), "before ");
    post_state().await;
    let (n, _, after_fatal) = count(&c, &tq).await;
    assert_ne!(after_fatal, boot, "a fatal error ends the worker script");
    assert!(n <= 3, "a fresh script counts from the start: {n}");

    let r = c.get(tq.url("/app/exit")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "bye");
    post_state().await;
    let (_, _, after_exit) = count(&c, &tq).await;
    assert_ne!(after_exit, after_fatal, "exit() ends the worker script");

    let log = tq.log_text();
    assert!(log.contains("thrown in a request"), "{log}");
    assert!(log.contains("a fatal error in a request"), "{log}");
    // Shutdown functions run when a worker script ends.
    assert!(log.contains("worker script ends after"), "{log}");
    assert!(!log.contains("exited unexpectedly"), "{log}");
}

/// php.worker_max_memory: a script that leaks 4 MiB a request is replaced
/// (it ends and boots again) once it holds more than 10 MiB, after its
/// answer; no request fails. `max_requests` retires a worker process.
#[tokio::test]
async fn a_leaking_worker_is_replaced_at_the_threshold() {
    let (_p, tq) = project(
        "worker.php",
        "  worker_max_memory: 10M\n  pool:\n    max_workers: 1",
        &[],
    );
    let c = client();
    let mut seen = Vec::new();
    for _ in 0..8 {
        let r = c.get(tq.url("/app/leak")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", tq.log_text());
        let t = r.text().await.unwrap();
        let (n, pid) = t.split_once(' ').unwrap();
        seen.push((n.parse::<u32>().unwrap(), pid.to_string()));
    }
    // 4, 8, 12 MiB: the third request crosses the line, the fourth runs
    // in a fresh process.
    let counts: Vec<u32> = seen.iter().map(|s| s.0).collect();
    assert_eq!(counts, [1, 2, 3, 1, 2, 3, 1, 2], "{seen:?}");
    let boots: HashSet<&String> = seen.iter().map(|s| &s.1).collect();
    assert_eq!(boots.len(), 3, "{seen:?}");
    common::wait_log(&tq, "above php.worker_max_memory", 5).await;

    let (_p2, tq2) = project(
        "worker.php",
        "  pool:\n    max_workers: 1\n    max_requests: 3",
        &[],
    );
    let mut pids = HashSet::new();
    for i in 0..9 {
        let (n, pid, _) = count(&c, &tq2).await;
        assert_eq!(n, i % 3 + 1, "request {i}");
        pids.insert(pid);
    }
    assert_eq!(pids.len(), 3, "{pids:?}");
}

/// request_timeout kills the worker process running the slow request: that
/// client gets 504, the next request is served by a fresh process.
#[tokio::test]
async fn request_timeout_kills_the_worker_and_only_that_request_fails() {
    let (_p, tq) = project(
        "worker.php",
        "  pool:\n    max_workers: 1\n    request_timeout: 1s",
        &[],
    );
    let c = client();
    let (_, pid, _) = count(&c, &tq).await;
    // A 30 s sleep answered 504: request_timeout cut it.
    let r = c.get(tq.url("/app/sleep?s=30")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    let (n, fresh, _) = count(&c, &tq).await;
    assert_ne!(fresh, pid);
    assert_eq!(n, 1);
    assert!(!common::alive(pid as u32), "the slow worker was killed");
}

/// A client going away mid-answer: the handler sees connection_aborted()
/// = 1, its output is dropped, and it runs to its end; the worker script
/// is not ended (the same boot serves the next request).
#[tokio::test]
async fn a_client_going_away_costs_the_worker_nothing() {
    let (_p, tq) = project("worker.php", "  pool:\n    max_workers: 1", &[]);
    let c = client();
    let (_, pid, boot) = count(&c, &tq).await;
    common::raw::leave_mid_answer(tq.port, b"GET /app/stream HTTP/1.1\r\nHost: x\r\n\r\n", 400);
    common::wait_log(&tq, "stream ended: aborted=1 i=30", 8).await;
    let (_, pid2, boot2) = count(&c, &tq).await;
    assert_eq!((pid2, boot2), (pid, boot));
}

/// A worker script written for FrankenPHP (frankenphp_handle_request, its
/// documented loop) runs unchanged, across processes.
#[tokio::test]
async fn a_frankenphp_worker_script_runs_unchanged() {
    let (_p, tq) = project("franken.php", "  pool:\n    max_workers: 2", &[]);
    let c = client();
    let mut boots = HashSet::new();
    for i in 0..20 {
        let t = text_of(c.get(tq.url(&format!("/app/x?n={i}")))).await;
        let rest = t
            .strip_prefix(&format!("franken {i} "))
            .unwrap_or_else(|| panic!("{t}"));
        boots.insert(rest.to_string());
    }
    assert!(!boots.is_empty() && boots.len() <= 2, "{boots:?}");
}

/// Load runs while the code is deployed: `tqserver reload` in prod and a
/// file change in dev each boot the worker script again in new processes,
/// and not one request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_code_on_reload_and_on_file_change_without_a_failed_request() {
    for (mode, deploy) in [("prod", "reload"), ("dev", "edit")] {
        let p = Project::new("", "file_watcher:\n  enabled: true\n  debounce_ms: 50\n");
        // The scripts in the worker's own folder, as in a project (the
        // watcher watches it); the test edits one. One process: each
        // request shows the boot that serves it.
        let root = p.path().join("workers/app/public");
        std::fs::create_dir_all(&root).unwrap();
        for f in ["worker.php", "style.css"] {
            std::fs::copy(worker_dir().join(f), root.join(f)).unwrap();
        }
        p.worker(
            "app",
            &yaml(&root, "worker.php", "  pool:\n    max_workers: 1"),
        );
        let tq = Tq::start(p.path(), &["--mode", mode]);
        let c = client();
        let before: HashSet<String> = HashSet::from([count(&c, &tq).await.2]);
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for k in 0..2 {
            let (url, stop) = (tq.url("/app/state"), stop.clone());
            clients.push(tokio::spawn(async move {
                let c = client();
                let (mut ok, mut failed) = (0, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    // POSTs: never retried, so a dropped one shows.
                    match form(&c, &url, &format!("k={k}")).send().await {
                        Ok(r) if r.status() == 200 => ok += 1,
                        Ok(r) => failed.push(r.status().to_string()),
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (ok, failed)
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        if deploy == "reload" {
            let (status, out, err) = run_cli(
                p.path(),
                &[
                    "reload",
                    "--admin-listen",
                    tq.admin.trim_start_matches("http://"),
                ],
            );
            assert!(status.success(), "{out}{err}");
            assert!(
                format!("{out}{err}").contains("worker script started again"),
                "{out}{err}"
            );
        } else {
            let f = root.join("worker.php");
            let text = std::fs::read_to_string(&f).unwrap();
            std::fs::write(&f, format!("{text}\n// edited\n")).unwrap();
        }
        // Every process booted after the deploy.
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let mut now = HashSet::new();
            for _ in 0..6 {
                now.insert(count(&c, &tq).await.2);
            }
            if now.is_disjoint(&before) {
                break;
            }
            assert!(
                Instant::now() < until,
                "{mode}: still {now:?}\n{}",
                tq.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        for cl in clients {
            let (ok, failed) = cl.await.unwrap();
            assert!(failed.is_empty(), "{mode}: {failed:?}\n{}", tq.log_text());
            assert!(ok > 5, "{mode}: {ok}");
        }
    }
}

/// Worker mode's keys are checked: php.worker needs backend: embed and an
/// existing file; php.worker_max_memory needs php.worker.
#[test]
fn worker_keys_are_checked_with_file_line_and_key() {
    let p = Project::new("", "");
    p.worker(
        "a",
        &format!(
            "path: /a\ntype: php\ndocument_root: {}\nphp:\n  backend: cgi\n  worker: worker.php\n",
            worker_dir().display()
        ),
    );
    p.worker(
        "b",
        &format!(
            "path: /b\ntype: php\ndocument_root: {}\nphp:\n  backend: embed\n  worker: public/nope.php\n",
            worker_dir().display()
        ),
    );
    p.worker(
        "c",
        &format!(
            "path: /c\ntype: php\ndocument_root: {}\nphp:\n  backend: embed\n  worker_max_memory: 12Q\n",
            worker_dir().display()
        ),
    );
    let (status, out, err) = run_cli(p.path(), &["check"]);
    let text = format!("{out}{err}");
    assert!(!status.success(), "{text}");
    assert!(text.contains("worker.yaml:6: php.worker: worker mode runs on TQServer's own PHP runtime: add php.backend: embed"), "{text}");
    assert!(
        text.contains("php.worker:") && text.contains("nope.php is not a file"),
        "{text}"
    );
    assert!(
        text.contains("php.worker_max_memory: is for worker mode"),
        "{text}"
    );

    // A valid one: `tqserver check` says how it runs.
    let ok = Project::new("", "");
    ok.worker(
        "app",
        &yaml(&worker_dir(), "worker.php", "  worker_max_memory: 64M"),
    );
    let (status, out, err) = run_cli(ok.path(), &["check"]);
    let text = format!("{out}{err}");
    assert!(status.success(), "{text}");
    assert!(text.contains("embedded PHP in worker mode"), "{text}");
    assert!(
        text.contains(&format!(
            "worker script {}",
            worker_dir().join("worker.php").display()
        )),
        "{text}"
    );
}
