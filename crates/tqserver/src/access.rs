//! Access log lines: one per request, written when its response has been
//! sent (so the byte count and duration are real), in the combined format
//! by default, as JSON, or in php-fpm's `access.format` notation.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use std::sync::{Arc, Mutex, Weak};

use crate::logging::{DailyFile, WorkerLog};

/// How a line is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessFormat {
    /// Apache/nginx "combined", then `rid=`, `rt=` (seconds) and
    /// `upstream=` (log parsers for combined ignore what follows).
    Combined,
    /// One JSON object per line.
    Json,
    /// php-fpm's `access.format` directives (`%R - %u %t "%m %r" %s`).
    Fpm(String),
}

impl AccessFormat {
    /// `combined`, `json`, or a php-fpm format string (it has a `%`).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "" | "combined" => Ok(Self::Combined),
            "json" => Ok(Self::Json),
            f if f.contains('%') => Ok(Self::Fpm(f.to_string())),
            other => Err(format!(
                "unknown access log format {other:?}: use combined, json, or a php-fpm access.format string such as \"%R - %u %t \\\"%m %r\\\" %s\""
            )),
        }
    }
}

/// Which process answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServedBy {
    /// A php-cgi process of TQServer's pool.
    Pid(u32),
    /// A native worker instance on this port.
    Port(u16),
    /// php-fpm at this address (it does not say which child).
    Fpm(std::sync::Arc<str>),
}

impl std::fmt::Display for ServedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pid(p) => write!(f, "pid:{p}"),
            Self::Port(p) => write!(f, "127.0.0.1:{p}"),
            Self::Fpm(a) => write!(f, "php-fpm:{a}"),
        }
    }
}

/// Everything a line can say about one request.
#[derive(Debug, Clone)]
pub struct Entry {
    /// When the request arrived.
    pub time: SystemTime,
    /// Client address.
    pub peer: IpAddr,
    /// Method.
    pub method: http::Method,
    /// Path and query as received.
    pub uri: http::Uri,
    /// HTTP version.
    pub version: http::Version,
    /// Status sent.
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: u64,
    /// Request `Content-Length`, if declared.
    pub content_length: Option<u64>,
    /// `Referer`.
    pub referer: Option<String>,
    /// `User-Agent`.
    pub user_agent: Option<String>,
    /// `X-Request-Id` (received or generated).
    pub request_id: String,
    /// Arrival to the last byte sent.
    pub duration: Duration,
    /// The worker.
    pub worker: String,
    /// The process that answered, if one did.
    pub upstream: Option<ServedBy>,
}

fn version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

fn clf_time(t: SystemTime, fmt: &str) -> String {
    chrono::DateTime::<chrono::Local>::from(t)
        .format(fmt)
        .to_string()
}

/// `[10/Oct/2000:13:55:36 -0700]`'s inside, formatted once per second per
/// thread: every line of a busy second shares it.
fn clf_now(t: SystemTime) -> String {
    use std::cell::RefCell;
    thread_local! {
        static LAST: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    LAST.with(|l| {
        let mut l = l.borrow_mut();
        if l.0 != secs {
            *l = (secs, clf_time(t, "%d/%b/%Y:%H:%M:%S %z"));
        }
        l.1.clone()
    })
}

/// Escapes `"` and `\` and control bytes, as nginx does in its log.
fn quoted(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'"' | b'\\' => {
                o.push('\\');
                o.push(b as char);
            }
            0x20..=0x7e => o.push(b as char),
            _ => {
                let _ = write!(o, "\\x{b:02X}");
            }
        }
    }
    o
}

impl Entry {
    /// The line, without its newline.
    pub fn format(&self, f: &AccessFormat) -> String {
        match f {
            AccessFormat::Combined => self.combined(),
            AccessFormat::Json => self.json(),
            AccessFormat::Fpm(spec) => self.fpm(spec),
        }
    }

    fn combined(&self) -> String {
        let upstream = self
            .upstream
            .as_ref()
            .map_or_else(|| "-".to_string(), ToString::to_string);
        format!(
            "{} - - [{}] \"{} {} {}\" {} {} \"{}\" \"{}\" rid={} rt={:.3} upstream={}",
            self.peer,
            clf_now(self.time),
            self.method,
            quoted(&self.uri.to_string()),
            version(self.version),
            self.status,
            self.bytes,
            quoted(self.referer.as_deref().unwrap_or("-")),
            quoted(self.user_agent.as_deref().unwrap_or("-")),
            quoted(&self.request_id),
            self.duration.as_secs_f64(),
            upstream
        )
    }

    fn json(&self) -> String {
        serde_json::json!({
            "time": clf_time(self.time, "%Y-%m-%dT%H:%M:%S%.3f%:z"),
            "remote_addr": self.peer.to_string(),
            "method": self.method.as_str(),
            "uri": self.uri.to_string(),
            "protocol": version(self.version),
            "status": self.status,
            "bytes": self.bytes,
            "duration_ms": (self.duration.as_secs_f64() * 1e6).round() / 1e3,
            "request_id": self.request_id,
            "worker": self.worker,
            "upstream": self.upstream.as_ref().map(ToString::to_string),
            "referer": self.referer,
            "user_agent": self.user_agent,
        })
        .to_string()
    }

    /// php-fpm's `access.format`: `%{arg}X` or `%X`. Directives TQServer
    /// cannot know (`%C` CPU, `%M` memory of the PHP process, `%f` the
    /// script of a native worker) print `-`, as php-fpm does for unset
    /// values.
    fn fpm(&self, spec: &str) -> String {
        let mut o = String::with_capacity(spec.len() + 64);
        let mut chars = spec.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '%' {
                o.push(c);
                continue;
            }
            let mut arg = None;
            if chars.peek() == Some(&'{') {
                chars.next();
                let a: String = chars.by_ref().take_while(|c| *c != '}').collect();
                arg = Some(a);
            }
            let Some(d) = chars.next() else {
                o.push('%');
                break;
            };
            let query = self.uri.query().unwrap_or("");
            match d {
                '%' => o.push('%'),
                'd' => {
                    let s = self.duration.as_secs_f64();
                    let _ = match arg.as_deref() {
                        Some("milliseconds" | "milli" | "mili") => write!(o, "{:.3}", s * 1e3),
                        Some("microseconds" | "micro") => write!(o, "{:.0}", s * 1e6),
                        _ => write!(o, "{s:.3}"),
                    };
                }
                'e' => {
                    let v = match arg.as_deref() {
                        Some("HTTP_X_REQUEST_ID") | Some("REQUEST_ID") => {
                            Some(self.request_id.clone())
                        }
                        Some("HTTP_REFERER") => self.referer.clone(),
                        Some("HTTP_USER_AGENT") => self.user_agent.clone(),
                        _ => None,
                    };
                    o.push_str(v.as_deref().unwrap_or("-"));
                }
                'l' => {
                    let _ = write!(o, "{}", self.content_length.unwrap_or(0));
                }
                'm' => o.push_str(self.method.as_str()),
                'n' => o.push_str(&self.worker),
                'p' => match &self.upstream {
                    Some(ServedBy::Pid(p)) => {
                        let _ = write!(o, "{p}");
                    }
                    Some(ServedBy::Port(p)) => {
                        let _ = write!(o, "{p}");
                    }
                    _ => o.push('-'),
                },
                'P' => {
                    let _ = write!(o, "{}", std::process::id());
                }
                'q' => o.push_str(query),
                'Q' => o.push_str(if query.is_empty() { "" } else { "?" }),
                'r' => o.push_str(self.uri.path()),
                'R' => {
                    let _ = write!(o, "{}", self.peer);
                }
                's' => {
                    let _ = write!(o, "{}", self.status);
                }
                't' | 'T' => match arg.as_deref() {
                    Some(fmt) => o.push_str(&clf_time(self.time, fmt)),
                    None => o.push_str(&clf_now(self.time)),
                },
                'o' => o.push('-'),
                // %C, %M, %f, %u and unknown ones.
                _ => o.push('-'),
            }
        }
        o
    }
}

/// Where one route's access lines go: the worker's log, the server-wide
/// access log, or both.
#[derive(Clone, Default)]
pub struct AccessLog {
    sinks: Vec<(Sink, AccessFormat)>,
}

#[derive(Clone)]
enum Sink {
    Worker(WorkerLog),
    File(AccessFile),
}

/// Lines are written when this much is buffered, as nginx's
/// `access_log … buffer=32k`.
const BUFFER: usize = 32 << 10;
/// …and at least this often (nginx's `flush=`).
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// An access log file (`{date}`, `{name}`; reopened on SIGUSR1), written
/// in blocks: one write(2) per request would cost more than everything
/// else TQServer records about it. Lines reach the file within a second,
/// and when TQServer stops.
#[derive(Clone)]
pub struct AccessFile(Arc<Mutex<Buffered>>);

struct Buffered {
    file: DailyFile,
    buf: Vec<u8>,
}

impl Buffered {
    fn flush(&mut self) {
        if !self.buf.is_empty() {
            if let Err(e) = std::io::Write::write_all(&mut self.file, &self.buf) {
                tracing::error!("access log {}: {e}", self.file.current_path().display());
            }
            self.buf.clear();
        }
    }
}

impl Drop for Buffered {
    fn drop(&mut self) {
        self.flush();
    }
}

impl AccessFile {
    /// Opens `template`; a task flushes it every second while a runtime
    /// runs and the file is in use.
    pub fn open(template: &str, name: &str) -> std::io::Result<Self> {
        let f = Self(Arc::new(Mutex::new(Buffered {
            file: DailyFile::open(template, name)?,
            buf: Vec::with_capacity(BUFFER),
        })));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let weak: Weak<Mutex<Buffered>> = Arc::downgrade(&f.0);
            rt.spawn(async move {
                let mut tick = tokio::time::interval(FLUSH_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(f) = weak.upgrade() else { return };
                    f.lock().unwrap_or_else(|e| e.into_inner()).flush();
                }
            });
        }
        Ok(f)
    }

    /// Appends `line` and a newline.
    pub fn write_line(&self, line: &str) {
        let mut b = self.0.lock().unwrap_or_else(|e| e.into_inner());
        b.buf.extend_from_slice(line.as_bytes());
        b.buf.push(b'\n');
        if b.buf.len() >= BUFFER {
            b.flush();
        }
    }

    /// Writes what is buffered now.
    pub fn flush(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).flush();
    }
}

impl AccessLog {
    /// No line is written anywhere.
    pub fn is_off(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Lines into the worker's log (its `logging.log_file`, or the server
    /// log tagged with its name).
    pub fn to_worker(&mut self, log: WorkerLog, format: AccessFormat) {
        self.sinks.push((Sink::Worker(log), format));
    }

    /// Lines, alone, into a file.
    pub fn to_file(&mut self, file: AccessFile, format: AccessFormat) {
        self.sinks.push((Sink::File(file), format));
    }

    /// Writes `e` everywhere this route logs to.
    pub fn write(&self, e: &Entry) {
        for (sink, format) in &self.sinks {
            let line = e.format(format);
            match sink {
                Sink::Worker(w) => w.info(&line),
                Sink::File(f) => f.write_line(&line),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            peer: "127.0.0.1".parse().unwrap(),
            method: http::Method::GET,
            uri: "/blog/x.php?a=1".parse().unwrap(),
            version: http::Version::HTTP_11,
            status: 200,
            bytes: 12,
            content_length: None,
            referer: None,
            user_agent: Some("curl/8 \"q\"".into()),
            request_id: "abc".into(),
            duration: Duration::from_micros(2500),
            worker: "blog".into(),
            upstream: Some(ServedBy::Pid(42)),
        }
    }

    #[test]
    fn combined_json_and_fpm_formats() {
        let e = entry();
        let c = e.format(&AccessFormat::Combined);
        assert!(c.starts_with("127.0.0.1 - - ["), "{c}");
        assert!(
            c.ends_with("] \"GET /blog/x.php?a=1 HTTP/1.1\" 200 12 \"-\" \"curl/8 \\\"q\\\"\" rid=abc rt=0.003 upstream=pid:42"),
            "{c}"
        );
        let j: serde_json::Value = serde_json::from_str(&e.format(&AccessFormat::Json)).unwrap();
        assert_eq!(j["status"], 200);
        assert_eq!(j["duration_ms"], 2.5);
        assert_eq!(j["upstream"], "pid:42");
        let f =
            AccessFormat::parse("%R %m %r%Q%q %s %{mili}d %p %n %{HTTP_X_REQUEST_ID}e %C").unwrap();
        assert_eq!(
            e.format(&f),
            "127.0.0.1 GET /blog/x.php?a=1 200 2.500 42 blog abc -"
        );
        assert!(AccessFormat::parse("apache").is_err());
    }
}
