//! Client scenarios run against every real PHP backend (php-fpm and
//! php-cgi, over TCP and Unix sockets).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tqserver_fastcgi::client::{Request, RequestBody};
use tqserver_fastcgi::{Client, Params};

use super::{cgi_params, peak_rss_kib, sha256_hex};

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Sends `req`, reads the whole response, checks PHP ended it with status 0.
pub async fn text(client: &Client, req: Request) -> (u16, String) {
    let (head, body, end) = client.request(req).await.unwrap().collect().await.unwrap();
    assert_eq!(end.app_status, 0);
    (head.status, String::from_utf8(body.to_vec()).unwrap())
}

pub async fn get_hello(client: &Client) {
    let (status, body) = text(client, Request::new(cgi_params("hello.php", "GET", "", 0))).await;
    assert_eq!(status, 200);
    assert!(body.starts_with("Hello from PHP 8."), "{body}");
}

/// 10 MB up, streamed in 64 KiB chunks; PHP answers length and SHA-256.
/// Regression (Go TQServer): bodies over 64 KiB had their length truncated.
pub async fn post_10mb(client: &Client) {
    let data = noise(10 << 20, 7);
    let want = format!("{} {} {}", data.len(), sha256_hex(&data), data.len());
    let chunks: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(64 << 10)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let stream = ChunkStream(chunks.into_iter());
    let req = Request::new(cgi_params("echo.php", "POST", "", data.len()))
        .body(RequestBody::from_stream(stream));
    let (status, body) = text(client, req).await;
    assert_eq!(status, 200);
    assert_eq!(body, want);

    // The same body from memory.
    let req = Request::new(cgi_params("echo.php", "POST", "", data.len())).body(data);
    let (_, body) = text(client, req).await;
    assert_eq!(body, want);
}

/// A 50 MB response streamed with bounded memory: chunks are records, and
/// this process's peak RSS grows by far less than the response.
/// Regression (Go TQServer): responses over 8 KiB failed.
pub async fn response_50mb_bounded_memory(client: &Client) {
    const N: usize = 50 << 20;
    let before = peak_rss_kib();
    let resp = client
        .request(Request::new(cgi_params(
            "big.php",
            "GET",
            &format!("n={N}"),
            0,
        )))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (_, mut body) = resp.into_parts();
    let pattern = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut seen = 0usize;
    let mut chunks = 0usize;
    let mut largest = 0usize;
    while let Some(chunk) = body.chunk().await {
        let chunk = chunk.unwrap();
        for (i, b) in chunk.iter().enumerate() {
            assert_eq!(*b, pattern[(seen + i) % 36], "byte {}", seen + i);
        }
        seen += chunk.len();
        chunks += 1;
        largest = largest.max(chunk.len());
    }
    assert_eq!(seen, N);
    assert!(largest <= 65535, "chunks are single records, got {largest}");
    assert!(chunks > 700, "streamed in pieces, got {chunks}");
    let grown_mib = peak_rss_kib().saturating_sub(before) / 1024;
    assert!(
        grown_mib < 16,
        "peak RSS grew by {grown_mib} MiB reading 50 MiB"
    );
    assert_eq!(body.end_status().unwrap().app_status, 0);
}

/// `Status: 404` with headers after it and two cookies; a redirect.
/// Regression (Go TQServer): headers after `Status:` were dropped.
pub async fn status_location_cookies(client: &Client) {
    let resp = client
        .request(Request::new(cgi_params("status.php", "GET", "", 0)))
        .await
        .unwrap();
    let (head, body, _) = resp.collect().await.unwrap();
    assert_eq!(head.status, 404);
    assert_eq!(head.reason.as_deref(), Some("Not Found"));
    assert_eq!(
        head.get("x-after-status").map(|v| &v[..]),
        Some(&b"kept"[..])
    );
    let cookies: Vec<&[u8]> = head.get_all("set-cookie").map(|v| &v[..]).collect();
    assert_eq!(cookies, [&b"first=1"[..], &b"second=2"[..]]);
    assert_eq!(&body[..], b"not here");

    let (head, _, _) = client
        .request(Request::new(cgi_params("redirect.php", "GET", "", 0)))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(head.status, 302);
    assert_eq!(
        head.get("location").map(|v| &v[..]),
        Some(&b"/elsewhere"[..])
    );
    assert_eq!(head.get_all("set-cookie").count(), 2);
}

/// `error_log()` arrives as `STDERR` lines at the request's sink.
pub async fn stderr_lines(client: &Client) {
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let l = lines.clone();
    let req = Request::new(cgi_params("stderr.php", "GET", "", 0))
        .on_stderr(move |line| l.lock().unwrap().push(String::from_utf8_lossy(line).into()));
    let (_, body) = text(client, req).await;
    assert_eq!(body, "logged");
    // php-cgi sends one line per message; php-fpm joins a request's
    // messages into one line ("PHP message: a; PHP message: b").
    let all = lines.lock().unwrap().join("\n");
    let first = all.find("tq first message").expect(&all);
    let second = all.find("tq second message").expect(&all);
    assert!(first < second, "{all}");
}

/// A params block over 64 KiB (100 headers of 1 KiB) reaches PHP whole.
pub async fn params_over_64k(client: &Client) {
    let mut params: Params = cgi_params("params.php", "GET", "", 0);
    let mut expect = String::new();
    let mut names: Vec<String> = (0..100).map(|i| format!("HTTP_X_FILLER_{i}")).collect();
    for (i, n) in names.iter().enumerate() {
        params.push(n.clone(), format!("{i:04}").repeat(256));
    }
    assert!(params.encoded_len() > 100 << 10);
    // PHP sorts naturally: FILLER_0, FILLER_1, … FILLER_99.
    names.sort_by_key(|n| n[14..].parse::<u32>().unwrap());
    for n in &names {
        let i: usize = n[14..].parse().unwrap();
        expect.push_str(&format!("{n}={}\n", format!("{i:04}").repeat(256)));
    }
    let (_, body) = text(client, Request::new(params)).await;
    assert_eq!(body, format!("100 {}", sha256_hex(expect.as_bytes())));
}

/// 1,000 requests over one kept-alive connection, served by one process.
pub async fn keep_conn_1000(client: &Client) {
    let mut pids = std::collections::BTreeSet::new();
    for _ in 0..1000 {
        let (status, body) = text(client, Request::new(cgi_params("pid.php", "GET", "", 0))).await;
        assert_eq!(status, 200);
        pids.insert(body);
    }
    assert_eq!(
        pids.len(),
        1,
        "one connection means one PHP process: {pids:?}"
    );
    let stats = client.stats();
    assert_eq!(stats.connects, 1, "{stats:?}");
    assert_eq!(stats.open, 1);
}

/// A body stream over chunks already in memory.
pub struct ChunkStream<I>(pub I);

impl<I: Iterator<Item = Result<Bytes, std::io::Error>> + Unpin> futures_core::Stream
    for ChunkStream<I>
{
    type Item = Result<Bytes, std::io::Error>;
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Ready(self.get_mut().0.next())
    }
}
