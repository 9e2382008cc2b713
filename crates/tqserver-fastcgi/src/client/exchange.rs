//! One request/response exchange on a pooled connection, as a poll-driven
//! state machine: every poll for response records also pushes request
//! body (`STDIN`) records, so a script that answers before it has read its
//! whole body never deadlocks against us, and no task is spawned.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{Instant, Sleep};

use super::pool::Pooled;
use super::request::RequestBody;
use super::{ClientConfig, ClientError};
use crate::proto::record::{self, KEEP_CONN};
use crate::proto::{Body, Params, ProtoError, ProtocolStatus, Role, StreamKind};

/// The one request id we use: PHP does not multiplex connections.
pub(crate) const REQUEST_ID: u16 = 1;
/// Stop pulling body chunks while this much is waiting to be written
/// (bounds what we read ahead from a streamed body).
const WRITE_HIGH_WATER: usize = 256 << 10;

/// A piece of the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `STDOUT` bytes.
    Stdout(Bytes),
    /// `STDERR` bytes.
    Stderr(Bytes),
}

/// How the application ended the request (`FCGI_END_REQUEST`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndStatus {
    /// The application's status (a CGI program's exit code; PHP sends 0).
    pub app_status: u32,
    /// The protocol-level status.
    pub protocol_status: ProtocolStatus,
}

pub(crate) struct Exchange {
    pooled: Option<Pooled>,
    keep_alive: bool,
    /// The body still to send; `None` once its end record is encoded.
    body: Option<RequestBody>,
    /// Whether `body` yielded anything (a streamed body cannot be replayed then).
    pulled: bool,
    /// The in-memory body, kept for a retry.
    replay: Option<Bytes>,
    /// A record of this request arrived: no retry after that.
    pub(crate) started: bool,
    /// Sending failed; the response may still be readable (an application
    /// that answered without reading all of its input, then hung up).
    write_error: Option<std::io::Error>,
    pub(crate) end: Option<EndStatus>,
    read_timeout: Duration,
    write_timeout: Duration,
    last_read: Instant,
    last_write: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Exchange {
    /// Encodes `BEGIN_REQUEST` and `PARAMS` into the connection's write
    /// buffer; nothing is written until the first poll.
    pub(crate) fn new(
        mut pooled: Pooled,
        role: Role,
        params: &Params,
        body: RequestBody,
        config: &ClientConfig,
    ) -> Self {
        let flags = if config.keep_alive { KEEP_CONN } else { 0 };
        let conn = pooled.conn();
        record::encode_begin_request(&mut conn.wq.tail, REQUEST_ID, role, flags);
        record::encode_params(&mut conn.wq.tail, REQUEST_ID, params);
        let now = Instant::now();
        Self {
            pooled: Some(pooled),
            keep_alive: config.keep_alive,
            replay: body.replayable(),
            body: Some(body),
            pulled: false,
            started: false,
            write_error: None,
            end: None,
            read_timeout: config.read_timeout,
            write_timeout: config.write_timeout,
            last_read: now,
            last_write: now,
            timer: None,
        }
    }

    /// Queues `FCGI_ABORT_REQUEST` (the client went away), once the
    /// request body is sent; it goes out with the next poll. The response
    /// is still read to its `END_REQUEST`, so the connection stays usable.
    /// Whether it was queued.
    pub(crate) fn abort(&mut self) -> bool {
        if self.end.is_some() || !self.stdin_sent() {
            return false;
        }
        let Some(pooled) = self.pooled.as_mut() else {
            return false;
        };
        record::encode_abort_request(&mut pooled.conn().wq.tail, REQUEST_ID);
        true
    }

    pub(crate) fn reused(&self) -> bool {
        self.pooled.as_ref().is_some_and(|p| p.reused)
    }

    /// After a failure before any response record: the connection slot and
    /// a body to send again, if the body can be sent again.
    pub(crate) fn take_for_retry(mut self) -> Option<(Pooled, RequestBody)> {
        let body = match self.replay.take() {
            Some(b) if b.is_empty() => RequestBody::empty(),
            Some(b) => b.into(),
            None if !self.pulled => self.body.take()?,
            None => return None,
        };
        Some((self.pooled.take()?, body))
    }

    fn stdin_sent(&self) -> bool {
        self.body.is_none()
            && self
                .pooled
                .as_ref()
                .is_none_or(Pooled::write_queue_is_empty)
    }

    /// Moves body chunks into the write queue (by reference) and the queue
    /// into the socket, as far as both allow without waiting.
    fn pump(&mut self, cx: &mut Context<'_>) -> Result<(), ClientError> {
        let Some(pooled) = self.pooled.as_mut() else {
            return Ok(());
        };
        let conn = pooled.conn();
        loop {
            while conn.wq.len() < WRITE_HIGH_WATER {
                let Some(body) = self.body.as_mut() else {
                    break;
                };
                match body.poll_chunk(cx) {
                    Poll::Ready(Some(Ok(chunk))) => {
                        self.pulled = true;
                        conn.wq.stream(StreamKind::Stdin, REQUEST_ID, chunk);
                    }
                    Poll::Ready(Some(Err(e))) => return Err(ClientError::Body(e)),
                    Poll::Ready(None) => {
                        record::encode_stream_end(&mut conn.wq.tail, StreamKind::Stdin, REQUEST_ID);
                        self.body = None;
                    }
                    Poll::Pending => break,
                }
            }
            if conn.wq.is_empty() {
                return Ok(());
            }
            match conn.poll_write_some(cx) {
                Poll::Ready(Ok(_)) => self.last_write = Instant::now(),
                Poll::Ready(Err(e)) => return Err(ClientError::Io(e)),
                Poll::Pending => return Ok(()),
            }
        }
    }

    /// The next piece of the response; `Ok(None)` once `END_REQUEST` came
    /// (the connection is then already back in the pool or closed).
    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Frame>, ClientError>> {
        if self.end.is_some() {
            return Poll::Ready(Ok(None));
        }
        loop {
            if !self.stdin_sent() {
                match self.pump(cx) {
                    Ok(()) => {}
                    Err(ClientError::Io(e)) => {
                        // Stop sending, but read on: the answer may be there.
                        self.write_error = Some(e);
                        self.body = None;
                        if let Some(p) = self.pooled.as_mut() {
                            p.conn().wq.clear();
                        }
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            let Some(pooled) = self.pooled.as_mut() else {
                return Poll::Ready(Err(ClientError::Closed));
            };
            let rec = match pooled.conn().poll_read_record(cx) {
                Poll::Ready(Ok(Some(rec))) => rec,
                Poll::Ready(Ok(None)) => {
                    return Poll::Ready(Err(match self.write_error.take() {
                        Some(e) => ClientError::Io(e),
                        None => ClientError::Closed,
                    }));
                }
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Err(self.write_error.take().map_or(e, ClientError::Io)));
                }
                Poll::Pending => {
                    self.poll_timeout(cx)?;
                    return Poll::Pending;
                }
            };
            self.last_read = Instant::now();
            if rec.request_id == record::NULL_REQUEST_ID {
                // A management record nobody asked for: not ours, ignore.
                continue;
            }
            if rec.request_id != REQUEST_ID {
                return Poll::Ready(Err(ProtoError::Unexpected(format!(
                    "record for request {} on a connection carrying request {REQUEST_ID}",
                    rec.request_id
                ))
                .into()));
            }
            self.started = true;
            match rec.body {
                Body::Stream {
                    kind: StreamKind::Stdout,
                    data,
                } => {
                    if !data.is_empty() {
                        return Poll::Ready(Ok(Some(Frame::Stdout(data))));
                    }
                }
                Body::Stream {
                    kind: StreamKind::Stderr,
                    data,
                } => {
                    if !data.is_empty() {
                        return Poll::Ready(Ok(Some(Frame::Stderr(data))));
                    }
                }
                Body::EndRequest {
                    app_status,
                    protocol_status,
                } => {
                    self.end = Some(EndStatus {
                        app_status,
                        protocol_status,
                    });
                    self.release();
                    if protocol_status != ProtocolStatus::RequestComplete {
                        return Poll::Ready(Err(ClientError::Rejected(protocol_status)));
                    }
                    return Poll::Ready(Ok(None));
                }
                other => {
                    return Poll::Ready(Err(ProtoError::Unexpected(format!(
                        "{other:?} sent to a client"
                    ))
                    .into()));
                }
            }
        }
    }

    /// After `END_REQUEST`: back to the pool if the connection is clean.
    fn release(&mut self) {
        let clean = self.stdin_sent() && self.write_error.is_none();
        if let Some(mut pooled) = self.pooled.take() {
            if self.keep_alive && clean && pooled.conn().is_quiet() {
                pooled.set_reusable();
            }
        }
    }

    /// Registers the read/write deadline; an error once it has passed.
    /// Reading and writing both count as progress for the read timeout, so
    /// a long upload does not time out while the application consumes it.
    fn poll_timeout(&mut self, cx: &mut Context<'_>) -> Result<(), ClientError> {
        let writing = !self.stdin_sent();
        let read_deadline = deadline(self.last_read.max(self.last_write), self.read_timeout);
        let write_deadline = writing.then(|| deadline(self.last_write, self.write_timeout));
        let at = write_deadline.map_or(read_deadline, |w| w.min(read_deadline));
        loop {
            if Instant::now() >= at {
                return Err(if write_deadline == Some(at) {
                    ClientError::WriteTimeout(self.write_timeout)
                } else {
                    ClientError::ReadTimeout(self.read_timeout)
                });
            }
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            // Move the timer only when it must fire sooner; when it fires
            // early (progress was made meanwhile) it is re-armed here.
            if timer.deadline() > at {
                timer.as_mut().reset(at);
            }
            match timer.as_mut().poll(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(()) => timer.as_mut().reset(at),
            }
        }
    }
}

fn deadline(since: Instant, d: Duration) -> Instant {
    since
        .checked_add(d)
        .unwrap_or_else(|| since + Duration::from_secs(100 * 365 * 86_400))
}
