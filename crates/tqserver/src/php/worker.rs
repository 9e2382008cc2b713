//! A running PHP worker: its backend (php-fpm or the php-cgi pool) and
//! its log. A worker.yaml change is applied in place when it can be
//! (php-cgi pool resized, php-fpm reloaded with SIGUSR2), else a new
//! backend starts next to the old one, takes the route once it answers,
//! and the old one finishes the requests it has and stops (php-fpm:
//! SIGQUIT, its graceful stop; php-cgi: the pool drains). Nothing is
//! dropped, and nothing is left running.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::LifecycleError;
use super::cgi::{self, Launcher};
use super::fpm::{FpmMaster, Prepared};
use super::script::Roots;
use super::upstream::{CgiUpstream, SharedUpstream, Upstream};
use crate::config::{Listen, Manager, PhpBackend, WorkerConfig};
use crate::logging::WorkerLog;
use crate::supervise::Scope;

/// A running PHP worker: its backend (replaceable) and log.
pub struct PhpWorker {
    /// The backend requests go to now.
    pub upstream: Arc<SharedUpstream>,
    /// The worker's log.
    pub log: WorkerLog,
    stop: Mutex<CancellationToken>,
    generation: AtomicU32,
    reloading: tokio::sync::Mutex<()>,
}

/// A checked php-cgi (or embedded PHP) launcher for `w` in `scope`.
async fn launcher_for(
    scope: &Scope,
    w: &WorkerConfig,
    generation: u32,
) -> Result<Launcher, LifecycleError> {
    Launcher::new(
        w,
        scope.mode,
        &scope.runtime_dir,
        scope.ports.clone(),
        generation,
    )
    .await
}

/// Starts `w`'s backend in `scope`; `generation` keeps its files apart
/// from a backend it replaces.
async fn start_backend(
    scope: &Scope,
    w: Arc<WorkerConfig>,
    log: &WorkerLog,
    generation: u32,
) -> Result<(Upstream, CancellationToken), LifecycleError> {
    let stop = scope.stop.child_token();
    let (up, task) = match w.php.backend {
        PhpBackend::Fpm => {
            let prepared = Prepared::new(
                w.clone(),
                scope.mode,
                &scope.runtime_dir,
                &scope.ports,
                &scope.sup,
                generation,
            )
            .await?;
            tracing::info!(worker = %w.name, route = %w.route, "starting php-fpm ({})", prepared.address());
            let (master, task) =
                FpmMaster::start(prepared, scope.sup.clone(), log.clone(), stop.clone());
            (Upstream::Fpm(master), task)
        }
        PhpBackend::Cgi | PhpBackend::Embed => {
            let launcher = launcher_for(scope, &w, generation).await?;
            let what = if w.php.backend == PhpBackend::Embed {
                "embedded PHP"
            } else {
                "php-cgi"
            };
            tracing::info!(worker = %w.name, route = %w.route, "starting {what} pool ({}, {})", launcher.binary().display(), w.php.pool.describe());
            let (pool, task) = cgi::Pool::start(
                w.clone(),
                launcher,
                scope.sup.clone(),
                log.clone(),
                stop.clone(),
            );
            let up = CgiUpstream {
                worker: w.clone(),
                pool,
                roots: Roots::open(&w.php),
            };
            (Upstream::Cgi(Arc::new(up)), task)
        }
    };
    // The shutdown's workers phase waits for the supervising task.
    scope.spawn(async move {
        let _ = task.await;
    });
    Ok((up, stop))
}

impl PhpWorker {
    /// Starts `w`'s backend in `scope`.
    pub async fn start(
        scope: &Scope,
        w: Arc<WorkerConfig>,
        log: WorkerLog,
    ) -> Result<Self, LifecycleError> {
        let (up, stop) = start_backend(scope, w, &log, 0).await?;
        Ok(Self {
            upstream: SharedUpstream::new(up),
            log,
            stop: Mutex::new(stop),
            generation: AtomicU32::new(0),
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// Applies `new` (same worker, same backend kind), the least
    /// disruptive way that applies all of it:
    /// - php-cgi: in place ([`cgi::Pool::reconfigure`]); when PHP's own
    ///   settings changed, the processes roll over to new ones.
    /// - php-fpm: its configuration is rewritten and php-fpm reloads
    ///   itself on SIGUSR2 ([`Fpm::reload`]).
    /// - a new listen address, binary or php.ini: a second pool starts,
    ///   takes the route once it answers, and the old one drains and stops.
    ///
    /// On failure the running backend stays as it was.
    pub async fn reload(&self, scope: &Scope, new: WorkerConfig) -> Result<(), LifecycleError> {
        let _one_at_a_time = self.reloading.lock().await;
        let old = self.upstream.get();
        let old_worker = old.worker().clone();
        if old_worker.php.backend != new.php.backend {
            return Err(LifecycleError::NeedsRestart(
                "php.backend changes need a new pool".into(),
            ));
        }
        let new = Arc::new(new);
        let p = (&old_worker.php, &new.php);
        let same_place = p.0.pool.listen == p.1.pool.listen;
        let same_program = p.0.binary == p.1.binary && p.0.config_file == p.1.config_file;
        let same_settings = p.0.settings == p.1.settings;
        // A shared pool's master forks max_workers processes: another
        // number, or sharing turned on or off, needs another master.
        // (The embedded runtime under dynamic or ondemand forks when asked:
        // only another manager needs another master.)
        let on_demand = p.1.backend == PhpBackend::Embed && p.1.pool.manager != Manager::Static;
        let same_master = p.0.pool.shared_memory == p.1.pool.shared_memory
            && (!p.1.pool.shared_memory
                || p.0.pool.manager == p.1.pool.manager
                    && (on_demand || p.0.pool.max_children == p.1.pool.max_children));
        let how = match &old {
            Upstream::Cgi(c) if same_place => {
                let launcher = if same_program
                    && same_settings
                    && same_master
                    && old_worker.route == new.route
                {
                    None
                } else {
                    // Checked (php-cgi -v with the new settings) before
                    // anything changes.
                    let generation = self.generation.load(Ordering::Relaxed);
                    Some(launcher_for(scope, &new, generation).await?)
                };
                let rolled = launcher.is_some();
                c.pool.reconfigure(new.clone(), launcher);
                drop(self.upstream.replace(Upstream::Cgi(Arc::new(CgiUpstream {
                    worker: new.clone(),
                    pool: c.pool.clone(),
                    roots: Roots::open(&new.php),
                }))));
                if rolled {
                    "in place; processes replaced as they finish their requests"
                } else {
                    "in place"
                }
            }
            Upstream::Fpm(b) if same_place && same_program => {
                match Prepared::again(new.clone(), scope.mode, &b.files, &scope.sup).await? {
                    Some(prepared) => {
                        let fresh = b.reload(prepared, &self.log).await?;
                        drop(self.upstream.replace(Upstream::Fpm(fresh)));
                        "php-fpm reloaded with SIGUSR2"
                    }
                    None => {
                        drop(
                            self.upstream
                                .replace(Upstream::Fpm(b.with_worker(new.clone()))),
                        );
                        "php-fpm's own configuration is unchanged: not reloaded"
                    }
                }
            }
            _ => {
                self.beside(scope, new.clone()).await?;
                "new pool; the previous one finishes its requests and stops"
            }
        };
        self.log.info(&format!(
            "{} applied: {} ({}, {how})",
            new.file.display(),
            new.php.pool.describe(),
            new.php.backend.as_str()
        ));
        Ok(())
    }

    /// Worker mode (`php.worker`): every process is replaced by one that
    /// boots the worker script again, so new code runs (a deploy): idle
    /// ones now, busy ones once their request is done, each replacement
    /// answering before the old one goes. False when not in worker mode.
    pub async fn redeploy(&self, scope: &Scope) -> Result<bool, LifecycleError> {
        let _one_at_a_time = self.reloading.lock().await;
        let up = self.upstream.get();
        let w = up.worker().clone();
        let Upstream::Cgi(c) = &up else {
            return Ok(false);
        };
        if w.php.worker.is_none() {
            return Ok(false);
        }
        let generation = self.generation.load(Ordering::Relaxed);
        let launcher = launcher_for(scope, &w, generation).await?;
        c.pool.reconfigure(w.clone(), Some(launcher));
        self.log.info(
            "worker script started again: its processes are replaced as they finish their requests",
        );
        Ok(true)
    }

    /// Starts a second backend for `new`, swaps it in once it answers,
    /// then lets the old one drain and stop.
    async fn beside(&self, scope: &Scope, new: Arc<WorkerConfig>) -> Result<(), LifecycleError> {
        if matches!(new.php.pool.listen, Listen::Unix(_) | Listen::Tcp(_))
            && new.php.backend == PhpBackend::Fpm
        {
            // The new php-fpm could not bind while the old one holds it.
            return Err(LifecycleError::NeedsRestart(format!(
                "php.pool.listen_address is a fixed address ({:?}) and this change needs a second php-fpm: restart tqserver to apply it",
                new.php.pool.listen
            )));
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let (up, stop) = start_backend(scope, new, &self.log, generation).await?;
        if !up.wait_ready(scope.sup.health_check_wait).await {
            stop.cancel();
            return Err(LifecycleError::NotReady(scope.sup.health_check_wait));
        }
        drop(self.upstream.replace(up));
        let old = std::mem::replace(
            &mut *self.stop.lock().unwrap_or_else(|e| e.into_inner()),
            stop,
        );
        // Requests in progress hold the old backend; its stop lets them finish.
        old.cancel();
        Ok(())
    }

    /// Stops the backend: php-fpm gets SIGQUIT (its graceful stop), the
    /// php-cgi pool drains; requests in progress finish.
    pub fn stop(&self) {
        self.stop.lock().unwrap_or_else(|e| e.into_inner()).cancel();
    }
}
