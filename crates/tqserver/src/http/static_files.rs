//! Static files under a document root: Content-Type, ETag and
//! Last-Modified, 304 on If-None-Match / If-Modified-Since, single byte
//! ranges (206 / 416) honouring If-Range, HEAD, streamed bodies.
//!
//! The file is read on the runtime thread, as nginx reads in its event
//! loop: `pread` of at most [`CHUNK`] bytes each time hyper asks for more
//! (so a slow client holds one chunk, not the file). From the page cache
//! that is a copy of a few microseconds; a hop through tokio's blocking
//! pool per read cost more than the read itself (a context switch each
//! way: 41% of the time in the scheduler for 4 KiB files). A read from a
//! cold disk does block that thread for its duration, as it blocks an
//! nginx worker without `aio`.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;

use super::{Body, empty, pages};

/// The strong validator nginx uses: modification time and size, in hex.
fn etag(len: u64, mtime: SystemTime) -> String {
    let secs = mtime.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("\"{secs:x}-{len:x}\"")
}

fn etag_matches(list: &str, tag: &str) -> bool {
    list.split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == tag)
}

/// Parses a single `bytes=` range against `len`; `None`: ignore the header
/// (serve everything); `Some(Err)`: unsatisfiable.
fn parse_range(h: &str, len: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = h.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        // Several ranges: answering with the whole file is allowed (RFC 9110 §14.2).
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 {
            return Some(Err(()));
        }
        (len.saturating_sub(n), len.checked_sub(1)?)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            len.saturating_sub(1)
        } else {
            b.parse::<u64>().ok()?.min(len.saturating_sub(1))
        };
        if start >= len || end < start {
            return Some(Err(()));
        }
        (start, end)
    };
    Some(Ok(range))
}

/// Serves `file` (already open: never reopened by name, so the file the
/// caller checked is the file sent; with the metadata the check read) for
/// a GET or HEAD; `path` gives its Content-Type.
pub async fn serve(
    file: std::io::Result<(std::fs::File, std::fs::Metadata)>,
    path: &Path,
    method: &Method,
    req: &HeaderMap,
) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = pages::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "This is a static file: only GET and HEAD are allowed.",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let (file, meta) = match file {
        Ok((f, m)) if m.is_file() => (f, m),
        _ => return pages::error(StatusCode::NOT_FOUND, "Not found."),
    };
    let len = meta.len();
    let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
    let tag = etag(len, mtime);
    let last_modified = httpdate::fmt_http_date(mtime);
    let mime = mime_guess::from_path(path).first_or_octet_stream();

    let mut resp = Response::builder()
        .header(header::ETAG, &tag)
        .header(header::LAST_MODIFIED, &last_modified)
        .header(header::ACCEPT_RANGES, "bytes");

    let not_modified = match req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        Some(list) => etag_matches(list, &tag),
        None => req
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .is_some_and(|since| {
                let m = mtime.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                let s = since.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                m <= s
            }),
    };
    if not_modified {
        return resp
            .status(StatusCode::NOT_MODIFIED)
            .body(empty())
            .expect("valid response");
    }

    // If-Range: the range applies only if the validator still matches.
    let range_ok = req
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| {
            v == tag
                || httpdate::parse_http_date(v)
                    .is_ok_and(|d| httpdate::fmt_http_date(d) == last_modified)
        });
    let range = if range_ok {
        req.get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|h| parse_range(h, len))
    } else {
        None
    };
    resp = resp.header(header::CONTENT_TYPE, mime.as_ref());
    let (status, start, count) = match range {
        None => (StatusCode::OK, 0, len),
        Some(Err(())) => {
            return resp
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                .body(empty())
                .expect("valid response");
        }
        Some(Ok((a, b))) => {
            resp = resp.header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{len}"));
            (StatusCode::PARTIAL_CONTENT, a, b - a + 1)
        }
    };
    resp = resp.status(status).header(header::CONTENT_LENGTH, count);
    if method == Method::HEAD {
        return resp.body(empty()).expect("valid response");
    }
    let body = FileBody {
        file,
        offset: start,
        left: count,
    };
    resp.body(body.boxed_unsync()).expect("valid response")
}

/// The most a static body reads at a time.
const CHUNK: u64 = 128 << 10;

/// `left` bytes of `file` from `offset`, read a chunk per frame.
struct FileBody {
    file: std::fs::File,
    offset: u64,
    left: u64,
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        if this.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let want = usize::try_from(this.left.min(CHUNK)).unwrap_or(CHUNK as usize);
        let mut buf = BytesMut::zeroed(want);
        let r = match this.file.read_at(&mut buf, this.offset) {
            // Shorter than its Content-Length (truncated meanwhile): an
            // error, so the connection is cut rather than left hanging.
            Ok(0) => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file got shorter while it was sent",
            )),
            Ok(n) => {
                buf.truncate(n);
                this.offset += n as u64;
                this.left -= n as u64;
                Ok(http_body::Frame::data(buf.freeze()))
            }
            Err(e) => Err(e),
        };
        if r.is_err() {
            this.left = 0;
        }
        std::task::Poll::Ready(Some(r))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(Ok((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=95-200", 100), Some(Ok((95, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=5-1", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }

    #[test]
    fn etags_compare_weakly() {
        assert!(etag_matches("\"a\", W/\"b\"", "\"b\""));
        assert!(etag_matches("*", "\"x\""));
        assert!(!etag_matches("\"a\"", "\"b\""));
    }
}
