//! Response compression end to end: PHP answers (php-fpm and php-cgi),
//! static files (with precompressed siblings, ranges, HEAD), a native
//! worker's chunked answer, a streamed PHP answer that stays streamed,
//! what is left alone, `compression: false`, the config's errors, and a
//! real browser (Debian's Chromium) loading a compressed page and its
//! assets. curl decodes (`--compressed`, built with zlib, brotli and
//! zstd), so the bytes are checked by an implementation that is not ours.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::browser::{Browser, connect, wait_eval};
use common::tls::curl;
use common::web::{self, curl_get};
use common::{Project, Tq, run_cli};

/// Some HTML that compresses well, `n` lines of it.
fn html(n: usize) -> String {
    let mut s = String::from("<!doctype html><title>c</title>\n");
    for i in 0..n {
        s.push_str(&format!(
            "<p class=\"line\">line {i} of a page that compresses well</p>\n"
        ));
    }
    s
}

fn site(dir: &Path) -> PathBuf {
    let root = dir.join("site");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("page.html"), html(400)).unwrap();
    std::fs::write(
        root.join("page.php"),
        "<?php header('Content-Type: text/html; charset=UTF-8'); echo file_get_contents(__DIR__ . '/page.html');",
    )
    .unwrap();
    std::fs::write(
        root.join("stream.php"),
        "<?php while (ob_get_level()) ob_end_flush(); header('Content-Type: text/plain'); echo str_repeat('first part ', 100); flush(); sleep(3); echo 'second part';",
    )
    .unwrap();
    let css = ".line { color: rgb(1, 2, 3); }\n".repeat(300);
    std::fs::write(root.join("style.css"), &css).unwrap();
    // A precompressed sibling, as `brotli -k` makes it.
    let mut br = brotli::CompressorWriter::new(Vec::new(), 4096, 9, 22);
    br.write_all(css.as_bytes()).unwrap();
    std::fs::write(root.join("style.css.br"), br.into_inner()).unwrap();
    let js = "document.title = 'script ran';\n".to_string() + &"// padding comment\n".repeat(200);
    std::fs::write(root.join("app.js"), &js).unwrap();
    // A stale sibling: older than the file, never served for it.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"stale").unwrap();
    std::fs::write(root.join("app.js.gz"), gz.finish().unwrap()).unwrap();
    let old = std::process::Command::new("touch")
        .args(["-d", "2001-01-01"])
        .arg(root.join("app.js.gz"))
        .status()
        .unwrap();
    assert!(old.success());
    // Already compressed: left alone.
    std::fs::write(root.join("photo.png"), vec![7u8; 4000]).unwrap();
    std::fs::write(
        root.join("index.html"),
        "<!doctype html><link rel=stylesheet href=style.css><script src=app.js></script><p class=line>styled</p>".to_string()
            + &"<!-- padding -->\n".repeat(100),
    )
    .unwrap();
    root
}

fn get(tq: &Tq, path: &str, args: &[&str]) -> (String, String, Vec<u8>) {
    curl_get(tq, path, args)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    web::header(head, name).first().copied()
}

fn start(p: &Project) -> Tq {
    let tq = Tq::start(p.path(), &[]);
    let until = Instant::now() + Duration::from_secs(60);
    while curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &tq.url("/api/chunked"),
    ])
    .out != "200"
    {
        assert!(Instant::now() < until, "{}", tq.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    tq
}

#[test]
fn answers_are_compressed_by_what_the_client_accepts() {
    let p = Project::new("", "");
    let root = site(p.path());
    for (name, route, backend) in [("fpm", "/", "fpm"), ("cgi", "/cgi", "cgi")] {
        p.worker(
            name,
            &format!(
                "path: {route}\ntype: php\ndocument_root: {}\nphp:\n  backend: {backend}\n  front_controller: false\n  pool:\n    manager: static\n    max_workers: 2\n",
                root.display()
            ),
        );
    }
    p.worker(
        "plain",
        &format!(
            "path: /plain\ntype: static\ndocument_root: {}\ncompression: false\n",
            root.display()
        ),
    );
    p.worker(
        "api",
        "path: /api\ntype: command\ncommand:\n  run: [\"python3\", \"app.py\"]\ncompression:\n  encodings: [gzip]\n",
    );
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/native/app.py"),
        p.path().join("workers/api/app.py"),
    )
    .unwrap();
    let tq = start(&p);
    let page = html(400).into_bytes();

    // Each coding, on each PHP backend; curl decodes it.
    for prefix in ["", "/cgi"] {
        for enc in ["gzip", "br", "zstd"] {
            let path = format!("{prefix}/page.php");
            let (status, head, body) = get(
                &tq,
                &path,
                &["--compressed", "-H", &format!("Accept-Encoding: {enc}")],
            );
            assert_eq!(status, "200", "{path} {enc}: {head}");
            assert_eq!(
                header(&head, "content-encoding"),
                Some(enc),
                "{path}: {head}"
            );
            assert_eq!(header(&head, "vary"), Some("accept-encoding"), "{head}");
            assert!(header(&head, "content-length").is_none(), "{head}");
            assert_eq!(body, page, "{path} {enc}: decoded");
        }
    }
    // The compressed bytes are smaller on the wire.
    let (_, _, wire) = get(&tq, "/page.php", &["-H", "Accept-Encoding: gzip"]);
    assert!(
        wire.len() * 5 < page.len(),
        "{} bytes for {}",
        wire.len(),
        page.len()
    );
    // Chromium's header: the best the client and server both take.
    let (_, head, _) = get(
        &tq,
        "/page.php",
        &["-H", "Accept-Encoding: gzip, deflate, br, zstd"],
    );
    assert_eq!(header(&head, "content-encoding"), Some("zstd"), "{head}");
    let (_, head, _) = get(
        &tq,
        "/page.php",
        &["-H", "Accept-Encoding: zstd;q=0.5, gzip"],
    );
    assert_eq!(header(&head, "content-encoding"), Some("gzip"), "{head}");
    // No Accept-Encoding: identity, but the answer says it varies.
    let (_, head, body) = get(&tq, "/page.php", &[]);
    assert!(header(&head, "content-encoding").is_none(), "{head}");
    assert_eq!(header(&head, "vary"), Some("accept-encoding"), "{head}");
    assert_eq!(body, page);

    // Static files: compressed, a strong ETag made weak (dev mode drops
    // an HTML page's validators for live reload, so a style sheet shows
    // it); a Range gets the identity bytes asked for.
    let css = std::fs::read(root.join("style.css")).unwrap();
    let (_, head, body) = get(
        &tq,
        "/page.html",
        &["--compressed", "-H", "Accept-Encoding: gzip"],
    );
    assert_eq!(header(&head, "content-encoding"), Some("gzip"), "{head}");
    assert_eq!(body, page);
    let (_, head, body) = get(
        &tq,
        "/style.css",
        &["--compressed", "-H", "Accept-Encoding: gzip"],
    );
    assert_eq!(header(&head, "content-encoding"), Some("gzip"), "{head}");
    assert!(
        header(&head, "etag").is_some_and(|e| e.starts_with("w/\"")),
        "{head}"
    );
    assert!(header(&head, "accept-ranges").is_none(), "{head}");
    assert_eq!(body, css);
    let (status, head, body) = get(
        &tq,
        "/style.css",
        &["-H", "Accept-Encoding: gzip", "-r", "10-29"],
    );
    assert_eq!(status, "206", "{head}");
    assert!(header(&head, "content-encoding").is_none(), "{head}");
    assert_eq!(body, &css[10..30]);
    // The precompressed sibling, byte for byte, for a client that takes br.
    let (status, head, body) = get(&tq, "/style.css", &["-H", "Accept-Encoding: br"]);
    assert_eq!(status, "200");
    assert_eq!(header(&head, "content-encoding"), Some("br"), "{head}");
    assert_eq!(header(&head, "content-type"), Some("text/css"), "{head}");
    assert_eq!(header(&head, "vary"), Some("accept-encoding"), "{head}");
    assert_eq!(body, std::fs::read(root.join("style.css.br")).unwrap());
    // Its validator answers 304.
    let etag = header(&head, "etag").unwrap().to_string();
    let (status, _, _) = get(
        &tq,
        "/style.css",
        &[
            "-H",
            "Accept-Encoding: br",
            "-H",
            &format!("If-None-Match: {etag}"),
        ],
    );
    assert_eq!(status, "304");
    // A stale sibling is not served: the file is compressed afresh.
    let (_, head, body) = get(
        &tq,
        "/app.js",
        &["--compressed", "-H", "Accept-Encoding: gzip"],
    );
    assert_eq!(header(&head, "content-encoding"), Some("gzip"), "{head}");
    assert_eq!(body, std::fs::read(root.join("app.js")).unwrap());
    // HEAD: the headers of the compressed answer, no body.
    let (_, head, body) = get(&tq, "/page.html", &["-I", "-H", "Accept-Encoding: gzip"]);
    assert_eq!(header(&head, "content-encoding"), Some("gzip"), "{head}");
    assert!(body.is_empty() || !body.starts_with(&[0x1f, 0x8b]));
    // Left alone: a PNG, and a worker with compression: false.
    let (_, head, _) = get(&tq, "/photo.png", &["-H", "Accept-Encoding: gzip"]);
    assert!(header(&head, "content-encoding").is_none(), "{head}");
    assert!(header(&head, "vary").is_none(), "{head}");
    let (_, head, body) = get(
        &tq,
        "/plain/page.html",
        &["-H", "Accept-Encoding: gzip, br"],
    );
    assert!(header(&head, "content-encoding").is_none(), "{head}");
    assert_eq!(body, page);

    // A native worker's chunked answer (with a trailer), gzip only there.
    let (_, head, body) = get(
        &tq,
        "/api/chunked",
        &["--compressed", "-H", "Accept-Encoding: br, gzip"],
    );
    assert_eq!(header(&head, "content-encoding"), Some("gzip"), "{head}");
    assert_eq!(body, b"hello chunked world");
}

/// A PHP answer that flushes and then sleeps: its first part arrives,
/// compressed and decodable, while the script still sleeps.
#[tokio::test]
async fn a_streamed_php_answer_stays_streamed_when_compressed() {
    let p = Project::new("", "");
    let root = site(p.path());
    p.worker(
        "fpm",
        &format!(
            "path: /\ntype: php\ndocument_root: {}\nphp:\n  front_controller: false\n  pool:\n    manager: static\n    max_workers: 1\n",
            root.display()
        ),
    );
    let tq = Tq::start(p.path(), &[]);
    let started = Instant::now();
    let mut resp = common::client()
        .get(tq.url("/stream.php"))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let mut d = flate2::write::GzDecoder::new(Vec::new());
    while !String::from_utf8_lossy(d.get_ref()).contains("first part") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .expect("a first part within the script's sleep")
            .unwrap()
            .expect("more body");
        d.write_all(&chunk).unwrap();
        d.flush().unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "the first part came only after {:?} (the script sleeps 3 s after it)",
        started.elapsed()
    );
    while let Some(chunk) = resp.chunk().await.unwrap() {
        d.write_all(&chunk).unwrap();
    }
    let all = String::from_utf8(d.finish().unwrap()).unwrap();
    assert!(all.ends_with("first part second part"), "{all}");
}

#[test]
fn compression_settings_are_checked() {
    for (yaml, expect) in [
        (
            "compression:\n  levels:\n    gzip: 12\n",
            "worker.yaml:6: compression.levels.gzip: 12 is outside 1..=9",
        ),
        (
            "compression:\n  encodings: [gzip, deflate]\n",
            "compression.encodings: unknown encoding \"deflate\"",
        ),
        (
            "compression:\n  level: 3\n",
            "compression.level: unknown key; did you mean compression.levels?",
        ),
        (
            "compression:\n  types: [html]\n",
            "compression.types: \"html\" is not a media type",
        ),
        ("compression: sometimes\n", "compression"),
    ] {
        let p = Project::new("", "");
        let root = p.path().join("site");
        std::fs::create_dir_all(&root).unwrap();
        p.worker(
            "w",
            &format!(
                "path: /\ntype: static\ndocument_root: {}\n{yaml}",
                root.display()
            ),
        );
        let (status, out, err) = run_cli(p.path(), &["check"]);
        assert!(!status.success(), "{yaml}: accepted\n{out}");
        assert!(format!("{out}{err}").contains(expect), "{yaml}: {out}{err}");
    }
}

/// Chromium (which sends `gzip, deflate, br, zstd`) loads a page whose
/// HTML, style sheet and script come compressed, decodes them, applies
/// the style and runs the script; its resource timing shows fewer bytes
/// on the wire than decoded.
#[tokio::test]
async fn a_browser_loads_a_compressed_page_and_its_assets() {
    let p = Project::new("", "");
    let root = site(p.path());
    p.worker(
        "site",
        &format!("path: /\ntype: static\ndocument_root: {}\n", root.display()),
    );
    let tq = Tq::start(p.path(), &[]);
    let browser = Browser::start();
    let mut ws = connect(&browser.open(&tq.url("/")).await).await;
    let mut id = 0;
    let probe = "(function(){ if (document.readyState !== 'complete') return ''; \
        const t = performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource')); \
        const sizes = t.filter(e => !e.name.endsWith('favicon.ico')).map(e => e.name.split('/').pop() + ':' + (e.encodedBodySize < e.decodedBodySize)).sort().join(','); \
        return document.title + '|' + getComputedStyle(document.querySelector('p')).color + '|' + sizes; })()";
    let v = wait_eval(&mut ws, &mut id, probe, 30, |v| !v.is_empty(), &tq).await;
    assert_eq!(
        v, "script ran|rgb(1, 2, 3)|:true,app.js:true,style.css:true",
        "title, style and which answers came compressed"
    );
}
