//! A CGI response head from PHP as an HTTP response head: the status
//! checked, hop-by-hop headers dropped, and `Content-Length` never passed
//! on unchecked. A pure function ([`http_head`]) over the parsed head, so
//! the fuzz target `cgi_response` can call it directly.
//!
//! PHP's own `Content-Length` is a claim about bytes still to come: a
//! warning printed after `header('Content-Length: 5')` makes the body
//! longer than declared, and a client reading the declared length would
//! take the rest as a second response. So the length is parsed strictly
//! here (several different values, or anything but digits, is a bad
//! response: 502), and the proxy sends exactly that many bytes, no more
//! ([`super::proxy`]).

use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use tqserver_fastcgi::proto::ResponseHead;

/// The HTTP head for a CGI response.
#[derive(Debug)]
pub struct HttpHead {
    /// The status (200–999 as HTTP allows; never 1xx).
    pub status: StatusCode,
    /// End-to-end headers, `Content-Length` included when PHP gave a
    /// valid one.
    pub headers: HeaderMap,
    /// The body length PHP declared, checked.
    pub length: Option<u64>,
}

/// Why a CGI head cannot be an HTTP response (502).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadHead {
    /// 1xx, or not a status HTTP knows how to carry.
    #[error("PHP answered with status {0}, which HTTP cannot carry as a final response")]
    Status(u16),
    /// `Content-Length` is not a number, or has several different values.
    #[error("PHP sent an invalid Content-Length: {0:?}")]
    Length(String),
}

use crate::http::body::parse_length;

/// Every `Content-Length` line (and comma-separated list) must name the
/// same number.
fn declared_length(head: &ResponseHead) -> Result<Option<u64>, BadHead> {
    let mut found: Option<u64> = None;
    for v in head.get_all("content-length") {
        for part in v.split(|&b| b == b',') {
            let n = parse_length(part)
                .ok_or_else(|| BadHead::Length(String::from_utf8_lossy(v).into_owned()))?;
            if found.is_some_and(|m| m != n) {
                return Err(BadHead::Length(String::from_utf8_lossy(v).into_owned()));
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// The HTTP head of `head`.
pub fn http_head(head: &ResponseHead) -> Result<HttpHead, BadHead> {
    let status = match StatusCode::from_u16(head.status) {
        Ok(s) if s.as_u16() >= 200 => s,
        _ => return Err(BadHead::Status(head.status)),
    };
    let length = declared_length(head)?;
    let mut headers = HeaderMap::with_capacity(head.headers.len());
    for (name, value) in &head.headers {
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name),
            HeaderValue::from_maybe_shared(value.clone()),
        ) else {
            continue; // the head parser already refused anything invalid
        };
        if crate::http::hop_by_hop(&n) || n == header::CONTENT_LENGTH {
            continue;
        }
        headers.append(n, v);
    }
    if let Some(n) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    Ok(HttpHead {
        status,
        headers,
        length,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn head(status: u16, h: &[(&str, &str)]) -> ResponseHead {
        ResponseHead {
            status,
            reason: None,
            headers: h
                .iter()
                .map(|(k, v)| (Bytes::from(k.to_string()), Bytes::from(v.to_string())))
                .collect(),
        }
    }

    #[test]
    fn lengths_are_checked() {
        let h = http_head(&head(200, &[("Content-Length", "5"), ("X-A", "1")])).unwrap();
        assert_eq!(h.length, Some(5));
        assert_eq!(h.headers["content-length"], "5");
        assert_eq!(
            http_head(&head(
                200,
                &[("Content-Length", "5"), ("content-length", "5, 5")]
            ))
            .unwrap()
            .length,
            Some(5)
        );
        for bad in [
            "abc",
            "",
            "+5",
            "-1",
            "5 5",
            "0x10",
            "3,4",
            "99999999999999999999",
        ] {
            assert!(
                http_head(&head(200, &[("Content-Length", bad)])).is_err(),
                "{bad:?}"
            );
        }
        assert!(
            http_head(&head(
                200,
                &[("Content-Length", "5"), ("Content-Length", "6")]
            ))
            .is_err()
        );
        assert_eq!(http_head(&head(200, &[])).unwrap().length, None);
    }

    #[test]
    fn status_and_hop_by_hop() {
        assert_eq!(
            http_head(&head(101, &[])).unwrap_err(),
            BadHead::Status(101)
        );
        assert_eq!(http_head(&head(999, &[])).unwrap().status.as_u16(), 999);
        let h = http_head(&head(
            404,
            &[
                ("Transfer-Encoding", "chunked"),
                ("Connection", "close"),
                ("Set-Cookie", "a=1"),
                ("Set-Cookie", "b=2"),
            ],
        ))
        .unwrap();
        assert!(h.headers.get("transfer-encoding").is_none());
        assert!(h.headers.get("connection").is_none());
        assert_eq!(h.headers.get_all("set-cookie").iter().count(), 2);
    }
}
