//! The FastCGI client: send a request to php-fpm, php-cgi or any FastCGI
//! application, stream the response back.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tqserver_fastcgi::client::{Client, ClientConfig, Request};
//! use tqserver_fastcgi::proto::Params;
//!
//! // php-fpm with pm.max_children = 8: at most 8 connections.
//! let client = Client::new("127.0.0.1:9000".parse()?, ClientConfig::new(8));
//! let params = Params::new()
//!     .with("REQUEST_METHOD", "GET")
//!     .with("SCRIPT_FILENAME", "/srv/www/index.php");
//! let (head, body, _end) = client.request(Request::new(params)).await?.collect().await?;
//! println!("{} {}", head.status, String::from_utf8_lossy(&body));
//! # Ok(()) }
//! ```
//!
//! # Connections and `max_connections`
//!
//! php-fpm and php-cgi serve one connection per process, and a process
//! holding a kept-alive connection waits on it even when it is idle (php-fpm
//! even reports it as active, "Reading headers"). So the pool must never
//! hold more connections than the application has processes: extra
//! connections would sit unaccepted in the listen queue while every process
//! waits on an idle one (nginx with `keepalive 8` against two php-fpm
//! children: 12,600 → 1,400 requests/s). [`ClientConfig::new`] therefore
//! takes `max_connections` and has no default: set it to php-fpm's
//! `pm.max_children` (or the php-cgi process count). Idle and busy
//! connections both count toward it, requests beyond it queue inside the
//! client, and [`ClientConfig::idle_timeout`] closes idle connections so the
//! application's process manager can retire the processes behind them.
//! Keep `idle_timeout` below php-fpm's `request_terminate_timeout`, which
//! also applies to processes waiting on an idle kept-alive connection.
//!
//! # Retries
//!
//! A request is sent again, once, on a new connection, only when a reused
//! connection fails before any record of the response arrived and the body
//! can be sent again (in memory, or a stream not yet read from). That is the
//! signature of a process that exited while its connection sat idle.

mod connection;
mod error;
mod exchange;
mod pool;
mod request;
mod response;

use std::fmt;
use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

pub use error::{ClientError, ErrorKind};
pub use exchange::{EndStatus, Frame};
pub use pool::PoolStats;
pub use request::{Request, RequestBody, StderrSink};
pub use response::{RawResponse, Response, ResponseBody};

use crate::proto::params::MAX_RECORD_PAIR_LEN;
use crate::proto::{self, Body, HeadParser, Limits, Params, record};
use crate::transport::Address;
use exchange::Exchange;
use pool::Pool;
use response::StderrLines;

/// Default [`ClientConfig::idle_timeout`]: 30 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`ClientConfig::connect_timeout`]: 5 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default [`ClientConfig::read_timeout`]: 60 s, nginx's `fastcgi_read_timeout`.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Default [`ClientConfig::write_timeout`]: 60 s, nginx's `fastcgi_send_timeout`.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// How a [`Client`] connects and how long it waits.
#[derive(Clone)]
pub struct ClientConfig {
    /// Most connections open at once, busy and idle together. Set it to the
    /// number of application processes (php-fpm `pm.max_children`).
    pub max_connections: usize,
    /// Ask the application to keep the connection open (`FCGI_KEEP_CONN`)
    /// and reuse it. Default true.
    pub keep_alive: bool,
    /// Idle connections older than this are closed.
    pub idle_timeout: Duration,
    /// Limit on opening a connection.
    pub connect_timeout: Duration,
    /// Limit on waiting with no progress in either direction (the script's
    /// run time before its first output counts: set above it).
    pub read_timeout: Duration,
    /// Limit on a write that makes no progress.
    pub write_timeout: Duration,
    /// Bounds on what the application can make us buffer.
    pub limits: Limits,
    /// Where `STDERR` lines go when the request has no sink of its own.
    /// Default: `tracing` at WARN, target `tqserver_fastcgi::stderr`.
    pub on_stderr: Option<StderrSink>,
}

impl ClientConfig {
    /// Defaults, with the one number that has no safe default.
    pub fn new(max_connections: usize) -> Self {
        Self {
            max_connections,
            keep_alive: true,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            limits: Limits::default(),
            on_stderr: None,
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("max_connections", &self.max_connections)
            .field("keep_alive", &self.keep_alive)
            .field("idle_timeout", &self.idle_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A FastCGI client for one application address, with its connection
/// pool. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    config: ClientConfig,
    stderr: StderrSink,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("address", self.inner.pool.address())
            .field("config", &self.inner.config)
            .finish()
    }
}

fn log_stderr(line: &[u8]) {
    tracing::warn!(target: "tqserver_fastcgi::stderr", "{}", String::from_utf8_lossy(line));
}

impl Client {
    /// A client for the application at `address`. Connections open lazily.
    pub fn new(address: Address, config: ClientConfig) -> Self {
        let idle = if config.keep_alive {
            config.idle_timeout
        } else {
            Duration::ZERO
        };
        let stderr = config
            .on_stderr
            .clone()
            .unwrap_or_else(|| Arc::new(log_stderr));
        Self {
            inner: Arc::new(Inner {
                pool: Pool::new(
                    address,
                    config.max_connections,
                    idle,
                    config.connect_timeout,
                ),
                config,
                stderr,
            }),
        }
    }

    /// The application's address.
    pub fn address(&self) -> &Address {
        self.inner.pool.address()
    }

    /// Connection counts right now.
    pub fn stats(&self) -> PoolStats {
        self.inner.pool.stats()
    }

    /// Closes every idle connection (before stopping the application, say).
    pub fn close_idle(&self) {
        self.inner.pool.close_idle();
    }

    /// Sends a request and returns once the CGI response head is parsed;
    /// the body then streams from [`Response::body_mut`]. `STDERR` lines go
    /// to the request's sink, else the client's.
    pub async fn request(&self, mut req: Request) -> Result<Response, ClientError> {
        let sink = req
            .on_stderr
            .take()
            .unwrap_or_else(|| self.inner.stderr.clone());
        let limits = self.inner.config.limits;
        let mut stderr = StderrLines::new(sink, limits.max_stderr_line);
        let (mut ex, mut frame) = self.start(req).await?;
        let mut head = HeadParser::new(limits);
        loop {
            match frame {
                Some(Frame::Stdout(data)) => {
                    if let Some((head, rest)) = head.push(data)? {
                        return Ok(Response::new(head, ResponseBody::new(rest, ex, stderr)));
                    }
                }
                Some(Frame::Stderr(data)) => stderr.push(&data),
                None => {
                    stderr.flush();
                    return Err(head.incomplete().into());
                }
            }
            frame = poll_fn(|cx| ex.poll_frame(cx)).await?;
        }
    }

    /// Sends a request and returns once the first response record arrived;
    /// `STDOUT` and `STDERR` are then passed through as [`Frame`]s, unparsed.
    pub async fn request_raw(&self, req: Request) -> Result<RawResponse, ClientError> {
        let (ex, first) = self.start(req).await?;
        Ok(RawResponse::new(first, ex))
    }

    /// Sends the request and waits for the first record, retrying once on
    /// a fresh connection when a reused one turns out dead.
    async fn start(&self, req: Request) -> Result<(Exchange, Option<Frame>), ClientError> {
        if let Some((name, len)) = req.params.largest_pair() {
            if len > MAX_RECORD_PAIR_LEN {
                return Err(ClientError::ParamTooLarge {
                    name: String::from_utf8_lossy(name).into_owned(),
                    len,
                });
            }
        }
        let Request {
            role, params, body, ..
        } = req;
        let config = &self.inner.config;
        let mut pooled = self.inner.pool.checkout().await?;
        let mut body = body;
        let mut retried = false;
        loop {
            let mut ex = Exchange::new(pooled, role, &params, body, config);
            match poll_fn(|cx| ex.poll_frame(cx)).await {
                Ok(first) => return Ok((ex, first)),
                Err(e) if !retried && e.is_connection_lost() && ex.reused() && !ex.started => {
                    let Some((p, b)) = ex.take_for_retry() else {
                        return Err(e);
                    };
                    tracing::debug!(address = %self.address(), error = %e, "reused FastCGI connection was dead; retrying on a new one");
                    pooled = p;
                    body = b;
                    retried = true;
                    pooled.reconnect().await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Asks the application for management variables (`FCGI_GET_VALUES`),
    /// e.g. `FCGI_MAX_CONNS`. php-cgi answers and then closes the
    /// connection; modern php-fpm answers nothing useful (it no longer
    /// sets the variables), so do not size the pool from this alone.
    pub async fn get_values(&self, names: &[&str]) -> Result<Params, ClientError> {
        let mut pooled = self.inner.pool.checkout().await?;
        let conn = pooled.conn();
        record::encode_get_values(&mut conn.wq.tail, names.iter().copied())?;
        let timeout = self.inner.config.read_timeout;
        let work = async {
            while !conn.wq.is_empty() {
                poll_fn(|cx| conn.poll_write_some(cx))
                    .await
                    .map_err(ClientError::Io)?;
            }
            loop {
                match poll_fn(|cx| conn.poll_read_record(cx)).await? {
                    Some(proto::Record {
                        body: Body::GetValuesResult(values),
                        ..
                    }) => return Ok(values),
                    Some(_) => continue,
                    None => return Err(ClientError::Closed),
                }
            }
        };
        // The connection is not put back: php-cgi closes it after answering.
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or(Err(ClientError::ReadTimeout(timeout)))
    }
}
