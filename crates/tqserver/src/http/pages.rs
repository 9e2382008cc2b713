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

/// A dev-mode page that shows what went wrong in full: a build's compiler
/// output, a crashed worker's last lines. Never used in prod mode, where
/// [`error`] says only that the worker is unavailable.
pub fn problem(status: StatusCode, heading: &str, title: &str, detail: &str) -> Response<Body> {
    let code = status.as_u16();
    let detail = if detail.trim().is_empty() {
        String::new()
    } else {
        format!("<pre>{}</pre>", escape(detail))
    };
    let html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{code} {}</title>\
         <style>body{{font:15px/1.5 system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222}}\
         h1{{font-size:1.4em;color:#b00}}pre{{background:#1e1e1e;color:#eee;padding:1em;overflow:auto;font-size:13px}}\
         footer{{color:#888;font-size:.8em}}</style></head>\
         <body><h1>{}</h1><p>{}</p>{detail}<footer>tqserver (dev mode): this page reloads by itself after the next successful build</footer></body></html>\n",
        escape(heading),
        escape(heading),
        escape(title)
    );
    let mut r = error(status, "");
    *r.body_mut() = Full::new(Bytes::from(html))
        .map_err(|never| match never {})
        .boxed_unsync();
    r
}

/// A redirect to `location`.
///
/// `location` is a path on this site. One that a browser would read as
/// another site's address (`//evil.example/`, `/\evil.example/`) is never
/// sent: its leading slashes are merged into one, as nginx's
/// `merge_slashes` would have.
pub fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let location = same_site(location);
    let mut r = error(status, &format!("Moved to {location}"));
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// `path` with any run of leading `/` and `\` made one `/`.
fn same_site(path: &str) -> String {
    let rest = path.trim_start_matches(['/', '\\']);
    format!("/{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_stay_on_the_site() {
        for (given, sent) in [
            ("/sub/", "/sub/"),
            ("//evil.example/x/", "/evil.example/x/"),
            ("/\\evil.example/", "/evil.example/"),
            ("\\/\\x", "/x"),
            ("/", "/"),
        ] {
            let r = redirect(StatusCode::MOVED_PERMANENTLY, given);
            assert_eq!(r.headers()[header::LOCATION], sent, "{given}");
        }
    }
}
