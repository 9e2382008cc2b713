//! The task that owns one native worker's instances (an actor: every
//! decision is made here, one event at a time; requests only read the
//! published [`Serving`]). Its state is three small enums ([`Deploy`],
//! [`Restart`], [`Scale`]) next to the instances; see LIFECYCLE.md.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::build::{self, Artifact};
use super::instance::{Instance, Spawner, State};
use super::{NativeWorker, Problem, Serving};
use crate::config::{Mode, NativeConfig, Supervision, WorkerConfig};
use crate::logging::WorkerLog;
use crate::metrics::NativeMetrics;
use crate::ports::Ports;
use crate::supervise::{Backoff, Policy, Scope};

/// How often load is looked at when `max_workers` > `min_workers`.
const SCALE_EVERY: Duration = Duration::from_millis(250);

/// Ids unique across every worker, for logs and events.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// What the supervisor hears.
#[derive(Debug)]
pub(crate) enum Event {
    /// Files changed: rebuild and swap.
    Reload(String),
    /// The worker.yaml changed: rebuild and swap with this configuration.
    Reconfigure(Box<WorkerConfig>),
    /// An instance reached `max_requests`.
    Recycle(u64),
    /// An instance exited.
    Exited {
        /// Instance id.
        id: u64,
        /// Its exit in words.
        status: String,
    },
    /// A build and start of a new version finished.
    Deployed {
        version: u64,
        result: Result<(Artifact, Vec<Arc<Instance>>), Problem>,
    },
    /// An instance started in place of a missing one (crash restart).
    Restarted(Result<Arc<Instance>, String>),
    /// An instance failed its liveness check `failures` times in a row.
    Unhealthy { id: u64, failures: u32, why: String },
    /// An extra instance for load started, or not.
    ScaledUp(Result<Arc<Instance>, String>),
    /// A replacement for `old` (recycled or unhealthy) started, or not.
    Replaced {
        old: u64,
        new: Result<Arc<Instance>, String>,
    },
}

/// What building and starting instances of one configuration needs: the
/// supervisor's helper tasks share it (a new worker.yaml makes a new one).
struct Setup {
    worker: Arc<WorkerConfig>,
    native: NativeConfig,
    mode: Mode,
    sup: Supervision,
    ports: Arc<Ports>,
    spawner: Spawner,
    versions_dir: PathBuf,
    events: mpsc::UnboundedSender<Event>,
    /// Every instance alive, whatever its state: what a stop must reach
    /// (shared by the contexts of every configuration).
    all: Arc<Mutex<HashMap<u64, Arc<Instance>>>>,
}

/// Starts a native worker's supervisor in `scope` (its task is one of the
/// scope's; it stops on `stop`); the [`NativeWorker`] is what routes use.
pub fn start(
    worker: Arc<WorkerConfig>,
    scope: &Scope,
    log: WorkerLog,
    stop: CancellationToken,
    metrics: NativeMetrics,
) -> Arc<NativeWorker> {
    let (mode, sup, ports) = (scope.mode, scope.sup.clone(), scope.ports.clone());
    let runtime_dir = &scope.runtime_dir;
    let native = worker.native.clone().expect("a native worker");
    let (tx, rx) = mpsc::unbounded_channel();
    let (serving, _) = watch::channel(Arc::new(Serving {
        instances: Vec::new(),
        problem: None,
        stopped: false,
        building: true,
        timeouts: native.timeouts,
        max_requests: native.max_requests,
        strip_prefix: native.strip_prefix,
        scaling: bounds(&native),
        page_version: 0,
    }));
    let svc = Arc::new(NativeWorker {
        worker: worker.clone(),
        mode,
        serving,
        events: tx.clone(),
        wait_ready: sup.health_check_wait,
        metrics: metrics.clone(),
    });
    let setup = Arc::new(Setup::new(
        worker,
        mode,
        sup,
        ports,
        runtime_dir.join("native"),
        log,
        tx,
        Default::default(),
    ));
    scope.spawn(run(setup, svc.clone(), rx, stop, metrics));
    svc
}

impl Setup {
    /// Instances alive in any state.
    fn alive(&self) -> usize {
        self.all.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        worker: Arc<WorkerConfig>,
        mode: Mode,
        sup: Supervision,
        ports: Arc<Ports>,
        native_dir: PathBuf,
        log: WorkerLog,
        events: mpsc::UnboundedSender<Event>,
        all: Arc<Mutex<HashMap<u64, Arc<Instance>>>>,
    ) -> Self {
        let native = worker.native.clone().expect("a native worker");
        let mut env = worker.environment.clone();
        env.push(("WORKER_HEALTH_PATH".to_string(), native.health_path.clone()));
        env.extend(native.env.iter().cloned());
        Self {
            spawner: Spawner {
                log,
                env,
                dir: native.dir.clone(),
                tail: Default::default(),
                output_file: worker.logging.output_file.clone(),
            },
            versions_dir: native_dir.join(&worker.name),
            worker,
            native,
            mode,
            sup,
            ports,
            events,
            all,
        }
    }

    /// The same worker with a new configuration.
    fn with_worker(&self, worker: WorkerConfig) -> Self {
        let mut new = Self::new(
            Arc::new(worker),
            self.mode,
            self.sup.clone(),
            self.ports.clone(),
            self.versions_dir
                .parent()
                .map(PathBuf::from)
                .unwrap_or_default(),
            self.spawner.log.clone(),
            self.events.clone(),
            self.all.clone(),
        );
        new.spawner.tail = self.spawner.tail.clone();
        new
    }
}

/// Building a new version: at most one at a time; a change meanwhile
/// queues one more.
enum Deploy {
    /// Nothing being built.
    Idle,
    /// A build and start under way since `since`; `next` is why another
    /// follows it.
    Building {
        since: std::time::Instant,
        next: Option<String>,
    },
}

/// Keeping `min_workers` instances: a start scheduled, under way, or
/// given up on after `workers.max_restarts` failures in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restart {
    /// Nothing to do.
    Idle,
    /// Start one at this time (the backoff's delay).
    At(Instant),
    /// A start is under way.
    Starting,
    /// Too many failures in a row: stopped until the files change.
    GaveUp,
}

/// Adding an instance for load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scale {
    Steady,
    Adding,
}

/// The supervisor's own state.
struct Supervisor {
    setup: Arc<Setup>,
    worker: Arc<NativeWorker>,
    current: Vec<Arc<Instance>>,
    artifact: Option<(u64, Artifact)>,
    problem: Option<Arc<Problem>>,
    deploy: Deploy,
    restart: Restart,
    /// Failures in a row ([`Policy::NATIVE`]).
    backoff: Backoff,
    replacing: HashSet<u64>,
    scale: Scale,
    next_version: u64,
    page_version: u64,
    tasks: JoinSet<()>,
    metrics: NativeMetrics,
}

async fn run(
    setup: Arc<Setup>,
    worker: Arc<NativeWorker>,
    mut rx: mpsc::UnboundedReceiver<Event>,
    stop: CancellationToken,
    metrics: NativeMetrics,
) {
    let mut s = Supervisor {
        backoff: Backoff::new(setup.sup.restart_delay, Policy::NATIVE),
        metrics,
        setup: setup.clone(),
        worker,
        current: Vec::new(),
        artifact: None,
        problem: None,
        deploy: Deploy::Idle,
        restart: Restart::Idle,
        replacing: HashSet::new(),
        scale: Scale::Steady,
        next_version: 1,
        page_version: 0,
        tasks: JoinSet::new(),
    };
    s.deploy("start".into());
    let mut health = tokio::time::interval(setup.native.health_interval);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    health.tick().await;
    let mut scale = tokio::time::interval(SCALE_EVERY);
    scale.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut health_every = setup.native.health_interval;
    loop {
        if s.setup.native.health_interval != health_every {
            // A new worker.yaml with another interval.
            health_every = s.setup.native.health_interval;
            health = tokio::time::interval(health_every);
            health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            health.tick().await;
        }
        let elastic = s.setup.native.max_instances > s.setup.native.min_instances;
        let restart_at = match s.restart {
            Restart::At(t) => Some(t),
            _ => None,
        };
        tokio::select! {
            () = stop.cancelled() => break,
            Some(ev) = rx.recv() => s.on_event(ev),
            () = sleep_until(restart_at), if restart_at.is_some() => s.start_missing(),
            _ = health.tick() => s.check_health(),
            _ = scale.tick(), if elastic => s.scale(),
            Some(_) = s.tasks.join_next(), if !s.tasks.is_empty() => {}
        }
    }
    // Stop: no new starts; every instance takes no new request, finishes
    // those it has (a worker replaced by a reload was unrouted just
    // before; a request that picked it then is still on its way in), and
    // then gets SIGTERM and the grace. SIGTERM at once refused the
    // connection of such a request (502).
    s.tasks.abort_all();
    while s.tasks.join_next().await.is_some() {}
    let all: Vec<Arc<Instance>> = setup
        .all
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .cloned()
        .collect();
    let grace = crate::process::grace_left(setup.sup.shutdown_grace);
    let mut stops = JoinSet::new();
    for i in all {
        stops.spawn(async move { i.drain(grace).await });
    }
    while stops.join_next().await.is_some() {}
    let _ = std::fs::remove_dir_all(&setup.versions_dir);
}

/// The scaling bounds, when the instance count can change.
fn bounds(n: &NativeConfig) -> Option<(u32, u32)> {
    (n.max_instances > n.min_instances).then_some((n.min_instances, n.max_instances))
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Supervisor {
    fn log(&self) -> &WorkerLog {
        &self.setup.spawner.log
    }

    fn building(&self) -> bool {
        matches!(self.deploy, Deploy::Building { .. })
    }

    fn publish(&self) {
        let building = self.building();
        let serving = Serving {
            instances: self.current.clone(),
            problem: self.problem.clone(),
            stopped: self.current.is_empty()
                && (self.restart == Restart::GaveUp || (self.artifact.is_none() && !building)),
            building,
            timeouts: self.setup.native.timeouts,
            max_requests: self.setup.native.max_requests,
            strip_prefix: self.setup.native.strip_prefix,
            scaling: bounds(&self.setup.native),
            page_version: self.page_version,
        };
        self.worker.serving.send_replace(Arc::new(serving));
        let m = &self.metrics;
        m.ready.set(
            self.current
                .iter()
                .filter(|i| i.state() == State::Ready)
                .count() as i64,
        );
        m.instances.set(self.setup.alive() as i64);
    }

    /// Pages this worker served should reload (a new version, a failed
    /// build, the worker gave up): published for whoever subscribes.
    fn announce(&mut self) {
        self.page_version += 1;
        self.publish();
    }

    /// Another build after the one under way, or now.
    fn queue_deploy(&mut self, why: String) {
        match &mut self.deploy {
            Deploy::Building { next, .. } => *next = Some(why),
            Deploy::Idle => self.deploy(why),
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Reload(why) => self.queue_deploy(why),
            Event::Reconfigure(worker) => {
                self.log().info(&format!(
                    "{} changed: building and starting with the new settings",
                    worker.file.display()
                ));
                self.setup = Arc::new(self.setup.with_worker(*worker));
                self.queue_deploy("worker.yaml changed".into());
            }
            Event::Deployed { version, result } => self.deployed(version, result),
            Event::Exited { id, status } => self.exited(id, &status),
            Event::Restarted(r) => self.restarted(r),
            Event::Recycle(id) => {
                if let Some(i) = self.current.iter().find(|i| i.id == id) {
                    self.log().info(&format!(
                        "instance pid {} served {} requests (scaling.max_requests); replacing it",
                        i.pid,
                        i.served()
                    ));
                }
                self.replace(id);
            }
            Event::Unhealthy { id, failures, why } => {
                if let Some(i) = self.current.iter().find(|i| i.id == id) {
                    self.log().error(&format!(
                        "instance pid {} on port {} failed its health check {failures} time(s) in a row ({why}); replacing it",
                        i.pid, i.port
                    ));
                    self.replace(id);
                }
            }
            Event::Replaced { old, new } => self.replaced(old, new),
            Event::ScaledUp(r) => self.scaled_up(r),
        }
    }

    /// One more instance when every ready one is busy; one fewer when one
    /// above the minimum has been idle for `scaling.idle_timeout`.
    fn scale(&mut self) {
        let n = &self.setup.native;
        let ready: Vec<&Arc<Instance>> = self
            .current
            .iter()
            .filter(|i| i.state() == State::Ready)
            .collect();
        if self.scale == Scale::Steady
            && !self.building()
            && !ready.is_empty()
            && (self.current.len() as u32) < n.max_instances
            && ready
                .iter()
                .all(|i| i.outstanding() >= n.queue_threshold as usize)
        {
            if self.start_one(Event::ScaledUp) {
                self.scale = Scale::Adding;
            }
            return;
        }
        if (self.current.len() as u32) > n.min_instances {
            let idle = self
                .current
                .iter()
                .position(|i| i.idle_for() >= n.idle_timeout && !self.replacing.contains(&i.id));
            if let Some(pos) = idle {
                let out = self.current.remove(pos);
                self.log().info(&format!(
                    "instance pid {} idle for {:?}: scaling down to {}",
                    out.pid,
                    n.idle_timeout,
                    self.current.len()
                ));
                self.publish();
                self.drain(vec![out], None);
            }
        }
    }

    fn scaled_up(&mut self, r: Result<Arc<Instance>, String>) {
        self.scale = Scale::Steady;
        match r {
            Ok(inst) if self.is_current(&inst) => {
                self.current.push(inst);
                self.log().info(&format!(
                    "every instance was busy: scaled up to {}",
                    self.current.len()
                ));
                self.publish();
            }
            Ok(stale) => self.drain(vec![stale], None),
            Err(why) => self.log().error(&format!("scale-up failed: {why}")),
        }
    }

    /// Builds the current files and starts `min_workers` instances of them;
    /// [`Event::Deployed`] brings the result.
    fn deploy(&mut self, why: String) {
        self.deploy = Deploy::Building {
            since: std::time::Instant::now(),
            next: None,
        };
        let version = self.next_version;
        self.next_version += 1;
        let setup = self.setup.clone();
        self.log()
            .info(&format!("building version {version} ({why})"));
        self.publish();
        self.tasks.spawn(async move {
            let result = build_and_start(&setup, version).await;
            let _ = setup.events.send(Event::Deployed { version, result });
        });
    }

    fn deployed(&mut self, version: u64, result: Result<(Artifact, Vec<Arc<Instance>>), Problem>) {
        let (since, next) = match std::mem::replace(&mut self.deploy, Deploy::Idle) {
            Deploy::Building { since, next } => (Some(since), next),
            Deploy::Idle => (None, None),
        };
        match result {
            Ok((artifact, instances)) => {
                self.metrics.builds.observe(artifact.took);
                if let Some(t) = since {
                    self.metrics.reload_seconds.set(t.elapsed().as_secs_f64());
                }
                let ports: Vec<String> = instances.iter().map(|i| i.port.to_string()).collect();
                self.log().info(&format!(
                    "version {version} serves on port(s) {} (built in {:.2?})",
                    ports.join(", "),
                    artifact.took
                ));
                let old = std::mem::replace(
                    &mut self.current,
                    instances.into_iter().filter(|i| !i.is_gone()).collect(),
                );
                let old_version = self.artifact.replace((version, artifact)).map(|a| a.0);
                self.problem = None;
                self.backoff.succeeded();
                if self.restart != Restart::Starting {
                    self.restart = Restart::Idle;
                }
                self.publish();
                self.drain(old, old_version);
                self.want_more();
                self.announce();
            }
            Err(problem) => {
                if problem.build {
                    self.metrics.build_failures.inc();
                }
                self.log().error(&format!(
                    "version {version}: {}{}",
                    problem.title,
                    if self.current.is_empty() {
                        ""
                    } else {
                        "; the previous version keeps serving"
                    }
                ));
                let first_start_failed = !problem.build && self.current.is_empty();
                let why = problem.title.clone();
                self.problem = Some(Arc::new(problem));
                if first_start_failed {
                    // Nothing serves: retry with backoff, as after a crash.
                    self.failed_start(why, None);
                }
                self.announce();
            }
        }
        if let Some(why) = next {
            self.deploy(why);
        }
    }

    /// Stops `old` instances after their requests finish; then removes
    /// their version's files.
    fn drain(&mut self, old: Vec<Arc<Instance>>, version: Option<u64>) {
        if old.is_empty() && version.is_none() {
            return;
        }
        let grace = self.setup.sup.shutdown_grace;
        let dir = version.map(|v| self.setup.versions_dir.join(format!("v{v}")));
        let (setup, instances) = (self.setup.clone(), self.metrics.instances.clone());
        self.tasks.spawn(async move {
            let mut set = JoinSet::new();
            for i in old {
                set.spawn(async move { i.drain(grace).await });
            }
            while set.join_next().await.is_some() {}
            instances.set(setup.alive() as i64);
            if let Some(d) = dir {
                let _ = std::fs::remove_dir_all(d);
            }
        });
    }

    fn exited(&mut self, id: u64, status: &str) {
        let Some(pos) = self.current.iter().position(|i| i.id == id) else {
            return; // drained, replaced, or never swapped in
        };
        let inst = self.current.remove(pos);
        self.log().error(&format!(
            "instance pid {} on port {} exited ({status})",
            inst.pid, inst.port
        ));
        // One that ran long enough starts a new count (the policy says).
        self.failed_start(
            format!("it exited ({status})"),
            Some(inst.started.elapsed()),
        );
        self.publish();
    }

    /// Counts a failure in a row (of something that ran `ran`, if it
    /// ran); schedules a restart after the backoff's delay, or gives up
    /// after `workers.max_restarts`.
    fn failed_start(&mut self, why: String, ran: Option<Duration>) {
        let delay = self.backoff.failed(ran);
        let (failures, max) = (self.backoff.failures(), self.setup.sup.max_restarts);
        if failures > max {
            let title = format!(
                "{} stopped: it failed {failures} times in a row (workers.max_restarts: {max}); last: {why}. It starts again when its files change.",
                self.setup.worker.name
            );
            self.log().error(&title);
            self.problem = Some(Arc::new(Problem {
                title,
                detail: self.setup.spawner.tail(),
                build: false,
            }));
            self.restart = Restart::GaveUp;
            self.announce();
            return;
        }
        self.log().info(&format!(
            "restarting in {delay:?} (failure {failures} of {max} allowed)"
        ));
        if self.restart != Restart::Starting {
            self.restart = Restart::At(Instant::now() + delay);
        }
    }

    /// Whether `inst` runs the build new instances start from.
    fn is_current(&self, inst: &Instance) -> bool {
        self.artifact.as_ref().map(|a| a.0) == Some(inst.version)
    }

    /// Starts one instance of the current build in the background; `done`
    /// makes the event that brings the result back. False when nothing is
    /// built yet.
    fn start_one(
        &mut self,
        done: impl FnOnce(Result<Arc<Instance>, String>) -> Event + Send + 'static,
    ) -> bool {
        let Some((version, artifact)) = self.artifact.clone() else {
            return false;
        };
        let setup = self.setup.clone();
        self.tasks.spawn(async move {
            let r = start_instance(&setup, &artifact.argv, version).await;
            let _ = setup.events.send(done(r));
        });
        true
    }

    /// Starts one instance in place of a missing one (the scheduled time
    /// came).
    fn start_missing(&mut self) {
        self.restart = Restart::Idle;
        if self.start_one(Event::Restarted) {
            self.restart = Restart::Starting;
        } else if !self.building() {
            // Nothing built yet: the first start failed; build again.
            self.deploy("restart after a failed start".into());
        }
    }

    fn restarted(&mut self, r: Result<Arc<Instance>, String>) {
        if self.restart == Restart::Starting {
            self.restart = Restart::Idle;
        }
        match r {
            Ok(inst) if self.is_current(&inst) && self.restart != Restart::GaveUp => {
                self.metrics.restarts.inc();
                self.log().info(&format!(
                    "instance pid {} on port {} is ready again",
                    inst.pid, inst.port
                ));
                self.current.push(inst);
                self.publish();
                self.want_more();
            }
            Ok(stale) => self.drain(vec![stale], None),
            Err(why) => {
                self.log().error(&format!("restart failed: {why}"));
                self.failed_start(why, None);
                self.publish();
            }
        }
    }

    /// Schedules a start when fewer than `min_workers` instances run.
    fn want_more(&mut self) {
        if (self.current.len() as u32) < self.setup.native.min_instances
            && self.restart == Restart::Idle
        {
            self.restart = Restart::At(Instant::now());
        }
    }

    /// Starts a replacement for `id` first; [`Event::Replaced`] swaps it in.
    fn replace(&mut self, id: u64) {
        if self.artifact.is_none() || self.replacing.contains(&id) {
            return;
        }
        self.replacing.insert(id);
        self.start_one(move |new| Event::Replaced { old: id, new });
    }

    fn replaced(&mut self, old: u64, new: Result<Arc<Instance>, String>) {
        self.replacing.remove(&old);
        match new {
            Ok(inst) if self.is_current(&inst) => {
                match self.current.iter().position(|i| i.id == old) {
                    Some(pos) => {
                        let out = std::mem::replace(&mut self.current[pos], inst);
                        self.publish();
                        self.drain(vec![out], None);
                    }
                    None if (self.current.len() as u32) < self.setup.native.min_instances => {
                        self.current.push(inst);
                        self.publish();
                    }
                    None => self.drain(vec![inst], None),
                }
            }
            Ok(stale) => self.drain(vec![stale], None),
            Err(why) => self.log().error(&format!(
                "replacement did not start ({why}); the old instance stays"
            )),
        }
    }

    /// One liveness round over the ready instances.
    fn check_health(&mut self) {
        let path = self.setup.native.health_path.clone();
        let limit = self.setup.native.health_failures;
        let timeout = self.setup.sup.health_check_timeout.unwrap_or_else(|| {
            self.setup
                .native
                .health_interval
                .min(Duration::from_secs(5))
        });
        for inst in self.current.iter().filter(|i| i.state() == State::Ready) {
            if self.replacing.contains(&inst.id) {
                continue;
            }
            let inst = inst.clone();
            let path = path.clone();
            let events = self.setup.events.clone();
            let failed = self.metrics.health_failures.clone();
            self.tasks.spawn(async move {
                if let Err((failures, why)) = inst.check(&path, timeout).await {
                    failed.inc();
                    if failures >= limit && !inst.is_gone() {
                        let _ = events.send(Event::Unhealthy {
                            id: inst.id,
                            failures,
                            why,
                        });
                    }
                }
            });
        }
    }
}

/// Builds `version` and starts `min_workers` instances of it, all ready.
async fn build_and_start(
    ctx: &Arc<Setup>,
    version: u64,
) -> Result<(Artifact, Vec<Arc<Instance>>), Problem> {
    let dir = ctx.versions_dir.join(format!("v{version}"));
    let artifact = build::build(&ctx.worker, &ctx.native, ctx.mode, &dir, &ctx.spawner.log)
        .await
        .map_err(|f| Problem {
            title: f.summary,
            detail: f.output,
            build: true,
        })?;
    let mut starts = JoinSet::new();
    for _ in 0..ctx.native.min_instances {
        let ctx = ctx.clone();
        let argv = artifact.argv.clone();
        starts.spawn(async move { start_instance(&ctx, &argv, version).await });
    }
    let mut up = Vec::new();
    let mut failure = None;
    while let Some(r) = starts.join_next().await {
        match r {
            Ok(Ok(i)) => up.push(i),
            Ok(Err(e)) => failure = Some(e),
            Err(e) => failure = Some(format!("start task failed: {e}")),
        }
    }
    if let Some(why) = failure {
        for i in up {
            i.stop(ctx.sup.shutdown_grace).await;
        }
        let _ = std::fs::remove_dir_all(&dir);
        return Err(Problem {
            title: format!("version {version} built but did not start: {why}"),
            detail: ctx.spawner.tail(),
            build: false,
        });
    }
    Ok((artifact, up))
}

/// Starts one instance on a port from the range and waits for its health
/// check; an instance that does not get ready is stopped.
async fn start_instance(
    ctx: &Arc<Setup>,
    argv: &[String],
    version: u64,
) -> Result<Arc<Instance>, String> {
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    let port = ctx.ports.acquire(ip).ok_or_else(|| {
        let (a, b) = ctx.ports.range();
        format!("no free port in workers.port_range_start..end ({a}-{b})")
    })?;
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let ctx2 = ctx.clone();
    let spawned = ctx.spawner.spawn(argv, id, version, port, move |status| {
        ctx2.ports.release(port);
        ctx2.all
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        let _ = ctx2.events.send(Event::Exited { id, status });
    });
    let inst = match spawned {
        Ok(i) => i,
        Err(e) => {
            ctx.ports.release(port);
            return Err(format!("cannot run {}: {e}", argv[0]));
        }
    };
    ctx.all
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, inst.clone());
    let wait = ctx.sup.health_check_wait;
    let path = &ctx.native.health_path;
    let probe = ctx
        .sup
        .health_check_timeout
        .unwrap_or(Duration::from_secs(1));
    if inst.wait_ready(path, wait, probe).await {
        return Ok(inst);
    }
    let why = if inst.is_gone() {
        format!("pid {} exited before it answered {path}", inst.pid)
    } else {
        format!(
            "pid {} did not answer GET {path} with 200 on port {port} within {wait:?} (workers.health_check_wait_timeout_ms)",
            inst.pid
        )
    };
    inst.stop(ctx.sup.shutdown_grace).await;
    Err(why)
}
