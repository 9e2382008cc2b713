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

    /// php-fpm's plain-text status (`pm.status_path`); with `full`, a
    /// block per process as php-fpm's `?full`.
    pub fn to_text(&self, full: bool) -> String {
        let mut o = String::new();
        let line = |o: &mut String, k: &str, v: Value| {
            let v = match v {
                Value::Str(s) => s,
                Value::Num(n) => n.to_string(),
                Value::Time(t) => fpm_time(t),
            };
            let _ = writeln!(o, "{:<22}{v}", format!("{k}:"));
        };
        for (k, v) in self.fields() {
            line(&mut o, k, v);
        }
        if full {
            for p in &self.processes {
                o.push_str("\n************************\n");
                for (k, v) in p.fields() {
                    line(&mut o, k, v);
                }
            }
        }
        o
    }

    /// php-fpm's `?json` status; with `full`, its `processes` array.
    pub fn to_json(&self, full: bool) -> String {
        let mut body = json_fields(self.fields());
        if full {
            let procs: Vec<String> = self
                .processes
                .iter()
                .map(|p| format!("{{{}}}", json_fields(p.fields())))
                .collect();
            body.push_str(&format!(",\"processes\":[{}]", procs.join(",")));
        }
        format!("{{{body}}}")
    }
}

fn json_fields(fields: Vec<(&'static str, Value)>) -> String {
    fields
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::Str(s) => json_str(&s),
                Value::Num(n) => n.to_string(),
                Value::Time(t) => unix(t).to_string(),
            };
            format!("{}:{v}", json_str(k))
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl ProcessInfo {
    /// php-fpm's per-process fields that TQServer knows (php-fpm's "last
    /// request cpu" and "last request memory" are measured inside PHP, which
    /// php-cgi does not report: left out, not invented), plus the
    /// process's resident memory.
    fn fields(&self) -> Vec<(&'static str, Value)> {
        let since = SystemTime::now()
            .duration_since(self.start_time)
            .map_or(0, |d| d.as_secs());
        let req = self.request.clone().unwrap_or_default();
        let mut f = vec![
            ("pid", Value::Num(u64::from(self.pid))),
            ("state", Value::Str(self.state.to_string())),
            ("start time", Value::Time(self.start_time)),
            ("start since", Value::Num(since)),
            ("requests", Value::Num(self.requests)),
            (
                "request duration",
                Value::Num(self.request_duration.map_or(0, |d| d.as_micros() as u64)),
            ),
            ("request method", Value::Str(or_dash(req.method))),
            ("request URI", Value::Str(or_dash(req.uri))),
            ("content length", Value::Num(req.content_length)),
            ("user", Value::Str("-".into())),
            ("script", Value::Str(or_dash(req.script))),
        ];
        if let Some(rss) = self.rss_bytes {
            f.push(("rss", Value::Num(rss)));
        }
        f
    }
}

fn or_dash(s: String) -> String {
    if s.is_empty() { "-".into() } else { s }
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
        let text = s.to_text(false);
        // php-fpm aligns values after the longest key plus one space.
        assert!(text.starts_with("pool:                 blog\n"), "{text}");
        assert!(text.contains("\naccepted conn:        7\n"), "{text}");
        assert!(text.contains("\nmax children reached: 1\n"), "{text}");
        assert!(text.ends_with("\nslow requests:        0\n"), "{text}");
        let json = s.to_json(false);
        assert!(
            json.starts_with("{\"pool\":\"blog\",\"process manager\":\"dynamic\","),
            "{json}"
        );
        assert!(json.contains("\"max listen queue\":3,"), "{json}");

        let mut s = s;
        s.processes.push(ProcessInfo {
            pid: 42,
            state: "Running",
            start_time: SystemTime::now(),
            requests: 3,
            request_duration: Some(Duration::from_millis(5)),
            request: Some(RequestInfo {
                method: "GET".into(),
                uri: "/x.php?a=\"b\"".into(),
                script: "/srv/x.php".into(),
                content_length: 0,
            }),
            rss_bytes: None,
        });
        let text = s.to_text(true);
        assert!(text.contains("\n************************\npid:                  42\nstate:                Running\n"), "{text}");
        assert!(text.contains("\nrequest duration:     5000\n"), "{text}");
        let json = s.to_json(true);
        assert!(
            json.contains(",\"processes\":[{\"pid\":42,\"state\":\"Running\","),
            "{json}"
        );
        assert!(
            json.contains("\"request URI\":\"/x.php?a=\\\"b\\\"\""),
            "{json}"
        );
    }
}
