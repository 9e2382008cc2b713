//! Our server, driven record by record (multiplexing, aborts, management
//! records, refusals) and by our own client (pooled, concurrent).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tqserver_fastcgi::client::Request as ClientRequest;
use tqserver_fastcgi::proto::record::{self, KEEP_CONN};
use tqserver_fastcgi::proto::{Body, Params, ProtocolStatus, Record, Role, StreamKind};
use tqserver_fastcgi::server::{
    ABORTED_APP_STATUS, PANICKED_APP_STATUS, Request, ResponseWriter, Server, ServerConfig,
};
use tqserver_fastcgi::{Address, Client, ClientConfig};

/// Answers `<ID>:<body>` after reading the whole body; the `DATA` stream
/// too for the Filter role; waits forever for `SLEEP=1`.
async fn handler(mut req: Request, mut out: ResponseWriter) -> u32 {
    if req.params().get_str("SLEEP") == Some("1") {
        std::future::pending::<()>().await;
    }
    if req.params().get_str("PANIC") == Some("1") {
        out.write_stdout("Status: 200\r\n\r\npartial")
            .await
            .unwrap();
        panic!("handler bug (expected by the test)");
    }
    let tag = req.params().get_str("ID").unwrap_or("?").to_string();
    let body = req.stdin().read_to_end(1 << 20).await.unwrap_or_default();
    let data = req.data().read_to_end(1 << 20).await.unwrap_or_default();
    let mut text = format!("Content-Type: text/plain\r\n\r\n{tag}:");
    text.push_str(&String::from_utf8_lossy(&body));
    if !data.is_empty() {
        text.push_str("|data:");
        text.push_str(&String::from_utf8_lossy(&data));
    }
    // Two writes, so interleaving with other requests is possible.
    let (a, b) = text.split_at(text.len() / 2);
    out.write_stdout(a.to_string()).await.unwrap();
    tokio::task::yield_now().await;
    out.write_stdout(b.to_string()).await.unwrap();
    7
}

async fn start(config: ServerConfig) -> Address {
    let server = Server::bind(&"127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.serve(handler, std::future::pending()));
    addr
}

struct Raw {
    s: TcpStream,
    rbuf: BytesMut,
}

impl Raw {
    async fn connect(addr: &Address) -> Self {
        let Address::Tcp(a) = addr else { panic!() };
        Self {
            s: TcpStream::connect(a.as_str()).await.unwrap(),
            rbuf: BytesMut::new(),
        }
    }

    async fn send(&mut self, f: impl FnOnce(&mut BytesMut)) {
        let mut b = BytesMut::new();
        f(&mut b);
        self.s.write_all(&b).await.unwrap();
    }

    async fn begin(&mut self, id: u16, role: Role, keep: bool, params: Params, stdin: &str) {
        self.send(|b| {
            record::encode_begin_request(b, id, role, if keep { KEEP_CONN } else { 0 });
            record::encode_params(b, id, &params);
            record::encode_stream(b, StreamKind::Stdin, id, stdin.as_bytes());
        })
        .await;
    }

    async fn end_stdin(&mut self, id: u16) {
        self.send(|b| record::encode_stream_end(b, StreamKind::Stdin, id))
            .await;
    }

    /// Next record, or `None` at EOF.
    async fn recv(&mut self) -> Option<Record> {
        loop {
            if let Some(r) = record::decode(&mut self.rbuf).unwrap() {
                return Some(r);
            }
            let n = tokio::time::timeout(Duration::from_secs(10), self.s.read_buf(&mut self.rbuf))
                .await
                .expect("server answers within 10 s")
                .unwrap();
            if n == 0 {
                return None;
            }
        }
    }

    /// Reads until `END_REQUEST` of every id in `ids`; returns each id's
    /// stdout and end record.
    async fn responses(&mut self, ids: &[u16]) -> Vec<(u16, String, u32, ProtocolStatus)> {
        let mut out: Vec<(u16, String, u32, ProtocolStatus)> = Vec::new();
        let mut stdout: std::collections::HashMap<u16, String> = Default::default();
        while out.len() < ids.len() {
            let r = self.recv().await.expect("connection open until all ended");
            match r.body {
                Body::Stream {
                    kind: StreamKind::Stdout,
                    data,
                } => stdout
                    .entry(r.request_id)
                    .or_default()
                    .push_str(&String::from_utf8_lossy(&data)),
                Body::EndRequest {
                    app_status,
                    protocol_status,
                } => out.push((
                    r.request_id,
                    stdout.remove(&r.request_id).unwrap_or_default(),
                    app_status,
                    protocol_status,
                )),
                other => panic!("unexpected {other:?}"),
            }
        }
        out.sort_by_key(|o| o.0);
        out
    }
}

fn params(id: &str) -> Params {
    Params::new().with("ID", id.to_string())
}

#[tokio::test]
async fn multiplexed_requests_on_one_connection() {
    let addr = start(ServerConfig::default()).await;
    let mut c = Raw::connect(&addr).await;
    // Interleave: begin 1, begin 2, stdin of 2, stdin of 1, end 2, end 1.
    c.begin(1, Role::Responder, true, params("one"), "").await;
    c.begin(2, Role::Responder, true, params("two"), "bb").await;
    c.send(|b| record::encode_stream(b, StreamKind::Stdin, 1, b"aa"))
        .await;
    c.end_stdin(2).await;
    c.end_stdin(1).await;
    let r = c.responses(&[1, 2]).await;
    let head = "Content-Type: text/plain\r\n\r\n";
    assert_eq!(
        r[0],
        (
            1,
            format!("{head}one:aa"),
            7,
            ProtocolStatus::RequestComplete
        )
    );
    assert_eq!(
        r[1],
        (
            2,
            format!("{head}two:bb"),
            7,
            ProtocolStatus::RequestComplete
        )
    );
    // The connection stays open for more (KEEP_CONN).
    c.begin(1, Role::Responder, true, params("again"), "x")
        .await;
    c.end_stdin(1).await;
    assert_eq!(c.responses(&[1]).await[0].1, format!("{head}again:x"));
}

#[tokio::test]
async fn without_keep_conn_the_server_closes_after_the_response() {
    let addr = start(ServerConfig::default()).await;
    let mut c = Raw::connect(&addr).await;
    c.begin(1, Role::Responder, false, params("once"), "").await;
    c.end_stdin(1).await;
    assert_eq!(c.responses(&[1]).await.len(), 1);
    assert_eq!(c.recv().await, None, "closed after END_REQUEST");
}

#[tokio::test]
async fn abort_request_ends_a_running_request() {
    let addr = start(ServerConfig::default()).await;
    let mut c = Raw::connect(&addr).await;
    c.begin(
        3,
        Role::Responder,
        true,
        params("slow").with("SLEEP", "1"),
        "",
    )
    .await;
    c.send(|b| record::encode_abort_request(b, 3)).await;
    let r = c.responses(&[3]).await;
    assert_eq!(r[0].2, ABORTED_APP_STATUS);
    // Input still in flight for the aborted id is ignored.
    c.end_stdin(3).await;
    c.begin(4, Role::Responder, true, params("next"), "").await;
    c.end_stdin(4).await;
    assert!(c.responses(&[4]).await[0].1.ends_with("next:"));
}

#[tokio::test]
async fn get_values_and_unknown_management_types() {
    let addr = start(ServerConfig {
        max_connections: 12,
        max_requests_per_connection: 3,
        ..ServerConfig::default()
    })
    .await;
    let mut c = Raw::connect(&addr).await;
    c.send(|b| {
        record::encode_get_values(
            b,
            [
                "FCGI_MAX_CONNS",
                "FCGI_MAX_REQS",
                "FCGI_MPXS_CONNS",
                "NOT_A_VAR",
            ],
        )
        .unwrap()
    })
    .await;
    let Some(Record {
        request_id: 0,
        body: Body::GetValuesResult(v),
    }) = c.recv().await
    else {
        panic!("GET_VALUES_RESULT expected")
    };
    assert_eq!(v.get_str("FCGI_MAX_CONNS"), Some("12"));
    assert_eq!(v.get_str("FCGI_MAX_REQS"), Some("36"));
    assert_eq!(v.get_str("FCGI_MPXS_CONNS"), Some("1"));
    assert_eq!(v.len(), 3, "unknown names are left out");

    c.send(|b| {
        Record {
            request_id: 0,
            body: Body::Unrecognized {
                record_type: 99,
                content: Bytes::from_static(b"??"),
            },
        }
        .encode(b)
        .unwrap()
    })
    .await;
    assert_eq!(
        c.recv().await,
        Some(Record {
            request_id: 0,
            body: Body::UnknownType(99)
        })
    );
}

#[tokio::test]
async fn refusals_cant_mpx_overloaded_unknown_role() {
    let addr = start(ServerConfig {
        multiplex: false,
        ..ServerConfig::default()
    })
    .await;
    let mut c = Raw::connect(&addr).await;
    c.begin(1, Role::Responder, true, params("a").with("SLEEP", "1"), "")
        .await;
    c.begin(2, Role::Responder, true, params("b"), "").await;
    let r = c.responses(&[2]).await;
    assert_eq!(r[0].3, ProtocolStatus::CantMpxConn);
    c.send(|b| record::encode_abort_request(b, 1)).await;
    c.responses(&[1]).await;
    c.begin(5, Role::Other(9), true, params("c"), "").await;
    assert_eq!(c.responses(&[5]).await[0].3, ProtocolStatus::UnknownRole);

    let addr = start(ServerConfig {
        max_requests_per_connection: 1,
        ..ServerConfig::default()
    })
    .await;
    let mut c = Raw::connect(&addr).await;
    c.begin(1, Role::Responder, true, params("a").with("SLEEP", "1"), "")
        .await;
    c.begin(2, Role::Responder, true, params("b"), "").await;
    assert_eq!(c.responses(&[2]).await[0].3, ProtocolStatus::Overloaded);
}

#[tokio::test]
async fn filter_role_gets_the_data_stream_and_authorizer_runs() {
    let addr = start(ServerConfig::default()).await;
    let mut c = Raw::connect(&addr).await;
    c.begin(1, Role::Filter, true, params("f"), "in").await;
    c.send(|b| {
        record::encode_stream_end(b, StreamKind::Stdin, 1);
        record::encode_stream(b, StreamKind::Data, 1, b"file bytes");
        record::encode_stream_end(b, StreamKind::Data, 1);
    })
    .await;
    assert!(
        c.responses(&[1]).await[0]
            .1
            .ends_with("f:in|data:file bytes")
    );
    c.begin(2, Role::Authorizer, true, params("auth"), "").await;
    c.end_stdin(2).await;
    assert!(c.responses(&[2]).await[0].1.ends_with("auth:"));
}

#[tokio::test]
async fn malformed_input_closes_the_connection_and_the_server_keeps_serving() {
    let addr = start(ServerConfig::default()).await;
    let mut c = Raw::connect(&addr).await;
    c.s.write_all(&[9, 9, 9, 9, 9, 9, 9, 9]).await.unwrap();
    assert_eq!(c.recv().await, None);
    // Params over the limit.
    let addr = start(ServerConfig {
        limits: tqserver_fastcgi::Limits {
            max_params_bytes: 100,
            ..Default::default()
        },
        ..ServerConfig::default()
    })
    .await;
    let mut c = Raw::connect(&addr).await;
    c.begin(1, Role::Responder, true, params(&"x".repeat(200)), "")
        .await;
    assert_eq!(c.recv().await, None);
    let mut c = Raw::connect(&addr).await;
    c.begin(1, Role::Responder, true, params("ok"), "").await;
    c.end_stdin(1).await;
    assert_eq!(c.responses(&[1]).await.len(), 1);
}

#[tokio::test]
async fn our_client_against_our_server_concurrently() {
    let addr = start(ServerConfig::default()).await;
    let client = Client::new(addr, ClientConfig::new(4));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let c = client.clone();
        let peak = peak.clone();
        tasks.push(tokio::spawn(async move {
            let body = format!("body-{i}");
            let resp = c
                .request(ClientRequest::new(params(&i.to_string())).body(body.clone()))
                .await
                .unwrap();
            peak.fetch_max(c.stats().open, Ordering::Relaxed);
            let (head, got, end) = resp.collect().await.unwrap();
            assert_eq!(head.status, 200);
            assert_eq!(
                String::from_utf8(got.to_vec()).unwrap(),
                format!("{i}:{body}")
            );
            assert_eq!(end.app_status, 7);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(peak.load(Ordering::Relaxed) <= 4);
    let stats = client.stats();
    assert!(stats.connects <= 4 && stats.open <= 4, "{stats:?}");
}

#[tokio::test]
async fn graceful_shutdown_finishes_requests_in_progress() {
    let server = Server::bind(&"127.0.0.1:0".parse().unwrap(), ServerConfig::default())
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(handler, async {
        let _ = stop_rx.await;
    }));
    let mut c = Raw::connect(&addr).await;
    c.begin(1, Role::Responder, true, params("late"), "").await;
    // Records are handled in order: once GET_VALUES is answered, the
    // request above is running.
    c.send(|b| record::encode_get_values(b, ["FCGI_MAX_CONNS"]).unwrap())
        .await;
    assert!(matches!(
        c.recv().await,
        Some(Record {
            body: Body::GetValuesResult(_),
            ..
        })
    ));
    stop_tx.send(()).unwrap();
    c.end_stdin(1).await;
    assert!(c.responses(&[1]).await[0].1.ends_with("late:"));
    assert_eq!(c.recv().await, None, "closed once idle");
    tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("serve returns after the drain")
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(match &addr {
            Address::Tcp(a) => a.as_str(),
            _ => unreachable!(),
        })
        .await
        .is_err()
    );
}

#[tokio::test]
async fn a_panicking_handler_still_ends_its_request() {
    let addr = start(ServerConfig::default()).await;
    let mut c = Raw::connect(&addr).await;
    c.begin(1, Role::Responder, true, params("p").with("PANIC", "1"), "")
        .await;
    c.end_stdin(1).await;
    let r = c.responses(&[1]).await;
    assert_eq!(r[0].1, "Status: 200\r\n\r\npartial");
    assert_eq!(r[0].2, PANICKED_APP_STATUS);
    // The connection still serves.
    c.begin(2, Role::Responder, true, params("after"), "").await;
    c.end_stdin(2).await;
    assert!(c.responses(&[2]).await[0].1.ends_with("after:"));
}

/// A handler that reads its input later than it arrives: the server stops
/// reading the connection while the request's small queue is full, loses
/// nothing, and the other request on the connection is still answered.
#[tokio::test]
async fn input_faster_than_the_handler_reads_is_held_back_not_lost() {
    let config = ServerConfig {
        input_queue: 1,
        ..ServerConfig::default()
    };
    let server = Server::bind(&"127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.serve(
        |mut req: Request, mut out: ResponseWriter| async move {
            if req.params().get_str("ID") == Some("slow") {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let body = req.stdin().read_to_end(4 << 20).await.unwrap();
            let sum: u64 = body.iter().map(|&b| u64::from(b)).sum();
            let text = format!("\r\n{}:{}", body.len(), sum);
            out.write_stdout(text).await.unwrap();
            0
        },
        std::future::pending(),
    ));
    let mut c = Raw::connect(&addr).await;
    let chunk: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
    c.send(|b| {
        record::encode_begin_request(b, 1, Role::Responder, KEEP_CONN);
        record::encode_params(b, 1, &params("slow"));
    })
    .await;
    // 64 records for request 1, while its handler sleeps.
    for _ in 0..64 {
        c.send(|b| record::encode_stream(b, StreamKind::Stdin, 1, &chunk))
            .await;
    }
    c.end_stdin(1).await;
    c.begin(2, Role::Responder, true, params("fast"), "xy")
        .await;
    c.end_stdin(2).await;
    let r = c.responses(&[1, 2]).await;
    let want: u64 = 64 * chunk.iter().map(|&b| u64::from(b)).sum::<u64>();
    assert_eq!(r[0].1, format!("\r\n{}:{want}", 64 * chunk.len()));
    assert_eq!(
        r[1].1,
        format!("\r\n2:{}", u64::from(b'x') + u64::from(b'y'))
    );
}
