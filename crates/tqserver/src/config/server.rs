//! `config/server.yaml`: the keys of the original TQServer plus what this
//! one needs, with documented defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::values::{DurationValue, EnabledValue, SizeValue};
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

/// `workers.directory` of a server.yaml that did not load, read as
/// loosely as YAML allows (else the default), so the worker files are
/// still checked.
pub(crate) fn workers_dir_of(text: &str) -> PathBuf {
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).unwrap_or_default();
    PathBuf::from(
        value
            .get("workers")
            .and_then(|w| w.get("directory"))
            .and_then(serde_yaml_ng::Value::as_str)
            .unwrap_or(DEFAULT_WORKERS_DIR),
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ServerFile {
    server: ServerSection,
    workers: WorkersSection,
    file_watcher: FileWatcherSection,
    metrics: MetricsSection,
    admin: AdminSection,
    socks5: Socks5Section,
}

/// `socks5.*`: the egress proxy of the Go TQServer.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Socks5Section {
    enabled: Option<EnabledValue>,
    port: Option<u16>,
    log_file: Option<String>,
    log_format: Option<String>,
    https_inspection: Option<InspectionSection>,
    max_connections: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct InspectionSection {
    enabled: Option<EnabledValue>,
    ca_cert: Option<String>,
    ca_key: Option<String>,
    auto_generate: Option<EnabledValue>,
    log_body: Option<EnabledValue>,
    max_body_size: Option<SizeValue>,
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
    threads: Option<ThreadsValue>,
    tls: Option<TlsSection>,
}

/// `threads: auto` or a number.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum ThreadsValue {
    Count(u64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct TlsSection {
    port: Option<u16>,
    certificates: Option<Vec<CertificateSection>>,
    redirect_http: Option<bool>,
    hsts: Option<HstsValue>,
    min_version: Option<String>,
    internal: Option<InternalValue>,
    storage: Option<String>,
    acme: Option<AcmeSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateSection {
    cert: String,
    key: String,
    #[serde(default)]
    names: Vec<String>,
}

/// `internal: true`, or the names (besides localhost) to cover.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum InternalValue {
    Flag(bool),
    Names(Vec<String>),
}

/// `hsts: true` (a year), `false`, or a number of seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum HstsValue {
    Flag(bool),
    Seconds(u64),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AcmeSection {
    email: Option<String>,
    domains: Option<Vec<String>>,
    directory: Option<String>,
    directory_ca: Option<String>,
    challenge: Option<String>,
    renew_before: Option<DurationValue>,
    check_interval: Option<DurationValue>,
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
    health_check_timeout_ms: Option<u64>,
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

/// Default `server.tls.hsts` when `true`: a year (what Caddy and most
/// guides send).
pub const DEFAULT_HSTS_MAX_AGE: u64 = 31_536_000;
/// Default `server.tls.storage`: certificates, keys and ACME accounts,
/// relative to the working directory.
pub const DEFAULT_TLS_STORAGE: &str = "tls";
/// Let's Encrypt's production directory, the default `acme.directory`.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (`acme.directory: staging`).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";
/// Default `acme.check_interval`: how often certificates are looked at
/// for renewal.
pub const DEFAULT_ACME_CHECK: Duration = Duration::from_secs(12 * 3600);

/// The lowest TLS version accepted (`server.tls.min_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3 (the default).
    V12,
    /// TLS 1.3 only.
    V13,
}

/// How ACME validates that TQServer answers for a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// On the TLS port, ALPN `acme-tls/1` (RFC 8737): nothing on port 80
    /// needed.
    TlsAlpn01,
    /// On the plain port, `/.well-known/acme-challenge/{token}`.
    Http01,
}

/// A certificate and its key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    /// The chain, leaf first.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// Names it must cover (`tqserver check` says when it does not).
    pub names: Vec<String>,
    /// Where the entry is written in server.yaml (for errors).
    pub line: Option<usize>,
}

/// Resolved `server.tls.acme`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    /// `email`: the account's contact (optional for Let's Encrypt).
    pub email: Option<String>,
    /// `domains`: the names the certificate covers.
    pub domains: Vec<String>,
    /// `directory`: the ACME server (Let's Encrypt production by default;
    /// `staging`, or any directory URL).
    pub directory: String,
    /// `directory_ca`: a PEM root to trust for the directory's own TLS
    /// (a test CA such as Pebble's); else the system's roots.
    pub directory_ca: Option<PathBuf>,
    /// `challenge`: tls-alpn-01 (default) or http-01.
    pub challenge: AcmeChallenge,
    /// `renew_before`: renew when this much of the certificate's life is
    /// left; default a third of it.
    pub renew_before: Option<Duration>,
    /// `check_interval`: how often renewal is considered.
    pub check_interval: Duration,
}

/// Resolved `server.tls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The HTTPS port (on `server.host`).
    pub port: u16,
    /// Certificate files, chosen by SNI; the first is the default.
    pub certificates: Vec<CertificateFiles>,
    /// The plain port answers 308 to https (but for ACME http-01).
    pub redirect_http: bool,
    /// `Strict-Transport-Security: max-age=…` on HTTPS answers.
    pub hsts_max_age: Option<u64>,
    /// The lowest TLS version.
    pub min_version: TlsVersion,
    /// `internal`: a local CA makes a certificate for localhost,
    /// 127.0.0.1, ::1 and these names (`None`: off).
    pub internal: Option<Vec<String>>,
    /// Where ACME accounts, certificates and the local CA live (0700).
    pub storage: PathBuf,
    /// Automatic certificates.
    pub acme: Option<AcmeSettings>,
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
    /// `server.tls`: HTTPS, when set.
    pub tls: Option<TlsSettings>,
    /// `server.threads`: the threads serving connections (`None`: one
    /// per CPU, as nginx's `worker_processes auto`).
    pub threads: Option<usize>,
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
    /// `workers.health_check_timeout_ms`: the longest wait for one health
    /// probe's answer (else 1 s while starting, and the health interval
    /// up to 5 s once ready).
    pub health_check_timeout: Option<Duration>,
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
    pub(crate) socks5: Option<Socks5Settings>,
}

/// Default `socks5.port`, as the Go TQServer.
pub const DEFAULT_SOCKS5_PORT: u16 = 1080;
/// Default `socks5.log_file`, as the Go TQServer.
pub const DEFAULT_SOCKS5_LOG: &str = "logs/socks5_{date}.log";
/// Default `socks5.max_connections`: connections through the proxy at
/// once; more wait for one to end.
pub const DEFAULT_SOCKS5_CONNECTIONS: usize = 1024;
/// Default `socks5.https_inspection.max_body_size`: 1 MiB, as the Go
/// TQServer.
pub const DEFAULT_INSPECT_BODY: u64 = 1 << 20;

/// The egress proxy (`socks5.*`): a SOCKS5 server on 127.0.0.1 that the
/// workers are told to use, logging each connection they make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socks5Settings {
    /// `socks5.port` (on 127.0.0.1 only).
    pub port: u16,
    /// `socks5.log_file` (`{date}`); `None`: the server log.
    pub log_file: Option<String>,
    /// `socks5.log_format`: json (the default) or text.
    pub json: bool,
    /// `socks5.max_connections`.
    pub max_connections: usize,
    /// `socks5.https_inspection`, when on (dev mode only).
    pub inspection: Option<Inspection>,
}

/// `socks5.https_inspection.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// `ca_cert`, `ca_key`: the CA that signs the certificates made per
    /// host.
    pub ca_cert: PathBuf,
    /// `ca_key`.
    pub ca_key: PathBuf,
    /// `auto_generate` (default true): make the CA when the files are
    /// missing.
    pub auto_generate: bool,
    /// `log_body` (default true): log request and response bodies.
    pub log_body: bool,
    /// `max_body_size`: the bytes of a body logged at most.
    pub max_body_size: u64,
}

/// Checks `socks5.*`; `None` when it is off.
fn resolve_socks5(
    s: Socks5Section,
    mode: Mode,
    err: &impl Fn(&str, String) -> ConfigError,
    errors: &mut Vec<ConfigError>,
) -> Option<Socks5Settings> {
    let dev = mode == Mode::Dev;
    let mut flag = |key: &str, v: Option<EnabledValue>, default: bool| {
        v.map_or(Ok(default), |v| v.get(dev)).unwrap_or_else(|m| {
            errors.push(err(key, m));
            false
        })
    };
    let on = flag("socks5.enabled", s.enabled, false);
    let inspect = s.https_inspection.unwrap_or_default();
    let inspect_on = flag("socks5.https_inspection.enabled", inspect.enabled, false);
    let auto_generate = flag(
        "socks5.https_inspection.auto_generate",
        inspect.auto_generate,
        true,
    );
    let log_body = flag("socks5.https_inspection.log_body", inspect.log_body, true);
    if !on {
        return None;
    }
    let json = match s.log_format.as_deref() {
        None | Some("json") => true,
        Some("text") => false,
        Some(other) => {
            errors.push(err(
                "socks5.log_format",
                format!("{other:?} is not a log format; use json or text"),
            ));
            true
        }
    };
    if s.port == Some(0) {
        errors.push(err("socks5.port", "0 is not a port".into()));
    }
    let max_connections = s.max_connections.unwrap_or(DEFAULT_SOCKS5_CONNECTIONS);
    if max_connections == 0 {
        errors.push(err("socks5.max_connections", "must be at least 1".into()));
    }
    let inspection = if inspect_on && !dev {
        // Decrypting the workers' HTTPS is a development tool: a
        // production server that did it would hold every secret its
        // workers send.
        errors.push(err(
            "socks5.https_inspection.enabled",
            "HTTPS inspection decrypts every HTTPS call the workers make: it runs in dev mode only; turn it off (or use enabled: development)".into(),
        ));
        None
    } else if inspect_on {
        let max_body_size = match inspect.max_body_size.map(|v| v.get()).transpose() {
            Ok(v) => v.unwrap_or(DEFAULT_INSPECT_BODY),
            Err(m) => {
                errors.push(err("socks5.https_inspection.max_body_size", m));
                DEFAULT_INSPECT_BODY
            }
        };
        Some(Inspection {
            ca_cert: PathBuf::from(
                inspect
                    .ca_cert
                    .unwrap_or_else(|| "config/tqserver-ca.crt".into()),
            ),
            ca_key: PathBuf::from(
                inspect
                    .ca_key
                    .unwrap_or_else(|| "config/tqserver-ca.key".into()),
            ),
            auto_generate,
            log_body,
            max_body_size,
        })
    } else {
        None
    };
    Some(Socks5Settings {
        port: s.port.unwrap_or(DEFAULT_SOCKS5_PORT),
        log_file: match s.log_file {
            None => Some(DEFAULT_SOCKS5_LOG.to_string()),
            Some(f) if f.trim().is_empty() => None,
            Some(f) => Some(f),
        },
        json,
        max_connections,
        inspection,
    })
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
        let threads = match s.threads {
            None => None,
            Some(ThreadsValue::Text(t)) if t == "auto" => None,
            Some(ThreadsValue::Count(n)) if (1..=1024).contains(&n) => Some(n as usize),
            Some(v) => {
                let shown = match v {
                    ThreadsValue::Count(n) => n.to_string(),
                    ThreadsValue::Text(t) => format!("{t:?}"),
                };
                errors.push(err(
                    "server.threads",
                    format!("{shown} is not a thread count; use auto (one per CPU) or 1 to 1024"),
                ));
                None
            }
        };
        let tls = s.tls.and_then(|t| resolve_tls(t, text, &err, &mut errors));
        let socks5 = resolve_socks5(self.socks5, mode, &err, &mut errors);
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
                tls,
                threads,
            },
            supervision: Supervision {
                port_range,
                startup_delay: ms(w.startup_delay_ms, DEFAULT_STARTUP_DELAY),
                restart_delay: ms(w.restart_delay_ms, DEFAULT_RESTART_DELAY),
                shutdown_grace: ms(w.shutdown_grace_period_ms, DEFAULT_SHUTDOWN_GRACE),
                health_check_wait: ms(w.health_check_wait_timeout_ms, DEFAULT_HEALTH_WAIT),
                health_check_timeout: w
                    .health_check_timeout_ms
                    .filter(|t| *t > 0)
                    .map(Duration::from_millis),
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
            socks5,
        };
        if errors.is_empty() {
            Ok(resolved)
        } else {
            Err(errors)
        }
    }
}

/// `server.tls`, checked for syntax (the files themselves are checked by
/// the `tls` module: they must exist, parse, match their keys, cover
/// their names and not be expired).
fn resolve_tls(
    t: TlsSection,
    text: &str,
    err: &impl Fn(&str, String) -> ConfigError,
    errors: &mut Vec<ConfigError>,
) -> Option<TlsSettings> {
    let Some(port) = t.port else {
        errors.push(err(
            "server.tls.port",
            "missing: the HTTPS port (443, or 8443 without root)".into(),
        ));
        return None;
    };
    let list_line = key_line(text, "server.tls.certificates");
    let certificates: Vec<CertificateFiles> = t
        .certificates
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            // The line that names this entry's certificate file.
            let line = list_line.map(|from| {
                text.lines()
                    .enumerate()
                    .skip(from)
                    .find(|(_, l)| l.contains(c.cert.as_str()))
                    .map_or(from, |(i, _)| i + 1)
            });
            CertificateFiles {
                cert: PathBuf::from(c.cert),
                key: PathBuf::from(c.key),
                names: c.names.iter().map(|n| n.to_ascii_lowercase()).collect(),
                line,
            }
        })
        .collect();
    let internal = match t.internal {
        None | Some(InternalValue::Flag(false)) => None,
        Some(InternalValue::Flag(true)) => Some(Vec::new()),
        Some(InternalValue::Names(n)) => Some(n),
    };
    let min_version = match t.min_version.as_deref() {
        None | Some("1.2") => TlsVersion::V12,
        Some("1.3") => TlsVersion::V13,
        Some(v) => {
            errors.push(err(
                "server.tls.min_version",
                format!("{v:?} is not a TLS version TQServer offers; use \"1.2\" or \"1.3\" (1.0 and 1.1 are refused on principle)"),
            ));
            TlsVersion::V12
        }
    };
    let hsts_max_age = match t.hsts {
        None | Some(HstsValue::Flag(false)) | Some(HstsValue::Seconds(0)) => None,
        Some(HstsValue::Flag(true)) => Some(DEFAULT_HSTS_MAX_AGE),
        Some(HstsValue::Seconds(n)) => Some(n),
    };
    let acme = t.acme.and_then(|a| {
        let domains = a.domains.unwrap_or_default();
        if domains.is_empty() {
            errors.push(err(
                "server.tls.acme.domains",
                "missing: the names the certificate is for (domains: [example.com])".into(),
            ));
            return None;
        }
        for d in &domains {
            let ok = !d.is_empty()
                && d.len() <= 253
                && d.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !ok || d.starts_with('-') {
                errors.push(err(
                    "server.tls.acme.domains",
                    format!("{d:?} is not a DNS name ACME can issue for (wildcards need DNS-01, which TQServer does not do)"),
                ));
            }
        }
        let directory = match a.directory.as_deref() {
            None | Some("production") => LETS_ENCRYPT.to_string(),
            Some("staging") => LETS_ENCRYPT_STAGING.to_string(),
            Some(u) if u.starts_with("https://") => u.to_string(),
            Some(u) => {
                errors.push(err(
                    "server.tls.acme.directory",
                    format!("{u:?} is not an ACME directory: use production, staging or an https:// URL"),
                ));
                LETS_ENCRYPT.to_string()
            }
        };
        let challenge = match a.challenge.as_deref() {
            None | Some("tls-alpn-01") => AcmeChallenge::TlsAlpn01,
            Some("http-01") => AcmeChallenge::Http01,
            Some(c) => {
                errors.push(err(
                    "server.tls.acme.challenge",
                    format!("{c:?} is not a challenge TQServer answers; use tls-alpn-01 or http-01"),
                ));
                AcmeChallenge::TlsAlpn01
            }
        };
        let mut dur = |key: &str, v: Option<DurationValue>| {
            v.map(|v| v.get()).transpose().unwrap_or_else(|m| {
                errors.push(err(key, m));
                None
            })
        };
        let renew_before = dur("server.tls.acme.renew_before", a.renew_before);
        let check_interval = dur("server.tls.acme.check_interval", a.check_interval)
            .unwrap_or(DEFAULT_ACME_CHECK)
            .max(Duration::from_secs(1));
        Some(AcmeSettings {
            email: a.email.filter(|e| !e.is_empty()),
            domains,
            directory,
            directory_ca: a.directory_ca.map(PathBuf::from),
            challenge,
            renew_before,
            check_interval,
        })
    });
    if internal.is_some() && acme.is_some() {
        errors.push(err(
            "server.tls.internal",
            "internal and acme both issue the certificate; keep one (internal for development, acme for a public name)".into(),
        ));
    }
    if certificates.is_empty() && internal.is_none() && acme.is_none() {
        errors.push(err(
            "server.tls",
            "no certificate: list server.tls.certificates, or set server.tls.acme (automatic) or server.tls.internal: true (a local CA, for development)".into(),
        ));
    }
    Some(TlsSettings {
        port,
        certificates,
        redirect_http: t.redirect_http.unwrap_or(false),
        hsts_max_age,
        min_version,
        internal,
        storage: PathBuf::from(t.storage.unwrap_or_else(|| DEFAULT_TLS_STORAGE.to_string())),
        acme,
    })
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
