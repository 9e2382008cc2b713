//! The server's life: bind every listener first (a busy address is a
//! clear error before anything starts), open the logs and drop root,
//! start every worker, serve, apply configuration changes
//! ([`crate::reload`]), and on SIGTERM / SIGINT / SIGQUIT stop in phases:
//! listeners, workers, then the admin listener.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::Admin;
use crate::app::App;
use crate::app::livereload::LiveReload;
use crate::config::{Config, Mode};
use crate::fronts::Fronts;
use crate::metrics::Metrics;
use crate::ports::Ports;
use crate::reload::{self, Factory};
use crate::supervise::Scope;

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
    // Every signal TQServer handles is caught from here on, before any
    // listener or child: a SIGTERM (or SIGHUP, SIGUSR1) that arrives while
    // it starts is acted on once it serves, instead of killing it by the
    // default action (leaving its runtime directory behind).
    let mut signals = Signals::catch().context("cannot catch signals")?;
    for n in &config.notices {
        tracing::info!("{n}");
    }
    for w in &config.warnings {
        tracing::warn!("{w}");
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
            let b = crate::workers::FastcgiListener::bind(l)
                .await
                .map_err(|e| {
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
    // HTTPS: the port is bound and the certificate files read while still
    // root (a key readable by root only works, as with nginx).
    let metrics = Arc::new(Metrics::new());
    let secure = match &s.tls {
        Some(tls) => {
            let tls_addr = format!("{}:{}", s.host, tls.port);
            let l = TcpListener::bind(&tls_addr).await.map_err(|e| {
                StartError::Config(format!(
                    "cannot listen on {tls_addr} (server.host / server.tls.port in {}): {e}; is another server using the port?",
                    config.file.display()
                ))
            })?;
            let certs =
                crate::certs::Certs::new(tls, metrics.tls.clone()).map_err(StartError::Config)?;
            Some((l, tls_addr, certs))
        }
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
    // What TQServer issues itself (local CA, ACME) is written as the user
    // it runs as, so that renewals can write it too.
    if let (Some((_, _, certs)), Some(tls)) = (&secure, &config.server.tls) {
        certs.start(tls).map_err(StartError::Config)?;
    }
    let certs = secure.as_ref().map(|(_, _, c)| c.clone());
    let sup = config.supervision.clone();
    let live =
        (config.mode == Mode::Dev && config.watch && config.live_reload).then(LiveReload::new);
    let scope = Arc::new(Scope {
        mode: config.mode,
        runtime_dir: runtime_dir.path().to_path_buf(),
        ports: Arc::new(Ports::new(config.supervision.port_range)),
        sup: sup.clone(),
        stop: CancellationToken::new(),
        tasks: TaskTracker::new(),
    });
    // The workers' egress proxy is up before any worker starts: their
    // first outgoing call may come at start-up.
    let egress_stop = CancellationToken::new();
    if let Some(s) = &config.socks5 {
        crate::egress::start(s, metrics.egress(), egress_stop.clone())
            .await
            .map_err(StartError::Config)?;
    }
    let factory = Arc::new(
        Factory::new(&config, scope.clone(), metrics.clone(), live.clone())
            .map_err(|e| StartError::Other(anyhow::anyhow!(e)))?,
    );
    let mut running = Vec::new();
    for (i, w) in config.enabled_workers().enumerate() {
        if i > 0 {
            tokio::time::sleep(sup.startup_delay).await;
        }
        match factory.start(Arc::new(w.clone())).await {
            Ok(r) => running.push(r),
            Err(e) => {
                scope.shut_down().await;
                return Err(StartError::Config(e.to_string()));
            }
        }
    }
    for r in &running {
        if !r.worker.wait_started(sup.health_check_wait).await {
            tracing::warn!(route = %r.config.route, "PHP is not ready yet; its requests get 502/503 until it is");
        }
    }
    for (name, bound) in fcgi_bound {
        if let Some(r) = running.iter_mut().find(|r| r.config.name == name) {
            factory.serve_fastcgi(r, bound);
        }
    }
    let admin = Admin::new(metrics.clone(), Factory::entries(&running));
    admin.set_token(config.observability.admin_token.clone());
    if let Some(c) = &certs {
        admin.set_certs(c.clone());
    }
    let app = Arc::new(App::new(
        factory.table(&config, &running),
        live.clone(),
        admin.clone(),
        certs.clone(),
    ));
    let fronts = Fronts::new(front_grace(sup.shutdown_grace));
    tracing::info!(
        "TQServer listening on http://{addr} (mode {})",
        config.mode.as_str()
    );
    fronts.start_public(listener, app.clone());
    if let Some((l, tls_addr, c)) = secure {
        tracing::info!("TQServer listening on https://{tls_addr}");
        fronts.start_secure(l, app.clone(), c.tls_config());
    }
    if let Some(l) = admin_listener {
        fronts.start_admin(l, admin.clone());
    }
    let (triggers, triggers_rx) = tokio::sync::mpsc::unbounded_channel();
    let (asks, asks_rx) = tokio::sync::mpsc::unbounded_channel();
    admin.accept_reloads(asks);
    tokio::spawn(reload::from_admin(asks_rx, triggers.clone()));
    tokio::spawn(reload::on_sighup(signals.hangup, triggers.clone()));
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
            factory: factory.clone(),
            app: app.clone(),
            admin: admin.clone(),
            fronts: fronts.clone(),
            certs: certs.clone(),
        }
        .run(triggers_rx),
    );
    drop(triggers);
    tokio::spawn(reopen_logs_on_sigusr1(signals.usr1));

    let grace = sup.shutdown_grace;
    crate::systemd::notify(&format!(
        "READY=1\nMAINPID={}\nSTATUS=serving on http://{addr}",
        std::process::id()
    ));
    signals.stop.recv().await;
    crate::systemd::notify("STOPPING=1\nSTATUS=finishing requests in progress");
    admin
        .draining
        .store(true, std::sync::atomic::Ordering::Release);
    // A second SIGINT / SIGTERM stops at once; the parent-death signal and
    // the watchdog take the children down with us.
    let mut stop = signals.stop;
    tokio::spawn(async move {
        stop.recv().await;
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
    // One grace period for the whole stop: the front's connections have
    // most of it (then open answers are ended), the processes the rest.
    crate::process::stop_by(std::time::Instant::now() + grace);
    // The shutdown's phases, in order: what accepts requests (the public
    // listener and the FastCGI listeners: no new requests, those in
    // progress finish), then the workers (every process stopped within the
    // grace period, then killed, every task ended), then the admin
    // listener, so /readyz answers to the end.
    fronts.close_public().await;
    if let Some(c) = &certs {
        c.stop();
    }
    factory.close_fastcgi().await;
    scope.shut_down().await;
    egress_stop.cancel();
    fronts.close_admin().await;
    drop(runtime_dir);
    tracing::info!("stopped");
    Ok(())
}

/// How long the public listeners' connections get to finish at a stop:
/// the grace period less what is kept for the workers' processes to exit
/// once their requests are done (a quarter, at most a second) and the
/// moment connections get to write their last bytes after the cut.
fn front_grace(grace: std::time::Duration) -> std::time::Duration {
    let kept = (grace / 4).min(std::time::Duration::from_secs(1));
    grace.saturating_sub(kept + crate::http::AFTER_CUT)
}

/// The signals TQServer handles, caught once at start.
struct Signals {
    stop: StopSignals,
    hangup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
}

impl Signals {
    fn catch() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            stop: StopSignals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
                quit: signal(SignalKind::quit())?,
            },
            hangup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
        })
    }
}

/// SIGTERM, SIGINT, or SIGQUIT (php-fpm's graceful stop: all three
/// finish the requests in progress here).
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// The next one (or one caught since the last call).
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
            _ = self.quit.recv() => {}
        }
    }
}

/// SIGUSR1: every log file reopens its path on its next line (after
/// logrotate moved the files away), as nginx and php-fpm do.
async fn reopen_logs_on_sigusr1(mut usr1: tokio::signal::unix::Signal) {
    while usr1.recv().await.is_some() {
        crate::logging::reopen_all();
        tracing::info!("SIGUSR1: log files reopened");
    }
}
