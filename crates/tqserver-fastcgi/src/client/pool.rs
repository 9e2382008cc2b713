//! The keep-alive connection pool.
//!
//! A *slot* is the right to hold one open connection; there are
//! `max_connections` of them, and a connection holds its slot whether it is
//! busy or idle. A request takes the most recently used idle connection
//! (LIFO, so the rest can expire), else a free slot to connect, else it
//! queues (FIFO) and is handed a connection or a slot as one comes back.
//!
//! Why idle connections count: php-fpm and php-cgi give a whole process to
//! a kept-alive connection, and that process waits on it even while we have
//! nothing to send. A pool that could open more connections than the
//! application has processes would leave new connections unaccepted behind
//! idle ones. Keeping `max_connections` at or below the process count makes
//! that impossible: every connection we open has a process to serve it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::ClientError;
use super::connection::Connection;
use crate::transport::Address;

/// A snapshot of the pool's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Connections open or being opened (busy + idle + connecting).
    pub open: usize,
    /// Connections waiting in the pool for a request.
    pub idle: usize,
    /// Requests queued for a connection.
    pub waiting: usize,
    /// Connections opened since the client was created.
    pub connects: u64,
}

pub(crate) struct Shared {
    pub(crate) address: Address,
    max: usize,
    idle_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    /// Move a reused connection to the taking thread's runtime.
    follow_thread: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    idle: VecDeque<Idle>,
    open: usize,
    waiters: VecDeque<Waiter>,
    reaper_running: bool,
    connects: u64,
}

impl State {
    /// The next waiter for a connection coming back on this thread: the
    /// first one on this thread (so the connection stays with its
    /// reactor), unless the first in line has waited past [`PREFER_FOR`].
    fn next_waiter_here(&mut self) -> Option<Waiter> {
        let front = self.waiters.front()?;
        if front.since.elapsed() < PREFER_FOR {
            let here = std::thread::current().id();
            if let Some(i) = self.waiters.iter().position(|w| w.thread == here) {
                return self.waiters.remove(i);
            }
        }
        self.waiters.pop_front()
    }
}

/// A request queued for a connection: where it waits, since when.
struct Waiter {
    tx: oneshot::Sender<Handoff>,
    thread: std::thread::ThreadId,
    since: Instant,
}

/// A waiter queued longer than this is served first, whatever thread it
/// is on (the bound on preferring waiters of the connection's thread).
const PREFER_FOR: Duration = Duration::from_millis(2);

struct Idle {
    conn: Connection,
    since: Instant,
}

/// What a queued request is handed.
enum Handoff {
    Conn(Pooled),
    Slot(Slot),
}

/// The right to one open connection; gives itself back on drop.
pub(crate) struct Slot {
    shared: Option<Arc<Shared>>,
}

impl Slot {
    fn new(shared: &Arc<Shared>) -> Self {
        Self {
            shared: Some(shared.clone()),
        }
    }

    /// Keeps the slot counted (its connection goes idle) without releasing it.
    fn disarm(mut self) -> Arc<Shared> {
        self.shared.take().expect("slot used once")
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(s) = self.shared.take() {
            s.release_slot();
        }
    }
}

/// A connection checked out of the pool. Dropped, it goes back to the
/// idle list if [`Pooled::set_reusable`] was called, else it is closed.
pub(crate) struct Pooled {
    conn: Option<Connection>,
    slot: Option<Slot>,
    /// The connection served a request before this one.
    pub(crate) reused: bool,
    reusable: bool,
}

impl Pooled {
    fn new(conn: Connection, slot: Slot) -> Self {
        Self {
            reused: conn.served > 0,
            conn: Some(conn),
            slot: Some(slot),
            reusable: false,
        }
    }

    pub(crate) fn conn(&mut self) -> &mut Connection {
        self.conn.as_mut().expect("connection present until drop")
    }

    /// Nothing left to write.
    pub(crate) fn write_queue_is_empty(&self) -> bool {
        self.conn.as_ref().is_none_or(|c| c.wq.is_empty())
    }

    /// The request ended cleanly: keep the connection for the next one.
    pub(crate) fn set_reusable(&mut self) {
        self.conn().served += 1;
        self.reusable = true;
    }

    /// Replaces the connection by a new one in the same slot (the retry of
    /// a request whose reused connection turned out dead).
    pub(crate) async fn reconnect(&mut self) -> Result<(), ClientError> {
        drop(self.conn.take());
        let shared = self.shared().clone();
        self.conn = Some(shared.connect().await?);
        self.reused = false;
        Ok(())
    }

    fn shared(&self) -> &Arc<Shared> {
        self.slot
            .as_ref()
            .and_then(|s| s.shared.as_ref())
            .expect("slot present until drop")
    }

    fn into_conn(mut self) -> (Connection, Slot) {
        (
            self.conn.take().expect("connection"),
            self.slot.take().expect("slot"),
        )
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let (Some(conn), Some(slot)) = (self.conn.take(), self.slot.take()) else {
            return;
        };
        if self.reusable {
            slot.disarm().put_back(conn);
        } else {
            // Close first, then free the slot: the application's process
            // is released before a queued request connects.
            drop(conn);
            drop(slot);
        }
    }
}

impl Shared {
    async fn connect(&self) -> Result<Connection, ClientError> {
        self.lock().connects += 1;
        Connection::open(&self.address, self.connect_timeout).await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves only counters behind;
        // keep serving rather than poisoning every later request.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives a freed slot to the first live waiter, or un-counts it.
    fn release_slot(self: Arc<Self>) {
        loop {
            let waiter = {
                let mut st = self.lock();
                match st.waiters.pop_front() {
                    Some(w) => w.tx,
                    None => {
                        st.open -= 1;
                        return;
                    }
                }
            };
            match waiter.send(Handoff::Slot(Slot::new(&self))) {
                Ok(()) => return,
                Err(Handoff::Slot(s)) => {
                    // That waiter gave up; the slot is still ours to place.
                    s.disarm();
                }
                Err(Handoff::Conn(_)) => unreachable!("sent a slot"),
            }
        }
    }

    /// Gives a reusable connection to the first live waiter, or parks it.
    fn put_back(self: Arc<Self>, mut conn: Connection) {
        loop {
            let waiter = {
                let mut st = self.lock();
                let pick = if self.follow_thread {
                    st.next_waiter_here()
                } else {
                    st.waiters.pop_front()
                };
                match pick.map(|w| w.tx) {
                    Some(w) => w,
                    None => {
                        st.idle.push_back(Idle {
                            conn,
                            since: Instant::now(),
                        });
                        if !st.reaper_running && self.idle_timeout < Duration::MAX {
                            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                                st.reaper_running = true;
                                rt.spawn(reap(Arc::downgrade(&self), self.idle_timeout));
                            }
                        }
                        return;
                    }
                }
            };
            match waiter.send(Handoff::Conn(Pooled::new(conn, Slot::new(&self)))) {
                Ok(()) => return,
                Err(Handoff::Conn(p)) => {
                    let (c, slot) = p.into_conn();
                    slot.disarm();
                    conn = c;
                }
                Err(Handoff::Slot(_)) => unreachable!("sent a connection"),
            }
        }
    }
}

/// Closes idle connections that expired or that the application closed,
/// so their processes (and our slots) are freed even without traffic.
async fn reap(shared: Weak<Shared>, idle_timeout: Duration) {
    let tick = (idle_timeout / 2).clamp(Duration::from_millis(50), Duration::from_secs(5));
    loop {
        tokio::time::sleep(tick).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let dead: Vec<Connection> = {
            let mut st = shared.lock();
            let mut dead = Vec::new();
            let mut keep = VecDeque::with_capacity(st.idle.len());
            for idle in st.idle.drain(..) {
                if idle.since.elapsed() >= idle_timeout || !idle.conn.is_reusable_idle() {
                    dead.push(idle.conn);
                } else {
                    keep.push_back(idle);
                }
            }
            st.idle = keep;
            // Idle connections exist only while nobody waits, so freed
            // slots have no one to go to.
            st.open -= dead.len();
            if st.idle.is_empty() {
                st.reaper_running = false;
            }
            dead
        };
        let stop = {
            let st = shared.lock();
            !st.reaper_running
        };
        drop(dead);
        if stop {
            return;
        }
    }
}

/// The pool of one client.
pub(crate) struct Pool {
    shared: Arc<Shared>,
}

impl Pool {
    pub(crate) fn new(
        address: Address,
        max: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
        follow_thread: bool,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                address,
                max: max.max(1),
                idle_timeout,
                connect_timeout,
                follow_thread,
                state: Mutex::new(State::default()),
            }),
        }
    }

    pub(crate) fn address(&self) -> &Address {
        &self.shared.address
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let st = self.shared.lock();
        PoolStats {
            open: st.open,
            idle: st.idle.len(),
            waiting: st.waiters.iter().filter(|w| !w.tx.is_closed()).count(),
            connects: st.connects,
        }
    }

    /// A connection for one request: idle, new, or (when every slot is
    /// taken) the next one to come back.
    pub(crate) async fn checkout(&self) -> Result<Pooled, ClientError> {
        let mut dead = Vec::new();
        let next = {
            let mut st = self.shared.lock();
            let mut found = None;
            while let Some(idle) = st.idle.pop_back() {
                if idle.since.elapsed() < self.shared.idle_timeout && idle.conn.is_reusable_idle() {
                    found = Some(idle.conn);
                    break;
                }
                st.open -= 1;
                dead.push(idle.conn);
            }
            match found {
                Some(conn) => Ok(conn),
                None if st.open < self.shared.max => {
                    st.open += 1;
                    Err(None)
                }
                None => {
                    let (tx, rx) = oneshot::channel();
                    st.waiters.retain(|w| !w.tx.is_closed());
                    st.waiters.push_back(Waiter {
                        tx,
                        thread: std::thread::current().id(),
                        since: Instant::now(),
                    });
                    Err(Some(rx))
                }
            }
        };
        drop(dead);
        let follow = |conn: Connection| {
            if self.shared.follow_thread {
                conn.follow_thread()
            } else {
                Some(conn)
            }
        };
        let slot = match next {
            Ok(conn) => {
                let slot = Slot::new(&self.shared);
                match follow(conn) {
                    Some(conn) => return Ok(Pooled::new(conn, slot)),
                    None => slot,
                }
            }
            Err(None) => Slot::new(&self.shared),
            Err(Some(rx)) => match rx.await {
                Ok(Handoff::Conn(mut p)) => {
                    let reusable = p.conn().is_reusable_idle();
                    let (conn, slot) = p.into_conn();
                    match reusable.then_some(conn).and_then(follow) {
                        Some(conn) => return Ok(Pooled::new(conn, slot)),
                        None => slot,
                    }
                }
                Ok(Handoff::Slot(slot)) => slot,
                // The pool never drops a waiter unanswered; be defensive anyway.
                Err(_) => return Err(ClientError::Closed),
            },
        };
        let conn = self.shared.connect().await?;
        Ok(Pooled::new(conn, slot))
    }

    /// Closes every idle connection now.
    pub(crate) fn close_idle(&self) {
        let dead: Vec<Idle> = {
            let mut st = self.shared.lock();
            let dead: Vec<Idle> = st.idle.drain(..).collect();
            st.open -= dead.len();
            dead
        };
        drop(dead);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(
        thread: std::thread::ThreadId,
        age: Duration,
    ) -> (Waiter, oneshot::Receiver<Handoff>) {
        let (tx, rx) = oneshot::channel();
        let since = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
        (Waiter { tx, thread, since }, rx)
    }

    #[test]
    fn a_connection_goes_to_a_waiter_of_its_thread_unless_the_first_waited_too_long() {
        let here = std::thread::current().id();
        let there = std::thread::spawn(|| std::thread::current().id())
            .join()
            .unwrap();
        let mut st = State::default();
        let (a, _ra) = waiter(there, Duration::ZERO);
        let (b, _rb) = waiter(here, Duration::ZERO);
        st.waiters.extend([a, b]);
        assert_eq!(
            st.next_waiter_here().unwrap().thread,
            here,
            "this thread's first"
        );
        assert_eq!(
            st.next_waiter_here().unwrap().thread,
            there,
            "then whoever is left"
        );
        assert!(st.next_waiter_here().is_none());
        // A first waiter queued past PREFER_FOR goes first.
        let (a, _ra) = waiter(there, PREFER_FOR * 3);
        let (b, _rb) = waiter(here, Duration::ZERO);
        st.waiters.extend([a, b]);
        assert_eq!(st.next_waiter_here().unwrap().thread, there);
    }
}
