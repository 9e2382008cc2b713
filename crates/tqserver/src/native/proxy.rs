//! One HTTP request to a native worker: pick the least busy ready
//! instance, forward the request, stream the answer back, and keep the
//! instance counted busy until the response body is done (so a drain
//! waits for it).
//!
//! The forwarded head is TQServer's own, never the client's passed on:
//! hop-by-hop headers and whatever `Connection` names are dropped — but
//! `Connection` can never remove `Host` or the framing, which TQServer
//! writes itself from what it checked (the head always describes exactly
//! the body that follows). Header names with `_` and `Proxy` (httpoxy) are
//! dropped as nginx drops them; `X-Forwarded-*` and `Forwarded` are
//! TQServer's, unless the client is a trusted proxy.

use crate::access::ServedBy;
use crate::http::forwarded;
use crate::metrics::UpstreamError;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::{self as rbody, Streaming};
use super::conn::{Conn, Outgoing, SendError};
use super::h1::{self, Framing, not_forwarded};
use super::{NativeWorker, NoInstance};
use crate::config::Mode;
use crate::http::body::Limits;
use crate::http::body::{self, LimitedBody};
use crate::http::{Body, ConnInfo, Cut, pages};

/// Tries for one request when the instance cannot have seen it.
const MAX_RETRIES: u32 = 3;

/// A request body of at most this declared length is read whole before
/// it is sent, so that a request which meets a kept-alive connection the
/// instance closed meanwhile (its reset, before any answer, says it never
/// read the request) can be sent again on a new connection, POSTs
/// included. Larger bodies stream as they arrive.
const REPLAYABLE: u64 = 64 << 10;

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

/// Whether a client header goes to the instance as it is: not hop-by-hop,
/// not framing (TQServer frames the body), not `Host` (written below),
/// no `_` in its name, not `Proxy`, and no forwarding header unless the
/// client is a trusted proxy (TQServer writes its own otherwise).
fn passed_on(name: &HeaderName, named: &[String], trusted: bool) -> bool {
    let n = name.as_str();
    !(not_forwarded(name)
        || *name == header::CONTENT_LENGTH
        || *name == header::HOST
        || n.contains('_')
        || n == "proxy"
        || n == forwarded::XFF
        || n == forwarded::XFPREFIX
        || (!trusted && forwarded::is_forwarding(n))
        || named.iter().any(|m| m == n))
}

/// Serves `req` with one of `svc`'s instances.
pub async fn serve(
    svc: &NativeWorker,
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
    let req = match body::refuse_oversized(req, &limits) {
        Ok(r) => r,
        Err(refused) => return *refused,
    };
    let mut lease = match svc.lease().await {
        Ok(l) => l,
        Err(e) => return unavailable(svc, e),
    };
    if let Some(protocol) = upgrade_asked(&req) {
        return upgrade(svc, req, conn, lease, protocol).await;
    }
    if is_websocket_connect(&req) {
        // RFC 8441: a WebSocket over an HTTP/2 stream goes to the
        // instance as the HTTP/1.1 upgrade it understands.
        let protocol = HeaderValue::from_static("websocket");
        return upgrade(svc, req, conn, lease, protocol).await;
    }
    let (parts, body) = req.into_parts();
    let head_only = parts.method == Method::HEAD;
    // hyper has checked the client's Content-Length (HTTP/1) or the
    // stream's (HTTP/2); the body is counted against it again on the way out.
    let framing = if body.is_end_stream() {
        None
    } else {
        match body::declared_length(&parts.headers) {
            Some(n) => Some(Framing::Length(n)),
            None => Some(Framing::Chunked),
        }
    };
    // The worker answers the client's `Expect: 100-continue` (the header
    // is passed on): its body is not read before the worker asks for it.
    let expect = framing.is_some() && expects_continue(&parts.headers);
    let limited = LimitedBody::new(body, limits.max_body_bytes, limits.read_timeout)
        .counting(parts.extensions.get());
    let mut replay: Option<Bytes> = None;
    let mut streamed = None;
    match framing {
        Some(Framing::Length(n)) if n <= REPLAYABLE && !expect => match limited.collect().await {
            Ok(whole) => replay = Some(whole.to_bytes()),
            Err(e) => return body::error_page(&e),
        },
        Some(f) => streamed = Some((limited.boxed(), f)),
        None => {}
    }
    let (strip, timeouts) = in_force(svc);
    let mut out = Outgoing {
        head: head(&parts, &conn, framing, strip),
        body: streamed,
        head_only,
        expect,
    };
    let bodyless = framing.is_none();
    // Retries only when the instance cannot have seen the request: a
    // refused connect, or a kept-alive connection found closed before any
    // answer (for a request without a body, whose head is resent; one
    // whose body was kept whole; one whose body was not yet read).
    let mut retries = 0;
    loop {
        if let Some(b) = &replay {
            let full = http_body_util::Full::new(b.clone()).map_err(|never| match never {});
            out.body = Some((full.boxed(), Framing::Length(b.len() as u64)));
        }
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
        match c.send(&mut out, &timeouts).await {
            Ok(head) => {
                let home = inst.idle.clone();
                let body = Streaming::new(c, &head, Some(home), Some(lease), timeouts.read);
                let mut r = rbody::response(head, body);
                r.extensions_mut().insert(ServedBy::Port(inst.port));
                return r;
            }
            Err(SendError::Closed(e))
                if c.reused
                    && retries < MAX_RETRIES
                    && (bodyless || out.body.is_some() || (replay.is_some() && never_read(&e))) =>
            {
                tracing::debug!(worker = %svc.worker.name, port = inst.port, "kept-alive connection was closed ({e}); retrying");
                retries += 1;
            }
            Err(SendError::Body(b)) => return body::error_page(&b),
            Err(SendError::NoAnswer(wait)) => return no_answer(svc, inst.port, wait),
            Err(SendError::SendStalled(wait)) => {
                tracing::warn!(worker = %svc.worker.name, port = inst.port, "took no request body for {wait:?}");
                return gateway_timeout(
                    svc,
                    wait,
                    "took none of the request body",
                    "proxy.send_timeout",
                );
            }
            Err(e) => {
                tracing::warn!(worker = %svc.worker.name, port = inst.port, "upstream error: {e}");
                let kind = match &e {
                    SendError::Failed(io) if io.kind() == std::io::ErrorKind::InvalidData => {
                        UpstreamError::BadResponse
                    }
                    _ => UpstreamError::Reset,
                };
                return bad_gateway(svc, kind);
            }
        }
    }
}

/// What a request takes from the configuration in force, in one look
/// (not kept: it holds the instance list of the moment): the route to
/// strip, and the timeouts.
fn in_force(svc: &NativeWorker) -> (Option<&str>, crate::config::ProxyTimeouts) {
    let now = svc.serving();
    (now.strip(&svc.worker.route), now.timeouts)
}

/// Whether the client sent `Expect: 100-continue`.
fn expects_continue(h: &HeaderMap) -> bool {
    h.get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Whether a failure on a reused connection shows that the instance never
/// read the request: it reset the connection (a socket closed with our
/// request unread in it answers with a reset), rather than closing it
/// after reading, as one that read the request and then died would.
fn never_read(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
    )
}

/// The protocol an HTTP/1.1 upgrade request asks for (`Connection:
/// upgrade` and `Upgrade: websocket`), if it is one: a GET without a body.
fn upgrade_asked(req: &Request<Incoming>) -> Option<HeaderValue> {
    let h = req.headers();
    let asked = req.version() == http::Version::HTTP_11
        && req.method() == Method::GET
        && req.body().is_end_stream()
        && connection_named(h).iter().any(|t| t == "upgrade");
    asked.then(|| h.get(header::UPGRADE).cloned()).flatten()
}

/// An HTTP/2 extended CONNECT for a WebSocket (RFC 8441): `:protocol`
/// is `websocket`.
fn is_websocket_connect(req: &Request<Incoming>) -> bool {
    req.method() == Method::CONNECT
        && req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// A `Sec-WebSocket-Key` for the HTTP/1.1 upgrade an HTTP/2 WebSocket
/// becomes (its client sent none): 16 random bytes, base64.
fn websocket_key() -> String {
    use base64::Engine as _;
    use std::hash::{BuildHasher, Hasher};
    let mut key = [0u8; 16];
    for half in key.chunks_mut(8) {
        let r = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        half.copy_from_slice(&r.to_le_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// An upgrade (WebSocket) through to an instance: the request goes on a
/// fresh connection with its `Upgrade` and `Connection: upgrade`; a 101
/// from the instance is passed back, and once hyper hands over the
/// client's connection the bytes are copied both ways until either side
/// closes or neither sends for `proxy.upgrade_idle_timeout`. The instance
/// stays counted busy meanwhile (a drain waits for it). An instance that
/// answers with plain HTTP instead has that answer passed on.
async fn upgrade(
    svc: &NativeWorker,
    mut req: Request<Incoming>,
    conn: ConnInfo,
    lease: super::Lease,
    protocol: HeaderValue,
) -> Response<Body> {
    let on_upgrade = hyper::upgrade::on(&mut req);
    let busy = req.extensions_mut().remove::<crate::http::Busy>();
    let ending = super::tunnel::Ending {
        cut: req.extensions().get::<Cut>().cloned().unwrap_or_default(),
        websocket: protocol.as_bytes().eq_ignore_ascii_case(b"websocket"),
    };
    let (mut parts, _) = req.into_parts();
    let inst = lease.instance().clone();
    // HTTP/2's CONNECT becomes HTTP/1.1's GET with a key of TQServer's.
    let h2 = parts.method == Method::CONNECT;
    let key = h2.then(websocket_key);
    if h2 {
        parts.method = Method::GET;
        parts.headers.remove(header::SEC_WEBSOCKET_KEY);
    }
    // The two hop-by-hop headers this request is about, TQServer's own.
    let mut own: Vec<(&str, &[u8])> =
        vec![("upgrade", protocol.as_bytes()), ("connection", b"upgrade")];
    if let Some(k) = &key {
        own.push(("sec-websocket-key", k.as_bytes()));
    }
    let (strip, timeouts) = in_force(svc);
    let head_bytes = head_with(&parts, &conn, None, strip, &own);
    let c = match Conn::connect(inst.addr()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(worker = %svc.worker.name, port = inst.port, "cannot connect: {e}");
            return bad_gateway(svc, UpstreamError::Connect);
        }
    };
    let answer = match tokio::time::timeout(timeouts.head, c.upgrade(&head_bytes)).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            tracing::warn!(worker = %svc.worker.name, port = inst.port, "upstream error: {e}");
            return bad_gateway(svc, UpstreamError::BadResponse);
        }
        Err(_) => return no_answer(svc, inst.port, timeouts.head),
    };
    let (headers, switched, up) = match answer {
        Ok(a) => a,
        Err((head, c)) => {
            // Not switched (a 400, a 403): an HTTP answer like any other.
            let body = Streaming::new(c, &head, None, Some(lease), timeouts.read);
            let mut r = rbody::response(head, body);
            r.extensions_mut().insert(ServedBy::Port(inst.port));
            return r;
        }
    };
    let name = svc.worker.name.clone();
    let metrics = svc.metrics.clone();
    tokio::spawn(async move {
        let client = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(worker = %name, "the client's upgrade failed: {e}");
                return;
            }
        };
        let mut client = hyper_util::rt::TokioIo::new(client);
        let super::conn::Upgraded { mut stream, early } = up;
        if !early.is_empty() {
            use tokio::io::AsyncWriteExt;
            if client.write_all(&early).await.is_err() {
                return;
            }
        }
        metrics.upgraded.inc();
        let idle = timeouts.upgrade_idle;
        let copied = super::tunnel::copy(&mut client, &mut stream, idle, &ending, |up, down| {
            metrics.upgraded_up.inc_by(up);
            metrics.upgraded_down.inc_by(down);
        })
        .await;
        metrics.upgraded.dec();
        tracing::debug!(worker = %name, "upgraded connection ended: {copied:?}");
        drop((lease, busy));
    });
    let mut r = Response::new(crate::http::empty());
    *r.headers_mut() = headers;
    if h2 {
        // A 200 opens the stream (RFC 8441 §5); the accept answered our key.
        r.headers_mut().remove(header::SEC_WEBSOCKET_ACCEPT);
    } else {
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut().insert(header::UPGRADE, switched);
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    r.extensions_mut().insert(ServedBy::Port(inst.port));
    r
}

/// The request head for an instance: the client's end-to-end headers
/// ([`passed_on`]), `Host` (from the URI for HTTP/2 and HTTP/1.0 clients
/// without one), `X-Forwarded-For` / `-Proto` / `-Host`, and the framing
/// of the body as TQServer sends it; with `strip` (the route, for
/// `proxy.strip_prefix`), the path without it and `X-Forwarded-Prefix`.
/// Public for the fuzz target `native_head`: whatever the client sent,
/// this is one well-formed head with exactly the framing given.
pub fn head(
    parts: &http::request::Parts,
    conn: &ConnInfo,
    framing: Option<Framing>,
    strip: Option<&str>,
) -> Bytes {
    head_with(parts, conn, framing, strip, &[])
}

/// The request target without the route `prefix` (on a segment
/// boundary, as the router matched it): `/api/items?x` is `/items?x`,
/// `/api` and `/api?x` are `/` and `/?x`. `None` when it does not start
/// with it.
pub fn without_prefix<'a>(target: &'a str, prefix: &str) -> Option<std::borrow::Cow<'a, str>> {
    let rest = target.strip_prefix(prefix)?;
    match rest.as_bytes().first() {
        Some(b'/') => Some(rest.into()),
        None => Some("/".into()),
        Some(b'?') => Some(format!("/{rest}").into()),
        Some(_) => None,
    }
}

/// [`head`] with `more` lines of TQServer's own after the forwarding ones
/// (an upgrade's `Upgrade` and `Connection`).
fn head_with(
    parts: &http::request::Parts,
    conn: &ConnInfo,
    framing: Option<Framing>,
    strip: Option<&str>,
    more: &[(&str, &[u8])],
) -> Bytes {
    let h = &parts.headers;
    let named = connection_named(h);
    let trusted = conn.client.via_trusted;
    let peer = forwarded::canonical(conn.peer.ip()).to_string();
    // A trusted proxy's chain is extended; anyone else's is replaced.
    let xff = match (trusted, h.get(forwarded::XFF).and_then(|v| v.to_str().ok())) {
        (true, Some(prev)) => format!("{prev}, {peer}"),
        _ => peer,
    };
    let host = h
        .get(header::HOST)
        .map(HeaderValue::as_bytes)
        .or_else(|| parts.uri.authority().map(|a| a.as_str().as_bytes()))
        .unwrap_or(b"localhost");
    let mut extra: Vec<(&str, &[u8])> = vec![("host", host), (forwarded::XFF, xff.as_bytes())];
    if !(trusted && h.contains_key(forwarded::XFP)) {
        let proto: &[u8] = if conn.client.https { b"https" } else { b"http" };
        extra.push((forwarded::XFP, proto));
    }
    if !(trusted && h.contains_key(forwarded::XFH)) {
        extra.push((forwarded::XFH, host));
    }
    let full = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let prev_prefix = h
        .get(forwarded::XFPREFIX)
        .and_then(|v| v.to_str().ok())
        .filter(|_| trusted);
    let stripped = strip
        .filter(|p| *p != "/")
        .and_then(|p| without_prefix(full, p).map(|t| (p, t)));
    let prefix = match (&stripped, prev_prefix) {
        // A trusted proxy took its own prefix off before this one.
        (Some((p, _)), Some(prev)) => Some(format!("{}{p}", prev.trim_end_matches('/'))),
        (Some((p, _)), None) => Some((*p).to_string()),
        (None, prev) => prev.map(str::to_string),
    };
    if let Some(p) = &prefix {
        extra.push((forwarded::XFPREFIX, p.as_bytes()));
    }
    extra.extend_from_slice(more);
    let target = stripped.as_ref().map_or(full, |(_, t)| t.as_ref());
    let kept = h.iter().filter(|(k, _)| passed_on(k, &named, trusted));
    h1::request_head(&parts.method, target, kept, &extra, framing)
}

/// The 504 (and its log line) for an instance on `port` that sent no
/// answer head within `wait`.
fn no_answer(svc: &NativeWorker, port: u16, wait: std::time::Duration) -> Response<Body> {
    tracing::warn!(worker = %svc.worker.name, port, "no answer within {wait:?}");
    gateway_timeout(svc, wait, "did not answer", "scaling.request_timeout")
}

/// The 504 for an instance that `what` (did not answer, took none of
/// the body) within `wait`, the setting `key`.
fn gateway_timeout(
    svc: &NativeWorker,
    wait: std::time::Duration,
    what: &str,
    key: &str,
) -> Response<Body> {
    let mut r = pages::error(
        StatusCode::GATEWAY_TIMEOUT,
        &format!(
            "The worker {} {what} within {wait:?} ({key}).",
            svc.worker.name
        ),
    );
    r.extensions_mut().insert(UpstreamError::Timeout);
    r
}

fn bad_gateway(svc: &NativeWorker, kind: UpstreamError) -> Response<Body> {
    let mut r = pages::error(
        StatusCode::BAD_GATEWAY,
        &format!("The worker {} failed to answer.", svc.worker.name),
    );
    r.extensions_mut().insert(kind);
    r
}

/// The 503 (or dev-mode problem page) when no instance can take a request.
fn unavailable(svc: &NativeWorker, e: NoInstance) -> Response<Body> {
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
            .header("connection", "close, x-secret, content-length, host")
            .header("x-secret", "1")
            .header("keep-alive", "timeout=5")
            .header("x-forwarded-for", "10.0.0.1")
            .header("x-forwarded-proto", "https")
            .header("forwarded", "for=10.0.0.1")
            .header("x_real", "1")
            .header("proxy", "http://evil")
            .header("content-length", "3")
            .header("cookie", "a=1")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let conn = ConnInfo::new(
            "127.0.0.1:5000".parse().unwrap(),
            "127.0.0.1:80".parse().unwrap(),
        );
        let bytes = head(&parts, &conn, Some(Framing::Length(3)), None);
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.starts_with("POST /api/x?y=1 HTTP/1.1\r\n"), "{text}");
        for gone in [
            "connection",
            "x-secret",
            "keep-alive",
            "transfer-encoding",
            "forwarded",
            "x_real",
            "proxy",
            "10.0.0.1",
        ] {
            let line = format!("\r\n{gone}:");
            let anywhere = !gone.contains('-') && gone.contains('.');
            assert!(
                !(text.contains(&line) || anywhere && text.contains(gone)),
                "{gone} in {text}"
            );
        }
        for kept in [
            "host: example.org\r\n",
            "content-length: 3\r\n",
            "cookie: a=1\r\n",
            "x-forwarded-for: 127.0.0.1\r\n",
            "x-forwarded-proto: http\r\n",
            "x-forwarded-host: example.org\r\n",
        ] {
            assert!(text.contains(kept), "{kept} not in {text}");
        }
        assert_eq!(text.matches("content-length").count(), 1, "{text}");
        assert!(!text.contains("https"), "{text}");
        assert!(text.ends_with("\r\n\r\n"));
        // Through a trusted proxy: its chain is extended, its proto kept.
        let trusted = forwarded::Trusted::new(vec!["127.0.0.0/8".parse().unwrap()]);
        let conn = conn.for_request(&trusted, &parts.headers);
        let bytes = head(&parts, &conn, Some(Framing::Length(3)), None);
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(
            text.contains("x-forwarded-for: 10.0.0.1, 127.0.0.1\r\n"),
            "{text}"
        );
        assert!(text.contains("x-forwarded-proto: https\r\n"), "{text}");
        assert!(text.contains("forwarded: for=10.0.0.1\r\n"), "{text}");
        // HTTP/2 (no Host header): from the URI; a body without length is chunked.
        let req = Request::builder()
            .method("PUT")
            .uri("http://example.org:8080/u")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let conn = ConnInfo::new("[::1]:5000".parse().unwrap(), "[::1]:80".parse().unwrap());
        let bytes = head(&parts, &conn, Some(Framing::Chunked), None);
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.starts_with("PUT /u HTTP/1.1\r\n"), "{text}");
        assert!(text.contains("host: example.org:8080\r\n"), "{text}");
        assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
    }
}
