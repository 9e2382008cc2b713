//! The php-fpm backend: find php-fpm, write its configuration into the
//! private runtime directory, validate it with `php-fpm -t`, run
//! `php-fpm -F` and supervise it (readiness by FastCGI ping, restart with
//! backoff, SIGUSR2 reload with a rewritten configuration, SIGQUIT then
//! SIGKILL on stop).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::process::Command;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tqserver_fastcgi::client::Request;
use tqserver_fastcgi::{Address, Client, ClientConfig, Params};

use crate::config::{Listen, Manager, Mode, Supervision, Worker};
use crate::logging::{WorkerLog, forward_lines};
use crate::ports::Ports;
use crate::process;

/// php-fpm's ping path; not ending in `.php`, so no HTTP request maps to it.
pub const PING_PATH: &str = "/__tqserver/ping";
/// php-fpm's status path (the observability work exposes it).
pub const STATUS_PATH: &str = "/__tqserver/status";
/// How long a scrape or the dashboard waits for php-fpm's status page
/// (it queues behind requests when every child is busy).
pub const STATUS_WAIT: Duration = Duration::from_secs(2);
/// Longest delay between restarts of a php-fpm that keeps exiting.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);
/// A php-fpm that ran this long without failing resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// Finds php-fpm: `php.binary`, else `php-fpm`, then `php-fpmX.Y` (newest
/// first) on PATH and in /usr/sbin and /usr/local/sbin. Never php-cgi.
pub fn find_binary(worker: &Worker) -> Result<PathBuf, String> {
    super::find_program(
        worker.php.binary.as_deref(),
        "php-fpm",
        &["/usr/sbin", "/usr/local/sbin"],
        "install it (Debian/Ubuntu: sudo apt-get install php-fpm)",
    )
}

/// A value as php-fpm's INI file takes it: quoted when it is not a plain
/// token (its parser treats `;` as a comment and `$`, `"` and braces
/// specially). A value that could end the line or the quoted string (CR,
/// LF, NUL, `"`, a trailing `\\`) is refused: written as it is, it would
/// be a line of configuration of its own. The configuration refuses such
/// values first, naming file, line and key; this is the last guard, for
/// what comes from elsewhere (the environment's PATH, the temp folder).
fn ini_value(what: &str, v: &str) -> Result<String, String> {
    if v.contains(['\n', '\r', '\0', '"']) || v.ends_with('\\') {
        return Err(format!(
            "{what} ({v:?}) cannot be written into php-fpm's configuration: it has a line break, NUL, a double quote or a trailing backslash"
        ));
    }
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || " _.~&|^!()/:,+-@*%".contains(c));
    Ok(if plain {
        v.to_string()
    } else {
        format!("\"{v}\"")
    })
}

/// Renders the php-fpm configuration of one worker; every value that is
/// not TQServer's own constant goes through [`ini_value`].
pub fn render(
    worker: &Worker,
    mode: Mode,
    listen: &str,
    pid: &Path,
    grace: Duration,
    root: bool,
) -> Result<String, String> {
    let p = &worker.php.pool;
    let q = ini_value;
    let mut c = String::new();
    let _ = writeln!(
        c,
        "; Written by TQServer for worker {} from {}.\n; Rewritten on every start: change worker.yaml, not this file.\n",
        worker.name,
        worker.file.display()
    );
    let _ = writeln!(c, "[global]");
    let _ = writeln!(c, "pid = {}", q("the pid file", &pid.to_string_lossy())?);
    // TQServer reads php-fpm's stderr into its own log.
    let _ = writeln!(c, "error_log = /proc/self/fd/2");
    // notice, not debug: at debug php-fpm's master logs a line per event
    // ("event module triggered"), most of one per request, which cost
    // about 10% of throughput in bench/php.sh.
    let _ = writeln!(c, "log_level = notice");
    let _ = writeln!(c, "daemonize = no");
    let _ = writeln!(c, "process_control_timeout = {}s\n", grace.as_secs().max(1));
    let _ = writeln!(c, "[{}]", q("the worker name", &worker.name)?);
    let _ = writeln!(c, "listen = {}", q("php.pool.listen_address", listen)?);
    if listen.starts_with('/') {
        let _ = writeln!(c, "listen.mode = 0600");
    } else {
        let ip = listen.rsplit_once(':').map_or(listen, |(ip, _)| ip);
        let ip = ip.trim_matches(['[', ']']);
        let allowed = if ip == "127.0.0.1" || ip.is_empty() || ip == "0.0.0.0" {
            "127.0.0.1".to_string()
        } else {
            format!("127.0.0.1,{ip}")
        };
        let _ = writeln!(c, "listen.allowed_clients = {allowed}");
    }
    if root {
        // Still root: server.user is not set (TQServer drops to it before
        // any child starts), so the pool runs as root too, which php-fpm
        // allows only with -R.
        let _ = writeln!(c, "user = root\ngroup = root");
    }
    let _ = writeln!(c, "pm = {}", p.manager.as_str());
    let _ = writeln!(c, "pm.max_children = {}", p.max_children);
    match p.manager {
        Manager::Dynamic => {
            let _ = writeln!(c, "pm.start_servers = {}", p.start);
            let _ = writeln!(c, "pm.min_spare_servers = {}", p.min_spare);
            let _ = writeln!(c, "pm.max_spare_servers = {}", p.max_spare);
        }
        Manager::Ondemand => {
            let _ = writeln!(
                c,
                "pm.process_idle_timeout = {}s",
                p.idle_timeout.as_secs().max(1)
            );
        }
        Manager::Static => {}
    }
    let _ = writeln!(c, "pm.max_requests = {}", p.max_requests);
    // TQServer answers 504 at request_timeout; php-fpm ends the script a
    // second later so the 504 is what the client sees.
    let terminate = if p.request_timeout.is_zero() {
        0
    } else {
        p.request_timeout.as_secs() + 1
    };
    let _ = writeln!(c, "request_terminate_timeout = {terminate}s");
    if let Some(t) = worker.logging.slow_threshold {
        // php-fpm writes the slow script's PHP backtrace to its stderr,
        // which TQServer reads into the worker's log next to its own
        // slow-request line. php-fpm counts whole seconds.
        let secs = t.as_secs_f64().ceil().max(1.0) as u64;
        let _ = writeln!(c, "request_slowlog_timeout = {secs}s");
        let _ = writeln!(c, "slowlog = /proc/self/fd/2");
    }
    let _ = writeln!(c, "pm.status_path = {STATUS_PATH}");
    let _ = writeln!(c, "ping.path = {PING_PATH}");
    let _ = writeln!(c, "ping.response = pong");
    let _ = writeln!(c, "security.limit_extensions = .php");
    let _ = writeln!(c, "catch_workers_output = yes");
    let _ = writeln!(c, "decorate_workers_output = no");
    let _ = writeln!(c, "clear_env = yes");
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    let _ = writeln!(c, "env[PATH] = {}", q("PATH", &path)?);
    let _ = writeln!(c, "env[WORKER_POOL] = {}", q("the pool", &p.describe())?);
    for (k, v) in [
        ("WORKER_NAME", worker.name.as_str()),
        ("WORKER_PATH", worker.route.as_str()),
        ("WORKER_ROUTE", worker.route.as_str()),
        ("WORKER_TYPE", "php"),
        ("WORKER_MODE", mode.as_str()),
    ] {
        let _ = writeln!(c, "env[{k}] = {}", q(k, v)?);
    }
    let mut set = std::collections::HashSet::new();
    for (k, v) in &worker.php.settings {
        set.insert(k.as_str());
        if !k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Err(format!("php.settings key {k:?} is not a php.ini name"));
        }
        let _ = writeln!(c, "php_admin_value[{k}] = {}", q(k, v)?);
    }
    if mode == Mode::Dev && !set.contains("opcache.revalidate_freq") {
        // Dev mode: an edited .php file is picked up on the next request.
        let _ = writeln!(c, "php_admin_value[opcache.revalidate_freq] = 0");
    }
    Ok(c)
}

/// A worker's php-fpm, configured and validated, not yet running.
pub struct Prepared {
    worker: Arc<Worker>,
    binary: PathBuf,
    files: Files,
    root: bool,
}

/// Where a php-fpm's configuration, pid file and socket are: kept by
/// its [`Backend`], so a reload rewrites the same configuration file.
#[derive(Debug, Clone)]
pub struct Files {
    conf: PathBuf,
    pid: PathBuf,
    listen: String,
    address: Address,
}

impl Prepared {
    /// Finds php-fpm, picks the listen address, writes the configuration
    /// into `runtime_dir` and checks it with `php-fpm -t`. `generation`
    /// tells apart the files (socket, pid, config) of a php-fpm that
    /// replaces another (a worker.yaml edit) while the old one drains.
    pub async fn new(
        worker: Arc<Worker>,
        mode: Mode,
        runtime_dir: &Path,
        ports: &Ports,
        supervision: &Supervision,
        generation: u32,
    ) -> Result<Self, String> {
        let stem = if generation == 0 {
            worker.name.clone()
        } else {
            format!("{}.{generation}", worker.name)
        };
        let binary = find_binary(&worker).map_err(|e| format!("worker {}: {e}", worker.name))?;
        let (address, listen) = match &worker.php.pool.listen {
            Listen::RuntimeSocket => {
                let p = runtime_dir.join(format!("{stem}.sock"));
                (Address::Unix(p.clone()), p.display().to_string())
            }
            Listen::Unix(p) => (Address::Unix(p.clone()), p.display().to_string()),
            Listen::TcpFromRange(ip) => {
                let port = ports.acquire(*ip).ok_or_else(|| {
                    format!(
                        "worker {}: no free port in {}-{}",
                        worker.name,
                        ports.range().0,
                        ports.range().1
                    )
                })?;
                let a = std::net::SocketAddr::new(*ip, port);
                (Address::from(a), a.to_string())
            }
            Listen::Tcp(a) => (Address::from(*a), a.to_string()),
        };
        let root = nix::unistd::geteuid().is_root();
        let pid = runtime_dir.join(format!("php-fpm-{stem}.pid"));
        let conf = runtime_dir.join(format!("php-fpm-{stem}.conf"));
        let text = render(
            &worker,
            mode,
            &listen,
            &pid,
            supervision.shutdown_grace,
            root,
        )
        .map_err(|e| format!("worker {}: {e}", worker.name))?;
        crate::runtime::write_private(&conf, text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
        let prepared = Self {
            worker,
            binary,
            files: Files {
                conf,
                pid,
                listen,
                address,
            },
            root,
        };
        prepared.test().await?;
        Ok(prepared)
    }

    /// The configuration of `worker` for the php-fpm already running at
    /// `running`'s files, for its SIGUSR2 reload: written beside, checked
    /// with `php-fpm -t`, then moved over the running configuration
    /// (which php-fpm reads again as it re-executes itself). A refused
    /// configuration leaves the running one untouched. `None`: the
    /// configuration is the one php-fpm runs with (the edit was about
    /// TQServer's side only, say its access log), so there is nothing to
    /// reload — and no reason to lose opcache.
    pub async fn again(
        worker: Arc<Worker>,
        mode: Mode,
        running: &Files,
        supervision: &Supervision,
    ) -> Result<Option<Self>, String> {
        let binary = find_binary(&worker).map_err(|e| format!("worker {}: {e}", worker.name))?;
        let root = nix::unistd::geteuid().is_root();
        let text = render(
            &worker,
            mode,
            &running.listen,
            &running.pid,
            supervision.shutdown_grace,
            root,
        )
        .map_err(|e| format!("worker {}: {e}", worker.name))?;
        if std::fs::read_to_string(&running.conf).is_ok_and(|now| now == text) {
            return Ok(None);
        }
        let mut files = running.clone();
        files.conf = running.conf.with_extension("conf.next");
        crate::runtime::write_private(&files.conf, text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", files.conf.display()))?;
        let mut prepared = Self {
            worker,
            binary,
            files,
            root,
        };
        if let Err(e) = prepared.test().await {
            let _ = std::fs::remove_file(&prepared.files.conf);
            return Err(e);
        }
        std::fs::rename(&prepared.files.conf, &running.conf)
            .map_err(|e| format!("cannot replace {}: {e}", running.conf.display()))?;
        prepared.files.conf = running.conf.clone();
        Ok(Some(prepared))
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("-y").arg(&self.files.conf);
        if let Some(ini) = &self.worker.php.config_file {
            cmd.arg("-c").arg(ini);
        }
        if self.root {
            cmd.arg("-R");
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// `php-fpm -t`: the configuration is checked before anything runs,
    /// and php-fpm's own message is shown when it is refused.
    async fn test(&self) -> Result<(), String> {
        let out = self.command().arg("-t").output().await.map_err(|e| {
            format!(
                "worker {}: cannot run {}: {e}",
                self.worker.name,
                self.binary.display()
            )
        })?;
        if out.status.success() {
            return Ok(());
        }
        let mut msg = String::from_utf8_lossy(&out.stderr).into_owned();
        msg.push_str(&String::from_utf8_lossy(&out.stdout));
        Err(format!(
            "worker {}: php-fpm refused the configuration TQServer generated ({}): {}",
            self.worker.name,
            self.files.conf.display(),
            msg.trim()
        ))
    }

    /// Where requests go.
    pub fn address(&self) -> &Address {
        &self.files.address
    }
}

/// A running (or restarting) php-fpm and the client to reach it.
pub struct Backend {
    /// The worker served.
    pub worker: Arc<Worker>,
    /// Pooled FastCGI client, at most `pm.max_children` connections, so a
    /// request never waits behind an idle connection in php-fpm's queue.
    pub client: Client,
    /// The document root, held open for script resolution.
    pub doc_root: super::script::DocRoot,
    ready: Arc<AtomicBool>,
    /// Process events counted from php-fpm's log lines.
    pub events: Arc<FpmEvents>,
    /// Where php-fpm listens, for access log lines.
    pub address_text: Arc<str>,
    /// Its configuration, pid file and socket.
    pub files: Files,
    /// To the supervising task: reload php-fpm with a new configuration.
    reloads: mpsc::UnboundedSender<Reload>,
}

/// A SIGUSR2 reload asked of the supervising task.
struct Reload {
    prepared: Prepared,
    /// What requests use once php-fpm has reloaded.
    backend: Arc<Backend>,
    done: oneshot::Sender<Result<(), String>>,
}

/// What php-fpm's log says happened to its processes; its status page
/// does not count these. Read from its `notice`-level lines: php-fpm
/// logs `child N started` at notice for the children it starts while
/// running (replacements, dynamic spawns) but not for those it starts
/// with, which [`FpmEvents::started`] adds from the pool's settings.
#[derive(Debug, Default)]
pub struct FpmEvents {
    /// `child N started`.
    pub spawned: std::sync::atomic::AtomicU64,
    /// `child N exited with code 0` (`pm.max_requests` reached).
    pub recycled: std::sync::atomic::AtomicU64,
    /// `execution timed out ... terminating` (`request_terminate_timeout`).
    pub timed_out: std::sync::atomic::AtomicU64,
    /// Exits with another code, or on a signal other than the SIGQUIT /
    /// SIGTERM php-fpm itself sends to idle and timed-out processes.
    pub crashed: std::sync::atomic::AtomicU64,
    /// `ready to handle connections`: the master (re)started, at start
    /// and after each SIGUSR2 reload.
    pub ready: std::sync::atomic::AtomicU64,
}

impl FpmEvents {
    /// php-fpm (re)started with `pool`: the children it starts at once
    /// (`pm.max_children` static, `pm.start_servers` dynamic, none
    /// ondemand), which it does not log at notice level.
    pub fn started(&self, pool: &crate::config::Pool) {
        let n = match pool.manager {
            Manager::Static => pool.max_children,
            Manager::Dynamic => pool.start,
            Manager::Ondemand => 0,
        };
        self.spawned
            .fetch_add(u64::from(n), std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts what one line of php-fpm's log reports.
    pub fn observe(&self, line: &str) {
        use std::sync::atomic::Ordering::Relaxed;
        if line.ends_with("ready to handle connections") {
            self.ready.fetch_add(1, Relaxed);
            return;
        }
        let Some(rest) = line.split_once("] child ").map(|(_, r)| r) else {
            return;
        };
        if rest.ends_with(" started") {
            self.spawned.fetch_add(1, Relaxed);
        } else if rest.contains("execution timed out") {
            self.timed_out.fetch_add(1, Relaxed);
        } else if rest.contains(" exited with code 0 ") {
            self.recycled.fetch_add(1, Relaxed);
        } else if rest.contains(" exited with code ") {
            self.crashed.fetch_add(1, Relaxed);
        } else if let Some(sig) = rest.split_once(" exited on signal ").map(|(_, s)| s) {
            let n = sig.split(' ').next().unwrap_or_default();
            if n != "3" && n != "15" {
                self.crashed.fetch_add(1, Relaxed);
            }
        }
    }
}

impl Backend {
    /// Whether php-fpm answered its ping since it last started.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
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
        let backend = Arc::new(Self {
            doc_root: super::script::DocRoot::open(&prepared.worker.php.document_root),
            worker: prepared.worker.clone(),
            client: client(&prepared, &log),
            ready: Arc::new(AtomicBool::new(false)),
            events: Arc::default(),
            address_text: prepared.files.address.to_string().into(),
            files: prepared.files.clone(),
            reloads: tx,
        });
        let task = tokio::spawn(supervise(
            prepared,
            backend.clone(),
            rx,
            supervision,
            log,
            stop,
        ));
        (backend, task)
    }

    /// The same php-fpm serving `worker`, whose php-fpm configuration is
    /// unchanged (see [`Prepared::again`]): what TQServer reads from the
    /// worker (document root, front controller) is the new one's.
    pub fn with_worker(&self, worker: Arc<Worker>) -> Arc<Self> {
        Arc::new(Self {
            doc_root: super::script::DocRoot::open(&worker.php.document_root),
            worker,
            client: self.client.clone(),
            ready: self.ready.clone(),
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
    /// Returns the backend requests use from then on, once php-fpm says
    /// it is ready again and answers its ping.
    pub async fn reload(&self, prepared: Prepared, log: &WorkerLog) -> Result<Arc<Self>, String> {
        let backend = Arc::new(Self {
            doc_root: super::script::DocRoot::open(&prepared.worker.php.document_root),
            worker: prepared.worker.clone(),
            client: client(&prepared, log),
            ready: self.ready.clone(),
            events: self.events.clone(),
            address_text: self.address_text.clone(),
            files: self.files.clone(),
            reloads: self.reloads.clone(),
        });
        let (done, result) = oneshot::channel();
        self.reloads
            .send(Reload {
                prepared,
                backend: backend.clone(),
                done,
            })
            .map_err(|_| "php-fpm is no longer supervised".to_string())?;
        result
            .await
            .map_err(|_| "php-fpm stopped during the reload".to_string())??;
        Ok(backend)
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

    /// Waits until php-fpm is ready, at most `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self.is_ready() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.is_ready()
    }
}

/// The pooled client to `prepared`'s php-fpm: at most `pm.max_children`
/// connections.
fn client(prepared: &Prepared, log: &WorkerLog) -> Client {
    let pool = &prepared.worker.php.pool;
    let mut config = ClientConfig::new(pool.max_children as usize);
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

/// A SIGUSR2 reload waiting for php-fpm to come back.
struct InProgress {
    done: oneshot::Sender<Result<(), String>>,
    /// `FpmEvents::ready` before the signal.
    before: u64,
    until: Instant,
    /// The backend requests used before; its idle connections go once
    /// php-fpm is back.
    old: Arc<Backend>,
}

/// Whether php-fpm came back from a reload before its deadline: its
/// children finish their requests, then the master starts again; ready
/// once it says so and answers a ping.
async fn reloaded(backend: &Backend, r: Option<&InProgress>) -> bool {
    let Some(r) = r else {
        return false;
    };
    while Instant::now() < r.until {
        if backend.events.ready.load(Ordering::Acquire) > r.before && ping(&backend.client).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

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

async fn supervise(
    mut prepared: Prepared,
    mut backend: Arc<Backend>,
    mut reloads: mpsc::UnboundedReceiver<Reload>,
    supervision: Supervision,
    log: WorkerLog,
    stop: CancellationToken,
) {
    let mut failures: u32 = 0;
    loop {
        let started = Instant::now();
        let mut cmd = prepared.command();
        cmd.arg("-F").stdout(Stdio::piped()).stderr(Stdio::piped());
        // PDEATHSIG: php-fpm's master gets SIGTERM if TQServer dies (even
        // by SIGKILL) and takes its children down with it.
        let spawned = process::spawn_tied(&mut cmd, Signal::SIGTERM);
        let outcome: Result<(), String> = match spawned {
            Err(e) => Err(format!("cannot start {}: {e}", prepared.binary.display())),
            // `child` is dropped at the end of this arm, once reaped: what
            // is left of its process group goes then (process::Tied).
            Ok(mut child) => {
                backend.events.started(&prepared.worker.php.pool);
                if let Some(o) = child.stdout.take() {
                    let l = log.clone();
                    forward_lines(o, move |line| l.fpm_line(line));
                }
                if let Some(e) = child.stderr.take() {
                    let (l, events) = (log.clone(), backend.events.clone());
                    forward_lines(e, move |line| {
                        events.observe(line);
                        l.fpm_line(line);
                    });
                }
                let pid = child.id().unwrap_or(0);
                let deadline = Instant::now() + supervision.health_check_wait;
                let became_ready = async {
                    while Instant::now() < deadline {
                        if ping(&backend.client).await {
                            return true;
                        }
                        tokio::time::sleep(Duration::from_millis(25)).await;
                    }
                    false
                };
                let ready = tokio::select! {
                    r = became_ready => r,
                    status = child.wait() => {
                        log.error(&format!("php-fpm (pid {pid}) exited while starting: {}", process::describe_exit(&status)));
                        false
                    }
                    () = stop.cancelled() => {
                        process::stop(&mut child, Signal::SIGQUIT, supervision.shutdown_grace).await;
                        return;
                    }
                };
                if !ready {
                    if child.try_wait().ok().flatten().is_none() {
                        log.error(&format!(
                            "php-fpm (pid {pid}) did not answer its ping within {:?}",
                            supervision.health_check_wait
                        ));
                        process::stop(&mut child, Signal::SIGQUIT, Duration::from_millis(500))
                            .await;
                    }
                    Err("not ready".to_string())
                } else {
                    backend.ready.store(true, Ordering::Release);
                    log.info(&format!(
                        "php-fpm ready (pid {pid}, {})",
                        prepared.address()
                    ));
                    // A SIGUSR2 reload under way: who waits for it, php-fpm's
                    // "ready" count before it, its deadline, and the backend
                    // it replaces.
                    let mut reloading: Option<InProgress> = None;
                    loop {
                        tokio::select! {
                            status = child.wait() => {
                                backend.ready.store(false, Ordering::Release);
                                backend.client.close_idle();
                                let during = if reloading.is_some() { " while reloading" } else { "" };
                                let why = format!("php-fpm (pid {pid}) exited{during}: {}", process::describe_exit(&status));
                                if let Some(r) = reloading.take() {
                                    let _ = r.done.send(Err(why.clone()));
                                }
                                break Err(why);
                            }
                            () = stop.cancelled() => {
                                backend.ready.store(false, Ordering::Release);
                                backend.client.close_idle();
                                if let Some(r) = reloading.take() {
                                    let _ = r.done.send(Err("stopping".into()));
                                }
                                process::stop(&mut child, Signal::SIGQUIT, supervision.shutdown_grace).await;
                                log.info(&format!("php-fpm (pid {pid}) stopped"));
                                return;
                            }
                            Some(r) = reloads.recv(), if reloading.is_none() => {
                                // From here on, a restart uses the new configuration too.
                                prepared = r.prepared;
                                let old = std::mem::replace(&mut backend, r.backend);
                                log.info(&format!(
                                    "reloading php-fpm (pid {pid}) with SIGUSR2: {}",
                                    prepared.worker.php.pool.describe()
                                ));
                                reloading = Some(InProgress {
                                    done: r.done,
                                    before: backend.events.ready.load(Ordering::Acquire),
                                    until: Instant::now() + supervision.shutdown_grace + supervision.health_check_wait,
                                    old,
                                });
                                let _ = nix::sys::signal::kill(
                                    nix::unistd::Pid::from_raw(pid as i32),
                                    Signal::SIGUSR2,
                                );
                            }
                            ok = reloaded(&backend, reloading.as_ref()), if reloading.is_some() => {
                                let Some(r) = reloading.take() else { continue };
                                r.old.client.close_idle();
                                if ok {
                                    // Its new children, not logged at notice.
                                    backend.events.started(&prepared.worker.php.pool);
                                }
                                let _ = r.done.send(if ok {
                                    Ok(())
                                } else {
                                    Err(format!(
                                        "php-fpm did not report ready within {:?} after SIGUSR2; it keeps running and is supervised",
                                        supervision.shutdown_grace + supervision.health_check_wait
                                    ))
                                });
                            }
                        }
                    }
                }
            }
        };
        if let Err(why) = outcome {
            if started.elapsed() >= STABLE_AFTER {
                failures = 0;
            }
            let delay = supervision
                .restart_delay
                .saturating_mul(1 << failures.min(16))
                .min(MAX_RESTART_DELAY);
            failures += 1;
            if why != "not ready" {
                log.error(&format!("{why}; restarting in {delay:?}"));
            } else {
                log.error(&format!("restarting php-fpm in {delay:?}"));
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn process_events_from_php_fpm_log_lines() {
        use std::sync::atomic::Ordering::Relaxed;
        let e = FpmEvents::default();
        for line in [
            "[26-Nov-2026 03:02:09] NOTICE: [pool blog] child 12 started",
            "[26-Nov-2026 03:02:09] NOTICE: [pool blog] child 12 exited with code 0 after 5.000000 seconds from start",
            "[26-Nov-2026 03:02:09] WARNING: [pool blog] child 13 exited with code 255 after 0.1 seconds from start",
            "[26-Nov-2026 03:02:09] WARNING: [pool blog] child 14 exited on signal 9 (SIGKILL) after 2.0 seconds from start",
            "[26-Nov-2026 03:02:09] NOTICE: [pool blog] child 15 exited on signal 3 (SIGQUIT) after 9.0 seconds from start",
            "[26-Nov-2026 03:02:09] WARNING: [pool blog] child 16, script '/x.php' (request: \"GET /x.php\") execution timed out (31.0 sec), terminating",
            "[26-Nov-2026 03:02:09] WARNING: [pool blog] child 16 exited on signal 15 (SIGTERM) after 31.0 seconds from start",
            "[26-Nov-2026 03:02:09] NOTICE: ready to handle connections",
        ] {
            e.observe(line);
        }
        assert_eq!(e.spawned.load(Relaxed), 1);
        assert_eq!(e.recycled.load(Relaxed), 1);
        assert_eq!(e.crashed.load(Relaxed), 2);
        assert_eq!(e.timed_out.load(Relaxed), 1);
        assert_eq!(e.ready.load(Relaxed), 1);
    }
    use super::*;

    #[test]
    fn ini_values_are_quoted_when_needed_and_refused_when_they_would_break_out() {
        let q = |v: &str| ini_value("x", v).unwrap();
        assert_eq!(q("128M"), "128M");
        assert_eq!(q("E_ALL & ~E_DEPRECATED"), "E_ALL & ~E_DEPRECATED");
        assert_eq!(q("a;b"), "\"a;b\"");
        assert_eq!(q(""), "\"\"");
        assert_eq!(q("/usr/bin:/bin"), "/usr/bin:/bin");
        for bad in [
            "/tmp/x.sock\nphp_admin_value[auto_prepend_file] = /tmp/evil.php",
            "a\rb",
            "a\0b",
            "a\"b",
            "ends in \\",
        ] {
            assert!(ini_value("x", bad).is_err(), "{bad:?}");
        }
    }
}
