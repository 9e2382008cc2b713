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
//!
//! Who may ask ([`Admin::refuse`]): `/healthz` and `/readyz` answer
//! anyone (probes). Everything else needs `Authorization: Bearer
//! <admin.token>` when a token is set, and on an address off loopback a
//! token must be set. A request without a valid token must name this
//! listener in `Host` by an IP address or `localhost` (a DNS-rebinding
//! page names its own domain: 421), and a cross-site POST (an `Origin`
//! other than the Host, or `Sec-Fetch-Site: cross-site`) is refused
//! (403), so no web page can make a browser reload the configuration.

pub mod dashboard;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::http::{Body, ConnInfo};
use crate::metrics::{Metrics, RouteMetrics};
use crate::workers::{StatusPageError, Worker};

/// One enabled worker as the admin pages see it.
#[derive(Clone)]
pub struct Entry {
    /// The worker's name.
    pub name: String,
    /// URL prefix.
    pub route: String,
    /// `php`, `rust`, `go`, `command`.
    pub kind: &'static str,
    /// The worker.
    pub worker: Worker,
    /// Its request metrics.
    pub metrics: Arc<RouteMetrics>,
}

/// A reload asked for on `POST /reload`: whoever applies configurations
/// subscribes to these ([`Admin::accept_reloads`]) and answers each with
/// the report, or why nothing was applied.
#[derive(Debug)]
pub struct ReloadRequest(tokio::sync::oneshot::Sender<Result<String, String>>);

impl ReloadRequest {
    /// Answers the request.
    pub fn answer(self, outcome: Result<String, String>) {
        let _ = self.0.send(outcome);
    }
}

/// What the admin pages read.
pub struct Admin {
    /// Every metric.
    pub metrics: Arc<Metrics>,
    /// Every enabled worker, in route order (replaced by a reload).
    workers: arc_swap::ArcSwap<Vec<Entry>>,
    /// Where `POST /reload` asks for a reload.
    reload: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<ReloadRequest>>,
    /// Set when a stop signal arrived: `/readyz` answers 503 from then on,
    /// so load balancers stop sending before the listener closes.
    pub draining: AtomicBool,
    /// One scrape at a time (pool samples are shared by the encoder).
    scrape: tokio::sync::Mutex<()>,
    /// `admin.token`, replaced by a reload.
    token: arc_swap::ArcSwapOption<String>,
    /// HTTPS certificates, when `server.tls` is set.
    certs: std::sync::OnceLock<Arc<crate::certs::Certs>>,
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
            token: arc_swap::ArcSwapOption::empty(),
            certs: std::sync::OnceLock::new(),
        })
    }

    /// Shows `certs` on the dashboard and in /metrics.
    pub fn set_certs(&self, certs: Arc<crate::certs::Certs>) {
        let _ = self.certs.set(certs);
    }

    /// The HTTPS certificates, when there are.
    pub fn certs(&self) -> Option<&crate::certs::Certs> {
        self.certs.get().map(|c| c.as_ref())
    }

    /// Sets (or clears) the bearer token requests must carry.
    pub fn set_token(&self, token: Option<String>) {
        self.token.store(token.map(Arc::new));
    }

    /// Why `req` is not answered, if it is not: see the module's "Who may
    /// ask". `loopback`: the listener's address is a loopback one.
    fn refuse(&self, req: &Request<Incoming>, loopback: bool) -> Option<Response<Body>> {
        let path = req.uri().path();
        if path == "/healthz" || path == "/readyz" {
            return None;
        }
        let token = self.token.load();
        let authorized = match token.as_deref() {
            Some(t) => bearer(req.headers()).is_some_and(|given| same(given, t)),
            None => false,
        };
        // The dashboard page itself holds no data (it asks /api/dashboard,
        // with the token from its URL's #fragment).
        let page = path == "/" && req.method() == Method::GET;
        if !authorized && !page && (token.is_some() || !loopback) {
            let why = if token.is_some() {
                "This needs Authorization: Bearer <admin.token>.\n"
            } else {
                "The admin listener is reachable from other machines: set admin.token (or TQSERVER_ADMIN_TOKEN) to use it; /healthz and /readyz answer without.\n"
            };
            let mut r = text(StatusCode::UNAUTHORIZED, why);
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tqserver admin\""),
            );
            return Some(r);
        }
        if !authorized && !host_is_local(req) {
            return Some(text(
                StatusCode::MISDIRECTED_REQUEST,
                "The admin listener answers requests for its own address (an IP or localhost) only.\n",
            ));
        }
        if req.method() != Method::GET && req.method() != Method::HEAD && cross_site(req) {
            return Some(text(
                StatusCode::FORBIDDEN,
                "Cross-site requests to the admin listener are refused.\n",
            ));
        }
        None
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
    pub fn accept_reloads(&self, to: tokio::sync::mpsc::UnboundedSender<ReloadRequest>) {
        let _ = self.reload.set(to);
    }

    /// The Prometheus exposition, after reading every worker's pool.
    pub async fn scrape(&self, openmetrics: bool) -> String {
        let _one = self.scrape.lock().await;
        let mut samples = Vec::new();
        for w in self.workers().iter() {
            let s = w.worker.status().await;
            if s.is_php() {
                samples.push(s);
            }
        }
        self.metrics.pools.set(samples);
        if let Some(c) = self.certs() {
            self.metrics.tls.certs.set(c.samples());
        }
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
            .map(|w| (w.name.clone(), w.worker.readiness()))
            .collect()
    }

    async fn handle(&self, req: Request<Incoming>, loopback: bool) -> Response<Body> {
        if let Some(no) = self.refuse(&req, loopback) {
            return no;
        }
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
        if to.send(ReloadRequest(tx)).is_err() {
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
        match w.worker.status_page(query).await {
            Ok((ct, body)) => {
                let mut r = Response::new(full(body));
                set_type(&mut r, &ct);
                r
            }
            Err(StatusPageError::NotPhp) => text(
                StatusCode::NOT_FOUND,
                &format!(
                    "{name} is a {} worker; php-fpm's status page is for PHP workers. Its instances are on the dashboard and in /metrics.\n",
                    w.kind
                ),
            ),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("{why}\n")),
        }
    }
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(h: &http::HeaderMap) -> Option<&str> {
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares in time that depends on the length only.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The host a request names (`Host`, or the HTTP/2 authority), without
/// its port.
fn request_host(req: &Request<Incoming>) -> Option<String> {
    let raw = match req.headers().get(header::HOST) {
        Some(h) => h.to_str().ok()?.to_string(),
        None => req.uri().authority()?.as_str().to_string(),
    };
    Some(strip_port(&raw).to_ascii_lowercase())
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// A Host that no DNS name can rebind to: an IP address, or `localhost`.
fn host_is_local(req: &Request<Incoming>) -> bool {
    match request_host(req) {
        // HTTP/1.0 without Host: nothing a browser would send.
        None => true,
        Some(h) => h == "localhost" || h.parse::<std::net::IpAddr>().is_ok(),
    }
}

/// A browser says where a request comes from: an `Origin` that is not the
/// Host itself, or `Sec-Fetch-Site: cross-site` / `same-site`.
fn cross_site(req: &Request<Incoming>) -> bool {
    let h = req.headers();
    if let Some(site) = h.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if !matches!(site, "same-origin" | "none") {
            return true;
        }
    }
    let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    let host = h.get(header::HOST).and_then(|v| v.to_str().ok());
    origin == "null" || host.is_none_or(|host| !origin_host.eq_ignore_ascii_case(host))
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

/// The admin listener's connection settings: short requests from
/// operators and probes.
fn settings() -> Arc<crate::http::Settings> {
    static S: std::sync::OnceLock<Arc<crate::http::Settings>> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        Arc::new(crate::http::Settings {
            read_timeout: std::time::Duration::from_secs(10),
            write_timeout: std::time::Duration::from_secs(30),
            idle_timeout: std::time::Duration::from_secs(60),
            max_header_bytes: 16 << 10,
            trusted_proxies: crate::http::forwarded::Trusted::default(),
            proxy_protocol: false,
        })
    })
    .clone()
}

impl crate::http::Handler for Admin {
    type Body = Body;

    fn settings(&self) -> Arc<crate::http::Settings> {
        settings()
    }

    async fn call(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
        let head = req.method() == Method::HEAD;
        let mut r = self.handle(req, conn.local.ip().is_loopback()).await;
        if head {
            *r.body_mut() = crate::http::empty();
        }
        r
    }
}
