//! The cgi backend: TQServer's own process manager over `php-cgi`, with
//! php-fpm's three managers (static, dynamic, ondemand). Each process has
//! one kept-alive FastCGI connection and gets one request at a time, handed
//! out by [`Pool::acquire`], so the pool knows every process's state
//! exactly. States and transitions: `LIFECYCLE.md` next to this file.
//!
//! # Layout
//! - `mod.rs`: the pool, its state and the [`Lease`] a request holds.
//! - `launch.rs`: starting one php-cgi process on its own socket.
//! - `status.rs`: the php-fpm-style status snapshot.

mod launch;
pub mod status;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tqserver_fastcgi::{Client, ClientConfig};

pub use launch::{Launcher, find_binary};
pub use status::{ProcessInfo, Snapshot};

use crate::config::{Manager, Pool as PoolConfig, Supervision, Worker};
use crate::logging::{WorkerLog, forward_lines};
use crate::process::describe_exit;

/// Processes that die before their first answer, in a row, before the pool
/// is marked failed (php-fpm's `emergency_restart_threshold` idea).
const START_FAILURE_LIMIT: u32 = 5;
/// Longest wait between replacements of processes that keep crashing.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Spawned, not yet answering FastCGI.
    Starting,
    /// Waiting for a request (in the idle stack).
    Idle,
    /// Serving a request (a [`Lease`] exists).
    Busy,
    /// Its request was abandoned (the client went away, the response
    /// failed): php-cgi may still be running the script. It comes back
    /// when it answers `FCGI_GET_VALUES` again, which it does only once
    /// the script is done; `request_timeout` still applies.
    Draining,
    /// Told to stop (recycled, scaled down, timed out, stopping); gets no
    /// more requests; leaves the table when it has exited.
    Retiring,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "Starting",
            Self::Idle => "Idle",
            Self::Busy | Self::Draining => "Running",
            Self::Retiring => "Finishing",
        }
    }
}

#[derive(Debug)]
enum Control {
    /// Wait for php-cgi to answer again (it was abandoned mid-request).
    Recheck,
    /// SIGTERM, then SIGKILL after a grace period.
    Terminate,
    /// SIGKILL now (request_timeout).
    Kill,
}

struct Current {
    info: RequestInfo,
    since: Instant,
    timed_out: Arc<AtomicBool>,
}

struct Proc {
    pid: u32,
    state: State,
    /// Set once spawned (the address is known then).
    client: Option<Client>,
    started: SystemTime,
    requests: u64,
    idle_since: Instant,
    current: Option<Current>,
    last_duration: Option<Duration>,
    last_request: Option<RequestInfo>,
    control: mpsc::UnboundedSender<Control>,
    /// The [`Settings::generation`] it was started with; an older one
    /// retires after its request (the PHP settings it runs with changed).
    generation: u64,
}

/// What the pool runs with; replaced in place by [`Pool::reconfigure`].
struct Settings {
    worker: Arc<Worker>,
    launcher: Arc<Launcher>,
    /// Bumped when the processes' own settings change (php.ini values,
    /// binary, environment): processes of an older generation retire.
    generation: u64,
}

impl Settings {
    /// `php.pool` of the worker.
    fn pool(&self) -> &PoolConfig {
        &self.worker.php.pool
    }
}

/// php-fpm's pool counters (names as on its status page).
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    accepted: u64,
    max_listen_queue: usize,
    max_active: usize,
    max_children_reached: u64,
    slow_requests: u64,
    spawned: u64,
    recycled: u64,
    timed_out: u64,
    crashed: u64,
}

struct Table {
    procs: BTreeMap<u64, Proc>,
    /// Idle processes, most recently used last (LIFO: a warm process is
    /// reused, the others age out for the dynamic and ondemand managers).
    idle: Vec<u64>,
    waiters: VecDeque<oneshot::Sender<Lease>>,
    next_id: u64,
    /// Processes in a row that died before answering.
    start_failures: u32,
    /// Unexpected exits since a request last finished.
    crash_streak: u32,
    /// Backoff: no spawn before this.
    spawn_after: Option<Instant>,
    failed: Option<String>,
    /// When a failed pool last tried a process.
    failed_try: Option<Instant>,
    stopping: bool,
    counters: Counters,
    /// The settings in force (read under the same lock as the counts).
    cfg: Arc<Settings>,
}

impl Table {
    fn count(&self, s: State) -> usize {
        self.procs.values().filter(|p| p.state == s).count()
    }

    /// Processes that count toward `max_workers` (retiring ones are on
    /// their way out and take no requests).
    fn live(&self) -> usize {
        self.procs.len() - self.count(State::Retiring)
    }
}

struct Inner {
    log: WorkerLog,
    supervision: Supervision,
    table: Mutex<Table>,
    started: SystemTime,
    /// Signalled whenever a process leaves the table.
    exited: Notify,
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
        worker: Arc<Worker>,
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
        let inner = Arc::new(Inner {
            log,
            supervision,
            table: Mutex::new(Table {
                procs: BTreeMap::new(),
                idle: Vec::new(),
                waiters: VecDeque::new(),
                next_id: 1,
                start_failures: 0,
                crash_streak: 0,
                spawn_after: None,
                failed: None,
                failed_try: None,
                stopping: false,
                counters: Counters::default(),
                cfg,
            }),
            started: SystemTime::now(),
            exited: Notify::new(),
            stop,
        });
        inner.spawn(|_| initial as usize);
        let task = tokio::spawn(manage(inner.clone()));
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
    pub fn reconfigure(&self, worker: Arc<Worker>, launcher: Option<Launcher>) {
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
        let t = self.inner.lock();
        t.failed.is_none()
            && (t.cfg.pool().manager == Manager::Ondemand
                || t.procs
                    .values()
                    .any(|p| matches!(p.state, State::Idle | State::Busy)))
    }

    /// Waits until [`Pool::is_ready`], at most `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self.is_ready() || self.inner.lock().failed.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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
            t.waiters.push_back(tx);
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
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks `id` busy and makes its lease.
    fn lend(self: &Arc<Self>, t: &mut Table, id: u64) -> Lease {
        let p = t.procs.get_mut(&id).expect("idle ids are in the table");
        p.state = State::Busy;
        let lease = Lease {
            inner: self.clone(),
            id,
            client: p
                .client
                .clone()
                .expect("a process is lent only once spawned"),
            pid: p.pid,
            timed_out: Arc::new(AtomicBool::new(false)),
            used: false,
            finished: false,
        };
        let active = t.count(State::Busy);
        t.counters.max_active = t.counters.max_active.max(active);
        lease
    }

    /// `id` can take a request: give it to the first waiter still waiting,
    /// else put it on the idle stack.
    fn make_available(self: &Arc<Self>, mut t: MutexGuard<'_, Table>, id: u64) {
        loop {
            match t.waiters.pop_front() {
                Some(w) if w.is_closed() => continue,
                Some(w) => {
                    let lease = self.lend(&mut t, id);
                    drop(t);
                    // A waiter that gave up in between drops the lease,
                    // which brings the process back here (Unused).
                    let _ = w.send(lease);
                    return;
                }
                None => {
                    let p = t
                        .procs
                        .get_mut(&id)
                        .expect("available ids are in the table");
                    p.state = State::Idle;
                    p.idle_since = Instant::now();
                    t.idle.push(id);
                    return;
                }
            }
        }
    }

    fn release(self: &Arc<Self>, id: u64, outcome: Outcome) {
        let mut t = self.lock();
        let Some(p) = t.procs.get_mut(&id) else {
            return; // exited meanwhile
        };
        if p.state != State::Busy {
            return; // already retiring (killed at request_timeout)
        }
        if outcome == Outcome::Abandoned {
            // The script may still run: wait for php-cgi to come back
            // instead of killing it (php-fpm, too, lets it finish). The
            // request stays `current` until then, for request_timeout and
            // the crash log.
            p.state = State::Draining;
            let _ = p.control.send(Control::Recheck);
            return;
        }
        if outcome == Outcome::Finished {
            t.crash_streak = 0;
            t.spawn_after = None;
        }
        self.request_done(t, id);
    }

    /// A Busy or Draining process finished its request: count it, then
    /// retire the process (max_requests, stopping) or make it available.
    fn request_done(self: &Arc<Self>, mut t: MutexGuard<'_, Table>, id: u64) {
        let stopping = t.stopping;
        let max_requests = t.cfg.pool().max_requests;
        let slow = t.cfg.worker.logging.slow_threshold;
        let (generation, max) = (t.cfg.generation, t.cfg.pool().max_children as usize);
        let above_max = t.live() > max;
        let Some(p) = t.procs.get_mut(&id) else {
            return;
        };
        let mut was_slow = false;
        if let Some(cur) = p.current.take() {
            let took = cur.since.elapsed();
            was_slow = slow.is_some_and(|s| took >= s);
            p.last_duration = Some(took);
            p.last_request = Some(cur.info);
            p.requests += 1;
        }
        let recycle = max_requests > 0 && p.requests >= max_requests;
        // Started with settings since replaced, or one too many after
        // max_children was lowered.
        let reconfigured = p.generation != generation || above_max;
        let retire = stopping || recycle || reconfigured;
        if retire {
            p.state = State::Retiring;
            let _ = p.control.send(Control::Terminate);
        }
        if was_slow {
            t.counters.slow_requests += 1;
        }
        if retire {
            if recycle {
                t.counters.recycled += 1;
            }
            drop(t);
            // Replacement first; the retiring process takes no request.
            self.replenish();
            return;
        }
        self.make_available(t, id);
    }

    /// How many processes the manager wants started now.
    fn wanted(&self, t: &Table) -> usize {
        if t.failed.is_some() || t.stopping {
            return 0;
        }
        if t.spawn_after.is_some_and(|at| Instant::now() < at) {
            return 0;
        }
        let c = t.cfg.pool();
        let max = c.max_children as usize;
        let live = t.live();
        let starting = t.count(State::Starting);
        let waiting = t.waiters.iter().filter(|w| !w.is_closed()).count();
        let for_waiters = waiting.saturating_sub(starting);
        let want = match c.manager {
            Manager::Static => max,
            Manager::Dynamic => {
                let spare = (c.min_spare as usize)
                    .saturating_sub(t.idle.len() + starting)
                    .max(for_waiters);
                live + spare
            }
            Manager::Ondemand => live + for_waiters,
        };
        want.min(max).saturating_sub(live)
    }

    /// Starts what [`Inner::wanted`] asks for. The new processes enter the
    /// table under the same lock that counted, so concurrent callers never
    /// start more than wanted.
    fn replenish(self: &Arc<Self>) {
        self.spawn(|t| self.wanted(t));
    }

    /// Starts as many processes as `count` says, counted and entered in the
    /// table under one lock, spawned outside it.
    fn spawn(self: &Arc<Self>, count: impl FnOnce(&Table) -> usize) {
        let reserved: Vec<_> = {
            let mut t = self.lock();
            let n = count(&t);
            (0..n).map(|_| Self::reserve(&mut t)).collect()
        };
        for (id, rx) in reserved {
            self.launch(id, rx);
        }
    }

    /// A `Starting` entry for a process about to be spawned.
    fn reserve(t: &mut Table) -> (u64, mpsc::UnboundedReceiver<Control>) {
        let (control, rx) = mpsc::unbounded_channel();
        let generation = t.cfg.generation;
        let id = t.next_id;
        t.next_id += 1;
        t.procs.insert(
            id,
            Proc {
                pid: 0,
                state: State::Starting,
                client: None,
                started: SystemTime::now(),
                requests: 0,
                idle_since: Instant::now(),
                current: None,
                last_duration: None,
                last_request: None,
                control,
                generation,
            },
        );
        t.counters.spawned += 1;
        (id, rx)
    }

    /// Spawns the process of a reserved entry; its task reports back
    /// through the table.
    fn launch(self: &Arc<Self>, id: u64, rx: mpsc::UnboundedReceiver<Control>) {
        let cfg = self.lock().cfg.clone();
        match cfg.launcher.spawn(id) {
            Ok(started) => {
                let client = Client::new(started.address.clone(), self.client_config(cfg.pool()));
                let pid = started.child.id().unwrap_or(0);
                {
                    let mut t = self.lock();
                    if let Some(p) = t.procs.get_mut(&id) {
                        p.pid = pid;
                        p.client = Some(client.clone());
                    }
                }
                let launcher = cfg.launcher.clone();
                tokio::spawn(run_process(self.clone(), id, started, client, rx, launcher));
            }
            Err(e) => {
                self.log.error(&format!("cannot start php-cgi: {e}"));
                let mut t = self.lock();
                t.procs.remove(&id);
                self.start_failed(&mut t, &e);
            }
        }
    }

    fn client_config(&self, config: &PoolConfig) -> ClientConfig {
        // One connection: the process serves one at a time, and the pool
        // hands it one request at a time.
        let mut c = ClientConfig::new(1);
        // The pool kills the process at request_timeout; the client's own
        // limit is only a backstop behind it.
        c.read_timeout = if config.request_timeout.is_zero() {
            Duration::from_secs(86_400)
        } else {
            config.request_timeout + Duration::from_secs(5)
        };
        c.idle_timeout = Duration::from_secs(86_400);
        let l = self.log.clone();
        c.on_stderr = Some(Arc::new(move |line: &[u8]| l.php_stderr(line)));
        c
    }

    /// Counts a process that died before answering; too many in a row
    /// fail the pool.
    fn start_failed(&self, t: &mut Table, why: &str) {
        t.start_failures += 1;
        self.back_off(t);
        if t.failed.is_some() {
            t.failed_try = Some(Instant::now());
            return;
        }
        if t.start_failures >= START_FAILURE_LIMIT {
            let msg = format!(
                "{} php-cgi processes in a row died before answering (last: {why}); requests get 503 and one process is tried every {}s until one answers — check php.binary, php.config_file and php.settings",
                t.start_failures,
                FAILED_RETRY.as_secs()
            );
            t.failed_try = Some(Instant::now());
            self.log.error(&format!("pool failed: {msg}"));
            t.failed = Some(msg);
            // Waiting requests get their answer now (503), not at timeout.
            t.waiters.clear();
        }
    }

    fn back_off(&self, t: &mut Table) {
        t.crash_streak += 1;
        let delay = self
            .supervision
            .restart_delay
            .saturating_mul(1 << (t.crash_streak - 1).min(16))
            .min(MAX_BACKOFF);
        t.spawn_after = Some(Instant::now() + delay);
    }

    /// The process task saw php-cgi answer: it can take requests.
    fn on_ready(self: &Arc<Self>, id: u64) {
        let mut t = self.lock();
        t.start_failures = 0;
        if t.failed.take().is_some() {
            t.failed_try = None;
            t.crash_streak = 0;
            t.spawn_after = None;
            self.log
                .info("pool recovered: a php-cgi process answers again");
            // The manager fills the pool up on its next tick.
        }
        let (stopping, generation) = (t.stopping, t.cfg.generation);
        let Some(p) = t.procs.get_mut(&id) else {
            return;
        };
        if p.state == State::Draining {
            // Back from an abandoned request.
            self.request_done(t, id);
            return;
        }
        if p.state != State::Starting {
            return;
        }
        if stopping || p.generation != generation {
            // Or started with settings replaced meanwhile: a replacement
            // with the new ones starts.
            p.state = State::Retiring;
            let _ = p.control.send(Control::Terminate);
            drop(t);
            self.replenish();
            return;
        }
        self.make_available(t, id);
    }

    /// The process task reaped php-cgi; `by_us` when our own signal ended
    /// it (retirement, request_timeout, stop), not a crash or kill -9.
    fn on_exit(self: &Arc<Self>, id: u64, status: &str, by_us: bool) {
        {
            let mut t = self.lock();
            let Some(p) = t.procs.remove(&id) else {
                return;
            };
            t.idle.retain(|&i| i != id);
            let pid = p.pid;
            if !t.stopping && !by_us {
                if p.state == State::Starting {
                    self.log.error(&format!(
                        "php-cgi (pid {pid}) exited while starting: {status}"
                    ));
                    self.start_failed(&mut t, status);
                } else {
                    t.counters.crashed += 1;
                    let doing = match p.current.as_ref().map(|c| &c.info) {
                        Some(r) => format!("while serving {} {}", r.method, r.uri),
                        None => "while idle".to_string(),
                    };
                    self.log.error(&format!(
                        "php-cgi (pid {pid}) exited unexpectedly {doing}: {status}; starting a replacement"
                    ));
                    self.back_off(&mut t);
                }
            }
        }
        self.exited.notify_waiters();
        self.replenish();
    }

    /// One manager pass: request timeouts, idle processes to stop, spawns
    /// that waited for a backoff.
    fn tick(self: &Arc<Self>) {
        let now = Instant::now();
        {
            let mut t = self.lock();
            let retry = t.failed.is_some()
                && !t.stopping
                && t.count(State::Starting) == 0
                && t.failed_try.is_none_or(|at| now - at >= FAILED_RETRY);
            if retry {
                t.failed_try = Some(now);
                drop(t);
                self.spawn(|_| 1);
                return;
            }
            let timeout = t.cfg.pool().request_timeout;
            if !timeout.is_zero() {
                let mut killed = 0;
                for p in t.procs.values_mut() {
                    let Some(cur) = &p.current else { continue };
                    let running = matches!(p.state, State::Busy | State::Draining);
                    if !running || now - cur.since < timeout {
                        continue;
                    }
                    cur.timed_out.store(true, Ordering::Release);
                    self.log.error(&format!(
                        "request_timeout: {} {} ran for {:?} in php-cgi (pid {}); killing the process, the client gets 504",
                        cur.info.method, cur.info.uri, timeout, p.pid
                    ));
                    p.state = State::Retiring;
                    let _ = p.control.send(Control::Kill);
                    killed += 1;
                }
                t.counters.timed_out += killed;
            }
            let c = t.cfg.pool();
            let idle_limit = match c.manager {
                Manager::Static => None,
                Manager::Dynamic => Some((c.max_spare as usize, SPARE_GRACE)),
                Manager::Ondemand => Some((0, c.idle_timeout)),
            };
            if let Some((keep, after)) = idle_limit {
                // The bottom of the LIFO stack has been idle longest.
                while t.idle.len() > keep {
                    let id = t.idle[0];
                    let p = t.procs.get_mut(&id).expect("idle ids are in the table");
                    if now - p.idle_since < after {
                        break;
                    }
                    p.state = State::Retiring;
                    let _ = p.control.send(Control::Terminate);
                    t.idle.remove(0);
                }
            }
            self.shrink(&mut t);
        }
        self.replenish();
    }

    /// Idle process `id` stops (its settings were replaced, or there are
    /// too many).
    fn retire_idle(&self, t: &mut Table, id: u64) {
        t.idle.retain(|&i| i != id);
        if let Some(p) = t.procs.get_mut(&id) {
            p.state = State::Retiring;
            let _ = p.control.send(Control::Terminate);
        }
    }

    /// After `max_children` was lowered: idle processes above it stop,
    /// those idle longest first (busy ones stop after their request).
    fn shrink(&self, t: &mut Table) {
        let max = t.cfg.pool().max_children as usize;
        while t.live() > max && !t.idle.is_empty() {
            let id = t.idle[0];
            self.retire_idle(t, id);
        }
    }

    async fn shutdown(self: &Arc<Self>, grace: Duration) {
        {
            let mut t = self.lock();
            t.stopping = true;
            t.waiters.clear();
            for id in std::mem::take(&mut t.idle) {
                if let Some(p) = t.procs.get_mut(&id) {
                    p.state = State::Retiring;
                    let _ = p.control.send(Control::Terminate);
                }
            }
            for p in t.procs.values_mut() {
                if p.state == State::Starting {
                    p.state = State::Retiring;
                    let _ = p.control.send(Control::Terminate);
                }
            }
        }
        let all_gone = async {
            loop {
                let notified = self.exited.notified();
                if self.lock().procs.is_empty() {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(grace, all_gone).await.is_err() {
            let t = self.lock();
            self.log.error(&format!(
                "{} php-cgi processes still busy after {grace:?}; killing them",
                t.procs.len()
            ));
            for p in t.procs.values() {
                let _ = p.control.send(Control::Kill);
            }
        }
        loop {
            let notified = self.exited.notified();
            if self.lock().procs.is_empty() {
                return;
            }
            notified.await;
        }
    }
}

async fn manage(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => inner.tick(),
            () = inner.stop.cancelled() => break,
        }
    }
    inner.shutdown(inner.supervision.shutdown_grace).await;
}

/// Owns one php-cgi child: readiness probe, control messages, reaping.
async fn run_process(
    inner: Arc<Inner>,
    id: u64,
    started: launch::Started,
    client: Client,
    mut control: mpsc::UnboundedReceiver<Control>,
    launcher: Arc<Launcher>,
) {
    let launch::Started {
        mut child,
        address,
        port,
        socket_file,
    } = started;
    let pid = child.id().unwrap_or(0);
    if let Some(err) = child.stderr.take() {
        let log = inner.log.clone();
        forward_lines(err, move |line| {
            log.emit(tracing::Level::WARN, &format!("php-cgi[{pid}]: {line}"));
        });
    }
    // Ready once php-cgi answers FCGI_GET_VALUES on its socket (it closes
    // that connection afterwards; requests open their own). The same probe
    // tells when an abandoned request's script is done: php-cgi serves one
    // connection at a time.
    let wait = inner.supervision.health_check_wait;
    // What we sent, to tell our own stops from crashes and kill -9.
    let mut sent = Sent::Nothing;
    let mut starting = true;
    let (status, by_us) = 'life: loop {
        let probe = async {
            let answer = client.get_values(&["FCGI_MPXS_CONNS"]);
            if starting {
                tokio::time::timeout(wait, answer).await
            } else {
                // request_timeout (the manager's tick) bounds the wait.
                Ok(answer.await)
            }
        };
        tokio::select! {
            r = probe => {
                if matches!(r, Ok(Ok(_))) {
                    starting = false;
                    inner.on_ready(id);
                } else {
                    let why = match r {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {wait:?} (supervision.health_check_wait_timeout_ms)"),
                    };
                    // Dead, or not php-cgi: gone either way. At start, a
                    // start failure whoever ended it.
                    let _ = child.start_kill();
                    let s = child.wait().await;
                    let status = if starting {
                        format!("not answering FastCGI on {address}: {why}")
                    } else {
                        describe_exit(&s)
                    };
                    break 'life (status, false);
                }
            }
            s = child.wait() => break 'life (describe_exit(&s), false),
            c = control.recv() => {
                let s = stop_child(&mut child, c, &client, &inner, &mut sent).await;
                break 'life (describe_exit(&s), sent.explains(&s));
            }
        }
        // Running: until it exits, is stopped, or is to be checked again.
        tokio::select! {
            s = child.wait() => break 'life (describe_exit(&s), false),
            c = control.recv() => match c {
                Some(Control::Recheck) => {}
                c => {
                    let s = stop_child(&mut child, c, &client, &inner, &mut sent).await;
                    break 'life (describe_exit(&s), sent.explains(&s));
                }
            },
        }
    };
    // Anything left of its process group goes too.
    drop(child);
    launcher.forget(port, socket_file.as_deref());
    inner.on_exit(id, &status, by_us);
}

/// The signals the pool sent a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Nothing,
    Term,
    TermThenKill,
    Kill,
}

impl Sent {
    /// Whether what we sent explains this exit. A SIGKILL we did not send
    /// (kill -9 while we waited for a SIGTERM) is not ours.
    fn explains(self, status: &std::io::Result<std::process::ExitStatus>) -> bool {
        use std::os::unix::process::ExitStatusExt;
        let Ok(status) = status else {
            return false;
        };
        match (self, status.signal()) {
            (Sent::Nothing, _) => false,
            (Sent::Kill | Sent::TermThenKill, _) => true,
            (Sent::Term, None) => true,
            (Sent::Term, Some(s)) => s == Signal::SIGTERM as i32,
        }
    }
}

/// Stops the child as asked and reaps it.
async fn stop_child(
    child: &mut tokio::process::Child,
    c: Option<Control>,
    client: &Client,
    inner: &Inner,
    sent: &mut Sent,
) -> std::io::Result<std::process::ExitStatus> {
    if let Some(Control::Kill) = c {
        *sent = Sent::Kill;
        let _ = child.start_kill();
        return child.wait().await;
    }
    // Terminate, or the pool is gone. php-cgi waits for the next request
    // on our kept-alive connection and notices SIGTERM only back in
    // accept(): close the connection first.
    client.close_idle();
    *sent = Sent::Term;
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    let grace = RETIRE_GRACE.min(
        inner
            .supervision
            .shutdown_grace
            .max(Duration::from_millis(100)),
    );
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(s) => s,
        Err(_) => {
            inner.log.error(&format!(
                "php-cgi (pid {}) did not stop within {grace:?} of SIGTERM; killing it",
                child.id().unwrap_or(0)
            ));
            *sent = Sent::TermThenKill;
            let _ = child.start_kill();
            child.wait().await
        }
    }
}
