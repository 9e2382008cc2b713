//! Where a PHP worker's requests go: php-fpm (one pooled client to its
//! socket) or TQServer's own php-cgi pool (a leased process per request).
//! The HTTP proxy and the FastCGI listener both send through this.

use std::future::Future;
use std::sync::Arc;

use tqserver_fastcgi::client::{ErrorKind, RawResponse, Request, Response, Unsent};
use tqserver_fastcgi::{Client, ClientError};

use super::cgi::{self, AcquireError, Lease, RequestInfo};
use super::fpm;
use super::script::Roots;
use crate::config::WorkerConfig;
use crate::metrics::pools::PoolStatus;

/// A connection lost this soon after the request was sent means a process
/// that was already dying (see `with_lease`).
/// Generous, because a killed process needs CPU to exit and a busy
/// machine may not give it at once.
const LOST_AT_ONCE: std::time::Duration = std::time::Duration::from_millis(250);

/// A PHP worker's backend.
#[derive(Clone)]
pub enum Upstream {
    /// php-fpm, supervised.
    Fpm(Arc<fpm::FpmMaster>),
    /// TQServer's php-cgi process manager.
    Cgi(Arc<CgiUpstream>),
}

/// A route's backend, replaceable while requests run: a worker.yaml edit
/// starts a new one, swaps it in here, then stops the old one, which
/// finishes what it has (requests hold their own `Upstream`).
pub struct SharedUpstream {
    current: std::sync::RwLock<Upstream>,
}

impl SharedUpstream {
    /// Starts with `up`.
    pub fn new(up: Upstream) -> Arc<Self> {
        Arc::new(Self {
            current: std::sync::RwLock::new(up),
        })
    }

    /// The backend now.
    pub fn get(&self) -> Upstream {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Puts `up` in place; returns the one it replaces.
    pub fn replace(&self, up: Upstream) -> Upstream {
        std::mem::replace(
            &mut *self.current.write().unwrap_or_else(|e| e.into_inner()),
            up,
        )
    }
}

/// The cgi pool with what the request path needs beside it.
pub struct CgiUpstream {
    /// The worker as of this pool's settings (a reconfigured pool gets a
    /// new `CgiUpstream` around the same pool).
    pub worker: Arc<WorkerConfig>,
    /// The pool.
    pub pool: cgi::Pool,
    /// The document roots, held open for script resolution.
    pub roots: Roots,
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The FastCGI exchange failed.
    #[error("{error}")]
    Client {
        /// What failed.
        error: ClientError,
        /// The pool killed the process at `request_timeout` (→ 504).
        timed_out: bool,
    },
    /// No process was available (→ 503).
    #[error(transparent)]
    Pool(#[from] AcquireError),
}

impl SendError {
    /// The HTTP status a client gets for this failure, the same through
    /// the HTTP proxy and the FastCGI listener.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            Self::Pool(_) => S::SERVICE_UNAVAILABLE,
            Self::Client {
                timed_out: true, ..
            } => S::GATEWAY_TIMEOUT,
            Self::Client { error, .. } => match error.kind() {
                ErrorKind::Connect | ErrorKind::Reset | ErrorKind::BadResponse => S::BAD_GATEWAY,
                ErrorKind::Timeout => S::GATEWAY_TIMEOUT,
                ErrorKind::BadRequest => S::REQUEST_HEADER_FIELDS_TOO_LARGE,
                ErrorKind::Downstream => S::BAD_REQUEST,
            },
        }
    }
}

impl Upstream {
    /// The worker.
    pub fn worker(&self) -> &Arc<WorkerConfig> {
        match self {
            Self::Fpm(b) => &b.worker,
            Self::Cgi(c) => &c.worker,
        }
    }

    /// The document roots.
    pub fn roots(&self) -> &Roots {
        match self {
            Self::Fpm(b) => &b.roots,
            Self::Cgi(c) => &c.roots,
        }
    }

    /// Ready now (php-fpm answered its ping / the cgi pool has a process
    /// or can start one).
    pub fn is_ready(&self) -> bool {
        match self {
            Self::Fpm(b) => b.is_ready(),
            Self::Cgi(c) => c.pool.is_ready(),
        }
    }

    /// php-fpm's status page for `query`, or the cgi pool's in the same
    /// format: Content-Type and body.
    pub async fn status(&self, query: &str) -> Result<(String, bytes::Bytes), String> {
        match self {
            Self::Fpm(b) => b.status(query).await,
            Self::Cgi(c) => {
                let q = super::cgi::status::Query::parse(query);
                let body = c.pool.snapshot().render(q);
                Ok((q.content_type().to_string(), body.into()))
            }
        }
    }

    /// The pool's status for metrics and the dashboard.
    pub async fn pool_status(&self) -> PoolStatus {
        match self {
            Self::Fpm(b) => b.pool_status().await,
            Self::Cgi(c) => c.pool.snapshot().pool_status(),
        }
    }

    /// Ready to serve (php-fpm answered its ping / a php-cgi answers).
    pub async fn wait_ready(&self, timeout: std::time::Duration) -> bool {
        match self {
            Self::Fpm(b) => b.wait_ready(timeout).await,
            Self::Cgi(c) => c.pool.wait_ready(timeout).await,
        }
    }

    /// Sends `req`; the response head is parsed. Keep the lease (cgi) until
    /// the body has been read to its end, then [`Lease::finish`] it.
    pub async fn send(
        &self,
        req: Request,
        info: impl FnOnce() -> RequestInfo,
    ) -> Result<(Response, Option<Lease>), SendError> {
        self.dispatch(
            req,
            info,
            |c, r| async move { c.request(r).await },
            |c, r| async move { c.try_request(r).await },
        )
        .await
    }

    /// Sends `req`; records come back unparsed (the FastCGI listener).
    pub async fn send_raw(
        &self,
        req: Request,
        info: impl FnOnce() -> RequestInfo,
    ) -> Result<(RawResponse, Option<Lease>), SendError> {
        self.dispatch(
            req,
            info,
            |c, r| async move { c.request_raw(r).await },
            |c, r| async move { c.try_request_raw(r).await },
        )
        .await
    }

    /// php-fpm: one client, which retries a dead kept-alive connection on
    /// the same address itself. cgi: a leased process, and another one for
    /// a request handed back (see `with_lease`).
    async fn dispatch<T, Fpm, FpmFut, Cgi, CgiFut>(
        &self,
        req: Request,
        info: impl FnOnce() -> RequestInfo,
        fpm: Fpm,
        cgi: Cgi,
    ) -> Result<(T, Option<Lease>), SendError>
    where
        Fpm: FnOnce(Client, Request) -> FpmFut,
        FpmFut: Future<Output = Result<T, ClientError>>,
        Cgi: Fn(Client, Request) -> CgiFut,
        CgiFut: Future<Output = Result<T, Unsent>>,
    {
        match self {
            Self::Fpm(b) => fpm(b.client.clone(), req)
                .await
                .map(|r| (r, None))
                .map_err(|error| SendError::Client {
                    error,
                    timed_out: false,
                }),
            Self::Cgi(c) => with_lease(c, req, info(), cgi).await,
        }
    }
}

/// Leases a process and sends; a request its process was already dead for
/// goes to another one (see below).
async fn with_lease<T, F, Fut>(
    up: &CgiUpstream,
    mut req: Request,
    info: RequestInfo,
    send: F,
) -> Result<(T, Option<Lease>), SendError>
where
    F: Fn(Client, Request) -> Fut,
    Fut: Future<Output = Result<T, Unsent>>,
{
    // A leased process can turn out dead before the request reached it
    // (killed while idle, before the pool reaped it): connect fails, and
    // the request tries the next process. Every process of the pool may
    // be dead at once, so try one more than there are.
    //
    // A process killed while idle can also still be dying when the request
    // is written to it: the connection is then lost moments later, before
    // any answer. That looks exactly like a process that died while
    // running the request (php-cgi leaves the empty STDIN record unread,
    // so both end in a reset), so time decides: lost within
    // LOST_AT_ONCE of sending, an idempotent request (the client hands
    // only those back) tries another process; lost later, it ran, and the
    // client gets 502. Several idle processes killed together can be met
    // one after the other, so this too may go through the whole pool; a
    // request that crashes PHP at once can thus cost at most max_workers
    // processes plus one (each crash is logged), never more.
    let pool = &up.pool;
    let max_children = up.worker.php.pool.max_children as usize;
    let max_unsent = max_children + 1;
    let (mut unsent, mut lost) = (0, 0);
    loop {
        let mut lease = pool.acquire().await?;
        lease.begin(info.clone());
        let sent = tokio::time::Instant::now();
        match send(lease.client().clone(), req).await {
            Ok(r) => return Ok((r, Some(lease))),
            // Never again after a kill at request_timeout: it reached PHP.
            Err((error, Some(back))) if !lease.timed_out() => {
                let again = if error.kind() == ErrorKind::Connect {
                    unsent += 1;
                    unsent < max_unsent
                } else if sent.elapsed() <= LOST_AT_ONCE {
                    lost += 1;
                    lost <= max_children
                } else {
                    false // lost while running: it ran
                };
                if !again {
                    return Err(SendError::Client {
                        error,
                        timed_out: false,
                    });
                }
                tracing::debug!(pid = lease.pid(), %error, "php-cgi process unreachable; trying another");
                // Dropped unfinished: the pool checks whether the process
                // still answers (Draining), and replaces it if not.
                drop(lease);
                req = *back;
            }
            Err((error, _)) => {
                return Err(SendError::Client {
                    timed_out: lease.timed_out(),
                    error,
                });
            }
        }
    }
}
