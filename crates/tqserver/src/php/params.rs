//! HTTP request → CGI params: what nginx's `fastcgi_params` sends, plus
//! SCRIPT_FILENAME, PATH_INFO, PATH_TRANSLATED and every header as
//! `HTTP_*`. SCRIPT_NAME and REQUEST_URI carry the route prefix, so an
//! application under `/blog` builds its own URLs right.
//!
//! REMOTE_ADDR is the client ([`crate::http::forwarded`]: through a
//! trusted proxy, the address it forwarded); `HTTPS=on` when the request
//! came over HTTPS. `X-Forwarded-*` and `Forwarded` from an untrusted
//! client never reach PHP (applications read them to find the client).

use std::net::IpAddr;
use std::path::Path;

use bytes::{BufMut, Bytes, BytesMut};
use http::request::Parts;
use http::{HeaderName, Version};
use tqserver_fastcgi::Params;

use crate::http::ConnInfo;

/// What the script resolution found.
pub struct ScriptInfo<'a> {
    /// Route prefix of the worker (`/blog`, or `/`).
    pub route: &'a str,
    /// Canonical document root.
    pub document_root: &'a Path,
    /// Absolute script path.
    pub file: &'a Path,
    /// Script path under the root, leading `/`.
    pub name: &'a str,
    /// PATH_INFO (decoded) or empty.
    pub path_info: &'a str,
}

fn plain_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn path_bytes(p: &Path) -> Bytes {
    use std::os::unix::ffi::OsStrExt;
    Bytes::copy_from_slice(p.as_os_str().as_bytes())
}

/// `HTTP_ACCEPT_LANGUAGE` from `accept-language`; `None` for names nginx
/// drops (with `_`, so `X_Forwarded_For` cannot pose as
/// `X-Forwarded-For`) and for `Proxy` (httpoxy).
fn cgi_header_name(name: &HeaderName) -> Option<Bytes> {
    let n = name.as_str();
    if n.contains('_') || n == "proxy" || n == "content-type" || n == "content-length" {
        return None;
    }
    let mut out = BytesMut::with_capacity(5 + n.len());
    out.put_slice(b"HTTP_");
    out.extend(n.bytes().map(|b| {
        if b == b'-' {
            b'_'
        } else {
            b.to_ascii_uppercase()
        }
    }));
    Some(out.freeze())
}

/// Builds the params of one request.
pub fn build(parts: &Parts, conn: &ConnInfo, s: &ScriptInfo<'_>) -> Params {
    let mut p = Params::with_capacity(32 + parts.headers.len());
    let prefix = if s.route == "/" { "" } else { s.route };
    let script_name = format!("{prefix}{}", s.name);
    let query = parts.uri.query().unwrap_or("");
    let request_uri = parts
        .uri
        .path_and_query()
        .map_or_else(|| "/".to_string(), |pq| pq.as_str().to_string());
    let headers = &parts.headers;
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| Bytes::copy_from_slice(v.as_bytes()))
    };
    let host = header("host").or_else(|| {
        parts
            .uri
            .authority()
            .map(|a| Bytes::copy_from_slice(a.as_str().as_bytes()))
    });
    let server_name = host
        .as_ref()
        .map(|h| {
            // Host without its port ([::1]:80 keeps its brackets).
            let s = &h[..];
            let end = match s.iter().rposition(|&b| b == b':') {
                Some(i) if !s[i..].contains(&b']') => i,
                _ => s.len(),
            };
            h.slice(..end)
        })
        .unwrap_or_else(|| Bytes::from(plain_ip(conn.local.ip()).to_string()));
    let protocol = match parts.version {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/1.1",
    };

    p.push("GATEWAY_INTERFACE", "CGI/1.1");
    p.push(
        "SERVER_SOFTWARE",
        concat!("tqserver/", env!("CARGO_PKG_VERSION")),
    );
    p.push("QUERY_STRING", query.to_string());
    p.push("REQUEST_METHOD", parts.method.as_str().to_string());
    p.push("CONTENT_TYPE", header("content-type").unwrap_or_default());
    p.push(
        "CONTENT_LENGTH",
        header("content-length").unwrap_or_default(),
    );
    p.push("SCRIPT_FILENAME", path_bytes(s.file));
    p.push("SCRIPT_NAME", script_name.clone());
    if !s.path_info.is_empty() {
        p.push("PATH_INFO", s.path_info.to_string());
        p.push(
            "PATH_TRANSLATED",
            format!("{}{}", s.document_root.display(), s.path_info),
        );
    }
    p.push("REQUEST_URI", request_uri);
    p.push("DOCUMENT_URI", format!("{script_name}{}", s.path_info));
    p.push("DOCUMENT_ROOT", path_bytes(s.document_root));
    p.push("SERVER_PROTOCOL", protocol);
    let client = &conn.client;
    p.push(
        "REQUEST_SCHEME",
        if client.https { "https" } else { "http" },
    );
    if client.https {
        p.push("HTTPS", "on");
    }
    p.push("REMOTE_ADDR", plain_ip(client.ip).to_string());
    p.push("REMOTE_PORT", client.port.to_string());
    p.push("SERVER_ADDR", plain_ip(conn.local.ip()).to_string());
    p.push("SERVER_PORT", conn.local.port().to_string());
    p.push("SERVER_NAME", server_name);
    // php-cgi refuses to run without it (cgi.force_redirect).
    p.push("REDIRECT_STATUS", "200");
    if headers.get("host").is_none() {
        if let Some(h) = &host {
            p.push("HTTP_HOST", h.clone());
        }
    }
    // Every header as HTTP_*, repeats joined as nginx joins them.
    let mut last: Option<&HeaderName> = None;
    for name in headers.keys() {
        if last == Some(name) {
            continue;
        }
        last = Some(name);
        let Some(cgi) = cgi_header_name(name) else {
            continue;
        };
        if !client.via_trusted && crate::http::forwarded::is_forwarding(name.as_str()) {
            continue;
        }
        let sep: &[u8] = if name == http::header::COOKIE {
            b"; "
        } else {
            b", "
        };
        let mut values = headers.get_all(name).iter();
        let first = values.next().map(|v| v.as_bytes()).unwrap_or_default();
        let value = match values.next() {
            None => Bytes::copy_from_slice(first),
            Some(second) => {
                let mut v = BytesMut::from(first);
                for more in std::iter::once(second).chain(values) {
                    v.put_slice(sep);
                    v.put_slice(more.as_bytes());
                }
                v.freeze()
            }
        };
        p.push(cgi, value);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method("POST").uri(uri);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn params_like_nginx() {
        let p = parts(
            "/blog/hello.php/extra?a=1",
            &[
                ("host", "example.com:8080"),
                ("content-type", "text/plain"),
                ("content-length", "3"),
                ("cookie", "a=1"),
                ("cookie", "b=2"),
                ("accept", "x"),
                ("accept", "y"),
                ("proxy", "http://evil"),
                ("x_forwarded_for", "1.2.3.4"),
                ("x-forwarded-for", "5.6.7.8"),
            ],
        );
        let conn = ConnInfo::new(
            "[::ffff:10.0.0.9]:5555".parse().unwrap(),
            "127.0.0.1:8080".parse().unwrap(),
        );
        let info = ScriptInfo {
            route: "/blog",
            document_root: Path::new("/srv/blog/public"),
            file: Path::new("/srv/blog/public/hello.php"),
            name: "/hello.php",
            path_info: "/extra",
        };
        let got = build(&p, &conn, &info);
        let g = |n: &str| got.get_str(n).map(str::to_string);
        assert_eq!(g("SCRIPT_NAME").as_deref(), Some("/blog/hello.php"));
        assert_eq!(
            g("SCRIPT_FILENAME").as_deref(),
            Some("/srv/blog/public/hello.php")
        );
        assert_eq!(g("PATH_INFO").as_deref(), Some("/extra"));
        assert_eq!(
            g("PATH_TRANSLATED").as_deref(),
            Some("/srv/blog/public/extra")
        );
        assert_eq!(
            g("REQUEST_URI").as_deref(),
            Some("/blog/hello.php/extra?a=1")
        );
        assert_eq!(g("QUERY_STRING").as_deref(), Some("a=1"));
        assert_eq!(g("SERVER_NAME").as_deref(), Some("example.com"));
        assert_eq!(g("HTTP_HOST").as_deref(), Some("example.com:8080"));
        assert_eq!(g("REMOTE_ADDR").as_deref(), Some("10.0.0.9"));
        assert_eq!(g("REMOTE_PORT").as_deref(), Some("5555"));
        assert_eq!(g("CONTENT_TYPE").as_deref(), Some("text/plain"));
        assert_eq!(g("CONTENT_LENGTH").as_deref(), Some("3"));
        assert_eq!(g("HTTP_COOKIE").as_deref(), Some("a=1; b=2"));
        assert_eq!(g("HTTP_ACCEPT").as_deref(), Some("x, y"));
        // From an untrusted client: not passed on.
        assert_eq!(g("HTTP_X_FORWARDED_FOR"), None);
        assert_eq!(g("HTTPS"), None);
        assert_eq!(g("HTTP_PROXY"), None);
        assert_eq!(g("HTTP_CONTENT_TYPE"), None);
        assert_eq!(g("REDIRECT_STATUS").as_deref(), Some("200"));
    }
}
