//! The dashboard: one HTML page embedded in the binary (no CDN, no
//! build step) that polls `/api/dashboard` every second and draws its
//! charts on canvases; and the JSON it polls.

use serde_json::{Value, json};

use super::{Admin, Entry};

/// The page.
pub const PAGE: &str = include_str!("dashboard.html");

/// Everything the page shows, cumulative: the page turns counters into
/// rates and histogram buckets into percentiles between two polls.
pub async fn stats(admin: &Admin) -> Value {
    let usage = crate::metrics::process::usage();
    let ready = admin.readiness();
    let mut workers = Vec::new();
    for (w, (_, r)) in admin.workers().iter().zip(ready) {
        workers.push(worker(w, r).await);
    }
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "draining": admin.draining.load(std::sync::atomic::Ordering::Acquire),
        "process": {
            "rss_bytes": usage.rss_bytes,
            "open_fds": usage.open_fds,
            "cpu_seconds": usage.cpu_seconds,
        },
        "workers": workers,
        "tls": admin.certs().map(|c| c.status()),
    })
}

async fn worker(w: &Entry, ready: Result<(), String>) -> Value {
    let (requests, errors) = w.metrics.totals();
    let latency = w.metrics.duration.snapshot();
    let status = w.worker.status().await;
    let processes: Vec<Value> = status
        .processes
        .iter()
        .map(|p| {
            let mut v = json!({
                "id": p.label,
                "state": p.state,
                "requests": p.requests,
                "uptime_seconds": p.uptime_seconds,
            });
            if let Some(a) = p.active {
                v["active"] = a.into();
            }
            v
        })
        .collect();
    let pool = json!({
        "total": status.total,
        "active": status.active,
        "idle": status.idle,
        "queue": status.listen_queue,
    });
    let upgraded = status
        .upgraded
        .map(|u| json!({ "open": u.open, "bytes_up": u.bytes_up, "bytes_down": u.bytes_down }));
    let scaling = status
        .scaling
        .map(|(min, max)| json!({ "min": min, "max": max }));
    json!({
        "name": w.name,
        "route": w.route,
        "kind": w.kind,
        "backend": status.backend,
        "ready": ready.is_ok(),
        "why": ready.err(),
        "requests": requests,
        "errors": errors,
        "in_flight": w.metrics.in_flight(),
        "bytes_out": w.metrics.bytes_out(),
        "latency": { "bounds": latency.bounds, "counts": latency.counts },
        "pool": pool,
        "processes": processes,
        "upgraded": upgraded,
        "scaling": scaling,
    })
}
