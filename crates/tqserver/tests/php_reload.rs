//! A PHP worker's worker.yaml edited while TQServer runs: php-cgi's pool
//! rolls its processes over in place, php-fpm reloads itself on SIGUSR2
//! (same master, new children) — no failed request, and afterwards exactly
//! the new processes, counted from the OS table.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Project, Tq, children_named, children_of, client, php_dir};

fn yaml(backend: &str, workers: u32, memory: &str) -> String {
    format!(
        "path: /app\ntype: php\ndocument_root: {}\nphp:\n  backend: {backend}\n  settings:\n    memory_limit: {memory}\n  pool:\n    manager: static\n    max_workers: {workers}\n",
        php_dir().display()
    )
}

async fn memory_limit(c: &reqwest::Client, tq: &Tq) -> String {
    let r = c
        .get(tq.url("/app/ini.php?k=memory_limit"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// The PHP processes that serve requests: php-cgi's, or the children of
/// php-fpm's master (which a SIGUSR2 reload keeps).
fn serving(tq: &Tq, backend: &str) -> Vec<u32> {
    match backend {
        "cgi" => children_named(tq, "php-cgi"),
        _ => children_named(tq, "php-fpm")
            .into_iter()
            .flat_map(|m| children_of(m).into_iter().map(|(p, _)| p))
            .collect(),
    }
}

async fn edit_under_load(backend: &str) {
    let p = Project::new("", "file_watcher:\n  enabled: true\n  debounce_ms: 50\n");
    p.worker("app", &yaml(backend, 2, "64M"));
    let tq = Tq::start(p.path(), &["--mode", "prod"]);
    let c = client();
    assert_eq!(memory_limit(&c, &tq).await, "64M");
    let before = serving(&tq, backend);
    let masters = children_named(&tq, "php-fpm");
    assert_eq!(before.len(), 2, "{before:?}");

    // Two clients loop over a PHP script while the file changes.
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (url, stop) = (tq.url("/app/ini.php?k=memory_limit"), stop.clone());
        clients.push(tokio::spawn(async move {
            let c = client();
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => failed.push(r.status().to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.worker("app", &yaml(backend, 3, "96M"));
    let until = Instant::now() + Duration::from_secs(30);
    while memory_limit(&c, &tq).await != "96M" {
        assert!(Instant::now() < until, "never applied:\n{}", tq.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for cl in clients {
        let (ok, failed) = cl.await.unwrap();
        assert!(failed.is_empty(), "{failed:?}");
        assert!(ok > 5);
    }
    // The old processes are gone; only new ones run, three of them.
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let now = serving(&tq, backend);
        if now.len() == 3 && now.iter().all(|p| !before.contains(p)) {
            break;
        }
        assert!(
            Instant::now() < until,
            "old {before:?}, now {now:?}\n{}",
            tq.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = tq.log_text();
    assert!(log.contains("applied: static, 3 processes"), "{log}");
    if backend == "fpm" {
        // Reloaded in place: the same master.
        assert!(log.contains("php-fpm reloaded with SIGUSR2"), "{log}");
        assert_eq!(children_named(&tq, "php-fpm"), masters);
    } else {
        assert!(log.contains("in place; processes replaced"), "{log}");
    }

    // An invalid edit is refused with file, line and key; the pool stays.
    p.worker("app", &yaml(backend, 0, "128M"));
    common::wait_log(&tq, "php.pool.max_workers: must be at least 1", 10).await;
    assert!(
        tq.log_text()
            .contains("worker.yaml:10: php.pool.max_workers")
    );
    assert_eq!(memory_limit(&c, &tq).await, "96M");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_php_cgi_pool_rolls_over_on_a_worker_yaml_edit_without_a_failed_request() {
    edit_under_load("cgi").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_fpm_reloads_with_sigusr2_on_a_worker_yaml_edit_without_a_failed_request() {
    edit_under_load("fpm").await;
}
