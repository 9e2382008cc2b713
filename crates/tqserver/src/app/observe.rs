//! What TQServer records about each request a worker answers: its
//! `X-Request-Id` (the client's, or a new one) passed to the worker and
//! returned, the route's metrics, and the access log line, written when
//! the response body has been sent or the client went away.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};

use crate::access::{AccessLog, Entry, ServedBy};
use crate::http::Body;
use crate::http::ConnInfo;
use crate::metrics::{RouteMetrics, UpstreamError};

/// `X-Request-Id`.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A received request id longer than this is replaced (it ends up in logs
/// and in PHP's environment).
const MAX_ID_LEN: usize = 128;

/// One route's recorders.
pub struct Observed {
    /// Request metrics.
    pub metrics: Arc<RouteMetrics>,
    /// Access log destinations (may be none).
    pub access: AccessLog,
}

/// The client's `X-Request-Id` when it is short printable ASCII, else a
/// new one; set on the request, so the worker sees it (PHP as
/// `HTTP_X_REQUEST_ID`).
pub fn request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= MAX_ID_LEN && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    let id = new_id();
    headers.insert(REQUEST_ID.clone(), id.clone());
    id
}

/// `resp` with the request's id, and nothing recorded (see
/// [`Pending::respond`] for the recorded way).
pub fn with_request_id(mut resp: Response<Body>, id: HeaderValue) -> Response<Body> {
    resp.headers_mut().insert(REQUEST_ID.clone(), id);
    resp
}

/// 32 hex digits: a random number chosen once per run, then a counter.
fn new_id() -> HeaderValue {
    static SEED: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish()
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    HeaderValue::from_str(&format!("{seed:016x}{n:016x}")).expect("hex is a valid header")
}

/// A request on its way: what the access line needs from the request,
/// taken before the request moves into the proxy.
pub struct Pending {
    /// The record, answered or not: dropped before [`Pending::respond`]
    /// (the client went away while the worker was still working), it is
    /// recorded with nginx's 499 "client closed request".
    meter: Option<Meter>,
    id: HeaderValue,
}

/// nginx's status for a request whose client closed the connection
/// before the response was ready.
const CLIENT_CLOSED: u16 = 499;

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(m) = self.meter.as_mut() {
            m.status = CLIENT_CLOSED;
        }
    }
}

/// Starts recording `req` for `route`.
pub fn begin(
    route: &Arc<Observed>,
    req: &mut Request<hyper::body::Incoming>,
    conn: &ConnInfo,
) -> Pending {
    route.metrics.begin();
    let id = request_id(req.headers_mut());
    if !http_body::Body::is_end_stream(req.body()) {
        req.extensions_mut()
            .insert(crate::http::body::BytesIn(route.metrics.bytes_in.clone()));
    }
    let entry = (!route.access.is_off()).then(|| Box::new(entry(req, conn, &id)));
    Pending {
        meter: Some(Meter {
            route: route.clone(),
            started: Instant::now(),
            method: req.method().clone(),
            status: CLIENT_CLOSED,
            bytes: 0,
            entry,
        }),
        id,
    }
}

/// What the access line will say about `req`; status, bytes, duration
/// and upstream are filled in when the response is done.
fn entry(req: &Request<hyper::body::Incoming>, conn: &ConnInfo, id: &HeaderValue) -> Entry {
    let h = req.headers();
    Entry {
        time: SystemTime::now(),
        peer: conn.peer_ip(),
        method: req.method().clone(),
        uri: req.uri().clone(),
        version: req.version(),
        https: conn.client.https,
        status: 0,
        bytes: 0,
        content_length: crate::http::body::declared_length(h),
        referer: h.get(http::header::REFERER).cloned(),
        user_agent: h.get(http::header::USER_AGENT).cloned(),
        request_id: id.clone(),
        duration: std::time::Duration::ZERO,
        upstream: None,
    }
}

/// A request no worker serves: its id, and its line in the server-wide
/// access log (worker `-`), as nginx logs its 404s.
pub fn unrouted(
    access: &AccessLog,
    req: &mut Request<hyper::body::Incoming>,
    conn: &ConnInfo,
    resp: Response<Body>,
) -> Response<Body> {
    let started = Instant::now();
    let id = request_id(req.headers_mut());
    if !access.is_off() {
        let mut e = entry(req, conn, &id);
        e.status = resp.status().as_u16();
        e.bytes = http_body::Body::size_hint(resp.body()).exact().unwrap_or(0);
        e.duration = started.elapsed();
        access.write("-", &e);
    }
    with_request_id(resp, id)
}

impl Pending {
    /// The response is ready: returns it with the request id, and the
    /// meter that finishes the record when its body is done.
    pub fn respond(mut self, mut resp: Response<Body>) -> (Response<Body>, Meter) {
        let mut meter = self.meter.take().expect("respond is called once");
        if let Some(kind) = resp.extensions_mut().remove::<UpstreamError>() {
            meter.route.metrics.upstream_error(kind);
        }
        let served_by = resp.extensions_mut().remove::<ServedBy>();
        resp.headers_mut()
            .insert(REQUEST_ID.clone(), self.id.clone());
        if let Some(e) = meter.entry.as_mut() {
            e.upstream = served_by;
        }
        meter.status = resp.status().as_u16();
        (resp, meter)
    }
}

/// Counts a response's body bytes; on drop (body sent, or the client
/// gone) records the request's metrics and writes its access line.
pub struct Meter {
    route: Arc<Observed>,
    started: Instant,
    method: http::Method,
    status: u16,
    bytes: u64,
    entry: Option<Box<Entry>>,
}

impl Meter {
    /// `n` more body bytes went out.
    pub fn sent(&mut self, n: usize) {
        self.bytes += n as u64;
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        let took = self.started.elapsed();
        self.route
            .metrics
            .end(&self.method, self.status, took, self.bytes);
        if let Some(mut e) = self.entry.take() {
            e.status = self.status;
            e.bytes = self.bytes;
            e.duration = took;
            self.route.access.write(&self.route.metrics.worker, &e);
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts its bytes into its request's [`Meter`]
    /// (if it has one), which records the request when the body is done
    /// or dropped.
    pub struct Metered {
        #[pin]
        inner: Body,
        meter: Option<Meter>,
    }
}

impl Metered {
    /// `inner`, recorded by `meter`.
    pub fn new(inner: Body, meter: Option<Meter>) -> Self {
        Self { inner, meter }
    }
}

impl http_body::Body for Metered {
    type Data = bytes::Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let (Some(m), std::task::Poll::Ready(Some(Ok(f)))) = (this.meter.as_mut(), &polled) {
            if let Some(d) = f.data_ref() {
                m.sent(d.len());
            }
        }
        polled
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_when_sane_and_made_otherwise() {
        let mut h = HeaderMap::new();
        h.insert(&REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&mut h), "abc-123");
        h.insert(&REQUEST_ID, HeaderValue::from_static("has space"));
        let made = request_id(&mut h);
        assert_eq!(made.len(), 32);
        assert_eq!(h.get(&REQUEST_ID), Some(&made));
        let next = request_id(&mut HeaderMap::new());
        assert_ne!(made, next);
        assert_eq!(made.as_bytes()[..16], next.as_bytes()[..16]);
    }
}
