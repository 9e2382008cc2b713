//! The managers' policy (php-fpm's static, dynamic, ondemand): how many
//! processes to start now, the 100 ms tick (request timeouts, idle
//! processes, a failed pool's retry), and the pool's stop.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tqserver_fastcgi::{Client, ClientConfig};

use super::state::{Control, PoolState, Proc, State};
use super::{FAILED_RETRY, Inner, SPARE_GRACE, TICK};
use crate::config::{Manager, PoolConfig};

/// The pool's task: a tick until `stop`, then the graceful stop.
pub(super) async fn run(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => inner.tick(),
            () = inner.stop.cancelled() => break,
        }
    }
    inner
        .shutdown(crate::process::grace_left(inner.supervision.shutdown_grace))
        .await;
}

impl Inner {
    /// How many processes the manager wants started now.
    pub(super) fn wanted(&self, t: &PoolState) -> usize {
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
    pub(super) fn replenish(self: &Arc<Self>) {
        self.spawn(|t| self.wanted(t));
    }

    /// Starts as many processes as `count` says, counted and entered in the
    /// table under one lock, spawned outside it.
    pub(super) fn spawn(self: &Arc<Self>, count: impl FnOnce(&PoolState) -> usize) {
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
    pub(super) fn reserve(t: &mut PoolState) -> (u64, mpsc::UnboundedReceiver<Control>) {
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
    pub(super) fn launch(self: &Arc<Self>, id: u64, rx: mpsc::UnboundedReceiver<Control>) {
        let cfg = self.lock().cfg.clone();
        if cfg.launcher.is_shared() {
            return self.launch_shared(id, rx, &cfg);
        }
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
                tokio::spawn(super::process::run(
                    self.clone(),
                    id,
                    started,
                    client,
                    rx,
                    launcher,
                ));
            }
            Err(e) => {
                self.log.error(&format!("cannot start php-cgi: {e}"));
                let mut t = self.lock();
                t.procs.remove(&id);
                self.start_failed(&mut t, &e);
            }
        }
    }

    /// A shared pool's entry: a connection to the master (started if it
    /// is not running), bound to a child by its task.
    fn launch_shared(
        self: &Arc<Self>,
        id: u64,
        rx: mpsc::UnboundedReceiver<Control>,
        cfg: &super::state::Settings,
    ) {
        let master = cfg.launcher.master(&self.log).and_then(|m| {
            if cfg.launcher.on_demand() {
                cfg.launcher.fork_child()?;
            }
            Ok(m)
        });
        match master {
            Ok((address, master)) => {
                let client = Client::new(address, self.client_config(cfg.pool()));
                if let Some(p) = self.lock().procs.get_mut(&id) {
                    p.client = Some(client.clone());
                }
                tokio::spawn(super::process::run_shared(
                    self.clone(),
                    id,
                    client,
                    master,
                    rx,
                    cfg.launcher.clone(),
                ));
            }
            Err(e) => {
                self.log
                    .error(&format!("cannot start the php-cgi master: {e}"));
                let mut t = self.lock();
                t.procs.remove(&id);
                self.start_failed(&mut t, &e);
            }
        }
    }

    pub(super) fn client_config(&self, config: &PoolConfig) -> ClientConfig {
        // One connection: the process serves one at a time, and the pool
        // hands it one request at a time.
        let mut c = ClientConfig::new(1);
        // Connections are served on threads of their own (http::shards).
        c.follow_thread = crate::http::shards::count() > 1;
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

    /// One manager pass: request timeouts, idle processes to stop, spawns
    /// that waited for a backoff.
    pub(super) fn tick(self: &Arc<Self>) {
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

    pub(super) async fn shutdown(self: &Arc<Self>, grace: Duration) {
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
                // A shared pool's master (and the children it forked
                // again meanwhile) goes last.
                let launcher = self.lock().cfg.launcher.clone();
                launcher.stop_master().await;
                return;
            }
            notified.await;
        }
    }
}
