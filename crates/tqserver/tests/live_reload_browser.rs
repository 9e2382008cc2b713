//! Live reload in a real browser: headless Chromium (Debian's `chromium`)
//! opens a page of a Rust worker in dev mode; the test saves new code and
//! watches, through the DevTools protocol, the page reload by itself and
//! show it — and show the build-error page after a bad save, then recover;
//! and the same for an invalid worker.yaml.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::browser::{Browser, wait_eval};
use common::{Project, Tq, free_port};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/native")
}

/// Waits (60 s at most) until the page's title starts with `title`; its
/// title and text.
async fn page_titled(ws: &mut common::browser::Ws, id: &mut u64, title: &str, tq: &Tq) -> String {
    let text = "document.title + '|' + document.body.innerText";
    wait_eval(ws, id, text, 60, |v| v.starts_with(title), tq).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_reloads_itself_after_a_swap_and_shows_build_errors() {
    let base = free_port();
    let p = Project::new(
        "",
        &format!(
            "  port_range_start: {base}\n  port_range_end: {}\n",
            base + 20
        ),
    );
    p.worker("index", "path: /\ntype: rust\n");
    let d = p.path().join("workers/index");
    std::fs::create_dir_all(d.join("src")).unwrap();
    std::fs::copy(fixtures().join("rustw/Cargo.toml"), d.join("Cargo.toml")).unwrap();
    let main = d.join("src/main.rs");
    let source = std::fs::read_to_string(fixtures().join("rustw/src/main.rs")).unwrap();
    std::fs::write(&main, &source).unwrap();
    let tq = Tq::start(p.path(), &["--mode", "dev"]);
    let c = common::client();
    let until = Instant::now() + Duration::from_secs(120);
    while c.get(tq.url("/page")).send().await.map(|r| r.status()).ok()
        != Some(reqwest::StatusCode::OK)
    {
        assert!(Instant::now() < until, "{}", tq.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let browser = Browser::start();
    let ws_url = browser.open(&tq.url("/page")).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
        .await
        .unwrap();
    let mut id = 0;
    // What the page shows, and whether its live-reload script is connected.
    let state = "(document.querySelector('p') ? document.querySelector('p').textContent : '') + '|' + \
                 String(!!(window.__tqserverLiveReload && window.__tqserverLiveReload.connected))";
    wait_eval(&mut ws, &mut id, state, 30, |v| v == "v1|true", &tq).await;

    // Save new code: the page reloads itself and shows it.
    std::fs::write(&main, source.replace("\"v1\"", "\"v2\"")).unwrap();
    wait_eval(&mut ws, &mut id, state, 60, |v| v == "v2|true", &tq).await;

    // A syntax error: the page becomes the build-error page…
    std::fs::write(
        &main,
        source.replace("const VERSION", "const VERSION: &str = ;\nconst OLD"),
    )
    .unwrap();
    let page = page_titled(&mut ws, &mut id, "500 index did not build", &tq).await;
    assert!(
        page.contains("expected expression"),
        "compiler output shown: {page}"
    );
    // …and the fix brings the page back without anyone touching it.
    std::fs::write(&main, source.replace("\"v1\"", "\"v3\"")).unwrap();
    wait_eval(&mut ws, &mut id, state, 60, |v| v == "v3|true", &tq).await;

    // An invalid worker.yaml: the page shows the error with file, line
    // and key (the previous configuration keeps running behind it)…
    p.worker("index", "path: /\ntype: rust\nscaling:\n  min_workers: 0\n");
    let page = page_titled(&mut ws, &mut id, "500 The configuration has an error", &tq).await;
    assert!(
        page.contains("worker.yaml:4: scaling.min_workers"),
        "the error is shown: {page}"
    );
    // …until it is fixed: the page comes back by itself.
    p.worker("index", "path: /\ntype: rust\n");
    wait_eval(&mut ws, &mut id, state, 30, |v| v == "v3|true", &tq).await;
}
