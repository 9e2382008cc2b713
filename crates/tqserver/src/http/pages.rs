//! The pages TQServer answers with itself: 404, 413, 502, 504… Small,
//! self-contained HTML, the reason in words, nothing from the request
//! echoed back unescaped.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::Body;

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An error page with `status` and a sentence saying why.
pub fn error(status: StatusCode, why: &str) -> Response<Body> {
    let code = status.as_u16();
    let reason = status.canonical_reason().unwrap_or("Error");
    let html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{code} {reason}</title>\
         <style>body{{font:16px/1.5 system-ui,sans-serif;margin:4em auto;max-width:40em;color:#222}}\
         h1{{font-size:1.6em}}footer{{color:#888;font-size:.8em}}</style></head>\
         <body><h1>{code} {reason}</h1><p>{}</p><footer>tqserver</footer></body></html>\n",
        escape(why)
    );
    let mut r = Response::new(
        Full::new(Bytes::from(html))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A redirect to `location`.
pub fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let mut r = error(status, &format!("Moved to {location}"));
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}
