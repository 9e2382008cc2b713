//! The HTTP front server: hyper (HTTP/1.1 with keep-alive, and HTTP/2 with
//! prior knowledge), timeouts from the configuration, graceful shutdown.

pub mod body;
pub mod io;
pub mod livereload;
pub mod observe;
pub mod pages;
pub mod router;
pub mod static_files;

use std::convert::Infallible;
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

use crate::app::App;
use crate::config::ServerSettings;
use crate::php::params::ConnInfo;
use io::{InFlight, TimeoutIo};

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
    /// idle timeout) until the body is done or dropped, and counts its
    /// bytes for the request's metrics and access line.
    struct Tracked {
        #[pin]
        inner: Body,
        _guard: io::InFlightGuard,
        meter: Option<observe::Meter>,
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let (Some(m), std::task::Poll::Ready(Some(Ok(f)))) = (this.meter.as_mut(), &polled) {
            if let Some(d) = f.data_ref() {
                m.sent(d.len());
            }
        }
        polled
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Accepts connections until `stop` is cancelled, then lets open
/// connections finish their requests for up to `grace`.
/// Timeouts are those of the configuration in force when a connection
/// is accepted (a reload changes them for new connections).
pub async fn serve(listener: TcpListener, app: Arc<App>, stop: CancellationToken, grace: Duration) {
    accept_until(listener, &stop, grace, "HTTP", |stream, peer| {
        let table = app.table();
        let settings: &ServerSettings = &table.server;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(settings.read_timeout)
            .keep_alive(true);
        builder.http2().timer(TokioTimer::new());
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(peer);
        let conn_info = ConnInfo { peer, local };
        let inflight = InFlight::default();
        let io = TimeoutIo::new(
            stream,
            settings.idle_timeout,
            settings.write_timeout,
            inflight.clone(),
        );
        let app = app.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let guard = inflight.enter();
            let app = app.clone();
            async move {
                let (resp, meter) = app.handle(req, conn_info).await;
                Ok::<_, Infallible>(resp.map(|inner| Tracked {
                    inner,
                    _guard: guard,
                    meter,
                }))
            }
        });
        builder.serve_connection(TokioIo::new(io), svc).into_owned()
    })
    .await;
}

/// The accept loop of every listener TQServer serves HTTP on (the public
/// one and the admin listener): accepts until `stop` is cancelled, serves
/// each connection with what `serve` makes of it, then lets open
/// connections finish their requests for up to `grace`. `what` names the
/// listener in log lines.
pub async fn accept_until<C>(
    listener: TcpListener,
    stop: &CancellationToken,
    grace: Duration,
    what: &'static str,
    mut serve: impl FnMut(tokio::net::TcpStream, std::net::SocketAddr) -> C,
) where
    C: hyper_util::server::graceful::GracefulConnection + Send + 'static,
    C::Error: std::fmt::Display,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
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
        let conn = graceful.watch(serve(stream, peer));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "{what} connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!("{what} connections still open after the {grace:?} grace period; closing them");
        }
    }
}
