//! A WebSocket echo server for `bench/websocket.sh`: every text or binary
//! message comes back as it came, on 127.0.0.1:$WORKER_PORT (or the port
//! given as the first argument); `GET /health` answers 200. Run as a
//! `type: command` worker, or directly.

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let port = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("WORKER_PORT").ok())
        .and_then(|p| p.parse::<u16>().ok())
        .expect("a port: WORKER_PORT or the first argument");
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (mut stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let mut peek = [0u8; 64];
            let n = stream.peek(&mut peek).await.unwrap_or(0);
            if peek[..n].starts_with(b"GET /health ") {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                return;
            }
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            while let Some(Ok(m)) = ws.next().await {
                if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                    return;
                }
            }
        });
    }
}
