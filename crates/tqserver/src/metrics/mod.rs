//! Prometheus metrics: one registry for the whole server, per-route
//! request metrics recorded on the request path, native worker metrics
//! updated by their supervisors, and PHP pool and process metrics read at
//! scrape time. Every name is listed in docs/metrics.md.
//!
//! - [`latency`]: the duration histogram (atomic buckets the dashboard
//!   reads too).
//! - [`pools`]: PHP pool gauges and counters, from php-fpm's status page or
//!   TQServer's own php-cgi pool.
//! - [`process`]: the `process_*` metrics of tqserver itself, from /proc.
//! - [`tls`]: certificates, handshakes, ACME attempts, request protocols.

pub mod latency;
pub mod pools;
pub mod process;
pub mod tls;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

pub use latency::Latency;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabel {
    worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    worker: String,
    method: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    worker: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerInfo {
    worker: String,
    route: String,
    r#type: String,
    backend: String,
}

impl WorkerInfo {
    fn of(w: &crate::config::WorkerConfig) -> Self {
        Self {
            worker: w.name.clone(),
            route: w.route.clone(),
            r#type: w.type_name().to_string(),
            backend: match &w.native {
                Some(_) => "http".to_string(),
                None => w.php.backend.as_str().to_string(),
            },
        }
    }
}

/// Methods with a label of their own; anything else counts as `OTHER`
/// (an unbounded label would let clients grow the scrape without end).
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER",
];
/// Status classes.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Why an upstream (PHP or a native instance) gave no good answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// Could not connect (process gone, port closed, pool exhausted).
    Connect,
    /// No answer in time.
    Timeout,
    /// The connection was lost mid-way.
    Reset,
    /// The answer was not valid FastCGI / HTTP.
    BadResponse,
}

impl UpstreamError {
    fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Reset => "reset",
            Self::BadResponse => "bad_response",
        }
    }
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<WorkerLabel, Latency>,
    in_flight: Family<WorkerLabel, Gauge>,
    bytes_in: Family<WorkerLabel, Counter>,
    bytes_out: Family<WorkerLabel, Counter>,
    upstream_errors: Family<ErrorLabels, Counter>,
    unrouted: Counter,
    info: Family<WorkerInfo, Gauge>,
    native: NativeFamilies,
    config_reloads: Family<ReloadLabels, Counter>,
    config_ok: Gauge,
    active: Arc<process::ActiveCollector>,
    egress: EgressMetrics,
    /// PHP pools, filled just before each scrape.
    pub pools: Arc<pools::PoolsCollector>,
    /// HTTPS: certificates, handshakes, ACME, request protocols.
    pub tls: tls::TlsMetrics,
}

/// `result` of a configuration reload.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

struct NativeFamilies {
    instances: Family<WorkerLabel, Gauge>,
    ready: Family<WorkerLabel, Gauge>,
    restarts: Family<WorkerLabel, Counter>,
    builds: Family<WorkerLabel, Latency, fn() -> Latency>,
    build_failures: Family<WorkerLabel, Counter>,
    health_failures: Family<WorkerLabel, Counter>,
    reload_seconds: Family<WorkerLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    upgraded: Family<WorkerLabel, Gauge>,
    upgraded_bytes: Family<DirectionLabels, Counter>,
}

/// `worker` and `direction` (`up`: client → worker; `down`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    worker: String,
    direction: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family (they appear in the scrape once a worker uses
    /// them).
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<WorkerLabel, Latency>::default();
        let in_flight = Family::<WorkerLabel, Gauge>::default();
        let bytes_in = Family::<WorkerLabel, Counter>::default();
        let bytes_out = Family::<WorkerLabel, Counter>::default();
        let upstream_errors = Family::<ErrorLabels, Counter>::default();
        let unrouted = Counter::default();
        let info = Family::<WorkerInfo, Gauge>::default();
        registry.register(
            "tqserver_http_requests",
            "HTTP requests answered, by worker, method and status class",
            requests.clone(),
        );
        registry.register(
            "tqserver_http_request_duration_seconds",
            "Time from the request's arrival to the last byte of its response",
            duration.clone(),
        );
        registry.register(
            "tqserver_http_requests_in_flight",
            "Requests received and not yet fully answered",
            in_flight.clone(),
        );
        registry.register(
            "tqserver_http_request_body_bytes",
            "Request body bytes read from clients",
            bytes_in.clone(),
        );
        registry.register(
            "tqserver_http_response_body_bytes",
            "Response body bytes sent to clients",
            bytes_out.clone(),
        );
        registry.register(
            "tqserver_upstream_errors",
            "Requests the worker's processes gave no good answer to, by kind",
            upstream_errors.clone(),
        );
        registry.register(
            "tqserver_http_unrouted_requests",
            "Requests no worker's path matched (404)",
            unrouted.clone(),
        );
        registry.register(
            "tqserver_worker_info",
            "One series per enabled worker: its route, type and backend (value 1)",
            info.clone(),
        );
        let native = NativeFamilies {
            instances: Family::default(),
            ready: Family::default(),
            restarts: Family::default(),
            builds: Family::new_with_constructor(Latency::builds as fn() -> Latency),
            build_failures: Family::default(),
            health_failures: Family::default(),
            reload_seconds: Family::default(),
            upgraded: Family::default(),
            upgraded_bytes: Family::default(),
        };
        let n = &native;
        registry.register(
            "tqserver_native_instances",
            "Processes of a native worker, in any state",
            n.instances.clone(),
        );
        registry.register(
            "tqserver_native_ready_instances",
            "Processes of a native worker taking traffic",
            n.ready.clone(),
        );
        registry.register(
            "tqserver_native_restarts",
            "Native worker processes started again after exiting unexpectedly",
            n.restarts.clone(),
        );
        registry.register(
            "tqserver_native_build_duration_seconds",
            "Builds of a native worker (cargo, go build, build command)",
            n.builds.clone(),
        );
        registry.register(
            "tqserver_native_build_failures",
            "Builds of a native worker that failed",
            n.build_failures.clone(),
        );
        registry.register(
            "tqserver_native_health_check_failures",
            "Health checks of a ready native instance that failed",
            n.health_failures.clone(),
        );
        registry.register(
            "tqserver_native_upgraded_connections",
            "Upgraded (WebSocket) connections open through a native worker",
            n.upgraded.clone(),
        );
        registry.register(
            "tqserver_native_upgraded_bytes",
            "Bytes copied over upgraded connections, up (client to worker) or down",
            n.upgraded_bytes.clone(),
        );
        registry.register(
            "tqserver_native_last_reload_seconds",
            "How long the last hot reload took, from the change to the swap",
            n.reload_seconds.clone(),
        );
        let egress = EgressMetrics::default();
        // The families are in every scrape, at zero until a worker calls
        // out (a dashboard can graph them before the first call).
        egress.zero("unknown");
        registry.register(
            "tqserver_egress_connections",
            "Outgoing connections of workers through the SOCKS5 proxy, by worker (\"unknown\": not a worker's)",
            egress.connections.clone(),
        );
        registry.register(
            "tqserver_egress_bytes",
            "Bytes through the SOCKS5 proxy, up (worker to destination) or down",
            egress.bytes.clone(),
        );
        registry.register(
            "tqserver_egress_errors",
            "SOCKS5 connections that failed: refused, unreachable, malformed",
            egress.errors.clone(),
        );
        let config_reloads = Family::<ReloadLabels, Counter>::default();
        for result in ["applied", "refused"] {
            // Both series from the start, at 0, so increase() sees the first.
            let _ = config_reloads.get_or_create(&ReloadLabels { result });
        }
        let config_ok = Gauge::default();
        config_ok.set(1);
        registry.register(
            "tqserver_config_reloads",
            "Configuration reloads (file change, SIGHUP, tqserver reload), applied or refused as invalid",
            config_reloads.clone(),
        );
        registry.register(
            "tqserver_config_last_reload_successful",
            "1 when the last configuration reload was applied (or none happened), 0 when it was refused",
            config_ok.clone(),
        );
        let pools = Arc::new(pools::PoolsCollector::default());
        registry.register_collector(Box::new(pools.clone()));
        let tls = tls::TlsMetrics::register(&mut registry);
        registry.register_collector(Box::new(process::ProcessCollector::new()));
        let active = Arc::new(process::ActiveCollector::default());
        registry.register_collector(Box::new(active.clone()));
        registry.register(
            "tqserver_build",
            "The running TQServer's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Self {
            registry,
            requests,
            duration,
            in_flight,
            bytes_in,
            bytes_out,
            upstream_errors,
            unrouted,
            info,
            native,
            config_reloads,
            config_ok,
            active,
            egress,
            pools,
            tls,
        }
    }

    /// Counts a configuration reload: applied, or refused as invalid.
    pub fn config_reloaded(&self, applied: bool) {
        let result = if applied { "applied" } else { "refused" };
        self.config_reloads
            .get_or_create(&ReloadLabels { result })
            .inc();
        self.config_ok.set(i64::from(applied));
    }

    /// The handles one route records into.
    pub fn route(&self, worker: &crate::config::WorkerConfig) -> Arc<RouteMetrics> {
        let label = WorkerLabel {
            worker: worker.name.clone(),
        };
        self.worker_info(worker);
        let in_flight = self.in_flight.get_or_create_owned(&label);
        self.active.add(&worker.name, &in_flight);
        Arc::new(RouteMetrics {
            worker: worker.name.clone(),
            requests: self.requests.clone(),
            by_method: Default::default(),
            duration: self.duration.get_or_create_owned(&label),
            in_flight,
            bytes_in: self.bytes_in.get_or_create_owned(&label),
            bytes_out: self.bytes_out.get_or_create_owned(&label),
            upstream_errors: self.upstream_errors.clone(),
        })
    }

    /// What the SOCKS5 egress proxy records into.
    pub fn egress(&self) -> EgressMetrics {
        self.egress.clone()
    }

    /// The handles a native worker's supervisor updates.
    pub fn native(&self, worker: &str) -> NativeMetrics {
        let l = WorkerLabel {
            worker: worker.to_string(),
        };
        let n = &self.native;
        NativeMetrics {
            instances: n.instances.get_or_create_owned(&l),
            ready: n.ready.get_or_create_owned(&l),
            restarts: n.restarts.get_or_create_owned(&l),
            builds: n.builds.get_or_create_owned(&l),
            build_failures: n.build_failures.get_or_create_owned(&l),
            health_failures: n.health_failures.get_or_create_owned(&l),
            reload_seconds: n.reload_seconds.get_or_create_owned(&l),
            upgraded: n.upgraded.get_or_create_owned(&l),
            upgraded_up: n.upgraded_bytes.get_or_create_owned(&DirectionLabels {
                worker: worker.to_string(),
                direction: "up",
            }),
            upgraded_down: n.upgraded_bytes.get_or_create_owned(&DirectionLabels {
                worker: worker.to_string(),
                direction: "down",
            }),
        }
    }

    /// A worker's `tqserver_worker_info` series goes (removed by a reload,
    /// or replaced by one with another route or type). Its counters stay:
    /// Prometheus counters never go back.
    pub fn forget(&self, worker: &crate::config::WorkerConfig) {
        self.info.remove(&WorkerInfo::of(worker));
    }

    /// `tqserver_worker_info` of `worker` as it runs now (its route and
    /// type).
    pub fn worker_info(&self, worker: &crate::config::WorkerConfig) {
        self.info.get_or_create(&WorkerInfo::of(worker)).set(1);
    }

    /// Counts a request no route matched.
    pub fn unrouted(&self) {
        self.unrouted.inc();
    }

    /// The Prometheus text exposition (format 0.0.4), or OpenMetrics.
    pub fn encode(&self, openmetrics: bool) -> String {
        let mut out = String::with_capacity(16 << 10);
        let r = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        };
        // Writing into a String cannot fail; an encoder error would be a
        // bug in a label value, which must not take the scrape down.
        if let Err(e) = r {
            tracing::error!("metrics encoding failed: {e}");
        }
        out
    }
}

/// One route's request metrics, shared by its requests.
pub struct RouteMetrics {
    /// The worker's name (the `worker` label).
    pub worker: String,
    requests: Family<RequestLabels, Counter>,
    /// Counters by method and class, looked up in the family once each.
    by_method: [[OnceLock<Counter>; 5]; 8],
    /// Request duration.
    pub duration: Latency,
    in_flight: Gauge,
    /// Request body bytes.
    pub bytes_in: Counter,
    bytes_out: Counter,
    upstream_errors: Family<ErrorLabels, Counter>,
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetrics")
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

impl RouteMetrics {
    /// A request arrived.
    pub fn begin(&self) {
        self.in_flight.inc();
    }

    /// A request's response ended (or the client went away).
    pub fn end(&self, method: &http::Method, status: u16, took: Duration, body_bytes: u64) {
        self.in_flight.dec();
        let m = METHODS
            .iter()
            .position(|m| *m == method.as_str())
            .unwrap_or(METHODS.len() - 1);
        let c = usize::from((status / 100).clamp(1, 5) - 1);
        self.by_method[m][c]
            .get_or_init(|| {
                self.requests.get_or_create_owned(&RequestLabels {
                    worker: self.worker.clone(),
                    method: METHODS[m],
                    status: CLASSES[c],
                })
            })
            .inc();
        self.duration.observe(took);
        self.bytes_out.inc_by(body_bytes);
    }

    /// The upstream failed this way.
    pub fn upstream_error(&self, kind: UpstreamError) {
        self.upstream_errors
            .get_or_create(&ErrorLabels {
                worker: self.worker.clone(),
                kind: kind.as_str(),
            })
            .inc();
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    /// Requests answered so far, and those answered with 5xx.
    pub fn totals(&self) -> (u64, u64) {
        let mut all = 0;
        let mut errors = 0;
        for row in &self.by_method {
            for (c, cell) in row.iter().enumerate() {
                if let Some(n) = cell.get() {
                    all += n.get();
                    if c == 4 {
                        errors += n.get();
                    }
                }
            }
        }
        (all, errors)
    }

    /// Response body bytes so far.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.get()
    }
}

/// What the SOCKS5 egress proxy records, by worker.
#[derive(Clone, Debug, Default)]
pub struct EgressMetrics {
    connections: Family<WorkerLabel, Counter>,
    bytes: Family<DirectionLabels, Counter>,
    errors: Family<WorkerLabel, Counter>,
}

impl EgressMetrics {
    /// `worker`'s series: connections, errors, bytes up and down.
    fn series(&self, worker: &str) -> [Counter; 4] {
        let w = WorkerLabel {
            worker: worker.to_string(),
        };
        let bytes = |direction| {
            self.bytes.get_or_create_owned(&DirectionLabels {
                worker: worker.to_string(),
                direction,
            })
        };
        [
            self.connections.get_or_create_owned(&w),
            self.errors.get_or_create_owned(&w),
            bytes("up"),
            bytes("down"),
        ]
    }

    /// `worker`'s series, at zero.
    fn zero(&self, worker: &str) {
        let _ = self.series(worker);
    }

    /// One connection of `worker` ended: `up` and `down` bytes; `failed`
    /// when it did not get through.
    pub fn record(&self, worker: &str, up: u64, down: u64, failed: bool) {
        let [connections, errors, bytes_up, bytes_down] = self.series(worker);
        connections.inc();
        if failed {
            errors.inc();
        }
        bytes_up.inc_by(up);
        bytes_down.inc_by(down);
    }
}

/// What a native worker's supervisor records.
#[derive(Clone, Debug)]
pub struct NativeMetrics {
    /// Instances in any state.
    pub instances: Gauge,
    /// Instances taking traffic.
    pub ready: Gauge,
    /// Unexpected exits followed by a new start.
    pub restarts: Counter,
    /// Build durations.
    pub builds: Latency,
    /// Failed builds.
    pub build_failures: Counter,
    /// Failed liveness checks.
    pub health_failures: Counter,
    /// Seconds the last reload took.
    pub reload_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Upgraded (WebSocket) connections open.
    pub upgraded: Gauge,
    /// Bytes from clients over upgraded connections.
    pub upgraded_up: Counter,
    /// Bytes to clients over upgraded connections.
    pub upgraded_down: Counter,
}

impl Default for NativeMetrics {
    /// Handles that no registry reads (a supervisor started without one).
    fn default() -> Self {
        Self {
            instances: Gauge::default(),
            ready: Gauge::default(),
            restarts: Counter::default(),
            builds: Latency::builds(),
            build_failures: Counter::default(),
            health_failures: Counter::default(),
            reload_seconds: Gauge::default(),
            upgraded: Gauge::default(),
            upgraded_up: Counter::default(),
            upgraded_down: Counter::default(),
        }
    }
}
