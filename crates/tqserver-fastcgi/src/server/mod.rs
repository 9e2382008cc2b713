//! The FastCGI server: accept connections from a web server (nginx, Caddy,
//! Apache, `cgi-fcgi`), demultiplex their requests, and run a [`Handler`]
//! per request with streaming input and output.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use tqserver_fastcgi::server::{Request, ResponseWriter, Server, ServerConfig};
//!
//! let server = Server::bind(&"127.0.0.1:9000".parse().unwrap(), ServerConfig::default()).await?;
//! server
//!     .serve(
//!         |_req: Request, mut out: ResponseWriter| async move {
//!             let _ = out.write_stdout("Content-Type: text/plain\r\n\r\nhello").await;
//!             0 // app status
//!         },
//!         std::future::pending(),
//!     )
//!     .await
//! # }
//! ```
//!
//! Per connection, one task reads and demultiplexes records and polls the
//! handlers of its requests (no task hand-over per request; spawn inside a
//! handler for CPU-heavy work), and one task writes (so an aborted handler
//! never leaves half a record on the wire). `ABORT_REQUEST` cancels the
//! handler and answers `END_REQUEST`; `GET_VALUES` is answered with
//! `FCGI_MAX_CONNS`, `FCGI_MAX_REQS` and `FCGI_MPXS_CONNS`; other
//! management types get `UNKNOWN_TYPE`. FastCGI has no per-request flow
//! control: a handler that does not read its input holds up the other
//! requests multiplexed on its connection once its small queue is full.

mod connection;
mod request;
mod writer;

use std::future::Future;
use std::io;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

pub use connection::{ABORTED_APP_STATUS, PANICKED_APP_STATUS};
pub use request::{Request, ResponseWriter, Stdin};

use crate::proto::{Limits, ProtoError};
use crate::transport::{Address, Listener};

/// Default [`ServerConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default [`ServerConfig::max_requests_per_connection`].
pub const DEFAULT_MAX_REQUESTS_PER_CONNECTION: usize = 128;
/// Default [`ServerConfig::input_queue`].
pub const DEFAULT_INPUT_QUEUE: usize = 16;

/// Server limits and behaviour.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Connections served at once; further ones wait in the listen queue.
    pub max_connections: usize,
    /// Requests in progress on one connection; more are refused with
    /// `FCGI_OVERLOADED`.
    pub max_requests_per_connection: usize,
    /// Accept several requests at once on one connection (`FCGI_MPXS_CONNS`).
    /// When false, a second request is refused with `FCGI_CANT_MPX_CONN`.
    pub multiplex: bool,
    /// Input chunks (records) buffered per request stream before the
    /// connection stops reading.
    pub input_queue: usize,
    /// Bounds on params.
    pub limits: Limits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_requests_per_connection: DEFAULT_MAX_REQUESTS_PER_CONNECTION,
            multiplex: true,
            input_queue: DEFAULT_INPUT_QUEUE,
            limits: Limits::default(),
        }
    }
}

/// An error on a server connection or in a handler's stream.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Socket error.
    #[error("FastCGI connection failed: {0}")]
    Io(#[from] io::Error),
    /// The web server sent invalid FastCGI.
    #[error("invalid FastCGI from the web server: {0}")]
    Protocol(#[from] ProtoError),
    /// The connection is gone; the response cannot be delivered.
    #[error("the FastCGI connection is closed")]
    ConnectionClosed,
    /// The input stream ended without its end record (connection closed
    /// or request aborted).
    #[error("the request input ended before its end record")]
    InputIncomplete,
    /// More input than the handler accepts.
    #[error("the request input is larger than {limit} bytes")]
    InputTooLarge {
        /// The handler's limit.
        limit: usize,
    },
}

/// Handles one request. Returns the application status sent in
/// `END_REQUEST` (0 for success, like a CGI program's exit code).
pub trait Handler: Send + Sync + 'static {
    /// Serves `request`, writing the response to `response`.
    fn handle(
        &self,
        request: Request,
        response: ResponseWriter,
    ) -> impl Future<Output = u32> + Send;
}

impl<F, Fut> Handler for F
where
    F: Fn(Request, ResponseWriter) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = u32> + Send,
{
    fn handle(
        &self,
        request: Request,
        response: ResponseWriter,
    ) -> impl Future<Output = u32> + Send {
        self(request, response)
    }
}

/// A bound FastCGI listener ready to serve.
#[derive(Debug)]
pub struct Server {
    listener: Listener,
    config: ServerConfig,
}

impl Server {
    /// Binds `address` (TCP or Unix).
    pub async fn bind(address: &Address, config: ServerConfig) -> io::Result<Self> {
        Ok(Self {
            listener: address.bind().await?,
            config,
        })
    }

    /// Serves on a listener bound elsewhere.
    pub fn from_listener(listener: Listener, config: ServerConfig) -> Self {
        Self { listener, config }
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> io::Result<Address> {
        self.listener.local_addr()
    }

    /// Accepts connections until `shutdown` completes, then stops accepting,
    /// lets each connection finish its requests in progress (new ones are
    /// refused with `FCGI_OVERLOADED`) and returns when all are closed.
    /// Bound the drain with a timeout around this future if needed.
    pub async fn serve<H: Handler>(
        self,
        handler: H,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let handler = Arc::new(handler);
        let config = Arc::new(self.config);
        let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                () = &mut shutdown => break,
                p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
            };
            let stream = tokio::select! {
                () = &mut shutdown => break,
                s = self.listener.accept() => match s {
                    Ok(s) => s,
                    Err(e) => {
                        // EMFILE and friends: back off briefly, keep serving.
                        tracing::warn!(error = %e, "FastCGI accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let (h, c, s) = (handler.clone(), config.clone(), stop_rx.clone());
            conns.spawn(async move {
                if let Err(e) = connection::serve(stream, h, c, s).await {
                    tracing::debug!(error = %e, "FastCGI connection ended with an error");
                }
                drop(permit);
            });
            // Reap finished connection tasks as we go.
            while conns.try_join_next().is_some() {}
        }
        drop(self.listener);
        let _ = stop_tx.send(true);
        while conns.join_next().await.is_some() {}
        Ok(())
    }
}

/// Serves one already-accepted connection (any byte stream) until it closes.
pub async fn serve_connection<S, H>(
    io: S,
    handler: Arc<H>,
    config: Arc<ServerConfig>,
) -> Result<(), ServerError>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
    H: Handler,
{
    let (_keep, rx) = watch::channel(false);
    connection::serve(io, handler, config, rx).await
}
