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
    }
}

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
        }
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
