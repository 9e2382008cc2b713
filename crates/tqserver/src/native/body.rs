//! A response body from an instance, read off its connection as the
//! client takes it (decoded by [`super::h1`]). When it is complete the
//! connection goes back to its idle pool; whatever the caller gave it to
//! hold (the request's lease on the instance) is held until then, so a
//! drain waits for a response still streaming. A body that pauses longer
//! than its gap timeout is cut (nginx's `proxy_read_timeout`).

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::Frame;
use tokio::time::Instant;

use super::conn::Conn;
use super::h1::{self, BodyKind, Decoded};
use super::pool::IdlePool;

/// How the rest of the body is read.
enum Reading {
    Empty,
    Length(u64),
    Chunked(h1::Chunked),
    Close,
}

/// The body of one response; `G` is held until it is done.
pub struct Streaming<G> {
    conn: Option<Conn>,
    reading: Reading,
    keep_alive: bool,
    /// Where the connection goes when the body is complete.
    home: Option<Arc<IdlePool>>,
    guard: Option<G>,
    gap: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<G> Streaming<G> {
    /// The body of the response whose `head` `conn` just read: its
    /// connection goes back to `home` when complete, `guard` is dropped
    /// then, and it is cut when the instance sends nothing for `gap`.
    pub fn new(
        conn: Conn,
        head: &h1::Head,
        home: Option<Arc<IdlePool>>,
        guard: Option<G>,
        gap: Duration,
    ) -> Self {
        let reading = match head.body {
            BodyKind::Empty | BodyKind::Length(0) => Reading::Empty,
            BodyKind::Length(n) => Reading::Length(n),
            BodyKind::Chunked => Reading::Chunked(h1::Chunked::default()),
            BodyKind::Close => Reading::Close,
        };
        let mut s = Self {
            conn: Some(conn),
            reading,
            keep_alive: head.keep_alive,
            home,
            guard,
            gap,
            timer: None,
        };
        if matches!(s.reading, Reading::Empty) {
            // No body: hyper may never poll it.
            s.finish(true);
        }
        s
    }

    /// The body is complete (`clean`) or abandoned: the connection goes
    /// back to the pool if it can carry another request, and the guard
    /// goes.
    fn finish(&mut self, clean: bool) {
        let conn = self.conn.take();
        if let (Some(c), Some(home)) = (conn, self.home.as_ref()) {
            if clean && self.keep_alive && c.buf.is_empty() && c.whole() {
                home.put(c);
            }
        }
        self.guard = None;
    }

    /// The body ends unfinished: said in the log (the client only sees
    /// its connection closed), with the instance's port.
    fn cut(&mut self, e: &io::Error) {
        let port = self.conn.as_ref().map_or(0, Conn::port);
        tracing::warn!(port, "a worker's answer was cut: {e}");
        self.finish(false);
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
            match &mut self.reading {
                Reading::Empty => {
                    self.finish(true);
                    return Poll::Ready(None);
                }
                Reading::Length(left) => {
                    if conn.buf.is_empty() {
                        match conn.fill(cx) {
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
                        self.reading = Reading::Empty;
                        self.finish(true);
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                Reading::Close => {
                    if conn.buf.is_empty() {
                        match conn.fill(cx) {
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
                Reading::Chunked(decoder) => {
                    match decoder.decode(&mut conn.buf) {
                        Ok(Some(Decoded::Data(d))) => return Poll::Ready(Some(Ok(d))),
                        Ok(Some(Decoded::End)) => {
                            self.finish(true);
                            return Poll::Ready(None);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            return Poll::Ready(Some(Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                e.0,
                            ))));
                        }
                    }
                    match conn.fill(cx) {
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

impl<G: Unpin> http_body::Body for Streaming<G> {
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
                self.cut(&e);
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
                    let e = io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the worker sent nothing for {gap:?} (proxy.read_timeout)"),
                    );
                    self.cut(&e);
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || matches!(self.reading, Reading::Empty)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.reading {
            Reading::Empty => http_body::SizeHint::with_exact(0),
            Reading::Length(n) => http_body::SizeHint::with_exact(n),
            _ => http_body::SizeHint::default(),
        }
    }
}

impl<G> Drop for Streaming<G> {
    fn drop(&mut self) {
        // Not read to the end: the connection is not reusable.
        self.finish(false);
    }
}

/// A response for the client from what the instance sent.
pub fn response<G: Unpin + Send + 'static>(
    head: h1::Head,
    body: Streaming<G>,
) -> Response<crate::http::Body> {
    use http_body_util::BodyExt;
    let mut r = Response::new(body.boxed_unsync());
    *r.status_mut() = head.status;
    *r.headers_mut() = head.headers;
    r
}
