//! One client connection: the stream plus its read and write buffers,
//! turning the sans-IO codec into `poll_read_record` / `poll_write_buf`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::BytesMut;

use super::ClientError;
use crate::proto::{self, Record};
use crate::transport::{Address, Stream};
use crate::write_queue::WriteQueue;

/// Smallest free space we read into: a whole typical record.
const MIN_READ: usize = 16 << 10;
/// Largest single read; reads grow toward this while they keep filling the
/// buffer. One full record: on TCP loopback, bigger reads measured no faster
/// for 1 MiB responses (bench/fastcgi.sh), and they hold more memory.
const MAX_READ: usize = 64 << 10;

/// A FastCGI connection from the client side.
#[derive(Debug)]
pub(crate) struct Connection {
    stream: Stream,
    /// The thread it was opened or last moved on.
    home: std::thread::ThreadId,
    rbuf: BytesMut,
    /// Records encoded but not yet written.
    pub(crate) wq: WriteQueue,
    read_size: usize,
    /// Requests completed on this connection.
    pub(crate) served: u64,
}

impl Connection {
    /// Connects within `timeout`.
    pub(crate) async fn open(address: &Address, timeout: Duration) -> Result<Self, ClientError> {
        let stream = match tokio::time::timeout(timeout, address.connect()).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                return Err(ClientError::Connect {
                    address: address.clone(),
                    source,
                });
            }
            Err(_) => {
                return Err(ClientError::ConnectTimeout {
                    address: address.clone(),
                    timeout,
                });
            }
        };
        Ok(Self {
            stream,
            home: std::thread::current().id(),
            rbuf: BytesMut::new(),
            wq: WriteQueue::default(),
            read_size: MIN_READ,
            served: 0,
        })
    }

    /// The connection, registered with the current thread's runtime if it
    /// was last used on another thread (`None`: that failed, and the
    /// connection is closed).
    pub(crate) fn follow_thread(mut self) -> Option<Self> {
        let here = std::thread::current().id();
        if self.home == here {
            return Some(self);
        }
        self.stream = self.stream.reregister().ok()?;
        self.home = here;
        Some(self)
    }

    /// Reads until one whole record is buffered and decodes it.
    /// `Ok(None)` is a clean end of stream between records.
    pub(crate) fn poll_read_record(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Record>, ClientError>> {
        loop {
            if let Some(rec) = proto::decode(&mut self.rbuf)? {
                return Poll::Ready(Ok(Some(rec)));
            }
            if self.rbuf.capacity() - self.rbuf.len() < MIN_READ {
                self.rbuf.reserve(self.read_size);
            }
            let room = self.rbuf.capacity() - self.rbuf.len();
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut self.stream),
                cx,
                &mut self.rbuf
            ))
            .map_err(ClientError::Io)?;
            if n == 0 {
                return Poll::Ready(if self.rbuf.is_empty() {
                    Ok(None)
                } else {
                    Err(ClientError::Closed)
                });
            }
            // A read that filled all the room means more is waiting: read
            // bigger next time (large responses), up to MAX_READ.
            if n == room {
                self.read_size = (self.read_size * 2).min(MAX_READ);
            }
        }
    }

    /// Writes some of the queue; `Ready(Ok(n))` with the bytes written.
    pub(crate) fn poll_write_some(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.wq.poll_write(Pin::new(&mut self.stream), cx)
    }

    /// Nothing buffered in either direction.
    pub(crate) fn is_quiet(&self) -> bool {
        self.rbuf.is_empty() && self.wq.is_empty()
    }

    /// Whether an idle connection can take a request: quiet, and not closed
    /// by the peer (php-fpm / php-cgi children exit after `max_requests`).
    pub(crate) fn is_reusable_idle(&self) -> bool {
        self.is_quiet() && !self.stream.is_closed_by_peer()
    }
}
