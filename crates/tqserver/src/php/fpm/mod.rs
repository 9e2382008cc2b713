//! The php-fpm backend: TQServer writes a php-fpm configuration for the
//! worker, checks it with `php-fpm -t`, runs `php-fpm -F` and supervises
//! its master (readiness by FastCGI ping, restart with backoff, SIGUSR2
//! reload with a rewritten configuration, SIGQUIT then SIGKILL on stop).
//! The master's states and transitions: LIFECYCLE.md next to this file.
//!
//! # Layout
//! - `mod.rs`: [`FpmMaster`], what requests, status pages and reloads use.
//! - `config.rs`: the configuration, rendered (pure).
//! - `prepare.rs`: found, written and checked with `-t` ([`Prepared`]).
//! - `events.rs`: php-fpm's log read for process events ([`FpmEvents`]).
//! - `supervise.rs`: the task that runs and restarts the master.

mod config;
mod events;
mod prepare;
mod supervise;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tqserver_fastcgi::client::Request;
use tqserver_fastcgi::{Client, ClientConfig, Params};

pub use config::render;
pub use events::FpmEvents;
pub use prepare::{Files, Prepared};

use super::LifecycleError;
use crate::config::{Supervision, WorkerConfig};
use crate::logging::WorkerLog;
use crate::metrics::pools::{PoolStatus, ProcessStatus};

/// php-fpm's ping path; not ending in `.php`, so no HTTP request maps to it.
pub const PING_PATH: &str = "/__tqserver/ping";
/// php-fpm's status path (the observability work exposes it).
pub const STATUS_PATH: &str = "/__tqserver/status";
/// How long a scrape or the dashboard waits for php-fpm's status page
/// (it queues behind requests when every child is busy).
pub const STATUS_WAIT: Duration = Duration::from_secs(2);

/// Finds php-fpm: `php.binary`, else `php-fpm`, then `php-fpmX.Y` (newest
/// first) on PATH and in /usr/sbin and /usr/local/sbin. Never php-cgi.
pub fn find_binary(worker: &WorkerConfig) -> Result<PathBuf, String> {
    super::find_program(
        worker.php.binary.as_deref(),
        "php-fpm",
        &["/usr/sbin", "/usr/local/sbin"],
        "install it (Debian/Ubuntu: sudo apt-get install php-fpm)",
    )
}

/// What the master is doing (LIFECYCLE.md); published by the supervising
/// task, read by readiness, the dashboard and waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterState {
    /// Spawned (or about to be); not answering its ping yet.
    Starting,
    /// Answers its ping; takes requests.
    Ready,
    /// SIGUSR2 sent: its children finish their requests while new
    /// connections wait in the socket's backlog, then it re-executes
    /// itself with the new configuration. Requests keep going to it.
    Reloading,
    /// It exited or did not get ready; the next start waits out the
    /// backoff.
    Restarting,
    /// Stopped for good (TQServer or this worker is stopping).
    Stopped,
}

impl MasterState {
    /// Whether requests can be sent to it.
    pub fn serves(self) -> bool {
        matches!(self, Self::Ready | Self::Reloading)
    }

    /// A word for the dashboard and log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Reloading => "reloading",
            Self::Restarting => "restarting",
            Self::Stopped => "stopped",
        }
    }
}

/// A running (or restarting) php-fpm master and the client to reach it.
pub struct FpmMaster {
    /// The worker served.
    pub worker: Arc<WorkerConfig>,
    /// Pooled FastCGI client, at most `pm.max_children` connections, so a
    /// request never waits behind an idle connection in php-fpm's queue.
    pub client: Client,
    /// The document roots, held open for script resolution.
    pub roots: super::script::Roots,
    /// The master's state, shared by every generation of a reloaded one.
    state: Arc<watch::Sender<MasterState>>,
    /// Process events counted from php-fpm's log lines.
    pub events: Arc<FpmEvents>,
    /// Where php-fpm listens, for access log lines.
    pub address_text: Arc<str>,
    /// Its configuration, pid file and socket.
    pub files: Files,
    /// To the supervising task: reload php-fpm with a new configuration.
    reloads: mpsc::UnboundedSender<supervise::Reload>,
}

impl FpmMaster {
    /// Whether php-fpm takes requests now.
    pub fn is_ready(&self) -> bool {
        self.state().serves()
    }

    /// What the master is doing now.
    pub fn state(&self) -> MasterState {
        *self.state.borrow()
    }

    /// Starts supervising `prepared`; the task ends after `stop` is
    /// cancelled and php-fpm has been stopped.
    pub fn start(
        prepared: Prepared,
        supervision: Supervision,
        log: WorkerLog,
        stop: CancellationToken,
    ) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let master = Arc::new(Self {
            roots: super::script::Roots::open(&prepared.worker.php),
            worker: prepared.worker.clone(),
            client: client(&prepared, &log),
            state: Arc::new(watch::Sender::new(MasterState::Starting)),
            events: Arc::default(),
            address_text: prepared.files.address.to_string().into(),
            files: prepared.files.clone(),
            reloads: tx,
        });
        let task = tokio::spawn(supervise::run(
            prepared,
            master.clone(),
            rx,
            supervision,
            log,
            stop,
        ));
        (master, task)
    }

    /// The same php-fpm serving `worker`, whose php-fpm configuration is
    /// unchanged (see [`Prepared::again`]): what TQServer reads from the
    /// worker (document root, front controller) is the new one's.
    pub fn with_worker(&self, worker: Arc<WorkerConfig>) -> Arc<Self> {
        Arc::new(Self {
            roots: super::script::Roots::open(&worker.php),
            worker,
            client: self.client.clone(),
            state: self.state.clone(),
            events: self.events.clone(),
            address_text: self.address_text.clone(),
            files: self.files.clone(),
            reloads: self.reloads.clone(),
        })
    }

    /// Reloads this php-fpm with `prepared` (see [`Prepared::again`]) as
    /// php-fpm's own graceful reload does: SIGUSR2 to the master, whose
    /// children finish their requests (up to `process_control_timeout`)
    /// while new connections wait in the socket's backlog; then it
    /// re-executes itself with the new configuration on the same socket.
    /// Returns the master requests use from then on, once php-fpm says
    /// it is ready again and answers its ping.
    pub async fn reload(
        &self,
        prepared: Prepared,
        log: &WorkerLog,
    ) -> Result<Arc<Self>, LifecycleError> {
        let master = Arc::new(Self {
            roots: super::script::Roots::open(&prepared.worker.php),
            worker: prepared.worker.clone(),
            client: client(&prepared, log),
            state: self.state.clone(),
            events: self.events.clone(),
            address_text: self.address_text.clone(),
            files: self.files.clone(),
            reloads: self.reloads.clone(),
        });
        let (done, result) = oneshot::channel();
        self.reloads
            .send(supervise::Reload {
                prepared,
                master: master.clone(),
                done,
            })
            .map_err(|_| LifecycleError::Reload("php-fpm is no longer supervised".into()))?;
        result
            .await
            .map_err(|_| LifecycleError::Reload("php-fpm stopped during the reload".into()))??;
        Ok(master)
    }

    /// php-fpm's own status page (`pm.status_path`) for `query` (`json`,
    /// `full`, `html`, `xml`, `openmetrics`, combined with `&`): its
    /// Content-Type and body, unchanged.
    pub async fn status(&self, query: &str) -> Result<(String, bytes::Bytes), String> {
        let uri = if query.is_empty() {
            STATUS_PATH.to_string()
        } else {
            format!("{STATUS_PATH}?{query}")
        };
        let params = Params::new()
            .with("REQUEST_METHOD", "GET")
            .with("SCRIPT_NAME", STATUS_PATH)
            .with("SCRIPT_FILENAME", STATUS_PATH)
            .with("QUERY_STRING", query.to_string())
            .with("REQUEST_URI", uri)
            .with("SERVER_PROTOCOL", "HTTP/1.1");
        let resp = self
            .client
            .request(Request::new(params))
            .await
            .map_err(|e| format!("php-fpm did not answer its status page: {e}"))?;
        let (head, body, _) = resp
            .collect()
            .await
            .map_err(|e| format!("php-fpm's status page broke off: {e}"))?;
        if head.status != 200 {
            return Err(format!("php-fpm's status page answered {}", head.status));
        }
        let content_type = head
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(b"content-type"))
            .map_or("text/plain".into(), |(_, v)| {
                String::from_utf8_lossy(v).into_owned()
            });
        Ok((content_type, body))
    }

    /// php-fpm's `?json&full` page, what metrics and the dashboard read:
    /// an error at once while php-fpm is not ready, and after
    /// [`STATUS_WAIT`] when it does not answer.
    pub async fn full_status_json(&self) -> Result<bytes::Bytes, String> {
        if !self.is_ready() {
            return Err("php-fpm is not ready".into());
        }
        match tokio::time::timeout(STATUS_WAIT, self.status("json&full")).await {
            Ok(r) => r.map(|(_, body)| body),
            Err(_) => Err(format!(
                "php-fpm's status page did not answer within {STATUS_WAIT:?}"
            )),
        }
    }

    /// The pool's status for metrics and the dashboard, from one fetch of
    /// php-fpm's `?json&full` page plus the process events its log
    /// reported. Down (`up: false`) when php-fpm does not answer.
    pub async fn pool_status(&self) -> PoolStatus {
        use std::sync::atomic::Ordering::Relaxed;
        let e = &self.events;
        let mut s = PoolStatus {
            worker: self.worker.name.clone(),
            backend: "fpm",
            spawned: e.spawned.load(Relaxed),
            recycled: e.recycled.load(Relaxed),
            timed_out: e.timed_out.load(Relaxed),
            crashed: e.crashed.load(Relaxed),
            ..PoolStatus::default()
        };
        let page = self
            .full_status_json()
            .await
            .and_then(|body| serde_json::from_slice::<FpmJson>(&body).map_err(|e| e.to_string()));
        match page {
            Ok(j) => {
                s.up = true;
                let (idle, active, total) =
                    process_counts(j.processes.iter().map(|p| p.state.as_str()));
                s.idle = Some(idle);
                (s.active, s.total) = (active, total);
                s.max_active = j.max_active;
                s.listen_queue = j.listen_queue;
                s.max_listen_queue = j.max_listen_queue;
                s.accepted = j.accepted;
                s.max_children_reached = j.max_children_reached;
                s.slow_requests = j.slow_requests;
                s.processes = j
                    .processes
                    .iter()
                    .map(|p| ProcessStatus {
                        label: format!("pid {}", p.pid),
                        state: p.state.clone(),
                        requests: p.requests,
                        active: None,
                        uptime_seconds: p.start_since,
                    })
                    .collect();
            }
            Err(why) => tracing::debug!(worker = %s.worker, "php-fpm status: {why}"),
        }
        s
    }

    /// Waits until php-fpm takes requests, at most `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        crate::supervise::ready::wait_for(&mut self.state.subscribe(), timeout, |s| s.serves())
            .await
    }
}

/// php-fpm's `?json&full` status fields TQServer reads (php-fpm's own
/// names).
#[derive(serde::Deserialize)]
struct FpmJson {
    #[serde(rename = "accepted conn")]
    accepted: u64,
    #[serde(rename = "listen queue")]
    listen_queue: u64,
    #[serde(rename = "max listen queue")]
    max_listen_queue: u64,
    #[serde(rename = "max active processes")]
    max_active: u64,
    #[serde(rename = "max children reached")]
    max_children_reached: u64,
    #[serde(rename = "slow requests")]
    slow_requests: u64,
    #[serde(default)]
    processes: Vec<FpmProcess>,
}

#[derive(serde::Deserialize)]
struct FpmProcess {
    pid: u64,
    state: String,
    #[serde(default)]
    requests: u64,
    #[serde(rename = "start since", default)]
    start_since: u64,
}

/// Idle, active and total processes from php-fpm's per-process list.
/// php-fpm's own `active processes` counter drifts upward when its
/// clients keep FastCGI connections open, as TQServer's pooled client
/// does (it counted 60 active of 2 processes in a test); the per-process
/// states do not. A process `Reading headers` is waiting on a kept-alive
/// connection of TQServer's for the next request: idle, from TQServer's
/// side.
fn process_counts<'a>(states: impl Iterator<Item = &'a str>) -> (u64, u64, u64) {
    let (mut idle, mut total) = (0, 0);
    for s in states {
        total += 1;
        if s == "Idle" || s == "Reading headers" {
            idle += 1;
        }
    }
    (idle, total - idle, total)
}

/// The pooled client to `prepared`'s php-fpm: at most `pm.max_children`
/// connections.
fn client(prepared: &Prepared, log: &WorkerLog) -> Client {
    let pool = &prepared.worker.php.pool;
    let mut config = ClientConfig::new(pool.max_children as usize);
    // Connections are served on threads of their own (http::shards).
    config.follow_thread = crate::http::shards::count() > 1;
    config.read_timeout = if pool.request_timeout.is_zero() {
        Duration::from_secs(86_400)
    } else {
        pool.request_timeout
    };
    // Below php-fpm's request_terminate_timeout, which also counts the
    // time a process waits on an idle kept-alive connection.
    config.idle_timeout = Duration::from_secs(30).min(config.read_timeout);
    let l = log.clone();
    config.on_stderr = Some(Arc::new(move |line: &[u8]| l.php_stderr(line)));
    Client::new(prepared.files.address.clone(), config)
}

/// One FastCGI ping: whether php-fpm answered `pong`.
async fn ping(client: &Client) -> bool {
    let params = Params::new()
        .with("REQUEST_METHOD", "GET")
        .with("SCRIPT_NAME", PING_PATH)
        .with("SCRIPT_FILENAME", PING_PATH)
        .with("REQUEST_URI", PING_PATH)
        .with("SERVER_PROTOCOL", "HTTP/1.1");
    match client.request(Request::new(params)).await {
        Ok(resp) => match resp.collect().await {
            Ok((head, body, _)) => head.status == 200 && &body[..] == b"pong",
            Err(_) => false,
        },
        Err(_) => false,
    }
}
