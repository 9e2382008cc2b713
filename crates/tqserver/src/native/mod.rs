//! Native workers (`type: rust | go | command`): HTTP servers TQServer
//! builds, runs on ports from the range, health-checks, restarts, and
//! replaces with zero failed requests when their files change.
//!
//! - [`build`]: the build recipes; a built executable is copied per version.
//! - [`instance`]: one process, its port, output, health checks and stop.
//! - [`supervisor`]: the task that owns a worker's instances: first start,
//!   crash restarts with backoff, liveness, recycling, hot reload.
//! - [`proxy`]: one HTTP request to the least busy ready instance.
//! - [`conn`]: kept-alive HTTP/1.1 connections to an instance, driven in
//!   the request's own task.
//!
//! States and transitions: LIFECYCLE.md next to this file.

pub mod build;
pub mod conn;
pub mod instance;
pub mod proxy;
pub mod supervisor;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::config::{Mode, Worker};
use instance::{Instance, State};

/// Why a worker cannot serve its newest code, shown on the dev-mode page.
#[derive(Debug, Clone)]
pub struct Problem {
    /// One line.
    pub title: String,
    /// Compiler output or the worker's last lines.
    pub detail: String,
    /// A build failed (500 in dev mode even while an older version runs),
    /// rather than the worker failing to start or crashing.
    pub build: bool,
}

/// What requests see: the instances that take traffic, what is wrong, and
/// the settings they run with (all swapped in one step).
#[derive(Debug)]
pub struct Serving {
    /// The instances of the current version (Ready or about to be).
    pub instances: Vec<Arc<Instance>>,
    /// The last build or start failure, until the next success.
    pub problem: Option<Arc<Problem>>,
    /// The supervisor gave up (crash loop) or has nothing to run yet.
    pub stopped: bool,
    /// A build (and start) of a new version is under way.
    pub building: bool,
    /// `scaling.request_timeout` of the configuration in force.
    pub request_timeout: Duration,
    /// `scaling.max_requests` of the configuration in force.
    pub max_requests: u64,
}

/// A native worker as the router sees it.
pub struct Service {
    /// Its configuration at start (name and route never change; the rest
    /// may, with its worker.yaml: see [`Serving`]).
    pub worker: Arc<Worker>,
    /// dev or prod.
    pub mode: Mode,
    serving: watch::Sender<Arc<Serving>>,
    events: mpsc::UnboundedSender<supervisor::Event>,
    wait_ready: Duration,
}

/// A request's hold on an instance; dropping it counts the request out.
pub struct Lease {
    inst: Arc<Instance>,
}

impl Lease {
    /// The instance.
    pub fn instance(&self) -> &Arc<Instance> {
        &self.inst
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.inst.leave();
    }
}

/// Why no instance was given.
pub enum NoInstance {
    /// Nothing became ready within the wait; `building` if a build is
    /// still under way (the first one can take a while).
    NotReady {
        /// A build is under way.
        building: bool,
    },
    /// The worker is stopped or failed; the problem says why.
    Failed(Option<Arc<Problem>>),
}

impl Serving {
    /// Whether an instance takes requests now.
    pub fn has_ready(&self) -> bool {
        self.instances.iter().any(|i| i.state() == State::Ready)
    }
}

impl Service {
    /// What requests see now.
    pub fn serving(&self) -> Arc<Serving> {
        self.serving.borrow().clone()
    }

    /// The least busy ready instance; waits (up to
    /// `health_check_wait_timeout_ms`) while the worker is starting.
    pub async fn lease(&self) -> Result<Lease, NoInstance> {
        // The common case: an instance is ready.
        if let Some(lease) = self.pick(&self.serving.borrow()) {
            return Ok(lease);
        }
        let deadline = tokio::time::Instant::now() + self.wait_ready;
        let mut rx = self.serving.subscribe();
        loop {
            let now = rx.borrow_and_update().clone();
            if let Some(lease) = self.pick(&now) {
                return Ok(lease);
            }
            if now.stopped {
                return Err(NoInstance::Failed(now.problem.clone()));
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(NoInstance::Failed(now.problem.clone())),
                Err(_) => {
                    return Err(NoInstance::NotReady {
                        building: self.serving.borrow().building,
                    });
                }
            }
        }
    }

    fn pick(&self, now: &Serving) -> Option<Lease> {
        // The ready instance with the fewest requests in flight. `enter`
        // fails only for one that stopped being Ready meanwhile (states
        // never go back to Ready), so each retry looks at one fewer.
        loop {
            let inst = now
                .instances
                .iter()
                .filter(|i| i.state() == State::Ready)
                .min_by_key(|i| i.outstanding())?;
            if let Some(n) = inst.enter() {
                if now.max_requests > 0 && n == now.max_requests {
                    let _ = self.events.send(supervisor::Event::Recycle(inst.id));
                }
                return Some(Lease { inst: inst.clone() });
            }
        }
    }

    /// Asks the supervisor to rebuild and swap (files changed).
    pub fn reload(&self, why: String) {
        let _ = self.events.send(supervisor::Event::Reload(why));
    }

    /// Hands the supervisor a new configuration of this worker (its
    /// worker.yaml changed): the next version is built and started with
    /// it, then swapped in as for a code change.
    pub fn reconfigure(&self, worker: Worker) {
        let _ = self
            .events
            .send(supervisor::Event::Reconfigure(Box::new(worker)));
    }
}
