//! The HTTP transport, generic over what answers: hyper (HTTP/1.1 with
//! keep-alive, and HTTP/2 with prior knowledge) over any accepted
//! connection, timeouts and limits ([`Settings`]), the PROXY protocol from
//! trusted balancers, graceful shutdown. It knows no worker and no
//! application: the public front and the admin listener each implement
//! [`Handler`] (pingora's `ServeHttp` / `HttpServer` split).
//!
//! # Layout
//! - `mod.rs`: [`Handler`], [`serve`], [`ConnInfo`], the accept loop.
//! - [`io`]: connection timeouts, the PROXY-header rewind.
//! - [`tls`]: the TLS handshake and the rustls configuration.
//! - [`body`]: request body limits, stalls, whole-body buffering.
//! - [`forwarded`], [`proxy_protocol`]: who the client is.
//! - [`static_files`], [`pages`]: files and TQServer's own answers.

pub mod body;
pub mod encode;
pub mod forwarded;
pub mod io;
pub mod pages;
pub mod proxy_protocol;
pub mod shards;
pub mod static_files;
pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use io::{InFlight, TimeoutIo};

/// The connection settings a listener serves with (the configuration in
/// force when a connection is accepted; a reload changes them for new
/// connections).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Time to send the request head (and the first request), and the
    /// longest pause inside a request body.
    pub read_timeout: Duration,
    /// The longest a response write may stall.
    pub write_timeout: Duration,
    /// A connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// The request head at most (431 past it).
    pub max_header_bytes: usize,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: forwarded::Trusted,
    /// Connections from trusted proxies begin with a PROXY header.
    pub proxy_protocol: bool,
}

/// What answers a listener's requests.
pub trait Handler: Send + Sync + 'static {
    /// The response body.
    type Body: http_body::Body<Data = Bytes, Error = std::io::Error> + Send + 'static;

    /// The settings for a connection accepted now.
    fn settings(&self) -> Arc<Settings>;

    /// Answers one request (the transport has checked what HTTP itself
    /// requires of it).
    fn call(
        &self,
        req: Request<Incoming>,
        conn: ConnInfo,
    ) -> impl std::future::Future<Output = http::Response<Self::Body>> + Send;

    /// A TLS handshake ended so (for metrics); nothing by default.
    fn handshake(&self, outcome: tls::Outcome) {
        let _ = outcome;
    }
}

/// The two ends of the HTTP connection a request came on, and who the
/// client is ([`forwarded::client`]: the peer, or what a trusted proxy
/// said).
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The connection's peer (or, with the PROXY protocol, the client the
    /// balancer named).
    pub peer: SocketAddr,
    /// Our end.
    pub local: SocketAddr,
    /// The client of this request.
    pub client: forwarded::Client,
    /// What the TLS handshake settled (`None`: plain HTTP).
    pub tls: Option<tls::TlsInfo>,
}

impl ConnInfo {
    /// A connection from `peer` to `local`; the client is the peer until
    /// [`ConnInfo::for_request`] says otherwise.
    pub fn new(peer: SocketAddr, local: SocketAddr) -> Self {
        Self {
            peer,
            local,
            client: forwarded::Client {
                ip: forwarded::canonical(peer.ip()),
                port: peer.port(),
                https: false,
                via_trusted: false,
            },
            tls: None,
        }
    }

    /// The same connection, over TLS.
    pub fn with_tls(self, info: tls::TlsInfo) -> Self {
        let mut c = Self {
            tls: Some(info),
            ..self
        };
        c.client.https = true;
        c
    }

    /// The connection as seen by one request: its client resolved with
    /// `trusted` from its forwarding headers.
    pub fn for_request(self, trusted: &forwarded::Trusted, headers: &http::HeaderMap) -> Self {
        let client = forwarded::client(trusted, self.peer, self.tls.is_some(), headers);
        Self { client, ..self }
    }

    /// The client's IP, IPv4-mapped IPv6 shown as IPv4.
    pub fn peer_ip(&self) -> std::net::IpAddr {
        self.client.ip
    }
}

/// A request HTTP itself refuses, before any handler sees it: HTTP/1.1
/// without a Host, or with several (RFC 9112 §3.2: 400).
fn malformed(req: &Request<Incoming>) -> Option<&'static str> {
    let hosts = req.headers().get_all(http::header::HOST).iter().count();
    if hosts > 1 {
        return Some("The request has more than one Host header.");
    }
    if hosts == 0 && req.version() == http::Version::HTTP_11 {
        return Some("An HTTP/1.1 request needs a Host header.");
    }
    None
}

/// Every response body: streamed, possibly failing mid-way.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// Headers that describe one HTTP connection, never passed on by a proxy
/// (RFC 9110 §7.6.1, and the legacy `Keep-Alive` / `Proxy-Connection`).
pub fn hop_by_hop(name: &http::header::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "trailer"
    )
}

/// An empty body.
pub fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted as in flight (for the
    /// idle timeout) until the body is done or dropped, and ends when the
    /// listener's grace period does ([`Cut`]).
    struct Tracked<B> {
        #[pin]
        inner: B,
        _guard: io::InFlightGuard,
        cut: Cut,
        // Waits for the cut; made the first time the body has nothing
        // ready (a quick answer never makes one).
        waiting: Option<Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>>,
        // An event stream: ended at the cut rather than broken off.
        events: bool,
    }
}

impl<B> Tracked<B> {
    fn new(inner: B, guard: io::InFlightGuard, cut: &Cut, headers: &http::HeaderMap) -> Self {
        let events = headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        Self {
            inner,
            _guard: guard,
            cut: cut.clone(),
            waiting: None,
            events,
        }
    }
}

impl<B> http_body::Body for Tracked<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: From<std::io::Error>,
{
    type Data = Bytes;
    type Error = B::Error;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        use std::future::Future as _;
        use std::task::Poll;
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Pending => {
                let cut = &this.cut.0;
                let waiting = this.waiting.get_or_insert_with(|| {
                    Box::pin(CancellationToken::clone(cut).cancelled_owned())
                });
                if waiting.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                if *this.events {
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Err(std::io::Error::other(
                        "the shutdown grace period ended",
                    )
                    .into())))
                }
            }
            ready => ready,
        }
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Either the handler's body or one of the transport's own pages (400).
type Either<B> = http_body_util::Either<B, Body>;

/// Keeps the connection an upgrade request came on counted busy while
/// held, so the listener's idle timeout does not close it: whoever tunnels
/// the upgraded connection takes it from the request's extensions and
/// holds it as long as the tunnel lasts (its own idle timeout applies).
#[derive(Debug, Clone)]
pub struct Busy {
    _held: Arc<io::InFlightGuard>,
}

/// The end of a listener's shutdown grace period, when answers still
/// open are ended: an event stream (`text/event-stream`, open-ended by
/// design) with its last chunk, as if the server ended it, anything else
/// cut (the client sees it incomplete, which it is). An upgrade request
/// carries it in its extensions, for whoever tunnels the connection (a
/// WebSocket then gets its close frame).
#[derive(Debug, Clone, Default)]
pub struct Cut(Arc<CancellationToken>);

impl Cut {
    /// Waits until the grace period is over.
    pub async fn cut(&self) {
        self.0.cancelled().await;
    }

    /// Ends the grace period.
    fn fire(&self) {
        self.0.cancel();
    }
}

/// Accepts connections until `stop` is cancelled, then lets open
/// connections finish their requests for up to `grace`. With `tls`, each
/// connection begins with a TLS handshake (after the PROXY header, if
/// any), which must end within the read timeout.
/// Timeouts and limits are those of the configuration in force when a
/// connection is accepted (a reload changes them for new connections).
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    tls: Option<tls::Config>,
    stop: CancellationToken,
    grace: Duration,
    what: &'static str,
) {
    accept_until(listener, &stop, grace, what, move |stream, peer, cut| {
        let handler = handler.clone();
        let tls = tls.clone();
        async move {
            let settings = handler.settings();
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr().unwrap_or(peer);
            let trusted_peer = settings.trusted_proxies.contains(peer.ip());
            let (stream, peer) = if settings.proxy_protocol && trusted_peer {
                match read_proxy_header(stream, settings.read_timeout).await {
                    Ok((s, Some(client))) => (s, client),
                    Ok((s, None)) => (s, peer),
                    Err(e) => {
                        tracing::warn!(%peer, "connection refused: {e} (server.proxy_protocol)");
                        return None;
                    }
                }
            } else {
                (io::Rewind::new(Bytes::new(), stream), peer)
            };
            let conn_info = ConnInfo::new(peer, local);
            let Some(tls) = tls else {
                let stream = tls::Stream::Plain(stream);
                return Some(connection(stream, conn_info, &settings, handler, None, cut));
            };
            match tls::accept(&tls, stream, settings.read_timeout).await {
                Ok(Some((stream, info))) => {
                    handler.handshake(tls::Outcome::Http(info));
                    let alpn = Some(info.alpn);
                    let conn_info = conn_info.with_tls(info);
                    let stream = tls::Stream::Tls(Box::new(stream));
                    Some(connection(stream, conn_info, &settings, handler, alpn, cut))
                }
                Ok(None) => {
                    handler.handshake(tls::Outcome::Challenge);
                    None
                }
                Err(e) => {
                    handler.handshake(tls::Outcome::Failed);
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                    None
                }
            }
        }
    })
    .await;
}

/// Reads a PROXY protocol header off a new connection from a trusted
/// balancer: the client it names (`None`: the balancer's own
/// connection), and the stream with whatever was read past the header.
async fn read_proxy_header(
    mut stream: tokio::net::TcpStream,
    wait: Duration,
) -> Result<(io::Rewind<tokio::net::TcpStream>, Option<SocketAddr>), String> {
    use tokio::io::AsyncReadExt;
    let mut buf = bytes::BytesMut::with_capacity(256);
    let read = async {
        loop {
            match proxy_protocol::parse(&buf) {
                Ok(Some((h, used))) => {
                    let _ = buf.split_to(used);
                    return Ok(h);
                }
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
            if buf.len() >= proxy_protocol::MAX_HEADER {
                return Err("PROXY header too large".into());
            }
            // Never read past what the header can be: the rest belongs to HTTP.
            buf.reserve(512);
            match stream.read_buf(&mut buf).await {
                Ok(0) => return Err("closed before a PROXY protocol header".into()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    let header = tokio::time::timeout(wait, read)
        .await
        .map_err(|_| format!("no PROXY protocol header within {wait:?}"))??;
    let client = match header {
        proxy_protocol::Header::Proxied { source, .. } => Some(source),
        proxy_protocol::Header::Local => None,
    };
    Ok((io::Rewind::new(buf.freeze(), stream), client))
}

/// Serves one accepted connection with `handler`: HTTP/1.1 or HTTP/2 as
/// ALPN chose, else as the client's first bytes say.
fn connection<H, S>(
    stream: S,
    conn_info: ConnInfo,
    settings: &Settings,
    handler: Arc<H>,
    alpn: Option<tls::Alpn>,
    cut: Cut,
) -> impl hyper_util::server::graceful::GracefulConnection<
    Error = Box<dyn std::error::Error + Send + Sync>,
> + Send
+ use<H, S>
where
    H: Handler,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder = match alpn {
        Some(tls::Alpn::H2) => builder.http2_only(),
        Some(tls::Alpn::Http11) => builder.http1_only(),
        None => builder,
    };
    // Header bytes in all: nginx's large_client_header_buffers (4 × 8k).
    let max_head = settings.max_header_bytes.max(MIN_HEAD_BUFFER);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.read_timeout)
        .max_buf_size(max_head)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        // RFC 8441: WebSockets over HTTP/2 streams.
        .enable_connect_protocol()
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
    let inflight = InFlight::default();
    let io = TimeoutIo::new(
        stream,
        io::Timeouts {
            first_request: settings.read_timeout,
            idle: settings.idle_timeout,
            write: settings.write_timeout,
        },
        inflight.clone(),
    );
    let trusted = settings.trusted_proxies.clone();
    let svc = service_fn(move |mut req: Request<Incoming>| {
        let guard = inflight.enter();
        let handler = handler.clone();
        let conn = conn_info.for_request(&trusted, req.headers());
        let cut = cut.clone();
        if req.headers().contains_key(http::header::UPGRADE)
            || req.method() == http::Method::CONNECT
        {
            req.extensions_mut().insert(cut.clone());
            req.extensions_mut().insert(Busy {
                _held: Arc::new(inflight.enter()),
            });
        }
        async move {
            if let Some(why) = malformed(&req) {
                let mut r = pages::error(http::StatusCode::BAD_REQUEST, why);
                r.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
                let (parts, inner) = r.into_parts();
                let body =
                    Tracked::new(Either::<H::Body>::Right(inner), guard, &cut, &parts.headers);
                return Ok::<_, Infallible>(http::Response::from_parts(parts, body));
            }
            let (parts, inner) = handler.call(req, conn).await.into_parts();
            let body = Tracked::new(Either::Left(inner), guard, &cut, &parts.headers);
            Ok::<_, Infallible>(http::Response::from_parts(parts, body))
        }
    });
    // With upgrades: a handler may answer 101 and take the connection
    // over (a native worker's WebSocket).
    builder
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .into_owned()
}

/// hyper's smallest read buffer.
const MIN_HEAD_BUFFER: usize = 8192;

/// The accept loop of every listener TQServer serves HTTP on (the public
/// one and the admin listener): accepts until `stop` is cancelled, serves
/// each connection with what `serve` makes of it (a connection, or `None`
/// to close it), then lets open connections finish their requests for up
/// to `grace`. At its end the [`Cut`] given to `serve` fires: open event
/// streams end, WebSockets get their close frame, and a moment later
/// ([`AFTER_CUT`]) whatever connection is left is dropped. `what` names
/// the listener in log lines.
pub async fn accept_until<C, F>(
    listener: TcpListener,
    stop: &CancellationToken,
    grace: Duration,
    what: &'static str,
    serve: impl Fn(tokio::net::TcpStream, std::net::SocketAddr, Cut) -> F + Send + Sync + 'static,
) where
    F: std::future::Future<Output = Option<C>> + Send + 'static,
    C: hyper_util::server::graceful::GracefulConnection + Send + 'static,
    C::Error: std::fmt::Display,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let serve = Arc::new(serve);
    let cut = Cut::default();
    let gone = CancellationToken::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly, keep serving.
                    tracing::warn!(error = %e, "{what}: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Watched from here: a shutdown waits for (and then closes) a
        // connection still reading its PROXY header too.
        let watcher = graceful.watcher();
        let gone = gone.clone();
        let (serve, cut) = (serve.clone(), cut.clone());
        let task = move |stream: tokio::net::TcpStream| async move {
            let Some(conn) = serve(stream, peer, cut).await else {
                return;
            };
            tokio::select! {
                r = watcher.watch(conn) => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "{what} connection ended with an error");
                    }
                }
                // Dropped: its socket closes.
                () = gone.cancelled() => {}
            }
        };
        match shards::next() {
            // Moved to that thread's reactor, and served there.
            Some(shard) => match stream.into_std() {
                Ok(std_stream) => {
                    shard.spawn(async move {
                        match tokio::net::TcpStream::from_std(std_stream) {
                            Ok(stream) => task(stream).await,
                            Err(e) => {
                                tracing::warn!(error = %e, "{what}: cannot serve a connection")
                            }
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "{what}: cannot hand a connection over"),
            },
            None => {
                tokio::spawn(task(stream));
            }
        }
    }
    drop(listener);
    let done = graceful.shutdown();
    tokio::pin!(done);
    tokio::select! {
        () = &mut done => return,
        () = tokio::time::sleep(grace) => {}
    }
    tracing::warn!(
        "{what} connections still open after the {grace:?} grace period; ending them (event streams get their last chunk, WebSockets a close frame 1001)"
    );
    cut.fire();
    tokio::select! {
        () = &mut done => {}
        () = tokio::time::sleep(AFTER_CUT) => {
            tracing::warn!("{what} connections still open {AFTER_CUT:?} after the cut; dropping them");
            gone.cancel();
        }
    }
}

/// How long connections get to write their last bytes (an event stream's
/// last chunk, a WebSocket's close frame) once the grace period is over.
pub const AFTER_CUT: Duration = Duration::from_millis(500);
