//! A worker's php-fpm made ready to run: found, its listen address
//! chosen, its configuration written (0600, in the runtime directory) and
//! checked with `php-fpm -t`, whose own message is shown when it refuses.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use tokio::process::Command;
use tqserver_fastcgi::Address;

use super::config::render;
use super::find_binary;
use crate::config::{Listen, Mode, Supervision, WorkerConfig};
use crate::php::LifecycleError;
use crate::ports::Ports;

/// A worker's php-fpm, configured and validated, not yet running.
pub struct Prepared {
    pub(super) worker: Arc<WorkerConfig>,
    pub(super) binary: PathBuf,
    pub(super) files: Files,
    root: bool,
}

/// Where a php-fpm's configuration, pid file and socket are: kept by
/// its [`super::FpmMaster`], so a reload rewrites the same configuration file.
#[derive(Debug, Clone)]
pub struct Files {
    conf: PathBuf,
    pid: PathBuf,
    listen: String,
    pub(super) address: Address,
}

impl Prepared {
    /// Finds php-fpm, picks the listen address, writes the configuration
    /// into `runtime_dir` and checks it with `php-fpm -t`. `generation`
    /// tells apart the files (socket, pid, config) of a php-fpm that
    /// replaces another (a worker.yaml edit) while the old one drains.
    pub async fn new(
        worker: Arc<WorkerConfig>,
        mode: Mode,
        runtime_dir: &Path,
        ports: &Ports,
        supervision: &Supervision,
        generation: u32,
    ) -> Result<Self, LifecycleError> {
        let stem = if generation == 0 {
            worker.name.clone()
        } else {
            format!("{}.{generation}", worker.name)
        };
        let binary = find_binary(&worker).map_err(|why| LifecycleError::NotFound {
            worker: worker.name.clone(),
            why,
        })?;
        let (address, listen) = match &worker.php.pool.listen {
            Listen::RuntimeSocket => {
                let p = runtime_dir.join(format!("{stem}.sock"));
                (Address::Unix(p.clone()), p.display().to_string())
            }
            Listen::Unix(p) => (Address::Unix(p.clone()), p.display().to_string()),
            Listen::TcpFromRange(ip) => {
                let port = ports.acquire(*ip).ok_or_else(|| LifecycleError::NoPort {
                    worker: worker.name.clone(),
                    range: ports.range(),
                })?;
                let a = std::net::SocketAddr::new(*ip, port);
                (Address::from(a), a.to_string())
            }
            Listen::Tcp(a) => (Address::from(*a), a.to_string()),
        };
        let root = nix::unistd::geteuid().is_root();
        let pid = runtime_dir.join(format!("php-fpm-{stem}.pid"));
        let conf = runtime_dir.join(format!("php-fpm-{stem}.conf"));
        write_wordpress_helper(&worker, runtime_dir)?;
        let text = rendered(&worker, mode, &listen, &pid, supervision, root)?;
        write_conf(&conf, &text)?;
        let prepared = Self {
            worker,
            binary,
            files: Files {
                conf,
                pid,
                listen,
                address,
            },
            root,
        };
        prepared.test().await?;
        Ok(prepared)
    }

    /// The configuration of `worker` for the php-fpm already running at
    /// `running`'s files, for its SIGUSR2 reload: written beside, checked
    /// with `php-fpm -t`, then moved over the running configuration
    /// (which php-fpm reads again as it re-executes itself). A refused
    /// configuration leaves the running one untouched. `None`: the
    /// configuration is the one php-fpm runs with (the edit was about
    /// TQServer's side only, say its access log), so there is nothing to
    /// reload — and no reason to lose opcache.
    pub async fn again(
        worker: Arc<WorkerConfig>,
        mode: Mode,
        running: &Files,
        supervision: &Supervision,
    ) -> Result<Option<Self>, LifecycleError> {
        let binary = find_binary(&worker).map_err(|why| LifecycleError::NotFound {
            worker: worker.name.clone(),
            why,
        })?;
        let root = nix::unistd::geteuid().is_root();
        if let Some(dir) = running.pid.parent() {
            write_wordpress_helper(&worker, dir)?;
        }
        let text = rendered(
            &worker,
            mode,
            &running.listen,
            &running.pid,
            supervision,
            root,
        )?;
        if std::fs::read_to_string(&running.conf).is_ok_and(|now| now == text) {
            return Ok(None);
        }
        let mut files = running.clone();
        files.conf = running.conf.with_extension("conf.next");
        write_conf(&files.conf, &text)?;
        let mut prepared = Self {
            worker,
            binary,
            files,
            root,
        };
        if let Err(e) = prepared.test().await {
            let _ = std::fs::remove_file(&prepared.files.conf);
            return Err(e);
        }
        std::fs::rename(&prepared.files.conf, &running.conf).map_err(|source| {
            LifecycleError::Write {
                path: running.conf.clone(),
                source,
            }
        })?;
        prepared.files.conf = running.conf.clone();
        Ok(Some(prepared))
    }

    /// php-fpm with this configuration (`-y`, `-c`, `-R` as needed).
    pub(super) fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("-y").arg(&self.files.conf);
        if let Some(ini) = &self.worker.php.config_file {
            cmd.arg("-c").arg(ini);
        }
        if self.root {
            cmd.arg("-R");
        }
        // In the environment the master is started with, which its
        // children's /proc/<pid>/environ still show after clear_env: how
        // the egress proxy knows their outgoing connections
        // (egress::owner).
        cmd.env("WORKER_NAME", &self.worker.name);
        cmd.stdin(Stdio::null());
        cmd
    }

    /// `php-fpm -t`: the configuration is checked before anything runs,
    /// and php-fpm's own message is shown when it is refused.
    async fn test(&self) -> Result<(), LifecycleError> {
        let out =
            self.command()
                .arg("-t")
                .output()
                .await
                .map_err(|source| LifecycleError::Run {
                    worker: self.worker.name.clone(),
                    program: self.binary.clone(),
                    source,
                })?;
        if out.status.success() {
            return Ok(());
        }
        let mut message = String::from_utf8_lossy(&out.stderr).into_owned();
        message.push_str(&String::from_utf8_lossy(&out.stdout));
        Err(LifecycleError::Refused {
            worker: self.worker.name.clone(),
            conf: self.files.conf.clone(),
            message: message.trim().to_string(),
        })
    }

    /// Where requests go.
    pub fn address(&self) -> &Address {
        &self.files.address
    }
}

/// The WordPress helper in `runtime_dir`, when `worker` gets it
/// ([`crate::php::wordpress`]).
fn write_wordpress_helper(worker: &WorkerConfig, runtime_dir: &Path) -> Result<(), LifecycleError> {
    if !crate::php::wordpress::applies(worker) {
        return Ok(());
    }
    crate::php::wordpress::write_helper(runtime_dir)
        .map(|_| ())
        .map_err(|e| LifecycleError::Unwritable {
            worker: worker.name.clone(),
            why: format!("the WordPress helper in {}: {e}", runtime_dir.display()),
        })
}

/// The pool configuration of `worker` for php-fpm, listening on `listen`
/// with its pid file at `pid`.
fn rendered(
    worker: &WorkerConfig,
    mode: Mode,
    listen: &str,
    pid: &std::path::Path,
    supervision: &Supervision,
    root: bool,
) -> Result<String, LifecycleError> {
    render(worker, mode, listen, pid, supervision.shutdown_grace, root).map_err(|why| {
        LifecycleError::Unwritable {
            worker: worker.name.clone(),
            why,
        }
    })
}

/// Writes a configuration `text` at `path`, private to TQServer's user.
fn write_conf(path: &std::path::Path, text: &str) -> Result<(), LifecycleError> {
    crate::runtime::write_private(path, text.as_bytes()).map_err(|source| LifecycleError::Write {
        path: path.to_path_buf(),
        source,
    })
}
