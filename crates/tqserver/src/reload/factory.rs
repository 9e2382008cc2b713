//! Starting workers, at start-up and on reloads: each gets its log, its
//! metrics and access log (what the app records about its requests), its
//! FastCGI listener when it has one, and — in dev mode — a subscription
//! that reloads browsers when it publishes a new page version. The
//! [`Running`] it makes is what the reloader keeps, routes and stops.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::{AccessFile, AccessLog};
use crate::admin;
use crate::app::livereload::LiveReload;
use crate::app::observe::Observed;
use crate::app::{Routed, Table};
use crate::config::{AccessTarget, Config, WorkerConfig};
use crate::logging::WorkerLog;
use crate::metrics::Metrics;
use crate::supervise::Scope;
use crate::workers::{StartError, Worker};

/// A running worker, as the reloader keeps it.
pub struct Running {
    /// Its configuration in force.
    pub config: Arc<WorkerConfig>,
    /// The worker.
    pub worker: Worker,
    /// Its metrics and access log.
    pub observed: Arc<Observed>,
    /// Its FastCGI listener's stop (`fastcgi.listen`).
    fastcgi: Option<CancellationToken>,
    /// The task that reloads browsers when it publishes a new page version.
    pages: Option<tokio::task::AbortHandle>,
}

impl Running {
    /// Drains and stops it (requests in progress finish), and closes its
    /// FastCGI listener.
    pub fn stop(&self) {
        if let Some(f) = &self.fastcgi {
            f.cancel();
        }
        if let Some(p) = &self.pages {
            p.abort();
        }
        self.worker.stop();
    }

    /// Its place on the admin pages.
    fn entry(&self) -> admin::Entry {
        admin::Entry {
            name: self.config.name.clone(),
            route: self.config.route.clone(),
            kind: self.config.type_name(),
            worker: self.worker.clone(),
            metrics: self.observed.metrics.clone(),
        }
    }

    /// Its FastCGI listener went away.
    pub fn close_fastcgi(&mut self) {
        if let Some(s) = self.fastcgi.take() {
            s.cancel();
        }
    }
}

#[derive(Clone)]
struct GlobalAccess {
    target: String,
    file: AccessFile,
    format: crate::access::AccessFormat,
}

/// What starting a worker needs.
pub struct Factory {
    /// Where workers run.
    pub scope: Arc<Scope>,
    /// Every metric.
    pub metrics: Arc<Metrics>,
    /// Dev-mode browser reload.
    pub live: Option<Arc<LiveReload>>,
    /// `server.access_log`, open, with its target and format.
    global_access: std::sync::Mutex<Option<GlobalAccess>>,
    /// Cancelled in the front phase of the shutdown (with the public
    /// listener): every FastCGI listener stops on a child of it.
    fastcgi_stop: CancellationToken,
    /// The FastCGI listeners' tasks.
    fastcgi_tasks: TaskTracker,
}

impl Factory {
    /// Opens `server.access_log` of `config`.
    pub fn new(
        config: &Config,
        scope: Arc<Scope>,
        metrics: Arc<Metrics>,
        live: Option<Arc<LiveReload>>,
    ) -> Result<Self, String> {
        let factory = Self {
            scope,
            metrics,
            live,
            global_access: std::sync::Mutex::new(None),
            fastcgi_stop: CancellationToken::new(),
            fastcgi_tasks: TaskTracker::new(),
        };
        factory.set_global_access(config)?;
        Ok(factory)
    }

    /// (Re)opens `server.access_log` when it changed.
    pub fn set_global_access(&self, config: &Config) -> Result<(), String> {
        let s = &config.server;
        let mut g = self.global_access.lock().unwrap_or_else(|e| e.into_inner());
        let now = g.as_ref().map(|g| (&g.target, &g.format));
        if now == s.access_log.as_ref().map(|t| (t, &s.access_format)) {
            return Ok(());
        }
        *g = match &s.access_log {
            None => None,
            Some(t) => Some(GlobalAccess {
                file: match g.as_ref().filter(|g| &g.target == t) {
                    Some(g) => g.file.clone(),
                    None => AccessFile::open(t, "access")
                        .map_err(|e| format!("cannot open server.access_log {t}: {e}"))?,
                },
                target: t.clone(),
                format: s.access_format.clone(),
            }),
        };
        Ok(())
    }

    /// Requests no worker serves go to the server-wide access log only.
    fn unrouted_access(&self) -> AccessLog {
        let mut a = AccessLog::default();
        if let Some(g) = self.global() {
            a.to_file(g.file, g.format);
        }
        a
    }

    fn global(&self) -> Option<GlobalAccess> {
        self.global_access
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A worker's metrics and access log.
    pub fn observed(&self, w: &WorkerConfig, log: &WorkerLog) -> Result<Arc<Observed>, StartError> {
        let mut access = AccessLog::default();
        match &w.logging.access_log {
            AccessTarget::Off => {}
            AccessTarget::WorkerLog => {
                access.to_worker(log.clone(), w.logging.access_format.clone())
            }
            AccessTarget::File(t) => access.to_file(
                AccessFile::open(t, &w.name).map_err(|source| StartError::AccessLog {
                    worker: w.name.clone(),
                    path: t.clone(),
                    source,
                })?,
                w.logging.access_format.clone(),
            ),
        }
        if let Some(g) = self.global() {
            access.to_file(g.file, g.format);
        }
        Ok(Arc::new(Observed {
            metrics: self.metrics.route(w),
            access,
        }))
    }

    /// Starts `w` (not yet routed).
    pub async fn start(&self, w: Arc<WorkerConfig>) -> Result<Running, StartError> {
        let log = w.open_log().map_err(|source| StartError::Log {
            worker: w.name.clone(),
            source,
        })?;
        let observed = self.observed(&w, &log)?;
        let native_metrics = self.metrics.native(&w.name);
        let worker = Worker::start(&self.scope, w.clone(), log, native_metrics).await?;
        let mut r = Running {
            config: w,
            worker,
            observed,
            fastcgi: None,
            pages: None,
        };
        self.watch_pages(&mut r);
        Ok(r)
    }

    /// Dev mode: browsers showing `r`'s pages reload when it publishes a
    /// new page version (a swap, a failed build). Again after a move.
    pub fn watch_pages(&self, r: &mut Running) {
        if let Some(old) = r.pages.take() {
            old.abort();
        }
        let (Some(live), Some(mut versions)) = (self.live.clone(), r.worker.page_versions()) else {
            return;
        };
        let route = r.config.route.clone();
        let task = tokio::spawn(async move {
            while versions.changed().await.is_ok() {
                live.notify(&route);
            }
        });
        r.pages = Some(task.abort_handle());
    }

    /// Serves `bound` (the worker's `fastcgi.listen`) with `r` until `r`
    /// stops or TQServer does.
    pub fn serve_fastcgi(&self, r: &mut Running, bound: crate::workers::FastcgiListener) {
        let stop = self.fastcgi_stop.child_token();
        let grace = self.scope.sup.shutdown_grace;
        let addr = bound.local_addr();
        let Some(task) = r.worker.serve_fastcgi(bound, stop.clone(), grace) else {
            return;
        };
        if let Ok(a) = addr {
            tracing::info!(worker = %r.config.name, "FastCGI listener on {a}");
        }
        self.fastcgi_tasks.spawn(task);
        if let Some(old) = r.fastcgi.replace(stop) {
            old.cancel();
        }
    }

    /// Closes every FastCGI listener (open connections finish their
    /// requests) and waits for them: part of the shutdown's front phase.
    pub async fn close_fastcgi(&self) {
        self.fastcgi_stop.cancel();
        self.fastcgi_tasks.close();
        self.fastcgi_tasks.wait().await;
    }

    /// The routing table over `running` with `config`'s server settings.
    pub fn table(&self, config: &Config, running: &[Running]) -> Table {
        let routes = running
            .iter()
            .map(|r| {
                let routed = Routed {
                    worker: r.worker.clone(),
                    observed: r.observed.clone(),
                    compression: Arc::new(r.config.compression.clone()),
                };
                (r.config.route.clone(), routed)
            })
            .collect();
        let s = &config.server;
        Table {
            router: crate::app::router::Router::new(routes),
            http: Arc::new(s.http()),
            server: s.clone(),
            public_metrics: config.observability.public_metrics.clone(),
            record: config.observability.admin.is_some()
                || config.observability.public_metrics.is_some(),
            unrouted_access: self.unrouted_access(),
        }
    }

    /// The admin pages' view of `running`.
    pub fn entries(running: &[Running]) -> Vec<admin::Entry> {
        let mut e: Vec<_> = running.iter().map(Running::entry).collect();
        e.sort_by(|a, b| a.route.cmp(&b.route));
        e
    }

    /// How long a started worker has to become ready (PHP answers; a
    /// native worker's builds can take minutes, which its own wait allows).
    pub fn ready_wait(&self) -> Duration {
        self.scope.sup.health_check_wait
    }
}
