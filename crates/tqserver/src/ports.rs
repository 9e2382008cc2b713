//! Ports from `workers.port_range_start..=port_range_end`, handed out once
//! each and skipped when something else already listens on them.

use std::collections::BTreeSet;
use std::net::{IpAddr, TcpListener};
use std::sync::Mutex;

/// The worker port range.
#[derive(Debug)]
pub struct Ports {
    range: (u16, u16),
    used: Mutex<BTreeSet<u16>>,
}

impl Ports {
    /// A range of ports, all free.
    pub fn new(range: (u16, u16)) -> Self {
        Self {
            range,
            used: Mutex::new(BTreeSet::new()),
        }
    }

    /// The configured range.
    pub fn range(&self) -> (u16, u16) {
        self.range
    }

    /// The lowest port not handed out and bindable on `ip` right now.
    pub fn acquire(&self, ip: IpAddr) -> Option<u16> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let port = (self.range.0..=self.range.1)
            .filter(|p| !used.contains(p))
            .find(|&p| TcpListener::bind((ip, p)).is_ok())?;
        used.insert(port);
        Some(port)
    }

    /// Gives a port back.
    pub fn release(&self, port: u16) {
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_unique_and_skip_busy_ones() {
        let busy = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = busy.local_addr().unwrap().port();
        let ports = Ports::new((p, p.saturating_add(2)));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = ports.acquire(ip).unwrap();
        assert_ne!(a, p, "the busy port is skipped");
        let b = ports.acquire(ip);
        assert_ne!(Some(a), b);
        ports.release(a);
        assert_eq!(ports.acquire(ip), Some(a));
    }
}
