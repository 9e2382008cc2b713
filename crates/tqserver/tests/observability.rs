//! Observability against the real binary, real php-fpm and real php-cgi:
//! metrics counters move by exactly the requests made (parsed with a real
//! Prometheus parser), the status page of TQServer's php-cgi pool has the
//! field names of a live php-fpm's in every format, access / slow logs,
//! request ids, SIGUSR1 reopen, health and readiness (503 while draining).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::{Project, Tq, client, php_dir, wait_log};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Both backends over the same scripts: `fpm` (php-fpm) and `cgi`.
fn project(server_extra: &str) -> Project {
    let p = Project::new(server_extra, "");
    p.php_worker("fpm", "/fpm", "");
    p.php_worker("cgi", "/cgi", "  backend: cgi");
    p
}

/// Every sample of a scrape, by name and sorted labels.
struct Scrape(HashMap<String, f64>);

impl Scrape {
    async fn take(tq: &Tq) -> Self {
        let text = common::admin_text(tq, "/metrics").await;
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let parsed = prometheus_parse::Scrape::parse(lines).expect("a valid exposition");
        let mut all = HashMap::new();
        for s in parsed.samples {
            let mut labels: Vec<String> =
                s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let v = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                prometheus_parse::Value::Histogram(h) => {
                    // One value per bucket, under the bucket's bound.
                    for b in h {
                        let mut l = labels.clone();
                        l.push(format!("le={}", b.less_than));
                        l.sort();
                        all.insert(format!("{}_bucket{{{}}}", s.metric, l.join(",")), b.count);
                    }
                    continue;
                }
                prometheus_parse::Value::Summary(_) => continue,
            };
            all.insert(format!("{}{{{}}}", s.metric, labels.join(",")), v);
        }
        Self(all)
    }

    /// The series `key`; a series that is missing is a failure (a gauge
    /// read as 0 because it is not there proves nothing).
    fn get(&self, key: &str) -> f64 {
        match self.0.get(key) {
            Some(v) => *v,
            None => panic!("no series {key} in the scrape; it has: {:?}", {
                let mut k: Vec<&String> = self.0.keys().collect();
                k.sort();
                k
            }),
        }
    }

    /// A counter before anything was counted: absent means 0 (counters
    /// of a label set appear with their first event).
    fn before(&self, key: &str) -> f64 {
        self.0.get(key).copied().unwrap_or(0.0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_by_exactly_the_requests_made() {
    let p = project("");
    let tq = Tq::start(p.path(), &[]);
    let c = client();
    // Warm both pools, so the scrapes below see settled processes.
    for w in ["fpm", "cgi"] {
        let r = c
            .get(tq.url(&format!("/{w}/echo.php")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let before = Scrape::take(&tq).await;
    let mut out_bytes = 0;
    for _ in 0..7 {
        let r = c.get(tq.url("/fpm/echo.php")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        out_bytes += r.bytes().await.unwrap().len();
    }
    for _ in 0..5 {
        let r = c
            .post(tq.url("/cgi/echo.php"))
            .body("0123456789")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let r = c.get(tq.url("/cgi/missing.php")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    r.bytes().await.unwrap();
    let r = c.get(tq.url("/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let after = Scrape::take(&tq).await;
    let delta = |k: &str| after.get(k) - before.before(k);

    assert_eq!(
        delta("tqserver_http_requests_total{method=GET,status=2xx,worker=fpm}"),
        7.0
    );
    assert_eq!(
        delta("tqserver_http_requests_total{method=POST,status=2xx,worker=cgi}"),
        5.0
    );
    assert_eq!(
        delta("tqserver_http_requests_total{method=GET,status=4xx,worker=cgi}"),
        1.0
    );
    assert_eq!(delta("tqserver_http_unrouted_requests_total{}"), 1.0);
    assert_eq!(
        delta("tqserver_http_request_duration_seconds_bucket{le=inf,worker=fpm}"),
        7.0
    );
    assert_eq!(
        delta("tqserver_http_request_body_bytes_total{worker=cgi}"),
        50.0
    );
    assert_eq!(
        delta("tqserver_http_response_body_bytes_total{worker=fpm}"),
        out_bytes as f64
    );
    assert_eq!(
        after.get("tqserver_http_requests_in_flight{worker=fpm}"),
        0.0
    );
    // The pools' own accounts: php-cgi took 5 POSTs (the 404 never
    // reached PHP); php-fpm took 7 GETs plus the status request of the
    // second scrape itself.
    assert_eq!(
        delta("tqserver_php_accepted_requests_total{backend=cgi,worker=cgi}"),
        5.0
    );
    assert_eq!(
        delta("tqserver_php_accepted_requests_total{backend=fpm,worker=fpm}"),
        8.0
    );
    assert_eq!(
        after.get("tqserver_php_pool_processes{backend=cgi,worker=cgi}"),
        2.0
    );
    assert_eq!(after.get("tqserver_php_up{backend=fpm,worker=fpm}"), 1.0);
    // php-fpm's two static children, counted from its log.
    assert!(after.get("tqserver_php_processes_spawned_total{backend=fpm,worker=fpm}") >= 2.0);
    assert!(after.get("process_resident_memory_bytes{}") > 1e6);
    assert!(after.get("process_open_fds{}") > 3.0);
    assert_eq!(
        after.get("tqserver_worker_info{backend=cgi,route=/cgi,type=php,worker=cgi}"),
        1.0
    );

    // OpenMetrics on request, and nothing of this on the public port.
    let r = c
        .get(format!("{}/metrics", tq.admin))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(r.text().await.unwrap().ends_with("# EOF\n"));
    let r = c.get(tq.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_off_still_gives_request_ids() {
    let p = project("");
    let tq = Tq::start(p.path(), &["--admin-listen", ""]);
    assert!(!tq.log_text().contains("admin listener on"));
    let r = client().get(tq.url("/cgi/echo.php")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["HTTP_X_REQUEST_ID"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_metrics_path_when_enabled() {
    let p = Project::new("", "");
    // metrics: is a section of its own, after the others.
    let yaml = std::fs::read_to_string(p.path().join("config/server.yaml")).unwrap()
        + "metrics:\n  enabled: true\n  path: /_metrics\n";
    std::fs::write(p.path().join("config/server.yaml"), yaml).unwrap();
    p.php_worker("fpm", "/fpm", "");
    let tq = Tq::start(p.path(), &[]);
    let r = client().get(tq.url("/_metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("tqserver_worker_info{"));
}

/// The field names a status page shows, whatever its format.
fn names(format: &str, body: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    match format {
        "" | "full" => {
            for l in body.lines() {
                if let Some((k, _)) = l.split_once(':') {
                    if !l.starts_with('*') {
                        out.insert(k.to_string());
                    }
                }
            }
        }
        "json" | "json&full" => {
            let v: serde_json::Value = serde_json::from_str(body).expect("json");
            for (k, v) in v.as_object().unwrap() {
                out.insert(k.clone());
                if let Some(procs) = v.as_array() {
                    for p in procs {
                        for k in p.as_object().unwrap().keys() {
                            out.insert(format!("process.{k}"));
                        }
                    }
                }
            }
        }
        "html" | "html&full" => {
            for part in body.split("<th>").skip(1) {
                out.insert(part.split("</th>").next().unwrap().to_string());
            }
        }
        "xml" | "xml&full" => {
            for part in body.split('<').skip(1) {
                let tag = part.split('>').next().unwrap();
                if !tag.starts_with('/') && !tag.starts_with('?') {
                    out.insert(tag.to_string());
                }
            }
        }
        "openmetrics" => {
            for l in body.lines().filter(|l| l.starts_with("# TYPE ")) {
                out.insert(l.to_string());
            }
        }
        _ => unreachable!(),
    }
    // TQServer adds its processes' resident memory; php-fpm measures "last
    // request cpu" and "last request memory" inside PHP, which php-cgi does
    // not report (see status.rs): compare the rest.
    for k in ["rss", "last request cpu", "last request memory"] {
        out.remove(k);
        out.remove(&format!("process.{k}"));
        out.remove(&k.replace(' ', "-"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_pages_of_both_backends_have_php_fpms_field_names() {
    let p = project("");
    let tq = Tq::start(p.path(), &[]);
    let c = client();
    for w in ["fpm", "cgi"] {
        // A process with a request behind it, for the per-process fields.
        c.get(tq.url(&format!("/{w}/echo.php")))
            .send()
            .await
            .unwrap();
    }
    let types = [
        ("", "text/plain"),
        ("json", "application/json"),
        ("html", "text/html"),
        ("xml", "text/xml"),
        ("openmetrics", "application/openmetrics-text"),
        ("full", "text/plain"),
        ("json&full", "application/json"),
        ("html&full", "text/html"),
        ("xml&full", "text/xml"),
    ];
    for (q, ct) in types {
        let mut seen = Vec::new();
        for w in ["fpm", "cgi"] {
            let r = c
                .get(format!("{}/status/{w}?{q}", tq.admin))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{w} ?{q}");
            let got = r.headers()["content-type"].to_str().unwrap().to_string();
            assert!(got.starts_with(ct), "{w} ?{q}: {got}");
            let body = r.text().await.unwrap();
            assert!(body.contains(w), "{w} ?{q} names its pool:\n{body}");
            seen.push(names(q, &body));
        }
        assert!(!seen[0].is_empty(), "?{q}");
        assert_eq!(
            seen[0], seen[1],
            "?{q}: php-fpm's field names (left) and TQServer's php-cgi pool's (right) differ"
        );
    }
    let r = c
        .get(format!("{}/status/nope", tq.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("Workers: "));
}

/// The file's text once it has `n` lines (access logs are written within
/// a second).
async fn wait_lines(path: &std::path::Path, n: usize) -> String {
    let until = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= n {
            return text;
        }
        assert!(
            std::time::Instant::now() < until,
            "{} has {} lines, not {n}:\n{text}",
            path.display(),
            text.lines().count()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_and_slow_logs_request_ids_and_reopen() {
    let logs = tempfile::tempdir().unwrap();
    let global = logs.path().join("access.log");
    let p = Project::new(&format!("  access_log: {}\n", global.display()), "");
    let cgi_access = logs.path().join("cgi-access.log");
    let fpm_log = logs.path().join("fpm.log");
    p.worker(
        "cgi",
        &format!(
            "path: /cgi\ntype: php\ndocument_root: {}\nphp:\n  backend: cgi\n  pool:\n    manager: static\n    max_workers: 2\n    slowlog_timeout: 1s\nlogging:\n  access_log: {}\n  access_log_format: json\n",
            php_dir().display(),
            cgi_access.display()
        ),
    );
    p.worker(
        "fpm",
        &format!(
            "path: /fpm\ntype: php\ndocument_root: {}\nphp:\n  pool:\n    manager: static\n    max_workers: 2\nlogging:\n  log_file: {}\n  access_log: true\n  slow_log:\n    threshold: 1s\n",
            php_dir().display(),
            fpm_log.display()
        ),
    );
    let tq = Tq::start(p.path(), &[]);
    let c = client();

    // An id the client sends is kept, passed to PHP and returned.
    let r = c
        .get(tq.url("/cgi/echo.php?x=1"))
        .header("x-request-id", "client-id-42")
        .header("user-agent", "observability-test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "client-id-42");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["HTTP_X_REQUEST_ID"], "client-id-42");
    // Without one, TQServer makes one.
    let r = c.get(tq.url("/fpm/echo.php")).send().await.unwrap();
    let made = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(made.len(), 32);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["HTTP_X_REQUEST_ID"], made.as_str());

    // Slow: 2 s against a 1 s threshold, on both backends.
    for w in ["cgi", "fpm"] {
        let r = c
            .get(tq.url(&format!("/{w}/sleep.php?ms=2000")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    // Lines are written when a response is done, in blocks, within a second.
    // The cgi worker's own access log: JSON, with id, duration, upstream pid.
    let text = wait_lines(&cgi_access, 2).await;
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["request_id"], "client-id-42");
    assert_eq!(lines[0]["uri"], "/cgi/echo.php?x=1");
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[0]["user_agent"], "observability-test");
    assert!(lines[0]["upstream"].as_str().unwrap().starts_with("pid:"));
    assert!(lines[1]["duration_ms"].as_f64().unwrap() >= 2000.0);

    // A request no worker serves is in the server-wide log too.
    let r = c.get(tq.url("/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-request-id"].len(), 32);
    r.bytes().await.unwrap();
    // The server-wide access log: combined, every worker.
    let all = wait_lines(&global, 5).await;
    assert_eq!(all.lines().count(), 5, "{all}");
    assert!(all.contains("\"GET /nowhere HTTP/1.1\" 404 "), "{all}");
    assert!(
        all.contains("\"GET /cgi/echo.php?x=1 HTTP/1.1\" 200 "),
        "{all}"
    );
    assert!(all.contains(&format!("rid={made} ")), "{all}");
    assert!(all.contains("upstream=php-fpm:"), "{all}");

    // Slow lines: TQServer's (with the php-cgi pid), and for php-fpm its
    // own slowlog with the PHP backtrace, in the worker's log.
    wait_log(&tq, "slow request: GET /cgi/sleep.php?ms=2000 took", 5).await;
    assert!(
        tq.log_text().contains("/sleep.php, pid:"),
        "{}",
        tq.log_text()
    );
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let f = std::fs::read_to_string(&fpm_log).unwrap_or_default();
        if f.contains("slow request: GET /fpm/sleep.php?ms=2000") && f.contains("usleep()") {
            // The fpm worker's access lines went to its log.
            assert!(f.contains("\"GET /fpm/echo.php HTTP/1.1\" 200"), "{f}");
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "no slow-request line and PHP backtrace in {}:\n{f}",
            fpm_log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // logrotate: move the file, SIGUSR1, and the next line starts a new one.
    let rotated = logs.path().join("access.log.1");
    std::fs::rename(&global, &rotated).unwrap();
    kill(Pid::from_raw(tq.pid() as i32), Signal::SIGUSR1).unwrap();
    wait_log(&tq, "SIGUSR1: log files reopened", 5).await;
    let r = c
        .get(tq.url("/cgi/echo.php?after=rotate"))
        .send()
        .await
        .unwrap();
    r.bytes().await.unwrap();
    let fresh = wait_lines(&global, 1).await;
    assert_eq!(fresh.lines().count(), 1, "{fresh}");
    assert!(fresh.contains("after=rotate"));
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap().lines().count(),
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_draining() {
    let p = project("");
    p.worker(
        "broken",
        "path: /broken\ntype: command\ncommand:\n  run: [\"false\"]\n",
    );
    let tq = Tq::start(p.path(), &[]);
    let c = client();
    let r = c.get(format!("{}/healthz", tq.admin)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // A worker that cannot start keeps the server not ready, and says so.
    let r = c.get(format!("{}/readyz", tq.admin)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["ready"], false);
    assert!(v["reason"].as_str().unwrap().contains("broken"), "{v}");
    assert_eq!(v["workers"]["fpm"], "ready");
    assert_eq!(v["workers"]["cgi"], "ready");
    drop(tq);

    // Without it: ready, until a stop signal; then 503 while a request
    // still runs, before the listeners close.
    let p = project("");
    let tq = Tq::start(p.path(), &[]);
    let r = c.get(format!("{}/readyz", tq.admin)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["ready"], true);
    let tag = common::busy_tag("obs-drain");
    let slow = tokio::spawn({
        let c = c.clone();
        let url = tq.url(&format!("/fpm/busy.php?ms=2000&tag={tag}"));
        async move { c.get(url).send().await.unwrap().status() }
    });
    common::busy_pid(&tag).await;
    kill(Pid::from_raw(tq.pid() as i32), Signal::SIGTERM).unwrap();
    wait_log(&tq, "stopping: finishing requests", 5).await;
    let r = c.get(format!("{}/readyz", tq.admin)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["reason"].as_str().unwrap().starts_with("stopping"), "{v}");
    assert_eq!(slow.await.unwrap(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_log_as_json_lines() {
    let logs = tempfile::tempdir().unwrap();
    let file = logs.path().join("tq_{date}.log");
    let p = project(&format!(
        "  log_format: json\n  log_file: {}\n",
        file.display()
    ));
    let tq = Tq::start(p.path(), &[]);
    let r = client().get(tq.url("/cgi/echo.php")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    drop(tq);
    let written = logs.path().join(format!("tq_{}.log", common::today()));
    let text = std::fs::read_to_string(&written).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.iter().any(|l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("TQServer listening"))
    }));
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string())
    );
    // Worker lines carry the worker's name as a field.
    assert!(lines.iter().any(|l| l["worker"] == "cgi"), "{text}");
}

/// Metric names in `text` (`tqserver_…`, `process_…`), without the
/// histogram and counter sample suffixes.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text
        .match_indices("tqserver_")
        .chain(text.match_indices("process_"))
    {
        let before = text[..i].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue; // inside another word (`max_process_…`)
        }
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        out.insert(base.to_string());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_metrics_are_exposed_and_the_grafana_dashboard_uses_only_them() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc = std::fs::read_to_string(root.join("docs/metrics.md")).unwrap();
    // The tables' first column.
    let documented: BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect();
    assert!(documented.len() > 30, "{documented:?}");

    let p = project("");
    p.worker(
        "py",
        "path: /py\ntype: command\ncommand:\n  run: [\"python3\", \"app.py\"]\nscaling:\n  request_timeout: 1\n",
    );
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/native/app.py"),
        p.path().join("workers/py/app.py"),
    )
    .unwrap();
    let tq = Tq::start(p.path(), &[]);
    let c = client();
    for path in ["/fpm/echo.php", "/cgi/echo.php", "/py/x"] {
        let until = std::time::Instant::now() + Duration::from_secs(30);
        while c.get(tq.url(path)).send().await.unwrap().status() != 200 {
            assert!(std::time::Instant::now() < until, "{path} never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // An upstream error, so that family has a series: 504 after 1 s.
    let r = c.get(tq.url("/py/x?sleep=3")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    let scrape = common::admin_text(&tq, "/metrics").await;
    assert!(
        scrape.contains("tqserver_upstream_errors_total{worker=\"py\",kind=\"timeout\"} 1"),
        "{scrape}"
    );
    // Every family declares its type, samples or not; a counter's family
    // is named without `_total`.
    let exposed: BTreeSet<String> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            if kind == "counter" && !name.ends_with("_total") {
                format!("{name}_total")
            } else {
                name.to_string()
            }
        })
        .collect();
    assert_eq!(
        documented, exposed,
        "docs/metrics.md (left) and the scrape (right) list different metrics"
    );

    let grafana = std::fs::read_to_string(root.join("docs/grafana-dashboard.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&grafana).expect("valid JSON");
    let used = metric_names(&grafana);
    let unknown: Vec<&String> = used.difference(&documented).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard uses undocumented names: {unknown:?}"
    );
    let unused: Vec<&String> = documented.difference(&used).collect();
    assert!(unused.is_empty(), "the dashboard leaves out: {unused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_early_is_logged_as_499_and_leaves_nothing_in_flight() {
    use tokio::io::AsyncWriteExt;
    let logs = tempfile::tempdir().unwrap();
    let access = logs.path().join("access.log");
    let p = Project::new(
        &format!(
            "  access_log: {}\n  access_log_format: json\n",
            access.display()
        ),
        "",
    );
    p.php_worker("cgi", "/cgi", "  backend: cgi");
    let tq = Tq::start(p.path(), &[]);
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", tq.port))
        .await
        .unwrap();
    s.write_all(b"GET /cgi/sleep.php?ms=1500 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(s);
    let line = wait_lines(&access, 1).await;
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(v["status"], 499, "{line}");
    assert_eq!(v["uri"], "/cgi/sleep.php?ms=1500");
    let m = Scrape::take(&tq).await;
    assert_eq!(m.get("tqserver_http_requests_in_flight{worker=cgi}"), 0.0);
    assert_eq!(
        m.get("tqserver_http_requests_total{method=GET,status=4xx,worker=cgi}"),
        1.0
    );
}
