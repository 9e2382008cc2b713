//! The private runtime directory: where php-fpm configurations, pid
//! files, the sockets of TQServer's PHP processes and native builds live
//! while TQServer runs. Whatever the umask, nobody else may read, write or
//! connect there: the directory is 0700, files are 0600, sockets 0600
//! (the pools run as the same user as TQServer). A dead server's
//! directory is removed by the next start.

use std::io::Write as _;
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt,
};
use std::path::{Path, PathBuf};

/// The runtime directory's name starts so, in `$TMPDIR`.
const PREFIX: &str = "tqserver-";
/// Holds the owning server's pid, so a later start can tell it is gone.
const PID_FILE: &str = "tqserver.pid";

/// A runtime directory, removed when dropped.
pub struct RuntimeDir {
    dir: tempfile::TempDir,
}

impl RuntimeDir {
    /// Creates a fresh directory (random name, mode 0700 set explicitly)
    /// with our pid file, after removing those of servers that are gone.
    pub fn create() -> std::io::Result<Self> {
        remove_stale(&std::env::temp_dir());
        let dir = tempfile::Builder::new()
            .prefix(PREFIX)
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()?;
        // tempfile's mode is still subject to the umask; set it outright.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        write_private(
            &dir.path().join(PID_FILE),
            std::process::id().to_string().as_bytes(),
        )?;
        Ok(Self { dir })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Writes `path` with mode 0600 whatever the umask (a file that existed is
/// set to 0600 too).
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(contents)
}

/// Creates `path` and its parents as 0700 folders.
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// A socket TQServer bound for one of its own processes: 0600, so only
/// TQServer's user (and so the pool) can connect.
pub fn restrict_socket(path: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// Removes runtime directories left by a tqserver that was killed (SIGKILL
/// leaves no chance to clean up): ours by owner, with a pid file whose
/// process is gone. Directories of running servers are left alone.
fn remove_stale(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    let me = nix::unistd::geteuid().as_raw();
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let path: PathBuf = e.path();
        let owned = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == me);
        let pid = std::fs::read_to_string(path.join(PID_FILE))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        let (true, Some(pid)) = (owned, pid) else {
            continue;
        };
        let gone = matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        );
        if gone && std::fs::remove_dir_all(&path).is_ok() {
            tracing::info!(
                "removed {} left by tqserver pid {pid}, which is gone",
                path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_folders_are_private_whatever_the_umask() {
        let d = tempfile::tempdir().unwrap();
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        let f = d.path().join("x.conf");
        std::fs::write(&f, "old").unwrap();
        write_private(&f, b"new").unwrap();
        let sub = d.path().join("a/b");
        create_private_dir(&sub).unwrap();
        nix::sys::stat::umask(old);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&f), 0o600);
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "new");
        assert_eq!(mode(&sub), 0o700);
        assert_eq!(mode(&d.path().join("a")), 0o700);
    }
}
