//! The dashboard: one HTML page embedded in the binary (no CDN, no
//! build step) that polls `/api/dashboard` every second and draws its
//! charts on canvases; and the JSON it polls.

use serde_json::{Value, json};

use super::{Admin, Entry};
use crate::app::Route;
use crate::native::instance::State;
use crate::php::upstream::Upstream;

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
    })
}

async fn worker(w: &Entry, ready: Result<(), String>) -> Value {
    let (requests, errors) = w.metrics.totals();
    let latency = w.metrics.duration.snapshot();
    let (backend, pool, processes) = match &w.target {
        Route::Php(p) => php(&p.upstream.get()).await,
        Route::Native(s) => {
            let now = s.serving();
            let procs: Vec<Value> = now
                .instances
                .iter()
                .map(|i| {
                    json!({
                        "id": format!("pid {} · port {}", i.pid, i.port),
                        "state": match i.state() {
                            State::Starting => "Starting",
                            State::Ready => "Ready",
                            State::Draining => "Draining",
                            State::Stopped => "Stopped",
                        },
                        "requests": i.served(),
                        "active": i.outstanding(),
                        "uptime_seconds": i.started.elapsed().as_secs(),
                    })
                })
                .collect();
            let active: usize = now.instances.iter().map(|i| i.outstanding()).sum();
            let pool = json!({
                "total": now.instances.len(),
                "active": active,
                "idle": null,
                "queue": 0,
            });
            ("http", pool, procs)
        }
    };
    json!({
        "name": w.name,
        "route": w.route,
        "kind": w.kind,
        "backend": backend,
        "ready": ready.is_ok(),
        "why": ready.err(),
        "requests": requests,
        "errors": errors,
        "in_flight": w.metrics.in_flight(),
        "bytes_out": w.metrics.bytes_out(),
        "latency": { "bounds": latency.bounds, "counts": latency.counts },
        "pool": pool,
        "processes": processes,
    })
}

async fn php(up: &Upstream) -> (&'static str, Value, Vec<Value>) {
    match up {
        Upstream::Cgi(c) => {
            let s = c.pool.snapshot();
            let procs = s
                .processes
                .iter()
                .map(|p| {
                    json!({
                        "id": format!("pid {}", p.pid),
                        "state": p.state,
                        "requests": p.requests,
                        "uptime_seconds": p.start_time.elapsed().map_or(0, |d| d.as_secs()),
                    })
                })
                .collect();
            let pool = json!({
                "total": s.total, "active": s.active, "idle": s.idle, "queue": s.listen_queue,
            });
            ("cgi", pool, procs)
        }
        Upstream::Fpm(b) => {
            let Ok(v) = b
                .full_status_json()
                .await
                .and_then(|body| serde_json::from_slice::<Value>(&body).map_err(|e| e.to_string()))
            else {
                return (
                    "fpm",
                    json!({"total": 0, "active": 0, "idle": 0, "queue": 0}),
                    Vec::new(),
                );
            };
            let states = v["processes"].as_array().into_iter().flatten();
            let (idle, active, total) = crate::metrics::pools::fpm_process_counts(
                states.map(|p| p["state"].as_str().unwrap_or_default()),
            );
            let pool = json!({
                "total": total, "active": active, "idle": idle, "queue": v["listen queue"],
            });
            let procs = v["processes"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|p| {
                            json!({
                                "id": format!("pid {}", p["pid"]),
                                "state": p["state"],
                                "requests": p["requests"],
                                "uptime_seconds": p["start since"],
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            ("fpm", pool, procs)
        }
    }
}
