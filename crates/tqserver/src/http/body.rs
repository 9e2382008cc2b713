//! The request body as a stream of chunks for the backend, enforcing
//! `server.max_body_bytes` as it goes and failing when the client pauses
//! longer than the read timeout; and bodies received whole before a
//! backend sees them ([`buffer`]: PHP's processes are too few to wait on
//! slow clients), in memory or an unnamed temporary file, with every
//! buffered byte counted against one [`Budget`].

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use http_body::Body as _;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// HTTP-side limits a proxied request is held to.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `server.max_body_bytes`.
    pub max_body_bytes: u64,
    /// `server.read_timeout_seconds`: longest pause in a request body
    /// (nginx `client_body_timeout`: between two reads, then 408).
    pub read_timeout: Duration,
    /// `server.body_buffer_size`: a buffered body stays in memory up to
    /// this size.
    pub body_buffer_size: u64,
    /// Every buffered body's bytes together (`server.max_buffered_bytes`).
    pub budget: Arc<Budget>,
}

/// The bytes of every request body being buffered, memory and
/// temporary files together, against `server.max_buffered_bytes`: many
/// slow or large uploads at once cannot fill the disk or the memory.
#[derive(Debug)]
pub struct Budget {
    limit: AtomicU64,
    used: AtomicU64,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit: AtomicU64::new(limit),
            used: AtomicU64::new(0),
        })
    }

    /// A reloaded configuration's limit (bodies already held keep theirs).
    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Release);
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Takes `n` more bytes for `held`, unless that would pass the limit.
    fn take(&self, held: &mut Held, n: u64) -> bool {
        let limit = self.limit.load(Ordering::Acquire);
        let ok = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|t| *t <= limit)
            })
            .is_ok();
        if ok {
            held.bytes += n;
        }
        ok
    }
}

/// The bytes of one buffered body, given back when it is dropped (the
/// body was sent, or the request ended).
#[derive(Debug)]
pub struct Held {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A request body received whole.
pub enum Buffered {
    /// Small enough for memory.
    Memory(Bytes),
    /// In an unnamed temporary file (gone when closed), rewound.
    File(tokio::fs::File),
}

/// A whole body, its length, and its hold on the budget (drop it once
/// the body has been sent).
pub struct Whole {
    /// The bytes.
    pub body: Buffered,
    /// How many.
    pub len: u64,
    /// Keeps them counted.
    pub held: Held,
}

/// Receives `body` whole before anything is sent on (nginx's
/// `fastcgi_request_buffering on`), so a slow client holds only a
/// connection, never a PHP process: in memory up to `body_buffer_size`,
/// then in an unnamed temporary file, every byte counted against the
/// budget (past it: [`BodyError::Busy`]), each pause bounded by the read
/// timeout, the whole by `max_body_bytes`.
pub async fn buffer(
    body: Incoming,
    limits: &Limits,
    bytes_in: Option<&BytesIn>,
) -> Result<Whole, BodyError> {
    use tokio::io::{AsyncSeekExt, AsyncWriteExt};
    let mut s =
        LimitedBody::new(body, limits.max_body_bytes, limits.read_timeout).counting(bytes_in);
    let mut held = Held {
        budget: limits.budget.clone(),
        bytes: 0,
    };
    let in_memory = usize::try_from(limits.body_buffer_size).unwrap_or(usize::MAX);
    let mut mem = bytes::BytesMut::new();
    let mut file: Option<tokio::fs::File> = None;
    let mut len = 0u64;
    let io = |e: std::io::Error| BodyError::Spool(e);
    while let Some(chunk) = std::future::poll_fn(|cx| Pin::new(&mut s).poll_next(cx)).await {
        let chunk = chunk?;
        if !limits.budget.take(&mut held, chunk.len() as u64) {
            return Err(BodyError::Busy(limits.budget.limit.load(Ordering::Acquire)));
        }
        len += chunk.len() as u64;
        match file.as_mut() {
            None if mem.len() + chunk.len() <= in_memory => mem.extend_from_slice(&chunk),
            None => {
                let mut f = tokio::fs::File::from_std(tempfile::tempfile().map_err(io)?);
                f.write_all(&mem).await.map_err(io)?;
                f.write_all(&chunk).await.map_err(io)?;
                mem = bytes::BytesMut::new();
                file = Some(f);
            }
            Some(f) => f.write_all(&chunk).await.map_err(io)?,
        }
    }
    let body = match file {
        None => Buffered::Memory(mem.freeze()),
        Some(mut f) => {
            f.flush().await.map_err(io)?;
            f.rewind().await.map_err(io)?;
            Buffered::File(f)
        }
    };
    Ok(Whole { body, len, held })
}

/// After an early 413, at most this much of the body is read and dropped.
const DISCARD_AT_MOST: u64 = 16 << 20;

/// A `Content-Length` value: decimal digits only (RFC 9110 §8.6: `1*DIGIT`;
/// no sign, no spaces inside, no hex), at most 19 of them. Every length
/// TQServer reads from a peer (PHP, a worker) goes through this.
pub fn parse_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The request's `Content-Length`, if it has a valid one.
pub fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// A request that declares a body over the limit gets 413 at once; a
/// bounded part of its body is read and dropped in the background, so the
/// client is not reset while still sending and sees the answer.
pub fn refuse_oversized(
    req: http::Request<Incoming>,
    limits: &Limits,
) -> Result<http::Request<Incoming>, Box<http::Response<super::Body>>> {
    if declared_length(req.headers()).is_none_or(|n| n <= limits.max_body_bytes) {
        return Ok(req);
    }
    tokio::spawn(discard(req.into_body(), limits.clone()));
    Err(Box::new(too_large(limits.max_body_bytes)))
}

/// Reads and drops up to [`DISCARD_AT_MOST`] of a body, for at most the
/// read timeout.
async fn discard(body: Incoming, limits: Limits) {
    let mut s = LimitedBody::new(body, DISCARD_AT_MOST, limits.read_timeout);
    let _ = tokio::time::timeout(limits.read_timeout, async {
        while let Some(Ok(_)) = std::future::poll_fn(|cx| Pin::new(&mut s).poll_next(cx)).await {}
    })
    .await;
}

/// 413, closing the connection.
pub fn too_large(limit: u64) -> http::Response<super::Body> {
    let mut r = super::pages::error(
        http::StatusCode::PAYLOAD_TOO_LARGE,
        &format!("The request body is larger than this server accepts ({limit} bytes)."),
    );
    // The rest of the body is not read: the connection cannot carry
    // another request, and the client must know before it tries (nginx
    // closes too).
    r.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    r
}

/// The answer when reading the request body failed.
pub fn error_page(e: &BodyError) -> http::Response<super::Body> {
    use http::StatusCode;
    match e {
        BodyError::TooLarge(n) => too_large(*n),
        BodyError::Stalled(d) => super::pages::error(
            StatusCode::REQUEST_TIMEOUT,
            &format!("The request body stopped arriving for {d:?}."),
        ),
        BodyError::Read(_) => super::pages::error(
            StatusCode::BAD_REQUEST,
            "The request body could not be read.",
        ),
        BodyError::Busy(limit) => {
            tracing::warn!(
                "503: request bodies being received already hold {limit} bytes (server.max_buffered_bytes)"
            );
            let mut r = super::pages::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The server is receiving too many request bodies at once; try again shortly.",
            );
            r.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("5"),
            );
            r.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
            r
        }
        BodyError::Spool(e) => {
            tracing::error!("cannot buffer a request body: {e}");
            super::pages::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The request body could not be buffered.",
            )
        }
    }
}

/// Why reading the request body stopped.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// More than `max_body_bytes`.
    #[error("the request body is larger than {0} bytes")]
    TooLarge(u64),
    /// The client sent nothing for the read timeout.
    #[error("the client sent no body data for {0:?}")]
    Stalled(Duration),
    /// The connection failed.
    #[error("reading the request body failed: {0}")]
    Read(#[from] hyper::Error),
    /// Writing the body to a temporary file failed.
    #[error("buffering the request body failed: {0}")]
    Spool(std::io::Error),
    /// Buffering it would pass `server.max_buffered_bytes` (this many).
    #[error("request bodies being buffered would pass {0} bytes")]
    Busy(u64),
}

impl BodyError {
    /// Finds a `BodyError` inside an I/O error from the FastCGI client.
    pub fn find(e: &std::io::Error) -> Option<&BodyError> {
        e.get_ref().and_then(|i| i.downcast_ref::<BodyError>())
    }
}

pin_project_lite::pin_project! {
    /// `Incoming` as chunks, bounded and with a stall timeout.
    pub struct LimitedBody {
        #[pin]
        inner: Incoming,
        limit: u64,
        seen: u64,
        stall: Duration,
        timer: Option<Pin<Box<Sleep>>>,
        done: bool,
        counter: Option<prometheus_client::metrics::counter::Counter>,
    }
}

/// A request extension: the route's request-body byte counter, which the
/// proxies hand to [`LimitedBody::counting`].
#[derive(Clone, Debug)]
pub struct BytesIn(pub prometheus_client::metrics::counter::Counter);

impl LimitedBody {
    /// Wraps a request body.
    pub fn new(inner: Incoming, limit: u64, stall: Duration) -> Self {
        Self {
            inner,
            limit,
            seen: 0,
            stall,
            timer: None,
            done: false,
            counter: None,
        }
    }

    /// Adds every byte read to the route's counter, if the request has one.
    pub fn counting(mut self, to: Option<&BytesIn>) -> Self {
        self.counter = to.map(|b| b.0.clone());
        self
    }
}

impl Stream for LimitedBody {
    type Item = Result<Bytes, BodyError>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        loop {
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers: not part of CGI
                    };
                    *this.timer = None;
                    *this.seen += data.len() as u64;
                    if let Some(c) = this.counter {
                        c.inc_by(data.len() as u64);
                    }
                    if *this.seen > *this.limit {
                        *this.done = true;
                        return Poll::Ready(Some(Err(BodyError::TooLarge(*this.limit))));
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                Poll::Ready(Some(Err(e))) => {
                    *this.done = true;
                    return Poll::Ready(Some(Err(BodyError::Read(e))));
                }
                Poll::Ready(None) => {
                    *this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    let stall = *this.stall;
                    let timer = this.timer.get_or_insert_with(|| {
                        Box::pin(tokio::time::sleep_until(Instant::now() + stall))
                    });
                    if timer.as_mut().poll(cx).is_ready() {
                        *this.done = true;
                        return Poll::Ready(Some(Err(BodyError::Stalled(stall))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// The same chunks as an HTTP body, for proxying to native workers.
impl http_body::Body for LimitedBody {
    type Data = Bytes;
    type Error = BodyError;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BodyError>>> {
        self.poll_next(cx)
            .map(|o| o.map(|r| r.map(http_body::Frame::data)))
    }
    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
