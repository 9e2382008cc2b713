//! `config/server.yaml`: the keys of the original TQServer plus what this
//! one needs, with documented defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::values::{EnabledValue, SizeValue};
use super::yaml::key_line;
use super::{ConfigError, Mode};

/// Default `server.host`: every interface, as the original (`:8080`).
pub const DEFAULT_HOST: &str = "0.0.0.0";
/// Default `server.port`.
pub const DEFAULT_PORT: u16 = 8080;
/// Default `server.read_timeout_seconds`: time to read a request's headers,
/// and the longest pause while reading its body.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `server.write_timeout_seconds`: the longest a response write may stall.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `server.idle_timeout_seconds`: keep-alive connections idle longer are closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default `server.max_body_bytes`: 100 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 100 << 20;
/// Default `workers.directory`.
pub const DEFAULT_WORKERS_DIR: &str = "workers";
/// Default `workers.port_range_start` / `port_range_end`.
pub const DEFAULT_PORT_RANGE: (u16, u16) = (9000, 9999);
/// Default `workers.startup_delay_ms`: pause between starting two workers.
pub const DEFAULT_STARTUP_DELAY: Duration = Duration::from_millis(100);
/// Default `workers.restart_delay_ms`: first delay before restarting a
/// process that exited; it doubles on each failure in a row, up to 30 s.
pub const DEFAULT_RESTART_DELAY: Duration = Duration::from_millis(100);
/// Default `workers.shutdown_grace_period_ms`: how long requests in progress
/// may finish on stop before processes are killed.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Default `workers.health_check_wait_timeout_ms`: how long a started
/// process has to become ready.
pub const DEFAULT_HEALTH_WAIT: Duration = Duration::from_secs(10);
/// Default `workers.max_restarts`: failed starts in a row before a native
/// worker is left stopped (systemd's `StartLimitBurst` is 5 as well).
pub const DEFAULT_MAX_RESTARTS: u32 = 5;
/// Default `admin.listen`: this machine only; metrics, status pages and
/// the dashboard are for operators, not the public.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";
/// Default `metrics.path` on the public port when `metrics.enabled` is set.
pub const DEFAULT_METRICS_PATH: &str = "/metrics";
/// Default `file_watcher.debounce_ms`.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(50);
/// Default `server.max_header_bytes`: the request line and headers
/// together (nginx `large_client_header_buffers 4 8k`); more gets 431.
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 32 << 10;
/// Default `server.body_buffer_size`: a request body up to this size is
/// held in memory before PHP gets it, a larger one in an unnamed temporary
/// file (nginx `client_body_buffer_size` is 16k; PHP's own upload handling
/// reads it in one go either way).
pub const DEFAULT_BODY_BUFFER_SIZE: u64 = 128 << 10;
/// Default `server.max_buffered_bytes`: request bodies being received
/// before PHP gets them, memory and temporary files together; past it a
/// request gets 503 (nginx has no such bound and fills its disk).
pub const DEFAULT_MAX_BUFFERED_BYTES: u64 = 1 << 30;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ServerFile {
    server: ServerSection,
    workers: WorkersSection,
    file_watcher: FileWatcherSection,
    metrics: MetricsSection,
    admin: AdminSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AdminSection {
    listen: Option<String>,
    token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ServerSection {
    host: Option<String>,
    port: Option<u16>,
    read_timeout_seconds: Option<u64>,
    write_timeout_seconds: Option<u64>,
    idle_timeout_seconds: Option<u64>,
    log_file: Option<String>,
    log_format: Option<String>,
    access_log: Option<String>,
    access_log_format: Option<String>,
    max_body_bytes: Option<SizeValue>,
    drain_delay_ms: Option<u64>,
    user: Option<String>,
    group: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    proxy_protocol: Option<bool>,
    max_header_bytes: Option<SizeValue>,
    body_buffer_size: Option<SizeValue>,
    max_buffered_bytes: Option<SizeValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct WorkersSection {
    directory: Option<String>,
    port_range_start: Option<u16>,
    port_range_end: Option<u16>,
    startup_delay_ms: Option<u64>,
    restart_delay_ms: Option<u64>,
    shutdown_grace_period_ms: Option<u64>,
    health_check_wait_timeout_ms: Option<u64>,
    max_restarts: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileWatcherSection {
    enabled: Option<EnabledValue>,
    config: Option<bool>,
    debounce_ms: Option<u64>,
    live_reload: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct MetricsSection {
    enabled: Option<bool>,
    path: Option<String>,
}

/// Resolved HTTP server settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Interface to listen on.
    pub host: String,
    /// Port to listen on.
    pub port: u16,
    /// Header read limit, and the longest pause while reading a body.
    pub read_timeout: Duration,
    /// The longest a response write may stall.
    pub write_timeout: Duration,
    /// Keep-alive connections idle longer are closed.
    pub idle_timeout: Duration,
    /// Server log file (`{date}` → YYYY-MM-DD), relative to the working
    /// directory; `None` logs to the terminal only.
    pub log_file: Option<String>,
    /// Larger request bodies get 413.
    pub max_body_bytes: u64,
    /// `server.drain_delay_ms`: after a stop signal, keep accepting and
    /// serving this long while `/readyz` answers 503, so load balancers
    /// that poll it stop sending first.
    pub drain_delay: Duration,
    /// `server.log_format`: text or json.
    pub log_format: crate::logging::LogFormat,
    /// `server.access_log`: one file (`{date}`) with every route's lines.
    pub access_log: Option<String>,
    /// `server.access_log_format`.
    pub access_format: crate::access::AccessFormat,
    /// `server.user` / `server.group`: who TQServer and its children run
    /// as once started as root (php-fpm's pool `user` / `group`).
    pub run_as: Option<RunAs>,
    /// `server.trusted_proxies`: load balancers whose `X-Forwarded-*` (and
    /// PROXY protocol header) say who the client is.
    pub trusted_proxies: crate::http::forwarded::Trusted,
    /// `server.proxy_protocol`: connections from trusted proxies start
    /// with a PROXY protocol header (v1 or v2).
    pub proxy_protocol: bool,
    /// `server.max_header_bytes`: the request head at most (431 past it).
    pub max_header_bytes: usize,
    /// `server.body_buffer_size`: a body buffered for PHP stays in memory
    /// up to this size.
    pub body_buffer_size: u64,
    /// `server.max_buffered_bytes`: every body being buffered, together.
    pub max_buffered_bytes: u64,
}

impl ServerSettings {
    /// What the HTTP transport serves new connections with.
    pub fn http(&self) -> crate::http::Settings {
        crate::http::Settings {
            read_timeout: self.read_timeout,
            write_timeout: self.write_timeout,
            idle_timeout: self.idle_timeout,
            max_header_bytes: self.max_header_bytes,
            trusted_proxies: self.trusted_proxies.clone(),
            proxy_protocol: self.proxy_protocol,
        }
    }
}

/// The unprivileged account to run as, resolved when the configuration is
/// read (an unknown name is a configuration error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// `server.user`.
    pub user: String,
    /// Its uid.
    pub uid: u32,
    /// `server.group`, else the user's primary group.
    pub group: String,
    /// Its gid.
    pub gid: u32,
}

/// Resolved `admin` and `metrics` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observability {
    /// `admin.listen`: metrics, status pages, health and the dashboard;
    /// `None` when set empty.
    pub admin: Option<std::net::SocketAddr>,
    /// `admin.token` (or `$TQSERVER_ADMIN_TOKEN`, which wins): the bearer
    /// token the admin listener asks for (all but `/healthz` and
    /// `/readyz`).
    pub admin_token: Option<String>,
    /// `metrics.path` on the public port (`metrics.enabled: true`).
    pub public_metrics: Option<String>,
}

/// Resolved process supervision settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Supervision {
    /// Ports handed to worker processes (php-fpm pools listening on TCP).
    pub port_range: (u16, u16),
    /// Pause between starting two workers.
    pub startup_delay: Duration,
    /// First restart delay (doubles per failure in a row, up to 30 s).
    pub restart_delay: Duration,
    /// How long in-flight requests may finish on stop.
    pub shutdown_grace: Duration,
    /// How long a started process has to become ready.
    pub health_check_wait: Duration,
    /// Failed starts in a row after which a native worker is left stopped
    /// (until its files change).
    pub max_restarts: u32,
}

pub(crate) struct ResolvedServer {
    pub(crate) server: ServerSettings,
    pub(crate) supervision: Supervision,
    pub(crate) workers_dir: PathBuf,
    pub(crate) debounce: Duration,
    pub(crate) watch: bool,
    pub(crate) watch_config: bool,
    pub(crate) live_reload: bool,
    pub(crate) observability: Observability,
}

impl ServerFile {
    pub(crate) fn resolve(
        self,
        file: &Path,
        text: &str,
        mode: Mode,
        notices: &mut Vec<String>,
    ) -> Result<ResolvedServer, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let err = |key: &str, msg: String| ConfigError::new(file, key_line(text, key), key, msg);
        let s = self.server;
        let w = self.workers;
        let mut size =
            |key: &str, v: Option<SizeValue>, default: u64| match v.map(|v| v.get()).transpose() {
                Ok(v) => v.unwrap_or(default),
                Err(m) => {
                    errors.push(err(key, m));
                    default
                }
            };
        let max_body_bytes = size(
            "server.max_body_bytes",
            s.max_body_bytes,
            DEFAULT_MAX_BODY_BYTES,
        );
        let max_header_bytes = size(
            "server.max_header_bytes",
            s.max_header_bytes,
            DEFAULT_MAX_HEADER_BYTES,
        );
        let body_buffer_size = size(
            "server.body_buffer_size",
            s.body_buffer_size,
            DEFAULT_BODY_BUFFER_SIZE,
        );
        let max_buffered_bytes = size(
            "server.max_buffered_bytes",
            s.max_buffered_bytes,
            DEFAULT_MAX_BUFFERED_BYTES,
        );
        if !(1024..=1 << 20).contains(&max_header_bytes) {
            errors.push(err(
                "server.max_header_bytes",
                format!("{max_header_bytes} is out of range; use 1K to 1M (nginx: 32K)"),
            ));
        }
        let mut ranges = Vec::new();
        for r in s.trusted_proxies.iter().flatten() {
            match r.parse::<crate::http::forwarded::Cidr>() {
                Ok(c) => ranges.push(c),
                Err(m) => errors.push(err("server.trusted_proxies", m)),
            }
        }
        let trusted_proxies = crate::http::forwarded::Trusted::new(ranges);
        let proxy_protocol = s.proxy_protocol.unwrap_or(false);
        if proxy_protocol && trusted_proxies.is_empty() {
            errors.push(err(
                "server.proxy_protocol",
                "the PROXY protocol is accepted from trusted proxies only: list your load balancers in server.trusted_proxies".into(),
            ));
        }
        let port_range = (
            w.port_range_start.unwrap_or(DEFAULT_PORT_RANGE.0),
            w.port_range_end.unwrap_or(DEFAULT_PORT_RANGE.1),
        );
        if port_range.0 > port_range.1 || port_range.0 == 0 {
            errors.push(err(
                "workers.port_range_start",
                format!(
                    "the port range {}-{} is empty; port_range_start must be at least 1 and at most port_range_end",
                    port_range.0, port_range.1
                ),
            ));
        }
        let secs = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_secs);
        let ms = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_millis);
        let log_file = s.log_file.filter(|f| !f.trim().is_empty());
        let public_metrics = match (self.metrics.enabled, self.metrics.path) {
            (Some(true), p) => {
                let p = p.unwrap_or_else(|| DEFAULT_METRICS_PATH.to_string());
                if !p.starts_with('/') {
                    errors.push(err(
                        "metrics.path",
                        format!("{p:?} must start with / (it is a path on the public port)"),
                    ));
                }
                Some(p)
            }
            (_, Some(_)) => {
                notices.push(format!(
                    "metrics.path is set in {} but metrics.enabled is not true: /metrics is served on the admin listener only",
                    file.display()
                ));
                None
            }
            _ => None,
        };
        let admin_text = self
            .admin
            .listen
            .unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.to_string());
        let admin = admin_listen(&admin_text).unwrap_or_else(|m| {
            errors.push(err("admin.listen", m));
            None
        });
        let admin_token = std::env::var("TQSERVER_ADMIN_TOKEN")
            .ok()
            .or(self.admin.token)
            .filter(|t| !t.is_empty());
        if let Some(t) = &admin_token {
            if t.len() < 8 || !t.bytes().all(|b| b.is_ascii_graphic()) {
                errors.push(err(
                    "admin.token",
                    "the token must be at least 8 printable characters, without spaces (openssl rand -hex 32 makes one)".into(),
                ));
            }
        }
        if let (Some(a), None) = (admin, &admin_token) {
            if !a.ip().is_loopback() {
                notices.push(format!(
                    "admin.listen {a} is reachable from other machines and has no admin.token: it answers only /healthz and /readyz until you set admin.token (or TQSERVER_ADMIN_TOKEN) in {}",
                    file.display()
                ));
            }
        }
        let log_format = match s.log_format.as_deref() {
            None | Some("text") => crate::logging::LogFormat::Text,
            Some("json") => crate::logging::LogFormat::Json,
            Some(other) => {
                errors.push(err(
                    "server.log_format",
                    format!("{other:?} is not a log format; use text or json"),
                ));
                crate::logging::LogFormat::Text
            }
        };
        let access_format = match crate::access::AccessFormat::parse(
            s.access_log_format.as_deref().unwrap_or("combined"),
        ) {
            Ok(f) => f,
            Err(m) => {
                errors.push(err("server.access_log_format", m));
                crate::access::AccessFormat::Combined
            }
        };
        let access_log = s.access_log.filter(|f| !f.trim().is_empty());
        let watch = match self.file_watcher.enabled.map(|e| e.get(mode == Mode::Dev)) {
            None => mode == Mode::Dev,
            Some(Ok(v)) => v,
            Some(Err(m)) => {
                errors.push(err("file_watcher.enabled", m));
                false
            }
        };
        let run_as = match (
            s.user.filter(|u| !u.is_empty()),
            s.group.filter(|g| !g.is_empty()),
        ) {
            (None, None) => None,
            (None, Some(_)) => {
                errors.push(err(
                    "server.group",
                    "server.group needs server.user too".into(),
                ));
                None
            }
            (Some(user), group) => resolve_run_as(&user, group.as_deref())
                .map_err(|(key, m)| errors.push(err(key, m)))
                .ok(),
        };
        let host = s.host.unwrap_or_else(|| DEFAULT_HOST.to_string());
        if host.parse::<std::net::IpAddr>().is_err() && host != "localhost" {
            errors.push(err(
                "server.host",
                format!("{host:?} is not an IP address (use 0.0.0.0 for every interface, 127.0.0.1 for this machine only)"),
            ));
        }
        let resolved = ResolvedServer {
            server: ServerSettings {
                host,
                port: s.port.unwrap_or(DEFAULT_PORT),
                read_timeout: secs(s.read_timeout_seconds, DEFAULT_READ_TIMEOUT),
                write_timeout: secs(s.write_timeout_seconds, DEFAULT_WRITE_TIMEOUT),
                idle_timeout: secs(s.idle_timeout_seconds, DEFAULT_IDLE_TIMEOUT),
                log_file,
                max_body_bytes,
                drain_delay: ms(s.drain_delay_ms, Duration::ZERO),
                log_format,
                access_log,
                access_format,
                run_as,
                trusted_proxies,
                proxy_protocol,
                max_header_bytes: max_header_bytes as usize,
                body_buffer_size,
                max_buffered_bytes,
            },
            supervision: Supervision {
                port_range,
                startup_delay: ms(w.startup_delay_ms, DEFAULT_STARTUP_DELAY),
                restart_delay: ms(w.restart_delay_ms, DEFAULT_RESTART_DELAY),
                shutdown_grace: ms(w.shutdown_grace_period_ms, DEFAULT_SHUTDOWN_GRACE),
                health_check_wait: ms(w.health_check_wait_timeout_ms, DEFAULT_HEALTH_WAIT),
                max_restarts: w.max_restarts.unwrap_or(DEFAULT_MAX_RESTARTS),
            },
            workers_dir: PathBuf::from(
                w.directory
                    .unwrap_or_else(|| DEFAULT_WORKERS_DIR.to_string()),
            ),
            debounce: ms(self.file_watcher.debounce_ms, DEFAULT_DEBOUNCE),
            watch,
            watch_config: self.file_watcher.config.unwrap_or(true),
            live_reload: self.file_watcher.live_reload.unwrap_or(true),
            observability: Observability {
                admin,
                admin_token,
                public_metrics,
            },
        };
        if errors.is_empty() {
            Ok(resolved)
        } else {
            Err(errors)
        }
    }
}

/// An `admin.listen` value (or `--admin-listen`): an address with a port,
/// or empty for none.
pub fn admin_listen(text: &str) -> Result<Option<std::net::SocketAddr>, String> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    t.parse().map(Some).map_err(|_| {
        format!("{text:?} is not an address with a port (use 127.0.0.1:8081, or \"\" to turn the admin listener off)")
    })
}

/// Looks up `server.user` (and `server.group`, else the user's group).
fn resolve_run_as(user: &str, group: Option<&str>) -> Result<RunAs, (&'static str, String)> {
    use nix::unistd::{Group, User};
    let u = User::from_name(user).ok().flatten().ok_or((
        "server.user",
        format!("there is no user {user:?} on this machine"),
    ))?;
    let (group, gid) = match group {
        Some(g) => {
            let found = Group::from_name(g).ok().flatten().ok_or((
                "server.group",
                format!("there is no group {g:?} on this machine"),
            ))?;
            (g.to_string(), found.gid.as_raw())
        }
        None => {
            let name = Group::from_gid(u.gid)
                .ok()
                .flatten()
                .map_or_else(|| u.gid.to_string(), |g| g.name);
            (name, u.gid.as_raw())
        }
    };
    Ok(RunAs {
        user: user.to_string(),
        uid: u.uid.as_raw(),
        group,
        gid,
    })
}

#[cfg(test)]
mod tests {
    use super::admin_listen;

    #[test]
    fn admin_listen_is_an_address_or_nothing() {
        assert_eq!(
            admin_listen(" 127.0.0.1:8081 ").unwrap(),
            Some("127.0.0.1:8081".parse().unwrap())
        );
        assert_eq!(admin_listen("").unwrap(), None);
        assert_eq!(admin_listen("  ").unwrap(), None);
        let e = admin_listen("localhost").unwrap_err();
        assert!(
            e.starts_with("\"localhost\" is not an address with a port"),
            "{e}"
        );
    }
}
