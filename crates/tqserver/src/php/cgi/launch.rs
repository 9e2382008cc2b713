//! Starting one php-cgi process: find the binary, bind the process's
//! listening socket ourselves, hand it over as file descriptor 0 (the
//! FastCGI convention), and exec php-cgi with the worker's settings.
//!
//! Binding in TQServer instead of `php-cgi -b` means the address accepts
//! connections before php-cgi has even started: a request sent to a
//! process that is still starting waits in the kernel's listen queue, not
//! in a retry loop, which is what makes scale-up fast.
//!
//! With `php.pool.shared_memory` there is one php-cgi instead, the
//! master: it starts PHP once (opcache's and APCu's shared memory are
//! made then) and forks `max_workers` children that accept on its one
//! socket and share that memory; it forks a replacement whenever one
//! exits. The pool then holds one kept-alive connection per child
//! (`process::run_shared`), which binds the connection to the child that
//! accepted it; [`PID_SCRIPT`] tells which child that is.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use nix::sys::signal::Signal;
use tokio::process::Command;
use tqserver_fastcgi::Address;

use crate::config::{Listen, Mode, PhpBackend, WorkerConfig};
use crate::php::LifecycleError;
use crate::ports::Ports;
use crate::process;

/// Where each process's socket goes.
enum Place {
    /// `{runtime_dir}/cgi-{worker}-{id}.sock`.
    RuntimeDir(PathBuf),
    /// This IP, a port from the range.
    Tcp(std::net::IpAddr, Arc<Ports>),
}

/// Starts php-cgi processes for one worker.
pub struct Launcher {
    worker_name: String,
    binary: PathBuf,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    place: Place,
    /// `shared_memory`: the master, and the script that names a child.
    shared: Option<Shared>,
    /// TQServer's embedded PHP instead of php-cgi (`php.backend: embed`).
    embed: bool,
    /// The embedded runtime's master forks a child when asked (dynamic and
    /// ondemand managers) instead of keeping a fixed number.
    on_demand: bool,
    /// Where a master's FIFO of fork requests goes.
    runtime_dir: PathBuf,
}

/// The script a new connection of a shared pool runs first: the child
/// that accepted the connection answers with its pid (written into the
/// runtime directory, private to TQServer's user).
pub const PID_SCRIPT: &str = "<?php echo getmypid();";

struct Shared {
    script: PathBuf,
    master: std::sync::Mutex<Option<Master>>,
}

/// A running php-cgi master of a shared pool.
struct Master {
    child: crate::process::Tied,
    address: Address,
    port: Option<u16>,
    socket_file: Option<PathBuf>,
    /// On demand: the FIFO TQServer writes a byte to for each child to
    /// fork (our end, and its path).
    asks: Option<(std::fs::File, PathBuf)>,
}

/// Sends a PHP process's stderr lines to `log` (as `{program}[pid]: …`,
/// php-cgi or the embedded runtime's php); its pid.
pub fn forward_stderr(
    child: &mut crate::process::Tied,
    log: &crate::logging::WorkerLog,
    program: &'static str,
) -> u32 {
    let pid = child.id().unwrap_or(0);
    if let Some(err) = child.stderr.take() {
        let log = log.clone();
        crate::logging::forward_lines(err, move |line| {
            log.emit(tracing::Level::WARN, &format!("{program}[{pid}]: {line}"));
        });
    }
    pid
}

impl Drop for Launcher {
    /// A replaced generation's master goes once its last connection has:
    /// stopped in the background (or killed at once outside a runtime).
    fn drop(&mut self) {
        if let Some(m) = self.take_master() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(m.stop());
            }
        }
    }
}

impl Master {
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGTERM);
            let _ = tokio::time::timeout(super::RETIRE_GRACE, self.child.wait()).await;
        }
        // Dropping the Tied kills whatever is left of the group.
    }
}

/// A started process.
pub struct Started {
    /// The child (its own process group, parent-death signal set).
    pub child: crate::process::Tied,
    /// Where it accepts FastCGI connections.
    pub address: Address,
    /// The port to give back to the range when it is gone.
    pub port: Option<u16>,
    /// The socket file to remove when it is gone.
    pub socket_file: Option<PathBuf>,
}

/// Finds php-cgi: `php.binary`, else `php-cgi`, then `php-cgiX.Y` (newest
/// first) on PATH and in /usr/bin and /usr/local/bin.
pub fn find_binary(worker: &WorkerConfig) -> Result<PathBuf, String> {
    super::super::find_program(
        worker.php.binary.as_deref(),
        "php-cgi",
        &["/usr/bin", "/usr/local/bin"],
        "install it (Debian/Ubuntu: sudo apt-get install php-cgi)",
    )
}

impl Launcher {
    /// Finds and checks php-cgi and prepares its command line.
    /// `generation` tells apart the socket files of a pool that replaces
    /// another (a worker.yaml edit) while the old one drains.
    pub async fn new(
        worker: &WorkerConfig,
        mode: Mode,
        runtime_dir: &Path,
        ports: Arc<Ports>,
        generation: u32,
    ) -> Result<Self, LifecycleError> {
        let name = &worker.name;
        let embed = worker.php.backend == PhpBackend::Embed;
        let binary = if embed {
            // The embedded runtime is this binary, as its PHP master.
            std::env::current_exe().map_err(|e| LifecycleError::NotFound {
                worker: name.clone(),
                why: format!("cannot find tqserver's own binary to run embedded PHP: {e}"),
            })?
        } else {
            find_binary(worker).map_err(|why| LifecycleError::NotFound {
                worker: name.clone(),
                why,
            })?
        };
        let mut args: Vec<OsString> = Vec::new();
        if embed {
            args.push(tqserver_php::ARG.into());
            if let Some(script) = &worker.php.worker {
                // Worker mode: each process boots this script once.
                args.push("--worker".into());
                args.push(script.into());
                args.push("--root".into());
                args.push(worker.php.document_root.clone().into());
                // Its SCRIPT_NAME as every request of it gets it.
                args.push("--script-name".into());
                args.push(crate::php::script::name_under(&worker.php.document_root, script).into());
                if let Some(max) = worker.php.worker_max_memory {
                    args.push("--max-memory".into());
                    args.push(max.to_string().into());
                }
            }
        }
        if let Some(ini) = &worker.php.config_file {
            args.push("-c".into());
            args.push(ini.into());
        }
        let mut set = std::collections::HashSet::new();
        for (k, v) in &worker.php.settings {
            set.insert(k.as_str());
            args.push("-d".into());
            args.push(format!("{k}={v}").into());
        }
        if mode == Mode::Dev && !set.contains("opcache.revalidate_freq") {
            // Dev mode: an edited .php file is picked up on the next request.
            args.push("-d".into());
            args.push("opcache.revalidate_freq=0".into());
        }
        if crate::php::wordpress::applies(worker) {
            let helper = crate::php::wordpress::write_helper(runtime_dir).map_err(|e| {
                LifecycleError::Unwritable {
                    worker: name.clone(),
                    why: format!("the WordPress helper in {}: {e}", runtime_dir.display()),
                }
            })?;
            args.push("-d".into());
            let mut setting = OsString::from("auto_prepend_file=");
            setting.push(helper);
            args.push(setting);
        }
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
        let env = vec![
            ("PATH".to_string(), path),
            // One process per address (TQServer is the process manager),
            // or, sharing memory, the master's fixed number of children.
            (
                "PHP_FCGI_CHILDREN".to_string(),
                if worker.php.pool.shared_memory {
                    worker.php.pool.max_children.to_string()
                } else {
                    "0".to_string()
                },
            ),
            // php-cgi exits by itself after 500 requests unless told not
            // to; TQServer retires processes itself (php.pool.max_requests).
            ("PHP_FCGI_MAX_REQUESTS".to_string(), "0".to_string()),
            ("WORKER_POOL".to_string(), worker.php.pool.describe()),
        ];
        let mut env = env;
        env.extend(worker.environment.iter().cloned());
        let place = match &worker.php.pool.listen {
            Listen::TcpFromRange(ip) => {
                // The config allows loopback only; php-cgi itself also
                // refuses any other client address (its own
                // listen.allowed_clients).
                env.push(("FCGI_WEB_SERVER_ADDRS".to_string(), ip.to_string()));
                Place::Tcp(*ip, ports)
            }
            // The config refuses fixed addresses for the cgi backend.
            _ => Place::RuntimeDir(runtime_dir.to_path_buf()),
        };
        let worker_name = if generation == 0 {
            name.clone()
        } else {
            format!("{name}.{generation}")
        };
        let shared = if worker.php.pool.shared_memory {
            let script = runtime_dir.join(format!("cgi-{worker_name}-pid.php"));
            crate::runtime::write_private(&script, PID_SCRIPT.as_bytes()).map_err(|e| {
                LifecycleError::Unwritable {
                    worker: name.clone(),
                    why: format!("{}: {e}", script.display()),
                }
            })?;
            Some(Shared {
                script,
                master: std::sync::Mutex::new(None),
            })
        } else {
            None
        };
        let launcher = Self {
            worker_name,
            binary,
            args,
            env,
            place,
            shared,
            embed,
            on_demand: embed && worker.php.pool.manager != crate::config::Manager::Static,
            runtime_dir: runtime_dir.to_path_buf(),
        };
        launcher.check().await?;
        Ok(launcher)
    }

    /// `php-cgi -v` with the worker's arguments: the binary runs and is the
    /// CGI/FastCGI build (not the CLI or php-fpm).
    async fn check(&self) -> Result<(), LifecycleError> {
        let out = Command::new(&self.binary)
            .args(&self.args)
            .arg("-v")
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|source| LifecycleError::Run {
                worker: self.worker_name.clone(),
                program: self.binary.clone(),
                source,
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        if self.embed {
            if out.status.success() && text.contains(tqserver_php::VERSION_MARK) {
                return Ok(());
            }
            return Err(LifecycleError::NotFound {
                worker: self.worker_name.clone(),
                why: format!(
                    "embedded PHP does not start: {}{}",
                    text.trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        if out.status.success() && text.contains("(cgi-fcgi)") {
            return Ok(());
        }
        Err(LifecycleError::NotCgi {
            worker: self.worker_name.clone(),
            binary: self.binary.clone(),
            said: format!(
                "{}{}",
                text.lines().next().unwrap_or("").trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }

    /// What the pool's processes are called in the log: php-cgi, or php
    /// for the embedded runtime.
    pub fn program(&self) -> &'static str {
        if self.embed { "php" } else { "php-cgi" }
    }

    /// The php-cgi program.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Binds a socket for process `id` and starts php-cgi on it. Our copy
    /// of the listening socket is closed before this returns, so once the
    /// process is gone, connecting fails at once instead of hanging.
    pub fn spawn(&self, id: u64) -> Result<Started, String> {
        let (fd, address, port, socket_file) = self.bind(&id.to_string())?;
        match self.start(fd, port) {
            Ok(child) => Ok(Started {
                child,
                address,
                port,
                socket_file,
            }),
            Err(e) => {
                self.forget(port, socket_file.as_deref());
                Err(e)
            }
        }
    }

    /// The listening socket of process `name`: a private Unix socket, or
    /// a port from the range.
    fn bind(&self, name: &str) -> Result<(OwnedFd, Address, Option<u16>, Option<PathBuf>), String> {
        Ok(match &self.place {
            Place::RuntimeDir(dir) => {
                let path = dir.join(format!("cgi-{}-{name}.sock", self.worker_name));
                let _ = std::fs::remove_file(&path);
                let l = std::os::unix::net::UnixListener::bind(&path)
                    .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
                // Only TQServer's user may connect (php-cgi runs any file
                // it is sent), whatever the umask.
                crate::runtime::restrict_socket(&path)
                    .map_err(|e| format!("cannot restrict {}: {e}", path.display()))?;
                (l.into(), Address::Unix(path.clone()), None, Some(path))
            }
            Place::Tcp(ip, ports) => {
                let port = ports.acquire(*ip).ok_or_else(|| {
                    let (a, b) = ports.range();
                    format!("no free port in {a}-{b} (workers.port_range_*)")
                })?;
                match std::net::TcpListener::bind((*ip, port)) {
                    Ok(l) => (
                        l.into(),
                        Address::from(std::net::SocketAddr::new(*ip, port)),
                        Some(port),
                        None,
                    ),
                    Err(e) => {
                        ports.release(port);
                        return Err(format!("cannot listen on {ip}:{port}: {e}"));
                    }
                }
            }
        })
    }

    /// php-cgi on the listening socket `fd` (on TCP `port`, which it is
    /// told as `WORKER_PORT`, as the Go TQServer's PHP workers were).
    fn start(&self, fd: OwnedFd, port: Option<u16>) -> Result<crate::process::Tied, String> {
        self.start_with(fd, port, &[])
    }

    /// [`Launcher::start`] with `extra` arguments.
    fn start_with(
        &self,
        fd: OwnedFd,
        port: Option<u16>,
        extra: &[OsString],
    ) -> Result<crate::process::Tied, String> {
        let mut cmd = Command::new(&self.binary);
        cmd.args(&self.args)
            .args(extra)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(p) = port {
            cmd.env("WORKER_PORT", p.to_string());
        }
        cmd.stdin(Stdio::from(fd))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SIGKILL on our death: php-cgi has nothing to finish without us.
        let spawned = process::spawn_tied(&mut cmd, Signal::SIGKILL);
        // The Command holds the listening socket until dropped.
        drop(cmd);
        spawned.map_err(|e| format!("cannot start {}: {e}", self.binary.display()))
    }

    /// Whether the pool's processes fork from one master
    /// (`shared_memory`).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// The pid script of a shared pool.
    pub fn pid_script(&self) -> Option<&Path> {
        self.shared.as_ref().map(|s| s.script.as_path())
    }

    /// A shared pool's master: its address and pid, started (again) if it
    /// is not running; its stderr goes to `log`.
    pub fn master(&self, log: &crate::logging::WorkerLog) -> Result<(Address, u32), String> {
        let shared = self.shared.as_ref().ok_or("not a shared pool")?;
        let mut m = shared.master.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cur) = m.as_mut() {
            if matches!(cur.child.try_wait(), Ok(None)) {
                return Ok((cur.address.clone(), cur.child.id().unwrap_or(0)));
            }
            if let Some(old) = m.take() {
                log.error(&format!(
                    "the {} master (pid {}) is gone; starting it again",
                    self.program(),
                    old.child.id().unwrap_or(0)
                ));
                self.forget(old.port, old.socket_file.as_deref());
                if let Some((_, fifo)) = &old.asks {
                    let _ = std::fs::remove_file(fifo);
                }
            }
        }
        // A name of its own: a master of the previous settings may still
        // run (and remove its socket file when it stops).
        static MASTERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = MASTERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (fd, address, port, socket_file) = self.bind(&format!("shared-{n}"))?;
        let mut extra: Vec<OsString> = Vec::new();
        let asks = if self.on_demand {
            let fifo = self
                .runtime_dir
                .join(format!("cgi-{}-shared-{n}.fifo", self.worker_name));
            match make_fifo(&fifo) {
                Ok(f) => {
                    extra.push("--on-demand".into());
                    extra.push(fifo.clone().into());
                    Some((f, fifo))
                }
                Err(e) => {
                    self.forget(port, socket_file.as_deref());
                    return Err(format!("{}: {e}", fifo.display()));
                }
            }
        } else {
            None
        };
        let mut child = match self.start_with(fd, port, &extra) {
            Ok(c) => c,
            Err(e) => {
                self.forget(port, socket_file.as_deref());
                if let Some((_, f)) = &asks {
                    let _ = std::fs::remove_file(f);
                }
                return Err(e);
            }
        };
        let pid = forward_stderr(&mut child, log, self.program());
        *m = Some(Master {
            child,
            address: address.clone(),
            port,
            socket_file,
            asks,
        });
        Ok((address, pid))
    }

    /// Whether the master forks a child for each [`Launcher::fork_child`]
    /// (the embedded runtime under a dynamic or ondemand manager).
    pub fn on_demand(&self) -> bool {
        self.on_demand
    }

    /// Asks the running master to fork one child (on demand); the pool's
    /// new connection waits in the socket's backlog until it accepts.
    pub fn fork_child(&self) -> Result<(), String> {
        use std::io::Write as _;
        let shared = self.shared.as_ref().ok_or("not a shared pool")?;
        let mut m = shared.master.lock().unwrap_or_else(|e| e.into_inner());
        let (asks, path) = m
            .as_mut()
            .and_then(|m| m.asks.as_mut())
            .ok_or("the master does not fork on demand")?;
        asks.write_all(b"+").map_err(|e| {
            format!(
                "cannot ask the master for a process ({}): {e}",
                path.display()
            )
        })
    }

    /// Stops a shared pool's master and its children (the pool has
    /// retired its connections): SIGTERM to the master, which passes it to
    /// its children and reaps them, then exits; SIGKILL to the group after
    /// a grace period.
    pub async fn stop_master(&self) {
        if let Some(m) = self.take_master() {
            m.stop().await;
        }
    }

    fn take_master(&self) -> Option<Master> {
        let m = self
            .shared
            .as_ref()?
            .master
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()?;
        self.forget(m.port, m.socket_file.as_deref());
        if let Some((_, fifo)) = &m.asks {
            let _ = std::fs::remove_file(fifo);
        }
        Some(m)
    }

    /// Gives back what [`Launcher::spawn`] took for a process that is gone.
    pub fn forget(&self, port: Option<u16>, socket_file: Option<&Path>) {
        if let (Some(p), Place::Tcp(_, ports)) = (port, &self.place) {
            ports.release(p);
        }
        if let Some(f) = socket_file {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// A FIFO private to TQServer's user at `path` (replacing a stale one),
/// opened for reading and writing: writes never block on a master that has
/// not opened it yet, and its bytes wait for it.
fn make_fifo(path: &Path) -> std::io::Result<std::fs::File> {
    let _ = std::fs::remove_file(path);
    nix::unistd::mkfifo(
        path,
        nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
    )?;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
}
