//! PHP pool metrics, sampled at scrape time from each pool's own account:
//! php-fpm's status page (`?json`) plus the process events its log
//! reports, or the state of TQServer's php-cgi pool.

use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::php::upstream::Upstream;

/// One pool at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolSample {
    /// Worker name.
    pub worker: String,
    /// `fpm` or `cgi`.
    pub backend: &'static str,
    /// The pool answered (php-fpm's status page was readable).
    pub up: bool,
    /// Processes waiting for a request.
    pub idle: u64,
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
}

/// php-fpm's `?json` status fields this module reads.
#[derive(serde::Deserialize)]
struct FpmJson {
    #[serde(rename = "accepted conn")]
    accepted: u64,
    #[serde(rename = "listen queue")]
    listen_queue: u64,
    #[serde(rename = "max listen queue")]
    max_listen_queue: u64,
    #[serde(rename = "max active processes")]
    max_active: u64,
    #[serde(rename = "max children reached")]
    max_children_reached: u64,
    #[serde(rename = "slow requests")]
    slow_requests: u64,
    #[serde(default)]
    processes: Vec<FpmProcess>,
}

#[derive(serde::Deserialize)]
struct FpmProcess {
    state: String,
}

/// Idle, active and total processes from php-fpm's per-process list
/// (`?json&full`). php-fpm's own `active processes` counter drifts upward
/// when its clients keep FastCGI connections open, as TQServer's pooled
/// client does (it counted 60 active of 2 processes in a test); the
/// per-process states do not. A process `Reading headers` is waiting on a
/// kept-alive connection of TQServer's for the next request: idle, from
/// TQServer's side.
pub fn fpm_process_counts<'a>(states: impl Iterator<Item = &'a str>) -> (u64, u64, u64) {
    let (mut idle, mut total) = (0, 0);
    for s in states {
        total += 1;
        if s == "Idle" || s == "Reading headers" {
            idle += 1;
        }
    }
    (idle, total - idle, total)
}

/// Samples one pool. php-fpm's status request goes through the pool
/// itself, so it counts as one accepted request there (as with any
/// php-fpm exporter) and waits behind a full pool.
pub async fn sample(up: &Upstream) -> PoolSample {
    let worker = up.worker().name.clone();
    match up {
        Upstream::Cgi(c) => {
            let s = c.pool.snapshot();
            PoolSample {
                worker,
                backend: "cgi",
                up: s.failed.is_none(),
                idle: s.idle as u64,
                active: s.active as u64,
                total: s.total as u64,
                max_active: s.max_active as u64,
                listen_queue: s.listen_queue as u64,
                max_listen_queue: s.max_listen_queue as u64,
                accepted: s.accepted,
                max_children_reached: s.max_children_reached,
                slow_requests: s.slow_requests,
                spawned: s.spawned,
                recycled: s.recycled,
                timed_out: s.timed_out,
                crashed: s.crashed,
            }
        }
        Upstream::Fpm(b) => {
            let e = &b.events;
            let mut s = PoolSample {
                worker,
                backend: "fpm",
                spawned: e.spawned.load(Relaxed),
                recycled: e.recycled.load(Relaxed),
                timed_out: e.timed_out.load(Relaxed),
                crashed: e.crashed.load(Relaxed),
                ..PoolSample::default()
            };
            match b.full_status_json().await.and_then(|body| {
                serde_json::from_slice::<FpmJson>(&body).map_err(|e| e.to_string())
            }) {
                Ok(j) => {
                    s.up = true;
                    (s.idle, s.active, s.total) =
                        fpm_process_counts(j.processes.iter().map(|p| p.state.as_str()));
                    s.max_active = j.max_active;
                    s.listen_queue = j.listen_queue;
                    s.max_listen_queue = j.max_listen_queue;
                    s.accepted = j.accepted;
                    s.max_children_reached = j.max_children_reached;
                    s.slow_requests = j.slow_requests;
                }
                Err(why) => {
                    tracing::debug!(worker = %s.worker, "php-fpm status for metrics: {why}")
                }
            }
            s
        }
    }
}

/// Encodes the samples taken for the current scrape.
#[derive(Debug, Default)]
pub struct PoolsCollector {
    samples: Mutex<Vec<PoolSample>>,
}

impl PoolsCollector {
    /// Puts the samples of this scrape in place.
    pub fn set(&self, samples: Vec<PoolSample>) {
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

type Field = fn(&PoolSample) -> u64;

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
        let samples = self
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if samples.is_empty() {
            return Ok(());
        }
        let labels = |s: &PoolSample| PoolLabels {
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
                for (state, v) in [("idle", s.idle), ("active", s.active)] {
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
