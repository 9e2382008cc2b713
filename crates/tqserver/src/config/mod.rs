//! Configuration: `config/server.yaml` and every
//! `workers/{name}/config/worker.yaml`, read into file structs that deny
//! unknown keys, then resolved in one validation step into [`Config`],
//! which has no `Option`s left. Every problem names file, line and key.
//!
//! Paths in server.yaml are relative to the working directory, as in the
//! original TQServer; paths in a worker.yaml (`document_root`,
//! `php.config_file`) are relative to that worker's folder.

mod error;
mod server;
mod values;
mod worker;
mod yaml;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::{ConfigError, ConfigErrors};
pub use server::{
    AcmeChallenge, AcmeSettings, CertificateFiles, DEFAULT_ADMIN_LISTEN, Inspection, Observability,
    ServerSettings, Socks5Settings, Supervision, TlsSettings, TlsVersion, admin_listen,
};
pub use worker::{
    AccessTarget, FastcgiListener, Listen, Manager, NativeConfig, NativeKind, PathRule, PhpBackend,
    PhpConfig, PoolConfig, ProxyTimeouts, Symlinks, WorkerConfig, WorkerLogging,
};

/// dev or prod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Development: workers with `enabled: development` run.
    Dev,
    /// Production.
    Prod,
}

impl Mode {
    /// `dev` / `prod`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dev => "dev",
            Self::Prod => "prod",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dev" | "development" => Ok(Self::Dev),
            "prod" | "production" => Ok(Self::Prod),
            other => Err(format!("unknown mode {other:?}; use dev or prod")),
        }
    }
}

/// The whole configuration, resolved and checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// The server.yaml read.
    pub file: PathBuf,
    /// dev or prod.
    pub mode: Mode,
    /// HTTP server settings.
    pub server: ServerSettings,
    /// Process supervision settings.
    pub supervision: Supervision,
    /// The workers directory.
    pub workers_dir: PathBuf,
    /// `file_watcher.debounce_ms`: quiet time after a change before a rebuild.
    pub debounce: Duration,
    /// `file_watcher.enabled`: watch worker folders (default: in dev mode).
    pub watch: bool,
    /// `file_watcher.config`: watch server.yaml and the worker.yaml files
    /// and apply their changes (default: on, in both modes).
    pub watch_config: bool,
    /// `file_watcher.live_reload`: in dev mode with the watcher on, reload
    /// browsers after a change (default: true).
    pub live_reload: bool,
    /// `admin.listen` and `metrics.*`.
    pub observability: Observability,
    /// `socks5.*`: the workers' egress proxy, when on.
    pub socks5: Option<Socks5Settings>,
    /// Every worker found, enabled or not, in route order.
    pub workers: Vec<WorkerConfig>,
    /// Things worth telling the operator that are not errors.
    pub notices: Vec<String>,
    /// Keys accepted for the Go TQServer's files that TQServer does not
    /// act on (file, line and key): said once at start and by `check`.
    pub warnings: Vec<ConfigError>,
    /// Command-line settings that win over the files, on every reload too.
    pub overrides: Overrides,
}

/// `--port`, `--host`, `--admin-listen`: they replace the file's values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--port`.
    pub port: Option<u16>,
    /// `--host`.
    pub host: Option<String>,
    /// `--admin-listen` (`Some(None)`: turned off).
    pub admin: Option<Option<std::net::SocketAddr>>,
}

impl Config {
    /// An error about `key` of server.yaml, at the line where it is
    /// written (for checks made outside this module: certificate files).
    pub fn server_error(&self, key: &str, line: Option<usize>, message: String) -> ConfigError {
        let line = line.or_else(|| {
            let text = std::fs::read_to_string(&self.file).unwrap_or_default();
            yaml::key_line(&text, key)
        });
        ConfigError::new(&self.file, line, key, message)
    }

    /// Applies command-line overrides (and keeps them for reloads).
    pub fn with_overrides(mut self, o: Overrides) -> Self {
        if let Some(p) = o.port {
            self.server.port = p;
        }
        if let Some(h) = &o.host {
            self.server.host = h.clone();
        }
        if let Some(a) = o.admin {
            self.observability.admin = a;
        }
        self.overrides = o;
        self.set_environments();
        self
    }

    /// `from`'s egress proxy settings (a reload keeps the running one),
    /// and the workers' environments to match.
    pub fn keep_socks5(&mut self, from: &Config) {
        self.socks5 = from.socks5.clone();
        self.set_environments();
    }

    /// Gives each worker its [`WorkerConfig::environment`]: the Go
    /// TQServer's variables (`WORKER_NAME`, `WORKER_PATH`, `WORKER_TYPE`,
    /// `WORKER_MODE` and PHP's `WORKER_SERVER_MODE`, `TQSERVER_PORT`),
    /// TQServer's own (`WORKER_ROUTE`), and with `socks5` on, the proxy
    /// for outgoing connections (`SOCKS5_PROXY`, `ALL_PROXY`,
    /// `TQSERVER_WORKER_UA`, and with HTTPS inspection `SSL_CERT_FILE`,
    /// `NODE_EXTRA_CA_CERTS`, `CURL_CA_BUNDLE` and `REQUESTS_CA_BUNDLE`:
    /// the inspection CA, which curl, Node and Python's requests then
    /// trust).
    fn set_environments(&mut self) {
        let port = self.server.port.to_string();
        let mode = self.mode.as_str();
        for w in &mut self.workers {
            let mut env: Vec<(String, String)> = [
                ("WORKER_NAME", w.name.as_str()),
                ("WORKER_PATH", w.route.as_str()),
                ("WORKER_ROUTE", w.route.as_str()),
                ("WORKER_TYPE", w.type_name()),
                ("WORKER_MODE", mode),
                ("WORKER_SERVER_MODE", mode),
                ("TQSERVER_PORT", port.as_str()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            if let Some(p) = &self.socks5 {
                let url = format!("socks5://127.0.0.1:{}", p.port);
                env.push(("SOCKS5_PROXY".into(), url.clone()));
                env.push(("ALL_PROXY".into(), url));
                env.push(("TQSERVER_WORKER_UA".into(), format!("TQServer/{}", w.name)));
                if let Some(i) = &p.inspection {
                    // The workers trust the CA that signs what the
                    // inspection shows them (OpenSSL and Node clients).
                    let ca = std::path::absolute(&i.ca_cert)
                        .unwrap_or_else(|_| i.ca_cert.clone())
                        .to_string_lossy()
                        .into_owned();
                    for var in [
                        "SSL_CERT_FILE",
                        "NODE_EXTRA_CA_CERTS",
                        "CURL_CA_BUNDLE",
                        "REQUESTS_CA_BUNDLE",
                    ] {
                        env.push((var.into(), ca.clone()));
                    }
                }
            }
            w.environment = env;
        }
    }

    /// The workers that run in this mode.
    pub fn enabled_workers(&self) -> impl Iterator<Item = &WorkerConfig> {
        self.workers.iter().filter(|w| w.enabled)
    }
}

/// Reads and checks everything. All problems are reported together.
pub fn load(file: &Path, mode: Mode) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        ConfigError::new(
            file,
            None,
            "",
            format!("cannot read: {e} (run from the project folder, or pass --config)"),
        )
    })?;
    let mut errors = Vec::new();
    let mut notices = Vec::new();
    let mut warnings = Vec::new();
    // A problem in server.yaml does not hide those of the worker files:
    // they are read from the folder it names (or the default one).
    // (What resolves from a file with errors is used for its workers
    // folder only: any error fails the load below.)
    let parsed = yaml::parse_all::<server::ServerFile>(file, &text);
    errors.extend(parsed.errors);
    let resolved = match parsed
        .value
        .map(|p| p.resolve(file, &text, mode, &mut notices))
    {
        Some(Ok(r)) => Some(r),
        Some(Err(es)) => {
            errors.extend(not_left_out(es, &parsed.left_out));
            None
        }
        None => None,
    };
    let dir = match &resolved {
        Some(r) => r.workers_dir.clone(),
        None => server::workers_dir_of(&text),
    };
    let mut workers = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push(ConfigError::new(
                file,
                yaml::key_line(&text, "workers.directory"),
                "workers.directory",
                format!("cannot read {}: {e}", dir.display()),
            ));
            return Err(ConfigErrors(errors));
        }
    };
    let mut names: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    names.sort();
    for (name, wdir) in names {
        let wfile = wdir.join("config").join("worker.yaml");
        if !wfile.is_file() {
            notices.push(format!(
                "{}: no config/worker.yaml; not a worker, skipped",
                wdir.display()
            ));
            continue;
        }
        let wtext = match std::fs::read_to_string(&wfile) {
            Ok(t) => t,
            Err(e) => {
                errors.push(ConfigError::new(
                    &wfile,
                    None,
                    "",
                    format!("cannot read: {e}"),
                ));
                continue;
            }
        };
        let parsed = yaml::parse_all::<worker::WorkerFile>(&wfile, &wtext);
        let failed = !parsed.errors.is_empty();
        errors.extend(parsed.errors);
        let Some(value) = parsed.value else { continue };
        match value.resolve(&name, &wdir, &wfile, &wtext, mode, &mut warnings) {
            Ok(w) if !failed => workers.push(w),
            Ok(_) => {}
            Err(es) => errors.extend(not_left_out(es, &parsed.left_out)),
        }
    }
    // Duplicate routes among the workers that run.
    for (i, a) in workers.iter().enumerate() {
        if !a.enabled {
            continue;
        }
        if let Some(b) = workers[..i]
            .iter()
            .find(|b| b.enabled && b.route == a.route)
        {
            let text = std::fs::read_to_string(&a.file).unwrap_or_default();
            errors.push(ConfigError::new(
                &a.file,
                yaml::key_line(&text, "path"),
                "path",
                format!(
                    "{} is also the path of worker {} ({}); each path belongs to one worker",
                    a.route,
                    b.name,
                    b.file.display()
                ),
            ));
        }
    }
    let Some(resolved) = resolved.filter(|_| errors.is_empty()) else {
        return Err(ConfigErrors(errors));
    };
    workers.sort_by(|a, b| a.route.cmp(&b.route));
    let mut config = Config {
        file: file.to_path_buf(),
        mode,
        server: resolved.server,
        supervision: resolved.supervision,
        workers_dir: resolved.workers_dir,
        debounce: resolved.debounce,
        watch: resolved.watch,
        watch_config: resolved.watch_config,
        live_reload: resolved.live_reload,
        observability: resolved.observability,
        socks5: resolved.socks5,
        workers,
        notices,
        warnings,
        overrides: Overrides::default(),
    };
    config.set_environments();
    Ok(config)
}

/// The errors of the checks after parsing, less those about a key that
/// was left out for an error of its own (missing, say): it is reported once.
fn not_left_out(errors: Vec<ConfigError>, left_out: &[String]) -> Vec<ConfigError> {
    errors
        .into_iter()
        .filter(|e| {
            !left_out
                .iter()
                .any(|k| !k.is_empty() && (e.key == *k || e.key.starts_with(&format!("{k}."))))
        })
        .collect()
}

/// `tqserver check`'s report: the routing table and the pools.
/// A PHP or static worker's files in `tqserver check`: document root and
/// symlink policy, rules, aliases.
fn files(f: &mut fmt::Formatter<'_>, w: &WorkerConfig) -> fmt::Result {
    writeln!(
        f,
        "    document_root {} (symlinks: {})",
        w.php.document_root.display(),
        w.php.symlinks.as_str()
    )?;
    for r in &w.php.rules {
        writeln!(f, "    {}", r.describe())?;
    }
    for (prefix, dir) in &w.php.aliases {
        writeln!(f, "    alias {prefix} -> {}", dir.display())?;
    }
    Ok(())
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.server;
        writeln!(
            f,
            "config   {} (mode {})",
            self.file.display(),
            self.mode.as_str()
        )?;
        writeln!(f, "listen   http://{}:{}", s.host, s.port)?;
        if let Some(t) = &s.tls {
            let mut how: Vec<String> = t
                .certificates
                .iter()
                .map(|c| c.cert.display().to_string())
                .collect();
            if let Some(names) = &t.internal {
                let mut all = vec!["localhost".to_string()];
                all.extend(names.iter().cloned());
                how.push(format!(
                    "internal CA for {} ({})",
                    all.join(", "),
                    t.storage.display()
                ));
            }
            if let Some(a) = &t.acme {
                how.push(format!(
                    "ACME for {} from {} ({})",
                    a.domains.join(", "),
                    a.directory,
                    t.storage.display()
                ));
            }
            writeln!(
                f,
                "https    https://{}:{} (TLS {}+; {}){}{}",
                s.host,
                t.port,
                match t.min_version {
                    TlsVersion::V12 => "1.2",
                    TlsVersion::V13 => "1.3",
                },
                how.join("; "),
                if t.redirect_http {
                    "; plain HTTP redirects"
                } else {
                    ""
                },
                t.hsts_max_age
                    .map_or(String::new(), |a| format!("; HSTS max-age={a}"))
            )?;
        }
        writeln!(
            f,
            "timeouts read {:?}, write {:?}, idle {:?}; max body {} bytes",
            s.read_timeout, s.write_timeout, s.idle_timeout, s.max_body_bytes
        )?;
        match s.threads {
            Some(n) => writeln!(f, "threads  {n}")?,
            None => writeln!(
                f,
                "threads  auto ({})",
                std::thread::available_parallelism().map_or(1, |n| n.get())
            )?,
        }
        writeln!(
            f,
            "log      {} ({})",
            s.log_file.as_deref().unwrap_or("(terminal only)"),
            match s.log_format {
                crate::logging::LogFormat::Text => "text",
                crate::logging::LogFormat::Json => "json",
            }
        )?;
        if let Some(a) = &s.access_log {
            writeln!(f, "access   {a}")?;
        }
        let o = &self.observability;
        match o.admin {
            Some(a) => writeln!(
                f,
                "admin    http://{a} (dashboard, /metrics, /status/{{worker}}, /healthz, /readyz)"
            )?,
            None => writeln!(f, "admin    off (admin.listen is empty)")?,
        }
        if let Some(p) = &o.public_metrics {
            writeln!(f, "metrics  {p} on the public port too")?;
        }
        if let Some(p) = &self.socks5 {
            writeln!(
                f,
                "socks5   127.0.0.1:{} (the workers' egress proxy; log {}, {}{})",
                p.port,
                p.log_file.as_deref().unwrap_or("(server log)"),
                if p.json { "json" } else { "text" },
                if p.inspection.is_some() {
                    "; HTTPS inspection on"
                } else {
                    ""
                }
            )?;
        }
        if let Some(r) = &s.run_as {
            writeln!(f, "user     {}:{} (when started as root)", r.user, r.group)?;
        }
        writeln!(
            f,
            "reload   {} (SIGHUP and `tqserver reload` always)",
            match (self.watch, self.watch_config) {
                (true, _) => "on changes to server.yaml, worker.yaml and worker code",
                (false, true) => "on changes to server.yaml and worker.yaml",
                (false, false) => "not watched",
            }
        )?;
        writeln!(f, "workers  {}", self.workers_dir.display())?;
        writeln!(f)?;
        writeln!(f, "routes")?;
        if self.enabled_workers().next().is_none() {
            writeln!(f, "  (none: every request gets 404)")?;
        }
        for w in self.enabled_workers() {
            let runner = match (&w.native, w.php.backend) {
                (Some(n), _) => match n.kind {
                    NativeKind::Rust => "cargo build, proxied over HTTP",
                    NativeKind::Go => "go build, proxied over HTTP",
                    NativeKind::Command => "proxied over HTTP",
                    NativeKind::Bun => "bun run, proxied over HTTP",
                },
                (None, _) if w.static_site => "files only, no PHP",
                (None, PhpBackend::Fpm) => "php-fpm",
                (None, PhpBackend::Cgi) => "php-cgi, TQServer's process manager",
                (None, PhpBackend::Embed) if w.php.worker.is_some() => {
                    "embedded PHP in worker mode, TQServer's process manager"
                }
                (None, PhpBackend::Embed) => "embedded PHP, TQServer's process manager",
            };
            writeln!(
                f,
                "  {:<16} -> {} ({}, {runner})",
                w.route,
                w.name,
                w.type_name()
            )?;
            if let (None, Some(script)) = (&w.native, &w.php.worker) {
                writeln!(f, "  {:<16}    worker script {}", "", script.display())?;
            }
        }
        for w in self.workers.iter().filter(|w| !w.enabled) {
            writeln!(
                f,
                "  {:<16} -> {} (disabled in {} mode)",
                w.route,
                w.name,
                self.mode.as_str()
            )?;
        }
        writeln!(f)?;
        writeln!(f, "pools")?;
        for w in self.enabled_workers() {
            if let Some(n) = &w.native {
                let scaling = if n.max_instances > n.min_instances {
                    format!(
                        "up to {}, one more at {} requests in hand each, one fewer after {:?} idle",
                        n.max_instances, n.queue_threshold, n.idle_timeout
                    )
                } else {
                    format!("up to {}", n.max_instances)
                };
                writeln!(
                    f,
                    "  {}: {} instance(s) ({scaling}), health {} every {:?}",
                    w.name, n.min_instances, n.health_path, n.health_interval
                )?;
                if !n.run.is_empty() {
                    writeln!(f, "    run {}", n.run.join(" "))?;
                }
                if n.kind == NativeKind::Bun {
                    writeln!(f, "    run bun run {}", n.entrypoint)?;
                }
                let mut how = Vec::new();
                if n.strip_prefix && w.route != "/" {
                    how.push(format!("path prefix stripped ({} -> /)", w.route));
                }
                if n.public_files && w.php.document_root.is_dir() {
                    how.push(format!(
                        "files of {} served first",
                        w.php.document_root.display()
                    ));
                }
                if let Some(o) = &w.logging.output_file {
                    how.push(format!("output also to {o}"));
                }
                if n.max_requests > 0 {
                    how.push(format!(
                        "an instance is replaced after {} requests",
                        n.max_requests
                    ));
                }
                if !how.is_empty() {
                    writeln!(f, "    {}", how.join("; "))?;
                }
                if !n.env.is_empty() {
                    let env: Vec<String> = n.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    writeln!(f, "    env {}", env.join(" "))?;
                }
                let t = &n.timeouts;
                writeln!(
                    f,
                    "    timeouts: answer head {:?}, read {:?}, send {:?}, upgraded idle {:?}",
                    t.head, t.read, t.send, t.upgrade_idle
                )?;
                continue;
            }
            if w.static_site {
                writeln!(f, "  {}: no processes (static files)", w.name)?;
                files(f, w)?;
                continue;
            }
            let p = &w.php.pool;
            let numbers = p.describe();
            let listen = match &p.listen {
                Listen::RuntimeSocket => "unix socket in the runtime directory".to_string(),
                Listen::Unix(path) => format!("unix:{}", path.display()),
                Listen::TcpFromRange(ip) => format!(
                    "{ip}:<port from {}-{}>",
                    self.supervision.port_range.0, self.supervision.port_range.1
                ),
                Listen::Tcp(a) => a.to_string(),
            };
            writeln!(f, "  {}: {numbers}", w.name)?;
            writeln!(
                f,
                "    max_requests {}, request_timeout {:?}, listen {listen}",
                p.max_requests, p.request_timeout
            )?;
            files(f, w)?;
            if let Some(l) = &w.fastcgi {
                writeln!(f, "    fastcgi listener {}", l.listen)?;
            }
            if !w.php.settings.is_empty() {
                let s: Vec<String> = w
                    .php
                    .settings
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                writeln!(f, "    php {}", s.join(" "))?;
            }
        }
        for n in &self.notices {
            writeln!(f)?;
            write!(f, "note: {n}")?;
        }
        for w in &self.warnings {
            writeln!(f)?;
            write!(f, "warning: {w}")?;
        }
        Ok(())
    }
}
