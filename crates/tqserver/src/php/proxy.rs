//! One HTTP request to a PHP worker: resolve the path, serve a static file
//! or send the script to php-fpm over FastCGI, stream the answer back.

use bytes::Bytes;
use futures_core::Stream as _;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;
use tqserver_fastcgi::ClientError;
use tqserver_fastcgi::client::{ErrorKind, Request as FcgiRequest, RequestBody};

use super::cgi::{AcquireError, Lease, RequestInfo};
use super::params::{self, ConnInfo, ScriptInfo};
use super::script::{self, Target};
use super::upstream::{SendError, Upstream};
use crate::access::ServedBy;
use crate::http::body::{self, BodyError, LimitedBody};
use crate::http::{Body, pages, static_files};
use crate::logging::WorkerLog;
use crate::metrics::UpstreamError;

pub use crate::http::body::Limits;

/// Serves `req` for the worker of `upstream`, mounted at `route`.
pub async fn serve(
    upstream: &Upstream,
    log: &WorkerLog,
    route: &str,
    req: Request<Incoming>,
    conn: ConnInfo,
    limits: Limits,
) -> Response<Body> {
    let worker = upstream.worker();
    let path = req.uri().path();
    let rel = if route == "/" {
        path
    } else {
        &path[route.len()..]
    };
    let get_or_head = req.method() == Method::GET || req.method() == Method::HEAD;
    let add_slash = |req: &Request<Incoming>| {
        let mut to = format!("{}/", req.uri().path());
        if let Some(q) = req.uri().query() {
            to.push('?');
            to.push_str(q);
        }
        pages::redirect(StatusCode::MOVED_PERMANENTLY, &to)
    };
    if rel.is_empty() && get_or_head {
        return add_slash(&req);
    }
    let target = script::resolve(upstream.doc_root(), rel, worker.php.front_controller);
    let (file, name, path_info) = match target {
        Target::Script {
            file,
            name,
            path_info,
        } => (file, name, path_info),
        Target::Static(file) => {
            return static_files::serve(&file, req.method(), req.headers()).await;
        }
        Target::AddSlash if get_or_head => return add_slash(&req),
        Target::AddSlash | Target::NotFound => {
            return pages::error(StatusCode::NOT_FOUND, "There is nothing at this address.");
        }
        Target::Forbidden => {
            return pages::error(
                StatusCode::FORBIDDEN,
                "This file is outside the document root.",
            );
        }
        Target::BadRequest(why) => return pages::error(StatusCode::BAD_REQUEST, why),
    };

    let declared = body::declared_length(req.headers());
    let req = match body::refuse_oversized(req, limits) {
        Ok(r) => r,
        Err(refused) => return *refused,
    };
    let (parts, body) = req.into_parts();
    let info = ScriptInfo {
        route,
        document_root: &worker.php.document_root,
        file: &file,
        name: &name,
        path_info: &path_info,
    };
    let mut params = params::build(&parts, &conn, &info);
    let chunked = declared.is_none()
        && (parts.headers.contains_key(header::TRANSFER_ENCODING) || !body.is_end_stream());
    let body = if declared.is_some_and(|n| n > 0) {
        RequestBody::from_stream(
            LimitedBody::new(body, limits.max_body_bytes, limits.read_timeout)
                .counting(parts.extensions.get()),
        )
    } else if chunked {
        // PHP reads no more than CONTENT_LENGTH of its input, so a body of
        // unknown length is received whole first (as nginx does), in
        // memory up to SPOOL_IN_MEMORY, in a temporary file beyond.
        match spool(body, limits, parts.extensions.get()).await {
            Ok((b, len)) => {
                params.set("CONTENT_LENGTH", len.to_string());
                b
            }
            Err(e) => return body::error_page(&e),
        }
    } else {
        RequestBody::empty()
    };
    let started = Instant::now();
    let content_length = params
        .get_str("CONTENT_LENGTH")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let info = || RequestInfo {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        script: file.display().to_string(),
        content_length,
    };
    let result = upstream
        .send(FcgiRequest::new(params).body(body), info)
        .await;
    let elapsed = started.elapsed();
    let served_by = match (&result, &upstream) {
        (Ok((_, Some(lease))), _) => Some(ServedBy::Pid(lease.pid())),
        (Ok(_), Upstream::Fpm(b)) => Some(ServedBy::Fpm(b.address_text.clone())),
        _ => None,
    };
    let mut response = match result {
        Ok((resp, lease)) => into_http(resp, lease, log, parts.method == Method::HEAD),
        Err(e) => error_page(&e, upstream, log, &parts.uri),
    };
    if let Some(threshold) = worker.logging.slow_threshold {
        if elapsed >= threshold {
            let by = served_by
                .as_ref()
                .map_or_else(String::new, |b| format!(", {b}"));
            log.emit(
                tracing::Level::WARN,
                &format!(
                    "slow request: {} {} took {}ms to answer (script {}{by}, threshold {}ms)",
                    parts.method,
                    parts.uri,
                    elapsed.as_millis(),
                    file.display(),
                    threshold.as_millis()
                ),
            );
        }
    }
    if let Some(b) = served_by {
        response.extensions_mut().insert(b);
    }
    response
}

/// Bodies of unknown length up to this size are kept in memory.
const SPOOL_IN_MEMORY: usize = 1 << 20;
async fn next_chunk(s: &mut LimitedBody) -> Option<Result<Bytes, BodyError>> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *s).poll_next(cx)).await
}

/// Receives a whole body of unknown length (bounded by the limit).
async fn spool(
    body: Incoming,
    limits: Limits,
    bytes_in: Option<&body::BytesIn>,
) -> Result<(RequestBody, u64), BodyError> {
    use tokio::io::{AsyncSeekExt, AsyncWriteExt};
    let mut s =
        LimitedBody::new(body, limits.max_body_bytes, limits.read_timeout).counting(bytes_in);
    let mut mem = bytes::BytesMut::new();
    let mut file: Option<tokio::fs::File> = None;
    let mut len = 0u64;
    let io = |e: std::io::Error| BodyError::Spool(e);
    while let Some(chunk) = next_chunk(&mut s).await {
        let chunk = chunk?;
        len += chunk.len() as u64;
        match file.as_mut() {
            None if mem.len() + chunk.len() <= SPOOL_IN_MEMORY => mem.extend_from_slice(&chunk),
            None => {
                // An unnamed temporary file: gone when closed.
                let mut f = tokio::fs::File::from_std(tempfile::tempfile().map_err(io)?);
                f.write_all(&mem).await.map_err(io)?;
                f.write_all(&chunk).await.map_err(io)?;
                mem.clear();
                file = Some(f);
            }
            Some(f) => f.write_all(&chunk).await.map_err(io)?,
        }
    }
    Ok(match file {
        None => (RequestBody::from(mem.freeze()), len),
        Some(mut f) => {
            f.flush().await.map_err(io)?;
            f.rewind().await.map_err(io)?;
            (RequestBody::from_reader(f), len)
        }
    })
}

/// The CGI response as an HTTP response, body streamed.
/// Body bytes already received when the head arrived that are gathered to
/// answer with a Content-Length instead of chunks.
const GATHER_AT_MOST: usize = 64 << 10;

fn into_http(
    resp: tqserver_fastcgi::client::Response,
    mut lease: Option<Lease>,
    log: &WorkerLog,
    is_head: bool,
) -> Response<Body> {
    let (head, mut body) = resp.into_parts();
    // Take what has already arrived, without waiting. Small pages are often
    // complete by now: they get a Content-Length and one write, and a
    // failure before any body byte still becomes a proper 502 page.
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut gathered: Vec<Bytes> = Vec::new();
    let mut size = 0;
    let mut complete = false;
    while size <= GATHER_AT_MOST {
        match body.poll_chunk(&mut cx) {
            std::task::Poll::Ready(Some(Ok(b))) => {
                size += b.len();
                gathered.push(b);
            }
            std::task::Poll::Ready(Some(Err(e))) => {
                log.error(&format!("response body from PHP failed: {e}"));
                return pages::error(
                    StatusCode::BAD_GATEWAY,
                    "The PHP response broke off before its body.",
                );
            }
            std::task::Poll::Ready(None) => {
                complete = true;
                break;
            }
            std::task::Poll::Pending => break,
        }
    }
    let status = match StatusCode::from_u16(head.status) {
        Ok(s) if s.as_u16() >= 200 => s,
        _ => {
            log.error(&format!(
                "PHP answered with status {}, which HTTP cannot carry as a final response",
                head.status
            ));
            return pages::error(
                StatusCode::BAD_GATEWAY,
                "The application answered with an invalid status.",
            );
        }
    };
    let mut out = Response::builder().status(status);
    let headers = out.headers_mut().expect("fresh builder");
    for (name, value) in head.headers {
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&name),
            HeaderValue::from_maybe_shared(value),
        ) else {
            continue; // the head parser already refused anything invalid
        };
        if !crate::http::hop_by_hop(&n) {
            headers.append(n, v);
        }
    }
    if complete {
        if let (Some(l), Some(_)) = (lease.as_mut(), body.end_status()) {
            l.finish();
        }
        drop(lease);
        let mut all = bytes::BytesMut::with_capacity(size);
        for b in &gathered {
            all.extend_from_slice(b);
        }
        let bodiless =
            is_head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        if !bodiless && !headers.contains_key(header::CONTENT_LENGTH) {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        }
        let full = http_body_util::Full::new(all.freeze()).map_err(|never| match never {});
        return out.body(full.boxed_unsync()).expect("valid response");
    }
    let stream = futures_frames(gathered, body, lease, log.clone());
    out.body(http_body_util::StreamBody::new(stream).boxed_unsync())
        .expect("valid response")
}

/// The rest of a streamed response, then the process back to its pool.
struct Frames {
    gathered: std::vec::IntoIter<Bytes>,
    body: Option<tqserver_fastcgi::client::ResponseBody>,
    lease: Option<Lease>,
    log: WorkerLog,
}

impl futures_core::Stream for Frames {
    type Item = std::io::Result<http_body::Frame<Bytes>>;
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(b) = this.gathered.next() {
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(b))));
        }
        let Some(body) = this.body.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        match std::task::ready!(body.poll_chunk(cx)) {
            Some(Ok(b)) => std::task::Poll::Ready(Some(Ok(http_body::Frame::data(b)))),
            Some(Err(e)) => {
                // The head is sent: all we can do is cut the response.
                this.log
                    .error(&format!("response body from PHP failed: {e}"));
                this.body = None;
                this.lease = None; // unfinished: the process is retired
                std::task::Poll::Ready(Some(Err(std::io::Error::other(e))))
            }
            None => {
                if let (Some(l), Some(_)) = (this.lease.as_mut(), body.end_status()) {
                    l.finish();
                }
                this.lease = None;
                this.body = None;
                std::task::Poll::Ready(None)
            }
        }
    }
}

impl Drop for Frames {
    fn drop(&mut self) {
        // The client went away (or HEAD) before the end: read the rest so
        // the process finishes its script and can serve again, instead of
        // retiring it. request_timeout still bounds a script that runs on.
        if let (Some(mut body), Some(mut lease)) = (self.body.take(), self.lease.take()) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    while let Some(Ok(_)) = body.chunk().await {}
                    if body.end_status().is_some() {
                        lease.finish();
                    }
                });
            }
        }
    }
}

fn futures_frames(
    gathered: Vec<Bytes>,
    body: tqserver_fastcgi::client::ResponseBody,
    lease: Option<Lease>,
    log: WorkerLog,
) -> Frames {
    Frames {
        gathered: gathered.into_iter(),
        body: Some(body),
        lease,
        log,
    }
}

fn error_page(
    e: &SendError,
    upstream: &Upstream,
    log: &WorkerLog,
    uri: &http::Uri,
) -> Response<Body> {
    let w = upstream.worker();
    let status = e.status();
    let (e, timed_out) = match e {
        SendError::Pool(p) => {
            log.error(&format!("503 for {uri}: {p}"));
            let (why, retry) = match p {
                AcquireError::QueueFull(_) | AcquireError::QueueTimeout(_) => (
                    format!(
                        "Every PHP process of worker {} is busy and the wait queue is full; try again shortly.",
                        w.name
                    ),
                    "1",
                ),
                AcquireError::Failed(_) => (
                    format!(
                        "The PHP pool of worker {} has failed: its processes die at start. The server log says why.",
                        w.name
                    ),
                    "10",
                ),
                AcquireError::Stopping => ("The server is stopping.".to_string(), "5"),
            };
            let mut r = pages::error(e.status(), &why);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(retry));
            return r;
        }
        SendError::Client { error, timed_out } => (error, *timed_out),
    };
    let why = match e.kind() {
        _ if timed_out => format!(
            "PHP did not finish within {:?} (php.pool.request_timeout); the process was stopped.",
            w.php.pool.request_timeout
        ),
        ErrorKind::Connect => format!(
            "The PHP backend of worker {} is not reachable: it is not running or is restarting.",
            w.name
        ),
        ErrorKind::Timeout => format!(
            "PHP did not answer within {:?} (php.pool.request_timeout).",
            w.php.pool.request_timeout
        ),
        ErrorKind::Reset => "The PHP process handling this request ended without answering (it crashed, exited or was killed).".into(),
        ErrorKind::BadResponse => "PHP sent a response that is not valid.".into(),
        ErrorKind::BadRequest => "A request header is too large to pass to PHP.".into(),
        ErrorKind::Downstream => {
            let inner = match e {
                ClientError::Body(io) => BodyError::find(io),
                _ => None,
            };
            return match inner {
                Some(b) => body::error_page(b),
                None => pages::error(status, "The request body could not be read."),
            };
        }
    };
    if e.is_upstream() {
        log.error(&format!("{} for {uri}: {e}", status.as_u16()));
    }
    let kind = match e.kind() {
        _ if timed_out => Some(UpstreamError::Timeout),
        ErrorKind::Connect => Some(UpstreamError::Connect),
        ErrorKind::Timeout => Some(UpstreamError::Timeout),
        ErrorKind::Reset => Some(UpstreamError::Reset),
        ErrorKind::BadResponse => Some(UpstreamError::BadResponse),
        _ => None,
    };
    let mut r = pages::error(status, &why);
    if let Some(k) = kind {
        r.extensions_mut().insert(k);
    }
    r
}
