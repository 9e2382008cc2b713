//! What a server handler receives ([`Request`] with streaming [`Stdin`])
//! and writes to ([`ResponseWriter`]).

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use tokio::sync::mpsc;

use super::ServerError;
use super::writer::Out;
use crate::proto::{Params, Role, StreamKind};

/// A request received from a web server.
#[derive(Debug)]
pub struct Request {
    pub(crate) id: u16,
    pub(crate) role: Role,
    pub(crate) keep_conn: bool,
    pub(crate) params: Params,
    pub(crate) stdin: Stdin,
    pub(crate) data: Stdin,
}

impl Request {
    /// The FastCGI request id (unique among the connection's live requests).
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The role asked for.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether the web server asked to keep the connection open.
    pub fn keep_conn(&self) -> bool {
        self.keep_conn
    }

    /// The CGI params, in the order received.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The request body (`STDIN`).
    pub fn stdin(&mut self) -> &mut Stdin {
        &mut self.stdin
    }

    /// The Filter role's `DATA` stream.
    pub fn data(&mut self) -> &mut Stdin {
        &mut self.data
    }

    /// Params and body apart.
    pub fn into_parts(self) -> (Params, Stdin) {
        (self.params, self.stdin)
    }
}

/// An input stream of a request (`STDIN` or `DATA`), chunk by chunk as the
/// records arrive. The server buffers only a few chunks per request, so a
/// handler that reads slowly slows the sender down instead of using memory.
#[derive(Debug)]
pub struct Stdin {
    rx: Option<mpsc::Receiver<Bytes>>,
    done: bool,
}

impl Stdin {
    pub(crate) fn new(rx: mpsc::Receiver<Bytes>) -> Self {
        Self {
            rx: Some(rx),
            done: false,
        }
    }

    /// A stream that is complete and empty (`DATA` outside the Filter role).
    pub(crate) fn finished() -> Self {
        Self {
            rx: None,
            done: true,
        }
    }

    /// Polls for the next chunk. `None` after the stream's end record;
    /// an error when the connection ended or the request was aborted first.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, ServerError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(None);
        };
        match rx.poll_recv(cx) {
            Poll::Ready(Some(b)) if b.is_empty() => {
                // The empty record: a complete stream.
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(b)) => Poll::Ready(Some(Ok(b))),
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(Some(Err(ServerError::InputIncomplete)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// The next chunk (see [`Stdin::poll_chunk`]).
    pub async fn chunk(&mut self) -> Option<Result<Bytes, ServerError>> {
        poll_fn(|cx| self.poll_chunk(cx)).await
    }

    /// Reads the whole stream, refusing more than `limit` bytes.
    pub async fn read_to_end(&mut self, limit: usize) -> Result<Bytes, ServerError> {
        let mut all = BytesMut::new();
        while let Some(chunk) = self.chunk().await {
            let chunk = chunk?;
            if all.len() + chunk.len() > limit {
                return Err(ServerError::InputTooLarge { limit });
            }
            all.extend_from_slice(&chunk);
        }
        Ok(all.freeze())
    }
}

impl Stream for Stdin {
    type Item = Result<Bytes, ServerError>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_chunk(cx)
    }
}

/// Writes a request's `STDOUT` and `STDERR`. The request ends (`END_REQUEST`
/// with the handler's status) when the handler returns.
#[derive(Debug)]
pub struct ResponseWriter {
    pub(crate) id: u16,
    pub(crate) generation: u64,
    pub(crate) out: mpsc::Sender<Out>,
}

impl ResponseWriter {
    /// Sends response bytes (for a Responder: CGI head, empty line, body).
    /// Waits while the connection is backed up.
    pub async fn write_stdout(&mut self, data: impl Into<Bytes>) -> Result<(), ServerError> {
        self.send(StreamKind::Stdout, data.into()).await
    }

    /// Sends error output, which the web server logs.
    pub async fn write_stderr(&mut self, data: impl Into<Bytes>) -> Result<(), ServerError> {
        self.send(StreamKind::Stderr, data.into()).await
    }

    async fn send(&mut self, kind: StreamKind, data: Bytes) -> Result<(), ServerError> {
        if data.is_empty() {
            // An empty record would end the stream; the server ends it.
            return Ok(());
        }
        self.out
            .send(Out::Stream {
                id: self.id,
                generation: self.generation,
                kind,
                data,
            })
            .await
            .map_err(|_| ServerError::ConnectionClosed)
    }
}
