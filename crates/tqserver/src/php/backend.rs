//! A PHP worker's backend as its route holds it: started (php-fpm or the
//! php-cgi pool), and changed when its worker.yaml changes — in place
//! when it can be (php-cgi pool resized, php-fpm reloaded with SIGUSR2),
//! else a new backend starts next to the old one, takes the route once it
//! answers, and the old one finishes the requests it has and stops
//! (php-fpm: SIGQUIT, its graceful stop; php-cgi: the pool drains).
//! Nothing is dropped, and nothing is left running.

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
                    worker: w.clone(),
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
    pub async fn reload(&self, starter: &Starter, new: Worker) -> Result<(), String> {
        let _one_at_a_time = self.reloading.lock().await;
        let old = self.upstream.get();
        let old_worker = old.worker().clone();
        if old_worker.php.backend != new.php.backend {
            return Err("php.backend changes need a new pool".into());
        }
        let new = Arc::new(new);
        let p = (&old_worker.php, &new.php);
        let same_place = p.0.pool.listen == p.1.pool.listen;
        let same_program = p.0.binary == p.1.binary && p.0.config_file == p.1.config_file;
        let same_settings = p.0.settings == p.1.settings;
        let how = match &old {
            Upstream::Cgi(c) if same_place => {
                let launcher = if same_program && same_settings && old_worker.route == new.route {
                    None
                } else {
                    // Checked (php-cgi -v with the new settings) before
                    // anything changes.
                    let generation = self.generation.load(Ordering::Relaxed);
                    Some(
                        Launcher::new(
                            &new,
                            starter.mode,
                            &starter.runtime_dir,
                            starter.ports.clone(),
                            generation,
                        )
                        .await?,
                    )
                };
                let rolled = launcher.is_some();
                c.pool.reconfigure(new.clone(), launcher);
                drop(self.upstream.replace(Upstream::Cgi(Arc::new(CgiUpstream {
                    worker: new.clone(),
                    pool: c.pool.clone(),
                    doc_root: DocRoot::open(&new.php.document_root),
                }))));
                if rolled {
                    "in place; processes replaced as they finish their requests"
                } else {
                    "in place"
                }
            }
            Upstream::Fpm(b) if same_place && same_program => {
                match Prepared::again(new.clone(), starter.mode, &b.files, &starter.sup).await? {
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
                self.beside(starter, new.clone()).await?;
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

    /// Starts a second backend for `new`, swaps it in once it answers,
    /// then lets the old one drain and stop.
    async fn beside(&self, starter: &Starter, new: Arc<Worker>) -> Result<(), String> {
        if matches!(new.php.pool.listen, Listen::Unix(_) | Listen::Tcp(_))
            && new.php.backend == Backend::Fpm
        {
            // The new php-fpm could not bind while the old one holds it.
            return Err(format!(
                "php.pool.listen_address is a fixed address ({:?}) and this change needs a second php-fpm: restart tqserver to apply it",
                new.php.pool.listen
            ));
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let (up, stop) = starter.start(new, &self.log, generation).await?;
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
        Ok(())
    }

    /// Stops the backend: php-fpm gets SIGQUIT (its graceful stop), the
    /// php-cgi pool drains; requests in progress finish.
    pub fn stop(&self) {
        self.stop.lock().unwrap_or_else(|e| e.into_inner()).cancel();
    }
}
