//! A small SDK for Rust workers run by TQServer (`type: rust`).
//!
//! TQServer starts each instance of a worker with its port and identity in
//! the environment, waits until `GET /health` answers 200, sends it
//! traffic, and stops it with SIGTERM when a new build replaces it. This
//! crate does the worker's side of that contract:
//!
//! - [`Env`] reads `WORKER_PORT`, `WORKER_NAME`, `WORKER_ROUTE`, `WORKER_MODE`…
//! - [`serve`] binds `127.0.0.1:$WORKER_PORT`, answers the health path
//!   itself, serves everything else with your hyper service, and on
//!   SIGTERM / SIGINT stops accepting, finishes the requests in progress,
//!   and returns.
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper::{Request, Response, body::Incoming, service::service_fn};
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     tqserver_worker::serve(service_fn(|_req: Request<Incoming>| async {
//!         Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("hello"))))
//!     }))
//!     .await
//! }
//! ```
//!
//! With axum, wrap the router: `serve(hyper_util::service::TowerToHyperService::new(app))`.
//!
//! # Layout
//!
//! One file: [`Env`], [`serve`], [`serve_on`].

use std::convert::Infallible;
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// Where the worker listens when it runs outside TQServer (no `WORKER_PORT`).
pub const DEFAULT_PORT: u16 = 8000;
/// How long requests in progress may finish after SIGTERM. TQServer waits
/// `workers.shutdown_grace_period_ms` (default 5 s) before SIGKILL.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

type BoxError = Box<dyn StdError + Send + Sync>;
/// The response body [`serve`] sends.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// What TQServer tells a worker instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    /// `WORKER_PORT` (else `PORT`, else [`DEFAULT_PORT`]).
    pub port: u16,
    /// `WORKER_NAME`: the worker's folder name.
    pub name: String,
    /// `WORKER_ROUTE`: the URL prefix routed here (`/`, `/api`).
    pub route: String,
    /// `WORKER_MODE`: `dev` or `prod`.
    pub mode: String,
    /// `WORKER_TYPE`: `rust` here.
    pub kind: String,
    /// `WORKER_HEALTH_PATH` (TQServer's `health.path`), else `/health`.
    pub health_path: String,
}

impl Env {
    /// Reads the environment; missing values get defaults that let the
    /// worker run by hand (`cargo run`).
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let port = get("WORKER_PORT")
            .or_else(|| get("PORT"))
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(DEFAULT_PORT);
        Self {
            port,
            name: get("WORKER_NAME").unwrap_or_else(|| "worker".into()),
            route: get("WORKER_ROUTE")
                .or_else(|| get("WORKER_PATH"))
                .unwrap_or_else(|| "/".into()),
            mode: get("WORKER_MODE").unwrap_or_else(|| "dev".into()),
            kind: get("WORKER_TYPE").unwrap_or_else(|| "rust".into()),
            health_path: get("WORKER_HEALTH_PATH").unwrap_or_else(|| "/health".into()),
        }
    }

    /// Runs in development mode.
    pub fn is_dev(&self) -> bool {
        self.mode == "dev"
    }

    /// `127.0.0.1:port`: TQServer proxies over loopback; nothing else
    /// should reach a worker directly.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

/// Serves `service` as a TQServer worker, configured from [`Env::from_env`].
pub async fn serve<S, B>(service: S) -> std::io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let env = Env::from_env();
    let listener = TcpListener::bind(env.addr()).await?;
    serve_on(listener, env, service, shutdown_signal()).await
}

/// [`serve`] on a listener you bound, stopping when `stop` completes (for
/// tests and embedding).
pub async fn serve_on<S, B>(
    listener: TcpListener,
    env: Env,
    service: S,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let stopping = Arc::new(AtomicBool::new(false));
    let health = Arc::new(env.health_path.clone());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut stop => break,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(_) => {
                    // EMFILE and the like: pause, keep serving.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let svc = Handler {
            inner: service.clone(),
            health: health.clone(),
            stopping: stopping.clone(),
        };
        let conn = builder
            .serve_connection(TokioIo::new(stream), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    stopping.store(true, Ordering::SeqCst);
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
    Ok(())
}

/// The user's service plus the health path.
#[derive(Clone)]
struct Handler<S> {
    inner: S,
    health: Arc<String>,
    stopping: Arc<AtomicBool>,
}

impl<S, B> Service<Request<Incoming>> for Handler<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>,
    >;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        if req.uri().path() == self.health.as_str() {
            let (status, text) = if self.stopping.load(Ordering::SeqCst) {
                (StatusCode::SERVICE_UNAVAILABLE, "stopping\n")
            } else {
                (StatusCode::OK, "ok\n")
            };
            return Box::pin(async move { Ok(text_response(status, text)) });
        }
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await.map_err(Into::into)?;
            Ok(resp.map(|b| b.map_err(Into::into).boxed_unsync()))
        })
    }
}

fn text_response(status: StatusCode, text: &'static str) -> Response<ResponseBody> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never: Infallible| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Completes on SIGTERM (TQServer's stop) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::service::service_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn env_with_and_without_tqserver() {
        let e = Env::from_lookup(|k| match k {
            "WORKER_PORT" => Some("9123".into()),
            "WORKER_NAME" => Some("index".into()),
            "WORKER_ROUTE" => Some("/".into()),
            "WORKER_MODE" => Some("prod".into()),
            _ => None,
        });
        assert_eq!(e.addr(), "127.0.0.1:9123".parse().unwrap());
        assert!(!e.is_dev());
        assert_eq!(e.health_path, "/health");
        let e = Env::from_lookup(|_| None);
        assert_eq!(e.port, DEFAULT_PORT);
        assert!(e.is_dev());
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn health_is_answered_and_a_slow_request_finishes_after_stop() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let env = Env::from_lookup(|_| None);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_on(
            listener,
            env,
            service_fn(|req: Request<Incoming>| async move {
                if req.uri().path() == "/slow" {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("app"))))
            }),
            async {
                let _ = stop_rx.await;
            },
        ));
        assert!(get(addr, "/health").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/x").await.ends_with("app"));
        let slow = tokio::spawn(get(addr, "/slow"));
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop_tx.send(()).unwrap();
        let slow = slow.await.unwrap();
        assert!(
            slow.starts_with("HTTP/1.1 200") && slow.ends_with("app"),
            "{slow}"
        );
        server.await.unwrap().unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
