//! `X-Sendfile` and `X-Accel-Redirect`: a PHP answer that names a file
//! (in one of the worker's `sendfile` folders) is answered with that
//! file by TQServer, as Apache's mod_xsendfile and nginx's internal
//! redirect do. The PHP process is let go at once (the rest of its
//! output is read and dropped); the file goes out as any static file,
//! with ranges, validators and 304s, from a descriptor opened under the
//! worker's symlink policy.
//!
//! - `X-Sendfile: /srv/files/a.pdf`: a path inside one of the folders.
//! - `X-Accel-Redirect: /protected/a.pdf`: a URI (percent-encoded; a
//!   query is ignored) under one of the prefixes.
//!
//! PHP's own headers stay (Content-Type, Content-Disposition,
//! Cache-Control, cookies; the Content-Type unless it is PHP's default,
//! `text/html; charset=UTF-8`, when the file's own type is used), except
//! those that describe a body
//! (`Content-Length`, `Content-Range`, `ETag`, `Last-Modified`,
//! `Accept-Ranges`), which the file's own replace, and the `X-Accel-*`
//! ones. A name outside the folders is refused (403) and logged; a
//! missing file is 404.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, Response, StatusCode};

use super::script::{self, DocRoot, Roots, Target};
use crate::http::{Body, pages, static_files};
use crate::logging::WorkerLog;

/// The request header (a CGI param) that tells an application which
/// header to use, as Rack's and Symfony's `BinaryFileResponse` read it.
pub const TYPE_PARAM: &str = "HTTP_X_SENDFILE_TYPE";

const SENDFILE: &str = "x-sendfile";
const ACCEL: &str = "x-accel-redirect";

/// What the file's answer takes from PHP's: none of what describes a body.
fn kept(name: &HeaderName) -> bool {
    !(name == header::CONTENT_LENGTH
        || name == header::CONTENT_RANGE
        || name == header::ETAG
        || name == header::LAST_MODIFIED
        || name == header::ACCEPT_RANGES
        || name == header::CONTENT_ENCODING
        || name.as_str() == SENDFILE
        || name.as_str().starts_with("x-accel-"))
}

/// Whether PHP's Content-Type is the one PHP sends when the script set
/// none (`default_mimetype` and `default_charset` as shipped): the file's
/// own type is better then (nginx keeps PHP's, a known surprise).
fn php_default_type(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes()
            .eq_ignore_ascii_case(b"text/html; charset=UTF-8")
    })
}

/// `resp` from PHP, or the file it names when the worker has `sendfile`
/// folders and PHP named one; `method` and `req` (the request's headers)
/// give HEAD, ranges and conditions.
pub async fn answer(
    roots: &Roots,
    resp: Response<Body>,
    method: &Method,
    req: &HeaderMap,
    log: &WorkerLog,
) -> Response<Body> {
    if roots.sendfile.is_empty() {
        return resp;
    }
    let h = resp.headers();
    let named = if let Some(v) = h.get(ACCEL) {
        Some((ACCEL, v.as_bytes().to_vec()))
    } else {
        h.get(SENDFILE).map(|v| (SENDFILE, v.as_bytes().to_vec()))
    };
    let Some((which, value)) = named else {
        return resp;
    };
    let (php_head, body) = resp.into_parts();
    // Dropped: the process's remaining output is read in the background
    // and the process goes back to its pool.
    drop(body);
    let shown = String::from_utf8_lossy(&value).into_owned();
    let found = if which == ACCEL {
        by_uri(&roots.sendfile, &value)
    } else {
        by_path(&roots.sendfile, &value)
    };
    let Some((doc, rel)) = found else {
        log.error(&format!(
            "403: PHP's {which}: {shown:?} is not under a sendfile folder of this worker"
        ));
        return pages::error(StatusCode::FORBIDDEN, "This file may not be sent.");
    };
    let opened = match script::named_file(doc, &rel) {
        Target::Static(o) => o,
        Target::NotFound => {
            return pages::error(StatusCode::NOT_FOUND, "There is nothing at this address.");
        }
        other => {
            log.error(&format!(
                "403: PHP's {which}: {shown:?} refused ({other:?})"
            ));
            return pages::error(StatusCode::FORBIDDEN, "This file may not be sent.");
        }
    };
    let as_get = if method == Method::HEAD {
        Method::HEAD
    } else {
        Method::GET
    };
    let path = opened.path.clone();
    let mut resp = static_files::serve(opened.into_file(), &path, &as_get, req).await;
    if resp.status().is_success() || resp.status() == StatusCode::NOT_MODIFIED {
        let out = resp.headers_mut();
        // PHP's values replace the file's (its Content-Type over the
        // guess); its repeats (Set-Cookie) all stay.
        for name in php_head.headers.keys() {
            if !kept(name) || (name == header::CONTENT_TYPE && php_default_type(&php_head.headers))
            {
                continue;
            }
            out.remove(name);
            for v in php_head.headers.get_all(name) {
                out.append(name.clone(), v.clone());
            }
        }
    }
    resp
}

/// `X-Accel-Redirect`'s URI (decoded; no query) under a prefix: its
/// folder and the path below it.
fn by_uri<'a>(folders: &'a [(String, DocRoot)], value: &[u8]) -> Option<(&'a DocRoot, Vec<u8>)> {
    let uri = value.split(|&b| b == b'?').next().unwrap_or(&[]);
    let decoded: Vec<u8> = percent_encoding::percent_decode(uri).collect();
    folders.iter().find_map(|(prefix, doc)| {
        let rest = decoded.strip_prefix(prefix.as_bytes())?;
        rest.starts_with(b"/").then(|| (doc, rest.to_vec()))
    })
}

/// `X-Sendfile`'s path inside a folder: the folder and the path below it.
fn by_path<'a>(folders: &'a [(String, DocRoot)], value: &[u8]) -> Option<(&'a DocRoot, Vec<u8>)> {
    let path = Path::new(std::ffi::OsStr::from_bytes(value));
    if !path.is_absolute() {
        return None;
    }
    folders.iter().find_map(|(_, doc)| {
        let rest = path.strip_prefix(doc.path()).ok()?;
        Some((doc, rest.as_os_str().as_bytes().to_vec()))
    })
}
