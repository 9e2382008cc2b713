//! The dashboard in a real browser: headless Chromium loads the admin
//! listener's page while clients keep two PHP workers (php-fpm and
//! php-cgi) busy; the test waits until the charts have drawn data points
//! (read through the page's `window.tqDashboard` hook and the canvases'
//! `data-points`), checks the worker table and the HTTPS certificates
//! panel, and saves a screenshot under
//! `target/tmp/dashboard.png`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine as _;
use common::browser::{Browser, call, connect, eval, wait_eval};
use common::{Project, Tq, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_draws_live_charts_from_traffic() {
    // HTTPS from the local CA: the certificates panel lists it.
    let p = Project::new(
        &format!(
            "  tls:\n    port: {}\n    internal: true\n",
            common::free_port()
        ),
        "",
    );
    p.php_worker("fpm", "/fpm", "");
    p.php_worker("cgi", "/cgi", "  backend: cgi");
    let tq = Tq::start(p.path(), &[]);

    // Self-contained: nothing is loaded from elsewhere.
    let page = client().get(format!("{}/", tq.admin)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("<canvas id=\"rps\""));
    for outside in ["src=\"http", "href=\"http", "src=\"//", "@import"] {
        assert!(!html.contains(outside), "the page loads {outside}…");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for w in ["fpm", "cgi"] {
        let (stop, url, c) = (stop.clone(), tq.url(&format!("/{w}/echo.php")), client());
        load.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let r = c.get(&url).send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
                n += 1;
            }
            n
        }));
    }

    let browser = Browser::start();
    let ws_url = browser.open(&format!("{}/", tq.admin)).await;
    let mut ws = connect(&ws_url).await;
    let mut id = 0;
    // Several polls: rates need a previous sample, and the screenshot
    // should show lines rather than dots.
    let drawn = wait_eval(
        &mut ws,
        &mut id,
        "(() => { const d = window.tqDashboard; if (!d || d.polls < 6) return ''; \
           const rps = Object.values(d.series.rps).map(s => s[s.length - 1]); \
           return JSON.stringify({drawn: d.drawn, rps, p50: d.series.latency.p50.slice(-1)[0], \
             canvas: document.getElementById('rps').dataset.points, \
             rows: [...document.querySelectorAll('#workers tr')].map(r => r.textContent)}); })()",
        30,
        |v| {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(v) else {
                return false;
            };
            v["drawn"]["rps"].as_u64().unwrap_or(0) >= 4
                && v["rps"].as_array().is_some_and(|a| {
                    a.len() == 2 && a.iter().all(|x| x.as_f64().unwrap_or(0.0) > 0.0)
                })
                && v["p50"].as_f64().is_some_and(|p| p > 0.0)
        },
        &tq,
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&drawn).unwrap();
    for chart in ["rps", "latency", "errors", "pools"] {
        assert!(
            v["drawn"][chart].as_u64().unwrap() > 0,
            "{chart} drew nothing: {v}"
        );
    }
    assert!(v["canvas"].as_str().unwrap().parse::<u64>().unwrap() > 0);
    let rows: Vec<&str> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows[0].contains("fpm") || rows[1].contains("fpm"),
        "{rows:?}"
    );
    assert!(rows.iter().all(|r| r.contains("ready")), "{rows:?}");
    // Processes of both pools are listed with their pids.
    assert!(rows.iter().all(|r| r.contains("pid ")), "{rows:?}");
    let legend = eval(
        &mut ws,
        &mut id,
        "document.getElementById('rps-legend').textContent",
    )
    .await;
    assert!(legend.contains("fpm") && legend.contains("cgi"), "{legend}");
    let certs = eval(
        &mut ws,
        &mut id,
        "document.getElementById('tls').hidden ? 'hidden' : document.getElementById('tls').textContent",
    )
    .await;
    assert!(
        certs.contains("localhost, 127.0.0.1, ::1")
            && certs.contains("internal")
            && certs.contains("Local CA"),
        "{certs}"
    );

    let shot = call(
        &mut ws,
        &mut id,
        "Page.captureScreenshot",
        serde_json::json!({"format": "png", "captureBeyondViewport": true}),
    )
    .await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().expect("a screenshot"))
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&out, &png).unwrap();
    eprintln!("dashboard screenshot: {}", out.display());

    stop.store(true, Ordering::Relaxed);
    for l in load {
        assert!(l.await.unwrap() > 0);
    }
}
