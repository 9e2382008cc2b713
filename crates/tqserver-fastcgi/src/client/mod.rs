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
//! connection fails before any record of the response arrived, the body
//! can be sent again (in memory, or a stream not yet read from), and the
//! method is idempotent (not POST, PATCH or LOCK, as nginx decides). That
//! is the signature of a process that exited while its connection sat
//! idle, but it is also what a process killed in the middle of a script
//! that had not printed anything yet looks like: a POST is never run twice.

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

/// The error of [`Client::try_request`]: what went wrong, and the request
/// itself when it never reached the application (boxed: it is large, and
/// the error path is the rare one).
pub type Unsent = (ClientError, Option<Box<Request>>);

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
    /// A kept-alive connection taken on another thread than the one it
    /// was last used on is registered anew with that thread's runtime.
    /// For servers that run one single-threaded runtime per thread: two
    /// `epoll_ctl` calls then replace a wake-up across threads on every
    /// read. Default false (with one multi-threaded runtime every thread
    /// shares one reactor, and there is nothing to move).
    pub follow_thread: bool,
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
            follow_thread: false,
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

/// Whether a request may be sent twice: nginx's rule (POST, LOCK and
/// PATCH are not; requests without a method are, e.g. a ping).
fn idempotent(params: &Params) -> bool {
    !matches!(
        params.get("REQUEST_METHOD").map(|m| &m[..]),
        Some(b"POST" | b"PATCH" | b"LOCK")
    )
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
                    config.follow_thread,
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
    pub async fn request(&self, req: Request) -> Result<Response, ClientError> {
        self.request_inner(req, false).await.map_err(|(e, _)| e)
    }

    /// Like [`Client::request`], for a caller with several applications (a
    /// process manager), which gets the request back with the error when
    /// it can be sent to another one: when the connection could not be
    /// opened (the request never left: [`ErrorKind::Connect`]), and when
    /// an idempotent request with a replayable body lost its connection
    /// before any response record (the application died, perhaps while
    /// running it: [`ErrorKind::Reset`]). Nothing is retried on this
    /// client's own address.
    pub async fn try_request(&self, req: Request) -> Result<Response, Unsent> {
        self.request_inner(req, true).await
    }

    async fn request_inner(&self, mut req: Request, hand_back: bool) -> Result<Response, Unsent> {
        let sink = req
            .on_stderr
            .take()
            .unwrap_or_else(|| self.inner.stderr.clone());
        let limits = self.inner.config.limits;
        let mut stderr = StderrLines::new(sink.clone(), limits.max_stderr_line);
        let (mut ex, mut frame) = match self.start(req, hand_back).await {
            Ok(started) => started,
            Err((e, Some(mut back))) => {
                back.on_stderr = Some(sink);
                return Err((e, Some(back)));
            }
            Err((e, None)) => return Err((e, None)),
        };
        let mut head = HeadParser::new(limits);
        let failed = |e: ClientError| (e, None);
        loop {
            match frame {
                Some(Frame::Stdout(data)) => {
                    if let Some((head, rest)) = head.push(data).map_err(|e| failed(e.into()))? {
                        return Ok(Response::new(head, ResponseBody::new(rest, ex, stderr)));
                    }
                }
                Some(Frame::Stderr(data)) => stderr.push(&data),
                None => {
                    stderr.flush();
                    return Err(failed(head.incomplete().into()));
                }
            }
            frame = poll_fn(|cx| ex.poll_frame(cx)).await.map_err(failed)?;
        }
    }

    /// Sends a request and returns once the first response record arrived;
    /// `STDOUT` and `STDERR` are then passed through as [`Frame`]s, unparsed.
    pub async fn request_raw(&self, req: Request) -> Result<RawResponse, ClientError> {
        let (ex, first) = self.start(req, false).await.map_err(|(e, _)| e)?;
        Ok(RawResponse::new(first, ex))
    }

    /// [`Client::request_raw`] that hands back a request that never reached
    /// the application (see [`Client::try_request`]).
    pub async fn try_request_raw(&self, req: Request) -> Result<RawResponse, Unsent> {
        let (ex, first) = self.start(req, true).await?;
        Ok(RawResponse::new(first, ex))
    }

    /// Sends the request and waits for the first record. A connection lost
    /// before any record (idempotent request, replayable body) means a
    /// retry on a fresh connection when it was reused, or with
    /// `hand_back`, the request back to the caller. The request also comes
    /// back when no connection could be opened.
    async fn start(
        &self,
        req: Request,
        hand_back: bool,
    ) -> Result<(Exchange, Option<Frame>), Unsent> {
        if let Some((name, len)) = req.params.largest_pair() {
            if len > MAX_RECORD_PAIR_LEN {
                let e = ClientError::ParamTooLarge {
                    name: String::from_utf8_lossy(name).into_owned(),
                    len,
                };
                return Err((e, None));
            }
        }
        let mut pooled = match self.inner.pool.checkout().await {
            Ok(p) => p,
            Err(e) => return Err((e, Some(Box::new(req)))),
        };
        let Request {
            role,
            params,
            body,
            on_stderr,
        } = req;
        let config = &self.inner.config;
        let mut body = body;
        // Not retrying counts as having retried already.
        let idempotent = idempotent(&params);
        let mut retried = !idempotent;
        loop {
            let mut ex = Exchange::new(pooled, role, &params, body, config);
            match poll_fn(|cx| ex.poll_frame(cx)).await {
                Ok(first) => return Ok((ex, first)),
                Err(e) if hand_back && idempotent && e.is_connection_lost() && !ex.started => {
                    let Some((p, b)) = ex.take_for_retry() else {
                        return Err((e, None));
                    };
                    drop(p);
                    let back = Request {
                        role,
                        params,
                        body: b,
                        on_stderr,
                    };
                    return Err((e, Some(Box::new(back))));
                }
                Err(e) if !retried && e.is_connection_lost() && ex.reused() && !ex.started => {
                    let Some((p, b)) = ex.take_for_retry() else {
                        return Err((e, None));
                    };
                    tracing::debug!(address = %self.address(), error = %e, "reused FastCGI connection was dead; retrying on a new one");
                    pooled = p;
                    body = b;
                    retried = true;
                    if let Err(e) = pooled.reconnect().await {
                        // Nothing reached the application: hand it back.
                        let back = Request {
                            role,
                            params,
                            body,
                            on_stderr,
                        };
                        return Err((e, Some(Box::new(back))));
                    }
                }
                Err(e) => return Err((e, None)),
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
