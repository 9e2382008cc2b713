//! TLS on the HTTP transport: the rustls server configuration a listener
//! serves with, the handshake (tokio-rustls), and what it negotiated.
//! Certificates come from a resolver the caller gives (the `certs`
//! module): this one knows no certificate file, CA or ACME.
//!
//! TLS 1.2 and 1.3 only (rustls has nothing older, and no renegotiation),
//! rustls' default cipher suites and groups, no 0-RTT data, session
//! tickets and a session cache for resumption (as nginx with its
//! defaults).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ResolvesServerCert, ServerSessionMemoryCache};
use tokio::io::{AsyncRead, AsyncWrite};

/// The configuration new handshakes use: swapped whole by a reload (a
/// new lowest version, a challenge added); handshakes in progress and
/// open connections keep the one they started with.
pub type Config = Arc<ArcSwap<rustls::ServerConfig>>;

/// The ALPN protocol ID of ACME's tls-alpn-01 challenge (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Sessions remembered for TLS 1.2 resumption by ID (the rest resume by
/// ticket).
const SESSION_CACHE: usize = 4096;

/// The application protocol a TLS connection agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// HTTP/2.
    H2,
    /// HTTP/1.1 (also what a client that offers no ALPN gets).
    Http11,
}

impl Alpn {
    /// As ALPN names it (the access log, metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::H2 => "h2",
            Self::Http11 => "http/1.1",
        }
    }
}

/// What a TLS handshake settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsInfo {
    /// The application protocol.
    pub alpn: Alpn,
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: &'static str,
}

/// How a handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP connection follows.
    Http(TlsInfo),
    /// An ACME server checked a tls-alpn-01 challenge; the connection is
    /// closed (RFC 8737 §3).
    Challenge,
    /// No handshake (timeout, bad hello, no certificate for the name, no
    /// common version or protocol).
    Failed,
}

/// A server configuration: certificates from `resolver`, TLS 1.3 (and 1.2
/// unless `tls13_only`), ALPN `h2` then `http/1.1`, and `acme-tls/1`
/// when `acme_challenges` (the resolver then answers it).
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    tls13_only: bool,
    acme_challenges: bool,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = if tls13_only {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let mut c = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if acme_challenges {
        c.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
    c.ticketer = rustls::crypto::ring::Ticketer::new()?;
    c.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    // The server's order (ring's: AES-256-GCM, AES-128-GCM, then
    // ChaCha20-Poly1305), as nginx's `ssl_prefer_server_ciphers on`: every
    // suite offered is an AEAD with forward secrecy, so this only makes
    // the choice predictable (testssl rates "no cipher order" high).
    c.ignore_client_order = true;
    // No 0-RTT: early data can be replayed.
    c.max_early_data_size = 0;
    Ok(c)
}

/// Runs the server side of a handshake on `stream` within `wait`.
/// `Ok(None)`: an ACME challenge check, answered and closed.
pub async fn accept<S>(
    config: &Config,
    stream: S,
    wait: Duration,
) -> Result<Option<(tokio_rustls::server::TlsStream<S>, TlsInfo)>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(config.load_full());
    let mut tls = match tokio::time::timeout(wait, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("no TLS handshake within {wait:?}")),
    };
    let (_, conn) = tls.get_ref();
    let alpn = match conn.alpn_protocol() {
        Some(b"h2") => Alpn::H2,
        Some(p) if p == ACME_TLS_ALPN => {
            use tokio::io::AsyncWriteExt as _;
            let _ = tokio::time::timeout(wait, tls.shutdown()).await;
            return Ok(None);
        }
        _ => Alpn::Http11,
    };
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "TLSv1.3",
    };
    Ok(Some((tls, TlsInfo { alpn, version })))
}

/// A connection's byte stream: plain, or TLS over it (one type, so that
/// both are served by the same hyper connection type).
///
/// A TLS stream sends its close_notify when it is dropped, if nothing
/// sent one yet: hyper drops a connection it gave up on (a bad HTTP/2
/// preface, a protocol error) without shutting it down, and a client
/// then sees a truncation ("unexpected eof") instead of a close.
pub enum Stream<S: AsyncRead + AsyncWrite + Unpin> {
    /// No TLS.
    Plain(S),
    /// After a handshake.
    Tls(Box<tokio_rustls::server::TlsStream<S>>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> Drop for Stream<S> {
    fn drop(&mut self) {
        let Self::Tls(s) = self else { return };
        // Idempotent: rustls sends no second alert after one was sent
        // (by a shutdown, or a fatal alert).
        s.get_mut().1.send_close_notify();
        // One attempt, never a wait: the alert goes out when the socket
        // takes it now (it nearly always does), else is lost with it.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let _ = std::pin::Pin::new(s.as_mut()).poll_flush(&mut cx);
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Self::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
