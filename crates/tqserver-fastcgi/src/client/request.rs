//! What the client sends: a role, the CGI params, and a request body from
//! any source (bytes in memory, a `Stream` of chunks, an `AsyncRead`).

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use tokio::io::AsyncRead;

use crate::proto::{Params, Role};

/// Receives the application's `STDERR` output, one line at a time (without
/// the line end). PHP's `error_log()`, warnings and notices arrive here.
pub type StderrSink = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// A request to send to the application.
pub struct Request {
    pub(crate) role: Role,
    pub(crate) params: Params,
    pub(crate) body: RequestBody,
    pub(crate) on_stderr: Option<StderrSink>,
}

impl Request {
    /// A Responder request with these params and no body.
    pub fn new(params: Params) -> Self {
        Self {
            role: Role::Responder,
            params,
            body: RequestBody::empty(),
            on_stderr: None,
        }
    }

    /// Sets the body (remember `CONTENT_LENGTH` in the params).
    #[must_use]
    pub fn body(mut self, body: impl Into<RequestBody>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets the role (default Responder).
    #[must_use]
    pub fn role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    /// Sends this request's `STDERR` lines here instead of the client's
    /// default sink (to tag them with the request, for example).
    #[must_use]
    pub fn on_stderr(mut self, sink: impl Fn(&[u8]) + Send + Sync + 'static) -> Self {
        self.on_stderr = Some(Arc::new(sink));
        self
    }

    /// The params.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The params, to change.
    pub fn params_mut(&mut self) -> &mut Params {
        &mut self.params
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("role", &self.role)
            .field("params", &self.params)
            .field("body", &self.body)
            .finish_non_exhaustive()
    }
}

type BoxStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// A request body. Bytes in memory are sent without copying into a second
/// buffer of the same size and can be replayed on a retry; streams are read
/// as the application accepts data, so a large upload never sits in memory.
pub struct RequestBody {
    kind: Kind,
}

enum Kind {
    Empty,
    Full(Bytes),
    Stream(BoxStream),
}

impl RequestBody {
    /// No body.
    pub fn empty() -> Self {
        Self { kind: Kind::Empty }
    }

    /// A body from a stream of chunks (an HTTP body, a channel…).
    pub fn from_stream<S, E>(stream: S) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        Self {
            kind: Kind::Stream(Box::pin(MapErr { inner: stream })),
        }
    }

    /// A body read from an `AsyncRead` (a file, a pipe…).
    pub fn from_reader<R: AsyncRead + Send + 'static>(reader: R) -> Self {
        Self {
            kind: Kind::Stream(Box::pin(tokio_util::io::ReaderStream::with_capacity(
                reader,
                64 << 10,
            ))),
        }
    }

    /// The bytes, if the body is in memory (what a retry can resend).
    pub(crate) fn replayable(&self) -> Option<Bytes> {
        match &self.kind {
            Kind::Empty => Some(Bytes::new()),
            Kind::Full(b) => Some(b.clone()),
            Kind::Stream(_) => None,
        }
    }

    /// The next chunk; empty chunks are skipped (an empty `STDIN` record
    /// would end the stream early).
    pub(crate) fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        match &mut self.kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(_) => {
                let Kind::Full(b) = std::mem::replace(&mut self.kind, Kind::Empty) else {
                    unreachable!()
                };
                Poll::Ready((!b.is_empty()).then_some(Ok(b)))
            }
            Kind::Stream(s) => loop {
                match s.as_mut().poll_next(cx) {
                    Poll::Ready(Some(Ok(b))) if b.is_empty() => continue,
                    other => return other,
                }
            },
        }
    }
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Empty => f.write_str("Empty"),
            Kind::Full(b) => write!(f, "Full({} bytes)", b.len()),
            Kind::Stream(_) => f.write_str("Stream"),
        }
    }
}

impl Default for RequestBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<Bytes> for RequestBody {
    fn from(b: Bytes) -> Self {
        Self {
            kind: Kind::Full(b),
        }
    }
}

impl From<Vec<u8>> for RequestBody {
    fn from(b: Vec<u8>) -> Self {
        Bytes::from(b).into()
    }
}

impl From<String> for RequestBody {
    fn from(b: String) -> Self {
        Bytes::from(b).into()
    }
}

impl From<&'static str> for RequestBody {
    fn from(b: &'static str) -> Self {
        Bytes::from_static(b.as_bytes()).into()
    }
}

impl From<&'static [u8]> for RequestBody {
    fn from(b: &'static [u8]) -> Self {
        Bytes::from_static(b).into()
    }
}

pin_project_lite::pin_project! {
    struct MapErr<S> {
        #[pin]
        inner: S,
    }
}

impl<S, E> Stream for MapErr<S>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Item = io::Result<Bytes>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.project()
            .inner
            .poll_next(cx)
            .map(|o| o.map(|r| r.map_err(io::Error::other)))
    }
}
