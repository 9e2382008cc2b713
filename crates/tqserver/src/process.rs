//! Child processes that cannot outlive TQServer: each runs in its own
//! process group (so its own children can be signalled with it) and gets
//! `PR_SET_PDEATHSIG`, so the kernel signals it when TQServer dies, even
//! by SIGKILL.
//!
//! The parent-death signal reaches only our direct children. What they
//! start themselves (`go run`'s program, a shell's commands, cargo's
//! rustc) is covered by the watchdog: a small copy of tqserver
//! (`tqserver __watchdog`) that reads, on a pipe from us, the process
//! groups of our children as they come and go. When the pipe closes —
//! we exited or were killed, however — it kills every group still listed.
//! A group leaves the list when its leader has been reaped and the rest
//! of the group killed (when its [`Tied`] is dropped), so a recycled
//! process id is never signalled.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits.
//! Spawn from async tasks (runtime worker threads live as long as the
//! runtime), never from `spawn_blocking`, whose threads retire when idle.

use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// Spawns `cmd` in a new process group with `signal` as its parent-death
/// signal, and lists the group with the watchdog. `kill_on_drop` is the
/// caller's choice (tokio's default: off).
pub fn spawn_tied(cmd: &mut Command, signal: Signal) -> std::io::Result<Tied> {
    cmd.process_group(0);
    set_parent_death_signal(cmd, signal);
    let worker = cmd
        .as_std()
        .get_envs()
        .find(|(k, _)| *k == "WORKER_NAME")
        .and_then(|(_, v)| v)
        .map(|v| v.to_string_lossy().into_owned());
    let child = cmd.spawn()?;
    // A child not yet waited for always has its id.
    let pid = child.id().unwrap_or_default();
    if pid != 0 {
        tell_watchdog(&format!("+{pid}\n"));
        if let Some(w) = worker {
            owners().insert(pid, w);
        }
    }
    Ok(Tied { child, pid })
}

/// The worker each running child was started for (its `WORKER_NAME`),
/// by pid: what the egress proxy names a connection's worker by, since
/// a child may overwrite its own environment (php-fpm's process titles
/// do).
static OWNERS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<u32, String>>> =
    std::sync::LazyLock::new(Default::default);

fn owners() -> std::sync::MutexGuard<'static, std::collections::HashMap<u32, String>> {
    OWNERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The worker a child of this process (from [`spawn_tied`]) was started
/// for.
pub fn worker_of(pid: u32) -> Option<String> {
    owners().get(&pid).cloned()
}

/// A child from [`spawn_tied`] (it derefs to the tokio `Child`). Dropping
/// it SIGKILLs whatever is left of its process group (the children it
/// left behind; the child itself if it still runs) and takes the group off
/// the watchdog's list: drop it as soon as the child has been reaped, so
/// the group's id cannot have been recycled meanwhile.
pub struct Tied {
    child: Child,
    pid: u32,
}

impl std::ops::Deref for Tied {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl std::ops::DerefMut for Tied {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Tied {
    fn drop(&mut self) {
        // Never killpg(0): that is our own process group.
        if self.pid != 0 {
            let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
            tell_watchdog(&format!("-{}\n", self.pid));
            owners().remove(&self.pid);
        }
    }
}

/// The argument that makes `tqserver` the watchdog.
pub const WATCHDOG_ARG: &str = "__watchdog";

static WATCHDOG: std::sync::Mutex<Option<std::process::ChildStdin>> = std::sync::Mutex::new(None);

fn tell_watchdog(line: &str) {
    use std::io::Write as _;
    let mut w = WATCHDOG.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(pipe) = w.as_mut() {
        // One short line: a single write(2), under the lock.
        if pipe.write_all(line.as_bytes()).is_err() {
            *w = None;
        }
    }
}

/// Starts the watchdog (once, before any child). It runs in its own
/// process group, so a Ctrl-C meant for us does not end it first; it ends
/// by itself when we do. Without it (it could not start) children still
/// get their parent-death signal; only their own children could outlive
/// us.
pub fn start_watchdog() {
    let mut w = WATCHDOG.lock().unwrap_or_else(|e| e.into_inner());
    if w.is_some() {
        return;
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(
                "cannot start the watchdog (where is tqserver? {e}); processes started by workers may outlive a killed tqserver"
            );
            return;
        }
    };
    use std::os::unix::process::CommandExt as _;
    let spawned = std::process::Command::new(exe)
        .arg(WATCHDOG_ARG)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .process_group(0)
        .spawn();
    match spawned {
        Ok(mut child) => {
            *w = child.stdin.take();
            // Reaped by a thread of its own: it exits only after we do,
            // unless something kills it.
            std::thread::spawn(move || {
                let _ = child.wait();
            });
        }
        Err(e) => tracing::warn!(
            "cannot start the watchdog: {e}; processes started by workers may outlive a killed tqserver"
        ),
    }
}

/// The watchdog's life: keep the list of process groups from stdin; at
/// end of input, SIGTERM every group left, SIGKILL what is still there a
/// second later, and exit.
pub fn watchdog_main() -> ! {
    use std::collections::BTreeSet;
    use std::io::BufRead as _;
    // Signals meant for tqserver's terminal group do not reach us (own
    // group); SIGHUP when a terminal closes must not stop the watch.
    let _ = ignore_sighup();
    let mut groups = BTreeSet::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let (op, n) = line.split_at(line.len().min(1));
        let Ok(pid) = n.trim().parse::<i32>() else {
            continue;
        };
        match op {
            "+" => {
                groups.insert(pid);
            }
            "-" => {
                groups.remove(&pid);
            }
            _ => {}
        }
    }
    for &g in &groups {
        let _ = killpg(Pid::from_raw(g), Signal::SIGTERM);
    }
    let until = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < until
        && groups
            .iter()
            .any(|&g| killpg(Pid::from_raw(g), None::<Signal>).is_ok())
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &g in &groups {
        let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
    }
    std::process::exit(0)
}

/// The watchdog ignores SIGHUP (a closing terminal must not end it).
#[allow(unsafe_code)]
fn ignore_sighup() -> nix::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, sigaction};
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    // SAFETY: SIG_IGN installs no handler, so no code of ours runs in
    // signal context; the watchdog is single-threaded.
    unsafe { sigaction(Signal::SIGHUP, &ignore) }.map(|_| ())
}

/// One of TQServer's two `unsafe` blocks: `pre_exec` runs between fork and exec,
/// where only async-signal-safe calls are allowed. `prctl` and `getppid`
/// are plain system calls and allocate nothing.
#[allow(unsafe_code)]
fn set_parent_death_signal(cmd: &mut Command, signal: Signal) {
    let parent = std::process::id() as i32;
    // SAFETY: the closure only makes two async-signal-safe system calls and
    // touches no memory shared with other threads.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(signal).map_err(std::io::Error::from)?;
            // The parent may have died before prctl took effect.
            if nix::unistd::getppid().as_raw() != parent {
                return Err(std::io::Error::other("parent exited during spawn"));
            }
            Ok(())
        });
    }
}

/// How a [`stop`] ended.
#[derive(Debug)]
pub struct Stopped {
    /// The child's exit (`None`: it had been reaped already).
    pub status: Option<std::io::Result<std::process::ExitStatus>>,
    /// It did not exit within the grace period and was killed.
    pub escalated: bool,
}

/// When the server's shutdown must be over; set once, when it begins.
static STOP_BY: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// The least a process is given to exit on its own, even past the
/// shutdown's end.
const LEAST_GRACE: Duration = Duration::from_millis(100);

/// The server's shutdown must end by `at`: from now on every process stop
/// gets at most what is left of it ([`grace_left`]), so the whole
/// shutdown takes one grace period, not one per phase.
pub fn stop_by(at: std::time::Instant) {
    let _ = STOP_BY.set(at);
}

/// How long a stop may wait for a process to exit: `grace`, or what is
/// left of the server's shutdown if that is less (at least 100 ms).
pub fn grace_left(grace: Duration) -> Duration {
    match STOP_BY.get() {
        Some(at) => at
            .saturating_duration_since(std::time::Instant::now())
            .clamp(LEAST_GRACE, grace.max(LEAST_GRACE)),
        None => grace,
    }
}

/// Stops a child and its process group: `first` to the child (SIGQUIT
/// for php-fpm's graceful stop, SIGTERM for most programs), wait up to
/// `grace`, then SIGKILL the whole group, and reap. The one way every
/// supervised child is stopped.
pub async fn stop(child: &mut Child, first: Signal, grace: Duration) -> Stopped {
    let Some(pid) = child.id() else {
        return Stopped {
            status: None,
            escalated: false,
        };
    };
    let group = Pid::from_raw(pid as i32);
    let _ = nix::sys::signal::kill(group, first);
    let (status, escalated) = match tokio::time::timeout(grace, child.wait()).await {
        Ok(s) => (s, false),
        Err(_) => {
            tracing::warn!(
                pid,
                "process did not stop within {grace:?} of {first}; killing its process group"
            );
            let _ = killpg(group, Signal::SIGKILL);
            (child.wait().await, true)
        }
    };
    // Whatever is left of the group (children it left behind) goes now.
    let _ = killpg(group, Signal::SIGKILL);
    Stopped {
        status: Some(status),
        escalated,
    }
}

/// A child's exit in words for a log line ("exit status: 3",
/// "signal: 9 (SIGKILL)").
pub fn describe_exit(status: &std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("wait failed: {e}"),
    }
}
