//! PHP pool metrics, from each pool's own account taken at scrape time
//! ([`PoolStatus`], which the workers layer builds once per look and the
//! dashboard reads too): php-fpm's status page plus the process events
//! its log reports, or the state of TQServer's php-cgi pool.

use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// A worker's processes at one moment, whatever runs them: built once by
/// the workers layer, read by `/metrics`, the dashboard and readiness.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolStatus {
    /// Worker name.
    pub worker: String,
    /// `fpm`, `cgi` (PHP pools, in the `tqserver_php_*` metrics) or
    /// `http` (native worker instances).
    pub backend: &'static str,
    /// The pool answered (php-fpm's status page was readable).
    pub up: bool,
    /// Processes waiting for a request (`None`: the kind does not say).
    pub idle: Option<u64>,
    /// Processes running a request.
    pub active: u64,
    /// Processes in total.
    pub total: u64,
    /// Most processes active at once since the pool started.
    pub max_active: u64,
    /// Requests waiting for a process.
    pub listen_queue: u64,
    /// Most requests waiting at once.
    pub max_listen_queue: u64,
    /// Requests the pool took.
    pub accepted: u64,
    /// Times the pool was at its process limit with a request waiting.
    pub max_children_reached: u64,
    /// Requests over the slow threshold.
    pub slow_requests: u64,
    /// Processes started.
    pub spawned: u64,
    /// Processes retired after `max_requests`.
    pub recycled: u64,
    /// Processes killed at `request_timeout`.
    pub timed_out: u64,
    /// Processes that died unexpectedly.
    pub crashed: u64,
    /// Every process, for the dashboard.
    pub processes: Vec<ProcessStatus>,
    /// Upgraded (WebSocket) connections, for workers that take them.
    pub upgraded: Option<UpgradedStatus>,
    /// A native worker that scales: `scaling.min_workers` and
    /// `max_workers`, for the dashboard.
    pub scaling: Option<(u32, u32)>,
}

/// A native worker's upgraded connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpgradedStatus {
    /// Open now.
    pub open: u64,
    /// Bytes from clients to the worker, since start.
    pub bytes_up: u64,
    /// Bytes from the worker to clients, since start.
    pub bytes_down: u64,
}

impl PoolStatus {
    /// A PHP pool (what the `tqserver_php_*` families describe).
    pub fn is_php(&self) -> bool {
        matches!(self.backend, "fpm" | "cgi" | "embed")
    }
}

/// One process of a pool.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessStatus {
    /// How the dashboard names it (`pid 12`, `pid 12 · port 9001`).
    pub label: String,
    /// Its state in its backend's words (`Idle`, `Running`, `Ready`…).
    pub state: String,
    /// Requests it has served.
    pub requests: u64,
    /// Requests in progress now, when the backend says.
    pub active: Option<u64>,
    /// Seconds since it started.
    pub uptime_seconds: u64,
}

/// Encodes the samples taken for the current scrape.
#[derive(Debug, Default)]
pub struct PoolsCollector {
    samples: Mutex<Vec<PoolStatus>>,
}

impl PoolsCollector {
    /// Puts the samples of this scrape in place.
    pub fn set(&self, samples: Vec<PoolStatus>) {
        *self.samples.lock().unwrap_or_else(|e| e.into_inner()) = samples;
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct PoolLabels {
    worker: String,
    backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct StateLabels {
    worker: String,
    backend: &'static str,
    state: &'static str,
}

type Field = fn(&PoolStatus) -> u64;

const GAUGES: &[(&str, &str, Field)] = &[
    (
        "tqserver_php_up",
        "1 if the pool answered (php-fpm's status page was readable)",
        |s| u64::from(s.up),
    ),
    (
        "tqserver_php_processes_max_active",
        "Most processes active at once since the pool started",
        |s| s.max_active,
    ),
    (
        "tqserver_php_listen_queue",
        "Requests waiting for a free process",
        |s| s.listen_queue,
    ),
    (
        "tqserver_php_listen_queue_max",
        "Most requests waiting at once since the pool started",
        |s| s.max_listen_queue,
    ),
];

const COUNTERS: &[(&str, &str, Field)] = &[
    (
        "tqserver_php_accepted_requests",
        "Requests the pool took",
        |s| s.accepted,
    ),
    (
        "tqserver_php_max_children_reached",
        "Times the pool was at its process limit with a request waiting",
        |s| s.max_children_reached,
    ),
    (
        "tqserver_php_slow_requests",
        "Requests slower than the slow-log threshold",
        |s| s.slow_requests,
    ),
    (
        "tqserver_php_processes_spawned",
        "PHP processes started",
        |s| s.spawned,
    ),
    (
        "tqserver_php_processes_recycled",
        "PHP processes retired after max_requests",
        |s| s.recycled,
    ),
    (
        "tqserver_php_processes_timed_out",
        "PHP processes killed at request_timeout",
        |s| s.timed_out,
    ),
    (
        "tqserver_php_processes_crashed",
        "PHP processes that died unexpectedly",
        |s| s.crashed,
    ),
];

impl Collector for PoolsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let samples: Vec<PoolStatus> = self
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|s| s.is_php())
            .cloned()
            .collect();
        if samples.is_empty() {
            return Ok(());
        }
        let labels = |s: &PoolStatus| PoolLabels {
            worker: s.worker.clone(),
            backend: s.backend,
        };
        {
            let mut m = encoder.encode_descriptor(
                "tqserver_php_processes",
                "PHP processes by state: idle (waiting for a request) or active",
                None,
                MetricType::Gauge,
            )?;
            for s in &samples {
                for (state, v) in [("idle", s.idle.unwrap_or(0)), ("active", s.active)] {
                    let l = StateLabels {
                        worker: s.worker.clone(),
                        backend: s.backend,
                        state,
                    };
                    ConstGauge::new(v as i64).encode(m.encode_family(&l)?)?;
                }
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "tqserver_php_pool_processes",
                "PHP processes in the pool (idle plus active)",
                None,
                MetricType::Gauge,
            )?;
            for s in &samples {
                ConstGauge::new(s.total as i64).encode(m.encode_family(&labels(s))?)?;
            }
        }
        for (name, help, f) in GAUGES {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for s in &samples {
                ConstGauge::new(f(s) as i64).encode(m.encode_family(&labels(s))?)?;
            }
        }
        for (name, help, f) in COUNTERS {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for s in &samples {
                ConstCounter::new(f(s)).encode(m.encode_family(&labels(s))?)?;
            }
        }
        Ok(())
    }
}
