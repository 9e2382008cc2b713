//! One HTTP request to a native worker: pick the least busy ready
//! instance, forward the request (hop-by-hop headers dropped,
//! `X-Forwarded-*` added), stream the answer back, and keep the instance
//! counted busy until the response body is done (so a drain waits for it).

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::conn::{Conn, SendError, Streaming, UpBody};
use super::{Lease, NoInstance, Service};
use crate::config::Mode;
use crate::http::body::{BodyError, LimitedBody};
use crate::http::{Body, pages};
use crate::php::params::ConnInfo;
use crate::php::proxy::Limits;

/// Tries for one request when the instance cannot have seen it.
const MAX_RETRIES: u32 = 3;

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "trailer"
    )
}

/// Copies end-to-end headers: drops hop-by-hop ones and those the
/// `Connection` header names.
fn end_to_end(from: &HeaderMap) -> HeaderMap {
    let named: Vec<String> = from
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let mut to = HeaderMap::with_capacity(from.len() + 3);
    for (k, v) in from {
        if !hop_by_hop(k) && !named.iter().any(|n| n == k.as_str()) {
            to.append(k.clone(), v.clone());
        }
    }
    to
}

/// Serves `req` with one of `svc`'s instances.
pub async fn serve(
    svc: &Service,
    req: Request<Incoming>,
    conn: ConnInfo,
    limits: Limits,
) -> Response<Body> {
    if svc.mode == Mode::Dev {
        if let Some(p) = svc.serving().problem.as_ref().filter(|p| p.build) {
            return pages::problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("{} did not build", svc.worker.name),
                &p.title,
                &p.detail,
            );
        }
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes) {
        return pages::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "The request body is larger than {} bytes (server.max_body_bytes).",
                limits.max_body_bytes
            ),
        );
    }
    let mut lease = match svc.lease().await {
        Ok(l) => l,
        Err(e) => return unavailable(svc, e),
    };
    let (parts, body) = req.into_parts();
    let bodyless = body.is_end_stream();
    let mut headers = end_to_end(&parts.headers);
    forwarded(&mut headers, &parts.headers, conn.peer);
    if !headers.contains_key(header::HOST) {
        // HTTP/1.0 without Host, or HTTP/2 (:authority).
        let host = parts.uri.authority().map_or("localhost", |a| a.as_str());
        if let Ok(v) = HeaderValue::from_str(host) {
            headers.insert(header::HOST, v);
        }
    }
    // Origin-form: the same request fits any instance.
    let uri: Uri = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .unwrap_or_else(|_| Uri::from_static("/"));
    let make = |body: UpBody| {
        let mut up = Request::new(body);
        *up.method_mut() = parts.method.clone();
        *up.uri_mut() = uri.clone();
        *up.headers_mut() = headers.clone();
        up
    };
    let mut up = make(if bodyless {
        empty()
    } else {
        LimitedBody::new(body, limits.max_body_bytes, limits.read_timeout).boxed()
    });
    let timeout = svc
        .worker
        .native
        .as_ref()
        .map_or(Duration::from_secs(60), |n| n.request_timeout);
    // Retries only when the instance cannot have seen the request: a dead
    // kept-alive connection (the request comes back unsent), a refused
    // connect, or — for a request without a body — a kept-alive connection
    // that closed before answering.
    let mut retries = 0;
    loop {
        let inst = lease.instance().clone();
        let mut c = match inst.idle.take() {
            Some(c) => c,
            None => match Conn::connect(inst.addr()).await {
                Ok(c) => c,
                Err(e) if retries < MAX_RETRIES => {
                    tracing::debug!(worker = %svc.worker.name, port = inst.port, "connect failed ({e}); trying another instance");
                    retries += 1;
                    drop(lease);
                    lease = match svc.lease().await {
                        Ok(l) => l,
                        Err(e) => return unavailable(svc, e),
                    };
                    continue;
                }
                Err(e) => {
                    tracing::warn!(worker = %svc.worker.name, port = inst.port, "cannot connect: {e}");
                    return bad_gateway(svc);
                }
            },
        };
        match tokio::time::timeout(timeout, c.send(up)).await {
            Ok(Ok(resp)) => return respond(resp, c, lease),
            Ok(Err(SendError::NotSent(req, why))) if retries < MAX_RETRIES => {
                tracing::debug!(worker = %svc.worker.name, port = inst.port, "not sent ({why}); retrying");
                retries += 1;
                up = *req;
            }
            Ok(Err(SendError::Failed(e)))
                if c.reused
                    && bodyless
                    && retries < MAX_RETRIES
                    && (e.is_incomplete_message() || e.is_canceled()) =>
            {
                tracing::debug!(worker = %svc.worker.name, port = inst.port, "kept-alive connection closed ({e}); retrying");
                retries += 1;
                up = make(empty());
            }
            Ok(Err(SendError::NotSent(_, why))) => {
                tracing::warn!(worker = %svc.worker.name, port = inst.port, "upstream error: {why}");
                return bad_gateway(svc);
            }
            Ok(Err(SendError::Failed(e))) => {
                if let Some(b) = find_body_error(&e) {
                    return match b {
                        BodyError::TooLarge(n) => pages::error(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            &format!("The request body is larger than {n} bytes."),
                        ),
                        other => pages::error(StatusCode::BAD_REQUEST, &other.to_string()),
                    };
                }
                tracing::warn!(worker = %svc.worker.name, port = inst.port, "upstream error: {e}");
                return bad_gateway(svc);
            }
            Err(_) => {
                tracing::warn!(worker = %svc.worker.name, port = inst.port, "no response within {timeout:?}");
                return pages::error(
                    StatusCode::GATEWAY_TIMEOUT,
                    &format!(
                        "The worker {} did not answer within {timeout:?} (scaling.request_timeout).",
                        svc.worker.name
                    ),
                );
            }
        }
    }
}

fn bad_gateway(svc: &Service) -> Response<Body> {
    pages::error(
        StatusCode::BAD_GATEWAY,
        &format!("The worker {} failed to answer.", svc.worker.name),
    )
}

fn empty() -> UpBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

fn find_body_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyError> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(b) = c.downcast_ref::<BodyError>() {
            return Some(b);
        }
        cur = c.source();
    }
    None
}

/// The 503 (or dev-mode problem page) when no instance can take a request.
fn unavailable(svc: &Service, e: NoInstance) -> Response<Body> {
    let name = &svc.worker.name;
    let mut r = match e {
        NoInstance::NotReady { building: true } => pages::error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("The worker {name} is still building; try again in a moment."),
        ),
        NoInstance::NotReady { building: false } => pages::error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("The worker {name} has no instance ready yet."),
        ),
        NoInstance::Failed(Some(p)) if svc.mode == Mode::Dev => pages::problem(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("{name} is not running"),
            &p.title,
            &p.detail,
        ),
        NoInstance::Failed(_) => pages::error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("The worker {name} is not running."),
        ),
    };
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// Adds `X-Forwarded-For` (appended to what came in), `-Proto`, `-Host`.
fn forwarded(to: &mut HeaderMap, from: &HeaderMap, peer: SocketAddr) {
    let ip = peer.ip().to_string();
    let xff = match from.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        to.insert("x-forwarded-for", v);
    }
    if !to.contains_key("x-forwarded-proto") {
        to.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    if let Some(h) = from.get(header::HOST) {
        if !to.contains_key("x-forwarded-host") {
            to.insert("x-forwarded-host", h.clone());
        }
    }
}

fn respond(resp: Response<Incoming>, conn: Conn, lease: Lease) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    parts.headers = end_to_end(&parts.headers);
    let body = Streaming::new(body, conn, lease);
    Response::from_parts(parts, body.map_err(std::io::Error::other).boxed_unsync())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_stay() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        h.append("set-cookie", HeaderValue::from_static("a=1"));
        h.append("set-cookie", HeaderValue::from_static("b=2"));
        let out = end_to_end(&h);
        assert!(out.get("x-secret").is_none());
        assert!(out.get("connection").is_none());
        assert!(out.get("keep-alive").is_none());
        assert_eq!(out.get_all("set-cookie").iter().count(), 2);
        let mut f = HeaderMap::new();
        let mut from = HeaderMap::new();
        from.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        from.insert("host", HeaderValue::from_static("example.org"));
        forwarded(&mut f, &from, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(f["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(f["x-forwarded-host"], "example.org");
    }
}
