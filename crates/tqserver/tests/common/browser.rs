//! Headless Chromium (Debian's `chromium`) driven over the DevTools
//! protocol: open a page, evaluate JavaScript in it, take a screenshot.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::{Tq, free_port};

pub fn chromium() -> PathBuf {
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
pub struct Browser {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub fn start() -> Self {
        let profile = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--window-size=1280,1024",
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
    pub async fn open(&self, url: &str) -> String {
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

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Evaluates `expr` in the page; its value as a string ("" while the page
/// is loading or the expression throws).
pub async fn eval(ws: &mut Ws, id: &mut u64, expr: &str) -> String {
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
pub async fn wait_eval(
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

/// Calls DevTools `method`; its `result`.
pub async fn call(
    ws: &mut Ws,
    id: &mut u64,
    method: &str,
    params: serde_json::Value,
) -> serde_json::Value {
    *id += 1;
    let msg = serde_json::json!({"id": *id, "method": method, "params": params});
    ws.send(Message::text(msg.to_string())).await.unwrap();
    while let Some(m) = ws.next().await {
        let Ok(Message::Text(t)) = m else { continue };
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        if v["id"] == *id {
            return v["result"].clone();
        }
    }
    panic!("DevTools connection closed");
}

/// Connects to a tab's DevTools WebSocket.
pub async fn connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url).await.unwrap().0
}
