//! Logs: the server log (terminal and/or `server.log_file` with `{date}`,
//! reopened when the date changes) and each worker's lines — php-fpm's own
//! log, PHP's STDERR, access and slow-request lines — tagged with the
//! worker's name and filtered by its `logging.level`, into the worker's
//! `logging.log_file` when it has one.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::MakeWriterExt;

/// Bumped by [`reopen_all`]; every [`DailyFile`] reopens its path on its
/// next write after a bump.
static REOPEN: AtomicU64 = AtomicU64::new(0);

/// Makes every log file reopen its path (SIGUSR1, after logrotate moved
/// the files away), as nginx and php-fpm do.
pub fn reopen_all() {
    REOPEN.fetch_add(1, Ordering::Relaxed);
}

/// Log files opened while TQServer was still root, before it became
/// `server.user` (as nginx opens its logs in the master): a [`DailyFile`]
/// takes its file from here rather than opening the path itself, which the
/// unprivileged user may not do in a root-owned folder.
static PREOPENED: Mutex<Vec<(PathBuf, File)>> = Mutex::new(Vec::new());

/// Opens today's file of each `(template, name)` now and gives it to
/// `owner` (uid, gid), so the user TQServer becomes can keep writing it
/// and reopen it in place. Files of a later day, or that logrotate moved
/// away, are opened as that user: its folder must let it (the start-up
/// says so when it does not).
pub fn preopen(files: &[(String, String)], owner: (u32, u32)) -> io::Result<()> {
    let today = chrono::Local::now().format("%Y-%m-%d").to_string();
    let mut held = PREOPENED.lock().unwrap_or_else(|e| e.into_inner());
    for (template, name) in files {
        let path = PathBuf::from(template.replace("{date}", &today).replace("{name}", name));
        if held.iter().any(|(p, _)| *p == path) {
            continue;
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let f = OpenOptions::new().create(true).append(true).open(&path)?;
        nix::unistd::fchown(
            &f,
            Some(nix::unistd::Uid::from_raw(owner.0)),
            Some(nix::unistd::Gid::from_raw(owner.1)),
        )
        .map_err(io::Error::from)?;
        held.push((path, f));
    }
    Ok(())
}

/// A file [`preopen`] opened for `path`, if any (a copy of its descriptor).
fn preopened(path: &std::path::Path) -> Option<File> {
    let held = PREOPENED.lock().unwrap_or_else(|e| e.into_inner());
    held.iter()
        .find(|(p, _)| p == path)
        .and_then(|(_, f)| f.try_clone().ok())
}

/// Server log line format (`server.log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `time level message key=value`.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// An append-only file whose path may contain `{date}` (YYYY-MM-DD, local
/// time) and `{name}`; it moves to a new file when the date changes.
pub struct DailyFile {
    template: String,
    name: String,
    date: String,
    epoch: u64,
    file: Option<File>,
}

impl DailyFile {
    /// Opens (creating directories as needed) the file for today.
    pub fn open(template: &str, name: &str) -> io::Result<Self> {
        let mut f = Self {
            template: template.to_string(),
            name: name.to_string(),
            date: String::new(),
            epoch: REOPEN.load(Ordering::Relaxed),
            file: None,
        };
        f.roll()?;
        Ok(f)
    }

    /// The file written now.
    pub fn current_path(&self) -> PathBuf {
        self.path()
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(
            self.template
                .replace("{date}", &self.date)
                .replace("{name}", &self.name),
        )
    }

    fn roll(&mut self) -> io::Result<()> {
        self.roll_to(chrono::Local::now().format("%Y-%m-%d").to_string())
    }

    /// Opens the file of `today` unless it is open already (or a reopen
    /// was asked for).
    fn roll_to(&mut self, today: String) -> io::Result<()> {
        let epoch = REOPEN.load(Ordering::Relaxed);
        if self.file.is_some() && today == self.date && epoch == self.epoch {
            return Ok(());
        }
        self.epoch = epoch;
        self.date = today;
        let path = self.path();
        if let Some(f) = preopened(&path).filter(|_| epoch == 0) {
            self.file = Some(f);
            return Ok(());
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        self.file = Some(OpenOptions::new().create(true).append(true).open(&path)?);
        Ok(())
    }
}

impl Write for DailyFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.template.contains("{date}") || REOPEN.load(Ordering::Relaxed) != self.epoch {
            self.roll()?;
        }
        self.file.as_mut().expect("opened").write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), Write::flush)
    }
}

/// A [`DailyFile`] shared by every thread that logs.
#[derive(Clone)]
pub struct SharedFile(Arc<Mutex<DailyFile>>);

impl SharedFile {
    /// Opens `template` (see [`DailyFile`]).
    pub fn open(template: &str, name: &str) -> io::Result<Self> {
        DailyFile::open(template, name).map(|f| Self(Arc::new(Mutex::new(f))))
    }
}

/// One locked write to a [`SharedFile`].
pub struct SharedFileWriter<'a>(&'a SharedFile);

impl Write for SharedFileWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut f = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
        f.write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for SharedFile {
    type Writer = SharedFileWriter<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        SharedFileWriter(self)
    }
}

/// Sets up the server log: the terminal unless `quiet`, and `log_file`,
/// as text or JSON lines. `RUST_LOG` overrides the default level (info).
pub fn init(log_file: Option<&str>, quiet: bool, format: LogFormat) -> io::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let file = log_file
        .map(|t| SharedFile::open(t, "tqserver"))
        .transpose()?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    if format == LogFormat::Json {
        let builder = builder.json().flatten_event(true);
        let result = match (file, quiet) {
            (Some(f), false) => builder
                .with_writer(io::stderr.and(f.with_max_level(Level::TRACE)))
                .try_init(),
            (Some(f), true) => builder.with_writer(f).try_init(),
            (None, false) => builder.with_writer(io::stderr).try_init(),
            (None, true) => builder.with_writer(io::sink).try_init(),
        };
        let _ = result;
        return Ok(());
    }
    let result = match (file, quiet) {
        (Some(f), false) => builder
            .with_writer(io::stderr.and(f.with_max_level(Level::TRACE)))
            .with_ansi(false)
            .try_init(),
        (Some(f), true) => builder.with_writer(f).with_ansi(false).try_init(),
        (None, false) => builder
            .with_writer(io::stderr)
            .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
            .try_init(),
        (None, true) => builder.with_writer(io::sink).try_init(),
    };
    // A second init (tests run several servers in one process) is harmless.
    let _ = result;
    Ok(())
}

/// Where one worker's lines go.
#[derive(Clone)]
pub struct WorkerLog {
    inner: Arc<WorkerLogInner>,
}

struct WorkerLogInner {
    name: String,
    level: Level,
    file: Option<Mutex<DailyFile>>,
}

impl WorkerLog {
    /// The log of worker `name`: `file` (its `logging.log_file`, with
    /// `{date}` and `{name}`) if set, else the server log; lines below
    /// `level` are not written.
    pub fn new(name: &str, level: Level, file: Option<&str>) -> io::Result<Self> {
        let file = file
            .map(|t| DailyFile::open(t, name).map(Mutex::new))
            .transpose()?;
        Ok(Self {
            inner: Arc::new(WorkerLogInner {
                name: name.to_string(),
                level,
                file,
            }),
        })
    }

    /// The worker's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Writes `text` at `level` if the worker's level lets it through.
    pub fn emit(&self, level: Level, text: &str) {
        let w = &self.inner;
        if level > w.level {
            return;
        }
        if let Some(f) = &w.file {
            let now = chrono::Local::now().format("%Y-%m-%dT%H:%M:%S%.3f%:z");
            // One write per line: lines of concurrent requests never mix.
            let line = format!("{now} {level:>5} [{}] {text}\n", w.name);
            let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
            let _ = f.write_all(line.as_bytes());
            return;
        }
        let name = w.name.as_str();
        match level {
            Level::ERROR => tracing::error!(worker = name, "{text}"),
            Level::WARN => tracing::warn!(worker = name, "{text}"),
            Level::INFO => tracing::info!(worker = name, "{text}"),
            Level::DEBUG => tracing::debug!(worker = name, "{text}"),
            Level::TRACE => tracing::trace!(worker = name, "{text}"),
        }
    }

    /// An informational line.
    pub fn info(&self, text: &str) {
        self.emit(Level::INFO, text);
    }

    /// An error line.
    pub fn error(&self, text: &str) {
        self.emit(Level::ERROR, text);
    }

    /// A line PHP wrote to FastCGI `STDERR` (`error_log()`, warnings).
    pub fn php_stderr(&self, line: &[u8]) {
        self.emit(
            Level::WARN,
            &format!("php: {}", String::from_utf8_lossy(line)),
        );
    }

    /// A line of php-fpm's own log; its level word sets the level.
    pub fn fpm_line(&self, line: &str) {
        let level = if line.contains("] ERROR:") || line.contains("] ALERT:") {
            Level::ERROR
        } else if line.contains("] WARNING:") {
            Level::WARN
        } else if line.contains("] DEBUG:") {
            Level::DEBUG
        } else if line.contains("] NOTICE:") {
            Level::INFO
        } else {
            // Output of PHP processes (catch_workers_output).
            Level::WARN
        };
        self.emit(level, &format!("php-fpm: {line}"));
    }
}

/// Hands each line a child writes to `r` (its stdout or stderr) to
/// `on_line`, until the pipe closes.
pub fn forward_lines<R>(r: R, on_line: impl Fn(&str) + Send + 'static)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    use tokio::io::AsyncBufReadExt;
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(r).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            on_line(&line);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolls_at_a_date_change_and_reopens_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("x_{date}.log");
        let mut f = DailyFile::open(t.to_str().unwrap(), "x").unwrap();
        f.roll_to("2026-11-25".into()).unwrap();
        f.file.as_mut().unwrap().write_all(b"one\n").unwrap();
        // Midnight: the next write goes to the next day's file.
        f.roll_to("2026-11-26".into()).unwrap();
        f.file.as_mut().unwrap().write_all(b"two\n").unwrap();
        let day = |d: &str| std::fs::read_to_string(dir.path().join(format!("x_{d}.log"))).unwrap();
        assert_eq!(day("2026-11-25"), "one\n");
        assert_eq!(day("2026-11-26"), "two\n");

        // logrotate moves the file away; after a reopen the path is new.
        let plain = dir.path().join("plain.log");
        let shared = SharedFile::open(plain.to_str().unwrap(), "x").unwrap();
        shared.make_writer().write_all(b"before\n").unwrap();
        std::fs::rename(&plain, dir.path().join("plain.log.1")).unwrap();
        shared
            .make_writer()
            .write_all(b"still the moved file\n")
            .unwrap();
        reopen_all();
        shared.make_writer().write_all(b"after\n").unwrap();
        assert_eq!(std::fs::read_to_string(&plain).unwrap(), "after\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("plain.log.1")).unwrap(),
            "before\nstill the moved file\n"
        );
    }
}
