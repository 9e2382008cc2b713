//! The tqserver binary end to end with real php-fpm: routing, CGI
//! variables, script resolution, static files, uploads and downloads,
//! errors, php-fpm failures and shutdown. The PHP behaviour tests run
//! over each of the three backends (`on_every_backend!`).

mod common;

use std::time::Duration;

use common::{Project, Tq, alive, children_of, client, peak_rss_kib, sha256_hex};
use reqwest::StatusCode;
use serde_json::Value;

fn app() -> (Project, Tq) {
    let p = Project::new("  max_body_bytes: 20M\n  read_timeout_seconds: 2\n", "");
    p.php_worker("app", "/app", "");
    let tq = Tq::start(p.path(), &[]);
    (p, tq)
}

/// The same worker on `backend` (fpm, cgi or embed).
fn app_on(backend: &str) -> (Project, Tq) {
    let p = Project::new("  max_body_bytes: 20M\n  read_timeout_seconds: 2\n", "");
    p.php_worker_on("app", "/app", backend, "");
    let tq = Tq::start(p.path(), &[]);
    (p, tq)
}

/// `.user.ini` files apply from the document root down to the script's
/// directory, the inner one winning, as php-fpm and php-cgi read them.
async fn user_ini_files_apply_from_the_root_down(backend: &str) {
    let p = Project::new("", "");
    let root = p.path().join("site");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    let ini = std::fs::read(common::php_dir().join("ini.php")).unwrap();
    std::fs::write(root.join("ini.php"), &ini).unwrap();
    std::fs::write(root.join("sub/ini.php"), &ini).unwrap();
    std::fs::write(root.join(".user.ini"), "memory_limit = 77M\n").unwrap();
    std::fs::write(
        root.join("sub/.user.ini"),
        "default_charset = \"ISO-8859-1\"\nmemory_limit = 99M\n",
    )
    .unwrap();
    p.worker(
        "app",
        &format!(
            "path: /app\ntype: php\ndocument_root: {}\nphp:\n  backend: {backend}\n  pool:\n    manager: static\n    max_workers: 1\n",
            root.display()
        ),
    );
    let tq = Tq::start(p.path(), &[]);
    let c = client();
    let get = |path: &str| {
        let c = c.clone();
        let url = tq.url(path);
        async move { c.get(url).send().await.unwrap().text().await.unwrap() }
    };
    assert_eq!(get("/app/ini.php?k=memory_limit").await, "77M");
    assert_eq!(get("/app/ini.php?k=default_charset").await, "UTF-8");
    assert_eq!(get("/app/sub/ini.php?k=memory_limit").await, "99M");
    assert_eq!(
        get("/app/sub/ini.php?k=default_charset").await,
        "ISO-8859-1"
    );
    // Per request: the outer directory's script is back to its own.
    assert_eq!(get("/app/ini.php?k=memory_limit").await, "77M");
}

/// The PHP behaviour tests, once per backend: php-fpm, TQServer's php-cgi
/// pool and TQServer's embedded PHP (`fpm::…`, `cgi::…`, `embed::…`).
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod fpm { $( #[tokio::test] async fn $name() { super::$name("fpm").await } )* }
        mod cgi { $( #[tokio::test] async fn $name() { super::$name("cgi").await } )* }
        mod embed { $( #[tokio::test] async fn $name() { super::$name("embed").await } )* }
    };
}

on_every_backend!(
    cgi_variables_path_info_and_front_controller,
    traversal_nul_and_non_php_files_are_never_executed,
    upload_10mb_streamed_checksum,
    download_50mb_streamed_with_bounded_memory,
    status_headers_after_status_redirects_and_cookies,
    bodies_over_the_limit_get_413,
    chunked_bodies_reach_php_with_their_length,
    request_timeout_gives_504_and_stderr_reaches_the_worker_log,
    user_ini_files_apply_from_the_root_down,
    getallheaders_names_the_request_headers
);

/// `getallheaders()` / `apache_request_headers()`, which php-fpm and php-cgi
/// define and applications use: every request header, named as sent
/// (words capitalised), Content-Type and Content-Length included.
async fn getallheaders_names_the_request_headers(backend: &str) {
    let (_p, tq) = app_on(backend);
    let c = client();
    let r = c
        .post(tq.url("/app/headers.php"))
        .header("X-Custom-Thing", "yes")
        .header("Content-Type", "text/plain")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    for f in ["getallheaders", "apache"] {
        let h = &v[f];
        assert_eq!(h["X-Custom-Thing"], "yes", "{backend} {f}: {v}");
        assert_eq!(h["Content-Type"], "text/plain", "{backend} {f}: {v}");
        assert_eq!(h["Content-Length"], "3", "{backend} {f}: {v}");
        assert!(
            h["Host"]
                .as_str()
                .is_some_and(|s| s.starts_with("127.0.0.1")),
            "{backend} {f}: {v}"
        );
    }
}

async fn json(c: &reqwest::Client, url: &str) -> Value {
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.json().await.unwrap()
}

/// The demo's blog worker (the repo's workers/ folder), served from a
/// project folder of the test's own so no log lands in the source tree.
#[tokio::test]
async fn hello_from_the_demo_blog() {
    let workers = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../workers")
        .canonicalize()
        .unwrap();
    let p = Project::new("", "");
    let yaml = std::fs::read_to_string(p.path().join("config/server.yaml")).unwrap();
    std::fs::write(
        p.path().join("config/server.yaml"),
        yaml.replace(
            "directory: workers",
            &format!("directory: {}", workers.display()),
        ),
    )
    .unwrap();
    let tq = Tq::start(p.path(), &[]);
    let body = client()
        .get(tq.url("/blog/hello.php"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body.trim(), "Hello");
}

#[tokio::test]
async fn routes_prefixes_and_404() {
    let p = Project::new("", "");
    p.php_worker("api", "/api", "");
    p.php_worker("root", "/", "  front_controller: false\n");
    let tq = Tq::start(p.path(), &[]);
    let c = client();
    let v = json(&c, &tq.url("/api/echo.php")).await;
    assert_eq!(v["SCRIPT_NAME"], "/api/echo.php");
    assert_eq!(v["WORKER_NAME"], "api");
    // /apiary is not under /api: the root worker answers, and has no such file.
    let r = c.get(tq.url("/apiary/echo.php")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v = json(&c, &tq.url("/echo.php")).await;
    assert_eq!(v["WORKER_NAME"], "root");
    let r = c.get(tq.url("/api")).send().await.unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(r.headers()["location"], "/api/");

    let p = Project::new("", "");
    p.php_worker("api", "/api", "");
    let tq = Tq::start(p.path(), &[]);
    let r = c.get(tq.url("/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("No worker serves this address")
    );
}

async fn cgi_variables_path_info_and_front_controller(backend: &str) {
    let (_p, tq) = app_on(backend);
    let c = client();
    let v = json(&c, &tq.url("/app/echo.php/extra/path?x=1&y=2")).await;
    assert_eq!(v["SCRIPT_NAME"], "/app/echo.php");
    assert!(
        v["SCRIPT_FILENAME"]
            .as_str()
            .unwrap()
            .ends_with("/tests/php/echo.php")
    );
    assert_eq!(v["PATH_INFO"], "/extra/path");
    assert!(
        v["PATH_TRANSLATED"]
            .as_str()
            .unwrap()
            .ends_with("/tests/php/extra/path")
    );
    assert_eq!(v["REQUEST_URI"], "/app/echo.php/extra/path?x=1&y=2");
    assert_eq!(v["QUERY_STRING"], "x=1&y=2");
    assert_eq!(v["SERVER_NAME"], "127.0.0.1");
    assert_eq!(v["SERVER_PORT"], tq.port.to_string());
    assert_eq!(v["REMOTE_ADDR"], "127.0.0.1");
    assert_eq!(v["REQUEST_SCHEME"], "http");
    assert_eq!(v["REDIRECT_STATUS"], "200");
    assert_eq!(v["GATEWAY_INTERFACE"], "CGI/1.1");
    // httpoxy and underscore spoofing.
    let r = c
        .get(tq.url("/app/echo.php"))
        .header("Proxy", "http://evil:1")
        .header("X_Forwarded_For", "6.6.6.6")
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["HTTP_PROXY"], Value::Null);
    assert_eq!(v["HTTP_X_FORWARDED_FOR"], Value::Null);
    // Missing paths go to the front controller, with the original URI.
    let body = c
        .get(tq.url("/app/blog/2024/post?id=3"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        body,
        "front controller for /app/blog/2024/post?id=3 script /app/index.php"
    );
    // A missing .php is 404, as nginx's try_files $uri =404.
    assert_eq!(
        c.get(tq.url("/app/missing.php"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

async fn traversal_nul_and_non_php_files_are_never_executed(backend: &str) {
    let (_p, tq) = app_on(backend);
    let c = client();
    let r = c
        .get(tq.url("/app/uploads/a.jpg/x.php"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(!r.text().await.unwrap().contains("EXECUTED-JPG"));
    // The .jpg itself is a static file: its bytes, not its output.
    let r = c.get(tq.url("/app/uploads/a.jpg")).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert_eq!(r.text().await.unwrap(), "<?php echo \"EXECUTED-JPG\"; ?>");
    // PHP source under another case is not served.
    assert_eq!(
        c.get(tq.url("/app/SHOUT.PHP"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // reqwest normalises "..", so use a raw request for traversal and NUL.
    for (path, want) in [
        ("/app/../../etc/passwd", "400"),
        ("/app/%2e%2e/%2e%2e/etc/passwd", "400"),
        ("/app/echo.php%00.jpg", "400"),
    ] {
        let status = raw_get(tq.port, path).await;
        assert!(
            status.starts_with(&format!("HTTP/1.1 {want}")),
            "{path}: {status}"
        );
    }
}

async fn raw_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn static_files_with_validators_ranges_and_head() {
    let (_p, tq) = app();
    let c = client();
    let data = std::fs::read(common::php_dir().join("data.bin")).unwrap();
    let r = c.get(tq.url("/app/data.bin")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let modified = r.headers()["last-modified"].to_str().unwrap().to_string();
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert_eq!(r.bytes().await.unwrap(), data);
    let r = c.get(tq.url("/app/style.css")).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/css");

    let r = c
        .get(tq.url("/app/data.bin"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = c
        .get(tq.url("/app/data.bin"))
        .header("If-Modified-Since", &modified)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

    let r = c
        .get(tq.url("/app/data.bin"))
        .header("Range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-range"], "bytes 1000-1999/100000");
    assert_eq!(r.bytes().await.unwrap(), data[1000..2000]);
    let r = c
        .get(tq.url("/app/data.bin"))
        .header("Range", "bytes=-10")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), data[data.len() - 10..]);
    let r = c
        .get(tq.url("/app/data.bin"))
        .header("Range", "bytes=200000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    // A stale If-Range gets the whole file.
    let r = c
        .get(tq.url("/app/data.bin"))
        .header("Range", "bytes=0-9")
        .header("If-Range", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let r = c.head(tq.url("/app/data.bin")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "100000");
    assert!(r.bytes().await.unwrap().is_empty());
}

async fn upload_10mb_streamed_checksum(backend: &str) {
    let (_p, tq) = app_on(backend);
    let data: Vec<u8> = (0..10_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let want = sha256_hex(&data);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(100_000).map(|c| Ok(c.to_vec())).collect();
    let body = reqwest::Body::wrap_stream(futures_stream(chunks));
    let v: Value = client()
        .post(tq.url("/app/echo.php"))
        .header("Content-Length", data.len())
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["body_length"], 10_000_000);
    assert_eq!(v["body_sha256"], want);
    assert_eq!(v["CONTENT_LENGTH"], "10000000");
}

fn futures_stream(
    chunks: Vec<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    struct S(std::vec::IntoIter<Result<Vec<u8>, std::io::Error>>);
    impl futures_core::Stream for S {
        type Item = Result<Vec<u8>, std::io::Error>;
        fn poll_next(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.get_mut().0.next())
        }
    }
    S(chunks.into_iter())
}

async fn download_50mb_streamed_with_bounded_memory(backend: &str) {
    let (_p, tq) = app_on(backend);
    const N: usize = 50 << 20;
    let mut r = client()
        .get(tq.url(&format!("/app/big.php?n={N}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let pattern = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut seen = 0usize;
    while let Some(chunk) = r.chunk().await.unwrap() {
        for (i, b) in chunk.iter().enumerate() {
            assert_eq!(*b, pattern[(seen + i) % 36]);
        }
        seen += chunk.len();
    }
    assert_eq!(seen, N);
    let peak_mib = peak_rss_kib(tq.pid()) / 1024;
    assert!(
        peak_mib < 40,
        "tqserver's peak RSS was {peak_mib} MiB for a 50 MiB response"
    );
}

async fn status_headers_after_status_redirects_and_cookies(backend: &str) {
    let (_p, tq) = app_on(backend);
    let c = client();
    let r = c.get(tq.url("/app/status.php")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-after-status"], "kept");
    // A small page that was complete when its head arrived gets a length.
    assert_eq!(r.headers()["content-length"], "16");
    assert_eq!(r.text().await.unwrap(), "custom not found");
    // HEAD: PHP sends no body, and TQServer does not claim a length of 0.
    let r = c.head(tq.url("/app/status.php")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers().get("content-length"), None, "{:?}", r.headers());
    let r = c.get(tq.url("/app/redirect.php")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/app/echo.php");
    let cookies: Vec<_> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(cookies, ["first=1", "second=2"]);
}

async fn bodies_over_the_limit_get_413(backend: &str) {
    let p = Project::new("  max_body_bytes: 1M\n", "");
    p.php_worker_on("app", "/app", backend, "");
    let tq = Tq::start(p.path(), &[]);
    let c = client();
    let r = c
        .post(tq.url("/app/echo.php"))
        .body(vec![0u8; 2 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Chunked, no Content-Length: stopped while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..40).map(|_| Ok(vec![1u8; 64 << 10])).collect();
    let r = c
        .post(tq.url("/app/echo.php"))
        .body(reqwest::Body::wrap_stream(futures_stream(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Under the limit is fine.
    let v: Value = c
        .post(tq.url("/app/echo.php"))
        .body(vec![7u8; 1000])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["body_length"], 1000);
}

/// PHP reads no more than CONTENT_LENGTH, so a chunked body is received
/// whole and sent with its length (in memory, or spooled past 1 MiB).
async fn chunked_bodies_reach_php_with_their_length(backend: &str) {
    let (_p, tq) = app_on(backend);
    for size in [10_000usize, 3_000_000] {
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            data.chunks(50_000).map(|c| Ok(c.to_vec())).collect();
        let v: Value = client()
            .put(tq.url("/app/echo.php"))
            .body(reqwest::Body::wrap_stream(futures_stream(chunks)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["body_length"], size, "{size}");
        assert_eq!(v["CONTENT_LENGTH"], size.to_string());
        assert_eq!(v["body_sha256"], sha256_hex(&data));
    }
}

async fn request_timeout_gives_504_and_stderr_reaches_the_worker_log(backend: &str) {
    let p = Project::new("", "");
    p.php_worker_on(
        "app",
        "/app",
        backend,
        "    request_timeout: 1\nlogging:\n  log_file: logs/{name}_{date}.log\n  access_log: true\n",
    );
    let tq = Tq::start(p.path(), &[]);
    let c = client();
    let r = c
        .get(tq.url("/app/sleep.php?ms=4000"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
    let r = c
        .get(tq.url("/app/stderr.php?tag=abc"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "logged");
    let today = common::today();
    let log = std::fs::read_to_string(p.path().join(format!("logs/app_{today}.log"))).unwrap();
    assert!(
        log.contains("[app] php: ") && log.contains("tq-stderr-marker abc"),
        "{log}"
    );
    assert!(
        log.contains("\"GET /app/stderr.php?tag=abc HTTP/1.1\" 200"),
        "{log}"
    );
}

#[tokio::test]
async fn killed_php_fpm_gives_502_then_comes_back() {
    let (_p, tq) = app();
    let c = client();
    assert_eq!(
        c.get(tq.url("/app/pid.php")).send().await.unwrap().status(),
        200
    );
    let fpm: Vec<_> = children_of(tq.pid())
        .into_iter()
        .filter(|(_, n)| n.starts_with("php-fpm"))
        .collect();
    assert_eq!(fpm.len(), 1, "one php-fpm master: {fpm:?}");
    let master = fpm[0].0;
    // kill -9 the whole php-fpm process group (master and children).
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(master as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let mut saw_502 = false;
    let mut back = false;
    for _ in 0..200 {
        let r = c.get(tq.url("/app/pid.php")).send().await.unwrap();
        match r.status().as_u16() {
            502 => saw_502 = true,
            200 if saw_502 => {
                back = true;
                break;
            }
            200 => {}
            s => panic!("unexpected status {s}"),
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(saw_502, "requests while php-fpm was down got 502");
    assert!(back, "php-fpm was restarted:\n{}", tq.log_text());
    let now: Vec<_> = children_of(tq.pid())
        .into_iter()
        .filter(|(_, n)| n.starts_with("php-fpm"))
        .collect();
    assert_eq!(now.len(), 1);
    assert_ne!(now[0].0, master);
}

/// The php-fpm master tqserver runs and its children, once it has served.
async fn php_fpm_of(tq: &Tq) -> (u32, Vec<u32>) {
    assert_eq!(
        client()
            .get(tq.url("/app/pid.php"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let master = children_of(tq.pid())
        .into_iter()
        .find(|(_, n)| n.starts_with("php-fpm"))
        .expect("php-fpm master")
        .0;
    (
        master,
        children_of(master).into_iter().map(|(p, _)| p).collect(),
    )
}

#[tokio::test]
async fn sigterm_leaves_no_php_fpm_behind() {
    let (_p, mut tq) = app();
    let (master, workers) = php_fpm_of(&tq).await;
    assert_eq!(workers.len(), 2, "static pool of 2");
    let status = tq.stop().unwrap();
    assert!(status.success(), "{status}");
    assert!(!alive(master), "php-fpm master {master} outlived tqserver");
    for w in workers {
        assert!(!alive(w), "php-fpm child {w} outlived tqserver");
    }
}

#[tokio::test]
async fn a_slow_client_that_never_finishes_its_headers_is_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_p, tq) = app();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", tq.port))
        .await
        .unwrap();
    s.write_all(b"GET /app/pid.php HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // read_timeout_seconds is 2 here; allow a generous margin.
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "the connection is closed by the server");
}

/// HTTP/2 without TLS (prior knowledge), as a load balancer may speak it.
#[tokio::test]
async fn h2c_with_prior_knowledge() {
    let (_p, tq) = app();
    let c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = c.get(tq.url("/app/echo.php?h2=1")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["SERVER_PROTOCOL"], "HTTP/2.0");
    assert_eq!(v["HTTP_HOST"], format!("127.0.0.1:{}", tq.port));
    assert_eq!(v["QUERY_STRING"], "h2=1");
}

/// SIGINT stops as SIGTERM does; SIGKILL of tqserver still takes php-fpm
/// down (PR_SET_PDEATHSIG), within a few seconds.
#[tokio::test]
async fn sigint_and_sigkill_leave_no_php_fpm_behind() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    for signal in [Signal::SIGINT, Signal::SIGKILL] {
        let (_p, tq) = app();
        let (master, workers) = php_fpm_of(&tq).await;
        kill(Pid::from_raw(tq.pid() as i32), signal).unwrap();
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while std::iter::once(master)
            .chain(workers.iter().copied())
            .any(alive)
        {
            assert!(
                std::time::Instant::now() < until,
                "php-fpm outlived tqserver after {signal}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A runtime directory left by a killed tqserver is removed at the next
/// start; one whose tqserver still runs is not.
#[tokio::test]
async fn stale_runtime_directories_are_cleaned_up() {
    let tmp = tempfile::tempdir().unwrap();
    let dead = {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        c.wait().unwrap();
        c.id()
    };
    let stale = tmp.path().join("tqserver-stale1");
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("tqserver.pid"), dead.to_string()).unwrap();
    let live = tmp.path().join("tqserver-live1");
    std::fs::create_dir(&live).unwrap();
    std::fs::write(live.join("tqserver.pid"), std::process::id().to_string()).unwrap();
    let p = Project::new("", "");
    p.php_worker("app", "/app", "");
    let tmp_str = tmp.path().to_str().unwrap();
    let mut tq = Tq::start_env(p.path(), &[], &[("TMPDIR", tmp_str)]);
    assert!(!stale.exists(), "stale runtime dir removed");
    assert!(live.exists(), "a live server's dir is kept");
    // Its own runtime dir exists while it runs and is gone after a stop.
    let own: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("tqserver-")
                && *p != live
        })
        .collect();
    assert_eq!(own.len(), 1, "{own:?}");
    tq.stop();
    assert!(!own[0].exists());
}
