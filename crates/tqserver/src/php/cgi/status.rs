//! The pool's state as php-fpm prints it on its status page: the same
//! field names and formats (text, `?json`, `?html`, `?xml`,
//! `?openmetrics`, each with `&full`), so scripts and exporters written
//! for php-fpm's `pm.status_path` read TQServer's too.

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
    /// `php.backend`: cgi or embed.
    pub backend: &'static str,
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

impl Snapshot {
    /// The pool's status for metrics and the dashboard.
    pub fn pool_status(&self) -> crate::metrics::pools::PoolStatus {
        use crate::metrics::pools::{PoolStatus, ProcessStatus};
        PoolStatus {
            worker: self.pool.clone(),
            backend: self.backend,
            up: self.failed.is_none(),
            idle: Some(self.idle as u64),
            active: self.active as u64,
            total: self.total as u64,
            max_active: self.max_active as u64,
            listen_queue: self.listen_queue as u64,
            max_listen_queue: self.max_listen_queue as u64,
            accepted: self.accepted,
            max_children_reached: self.max_children_reached,
            slow_requests: self.slow_requests,
            spawned: self.spawned,
            recycled: self.recycled,
            timed_out: self.timed_out,
            crashed: self.crashed,
            processes: self
                .processes
                .iter()
                .map(|p| ProcessStatus {
                    label: format!("pid {}", p.pid),
                    state: p.state.to_string(),
                    requests: p.requests,
                    active: None,
                    uptime_seconds: p.start_time.elapsed().map_or(0, |d| d.as_secs()),
                })
                .collect(),
            upgraded: None,
            scaling: None,
        }
    }
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

/// One of php-fpm's status formats, from the query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The default.
    Text,
    /// `?json`.
    Json,
    /// `?html`.
    Html,
    /// `?xml`.
    Xml,
    /// `?openmetrics`.
    OpenMetrics,
}

/// A status request: its format, and whether `full` was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    /// The format.
    pub format: Format,
    /// Per-process blocks.
    pub full: bool,
}

impl Query {
    /// Reads php-fpm's query words (`json&full`); the first format word
    /// wins, as in php-fpm.
    pub fn parse(query: &str) -> Self {
        let words: Vec<&str> = query
            .split('&')
            .map(|w| w.split('=').next().unwrap_or(w))
            .collect();
        let has = |k: &str| words.contains(&k);
        let format = if has("json") {
            Format::Json
        } else if has("html") {
            Format::Html
        } else if has("xml") {
            Format::Xml
        } else if has("openmetrics") {
            Format::OpenMetrics
        } else {
            Format::Text
        };
        Self {
            format,
            full: has("full"),
        }
    }

    /// The Content-Type php-fpm sends for this format.
    pub fn content_type(&self) -> &'static str {
        match self.format {
            Format::Text => "text/plain;charset=UTF-8",
            Format::Json => "application/json",
            Format::Html => "text/html;charset=UTF-8",
            Format::Xml => "text/xml;charset=UTF-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// php-fpm's per-process keys in the json, html and xml formats (its text
/// format alone says `request URI`).
fn lower_uri(k: &str) -> &str {
    if k == "request URI" { "request uri" } else { k }
}

impl Snapshot {
    /// The page for `q`, as php-fpm renders it.
    pub fn render(&self, q: Query) -> String {
        match q.format {
            Format::Text => self.to_text(q.full),
            Format::Json => self.to_json(q.full),
            Format::Html => self.to_html(q.full),
            Format::Xml => self.to_xml(q.full),
            Format::OpenMetrics => self.to_openmetrics(),
        }
    }

    /// php-fpm's `?html`.
    pub fn to_html(&self, full: bool) -> String {
        let mut o = String::from(
            "<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Strict//EN\" \"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd\">\n<html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">\n<head><title>PHP-FPM Status Page</title></head>\n<body>\n<table>\n",
        );
        for (k, v) in self.fields() {
            let _ = writeln!(
                o,
                "<tr><th>{k}</th><td>{}</td></tr>",
                html_escape(&v.text())
            );
        }
        o.push_str("</table>\n");
        if full {
            o.push_str("<table border=\"1\">\n<tr>");
            if let Some(p) = self.processes.first() {
                for (k, _) in p.fields() {
                    let _ = write!(o, "<th>{}</th>", lower_uri(k));
                }
            }
            o.push_str("</tr>\n");
            for p in &self.processes {
                o.push_str("<tr>");
                for (_, v) in p.fields() {
                    let _ = write!(o, "<td>{}</td>", html_escape(&v.text()));
                }
                o.push_str("</tr>\n");
            }
            o.push_str("</table>");
        }
        o.push_str("</body></html>");
        o
    }

    /// php-fpm's `?xml`.
    pub fn to_xml(&self, full: bool) -> String {
        let tag = |k: &str| lower_uri(k).replace(' ', "-");
        let mut o = String::from("<?xml version=\"1.0\" ?>\n<status>\n");
        for (k, v) in self.fields() {
            let t = tag(k);
            let _ = writeln!(o, "<{t}>{}</{t}>", html_escape(&v.raw()));
        }
        if full {
            o.push_str("<processes>\n");
            for p in &self.processes {
                o.push_str("<process>");
                for (k, v) in p.fields() {
                    let t = tag(k);
                    let _ = write!(o, "<{t}>{}</{t}>", html_escape(&v.raw()));
                }
                o.push_str("</process>\n");
            }
            o.push_str("</processes>\n");
        }
        o.push_str("</status>");
        o
    }

    /// php-fpm's `?openmetrics`: its `phpfpm_*` names, types and help.
    pub fn to_openmetrics(&self) -> String {
        let since = SystemTime::now()
            .duration_since(self.start_time)
            .map_or(0, |d| d.as_secs());
        let rows: [(&str, &str, &str, u64); 12] = [
            (
                "phpfpm_up",
                "gauge",
                &format!(
                    "Could pool {} using a {} PM on PHP-FPM be reached?",
                    self.pool, self.manager
                ),
                u64::from(self.failed.is_none()),
            ),
            (
                "phpfpm_start_since",
                "counter",
                "The number of seconds since FPM has started.",
                since,
            ),
            (
                "phpfpm_accepted_connections",
                "counter",
                "The number of requests accepted by the pool.",
                self.accepted,
            ),
            (
                "phpfpm_listen_queue",
                "gauge",
                "The number of requests in the queue of pending connections.",
                self.listen_queue as u64,
            ),
            (
                "phpfpm_max_listen_queue",
                "counter",
                "The maximum number of requests in the queue of pending connections since FPM has started.",
                self.max_listen_queue as u64,
            ),
            (
                "phpfpm_listen_queue_length",
                "gauge",
                "The size of the socket queue of pending connections.",
                self.listen_queue_len as u64,
            ),
            (
                "phpfpm_idle_processes",
                "gauge",
                "The number of idle processes.",
                self.idle as u64,
            ),
            (
                "phpfpm_active_processes",
                "gauge",
                "The number of active processes.",
                self.active as u64,
            ),
            (
                "phpfpm_total_processes",
                "gauge",
                "The number of idle + active processes.",
                self.total as u64,
            ),
            (
                "phpfpm_max_active_processes",
                "counter",
                "The maximum number of active processes since FPM has started.",
                self.max_active as u64,
            ),
            (
                "phpfpm_max_children_reached",
                "counter",
                "The number of times, the process limit has been reached, when pm tries to start more children (works only for pm 'dynamic' and 'ondemand').",
                self.max_children_reached,
            ),
            (
                "phpfpm_slow_requests",
                "counter",
                "The number of requests that exceeded your 'request_slowlog_timeout' value.",
                self.slow_requests,
            ),
        ];
        let mut o = String::new();
        for (name, kind, help, v) in rows {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        }
        o.push_str("# EOF\n");
        o
    }

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
            let _ = writeln!(o, "{:<22}{}", format!("{k}:"), v.text());
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
                .map(|p| {
                    let f = p.fields().into_iter().map(|(k, v)| (lower_uri(k), v));
                    format!("{{{}}}", json_fields(f.collect()))
                })
                .collect();
            body.push_str(&format!(",\"processes\":[{}]", procs.join(",")));
        }
        format!("{{{body}}}")
    }
}

fn json_fields(fields: Vec<(&str, Value)>) -> String {
    fields
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::Str(s) => json_str(&s),
                v => v.raw(),
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

impl Value {
    /// As the text and html formats print it (times as dates).
    fn text(&self) -> String {
        match self {
            Self::Str(s) => s.clone(),
            Self::Num(n) => n.to_string(),
            Self::Time(t) => fpm_time(*t),
        }
    }

    /// As the json and xml formats print it (times as Unix seconds).
    fn raw(&self) -> String {
        match self {
            Self::Time(t) => unix(*t).to_string(),
            v => v.text(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            pool: "blog".into(),
            manager: "dynamic",
            backend: "cgi",
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
            json.contains("\"request uri\":\"/x.php?a=\\\"b\\\"\""),
            "{json}"
        );
        let html = s.to_html(true);
        assert!(
            html.contains("<tr><th>accepted conn</th><td>7</td></tr>"),
            "{html}"
        );
        assert!(html.contains("<th>request uri</th>"), "{html}");
        assert!(html.contains("<td>/x.php?a=&quot;b&quot;</td>"), "{html}");
        let xml = s.to_xml(true);
        assert!(
            xml.contains("\n<max-children-reached>1</max-children-reached>\n"),
            "{xml}"
        );
        assert!(
            xml.contains("<process><pid>42</pid><state>Running</state>"),
            "{xml}"
        );
        let om = s.to_openmetrics();
        assert!(
            om.contains(
                "# TYPE phpfpm_accepted_connections counter\nphpfpm_accepted_connections 7\n"
            ),
            "{om}"
        );
        assert!(om.ends_with("# EOF\n"));
        assert_eq!(
            Query::parse("json&full"),
            Query {
                format: Format::Json,
                full: true
            }
        );
        assert_eq!(Query::parse("").format, Format::Text);
    }
}
