//! The pool's state as php-fpm prints it on its status page: the same
//! field names and formats (text and `?json`), so scripts written for
//! php-fpm's `pm.status_path` read TQServer's too.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use super::RequestInfo;

/// The pool at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// `pool`: the worker's name.
    pub pool: String,
    /// `process manager`.
    pub manager: &'static str,
    /// `start time`.
    pub start_time: SystemTime,
    /// `accepted conn`: requests the pool took.
    pub accepted: u64,
    /// `listen queue`: requests waiting for a process now.
    pub listen_queue: usize,
    /// `max listen queue`.
    pub max_listen_queue: usize,
    /// `listen queue len`: the queue's bound (`php.pool.max_queue`).
    pub listen_queue_len: usize,
    /// `idle processes`.
    pub idle: usize,
    /// `active processes`.
    pub active: usize,
    /// `total processes` (not counting processes on their way out).
    pub total: usize,
    /// `max active processes`.
    pub max_active: usize,
    /// `max children reached`: times a request waited with every process
    /// busy and the pool at `max_workers`.
    pub max_children_reached: u64,
    /// `slow requests`: over `logging.slow_log.threshold`.
    pub slow_requests: u64,
    /// Processes started.
    pub spawned: u64,
    /// Processes retired after `max_requests`.
    pub recycled: u64,
    /// Processes killed at `request_timeout`.
    pub timed_out: u64,
    /// Processes that died unexpectedly after they were ready.
    pub crashed: u64,
    /// Why the pool stopped starting processes, if it did.
    pub failed: Option<String>,
    /// Every process.
    pub processes: Vec<ProcessInfo>,
}

/// One process (`?full`).
#[derive(Debug, Clone)]
pub struct ProcessInfo {
    /// `pid`.
    pub pid: u32,
    /// `state`, php-fpm's words: Idle, Running, Starting, Finishing.
    pub state: &'static str,
    /// `start time`.
    pub start_time: SystemTime,
    /// `requests`.
    pub requests: u64,
    /// `request duration`: the current request's so far, else the last one's.
    pub request_duration: Option<Duration>,
    /// The current request, else the last one.
    pub request: Option<RequestInfo>,
    /// Resident memory, from /proc.
    pub rss_bytes: Option<u64>,
}

/// Resident set size of `pid` from `/proc/{pid}/statm`.
pub(super) fn rss_bytes(pid: u32) -> Option<u64> {
    if pid == 0 {
        return None;
    }
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn fpm_time(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Local>::from(t)
        .format("%d/%b/%Y:%H:%M:%S %z")
        .to_string()
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

impl Snapshot {
    fn fields(&self) -> Vec<(&'static str, Value)> {
        let since = SystemTime::now()
            .duration_since(self.start_time)
            .map_or(0, |d| d.as_secs());
        vec![
            ("pool", Value::Str(self.pool.clone())),
            ("process manager", Value::Str(self.manager.to_string())),
            ("start time", Value::Time(self.start_time)),
            ("start since", Value::Num(since)),
            ("accepted conn", Value::Num(self.accepted)),
            ("listen queue", Value::Num(self.listen_queue as u64)),
            ("max listen queue", Value::Num(self.max_listen_queue as u64)),
            ("listen queue len", Value::Num(self.listen_queue_len as u64)),
            ("idle processes", Value::Num(self.idle as u64)),
            ("active processes", Value::Num(self.active as u64)),
            ("total processes", Value::Num(self.total as u64)),
            ("max active processes", Value::Num(self.max_active as u64)),
            (
                "max children reached",
                Value::Num(self.max_children_reached),
            ),
            ("slow requests", Value::Num(self.slow_requests)),
        ]
    }

    /// php-fpm's plain-text status (`pm.status_path` without a query).
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        for (k, v) in self.fields() {
            let v = match v {
                Value::Str(s) => s,
                Value::Num(n) => n.to_string(),
                Value::Time(t) => fpm_time(t),
            };
            let _ = writeln!(o, "{:<22}{v}", format!("{k}:"));
        }
        o
    }

    /// php-fpm's `?json` status.
    pub fn to_json(&self) -> String {
        let body: Vec<String> = self
            .fields()
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::Str(s) => json_str(&s),
                    Value::Num(n) => n.to_string(),
                    Value::Time(t) => unix(t).to_string(),
                };
                format!("{}:{v}", json_str(k))
            })
            .collect();
        format!("{{{}}}", body.join(","))
    }
}

enum Value {
    Str(String),
    Num(u64),
    Time(SystemTime),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            pool: "blog".into(),
            manager: "dynamic",
            start_time: SystemTime::now(),
            accepted: 7,
            listen_queue: 0,
            max_listen_queue: 3,
            listen_queue_len: 512,
            idle: 1,
            active: 1,
            total: 2,
            max_active: 2,
            max_children_reached: 1,
            slow_requests: 0,
            spawned: 2,
            recycled: 0,
            timed_out: 0,
            crashed: 0,
            failed: None,
            processes: Vec::new(),
        }
    }

    #[test]
    fn text_and_json_use_php_fpm_field_names() {
        let s = sample();
        let text = s.to_text();
        // php-fpm aligns values after the longest key plus one space.
        assert!(text.starts_with("pool:                 blog\n"), "{text}");
        assert!(text.contains("\naccepted conn:        7\n"), "{text}");
        assert!(text.contains("\nmax children reached: 1\n"), "{text}");
        assert!(text.ends_with("\nslow requests:        0\n"), "{text}");
        let json = s.to_json();
        assert!(
            json.starts_with("{\"pool\":\"blog\",\"process manager\":\"dynamic\","),
            "{json}"
        );
        assert!(json.contains("\"max listen queue\":3,"), "{json}");
    }
}
