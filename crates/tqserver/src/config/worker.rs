//! `workers/{name}/config/worker.yaml`: a worker's route, type and, for
//! PHP, its php-fpm pool. The original TQServer's files load unchanged.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::values::{DurationValue, EnabledValue, ini_value};
use super::yaml::{key_line, nearest};
use super::{ConfigError, Mode};

/// Default `php.pool.manager`, php-fpm's `pm` most people use.
pub const DEFAULT_MANAGER: Manager = Manager::Dynamic;
/// Default `php.pool.max_workers` (php-fpm `pm.max_children`; www.conf: 5).
pub const DEFAULT_MAX_WORKERS: u32 = 5;
/// Default `php.pool.min_workers` (php-fpm `pm.min_spare_servers`; www.conf: 1).
pub const DEFAULT_MIN_WORKERS: u32 = 1;
/// Default `php.pool.request_timeout`: 60 s, like nginx's `fastcgi_read_timeout`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `php.pool.idle_timeout` (ondemand's `pm.process_idle_timeout`; php-fpm: 10 s).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `document_root`, relative to the worker's folder.
pub const DEFAULT_DOCUMENT_ROOT: &str = "public";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkerFile {
    path: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    enabled: Option<EnabledValue>,
    php: Option<PhpSection>,
    document_root: Option<String>,
    logging: Option<LoggingSection>,
    // Keys of work that has not landed yet: recognised so the error can
    // say so instead of "unknown key".
    fastcgi: Option<serde_yaml_ng::Value>,
    command: Option<serde_yaml_ng::Value>,
    scaling: Option<serde_yaml_ng::Value>,
    env: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct PhpSection {
    binary: Option<String>,
    config_file: Option<String>,
    settings: Option<serde_yaml_ng::Mapping>,
    pool: Option<PoolSection>,
    backend: Option<String>,
    front_controller: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct PoolSection {
    manager: Option<String>,
    min_workers: Option<u32>,
    max_workers: Option<u32>,
    start_workers: Option<u32>,
    max_spare_workers: Option<u32>,
    max_requests: Option<u64>,
    request_timeout: Option<DurationValue>,
    idle_timeout: Option<DurationValue>,
    listen_address: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LoggingSection {
    level: Option<String>,
    access_log: Option<bool>,
    slow_log: Option<SlowLogSection>,
    log_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SlowLogSection {
    enabled: Option<bool>,
    threshold: Option<DurationValue>,
}

/// php-fpm's three process managers (`pm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    /// A fixed number of processes.
    Static,
    /// Between a minimum and maximum of idle processes.
    Dynamic,
    /// Processes started on demand, stopped when idle.
    Ondemand,
}

impl Manager {
    /// The php-fpm `pm` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::Dynamic => "dynamic",
            Self::Ondemand => "ondemand",
        }
    }
}

/// Where the php-fpm pool listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A Unix socket in TQServer's private runtime directory (the default).
    RuntimeSocket,
    /// A Unix socket at this path.
    Unix(PathBuf),
    /// This IP, on a port taken from `workers.port_range_*`.
    TcpFromRange(IpAddr),
    /// Exactly this address.
    Tcp(SocketAddr),
}

/// A php-fpm pool, numbers resolved and checked against each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// `pm`.
    pub manager: Manager,
    /// `pm.max_children` (`max_workers`).
    pub max_children: u32,
    /// `pm.start_servers` (`start_workers`, dynamic only).
    pub start: u32,
    /// `pm.min_spare_servers` (`min_workers`, dynamic only).
    pub min_spare: u32,
    /// `pm.max_spare_servers` (`max_spare_workers`, dynamic only).
    pub max_spare: u32,
    /// `pm.max_requests` (0: never recycle).
    pub max_requests: u64,
    /// Longest a request may run; `ZERO` means no limit.
    pub request_timeout: Duration,
    /// ondemand's `pm.process_idle_timeout`.
    pub idle_timeout: Duration,
    /// Where the pool listens.
    pub listen: Listen,
}

impl Pool {
    /// The manager and its numbers in words, as `check` prints them and
    /// PHP sees them in `WORKER_POOL`.
    pub fn describe(&self) -> String {
        match self.manager {
            Manager::Static => format!("static, {} processes", self.max_children),
            Manager::Dynamic => format!(
                "dynamic, start {}, keep {}..{} idle, at most {} processes",
                self.start, self.min_spare, self.max_spare, self.max_children
            ),
            Manager::Ondemand => format!(
                "ondemand, up to {} processes, idle timeout {:?}",
                self.max_children, self.idle_timeout
            ),
        }
    }
}

/// A PHP worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhpWorker {
    /// `php.binary`: the php-fpm to run (else found on PATH and in sbin).
    pub binary: Option<PathBuf>,
    /// `php.config_file`: a php.ini passed with `-c`.
    pub config_file: Option<PathBuf>,
    /// `php.settings`, in file order, as `php_admin_value[...]`.
    pub settings: Vec<(String, String)>,
    /// The pool.
    pub pool: Pool,
    /// Absolute document root.
    pub document_root: PathBuf,
    /// Route requests for missing paths to `index.php` (front controller).
    pub front_controller: bool,
}

/// Per-worker logging (`logging.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerLogging {
    /// Lowest level of the worker's lines that is written.
    pub level: tracing::Level,
    /// Write an access log line per request.
    pub access_log: bool,
    /// Log requests slower than this.
    pub slow_threshold: Option<Duration>,
    /// The worker's own log file (`{name}`, `{date}`), else the server log.
    pub log_file: Option<String>,
}

/// One worker from `workers/{name}/config/worker.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    /// The folder name.
    pub name: String,
    /// Its worker.yaml, as found.
    pub file: PathBuf,
    /// URL path prefix (`/blog`).
    pub route: String,
    /// Runs in this mode.
    pub enabled: bool,
    /// The PHP settings.
    pub php: PhpWorker,
    /// Logging.
    pub logging: WorkerLogging,
}

const TYPES: [&str; 4] = ["php", "rust", "go", "command"];
const MANAGERS: [&str; 3] = ["static", "dynamic", "ondemand"];
const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

impl WorkerFile {
    pub(crate) fn resolve(
        self,
        name: &str,
        dir: &Path,
        file: &Path,
        text: &str,
        mode: Mode,
    ) -> Result<Worker, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let err = |key: &str, msg: String| ConfigError::new(file, key_line(text, key), key, msg);
        let later = [
            (
                "fastcgi",
                self.fastcgi.is_some(),
                "fastcgi.listen (TQServer as a FastCGI server for nginx) is not implemented yet",
            ),
            (
                "command",
                self.command.is_some(),
                "command workers are not implemented yet (they come with the native-workers work)",
            ),
            (
                "scaling",
                self.scaling.is_some(),
                "scaling is for native workers, which are not implemented yet",
            ),
            (
                "env",
                self.env.is_some(),
                "env is for native workers, which are not implemented yet",
            ),
        ];
        for (key, present, why) in later {
            if present {
                errors.push(err(key, why.to_string()));
            }
        }

        let route = match self.path {
            None => {
                errors.push(ConfigError::new(
                    file,
                    None,
                    "path",
                    "missing; give the URL prefix this worker serves, e.g. path: /blog",
                ));
                String::from("/")
            }
            Some(p) => match check_route(&p) {
                Ok(r) => r,
                Err(m) => {
                    errors.push(err("path", m));
                    p
                }
            },
        };
        let enabled = match self.enabled.map(|e| e.get(mode == Mode::Dev)).transpose() {
            Ok(v) => v.unwrap_or(true),
            Err(m) => {
                errors.push(err("enabled", m));
                false
            }
        };
        match self.kind.as_deref() {
            Some("php") => {}
            None => errors.push(ConfigError::new(file, None, "type", "missing; this version runs type: php")),
            Some(t @ ("rust" | "go" | "command")) => errors.push(err(
                "type",
                format!("type: {t} workers are not implemented yet (they come with the native-workers work); only type: php runs now — set enabled: false to keep this file"),
            )),
            Some(t) => errors.push(err(
                "type",
                unknown_choice("type", t, &TYPES),
            )),
        }

        let php = self.php.unwrap_or_default();
        if let Some(b) = php.backend.as_deref() {
            if b != "fpm" {
                errors.push(err(
                    "php.backend",
                    if b == "cgi" {
                        "php.backend: cgi (TQServer's own php-cgi process manager) is not implemented yet; use fpm".to_string()
                    } else {
                        format!("unknown backend {b:?}; use fpm")
                    },
                ));
            }
        }
        let mut settings = Vec::new();
        for (k, v) in php.settings.unwrap_or_default() {
            let key = k
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{k:?}"));
            let full = format!("php.settings.{key}");
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            {
                errors.push(err(
                    &full,
                    "a php.ini key has only letters, digits, '_' and '.'".into(),
                ));
                continue;
            }
            match ini_value(&v) {
                Ok(val) if val.contains(['\n', '\r', '\0']) => errors.push(err(
                    &full,
                    "a php.ini value cannot contain a line break".into(),
                )),
                Ok(val) if val.contains('"') => errors.push(err(
                    &full,
                    "a php.ini value cannot contain a double quote (php-fpm's INI syntax has no escape for it)".into(),
                )),
                Ok(val) => settings.push((key, val)),
                Err(m) => errors.push(err(&full, m)),
            }
        }
        let pool = resolve_pool(php.pool.unwrap_or_default(), &err, &mut errors);
        let doc = dir.join(
            self.document_root
                .as_deref()
                .unwrap_or(DEFAULT_DOCUMENT_ROOT),
        );
        let document_root = match std::path::absolute(&doc).and_then(|d| d.canonicalize()) {
            Ok(d) if d.is_dir() => d,
            _ => {
                if enabled {
                    errors.push(err(
                        "document_root",
                        format!("{} is not a directory", doc.display()),
                    ));
                }
                doc
            }
        };
        let relative_to_worker = |p: String| {
            let p = PathBuf::from(p);
            if p.is_absolute() || p.components().count() == 1 && !p.starts_with(".") {
                // A bare name (`php-fpm8.2`) is looked up on PATH.
                p
            } else {
                dir.join(p)
            }
        };
        let config_file = php.config_file.map(|c| {
            let p = PathBuf::from(&c);
            if p.is_absolute() { p } else { dir.join(p) }
        });
        if let Some(c) = &config_file {
            if enabled && !c.is_file() {
                errors.push(err(
                    "php.config_file",
                    format!("{} does not exist", c.display()),
                ));
            }
        }

        let logging = self.logging.unwrap_or_default();
        let level = match logging.level.as_deref().unwrap_or("info") {
            "error" => tracing::Level::ERROR,
            "warn" | "warning" => tracing::Level::WARN,
            "info" => tracing::Level::INFO,
            "debug" => tracing::Level::DEBUG,
            "trace" => tracing::Level::TRACE,
            other => {
                errors.push(err(
                    "logging.level",
                    unknown_choice("level", other, &LEVELS),
                ));
                tracing::Level::INFO
            }
        };
        let slow = logging.slow_log.unwrap_or_default();
        let slow_threshold = if slow.enabled.unwrap_or(slow.threshold.is_some()) {
            match slow.threshold.map(|t| t.get()).transpose() {
                Ok(t) => Some(t.unwrap_or(Duration::from_secs(1))),
                Err(m) => {
                    errors.push(err("logging.slow_log.threshold", m));
                    None
                }
            }
        } else {
            None
        };

        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Worker {
            name: name.to_string(),
            file: file.to_path_buf(),
            route,
            enabled,
            php: PhpWorker {
                binary: php.binary.map(relative_to_worker),
                config_file,
                settings,
                pool,
                document_root,
                front_controller: php.front_controller.unwrap_or(true),
            },
            logging: WorkerLogging {
                level,
                access_log: logging.access_log.unwrap_or(false),
                slow_threshold,
                log_file: logging.log_file,
            },
        })
    }
}

/// "unknown manager \"dynmic\"; did you mean dynamic?", or the list of
/// valid values when none is close.
fn unknown_choice(what: &str, value: &str, valid: &[&str]) -> String {
    match nearest(value, valid) {
        Some(n) => format!("unknown {what} {value:?}; did you mean {n}?"),
        None => format!("unknown {what} {value:?}; one of: {}", valid.join(", ")),
    }
}

/// Checks and normalises a route prefix.
fn check_route(p: &str) -> Result<String, String> {
    if !p.starts_with('/') {
        return Err(format!("{p:?} must start with '/' (e.g. /blog)"));
    }
    if p.contains(['?', '#', '%', '\\']) || p.chars().any(char::is_whitespace) {
        return Err(format!(
            "{p:?} must be a plain path, without ?, #, %, \\ or spaces"
        ));
    }
    let trimmed = if p.len() > 1 {
        p.trim_end_matches('/')
    } else {
        p
    };
    if trimmed
        .split('/')
        .skip(1)
        .any(|s| s.is_empty() || s == "." || s == "..")
        && trimmed != "/"
    {
        return Err(format!("{p:?} has an empty, '.' or '..' segment"));
    }
    Ok(trimmed.to_string())
}

fn resolve_pool(
    p: PoolSection,
    err: &dyn Fn(&str, String) -> ConfigError,
    errors: &mut Vec<ConfigError>,
) -> Pool {
    let manager = match p.manager.as_deref() {
        None => DEFAULT_MANAGER,
        Some("static") => Manager::Static,
        Some("dynamic") => Manager::Dynamic,
        Some("ondemand") => Manager::Ondemand,
        Some(m) => {
            errors.push(err(
                "php.pool.manager",
                unknown_choice("manager", m, &MANAGERS),
            ));
            DEFAULT_MANAGER
        }
    };
    let max_children = p.max_workers.unwrap_or(DEFAULT_MAX_WORKERS);
    if max_children == 0 {
        errors.push(err("php.pool.max_workers", "must be at least 1".into()));
    }
    let min_spare = p.min_workers.unwrap_or(DEFAULT_MIN_WORKERS);
    // php-fpm requires min_spare <= start <= max_spare <= max_children.
    // Unless given, max_spare allows twice the minimum idle (as www.conf's
    // 1 / 3), and start sits half way, as php-fpm computes it.
    let max_spare = p.max_spare_workers.unwrap_or_else(|| {
        max_children.min(
            min_spare
                .saturating_mul(2)
                .max(min_spare + 1)
                .max(p.start_workers.unwrap_or(0)),
        )
    });
    let start = p
        .start_workers
        .unwrap_or(min_spare + max_spare.saturating_sub(min_spare) / 2);
    if manager == Manager::Dynamic {
        if min_spare == 0 {
            errors.push(err(
                "php.pool.min_workers",
                "must be at least 1 for the dynamic manager (php-fpm's pm.min_spare_servers)"
                    .into(),
            ));
        }
        if min_spare > start {
            errors.push(err(
                "php.pool.min_workers",
                format!("php.pool.min_workers ({min_spare}) is above php.pool.start_workers ({start}); php-fpm starts at least the minimum"),
            ));
        }
        if start > max_spare {
            errors.push(err(
                "php.pool.start_workers",
                format!("php.pool.start_workers ({start}) is above php.pool.max_spare_workers ({max_spare})"),
            ));
        }
        if max_spare > max_children {
            errors.push(err(
                "php.pool.max_spare_workers",
                format!("php.pool.max_spare_workers ({max_spare}) is above php.pool.max_workers ({max_children})"),
            ));
        }
        if start > max_children {
            errors.push(err(
                "php.pool.start_workers",
                format!("php.pool.start_workers ({start}) is above php.pool.max_workers ({max_children})"),
            ));
        }
    }
    let mut dur =
        |key: &str, v: Option<DurationValue>, d: Duration| match v.map(|v| v.get()).transpose() {
            Ok(v) => v.unwrap_or(d),
            Err(m) => {
                errors.push(err(key, m));
                d
            }
        };
    let request_timeout = dur(
        "php.pool.request_timeout",
        p.request_timeout,
        DEFAULT_REQUEST_TIMEOUT,
    );
    let idle_timeout = dur(
        "php.pool.idle_timeout",
        p.idle_timeout,
        DEFAULT_IDLE_TIMEOUT,
    );
    let listen = match p.listen_address.as_deref().map(str::trim) {
        None | Some("") | Some("unix") => Listen::RuntimeSocket,
        Some(a) => {
            if let Some(path) = a.strip_prefix("unix:").or(a.starts_with('/').then_some(a)) {
                Listen::Unix(PathBuf::from(path))
            } else if let Ok(ip) = a.parse::<IpAddr>() {
                Listen::TcpFromRange(ip)
            } else if let Ok(sa) = a.parse::<SocketAddr>() {
                Listen::Tcp(sa)
            } else {
                errors.push(err(
                    "php.pool.listen_address",
                    format!("{a:?} is not an IP (port from the range), ip:port, or unix:/path"),
                ));
                Listen::RuntimeSocket
            }
        }
    };
    Pool {
        manager,
        max_children,
        start,
        min_spare,
        max_spare,
        max_requests: p.max_requests.unwrap_or(0),
        request_timeout,
        idle_timeout,
        listen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(check_route("/blog"), Ok("/blog".into()));
        assert_eq!(check_route("/blog/"), Ok("/blog".into()));
        assert_eq!(check_route("/"), Ok("/".into()));
        assert_eq!(check_route("/a/b"), Ok("/a/b".into()));
        assert_eq!(
            unknown_choice("manager", "dynmic", &MANAGERS),
            "unknown manager \"dynmic\"; did you mean dynamic?"
        );
        assert_eq!(
            unknown_choice("type", "perl", &TYPES),
            "unknown type \"perl\"; one of: php, rust, go, command"
        );
        for bad in ["blog", "/a//b", "/a/../b", "/a?x", "/a b"] {
            assert!(check_route(bad).is_err(), "{bad}");
        }
    }
}
