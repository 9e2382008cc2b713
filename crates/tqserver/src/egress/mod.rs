//! The egress proxy (`socks5.*`): a SOCKS5 server (RFC 1928, CONNECT) on
//! 127.0.0.1 that every worker is told to use (`ALL_PROXY`,
//! `SOCKS5_PROXY`), so each outgoing call a worker makes is logged: one
//! line per connection with the time, the worker (found from the socket,
//! [`owner`]), the destination, bytes each way, the duration, and for
//! plain HTTP the method, URL and status of its first request.
//!
//! - `socks.rs`: the protocol, pure.
//! - `owner.rs`: which worker's process holds a connecting socket.
//! - `inspect.rs`: HTTPS inspection (dev mode only): TLS terminated with a
//!   certificate minted per host, re-originated to the real host.
//!
//! Local clients only (it listens on loopback and refuses any other
//! peer), at most `socks5.max_connections` at once (more wait), and a
//! connection idle both ways for [`IDLE`] is closed.

pub mod inspect;
pub mod owner;
pub mod socks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::access::AccessFile;
use crate::config::Socks5Settings;
use crate::metrics::EgressMetrics;
use socks::{Reply, Target};

/// The handshake (greeting and request) must be done within this.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// The longest wait for the destination to accept the connection.
const CONNECT: Duration = Duration::from_secs(10);
/// A connection with no byte either way for this long is closed.
const IDLE: Duration = Duration::from_secs(300);
/// Bytes of each direction kept to read an HTTP request and status line.
const SNIFF: usize = 8 << 10;
/// How long the proxy waits for the worker's first bytes to tell TLS
/// (inspected) from anything else, which is relayed as it is (a
/// protocol where the server speaks first waits this long once).
const FIRST_BYTES: Duration = Duration::from_millis(500);
/// Worker name in the log and metrics for a connection from a process
/// TQServer did not start.
const UNKNOWN: &str = "unknown";

/// Where the lines go: `socks5.log_file`, or the server log.
#[derive(Clone)]
enum Sink {
    File(AccessFile),
    ServerLog,
}

/// The running proxy.
struct Proxy {
    local: SocketAddr,
    json: bool,
    sink: Sink,
    metrics: EgressMetrics,
    permits: Arc<Semaphore>,
    inspector: Option<Arc<inspect::Inspector>>,
}

/// Binds 127.0.0.1:`socks5.port` and serves until `stop`. An error names
/// the key to change.
pub async fn start(
    s: &Socks5Settings,
    metrics: EgressMetrics,
    stop: CancellationToken,
) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], s.port));
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("the SOCKS5 proxy cannot listen on {addr} (socks5.port): {e}"))?;
    let inspector = match &s.inspection {
        Some(i) => Some(Arc::new(inspect::Inspector::open(i)?)),
        None => None,
    };
    let sink = match &s.log_file {
        Some(t) => Sink::File(
            AccessFile::open(t, "socks5").map_err(|e| format!("socks5.log_file {t}: {e}"))?,
        ),
        None => Sink::ServerLog,
    };
    tracing::info!(
        "SOCKS5 egress proxy on {addr}: workers' outgoing connections are logged to {}",
        s.log_file.as_deref().unwrap_or("the server log")
    );
    let proxy = Arc::new(Proxy {
        local: addr,
        json: s.json,
        sink,
        metrics,
        permits: Arc::new(Semaphore::new(s.max_connections)),
        inspector,
    });
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                () = stop.cancelled() => break,
                p = proxy.permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
                () = stop.cancelled() => break,
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("SOCKS5 accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            if !peer.ip().is_loopback() {
                continue;
            }
            let p = proxy.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = p.serve(stream, peer) => {}
                }
                drop(permit);
            });
        }
    });
    Ok(())
}

/// What one connection did, for its log line.
#[derive(Default)]
struct Record {
    worker: Option<String>,
    pid: Option<u32>,
    target: Option<Target>,
    up: u64,
    down: u64,
    error: Option<String>,
    request: Vec<u8>,
    response: Vec<u8>,
    /// The TLS was terminated and the HTTP inside read.
    inspected: bool,
}

impl Proxy {
    async fn serve(&self, mut client: TcpStream, peer: SocketAddr) {
        let started = Instant::now();
        let time = chrono::Local::now();
        let local = self.local;
        let who = tokio::task::spawn_blocking(move || owner::find(peer, local))
            .await
            .ok()
            .flatten();
        let mut rec = Record {
            worker: who.as_ref().map(|(w, _)| w.clone()),
            pid: who.map(|(_, p)| p),
            ..Default::default()
        };
        match tokio::time::timeout(HANDSHAKE, handshake(&mut client)).await {
            Ok(Ok(target)) => {
                rec.target = Some(target.clone());
                match connect(&target).await {
                    Ok(dest) => {
                        let bound = dest.local_addr().ok();
                        if client
                            .write_all(&socks::reply(Reply::Ok, bound))
                            .await
                            .is_ok()
                        {
                            self.forward(client, dest, &target, &mut rec).await;
                        }
                    }
                    Err((rep, why)) => {
                        let _ = client.write_all(&socks::reply(rep, None)).await;
                        rec.error = Some(why);
                    }
                }
            }
            Ok(Err(e)) => rec.error = Some(e),
            Err(_) => rec.error = Some(format!("no SOCKS5 request within {HANDSHAKE:?}")),
        }
        let worker = rec.worker.as_deref().unwrap_or(UNKNOWN);
        self.metrics
            .record(worker, rec.up, rec.down, rec.error.is_some());
        let line = self.line(&rec, time, started.elapsed());
        match &self.sink {
            Sink::File(f) => f.append(|b| b.extend_from_slice(line.as_bytes())),
            Sink::ServerLog => tracing::info!(target: "socks5", "{line}"),
        }
    }

    /// Relays, through the inspector when it is on and the worker starts
    /// a TLS handshake.
    async fn forward(&self, client: TcpStream, dest: TcpStream, target: &Target, rec: &mut Record) {
        let keep = match &self.inspector {
            Some(i) if i.log_body => i.max_body.saturating_add(SNIFF),
            _ => SNIFF,
        };
        if let Some(i) = &self.inspector {
            let mut first = [0u8; 1];
            let tls = matches!(
                tokio::time::timeout(FIRST_BYTES, client.peek(&mut first)).await,
                Ok(Ok(1)) if first[0] == 0x16
            );
            if tls {
                match i.intercept(client, dest, &target.host()).await {
                    Ok((c, d)) => {
                        rec.inspected = true;
                        relay(c, d, rec, keep).await;
                    }
                    Err(e) => rec.error = Some(e),
                }
                return;
            }
        }
        relay(client, dest, rec, keep).await;
    }

    /// The log line: JSON (the default) or text.
    fn line(&self, r: &Record, time: chrono::DateTime<chrono::Local>, took: Duration) -> String {
        let http = http_summary(&r.request, &r.response, r.target.as_ref(), r.inspected);
        let bodies = match &self.inspector {
            Some(i) if i.log_body && r.inspected => Some(i.max_body),
            _ => None,
        };
        let worker = r.worker.as_deref().unwrap_or(UNKNOWN);
        let (host, port) = r
            .target
            .as_ref()
            .map_or((String::new(), 0), |t| (t.host(), t.port()));
        let ms = took.as_secs_f64() * 1000.0;
        if self.json {
            let mut v = serde_json::json!({
                "time": time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "worker": worker,
                "pid": r.pid,
                "host": host,
                "port": port,
                "bytes_sent": r.up,
                "bytes_received": r.down,
                "duration_ms": (ms * 10.0).round() / 10.0,
            });
            if let Some(h) = &http {
                v["method"] = h.method.clone().into();
                v["url"] = h.url.clone().into();
                if let Some(s) = h.status {
                    v["status"] = s.into();
                }
                if let Some(max) = bodies {
                    v["request_body"] = body_text(&r.request, h.request_head, max).into();
                    v["response_body"] = body_text(&r.response, h.response_head, max).into();
                }
            }
            if r.inspected {
                v["tls"] = "inspected".into();
            }
            if let Some(e) = &r.error {
                v["error"] = e.clone().into();
            }
            v.to_string()
        } else {
            let mut s = format!(
                "{} worker={worker} dest={host}:{port} sent={} received={} duration={ms:.1}ms",
                time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                r.up,
                r.down
            );
            if let Some(h) = &http {
                s.push_str(&format!(" {} {}", h.method, h.url));
                if let Some(st) = h.status {
                    s.push_str(&format!(" {st}"));
                }
            }
            if r.inspected {
                s.push_str(" tls=inspected");
            }
            if let Some(e) = &r.error {
                s.push_str(&format!(" error={e:?}"));
            }
            s
        }
    }
}

/// Reads the greeting and the request; answers the greeting.
async fn handshake(client: &mut TcpStream) -> Result<Target, String> {
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 512];
    let took = loop {
        match socks::greeting(&buf) {
            Ok(Some((n, answer))) => {
                client.write_all(&answer).await.map_err(|e| e.to_string())?;
                if answer[1] != 0 {
                    return Err("the client offered no method without authentication".into());
                }
                break n;
            }
            Ok(None) => {}
            Err(m) => return Err(m.why.to_string()),
        }
        let n = client.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 || buf.len() > 512 {
            return Err("the client left during the greeting".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    buf.drain(..took);
    loop {
        match socks::request(&buf) {
            Ok(Some((_, target))) => return Ok(target),
            Ok(None) => {}
            Err(m) => {
                if let Some(rep) = m.reply {
                    let _ = client.write_all(&socks::reply(rep, None)).await;
                }
                return Err(m.why.to_string());
            }
        }
        let n = client.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 || buf.len() > 600 {
            return Err("the client left before its request".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Resolves and connects; the reply code and why when it fails.
async fn connect(target: &Target) -> Result<TcpStream, (Reply, String)> {
    let addrs: Vec<SocketAddr> = match target {
        Target::Addr(a) => vec![*a],
        Target::Name(n, p) => match tokio::net::lookup_host((n.as_str(), *p)).await {
            Ok(a) => a.collect(),
            Err(e) => return Err((Reply::HostUnreachable, format!("cannot resolve {n}: {e}"))),
        },
    };
    let mut last = (Reply::HostUnreachable, "no address".to_string());
    for a in addrs {
        match tokio::time::timeout(CONNECT, TcpStream::connect(a)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => {
                let rep = match e.kind() {
                    std::io::ErrorKind::ConnectionRefused => Reply::Refused,
                    std::io::ErrorKind::NetworkUnreachable => Reply::NetworkUnreachable,
                    _ => Reply::HostUnreachable,
                };
                last = (rep, format!("{a}: {e}"));
            }
            Err(_) => {
                last = (
                    Reply::HostUnreachable,
                    format!("{a}: no answer within {CONNECT:?}"),
                )
            }
        }
    }
    Err(last)
}

/// Copies both ways until both sides are done (a half close is passed
/// on) or nothing moved for [`IDLE`]; counts, and keeps the first `keep`
/// bytes of each way.
async fn relay<A, B>(client: A, dest: B, rec: &mut Record, keep: usize)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (cr, cw) = tokio::io::split(client);
    let (dr, dw) = tokio::io::split(dest);
    let last = AtomicU64::new(0);
    let start = Instant::now();
    let mut up_seen = Vec::new();
    let mut down_seen = Vec::new();
    let up = pipe(cr, dw, &mut up_seen, keep, &last, start);
    let down = pipe(dr, cw, &mut down_seen, keep, &last, start);
    let (u, d) = tokio::join!(up, down);
    rec.up = u.0;
    rec.down = d.0;
    rec.error = u.1.or(d.1);
    rec.request = up_seen;
    rec.response = down_seen;
}

/// One direction: bytes copied, and an error other than the peer leaving.
async fn pipe<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut from: R,
    mut to: W,
    seen: &mut Vec<u8>,
    keep: usize,
    last: &AtomicU64,
    start: Instant,
) -> (u64, Option<String>) {
    let mut buf = vec![0u8; 16 << 10];
    let mut total = 0u64;
    loop {
        let n = match tokio::time::timeout(IDLE, from.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => n,
            Ok(Err(_)) => break,
            Err(_) => {
                let quiet = start.elapsed().as_millis() as u64 - last.load(Ordering::Relaxed);
                if quiet >= IDLE.as_millis() as u64 {
                    return (total, Some(format!("idle for {IDLE:?}")));
                }
                continue;
            }
        };
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        if seen.len() < keep {
            let take = n.min(keep - seen.len());
            seen.extend_from_slice(&buf[..take]);
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        total += n as u64;
    }
    let _ = to.shutdown().await;
    (total, None)
}

/// The first HTTP exchange of a connection.
struct HttpSummary {
    method: String,
    url: String,
    status: Option<u16>,
    /// Bytes of the request head and of the response head (when whole).
    request_head: Option<usize>,
    response_head: Option<usize>,
}

/// Method, URL and status when the first bytes were an HTTP/1 request
/// (plain, or inside TLS the proxy terminated: `https`); TLS it did not
/// terminate stays opaque.
fn http_summary(
    req: &[u8],
    resp: &[u8],
    target: Option<&Target>,
    https: bool,
) -> Option<HttpSummary> {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Request::new(&mut slots);
    // A partial head still has its request line.
    let request_head = match r.parse(req) {
        Ok(httparse::Status::Complete(n)) => Some(n),
        _ => None,
    };
    let (method, path) = (r.method?, r.path?);
    let host = r
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(str::to_string)
        .or_else(|| target.map(|t| format!("{}:{}", t.host(), t.port())))
        .unwrap_or_default();
    let url = if path.starts_with("http://") || path.starts_with("https://") {
        path.to_string()
    } else {
        format!("{}://{host}{path}", if https { "https" } else { "http" })
    };
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut s = httparse::Response::new(&mut slots);
    let response_head = match s.parse(resp) {
        Ok(httparse::Status::Complete(n)) => Some(n),
        _ => None,
    };
    Some(HttpSummary {
        method: method.to_string(),
        url,
        status: s.code,
        request_head,
        response_head,
    })
}

/// What follows a head of `head` bytes, at most `max` bytes of it, as
/// text (bytes that are not UTF-8 shown as U+FFFD; a chunked or
/// compressed body as it went by).
fn body_text(seen: &[u8], head: Option<usize>, max: usize) -> String {
    let Some(h) = head else {
        return String::new();
    };
    let body = &seen[h.min(seen.len())..];
    String::from_utf8_lossy(&body[..body.len().min(max)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_requests_are_summarised_and_tls_is_not() {
        let t = Target::Name("api.example".into(), 8080);
        let h = http_summary(
            b"POST /pay?x=1 HTTP/1.1\r\nHost: api.example:8080\r\nContent-Length: 2\r\n\r\n{}",
            b"HTTP/1.1 201 Created\r\n",
            Some(&t),
            false,
        )
        .unwrap();
        assert_eq!(h.method, "POST");
        assert_eq!(h.url, "http://api.example:8080/pay?x=1");
        assert_eq!(h.status, Some(201));
        assert_eq!(h.request_head, Some(69));
        assert_eq!(
            body_text(b"POST / HTTP/1.1\r\n\r\nabcdef", Some(19), 4),
            "abcd"
        );
        assert!(http_summary(&[0x16, 3, 1, 0, 200, 1], &[], Some(&t), false).is_none());
        let h = http_summary(b"GET / HTTP/1.0\r\n\r\n", b"", Some(&t), true).unwrap();
        assert_eq!(
            (h.url.as_str(), h.status),
            ("https://api.example:8080/", None)
        );
    }
}
