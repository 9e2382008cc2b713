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
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;

use super::body::Streaming;
use super::h1::{self, Framing};
use crate::config::ProxyTimeouts;
use crate::http::body::BodyError;

/// The request body sent to an instance.
pub type UpBody = http_body_util::combinators::BoxBody<Bytes, BodyError>;

/// Connecting to an instance on this machine takes microseconds; a
/// connect that takes longer means it is gone or stuck.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an answer may take to arrive once the instance stopped
/// taking the request body (it answered early and closed, most likely).
const EARLY_ANSWER: Duration = Duration::from_millis(500);
/// How long a request with `Expect: 100-continue` waits for the
/// instance's 100 (or its refusal) before its body is sent anyway, as
/// RFC 9110 §10.1.1 allows and curl does after one second.
const EXPECT_WAIT: Duration = Duration::from_secs(1);
/// Longest time the rest of a request body is read and dropped after the
/// instance stopped taking it.
const DRAIN_FOR: Duration = Duration::from_secs(10);
/// Read buffer: grown to this much per read.
pub(super) const READ_CHUNK: usize = 16 * 1024;

/// One kept-alive connection to an instance, split in its two halves so
/// a request body can be written while the answer is read.
pub struct Conn {
    rd: OwnedReadHalf,
    /// `None` while (or after) an upload runs apart from the answer:
    /// such a connection is never reused.
    wr: Option<OwnedWriteHalf>,
    pub(super) buf: BytesMut,
    /// Came from the idle pool (so a close before any byte of answer may
    /// just mean the instance closed it meanwhile).
    pub reused: bool,
    /// Some byte of an answer to the current request arrived.
    answered: bool,
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
    /// No answer head this long after the request was sent
    /// (`scaling.request_timeout`).
    NoAnswer(Duration),
    /// The instance took no byte of the request body for this long
    /// (`proxy.send_timeout`).
    SendStalled(Duration),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Closed(e) => write!(f, "connection closed before an answer: {e}"),
            Self::Body(e) => write!(f, "{e}"),
            Self::Failed(e) => write!(f, "{e}"),
            Self::NoAnswer(d) => write!(f, "no answer within {d:?}"),
            Self::SendStalled(d) => write!(f, "took no request body for {d:?}"),
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

/// What came back: a final head, a 101 (its end-to-end headers and the
/// protocol its `Upgrade` names), or another 1xx (not passed on).
enum Answer {
    Final(h1::Head),
    Switching(HeaderMap, HeaderValue),
    Interim(StatusCode),
}

/// A request ready to go: its head serialised once (so a retry costs
/// nothing), and its body if it has one.
pub struct Outgoing {
    /// `METHOD path HTTP/1.1`, headers, framing, blank line.
    pub head: Bytes,
    /// The body, streamed with the framing the head announced; still
    /// here after a failed [`Conn::send`] when none of it was read (so
    /// the request can be sent again).
    pub body: Option<(UpBody, Framing)>,
    /// A HEAD request: the answer has no body whatever it says.
    pub head_only: bool,
    /// The head carries `Expect: 100-continue`: the body waits for the
    /// instance's 100 (at most [`EXPECT_WAIT`]); a refusal instead goes
    /// to the client, which then never sends the body.
    pub expect: bool,
}

impl Conn {
    /// Opens a connection to `addr`.
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        let (rd, wr) = stream.into_split();
        Ok(Self {
            rd,
            wr: Some(wr),
            buf: BytesMut::with_capacity(READ_CHUNK),
            reused: false,
            answered: false,
        })
    }

    /// Sends the request and reads the response head, the body written
    /// while the answer is read (an instance may answer before it has
    /// read it all); the body follows in the returned [`Streaming`] once
    /// it is given a lease.
    pub async fn send(
        &mut self,
        out: &mut Outgoing,
        t: &ProxyTimeouts,
    ) -> Result<h1::Head, SendError> {
        self.answered = false;
        let Some(wr) = self.wr.as_mut() else {
            return Err(SendError::Failed(bad(
                "the connection is half closed".into()
            )));
        };
        wr.write_all(&out.head).await.map_err(SendError::Closed)?;
        if out.body.is_some() && out.expect {
            // The instance decides whether the body comes.
            loop {
                match tokio::time::timeout(EXPECT_WAIT, self.next_answer(out.head_only)).await {
                    Err(_) | Ok(Ok(Answer::Interim(StatusCode::CONTINUE))) => break,
                    Ok(Ok(Answer::Interim(_))) => {}
                    Ok(Ok(Answer::Final(mut head))) => {
                        // Refused before the body: it is dropped unread, so
                        // the client never gets a 100 and sends nothing.
                        head.keep_alive = false;
                        out.body = None;
                        return Ok(head);
                    }
                    Ok(Ok(Answer::Switching(..))) => return Err(unasked_101()),
                    Ok(Err(e)) => return Err(e),
                }
            }
        }
        match out.body.take() {
            None => self.head_within(t.head, out.head_only).await,
            Some((body, framing)) => self.duplex(body, framing, out.head_only, t).await,
        }
    }

    /// Reads the answer head, at most `wait`.
    async fn head_within(
        &mut self,
        wait: Duration,
        head_only: bool,
    ) -> Result<h1::Head, SendError> {
        tokio::time::timeout(wait, self.read_head(head_only))
            .await
            .unwrap_or(Err(SendError::NoAnswer(wait)))
    }

    /// Writes `body` while reading the answer. An answer that comes
    /// first is passed on at once: a refusal (4xx, 5xx) or one that
    /// closes stops the upload and the rest of the client's body is read
    /// and dropped (so it reads the answer, HTTP/1.1's rule); any other
    /// keeps the upload going beside the answer (a worker that streams
    /// while it reads). Either way the connection is not reused.
    async fn duplex(
        &mut self,
        body: UpBody,
        framing: Framing,
        head_only: bool,
        t: &ProxyTimeouts,
    ) -> Result<h1::Head, SendError> {
        let wr = self.wr.take().expect("checked by send");
        let (stop, stopped) = oneshot::channel();
        let upload = Upload {
            wr,
            body,
            framing,
            gap: t.send,
            written: 0,
        };
        let mut up = Box::pin(upload.run(stopped));
        let early = tokio::select! {
            biased;
            a = self.read_head(head_only) => a,
            (upload, sent) = &mut up => {
                return self.after_upload(upload, sent, head_only, t).await;
            }
        };
        let mut head = match early {
            Ok(head) if head.status.as_u16() < 400 && head.keep_alive => {
                // Answered while still reading: the rest goes on apart.
                tokio::spawn(async move {
                    let (upload, _) = up.await;
                    // Not shut down: some servers take a half close for
                    // the client going away.
                    upload.wr.forget();
                });
                head
            }
            early => {
                let _ = stop.send(());
                let (upload, _) = up.await;
                tokio::spawn(drain(upload.body));
                early?
            }
        };
        head.keep_alive = false;
        Ok(head)
    }

    /// The upload ended before any answer: on success the answer is
    /// awaited; if the instance stopped taking the body, it may have
    /// answered early and closed, so that answer is looked for briefly.
    async fn after_upload(
        &mut self,
        upload: Upload,
        sent: Result<(), UpError>,
        head_only: bool,
        t: &ProxyTimeouts,
    ) -> Result<h1::Head, SendError> {
        let failed = match sent {
            Ok(()) => {
                self.wr = Some(upload.wr);
                return self.head_within(t.head, head_only).await;
            }
            Err(UpError::Body(e)) => return Err(SendError::Body(e)),
            Err(UpError::Framing(m)) => return Err(SendError::Failed(bad(m))),
            Err(UpError::Stalled) => SendError::SendStalled(t.send),
            Err(UpError::Write(e)) if upload.written == 0 => SendError::Closed(e),
            Err(UpError::Write(e)) => SendError::Failed(e),
        };
        tokio::spawn(drain(upload.body));
        match tokio::time::timeout(EARLY_ANSWER, self.read_head(head_only)).await {
            Ok(Ok(mut head)) => {
                head.keep_alive = false;
                Ok(head)
            }
            _ => Err(failed),
        }
    }

    /// Reads until a complete final (non-1xx) response head. Cancel safe,
    /// as [`Conn::next_answer`] is (a 1xx it skipped is not passed on anyway).
    async fn read_head(&mut self, head_only: bool) -> Result<h1::Head, SendError> {
        loop {
            match self.next_answer(head_only).await? {
                Answer::Final(head) => return Ok(head),
                Answer::Interim(_) => {}
                Answer::Switching(..) => return Err(unasked_101()),
            }
        }
    }

    /// Reads until a complete response head: final, 101 or another 1xx.
    /// A failure before any byte is [`SendError::Closed`]. Cancel safe:
    /// what was read stays in the buffer.
    async fn next_answer(&mut self, head_only: bool) -> Result<Answer, SendError> {
        loop {
            if !self.buf.is_empty() {
                match h1::parse_head(&self.buf, head_only) {
                    Ok(Some(h1::Parsed::Final(head, len))) => {
                        h1::skip(&mut self.buf, len);
                        return Ok(Answer::Final(head));
                    }
                    Ok(Some(h1::Parsed::Interim(status, len))) => {
                        h1::skip(&mut self.buf, len);
                        return Ok(Answer::Interim(status));
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
            let got_any = self.answered;
            let n = tokio_util::io::read_buf(&mut self.rd, &mut self.buf)
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
                let e = match self.rd.as_ref().take_error() {
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
            self.answered = true;
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
        self.answered = false;
        let wr = self.wr.as_mut().expect("a new connection");
        wr.write_all(head).await.map_err(SendError::Closed)?;
        loop {
            match self.next_answer(false).await? {
                Answer::Switching(headers, protocol) => {
                    let early = self.buf.split().freeze();
                    let wr = self.wr.take().expect("a new connection");
                    let stream = self.rd.reunite(wr).expect("the halves of one stream");
                    return Ok(Ok((headers, protocol, Upgraded { stream, early })));
                }
                Answer::Interim(_) => {}
                Answer::Final(mut head) => {
                    head.keep_alive = false;
                    return Ok(Err((head, self)));
                }
            }
        }
    }

    /// Whether an idle connection is still open: nothing to read, no EOF.
    pub(super) fn still_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.rd.as_ref().try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Reads more into the buffer: `Ok(false)` at EOF.
    pub(super) fn fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        self.buf.reserve(READ_CHUNK);
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.rd), cx, &mut self.buf) {
            Poll::Ready(Ok(n)) => Poll::Ready(Ok(n > 0)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// The instance's port (0 if the socket no longer says).
    pub(super) fn port(&self) -> u16 {
        self.rd.peer_addr().map_or(0, |a| a.port())
    }

    /// Whether the connection can carry another request (its write half
    /// is here, not with an upload still going).
    pub(super) fn whole(&self) -> bool {
        self.wr.is_some()
    }
}

fn unasked_101() -> SendError {
    SendError::Failed(bad(
        "101 Switching Protocols to a request that asked for no upgrade".into(),
    ))
}

/// Why an upload stopped.
enum UpError {
    /// Reading the client's body failed.
    Body(BodyError),
    /// Writing to the instance failed.
    Write(io::Error),
    /// The instance took nothing for the send timeout.
    Stalled,
    /// The client's body did not match the length the head announced.
    Framing(String),
}

/// A request body on its way to an instance, with the write half it goes
/// through (both given back when it ends, so the connection is reused or
/// the rest of the body drained).
struct Upload {
    wr: OwnedWriteHalf,
    body: UpBody,
    framing: Framing,
    /// Longest pause of one write (`proxy.send_timeout`).
    gap: Duration,
    written: u64,
}

impl Upload {
    /// Sends the body, or stops when told (not when the sender is gone:
    /// an upload let go on its own runs to its end).
    async fn run(mut self, stop: oneshot::Receiver<()>) -> (Self, Result<(), UpError>) {
        let r = tokio::select! {
            biased;
            Ok(()) = stop => Ok(()),
            r = self.send_all() => r,
        };
        (self, r)
    }

    async fn send_all(&mut self) -> Result<(), UpError> {
        loop {
            let frame = std::future::poll_fn(|cx| Pin::new(&mut self.body).poll_frame(cx)).await;
            let data = match frame {
                None => break,
                Some(Err(e)) => return Err(UpError::Body(e)),
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => d,
                    Err(_) => continue, // trailers are not forwarded
                },
            };
            if data.is_empty() {
                continue;
            }
            if let Framing::Length(n) = self.framing {
                if self.written + data.len() as u64 > n {
                    // Never more than the head announced: the bytes past it
                    // would be read by the instance as another request.
                    return Err(UpError::Framing(format!(
                        "the request body is longer than its Content-Length {n}"
                    )));
                }
            }
            if self.framing == Framing::Chunked {
                let size = format!("{:x}\r\n", data.len());
                self.write(size.as_bytes()).await?;
                self.write(&data).await?;
                self.write(b"\r\n").await?;
            } else {
                self.write(&data).await?;
            }
            self.written += data.len() as u64;
        }
        match self.framing {
            Framing::Chunked => self.write(b"0\r\n\r\n").await,
            Framing::Length(n) if self.written != n => Err(UpError::Framing(format!(
                "the request body ended after {} of its {n} bytes",
                self.written
            ))),
            Framing::Length(_) => Ok(()),
        }
    }

    /// One write, within the send timeout.
    async fn write(&mut self, data: &[u8]) -> Result<(), UpError> {
        match tokio::time::timeout(self.gap, self.wr.write_all(data)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(UpError::Write(e)),
            Err(_) => Err(UpError::Stalled),
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
        expect: false,
    };
    let wait = CONNECT_TIMEOUT * 5;
    let t = ProxyTimeouts {
        head: wait,
        read: wait,
        send: wait,
        upgrade_idle: wait,
    };
    let head = conn.send(&mut out, &t).await.map_err(|e| e.to_string())?;
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
