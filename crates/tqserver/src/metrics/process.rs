//! The standard `process_*` metrics of tqserver itself (the names every
//! Prometheus client library uses, so existing dashboards show them), read
//! from /proc at each scrape, plus `tqserver_uptime_seconds`.

use std::time::{Instant, SystemTime};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second of /proc/self/stat's CPU times (`getconf
/// CLK_TCK`, 100 on every Linux architecture TQServer builds for).
const TICKS_PER_SECOND: f64 = 100.0;
/// Page size for /proc/self/statm (4 KiB on x86-64 and aarch64 defaults).
const PAGE_SIZE: u64 = 4096;

/// Reads /proc/self when scraped.
#[derive(Debug)]
pub struct ProcessCollector {
    started: Instant,
    start_time: SystemTime,
}

impl ProcessCollector {
    /// Starts the uptime clock.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            start_time: SystemTime::now(),
        }
    }
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self::new()
    }
}

/// What /proc says about this process.
#[derive(Debug, Default, Clone, Copy)]
pub struct Usage {
    /// User plus system CPU seconds.
    pub cpu_seconds: f64,
    /// Resident memory.
    pub rss_bytes: u64,
    /// Virtual memory.
    pub virtual_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on file descriptors.
    pub max_fds: u64,
}

/// Reads this process's usage; fields /proc does not give stay 0.
pub fn usage() -> Usage {
    let mut u = Usage::default();
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name, which is in parentheses and may
        // contain spaces: utime and stime are fields 14 and 15 overall.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            u.cpu_seconds = (tick(11) + tick(12)) as f64 / TICKS_PER_SECOND;
        }
    }
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        let mut f = statm
            .split_whitespace()
            .map(|v| v.parse::<u64>().unwrap_or(0));
        u.virtual_bytes = f.next().unwrap_or(0) * PAGE_SIZE;
        u.rss_bytes = f.next().unwrap_or(0) * PAGE_SIZE;
    }
    if let Ok(d) = std::fs::read_dir("/proc/self/fd") {
        u.open_fds = d.count() as u64;
    }
    if let Ok((soft, _)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        u.max_fds = soft;
    }
    u
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let u = usage();
        let start = self
            .start_time
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let counter = |e: &mut DescriptorEncoder, name: &str, help: &str, v: f64| {
            let m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(v).encode(m)
        };
        let gauge = |e: &mut DescriptorEncoder, name: &str, help: &str, v: f64| {
            let m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(v).encode(m)
        };
        counter(
            &mut encoder,
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            u.cpu_seconds,
        )?;
        gauge(
            &mut encoder,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            u.rss_bytes as f64,
        )?;
        gauge(
            &mut encoder,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            u.virtual_bytes as f64,
        )?;
        gauge(
            &mut encoder,
            "process_open_fds",
            "Number of open file descriptors",
            u.open_fds as f64,
        )?;
        gauge(
            &mut encoder,
            "process_max_fds",
            "Maximum number of open file descriptors",
            u.max_fds as f64,
        )?;
        gauge(
            &mut encoder,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            start,
        )?;
        let up = self.started.elapsed().as_secs_f64();
        gauge(
            &mut encoder,
            "tqserver_uptime_seconds",
            "Seconds since tqserver started",
            up,
        )?;
        // The Go TQServer's names, which its metrics dashboard reads:
        // the same values as tqserver_uptime_seconds and
        // process_resident_memory_bytes.
        gauge(
            &mut encoder,
            "tqserver_process_uptime_seconds",
            "Seconds since tqserver started (the Go TQServer's name for tqserver_uptime_seconds)",
            up,
        )?;
        gauge(
            &mut encoder,
            "tqserver_process_memory_bytes",
            "Resident memory size in bytes (the Go TQServer's name for process_resident_memory_bytes)",
            u.rss_bytes as f64,
        )
    }
}

/// `tqserver_active_requests`: every route's requests in flight added up
/// at each scrape (the Go TQServer's unlabelled gauge; the per-worker
/// values are tqserver_http_requests_in_flight).
#[derive(Debug, Default)]
pub struct ActiveCollector {
    gauges: std::sync::Mutex<
        std::collections::HashMap<String, prometheus_client::metrics::gauge::Gauge>,
    >,
}

impl ActiveCollector {
    /// Counts `worker`'s in-flight gauge in (once per worker).
    pub fn add(&self, worker: &str, g: &prometheus_client::metrics::gauge::Gauge) {
        self.gauges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(worker.to_string())
            .or_insert_with(|| g.clone());
    }
}

impl Collector for ActiveCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sum: i64 = self
            .gauges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(prometheus_client::metrics::gauge::Gauge::get)
            .sum();
        let m = encoder.encode_descriptor(
            "tqserver_active_requests",
            "Requests in flight, every worker together (the Go TQServer's name)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(sum as f64).encode(m)
    }
}
