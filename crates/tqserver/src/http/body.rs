//! The request body as a stream of chunks for the backend, enforcing
//! `server.max_body_bytes` as it goes and failing when the client pauses
//! longer than the read timeout.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use http_body::Body as _;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// HTTP-side limits a proxied request is held to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `server.max_body_bytes`.
    pub max_body_bytes: u64,
    /// `server.read_timeout_seconds`: longest pause in a request body.
    pub read_timeout: Duration,
}

/// After an early 413, at most this much of the body is read and dropped.
const DISCARD_AT_MOST: u64 = 16 << 20;

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
    limits: Limits,
) -> Result<http::Request<Incoming>, Box<http::Response<super::Body>>> {
    if declared_length(req.headers()).is_none_or(|n| n <= limits.max_body_bytes) {
        return Ok(req);
    }
    tokio::spawn(discard(req.into_body(), limits));
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
