//! Access log lines: one per request, written when its response has been
//! sent (so the byte count and duration are real), in the combined format
//! by default, as JSON, or in php-fpm's `access.format` notation.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use std::sync::{Arc, Mutex, Weak};

use http::HeaderValue;

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

/// Everything a line can say about one request. Header values are kept
/// as hyper parsed them (clones share its buffer): a line costs no
/// allocation until it is written.
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
    /// Over HTTPS (TLS here, or a trusted proxy's `X-Forwarded-Proto`).
    pub https: bool,
    /// Status sent.
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: u64,
    /// Request `Content-Length`, if declared.
    pub content_length: Option<u64>,
    /// `Referer`.
    pub referer: Option<HeaderValue>,
    /// `User-Agent`.
    pub user_agent: Option<HeaderValue>,
    /// `X-Request-Id` (received or generated).
    pub request_id: HeaderValue,
    /// Arrival to the last byte sent.
    pub duration: Duration,
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

/// Writes `10/Oct/2000:13:55:36 -0700`, formatted once per second per
/// thread: every line of a busy second shares it.
fn clf_now(t: SystemTime, out: &mut Vec<u8>) {
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
        out.extend_from_slice(l.1.as_bytes());
    });
}

/// Writes `b` with `"` and `\` escaped and bytes outside printable ASCII
/// as `\xHH`, as nginx does in its log.
fn quoted(b: &[u8], out: &mut Vec<u8>) {
    for &c in b {
        match c {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', c]),
            0x20..=0x7e => out.push(c),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.extend_from_slice(&[
                    b'\\',
                    b'x',
                    HEX[usize::from(c >> 4)],
                    HEX[usize::from(c & 15)],
                ]);
            }
        }
    }
}

fn or_dash(v: Option<&HeaderValue>) -> &[u8] {
    v.map_or(b"-", HeaderValue::as_bytes)
}

/// The JSON line's fields, borrowed.
#[derive(serde::Serialize)]
struct JsonLine<'a> {
    time: String,
    remote_addr: IpAddr,
    method: &'a str,
    uri: std::borrow::Cow<'a, str>,
    scheme: &'static str,
    protocol: &'static str,
    status: u16,
    bytes: u64,
    duration_ms: f64,
    request_id: std::borrow::Cow<'a, str>,
    worker: &'a str,
    upstream: Option<String>,
    referer: Option<std::borrow::Cow<'a, str>>,
    user_agent: Option<std::borrow::Cow<'a, str>>,
}

impl Entry {
    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }

    /// The line, without its newline (tests, and the worker-log sink).
    pub fn format(&self, worker: &str, f: &AccessFormat) -> String {
        let mut out = Vec::with_capacity(256);
        self.write(worker, f, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Appends the line, without its newline, to `out`.
    pub fn write(&self, worker: &str, f: &AccessFormat, out: &mut Vec<u8>) {
        match f {
            AccessFormat::Combined => self.combined(out),
            AccessFormat::Json => self.json(worker, out),
            AccessFormat::Fpm(spec) => self.fpm(worker, spec, out),
        }
    }

    fn combined(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let _ = write!(out, "{} - - [", self.peer);
        clf_now(self.time, out);
        let _ = write!(out, "] \"{} ", self.method);
        let target = self.uri.path_and_query().map_or("/", |p| p.as_str());
        quoted(target.as_bytes(), out);
        let _ = write!(
            out,
            " {}\" {} {} \"",
            version(self.version),
            self.status,
            self.bytes
        );
        quoted(or_dash(self.referer.as_ref()), out);
        out.extend_from_slice(b"\" \"");
        quoted(or_dash(self.user_agent.as_ref()), out);
        out.extend_from_slice(b"\" rid=");
        quoted(self.request_id.as_bytes(), out);
        let _ = write!(out, " rt={:.3} upstream=", self.duration.as_secs_f64());
        match &self.upstream {
            Some(u) => {
                let _ = write!(out, "{u}");
            }
            None => out.push(b'-'),
        }
        let _ = write!(out, " scheme={}", self.scheme());
    }

    fn json(&self, worker: &str, out: &mut Vec<u8>) {
        let text = |v: &'_ HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
        let target = self.uri.path_and_query().map_or("/", |p| p.as_str());
        let line = JsonLine {
            time: clf_time(self.time, "%Y-%m-%dT%H:%M:%S%.3f%:z"),
            remote_addr: self.peer,
            method: self.method.as_str(),
            uri: target.into(),
            scheme: self.scheme(),
            protocol: version(self.version),
            status: self.status,
            bytes: self.bytes,
            duration_ms: (self.duration.as_secs_f64() * 1e6).round() / 1e3,
            request_id: String::from_utf8_lossy(self.request_id.as_bytes()),
            worker,
            upstream: self.upstream.as_ref().map(ToString::to_string),
            referer: self.referer.as_ref().map(|v| text(v).into()),
            user_agent: self.user_agent.as_ref().map(|v| text(v).into()),
        };
        // Serialising plain fields into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &line);
    }

    /// php-fpm's `access.format`: `%{arg}X` or `%X`. Directives TQServer
    /// cannot know (`%C` CPU, `%M` memory of the PHP process, `%f` the
    /// script, `%u` the remote user) print `-`, as php-fpm does for unset
    /// values.
    fn fpm(&self, worker: &str, spec: &str, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let mut chars = spec.chars().peekable();
        let query = self.uri.query().unwrap_or("");
        while let Some(c) = chars.next() {
            if c != '%' {
                let mut b = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                continue;
            }
            let mut arg = None;
            if chars.peek() == Some(&'{') {
                chars.next();
                let a: String = chars.by_ref().take_while(|c| *c != '}').collect();
                arg = Some(a);
            }
            let Some(d) = chars.next() else {
                out.push(b'%');
                break;
            };
            let _ = match d {
                '%' => write!(out, "%"),
                'd' => {
                    let s = self.duration.as_secs_f64();
                    match arg.as_deref() {
                        Some("milliseconds" | "milli" | "mili") => write!(out, "{:.3}", s * 1e3),
                        Some("microseconds" | "micro") => write!(out, "{:.0}", s * 1e6),
                        _ => write!(out, "{s:.3}"),
                    }
                }
                'e' => {
                    let v = match arg.as_deref() {
                        Some("HTTP_X_REQUEST_ID" | "REQUEST_ID") => Some(&self.request_id),
                        Some("HTTP_REFERER") => self.referer.as_ref(),
                        Some("HTTP_USER_AGENT") => self.user_agent.as_ref(),
                        _ => None,
                    };
                    out.write_all(or_dash(v))
                }
                'l' => write!(out, "{}", self.content_length.unwrap_or(0)),
                'm' => write!(out, "{}", self.method),
                'n' => write!(out, "{worker}"),
                'p' => match &self.upstream {
                    Some(ServedBy::Pid(p)) => write!(out, "{p}"),
                    Some(ServedBy::Port(p)) => write!(out, "{p}"),
                    _ => write!(out, "-"),
                },
                'P' => write!(out, "{}", std::process::id()),
                'q' => write!(out, "{query}"),
                'Q' => write!(out, "{}", if query.is_empty() { "" } else { "?" }),
                'r' => write!(out, "{}", self.uri.path()),
                'R' => write!(out, "{}", self.peer),
                // Not php-fpm's: the scheme (nginx's $scheme).
                'S' => write!(out, "{}", self.scheme()),
                's' => write!(out, "{}", self.status),
                't' | 'T' => match arg.as_deref() {
                    Some(fmt) => write!(out, "{}", clf_time(self.time, fmt)),
                    None => {
                        clf_now(self.time, out);
                        Ok(())
                    }
                },
                // %C, %M, %f, %u, %o and unknown ones.
                _ => write!(out, "-"),
            };
        }
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
    WorkerConfig(WorkerLog),
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
pub struct AccessFile(Arc<Buffered>);

/// Requests append to `buf`; whoever fills it (or the timer) takes the
/// block and writes it with only `file` locked, so appenders never wait on
/// the disk. `file` is locked before `buf` is let go: blocks reach the
/// file in the order they were filled.
struct Buffered {
    buf: Mutex<Vec<u8>>,
    file: Mutex<DailyFile>,
}

impl Buffered {
    /// Writes what is buffered; `buf` is the locked buffer.
    fn flush(&self, mut buf: std::sync::MutexGuard<'_, Vec<u8>>) {
        if buf.is_empty() {
            return;
        }
        let block = std::mem::replace(&mut *buf, Vec::with_capacity(BUFFER));
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        drop(buf);
        if let Err(e) = std::io::Write::write_all(&mut *file, &block) {
            tracing::error!("access log {}: {e}", file.current_path().display());
        }
    }

    fn flush_now(&self) {
        self.flush(self.buf.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

impl Drop for Buffered {
    fn drop(&mut self) {
        self.flush_now();
    }
}

impl AccessFile {
    /// Opens `template`; a task flushes it every second while a runtime
    /// runs and the file is in use.
    pub fn open(template: &str, name: &str) -> std::io::Result<Self> {
        let f = Self(Arc::new(Buffered {
            buf: Mutex::new(Vec::with_capacity(BUFFER)),
            file: Mutex::new(DailyFile::open(template, name)?),
        }));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let weak: Weak<Buffered> = Arc::downgrade(&f.0);
            rt.spawn(async move {
                let mut tick = tokio::time::interval(FLUSH_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(f) = weak.upgrade() else { return };
                    f.flush_now();
                }
            });
        }
        Ok(f)
    }

    /// Appends a line: what `line` writes into the buffer, and a newline.
    pub fn append(&self, line: impl FnOnce(&mut Vec<u8>)) {
        let mut b = self.0.buf.lock().unwrap_or_else(|e| e.into_inner());
        line(&mut b);
        b.push(b'\n');
        if b.len() >= BUFFER {
            self.0.flush(b);
        }
    }

    /// Writes what is buffered now.
    pub fn flush(&self) {
        self.0.flush_now();
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
        self.sinks.push((Sink::WorkerConfig(log), format));
    }

    /// Lines, alone, into a file.
    pub fn to_file(&mut self, file: AccessFile, format: AccessFormat) {
        self.sinks.push((Sink::File(file), format));
    }

    /// Writes `e` everywhere this route logs to.
    pub fn write(&self, worker: &str, e: &Entry) {
        for (sink, format) in &self.sinks {
            match sink {
                Sink::WorkerConfig(w) => w.info(&e.format(worker, format)),
                Sink::File(f) => f.append(|buf| e.write(worker, format, buf)),
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
            https: false,
            status: 200,
            bytes: 12,
            content_length: None,
            referer: None,
            user_agent: Some(HeaderValue::from_static("curl/8 \"q\"")),
            request_id: HeaderValue::from_static("abc"),
            duration: Duration::from_micros(2500),
            upstream: Some(ServedBy::Pid(42)),
        }
    }

    #[test]
    fn combined_json_and_fpm_formats() {
        let e = entry();
        let c = e.format("blog", &AccessFormat::Combined);
        assert!(c.starts_with("127.0.0.1 - - ["), "{c}");
        assert!(
            c.ends_with("] \"GET /blog/x.php?a=1 HTTP/1.1\" 200 12 \"-\" \"curl/8 \\\"q\\\"\" rid=abc rt=0.003 upstream=pid:42 scheme=http"),
            "{c}"
        );
        let j: serde_json::Value =
            serde_json::from_str(&e.format("blog", &AccessFormat::Json)).unwrap();
        assert_eq!(j["status"], 200);
        assert_eq!(j["duration_ms"], 2.5);
        assert_eq!(j["upstream"], "pid:42");
        let f =
            AccessFormat::parse("%R %m %r%Q%q %s %{mili}d %p %n %{HTTP_X_REQUEST_ID}e %C").unwrap();
        assert_eq!(
            e.format("blog", &f),
            "127.0.0.1 GET /blog/x.php?a=1 200 2.500 42 blog abc -"
        );
        assert!(AccessFormat::parse("apache").is_err());
    }
}
