//! Runs the real `tqserver` binary as a user would: a project folder with
//! config/server.yaml and workers/*/config/worker.yaml, the binary started
//! in it, HTTP over 127.0.0.1, stopped with SIGTERM by PID.
#![allow(dead_code)]

pub mod browser;
pub mod mariadb;
pub mod pebble;
pub mod raw;
pub mod tls;
pub mod web;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The test PHP scripts.
pub fn php_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/php")
}

/// A port below the ephemeral range (no self-connects), free right now.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
    for _ in 0..1000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (seed.wrapping_add(n.wrapping_mul(7919)) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

/// A project folder: `config/server.yaml` plus workers.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    /// `server_extra` is appended to the `server:` section; `workers_extra`
    /// to the `workers:` section. Unless `workers_extra` sets one, the
    /// workers get a port range of their own (not the default 9000-9999,
    /// which tests running at the same time would share).
    pub fn new(server_extra: &str, workers_extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        std::fs::create_dir_all(dir.path().join("workers")).unwrap();
        let range = if workers_extra.contains("port_range_start") {
            String::new()
        } else {
            let base = free_port();
            format!(
                "  port_range_start: {base}\n  port_range_end: {}\n",
                base + 40
            )
        };
        let yaml = format!(
            "server:\n  host: 127.0.0.1\n  port: 8080\n{server_extra}\nworkers:\n  directory: workers\n  shutdown_grace_period_ms: 3000\n  restart_delay_ms: 100\n{range}{workers_extra}\n"
        );
        std::fs::write(dir.path().join("config/server.yaml"), yaml).unwrap();
        Self { dir }
    }

    /// Adds `workers/{name}/config/worker.yaml`.
    pub fn worker(&self, name: &str, yaml: &str) -> &Self {
        let d = self.dir.path().join("workers").join(name).join("config");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("worker.yaml"), yaml).unwrap();
        self
    }

    /// A PHP worker at `route` over the test scripts (`extra` goes under `php:`
    /// `pool:`, or after it when it starts at the left margin).
    pub fn php_worker(&self, name: &str, route: &str, extra: &str) -> &Self {
        self.worker(
            name,
            &format!(
                "path: {route}\ntype: php\ndocument_root: {}\nphp:\n  pool:\n    manager: static\n    max_workers: 2\n{extra}\n",
                php_dir().display()
            ),
        )
    }

    /// [`Project::php_worker`] on `backend` (fpm, cgi or embed).
    pub fn php_worker_on(&self, name: &str, route: &str, backend: &str, extra: &str) -> &Self {
        self.worker(
            name,
            &format!(
                "path: {route}\ntype: php\ndocument_root: {}\nphp:\n  backend: {backend}\n  pool:\n    manager: static\n    max_workers: 2\n{extra}\n",
                php_dir().display()
            ),
        )
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// `tqserver` with `args`, in `dir`, to completion.
pub fn run_cli(dir: &Path, args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tqserver"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running tqserver.
pub struct Tq {
    child: Option<Child>,
    pub port: u16,
    pub base: String,
    /// The admin listener (health, metrics, status, dashboard).
    pub admin: String,
    log: PathBuf,
    /// Holds the log when the project folder is not a temporary one.
    _log_dir: tempfile::TempDir,
}

impl Tq {
    /// Starts tqserver in `dir` (on a free port) and waits until it answers.
    pub fn start(dir: &Path, args: &[&str]) -> Self {
        Self::start_env(dir, args, &[])
    }

    /// Like `start`, with extra environment variables.
    pub fn start_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::launch(dir, args, env, None, None, None)
    }

    /// Like `start_env`, under the file-creation mask `umask` (octal,
    /// set by `sh` before it execs tqserver, so the pid is tqserver's).
    pub fn start_umask(dir: &Path, args: &[&str], env: &[(&str, &str)], umask: &str) -> Self {
        Self::launch(dir, args, env, None, None, Some(umask))
    }

    /// Starts tqserver listening where server.yaml says (`port`, which the
    /// test wrote there): no `--port` / `--host` override, so a reload can
    /// move it.
    pub fn start_file_port(dir: &Path, port: u16, args: &[&str]) -> Self {
        Self::launch(dir, args, &[], Some(port), None, None)
    }

    /// Like `start_file_port`, with extra environment variables.
    pub fn start_file_port_env(dir: &Path, port: u16, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::launch(dir, args, env, Some(port), None, None)
    }

    /// Starts tqserver with both its port and its admin listener as
    /// server.yaml says (the test wrote them there): no overrides at all.
    pub fn start_from_files(dir: &Path, port: u16, admin_port: u16, args: &[&str]) -> Self {
        Self::launch(dir, args, &[], Some(port), Some(admin_port), None)
    }

    fn launch(
        dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        file_port: Option<u16>,
        file_admin: Option<u16>,
        umask: Option<&str>,
    ) -> Self {
        let port = file_port.unwrap_or_else(free_port);
        let admin_port = file_admin.unwrap_or_else(free_port);
        // The log lives outside the project: the demo test runs in the
        // repository itself.
        let log_dir = tempfile::tempdir().unwrap();
        let log = log_dir.path().join(format!("tqserver-test-{port}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = match umask {
            None => Command::new(env!("CARGO_BIN_EXE_tqserver")),
            Some(m) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("umask {m} && exec \"$0\" \"$@\""))
                    .arg(env!("CARGO_BIN_EXE_tqserver"));
                c
            }
        };
        // A temporary folder of its own (the runtime directory, php's
        // sessions and uploads), unless the test gives one: stale runtime
        // directories are looked for in $TMPDIR.
        if !env.iter().any(|(k, _)| *k == "TMPDIR") {
            // Like /tmp: anyone may create there (a tqserver that drops
            // root to server.user makes its runtime directory in it).
            use std::os::unix::fs::PermissionsExt as _;
            let tmp = log_dir.path().join("tmp");
            std::fs::create_dir_all(&tmp).unwrap();
            std::fs::set_permissions(log_dir.path(), std::fs::Permissions::from_mode(0o755))
                .unwrap();
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
            cmd.env("TMPDIR", tmp);
        }
        let child = cmd
            .args(
                file_port
                    .is_none()
                    .then(|| {
                        [
                            "--port".to_string(),
                            port.to_string(),
                            "--host".to_string(),
                            "127.0.0.1".to_string(),
                        ]
                    })
                    .into_iter()
                    .flatten(),
            )
            .args(
                (!args.contains(&"--admin-listen") && file_admin.is_none())
                    .then(|| {
                        [
                            "--admin-listen".to_string(),
                            format!("127.0.0.1:{admin_port}"),
                        ]
                    })
                    .into_iter()
                    .flatten(),
            )
            .args(args)
            .envs(env.iter().copied())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let mut tq = Self {
            child: Some(child),
            port,
            base: format!("http://127.0.0.1:{port}"),
            admin: format!("http://127.0.0.1:{admin_port}"),
            log,
            _log_dir: log_dir,
        };
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if tq.log_text().contains("TQServer listening") {
                break;
            }
            if let Some(status) = tq.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("tqserver exited at start ({status}):\n{}", tq.log_text());
            }
            assert!(
                Instant::now() < until,
                "tqserver did not start:\n{}",
                tq.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        tq
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits (at most `secs`) for tqserver to exit by itself, after a
    /// signal the test sent.
    pub fn wait_exit(&mut self, secs: u64) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let until = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < until {
            if let Some(s) = child.try_wait().unwrap() {
                self.child = None;
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 20 s).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if let Some(s) = child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Tq {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Processes whose parent is `pid`, with their command names.
pub fn children_of(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // pid (comm) state ppid …; comm may contain spaces.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let comm = stat[stat.find('(').unwrap() + 1..close].to_string();
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        if fields.get(1).and_then(|f| f.parse::<u32>().ok()) == Some(pid) && fields[0] != "Z" {
            out.push((p, comm));
        }
    }
    out
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rfind(')').map(|i| &s[i + 2..i + 3]) != Some("Z"))
        .unwrap_or(false)
}

/// Peak resident memory of a process, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An HTTP client that does not follow redirects, with a cookie store.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .unwrap()
}

/// Today's date as the server writes it in `{date}` (local time), via `date`.
pub fn today() -> String {
    let out = Command::new("date").arg("+%Y-%m-%d").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Direct children of `tq` whose command name starts with `prefix`.
pub fn children_named(tq: &Tq, prefix: &str) -> Vec<u32> {
    children_of(tq.pid())
        .into_iter()
        .filter(|(_, c)| c.starts_with(prefix))
        .map(|(p, _)| p)
        .collect()
}

/// The body of `path` on tqserver's admin listener.
pub async fn admin_text(tq: &Tq, path: &str) -> String {
    client()
        .get(format!("{}{path}", tq.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits until tqserver's log contains `needle` (within `secs`).
pub async fn wait_log(tq: &Tq, needle: &str, secs: u64) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !tq.log_text().contains(needle) {
        assert!(
            Instant::now() < until,
            "the log never said {needle:?}:\n{}",
            tq.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A busy.php tag unique to this test process.
pub fn busy_tag(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// Waits until busy.php run with `tag` has started (it writes its pid
/// before it works): the request is in PHP's hands. Returns that pid.
pub async fn busy_pid(tag: &str) -> u32 {
    let f = std::env::temp_dir().join(format!("tq-busy-{tag}"));
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = std::fs::read_to_string(&f) {
            if let Ok(p) = s.trim().parse() {
                let _ = std::fs::remove_file(&f);
                return p;
            }
        }
        assert!(
            Instant::now() < until,
            "busy.php never wrote {}",
            f.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (at most `secs`) until nothing accepts connections on
/// 127.0.0.1:`port`.
pub async fn wait_refused(port: u16, secs: u64, what: &str) {
    let until = Instant::now() + Duration::from_secs(secs);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < until, "{what}: port {port} still accepts");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
