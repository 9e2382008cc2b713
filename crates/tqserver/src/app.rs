//! The running server: start every worker's backend, serve HTTP, stop
//! everything on SIGTERM / SIGINT.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::router::Router;
use crate::http::{Body, pages};
use crate::logging::WorkerLog;
use crate::php::fpm::{Backend, Prepared};
use crate::php::params::ConnInfo;
use crate::php::proxy::{self, Limits};
use crate::ports::Ports;

/// What a route leads to.
pub struct Route {
    /// The worker's php-fpm.
    pub backend: Arc<Backend>,
    /// The worker's log.
    pub log: WorkerLog,
}

/// The request handler.
pub struct App {
    router: Router<Route>,
    limits: Limits,
}

impl App {
    /// Answers one request.
    pub async fn handle(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
        let path = req.uri().path().to_string();
        match self.router.find(&path) {
            Some((prefix, route)) => {
                proxy::serve(&route.backend, &route.log, prefix, req, conn, self.limits).await
            }
            None => pages::error(StatusCode::NOT_FOUND, "No worker serves this address."),
        }
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

/// Runs until SIGTERM or SIGINT, then shuts down gracefully.
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
    let ports = Ports::new(config.supervision.port_range);
    let sup = config.supervision.clone();
    let backends_stop = CancellationToken::new();
    let mut routes = Vec::new();
    let mut tasks = Vec::new();
    for (i, w) in config.enabled_workers().enumerate() {
        if i > 0 {
            tokio::time::sleep(sup.startup_delay).await;
        }
        let w = Arc::new(w.clone());
        let log = WorkerLog::new(&w)
            .with_context(|| format!("worker {}: cannot open logging.log_file", w.name))?;
        let prepared =
            match Prepared::new(w.clone(), config.mode, runtime_dir.path(), &ports, &sup).await {
                Ok(p) => p,
                Err(e) => {
                    backends_stop.cancel();
                    for t in tasks {
                        let _ = t.await;
                    }
                    return Err(StartError::Config(e));
                }
            };
        tracing::info!(worker = %w.name, route = %w.route, "starting php-fpm ({})", prepared.address());
        let (backend, task) =
            Backend::start(prepared, sup.clone(), log.clone(), backends_stop.clone());
        tasks.push(task);
        routes.push((w.route.clone(), Route { backend, log }));
    }
    for (route, r) in &routes {
        if !r.backend.wait_ready(sup.health_check_wait).await {
            tracing::warn!(%route, "php-fpm is not ready yet; its requests get 502 until it is");
        }
    }
    let app = Arc::new(App {
        router: Router::new(routes),
        limits: Limits {
            max_body_bytes: s.max_body_bytes,
            read_timeout: s.read_timeout,
        },
    });
    tracing::info!(
        "TQServer listening on http://{addr} (mode {})",
        config.mode.as_str()
    );

    let http_stop = CancellationToken::new();
    let settings = s.clone();
    let grace = sup.shutdown_grace;
    let hs = http_stop.clone();
    let server =
        tokio::spawn(async move { crate::http::serve(listener, app, &settings, hs, grace).await });
    wait_for_stop_signal().await;
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
    backends_stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    drop(runtime_dir);
    tracing::info!("stopped");
    Ok(())
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

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
