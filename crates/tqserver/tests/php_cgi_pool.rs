//! The cgi backend end to end: the tqserver binary managing real php-cgi
//! processes. Process counts come from the OS process table, not from
//! TQServer's own counters.

mod common;

use std::time::{Duration, Instant};

use common::{Project, Tq, alive, children_of, client, php_dir};
use reqwest::StatusCode;

/// A cgi-backend PHP worker at /app over the test scripts.
fn cgi_project(pool: &str, extra: &str) -> Project {
    let p = Project::new("", "");
    p.worker(
        "app",
        &format!(
            "path: /app\ntype: php\ndocument_root: {}\nphp:\n  backend: cgi\n  pool:\n{pool}\n{extra}\n",
            php_dir().display()
        ),
    );
    p
}

/// php-cgi processes whose parent is tqserver.
fn php_cgi(tq: &Tq) -> Vec<u32> {
    let mut v: Vec<u32> = children_of(tq.pid())
        .into_iter()
        .filter(|(_, c)| c.starts_with("php-cgi"))
        .map(|(p, _)| p)
        .collect();
    v.sort_unstable();
    v
}

/// Polls until `php_cgi(tq)` has `n` processes (within `secs`).
async fn wait_count(tq: &Tq, n: usize, secs: u64) -> Vec<u32> {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let now = php_cgi(tq);
        if now.len() == n {
            return now;
        }
        assert!(
            Instant::now() < until,
            "expected {n} php-cgi processes, have {}: {now:?}\n{}",
            now.len(),
            tq.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get(c: &reqwest::Client, url: &str) -> (StatusCode, String) {
    let r = c.get(url).send().await.unwrap();
    let s = r.status();
    (s, r.text().await.unwrap())
}

use common::busy_pid;

fn tag(name: &str) -> String {
    common::busy_tag(name)
}

fn kill9(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[tokio::test]
async fn static_pool_runs_exactly_max_workers_and_serves() {
    let p = cgi_project(
        "    manager: static\n    max_workers: 3",
        "  settings:\n    memory_limit: 77M\n    display_errors: false",
    );
    let tq = Tq::start(p.path(), &[]);
    let procs = wait_count(&tq, 3, 10).await;
    let c = client();
    let mut seen = std::collections::BTreeSet::new();
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let c = c.clone();
            let url = tq.url("/app/busy.php?ms=300&tag=none");
            tokio::spawn(async move { get(&c, &url).await })
        })
        .collect();
    for h in handles {
        let (s, body) = h.await.unwrap();
        assert_eq!(s, 200);
        assert_eq!(body, "done");
    }
    for _ in 0..10 {
        let (s, body) = get(&c, &tq.url("/app/pid.php")).await;
        assert_eq!(s, 200);
        seen.insert(body.trim().parse::<u32>().unwrap());
    }
    assert!(
        seen.iter().all(|p| procs.contains(p)),
        "{seen:?} not in {procs:?}"
    );
    // Same three processes: nothing was restarted by the load.
    assert_eq!(php_cgi(&tq), procs);
    // CGI variables reach PHP as with php-fpm, and so does the worker env.
    let (s, body) = get(&c, &tq.url("/app/echo.php/extra?x=1")).await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["PATH_INFO"], "/extra");
    assert_eq!(v["QUERY_STRING"], "x=1");
    assert_eq!(v["WORKER_NAME"], "app");
    // php.settings arrive as -d; dev mode revalidates scripts at once.
    for (k, want) in [
        ("memory_limit", "77M"),
        ("display_errors", "0"),
        ("opcache.revalidate_freq", "0"),
    ] {
        let (s, body) = get(&c, &tq.url(&format!("/app/ini.php?k={k}"))).await;
        assert_eq!((s, body.as_str()), (StatusCode::OK, want), "{k}");
    }
}

#[tokio::test]
async fn dynamic_pool_grows_for_a_burst_then_shrinks_to_max_spare() {
    let p = cgi_project(
        "    manager: dynamic\n    min_workers: 1\n    start_workers: 2\n    max_spare_workers: 3\n    max_workers: 8",
        "",
    );
    let tq = Tq::start(p.path(), &[]);
    wait_count(&tq, 2, 10).await;
    let c = client();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let c = c.clone();
            let url = tq.url("/app/busy.php?ms=1500&tag=none");
            tokio::spawn(async move { get(&c, &url).await })
        })
        .collect();
    // All eight run at once: eight processes while the burst lasts (and
    // for a second after: idle processes above the spare limit go only
    // once they have been idle that long).
    let mut peak = 0;
    while !handles.iter().all(|h| h.is_finished()) {
        peak = peak.max(php_cgi(&tq).len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for h in handles {
        assert_eq!(h.await.unwrap().0, 200);
    }
    assert_eq!(peak, 8, "{}", tq.log_text());
    // Idle above max_spare_workers for a second: back to three.
    wait_count(&tq, 3, 10).await;
}

#[tokio::test]
async fn ondemand_pool_starts_none_and_stops_idle_processes() {
    let p = cgi_project(
        "    manager: ondemand\n    max_workers: 4\n    idle_timeout: 1",
        "",
    );
    let tq = Tq::start(p.path(), &[]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(php_cgi(&tq), Vec::<u32>::new());
    let c = client();
    let (s, _) = get(&c, &tq.url("/app/pid.php")).await;
    assert_eq!(s, 200);
    assert_eq!(php_cgi(&tq).len(), 1);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            let url = tq.url("/app/busy.php?ms=800&tag=none");
            tokio::spawn(async move { get(&c, &url).await })
        })
        .collect();
    wait_count(&tq, 4, 5).await;
    for h in handles {
        assert_eq!(h.await.unwrap().0, 200);
    }
    wait_count(&tq, 0, 10).await;
}

#[tokio::test]
async fn max_requests_recycles_processes_under_load_without_a_failure() {
    // Over TCP this time: each process on a port from the range, given
    // back and taken again as processes are replaced.
    let p = cgi_project(
        "    manager: static\n    max_workers: 2\n    max_requests: 7\n    listen_address: 127.0.0.1",
        "",
    );
    let tq = Tq::start(p.path(), &[]);
    let first = wait_count(&tq, 2, 10).await;
    let c = client();
    let mut pids = std::collections::BTreeSet::new();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let c = c.clone();
        let url = tq.url("/app/pid.php");
        tasks.spawn(async move {
            let mut out = Vec::new();
            for _ in 0..25 {
                out.push(get(&c, &url).await);
            }
            out
        });
    }
    while let Some(r) = tasks.join_next().await {
        for (s, body) in r.unwrap() {
            assert_eq!(s, 200, "{body}");
            pids.insert(body.trim().parse::<u32>().unwrap());
        }
    }
    // 150 requests at 7 per process: at least 21 processes served.
    assert!(pids.len() >= 150 / 7, "{} processes: {pids:?}", pids.len());
    assert!(first.iter().all(|p| !alive(*p)), "first processes retired");
    wait_count(&tq, 2, 10).await;
}

#[tokio::test]
async fn request_timeout_gives_504_and_the_process_is_replaced() {
    let p = cgi_project(
        "    manager: static\n    max_workers: 1\n    request_timeout: 1",
        "",
    );
    let tq = Tq::start(p.path(), &[]);
    let before = wait_count(&tq, 1, 10).await;
    let c = client();
    let t = tag("timeout");
    let url = tq.url(&format!("/app/busy.php?ms=5000&tag={t}"));
    let started = Instant::now();
    let (s, body) = get(&c, &url).await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(body.contains("request_timeout"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(busy_pid(&t).await, before[0]);
    let until = Instant::now() + Duration::from_secs(3);
    while alive(before[0]) {
        assert!(Instant::now() < until, "the process that ran it is gone");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = wait_count(&tq, 1, 10).await;
    assert_ne!(after, before);
    assert_eq!(get(&c, &tq.url("/app/pid.php")).await.0, 200);
    assert!(tq.log_text().contains("request_timeout"));
}

#[tokio::test]
async fn kill_9_of_a_busy_process_fails_only_its_request() {
    let p = cgi_project("    manager: static\n    max_workers: 3", "");
    let tq = Tq::start(p.path(), &[]);
    wait_count(&tq, 3, 10).await;
    let c = client();
    let t = tag("busy");
    let victim = {
        let c = c.clone();
        let url = tq.url(&format!("/app/busy.php?ms=3000&tag={t}"));
        tokio::spawn(async move { get(&c, &url).await })
    };
    let pid = busy_pid(&t).await;
    // Other requests run meanwhile, before and after the kill.
    let others = {
        let c = c.clone();
        let url = tq.url("/app/busy.php?ms=20&tag=none");
        tokio::spawn(async move {
            let mut out = Vec::new();
            for _ in 0..40 {
                out.push(get(&c, &url).await.0);
            }
            out
        })
    };
    // Well into the script: a request lost this late has run.
    tokio::time::sleep(Duration::from_millis(700)).await;
    kill9(pid);
    let (s, body) = victim.await.unwrap();
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{body}\n{}", tq.log_text());
    assert!(others.await.unwrap().iter().all(|s| *s == 200));
    wait_count(&tq, 3, 10).await;
    assert!(
        tq.log_text()
            .contains("exited unexpectedly while serving GET /app/busy.php")
    );
}

#[tokio::test]
async fn kill_9_of_idle_processes_fails_no_request_and_the_pool_refills() {
    let p = cgi_project("    manager: static\n    max_workers: 3", "");
    let tq = Tq::start(p.path(), &[]);
    wait_count(&tq, 3, 10).await;
    let c = client();
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..60 {
        // Requests are sequential: between two of them every process is
        // idle, and the next request may be handed one that was just
        // killed, before the pool has noticed.
        let (s, body) = get(&c, &tq.url("/app/pid.php")).await;
        assert_eq!(s, 200, "request {i}: {body}\n{}", tq.log_text());
        let pid: u32 = body.trim().parse().unwrap();
        seen.insert(pid);
        if i % 3 == 0 {
            // Every process that has served and is still there.
            for p in seen.iter().copied().filter(|p| alive(*p)) {
                kill9(p);
            }
        } else {
            kill9(pid);
        }
    }
    wait_count(&tq, 3, 10).await;
    assert!(seen.len() > 40, "{}", seen.len());
}

#[tokio::test]
async fn a_full_queue_and_a_queue_timeout_answer_503_with_retry_after() {
    let p = cgi_project(
        "    manager: static\n    max_workers: 1\n    max_queue: 1\n    queue_timeout: 1",
        "",
    );
    let tq = Tq::start(p.path(), &[]);
    wait_count(&tq, 1, 10).await;
    let c = client();
    let t = tag("queue");
    let slow = {
        let c = c.clone();
        let url = tq.url(&format!("/app/busy.php?ms=2500&tag={t}"));
        tokio::spawn(async move { get(&c, &url).await.0 })
    };
    busy_pid(&t).await;
    let queued = {
        let c = c.clone();
        let url = tq.url("/app/pid.php");
        tokio::spawn(async move {
            let r = c.get(&url).send().await.unwrap();
            (r.status(), r.headers().contains_key("retry-after"))
        })
    };
    // The pool's own account: one request waits in its queue.
    let until = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = common::admin_text(&tq, "/status/app?json").await;
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        if v["listen queue"] == 1 {
            break;
        }
        assert!(std::time::Instant::now() < until, "nothing queued: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The queue holds one: the next is refused at once.
    let r = c.get(tq.url("/app/pid.php")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
    // The queued one gives up after queue_timeout (1 s), before the slow
    // request ends.
    assert_eq!(
        queued.await.unwrap(),
        (StatusCode::SERVICE_UNAVAILABLE, true)
    );
    assert_eq!(slow.await.unwrap(), 200);
    assert_eq!(get(&c, &tq.url("/app/pid.php")).await.0, 200);
}

#[tokio::test]
async fn a_php_cgi_that_dies_at_start_fails_the_pool_without_spinning_then_recovers() {
    let p = Project::new("", "");
    // Says it is php-cgi, then exits whenever it is run for real, until a
    // file named `fixed` appears: then it is the real php-cgi.
    let fake = p.path().join("fake-php-cgi");
    let fixed = p.path().join("fixed");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nif [ -f {} ]; then exec php-cgi \"$@\"; fi\nfor a in \"$@\"; do if [ \"$a\" = -v ]; then echo 'PHP 8.2.0 (cgi-fcgi) (built: fake)'; exit 0; fi; done\necho 'fake php-cgi: cannot start' >&2\nexit 3\n",
            fixed.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.worker(
        "app",
        &format!(
            "path: /app\ntype: php\ndocument_root: {}\nphp:\n  backend: cgi\n  binary: {}\n  pool:\n    manager: static\n    max_workers: 2\n",
            php_dir().display(),
            fake.display()
        ),
    );
    let tq = Tq::start(p.path(), &[]);
    let until = Instant::now() + Duration::from_secs(15);
    while !tq.log_text().contains("pool failed") {
        assert!(Instant::now() < until, "{}", tq.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = client().get(tq.url("/app/pid.php")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    // It stopped trying: no new attempts a second later.
    let starts = |log: &str| log.matches("exited while starting").count();
    let n = starts(&tq.log_text());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = tq.log_text();
    assert_eq!(starts(&log), n, "{log}");
    assert!(n >= 5, "{log}");
    assert!(log.contains("fake php-cgi: cannot start"), "{log}");
    // The cause goes away: the pool tries again by itself (every 5 s) and
    // serves.
    std::fs::write(&fixed, "").unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, _) = get(&client(), &tq.url("/app/pid.php")).await;
        if s == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < until, "{}", tq.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(tq.log_text().contains("pool recovered"));
    wait_count(&tq, 2, 10).await;
}

#[tokio::test]
async fn sigterm_finishes_the_request_in_progress_and_leaves_no_php_cgi() {
    let p = cgi_project("    manager: static\n    max_workers: 2", "");
    let mut tq = Tq::start(p.path(), &[]);
    let procs = wait_count(&tq, 2, 10).await;
    let c = client();
    let t = tag("sigterm");
    let slow = {
        let c = c.clone();
        let url = tq.url(&format!("/app/busy.php?ms=1500&tag={t}"));
        tokio::spawn(async move { get(&c, &url).await })
    };
    busy_pid(&t).await;
    let status = tq.stop().unwrap();
    assert!(status.success(), "{status:?}\n{}", tq.log_text());
    let (s, body) = slow.await.unwrap();
    assert_eq!((s, body.as_str()), (StatusCode::OK, "done"));
    for p in procs {
        assert!(!alive(p), "php-cgi {p} outlived tqserver");
    }
}

#[tokio::test]
async fn a_client_that_goes_away_does_not_cost_a_process() {
    let p = cgi_project("    manager: static\n    max_workers: 1", "");
    let tq = Tq::start(p.path(), &[]);
    let before = wait_count(&tq, 1, 10).await;
    let t = tag("gone");
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let url = tq.url(&format!("/app/busy.php?ms=900&tag={t}"));
    assert!(impatient.get(&url).send().await.is_err(), "gave up");
    assert_eq!(busy_pid(&t).await, before[0]);
    // The next request waits for the abandoned script, then gets the same
    // process: it was neither killed nor replaced.
    let (s, body) = get(&client(), &tq.url("/app/pid.php")).await;
    assert_eq!(s, 200, "{body}\n{}", tq.log_text());
    assert_eq!(body.trim().parse::<u32>().unwrap(), before[0]);
    assert_eq!(php_cgi(&tq), before);
}

#[tokio::test]
async fn sigkill_of_tqserver_takes_its_php_cgi_processes_down() {
    let p = cgi_project("    manager: static\n    max_workers: 3", "");
    let tq = Tq::start(p.path(), &[]);
    let procs = wait_count(&tq, 3, 10).await;
    kill9(tq.pid());
    let until = Instant::now() + Duration::from_secs(5);
    while procs.iter().any(|p| alive(*p)) {
        assert!(Instant::now() < until, "php-cgi outlived a killed tqserver");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// php-cgi exits by itself after 500 requests unless told otherwise;
/// TQServer tells it otherwise and recycles on its own terms.
#[tokio::test]
async fn one_process_serves_past_php_cgis_own_500_request_limit() {
    let p = cgi_project("    manager: static\n    max_workers: 1", "");
    let tq = Tq::start(p.path(), &[]);
    let before = wait_count(&tq, 1, 10).await;
    let c = client();
    for i in 0..600 {
        let (s, body) = get(&c, &tq.url("/app/pid.php")).await;
        assert_eq!(s, 200, "request {i}");
        assert_eq!(
            body.trim().parse::<u32>().unwrap(),
            before[0],
            "request {i}"
        );
    }
    assert_eq!(php_cgi(&tq), before);
}

/// `shared_memory`: one php-cgi master forks the pool's processes, so an
/// APCu counter incremented on every process counts every request once
/// (with a process each it would count per process and repeat), through
/// recycling (`max_requests`: the master forks the replacement from its
/// warm memory) and a `request_timeout` kill; each child is killed by its
/// own pid, and nothing is left once tqserver stops.
#[tokio::test]
async fn a_shared_memory_pool_shares_apcu_across_its_processes_and_their_recycling() {
    let p = cgi_project(
        "    manager: static\n    max_workers: 3\n    max_requests: 5\n    request_timeout: 2\n    shared_memory: true",
        "",
    );
    let mut tq = Tq::start(p.path(), &[]);
    // One php-cgi is tqserver's child: the master; its children serve.
    let master = wait_count(&tq, 1, 10).await[0];
    let until = Instant::now() + Duration::from_secs(10);
    while children_of(master).len() != 3 {
        assert!(Instant::now() < until, "{:?}", children_of(master));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let c = client();
    let mut seen = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let c = c.clone();
        let url = tq.url("/app/apcu.php");
        tasks.spawn(async move {
            let mut out = Vec::new();
            for _ in 0..10 {
                out.push(get(&c, &url).await);
            }
            out
        });
    }
    while let Some(r) = tasks.join_next().await {
        for (s, body) in r.unwrap() {
            assert_eq!(s, 200, "{body}");
            let (pid, n) = body.split_once(' ').unwrap();
            assert_ne!(
                n, "no-apcu",
                "php-apcu is not installed (scripts/test installs it)"
            );
            seen.push((pid.parse::<u32>().unwrap(), n.parse::<u64>().unwrap()));
        }
    }
    let mut counts: Vec<u64> = seen.iter().map(|(_, n)| *n).collect();
    counts.sort_unstable();
    assert_eq!(
        counts,
        (1..=60).collect::<Vec<_>>(),
        "one counter for the whole pool"
    );
    let pids: std::collections::BTreeSet<u32> = seen.iter().map(|(p, _)| *p).collect();
    // 60 requests at 5 per process: recycled, and the counter went on.
    assert!(pids.len() >= 60 / 5, "{} processes: {pids:?}", pids.len());
    // A request past request_timeout: 504; its process is killed and
    // replaced; the counter is intact.
    let (s, _) = get(&c, &tq.url("/app/sleep.php?ms=5000")).await;
    assert_eq!(s, 504);
    let (s, body) = get(&c, &tq.url("/app/apcu.php")).await;
    assert_eq!(s, 200);
    assert_eq!(body.split_once(' ').unwrap().1, "61", "{body}");
    assert!(tq.log_text().contains("request_timeout"));
    let all: Vec<u32> = children_of(master).into_iter().map(|(p, _)| p).collect();
    // New settings twice, under load: a new master each time, the old
    // one stops, and no request fails (a replaced master once removed the
    // socket of its successor, which had the same name).
    let load = {
        let c = c.clone();
        let url = tq.url("/app/apcu.php");
        tokio::spawn(async move {
            let mut codes = Vec::new();
            let until = Instant::now() + Duration::from_secs(4);
            while Instant::now() < until {
                codes.push(get(&c, &url).await.0);
            }
            codes
        })
    };
    for (i, limit) in ["100M", "101M"].iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(700)).await;
        p.worker(
            "app",
            &format!(
                "path: /app\ntype: php\ndocument_root: {}\nphp:\n  backend: cgi\n  settings:\n    memory_limit: {limit}\n  pool:\n    manager: static\n    max_workers: 3\n    max_requests: 5\n    request_timeout: 2\n    shared_memory: true\n",
                php_dir().display()
            ),
        );
        let until = Instant::now() + Duration::from_secs(10);
        while tq.log_text().matches("worker.yaml applied").count() < i + 1 {
            assert!(Instant::now() < until, "{}", tq.log_text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let codes = load.await.unwrap();
    let failed: Vec<_> = codes.iter().filter(|c| **c != 200).collect();
    assert!(failed.is_empty(), "{failed:?}\n{}", tq.log_text());
    let until = Instant::now() + Duration::from_secs(10);
    let now = loop {
        let masters = php_cgi(&tq);
        if masters.len() == 1 && masters[0] != master {
            break masters[0];
        }
        assert!(Instant::now() < until, "masters: {masters:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!alive(master), "the first master stopped");
    let (s, _) = get(&c, &tq.url("/app/apcu.php")).await;
    assert_eq!(s, 200);
    tq.stop();
    assert!(!alive(now), "the master is gone");
    assert!(
        all.iter().all(|p| !alive(*p)),
        "its children are gone: {all:?}"
    );
}
