//! Live configuration: server.yaml and worker.yaml changes applied to the
//! running server without a restart, and without failing a request.
//!
//! A reload is asked for by the watcher (a configuration file changed, a
//! worker folder appeared or went away), by SIGHUP, or by `tqserver
//! reload` (`POST /reload` on the admin listener). The whole configuration
//! is read and checked first: an invalid one changes nothing, and its
//! errors (file, line, key) are logged, answered to `tqserver reload`, and
//! shown by dev-mode pages until a valid one arrives. A valid one is
//! compared with the one in force, worker by worker:
//!
//! - added (or enabled): started, routed once ready;
//! - removed (or disabled): unrouted, then drained and stopped;
//! - `type`, `php.backend` or `logging.log_file` changed: the new worker
//!   starts beside the old one, takes the route once ready, and the old
//!   one drains;
//! - anything else: applied in place — a native worker is rebuilt and
//!   swapped ([`crate::native::Service::reconfigure`]), a PHP pool is
//!   resized or reloaded ([`crate::php::backend::PhpRoute::reload`]);
//!   a new `path` moves the route.
//!
//! Server settings: timeouts, body limit, access log and metrics path
//! apply at once; a new `server.host`/`server.port` or `admin.listen` is
//! bound and the old listener drains (a busy address is refused and the
//! old one keeps serving). What cannot change while running (log file and
//! format, supervision, port range, watcher settings, FastCGI listeners)
//! is named in the report as needing a restart.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::access::{AccessFile, AccessLog};
use crate::admin::{self, Admin};
use crate::app::{App, Fronts, Route, Routed, Table};
use crate::config::{AccessTarget, Config, Worker};
use crate::http::livereload::LiveReload;
use crate::http::observe::Observed;
use crate::logging::WorkerLog;
use crate::metrics::Metrics;
use crate::native;
use crate::php::backend::Starter;

/// Why a reload runs.
#[derive(Debug)]
pub enum Trigger {
    /// A worker folder changed: its files, its worker.yaml, or the folder
    /// itself (added, removed).
    Files(crate::watch::Change),
    /// server.yaml changed.
    ServerFile,
    /// SIGHUP.
    Hangup,
    /// `tqserver reload`: the report, or why nothing was applied.
    Asked(oneshot::Sender<Result<String, String>>),
}

/// What starting a worker needs, at start-up and on reloads.
pub struct Launch {
    /// Starts PHP backends; holds every supervising task.
    pub starter: Arc<Starter>,
    /// Every metric.
    pub metrics: Arc<Metrics>,
    /// Dev-mode browser reload.
    pub live: Option<Arc<LiveReload>>,
    /// `server.access_log`, open, with its target and format.
    global_access: std::sync::Mutex<Option<GlobalAccess>>,
    /// Cancelled at shutdown (after the public listener): every FastCGI
    /// listener stops on a child of it.
    fastcgi_stop: CancellationToken,
    /// The FastCGI listeners' tasks, for the shutdown to wait on.
    fastcgi_tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

#[derive(Clone)]
struct GlobalAccess {
    target: String,
    file: AccessFile,
    format: crate::access::AccessFormat,
}

/// A running worker.
pub struct Running {
    /// Its configuration in force.
    pub worker: Arc<Worker>,
    /// Where its requests go.
    pub target: Route,
    /// Its metrics and access log.
    pub observed: Arc<Observed>,
    /// A native worker's stop (PHP backends keep their own).
    native_stop: Option<CancellationToken>,
    /// Its FastCGI listener's stop (`fastcgi.listen`).
    fastcgi: Option<CancellationToken>,
}

impl Running {
    /// Drains and stops it (requests in progress finish), and closes its
    /// FastCGI listener.
    pub fn stop(&self) {
        if let Some(f) = &self.fastcgi {
            f.cancel();
        }
        match &self.target {
            Route::Php(p) => p.stop(),
            Route::Native(_) => {
                if let Some(s) = &self.native_stop {
                    s.cancel();
                }
            }
        }
    }

    /// Waits until it can serve: PHP answers its ping; a native worker has
    /// a ready instance (builds can take minutes), or gave up.
    pub async fn wait_ready(&self, php_wait: Duration) -> bool {
        match &self.target {
            Route::Php(p) => p.upstream.get().wait_ready(php_wait).await,
            Route::Native(s) => {
                let until = tokio::time::Instant::now() + NATIVE_READY_WAIT;
                loop {
                    let now = s.serving();
                    if now.has_ready() {
                        return true;
                    }
                    if now.stopped || tokio::time::Instant::now() >= until {
                        return false;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn entry(&self) -> admin::Entry {
        admin::Entry {
            name: self.worker.name.clone(),
            route: self.worker.route.clone(),
            kind: self.worker.type_name(),
            target: self.target.clone(),
            metrics: self.observed.metrics.clone(),
        }
    }
}

/// The longest a replacement native worker may take to build and start
/// before the reload gives up on it (the old one keeps serving).
const NATIVE_READY_WAIT: Duration = Duration::from_secs(600);

impl Launch {
    /// Opens `server.access_log` of `config`.
    pub fn new(
        config: &Config,
        starter: Arc<Starter>,
        metrics: Arc<Metrics>,
        live: Option<Arc<LiveReload>>,
    ) -> Result<Self, String> {
        let launch = Self {
            starter,
            metrics,
            live,
            global_access: std::sync::Mutex::new(None),
            fastcgi_stop: CancellationToken::new(),
            fastcgi_tasks: Default::default(),
        };
        launch.set_global_access(config)?;
        Ok(launch)
    }

    /// (Re)opens `server.access_log` when it changed.
    fn set_global_access(&self, config: &Config) -> Result<(), String> {
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
    fn observed(&self, w: &Worker, log: &WorkerLog) -> Result<Arc<Observed>, String> {
        let mut access = AccessLog::default();
        match &w.logging.access_log {
            AccessTarget::Off => {}
            AccessTarget::WorkerLog => {
                access.to_worker(log.clone(), w.logging.access_format.clone())
            }
            AccessTarget::File(t) => access.to_file(
                AccessFile::open(t, &w.name).map_err(|e| {
                    format!("worker {}: cannot open logging.access_log {t}: {e}", w.name)
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
    pub async fn start(&self, w: Arc<Worker>) -> Result<Running, String> {
        let log = WorkerLog::new(&w)
            .map_err(|e| format!("worker {}: cannot open logging.log_file: {e}", w.name))?;
        let observed = self.observed(&w, &log)?;
        let st = &self.starter;
        if w.native.is_some() {
            tracing::info!(worker = %w.name, route = %w.route, "starting {} worker", w.type_name());
            let stop = st.stop.child_token();
            let (svc, task) = native::supervisor::start(
                w.clone(),
                st.mode,
                st.sup.clone(),
                st.ports.clone(),
                &st.runtime_dir,
                log,
                self.live.clone(),
                stop.clone(),
                self.metrics.native(&w.name),
            );
            st.tasks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(task);
            return Ok(Running {
                worker: w,
                target: Route::Native(svc),
                observed,
                native_stop: Some(stop),
                fastcgi: None,
            });
        }
        let r = st.route(w.clone(), log).await?;
        Ok(Running {
            worker: w,
            target: Route::Php(Arc::new(r)),
            observed,
            native_stop: None,
            fastcgi: None,
        })
    }

    /// Serves `bound` (the worker's `fastcgi.listen`) with `r`'s PHP
    /// backend until `r` stops or TQServer does.
    pub fn serve_fastcgi(&self, r: &mut Running, bound: crate::php::listener::Bound) {
        let Route::Php(php) = &r.target else {
            return;
        };
        if let Ok(a) = bound.local_addr() {
            tracing::info!(worker = %r.worker.name, "FastCGI listener on {a}");
        }
        let stop = self.fastcgi_stop.child_token();
        let task = tokio::spawn(bound.serve(
            php.upstream.clone(),
            php.log.clone(),
            stop.clone(),
            self.starter.sup.shutdown_grace,
        ));
        self.fastcgi_tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
        if let Some(old) = r.fastcgi.replace(stop) {
            old.cancel();
        }
    }

    /// Closes every FastCGI listener (open connections finish their
    /// requests) and waits for them.
    pub async fn stop_fastcgi(&self) {
        self.fastcgi_stop.cancel();
        let tasks =
            std::mem::take(&mut *self.fastcgi_tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
    }

    /// The routing table over `running` with `config`'s server settings.
    pub fn table(&self, config: &Config, running: &[Running]) -> Table {
        let routes = running
            .iter()
            .map(|r| {
                let routed = Routed {
                    target: r.target.clone(),
                    observed: r.observed.clone(),
                };
                (r.worker.route.clone(), routed)
            })
            .collect();
        let s = &config.server;
        Table {
            router: crate::http::router::Router::new(routes),
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
}

/// Owns what runs and applies configuration changes to it, one at a time.
pub struct Reloader {
    /// The configuration in force.
    pub config: Config,
    /// Every enabled worker, running.
    pub running: Vec<Running>,
    /// How workers start.
    pub launch: Arc<Launch>,
    /// The request handler whose table is swapped.
    pub app: Arc<App>,
    /// The admin pages' worker list.
    pub admin: Arc<Admin>,
    /// The public and admin listeners.
    pub fronts: Arc<Fronts>,
}

impl Reloader {
    /// Handles triggers until the sender side is gone.
    pub async fn run(mut self, mut triggers: mpsc::UnboundedReceiver<Trigger>) {
        while let Some(t) = triggers.recv().await {
            match t {
                Trigger::Files(c) => self.files_changed(c).await,
                Trigger::ServerFile => {
                    self.reload_logged("server.yaml changed").await;
                }
                Trigger::Hangup => {
                    self.reload_logged("SIGHUP").await;
                }
                Trigger::Asked(answer) => {
                    let r = self.reload().await;
                    log_outcome("tqserver reload", &r);
                    let _ = answer.send(r);
                }
            }
        }
    }

    async fn reload_logged(&mut self, why: &str) {
        let r = self.reload().await;
        log_outcome(why, &r);
    }

    /// A worker folder changed: configuration (or a folder appearing or
    /// going away) reloads everything; code goes to the worker (native:
    /// rebuild and swap; PHP: the browser reloads, PHP reads the new file).
    async fn files_changed(&mut self, c: crate::watch::Change) {
        let running = self.running.iter().find(|r| r.worker.name == c.worker);
        match running {
            Some(r) if !c.config => match &r.target {
                Route::Native(svc) => svc.reload(format!("changed: {}", c.describe())),
                Route::Php(_) => {
                    tracing::info!(worker = %r.worker.name, "changed: {}", c.describe());
                    if let Some(l) = &self.launch.live {
                        l.notify(&r.worker.route);
                    }
                }
            },
            // Files in a folder that is not a running worker: nothing runs
            // them yet.
            None if !c.config => {}
            _ => {
                let why = format!("{}/{} changed", self.config.workers_dir.display(), c.worker);
                self.reload_logged(&why).await;
            }
        }
    }

    /// Reads the configuration again and applies what changed (systemd
    /// hears RELOADING=1, then READY=1).
    pub async fn reload(&mut self) -> Result<String, String> {
        let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
            .unwrap_or(0);
        crate::systemd::notify(&format!(
            "RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading the configuration"
        ));
        let r = self.reload_inner().await;
        self.launch.metrics.config_reloaded(r.is_ok());
        crate::systemd::notify(&format!(
            "READY=1\nSTATUS={}",
            match &r {
                Ok(_) => "serving; configuration reloaded",
                Err(_) => "serving; the last configuration change was refused (see the log)",
            }
        ));
        r
    }

    async fn reload_inner(&mut self) -> Result<String, String> {
        let new = match crate::config::load(&self.config.file, self.config.mode) {
            Ok(c) => c.with_overrides(self.config.overrides.clone()),
            Err(errors) => {
                let why = format!(
                    "the configuration is not valid; still running the previous configuration:\n{errors}"
                );
                self.app.set_problem(Some(why.clone()));
                self.notify_all();
                return Err(why);
            }
        };
        let had_problem = self.app.set_problem(None);
        let report = self.apply(new).await;
        if had_problem {
            self.notify_all();
        }
        Ok(report)
    }

    fn notify_all(&self) {
        if let Some(l) = &self.launch.live {
            for r in &self.running {
                l.notify(&r.worker.route);
            }
        }
    }

    /// Applies `new` (valid); returns what was done, one line each.
    async fn apply(&mut self, new: Config) -> String {
        let mut done: Vec<String> = Vec::new();
        let mut restart: Vec<&str> = Vec::new();
        let (o, n) = (&self.config, &new);
        // Listeners first: a busy address refuses the new one and the old
        // keeps serving, said in the report.
        let (oa, na) = (
            format!("{}:{}", o.server.host, o.server.port),
            format!("{}:{}", n.server.host, n.server.port),
        );
        let mut server = n.server.clone();
        if oa != na {
            match self.fronts.rebind_public(&na, self.app.clone()).await {
                Ok(()) => done.push(format!(
                    "now listening on http://{na} (was {oa}; its open connections finish)"
                )),
                Err(e) => {
                    done.push(format!("cannot listen on {na} (server.host / server.port): {e}; still listening on {oa}"));
                    server.host = o.server.host.clone();
                    server.port = o.server.port;
                }
            }
        }
        let mut observability = n.observability.clone();
        if o.observability.admin != n.observability.admin {
            match self
                .fronts
                .rebind_admin(n.observability.admin, self.admin.clone())
                .await
            {
                Ok(()) => done.push(match n.observability.admin {
                    Some(a) => format!("admin listener now on http://{a}"),
                    None => "admin listener closed (admin.listen is empty)".to_string(),
                }),
                Err(e) => {
                    done.push(format!(
                        "admin.listen: {e}; the admin listener stays as it was"
                    ));
                    observability.admin = o.observability.admin;
                }
            }
        }
        if o.server.log_file != n.server.log_file || o.server.log_format != n.server.log_format {
            restart.push("server.log_file / server.log_format");
        }
        if o.supervision != n.supervision {
            restart.push("workers.port_range_* / supervision");
        }
        if o.watch != n.watch
            || o.watch_config != n.watch_config
            || o.debounce != n.debounce
            || o.live_reload != n.live_reload
        {
            restart.push("file_watcher");
        }
        if o.workers_dir != n.workers_dir {
            done.push(format!(
                "workers.directory is now {}: its workers run; the file watcher still watches {} until a restart",
                n.workers_dir.display(),
                o.workers_dir.display()
            ));
        }
        let timeouts = |s: &crate::config::ServerSettings| {
            (
                s.read_timeout,
                s.write_timeout,
                s.idle_timeout,
                s.max_body_bytes,
            )
        };
        if timeouts(&o.server) != timeouts(&n.server) {
            done.push("server timeouts and max_body_bytes: new connections and requests use the new values".into());
        }
        if o.server.access_log != n.server.access_log
            || o.server.access_format != n.server.access_format
        {
            match self.launch.set_global_access(n) {
                Ok(()) => done.push("server.access_log applied".into()),
                Err(e) => done.push(format!("{e}; server.access_log stays as it was")),
            }
        }

        // Workers.
        let sup = self.launch.starter.sup.clone();
        let mut old: Vec<Running> = std::mem::take(&mut self.running);
        let mut next: Vec<Running> = Vec::new();
        let mut retire: Vec<Running> = Vec::new();
        for w in n.enabled_workers() {
            let prev = old
                .iter()
                .position(|r| r.worker.name == w.name)
                .map(|i| old.remove(i));
            let Some(mut r) = prev else {
                match self.start(w, &sup).await {
                    Ok(r) => {
                        done.push(format!("worker {} started at {}", w.name, w.route));
                        next.push(r);
                    }
                    Err(e) => done.push(format!("worker {} not started: {e}", w.name)),
                }
                continue;
            };
            if *r.worker == *w {
                next.push(r);
                continue;
            }
            let replace = r.worker.type_name() != w.type_name()
                || (w.native.is_none() && r.worker.php.backend != w.php.backend)
                || r.worker.logging.log_file != w.logging.log_file;
            if replace {
                if r.worker.fastcgi.is_some() {
                    done.push(format!("worker {}: this change needs a new worker, and its FastCGI listener ({}) serves the running one; restart tqserver to apply it", w.name, r.worker.fastcgi.as_ref().map_or(String::new(), |f| f.listen.to_string())));
                    next.push(r);
                    continue;
                }
                match self.start(w, &sup).await {
                    Ok(fresh) => {
                        done.push(format!("worker {} replaced ({} → {}); the previous one finishes its requests and stops", w.name, describe(&r.worker), describe(w)));
                        retire.push(r);
                        next.push(fresh);
                    }
                    Err(e) => {
                        done.push(format!("worker {}: the new configuration did not start ({e}); the previous one keeps serving", w.name));
                        next.push(r);
                    }
                }
                continue;
            }
            let moved = r.worker.route != w.route;
            let applied = match &r.target {
                Route::Native(svc) => {
                    svc.reconfigure(w.clone());
                    Ok(())
                }
                Route::Php(p) => p.reload(&self.launch.starter, w.clone()).await,
            };
            match applied {
                Ok(()) => {
                    self.launch.metrics.forget(&r.worker);
                    if let Some(line) = self.fastcgi_changed(&mut r, w).await {
                        done.push(line);
                    }
                    if r.worker.logging != w.logging {
                        let log = match &r.target {
                            Route::Php(p) => Some(p.log.clone()),
                            Route::Native(_) => WorkerLog::new(w).ok(),
                        };
                        if let Some(obs) = log.and_then(|l| self.launch.observed(w, &l).ok()) {
                            r.observed = obs;
                        }
                    }
                    let what = match &r.target {
                        Route::Native(_) => "rebuilding with the new settings",
                        Route::Php(_) => "applied",
                    };
                    done.push(if moved {
                        format!(
                            "worker {} moved from {} to {} ({what})",
                            w.name, r.worker.route, w.route
                        )
                    } else {
                        format!("worker {}: {} {what}", w.name, r.worker.file.display())
                    });
                    r.worker = Arc::new(w.clone());
                }
                Err(e) => done.push(format!(
                    "worker {}: {e}; still running its previous configuration",
                    w.name
                )),
            }
            next.push(r);
        }
        for r in old {
            done.push(format!(
                "worker {} removed from {}; it finishes its requests and stops",
                r.worker.name, r.worker.route
            ));
            retire.push(r);
        }
        next.sort_by(|a, b| a.worker.route.cmp(&b.worker.route));
        let mut config = new;
        // What needs a restart stays as it runs, so the next reload still
        // says so.
        let o = &self.config;
        server.log_file = o.server.log_file.clone();
        server.log_format = o.server.log_format;
        config.server = server;
        config.observability = observability;
        config.supervision = o.supervision.clone();
        config.watch = o.watch;
        config.watch_config = o.watch_config;
        config.debounce = o.debounce;
        config.live_reload = o.live_reload;
        self.app.swap(self.launch.table(&config, &next));
        self.admin.set_workers(Launch::entries(&next));
        self.admin
            .set_token(config.observability.admin_token.clone());
        // Unrouted first, then stopped: requests in progress finish.
        for r in &retire {
            r.stop();
            self.launch.metrics.forget(&r.worker);
        }
        // Info series of workers whose route or type changed in place.
        for r in &next {
            self.launch.metrics.worker_info(&r.worker);
        }
        self.running = next;
        self.config = config;
        restart.sort_unstable();
        restart.dedup();
        for k in restart {
            done.push(format!("{k} changed: restart tqserver to apply"));
        }
        if done.is_empty() {
            "configuration reloaded: nothing changed".to_string()
        } else {
            format!("configuration reloaded:\n- {}", done.join("\n- "))
        }
    }

    /// Starts `w` (its FastCGI listener bound first, as at start-up) and
    /// waits until it can serve; a worker that does not become ready is
    /// stopped again.
    async fn start(&self, w: &Worker, sup: &crate::config::Supervision) -> Result<Running, String> {
        let bound = match &w.fastcgi {
            Some(l) => Some(crate::php::listener::Bound::bind(l).await.map_err(|e| {
                format!(
                    "cannot listen for FastCGI on {} (fastcgi.listen): {e}",
                    l.listen
                )
            })?),
            None => None,
        };
        let mut r = self.launch.start(Arc::new(w.clone())).await?;
        if !r.wait_ready(sup.health_check_wait).await {
            r.stop();
            return Err("it did not become ready".to_string());
        }
        if let Some(b) = bound {
            self.launch.serve_fastcgi(&mut r, b);
        }
        Ok(r)
    }

    /// `fastcgi.listen` of a worker changed in place: a new address is
    /// bound before the old listener closes (its connections finish); a
    /// listener removed closes. The same address with other settings
    /// cannot be bound twice: that needs a restart.
    async fn fastcgi_changed(&self, r: &mut Running, w: &Worker) -> Option<String> {
        let (old, new) = (&r.worker.fastcgi, &w.fastcgi);
        if old == new {
            return None;
        }
        match (old, new) {
            (Some(_), None) => {
                if let Some(s) = r.fastcgi.take() {
                    s.cancel();
                }
                Some(format!("worker {}: FastCGI listener closed", w.name))
            }
            (Some(o), Some(n)) if o.listen == n.listen => Some(format!(
                "worker {}: fastcgi settings on the same address ({}) changed: restart tqserver to apply them",
                w.name, n.listen
            )),
            (_, Some(n)) => match crate::php::listener::Bound::bind(n).await {
                Ok(b) => {
                    self.launch.serve_fastcgi(r, b);
                    Some(format!(
                        "worker {}: FastCGI listener now on {}",
                        w.name, n.listen
                    ))
                }
                Err(e) => Some(format!(
                    "worker {}: cannot listen for FastCGI on {} (fastcgi.listen): {e}; the listener stays as it was",
                    w.name, n.listen
                )),
            },
            (None, None) => None,
        }
    }
}

fn describe(w: &Worker) -> String {
    match &w.native {
        Some(n) => n.kind.as_str().to_string(),
        None => format!("php, {}", w.php.backend.as_str()),
    }
}

fn log_outcome(why: &str, r: &Result<String, String>) {
    match r {
        Ok(report) => tracing::info!("{why}: {report}"),
        Err(e) => tracing::error!("{why}: {e}"),
    }
}

/// SIGHUP asks for a reload, as nginx and php-fpm's SIGUSR2 do.
pub async fn on_sighup(to: mpsc::UnboundedSender<Trigger>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        if to.send(Trigger::Hangup).is_err() {
            return;
        }
    }
}

/// Forwards the watcher's events as reload triggers.
pub async fn from_watcher(
    mut events: mpsc::UnboundedReceiver<crate::watch::Event>,
    to: mpsc::UnboundedSender<Trigger>,
) {
    while let Some(e) = events.recv().await {
        let t = match e {
            crate::watch::Event::Worker(c) => Trigger::Files(c),
            crate::watch::Event::ServerConfig => Trigger::ServerFile,
        };
        if to.send(t).is_err() {
            return;
        }
    }
}
