//! The running server: start every worker's backend, serve HTTP, apply
//! configuration changes ([`crate::reload`]), stop everything on SIGTERM /
//! SIGINT / SIGQUIT.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::access::AccessLog;
use crate::admin::{self, Admin};
use crate::config::{Config, Mode, ServerSettings};
use crate::http::ConnInfo;
use crate::http::body::Budget;
use crate::http::livereload::{self, LiveReload};
use crate::http::observe::{self, Meter, Observed};
use crate::http::router::Router;
use crate::http::{Body, pages};
use crate::metrics::Metrics;
use crate::native;
use crate::php::backend::{PhpRoute, Starter};
use crate::php::listener;
use crate::php::proxy::{self, Limits};
use crate::ports::Ports;
use crate::reload::{self, Launch};

/// What a route leads to.
#[derive(Clone)]
pub enum Route {
    /// A PHP worker.
    Php(Arc<PhpRoute>),
    /// A native worker (rust, go, command).
    Native(Arc<native::Service>),
}

/// A route and what is recorded about its requests.
pub struct Routed {
    /// Where requests go.
    pub target: Route,
    /// Metrics and access log.
    pub observed: Arc<Observed>,
}

/// What requests are routed with; a reload swaps it whole.
pub struct Table {
    /// Route prefixes to workers.
    pub router: Router<Routed>,
    /// Timeouts for new connections, body limits for requests.
    pub server: ServerSettings,
    /// `metrics.path` when `metrics.enabled` puts /metrics on this port.
    pub public_metrics: Option<String>,
    /// Record request metrics: something can read them (the admin
    /// listener or a public metrics path).
    pub record: bool,
    /// `server.access_log`, for requests no worker serves.
    pub unrouted_access: AccessLog,
}

/// The request handler.
pub struct App {
    table: ArcSwap<Table>,
    /// Dev mode with the file watcher on: `/__tqserver/` answers and HTML
    /// responses get the live-reload tag.
    live: Option<Arc<LiveReload>>,
    /// Metrics, status and readiness (also served on `admin.listen`).
    admin: Arc<Admin>,
    /// Dev mode: why the last configuration change was refused, shown
    /// instead of pages until a valid configuration is in place.
    problem: ArcSwapOption<String>,
    /// Request bodies being buffered, all routes together
    /// (`server.max_buffered_bytes`); kept across reloads.
    buffered: Arc<Budget>,
}

impl App {
    /// The handler over `table`.
    pub fn new(table: Table, live: Option<Arc<LiveReload>>, admin: Arc<Admin>) -> Self {
        let buffered = Budget::new(table.server.max_buffered_bytes);
        Self {
            table: ArcSwap::from_pointee(table),
            live,
            admin,
            problem: ArcSwapOption::empty(),
            buffered,
        }
    }

    /// The table in force.
    pub fn table(&self) -> Arc<Table> {
        self.table.load_full()
    }

    /// Puts a reloaded configuration's table in place; requests in
    /// progress keep the one they started with.
    pub fn swap(&self, table: Table) {
        self.buffered.set_limit(table.server.max_buffered_bytes);
        self.table.store(Arc::new(table));
    }

    /// Sets or clears the refused-configuration message; returns whether
    /// one was set before.
    pub fn set_problem(&self, why: Option<String>) -> bool {
        self.problem.swap(why.map(Arc::new)).is_some()
    }

    /// Answers one request; the meter, when there is one, records the
    /// request once its response body is done.
    pub async fn handle(
        &self,
        mut req: Request<Incoming>,
        conn: ConnInfo,
    ) -> (Response<Body>, Option<Meter>) {
        let table = self.table();
        if let Some(live) = &self.live {
            if let Some(r) = live.handle(req.method(), req.uri().path(), req.uri().query()) {
                return (r, None);
            }
            if let Some(p) = self.problem.load_full() {
                let page = pages::problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The configuration has an error",
                    "TQServer keeps running the previous configuration until this is fixed.",
                    &p,
                );
                let prefix = table.router.find(req.uri().path()).map_or("/", |(p, _)| p);
                return (livereload::inject(page, req.method(), prefix).await, None);
            }
        }
        if table.public_metrics.as_deref() == Some(req.uri().path()) {
            return (self.admin.metrics_page(req.headers()).await, None);
        }
        let method = self.live.as_ref().map(|_| req.method().clone());
        let Some((prefix, route)) = table.router.find(req.uri().path()) else {
            self.admin.metrics.unrouted();
            let page = pages::error(StatusCode::NOT_FOUND, "No worker serves this address.");
            return (
                observe::unrouted(&table.unrouted_access, &mut req, &conn, page),
                None,
            );
        };
        let pending = if table.record || !route.observed.access.is_off() {
            Ok(observe::begin(&route.observed, &mut req, &conn))
        } else {
            // Nothing can read metrics (no admin listener, no public
            // metrics path) and nothing is logged: only the request id.
            Err(observe::request_id(req.headers_mut()))
        };
        let limits = Limits {
            max_body_bytes: table.server.max_body_bytes,
            read_timeout: table.server.read_timeout,
            body_buffer_size: table.server.body_buffer_size,
            budget: self.buffered.clone(),
        };
        let resp = match &route.target {
            Route::Php(r) => {
                let upstream = r.upstream.get();
                proxy::serve(&upstream, &r.log, prefix, req, conn, limits).await
            }
            Route::Native(svc) => native::proxy::serve(svc, req, conn, limits).await,
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

/// One listener's accept loop.
struct Front {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The public and admin listeners; a reload can bind new ones, and the old
/// ones then finish their open connections.
pub struct Fronts {
    public: Mutex<Option<Front>>,
    admin: Mutex<Option<Front>>,
    /// Listeners replaced by a reload, still finishing their connections.
    retired: Mutex<Vec<JoinHandle<()>>>,
    grace: Duration,
}

impl Fronts {
    fn start_public(&self, listener: TcpListener, app: Arc<App>) {
        let stop = CancellationToken::new();
        let (s, grace) = (stop.clone(), self.grace);
        let task = tokio::spawn(crate::http::serve(listener, app, s, grace));
        self.replace(&self.public, Some(Front { stop, task }));
    }

    fn start_admin(&self, listener: TcpListener, admin: Arc<Admin>) {
        let addr = listener
            .local_addr()
            .map_or_else(|_| "?".into(), |a| a.to_string());
        tracing::info!(
            "admin listener on http://{addr} (dashboard /, /metrics, /status/{{worker}}, /healthz, /readyz, POST /reload)"
        );
        let stop = CancellationToken::new();
        let task = tokio::spawn(admin::serve(listener, admin, stop.clone()));
        self.replace(&self.admin, Some(Front { stop, task }));
    }

    fn replace(&self, slot: &Mutex<Option<Front>>, new: Option<Front>) {
        let old = std::mem::replace(&mut *slot.lock().unwrap_or_else(|e| e.into_inner()), new);
        if let Some(old) = old {
            old.stop.cancel();
            self.retired
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(old.task);
        }
    }

    /// Binds `addr` and serves `app` there; the old listener stops
    /// accepting and finishes its connections.
    pub async fn rebind_public(&self, addr: &str, app: Arc<App>) -> std::io::Result<()> {
        let l = TcpListener::bind(addr).await?;
        tracing::info!("TQServer listening on http://{addr}");
        self.start_public(l, app);
        Ok(())
    }

    /// Binds the new admin address (or closes the admin listener).
    pub async fn rebind_admin(
        &self,
        addr: Option<std::net::SocketAddr>,
        admin: Arc<Admin>,
    ) -> std::io::Result<()> {
        match addr {
            Some(a) => {
                let l = TcpListener::bind(a).await?;
                self.start_admin(l, admin);
            }
            None => self.replace(&self.admin, None),
        }
        Ok(())
    }

    /// Stops the public listener and waits for its connections (and those
    /// of listeners a reload replaced).
    async fn stop_public(&self) {
        self.replace(&self.public, None);
        self.wait_retired().await;
    }

    /// Stops the admin listener (last: `/readyz` answers until the end).
    async fn stop_admin(&self) {
        self.replace(&self.admin, None);
        self.wait_retired().await;
    }

    /// Waits for stopped listeners to finish their connections.
    async fn wait_retired(&self) {
        let retired = std::mem::take(&mut *self.retired.lock().unwrap_or_else(|e| e.into_inner()));
        for t in retired {
            let _ = t.await;
        }
    }
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
    // Log files are opened while still root (a root-owned log folder
    // works, as with nginx); then every port is bound and root is no
    // longer needed.
    crate::privileges::preopen_logs(&config).map_err(StartError::Config)?;
    crate::privileges::drop_if_root(&config).map_err(StartError::Config)?;
    // The watchdog kills every child's process group if we die without
    // stopping them (SIGKILL, OOM killer).
    crate::process::start_watchdog();
    // Private runtime directory: random name, mode 0700, removed on exit.
    let runtime_dir =
        crate::runtime::RuntimeDir::create().context("cannot create the runtime directory")?;
    let ports = Arc::new(Ports::new(config.supervision.port_range));
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
    let launch = Arc::new(
        Launch::new(&config, starter.clone(), metrics.clone(), live.clone())
            .map_err(|e| StartError::Other(anyhow::anyhow!(e)))?,
    );
    let mut running = Vec::new();
    for (i, w) in config.enabled_workers().enumerate() {
        if i > 0 {
            tokio::time::sleep(sup.startup_delay).await;
        }
        match launch.start(Arc::new(w.clone())).await {
            Ok(r) => running.push(r),
            Err(e) => {
                starter.stop.cancel();
                for t in starter.take_tasks() {
                    let _ = t.await;
                }
                return Err(StartError::Config(e));
            }
        }
    }
    for r in &running {
        if let Route::Php(p) = &r.target {
            if !p.upstream.get().wait_ready(sup.health_check_wait).await {
                tracing::warn!(route = %r.worker.route, "PHP is not ready yet; its requests get 502/503 until it is");
            }
        }
    }
    for (name, bound) in fcgi_bound {
        if let Some(r) = running.iter_mut().find(|r| r.worker.name == name) {
            launch.serve_fastcgi(r, bound);
        }
    }
    let admin = Admin::new(metrics.clone(), Launch::entries(&running));
    admin.set_token(config.observability.admin_token.clone());
    let app = Arc::new(App::new(
        launch.table(&config, &running),
        live.clone(),
        admin.clone(),
    ));
    let fronts = Arc::new(Fronts {
        public: Mutex::new(None),
        admin: Mutex::new(None),
        retired: Mutex::new(Vec::new()),
        grace: sup.shutdown_grace,
    });
    tracing::info!(
        "TQServer listening on http://{addr} (mode {})",
        config.mode.as_str()
    );
    fronts.start_public(listener, app.clone());
    if let Some(l) = admin_listener {
        fronts.start_admin(l, admin.clone());
    }
    let (triggers, triggers_rx) = tokio::sync::mpsc::unbounded_channel();
    admin.accept_reloads(triggers.clone());
    tokio::spawn(reload::on_sighup(triggers.clone()));
    if config.watch || config.watch_config {
        match crate::watch::start(
            &config.workers_dir,
            &config.file,
            config.watch,
            config.debounce,
        ) {
            Ok(events) => {
                tokio::spawn(reload::from_watcher(events, triggers.clone()));
                let what = if config.watch {
                    "worker folders"
                } else {
                    "worker.yaml files"
                };
                tracing::info!(
                    "watching {} and the {what} in {} for changes (debounce {:?})",
                    config.file.display(),
                    config.workers_dir.display(),
                    config.debounce
                );
            }
            Err(e) => tracing::warn!(
                "cannot watch {}: {e}; changes apply on SIGHUP or `tqserver reload` only",
                config.workers_dir.display()
            ),
        }
    }
    let reloader = tokio::spawn(
        reload::Reloader {
            config,
            running,
            launch: launch.clone(),
            app: app.clone(),
            admin: admin.clone(),
            fronts: fronts.clone(),
        }
        .run(triggers_rx),
    );
    drop(triggers);
    tokio::spawn(reopen_logs_on_sigusr1());

    let grace = sup.shutdown_grace;
    crate::systemd::notify(&format!(
        "READY=1\nMAINPID={}\nSTATUS=serving on http://{addr}",
        std::process::id()
    ));
    wait_for_stop_signal().await;
    crate::systemd::notify("STOPPING=1\nSTATUS=finishing requests in progress");
    admin
        .draining
        .store(true, std::sync::atomic::Ordering::Release);
    // A second SIGINT / SIGTERM stops at once; the parent-death signal and
    // the watchdog take the children down with us.
    tokio::spawn(async {
        wait_for_stop_signal().await;
        tracing::warn!("second stop signal: exiting now");
        std::process::exit(130);
    });
    // No configuration change from here on; a worker a reload was
    // starting is stopped with the others below.
    reloader.abort();
    let _ = reloader.await;
    let drain_delay = app.table().server.drain_delay;
    if !drain_delay.is_zero() {
        tracing::info!(
            "stopping: /readyz answers 503; still serving for {drain_delay:?} (server.drain_delay_ms) so load balancers stop sending first"
        );
        tokio::time::sleep(drain_delay).await;
    }
    tracing::info!("stopping: finishing requests in progress (up to {grace:?})");
    fronts.stop_public().await;
    launch.stop_fastcgi().await;
    backends_stop.cancel();
    for t in starter.take_tasks() {
        let _ = t.await;
    }
    fronts.stop_admin().await;
    drop(runtime_dir);
    tracing::info!("stopped");
    Ok(())
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
