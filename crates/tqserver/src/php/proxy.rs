//! One HTTP request to a PHP worker: resolve the path, serve a static file
//! or send the script to php-fpm over FastCGI, stream the answer back.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;
use tqserver_fastcgi::ClientError;
use tqserver_fastcgi::client::{ErrorKind, Request as FcgiRequest, RequestBody};

use super::cgi::{AcquireError, Lease, RequestInfo};
use super::params::{self, ScriptInfo};
use super::script::{self, Target};
use super::upstream::{SendError, Upstream};
use crate::access::ServedBy;
use crate::config::PathRule;
use crate::http::body::{self, BodyError, Buffered, LimitedBody};
use crate::http::{Body, ConnInfo, encode, pages, static_files};
use crate::logging::WorkerLog;
use crate::metrics::UpstreamError;

pub use crate::http::body::Limits;

/// Serves `req` for the worker of `upstream`, mounted at `route`, under
/// the worker's `rules` and `alias`es (see [`place`]).
pub async fn serve(
    upstream: &Upstream,
    log: &WorkerLog,
    route: &str,
    req: Request<Incoming>,
    conn: ConnInfo,
    limits: Limits,
) -> Response<Body> {
    let worker = upstream.worker();
    let place = match place(upstream.roots(), &worker.php.rules, route, &req) {
        Ok(p) => p,
        Err(answer) => return *answer,
    };
    let resp = serve_path(upstream, log, route, req, conn, limits, &place).await;
    decorate(resp, &place.rules)
}

/// Serves `req` from `roots` alone, for a `type: static` worker mounted
/// at `route`: files, directory indexes (`index.html`), slash redirects;
/// under `rules`. A `.php` file is not found: a static site runs no
/// script and never shows one's source.
pub async fn serve_files(
    roots: &script::Roots,
    rules: &[PathRule],
    compression: &encode::Policy,
    route: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let place = match place(roots, rules, route, &req) {
        Ok(p) => p,
        Err(answer) => return *answer,
    };
    let get_or_head = req.method() == Method::GET || req.method() == Method::HEAD;
    let rel = place
        .rel
        .as_deref()
        .unwrap_or_else(|| below(route, req.uri().path()));
    let resp = match script::resolve(place.doc, rel, false) {
        Target::Static(opened) => static_file(place.doc, opened, &req, compression).await,
        Target::AddSlash(b) if get_or_head => {
            add_slash(route, &req, &format!("{}{b}", place.prefix))
        }
        Target::Script { .. } | Target::AddSlash(_) | Target::NotFound => {
            pages::error(StatusCode::NOT_FOUND, "There is nothing at this address.")
        }
        Target::Forbidden => pages::error(
            StatusCode::FORBIDDEN,
            "This file is outside the document root.",
        ),
        Target::BadRequest(why) => pages::error(StatusCode::BAD_REQUEST, why),
    };
    decorate(resp, &place.rules)
}

/// A file of `doc` for `req`, if there is one (a GET or HEAD of a
/// regular file, not a script), its path taken below `route`: what a
/// native worker's `public/` folder (below its route) and the project's
/// `server/public/` (`route` "/") answer before the request is proxied,
/// as the Go TQServer did. Anything else (`None`) goes to the worker.
pub async fn public_file(
    doc: &script::DocRoot,
    compression: &encode::Policy,
    route: &str,
    req: &Request<Incoming>,
) -> Option<Response<Body>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return None;
    }
    let rel = below(route, req.uri().path());
    if rel.is_empty() || rel.ends_with('/') {
        return None;
    }
    match script::resolve(doc, rel, false) {
        Target::Static(opened) => Some(static_file(doc, opened, req, compression).await),
        _ => None,
    }
}

/// A static file found under `doc`; its precompressed sibling instead
/// (`.zst`, `.br`, `.gz`: nginx's `gzip_static`, Caddy's
/// `precompressed`) when `compression` allows it, the type is one it
/// compresses, and the client accepts that coding. Ranges and validators
/// then apply to the sibling's bytes, as they should.
async fn static_file(
    doc: &script::DocRoot,
    opened: script::Opened,
    req: &Request<Incoming>,
    compression: &encode::Policy,
) -> Response<Body> {
    let path = opened.path.clone();
    let (method, headers) = (req.method(), req.headers());
    if compression.enabled && compression.precompressed {
        let accept = encode::accept_encoding(headers);
        let mime = || mime_guess::from_path(&path).first_or_octet_stream();
        if let Some(accept) = accept.filter(|_| compression.compressible(mime().as_ref())) {
            for e in compression.siblings(&accept) {
                let Some(s) = script::sibling(doc, &opened, e.suffix()) else {
                    continue;
                };
                let mut r = static_files::serve(s.into_file(), &path, method, headers).await;
                if matches!(r.status(), StatusCode::OK | StatusCode::PARTIAL_CONTENT) {
                    r.headers_mut().insert(
                        header::CONTENT_ENCODING,
                        HeaderValue::from_static(e.as_str()),
                    );
                }
                encode::vary(r.headers_mut());
                return r;
            }
        }
    }
    static_files::serve(opened.into_file(), &path, method, headers).await
}

/// The path below the route prefix.
fn below<'a>(route: &str, path: &'a str) -> &'a str {
    if route == "/" {
        path
    } else {
        &path[route.len()..]
    }
}

/// Where a request's path leads among a worker's roots, and the rules
/// that apply to it.
struct Place<'a> {
    /// The root to resolve in: the document root, or an alias's folder.
    doc: &'a script::DocRoot,
    /// The path for [`script::resolve`] under an alias's folder; `None`:
    /// the request's own path below the route.
    rel: Option<String>,
    /// The alias's prefix (to put back on names and redirects), or "".
    prefix: &'a str,
    /// The rules matching the path, in order.
    rules: Vec<&'a PathRule>,
}

/// Finds `req`'s [`Place`], or the answer it gets first: the `deny` of a
/// rule, or a slash redirect (the route, or an alias, asked for without
/// its slash). Rules and aliases match the path decoded and normalised as
/// the document root sees it, computed once, and only for a worker that
/// has either; a path the resolver refuses matches none (it gets its 400
/// there).
fn place<'a>(
    roots: &'a script::Roots,
    rules: &'a [PathRule],
    route: &str,
    req: &Request<Incoming>,
) -> Result<Place<'a>, Box<Response<Body>>> {
    let rel = below(route, req.uri().path());
    let get_or_head = req.method() == Method::GET || req.method() == Method::HEAD;
    let norm = if rules.is_empty() && roots.aliases.is_empty() {
        None
    } else {
        script::normalize(rel)
    };
    let matching: Vec<&PathRule> = match &norm {
        Some(n) => rules.iter().filter(|r| r.matches(n)).collect(),
        None => Vec::new(),
    };
    if let Some(code) = matching.iter().find_map(|r| r.deny) {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::FORBIDDEN);
        return Err(Box::new(pages::error(
            status,
            "This address is closed by the worker's rules.",
        )));
    }
    if rel.is_empty() && get_or_head {
        return Err(Box::new(add_slash(route, req, "/")));
    }
    let mut place = Place {
        doc: &roots.main,
        rel: None,
        prefix: "",
        rules: matching,
    };
    let Some(norm) = norm else {
        return Ok(place);
    };
    for (prefix, doc) in &roots.aliases {
        let rest = if norm == *prefix {
            if !rel.ends_with('/') && get_or_head {
                return Err(Box::new(add_slash(route, req, &format!("{prefix}/"))));
            }
            "/".to_string()
        } else {
            // Decoded already: keep a '%' literal through resolve()'s
            // decoding, and the trailing slash normalize() dropped.
            let Some(r) = norm
                .strip_prefix(prefix.as_str())
                .filter(|r| r.starts_with('/'))
            else {
                continue;
            };
            let mut r = r.replace('%', "%25");
            if rel.ends_with('/') {
                r.push('/');
            }
            r
        };
        place.doc = doc;
        place.rel = Some(rest);
        place.prefix = prefix;
        break;
    }
    Ok(place)
}

/// A redirect to `below` (normalised, under the route) with the query.
/// The target is built from the normalised path, never echoed from the
/// request (`//evil.example/..` must not become `Location: //evil…`).
fn add_slash(route: &str, req: &Request<Incoming>, below: &str) -> Response<Body> {
    let prefix = if route == "/" { "" } else { route };
    let mut to = format!("{prefix}{below}");
    if let Some(q) = req.uri().query() {
        to.push('?');
        to.push_str(q);
    }
    pages::redirect(StatusCode::MOVED_PERMANENTLY, &to)
}

/// The `headers` and `cache` of `matching` on an answer below 400.
fn decorate(mut resp: Response<Body>, matching: &[&PathRule]) -> Response<Body> {
    if resp.status().as_u16() >= 400 {
        return resp;
    }
    for r in matching {
        for (name, value) in &r.headers {
            resp.headers_mut().insert(name.clone(), value.clone());
        }
    }
    if let Some(age) = matching.iter().rev().find_map(|r| r.cache) {
        let h = resp.headers_mut();
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_str(&format!("max-age={}", age.as_secs())).expect("digits"),
        );
        let at = std::time::SystemTime::now() + age;
        h.insert(
            header::EXPIRES,
            HeaderValue::from_str(&httpdate::fmt_http_date(at)).expect("an HTTP date"),
        );
    }
    resp
}

/// [`serve`] at its [`Place`]: under an alias its folder is the document
/// root (as nginx's `alias` sets $document_root), its prefix goes back on
/// the script's name, and a missing path is not found (no front
/// controller there); a script under a `php: false` rule is refused.
async fn serve_path(
    upstream: &Upstream,
    log: &WorkerLog,
    route: &str,
    req: Request<Incoming>,
    conn: ConnInfo,
    limits: Limits,
    place: &Place<'_>,
) -> Response<Body> {
    let worker = upstream.worker();
    let get_or_head = req.method() == Method::GET || req.method() == Method::HEAD;
    let aliased = !place.prefix.is_empty();
    let front = worker.php.front_controller && !aliased;
    let rel = place
        .rel
        .as_deref()
        .unwrap_or_else(|| below(route, req.uri().path()));
    let target = match script::resolve(place.doc, rel, front) {
        Target::Script {
            file,
            name,
            path_info,
        } if aliased => Target::Script {
            file,
            name: format!("{}{name}", place.prefix),
            path_info,
        },
        Target::AddSlash(b) if aliased => Target::AddSlash(format!("{}{b}", place.prefix)),
        t => t,
    };
    // Worker mode: what would run a script, or find nothing, goes to the
    // worker script (the application routes it); files are served as they
    // are.
    let target = match (&worker.php.worker, target) {
        (Some(script), Target::Script { .. } | Target::NotFound) => Target::Script {
            file: script.clone(),
            name: script::name_under(&worker.php.document_root, script),
            path_info: String::new(),
        },
        (_, t) => t,
    };
    let (file, name, path_info) = match target {
        Target::Script { name, .. }
            if worker.php.rules.iter().any(|r| !r.php && r.matches(&name)) =>
        {
            return pages::error(StatusCode::FORBIDDEN, "Scripts do not run here.");
        }
        Target::Script {
            file,
            name,
            path_info,
        } => (file, name, path_info),
        Target::Static(opened) => {
            return static_file(place.doc, opened, &req, &worker.compression).await;
        }
        Target::AddSlash(b) if get_or_head => return add_slash(route, &req, &b),
        Target::AddSlash(_) | Target::NotFound => {
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
    let req = match body::refuse_oversized(req, &limits) {
        Ok(r) => r,
        Err(refused) => return *refused,
    };
    let (parts, body) = req.into_parts();
    let info = ScriptInfo {
        route,
        document_root: place.doc.path(),
        file: &file,
        name: &name,
        path_info: &path_info,
    };
    let mut params = params::build(&parts, &conn, &info);
    for (k, v) in &worker.php.params {
        params.set(k.clone(), v.clone());
    }
    if !upstream.roots().sendfile.is_empty() {
        // Ours, never the client's: the header an application answers a
        // download with (Symfony's BinaryFileResponse, Rack).
        params.set(super::sendfile::TYPE_PARAM, "X-Sendfile");
    }
    let has_body = declared.is_some_and(|n| n > 0)
        || (declared.is_none()
            && (parts.headers.contains_key(header::TRANSFER_ENCODING) || !body.is_end_stream()));
    // `_held` keeps a buffered body's bytes counted against
    // server.max_buffered_bytes until PHP has answered.
    let (body, _held) = if !has_body {
        (RequestBody::empty(), None)
    } else if declared.is_some() && !worker.php.request_buffering {
        // php.request_buffering: false — streamed as it arrives; a slow
        // client holds a PHP process meanwhile.
        let streamed = LimitedBody::new(body, limits.max_body_bytes, limits.read_timeout)
            .counting(parts.extensions.get());
        (RequestBody::from_stream(streamed), None)
    } else {
        // Received whole before a process is taken (nginx's
        // fastcgi_request_buffering on): a slow upload holds a connection,
        // not one of the few PHP processes. A body of unknown length is
        // always buffered: PHP reads no more than CONTENT_LENGTH.
        match body::buffer(body, &limits, parts.extensions.get()).await {
            Ok(whole) => {
                params.set("CONTENT_LENGTH", whole.len.to_string());
                let body = match whole.body {
                    Buffered::Memory(b) => RequestBody::from(b),
                    Buffered::File(f) => RequestBody::from_reader(f),
                };
                (body, Some(whole.held))
            }
            Err(e) => return body::error_page(&e),
        }
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
        Ok((resp, lease)) => {
            // The embedded runtime is told when a client goes away (php-fpm
            // and php-cgi ignore FCGI_ABORT_REQUEST).
            let embed = worker.php.backend == crate::config::PhpBackend::Embed;
            let resp = into_http(resp, lease, log, parts.method == Method::HEAD, embed);
            super::sendfile::answer(upstream.roots(), resp, &parts.method, &parts.headers, log)
                .await
        }
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

/// Body bytes already received when the head arrived that are gathered to
/// answer with a Content-Length instead of chunks.
const GATHER_AT_MOST: usize = 64 << 10;

/// The CGI response as an HTTP response, body streamed. A body longer
/// than PHP's Content-Length is cut at it (nginx does the same), one
/// shorter is a 502 or, once the head is out, a cut connection: never a
/// response that claims bytes it does not carry. `tell_abort`: the backend
/// hears of a client that leaves before the end (embed: FCGI_ABORT_REQUEST).
fn into_http(
    resp: tqserver_fastcgi::client::Response,
    mut lease: Option<Lease>,
    log: &WorkerLog,
    is_head: bool,
    tell_abort: bool,
) -> Response<Body> {
    let (head, mut body) = resp.into_parts();
    let head = match super::response::http_head(&head) {
        Ok(h) => h,
        Err(e) => {
            log.error(&format!("502: {e}"));
            return pages::error(
                StatusCode::BAD_GATEWAY,
                "The application sent a response that is not valid.",
            );
        }
    };
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
    let status = head.status;
    let bodiless =
        is_head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let mut out = Response::builder().status(status);
    *out.headers_mut().expect("fresh builder") = head.headers;
    // What the client may be sent: PHP's declared length, if any.
    let declared = head.length.filter(|_| !bodiless);
    if complete {
        if let (Some(l), Some(_)) = (lease.as_mut(), body.end_status()) {
            l.finish();
        }
        drop(lease);
        let mut all = bytes::BytesMut::with_capacity(size);
        for b in &gathered {
            all.extend_from_slice(b);
        }
        match declared {
            Some(n) if (size as u64) < n => {
                log.error(&format!(
                    "502: PHP declared Content-Length {n} but sent {size} bytes"
                ));
                return pages::error(
                    StatusCode::BAD_GATEWAY,
                    "The application's response was shorter than it said.",
                );
            }
            Some(n) if (size as u64) > n => {
                log.error(&format!(
                    "PHP declared Content-Length {n} but sent {size} bytes; only {n} were sent to the client"
                ));
                all.truncate(n as usize);
            }
            Some(_) => {}
            None if bodiless => {}
            None => {
                out.headers_mut()
                    .expect("fresh builder")
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
            }
        }
        let full = http_body_util::Full::new(all.freeze()).map_err(|never| match never {});
        return out.body(full.boxed_unsync()).expect("valid response");
    }
    let stream = Frames {
        gathered: gathered.into_iter(),
        body: Some(body),
        lease,
        log: log.clone(),
        left: declared,
        abort_on_drop: tell_abort && !is_head,
    };
    out.body(http_body_util::StreamBody::new(stream).boxed_unsync())
        .expect("valid response")
}

/// The rest of a streamed response, then the process back to its pool.
struct Frames {
    gathered: std::vec::IntoIter<Bytes>,
    body: Option<tqserver_fastcgi::client::ResponseBody>,
    lease: Option<Lease>,
    log: WorkerLog,
    /// Bytes still allowed by PHP's Content-Length (`None`: no length;
    /// the HTTP layer frames the body itself).
    left: Option<u64>,
    /// Dropped before the end, the client is gone: tell the application.
    abort_on_drop: bool,
}

impl Frames {
    /// Counts `b` against the declared length: cut to what is left, and
    /// `None` once nothing more may be sent.
    fn allow(&mut self, mut b: Bytes) -> Option<Bytes> {
        let Some(left) = self.left.as_mut() else {
            return Some(b);
        };
        if *left == 0 {
            return None;
        }
        if b.len() as u64 > *left {
            self.log.error(&format!(
                "PHP sent more than its Content-Length; the {} bytes past it were not sent to the client",
                b.len() as u64 - *left
            ));
            b.truncate(*left as usize);
        }
        *left -= b.len() as u64;
        Some(b)
    }
}

impl futures_core::Stream for Frames {
    type Item = std::io::Result<http_body::Frame<Bytes>>;
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(b) = this.gathered.next() {
            // Ends (for the client) once the declared length is sent; the
            // rest is read and dropped when the body is dropped.
            return std::task::Poll::Ready(this.allow(b).map(|b| Ok(http_body::Frame::data(b))));
        }
        if this.left == Some(0) {
            return std::task::Poll::Ready(None);
        }
        let Some(body) = this.body.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        match std::task::ready!(body.poll_chunk(cx)) {
            Some(Ok(b)) => {
                std::task::Poll::Ready(this.allow(b).map(|b| Ok(http_body::Frame::data(b))))
            }
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
                if let Some(left) = this.left.filter(|l| *l > 0) {
                    // The head promised more: the client must see a cut
                    // response (hyper closes the connection), not a short one.
                    this.log.error(&format!(
                        "PHP's response ended {left} bytes short of its Content-Length"
                    ));
                    return std::task::Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "PHP's response was shorter than its Content-Length",
                    ))));
                }
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
        // The embedded runtime hears of it first (FCGI_ABORT_REQUEST), as
        // php-fpm behind nginx does when nginx closes its connection: the
        // script ends at its next output unless ignore_user_abort. Not
        // when the client has all it was promised (Content-Length sent).
        if let (Some(mut body), Some(mut lease)) = (self.body.take(), self.lease.take()) {
            if self.abort_on_drop && self.left != Some(0) {
                body.abort();
            }
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
