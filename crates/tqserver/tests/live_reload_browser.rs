//! Live reload in a real browser: headless Chromium (Debian's `chromium`)
//! opens a page of a Rust worker in dev mode; the test saves new code and
//! watches, through the DevTools protocol, the page reload by itself and
//! show it — and show the build-error page after a bad save, then recover.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Project, Tq, free_port};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn chromium() -> PathBuf {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .expect(
        "Chromium is not installed (Debian: apt-get install chromium); scripts/test installs it",
    )
}

/// A headless Chromium, killed on drop.
struct Browser {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Self {
        let profile = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                &format!("--remote-debugging-port={port}"),
                "--remote-debugging-address=127.0.0.1",
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self {
            child,
            port,
            _profile: profile,
        }
    }

    /// Opens `url` in a new tab; returns the tab's DevTools WebSocket URL.
    async fn open(&self, url: &str) -> String {
        let c = reqwest::Client::new();
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let r = c
                .put(format!("http://127.0.0.1:{}/json/new?{url}", self.port))
                .send()
                .await;
            if let Ok(r) = r {
                if r.status().is_success() {
                    let v: serde_json::Value = r.json().await.unwrap();
                    return v["webSocketDebuggerUrl"].as_str().unwrap().to_string();
                }
            }
            assert!(Instant::now() < until, "Chromium's DevTools never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Evaluates `expr` in the page; its value as a string ("" while the page
/// is loading or the expression throws).
async fn eval(ws: &mut Ws, id: &mut u64, expr: &str) -> String {
    *id += 1;
    let msg = serde_json::json!({
        "id": *id,
        "method": "Runtime.evaluate",
        "params": {"expression": expr, "returnByValue": true},
    });
    ws.send(Message::text(msg.to_string())).await.unwrap();
    while let Some(m) = ws.next().await {
        let Ok(Message::Text(t)) = m else { continue };
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        if v["id"] == *id {
            return v["result"]["result"]["value"]
                .as_str()
                .unwrap_or_default()
                .to_string();
        }
    }
    panic!("DevTools connection closed");
}

/// Polls `expr` until its value satisfies `ok`.
async fn wait_eval(
    ws: &mut Ws,
    id: &mut u64,
    expr: &str,
    secs: u64,
    ok: impl Fn(&str) -> bool,
    tq: &Tq,
) -> String {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = eval(ws, id, expr).await;
        if ok(&v) {
            return v;
        }
        assert!(
            Instant::now() < until,
            "the page never showed what was expected; last: {v:?}\n--- log ---\n{}",
            tq.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/native")
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
    let page = wait_eval(
        &mut ws,
        &mut id,
        "document.title + '|' + document.body.innerText",
        60,
        |v| v.starts_with("500 index did not build"),
        &tq,
    )
    .await;
    assert!(
        page.contains("expected expression"),
        "compiler output shown: {page}"
    );
    // …and the fix brings the page back without anyone touching it.
    std::fs::write(&main, source.replace("\"v1\"", "\"v3\"")).unwrap();
    wait_eval(&mut ws, &mut id, state, 60, |v| v == "v3|true", &tq).await;
}
