//! HTTP/1.1 to an instance: a small client of our own, kept-alive
//! connections driven inside the request's own task (no task hop, no
//! second copy of the headers), the way the FastCGI client works.
//!
//! The request head is serialised once, straight from the client's
//! headers; the response head is parsed with `httparse` and its body is
//! read by the [`Streaming`] response body, which returns the connection
//! to its instance's [`IdlePool`] when the body is complete. Supported:
//! `Content-Length`, chunked and close-delimited bodies both ways, `1xx`
//! interim responses (skipped), `HEAD`, `204`, `304`. Not supported:
//! `Upgrade` (WebSocket) and pipelining.

use std::collections::VecDeque;
use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body::{Body as _, Frame};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::Lease;
use crate::http::body::BodyError;

/// The request body sent to an instance.
pub type UpBody = http_body_util::combinators::BoxBody<Bytes, BodyError>;

/// An idle connection older than this is closed rather than reused.
const IDLE_FOR: Duration = Duration::from_secs(30);
/// Idle connections kept per instance at most.
const MAX_IDLE: usize = 256;
/// Connecting to an instance on this machine takes microseconds; a
/// connect that takes longer means it is gone or stuck.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest response head accepted (nginx's proxy_buffer_size is 4–8 KiB;
/// hyper's default limit is ~400 KiB).
const MAX_HEAD: usize = 64 * 1024;
/// Most response headers accepted.
const MAX_HEADERS: usize = 128;
/// How long an answer sent before the request body was written may take
/// to arrive once the instance stopped reading.
const EARLY_ANSWER: Duration = Duration::from_millis(500);
/// Longest time the rest of a request body is read and dropped after the
/// instance stopped taking it.
const DRAIN_FOR: Duration = Duration::from_secs(10);
/// Read buffer: grown to this much per read.
const READ_CHUNK: usize = 16 * 1024;

/// One kept-alive connection to an instance.
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    /// Came from the idle pool (so a close before any byte of answer may
    /// just mean the instance closed it meanwhile).
    pub reused: bool,
}

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// Nothing of the answer came back before the connection failed; for
    /// a reused connection the instance most likely closed it while idle.
    Closed(io::Error),
    /// Reading the client's request body failed (too large, stalled…).
    Body(BodyError),
    /// The instance broke the protocol or the connection failed mid-answer.
    Failed(io::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Closed(e) => write!(f, "connection closed before an answer: {e}"),
            Self::Body(e) => write!(f, "{e}"),
            Self::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// A request ready to go: its head serialised once (so a retry costs
/// nothing), and its body if it has one.
pub struct Outgoing {
    /// `METHOD path HTTP/1.1`, headers, framing, blank line.
    pub head: Bytes,
    /// The body, streamed with the framing the head announced.
    pub body: Option<(UpBody, Framing)>,
    /// A HEAD request: the answer has no body whatever it says.
    pub head_only: bool,
}

/// How a request body is framed on the wire: always by TQServer, from
/// what it checked, never by passing on the client's framing headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length: n` (the client's length, which hyper enforced on
    /// the way in and [`Conn::send`] counts again on the way out).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

impl Conn {
    /// Opens a connection to `addr`.
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            reused: false,
        })
    }

    /// Sends the request and reads the response head; the body follows in
    /// the returned [`Streaming`] once it is given a lease.
    pub async fn send(
        &mut self,
        out: &mut Outgoing,
    ) -> Result<(StatusCode, HeaderMap, Reading), SendError> {
        match out.body.take() {
            None => self
                .stream
                .write_all(&out.head)
                .await
                .map_err(SendError::Closed)?,
            Some((body, framing)) => {
                if let Err(e) = self.send_body(&out.head, body, framing).await {
                    if matches!(e, SendError::Body(_)) {
                        return Err(e);
                    }
                    // The instance may have answered early (413, 401…) and
                    // closed without reading the rest: pass that answer on,
                    // as nginx does; the connection is not reused.
                    let early =
                        tokio::time::timeout(EARLY_ANSWER, self.read_head(out.head_only)).await;
                    return match early {
                        Ok(Ok((status, headers, mut reading))) => {
                            reading.keep_alive = false;
                            Ok((status, headers, reading))
                        }
                        _ => Err(e),
                    };
                }
            }
        }
        self.read_head(out.head_only).await
    }

    async fn send_body(
        &mut self,
        head: &[u8],
        mut body: UpBody,
        framing: Framing,
    ) -> Result<(), SendError> {
        self.stream
            .write_all(head)
            .await
            .map_err(SendError::Closed)?;
        let mut sent = false;
        let mut written = 0u64;
        loop {
            let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            let data = match frame {
                None => break,
                Some(Err(e)) => return Err(SendError::Body(e)),
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => d,
                    Err(_) => continue, // trailers are not forwarded
                },
            };
            if data.is_empty() {
                continue;
            }
            written += data.len() as u64;
            if let Framing::Length(n) = framing {
                if written > n {
                    // Never more than the head announced: the bytes past it
                    // would be read by the instance as another request.
                    return Err(SendError::Failed(bad(format!(
                        "the request body is longer than its Content-Length {n}"
                    ))));
                }
            }
            if let Err(e) = self.write_chunk(&data, framing).await {
                // The client is still sending: read and drop the rest, so
                // it gets to read whatever answer it receives (nginx's
                // lingering close).
                tokio::spawn(drain(body));
                return Err(if sent {
                    SendError::Failed(e)
                } else {
                    SendError::Closed(e)
                });
            }
            sent = true;
        }
        match framing {
            Framing::Chunked => self
                .stream
                .write_all(b"0\r\n\r\n")
                .await
                .map_err(SendError::Failed)?,
            Framing::Length(n) if written != n => {
                return Err(SendError::Failed(bad(format!(
                    "the request body ended after {written} of its {n} bytes"
                ))));
            }
            Framing::Length(_) => {}
        }
        Ok(())
    }

    async fn write_chunk(&mut self, data: &[u8], framing: Framing) -> io::Result<()> {
        if framing == Framing::Chunked {
            let size = format!("{:x}\r\n", data.len());
            self.stream.write_all(size.as_bytes()).await?;
            self.stream.write_all(data).await?;
            self.stream.write_all(b"\r\n").await
        } else {
            self.stream.write_all(data).await
        }
    }

    /// Reads until a complete final (non-1xx) response head.
    async fn read_head(
        &mut self,
        head_only: bool,
    ) -> Result<(StatusCode, HeaderMap, Reading), SendError> {
        let mut got_any = false;
        loop {
            if !self.buf.is_empty() {
                let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut parsed = httparse::Response::new(&mut slots);
                match parsed.parse(&self.buf) {
                    Ok(httparse::Status::Complete(len)) => {
                        let code = parsed.code.unwrap_or(0);
                        let status = StatusCode::from_u16(code).map_err(|_| {
                            SendError::Failed(bad(format!("invalid status {code}")))
                        })?;
                        if status.is_informational() {
                            if code == 101 {
                                return Err(SendError::Failed(bad(
                                    "101 Switching Protocols: upgrades are not proxied to native workers".into(),
                                )));
                            }
                            // 100 Continue, 103 Early Hints: not passed on.
                            self.buf.advance(len);
                            continue;
                        }
                        let version_10 = parsed.version == Some(0);
                        let (headers, info) = response_headers(parsed.headers)?;
                        self.buf.advance(len);
                        let no_body = head_only
                            || status == StatusCode::NO_CONTENT
                            || status == StatusCode::NOT_MODIFIED;
                        let keep_alive = !info.close && (!version_10 || info.keep_alive);
                        let body = if no_body {
                            Body::Empty
                        } else if info.chunked {
                            Body::Chunked(Chunk::Size)
                        } else if let Some(n) = info.length {
                            Body::Length(n)
                        } else {
                            Body::Close
                        };
                        let keep_alive = keep_alive && !matches!(body, Body::Close);
                        return Ok((status, headers, Reading { body, keep_alive }));
                    }
                    Ok(httparse::Status::Partial) if self.buf.len() > MAX_HEAD => {
                        return Err(SendError::Failed(bad(format!(
                            "response head larger than {MAX_HEAD} bytes"
                        ))));
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(e) => {
                        return Err(SendError::Failed(bad(format!("bad response head: {e}"))));
                    }
                }
            }
            self.buf.reserve(READ_CHUNK);
            let n = tokio_util::io::read_buf(&mut self.stream, &mut self.buf)
                .await
                .map_err(|e| {
                    if got_any {
                        SendError::Failed(e)
                    } else {
                        SendError::Closed(e)
                    }
                })?;
            if n == 0 {
                let e = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed before a complete response head",
                );
                return Err(if got_any {
                    SendError::Failed(e)
                } else {
                    SendError::Closed(e)
                });
            }
            got_any = true;
        }
    }

    /// Whether an idle connection is still open: nothing to read, no EOF.
    fn still_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// Reads and drops what is left of a request body (bounded by its own
/// limit and stall timeout), for at most [`DRAIN_FOR`].
async fn drain(mut body: UpBody) {
    let _ = tokio::time::timeout(DRAIN_FOR, async {
        while let Some(Ok(_)) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
        }
    })
    .await;
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

struct HeadInfo {
    length: Option<u64>,
    chunked: bool,
    close: bool,
    keep_alive: bool,
}

/// The end-to-end headers of a response, and what its framing headers say.
fn response_headers(raw: &[httparse::Header<'_>]) -> Result<(HeaderMap, HeadInfo), SendError> {
    let mut info = HeadInfo {
        length: None,
        chunked: false,
        close: false,
        keep_alive: false,
    };
    let mut named: Vec<String> = Vec::new();
    for h in raw {
        if h.name.eq_ignore_ascii_case("connection") {
            for t in String::from_utf8_lossy(h.value).split(',') {
                let t = t.trim().to_ascii_lowercase();
                match t.as_str() {
                    "close" => info.close = true,
                    "keep-alive" => info.keep_alive = true,
                    _ => named.push(t),
                }
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // RFC 9112 §6.3: chunked last means chunked; anything else
            // without chunked is read to close.
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if v.split(',').next_back().map(str::trim) == Some("chunked") {
                info.chunked = true;
            } else {
                info.close = true;
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            // Digits only, every value the same (RFC 9112 §6.3): anything
            // else is a bad response, never passed on.
            for part in h.value.split(|&b| b == b',') {
                let n = crate::php::response::parse_length(part)
                    .ok_or_else(|| SendError::Failed(bad("invalid Content-Length".into())))?;
                if info.length.is_some_and(|m| m != n) {
                    return Err(SendError::Failed(bad("conflicting Content-Length".into())));
                }
                info.length = Some(n);
            }
        }
    }
    let mut map = HeaderMap::with_capacity(raw.len());
    for h in raw {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            return Err(SendError::Failed(bad(format!(
                "invalid header name {:?}",
                h.name
            ))));
        };
        if super::proxy::not_forwarded(&name) || named.iter().any(|n| n == name.as_str()) {
            continue;
        }
        if name == http::header::CONTENT_LENGTH {
            continue; // the body is framed anew from what was checked (below)
        }
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| SendError::Failed(bad(format!("invalid value of {name}"))))?;
        map.append(name, value);
    }
    if let (Some(n), false) = (info.length, info.chunked) {
        map.insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    Ok((map, info))
}

/// How the rest of a response body is read.
pub struct Reading {
    body: Body,
    keep_alive: bool,
}

enum Body {
    Empty,
    Length(u64),
    Chunked(Chunk),
    Close,
}

#[derive(Clone, Copy)]
enum Chunk {
    /// Expecting a size line.
    Size,
    /// This many bytes of chunk data left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines until an empty one.
    Trailers,
}

/// An instance's idle connections, most recently used last.
#[derive(Default)]
pub struct IdlePool {
    conns: Mutex<VecDeque<(Conn, Instant)>>,
}

impl std::fmt::Debug for IdlePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.conns.lock().map_or(0, |q| q.len());
        write!(f, "IdlePool({n} idle)")
    }
}

impl IdlePool {
    /// The most recently used idle connection still fit for a request.
    pub fn take(&self) -> Option<Conn> {
        let now = Instant::now();
        let mut q = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        while q
            .front()
            .is_some_and(|(_, t)| now.duration_since(*t) > IDLE_FOR)
        {
            q.pop_front();
        }
        // Every reuse checks the connection first (one non-blocking read):
        // a connection the instance closed, or one with bytes it was never
        // asked for (a stray second response), must not carry a request.
        while let Some((mut c, _)) = q.pop_back() {
            if c.still_open() {
                c.reused = true;
                return Some(c);
            }
        }
        None
    }

    fn put(&self, c: Conn) {
        let mut q = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= MAX_IDLE {
            q.pop_front();
        }
        q.push_back((c, Instant::now()));
    }

    /// Closes every idle connection (the instance is going away).
    pub fn clear(&self) {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// A response body from an instance, read off the connection as the
/// client takes it. When it is complete the connection goes back to the
/// instance's pool; the lease (the request counted in flight) is held
/// until then.
pub struct Streaming {
    conn: Option<Conn>,
    reading: Reading,
    lease: Option<Lease>,
    /// The longest the instance may go without sending a byte of the body
    /// (nginx's `proxy_read_timeout`): then the response is cut.
    gap: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Streaming {
    /// The body of a response whose head `conn` just read; cut when the
    /// instance sends nothing for `gap`.
    pub fn new(conn: Conn, reading: Reading, lease: Lease, gap: Duration) -> Self {
        let mut s = Self {
            conn: Some(conn),
            reading,
            lease: Some(lease),
            gap,
            timer: None,
        };
        if matches!(s.reading.body, Body::Empty | Body::Length(0)) {
            // No body: hyper may never poll it.
            s.finish(true);
        }
        s
    }

    /// The body is complete (`clean`) or abandoned: the connection goes
    /// back to the pool if it can carry another request, and the request
    /// stops counting as in flight.
    fn finish(&mut self, clean: bool) {
        let conn = self.conn.take();
        if let Some(lease) = self.lease.take() {
            if let Some(c) = conn.filter(|c| clean && self.reading.keep_alive && c.buf.is_empty()) {
                lease.instance().idle.put(c);
            }
        }
    }

    /// Reads more into the buffer: Ok(false) at EOF.
    fn fill(conn: &mut Conn, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        conn.buf.reserve(READ_CHUNK);
        match tokio_util::io::poll_read_buf(Pin::new(&mut conn.stream), cx, &mut conn.buf) {
            Poll::Ready(Ok(n)) => Poll::Ready(Ok(n > 0)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn step(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        let eof = || {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the worker closed the connection mid-body",
            )
        };
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut self.reading.body {
                Body::Empty | Body::Length(0) => {
                    self.finish(true);
                    return Poll::Ready(None);
                }
                Body::Length(left) => {
                    if conn.buf.is_empty() {
                        match Self::fill(conn, cx) {
                            Poll::Ready(Ok(true)) => {}
                            Poll::Ready(Ok(false)) => return Poll::Ready(Some(Err(eof()))),
                            Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                            Poll::Pending => return Poll::Pending,
                        }
                    }
                    let n = (*left).min(conn.buf.len() as u64) as usize;
                    let data = conn.buf.split_to(n).freeze();
                    *left -= n as u64;
                    if *left == 0 {
                        // hyper stops polling a body that says it has ended.
                        self.finish(true);
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                Body::Close => {
                    if conn.buf.is_empty() {
                        match Self::fill(conn, cx) {
                            Poll::Ready(Ok(true)) => {}
                            Poll::Ready(Ok(false)) => {
                                self.finish(false);
                                return Poll::Ready(None);
                            }
                            Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                            Poll::Pending => return Poll::Pending,
                        }
                    }
                    return Poll::Ready(Some(Ok(conn.buf.split().freeze())));
                }
                Body::Chunked(state) => {
                    match *state {
                        Chunk::Data(left) => {
                            if !conn.buf.is_empty() {
                                let n = left.min(conn.buf.len() as u64) as usize;
                                let data = conn.buf.split_to(n).freeze();
                                *state = if left == n as u64 {
                                    Chunk::DataEnd
                                } else {
                                    Chunk::Data(left - n as u64)
                                };
                                return Poll::Ready(Some(Ok(data)));
                            }
                        }
                        Chunk::Size | Chunk::DataEnd | Chunk::Trailers => {
                            if let Some(end) = conn.buf.windows(2).position(|w| w == b"\r\n") {
                                let line = conn.buf.split_to(end + 2);
                                let line = &line[..end];
                                match *state {
                                    Chunk::Size => {
                                        let hex =
                                            line.split(|&b| b == b';').next().unwrap_or_default();
                                        let size = std::str::from_utf8(hex)
                                            .ok()
                                            .and_then(|h| u64::from_str_radix(h.trim(), 16).ok());
                                        match size {
                                            Some(0) => *state = Chunk::Trailers,
                                            Some(n) => *state = Chunk::Data(n),
                                            None => {
                                                return Poll::Ready(Some(Err(bad(
                                                    "bad chunk size line".into(),
                                                ))));
                                            }
                                        }
                                    }
                                    Chunk::DataEnd if line.is_empty() => *state = Chunk::Size,
                                    Chunk::DataEnd => {
                                        return Poll::Ready(Some(Err(bad(
                                            "missing CRLF after a chunk".into(),
                                        ))));
                                    }
                                    Chunk::Trailers if line.is_empty() => {
                                        self.finish(true);
                                        return Poll::Ready(None);
                                    }
                                    _ => {} // a trailer line: dropped
                                }
                                continue;
                            }
                            if conn.buf.len() > MAX_HEAD {
                                return Poll::Ready(Some(Err(bad("chunk line too long".into()))));
                            }
                        }
                    }
                    match Self::fill(conn, cx) {
                        Poll::Ready(Ok(true)) => {}
                        Poll::Ready(Ok(false)) => return Poll::Ready(Some(Err(eof()))),
                        Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                        Poll::Pending => return Poll::Pending,
                    }
                }
            }
        }
    }
}

impl http_body::Body for Streaming {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.step(cx) {
            Poll::Ready(Some(Ok(d))) => {
                self.timer = None;
                Poll::Ready(Some(Ok(Frame::data(d))))
            }
            Poll::Ready(Some(Err(e))) => {
                self.finish(false);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let gap = self.gap;
                let timer = self.timer.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until(Instant::now() + gap))
                });
                if timer.as_mut().poll(cx).is_ready() {
                    self.timer = None;
                    self.finish(false);
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the worker sent nothing for {gap:?} (scaling.request_timeout)"),
                    ))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || matches!(self.reading.body, Body::Empty | Body::Length(0))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.reading.body {
            Body::Empty => http_body::SizeHint::with_exact(0),
            Body::Length(n) => http_body::SizeHint::with_exact(n),
            _ => http_body::SizeHint::default(),
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        // Not read to the end: the connection is not reusable.
        self.finish(false);
    }
}

/// GET `path` from `addr` on a connection of its own (`Connection:
/// close`), for health checks: the answer's status, its body read (up to
/// 64 KiB) so the server is not reset while still writing it.
pub async fn get_status(addr: SocketAddr, path: &str) -> Result<StatusCode, String> {
    let mut conn = Conn::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let host = addr.to_string();
    let extra: [(&str, &[u8]); 3] = [
        ("host", host.as_bytes()),
        ("user-agent", b"tqserver-health"),
        ("connection", b"close"),
    ];
    let mut out = Outgoing {
        head: request_head(&http::Method::GET, path, std::iter::empty(), &extra, None),
        body: None,
        head_only: false,
    };
    let (status, _, reading) = conn.send(&mut out).await.map_err(|e| e.to_string())?;
    let mut body = Streaming {
        conn: Some(conn),
        reading,
        lease: None,
        gap: CONNECT_TIMEOUT * 5,
        timer: None,
    };
    let mut read = 0;
    while read <= MAX_HEAD {
        match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            Some(Ok(f)) => read += f.data_ref().map_or(0, Bytes::len),
            _ => break,
        }
    }
    Ok(status)
}

/// Serialises a request head: request line, the client's end-to-end
/// headers (the caller has dropped every framing header), `extra` lines,
/// the framing of `body` as TQServer will send it, blank line.
pub fn request_head<'a>(
    method: &http::Method,
    target: &str,
    headers: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    extra: &[(&str, &[u8])],
    body: Option<Framing>,
) -> Bytes {
    let mut out = BytesMut::with_capacity(512);
    out.extend_from_slice(method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (k, v) in headers {
        out.extend_from_slice(k.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (k, v) in extra {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    match body {
        Some(Framing::Chunked) => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Some(Framing::Length(n)) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        None if matches!(
            *method,
            http::Method::POST | http::Method::PUT | http::Method::PATCH
        ) =>
        {
            out.extend_from_slice(b"content-length: 0\r\n");
        }
        None => {}
    }
    out.extend_from_slice(b"\r\n");
    out.freeze()
}

/// A response for the client from what the instance sent.
pub fn response(
    status: StatusCode,
    headers: HeaderMap,
    body: Streaming,
) -> Response<crate::http::Body> {
    use http_body_util::BodyExt;
    let mut r = Response::new(body.boxed_unsync());
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}
