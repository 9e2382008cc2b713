//! A PHP worker's backend as its route holds it: started (php-fpm or the
//! php-cgi pool), and replaced when its worker.yaml changes — the new
//! backend starts next to the old one, takes the route once it answers,
//! and the old one then finishes the requests it has and stops (php-fpm:
//! SIGQUIT, its graceful stop; php-cgi: the pool drains). Nothing is
//! dropped, and nothing is left running.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::cgi::{self, Launcher};
use super::fpm::{Backend as Fpm, Prepared};
use super::script::DocRoot;
use super::upstream::{CgiUpstream, SharedUpstream, Upstream};
use crate::config::{Backend, Listen, Mode, Supervision, Worker};
use crate::logging::WorkerLog;
use crate::ports::Ports;

/// What starting a PHP backend needs, shared by every PHP route.
pub struct Starter {
    /// dev or prod.
    pub mode: Mode,
    /// TQServer's private runtime directory.
    pub runtime_dir: PathBuf,
    /// The worker port range.
    pub ports: Arc<Ports>,
    /// Process supervision settings.
    pub sup: Supervision,
    /// Cancelled at shutdown; each backend stops on a child of it.
    pub stop: CancellationToken,
    /// Every backend's supervising task, for the shutdown to wait on.
    pub tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A PHP route: its backend (replaceable) and log.
pub struct PhpRoute {
    /// The backend requests go to now.
    pub upstream: Arc<SharedUpstream>,
    /// The worker's log.
    pub log: WorkerLog,
    stop: Mutex<CancellationToken>,
    generation: AtomicU32,
    reloading: tokio::sync::Mutex<()>,
}

impl Starter {
    /// Starts `w`'s backend; `generation` keeps its files apart from a
    /// backend it replaces.
    async fn start(
        &self,
        w: Arc<Worker>,
        log: &WorkerLog,
        generation: u32,
    ) -> Result<(Upstream, CancellationToken), String> {
        let stop = self.stop.child_token();
        let (up, task) = match w.php.backend {
            Backend::Fpm => {
                let prepared = Prepared::new(
                    w.clone(),
                    self.mode,
                    &self.runtime_dir,
                    &self.ports,
                    &self.sup,
                    generation,
                )
                .await?;
                tracing::info!(worker = %w.name, route = %w.route, "starting php-fpm ({})", prepared.address());
                let (backend, task) =
                    Fpm::start(prepared, self.sup.clone(), log.clone(), stop.clone());
                (Upstream::Fpm(backend), task)
            }
            Backend::Cgi => {
                let launcher = Launcher::new(
                    &w,
                    self.mode,
                    &self.runtime_dir,
                    self.ports.clone(),
                    generation,
                )
                .await?;
                tracing::info!(worker = %w.name, route = %w.route, "starting php-cgi pool ({}, {})", launcher.binary().display(), w.php.pool.describe());
                let (pool, task) = cgi::Pool::start(
                    w.clone(),
                    launcher,
                    self.sup.clone(),
                    log.clone(),
                    stop.clone(),
                );
                let up = CgiUpstream {
                    pool,
                    doc_root: DocRoot::open(&w.php.document_root),
                };
                (Upstream::Cgi(Arc::new(up)), task)
            }
        };
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
        Ok((up, stop))
    }

    /// Starts the backend of a route.
    pub async fn route(&self, w: Arc<Worker>, log: WorkerLog) -> Result<PhpRoute, String> {
        let (up, stop) = self.start(w, &log, 0).await?;
        Ok(PhpRoute {
            upstream: SharedUpstream::new(up),
            log,
            stop: Mutex::new(stop),
            generation: AtomicU32::new(0),
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// Takes the tasks to wait on at shutdown.
    pub fn take_tasks(&self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl PhpRoute {
    /// Replaces the backend with one for `new` (same route): started,
    /// ready, swapped in, then the old one drains and stops. On failure
    /// the running backend stays.
    pub async fn reload(&self, starter: &Starter, new: Worker) -> Result<(), String> {
        let _one_at_a_time = self.reloading.lock().await;
        let old_worker = self.upstream.get().worker().clone();
        if old_worker.php.backend != new.php.backend {
            return Err("php.backend changes need a restart of tqserver".into());
        }
        if matches!(new.php.pool.listen, Listen::Unix(_) | Listen::Tcp(_))
            && new.php.backend == Backend::Fpm
        {
            // The new php-fpm could not bind while the old one holds it.
            return Err(format!(
                "php.pool.listen_address is a fixed address ({:?}): restart tqserver to apply changes",
                new.php.pool.listen
            ));
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let new = Arc::new(new);
        let (up, stop) = starter.start(new.clone(), &self.log, generation).await?;
        if !up.wait_ready(starter.sup.health_check_wait).await {
            stop.cancel();
            return Err(format!(
                "the new pool did not become ready within {:?}",
                starter.sup.health_check_wait
            ));
        }
        drop(self.upstream.replace(up));
        let old = std::mem::replace(
            &mut *self.stop.lock().unwrap_or_else(|e| e.into_inner()),
            stop,
        );
        // Requests in progress hold the old backend; its stop lets them finish.
        old.cancel();
        self.log.info(&format!(
            "{} applied: {} ({})",
            new.file.display(),
            new.php.pool.describe(),
            match new.php.backend {
                Backend::Fpm => "php-fpm",
                Backend::Cgi => "php-cgi",
            }
        ));
        Ok(())
    }
}
