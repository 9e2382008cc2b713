//! An instance's idle kept-alive connections, most recently used first;
//! every reuse checks the connection before it carries a request. Each
//! connection thread (`http::shards`) has its own: a connection is
//! registered with the reactor of the thread that opened it, and is only
//! ever used there.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::conn::Conn;

/// An idle connection older than this is closed rather than reused.
const IDLE_FOR: Duration = Duration::from_secs(30);
/// Idle connections kept per instance at most.
const MAX_IDLE: usize = 256;

/// One queue of idle connections, most recently used last.
type Queue = Mutex<VecDeque<(Conn, Instant)>>;

/// An instance's idle connections: one queue per connection thread (and
/// one for any other thread).
pub struct IdlePool {
    queues: Vec<Queue>,
}

impl Default for IdlePool {
    fn default() -> Self {
        Self {
            queues: (0..=crate::http::shards::count())
                .map(|_| Queue::default())
                .collect(),
        }
    }
}

impl std::fmt::Debug for IdlePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n: usize = self
            .queues
            .iter()
            .map(|q| q.lock().map_or(0, |q| q.len()))
            .sum();
        write!(f, "IdlePool({n} idle)")
    }
}

impl IdlePool {
    /// This thread's queue.
    fn here(&self) -> &Queue {
        let i = crate::http::shards::current();
        self.queues.get(i).unwrap_or(&self.queues[0])
    }

    /// The most recently used idle connection still fit for a request.
    pub fn take(&self) -> Option<Conn> {
        let now = Instant::now();
        let mut q = self.here().lock().unwrap_or_else(|e| e.into_inner());
        while q
            .front()
            .is_some_and(|(_, t)| now.duration_since(*t) > IDLE_FOR)
        {
            q.pop_front();
        }
        // Every reuse checks the connection first (one non-blocking read):
        // a connection the instance closed, or one with bytes it was never
        // asked for (a stray second response), must not carry a request.
        while let Some((mut c, _)) = q.pop_back() {
            if c.still_open() {
                c.reused = true;
                return Some(c);
            }
        }
        None
    }

    /// Keeps `c` for the next request.
    pub fn put(&self, c: Conn) {
        let mut q = self.here().lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= MAX_IDLE {
            q.pop_front();
        }
        q.push_back((c, Instant::now()));
    }

    /// Closes every idle connection (the instance is going away).
    pub fn clear(&self) {
        for q in &self.queues {
            q.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }
}
