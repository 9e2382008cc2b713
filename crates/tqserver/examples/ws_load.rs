//! A WebSocket load generator for `bench/websocket.sh`: `ws_load URL
//! CONNECTIONS SECONDS` opens the connections, then each sends a 32-byte
//! text message and waits for its echo, again and again, for the time
//! given; prints messages echoed per second and the p99 round trip in
//! milliseconds.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args.next().expect("URL");
    let conns: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(32);
    let secs: f64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(5.0);
    let mut all = Vec::new();
    for _ in 0..conns {
        let (ws, _) = tokio_tungstenite::connect_async(&url)
            .await
            .expect("connect");
        all.push(ws);
    }
    let began = Instant::now();
    let until = began + Duration::from_secs_f64(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for mut ws in all {
        tasks.spawn(async move {
            let payload = "x".repeat(32);
            let mut times = Vec::new();
            while Instant::now() < until {
                let t = Instant::now();
                ws.send(Message::text(payload.clone())).await.expect("send");
                match ws.next().await {
                    Some(Ok(Message::Text(_))) => times.push(t.elapsed()),
                    other => panic!("no echo: {other:?}"),
                }
            }
            let _ = ws.close(None).await;
            times
        });
    }
    let mut times = Vec::new();
    while let Some(t) = tasks.join_next().await {
        times.extend(t.expect("a client"));
    }
    let took = began.elapsed().as_secs_f64();
    times.sort();
    let p99 = times
        .get(times.len() * 99 / 100)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    println!("{:.0} {p99:.2}", times.len() as f64 / took);
}
