//! The admin listener (`admin.listen`, 127.0.0.1:8081 by default): what an
//! operator or a load balancer asks a running TQServer.
//!
//! | path | answer |
//! |---|---|
//! | `/healthz` | 200 while the process runs |
//! | `/readyz` | 200 when every enabled worker can serve, else 503 with a JSON reason |
//! | `/metrics` | Prometheus text; OpenMetrics when the `Accept` header asks for it |
//! | `/status/{worker}` | php-fpm's status page: `?json`, `?html`, `?xml`, `?openmetrics`, `&full` |
//! | `/` | the dashboard ([`dashboard`]) |
//! | `/api/dashboard` | the JSON the dashboard polls every second |
//! | `POST /reload` | reload the configuration (`tqserver reload`); the answer says what changed |

pub mod dashboard;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::Route;
use crate::http::Body;
use crate::metrics::{Metrics, RouteMetrics};

/// One enabled worker as the admin pages see it.
#[derive(Clone)]
pub struct Entry {
    /// Worker name.
    pub name: String,
    /// URL prefix.
    pub route: String,
    /// `php`, `rust`, `go`, `command`.
    pub kind: &'static str,
    /// Where its requests go.
    pub target: Route,
    /// Its request metrics.
    pub metrics: Arc<RouteMetrics>,
}

/// What the admin pages read.
pub struct Admin {
    /// Every metric.
    pub metrics: Arc<Metrics>,
    /// Every enabled worker, in route order (replaced by a reload).
    workers: arc_swap::ArcSwap<Vec<Entry>>,
    /// Where `POST /reload` asks for a reload.
    reload: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<crate::reload::Trigger>>,
    /// Set when a stop signal arrived: `/readyz` answers 503 from then on,
    /// so load balancers stop sending before the listener closes.
    pub draining: AtomicBool,
    /// One scrape at a time (pool samples are shared by the encoder).
    scrape: tokio::sync::Mutex<()>,
}

impl Admin {
    /// The admin state over `workers`.
    pub fn new(metrics: Arc<Metrics>, workers: Vec<Entry>) -> Arc<Self> {
        Arc::new(Self {
            metrics,
            workers: arc_swap::ArcSwap::from_pointee(workers),
            reload: std::sync::OnceLock::new(),
            draining: AtomicBool::new(false),
            scrape: tokio::sync::Mutex::new(()),
        })
    }

    /// The workers now, in route order.
    pub fn workers(&self) -> Arc<Vec<Entry>> {
        self.workers.load_full()
    }

    /// Puts the workers of a reloaded configuration in place.
    pub fn set_workers(&self, workers: Vec<Entry>) {
        self.workers.store(Arc::new(workers));
    }

    /// Lets `POST /reload` ask `to` for reloads.
    pub fn accept_reloads(&self, to: tokio::sync::mpsc::UnboundedSender<crate::reload::Trigger>) {
        let _ = self.reload.set(to);
    }

    /// The Prometheus exposition, after sampling every PHP pool.
    pub async fn scrape(&self, openmetrics: bool) -> String {
        let _one = self.scrape.lock().await;
        let mut samples = Vec::new();
        for w in self.workers().iter() {
            if let Route::Php(p) = &w.target {
                samples.push(crate::metrics::pools::sample(&p.upstream.get()).await);
            }
        }
        self.metrics.pools.set(samples);
        self.metrics.encode(openmetrics)
    }

    /// `/metrics`: OpenMetrics when `Accept` asks for it, else the
    /// Prometheus text format.
    pub async fn metrics_page(&self, headers: &http::HeaderMap) -> Response<Body> {
        let om = wants_openmetrics(headers);
        let body = self.scrape(om).await;
        let ct = if om {
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        } else {
            "text/plain; version=0.0.4; charset=utf-8"
        };
        respond(StatusCode::OK, ct, body)
    }

    /// Whether each worker can serve now, and why not.
    pub fn readiness(&self) -> Vec<(String, Result<(), String>)> {
        self.workers()
            .iter()
            .map(|w| {
                let r = match &w.target {
                    Route::Php(p) => {
                        if p.upstream.get().is_ready() {
                            Ok(())
                        } else {
                            Err("PHP is not answering yet".to_string())
                        }
                    }
                    Route::Native(s) => {
                        let now = s.serving();
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
                };
                (w.name.clone(), r)
            })
            .collect()
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        if req.uri().path() == "/reload" {
            return self.reload(req.method()).await;
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "Only GET and HEAD.\n");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let path = req.uri().path();
        let query = req.uri().query().unwrap_or("");
        match path {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => self.readyz(),
            "/metrics" => self.metrics_page(req.headers()).await,
            "/" => respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                dashboard::PAGE.to_string(),
            ),
            "/api/dashboard" => respond(
                StatusCode::OK,
                "application/json",
                dashboard::stats(self).await.to_string(),
            ),
            _ => match path.strip_prefix("/status/") {
                Some(name) => self.status(name, query).await,
                None => text(
                    StatusCode::NOT_FOUND,
                    "Not found. The admin listener serves /, /healthz, /readyz, /metrics and /status/{worker}.\n",
                ),
            },
        }
    }

    /// `POST /reload`: reloads and answers what changed (200) or why
    /// nothing could be (422: the configuration is invalid; every error
    /// names file, line and key).
    async fn reload(&self, method: &Method) -> Response<Body> {
        if method != Method::POST {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "POST /reload reloads the configuration.\n",
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return r;
        }
        let Some(to) = self.reload.get() else {
            return text(StatusCode::SERVICE_UNAVAILABLE, "Not running yet.\n");
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        if to.send(crate::reload::Trigger::Asked(tx)).is_err() {
            return text(StatusCode::SERVICE_UNAVAILABLE, "Stopping.\n");
        }
        match rx.await {
            Ok(Ok(report)) => text(StatusCode::OK, &format!("{report}\n")),
            Ok(Err(why)) => text(StatusCode::UNPROCESSABLE_ENTITY, &format!("{why}\n")),
            Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "Stopping.\n"),
        }
    }

    fn readyz(&self) -> Response<Body> {
        let states = self.readiness();
        let workers: serde_json::Map<String, serde_json::Value> = states
            .iter()
            .map(|(n, r)| {
                let v = match r {
                    Ok(()) => "ready".to_string(),
                    Err(why) => format!("not ready: {why}"),
                };
                (n.to_string(), v.into())
            })
            .collect();
        let draining = self.draining.load(Ordering::Acquire);
        let not_ready: Vec<&str> = states
            .iter()
            .filter(|(_, r)| r.is_err())
            .map(|(n, _)| n.as_str())
            .collect();
        let reason = if draining {
            Some("stopping: finishing the requests in progress".to_string())
        } else if !not_ready.is_empty() {
            Some(format!("not ready: {}", not_ready.join(", ")))
        } else {
            None
        };
        let body = serde_json::json!({
            "ready": reason.is_none(),
            "reason": reason,
            "workers": workers,
        });
        let status = if reason.is_none() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        respond(status, "application/json", format!("{body}\n"))
    }

    async fn status(&self, name: &str, query: &str) -> Response<Body> {
        let workers = self.workers();
        let Some(w) = workers.iter().find(|w| w.name == name) else {
            let names: Vec<&str> = workers.iter().map(|w| w.name.as_str()).collect();
            return text(
                StatusCode::NOT_FOUND,
                &format!(
                    "No enabled worker is called {name:?}. Workers: {}.\n",
                    names.join(", ")
                ),
            );
        };
        let Route::Php(p) = &w.target else {
            return text(
                StatusCode::NOT_FOUND,
                &format!(
                    "{name} is a {} worker; php-fpm's status page is for PHP workers. Its instances are on the dashboard and in /metrics.\n",
                    w.kind
                ),
            );
        };
        match p.upstream.get().status(query).await {
            Ok((ct, body)) => {
                let mut r = Response::new(full(body));
                set_type(&mut r, &ct);
                r
            }
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("{why}\n")),
        }
    }
}

fn wants_openmetrics(h: &http::HeaderMap) -> bool {
    h.get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn set_type(r: &mut Response<Body>, ct: &str) {
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(ct) {
        h.insert(header::CONTENT_TYPE, v);
    }
    // As php-fpm's status page: never cached.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate, max-age=0"),
    );
}

fn respond(status: StatusCode, ct: &str, body: String) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    set_type(&mut r, ct);
    r
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", body.to_string())
}

/// Serves `listener` until `stop`; open connections then get a second
/// to finish (these are short requests).
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, stop: CancellationToken) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(10));
    let grace = std::time::Duration::from_secs(1);
    crate::http::accept_until(listener, &stop, grace, "admin", |stream, _| {
        let admin = admin.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let admin = admin.clone();
            async move {
                let head = req.method() == Method::HEAD;
                let mut r = admin.handle(req).await;
                if head {
                    *r.body_mut() = crate::http::empty();
                }
                Ok::<_, Infallible>(r)
            }
        });
        builder
            .serve_connection(TokioIo::new(stream), svc)
            .into_owned()
    })
    .await;
}
