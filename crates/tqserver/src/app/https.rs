//! What `server.tls` changes for requests: ACME http-01 answers on
//! `/.well-known/acme-challenge/`, the plain port's 308 to https
//! (`redirect_http`), and `Strict-Transport-Security` on HTTPS answers
//! (`hsts`).

use http::{HeaderValue, Request, Response, StatusCode, header};

use crate::certs::Certs;
use crate::config::TlsSettings;
use crate::http::{Body, ConnInfo, pages};

/// Where ACME http-01 challenges are asked (RFC 8555 §8.3).
pub const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// An answer TQServer gives itself before routing: a challenge's key
/// authorization, or the redirect to https.
pub fn before<B>(
    tls: Option<&TlsSettings>,
    certs: Option<&Certs>,
    req: &Request<B>,
    conn: &ConnInfo,
) -> Option<Response<Body>> {
    let tls = tls?;
    let path = req.uri().path();
    if let Some(token) = path.strip_prefix(CHALLENGE_PREFIX) {
        if let Some(answer) = certs.and_then(|c| c.http01_answer(token)) {
            let mut r = Response::new(full(answer));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            return Some(r);
        }
        // Not one of ours: the application may serve its own (certbot's
        // webroot), so no redirect either.
        return None;
    }
    if !tls.redirect_http || conn.client.https {
        return None;
    }
    Some(match redirect_target(req, tls.port) {
        Some(location) => {
            let mut r = pages::error(
                StatusCode::PERMANENT_REDIRECT,
                "This site is served over HTTPS.",
            );
            r.headers_mut().insert(header::LOCATION, location);
            r
        }
        None => pages::error(
            StatusCode::BAD_REQUEST,
            "The request has no valid Host to redirect to HTTPS with.",
        ),
    })
}

/// Adds `Strict-Transport-Security` to an HTTPS answer (not over plain
/// HTTP: RFC 6797 §7.2), unless the application sent its own.
pub fn hsts<B>(resp: &mut Response<B>, tls: Option<&TlsSettings>, conn: &ConnInfo) {
    let Some(age) = tls.and_then(|t| t.hsts_max_age) else {
        return;
    };
    if !conn.client.https
        || resp
            .headers()
            .contains_key(header::STRICT_TRANSPORT_SECURITY)
    {
        return;
    }
    if let Ok(v) = HeaderValue::from_str(&format!("max-age={age}")) {
        resp.headers_mut()
            .insert(header::STRICT_TRANSPORT_SECURITY, v);
    }
}

/// `https://{host}[:port]{path and query}` from the request's Host (or
/// HTTP/2 authority), checked: a host is a DNS name, an IPv4 address or a
/// bracketed IPv6 one, never anything that could end the header or
/// change the URL's authority.
fn redirect_target<B>(req: &Request<B>, port: u16) -> Option<HeaderValue> {
    let raw = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })?;
    let host = strip_port(&raw)?;
    let ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    };
    if !ok {
        return None;
    }
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{host}{target}")
    } else {
        format!("https://{host}:{port}{target}")
    };
    HeaderValue::from_str(&location).ok()
}

/// `host[:port]` → host (IPv6 keeps its brackets); `None` when what
/// follows a colon is not a port.
fn strip_port(raw: &str) -> Option<&str> {
    if raw.starts_with('[') {
        let end = raw.find(']')?;
        let rest = &raw[end + 1..];
        if rest.is_empty()
            || rest
                .strip_prefix(':')
                .is_some_and(|p| p.parse::<u16>().is_ok())
        {
            return Some(&raw[..=end]);
        }
        return None;
    }
    match raw.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => Some(h),
        Some(_) => None,
        None => Some(raw),
    }
}

fn full(s: String) -> Body {
    use http_body_util::BodyExt as _;
    http_body_util::Full::new(bytes::Bytes::from(s))
        .map_err(|never| match never {})
        .boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(host: &str, target: &str) -> Request<()> {
        Request::builder()
            .uri(target)
            .header(header::HOST, host)
            .body(())
            .unwrap()
    }

    #[test]
    fn redirect_targets_are_checked() {
        let loc = |h: &str, t: &str, p: u16| {
            redirect_target(&req(h, t), p).map(|v| v.to_str().unwrap().to_string())
        };
        assert_eq!(
            loc("example.com", "/a?b=1", 443).as_deref(),
            Some("https://example.com/a?b=1")
        );
        assert_eq!(
            loc("example.com:8080", "/", 8443).as_deref(),
            Some("https://example.com:8443/")
        );
        assert_eq!(
            loc("[::1]:8080", "/x", 8443).as_deref(),
            Some("https://[::1]:8443/x")
        );
        assert_eq!(loc("evil.com/x", "/", 443), None);
        assert_eq!(loc("a@evil.com", "/", 443), None);
        assert_eq!(loc("example.com:80:80", "/", 443), None);
        assert_eq!(loc("", "/", 443), None);
        assert_eq!(loc("[zz]", "/", 443), None);
    }
}
