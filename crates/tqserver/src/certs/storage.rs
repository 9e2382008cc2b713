//! `server.tls.storage`: where TQServer keeps what it issues and obtains
//! (ACME accounts, certificates and keys, the local CA). Folders are 0700
//! and files 0600, written whole (a temporary file renamed in place, so a
//! replica reading the same folder never sees half a key). An exclusive
//! lock file lets one replica at a time order certificates.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Creates `dir` and its missing parents with mode 0700, and makes `dir`
/// itself 0700 if it existed with a wider mode.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::metadata(dir)?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes `data` to `path` (mode 0600) so that readers see the old file
/// or the new one whole.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    private_dir(path.parent().unwrap_or(Path::new(".")))?;
    write_whole(path, data, 0o600)
}

/// Writes `data` to `path` whole, with `mode`, in a folder of the
/// user's (a missing one is made 0700; an existing one is left as it is).
pub fn write_outside(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.as_os_str().is_empty() && !dir.is_dir() {
        private_dir(dir)?;
    }
    write_whole(path, data, mode)
}

fn write_whole(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// Reads `path`; `None` when it does not exist.
pub fn read(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// An exclusive lock on a file, held until dropped (flock(2): released
/// by the kernel if the process dies, so a crashed replica never leaves
/// the others locked out).
pub struct Lock {
    _file: nix::fcntl::Flock<std::fs::File>,
    path: PathBuf,
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lock({})", self.path.display())
    }
}

impl Lock {
    /// Takes the lock on `path`, waiting while another process (or task)
    /// holds it.
    pub async fn take(path: PathBuf) -> std::io::Result<Self> {
        tokio::task::spawn_blocking(move || Self::take_blocking(path))
            .await
            .map_err(std::io::Error::other)?
    }

    fn take_blocking(path: PathBuf) -> std::io::Result<Self> {
        let file = Self::open(&path)?;
        let file = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| std::io::Error::from(e))?;
        Ok(Self { _file: file, path })
    }

    /// Takes the lock only if no one holds it.
    pub fn try_take(path: PathBuf) -> std::io::Result<Option<Self>> {
        let file = Self::open(&path)?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(f) => Ok(Some(Self { _file: f, path })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(e.into()),
        }
    }

    /// The lock file at `path` (made 0600 in a 0700 folder if missing).
    fn open(path: &Path) -> std::io::Result<std::fs::File> {
        if let Some(dir) = path.parent() {
            private_dir(dir)?;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_the_lock() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("a/b");
        write_private(&dir.join("key.pem"), b"secret").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&t.path().join("a")), 0o700);
        assert_eq!(mode(&dir.join("key.pem")), 0o600);
        assert_eq!(read(&dir.join("key.pem")).unwrap().unwrap(), b"secret");
        assert_eq!(read(&dir.join("none")).unwrap(), None);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        // flock locks are per open file: a second open is locked out.
        let held = Lock::try_take(dir.join("lock")).unwrap().unwrap();
        assert!(Lock::try_take(dir.join("lock")).unwrap().is_none());
        drop(held);
        assert!(Lock::try_take(dir.join("lock")).unwrap().is_some());
    }
}
