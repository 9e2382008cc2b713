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
//!   swapped ([`crate::native::NativeWorker::reconfigure`]), a PHP pool is
//!   resized or reloaded (in place: [`crate::workers::Worker::reconfigure`]);
//!   a new `path` moves the route.
//!
//! Server settings: timeouts, body limit, access log and metrics path
//! apply at once; a new `server.host`/`server.port` or `admin.listen` is
//! bound and the old listener drains (a busy address is refused and the
//! old one keeps serving). What cannot change while running (log file and
//! format, supervision, port range, watcher settings, FastCGI listeners)
//! is named in the report as needing a restart.

//!
//! # Layout
//! - `mod.rs`: the [`Reloader`]: triggers, the new configuration compared
//!   with the one in force, what changes how.
//! - `factory.rs`: starting a worker with its log, metrics, access log
//!   and FastCGI listener ([`Factory`], [`Running`]).

mod factory;

use std::sync::Arc;

use tokio::sync::mpsc;

pub use factory::{Factory, Running};

use crate::admin::{Admin, ReloadRequest};
use crate::app::App;
use crate::config::{Config, WorkerConfig};
use crate::fronts::Fronts;
use crate::workers;

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
    /// `tqserver reload` (`POST /reload`): the report, or why nothing was
    /// applied.
    Asked(ReloadRequest),
}

/// Owns what runs and applies configuration changes to it, one at a time.
pub struct Reloader {
    /// The configuration in force.
    pub config: Config,
    /// Every enabled worker, running.
    pub running: Vec<Running>,
    /// How workers start.
    pub factory: Arc<Factory>,
    /// The request handler whose table is swapped.
    pub app: Arc<App>,
    /// The admin pages' worker list.
    pub admin: Arc<Admin>,
    /// The public and admin listeners.
    pub fronts: Arc<Fronts>,
    /// HTTPS certificates (`server.tls` at the start).
    pub certs: Option<Arc<crate::certs::Certs>>,
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
                    let r = self.reload_deploying().await;
                    log_outcome("SIGHUP", &r);
                }
                Trigger::Asked(ask) => {
                    let r = self.reload_deploying().await;
                    log_outcome("tqserver reload", &r);
                    ask.answer(r);
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
    /// rebuild and swap; PHP: the browser reloads, PHP reads the new file,
    /// or in worker mode new processes boot its script).
    async fn files_changed(&mut self, c: crate::watch::Change) {
        let running = self.running.iter().find(|r| r.config.name == c.worker);
        match running {
            Some(r) if !c.config => {
                let why = format!("changed: {}", c.describe());
                if !r.worker.files_changed(&self.factory.scope, why).await {
                    // PHP reads its new files itself (worker mode: new
                    // processes boot its script): browsers reload.
                    tracing::info!(worker = %r.config.name, "changed: {}", c.describe());
                    if let Some(l) = &self.factory.live {
                        l.notify(&r.config.route);
                    }
                }
            }
            // Files in a folder that is not a running worker: nothing runs
            // them yet.
            None if !c.config => {}
            _ => {
                let why = format!("{}/{} changed", self.config.workers_dir.display(), c.worker);
                self.reload_logged(&why).await;
            }
        }
    }

    /// [`Reloader::reload`], then every PHP worker in worker mode boots
    /// its script again in new processes (`tqserver reload` and SIGHUP:
    /// the deploy of new code, which such a worker holds in memory).
    pub async fn reload_deploying(&mut self) -> Result<String, String> {
        let mut report = self.reload().await?;
        for r in &self.running {
            match r.worker.redeploy(&self.factory.scope).await {
                Ok(true) => report.push_str(&format!(
                    "\nworker {}: worker script started again (processes replaced as they finish their requests)",
                    r.config.name
                )),
                Ok(false) => {}
                Err(e) => report.push_str(&format!(
                    "\nworker {}: the worker script was not started again: {e}",
                    r.config.name
                )),
            }
        }
        Ok(report)
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
        self.factory.metrics.config_reloaded(r.is_ok());
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
        let loaded = crate::config::load(&self.config.file, self.config.mode).and_then(|c| {
            crate::certs::check(&c)?;
            Ok(c)
        });
        let new = match loaded {
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
        if let Some(l) = &self.factory.live {
            for r in &self.running {
                l.notify(&r.config.route);
            }
        }
    }

    /// Applies `new` (valid); returns what was done, one line each.
    async fn apply(&mut self, new: Config) -> String {
        let mut done: Vec<String> = Vec::new();
        let mut restart: Vec<&str> = Vec::new();
        let mut new = new;
        if new.socks5 != self.config.socks5 {
            // The egress proxy keeps running as it started, and the
            // workers keep being told about that one.
            restart.push("socks5");
            new.keep_socks5(&self.config);
        }
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
        match (&self.certs, &o.server.tls, &n.server.tls) {
            (Some(c), Some(ot), Some(nt)) => {
                if ot.port != nt.port || oa != na {
                    restart.push("server.tls.port (HTTPS keeps listening where it started)");
                }
                match c.reload(nt) {
                    Ok(lines) => done.extend(lines),
                    Err(e) => done.push(format!(
                        "server.tls: {e}; HTTPS keeps its previous certificates"
                    )),
                }
            }
            (None, None, None) => {}
            _ => restart.push("server.tls (turning HTTPS on or off)"),
        }
        if o.server.threads != n.server.threads {
            restart.push("server.threads");
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
            match self.factory.set_global_access(n) {
                Ok(()) => done.push("server.access_log applied".into()),
                Err(e) => done.push(format!("{e}; server.access_log stays as it was")),
            }
        }

        // Workers.
        let mut old: Vec<Running> = std::mem::take(&mut self.running);
        let mut next: Vec<Running> = Vec::new();
        let mut retire: Vec<Running> = Vec::new();
        for w in n.enabled_workers() {
            let prev = old
                .iter()
                .position(|r| r.config.name == w.name)
                .map(|i| old.remove(i));
            let Some(mut r) = prev else {
                match self.start(w).await {
                    Ok(r) => {
                        done.push(format!("worker {} started at {}", w.name, w.route));
                        next.push(r);
                    }
                    Err(e) => done.push(format!("worker {} not started: {e}", w.name)),
                }
                continue;
            };
            if *r.config == *w {
                next.push(r);
                continue;
            }
            if workers::needs_replacing(&r.config, w) {
                if r.config.fastcgi.is_some() {
                    done.push(format!("worker {}: this change needs a new worker, and its FastCGI listener ({}) serves the running one; restart tqserver to apply it", w.name, r.config.fastcgi.as_ref().map_or(String::new(), |f| f.listen.to_string())));
                    next.push(r);
                    continue;
                }
                match self.start(w).await {
                    Ok(fresh) => {
                        done.push(format!("worker {} replaced ({} → {}); the previous one finishes its requests and stops", w.name, describe(&r.config), describe(w)));
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
            let moved = r.config.route != w.route;
            let outcome = if crate::workers::front_only(&r.config, w) {
                Ok(crate::workers::Reconfigured::Applied)
            } else {
                r.worker.reconfigure(&self.factory.scope, w).await
            };
            match outcome {
                Ok(how) => {
                    self.factory.metrics.forget(&r.config);
                    if let Some(line) = self.fastcgi_changed(&mut r, w).await {
                        done.push(line);
                    }
                    if r.config.logging != w.logging {
                        // The same log file (another one needs a new
                        // worker): its access log and level may differ.
                        let log = if r.worker.is_php() {
                            Some(r.worker.log().clone())
                        } else {
                            w.open_log().ok()
                        };
                        if let Some(obs) = log.and_then(|l| self.factory.observed(w, &l).ok()) {
                            r.observed = obs;
                        }
                    }
                    let what = how.as_str();
                    done.push(if moved {
                        format!(
                            "worker {} moved from {} to {} ({what})",
                            w.name, r.config.route, w.route
                        )
                    } else {
                        format!("worker {}: {} {what}", w.name, r.config.file.display())
                    });
                    r.config = Arc::new(w.clone());
                    if moved {
                        self.factory.watch_pages(&mut r);
                    }
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
                r.config.name, r.config.route
            ));
            retire.push(r);
        }
        next.sort_by(|a, b| a.config.route.cmp(&b.config.route));
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
        self.app.swap(self.factory.table(&config, &next));
        self.admin.set_workers(Factory::entries(&next));
        self.admin
            .set_token(config.observability.admin_token.clone());
        // Unrouted first, then stopped: requests in progress finish.
        for r in &retire {
            r.stop();
            self.factory.metrics.forget(&r.config);
        }
        // Info series of workers whose route or type changed in place.
        for r in &next {
            self.factory.metrics.worker_info(&r.config);
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
    async fn start(&self, w: &WorkerConfig) -> Result<Running, workers::StartError> {
        let bound =
            match &w.fastcgi {
                Some(l) => Some(crate::workers::FastcgiListener::bind(l).await.map_err(
                    |source| workers::StartError::FastcgiListener {
                        address: l.listen.to_string(),
                        source,
                    },
                )?),
                None => None,
            };
        let mut r = self.factory.start(Arc::new(w.clone())).await?;
        if !r.worker.wait_ready(self.factory.ready_wait()).await {
            r.stop();
            return Err(workers::StartError::NotReady);
        }
        if let Some(b) = bound {
            self.factory.serve_fastcgi(&mut r, b);
        }
        Ok(r)
    }

    /// `fastcgi.listen` of a worker changed in place: a new address is
    /// bound before the old listener closes (its connections finish); a
    /// listener removed closes. The same address with other settings
    /// cannot be bound twice: that needs a restart.
    async fn fastcgi_changed(&self, r: &mut Running, w: &WorkerConfig) -> Option<String> {
        let (old, new) = (&r.config.fastcgi, &w.fastcgi);
        if old == new {
            return None;
        }
        match (old, new) {
            (Some(_), None) => {
                r.close_fastcgi();
                Some(format!("worker {}: FastCGI listener closed", w.name))
            }
            (Some(o), Some(n)) if o.listen == n.listen => Some(format!(
                "worker {}: fastcgi settings on the same address ({}) changed: restart tqserver to apply them",
                w.name, n.listen
            )),
            (_, Some(n)) => match crate::workers::FastcgiListener::bind(n).await {
                Ok(b) => {
                    self.factory.serve_fastcgi(r, b);
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

fn describe(w: &WorkerConfig) -> String {
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
pub async fn on_sighup(mut hup: tokio::signal::unix::Signal, to: mpsc::UnboundedSender<Trigger>) {
    while hup.recv().await.is_some() {
        if to.send(Trigger::Hangup).is_err() {
            return;
        }
    }
}

/// Forwards `tqserver reload`'s requests (from the admin listener) as
/// reload triggers.
pub async fn from_admin(
    mut asks: mpsc::UnboundedReceiver<ReloadRequest>,
    to: mpsc::UnboundedSender<Trigger>,
) {
    while let Some(a) = asks.recv().await {
        if to.send(Trigger::Asked(a)).is_err() {
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
            crate::watch::Event::WorkerConfig(c) => Trigger::Files(c),
            crate::watch::Event::ServerConfig => Trigger::ServerFile,
        };
        if to.send(t).is_err() {
            return;
        }
    }
}
