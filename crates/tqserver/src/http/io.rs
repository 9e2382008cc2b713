//! Connection timeouts hyper does not have: a keep-alive connection with
//! no request in flight is closed after `idle_timeout`, and a write that
//! stalls for `write_timeout` fails. (hyper's `header_read_timeout` covers
//! clients that never finish their headers; the request body stream has
//! its own stall timeout.)

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Counts the requests of one connection still being answered (until
/// their response body is done).
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// One more request in progress until the guard drops.
    pub fn enter(&self) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.0.clone())
    }

    fn idle(&self) -> bool {
        self.0.load(Ordering::Acquire) == 0
    }
}

/// Marks one request in progress.
#[derive(Debug)]
pub struct InFlightGuard(Arc<AtomicUsize>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// A byte stream with idle and write-stall timeouts.
    pub struct TimeoutIo<T> {
        #[pin]
        inner: T,
        idle: Duration,
        write: Duration,
        inflight: InFlight,
        last_activity: Instant,
        write_blocked_since: Option<Instant>,
        timer: Pin<Box<Sleep>>,
    }
}

impl<T> TimeoutIo<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, idle: Duration, write: Duration, inflight: InFlight) -> Self {
        let now = Instant::now();
        Self {
            inner,
            idle,
            write,
            inflight,
            last_activity: now,
            write_blocked_since: None,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
        }
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
        match this.inner.poll_read(cx, buf) {
            Poll::Ready(r) => {
                *this.last_activity = Instant::now();
                Poll::Ready(r)
            }
            Poll::Pending => {
                if this.inflight.idle() && expired(this.timer, *this.last_activity + *this.idle, cx)
                {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "keep-alive idle timeout",
                    )));
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
                *this.last_activity = Instant::now();
                *this.write_blocked_since = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let since = *this.write_blocked_since.get_or_insert_with(Instant::now);
                if expired(this.timer, since + *this.write, cx) {
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
