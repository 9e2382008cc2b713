//! A running worker, whatever its kind: the one place that knows the
//! kinds (PHP on php-fpm or TQServer's php-cgi pool, static files,
//! native). Routing,
//! reloads, the admin listener and metrics ask a [`Worker`] through its
//! methods and never reach into `php` or `native` themselves; a new kind
//! is one module plus one arm of [`Kind`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::WorkerConfig;
use crate::http::body::Limits;
use crate::http::{Body, ConnInfo};
use crate::logging::WorkerLog;
use crate::metrics::NativeMetrics;
use crate::metrics::pools::PoolStatus;
use crate::native::NativeWorker;
use crate::php::{LifecycleError, PhpWorker};
use crate::supervise::Scope;

/// The longest a native worker may take to build and start before a
/// reload gives up on it (the old one keeps serving).
const NATIVE_READY_WAIT: Duration = Duration::from_secs(600);

/// A running worker. Cheap to clone: clones share the worker.
#[derive(Clone)]
pub struct Worker {
    kind: Kind,
    log: WorkerLog,
}

#[derive(Clone)]
enum Kind {
    /// PHP, on php-fpm or TQServer's php-cgi pool.
    Php(Arc<PhpWorker>),
    /// `type: static`: files only; its configuration and document root,
    /// swapped whole by a reload.
    Static(Arc<arc_swap::ArcSwap<StaticSite>>),
    /// A native worker (rust, go, bun, command), its supervisor's stop,
    /// and the folders served before it (`public_files`).
    Native(Arc<NativeWorker>, CancellationToken, Arc<PublicFiles>),
}

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Its log file (`logging.log_file`) could not be opened.
    #[error("worker {worker}: cannot open logging.log_file: {source}")]
    Log {
        /// The worker.
        worker: String,
        /// Why.
        source: std::io::Error,
    },
    /// Its access log (`logging.access_log`) could not be opened.
    #[error("worker {worker}: cannot open logging.access_log {path}: {source}")]
    AccessLog {
        /// The worker.
        worker: String,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Its FastCGI listener could not be bound.
    #[error("cannot listen for FastCGI on {address} (fastcgi.listen): {source}")]
    FastcgiListener {
        /// `fastcgi.listen`.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// Its PHP backend could not start.
    #[error(transparent)]
    Php(#[from] LifecycleError),
    /// It started but did not become ready; it was stopped again.
    #[error("it did not become ready")]
    NotReady,
}

/// How an in-place change was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconfigured {
    /// Applied (a PHP pool resized or reloaded).
    Applied,
    /// A native worker builds and swaps in a version with the new settings.
    Rebuilding,
}

impl Reconfigured {
    /// In words, for the reload report.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Rebuilding => "rebuilding with the new settings",
        }
    }
}

/// Why `/status/{worker}` has no page for a worker.
#[derive(Debug, thiserror::Error)]
pub enum StatusPageError {
    /// Not a PHP worker: php-fpm's status page is for PHP workers.
    #[error(
        "php-fpm's status page is for PHP workers; a native worker's instances are on the dashboard and in /metrics"
    )]
    NotPhp,
    /// The pool did not answer.
    #[error("{0}")]
    Unavailable(String),
}

/// A PHP worker's FastCGI listener (`fastcgi.listen`), bound before any
/// process starts so a busy address is a clear error.
pub use crate::php::listener::Bound as FastcgiListener;

/// Whether going from `old` to `new` needs a new worker beside the old
/// one (another kind, another PHP backend, another log file), rather than
/// a change in place.
pub fn needs_replacing(old: &WorkerConfig, new: &WorkerConfig) -> bool {
    old.type_name() != new.type_name()
        || (new.native.is_none() && old.php.backend != new.php.backend)
        || old.logging.log_file != new.logging.log_file
}

/// Whether `old` and `new` differ only in what the front does with the
/// answers (`compression`), which the routing table carries: nothing to
/// tell a native worker (no rebuild). A PHP or static worker is still
/// told, since its static files read the policy (precompressed
/// siblings).
pub fn front_only(old: &WorkerConfig, new: &WorkerConfig) -> bool {
    old.native.is_some() && {
        let mut same = new.clone();
        same.compression = old.compression.clone();
        *old == same
    }
}

impl Worker {
    /// Starts `config` in `scope` (not yet routed): its PHP backend, or a
    /// native worker's supervisor, which builds and starts its instances.
    pub async fn start(
        scope: &Scope,
        config: Arc<WorkerConfig>,
        log: WorkerLog,
        native_metrics: NativeMetrics,
    ) -> Result<Self, StartError> {
        if config.native.is_some() {
            tracing::info!(worker = %config.name, route = %config.route, "starting {} worker", config.type_name());
            let stop = scope.stop.child_token();
            let native = crate::native::supervisor::start(
                config.clone(),
                scope,
                log.clone(),
                stop.clone(),
                native_metrics,
            );
            let public = Arc::new(PublicFiles::open(&config));
            return Ok(Self {
                kind: Kind::Native(native, stop, public),
                log,
            });
        }
        if config.static_site {
            tracing::info!(worker = %config.name, route = %config.route, "serving static files from {}", config.php.document_root.display());
            return Ok(Self {
                kind: Kind::Static(Arc::new(arc_swap::ArcSwap::from_pointee(StaticSite::new(
                    config,
                )))),
                log,
            });
        }
        let php = PhpWorker::start(scope, config, log.clone()).await?;
        Ok(Self {
            kind: Kind::Php(Arc::new(php)),
            log,
        })
    }

    /// A PHP worker (its log is its backend's, and stays with it).
    pub fn is_php(&self) -> bool {
        matches!(self.kind, Kind::Php(_))
    }

    /// The worker's log.
    pub fn log(&self) -> &WorkerLog {
        &self.log
    }

    /// Answers one request for this worker, mounted at `prefix`.
    pub async fn serve(
        &self,
        req: Request<Incoming>,
        conn: ConnInfo,
        prefix: &str,
        limits: Limits,
    ) -> Response<Body> {
        match &self.kind {
            Kind::Php(p) => {
                let upstream = p.upstream.get();
                crate::php::proxy::serve(&upstream, &p.log, prefix, req, conn, limits).await
            }
            Kind::Static(site) => {
                let site = site.load_full();
                let c = &site.config;
                crate::php::proxy::serve_files(
                    &site.roots,
                    &c.php.rules,
                    &c.compression,
                    prefix,
                    req,
                )
                .await
            }
            Kind::Native(n, _, public) => {
                let c = &n.worker.compression;
                for (doc, below) in [(&public.own, prefix), (&public.server, "/")] {
                    let Some(doc) = doc else { continue };
                    if let Some(r) = crate::php::proxy::public_file(doc, c, below, &req).await {
                        return r;
                    }
                }
                crate::native::proxy::serve(n, req, conn, limits).await
            }
        }
    }

    /// Whether it can serve now, and why not.
    pub fn readiness(&self) -> Result<(), String> {
        match &self.kind {
            Kind::Php(p) if p.upstream.get().is_ready() => Ok(()),
            Kind::Php(_) => Err("PHP is not answering yet".to_string()),
            Kind::Static(_) => Ok(()),
            Kind::Native(n, ..) => n.readiness(),
        }
    }

    /// Waits until it can serve: PHP answers (within `php_wait`); a native
    /// worker has a ready instance (builds can take minutes), or gave up.
    pub async fn wait_ready(&self, php_wait: Duration) -> bool {
        match &self.kind {
            Kind::Php(p) => p.upstream.get().wait_ready(php_wait).await,
            Kind::Static(_) => true,
            Kind::Native(n, ..) => n.wait_ready(NATIVE_READY_WAIT).await,
        }
    }

    /// At start-up, before the public port serves: waits (up to
    /// `php_wait`) for a PHP worker to answer; false when it did not. A
    /// native worker is not waited for (a build can take minutes; its
    /// requests get 503 "building" meanwhile).
    pub async fn wait_started(&self, php_wait: Duration) -> bool {
        match &self.kind {
            Kind::Php(_) => self.wait_ready(php_wait).await,
            Kind::Static(_) | Kind::Native(..) => true,
        }
    }

    /// Its processes now, for metrics and the dashboard.
    pub async fn status(&self) -> PoolStatus {
        match &self.kind {
            Kind::Php(p) => p.upstream.get().pool_status().await,
            Kind::Static(site) => PoolStatus {
                worker: site.load().config.name.clone(),
                backend: "static",
                up: true,
                ..PoolStatus::default()
            },
            Kind::Native(n, ..) => n.pool_status(),
        }
    }

    /// php-fpm's status page for `query` (either PHP backend renders it in
    /// php-fpm's formats): Content-Type and body.
    pub async fn status_page(&self, query: &str) -> Result<(String, Bytes), StatusPageError> {
        match &self.kind {
            Kind::Php(p) => p
                .upstream
                .get()
                .status(query)
                .await
                .map_err(StatusPageError::Unavailable),
            Kind::Static(_) | Kind::Native(..) => Err(StatusPageError::NotPhp),
        }
    }

    /// Applies `new` (the same worker, the same kind: see
    /// [`needs_replacing`]) in place.
    pub async fn reconfigure(
        &self,
        scope: &Scope,
        new: &WorkerConfig,
    ) -> Result<Reconfigured, LifecycleError> {
        match &self.kind {
            Kind::Php(p) => {
                p.reload(scope, new.clone()).await?;
                Ok(Reconfigured::Applied)
            }
            Kind::Static(site) => {
                site.store(Arc::new(StaticSite::new(Arc::new(new.clone()))));
                Ok(Reconfigured::Applied)
            }
            Kind::Native(n, ..) => {
                n.reconfigure(new.clone());
                Ok(Reconfigured::Rebuilding)
            }
        }
    }

    /// Its files changed (not its worker.yaml): a native worker rebuilds
    /// and swaps (true: it takes it from here); PHP reads the new files
    /// itself, except in worker mode, whose script boots again in new
    /// processes (false: browsers are to reload either way).
    pub async fn files_changed(&self, scope: &Scope, why: String) -> bool {
        match &self.kind {
            Kind::Php(p) => {
                if let Err(e) = p.redeploy(scope).await {
                    p.log
                        .error(&format!("the worker script was not started again: {e}"));
                }
                false
            }
            Kind::Static(_) => false,
            Kind::Native(n, ..) => {
                n.reload(why);
                true
            }
        }
    }

    /// A PHP worker in worker mode boots its script again in new
    /// processes (its code changed, or `tqserver reload`); whether it is
    /// one.
    pub async fn redeploy(&self, scope: &Scope) -> Result<bool, LifecycleError> {
        match &self.kind {
            Kind::Php(p) => p.redeploy(scope).await,
            Kind::Static(_) | Kind::Native(..) => Ok(false),
        }
    }

    /// Drains and stops it: requests in progress finish.
    pub fn stop(&self) {
        match &self.kind {
            Kind::Php(p) => p.stop(),
            Kind::Static(_) => {}
            Kind::Native(_, stop, _) => stop.cancel(),
        }
    }

    /// Serves `bound` (its `fastcgi.listen`) until `stop` (PHP workers
    /// only; `None` for other kinds).
    pub fn serve_fastcgi(
        &self,
        bound: FastcgiListener,
        stop: CancellationToken,
        grace: Duration,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        match &self.kind {
            Kind::Php(p) => Some(bound.serve(p.upstream.clone(), p.log.clone(), stop, grace)),
            Kind::Static(_) | Kind::Native(..) => None,
        }
    }

    /// Changes after which pages it served should reload in a browser
    /// (dev-mode live reload): a native worker's swaps and failed builds.
    /// PHP workers have none (their file changes reach the watcher).
    pub fn page_versions(&self) -> Option<watch::Receiver<u64>> {
        match &self.kind {
            Kind::Php(_) | Kind::Static(_) => None,
            Kind::Native(n, ..) => {
                let mut serving = n.subscribe();
                let (tx, rx) = watch::channel(serving.borrow().page_version);
                tokio::spawn(async move {
                    while serving.changed().await.is_ok() {
                        let v = serving.borrow_and_update().page_version;
                        tx.send_if_modified(|now| std::mem::replace(now, v) != v);
                        if tx.is_closed() {
                            return;
                        }
                    }
                });
                Some(rx)
            }
        }
    }
}

/// The folders a native worker's requests are answered from before they
/// are proxied (`public_files`), as the Go TQServer did: its `public/`
/// (under its route), then the project's `server/public/` (the full
/// path). Either is left out when it is not a folder.
pub struct PublicFiles {
    own: Option<crate::php::script::DocRoot>,
    server: Option<crate::php::script::DocRoot>,
}

impl PublicFiles {
    fn open(config: &WorkerConfig) -> Self {
        let on = config.native.as_ref().is_some_and(|n| n.public_files);
        let open = |p: &std::path::Path| {
            std::path::absolute(p)
                .and_then(|d| d.canonicalize())
                .ok()
                .filter(|d| on && d.is_dir())
                .map(|d| crate::php::script::DocRoot::open(&d, config.php.symlinks))
        };
        Self {
            own: open(&config.php.document_root),
            server: open(std::path::Path::new(SERVER_PUBLIC)),
        }
    }
}

/// The project's shared public folder, relative to the working directory
/// (where server.yaml's paths are relative to).
const SERVER_PUBLIC: &str = "server/public";

/// A `type: static` worker: its configuration and its document root.
pub struct StaticSite {
    config: Arc<WorkerConfig>,
    roots: crate::php::script::Roots,
}

impl StaticSite {
    fn new(config: Arc<WorkerConfig>) -> Self {
        let roots = crate::php::script::Roots::open(&config.php);
        Self { config, roots }
    }
}
