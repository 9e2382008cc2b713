//! Connection timeouts hyper does not have, and the one stream wrapper
//! the PROXY protocol needs.
//!
//! - Before its first request, a connection has `server.read_timeout` (or
//!   `idle_timeout`, if shorter) to deliver one (hyper's
//!   `header_read_timeout` covers HTTP/1 only; an HTTP/2 client could
//!   otherwise sit after its preface forever).
//! - With no request in flight, a connection is closed `idle_timeout`
//!   after its last request ended. For HTTP/1 the bytes of a new request
//!   head count as activity (hyper's header timeout then bounds them); for
//!   HTTP/2 they do not: PING and SETTINGS frames never keep an idle
//!   connection open.
//! - A write that stalls for `write_timeout` fails.
//!
//! The request body stream has its own stall timeout ([`super::body`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Counts the requests of one connection still being answered (until
/// their response body is done), and when the last one ended.
#[derive(Debug, Clone)]
pub struct InFlight(Arc<State>);

#[derive(Debug)]
struct State {
    count: AtomicUsize,
    /// When the connection was accepted.
    base: Instant,
    /// Nanoseconds after `base` at which the count last fell to zero;
    /// `u64::MAX` while no request has ever ended.
    idle_since: AtomicU64,
}

impl Default for InFlight {
    fn default() -> Self {
        Self(Arc::new(State {
            count: AtomicUsize::new(0),
            base: Instant::now(),
            idle_since: AtomicU64::new(u64::MAX),
        }))
    }
}

impl InFlight {
    /// One more request in progress until the guard drops.
    pub fn enter(&self) -> InFlightGuard {
        self.0.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.0.clone())
    }

    fn idle(&self) -> bool {
        self.0.count.load(Ordering::Acquire) == 0
    }

    /// When the last request ended; `None` before any has.
    fn idle_since(&self) -> Option<Instant> {
        match self.0.idle_since.load(Ordering::Acquire) {
            u64::MAX => None,
            n => Some(self.0.base + Duration::from_nanos(n)),
        }
    }
}

/// Marks one request in progress.
#[derive(Debug)]
pub struct InFlightGuard(Arc<State>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            let n = self
                .0
                .base
                .elapsed()
                .as_nanos()
                .min(u128::from(u64::MAX - 1)) as u64;
            self.0.idle_since.store(n, Ordering::Release);
        }
    }
}

/// The timeouts of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// `server.read_timeout_seconds`: until the first request.
    pub first_request: Duration,
    /// `server.idle_timeout_seconds`: between requests.
    pub idle: Duration,
    /// `server.write_timeout_seconds`: a stalled write.
    pub write: Duration,
}

/// Which protocol the connection speaks, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Unknown,
    Http1,
    Http2,
}

/// The HTTP/2 client preface (RFC 9113 §3.4) starts so.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

pin_project_lite::pin_project! {
    /// A byte stream with the connection timeouts above.
    pub struct TimeoutIo<T> {
        #[pin]
        inner: T,
        timeouts: Timeouts,
        inflight: InFlight,
        proto: Proto,
        accepted: Instant,
        last_read: Instant,
        write_blocked_since: Option<Instant>,
        timer: Pin<Box<Sleep>>,
    }
}

impl<T> TimeoutIo<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, timeouts: Timeouts, inflight: InFlight) -> Self {
        let now = Instant::now();
        Self {
            inner,
            timeouts,
            inflight,
            proto: Proto::Unknown,
            accepted: now,
            last_read: now,
            write_blocked_since: None,
            timer: Box::pin(tokio::time::sleep_until(
                now + timeouts.first_request.min(timeouts.idle),
            )),
        }
    }
}

/// When a connection with no request in flight is closed.
fn idle_deadline(
    t: &Timeouts,
    proto: Proto,
    inflight: &InFlight,
    accepted: Instant,
    last_read: Instant,
) -> Instant {
    match inflight.idle_since() {
        // No request yet: the header read timeout (or the idle timeout,
        // if shorter), whatever arrives meanwhile.
        None => accepted + t.first_request.min(t.idle),
        Some(since) if proto == Proto::Http2 => since + t.idle,
        Some(since) => since.max(last_read) + t.idle,
    }
}

/// A timer may fire up to this much before its deadline rather than be
/// moved on every request (moving a tokio timer takes the timer wheel's
/// lock); an early wake just re-arms it.
const SLACK: Duration = Duration::from_secs(1);

/// Arms `timer` for `at`; true when `at` has passed.
fn expired(timer: &mut Pin<Box<Sleep>>, at: Instant, cx: &mut Context<'_>) -> bool {
    let now = Instant::now();
    if now >= at {
        return true;
    }
    let armed = timer.deadline();
    // Keep an armed timer that fires at most SLACK early (and not late);
    // one that already fired is re-armed.
    if armed > at || armed + SLACK < at || armed <= now {
        timer.as_mut().reset(at);
    }
    // Registers the waker; it fires at `at` and the next poll decides.
    let _ = timer.as_mut().poll(cx);
    false
}

impl<T: AsyncRead> AsyncRead for TimeoutIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        match this.inner.poll_read(cx, buf) {
            Poll::Ready(r) => {
                let got = &buf.filled()[before..];
                if !got.is_empty() {
                    *this.last_read = Instant::now();
                    if *this.proto == Proto::Unknown {
                        let n = got.len().min(H2_PREFACE.len());
                        *this.proto = if got[..n] == H2_PREFACE[..n] {
                            Proto::Http2
                        } else {
                            Proto::Http1
                        };
                    }
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if this.inflight.idle() {
                    let at = idle_deadline(
                        this.timeouts,
                        *this.proto,
                        this.inflight,
                        *this.accepted,
                        *this.last_read,
                    );
                    if expired(this.timer, at, cx) {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "idle timeout",
                        )));
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite> TimeoutIo<T> {
    /// Runs one write; a write that stays pending past the write timeout fails.
    fn write_with(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        match write(this.inner, cx) {
            Poll::Ready(r) => {
                *this.write_blocked_since = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let since = *this.write_blocked_since.get_or_insert_with(Instant::now);
                if expired(this.timer, since + this.timeouts.write, cx) {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "write timeout",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite> AsyncWrite for TimeoutIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write_with(cx, |inner, cx| inner.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.write_with(cx, |inner, cx| inner.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

pin_project_lite::pin_project! {
    /// A stream whose first bytes were read already (past a PROXY
    /// protocol header): they are read again first.
    pub struct Rewind<T> {
        prefix: Bytes,
        #[pin]
        inner: T,
    }
}

impl<T> Rewind<T> {
    /// `inner`, with `prefix` read before it.
    pub fn new(prefix: Bytes, inner: T) -> Self {
        Self { prefix, inner }
    }
}

impl<T: AsyncRead> AsyncRead for Rewind<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        this.inner.poll_read(cx, buf)
    }
}

impl<T: AsyncWrite> AsyncWrite for Rewind<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
