//! One running instance of a native worker: a process on its own port,
//! its output in the worker's log, its readiness and liveness checks over
//! HTTP, and its stop (SIGTERM, grace, SIGKILL of the process group).

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::process::Command;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::logging::{WorkerLog, forward_lines};
use crate::process;

/// Lines of output kept per worker for error pages.
const TAIL_LINES: usize = 40;

/// An instance's state; see LIFECYCLE.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Started, not yet answering its health check.
    Starting = 0,
    /// Gets traffic.
    Ready = 1,
    /// Replaced: finishes the requests it has, gets no new ones.
    Draining = 2,
    /// Exited and reaped.
    Stopped = 3,
}

impl State {
    /// Its name, for the dashboard.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "Starting",
            Self::Ready => "Ready",
            Self::Draining => "Draining",
            Self::Stopped => "Stopped",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Starting,
            1 => Self::Ready,
            2 => Self::Draining,
            _ => Self::Stopped,
        }
    }
}

/// One process of a native worker.
#[derive(Debug)]
pub struct Instance {
    /// Unique within the server.
    pub id: u64,
    /// The build it runs.
    pub version: u64,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// Its pid.
    pub pid: u32,
    /// When it started.
    pub started: Instant,
    state: AtomicU8,
    outstanding: AtomicUsize,
    served: AtomicU64,
    /// When a request last finished, in ms after `started`.
    last_done_ms: AtomicU64,
    health_failures: AtomicU32,
    stop_tx: Mutex<Option<oneshot::Sender<Duration>>>,
    gone: CancellationToken,
    /// Woken when the last request of a draining instance leaves.
    drained: tokio::sync::Notify,
    /// Kept-alive connections to it, idle.
    pub idle: Arc<super::pool::IdlePool>,
}

/// What every instance of one worker shares.
pub struct Spawner {
    /// The worker's log.
    pub log: WorkerLog,
    /// Environment for every instance (`WORKER_*`, `env:`), without the port.
    pub env: Vec<(String, String)>,
    /// The worker folder: every instance's working directory.
    pub dir: std::path::PathBuf,
    /// The last lines the worker's instances printed.
    pub tail: Arc<Mutex<VecDeque<String>>>,
    /// `logging.output_file`: each instance's output also goes to its own
    /// file, `{port}` its port.
    pub output_file: Option<String>,
}

impl Spawner {
    /// Starts `argv` on `port`; `on_exit` hears how it exited ("exit
    /// status: 1", "signal: 9 (SIGKILL)") once it is reaped.
    pub fn spawn(
        &self,
        argv: &[String],
        id: u64,
        version: u64,
        port: u16,
        on_exit: impl FnOnce(String) + Send + 'static,
    ) -> std::io::Result<Arc<Instance>> {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .current_dir(&self.dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("WORKER_PORT", port.to_string())
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let output = match &self.output_file {
            Some(t) => {
                let path = t.replace("{port}", &port.to_string());
                match crate::access::AccessFile::open(&path, self.log.name()) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        self.log.error(&format!(
                            "cannot open logging.output_file {path}: {e}; this instance's output goes to the worker's log only"
                        ));
                        None
                    }
                }
            }
            None => None,
        };
        let mut child = process::spawn_tied(&mut cmd, Signal::SIGKILL)?;
        let pid = child.id().unwrap_or(0);
        for out in [
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            child.stderr.take().map(|o| Box::new(o) as _),
        ]
        .into_iter()
        .flatten()
        {
            let log = self.log.clone();
            let tail = self.tail.clone();
            let file = output.clone();
            forward_lines(out, move |line| {
                log.info(line);
                if let Some(f) = &file {
                    f.append(|b| b.extend_from_slice(line.as_bytes()));
                }
                let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                if t.len() == TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(line.to_string());
            });
        }
        let (stop_tx, stop_rx) = oneshot::channel::<Duration>();
        let inst = Arc::new(Instance {
            id,
            version,
            port,
            pid,
            started: Instant::now(),
            state: AtomicU8::new(State::Starting as u8),
            outstanding: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            last_done_ms: AtomicU64::new(0),
            health_failures: AtomicU32::new(0),
            stop_tx: Mutex::new(Some(stop_tx)),
            gone: CancellationToken::new(),
            drained: tokio::sync::Notify::new(),
            idle: Default::default(),
        });
        let me = inst.clone();
        tokio::spawn(async move {
            let status = tokio::select! {
                s = child.wait() => s,
                grace = stop_rx => {
                    let grace = grace.unwrap_or(Duration::ZERO);
                    match process::stop(&mut child, Signal::SIGTERM, grace).await.status {
                        Some(s) => s,
                        None => child.wait().await,
                    }
                }
            };
            // Children it left in its group go with it.
            drop(child);
            me.state.store(State::Stopped as u8, Ordering::SeqCst);
            me.gone.cancel();
            on_exit(process::describe_exit(&status));
        });
        Ok(inst)
    }

    /// The last lines the worker printed, for an error page.
    pub fn tail(&self) -> String {
        let t = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        t.iter().map(|l| format!("{l}\n")).collect()
    }
}

impl Instance {
    /// Its state now.
    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::SeqCst))
    }

    /// Starting → Ready (a no-op in any other state).
    pub fn set_ready(&self) {
        let _ = self.state.compare_exchange(
            State::Starting as u8,
            State::Ready as u8,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    /// Requests in progress (including responses still streaming).
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::SeqCst)
    }

    /// Requests it has been given.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Counts a request in (returning how many it was given so far), unless
    /// the instance stopped taking them; the caller must call
    /// [`Instance::leave`] after a `Some`. Entering and
    /// [`Instance::drain`] use SeqCst on both sides, so a request either
    /// is seen by the drain or sees the drain, never neither.
    pub fn enter(&self) -> Option<u64> {
        self.outstanding.fetch_add(1, Ordering::SeqCst);
        if self.state() != State::Ready {
            self.outstanding.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(self.served.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Counts a request out.
    pub fn leave(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_done_ms.store(ms, Ordering::Relaxed);
        if self.outstanding.fetch_sub(1, Ordering::SeqCst) == 1 && self.state() == State::Draining {
            self.drained.notify_waiters();
        }
    }

    /// How long it has had no request in flight (zero while it has some).
    pub fn idle_for(&self) -> Duration {
        if self.outstanding() > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_done_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// Stops giving it requests, waits (up to `grace`) for those it has,
    /// then stops it within `grace` more.
    pub async fn drain(&self, grace: Duration) {
        let _ = self.state.compare_exchange(
            State::Ready as u8,
            State::Draining as u8,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        let _ = self.state.compare_exchange(
            State::Starting as u8,
            State::Draining as u8,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        // Woken by the last request's leave (or the exit); the check comes
        // after registering, so a leave in between is not missed.
        let finished = async {
            loop {
                let notified = self.drained.notified();
                if self.outstanding() == 0 {
                    return;
                }
                tokio::select! {
                    () = notified => {}
                    () = self.gone.cancelled() => return,
                }
            }
        };
        let _ = tokio::time::timeout(grace, finished).await;
        self.stop(grace).await;
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; returns once reaped.
    pub async fn stop(&self, grace: Duration) {
        self.idle.clear();
        let tx = self
            .stop_tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(tx) = tx {
            let _ = tx.send(grace);
        }
        self.gone.cancelled().await;
    }

    /// Has it exited?
    pub fn is_gone(&self) -> bool {
        self.gone.is_cancelled()
    }

    /// Waits until it answers `path` with 200 (→ Ready, true), exits, or
    /// `wait` passes (false); each probe waits `probe_timeout` at most.
    pub async fn wait_ready(&self, path: &str, wait: Duration, probe_timeout: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(10);
        loop {
            if self.is_gone() {
                return false;
            }
            if probe(self.port, path, probe_timeout).await.is_ok() {
                self.set_ready();
                return self.state() == State::Ready;
            }
            if Instant::now() + pause > deadline {
                return false;
            }
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.gone.cancelled() => return false,
            }
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// One liveness check; returns the failures in a row so far.
    pub async fn check(&self, path: &str, timeout: Duration) -> Result<(), (u32, String)> {
        match probe(self.port, path, timeout).await {
            Ok(()) => {
                self.health_failures.store(0, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err((self.health_failures.fetch_add(1, Ordering::Relaxed) + 1, e)),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }
}

/// GET `path` on 127.0.0.1:`port`; Ok on a 200.
pub async fn probe(port: u16, path: &str, timeout: Duration) -> Result<(), String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match tokio::time::timeout(timeout, super::conn::get_status(addr, path)).await {
        Ok(Ok(status)) if status == http::StatusCode::OK => Ok(()),
        Ok(Ok(status)) => Err(format!("answered {status}")),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}
