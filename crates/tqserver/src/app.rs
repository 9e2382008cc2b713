//! The running server: start every worker's backend, serve HTTP, stop
//! everything on SIGTERM / SIGINT / SIGQUIT.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::access::{AccessFile, AccessLog};
use crate::admin::{self, Admin};
use crate::config::AccessTarget;
use crate::config::{Config, Mode};
use crate::http::livereload::{self, LiveReload};
use crate::http::observe::{self, Meter, Observed};
use crate::http::router::Router;
use crate::http::{Body, pages};
use crate::logging::WorkerLog;
use crate::metrics::Metrics;
use crate::native;
use crate::php::backend::{PhpRoute, Starter};
use crate::php::listener;
use crate::php::params::ConnInfo;
use crate::php::proxy::{self, Limits};
use crate::ports::Ports;

/// What a route leads to.
#[derive(Clone)]
pub enum Route {
    /// A PHP worker.
    Php(Arc<PhpRoute>),
    /// A native worker (rust, go, command).
    Native(Arc<native::Service>),
}

impl Route {
    /// The worker's configuration (a PHP worker's as of its current pool).
    pub fn worker(&self) -> Arc<crate::config::Worker> {
        match self {
            Self::Php(p) => p.upstream.get().worker().clone(),
            Self::Native(s) => s.worker.clone(),
        }
    }
}

/// A route and what is recorded about its requests.
pub struct Routed {
    /// Where requests go.
    pub target: Route,
    /// Metrics and access log.
    pub observed: Arc<Observed>,
}

/// The request handler.
pub struct App {
    router: Router<Routed>,
    limits: Limits,
    /// Dev mode with the file watcher on: `/__tqserver/` answers and HTML
    /// responses get the live-reload tag.
    live: Option<Arc<LiveReload>>,
    /// Metrics, status and readiness (also served on `admin.listen`).
    admin: Arc<Admin>,
    /// `metrics.path` when `metrics.enabled` puts /metrics on this port.
    public_metrics: Option<String>,
    /// Record request metrics: something can read them (the admin
    /// listener or a public metrics path).
    record: bool,
    /// `server.access_log`, for requests no worker serves.
    unrouted_access: AccessLog,
}

impl App {
    /// Answers one request; the meter, when there is one, records the
    /// request once its response body is done.
    pub async fn handle(
        &self,
        mut req: Request<Incoming>,
        conn: ConnInfo,
    ) -> (Response<Body>, Option<Meter>) {
        if let Some(live) = &self.live {
            if let Some(r) = live.handle(req.method(), req.uri().path(), req.uri().query()) {
                return (r, None);
            }
        }
        if self.public_metrics.as_deref() == Some(req.uri().path()) {
            return (self.admin.metrics_page(req.headers()).await, None);
        }
        let method = self.live.as_ref().map(|_| req.method().clone());
        let Some((prefix, route)) = self.router.find(req.uri().path()) else {
            self.admin.metrics.unrouted();
            let page = pages::error(StatusCode::NOT_FOUND, "No worker serves this address.");
            return (
                observe::unrouted(&self.unrouted_access, &mut req, &conn, page),
                None,
            );
        };
        let pending = if self.record || !route.observed.access.is_off() {
            Ok(observe::begin(&route.observed, &mut req, &conn))
        } else {
            // Nothing can read metrics (no admin listener, no public
            // metrics path) and nothing is logged: only the request id.
            Err(observe::request_id(req.headers_mut()))
        };
        let resp = match &route.target {
            Route::Php(r) => {
                let upstream = r.upstream.get();
                proxy::serve(&upstream, &r.log, prefix, req, conn, self.limits).await
            }
            Route::Native(svc) => native::proxy::serve(svc, req, conn, self.limits).await,
        };
        let (resp, meter) = match pending {
            Ok(p) => {
                let (r, m) = p.respond(resp);
                (r, Some(m))
            }
            Err(id) => (observe::with_request_id(resp, id), None),
        };
        let resp = match method {
            Some(m) => livereload::inject(resp, &m, prefix).await,
            None => resp,
        };
        (resp, meter)
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Configuration or installation problem (exit 78).
    #[error("{0}")]
    Config(String),
    /// Anything else (exit 1).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Runs until SIGTERM, SIGINT or SIGQUIT, then shuts down gracefully.
pub async fn run(config: Config) -> Result<(), StartError> {
    use anyhow::Context as _;
    for n in &config.notices {
        tracing::info!("{n}");
    }
    let s = &config.server;
    let addr = format!("{}:{}", s.host, s.port);
    // Bound before any child starts: a busy port fails fast and clearly.
    let listener = TcpListener::bind(&addr).await.map_err(|e| {
        StartError::Config(format!(
            "cannot listen on {addr} (server.host / server.port in {}): {e}; is another server using the port?",
            config.file.display()
        ))
    })?;
    // Private runtime directory: random name, mode 0700, removed on exit.
    remove_stale_runtime_dirs(&std::env::temp_dir());
    let runtime_dir = tempfile::Builder::new()
        .prefix(RUNTIME_PREFIX)
        .tempdir()
        .context("cannot create the runtime directory")?;
    std::fs::write(
        runtime_dir.path().join(PID_FILE),
        std::process::id().to_string(),
    )
    .context("cannot write into the runtime directory")?;
    let ports = Arc::new(Ports::new(config.supervision.port_range));
    // FastCGI listeners are bound before any child starts, like the HTTP
    // port: a busy address is a clear error, not a half-started server.
    let mut fcgi_bound = Vec::new();
    for w in config.enabled_workers() {
        if let Some(l) = &w.fastcgi {
            let b = listener::Bound::bind(l).await.map_err(|e| {
                StartError::Config(format!(
                    "worker {}: cannot listen for FastCGI on {} (fastcgi.listen in {}): {e}",
                    w.name,
                    l.listen,
                    w.file.display()
                ))
            })?;
            fcgi_bound.push((w.name.clone(), b));
        }
    }
    let admin_listener = match config.observability.admin {
        Some(a) => Some(TcpListener::bind(a).await.map_err(|e| {
            StartError::Config(format!(
                "cannot listen on {a} (admin.listen in {}): {e}; is another TQServer running? Set admin.listen to another address, or \"\" to turn it off",
                config.file.display()
            ))
        })?),
        None => None,
    };
    let global_access = s
        .access_log
        .as_deref()
        .map(|t| AccessFile::open(t, "access"))
        .transpose()
        .with_context(|| "cannot open server.access_log".to_string())?;
    let mut unrouted_access = AccessLog::default();
    if let Some(f) = &global_access {
        unrouted_access.to_file(f.clone(), s.access_format.clone());
    }
    let metrics = Arc::new(Metrics::new());
    let sup = config.supervision.clone();
    let backends_stop = CancellationToken::new();
    let live =
        (config.mode == Mode::Dev && config.watch && config.live_reload).then(LiveReload::new);
    let starter = Arc::new(Starter {
        mode: config.mode,
        runtime_dir: runtime_dir.path().to_path_buf(),
        ports: ports.clone(),
        sup: sup.clone(),
        stop: backends_stop.clone(),
        tasks: Default::default(),
    });
    let mut routes = Vec::new();
    let mut tasks = Vec::new();
    for (i, w) in config.enabled_workers().enumerate() {
        if i > 0 {
            tokio::time::sleep(sup.startup_delay).await;
        }
        let w = Arc::new(w.clone());
        let log = WorkerLog::new(&w)
            .with_context(|| format!("worker {}: cannot open logging.log_file", w.name))?;
        let mut access = AccessLog::default();
        match &w.logging.access_log {
            AccessTarget::Off => {}
            AccessTarget::WorkerLog => {
                access.to_worker(log.clone(), w.logging.access_format.clone())
            }
            AccessTarget::File(t) => access.to_file(
                AccessFile::open(t, &w.name).with_context(|| {
                    format!("worker {}: cannot open logging.access_log {t}", w.name)
                })?,
                w.logging.access_format.clone(),
            ),
        }
        if let Some(f) = &global_access {
            access.to_file(f.clone(), s.access_format.clone());
        }
        let observed = Arc::new(Observed {
            metrics: metrics.route(&w),
            access,
        });
        if w.native.is_some() {
            tracing::info!(worker = %w.name, route = %w.route, "starting {} worker", w.type_name());
            let (svc, task) = native::supervisor::start(
                w.clone(),
                config.mode,
                sup.clone(),
                ports.clone(),
                runtime_dir.path(),
                log,
                live.clone(),
                backends_stop.clone(),
                metrics.native(&w.name),
            );
            tasks.push(task);
            let target = Route::Native(svc);
            routes.push((w.route.clone(), Routed { target, observed }));
            continue;
        }
        match starter.route(w.clone(), log).await {
            Ok(r) => {
                let target = Route::Php(Arc::new(r));
                routes.push((w.route.clone(), Routed { target, observed }));
            }
            Err(e) => {
                starter.stop.cancel();
                for t in tasks.into_iter().chain(starter.take_tasks()) {
                    let _ = t.await;
                }
                return Err(StartError::Config(e));
            }
        }
    }
    for (route, r) in &routes {
        if let Route::Php(r) = &r.target {
            if !r.upstream.get().wait_ready(sup.health_check_wait).await {
                tracing::warn!(%route, "PHP is not ready yet; its requests get 502/503 until it is");
            }
        }
    }
    let http_stop = CancellationToken::new();
    let mut fcgi_tasks = Vec::new();
    for (name, bound) in fcgi_bound {
        let Some(php) = routes.iter().find_map(|(_, r)| match &r.target {
            Route::Php(r) if r.log.name() == name => Some(r),
            _ => None,
        }) else {
            continue;
        };
        if let Ok(a) = bound.local_addr() {
            tracing::info!(worker = %name, "FastCGI listener on {a}");
        }
        fcgi_tasks.push(tokio::spawn(bound.serve(
            php.upstream.clone(),
            php.log.clone(),
            http_stop.clone(),
            sup.shutdown_grace,
        )));
    }
    let admin = Admin::new(
        metrics.clone(),
        routes
            .iter()
            .map(|(route, r)| {
                let w = r.target.worker();
                admin::Entry {
                    name: w.name.clone(),
                    route: route.clone(),
                    kind: w.type_name(),
                    target: r.target.clone(),
                    metrics: r.observed.metrics.clone(),
                }
            })
            .collect(),
    );
    let router = Router::new(routes);
    if config.watch {
        let names: Vec<String> = config.enabled_workers().map(|w| w.name.clone()).collect();
        match crate::watch::start(&config.workers_dir, &names, config.debounce) {
            Ok(changes) => {
                let targets = router
                    .values()
                    .map(|(_, r)| (r.target.worker().as_ref().clone(), r.target.clone()));
                tokio::spawn(on_changes(
                    changes,
                    targets.collect(),
                    live.clone(),
                    (config.file.clone(), config.mode),
                    starter.clone(),
                ));
                tracing::info!(
                    "watching {} for changes (debounce {:?})",
                    config.workers_dir.display(),
                    config.debounce
                );
            }
            Err(e) => tracing::warn!(
                "cannot watch {}: {e}; hot reload is off",
                config.workers_dir.display()
            ),
        }
    }
    let app = Arc::new(App {
        router,
        limits: Limits {
            max_body_bytes: s.max_body_bytes,
            read_timeout: s.read_timeout,
        },
        live,
        admin: admin.clone(),
        public_metrics: config.observability.public_metrics.clone(),
        record: config.observability.admin.is_some()
            || config.observability.public_metrics.is_some(),
        unrouted_access,
    });
    tracing::info!(
        "TQServer listening on http://{addr} (mode {})",
        config.mode.as_str()
    );
    let admin_stop = CancellationToken::new();
    let admin_task = admin_listener.map(|l| {
        if let Ok(a) = l.local_addr() {
            tracing::info!("admin listener on http://{a} (dashboard /, /metrics, /status/{{worker}}, /healthz, /readyz)");
        }
        tokio::spawn(admin::serve(l, admin.clone(), admin_stop.clone()))
    });
    tokio::spawn(reopen_logs_on_sigusr1());

    let settings = s.clone();
    let grace = sup.shutdown_grace;
    let hs = http_stop.clone();
    let server =
        tokio::spawn(async move { crate::http::serve(listener, app, &settings, hs, grace).await });
    crate::systemd::notify(&format!(
        "READY=1\nMAINPID={}\nSTATUS=serving on http://{addr}",
        std::process::id()
    ));
    wait_for_stop_signal().await;
    crate::systemd::notify("STOPPING=1\nSTATUS=finishing requests in progress");
    admin
        .draining
        .store(true, std::sync::atomic::Ordering::Release);
    tracing::info!("stopping: finishing requests in progress (up to {grace:?})");
    // A second SIGINT / SIGTERM stops at once; PR_SET_PDEATHSIG takes the
    // php-fpm masters down with us.
    tokio::spawn(async {
        wait_for_stop_signal().await;
        tracing::warn!("second stop signal: exiting now");
        std::process::exit(130);
    });
    http_stop.cancel();
    let _ = server.await;
    for t in fcgi_tasks {
        let _ = t.await;
    }
    backends_stop.cancel();
    for t in tasks.into_iter().chain(starter.take_tasks()) {
        let _ = t.await;
    }
    admin_stop.cancel();
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    drop(runtime_dir);
    tracing::info!("stopped");
    Ok(())
}

/// Acts on changed worker folders: native workers rebuild and swap; a PHP
/// worker needs nothing for its files (PHP reads the new file; opcache
/// revalidates in dev mode), its pages just reload in the browser. A
/// valid worker.yaml edit swaps in the worker with its new settings: a
/// native worker is rebuilt, a PHP worker gets a new pool and the old one
/// drains.
async fn on_changes(
    mut changes: tokio::sync::mpsc::UnboundedReceiver<crate::watch::Change>,
    mut targets: Vec<(crate::config::Worker, Route)>,
    live: Option<Arc<LiveReload>>,
    (config_file, mode): (std::path::PathBuf, Mode),
    starter: Arc<Starter>,
) {
    while let Some(c) = changes.recv().await {
        let Some((w, target)) = targets.iter_mut().find(|(w, _)| w.name == c.worker) else {
            continue;
        };
        if c.config {
            let new = match reread_worker(&config_file, mode, w) {
                Ok(new) => new,
                Err(why) => {
                    tracing::error!(worker = %w.name, "{why}");
                    continue;
                }
            };
            *w = new.clone();
            match target {
                Route::Native(svc) => svc.reconfigure(new),
                Route::Php(route) => {
                    let (route, starter, live) = (route.clone(), starter.clone(), live.clone());
                    let (name, path) = (new.name.clone(), new.route.clone());
                    tokio::spawn(async move {
                        match route.reload(&starter, new).await {
                            Ok(()) => {
                                if let Some(l) = &live {
                                    l.notify(&path);
                                }
                            }
                            Err(why) => tracing::error!(
                                worker = %name,
                                "worker.yaml changed but was not applied: {why}; the previous pool keeps serving"
                            ),
                        }
                    });
                }
            }
            continue;
        }
        match target {
            Route::Native(svc) => svc.reload(format!("changed: {}", c.describe())),
            Route::Php(_) => {
                tracing::info!(worker = %w.name, "changed: {}", c.describe());
                if let Some(l) = &live {
                    l.notify(&w.route);
                }
            }
        }
    }
}

/// The new configuration of `old` after its worker.yaml changed: the
/// whole configuration is read and checked again (an invalid file keeps
/// the running configuration; every problem names file, line and key).
fn reread_worker(
    config_file: &std::path::Path,
    mode: Mode,
    old: &crate::config::Worker,
) -> Result<crate::config::Worker, String> {
    let config = crate::config::load(config_file, mode).map_err(|errors| {
        format!(
            "{} changed but is not valid; still running the previous configuration:\n{errors}",
            old.file.display()
        )
    })?;
    let new = config
        .workers
        .into_iter()
        .find(|w| w.name == old.name)
        .ok_or_else(|| {
            format!(
                "{} is gone; restart tqserver to remove the worker",
                old.file.display()
            )
        })?;
    if !new.enabled || new.route != old.route || new.type_name() != old.type_name() {
        return Err(format!(
            "{}: enabled, path and type changes need a restart of tqserver; still running the previous configuration",
            old.file.display()
        ));
    }
    Ok(new)
}

const RUNTIME_PREFIX: &str = "tqserver-";
const PID_FILE: &str = "tqserver.pid";

/// Removes runtime directories left by a tqserver that was killed (SIGKILL
/// leaves no chance to clean up): ours by owner, with a pid file whose
/// process is gone. Directories of running servers are left alone.
fn remove_stale_runtime_dirs(tmp: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    let me = nix::unistd::geteuid().as_raw();
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with(RUNTIME_PREFIX) {
            continue;
        }
        let path = e.path();
        let owned = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == me);
        let pid = std::fs::read_to_string(path.join(PID_FILE))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        let (true, Some(pid)) = (owned, pid) else {
            continue;
        };
        let gone = matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        );
        if gone && std::fs::remove_dir_all(&path).is_ok() {
            tracing::info!(
                "removed {} left by tqserver pid {pid}, which is gone",
                path.display()
            );
        }
    }
}

/// SIGUSR1: every log file reopens its path on its next line (after
/// logrotate moved the files away), as nginx and php-fpm do.
async fn reopen_logs_on_sigusr1() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
        return;
    };
    while usr1.recv().await.is_some() {
        crate::logging::reopen_all();
        tracing::info!("SIGUSR1: log files reopened");
    }
}

/// SIGTERM, SIGINT, or SIGQUIT (php-fpm's graceful stop: all three
/// finish the requests in progress here).
async fn wait_for_stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut quit = signal(SignalKind::quit()).expect("SIGQUIT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = quit.recv() => {}
    }
}
