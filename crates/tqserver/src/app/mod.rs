//! The public front's request handler: a request goes to the worker of
//! its longest route prefix ([`router`]), is recorded ([`observe`]:
//! request id, metrics, access line), in dev mode HTML answers get the
//! live-reload tag ([`livereload`]), and the answer is compressed as the
//! route's `compression` policy and the client's `Accept-Encoding` say
//! ([`crate::http::encode`]). The routing [`Table`] is swapped
//! whole by a reload; requests in progress keep the one they started with.
//!
//! # Layout
//! - `mod.rs`: [`App`] (the [`crate::http::Handler`] of the public port),
//!   [`Table`], [`Routed`].
//! - `router.rs`: longest-prefix routing on segment boundaries.
//! - `observe.rs`: what is recorded about each request.
//! - `livereload.rs`: dev-mode browser reload.
//! - `https.rs`: ACME http-01 answers, the redirect to https, HSTS.

pub mod https;
pub mod livereload;
pub mod observe;
pub mod router;

use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::access::AccessLog;
use crate::admin::Admin;
use crate::config::ServerSettings;
use crate::http::body::{Budget, Limits};
use crate::http::{Body, ConnInfo, encode, pages};
use crate::workers::Worker;
use livereload::LiveReload;
use observe::{Metered, Observed};
use router::Router;

/// A route: the worker it leads to and what is recorded about its
/// requests.
pub struct Routed {
    /// Where requests go.
    pub worker: Worker,
    /// Metrics and access log.
    pub observed: Arc<Observed>,
    /// What its answers are compressed with (`compression`).
    pub compression: Arc<encode::Policy>,
}

/// What requests are routed with; a reload swaps it whole.
pub struct Table {
    /// Route prefixes to workers.
    pub router: Router<Routed>,
    /// Body limits for requests.
    pub server: ServerSettings,
    /// What new connections are served with (from `server`).
    pub http: Arc<crate::http::Settings>,
    /// `metrics.path` when `metrics.enabled` puts /metrics on this port.
    pub public_metrics: Option<String>,
    /// Record request metrics: something can read them (the admin
    /// listener or a public metrics path).
    pub record: bool,
    /// `server.access_log`, for requests no worker serves.
    pub unrouted_access: AccessLog,
}

/// The public front's handler.
pub struct App {
    table: ArcSwap<Table>,
    /// Dev mode with the file watcher on: `/__tqserver/` answers and HTML
    /// responses get the live-reload tag.
    live: Option<Arc<LiveReload>>,
    /// Metrics, status and readiness (also served on `admin.listen`).
    admin: Arc<Admin>,
    /// Dev mode: why the last configuration change was refused, shown
    /// instead of pages until a valid configuration is in place.
    problem: ArcSwapOption<String>,
    /// Request bodies being buffered, all routes together
    /// (`server.max_buffered_bytes`); kept across reloads.
    buffered: Arc<Budget>,
    /// HTTPS certificates (http-01 answers), when `server.tls` is set.
    certs: Option<Arc<crate::certs::Certs>>,
}

impl App {
    /// The handler over `table`.
    pub fn new(
        table: Table,
        live: Option<Arc<LiveReload>>,
        admin: Arc<Admin>,
        certs: Option<Arc<crate::certs::Certs>>,
    ) -> Self {
        let buffered = Budget::new(table.server.max_buffered_bytes);
        Self {
            table: ArcSwap::from_pointee(table),
            live,
            admin,
            problem: ArcSwapOption::empty(),
            buffered,
            certs,
        }
    }

    /// The table in force.
    pub fn table(&self) -> Arc<Table> {
        self.table.load_full()
    }

    /// Puts a reloaded configuration's table in place; requests in
    /// progress keep the one they started with.
    pub fn swap(&self, table: Table) {
        self.buffered.set_limit(table.server.max_buffered_bytes);
        self.table.store(Arc::new(table));
    }

    /// Sets or clears the refused-configuration message; returns whether
    /// one was set before.
    pub fn set_problem(&self, why: Option<String>) -> bool {
        self.problem.swap(why.map(Arc::new)).is_some()
    }

    /// Answers one request.
    async fn handle(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<Metered> {
        let table = self.table();
        let tls = table.server.tls.as_ref();
        if table.record {
            self.admin
                .metrics
                .tls
                .request(conn.client.https, req.version());
        }
        let mut resp = match https::before(tls, self.certs.as_deref(), &req, &conn) {
            Some(r) => r.map(|b| Metered::new(b, None)),
            None => self.route(&table, req, conn).await,
        };
        https::hsts(&mut resp, tls, &conn);
        resp
    }

    /// The answer of the worker `req` is routed to (or TQServer's own).
    async fn route(
        &self,
        table: &Table,
        mut req: Request<Incoming>,
        conn: ConnInfo,
    ) -> Response<Metered> {
        let plain = |r: Response<Body>| r.map(|b| Metered::new(b, None));
        if let Some(live) = &self.live {
            if let Some(r) = live.handle(req.method(), req.uri().path(), req.uri().query()) {
                return plain(r);
            }
            if let Some(p) = self.problem.load_full() {
                let page = pages::problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The configuration has an error",
                    "TQServer keeps running the previous configuration until this is fixed.",
                    &p,
                );
                let prefix = table.router.find(req.uri().path()).map_or("/", |(p, _)| p);
                return plain(livereload::inject(page, req.method(), prefix).await);
            }
        }
        if table.public_metrics.as_deref() == Some(req.uri().path()) {
            return plain(self.admin.metrics_page(req.headers()).await);
        }
        let method = self.live.as_ref().map(|_| req.method().clone());
        let Some((prefix, route)) = table.router.find(req.uri().path()) else {
            self.admin.metrics.unrouted();
            let page = pages::error(StatusCode::NOT_FOUND, "No worker serves this address.");
            return plain(observe::unrouted(
                &table.unrouted_access,
                &mut req,
                &conn,
                page,
            ));
        };
        let pending = if table.record || !route.observed.access.is_off() {
            Ok(observe::begin(&route.observed, &mut req, &conn))
        } else {
            // Nothing can read metrics (no admin listener, no public
            // metrics path) and nothing is logged: only the request id.
            Err(observe::request_id(req.headers_mut()))
        };
        let limits = Limits {
            max_body_bytes: table.server.max_body_bytes,
            read_timeout: table.server.read_timeout,
            body_buffer_size: table.server.body_buffer_size,
            budget: self.buffered.clone(),
        };
        let asked = encode::Asked::new(&route.compression, req.method(), req.headers());
        let resp = route.worker.serve(req, conn, prefix, limits).await;
        let (resp, meter) = match pending {
            Ok(p) => {
                let (r, m) = p.respond(resp);
                (r, Some(m))
            }
            Err(id) => (observe::with_request_id(resp, id), None),
        };
        let resp = match method {
            Some(m) => livereload::inject(resp, &m, prefix).await,
            None => resp,
        };
        let resp = match asked {
            Some(a) => encode::respond(&route.compression, &a, resp),
            None => resp,
        };
        resp.map(|b| Metered::new(b, meter))
    }
}

impl crate::http::Handler for App {
    type Body = Metered;

    fn settings(&self) -> Arc<crate::http::Settings> {
        self.table.load().http.clone()
    }

    async fn call(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<Metered> {
        self.handle(req, conn).await
    }

    fn handshake(&self, outcome: crate::http::tls::Outcome) {
        use crate::http::tls::Outcome;
        self.admin.metrics.tls.handshake(match outcome {
            Outcome::Http(_) => Some(true),
            Outcome::Failed => Some(false),
            Outcome::Challenge => None,
        });
    }
}
