//! Signals and systemd: `Type=notify` readiness over a real Unix datagram
//! socket (what systemd listens on), and SIGQUIT as a graceful stop, as
//! php-fpm has it.

mod common;

use std::time::Duration;

use common::{Project, Tq, client, wait_log};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Waits for one datagram on `sock` (at most `secs`).
async fn datagram(sock: &tokio::net::UnixDatagram, secs: u64) -> String {
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(secs), sock.recv(&mut buf))
        .await
        .expect("no sd_notify datagram arrived")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_and_stopping_are_announced_to_systemd() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&path).unwrap();
    let p = Project::new("", "");
    p.php_worker("cgi", "/cgi", "  backend: cgi");
    let mut tq = Tq::start_env(p.path(), &[], &[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    let ready = datagram(&sock, 30).await;
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(
        ready.contains(&format!("MAINPID={}\n", tq.pid())),
        "{ready}"
    );
    // Ready means serving.
    let r = client().get(tq.url("/cgi/echo.php")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    kill(Pid::from_raw(tq.pid() as i32), Signal::SIGTERM).unwrap();
    let stopping = datagram(&sock, 10).await;
    assert!(stopping.starts_with("STOPPING=1"), "{stopping}");
    let exit = tq.wait_exit(20).expect("tqserver exits");
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigquit_finishes_requests_in_progress_then_exits_0() {
    let p = Project::new("", "");
    p.php_worker("fpm", "/fpm", "");
    let mut tq = Tq::start(p.path(), &[]);
    let c = client();
    let tag = common::busy_tag("sigquit");
    let url = tq.url(&format!("/fpm/busy.php?ms=1500&tag={tag}"));
    let slow = tokio::spawn(async move {
        let r = c.get(url).send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    });
    common::busy_pid(&tag).await;
    let fpm = common::children_named(&tq, "php-fpm");
    assert_eq!(fpm.len(), 1, "php-fpm's master runs");
    kill(Pid::from_raw(tq.pid() as i32), Signal::SIGQUIT).unwrap();
    wait_log(&tq, "stopping: finishing requests in progress", 5).await;
    let (status, body) = slow.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "done");
    let exit = tq.wait_exit(20).expect("tqserver exits");
    assert!(exit.success(), "{exit:?}\n{}", tq.log_text());
    // php-fpm was stopped and reaped before tqserver exited.
    assert!(
        !common::alive(fpm[0]),
        "php-fpm {} outlived tqserver",
        fpm[0]
    );
}

/// A SIGTERM that arrives while TQServer starts (php-fpm not ready yet,
/// nothing listening) is a graceful stop once it serves: it exits 0 and
/// removes its runtime directory, instead of dying by the signal's
/// default action with the directory left behind.
#[test]
fn a_sigterm_during_start_is_a_graceful_stop() {
    let p = Project::new("", "");
    p.php_worker("app", "/app", "");
    let tmp = tempfile::tempdir().unwrap();
    let log_path = tmp.path().join("tq.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tqserver"))
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &common::free_port().to_string(),
        ])
        .args(["--admin-listen", ""])
        .env("TMPDIR", tmp.path())
        .current_dir(p.path())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let text = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while !text().contains("starting php-fpm") {
        assert!(std::time::Instant::now() < until, "{}", text());
        std::thread::sleep(Duration::from_millis(5));
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > until {
            let _ = child.kill();
            panic!("still running after SIGTERM:\n{}", text());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}:\n{}", text());
    assert!(text().contains("stopped"), "{}", text());
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("tqserver-"))
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "runtime directory left: {left:?}");
}
