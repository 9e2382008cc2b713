//! An instance's idle kept-alive connections, most recently used first;
//! every reuse checks the connection before it carries a request.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::conn::Conn;

/// An idle connection older than this is closed rather than reused.
const IDLE_FOR: Duration = Duration::from_secs(30);
/// Idle connections kept per instance at most.
const MAX_IDLE: usize = 256;

/// An instance's idle connections, most recently used last.
#[derive(Default)]
pub struct IdlePool {
    conns: Mutex<VecDeque<(Conn, Instant)>>,
}

impl std::fmt::Debug for IdlePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.conns.lock().map_or(0, |q| q.len());
        write!(f, "IdlePool({n} idle)")
    }
}

impl IdlePool {
    /// The most recently used idle connection still fit for a request.
    pub fn take(&self) -> Option<Conn> {
        let now = Instant::now();
        let mut q = self.conns.lock().unwrap_or_else(|e| e.into_inner());
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
        let mut q = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= MAX_IDLE {
            q.pop_front();
        }
        q.push_back((c, Instant::now()));
    }

    /// Closes every idle connection (the instance is going away).
    pub fn clear(&self) {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}
