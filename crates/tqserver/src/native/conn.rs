//! One kept-alive HTTP/1.1 connection to an instance: connect, write a
//! request (head and body, framed as [`h1::Framing`] says), read the
//! answer's head. The codec is [`super::h1`]; the body is read by
//! [`super::body::Streaming`]; idle connections wait in
//! [`super::pool::IdlePool`]. Driven in the request's own task (no task
//! hop, no second copy of the headers), the way the FastCGI client works.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http::header::{HeaderMap, HeaderValue};
use http_body::Body as _;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::body::Streaming;
use super::h1::{self, Framing};
use crate::http::body::BodyError;

/// The request body sent to an instance.
pub type UpBody = http_body_util::combinators::BoxBody<Bytes, BodyError>;

/// Connecting to an instance on this machine takes microseconds; a
/// connect that takes longer means it is gone or stuck.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an answer sent before the request body was written may take
/// to arrive once the instance stopped reading.
const EARLY_ANSWER: Duration = Duration::from_millis(500);
/// Longest time the rest of a request body is read and dropped after the
/// instance stopped taking it.
const DRAIN_FOR: Duration = Duration::from_secs(10);
/// Read buffer: grown to this much per read.
pub(super) const READ_CHUNK: usize = 16 * 1024;

/// One kept-alive connection to an instance.
pub struct Conn {
    stream: TcpStream,
    pub(super) buf: BytesMut,
    /// Came from the idle pool (so a close before any byte of answer may
    /// just mean the instance closed it meanwhile).
    pub reused: bool,
}

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// Nothing of the answer came back before the connection failed; for
    /// a reused connection the instance most likely closed it while idle.
    Closed(io::Error),
    /// Reading the client's request body failed (too large, stalled…).
    Body(BodyError),
    /// The instance broke the protocol or the connection failed mid-answer.
    Failed(io::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Closed(e) => write!(f, "connection closed before an answer: {e}"),
            Self::Body(e) => write!(f, "{e}"),
            Self::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// A connection an instance switched to another protocol (WebSocket):
/// the socket, and what the instance sent right after its 101 (to be
/// passed on first).
pub struct Upgraded {
    /// The connection to the instance.
    pub stream: TcpStream,
    /// Bytes read past the 101's head.
    pub early: Bytes,
}

/// What came back first: a final head, or a 101 (its end-to-end headers
/// and the protocol its `Upgrade` names).
enum Answer {
    Final(h1::Head),
    Switching(HeaderMap, HeaderValue),
}

/// A request ready to go: its head serialised once (so a retry costs
/// nothing), and its body if it has one.
pub struct Outgoing {
    /// `METHOD path HTTP/1.1`, headers, framing, blank line.
    pub head: Bytes,
    /// The body, streamed with the framing the head announced.
    pub body: Option<(UpBody, Framing)>,
    /// A HEAD request: the answer has no body whatever it says.
    pub head_only: bool,
}

impl Conn {
    /// Opens a connection to `addr`.
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            reused: false,
        })
    }

    /// Sends the request and reads the response head; the body follows in
    /// the returned [`Streaming`] once it is given a lease.
    pub async fn send(&mut self, out: &mut Outgoing) -> Result<h1::Head, SendError> {
        match out.body.take() {
            None => self
                .stream
                .write_all(&out.head)
                .await
                .map_err(SendError::Closed)?,
            Some((body, framing)) => {
                if let Err(e) = self.send_body(&out.head, body, framing).await {
                    if matches!(e, SendError::Body(_)) {
                        return Err(e);
                    }
                    // The instance may have answered early (413, 401…) and
                    // closed without reading the rest: pass that answer on,
                    // as nginx does; the connection is not reused.
                    let early =
                        tokio::time::timeout(EARLY_ANSWER, self.read_head(out.head_only)).await;
                    return match early {
                        Ok(Ok(mut head)) => {
                            head.keep_alive = false;
                            Ok(head)
                        }
                        _ => Err(e),
                    };
                }
            }
        }
        self.read_head(out.head_only).await
    }

    async fn send_body(
        &mut self,
        head: &[u8],
        mut body: UpBody,
        framing: Framing,
    ) -> Result<(), SendError> {
        self.stream
            .write_all(head)
            .await
            .map_err(SendError::Closed)?;
        let mut sent = false;
        let mut written = 0u64;
        loop {
            let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            let data = match frame {
                None => break,
                Some(Err(e)) => return Err(SendError::Body(e)),
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => d,
                    Err(_) => continue, // trailers are not forwarded
                },
            };
            if data.is_empty() {
                continue;
            }
            written += data.len() as u64;
            if let Framing::Length(n) = framing {
                if written > n {
                    // Never more than the head announced: the bytes past it
                    // would be read by the instance as another request.
                    return Err(SendError::Failed(bad(format!(
                        "the request body is longer than its Content-Length {n}"
                    ))));
                }
            }
            if let Err(e) = self.write_chunk(&data, framing).await {
                // The client is still sending: read and drop the rest, so
                // it gets to read whatever answer it receives (nginx's
                // lingering close).
                tokio::spawn(drain(body));
                return Err(if sent {
                    SendError::Failed(e)
                } else {
                    SendError::Closed(e)
                });
            }
            sent = true;
        }
        match framing {
            Framing::Chunked => self
                .stream
                .write_all(b"0\r\n\r\n")
                .await
                .map_err(SendError::Failed)?,
            Framing::Length(n) if written != n => {
                return Err(SendError::Failed(bad(format!(
                    "the request body ended after {written} of its {n} bytes"
                ))));
            }
            Framing::Length(_) => {}
        }
        Ok(())
    }

    async fn write_chunk(&mut self, data: &[u8], framing: Framing) -> io::Result<()> {
        if framing == Framing::Chunked {
            let size = format!("{:x}\r\n", data.len());
            self.stream.write_all(size.as_bytes()).await?;
            self.stream.write_all(data).await?;
            self.stream.write_all(b"\r\n").await
        } else {
            self.stream.write_all(data).await
        }
    }

    /// Reads until a complete final (non-1xx) response head.
    async fn read_head(&mut self, head_only: bool) -> Result<h1::Head, SendError> {
        match self.next_head(head_only).await? {
            Answer::Final(head) => Ok(head),
            Answer::Switching(..) => Err(SendError::Failed(bad(
                "101 Switching Protocols to a request that asked for no upgrade".into(),
            ))),
        }
    }

    /// Reads until a complete final response head or a 101, skipping
    /// other 1xx answers (100 Continue, 103 Early Hints: not passed on).
    /// A failure before any byte is [`SendError::Closed`].
    async fn next_head(&mut self, head_only: bool) -> Result<Answer, SendError> {
        let mut got_any = false;
        loop {
            if !self.buf.is_empty() {
                match h1::parse_head(&self.buf, head_only) {
                    Ok(Some(h1::Parsed::Final(head, len))) => {
                        h1::skip(&mut self.buf, len);
                        return Ok(Answer::Final(head));
                    }
                    Ok(Some(h1::Parsed::Interim(len))) => {
                        h1::skip(&mut self.buf, len);
                        continue;
                    }
                    Ok(Some(h1::Parsed::Switching(headers, protocol, len))) => {
                        h1::skip(&mut self.buf, len);
                        return Ok(Answer::Switching(headers, protocol));
                    }
                    Ok(None) => {}
                    Err(e) => return Err(SendError::Failed(bad(e.0))),
                }
            }
            self.buf.reserve(READ_CHUNK);
            let n = tokio_util::io::read_buf(&mut self.stream, &mut self.buf)
                .await
                .map_err(|e| {
                    if got_any {
                        SendError::Failed(e)
                    } else {
                        SendError::Closed(e)
                    }
                })?;
            if n == 0 {
                // A reset that came with the close (the instance's socket
                // was closed with our request unread in it, or before it
                // arrived) is kept as the error: it says the request was
                // never read (see proxy::never_read).
                let e = match self.stream.take_error() {
                    Ok(Some(reset)) if !got_any => reset,
                    _ => io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed before a complete response head",
                    ),
                };
                return Err(if got_any {
                    SendError::Failed(e)
                } else {
                    SendError::Closed(e)
                });
            }
            got_any = true;
        }
    }

    /// Sends an upgrade request (`head`, no body) and reads the answer:
    /// `Ok(Ok(..))` the instance switched (its 101's headers and protocol,
    /// and the connection, with any bytes it sent after the head first);
    /// `Ok(Err(head))` it answered as HTTP instead (the body follows on
    /// this connection, which is not reused).
    pub async fn upgrade(
        mut self,
        head: &[u8],
    ) -> Result<Result<(HeaderMap, HeaderValue, Upgraded), (h1::Head, Self)>, SendError> {
        self.stream
            .write_all(head)
            .await
            .map_err(SendError::Closed)?;
        match self.next_head(false).await? {
            Answer::Switching(headers, protocol) => {
                let early = self.buf.split().freeze();
                Ok(Ok((
                    headers,
                    protocol,
                    Upgraded {
                        stream: self.stream,
                        early,
                    },
                )))
            }
            Answer::Final(mut head) => {
                head.keep_alive = false;
                Ok(Err((head, self)))
            }
        }
    }

    /// Whether an idle connection is still open: nothing to read, no EOF.
    pub(super) fn still_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Reads more into the buffer: `Ok(false)` at EOF.
    pub(super) fn fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        self.buf.reserve(READ_CHUNK);
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.buf) {
            Poll::Ready(Ok(n)) => Poll::Ready(Ok(n > 0)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Reads and drops what is left of a request body (bounded by its own
/// limit and stall timeout), for at most [`DRAIN_FOR`].
async fn drain(mut body: UpBody) {
    let _ = tokio::time::timeout(DRAIN_FOR, async {
        while let Some(Ok(_)) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
        }
    })
    .await;
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// GET `path` from `addr` on a connection of its own (`Connection:
/// close`), for health checks: the answer's status, its body read (up to
/// 64 KiB) so the server is not reset while still writing it.
pub async fn get_status(addr: SocketAddr, path: &str) -> Result<StatusCode, String> {
    let mut conn = Conn::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let host = addr.to_string();
    let extra: [(&str, &[u8]); 3] = [
        ("host", host.as_bytes()),
        ("user-agent", b"tqserver-health"),
        ("connection", b"close"),
    ];
    let mut out = Outgoing {
        head: h1::request_head(&http::Method::GET, path, std::iter::empty(), &extra, None),
        body: None,
        head_only: false,
    };
    let head = conn.send(&mut out).await.map_err(|e| e.to_string())?;
    let status = head.status;
    let mut body = Streaming::<()>::new(conn, &head, None, None, CONNECT_TIMEOUT * 5);
    let mut read = 0;
    while read <= h1::MAX_HEAD {
        match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            Some(Ok(f)) => read += f.data_ref().map_or(0, Bytes::len),
            _ => break,
        }
    }
    Ok(status)
}
