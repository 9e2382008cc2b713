//! The pool's one table of processes, behind one lock, and every
//! transition of a process's state (LIFECYCLE.md): lent, given back,
//! retired, ready, exited. Every count is derived from the table.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tqserver_fastcgi::Client;

use super::launch::Launcher;
use super::{
    FAILED_RETRY, Inner, Lease, Locked, Outcome, Readiness, RequestInfo, START_FAILURE_LIMIT,
};
use crate::config::{Manager, PoolConfig, WorkerConfig};
use crate::supervise::Backoff;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
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
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "Starting",
            Self::Idle => "Idle",
            Self::Busy | Self::Draining => "Running",
            Self::Retiring => "Finishing",
        }
    }
}

#[derive(Debug)]
pub(super) enum Control {
    /// Wait for php-cgi to answer again (it was abandoned mid-request).
    Recheck,
    /// SIGTERM, then SIGKILL after a grace period.
    Terminate,
    /// SIGKILL now (request_timeout).
    Kill,
}

pub(super) struct Current {
    pub(super) info: RequestInfo,
    pub(super) since: Instant,
    pub(super) timed_out: Arc<AtomicBool>,
}

pub(super) struct Proc {
    pub(super) pid: u32,
    pub(super) state: State,
    /// Set once spawned (the address is known then).
    pub(super) client: Option<Client>,
    pub(super) started: SystemTime,
    pub(super) requests: u64,
    pub(super) idle_since: Instant,
    pub(super) current: Option<Current>,
    pub(super) last_duration: Option<Duration>,
    pub(super) last_request: Option<RequestInfo>,
    pub(super) control: mpsc::UnboundedSender<Control>,
    /// The [`Settings::generation`] it was started with; an older one
    /// retires after its request (the PHP settings it runs with changed).
    pub(super) generation: u64,
}

/// What the pool runs with; replaced in place by [`Pool::reconfigure`].
pub(super) struct Settings {
    pub(super) worker: Arc<WorkerConfig>,
    pub(super) launcher: Arc<Launcher>,
    /// Bumped when the processes' own settings change (php.ini values,
    /// binary, environment): processes of an older generation retire.
    pub(super) generation: u64,
}

impl Settings {
    /// `php.pool` of the worker.
    pub(super) fn pool(&self) -> &PoolConfig {
        &self.worker.php.pool
    }
}

/// php-fpm's pool counters (names as on its status page).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Counters {
    pub(super) accepted: u64,
    pub(super) max_listen_queue: usize,
    pub(super) max_active: usize,
    pub(super) max_children_reached: u64,
    pub(super) slow_requests: u64,
    pub(super) spawned: u64,
    pub(super) recycled: u64,
    pub(super) timed_out: u64,
    pub(super) crashed: u64,
}

pub(super) struct PoolState {
    pub(super) procs: BTreeMap<u64, Proc>,
    /// Idle processes, most recently used last (LIFO: a warm process is
    /// reused, the others age out for the dynamic and ondemand managers).
    pub(super) idle: Vec<u64>,
    pub(super) waiters: VecDeque<crate::http::shards::Queued<oneshot::Sender<Lease>>>,
    pub(super) next_id: u64,
    /// Processes in a row that died before answering.
    pub(super) start_failures: u32,
    /// Unexpected exits since a request last finished
    /// ([`crate::supervise::Policy::PHP_CGI`]).
    pub(super) backoff: Backoff,
    /// Backoff: no spawn before this.
    pub(super) spawn_after: Option<Instant>,
    pub(super) failed: Option<String>,
    /// When a failed pool last tried a process.
    pub(super) failed_try: Option<Instant>,
    pub(super) stopping: bool,
    pub(super) counters: Counters,
    /// The settings in force (read under the same lock as the counts).
    pub(super) cfg: Arc<Settings>,
}

impl PoolState {
    pub(super) fn count(&self, s: State) -> usize {
        self.procs.values().filter(|p| p.state == s).count()
    }

    /// Processes that count toward `max_workers` (retiring ones are on
    /// their way out and take no requests).
    pub(super) fn live(&self) -> usize {
        self.procs.len() - self.count(State::Retiring)
    }
}

impl PoolState {
    /// Whether the pool takes requests, from the table alone.
    pub(super) fn readiness(&self) -> Readiness {
        if self.failed.is_some() {
            return Readiness::Failed;
        }
        let answering = self
            .procs
            .values()
            .any(|p| matches!(p.state, State::Idle | State::Busy));
        if answering || self.cfg.pool().manager == Manager::Ondemand {
            Readiness::Ready
        } else {
            Readiness::NotYet
        }
    }
}

impl Inner {
    /// Marks `id` busy and makes its lease.
    pub(super) fn lend(self: &Arc<Self>, t: &mut PoolState, id: u64) -> Lease {
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

    /// `id` can take a request: give it to the first waiter still waiting
    /// (on this connection thread first: `http::shards::next_here`), else
    /// put it on the idle stack.
    pub(super) fn make_available(self: &Arc<Self>, mut t: Locked<'_>, id: u64) {
        loop {
            match crate::http::shards::next_here(&mut t.waiters) {
                Some(w) if w.is_closed() => continue,
                Some(w) => {
                    let lease = self.lend(&mut t, id);
                    drop(t);
                    // A waiter that gave up in between drops the lease,
                    // which brings the process back here (Unused).
                    let _ = w.item.send(lease);
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

    pub(super) fn release(self: &Arc<Self>, id: u64, outcome: Outcome) {
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
            t.backoff.succeeded();
            t.spawn_after = None;
        }
        self.request_done(t, id);
    }

    /// A Busy or Draining process finished its request: count it, then
    /// retire the process (max_requests, stopping) or make it available.
    pub(super) fn request_done(self: &Arc<Self>, mut t: Locked<'_>, id: u64) {
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

    /// Counts a process that died before answering; too many in a row
    /// fail the pool.
    pub(super) fn start_failed(&self, t: &mut PoolState, why: &str) {
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

    /// One more failure in a row: no spawn before the backoff's delay.
    pub(super) fn back_off(&self, t: &mut PoolState) {
        let delay = t.backoff.failed(None);
        t.spawn_after = Some(Instant::now() + delay);
    }

    /// A shared pool's connection learnt which child it is bound to.
    pub(super) fn set_pid(&self, id: u64, pid: u32) {
        if let Some(p) = self.lock().procs.get_mut(&id) {
            p.pid = pid;
        }
    }

    /// The process task saw php-cgi answer: it can take requests.
    pub(super) fn on_ready(self: &Arc<Self>, id: u64) {
        let mut t = self.lock();
        t.start_failures = 0;
        if t.failed.take().is_some() {
            t.failed_try = None;
            t.backoff.succeeded();
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
    pub(super) fn on_exit(self: &Arc<Self>, id: u64, status: &str, by_us: bool) {
        {
            let mut t = self.lock();
            let Some(p) = t.procs.remove(&id) else {
                return;
            };
            t.idle.retain(|&i| i != id);
            let pid = p.pid;
            let program = t.cfg.launcher.program();
            if !t.stopping && !by_us {
                if p.state == State::Starting {
                    self.log.error(&format!(
                        "{program} (pid {pid}) exited while starting: {status}"
                    ));
                    self.start_failed(&mut t, status);
                } else {
                    t.counters.crashed += 1;
                    let doing = match p.current.as_ref().map(|c| &c.info) {
                        Some(r) => format!("while serving {} {}", r.method, r.uri),
                        None => "while idle".to_string(),
                    };
                    self.log.error(&format!(
                        "{program} (pid {pid}) exited unexpectedly {doing}: {status}; starting a replacement"
                    ));
                    self.back_off(&mut t);
                }
            }
        }
        self.exited.notify_waiters();
        self.replenish();
    }

    /// Idle process `id` stops (its settings were replaced, or there are
    /// too many).
    pub(super) fn retire_idle(&self, t: &mut PoolState, id: u64) {
        t.idle.retain(|&i| i != id);
        if let Some(p) = t.procs.get_mut(&id) {
            p.state = State::Retiring;
            let _ = p.control.send(Control::Terminate);
        }
    }

    /// After `max_children` was lowered: idle processes above it stop,
    /// those idle longest first (busy ones stop after their request).
    pub(super) fn shrink(&self, t: &mut PoolState) {
        let max = t.cfg.pool().max_children as usize;
        while t.live() > max && !t.idle.is_empty() {
            let id = t.idle[0];
            self.retire_idle(t, id);
        }
    }
}
