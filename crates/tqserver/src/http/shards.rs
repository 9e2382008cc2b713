//! Connection threads: `server.threads` OS threads, each running a
//! single-threaded runtime of its own, and every accepted connection is
//! handed to one of them (in turn) and served there from its first byte
//! to its last, with whatever it opens itself (a connection to a native
//! worker, a timer) on the same thread. That is nginx's model, one event
//! loop per core; tokio's multi-threaded runtime instead moves tasks and
//! wake-ups between threads, which costs more than the work of a small
//! proxied request (see docs/BENCHMARKS.md). The rest of TQServer
//! (supervisors, health checks, reloads) runs on the main runtime.
//!
//! Threads are started once, at start, and live as long as the process
//! (so a process spawned from one of them keeps its parent-death signal
//! armed; see `process`).

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;

/// The connection threads' runtimes.
struct Shards {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

static SHARDS: OnceLock<Shards> = OnceLock::new();

thread_local! {
    /// 1-based number of the connection thread this is (0: not one).
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// Starts `n` connection threads (once; later calls do nothing).
pub fn start(n: usize) -> std::io::Result<()> {
    if SHARDS.get().is_some() {
        return Ok(());
    }
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("tqserver-conn-{}", i + 1))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                SHARD.with(|s| s.set(i + 1));
                let _ = tx.send(Ok(rt.handle().clone()));
                rt.block_on(std::future::pending::<()>());
            })?;
        let handle = rx
            .recv()
            .map_err(|_| std::io::Error::other("a connection thread did not start"))??;
        handles.push(handle);
    }
    let _ = SHARDS.set(Shards {
        handles,
        next: AtomicUsize::new(0),
    });
    Ok(())
}

/// The runtime of the connection thread the next connection goes to, if
/// there are connection threads.
pub fn next() -> Option<&'static Handle> {
    let s = SHARDS.get()?;
    let i = s.next.fetch_add(1, Ordering::Relaxed) % s.handles.len();
    s.handles.get(i)
}

/// How many connection threads there are (0: none started).
pub fn count() -> usize {
    SHARDS.get().map_or(0, |s| s.handles.len())
}

/// The 1-based number of the connection thread running this (0: none).
pub fn current() -> usize {
    SHARD.with(Cell::get)
}

/// A place in a wait queue (for a PHP process, say), marked with the
/// connection thread that waits.
#[derive(Debug)]
pub struct Queued<T> {
    /// What is handed over (a sender, usually).
    pub item: T,
    shard: usize,
    since: std::time::Instant,
}

impl<T> Queued<T> {
    /// `item`, waiting from now on this thread.
    pub fn new(item: T) -> Self {
        Self {
            item,
            shard: current(),
            since: std::time::Instant::now(),
        }
    }
}

impl<T> std::ops::Deref for Queued<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.item
    }
}

/// A waiter queued longer than this is served first, whatever thread it
/// is on: the bound on preferring waiters of the current thread.
const PREFER_FOR: std::time::Duration = std::time::Duration::from_millis(2);

/// The next waiter for what just came free on this thread: the first one
/// waiting on this thread (so the hand-over wakes nobody across threads),
/// unless the first in line has waited past [`PREFER_FOR`].
pub fn next_here<T>(q: &mut std::collections::VecDeque<Queued<T>>) -> Option<Queued<T>> {
    let front = q.front()?;
    if front.since.elapsed() < PREFER_FOR {
        let here = current();
        if let Some(i) = q.iter().position(|w| w.shard == here) {
            return q.remove(i);
        }
    }
    q.pop_front()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::time::{Duration, Instant};

    fn queued(item: u32, shard: usize, age: Duration) -> Queued<u32> {
        Queued {
            item,
            shard,
            since: Instant::now().checked_sub(age).unwrap_or_else(Instant::now),
        }
    }

    #[test]
    fn this_threads_waiter_goes_first_unless_the_first_waited_too_long() {
        // The test thread is no connection thread: its number is 0.
        let mut q: VecDeque<_> =
            [queued(1, 2, Duration::ZERO), queued(2, 0, Duration::ZERO)].into();
        assert_eq!(next_here(&mut q).map(|w| w.item), Some(2));
        assert_eq!(next_here(&mut q).map(|w| w.item), Some(1));
        assert!(next_here(&mut q).is_none());
        let mut q: VecDeque<_> =
            [queued(1, 2, PREFER_FOR * 3), queued(2, 0, Duration::ZERO)].into();
        assert_eq!(next_here(&mut q).map(|w| w.item), Some(1));
    }
}
