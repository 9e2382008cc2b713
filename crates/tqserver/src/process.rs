//! Child processes that cannot outlive TQServer: each runs in its own
//! process group (so its own children can be signalled with it) and gets
//! `PR_SET_PDEATHSIG`, so the kernel signals it when TQServer dies, even
//! by SIGKILL.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits.
//! Spawn from async tasks (runtime worker threads live as long as the
//! runtime), never from `spawn_blocking`, whose threads retire when idle.

use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// Spawns `cmd` in a new process group with `signal` as its parent-death
/// signal. `kill_on_drop` is the caller's choice (tokio's default: off).
pub fn spawn_tied(cmd: &mut Command, signal: Signal) -> std::io::Result<Child> {
    cmd.process_group(0);
    set_parent_death_signal(cmd, signal);
    cmd.spawn()
}

/// The one `unsafe` in TQServer: `pre_exec` runs between fork and exec,
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

/// Stops a child and its process group: `first` (SIGQUIT for php-fpm's
/// graceful stop, SIGTERM for most programs), wait up to `grace`, then
/// SIGKILL the whole group, and reap.
pub async fn stop(child: &mut Child, first: Signal, grace: Duration) {
    let Some(pid) = child.id() else {
        return; // already reaped
    };
    let group = Pid::from_raw(pid as i32);
    let _ = nix::sys::signal::kill(group, first);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        tracing::warn!(
            pid,
            "process did not stop within {grace:?}; killing its process group"
        );
    }
    // Whatever is left of the group (the process, or children it left
    // behind) goes now.
    let _ = killpg(group, Signal::SIGKILL);
    let _ = child.wait().await;
}

/// A child's exit in words for a log line ("exit status: 3",
/// "signal: 9 (SIGKILL)").
pub fn describe_exit(status: &std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("wait failed: {e}"),
    }
}
