//! The client against fake applications that misbehave on purpose: the
//! byte-level regressions of the Go TQServer, dead connections, retries,
//! timeouts and malformed answers. (Real PHP is in php_fpm.rs / php_cgi.rs.)

mod common;

use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tqserver_fastcgi::client::{ErrorKind, Request, RequestBody};
use tqserver_fastcgi::proto::record;
use tqserver_fastcgi::proto::{Body, HeadError, Params, ProtocolStatus, StreamKind};
use tqserver_fastcgi::{Address, Client, ClientConfig, ClientError};

/// A fake application: `f(connection_number, stream)` per connection.
async fn fake<F, Fut>(f: F) -> (Address, Arc<AtomicUsize>)
where
    F: Fn(usize, TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: Address = l.local_addr().unwrap().into();
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    let f = Arc::new(f);
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            let n = a.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(f(n, s));
        }
    });
    (addr, accepted)
}

/// Reads one request (through its empty `STDIN`); `None` at EOF.
async fn read_request(s: &mut TcpStream, buf: &mut BytesMut) -> Option<(Params, Bytes)> {
    let mut params = BytesMut::new();
    let mut stdin = BytesMut::new();
    loop {
        while let Some(r) = record::decode(buf).unwrap() {
            match r.body {
                Body::Stream {
                    kind: StreamKind::Params,
                    data,
                } => params.extend_from_slice(&data),
                Body::Stream {
                    kind: StreamKind::Stdin,
                    data,
                } if data.is_empty() => {
                    let p = tqserver_fastcgi::proto::params::decode_pairs(params.freeze(), 10_000)
                        .unwrap();
                    return Some((p, stdin.freeze()));
                }
                Body::Stream {
                    kind: StreamKind::Stdin,
                    data,
                } => stdin.extend_from_slice(&data),
                _ => {}
            }
        }
        if s.read_buf(buf).await.unwrap_or(0) == 0 {
            return None;
        }
    }
}

/// A complete response: `stdout` in records of at most `piece` bytes,
/// one `STDERR` record, the stream ends, `END_REQUEST`.
fn response(stdout: &[u8], piece: usize, stderr: &[u8]) -> BytesMut {
    let id = 1; // the client always uses request id 1
    let mut b = BytesMut::new();
    for chunk in stdout.chunks(piece) {
        record::encode_stream(&mut b, StreamKind::Stdout, id, chunk);
    }
    record::encode_stream(&mut b, StreamKind::Stderr, id, stderr);
    record::encode_stream_end(&mut b, StreamKind::Stdout, id);
    record::encode_stream_end(&mut b, StreamKind::Stderr, id);
    record::encode_end_request(&mut b, id, 0, ProtocolStatus::RequestComplete);
    b
}

fn body_of(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn full_response() -> (Vec<u8>, Vec<u8>) {
    let body = body_of(100_000);
    let mut stdout =
        b"Status: 404 Not Found\r\nX-A: 1\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n".to_vec();
    stdout.extend_from_slice(&body);
    (stdout, body)
}

fn collecting_client(addr: Address, lines: &Arc<Mutex<Vec<String>>>) -> Client {
    let l = lines.clone();
    let mut config = ClientConfig::new(1);
    config.on_stderr = Some(Arc::new(move |line: &[u8]| {
        l.lock().unwrap().push(String::from_utf8_lossy(line).into())
    }));
    Client::new(addr, config)
}

async fn check_full_response(client: &Client, lines: &Arc<Mutex<Vec<String>>>) {
    let (head, got, _) = client
        .request(Request::new(Params::new()))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(head.status, 404);
    assert_eq!(head.get_all("set-cookie").count(), 2);
    assert_eq!(head.get("x-a").map(|v| &v[..]), Some(&b"1"[..]));
    assert_eq!(got.to_vec(), full_response().1);
    assert_eq!(*lines.lock().unwrap(), ["warning: one"]);
}

/// Regressions (Go TQServer): several records in one read hung the reader,
/// and responses over 8 KiB failed. Here the head is split over three
/// records and everything (head, 100 KB body, STDERR, END) is one write.
#[tokio::test]
async fn whole_response_in_one_write() {
    let (addr, _) = fake(|_, mut s| async move {
        let mut buf = BytesMut::new();
        read_request(&mut s, &mut buf).await.unwrap();
        let (stdout, _) = full_response();
        let mut all = BytesMut::new();
        record::encode_stream(&mut all, StreamKind::Stdout, 1, &stdout[..20]);
        record::encode_stream(&mut all, StreamKind::Stdout, 1, &stdout[20..40]);
        all.extend_from_slice(&response(&stdout[40..], 30_000, b"warning: one\n"));
        s.write_all(&all).await.unwrap();
        let _ = read_request(&mut s, &mut buf).await;
    })
    .await;
    let lines = Arc::new(Mutex::new(Vec::new()));
    check_full_response(&collecting_client(addr, &lines), &lines).await;
}

/// The same response, one byte per write.
#[tokio::test]
async fn response_one_byte_at_a_time() {
    let (addr, _) = fake(|_, mut s| async move {
        let mut buf = BytesMut::new();
        read_request(&mut s, &mut buf).await.unwrap();
        let (stdout, _) = full_response();
        let all = response(&stdout, 7_000, b"warning: one\n");
        // 1 byte per write for the first 2 KB (head and several records),
        // then bigger pieces to keep the test quick.
        for b in all[..2048].chunks(1) {
            s.write_all(b).await.unwrap();
            s.flush().await.unwrap();
        }
        for b in all[2048..].chunks(999) {
            s.write_all(b).await.unwrap();
        }
        let _ = read_request(&mut s, &mut buf).await;
    })
    .await;
    let lines = Arc::new(Mutex::new(Vec::new()));
    check_full_response(&collecting_client(addr, &lines), &lines).await;
}

/// Each connection serves one request and then, on the next one, closes
/// without answering: what a process that exited while idle looks like
/// when the close is noticed only on use.
async fn one_request_per_connection() -> (Address, Arc<AtomicUsize>) {
    fake(|_, mut s| async move {
        let mut buf = BytesMut::new();
        let Some((_, stdin)) = read_request(&mut s, &mut buf).await else {
            return;
        };
        let text = format!("\r\n{}", stdin.len());
        s.write_all(&response(text.as_bytes(), 100, b""))
            .await
            .unwrap();
        // Wait for the next request's first bytes, then drop the connection.
        let _ = s.read_buf(&mut buf).await;
    })
    .await
}

#[tokio::test]
async fn dead_reused_connection_is_retried_once_with_the_same_body() {
    let (addr, accepted) = one_request_per_connection().await;
    let client = Client::new(addr, ClientConfig::new(1));
    for i in 0..3 {
        let body = vec![b'x'; 1000 + i];
        let (_, got, _) = client
            .request(Request::new(Params::new()).body(body))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(got, (1000 + i).to_string());
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    assert_eq!(client.stats().connects, 3);
}

#[tokio::test]
async fn a_streamed_body_already_read_is_not_retried() {
    let (addr, accepted) = one_request_per_connection().await;
    let client = Client::new(addr, ClientConfig::new(1));
    client
        .request(Request::new(Params::new()))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let chunks = vec![Ok::<_, std::io::Error>(Bytes::from_static(b"abc"))];
    let stream = common::scenarios::ChunkStream(chunks.into_iter());
    let err = client
        .request(Request::new(Params::new()).body(RequestBody::from_stream(stream)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Reset, "{err}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn no_retry_once_the_response_started() {
    let (addr, accepted) = fake(|_, mut s| async move {
        let mut buf = BytesMut::new();
        read_request(&mut s, &mut buf).await.unwrap();
        let mut b = BytesMut::new();
        record::encode_stream(&mut b, StreamKind::Stdout, 1, b"Status: 200\r\n");
        s.write_all(&b).await.unwrap();
    })
    .await;
    let client = Client::new(addr, ClientConfig::new(1));
    let err = client
        .request(Request::new(Params::new()))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Closed), "{err}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn no_retry_on_a_fresh_connection() {
    let (addr, accepted) = fake(|_, s| async move { drop(s) }).await;
    let client = Client::new(addr, ClientConfig::new(1));
    let err = client
        .request(Request::new(Params::new()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Reset, "{err}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn read_timeout_when_the_application_never_answers() {
    let (addr, _) = fake(|_, mut s| async move {
        let mut buf = BytesMut::new();
        read_request(&mut s, &mut buf).await;
        std::future::pending::<()>().await;
    })
    .await;
    let mut config = ClientConfig::new(1);
    config.read_timeout = Duration::from_millis(200);
    let err = Client::new(addr, config)
        .request(Request::new(Params::new()))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::ReadTimeout(_)), "{err}");
    assert!(err.is_timeout());
}

#[tokio::test]
async fn connection_refused_is_a_connect_error() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: Address = l.local_addr().unwrap().into();
    drop(l);
    let err = Client::new(addr, ClientConfig::new(1))
        .request(Request::new(Params::new()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect, "{err}");
}

async fn answer_with(stdout: Vec<u8>) -> ClientError {
    let stdout = Arc::new(stdout);
    let (addr, _) = fake(move |_, mut s| {
        let stdout = stdout.clone();
        async move {
            let mut buf = BytesMut::new();
            read_request(&mut s, &mut buf).await.unwrap();
            let _ = s.write_all(&response(&stdout, 65535, b"")).await;
        }
    })
    .await;
    Client::new(addr, ClientConfig::new(1))
        .request(Request::new(Params::new()))
        .await
        .unwrap_err()
}

#[tokio::test]
async fn malformed_oversize_or_missing_heads_are_errors() {
    let e = answer_with(b"garbage without colon\r\n\r\nbody".to_vec()).await;
    assert!(
        matches!(e, ClientError::Head(HeadError::Malformed { line: 1, .. })),
        "{e}"
    );
    let e = answer_with(b"X: y\r\n".repeat(20_000)).await;
    assert!(
        matches!(e, ClientError::Head(HeadError::TooLarge { .. })),
        "{e}"
    );
    let e = answer_with(b"X: y\r\n".to_vec()).await;
    assert!(
        matches!(e, ClientError::Head(HeadError::Incomplete(6))),
        "{e}"
    );
    let e = answer_with(Vec::new()).await;
    assert!(
        matches!(e, ClientError::Head(HeadError::Incomplete(0))),
        "{e}"
    );
    assert_eq!(e.kind(), ErrorKind::BadResponse);
}

#[tokio::test]
async fn overloaded_and_invalid_records_are_errors() {
    let (addr, _) = fake(|_, mut s| async move {
        let mut buf = BytesMut::new();
        read_request(&mut s, &mut buf).await.unwrap();
        let mut b = BytesMut::new();
        record::encode_end_request(&mut b, 1, 0, ProtocolStatus::Overloaded);
        s.write_all(&b).await.unwrap();
    })
    .await;
    let e = Client::new(addr, ClientConfig::new(1))
        .request(Request::new(Params::new()))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ClientError::Rejected(ProtocolStatus::Overloaded)),
        "{e}"
    );

    let (addr, _) = fake(|_, mut s| async move {
        let mut buf = BytesMut::new();
        read_request(&mut s, &mut buf).await.unwrap();
        s.write_all(&[2, 6, 0, 1, 0, 0, 0, 0]).await.unwrap();
    })
    .await;
    let e = Client::new(addr, ClientConfig::new(1))
        .request(Request::new(Params::new()))
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Protocol(_)), "{e}");
}

#[tokio::test]
async fn a_param_too_large_for_php_is_refused_before_connecting() {
    let (addr, accepted) = fake(|_, _| async {}).await;
    let e = Client::new(addr, ClientConfig::new(1))
        .request(Request::new(
            Params::new().with("HTTP_COOKIE", vec![b'c'; 70_000]),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ClientError::ParamTooLarge { ref name, .. } if name == "HTTP_COOKIE"),
        "{e}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn idle_connections_are_closed_after_idle_timeout() {
    let (addr, _) = fake(|_, mut s| async move {
        let mut buf = BytesMut::new();
        while read_request(&mut s, &mut buf).await.is_some() {
            s.write_all(&response(b"\r\nok", 100, b"")).await.unwrap();
        }
    })
    .await;
    let mut config = ClientConfig::new(2);
    config.idle_timeout = Duration::from_millis(100);
    let client = Client::new(addr, config);
    client
        .request(Request::new(Params::new()))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(client.stats().idle, 1);
    // Eventually (the reaper runs every 50 ms here); generous bound.
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while client.stats().open > 0 {
        assert!(tokio::time::Instant::now() < until, "{:?}", client.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A POST may have run when its connection died: it is never sent twice
/// (nginx's rule for non-idempotent methods).
#[tokio::test]
async fn a_post_on_a_dead_reused_connection_is_not_sent_again() {
    let (addr, accepted) = one_request_per_connection().await;
    let client = Client::new(addr, ClientConfig::new(1));
    client
        .request(Request::new(Params::new()))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let post = Params::new().with("REQUEST_METHOD", "POST");
    let err = client
        .request(Request::new(post).body(vec![b'x'; 10]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Reset, "{err}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

/// `try_request` sends nothing twice on its own address: it hands back a
/// request that never left (connect refused) and an idempotent one lost
/// before any answer, and keeps a POST.
#[tokio::test]
async fn try_request_hands_back_what_may_go_elsewhere() {
    let refused = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone: Address = refused.local_addr().unwrap().into();
    drop(refused);
    let client = Client::new(gone, ClientConfig::new(1));
    let (err, back) = client
        .try_request(Request::new(Params::new().with("A", "1")).body("body"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect, "{err}");
    assert_eq!(back.expect("handed back").params().get_str("A"), Some("1"));

    let (addr, accepted) = one_request_per_connection().await;
    let client = Client::new(addr, ClientConfig::new(1));
    let first = client.try_request(Request::new(Params::new())).await;
    first.unwrap().collect().await.unwrap();
    let get = Params::new().with("REQUEST_METHOD", "GET");
    let (err, back) = client
        .try_request(Request::new(get).body("abc"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Reset, "{err}");
    let back = back.expect("an idempotent request lost before any answer");
    assert_eq!(back.params().get_str("REQUEST_METHOD"), Some("GET"));
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "not retried here");

    let (addr, _) = one_request_per_connection().await;
    let client = Client::new(addr, ClientConfig::new(1));
    let first = client.try_request(Request::new(Params::new())).await;
    first.unwrap().collect().await.unwrap();
    let post = Params::new().with("REQUEST_METHOD", "POST");
    let (err, back) = client
        .try_request(Request::new(post).body("abc"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Reset, "{err}");
    assert!(back.is_none(), "a POST is not handed back");
}
