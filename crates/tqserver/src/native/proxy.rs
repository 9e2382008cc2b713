//! One HTTP request to a native worker: pick the least busy ready
//! instance, forward the request (hop-by-hop headers dropped,
//! `X-Forwarded-*` added), stream the answer back, and keep the instance
//! counted busy until the response body is done (so a drain waits for it).

use crate::access::ServedBy;
use crate::metrics::UpstreamError;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::conn::{self, Conn, Framing, Outgoing, SendError, Streaming};
use super::{NoInstance, Service};
use crate::config::Mode;
use crate::http::body::{self, LimitedBody};
use crate::http::{Body, pages};
use crate::php::params::ConnInfo;
use crate::php::proxy::Limits;

/// Tries for one request when the instance cannot have seen it.
const MAX_RETRIES: u32 = 3;

/// Headers never forwarded to or from an instance: the hop-by-hop ones,
/// and proxy credentials (TQServer is the proxy they would be meant for).
pub(super) fn not_forwarded(name: &HeaderName) -> bool {
    crate::http::hop_by_hop(name)
        || matches!(name.as_str(), "proxy-authenticate" | "proxy-authorization")
}

/// Header names the `Connection` header lists (hop-by-hop too).
fn connection_named(h: &HeaderMap) -> Vec<String> {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
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
    let req = match body::refuse_oversized(req, limits) {
        Ok(r) => r,
        Err(refused) => return *refused,
    };
    let mut lease = match svc.lease().await {
        Ok(l) => l,
        Err(e) => return unavailable(svc, e),
    };
    let (parts, body) = req.into_parts();
    let head_only = parts.method == Method::HEAD;
    let framing = if body.is_end_stream() {
        None
    } else if parts.headers.contains_key(header::CONTENT_LENGTH) {
        Some(Framing::Length)
    } else {
        Some(Framing::Chunked)
    };
    let mut out = Outgoing {
        head: head(&parts, conn.peer, framing),
        body: framing.map(|f| {
            (
                LimitedBody::new(body, limits.max_body_bytes, limits.read_timeout)
                    .counting(parts.extensions.get())
                    .boxed(),
                f,
            )
        }),
        head_only,
    };
    let bodyless = out.body.is_none();
    let timeout = svc.serving().request_timeout;
    // Retries only when the instance cannot have seen the request: a
    // refused connect, or a kept-alive connection found closed before any
    // answer (for a request without a body, whose head is resent).
    let mut retries = 0;
    loop {
        let inst = lease.instance().clone();
        let pooled = if retries < MAX_RETRIES {
            inst.idle.take()
        } else {
            None
        };
        let mut c = match pooled {
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
                    return bad_gateway(svc, UpstreamError::Connect);
                }
            },
        };
        match tokio::time::timeout(timeout, c.send(&mut out)).await {
            Ok(Ok((status, headers, reading))) => {
                let mut r = conn::response(status, headers, Streaming::new(c, reading, lease));
                r.extensions_mut().insert(ServedBy::Port(inst.port));
                return r;
            }
            Ok(Err(SendError::Closed(e))) if c.reused && bodyless && retries < MAX_RETRIES => {
                tracing::debug!(worker = %svc.worker.name, port = inst.port, "kept-alive connection was closed ({e}); retrying");
                retries += 1;
            }
            Ok(Err(SendError::Body(b))) => return body::error_page(&b),
            Ok(Err(e)) => {
                tracing::warn!(worker = %svc.worker.name, port = inst.port, "upstream error: {e}");
                let kind = match &e {
                    SendError::Failed(io) if io.kind() == std::io::ErrorKind::InvalidData => {
                        UpstreamError::BadResponse
                    }
                    _ => UpstreamError::Reset,
                };
                return bad_gateway(svc, kind);
            }
            Err(_) => {
                tracing::warn!(worker = %svc.worker.name, port = inst.port, "no response within {timeout:?}");
                let mut r = pages::error(
                    StatusCode::GATEWAY_TIMEOUT,
                    &format!(
                        "The worker {} did not answer within {timeout:?} (scaling.request_timeout).",
                        svc.worker.name
                    ),
                );
                r.extensions_mut().insert(UpstreamError::Timeout);
                return r;
            }
        }
    }
}

/// The request head for an instance: the client's end-to-end headers,
/// `Host` (from the URI for HTTP/2 and HTTP/1.0 clients without one),
/// `X-Forwarded-For` / `-Proto` / `-Host`, framing.
fn head(parts: &http::request::Parts, peer: SocketAddr, framing: Option<Framing>) -> Bytes {
    let h = &parts.headers;
    let named = connection_named(h);
    let ip = peer.ip().to_string();
    let xff = match h.get(XFF).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip,
    };
    let host = match h.get(header::HOST) {
        Some(_) => None,
        None => Some(parts.uri.authority().map_or("localhost", |a| a.as_str())),
    };
    let mut extra: Vec<(&str, &[u8])> = vec![("x-forwarded-for", xff.as_bytes())];
    if let Some(host) = host {
        extra.push(("host", host.as_bytes()));
    }
    if !h.contains_key(XFP) {
        extra.push(("x-forwarded-proto", b"http"));
    }
    if let (false, Some(v)) = (h.contains_key(XFH), h.get(header::HOST)) {
        extra.push(("x-forwarded-host", v.as_bytes()));
    }
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let kept = h
        .iter()
        .filter(|(k, _)| !not_forwarded(k) && *k != XFF && !named.iter().any(|n| n == k.as_str()));
    conn::request_head(
        &parts.method,
        target,
        kept,
        h.contains_key(header::CONTENT_LENGTH),
        &extra,
        framing,
    )
}

const XFF: &str = "x-forwarded-for";
const XFP: &str = "x-forwarded-proto";
const XFH: &str = "x-forwarded-host";

fn bad_gateway(svc: &Service, kind: UpstreamError) -> Response<Body> {
    let mut r = pages::error(
        StatusCode::BAD_GATEWAY,
        &format!("The worker {} failed to answer.", svc.worker.name),
    );
    r.extensions_mut().insert(kind);
    r
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_head_drops_hop_by_hop_headers_and_adds_forwarding() {
        let req = Request::builder()
            .method("POST")
            .uri("/api/x?y=1")
            .header("host", "example.org")
            .header("connection", "close, x-secret")
            .header("x-secret", "1")
            .header("keep-alive", "timeout=5")
            .header("x-forwarded-for", "10.0.0.1")
            .header("content-length", "3")
            .header("cookie", "a=1")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let bytes = head(
            &parts,
            "127.0.0.1:5000".parse().unwrap(),
            Some(Framing::Length),
        );
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.starts_with("POST /api/x?y=1 HTTP/1.1\r\n"), "{text}");
        for gone in ["connection", "x-secret", "keep-alive", "transfer-encoding"] {
            assert!(!text.contains(&format!("{gone}:")), "{gone} in {text}");
        }
        for kept in [
            "host: example.org\r\n",
            "content-length: 3\r\n",
            "cookie: a=1\r\n",
            "x-forwarded-for: 10.0.0.1, 127.0.0.1\r\n",
            "x-forwarded-proto: http\r\n",
            "x-forwarded-host: example.org\r\n",
        ] {
            assert!(text.contains(kept), "{kept} not in {text}");
        }
        assert!(text.ends_with("\r\n\r\n"));
        // HTTP/2 (no Host header): from the URI; a body without length is chunked.
        let req = Request::builder()
            .method("PUT")
            .uri("http://example.org:8080/u")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let bytes = head(
            &parts,
            "[::1]:5000".parse().unwrap(),
            Some(Framing::Chunked),
        );
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.starts_with("PUT /u HTTP/1.1\r\n"), "{text}");
        assert!(text.contains("host: example.org:8080\r\n"), "{text}");
        assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
    }
}
