//! TQServer's demo Rust worker: an HTML page at `/` and a tiny plain-text
//! answer at `/bench` (what bench/native.sh measures). Edit this file
//! while TQServer runs in dev mode: the page in your browser reloads with
//! the new code within a second or two.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, body::Incoming};
use tqserver_worker::Env;

/// The line the demo page shows: change it and save.
const GREETING: &str = "Hello from a Rust worker.";

fn respond(
    status: StatusCode,
    ctype: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn page(env: &Env, served: u64) -> String {
    let title = std::env::var("INDEX_TITLE").unwrap_or_else(|_| "TQServer".into());
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font:16px/1.6 system-ui,sans-serif;margin:3em auto;max-width:42em;color:#222}}
code{{background:#f3f3f3;padding:0 .3em}}</style></head>
<body>
<h1>{title}</h1>
<p id="greeting">{GREETING}</p>
<ul>
<li><a href="/blog/">/blog/</a>: a PHP worker (php-fpm, supervised by TQServer)</li>
<li><a href="/bench">/bench</a>: the plain-text answer the benchmarks use</li>
</ul>
<p>Worker <code>{name}</code> at <code>{route}</code>, mode <code>{mode}</code>, pid {pid}, port {port};
{served} request(s) served by this instance.</p>
<p>Edit <code>workers/index/src/main.rs</code> and save: in dev mode TQServer rebuilds it,
switches traffic to the new build once it answers <code>/health</code>, and this page reloads.</p>
</body></html>
"#,
        title = escape(&title),
        name = escape(&env.name),
        route = escape(&env.route),
        mode = escape(&env.mode),
        pid = std::process::id(),
        port = env.port,
    )
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let env = Arc::new(Env::from_env());
    let served = Arc::new(AtomicU64::new(0));
    println!("index worker on {} (mode {})", env.addr(), env.mode);
    tqserver_worker::serve(service_fn(move |req: Request<Incoming>| {
        let env = env.clone();
        let n = served.fetch_add(1, Ordering::Relaxed) + 1;
        async move {
            let r = match req.uri().path() {
                "/" => respond(StatusCode::OK, "text/html; charset=utf-8", page(&env, n)),
                "/bench" => respond(StatusCode::OK, "text/plain", "Hello, World!\n"),
                _ => respond(
                    StatusCode::NOT_FOUND,
                    "text/plain; charset=utf-8",
                    "Not found.\n",
                ),
            };
            Ok::<_, Infallible>(r)
        }
    }))
    .await
}
