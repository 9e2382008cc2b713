//! `workers/{name}/config/worker.yaml`: a worker's route, type and, for
//! PHP, its php-fpm pool. The original TQServer's files load unchanged.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::values::{DurationValue, EnabledValue, SizeValue, ini_value};
use super::yaml::{item_line, key_line, nearest};
use super::{ConfigError, Mode};
use crate::http::encode::{self, Encoding};

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
/// Default `php.pool.max_queue`: requests waiting for a process at most
/// (php-fpm's `listen.backlog` default is 511; the same order here).
pub const DEFAULT_MAX_QUEUE: u32 = 512;
/// Default `php.pool.queue_timeout`: how long a request waits for a free
/// process before it gets 503.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `fastcgi.limit_extensions` (php-fpm's `security.limit_extensions`).
pub const DEFAULT_LIMIT_EXTENSIONS: [&str; 1] = [".php"];
/// Default `fastcgi.mode` for a Unix socket (php-fpm's `listen.mode`: 0660).
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;
/// Default `fastcgi.ping_response` (php-fpm's `ping.response`).
pub const DEFAULT_PING_RESPONSE: &str = "pong";
/// Default `scaling.min_workers`: instances of a native worker.
pub const DEFAULT_INSTANCES: u32 = 1;
/// Default `scaling.request_timeout` of a native worker: the longest wait
/// for its response head (nginx's `proxy_read_timeout`: 60 s).
pub const DEFAULT_PROXY_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `proxy.send_timeout`: the longest pause between two writes of
/// a request body to a native worker (nginx's `proxy_send_timeout`: 60 s).
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `proxy.upgrade_idle_timeout`: an upgraded (WebSocket)
/// connection with nothing sent either way this long is closed. nginx
/// cuts at its `proxy_read_timeout` (60 s), which ends WebSockets that do
/// not ping; Caddy never does. Ten minutes keeps quiet sockets open
/// without keeping dead ones forever.
pub const DEFAULT_UPGRADE_IDLE: Duration = Duration::from_secs(600);
/// Default `scaling.idle_timeout` (`scale_down_delay`): an instance above
/// `min_workers` with no request for this long is stopped (60 s, as the
/// Go TQServer).
pub const DEFAULT_SCALE_IDLE: Duration = Duration::from_secs(60);
/// Default `scaling.queue_threshold`: requests in hand per instance that
/// start one more (10, as the Go TQServer).
pub const DEFAULT_QUEUE_THRESHOLD: u32 = 10;
/// Default `logging.output_file` of a native worker, the Go TQServer's.
pub const DEFAULT_OUTPUT_FILE: &str = "logs/{name}_{port}.log";
/// Default `bun.entrypoint`.
pub const DEFAULT_BUN_ENTRYPOINT: &str = "index.ts";
/// Default `health.path`: answered with 200 once the instance can serve.
pub const DEFAULT_HEALTH_PATH: &str = "/health";
/// Default `health.interval_ms`: liveness checks of a ready instance.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// Default `health.failures`: liveness failures in a row that get an
/// instance replaced (Kubernetes' `failureThreshold` is 3 as well).
pub const DEFAULT_HEALTH_FAILURES: u32 = 3;
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
    symlinks: Option<String>,
    rules: Option<Vec<RuleSection>>,
    alias: Option<serde_yaml_ng::Mapping>,
    sendfile: Option<serde_yaml_ng::Mapping>,
    compression: Option<CompressionValue>,
    logging: Option<LoggingSection>,
    fastcgi: Option<FastcgiSection>,
    command: Option<CommandSection>,
    scaling: Option<ScalingSection>,
    proxy: Option<ProxySection>,
    env: Option<serde_yaml_ng::Mapping>,
    health: Option<HealthSection>,
    public_files: Option<bool>,
    // The Go TQServer's keys (docs/migrating.md).
    name: Option<String>,
    log_file: Option<String>,
    bun: Option<BunSection>,
    go: Option<GoSection>,
    runtime: Option<GoSection>,
    timeouts: Option<TimeoutsSection>,
}

/// `bun.*` (type: bun), as the Go TQServer.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct BunSection {
    entrypoint: Option<String>,
    env: Option<serde_yaml_ng::Mapping>,
}

/// `go.*`, and the same keys under `runtime:` (the Go TQServer's example
/// file), for any native worker.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct GoSection {
    go_max_procs: Option<u32>,
    go_mem_limit: Option<String>,
    max_requests: Option<u64>,
    read_timeout_seconds: Option<u64>,
    write_timeout_seconds: Option<u64>,
    idle_timeout_seconds: Option<u64>,
}

/// `timeouts.*`: the worker's own HTTP server timeouts, handed to it as
/// the Go TQServer's worker runtime reads them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct TimeoutsSection {
    read_timeout_seconds: Option<u64>,
    write_timeout_seconds: Option<u64>,
    idle_timeout_seconds: Option<u64>,
}

/// One entry of `rules`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSection {
    path: Option<String>,
    ext: Option<Vec<String>>,
    deny: Option<u16>,
    php: Option<bool>,
    headers: Option<serde_yaml_ng::Mapping>,
    cache: Option<DurationValue>,
}

/// `compression: false`, or its settings. Not `untagged`: a mistake in
/// the settings keeps serde's message (the unknown key, its line).
#[derive(Debug)]
enum CompressionValue {
    Flag(bool),
    Section(CompressionSection),
}

impl<'de> Deserialize<'de> for CompressionValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = CompressionValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false or a mapping of compression settings")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(CompressionValue::Flag(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                m: A,
            ) -> Result<Self::Value, A::Error> {
                CompressionSection::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(CompressionValue::Section)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct CompressionSection {
    enabled: Option<bool>,
    encodings: Option<Vec<String>>,
    levels: Option<LevelsSection>,
    min_length: Option<SizeValue>,
    types: Option<Vec<String>>,
    precompressed: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LevelsSection {
    gzip: Option<u32>,
    br: Option<u32>,
    zstd: Option<i32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct CommandSection {
    run: Option<Vec<String>>,
    build: Option<Vec<String>>,
    env: Option<serde_yaml_ng::Mapping>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ScalingSection {
    min_workers: Option<u32>,
    max_workers: Option<u32>,
    max_requests: Option<u64>,
    request_timeout: Option<DurationValue>,
    idle_timeout: Option<DurationValue>,
    queue_threshold: Option<u32>,
    scale_down_delay: Option<DurationValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ProxySection {
    strip_prefix: Option<bool>,
    read_timeout: Option<DurationValue>,
    send_timeout: Option<DurationValue>,
    upgrade_idle_timeout: Option<DurationValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct HealthSection {
    path: Option<String>,
    interval_ms: Option<u64>,
    failures: Option<u32>,
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
    request_buffering: Option<bool>,
    params: Option<serde_yaml_ng::Mapping>,
    worker: Option<String>,
    worker_max_memory: Option<SizeValue>,
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
    max_queue: Option<u32>,
    queue_timeout: Option<DurationValue>,
    slowlog_timeout: Option<DurationValue>,
    shared_memory: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FastcgiSection {
    listen: Option<String>,
    allowed_clients: Option<Vec<String>>,
    limit_extensions: Option<Vec<String>>,
    ping_path: Option<String>,
    ping_response: Option<String>,
    status_path: Option<String>,
    mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LoggingSection {
    level: Option<String>,
    access_log: Option<AccessLogValue>,
    access_log_format: Option<String>,
    slow_log: Option<SlowLogSection>,
    log_file: Option<String>,
    output_file: Option<String>,
}

/// `logging.access_log: true | false | path`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum AccessLogValue {
    Flag(bool),
    File(String),
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

/// Which program runs a PHP worker's scripts (`php.backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhpBackend {
    /// php-fpm, configured and supervised by TQServer.
    Fpm,
    /// php-cgi processes managed by TQServer itself.
    Cgi,
    /// TQServer's own PHP runtime (`tqserver-php`): PHP embedded, started
    /// once in a master that forks the processes, on the same pool as
    /// php-cgi's shared-memory mode.
    Embed,
}

impl PhpBackend {
    /// The `php.backend` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fpm => "fpm",
            Self::Cgi => "cgi",
            Self::Embed => "embed",
        }
    }

    /// Whether TQServer's own process pool runs it (php-cgi, embed).
    pub fn on_own_pool(self) -> bool {
        matches!(self, Self::Cgi | Self::Embed)
    }
}

/// Which symbolic links under a document root are followed
/// (`symlinks`), for scripts and static files alike; nginx's
/// `disable_symlinks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Symlinks {
    /// A link is followed when it and what it leads to have the same
    /// owner, wherever that is (`owner`, the default; nginx's
    /// `disable_symlinks if_not_owner`): Debian's packages link into
    /// /usr/share as root, a link someone planted to another user's file
    /// is refused.
    #[default]
    Owner,
    /// Followed only while the result stays inside the document root
    /// (`inside`).
    Inside,
    /// Always followed (`any`; nginx's `disable_symlinks off`).
    Any,
    /// Never followed (`none`; nginx's `disable_symlinks on`).
    None,
}

impl Symlinks {
    /// The `symlinks` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Inside => "inside",
            Self::Any => "any",
            Self::None => "none",
        }
    }
}

/// One entry of a PHP worker's `rules`: what applies to the paths it
/// matches (nginx's `location` blocks for `deny`, `add_header` and
/// `expires`, and the "no PHP in uploads" one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRule {
    /// `path`: a prefix of the (decoded, normalised) path under the
    /// worker's route, on a segment boundary, without a trailing `/`
    /// (`/` matches every path); `None`: any path.
    pub path: Option<String>,
    /// `ext`: extensions of the last segment, lower case, without the
    /// dot; empty: any.
    pub ext: Vec<String>,
    /// `deny`: 403 or 404 for every request it matches.
    pub deny: Option<u16>,
    /// `php: false`: a script under `path` is not run (403).
    pub php: bool,
    /// `headers`: set on answers below 400 (replacing one of the same
    /// name), as nginx's `add_header`.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// `cache`: `Cache-Control: max-age` and `Expires` on answers below
    /// 400, as nginx's `expires`.
    pub cache: Option<Duration>,
}

impl PathRule {
    /// `rule /uploads: no scripts`, as `tqserver check` lists it.
    pub fn describe(&self) -> String {
        let mut does = Vec::new();
        if let Some(d) = self.deny {
            does.push(format!("deny {d}"));
        }
        if !self.php {
            does.push("no scripts".into());
        }
        if !self.headers.is_empty() {
            let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
            does.push(format!("headers {}", names.join(", ")));
        }
        if let Some(c) = self.cache {
            does.push(format!("cache {c:?}"));
        }
        let ext = if self.ext.is_empty() {
            String::new()
        } else {
            format!(" *.{}", self.ext.join("|"))
        };
        format!(
            "rule {}{ext}: {}",
            self.path.as_deref().unwrap_or("/"),
            does.join("; ")
        )
    }

    /// Whether this rule applies to `path` (decoded, normalised, under
    /// the route, starting with `/`).
    pub fn matches(&self, path: &str) -> bool {
        let under = match self.path.as_deref() {
            None | Some("/") => true,
            Some(p) => {
                path == p || (path.starts_with(p) && path.as_bytes().get(p.len()) == Some(&b'/'))
            }
        };
        under
            && (self.ext.is_empty() || {
                let last = path.rsplit('/').next().unwrap_or("");
                last.rsplit_once('.')
                    .is_some_and(|(_, e)| self.ext.iter().any(|x| x.eq_ignore_ascii_case(e)))
            })
    }
}

/// Checks `rules`; errors name the entry (`rules[1].deny`) and its line.
fn resolve_rules(
    sections: Vec<RuleSection>,
    file: &Path,
    text: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<PathRule> {
    let mut rules = Vec::new();
    for (i, r) in sections.into_iter().enumerate() {
        let err = |key: &str, msg: String| {
            let name = if key.is_empty() {
                format!("rules[{i}]")
            } else {
                format!("rules[{i}].{key}")
            };
            let inner = (!key.is_empty()).then_some(key);
            ConfigError::new(file, item_line(text, "rules", i, inner), &name, msg)
        };
        let before = errors.len();
        let path = r.path.map(|p| {
            let bad = !p.starts_with('/')
                || p.contains('\0')
                || p.contains('%')
                || p.split('/').any(|s| s == "." || s == "..")
                || p.contains("//");
            if bad {
                errors.push(err(
                    "path",
                    format!("{p:?}: a path under the worker's route, starting with / (decoded, without . or .. segments)"),
                ));
            }
            let t = p.trim_end_matches('/');
            if t.is_empty() { "/".to_string() } else { t.to_string() }
        });
        let ext: Vec<String> = r
            .ext
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
            .collect();
        if ext.iter().any(|e| e.is_empty() || e.contains('/')) {
            errors.push(err("ext", "extensions are names like css or png".into()));
        }
        if path.is_none() && ext.is_empty() {
            errors.push(err(
                "",
                "needs path or ext: the requests it applies to".into(),
            ));
        }
        if let Some(d) = r.deny
            && d != 403
            && d != 404
        {
            errors.push(err("deny", format!("{d}: deny answers 403 or 404")));
        }
        let mut headers = Vec::new();
        for (k, v) in r.headers.unwrap_or_default() {
            let (Some(k), Some(v)) = (
                k.as_str(),
                v.as_str()
                    .map(str::to_string)
                    .or_else(|| ini_value(&v).ok()),
            ) else {
                errors.push(err("headers", "header names and values are strings".into()));
                continue;
            };
            let name = match http::HeaderName::from_bytes(k.as_bytes()) {
                Ok(n) => n,
                Err(_) => {
                    errors.push(err("headers", format!("{k:?} is not a header name")));
                    continue;
                }
            };
            if crate::http::hop_by_hop(&name)
                || name == http::header::CONTENT_LENGTH
                || name == http::header::TRANSFER_ENCODING
            {
                errors.push(err(
                    "headers",
                    format!("{k}: framing and hop-by-hop headers are TQServer's"),
                ));
                continue;
            }
            match http::HeaderValue::from_str(&v) {
                Ok(value) => headers.push((name, value)),
                Err(_) => errors.push(err("headers", format!("{k}: {v:?} is not a header value"))),
            }
        }
        let cache = r.cache.and_then(|c| match c.get() {
            Ok(d) => Some(d),
            Err(e) => {
                errors.push(err("cache", e));
                None
            }
        });
        let php = r.php.unwrap_or(true);
        if r.deny.is_none()
            && php
            && headers.is_empty()
            && cache.is_none()
            && errors.len() == before
        {
            errors.push(err(
                "",
                "does nothing: give it deny, php: false, headers or cache".into(),
            ));
        }
        rules.push(PathRule {
            path,
            ext,
            deny: r.deny,
            php,
            headers,
            cache,
        });
    }
    rules
}

/// The `symlinks` values.
const SYMLINKS: [&str; 4] = ["owner", "inside", "any", "none"];

/// TQServer's own FastCGI listener for a PHP worker (`fastcgi.*`), so a
/// web server can use TQServer in place of php-fpm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastcgiListener {
    /// `fastcgi.listen`: a TCP address or `unix:/path`.
    pub listen: tqserver_fastcgi::Address,
    /// `fastcgi.allowed_clients` (php-fpm's `listen.allowed_clients`):
    /// empty means loopback only.
    pub allowed_clients: Vec<IpAddr>,
    /// `fastcgi.limit_extensions` (php-fpm's `security.limit_extensions`).
    pub limit_extensions: Vec<String>,
    /// `fastcgi.ping_path` (php-fpm's `ping.path`).
    pub ping_path: Option<String>,
    /// `fastcgi.ping_response` (php-fpm's `ping.response`).
    pub ping_response: String,
    /// `fastcgi.status_path` (php-fpm's `pm.status_path`).
    pub status_path: Option<String>,
    /// `fastcgi.mode`: permissions of a Unix socket (php-fpm's `listen.mode`).
    pub mode: u32,
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
pub struct PoolConfig {
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
    /// Requests waiting for a free process at most (cgi backend).
    pub max_queue: u32,
    /// Longest wait for a free process before 503 (cgi backend).
    pub queue_timeout: Duration,
    /// `shared_memory` (cgi backend, static manager): the processes fork
    /// from one php-cgi that started PHP once, so they share APCu and
    /// opcache, as php-fpm's children do.
    pub shared_memory: bool,
}

impl PoolConfig {
    /// The manager and its numbers in words, as `check` prints them and
    /// PHP sees them in `WORKER_POOL`.
    pub fn describe(&self) -> String {
        match self.manager {
            Manager::Static if self.shared_memory => format!(
                "static, {} processes sharing APCu and opcache",
                self.max_children
            ),
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
pub struct PhpConfig {
    /// `php.backend`.
    pub backend: PhpBackend,
    /// `php.binary`: the php-fpm or php-cgi to run (else found on PATH).
    pub binary: Option<PathBuf>,
    /// `php.config_file`: a php.ini passed with `-c`.
    pub config_file: Option<PathBuf>,
    /// `php.settings`, in file order, as `php_admin_value[...]`.
    pub settings: Vec<(String, String)>,
    /// The pool.
    pub pool: PoolConfig,
    /// Absolute document root.
    pub document_root: PathBuf,
    /// `symlinks`: which links under the root are followed.
    pub symlinks: Symlinks,
    /// `rules`, in file order.
    pub rules: Vec<PathRule>,
    /// `alias`: URL prefixes under the route (normalised, no trailing
    /// `/`) served from other folders (canonical), longest first.
    pub aliases: Vec<(String, PathBuf)>,
    /// `sendfile`: the folders a PHP answer's `X-Sendfile` (a path in
    /// one) or `X-Accel-Redirect` (a URI under its prefix) may name;
    /// prefix (normalised, no trailing `/`) and canonical folder, longest
    /// prefix first.
    pub sendfile: Vec<(String, PathBuf)>,
    /// `php.params`: extra CGI params for every request (nginx's
    /// `fastcgi_param`), set after TQServer's own, in order.
    pub params: Vec<(String, String)>,
    /// Route requests for missing paths to `index.php` (front controller).
    pub front_controller: bool,
    /// `php.request_buffering` (default true): receive a request body
    /// whole before a PHP process is taken (nginx's
    /// `fastcgi_request_buffering`). Off, the body streams to PHP as it
    /// arrives, and a slow client holds a process all that time.
    pub request_buffering: bool,
    /// `php.worker` (backend: embed): worker mode, this script (absolute),
    /// which boots once per process and loops on
    /// `tqserver_handle_request()`; every request that is not a static
    /// file goes to it.
    pub worker: Option<PathBuf>,
    /// `php.worker_max_memory`: a worker process whose script holds more
    /// than this after a request is replaced.
    pub worker_max_memory: Option<u64>,
}

/// Per-worker logging (`logging.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerLogging {
    /// Lowest level of the worker's lines that is written.
    pub level: tracing::Level,
    /// Where this worker's access lines go.
    pub access_log: AccessTarget,
    /// `logging.access_log_format`.
    pub access_format: crate::access::AccessFormat,
    /// Log requests slower than this.
    pub slow_threshold: Option<Duration>,
    /// The worker's own log file (`{name}`, `{date}`), else the server log.
    pub log_file: Option<String>,
    /// `logging.output_file` (native workers): each instance's output also
    /// goes to this file of its own (`{name}`, `{port}`, `{date}`; default
    /// `logs/{name}_{port}.log`, as the Go TQServer; `""`: none).
    pub output_file: Option<String>,
}

/// `logging.access_log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessTarget {
    /// No access lines for this worker (the server-wide log may still
    /// have them).
    Off,
    /// Into the worker's log (`true`).
    WorkerLog,
    /// Alone into this file (`{date}`, `{name}`).
    File(String),
}

/// How a native worker is built and run (`type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NativeKind {
    /// A cargo package in the worker folder.
    Rust,
    /// `go build -o bin/{name} ./src`, as the original TQServer.
    Go,
    /// Any program: `command.run`, optionally `command.build`.
    Command,
    /// `bun install` (when there is a package.json), then `bun run
    /// <bun.entrypoint>`, as the Go TQServer.
    Bun,
}

impl NativeKind {
    /// The `type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rust => "rust",
            Self::Go => "go",
            Self::Command => "command",
            Self::Bun => "bun",
        }
    }
}

/// A native worker: an HTTP server TQServer builds, runs on ports from the
/// range and proxies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeConfig {
    /// `type`.
    pub kind: NativeKind,
    /// The worker folder (absolute): where builds and instances run.
    pub dir: PathBuf,
    /// `command.build` (command workers; rust and go have their recipe).
    pub build: Option<Vec<String>>,
    /// `command.run` (command workers only).
    pub run: Vec<String>,
    /// `bun.entrypoint` (bun workers only; default `index.ts`).
    pub entrypoint: String,
    /// `public_files` (default true): files in the worker's `public/`
    /// folder are served by TQServer before the request is proxied, as
    /// the Go TQServer did.
    pub public_files: bool,
    /// `proxy.strip_prefix` (default true, as the Go TQServer): the
    /// route is taken off the path before the request is proxied
    /// (`/api/items` reaches the worker as `/items`, `/api` as `/`), and
    /// `X-Forwarded-Prefix` says what was taken.
    pub strip_prefix: bool,
    /// `scaling.queue_threshold`: one more instance starts when every
    /// ready one has this many requests in hand (default 10, as the Go
    /// TQServer).
    pub queue_threshold: u32,
    /// `env`, `command.env`, `bun.env`, then what `go.*` / `runtime.*`
    /// and `timeouts.*` become (`GOMAXPROCS`, `GOMEMLIMIT`,
    /// `WORKER_READ_TIMEOUT_SECONDS`, …), in that order.
    pub env: Vec<(String, String)>,
    /// `scaling.min_workers`: instances that always run.
    pub min_instances: u32,
    /// `scaling.max_workers`: instances under load at most.
    pub max_instances: u32,
    /// `scaling.max_requests`: an instance is replaced after this many (0: never).
    pub max_requests: u64,
    /// How long the proxy waits on the worker.
    pub timeouts: ProxyTimeouts,
    /// `scaling.idle_timeout`: an instance above the minimum idle this long stops.
    pub idle_timeout: Duration,
    /// `health.path`.
    pub health_path: String,
    /// `health.interval_ms`.
    pub health_interval: Duration,
    /// `health.failures`.
    pub health_failures: u32,
}

/// How long the proxy waits on a native worker, nginx's `proxy_*_timeout`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyTimeouts {
    /// `scaling.request_timeout`: the longest wait for the answer head
    /// once the request is sent.
    pub head: Duration,
    /// `proxy.read_timeout`: the longest pause between two reads of the
    /// answer body (nginx's `proxy_read_timeout`; default: `head`).
    pub read: Duration,
    /// `proxy.send_timeout`: the longest pause between two writes of the
    /// request body (nginx's `proxy_send_timeout`).
    pub send: Duration,
    /// `proxy.upgrade_idle_timeout`: an upgraded connection with nothing
    /// sent either way this long is closed.
    pub upgrade_idle: Duration,
}

/// One worker from `workers/{name}/config/worker.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    /// The folder name.
    pub name: String,
    /// Its worker.yaml, as found.
    pub file: PathBuf,
    /// URL path prefix (`/blog`).
    pub route: String,
    /// Runs in this mode.
    pub enabled: bool,
    /// The PHP settings.
    pub php: PhpConfig,
    /// Logging.
    pub logging: WorkerLogging,
    /// The FastCGI listener, when `fastcgi.listen` is set.
    pub fastcgi: Option<FastcgiListener>,
    /// For `type: rust | go | command`: how it is built and run. `None`
    /// for PHP workers (whose settings are in `php`).
    pub native: Option<NativeConfig>,
    /// `type: static`: files from `document_root` (with its `symlinks`
    /// and `rules`, kept in `php`), no PHP at all.
    pub static_site: bool,
    /// `compression`: what its answers are compressed with.
    pub compression: encode::Policy,
    /// What every process of this worker is given besides its own port
    /// (`WORKER_NAME`, `WORKER_PATH`, `WORKER_MODE`, the egress proxy…):
    /// one list for every backend, set by [`super::Config`].
    pub environment: Vec<(String, String)>,
}

impl WorkerConfig {
    /// Opens its log ([`crate::logging::WorkerLog`]): `logging.log_file`,
    /// else the server log, at `logging.level`.
    pub fn open_log(&self) -> std::io::Result<crate::logging::WorkerLog> {
        crate::logging::WorkerLog::new(
            &self.name,
            self.logging.level,
            self.logging.log_file.as_deref(),
        )
    }

    /// `php`, `static`, `rust`, `go` or `command`.
    pub fn type_name(&self) -> &'static str {
        match &self.native {
            Some(n) => n.kind.as_str(),
            None if self.static_site => "static",
            None => "php",
        }
    }

    /// A PHP worker (not static, not native).
    pub fn is_php(&self) -> bool {
        self.native.is_none() && !self.static_site
    }
}

const TYPES: [&str; 6] = ["php", "static", "rust", "go", "command", "bun"];
const MANAGERS: [&str; 3] = ["static", "dynamic", "ondemand"];
const BACKENDS: [&str; 3] = ["fpm", "cgi", "embed"];
const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

impl WorkerFile {
    pub(crate) fn resolve(
        self,
        name: &str,
        dir: &Path,
        file: &Path,
        text: &str,
        mode: Mode,
        warnings: &mut Vec<ConfigError>,
    ) -> Result<WorkerConfig, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let err = |key: &str, msg: String| ConfigError::new(file, key_line(text, key), key, msg);
        if let Some(n) = self.name.as_deref().filter(|n| *n != name) {
            warnings.push(err(
                "name",
                format!("{n:?} is not acted on: a worker is named by its folder ({name}), in TQServer as in the Go TQServer"),
            ));
        }
        // The folder name becomes php-fpm's pool section, log and socket
        // names: plain characters only.
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            errors.push(ConfigError::new(
                file,
                None,
                "",
                format!("the worker folder name {name:?} may have only letters, digits, '_', '-' and '.'; rename the folder"),
            ));
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
        let static_site = self.kind.as_deref() == Some("static");
        let native_kind = match self.kind.as_deref() {
            Some("php" | "static") => None,
            None => {
                errors.push(ConfigError::new(
                    file,
                    None,
                    "type",
                    format!("missing; one of: {}", TYPES.join(", ")),
                ));
                None
            }
            Some("rust") => Some(NativeKind::Rust),
            Some("go") => Some(NativeKind::Go),
            Some("command") => Some(NativeKind::Command),
            Some("bun") => Some(NativeKind::Bun),
            Some(t) => {
                errors.push(err("type", unknown_choice("type", t, &TYPES)));
                None
            }
        };
        let native = resolve_native(
            NativeSections {
                kind: native_kind,
                dir,
                command: self.command,
                scaling: self.scaling,
                proxy: self.proxy,
                env: self.env,
                health: self.health,
                bun: self.bun,
                go: self.go,
                runtime: self.runtime,
                timeouts: self.timeouts,
                public_files: self.public_files,
                known_kind: self.kind.as_deref().is_some_and(|k| TYPES.contains(&k)),
            },
            &err,
            &mut errors,
        );
        // Keys of the workers that serve a document root: PHP's alone
        // (true), or PHP's and static ones' (false).
        let this = native_kind
            .map(NativeKind::as_str)
            .or(static_site.then_some("static"));
        if let Some(this) = this {
            for (key, present, php_only) in [
                ("php", self.php.is_some(), true),
                ("fastcgi", self.fastcgi.is_some(), true),
                ("document_root", self.document_root.is_some(), false),
                ("symlinks", self.symlinks.is_some(), false),
                ("rules", self.rules.is_some(), false),
                ("alias", self.alias.is_some(), false),
                ("sendfile", self.sendfile.is_some(), true),
            ] {
                if present && (php_only || native_kind.is_some()) {
                    let owners = if php_only { "php" } else { "php and static" };
                    errors.push(err(
                        key,
                        format!("{key} is for type: {owners} workers; this one is type: {this}"),
                    ));
                }
            }
        }
        let php = self.php.unwrap_or_default();
        let backend = match php.backend.as_deref() {
            None | Some("fpm") => PhpBackend::Fpm,
            Some("cgi") => PhpBackend::Cgi,
            Some("embed") => PhpBackend::Embed,
            Some(b) => {
                errors.push(err("php.backend", unknown_choice("backend", b, &BACKENDS)));
                PhpBackend::Fpm
            }
        };
        let symlinks = match self.symlinks.as_deref() {
            None | Some("owner") => Symlinks::Owner,
            Some("inside") => Symlinks::Inside,
            Some("any") => Symlinks::Any,
            Some("none") => Symlinks::None,
            Some(v) => {
                errors.push(err("symlinks", unknown_choice("symlinks", v, &SYMLINKS)));
                Symlinks::Owner
            }
        };
        let rules = resolve_rules(self.rules.unwrap_or_default(), file, text, &mut errors);
        let compression = resolve_compression(self.compression, &err, &mut errors);
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
        let params = name_values(
            "php.params",
            php.params.clone(),
            |n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "a CGI param name has only letters, digits and '_'",
            &err,
            &mut errors,
        );
        let slowlog_timeout = php.pool.as_ref().and_then(|p| p.slowlog_timeout.clone());
        let pool_file = php.pool.unwrap_or_default();
        let manager_given = pool_file.manager.is_some();
        let mut pool = resolve_pool(pool_file, &err, &mut errors);
        if backend == PhpBackend::Embed {
            // The embedded runtime's master forks its processes from warm
            // memory; TQServer drives it as php-cgi's shared-memory master.
            // Static: the master keeps max_workers children; dynamic and
            // ondemand: it forks one whenever TQServer's manager asks.
            if !manager_given {
                pool.manager = Manager::Static;
            }
            pool.shared_memory = true;
        } else if pool.shared_memory && backend != PhpBackend::Cgi {
            errors.push(err(
                "php.pool.shared_memory",
                "php-fpm's children share APCu and opcache already; shared_memory is for backend: cgi".into(),
            ));
        } else if pool.shared_memory && pool.manager != Manager::Static {
            errors.push(err(
                "php.pool.shared_memory",
                "shared memory needs manager: static (one php-cgi forks a fixed number of processes)".into(),
            ));
        }
        if backend.on_own_pool() && matches!(pool.listen, Listen::Unix(_) | Listen::Tcp(_)) {
            errors.push(err(
                "php.pool.listen_address",
                format!("the {} backend gives each PHP process its own address: leave listen_address out (Unix sockets in the runtime directory) or give an IP (ports from the range)", backend.as_str()),
            ));
        }
        if let (true, Listen::TcpFromRange(ip)) = (backend.on_own_pool(), &pool.listen) {
            if !ip.is_loopback() {
                // php-cgi runs any PHP file it is sent: it must accept
                // TQServer only, never the network.
                errors.push(err(
                    "php.pool.listen_address",
                    format!("{ip} is not a loopback address: php-cgi would run any PHP file for whoever connects; use 127.0.0.1 (or leave listen_address out for private Unix sockets)"),
                ));
            }
        }
        let fastcgi = self
            .fastcgi
            .and_then(|f| resolve_fastcgi(f, &err, &mut errors));
        let doc = dir.join(
            self.document_root
                .as_deref()
                .unwrap_or(DEFAULT_DOCUMENT_ROOT),
        );
        let document_root = match std::path::absolute(&doc).and_then(|d| d.canonicalize()) {
            Ok(d) if d.is_dir() => d,
            _ => {
                if enabled && native.is_none() {
                    errors.push(err(
                        "document_root",
                        format!("{} is not a directory", doc.display()),
                    ));
                }
                doc
            }
        };
        let worker_script = match php.worker.as_deref() {
            None => None,
            Some(_) if backend != PhpBackend::Embed => {
                errors.push(err(
                    "php.worker",
                    "worker mode runs on TQServer's own PHP runtime: add php.backend: embed".into(),
                ));
                None
            }
            Some(w) => {
                let p = dir.join(w);
                match std::path::absolute(&p).and_then(|p| p.canonicalize()) {
                    Ok(c) if c.is_file() => Some(c),
                    _ => {
                        if enabled {
                            errors.push(err(
                                "php.worker",
                                format!("{} is not a file (the path is relative to the worker's folder)", p.display()),
                            ));
                        }
                        None
                    }
                }
            }
        };
        let worker_max_memory = match &php.worker_max_memory {
            None => None,
            Some(_) if php.worker.is_none() => {
                errors.push(err(
                    "php.worker_max_memory",
                    "is for worker mode: set php.worker too".into(),
                ));
                None
            }
            Some(v) => match v.get() {
                Ok(0) => None,
                Ok(n) => Some(n),
                Err(m) => {
                    errors.push(err("php.worker_max_memory", m));
                    None
                }
            },
        };
        let aliases = prefix_folders(
            PrefixMap {
                key: "alias",
                map: self.alias,
                dir,
                file,
                text,
                enabled,
            },
            &err,
            &mut errors,
        );
        let sendfile = prefix_folders(
            PrefixMap {
                key: "sendfile",
                map: self.sendfile,
                dir,
                file,
                text,
                enabled,
            },
            &err,
            &mut errors,
        );
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
        let slow_threshold = if let Some(t) = slowlog_timeout {
            if slow.threshold.is_some() {
                errors.push(err(
                    "php.pool.slowlog_timeout",
                    "set either php.pool.slowlog_timeout or logging.slow_log.threshold, not both"
                        .into(),
                ));
            }
            match t.get() {
                // php-fpm: 0 turns the slow log off.
                Ok(d) if d.is_zero() => None,
                Ok(d) => Some(d),
                Err(m) => {
                    errors.push(err("php.pool.slowlog_timeout", m));
                    None
                }
            }
        } else if slow.enabled.unwrap_or(slow.threshold.is_some()) {
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

        let output_file = match (&native, logging.output_file) {
            (Some(_), None) => Some(DEFAULT_OUTPUT_FILE.to_string()),
            (Some(_), Some(f)) if f.trim().is_empty() => None,
            (Some(_), Some(f)) => Some(f),
            (None, None) => None,
            (None, Some(_)) => {
                errors.push(err(
                    "logging.output_file",
                    "is for native workers (their processes' output); PHP's goes to the worker's log".into(),
                ));
                None
            }
        };
        let access_format = match crate::access::AccessFormat::parse(
            logging.access_log_format.as_deref().unwrap_or("combined"),
        ) {
            Ok(f) => f,
            Err(m) => {
                errors.push(err("logging.access_log_format", m));
                crate::access::AccessFormat::Combined
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(WorkerConfig {
            name: name.to_string(),
            file: file.to_path_buf(),
            route,
            enabled,
            fastcgi,
            native,
            static_site,
            compression,
            environment: Vec::new(),
            php: PhpConfig {
                backend,
                binary: php.binary.map(relative_to_worker),
                config_file,
                settings,
                pool,
                document_root,
                symlinks,
                rules,
                aliases,
                sendfile,
                params,
                front_controller: php.front_controller.unwrap_or(true),
                request_buffering: php.request_buffering.unwrap_or(true),
                worker: worker_script,
                worker_max_memory,
            },
            logging: WorkerLogging {
                level,
                access_log: match logging.access_log {
                    None | Some(AccessLogValue::Flag(false)) => AccessTarget::Off,
                    Some(AccessLogValue::Flag(true)) => AccessTarget::WorkerLog,
                    Some(AccessLogValue::File(f)) if f.trim().is_empty() => AccessTarget::Off,
                    Some(AccessLogValue::File(f)) => AccessTarget::File(f),
                },
                access_format,
                slow_threshold,
                // The Go TQServer's top-level `log_file` (its older
                // spelling); `logging.log_file` wins, as there.
                log_file: logging.log_file.or(self.log_file),
                output_file,
            },
        })
    }
}

/// A map of URL prefixes (under the route) to folders, `alias` or
/// `sendfile`, and where it comes from.
struct PrefixMap<'a> {
    key: &'a str,
    map: Option<serde_yaml_ng::Mapping>,
    dir: &'a Path,
    file: &'a Path,
    text: &'a str,
    enabled: bool,
}

/// Checks a [`PrefixMap`]: prefixes normalised (no trailing `/`), folders
/// canonical; longest prefix first. Errors name `key.prefix` and its line.
fn prefix_folders(
    m: PrefixMap<'_>,
    err: &dyn Fn(&str, String) -> ConfigError,
    errors: &mut Vec<ConfigError>,
) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for (k, v) in m.map.unwrap_or_default() {
        let (Some(prefix), Some(folder)) = (k.as_str(), v.as_str()) else {
            errors.push(err(
                m.key,
                format!(
                    "entries are a URL prefix and a folder, e.g. \"{}\": /srv/files",
                    if m.key == "alias" {
                        "/wp-content"
                    } else {
                        "/protected"
                    }
                ),
            ));
            continue;
        };
        let key = format!("{}.{prefix}", m.key);
        let line = key_line(m.text, m.key).map(|from| {
            m.text
                .lines()
                .enumerate()
                .skip(from)
                .find(|(_, l)| l.contains(prefix))
                .map_or(from, |(i, _)| i + 1)
        });
        let bad = !prefix.starts_with('/')
            || prefix.trim_end_matches('/').is_empty()
            || prefix.contains('%')
            || prefix.contains("//")
            || prefix.split('/').any(|s| s == "." || s == "..");
        if bad {
            errors.push(ConfigError::new(m.file, line, &key, format!("{prefix:?}: a path under the worker's route, starting with / (not / itself; decoded, without . or .. segments)")));
            continue;
        }
        let dir_path = m.dir.join(folder);
        match std::path::absolute(&dir_path).and_then(|d| d.canonicalize()) {
            Ok(d) if d.is_dir() => out.push((prefix.trim_end_matches('/').to_string(), d)),
            _ => {
                if m.enabled {
                    errors.push(ConfigError::new(
                        m.file,
                        line,
                        &key,
                        format!("{} is not a directory", dir_path.display()),
                    ));
                }
            }
        }
    }
    out.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    out
}

/// A map of names to values (`php.params`, `env`): each name checked by
/// `valid` (else `bad`, naming the entry), each value a scalar without a
/// NUL byte; errors name `key.NAME`.
fn name_values(
    key: &str,
    map: Option<serde_yaml_ng::Mapping>,
    valid: impl Fn(&str) -> bool,
    bad: &str,
    err: &dyn Fn(&str, String) -> ConfigError,
    errors: &mut Vec<ConfigError>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in map.unwrap_or_default() {
        let name = k
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{k:?}"));
        let full = format!("{key}.{name}");
        if !valid(&name) {
            errors.push(err(key, format!("{name:?}: {bad}")));
            continue;
        }
        match ini_value(&v) {
            Ok(val) if val.contains('\0') => {
                errors.push(err(&full, "a value cannot contain a NUL byte".into()))
            }
            Ok(val) => out.push((name, val)),
            Err(m) => errors.push(err(&full, m)),
        }
    }
    out
}

const ENCODINGS: [&str; 3] = ["zstd", "br", "gzip"];

/// Checks `compression`; the defaults when it is left out.
fn resolve_compression(
    value: Option<CompressionValue>,
    err: &dyn Fn(&str, String) -> ConfigError,
    errors: &mut Vec<ConfigError>,
) -> encode::Policy {
    let mut policy = encode::Policy::default();
    let c = match value {
        None => return policy,
        Some(CompressionValue::Flag(on)) => {
            policy.enabled = on;
            return policy;
        }
        Some(CompressionValue::Section(c)) => c,
    };
    policy.enabled = c.enabled.unwrap_or(true);
    if let Some(list) = c.encodings {
        let mut encodings = Vec::new();
        for name in &list {
            match Encoding::parse(name) {
                Some(e) if name != "x-gzip" && !encodings.contains(&e) => encodings.push(e),
                Some(_) => errors.push(err(
                    "compression.encodings",
                    format!("{name:?} is listed twice"),
                )),
                None => errors.push(err(
                    "compression.encodings",
                    unknown_choice("encoding", name, &ENCODINGS),
                )),
            }
        }
        policy.encodings = encodings;
    }
    if let Some(l) = c.levels {
        let mut level = |key: &str, v: Option<i64>, lo: i64, hi: i64| match v {
            Some(n) if n < lo || n > hi => {
                errors.push(err(
                    &format!("compression.levels.{key}"),
                    format!("{n} is outside {lo}..={hi}"),
                ));
                None
            }
            v => v,
        };
        if let Some(n) = level("gzip", l.gzip.map(i64::from), 1, 9) {
            policy.levels.gzip = u32::try_from(n).unwrap_or(encode::DEFAULT_LEVELS.gzip);
        }
        if let Some(n) = level("br", l.br.map(i64::from), 0, 11) {
            policy.levels.br = u32::try_from(n).unwrap_or(encode::DEFAULT_LEVELS.br);
        }
        if let Some(n) = level("zstd", l.zstd.map(i64::from), 1, 19) {
            policy.levels.zstd = i32::try_from(n).unwrap_or(encode::DEFAULT_LEVELS.zstd);
        }
    }
    if let Some(m) = c.min_length {
        match m.get() {
            Ok(n) => policy.min_length = n,
            Err(m) => errors.push(err("compression.min_length", m)),
        }
    }
    if let Some(types) = c.types {
        let mut list = Vec::new();
        for t in types {
            let t = t.trim().to_ascii_lowercase();
            let ok = t.split_once('/').is_some_and(|(a, b)| {
                !a.is_empty()
                    && a != "*"
                    && !b.is_empty()
                    && !t.contains([' ', ';', ','])
                    && (b == "*" || !b[1..].contains('*'))
            });
            if ok {
                list.push(t);
            } else {
                errors.push(err(
                    "compression.types",
                    format!("{t:?} is not a media type or pattern (text/html, text/*, application/*+json)"),
                ));
            }
        }
        policy.types = list;
    }
    policy.precompressed = c.precompressed.unwrap_or(true);
    policy
}

struct NativeSections<'a> {
    kind: Option<NativeKind>,
    dir: &'a Path,
    command: Option<CommandSection>,
    scaling: Option<ScalingSection>,
    proxy: Option<ProxySection>,
    env: Option<serde_yaml_ng::Mapping>,
    health: Option<HealthSection>,
    bun: Option<BunSection>,
    go: Option<GoSection>,
    runtime: Option<GoSection>,
    timeouts: Option<TimeoutsSection>,
    public_files: Option<bool>,
    /// `type` named a known kind (a PHP or static one when `kind` is
    /// `None`): only then is a native key on it a mistake of its own.
    known_kind: bool,
}

/// Checks the keys of a native worker (`command`, `scaling`, `env`,
/// `health`); for a PHP worker, says that they do not apply.
fn resolve_native(
    n: NativeSections<'_>,
    err: &dyn Fn(&str, String) -> ConfigError,
    errors: &mut Vec<ConfigError>,
) -> Option<NativeConfig> {
    let Some(kind) = n.kind else {
        for (key, present) in [
            ("command", n.command.is_some()),
            ("scaling", n.scaling.is_some()),
            ("proxy", n.proxy.is_some()),
            ("env", n.env.is_some()),
            ("health", n.health.is_some()),
            ("bun", n.bun.is_some()),
            ("go", n.go.is_some()),
            ("runtime", n.runtime.is_some()),
            ("timeouts", n.timeouts.is_some()),
            ("public_files", n.public_files.is_some()),
        ] {
            if present && n.known_kind {
                errors.push(err(
                    key,
                    format!("{key} is for native workers (type: rust, go, bun or command); PHP workers are sized with php.pool"),
                ));
            }
        }
        return None;
    };
    let env_name = |n: &str| !n.is_empty() && !n.contains(['=', '\0']);
    let env_bad = "not an environment variable name (no = or NUL byte)";
    let mut env = name_values("env", n.env, env_name, env_bad, err, errors);
    let command = n.command.unwrap_or_default();
    env.extend(name_values(
        "command.env",
        command.env,
        env_name,
        env_bad,
        err,
        errors,
    ));
    let bun = n.bun.unwrap_or_default();
    if kind != NativeKind::Bun && (bun.entrypoint.is_some() || bun.env.is_some()) {
        errors.push(err(
            "bun",
            format!(
                "bun is for type: bun workers; this one is type: {}",
                kind.as_str()
            ),
        ));
    }
    env.extend(name_values(
        "bun.env", bun.env, env_name, env_bad, err, errors,
    ));
    let entrypoint = bun
        .entrypoint
        .unwrap_or_else(|| DEFAULT_BUN_ENTRYPOINT.to_string());
    if kind == NativeKind::Bun && !n.dir.join(&entrypoint).is_file() {
        errors.push(err(
            "bun.entrypoint",
            format!(
                "{} does not exist (bun runs it: bun run {entrypoint})",
                n.dir.join(&entrypoint).display()
            ),
        ));
    }
    // `go.*` and `runtime.*` are one set of keys; one section, not both.
    let (go_key, go) = match (n.go, n.runtime) {
        (Some(_), Some(r)) => {
            errors.push(err(
                "runtime",
                "go and runtime hold the same keys (the Go TQServer's two spellings); keep one"
                    .into(),
            ));
            ("runtime", r)
        }
        (Some(g), None) => ("go", g),
        (None, Some(r)) => ("runtime", r),
        (None, None) => ("go", GoSection::default()),
    };
    if let Some(p) = go.go_max_procs.filter(|p| *p > 0) {
        env.push(("GOMAXPROCS".into(), p.to_string()));
    }
    if let Some(l) = go
        .go_mem_limit
        .as_deref()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        if go_mem_limit_ok(l) {
            env.push(("GOMEMLIMIT".into(), l.to_string()));
        } else {
            errors.push(err(
                &format!("{go_key}.go_mem_limit"),
                format!("{l:?} is not a Go memory limit; write a number of bytes with B, KiB, MiB, GiB or TiB, e.g. \"512MiB\""),
            ));
        }
    }
    // The worker's own HTTP server timeouts: `timeouts.*` (or the same
    // keys under `go.*`), as the Go TQServer's worker runtime reads them.
    let t = n.timeouts.unwrap_or_default();
    for (key, value, from_go, var) in [
        (
            "read_timeout_seconds",
            t.read_timeout_seconds,
            go.read_timeout_seconds,
            "WORKER_READ_TIMEOUT_SECONDS",
        ),
        (
            "write_timeout_seconds",
            t.write_timeout_seconds,
            go.write_timeout_seconds,
            "WORKER_WRITE_TIMEOUT_SECONDS",
        ),
        (
            "idle_timeout_seconds",
            t.idle_timeout_seconds,
            go.idle_timeout_seconds,
            "WORKER_IDLE_TIMEOUT_SECONDS",
        ),
    ] {
        if value.is_some() && from_go.is_some() {
            errors.push(err(
                &format!("timeouts.{key}"),
                format!("also set as {go_key}.{key}; keep one"),
            ));
        }
        if let Some(v) = value.or(from_go) {
            env.push((var.into(), v.to_string()));
        }
    }
    let mut argv = |key: &str, v: Option<Vec<String>>| match v {
        Some(a) if a.is_empty() || a[0].trim().is_empty() => {
            errors.push(err(
                key,
                "empty; give the program and its arguments, e.g. [\"python3\", \"app.py\"]".into(),
            ));
            None
        }
        v => v,
    };
    let run = argv("command.run", command.run);
    let build = argv("command.build", command.build);
    let run = match (kind, run) {
        (NativeKind::Command, Some(r)) => r,
        (NativeKind::Command, None) => {
            errors.push(err(
                "command",
                "command.run is missing; give the program that serves HTTP on $WORKER_PORT, e.g. run: [\"python3\", \"app.py\"]".into(),
            ));
            Vec::new()
        }
        (k, r) => {
            if r.is_some() || build.is_some() {
                errors.push(err(
                    "command",
                    format!("command.run / command.build are for type: command; a type: {} worker is built by its own recipe", k.as_str()),
                ));
            }
            Vec::new()
        }
    };
    let scaling = n.scaling.unwrap_or_default();
    let max_requests = match (scaling.max_requests, go.max_requests) {
        (Some(a), Some(b)) if a != b => {
            errors.push(err(
                &format!("{go_key}.max_requests"),
                format!("{b} differs from scaling.max_requests ({a}); keep one"),
            ));
            a
        }
        (a, b) => a.or(b).unwrap_or(0),
    };
    let queue_threshold = scaling.queue_threshold.unwrap_or(DEFAULT_QUEUE_THRESHOLD);
    if queue_threshold == 0 {
        errors.push(err(
            "scaling.queue_threshold",
            "must be at least 1 (requests in hand per instance before one more starts)".into(),
        ));
    }
    if scaling.idle_timeout.is_some() && scaling.scale_down_delay.is_some() {
        errors.push(err(
            "scaling.scale_down_delay",
            "the Go TQServer's name for scaling.idle_timeout; keep one".into(),
        ));
    }
    let min_instances = scaling.min_workers.unwrap_or(DEFAULT_INSTANCES);
    let max_instances = scaling.max_workers.unwrap_or(min_instances);
    if min_instances == 0 {
        errors.push(err(
            "scaling.min_workers",
            "must be at least 1 (an instance must be up to serve the route)".into(),
        ));
    }
    if max_instances < min_instances {
        errors.push(err(
            "scaling.max_workers",
            format!("scaling.max_workers ({max_instances}) is below scaling.min_workers ({min_instances})"),
        ));
    }
    let mut dur =
        |key: &str, v: Option<DurationValue>, d: Duration| duration(key, v, d, err, errors);
    let request_timeout = dur(
        "scaling.request_timeout",
        scaling.request_timeout,
        DEFAULT_PROXY_TIMEOUT,
    );
    let idle_timeout = match scaling.scale_down_delay {
        Some(d) => dur("scaling.scale_down_delay", Some(d), DEFAULT_SCALE_IDLE),
        None => dur(
            "scaling.idle_timeout",
            scaling.idle_timeout,
            DEFAULT_SCALE_IDLE,
        ),
    };
    let proxy = n.proxy.unwrap_or_default();
    let timeouts = ProxyTimeouts {
        head: request_timeout,
        read: dur("proxy.read_timeout", proxy.read_timeout, request_timeout),
        send: dur(
            "proxy.send_timeout",
            proxy.send_timeout,
            DEFAULT_SEND_TIMEOUT,
        ),
        upgrade_idle: dur(
            "proxy.upgrade_idle_timeout",
            proxy.upgrade_idle_timeout,
            DEFAULT_UPGRADE_IDLE,
        ),
    };
    for (key, d) in [
        ("scaling.request_timeout", timeouts.head),
        ("proxy.read_timeout", timeouts.read),
        ("proxy.send_timeout", timeouts.send),
        ("proxy.upgrade_idle_timeout", timeouts.upgrade_idle),
    ] {
        if d.is_zero() {
            errors.push(err(
                key,
                "must be more than 0 (a wait of nothing fails every request)".into(),
            ));
        }
    }
    let health = n.health.unwrap_or_default();
    let health_path = health
        .path
        .unwrap_or_else(|| DEFAULT_HEALTH_PATH.to_string());
    if !health_path.starts_with('/') {
        errors.push(err(
            "health.path",
            format!("{health_path:?} must start with '/'"),
        ));
    }
    let health_failures = health.failures.unwrap_or(DEFAULT_HEALTH_FAILURES);
    if health_failures == 0 {
        errors.push(err("health.failures", "must be at least 1".into()));
    }
    Some(NativeConfig {
        kind,
        dir: std::path::absolute(n.dir).unwrap_or_else(|_| n.dir.to_path_buf()),
        build,
        run,
        entrypoint,
        strip_prefix: proxy.strip_prefix.unwrap_or(true),
        public_files: n.public_files.unwrap_or(true),
        queue_threshold,
        env,
        min_instances,
        max_instances,
        max_requests,
        timeouts,
        idle_timeout,
        health_path,
        health_interval: health
            .interval_ms
            .map_or(DEFAULT_HEALTH_INTERVAL, Duration::from_millis),
        health_failures,
    })
}

/// "unknown manager \"dynmic\"; did you mean dynamic?", or the list of
/// valid values when none is close.
fn unknown_choice(what: &str, value: &str, valid: &[&str]) -> String {
    match nearest(value, valid) {
        Some(n) => format!("unknown {what} {value:?}; did you mean {n}?"),
        None => format!("unknown {what} {value:?}; one of: {}", valid.join(", ")),
    }
}

/// Checks `fastcgi.*`: an address, and an allow list for any address a
/// machine other than this one could reach.
fn resolve_fastcgi(
    f: FastcgiSection,
    err: &dyn Fn(&str, String) -> ConfigError,
    errors: &mut Vec<ConfigError>,
) -> Option<FastcgiListener> {
    let Some(listen) = f.listen.as_deref().map(str::trim) else {
        errors.push(err(
            "fastcgi.listen",
            "missing; give the address nginx's fastcgi_pass will use, e.g. 127.0.0.1:9001 or unix:/run/tqserver/blog.sock".into(),
        ));
        return None;
    };
    // Every key is checked even when the address is bad.
    let address = if listen.starts_with("unix:") || listen.starts_with('/') {
        match listen.parse::<tqserver_fastcgi::Address>() {
            Ok(a) => Some(a),
            Err(e) => {
                errors.push(err("fastcgi.listen", e.to_string()));
                None
            }
        }
    } else {
        match listen.parse::<SocketAddr>() {
            Ok(sa) if !sa.ip().is_loopback() && allowed_clients_empty(&f.allowed_clients) => {
                errors.push(err(
                    "fastcgi.listen",
                    format!("{sa} can be reached from other machines; list the web servers that may connect in fastcgi.allowed_clients (as php-fpm's listen.allowed_clients), or listen on 127.0.0.1"),
                ));
                None
            }
            Ok(sa) => Some(tqserver_fastcgi::Address::from(sa)),
            Err(_) => {
                errors.push(err(
                    "fastcgi.listen",
                    format!("{listen:?} is neither ip:port (127.0.0.1:9001) nor unix:/path"),
                ));
                None
            }
        }
    };
    let mut allowed_clients = Vec::new();
    for c in f.allowed_clients.unwrap_or_default() {
        match c.trim().parse::<IpAddr>() {
            Ok(ip) => allowed_clients.push(ip),
            Err(_) => errors.push(err(
                "fastcgi.allowed_clients",
                format!("{c:?} is not an IP address"),
            )),
        }
    }
    let mut limit_extensions = Vec::new();
    for e in f
        .limit_extensions
        .unwrap_or_else(|| DEFAULT_LIMIT_EXTENSIONS.map(String::from).to_vec())
    {
        if !e.starts_with('.') || e.len() < 2 || e.contains('/') {
            errors.push(err(
                "fastcgi.limit_extensions",
                format!("{e:?} is not a file extension like .php"),
            ));
        } else {
            limit_extensions.push(e);
        }
    }
    if limit_extensions.is_empty() {
        errors.push(err(
            "fastcgi.limit_extensions",
            "empty: no script could run; php-fpm's default is .php".into(),
        ));
    }
    let mode = match f.mode.as_deref().map(str::trim) {
        None => DEFAULT_SOCKET_MODE,
        Some(m) => match u32::from_str_radix(m, 8) {
            Ok(v) if v <= 0o777 => v,
            _ => {
                errors.push(err(
                    "fastcgi.mode",
                    format!("{m:?} is not an octal file mode like \"0660\""),
                ));
                DEFAULT_SOCKET_MODE
            }
        },
    };
    let mut path = |key: &str, v: Option<String>| match v {
        Some(p) if !p.starts_with('/') => {
            errors.push(err(key, format!("{p:?} must start with '/'")));
            None
        }
        v => v,
    };
    let ping_path = path("fastcgi.ping_path", f.ping_path);
    let status_path = path("fastcgi.status_path", f.status_path);
    Some(FastcgiListener {
        listen: address?,
        allowed_clients,
        limit_extensions,
        ping_path,
        ping_response: f
            .ping_response
            .unwrap_or_else(|| DEFAULT_PING_RESPONSE.to_string()),
        status_path,
        mode,
    })
}

fn allowed_clients_empty(list: &Option<Vec<String>>) -> bool {
    list.as_ref()
        .is_none_or(|l| l.iter().all(|c| c.trim().is_empty()))
}

/// A duration key's value, or `default` when it is absent; an invalid one
/// is recorded in `errors` (and the default used, so checking goes on).
fn duration(
    key: &str,
    v: Option<DurationValue>,
    default: Duration,
    err: &dyn Fn(&str, String) -> ConfigError,
    errors: &mut Vec<ConfigError>,
) -> Duration {
    match v.map(|v| v.get()).transpose() {
        Ok(v) => v.unwrap_or(default),
        Err(m) => {
            errors.push(err(key, m));
            default
        }
    }
}

/// Go's `GOMEMLIMIT` syntax: digits and an optional B, KiB, MiB, GiB or
/// TiB.
fn go_mem_limit_ok(l: &str) -> bool {
    let digits = l.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && ["", "B", "KiB", "MiB", "GiB", "TiB"].contains(&&l[digits..])
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
) -> PoolConfig {
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
        |key: &str, v: Option<DurationValue>, d: Duration| duration(key, v, d, err, errors);
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
    let queue_timeout = dur(
        "php.pool.queue_timeout",
        p.queue_timeout,
        DEFAULT_QUEUE_TIMEOUT,
    );
    let listen = match p.listen_address.as_deref().map(str::trim) {
        None | Some("") | Some("unix") => Listen::RuntimeSocket,
        Some(a) => {
            if let Some(path) = a.strip_prefix("unix:").or(a.starts_with('/').then_some(a)) {
                // Written into php-fpm's configuration: nothing that could
                // end the line or the value there.
                if !path.starts_with('/')
                    || path
                        .chars()
                        .any(|c| c.is_control() || matches!(c, '"' | ';' | '\\'))
                {
                    errors.push(err(
                        "php.pool.listen_address",
                        format!("{path:?} is not a plain absolute socket path (no line breaks, control characters, quotes, ';' or '\\')"),
                    ));
                }
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
    let max_queue = p.max_queue.unwrap_or(DEFAULT_MAX_QUEUE);
    PoolConfig {
        max_queue,
        queue_timeout,
        manager,
        max_children,
        start,
        min_spare,
        max_spare,
        max_requests: p.max_requests.unwrap_or(0),
        request_timeout,
        idle_timeout,
        listen,
        shared_memory: p.shared_memory.unwrap_or(false),
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
            "unknown type \"perl\"; one of: php, static, rust, go, command, bun"
        );
        for bad in ["blog", "/a//b", "/a/../b", "/a?x", "/a b"] {
            assert!(check_route(bad).is_err(), "{bad}");
        }
    }
}
