//! Why a PHP backend could not start or change: one enum for the
//! lifecycle of both backends (php-fpm and TQServer's php-cgi pool), so
//! callers can tell a missing program from a refused configuration from
//! a change that needs a restart, and every message says what to do.

use std::path::PathBuf;
use std::time::Duration;

/// A PHP backend's start or reload failed; what runs stays as it was.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// php-fpm or php-cgi is not installed (or `php.binary` is wrong).
    #[error("worker {worker}: {why}")]
    NotFound {
        /// The worker.
        worker: String,
        /// Where it was looked for and how to install it.
        why: String,
    },
    /// The program could not be run at all.
    #[error("worker {worker}: cannot run {}: {source}", program.display())]
    Run {
        /// The worker.
        worker: String,
        /// The program.
        program: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `php-fpm -t` refused the configuration TQServer wrote.
    #[error("worker {worker}: php-fpm refused the configuration TQServer generated ({}): {message}", conf.display())]
    Refused {
        /// The worker.
        worker: String,
        /// The configuration file.
        conf: PathBuf,
        /// php-fpm's own words.
        message: String,
    },
    /// `php.binary` is not the CGI/FastCGI build of PHP.
    #[error("worker {worker}: {} is not php-cgi (php.backend: cgi needs the CGI/FastCGI build of PHP; `-v` said: {said})", binary.display())]
    NotCgi {
        /// The worker.
        worker: String,
        /// The program tried.
        binary: PathBuf,
        /// What `-v` printed.
        said: String,
    },
    /// The port range has no free port left.
    #[error("worker {worker}: no free port in {}-{} (workers.port_range_*)", range.0, range.1)]
    NoPort {
        /// The worker.
        worker: String,
        /// `workers.port_range_start` / `_end`.
        range: (u16, u16),
    },
    /// A value cannot be written into php-fpm's configuration.
    #[error("worker {worker}: {why}")]
    Unwritable {
        /// The worker.
        worker: String,
        /// Which value, and why.
        why: String,
    },
    /// A file in the runtime directory could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A replacement backend started but did not answer in time.
    #[error("the new pool did not become ready within {0:?}")]
    NotReady(Duration),
    /// The change cannot be applied while TQServer runs.
    #[error("{0}")]
    NeedsRestart(String),
    /// php-fpm's SIGUSR2 reload did not come back as it should.
    #[error("{0}")]
    Reload(String),
}
