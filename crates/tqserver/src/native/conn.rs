//! HTTP/1.1 connections to an instance, kept alive between requests and
//! driven inside the request's own task: hyper's connection future is
//! polled together with the response (head, then body), so a proxied
//! request costs no hop to another task, the way the FastCGI client works.
//! Idle connections wait in their instance's [`IdlePool`], most recent
//! first.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::Lease;
use crate::http::body::BodyError;

/// The request body sent to an instance.
pub type UpBody = BoxBody<Bytes, BodyError>;

/// An idle connection older than this is closed rather than reused (below
/// the 60 s+ idle timeouts of common HTTP servers, so we close first).
const IDLE_FOR: Duration = Duration::from_secs(30);
/// Idle connections kept per instance at most.
const MAX_IDLE: usize = 256;
/// Connecting to an instance on this machine takes microseconds; a
/// connect that takes longer means it is gone or stuck.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One connection: the sender and the connection future that does the I/O.
pub struct Conn {
    send: http1::SendRequest<UpBody>,
    io: Pin<Box<http1::Connection<TokioIo<TcpStream>, UpBody>>>,
    /// Came from the idle pool (so a failure before any byte of answer may
    /// just mean the instance closed it meanwhile).
    pub reused: bool,
}

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// Nothing of the request was written (dead pooled connection, refused
    /// connect): the request comes back and may go elsewhere.
    NotSent(Box<Request<UpBody>>, String),
    /// The request was (possibly) sent; no answer came.
    Failed(hyper::Error),
}

impl Conn {
    /// Opens a connection to `addr`.
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        stream.set_nodelay(true)?;
        let (send, io) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        Ok(Self {
            send,
            io: Box::pin(io),
            reused: false,
        })
    }

    /// Sends `req` and drives the connection until the response head.
    pub async fn send(&mut self, req: Request<UpBody>) -> Result<Response<Incoming>, SendError> {
        let mut fut = std::pin::pin!(self.send.try_send_request(req));
        let mut closed = false;
        let io = &mut self.io;
        std::future::poll_fn(|cx| {
            if !closed {
                // The connection future ends only when the connection does.
                if io.as_mut().poll(cx).is_ready() {
                    closed = true;
                }
            }
            fut.as_mut().poll(cx)
        })
        .await
        .map_err(|mut e| match e.take_message() {
            Some(req) => SendError::NotSent(Box::new(req), e.into_error().to_string()),
            None => SendError::Failed(e.into_error()),
        })
    }

    /// Makes what progress the connection can (call while its response
    /// body is read); false once the connection is gone.
    fn poll_io(&mut self, cx: &mut Context<'_>) -> bool {
        self.io.as_mut().poll(cx).is_pending()
    }

    fn reusable(&self) -> bool {
        self.send.is_ready()
    }
}

/// An instance's idle connections.
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
        let mut q = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // Oldest first at the front: drop the stale ones.
        while q
            .front()
            .is_some_and(|(_, t)| now.duration_since(*t) > IDLE_FOR)
        {
            q.pop_front();
        }
        while let Some((mut c, _)) = q.pop_back() {
            if c.reusable() {
                c.reused = true;
                return Some(c);
            }
        }
        None
    }

    pub(super) fn put(&self, c: Conn) {
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

pin_project_lite::pin_project! {
    /// A response body from an instance. Reading it also drives the
    /// connection; once it is done, the connection goes back to the
    /// instance's pool. The lease (the request counted in flight) is held
    /// until then.
    pub struct Streaming {
        #[pin]
        body: Incoming,
        conn: Option<Conn>,
        lease: Lease,
    }
}

impl Streaming {
    /// Wraps a response body read over `conn`.
    pub fn new(body: Incoming, conn: Conn, lease: Lease) -> Self {
        let mut s = Self {
            body,
            conn: Some(conn),
            lease,
        };
        if http_body::Body::is_end_stream(&s.body) {
            // No body to read (204, 304, HEAD, length 0): hyper may never
            // poll it, so the connection goes back now.
            s.give_back_now();
        }
        s
    }

    fn give_back_now(&mut self) {
        let Some(mut c) = self.conn.take() else {
            return;
        };
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        if c.poll_io(&mut cx) && c.reusable() {
            self.lease.instance().idle.put(c);
        }
    }
}

impl http_body::Body for Streaming {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        if let Some(c) = this.conn.as_mut() {
            if !c.poll_io(cx) {
                // Closed: what it already read is still in the body.
                *this.conn = None;
            }
        }
        let r = this.body.as_mut().poll_frame(cx);
        let done = match &r {
            Poll::Ready(None) => Some(true),
            Poll::Ready(Some(Err(_))) => Some(false),
            // hyper stops polling a body that says it has ended.
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => Some(true),
            _ => None,
        };
        if let Some(clean) = done {
            if let Some(mut c) = this.conn.take() {
                // One more turn lets the dispatcher see the message is
                // complete and become idle.
                if clean && c.poll_io(cx) && c.reusable() {
                    this.lease.instance().idle.put(c);
                }
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
