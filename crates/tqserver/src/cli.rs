//! The command line: `tqserver [--config FILE] [--mode dev|prod] [--quiet]
//! [--port N] [--host IP] [--admin-listen IP:PORT]`
//! runs the server; `tqserver check` validates and prints what would run;
//! `tqserver reload` asks the running server to apply its files again.
//! Exit codes: 0, 64 (usage), 78 (configuration), 1 (anything else).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, Mode};
use crate::server::{self, StartError};

/// Exit code for a command-line mistake (sysexits EX_USAGE).
pub const EX_USAGE: u8 = 64;
/// Exit code for a configuration problem (sysexits EX_CONFIG).
pub const EX_CONFIG: u8 = 78;

#[derive(Debug, Parser)]
#[command(
    name = "tqserver",
    version,
    about = "TQServer: HTTP server and PHP/native worker supervisor"
)]
struct Cli {
    /// The server configuration (relative to the working directory).
    #[arg(long, global = true, default_value = "config/server.yaml")]
    config: PathBuf,
    /// dev or prod (default: $TQSERVER_MODE, else dev).
    #[arg(long, global = true)]
    mode: Option<String>,
    /// Keep the log off the terminal (it still goes to server.log_file).
    #[arg(long, global = true)]
    quiet: bool,
    /// Listen on this port instead of server.port.
    #[arg(long, global = true)]
    port: Option<u16>,
    /// Listen on this address instead of server.host.
    #[arg(long, global = true)]
    host: Option<String>,
    /// The admin listener's address instead of admin.listen ("" turns it
    /// off).
    #[arg(long, global = true)]
    admin_listen: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate every configuration file and print the routes and pools.
    Check,
    /// Ask the running tqserver (over its admin listener) to apply the
    /// configuration files as they are now, and print what changed.
    Reload,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some(crate::process::WATCHDOG_ARG) {
        crate::process::watchdog_main();
    }
    if std::env::args().nth(1).as_deref() == Some(tqserver_php::ARG) {
        // The embedded PHP runtime's master (php.backend: embed).
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(2).collect();
        return tqserver_php::master::main(&args);
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EX_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let mode_text = cli
        .mode
        .clone()
        .or_else(|| {
            std::env::var("TQSERVER_MODE")
                .ok()
                .filter(|m| !m.is_empty())
        })
        .unwrap_or_else(|| "dev".into());
    let mode: Mode = match mode_text.parse() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("tqserver: --mode / TQSERVER_MODE: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    if let Some(Command::Reload) = cli.command {
        return reload(&cli.config, mode, cli.admin_listen.as_deref());
    }
    let loaded = config::load(&cli.config, mode).and_then(|c| {
        crate::certs::check(&c)?;
        Ok(c)
    });
    let mut config = match loaded {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "tqserver: configuration has {} problem(s); nothing was started",
                errors.0.len()
            );
            return ExitCode::from(EX_CONFIG);
        }
    };
    let mut overrides = config::Overrides {
        port: cli.port,
        host: cli.host,
        admin: None,
    };
    if let Some(a) = cli.admin_listen {
        match config::admin_listen(&a) {
            Ok(a) => overrides.admin = Some(a),
            Err(e) => {
                eprintln!("tqserver: --admin-listen {e}");
                return ExitCode::from(EX_USAGE);
            }
        }
    }
    config = config.with_overrides(overrides);
    if let Some(Command::Check) = cli.command {
        for w in config
            .workers
            .iter()
            .filter(|w| w.enabled && w.native.is_none())
        {
            if let Some(n) =
                crate::php::script::survey_note(&w.name, &w.php.document_root, w.php.symlinks)
            {
                config.notices.push(n);
            }
            if crate::php::wordpress::applies(w) {
                config.notices.push(format!(
                    "worker {}: WordPress in {}: TQServer tells it that URL rewriting is on (its auto_prepend_file), for pretty permalinks with no .htaccess (docs/php.md#wordpress)",
                    w.name,
                    w.php.document_root.display()
                ));
            }
        }
        // A closed pipe (`tqserver check | head`) is not an error.
        let _ = std::io::Write::write_fmt(&mut std::io::stdout(), format_args!("{config}\n"));
        return ExitCode::SUCCESS;
    }
    if let Err(e) = crate::logging::init(
        config.server.log_file.as_deref(),
        cli.quiet,
        config.server.log_format,
    ) {
        eprintln!("tqserver: cannot open server.log_file: {e}");
        return ExitCode::from(EX_CONFIG);
    }
    // Connections are served on threads of their own (http::shards); the
    // main runtime, one thread, runs supervisors, checks and reloads.
    let threads = config.server.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    if let Err(e) = crate::http::shards::start(threads) {
        eprintln!("tqserver: cannot start the connection threads: {e}");
        return ExitCode::FAILURE;
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.worker_threads(1);
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tqserver: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(StartError::Config(e)) => {
            tracing::error!("{e}");
            eprintln!("tqserver: {e}");
            ExitCode::from(EX_CONFIG)
        }
        Err(StartError::Other(e)) => {
            tracing::error!("{e:#}");
            eprintln!("tqserver: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The admin listener of the server `file` describes: `--admin-listen`,
/// else `admin.listen` — read even when other parts of the configuration
/// are invalid (the running server is the one to judge and report them),
/// else the default.
fn admin_address(
    file: &std::path::Path,
    mode: Mode,
    flag: Option<&str>,
) -> Result<Option<std::net::SocketAddr>, String> {
    if let Some(a) = flag {
        return config::admin_listen(a).map_err(|e| format!("--admin-listen {e}"));
    }
    if let Ok(c) = config::load(file, mode) {
        return Ok(c.observability.admin);
    }
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap_or_default();
    let a = value["admin"]["listen"]
        .as_str()
        .unwrap_or(config::DEFAULT_ADMIN_LISTEN);
    config::admin_listen(a).map_err(|e| format!("admin.listen {e}"))
}

/// `tqserver reload`: `POST /reload` to the admin listener of the server
/// this configuration describes; prints its answer. Exit 0 when applied,
/// 78 when the running server refused an invalid configuration.
fn reload(file: &std::path::Path, mode: Mode, flag: Option<&str>) -> ExitCode {
    use std::io::{Read as _, Write as _};
    let mut addr = match admin_address(file, mode, flag) {
        Ok(Some(a)) => a,
        Ok(None) => {
            eprintln!(
                "tqserver reload: admin.listen is off in {}; send SIGHUP to the tqserver process instead",
                file.display()
            );
            return ExitCode::from(EX_USAGE);
        }
        Err(e) => {
            eprintln!("tqserver reload: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    // The token the server asks for: $TQSERVER_ADMIN_TOKEN, else the file's.
    let token = std::env::var("TQSERVER_ADMIN_TOKEN").ok().or_else(|| {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap_or_default();
        value["admin"]["token"].as_str().map(str::to_string)
    });
    let auth = token
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let answer = (|| -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))?;
        // Applying can take a while: a new worker builds, php-fpm drains.
        s.set_read_timeout(Some(std::time::Duration::from_secs(900)))?;
        write!(
            s,
            "POST /reload HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })();
    let text = match answer {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "tqserver reload: cannot reach the admin listener at {addr} (admin.listen): {e}; is tqserver running?"
            );
            return ExitCode::FAILURE;
        }
    };
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).unwrap_or("");
    match status {
        "200" => {
            print!("{body}");
            ExitCode::SUCCESS
        }
        "422" => {
            eprint!("{body}");
            ExitCode::from(EX_CONFIG)
        }
        _ => {
            eprintln!("tqserver reload: the admin listener answered {status}: {body}");
            ExitCode::FAILURE
        }
    }
}
