//! Native workers (`type: rust | go | command`): HTTP servers TQServer
//! builds, runs on ports from the range, health-checks, restarts, and
//! replaces with zero failed requests when their files change.
//!
//! - [`build`]: the build recipes; a built executable is copied per version.
//! - [`instance`]: one process, its port, output, health checks and stop.
//! - [`supervisor`]: the task that owns a worker's instances: first start,
//!   crash restarts with backoff, liveness, recycling, hot reload.
//! - [`proxy`]: one HTTP request to the least busy ready instance.
//! - [`h1`]: the HTTP/1.1 codec (request head out, response head and
//!   chunks in), apart from any I/O.
//! - [`conn`]: one kept-alive connection to an instance, driven in the
//!   request's own task; [`pool`]: its idle connections; [`body`]: a
//!   response body read off the connection as the client takes it.
//! - [`tunnel`]: an upgraded (WebSocket) connection's bytes both ways.
//!
//! States and transitions: LIFECYCLE.md next to this file.

pub mod body;
pub mod build;
pub mod conn;
pub mod h1;
pub mod instance;
pub mod pool;
pub mod proxy;
pub mod supervisor;
pub mod tunnel;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::config::{Mode, WorkerConfig};
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
    /// The proxy's timeouts of the configuration in force.
    pub timeouts: crate::config::ProxyTimeouts,
    /// `scaling.max_requests` of the configuration in force.
    pub max_requests: u64,
    /// `proxy.strip_prefix` of the configuration in force.
    pub strip_prefix: bool,
    /// `scaling.min_workers` and `max_workers` in force, when they differ.
    pub scaling: Option<(u32, u32)>,
    /// Bumped whenever pages this worker served should reload in a
    /// browser (a new version swapped in, a build failed, the worker gave
    /// up): what the dev-mode live reload subscribes to.
    pub page_version: u64,
}

/// A running native worker: what routes, readiness and reloads use. Its
/// supervisor owns every decision; this only reads what it publishes.
pub struct NativeWorker {
    /// Its configuration at start (name and route never change; the rest
    /// may, with its worker.yaml: see [`Serving`]).
    pub worker: Arc<WorkerConfig>,
    /// dev or prod.
    pub mode: Mode,
    serving: watch::Sender<Arc<Serving>>,
    events: mpsc::UnboundedSender<supervisor::Event>,
    wait_ready: Duration,
    /// Its metrics (the proxy counts upgraded connections).
    metrics: crate::metrics::NativeMetrics,
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
    /// The route to take off request paths (`proxy.strip_prefix`), if
    /// any.
    pub fn strip<'a>(&self, route: &'a str) -> Option<&'a str> {
        self.strip_prefix.then_some(route)
    }

    /// Whether an instance takes requests now.
    pub fn has_ready(&self) -> bool {
        self.instances.iter().any(|i| i.state() == State::Ready)
    }
}

impl NativeWorker {
    /// What requests see now.
    pub fn serving(&self) -> Arc<Serving> {
        self.serving.borrow().clone()
    }

    /// Every change of what requests see, from now on.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Serving>> {
        self.serving.subscribe()
    }

    /// Waits until an instance is ready (true) or the worker gave up, at
    /// most `timeout` (false).
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut rx = self.subscribe();
        crate::supervise::ready::wait_for(&mut rx, timeout, |s| s.has_ready() || s.stopped).await;
        self.serving().has_ready()
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

    /// Its instances for the dashboard (the `http` backend: native
    /// workers are not in the PHP pool metrics).
    pub fn pool_status(&self) -> crate::metrics::pools::PoolStatus {
        use crate::metrics::pools::{PoolStatus, ProcessStatus};
        let now = self.serving();
        let processes: Vec<ProcessStatus> = now
            .instances
            .iter()
            .map(|i| ProcessStatus {
                label: format!("pid {} · port {}", i.pid, i.port),
                state: i.state().as_str().to_string(),
                requests: i.served(),
                active: Some(i.outstanding() as u64),
                uptime_seconds: i.started.elapsed().as_secs(),
            })
            .collect();
        PoolStatus {
            worker: self.worker.name.clone(),
            backend: "http",
            up: now.has_ready(),
            idle: None,
            active: processes.iter().filter_map(|p| p.active).sum(),
            total: processes.len() as u64,
            processes,
            scaling: now.scaling,
            upgraded: Some(crate::metrics::pools::UpgradedStatus {
                open: u64::try_from(self.metrics.upgraded.get()).unwrap_or(0),
                bytes_up: self.metrics.upgraded_up.get(),
                bytes_down: self.metrics.upgraded_down.get(),
            }),
            ..PoolStatus::default()
        }
    }

    /// Why it cannot serve now, if it cannot.
    pub fn readiness(&self) -> Result<(), String> {
        let now = self.serving();
        if now.has_ready() {
            Ok(())
        } else if let Some(p) = &now.problem {
            Err(p.title.clone())
        } else if now.building {
            Err("building".to_string())
        } else {
            Err("no instance is ready".to_string())
        }
    }

    /// Asks the supervisor to rebuild and swap (files changed).
    pub fn reload(&self, why: String) {
        let _ = self.events.send(supervisor::Event::Reload(why));
    }

    /// Hands the supervisor a new configuration of this worker (its
    /// worker.yaml changed): the next version is built and started with
    /// it, then swapped in as for a code change.
    pub fn reconfigure(&self, worker: WorkerConfig) {
        let _ = self
            .events
            .send(supervisor::Event::Reconfigure(Box::new(worker)));
    }
}
