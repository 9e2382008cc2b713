//! Dev-mode browser live reload. TQServer serves a small script at
//! `/__tqserver/livereload.js` and appends a `<script>` tag for it to HTML
//! responses; the script listens on `/__tqserver/livereload` (Server-Sent
//! Events) and reloads the page when the worker that served it swapped in
//! new code, failed to build (so the error page shows), or when TQServer
//! itself restarted. `EventSource` reconnects by itself.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use tokio::sync::{broadcast, mpsc};

use crate::http::{Body, pages};

/// Paths TQServer answers itself in dev mode.
pub const PREFIX: &str = "/__tqserver/";
const SCRIPT_PATH: &str = "/__tqserver/livereload.js";
const EVENTS_PATH: &str = "/__tqserver/livereload";
/// The Go TQServer's live-reload script, which its pages load: answered
/// with a script that does nothing (this one's is injected into every
/// page), so those pages neither get a 404 nor reconnect forever to the
/// original's `/ws/reload`.
const GO_TQSERVER_SCRIPT: &str = "/dev-reload.js";
/// A comment line this often keeps proxies from closing the stream.
const KEEPALIVE: Duration = Duration::from_secs(15);

const SCRIPT: &str = r#"(function () {
  var me = document.currentScript;
  var route = (me && me.getAttribute("data-route")) || "";
  var url = "/__tqserver/livereload" + (route ? "?route=" + encodeURIComponent(route) : "");
  var lost = false;
  var state = window.__tqserverLiveReload = { url: url, connected: false, events: 0 };
  var es = new EventSource(url);
  es.addEventListener("hello", function () {
    state.connected = true;
    // TQServer restarted while we were away: the code may be new.
    if (lost) { location.reload(); }
  });
  es.addEventListener("reload", function () { state.events++; location.reload(); });
  es.onerror = function () { lost = true; state.connected = false; };
})();
"#;

/// Tells connected browsers which route changed.
pub struct LiveReload {
    tx: broadcast::Sender<String>,
}

impl LiveReload {
    /// A hub with no browser connected yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            tx: broadcast::channel(64).0,
        })
    }

    /// Pages served by `route` reload.
    pub fn notify(&self, route: &str) {
        let _ = self.tx.send(route.to_string());
    }

    /// Answers `/__tqserver/…` requests; `None` for other paths.
    pub fn handle(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
    ) -> Option<Response<Body>> {
        if path == GO_TQSERVER_SCRIPT && (method == Method::GET || method == Method::HEAD) {
            return Some(script(
                "// TQServer injects its own live reload into every page: nothing to do here.\n",
            ));
        }
        if !path.starts_with(PREFIX) {
            return None;
        }
        if method != Method::GET && method != Method::HEAD {
            return Some(pages::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "Only GET is answered here.",
            ));
        }
        Some(match path {
            SCRIPT_PATH => script(SCRIPT),
            EVENTS_PATH => self.events(route_param(query)),
            _ => pages::error(StatusCode::NOT_FOUND, "There is nothing at this address."),
        })
    }

    fn events(&self, route: Option<String>) -> Response<Body> {
        let mut rx = self.tx.subscribe();
        let (tx, out) = mpsc::channel::<Bytes>(8);
        tokio::spawn(async move {
            if tx
                .send(Bytes::from_static(b"retry: 1000\nevent: hello\ndata: \n\n"))
                .await
                .is_err()
            {
                return;
            }
            loop {
                let msg = tokio::select! {
                    r = rx.recv() => match r {
                        Ok(changed) if route.as_deref().is_none_or(|r| r == changed) => {
                            format!("event: reload\ndata: {changed}\n\n")
                        }
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(_)) => "event: reload\ndata: \n\n".into(),
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    () = tokio::time::sleep(KEEPALIVE) => ": keep-alive\n\n".into(),
                    () = tx.closed() => return,
                };
                if tx.send(Bytes::from(msg)).await.is_err() {
                    return;
                }
            }
        });
        let mut r = Response::new(ChannelBody { rx: out }.boxed_unsync());
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}

/// A script answer, never cached.
fn script(text: &'static str) -> Response<Body> {
    let mut r = Response::new(full(text));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn route_param(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let v = kv.strip_prefix("route=")?;
        percent_encoding::percent_decode_str(v)
            .decode_utf8()
            .ok()
            .map(|s| s.into_owned())
    })
}

fn full(s: &'static str) -> Body {
    Full::new(Bytes::from_static(s.as_bytes()))
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Puts the live-reload tag before `</body>` of an HTML response (`route`
/// served it). A response without `</body>` (a fragment, PHP's default
/// `text/html` on plain output) is passed through unchanged; compressed,
/// ranged and empty responses are left alone.
pub async fn inject(resp: Response<Body>, method: &Method, route: &str) -> Response<Body> {
    let h = resp.headers();
    let html = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/html"));
    let status = resp.status();
    if !html
        || method == Method::HEAD
        || h.contains_key(header::CONTENT_ENCODING)
        || h.contains_key(header::CONTENT_RANGE)
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || h.get(header::CONTENT_LENGTH).is_some_and(|v| v == "0")
    {
        return resp;
    }
    let tag = Bytes::from(format!(
        "<script src=\"{SCRIPT_PATH}\" data-route=\"{}\"></script>\n",
        pages::escape(route)
    ));
    let (mut parts, body) = resp.into_parts();
    // The page changes with every build: no validator may claim otherwise.
    parts.headers.remove(header::ETAG);
    parts.headers.remove(header::LAST_MODIFIED);
    if body.size_hint().exact().is_some_and(|n| n <= MAX_BUFFERED) {
        // A page of known, small size: rewritten whole, with its length.
        let Ok(all) = body.collect().await.map(|c| c.to_bytes()) else {
            return pages::error(StatusCode::BAD_GATEWAY, "The response failed mid-way.");
        };
        let out = match find_close_body(&all) {
            Some(i) => {
                let mut out = BytesMut::with_capacity(all.len() + tag.len());
                out.extend_from_slice(&all[..i]);
                out.extend_from_slice(&tag);
                out.extend_from_slice(&all[i..]);
                out.freeze()
            }
            None => all,
        };
        if parts.headers.contains_key(header::CONTENT_LENGTH) {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
        }
        let body = Full::new(out)
            .map_err(|never| match never {})
            .boxed_unsync();
        return Response::from_parts(parts, body);
    }
    // Streamed: whether the tag goes in is known only at `</body>`, so the
    // length is left to chunked encoding (dev mode only).
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = Injector {
        inner: body,
        tag: Some(tag),
        carry: BytesMut::new(),
        done: false,
    };
    Response::from_parts(parts, body.boxed_unsync())
}

const CLOSE_BODY: &[u8] = b"</body";
/// Pages up to this size with a known length are rewritten whole (and
/// keep an exact `Content-Length`); larger or streamed ones are rewritten
/// on the fly.
const MAX_BUFFERED: u64 = 1 << 20;

/// Passes a body through, inserting `tag` before the first `</body`.
struct Injector {
    inner: Body,
    tag: Option<Bytes>,
    /// The end of the last chunk, which may be the start of `</body`.
    carry: BytesMut,
    done: bool,
}

fn find_close_body(data: &[u8]) -> Option<usize> {
    data.windows(CLOSE_BODY.len())
        .position(|w| w.eq_ignore_ascii_case(CLOSE_BODY))
}

impl http_body::Body for Injector {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.done = true;
                    let rest = this.carry.split().freeze();
                    return Poll::Ready(
                        (!rest.is_empty()).then(|| Ok(http_body::Frame::data(rest))),
                    );
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(f))) => f,
            };
            let data = match frame.into_data() {
                Ok(d) => d,
                // Trailers end the data; what was held back would follow
                // them, so send it first is not possible: HTML responses
                // with trailers do not happen in practice.
                Err(f) => return Poll::Ready(Some(Ok(f))),
            };
            let Some(tag) = this.tag.clone() else {
                return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
            };
            this.carry.extend_from_slice(&data);
            if let Some(i) = find_close_body(&this.carry) {
                let mut out = BytesMut::with_capacity(this.carry.len() + tag.len());
                out.extend_from_slice(&this.carry[..i]);
                out.extend_from_slice(&tag);
                out.extend_from_slice(&this.carry[i..]);
                this.carry.clear();
                this.tag = None;
                return Poll::Ready(Some(Ok(http_body::Frame::data(out.freeze()))));
            }
            // Keep what could be the start of `</body`; send the rest.
            let keep = CLOSE_BODY.len() - 1;
            if this.carry.len() > keep {
                let out = this.carry.split_to(this.carry.len() - keep).freeze();
                return Poll::Ready(Some(Ok(http_body::Frame::data(out))));
            }
        }
    }
}

/// A body fed by a channel (the event stream).
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(http_body::Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TwoChunks(Vec<String>);

    impl futures_core::Stream for TwoChunks {
        type Item = Result<http_body::Frame<Bytes>, std::io::Error>;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            if self.0.is_empty() {
                return Poll::Ready(None);
            }
            let c = self.0.remove(0);
            Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(c)))))
        }
    }

    async fn text(r: Response<Body>) -> String {
        let b = r.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn the_tag_goes_before_body_end_even_across_chunks() {
        let page = "<html><body><p>hi</p></BODY></html>";
        for split in 0..=page.len() {
            let (a, b) = page.split_at(split);
            let body = http_body_util::StreamBody::new(TwoChunks(vec![a.into(), b.into()]));
            let mut r = Response::new(body.boxed_unsync());
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(page.len()));
            let r = inject(r, &Method::GET, "/blog").await;
            assert!(r.headers().get(header::CONTENT_LENGTH).is_none());
            assert_eq!(
                text(r).await,
                "<html><body><p>hi</p><script src=\"/__tqserver/livereload.js\" data-route=\"/blog\"></script>\n</BODY></html>",
                "split at {split}"
            );
        }
        // No </body>: unchanged.
        let mut r = Response::new(full("done"));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(4));
        let r = inject(r, &Method::GET, "/").await;
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "4");
        assert_eq!(text(r).await, "done");
        // A whole page of known length keeps an exact length.
        let page = "<body>x</body>";
        let mut r = Response::new(full(page));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(page.len()));
        let r = inject(r, &Method::GET, "/").await;
        let n: usize = r.headers()[header::CONTENT_LENGTH]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let t = text(r).await;
        assert_eq!(t.len(), n);
        assert!(
            t.starts_with("<body>x<script") && t.ends_with("</body>"),
            "{t}"
        );
        let mut j = Response::new(full("{}"));
        j.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert_eq!(text(inject(j, &Method::GET, "/").await).await, "{}");
        assert_eq!(
            route_param(Some("a=1&route=%2Fapi")).as_deref(),
            Some("/api")
        );
    }
}
