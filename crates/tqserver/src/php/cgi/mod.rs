//! The cgi backend: TQServer's own process manager over `php-cgi`, with
//! php-fpm's three managers (static, dynamic, ondemand). Each process has
//! one kept-alive FastCGI connection and gets one request at a time, handed
//! out by [`Pool::acquire`], so the pool knows every process's state
//! exactly. States and transitions: `LIFECYCLE.md` next to this file.
//!
//! # Layout
//! - `mod.rs`: the pool's API and the [`Lease`] a request holds.
//! - `state.rs`: the one table of processes behind one lock, and every
//!   transition of a process's state (the accounting).
//! - `manager.rs`: the managers' policy (how many processes, when), the
//!   tick, the stop.
//! - `process.rs`: the task that owns one php-cgi child (`run`), or, with
//!   `shared_memory`, one connection bound to a child of the php-cgi
//!   master (`run_shared`).
//! - `launch.rs`: starting one php-cgi process on its own socket, or the
//!   master of a shared pool.
//! - `status.rs`: the php-fpm-style status snapshot.

mod launch;
mod manager;
mod process;
mod state;
pub mod status;

use std::collections::{BTreeMap, VecDeque};
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tqserver_fastcgi::Client;

pub use launch::{Launcher, find_binary};
pub use status::{ProcessInfo, Snapshot};

use crate::config::{Manager, Supervision, WorkerConfig};
use crate::logging::WorkerLog;
use crate::supervise::{Backoff, Policy};
use state::{Counters, Current, PoolState, Settings, State};

/// Processes that die before their first answer, in a row, before the pool
/// is marked failed (php-fpm's `emergency_restart_threshold` idea).
const START_FAILURE_LIMIT: u32 = 5;
/// A failed pool tries one process this often, so it recovers by itself
/// once the cause is gone (a file restored, a service back), without
/// spinning.
const FAILED_RETRY: Duration = Duration::from_secs(5);
/// How often timeouts and idle processes are checked.
const TICK: Duration = Duration::from_millis(100);
/// dynamic: idle processes above `max_spare_workers` are stopped once they
/// have been idle this long (php-fpm checks once a second).
const SPARE_GRACE: Duration = Duration::from_secs(1);
/// A retired process gets this long to exit after SIGTERM before SIGKILL.
const RETIRE_GRACE: Duration = Duration::from_secs(2);

/// Why no process could be had for a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AcquireError {
    /// `php.pool.max_queue` requests are already waiting.
    #[error("{0} requests are already waiting for a PHP process (php.pool.max_queue)")]
    QueueFull(u32),
    /// No process became free within `php.pool.queue_timeout`.
    #[error("no PHP process became free within {0:?} (php.pool.queue_timeout)")]
    QueueTimeout(Duration),
    /// Processes keep dying at start; the pool stopped trying.
    #[error("the PHP pool failed: {0}")]
    Failed(String),
    /// The server is stopping.
    #[error("the PHP pool is stopping")]
    Stopping,
}

/// What a request is doing, for the status page and the timeout check.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    /// `REQUEST_METHOD`.
    pub method: String,
    /// `REQUEST_URI`.
    pub uri: String,
    /// `SCRIPT_FILENAME`.
    pub script: String,
    /// `CONTENT_LENGTH`.
    pub content_length: u64,
}

/// Whether the pool can take requests, published on a `watch` so waits
/// wake on the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// No process answers yet.
    NotYet,
    /// A process answers (or, ondemand, one starts when asked).
    Ready,
    /// Processes keep dying at start: requests get 503.
    Failed,
}

struct Inner {
    log: WorkerLog,
    supervision: Supervision,
    table: Mutex<PoolState>,
    started: SystemTime,
    /// Signalled whenever a process leaves the table.
    exited: Notify,
    /// Derived from the table after every change that can move it.
    readiness: watch::Sender<Readiness>,
    stop: CancellationToken,
}

/// A php-cgi pool for one worker. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

/// One process, lent to one request. Dropping it gives the process back:
/// to the next waiting request or the idle stack once its request
/// finished ([`Lease::finish`]), or to retirement when the request ended
/// any other way (the connection's state is then unknown).
pub struct Lease {
    inner: Arc<Inner>,
    id: u64,
    client: Client,
    pid: u32,
    timed_out: Arc<AtomicBool>,
    used: bool,
    finished: bool,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("id", &self.id)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// The connection to this process.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Records the request about to be sent (status page, timeout check).
    pub fn begin(&mut self, info: RequestInfo) {
        self.used = true;
        let mut t = self.inner.lock();
        if let Some(p) = t.procs.get_mut(&self.id) {
            p.current = Some(Current {
                info,
                since: Instant::now(),
                timed_out: self.timed_out.clone(),
            });
        }
    }

    /// The request ended properly (`END_REQUEST` read): the process and
    /// its connection can serve the next one.
    pub fn finish(&mut self) {
        self.finished = true;
    }

    /// Whether the pool killed the process at `request_timeout`.
    pub fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::Acquire)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let outcome = match (self.used, self.finished) {
            (false, _) => Outcome::Unused,
            (true, true) => Outcome::Finished,
            (true, false) => Outcome::Abandoned,
        };
        self.inner.release(self.id, outcome);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Handed over but no request was sent (a waiter that gave up).
    Unused,
    Finished,
    /// Sent, but not known to have ended cleanly.
    Abandoned,
}

impl Pool {
    /// Starts the pool: the manager task and the initial processes
    /// (static: `max_workers`; dynamic: `start_workers`; ondemand: none).
    /// The task ends once `stop` is cancelled and every process is gone.
    pub fn start(
        worker: Arc<WorkerConfig>,
        launcher: Launcher,
        supervision: Supervision,
        log: WorkerLog,
        stop: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let cfg = Arc::new(Settings {
            worker,
            launcher: Arc::new(launcher),
            generation: 0,
        });
        let initial = match cfg.pool().manager {
            Manager::Static => cfg.pool().max_children,
            Manager::Dynamic => cfg.pool().start,
            Manager::Ondemand => 0,
        };
        if cfg.launcher.on_demand() {
            // The embedded runtime's master starts PHP now, so the first
            // process (ondemand: at the first request) is a fork away.
            if let Err(e) = cfg.launcher.master(&log) {
                log.error(&format!("cannot start the PHP master: {e}"));
            }
        }
        let backoff = Backoff::new(supervision.restart_delay, Policy::PHP_CGI);
        let inner = Arc::new(Inner {
            log,
            supervision,
            table: Mutex::new(PoolState {
                procs: BTreeMap::new(),
                idle: Vec::new(),
                waiters: VecDeque::new(),
                next_id: 1,
                start_failures: 0,
                backoff,
                spawn_after: None,
                failed: None,
                failed_try: None,
                stopping: false,
                counters: Counters::default(),
                cfg,
            }),
            started: SystemTime::now(),
            exited: Notify::new(),
            readiness: watch::Sender::new(Readiness::NotYet),
            stop,
        });
        inner.spawn(|_| initial as usize);
        drop(inner.lock());
        let task = tokio::spawn(manager::run(inner.clone()));
        (Self { inner }, task)
    }

    /// The php-cgi program.
    pub fn binary(&self) -> PathBuf {
        self.inner.lock().cfg.launcher.binary().to_path_buf()
    }

    /// Applies a changed worker.yaml in place, as php-fpm's reload does
    /// for its pool: the new numbers take effect at once (extra idle
    /// processes stop, missing ones start; busy ones above a lower
    /// `max_children` stop after their request). With a new `launcher`
    /// (PHP settings, binary or environment changed) every process of the
    /// old settings retires: idle ones now, busy ones once their request
    /// is done, each replaced by one started with the new settings.
    pub fn reconfigure(&self, worker: Arc<WorkerConfig>, launcher: Option<Launcher>) {
        let inner = &self.inner;
        {
            let mut t = inner.lock();
            let old = t.cfg.clone();
            let (launcher, generation) = match launcher {
                Some(l) => (Arc::new(l), old.generation + 1),
                None => (old.launcher.clone(), old.generation),
            };
            t.cfg = Arc::new(Settings {
                worker,
                launcher,
                generation,
            });
            // Idle processes of older settings go now (their replacements
            // start below).
            let stale: Vec<u64> = t
                .idle
                .iter()
                .copied()
                .filter(|id| t.procs.get(id).is_some_and(|p| p.generation != generation))
                .collect();
            for id in stale {
                inner.retire_idle(&mut t, id);
            }
            inner.shrink(&mut t);
        }
        inner.replenish();
    }

    /// Whether at least one process is answering (or, for ondemand, the
    /// pool has not failed: it starts processes when asked).
    pub fn is_ready(&self) -> bool {
        *self.inner.readiness.borrow() == Readiness::Ready
    }

    /// Waits until [`Pool::is_ready`] (or the pool failed), at most
    /// `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut rx = self.inner.readiness.subscribe();
        crate::supervise::ready::wait_for(&mut rx, timeout, |r| *r != Readiness::NotYet).await;
        self.is_ready()
    }

    /// A process for one request: an idle one at once, else a place in the
    /// wait queue (which starts a process if the manager may).
    pub async fn acquire(&self) -> Result<Lease, AcquireError> {
        let inner = &self.inner;
        let (rx, queue_timeout) = {
            let mut t = inner.lock();
            if let Some(f) = &t.failed {
                return Err(AcquireError::Failed(f.clone()));
            }
            if t.stopping {
                return Err(AcquireError::Stopping);
            }
            t.counters.accepted += 1;
            if let Some(id) = t.idle.pop() {
                return Ok(inner.lend(&mut t, id));
            }
            t.waiters.retain(|w| !w.is_closed());
            let (max_queue, max_children, queue_timeout) = (
                t.cfg.pool().max_queue,
                t.cfg.pool().max_children,
                t.cfg.pool().queue_timeout,
            );
            if t.waiters.len() >= max_queue as usize {
                return Err(AcquireError::QueueFull(max_queue));
            }
            let (tx, rx) = oneshot::channel();
            t.waiters.push_back(crate::http::shards::Queued::new(tx));
            t.counters.max_listen_queue = t.counters.max_listen_queue.max(t.waiters.len());
            if t.live() >= max_children as usize {
                t.counters.max_children_reached += 1;
            }
            (rx, queue_timeout)
        };
        inner.replenish();
        match tokio::time::timeout(queue_timeout, rx).await {
            Ok(Ok(lease)) => Ok(lease),
            Ok(Err(_)) => {
                // The pool dropped the queue: it failed or is stopping.
                let t = inner.lock();
                Err(match &t.failed {
                    Some(f) => AcquireError::Failed(f.clone()),
                    None => AcquireError::Stopping,
                })
            }
            Err(_) => Err(AcquireError::QueueTimeout(queue_timeout)),
        }
    }

    /// Counters and per-process state, php-fpm's status page fields.
    pub fn snapshot(&self) -> Snapshot {
        let inner = &self.inner;
        let t = inner.lock();
        let now = Instant::now();
        let processes = t
            .procs
            .values()
            .map(|p| ProcessInfo {
                pid: p.pid,
                state: p.state.as_str(),
                start_time: p.started,
                requests: p.requests,
                request_duration: p
                    .current
                    .as_ref()
                    .map(|c| now - c.since)
                    .or(p.last_duration),
                request: p
                    .current
                    .as_ref()
                    .map(|c| c.info.clone())
                    .or_else(|| p.last_request.clone()),
                rss_bytes: status::rss_bytes(p.pid),
            })
            .collect();
        let c = t.counters;
        Snapshot {
            pool: t.cfg.worker.name.clone(),
            manager: t.cfg.pool().manager.as_str(),
            backend: t.cfg.worker.php.backend.as_str(),
            start_time: inner.started,
            accepted: c.accepted,
            listen_queue: t.waiters.iter().filter(|w| !w.is_closed()).count(),
            max_listen_queue: c.max_listen_queue,
            listen_queue_len: t.cfg.pool().max_queue as usize,
            idle: t.idle.len(),
            active: t.count(State::Busy) + t.count(State::Draining),
            total: t.live(),
            max_active: c.max_active,
            max_children_reached: c.max_children_reached,
            slow_requests: c.slow_requests,
            spawned: c.spawned,
            recycled: c.recycled,
            timed_out: c.timed_out,
            crashed: c.crashed,
            failed: t.failed.clone(),
            processes,
        }
    }

    /// Graceful stop: no new requests; idle processes stop now, busy ones
    /// when their request ends, all within `grace`; then SIGKILL. Returns
    /// when every process has been reaped.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.shutdown(grace).await;
    }
}

impl Inner {
    /// The table, locked; when the lock is released the pool's readiness
    /// is published as the table shows it (so no change can forget to).
    fn lock(&self) -> Locked<'_> {
        Locked {
            table: self.table.lock().unwrap_or_else(|e| e.into_inner()),
            readiness: &self.readiness,
        }
    }
}

/// The locked table (see [`Inner::lock`]).
struct Locked<'a> {
    table: MutexGuard<'a, PoolState>,
    readiness: &'a watch::Sender<Readiness>,
}

impl Deref for Locked<'_> {
    type Target = PoolState;
    fn deref(&self) -> &PoolState {
        &self.table
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut PoolState {
        &mut self.table
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let now = self.table.readiness();
        self.readiness
            .send_if_modified(|r| std::mem::replace(r, now) != now);
    }
}
