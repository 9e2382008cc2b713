//! Real peers for the integration tests: php-fpm and php-cgi started in a
//! private temporary directory, stopped by PID (and process group) on drop.
#![allow(dead_code)]

pub mod scenarios;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tempfile::TempDir;
use tqserver_fastcgi::{Address, Params};

/// Directory of the PHP scripts the tests run.
pub fn php_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/php")
}

/// CGI params as nginx's `fastcgi_params` would send them.
pub fn cgi_params(script: &str, method: &str, query: &str, content_length: usize) -> Params {
    let root = php_dir();
    let file = root.join(script);
    let uri = if query.is_empty() {
        format!("/{script}")
    } else {
        format!("/{script}?{query}")
    };
    Params::new()
        .with("GATEWAY_INTERFACE", "CGI/1.1")
        .with("SERVER_SOFTWARE", "tqserver-test")
        .with("REQUEST_METHOD", method.to_string())
        .with("SCRIPT_FILENAME", file.to_string_lossy().into_owned())
        .with("SCRIPT_NAME", format!("/{script}"))
        .with("DOCUMENT_ROOT", root.to_string_lossy().into_owned())
        .with("REQUEST_URI", uri)
        .with("QUERY_STRING", query.to_string())
        .with("SERVER_PROTOCOL", "HTTP/1.1")
        .with("SERVER_NAME", "localhost")
        .with("SERVER_PORT", "80")
        .with("REMOTE_ADDR", "127.0.0.1")
        .with("REMOTE_PORT", "40000")
        // php-cgi refuses to run without it (cgi.force_redirect).
        .with("REDIRECT_STATUS", "200")
        .with("CONTENT_LENGTH", content_length.to_string())
        .with("CONTENT_TYPE", "application/octet-stream")
}

/// The first of `names` found on PATH or in the sbin directories.
pub fn find_binary(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs = path
        .split(':')
        .map(PathBuf::from)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/bin"].map(PathBuf::from));
    let dirs: Vec<PathBuf> = dirs.collect();
    for name in names {
        for d in &dirs {
            let p = d.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

fn php_fpm_binary() -> PathBuf {
    let mut names = vec!["php-fpm".to_string()];
    for minor in (0..=9).rev() {
        names.push(format!("php-fpm8.{minor}"));
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    find_binary(&refs).expect(
        "php-fpm not found: install it (Debian: apt-get install php-fpm), or run the README test command, which does",
    )
}

fn php_cgi_binary() -> PathBuf {
    find_binary(&["php-cgi", "php-cgi8.2"]).expect(
        "php-cgi not found: install it (Debian: apt-get install php-cgi), or run the README test command, which does",
    )
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A TCP port free right now on 127.0.0.1, below the kernel's ephemeral
/// range: a port from that range can be picked as the source port of a
/// connection to itself, and such a self-connect looks like a server that
/// is up when nothing listens yet.
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
    panic!("no free port in 20000..32000");
}

/// Waits until `address` accepts connections.
pub async fn wait_ready(address: &Address, child: &mut Child, log: Option<&Path>) {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(stream) = address.connect().await {
            if !is_self_connect(&stream) {
                return;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = log
                .and_then(|p| std::fs::read_to_string(p).ok())
                .unwrap_or_default();
            panic!("PHP exited at start ({status}); log:\n{log}");
        }
        assert!(Instant::now() < until, "{address} did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn is_self_connect(stream: &tqserver_fastcgi::transport::Stream) -> bool {
    match stream {
        tqserver_fastcgi::transport::Stream::Tcp(s) => s.local_addr().ok() == s.peer_addr().ok(),
        tqserver_fastcgi::transport::Stream::Unix(_) => false,
    }
}

/// Stops a child we started, and everything in its process group.
fn stop(child: &mut Child) {
    let pgid = Pid::from_raw(child.id() as i32);
    let _ = killpg(pgid, Signal::SIGTERM);
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = killpg(pgid, Signal::SIGKILL);
    let _ = child.wait();
}

/// A php-fpm master (`php-fpm -F -y`) with one static pool.
pub struct PhpFpm {
    child: Child,
    pub address: Address,
    pub dir: TempDir,
}

impl PhpFpm {
    /// Starts php-fpm with `children` static processes, listening on a Unix
    /// socket (`unix = true`) or on a TCP port.
    pub async fn start(children: usize, unix: bool) -> Self {
        Self::start_with(children, unix, "").await
    }

    /// Like `start`, with extra pool lines.
    pub async fn start_with(children: usize, unix: bool, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let listen = if unix {
            dir.path().join("fpm.sock").to_string_lossy().into_owned()
        } else {
            format!("127.0.0.1:{}", free_port())
        };
        let user = if is_root() {
            "user = root\ngroup = root\n"
        } else {
            ""
        };
        let log = dir.path().join("fpm.log");
        let conf = format!(
            "[global]\npid = {pid}\nerror_log = {log}\ndaemonize = no\n\n\
             [test]\n{user}listen = {listen}\npm = static\npm.max_children = {children}\n\
             clear_env = no\ncatch_workers_output = yes\n{extra}\n",
            pid = dir.path().join("fpm.pid").display(),
            log = log.display(),
        );
        let conf_path = dir.path().join("php-fpm.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut cmd = Command::new(php_fpm_binary());
        cmd.arg("-F").arg("-y").arg(&conf_path);
        if is_root() {
            cmd.arg("-R");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = cmd.spawn().expect("start php-fpm");
        // Owned (and so stopped on drop) before anything can panic.
        let mut fpm = Self {
            child,
            address: listen.parse().unwrap(),
            dir,
        };
        wait_ready(&fpm.address, &mut fpm.child, Some(&log)).await;
        fpm
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("fpm.log")).unwrap_or_default()
    }
}

impl Drop for PhpFpm {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// `php-cgi -b` with `PHP_FCGI_CHILDREN` and `PHP_FCGI_MAX_REQUESTS`.
pub struct PhpCgi {
    child: Child,
    pub address: Address,
    pub dir: TempDir,
}

impl PhpCgi {
    /// `children` 0 is one process serving itself; N is a parent with N
    /// children that it respawns. `max_requests` 0 means no limit.
    pub async fn start(children: usize, max_requests: usize, unix: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bind = if unix {
            dir.path().join("cgi.sock").to_string_lossy().into_owned()
        } else {
            format!("127.0.0.1:{}", free_port())
        };
        let child = Command::new(php_cgi_binary())
            .arg("-b")
            .arg(&bind)
            .env("PHP_FCGI_CHILDREN", children.to_string())
            .env("PHP_FCGI_MAX_REQUESTS", max_requests.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start php-cgi");
        // Owned (and so stopped on drop) before anything can panic.
        let mut cgi = Self {
            child,
            address: if unix {
                format!("unix:{bind}").parse().unwrap()
            } else {
                bind.parse().unwrap()
            },
            dir,
        };
        wait_ready(&cgi.address, &mut cgi.child, None).await;
        cgi
    }
}

impl Drop for PhpCgi {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Peak resident memory of this process (VmHWM), in KiB.
pub fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// Hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
