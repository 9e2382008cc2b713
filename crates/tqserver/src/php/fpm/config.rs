//! php-fpm's configuration for one worker, rendered from its worker.yaml:
//! a pure function ([`render`]) whose every value that is not TQServer's
//! own constant goes through [`ini_value`], so no setting can add a line
//! of its own.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::{PING_PATH, STATUS_PATH};
use crate::config::{Manager, Mode, WorkerConfig};

/// A value as php-fpm's INI file takes it: quoted when it is not a plain
/// token (its parser treats `;` as a comment and `$`, `"` and braces
/// specially). A value that could end the line or the quoted string (CR,
/// LF, NUL, `"`, a trailing `\\`) is refused: written as it is, it would
/// be a line of configuration of its own. The configuration refuses such
/// values first, naming file, line and key; this is the last guard, for
/// what comes from elsewhere (the environment's PATH, the temp folder).
fn ini_value(what: &str, v: &str) -> Result<String, String> {
    if v.contains(['\n', '\r', '\0', '"']) || v.ends_with('\\') {
        return Err(format!(
            "{what} ({v:?}) cannot be written into php-fpm's configuration: it has a line break, NUL, a double quote or a trailing backslash"
        ));
    }
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || " _.~&|^!()/:,+-@*%".contains(c));
    Ok(if plain {
        v.to_string()
    } else {
        format!("\"{v}\"")
    })
}

/// Renders the php-fpm configuration of one worker; every value that is
/// not TQServer's own constant goes through [`ini_value`].
pub fn render(
    worker: &WorkerConfig,
    mode: Mode,
    listen: &str,
    pid: &Path,
    grace: Duration,
    root: bool,
) -> Result<String, String> {
    let p = &worker.php.pool;
    let q = ini_value;
    let mut c = String::new();
    let _ = writeln!(
        c,
        "; Written by TQServer for worker {} from {}.\n; Rewritten on every start: change worker.yaml, not this file.\n",
        worker.name,
        worker.file.display()
    );
    let _ = writeln!(c, "[global]");
    let _ = writeln!(c, "pid = {}", q("the pid file", &pid.to_string_lossy())?);
    // TQServer reads php-fpm's stderr into its own log.
    let _ = writeln!(c, "error_log = /proc/self/fd/2");
    // notice, not debug: at debug php-fpm's master logs a line per event
    // ("event module triggered"), most of one per request, which cost
    // about 10% of throughput in bench/php.sh.
    let _ = writeln!(c, "log_level = notice");
    let _ = writeln!(c, "daemonize = no");
    let _ = writeln!(c, "process_control_timeout = {}s\n", grace.as_secs().max(1));
    let _ = writeln!(c, "[{}]", q("the worker name", &worker.name)?);
    let _ = writeln!(c, "listen = {}", q("php.pool.listen_address", listen)?);
    if listen.starts_with('/') {
        let _ = writeln!(c, "listen.mode = 0600");
    } else {
        let ip = listen.rsplit_once(':').map_or(listen, |(ip, _)| ip);
        let ip = ip.trim_matches(['[', ']']);
        let allowed = if ip == "127.0.0.1" || ip.is_empty() || ip == "0.0.0.0" {
            "127.0.0.1".to_string()
        } else {
            format!("127.0.0.1,{ip}")
        };
        let _ = writeln!(c, "listen.allowed_clients = {allowed}");
    }
    if root {
        // Still root: server.user is not set (TQServer drops to it before
        // any child starts), so the pool runs as root too, which php-fpm
        // allows only with -R.
        let _ = writeln!(c, "user = root\ngroup = root");
    }
    let _ = writeln!(c, "pm = {}", p.manager.as_str());
    let _ = writeln!(c, "pm.max_children = {}", p.max_children);
    match p.manager {
        Manager::Dynamic => {
            let _ = writeln!(c, "pm.start_servers = {}", p.start);
            let _ = writeln!(c, "pm.min_spare_servers = {}", p.min_spare);
            let _ = writeln!(c, "pm.max_spare_servers = {}", p.max_spare);
        }
        Manager::Ondemand => {
            let _ = writeln!(
                c,
                "pm.process_idle_timeout = {}s",
                p.idle_timeout.as_secs().max(1)
            );
        }
        Manager::Static => {}
    }
    let _ = writeln!(c, "pm.max_requests = {}", p.max_requests);
    // TQServer answers 504 at request_timeout; php-fpm ends the script a
    // second later so the 504 is what the client sees.
    let terminate = if p.request_timeout.is_zero() {
        0
    } else {
        p.request_timeout.as_secs() + 1
    };
    let _ = writeln!(c, "request_terminate_timeout = {terminate}s");
    if let Some(t) = worker.logging.slow_threshold {
        // php-fpm writes the slow script's PHP backtrace to its stderr,
        // which TQServer reads into the worker's log next to its own
        // slow-request line. php-fpm counts whole seconds.
        let secs = t.as_secs_f64().ceil().max(1.0) as u64;
        let _ = writeln!(c, "request_slowlog_timeout = {secs}s");
        let _ = writeln!(c, "slowlog = /proc/self/fd/2");
    }
    let _ = writeln!(c, "pm.status_path = {STATUS_PATH}");
    let _ = writeln!(c, "ping.path = {PING_PATH}");
    let _ = writeln!(c, "ping.response = pong");
    let _ = writeln!(c, "security.limit_extensions = .php");
    let _ = writeln!(c, "catch_workers_output = yes");
    let _ = writeln!(c, "decorate_workers_output = no");
    let _ = writeln!(c, "clear_env = yes");
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    let _ = writeln!(c, "env[PATH] = {}", q("PATH", &path)?);
    let _ = writeln!(c, "env[WORKER_POOL] = {}", q("the pool", &p.describe())?);
    for (k, v) in &worker.environment {
        let _ = writeln!(c, "env[{k}] = {}", q(k, v)?);
    }
    // The Go TQServer's PHP workers know their FastCGI port.
    if let Some((_, port)) = listen
        .rsplit_once(':')
        .filter(|(_, p)| p.parse::<u16>().is_ok())
    {
        let _ = writeln!(c, "env[WORKER_PORT] = {port}");
    }
    let mut set = std::collections::HashSet::new();
    for (k, v) in &worker.php.settings {
        set.insert(k.as_str());
        if !k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Err(format!("php.settings key {k:?} is not a php.ini name"));
        }
        let _ = writeln!(c, "php_admin_value[{k}] = {}", q(k, v)?);
    }
    if mode == Mode::Dev && !set.contains("opcache.revalidate_freq") {
        // Dev mode: an edited .php file is picked up on the next request.
        let _ = writeln!(c, "php_admin_value[opcache.revalidate_freq] = 0");
    }
    if crate::php::wordpress::applies(worker) {
        // The helper is written beside the pid file, in the runtime
        // directory, before php-fpm starts (prepare.rs).
        let dir = pid.parent().unwrap_or(Path::new("."));
        let helper = crate::php::wordpress::helper_path(dir);
        let _ = writeln!(
            c,
            "php_admin_value[auto_prepend_file] = {}",
            q("auto_prepend_file", &helper.to_string_lossy())?
        );
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_values_are_quoted_when_needed_and_refused_when_they_would_break_out() {
        let q = |v: &str| ini_value("x", v).unwrap();
        assert_eq!(q("128M"), "128M");
        assert_eq!(q("E_ALL & ~E_DEPRECATED"), "E_ALL & ~E_DEPRECATED");
        assert_eq!(q("a;b"), "\"a;b\"");
        assert_eq!(q(""), "\"\"");
        assert_eq!(q("/usr/bin:/bin"), "/usr/bin:/bin");
        for bad in [
            "/tmp/x.sock\nphp_admin_value[auto_prepend_file] = /tmp/evil.php",
            "a\rb",
            "a\0b",
            "a\"b",
            "ends in \\",
        ] {
            assert!(ini_value("x", bad).is_err(), "{bad:?}");
        }
    }
}
