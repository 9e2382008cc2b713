//! WebSocket through TQServer to a native worker (a hand-written echo
//! server on Python's http.server, tests/native/ws.py), with
//! tokio-tungstenite as the client: the upgrade and the worker's own 101
//! headers, 1,000 text and 1,000 binary messages (some of 100 KiB) echoed
//! in order, ping and pong, a close code passed both ways, a worker that
//! refuses the upgrade with plain HTTP, and a worker that dies
//! mid-connection (the client sees the connection end, not a hang).

mod common;

use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use common::{Project, Tq};

fn project() -> Project {
    project_with("", "")
}

/// [`project`] with `server_extra` lines in server.yaml's `server:` and
/// `worker_extra` lines in the worker's worker.yaml.
fn project_with(server_extra: &str, worker_extra: &str) -> Project {
    let p = Project::new(server_extra, "");
    p.worker(
        "ws",
        &format!(
            "path: /live\ntype: command\ncommand:\n  run: [\"python3\", \"ws.py\"]\n{worker_extra}"
        ),
    );
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/native/ws.py"),
        p.path().join("workers/ws/ws.py"),
    )
    .unwrap();
    p
}

/// Sends `text` on `ws` and checks that the same text comes back.
async fn echoed<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, text: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text(text)).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(text));
}

async fn ready(tq: &Tq) {
    let until = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = reqwest::get(tq.url("/live/ws")).await;
        if r.is_ok_and(|r| r.status() == 426) {
            return;
        }
        assert!(std::time::Instant::now() < until, "{}", tq.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn websocket_messages_pings_and_closes_go_both_ways() {
    let p = project();
    let tq = Tq::start(p.path(), &[]);
    ready(&tq).await;
    let url = format!("ws://127.0.0.1:{}/live/ws", tq.port);
    let (mut ws, resp) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert_eq!(resp.status(), 101);
    assert_eq!(
        resp.headers()["x-worker"],
        "ws.py",
        "the worker's own 101 headers"
    );
    for i in 0..1000u32 {
        let text = format!("message {i} ✓");
        let binary: Vec<u8> = if i % 100 == 0 {
            (0..100 * 1024).map(|b| (b % 251) as u8).collect()
        } else {
            i.to_be_bytes().to_vec()
        };
        ws.send(Message::text(text.clone())).await.unwrap();
        ws.send(Message::binary(binary.clone())).await.unwrap();
        match ws.next().await.unwrap().unwrap() {
            Message::Text(t) => assert_eq!(t.as_str(), text),
            m => panic!("expected text, got {m:?}"),
        }
        match ws.next().await.unwrap().unwrap() {
            Message::Binary(b) => assert_eq!(b.as_ref(), binary.as_slice()),
            m => panic!("expected binary, got {m:?}"),
        }
    }
    // Counted while open.
    let m = common::admin_text(&tq, "/metrics").await;
    assert!(
        m.contains("tqserver_native_upgraded_connections{worker=\"ws\"} 1"),
        "{m}"
    );
    // And on the dashboard.
    let d: serde_json::Value =
        serde_json::from_str(&common::admin_text(&tq, "/api/dashboard").await).unwrap();
    let w = &d["workers"][0];
    assert_eq!(w["upgraded"]["open"], 1, "{w}");
    assert!(
        w["upgraded"]["bytes_down"].as_u64().unwrap() > 1_000_000,
        "{w}"
    );
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    match ws.next().await.unwrap().unwrap() {
        Message::Pong(p) => assert_eq!(p.as_ref(), b"are you there"),
        m => panic!("expected pong, got {m:?}"),
    }
    ws.close(Some(CloseFrame {
        code: CloseCode::Away,
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    let mut code = None;
    while let Some(m) = ws.next().await {
        if let Ok(Message::Close(Some(f))) = m {
            code = Some(f.code);
        }
    }
    assert_eq!(code, Some(CloseCode::Away), "the worker's close came back");
    // Closed: no longer open, and its bytes counted both ways (over 100
    // MiB went each way: ten messages of 100 KiB, echoed).
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = common::admin_text(&tq, "/metrics").await;
        let value = |series: &str| -> f64 {
            m.lines()
                .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
                .unwrap_or(-1.0)
        };
        let open = value("tqserver_native_upgraded_connections{worker=\"ws\"}");
        let up = value("tqserver_native_upgraded_bytes_total{worker=\"ws\",direction=\"up\"}");
        let down = value("tqserver_native_upgraded_bytes_total{worker=\"ws\",direction=\"down\"}");
        if open == 0.0 {
            assert!(up > 1_000_000.0 && down > 1_000_000.0, "{m}");
            break;
        }
        assert!(std::time::Instant::now() < until, "{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Plain HTTP from the worker to a plain request: passed on.
    let r = reqwest::get(tq.url("/live/ws")).await.unwrap();
    assert_eq!(r.status(), 426);
    // Many at once, each its own tunnel.
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..16 {
        let url = url.clone();
        tasks.spawn(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
            for i in 0..50 {
                echoed(&mut ws, &format!("{n}/{i}")).await;
            }
            ws.close(None).await.unwrap();
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

#[tokio::test]
async fn a_worker_that_dies_mid_connection_ends_it() {
    let p = project();
    let tq = Tq::start(p.path(), &[]);
    ready(&tq).await;
    let url = format!("ws://127.0.0.1:{}/live/ws?die=3", tq.port);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    for i in 0..2 {
        ws.send(Message::text(format!("{i}"))).await.unwrap();
        assert!(ws.next().await.unwrap().is_ok());
    }
    ws.send(Message::text("the last")).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
    match end {
        Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => {}
        Ok(Some(Ok(m))) => panic!("an answer from a dead worker: {m:?}"),
        Err(_) => panic!("the connection hung after the worker died"),
    }
    // The worker is restarted and takes upgrades again.
    ready(&tq).await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/live/ws", tq.port))
            .await
            .unwrap();
    echoed(&mut ws, "again").await;
}

/// Raw requests that carry the upgrade headers but are not upgrades (a
/// body, a POST, HTTP/1.0): never tunnelled, never a 101; the worker sees
/// no `Upgrade` (hop-by-hop, dropped) and answers as HTTP, and a body's
/// bytes cannot pose as tunnel data (the next request on the connection
/// is answered as a request).
#[tokio::test]
async fn upgrade_headers_on_what_is_not_an_upgrade_are_not_tunnelled() {
    let p = project();
    let tq = Tq::start(p.path(), &[]);
    ready(&tq).await;
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    for req in [
        format!(
            "GET /live/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n{key}Content-Length: 5\r\n\r\nhello"
        ),
        format!(
            "POST /live/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n{key}Content-Length: 0\r\n\r\n"
        ),
        format!(
            "GET /live/ws HTTP/1.0\r\nHost: x\r\nConnection: Upgrade, keep-alive\r\nUpgrade: websocket\r\n{key}\r\n"
        ),
    ] {
        let port = tq.port;
        let out = tokio::task::spawn_blocking(move || {
            let mut s = common::raw::connect(port, Duration::from_secs(10));
            use std::io::Write;
            s.write_all(req.as_bytes()).unwrap();
            let first = common::raw::read_response(&mut s, false, Duration::from_secs(10));
            // The connection still speaks HTTP (where it stays open).
            s.write_all(b"GET /live/ws HTTP/1.1\r\nHost: x\r\n\r\n")
                .ok();
            let second = common::raw::read_response(&mut s, false, Duration::from_secs(5));
            (req, first, second)
        })
        .await
        .unwrap();
        let (req, first, second) = out;
        let first = first.unwrap_or_else(|| panic!("no answer to {req:?}"));
        assert_ne!(first.status, 101, "{req:?} was switched");
        assert!(
            first.status == 426 || first.status == 405 || first.status == 501,
            "{req:?}: {}",
            first.status
        );
        if let Some(second) = second {
            assert_eq!(second.status, 426, "{req:?}: the next request");
        }
    }
}

/// SIGTERM with an event stream and a WebSocket open (grace 3 s): when
/// the grace period ends the stream gets its last chunk (a proper end,
/// not a cut) and the WebSocket a close frame 1001 (going away), and
/// TQServer has exited within the one grace period.
#[tokio::test]
async fn at_a_stop_event_streams_and_websockets_end_properly_within_the_grace_period() {
    use std::io::{Read, Write};
    let p = project();
    let mut tq = Tq::start(p.path(), &[]);
    ready(&tq).await;
    let mut sse = common::raw::connect(tq.port, Duration::from_secs(10));
    sse.write_all(b"GET /live/events HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let url = format!("ws://127.0.0.1:{}/live/ws", tq.port);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    echoed(&mut ws, "before").await;
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match sse.read(&mut buf) {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let began = std::time::Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tq.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    // The WebSocket stays usable until the cut, then gets 1001.
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => {}
            other => panic!("no close frame: {other:?}\n{}", tq.log_text()),
        }
    };
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
    let exit = tokio::task::spawn_blocking(move || {
        let e = tq.wait_exit(10);
        (e, tq)
    });
    let got = reader.join().unwrap();
    let (exit, tq) = exit.await.unwrap();
    let took = began.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("data: 5"), "events flowed: {text}");
    assert!(
        text.ends_with("\r\n0\r\n\r\n"),
        "the stream ends with its last chunk: {text}"
    );
    assert!(
        exit.is_some_and(|e| e.success()),
        "{exit:?}\n{}",
        tq.log_text()
    );
    assert!(
        took < Duration::from_millis(3500),
        "exited {took:?} after SIGTERM (grace 3 s)\n{}",
        tq.log_text()
    );
}

/// One WebSocket frame from a client (masked), RFC 6455 §5.2.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n < 65536 => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// The first complete server frame (unmasked) in `buf`: opcode, payload,
/// and the bytes it took.
fn server_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (len, at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    (buf.len() >= at + len).then(|| (buf[0] & 0x0f, buf[at..at + len].to_vec(), at + len))
}

/// Over `io` (h2c or TLS with ALPN h2), a WebSocket on an HTTP/2 stream
/// (RFC 8441, extended CONNECT) to `authority`'s /live/ws: the server
/// offers it in its SETTINGS, the stream opens with 200, messages of
/// several sizes are echoed by the HTTP/1.1 worker, and a close comes
/// back.
async fn websocket_over_h2<T>(io: T, authority: &str, log: impl Fn() -> String)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (client, conn) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    // One request first, so the server's SETTINGS have arrived.
    let get = http::Request::get(format!("https://{authority}/live/ws"))
        .body(())
        .unwrap();
    let (plain, _) = client.send_request(get, true).unwrap();
    assert_eq!(plain.await.unwrap().status(), 426);
    let mut client = client.ready().await.unwrap();
    assert!(
        client.is_extended_connect_protocol_enabled(),
        "SETTINGS_ENABLE_CONNECT_PROTOCOL"
    );
    let mut req = http::Request::builder()
        .method("CONNECT")
        .uri(format!("https://{authority}/live/ws"))
        .header("sec-websocket-version", "13")
        .body(())
        .unwrap();
    req.extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    let (resp, mut up) = client.send_request(req, false).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200, "{resp:?}\n{}", log());
    assert_eq!(resp.headers()["x-worker"], "ws.py");
    assert!(resp.headers().get("sec-websocket-accept").is_none());
    let mut down = resp.into_body();
    let mut buf = Vec::new();
    let mut next = async |buf: &mut Vec<u8>| loop {
        if let Some((op, got, used)) = server_frame(buf) {
            buf.drain(..used);
            return (op, got);
        }
        let data = down.data().await.expect("more").unwrap();
        let _ = down.flow_control().release_capacity(data.len());
        buf.extend_from_slice(&data);
    };
    for (i, size) in [5usize, 200, 70_000, 1].into_iter().enumerate() {
        let payload: Vec<u8> = (0..size).map(|b| (b % 251) as u8 ^ i as u8).collect();
        up.send_data(client_frame(2, &payload).into(), false)
            .unwrap();
        let (op, got) = next(&mut buf).await;
        assert_eq!((op, got.len()), (2, size));
        assert!(got == payload, "message {i} came back intact");
    }
    up.send_data(client_frame(8, &1000u16.to_be_bytes()).into(), false)
        .unwrap();
    assert_eq!(next(&mut buf).await, (8, 1000u16.to_be_bytes().to_vec()));
}

#[tokio::test]
async fn websockets_over_http2_streams_reach_an_http1_worker() {
    let p = project();
    let tq = Tq::start(p.path(), &[]);
    ready(&tq).await;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", tq.port))
        .await
        .unwrap();
    websocket_over_h2(tcp, &format!("127.0.0.1:{}", tq.port), || tq.log_text()).await;
}

/// wss://: the same worker over TLS, as HTTP/1.1 (ALPN http/1.1, then
/// the upgrade; tokio-tungstenite on a rustls stream) and as HTTP/2
/// (ALPN h2, then extended CONNECT).
#[tokio::test]
async fn websockets_over_tls_with_http1_and_http2() {
    use rustls_pki_types::pem::PemObject as _;
    let dir = tempfile::tempdir().unwrap();
    let cert = common::tls::self_signed(dir.path(), "ws", &["ws.test"], -1, 30);
    let tls_port = common::free_port();
    let p = project_with(
        &format!(
            "  tls:\n    port: {tls_port}\n    certificates:\n      - {{ cert: {}, key: {} }}\n",
            cert.cert.display(),
            cert.key.display()
        ),
        "",
    );
    let tq = Tq::start(p.path(), &[]);
    ready(&tq).await;
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while !tq.log_text().contains("listening on https://") {
        assert!(std::time::Instant::now() < until, "{}", tq.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_file(&cert.cert).unwrap())
        .unwrap();
    let connect = async |alpn: &[u8]| {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", tls_port))
            .await
            .unwrap();
        let name = rustls_pki_types::ServerName::try_from("ws.test").unwrap();
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap()
    };
    // HTTP/1.1.
    let tls = connect(b"http/1.1").await;
    let url = format!("wss://ws.test:{tls_port}/live/ws");
    let (mut ws, resp) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..100 {
        echoed(&mut ws, &format!("secure {i}")).await;
    }
    ws.close(None).await.unwrap();
    // HTTP/2.
    let tls = connect(b"h2").await;
    websocket_over_h2(tls, &format!("ws.test:{tls_port}"), || tq.log_text()).await;
}

/// A WebSocket is not an idle keep-alive connection: one quiet for longer
/// than `server.idle_timeout_seconds` (1 s here) stays open; one quiet for
/// longer than the worker's `proxy.upgrade_idle_timeout` (2 s) is closed.
#[tokio::test]
async fn quiet_websockets_close_at_the_upgrade_idle_timeout_not_the_servers() {
    let p = project_with(
        "  idle_timeout_seconds: 1\n",
        "proxy:\n  upgrade_idle_timeout: 2s\n",
    );
    let tq = Tq::start(p.path(), &[]);
    ready(&tq).await;
    let url = format!("ws://127.0.0.1:{}/live/ws", tq.port);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("still here"),
        "{}",
        tq.log_text()
    );
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let after = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = ws.send(Message::text("gone?")).await;
        ws.next().await
    })
    .await
    .expect("the closed tunnel is seen at once");
    assert!(
        !matches!(after, Some(Ok(Message::Text(_)))),
        "echoed after 3 s of quiet: {after:?}"
    );
}
