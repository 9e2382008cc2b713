//! Running unprivileged: started as root (to bind port 80, say), TQServer
//! becomes `server.user` / `server.group` once every listening socket is
//! bound and before any child starts, so PHP and native workers never run
//! as root. php-fpm's master does the same for its pools' `user` /
//! `group`.

use crate::config::{AccessTarget, Config};

/// Started as root with `server.user`: opens every log file of the
/// workers that start now (and `server.access_log`) before the drop, and
/// hands them to the user ([`crate::logging::preopen`]).
pub fn preopen_logs(config: &Config) -> Result<(), String> {
    let Some(r) = config.server.run_as.as_ref() else {
        return Ok(());
    };
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let mut files = Vec::new();
    if let Some(t) = &config.server.access_log {
        files.push((t.clone(), "access".to_string()));
    }
    for w in config.enabled_workers() {
        if let Some(t) = &w.logging.log_file {
            files.push((t.clone(), w.name.clone()));
        }
        if let AccessTarget::File(t) = &w.logging.access_log {
            files.push((t.clone(), w.name.clone()));
        }
    }
    crate::logging::preopen(&files, (r.uid, r.gid))
        .map_err(|e| format!("cannot open a log file before becoming {}: {e}", r.user))
}

/// Drops to `server.user` when running as root. Not root: the setting is
/// ignored with a notice (as php-fpm ignores a pool's `user`). Root without
/// `server.user`: a warning, and everything runs as root.
pub fn drop_if_root(config: &Config) -> Result<(), String> {
    use nix::unistd::{Gid, Uid, geteuid, initgroups, setgid, setuid};
    let run_as = config.server.run_as.as_ref();
    if !geteuid().is_root() {
        if let Some(r) = run_as {
            tracing::info!(
                "server.user {} is ignored: TQServer was not started as root (it runs as uid {})",
                r.user,
                geteuid()
            );
        }
        return Ok(());
    }
    let Some(r) = run_as else {
        tracing::warn!(
            "running as root, and so will PHP and every worker: set server.user (and server.group) in {}",
            config.file.display()
        );
        return Ok(());
    };
    let fail = |what: &str, e: nix::Error| {
        format!(
            "cannot become {}:{} (server.user / server.group in {}): {what}: {e}",
            r.user,
            r.group,
            config.file.display()
        )
    };
    // The server log was opened as root: today's file goes to the user,
    // so a reopen (SIGUSR1) can append to it.
    let log_file = config.server.log_file.as_deref().map(|t| {
        let today = chrono::Local::now().format("%Y-%m-%d").to_string();
        std::path::PathBuf::from(t.replace("{date}", &today).replace("{name}", "tqserver"))
    });
    if let Some(f) = &log_file {
        let _ = nix::unistd::chown(f, Some(Uid::from_raw(r.uid)), Some(Gid::from_raw(r.gid)));
    }
    let name = std::ffi::CString::new(r.user.as_str()).map_err(|e| e.to_string())?;
    // Supplementary groups first (they need root), then the group, then
    // the user: after setuid nothing else can change.
    initgroups(&name, Gid::from_raw(r.gid)).map_err(|e| fail("initgroups", e))?;
    setgid(Gid::from_raw(r.gid)).map_err(|e| fail("setgid", e))?;
    setuid(Uid::from_raw(r.uid)).map_err(|e| fail("setuid", e))?;
    // There must be no way back.
    if setuid(Uid::from_raw(0)).is_ok() {
        return Err(format!(
            "still able to become root after switching to {}; refusing to run",
            r.user
        ));
    }
    if let Some(dir) = log_file.as_deref().and_then(std::path::Path::parent) {
        let dir = if dir.as_os_str().is_empty() {
            std::path::Path::new(".")
        } else {
            dir
        };
        if nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_err() {
            tracing::warn!(
                "{} is not writable by {}: server.log_file cannot start a new day's file or be reopened after logrotate; give the folder to {}",
                dir.display(),
                r.user,
                r.user
            );
        }
    }
    tracing::info!(
        "running as {}:{} (uid {}, gid {})",
        r.user,
        r.group,
        r.uid,
        r.gid
    );
    Ok(())
}
