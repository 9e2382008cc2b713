//! `php.backend: embed`, TQServer's own PHP runtime, end to end with the
//! real binary: one master started with PHP's module start-up, children
//! forked from it that share APCu and opcache, what the SAPI tells
//! scripts, `fastcgi_finish_request()`, uploads, sessions and exit codes,
//! a child killed mid-request, and nothing left behind at stop. The PHP
//! behaviour tests shared with the other backends are in php_fpm_e2e.rs
//! (`embed::…`).

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{Project, Tq, alive, busy_pid, busy_tag, children_of, client};
use serde_json::Value;

fn embed_project(pool: &str) -> (Project, Tq) {
    let p = Project::new("", "");
    let max = if pool.contains("max_workers") {
        ""
    } else {
        "    max_workers: 3\n"
    };
    p.worker(
        "app",
        &format!(
            "path: /app\ntype: php\ndocument_root: {}\nphp:\n  backend: embed\n  pool:\n{max}{pool}\n",
            common::php_dir().display()
        ),
    );
    let tq = Tq::start(p.path(), &[]);
    (p, tq)
}

/// The master: tqserver's child running `tqserver __tqserver-php`.
fn master_of(tq: &Tq) -> u32 {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let found: Vec<u32> = children_of(tq.pid())
            .into_iter()
            .filter(|(pid, _)| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains("__tqserver-php"))
                    .unwrap_or(false)
            })
            .map(|(pid, _)| pid)
            .collect();
        if found.len() == 1 {
            return found[0];
        }
        assert!(Instant::now() < until, "masters: {found:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn wait_children(master: u32, n: usize) -> Vec<u32> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let c: Vec<u32> = children_of(master).into_iter().map(|(p, _)| p).collect();
        if c.len() == n {
            return c;
        }
        assert!(Instant::now() < until, "children of {master}: {c:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every forked process counts in one APCu counter (each request gets a
/// number no other got), opcache is on and serves hits, and the SAPI
/// says fpm-fcgi with fastcgi_finish_request().
#[tokio::test]
async fn forked_processes_share_apcu_and_opcache() {
    let (_p, tq) = embed_project("");
    let master = master_of(&tq);
    let children = wait_children(master, 3).await;
    let c = client();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let c = c.clone();
        let url = tq.url("/app/apcu.php");
        tasks.spawn(async move {
            let mut out = Vec::new();
            for _ in 0..15 {
                let r = c.get(&url).send().await.unwrap();
                assert_eq!(r.status(), 200);
                out.push(r.text().await.unwrap());
            }
            out
        });
    }
    let mut counts = HashSet::new();
    let mut pids = HashSet::new();
    while let Some(r) = tasks.join_next().await {
        for body in r.unwrap() {
            let (pid, n) = body.split_once(' ').unwrap();
            assert_ne!(n, "no-apcu", "APCu is loaded in the embed SAPI");
            assert!(counts.insert(n.to_string()), "counter {n} seen twice");
            pids.insert(pid.parse::<u32>().unwrap());
        }
    }
    assert_eq!(counts.len(), 90);
    assert!(
        pids.iter().all(|p| children.contains(p)),
        "{pids:?} are the master's children {children:?}"
    );
    assert!(
        pids.len() >= 2,
        "the load reached several processes: {pids:?}"
    );
    let mut last = Value::Null;
    for _ in 0..3 {
        last = c
            .get(tq.url("/app/info.php"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    }
    assert_eq!(last["sapi"], "fpm-fcgi");
    assert_eq!(last["opcache"], true, "{last}");
    assert!(last["opcache_hits"].as_u64().unwrap() > 0, "{last}");
    assert_eq!(last["finish_request"], true);
    assert_eq!(last["worker"], "app");
}

/// fastcgi_finish_request(): the answer is complete before the script
/// goes on, and what it echoes afterwards reaches nobody.
#[tokio::test]
async fn fastcgi_finish_request_ends_the_answer_and_the_script_goes_on() {
    let (p, tq) = embed_project("");
    let marker = p.path().join("finished.txt");
    let c = client();
    let r = c
        .get(tq.url(&format!("/app/finish.php?marker={}", marker.display())))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "answered");
    assert!(
        !marker.exists(),
        "the script still sleeps when the answer is read"
    );
    let until = Instant::now() + Duration::from_secs(10);
    while !marker.exists() {
        assert!(Instant::now() < until, "the script never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        std::fs::read_to_string(&marker)
            .unwrap()
            .starts_with("after ")
    );
}

/// multipart uploads land in $_FILES, sessions work across requests, and
/// exit() and a fatal error cost only their own request.
#[tokio::test]
async fn uploads_sessions_exit_and_fatal_errors() {
    let (_p, tq) = embed_project("");
    let c = client();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let boundary = "tq-boundary-7d1";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"doc\"; filename=\"doc.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let v: Value = c
        .post(tq.url("/app/upload.php"))
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["post"]["title"], "hello", "{v}");
    assert_eq!(v["files"]["doc"]["name"], "doc.bin");
    assert_eq!(v["files"]["doc"]["size"], 300_000);
    assert_eq!(v["files"]["doc"]["error"], 0);
    assert_eq!(v["files"]["doc"]["sha256"], common::sha256_hex(&data));
    // The session cookie, then the same session.
    let r = c.get(tq.url("/app/exit.php")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    let sid = cookie.split(';').next().unwrap().to_string();
    assert!(sid.starts_with("PHPSESSID="), "{cookie}");
    assert_eq!(r.text().await.unwrap(), "n=1");
    let in_session = |query: &str| {
        c.get(tq.url(&format!("/app/exit.php{query}")))
            .header("Cookie", &sid)
            .send()
    };
    let r = in_session("").await.unwrap();
    assert_eq!(r.text().await.unwrap(), "n=2");
    let r = in_session("?fatal=1").await.unwrap();
    assert_eq!(r.status(), 500);
    let r = in_session("").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "n=4");
}

/// A child killed mid-request (kill -9) costs that request a 502 (a POST:
/// a GET that failed before any byte is retried on another process); the
/// master forks a replacement, the pool serves on, and stopping tqserver
/// leaves neither the master nor a child behind.
#[tokio::test]
async fn a_killed_child_costs_one_request_and_nothing_outlives_tqserver() {
    let (_p, mut tq) = embed_project("");
    let master = master_of(&tq);
    let before = wait_children(master, 3).await;
    let c = client();
    let tag = busy_tag("embed-kill");
    let url = tq.url(&format!("/app/busy.php?tag={tag}&ms=10000"));
    let slow = tokio::spawn({
        let c = c.clone();
        async move { c.post(&url).body("x").send().await.unwrap().status() }
    });
    let pid = busy_pid(&tag).await;
    assert!(before.contains(&pid), "{pid} is one of {before:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert_eq!(slow.await.unwrap(), 502);
    let until = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let now = wait_children(master, 3).await;
        if !now.contains(&pid) {
            break now;
        }
        assert!(Instant::now() < until);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for _ in 0..20 {
        let r = c.get(tq.url("/app/pid.php")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    tq.stop();
    assert!(!alive(master), "the master is gone");
    assert!(after.iter().all(|p| !alive(*p)), "its children are gone");
}

/// max_execution_time ends a script that runs too long (PHP's own timer
/// works in a forked process): 500, and the process serves on.
#[tokio::test]
async fn max_execution_time_ends_a_script_and_the_process_serves_on() {
    let (_p, tq) = embed_project("");
    let c = client();
    let r = c.get(tq.url("/app/spin.php?s=1")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    for _ in 0..5 {
        let r = c.get(tq.url("/app/pid.php")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
}

/// A client that goes away mid-response: TQServer tells the embedded
/// runtime (FCGI_ABORT_REQUEST) and reads the rest, so the script ends at
/// its next output with connection_aborted() = 1 — or, after
/// ignore_user_abort(true), runs to its end knowing it — and the process
/// serves the next request.
#[tokio::test]
async fn a_client_going_away_reaches_the_script_unless_it_ignores_it() {
    let (_p, tq) = embed_project("");
    let c = client();
    for (ignore, tag) in [(false, busy_tag("abort")), (true, busy_tag("ignore"))] {
        let file = std::env::temp_dir().join(format!("tq-abort-{tag}"));
        let _ = std::fs::remove_file(&file);
        // The head and a few lines, then gone.
        let req = format!(
            "GET /app/abort.php?tag={tag}&ignore={} HTTP/1.1\r\nHost: x\r\n\r\n",
            u8::from(ignore)
        );
        let got = common::raw::leave_mid_answer(tq.port, req.as_bytes(), 400);
        assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
        let until = Instant::now() + Duration::from_secs(8);
        let end = loop {
            if let Ok(t) = std::fs::read_to_string(&file) {
                break t;
            }
            assert!(
                Instant::now() < until,
                "the script never ended\n{}",
                tq.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let _ = std::fs::remove_file(&file);
        let i: u32 = end.trim().rsplit('=').next().unwrap().parse().unwrap();
        assert!(end.starts_with("aborted=1 "), "{end}");
        if ignore {
            assert_eq!(i, 30, "ignore_user_abort: it runs to its end: {end}");
        } else {
            assert!(i < 25, "it ended at its next output: {end}");
        }
        // The connection to the process stays good.
        let r = c.get(tq.url("/app/pid.php")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
}

/// The dynamic and ondemand managers on the embedded runtime: TQServer asks
/// the master for each fork (warm, sharing APCu); a burst gets a process
/// per request at once, idle ones above the limits go, and ondemand starts
/// with none.
#[tokio::test]
async fn dynamic_and_ondemand_pools_fork_from_the_master_when_asked() {
    let (_p, tq) = embed_project(
        "    manager: dynamic\n    min_workers: 1\n    start_workers: 2\n    max_spare_workers: 3\n    max_workers: 8",
    );
    let master = master_of(&tq);
    wait_children(master, 2).await;
    let c = client();
    let burst = |n: usize, ms: u32| {
        (0..n)
            .map(|_| {
                let c = c.clone();
                let url = tq.url(&format!("/app/busy.php?ms={ms}&tag=none"));
                tokio::spawn(async move { c.get(&url).send().await.unwrap().status() })
            })
            .collect::<Vec<_>>()
    };
    let handles = burst(8, 1500);
    let mut peak = 0;
    while !handles.iter().all(|h| h.is_finished()) {
        peak = peak.max(children_of(master).len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for h in handles {
        assert_eq!(h.await.unwrap(), 200);
    }
    // Eight requests of 1.5 s at once: eight processes forked for them.
    assert_eq!(peak, 8, "{}", tq.log_text());
    // Idle above max_spare_workers: back to three, all the master's.
    wait_children(master, 3).await;
    // APCu is shared with the forked ones too.
    let (a, b) = (
        c.get(tq.url("/app/apcu.php"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        c.get(tq.url("/app/apcu.php"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert_ne!(a, b);

    let (_p2, tq2) =
        embed_project("    manager: ondemand\n    max_workers: 4\n    idle_timeout: 1");
    let master = master_of(&tq2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(children_of(master).is_empty());
    let r = c.get(tq2.url("/app/pid.php")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let pid: u32 = r.text().await.unwrap().trim().parse().unwrap();
    assert!(children_of(master).iter().any(|(p, _)| *p == pid));
    wait_children(master, 0).await;
}
