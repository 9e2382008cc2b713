//! php-fpm's log, read for what its status page does not count: process
//! events (children started, recycled, timed out, crashed) and the
//! master's own "ready to handle connections", which the supervisor
//! waits for (published on a `watch`, never polled).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tokio::sync::watch;

use crate::config::{Manager, PoolConfig};

/// What php-fpm's log says happened to its processes; its status page
/// does not count these. Read from its `notice`-level lines: php-fpm
/// logs `child N started` at notice for the children it starts while
/// running (replacements, dynamic spawns) but not for those it starts
/// with, which [`FpmEvents::started`] adds from the pool's settings.
#[derive(Debug, Default)]
pub struct FpmEvents {
    /// `child N started`.
    pub spawned: AtomicU64,
    /// `child N exited with code 0` (`pm.max_requests` reached).
    pub recycled: AtomicU64,
    /// `execution timed out ... terminating` (`request_terminate_timeout`).
    pub timed_out: AtomicU64,
    /// Exits with another code, or on a signal other than the SIGQUIT /
    /// SIGTERM php-fpm itself sends to idle and timed-out processes.
    pub crashed: AtomicU64,
    /// `ready to handle connections` so far: the master (re)started, at
    /// start and after each SIGUSR2 reload. A `watch`, so the supervisor
    /// wakes when it moves.
    pub ready: watch::Sender<u64>,
}

impl FpmEvents {
    /// php-fpm (re)started with `pool`: the children it starts at once
    /// (`pm.max_children` static, `pm.start_servers` dynamic, none
    /// ondemand), which it does not log at notice level.
    pub fn started(&self, pool: &PoolConfig) {
        let n = match pool.manager {
            Manager::Static => pool.max_children,
            Manager::Dynamic => pool.start,
            Manager::Ondemand => 0,
        };
        self.spawned.fetch_add(u64::from(n), Relaxed);
    }

    /// Counts what one line of php-fpm's log reports.
    pub fn observe(&self, line: &str) {
        if line.ends_with("ready to handle connections") {
            self.ready.send_modify(|n| *n += 1);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_events_from_php_fpm_log_lines() {
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
        assert_eq!(*e.ready.borrow(), 1);
    }
}
