//! What every supervised worker starts in: the mode, the private runtime
//! directory, the port range, the supervision settings, and the shutdown
//! phase its tasks belong to. One per server, shared by every worker of
//! every kind.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Mode, Supervision};
use crate::ports::Ports;

/// The workers' shared surroundings.
pub struct Scope {
    /// dev or prod.
    pub mode: Mode,
    /// TQServer's private runtime directory.
    pub runtime_dir: PathBuf,
    /// The worker port range.
    pub ports: Arc<Ports>,
    /// Process supervision settings.
    pub sup: Supervision,
    /// Cancelled when the workers' phase of the shutdown begins; every
    /// worker stops on a child token of it.
    pub stop: CancellationToken,
    /// Every supervising task (php-fpm masters, php-cgi pools, native
    /// supervisors): the shutdown's workers phase waits for them all.
    pub tasks: TaskTracker,
}

impl Scope {
    /// Runs `task` as one of the workers' supervising tasks.
    pub fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task);
    }

    /// The workers' phase of the shutdown: every worker is told to stop,
    /// and this returns once every supervising task has ended (each stops
    /// its processes within the grace period, then kills them).
    pub async fn shut_down(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}
