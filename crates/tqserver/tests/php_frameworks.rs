//! A Symfony 5.4 application on Debian's php-symfony packages and a
//! Laravel 8 application on Debian's php-laravel-framework (tests/apps/:
//! a route, a template, a database query against SQLite), each on the
//! embed backend in classic mode (the front controller builds the
//! framework for every request) and in worker mode (it boots once per
//! process and handles requests from memory).

mod common;

use std::path::{Path, PathBuf};

use common::{Project, Tq};

fn app_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/apps")
        .join(name)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// The app copied into a project folder (its caches and database are
/// written next to it), served at /app.
fn serve(app: &str, worker: bool) -> (Project, Tq) {
    let p = Project::new("", "");
    let root = p.path().join("workers/app");
    copy_dir(&app_dir(app), &root);
    for d in ["var", "bootstrap/cache", "storage/framework/views"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    // Laravel opens an SQLite database only if the file exists.
    std::fs::write(root.join("storage/app.sqlite"), b"").unwrap();
    let worker_key = if worker {
        "  worker: public/worker.php\n"
    } else {
        ""
    };
    p.worker(
        "app",
        &format!("path: /app\ntype: php\nphp:\n  backend: embed\n{worker_key}  pool:\n    max_workers: 1\n"),
    );
    let tq = Tq::start(p.path(), &["--mode", "prod"]);
    (p, tq)
}

fn text_of(page: &str, id: &str) -> String {
    let start = page
        .find(&format!("<p id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no #{id} in {page}"))
        + id.len()
        + 9;
    page[start..page[start..].find("</p>").unwrap() + start].to_string()
}

async fn hello(tq: &Tq, name: &str) -> String {
    let r = common::client()
        .get(tq.url(&format!("/app/hello/{name}?x=1")))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 200, "{body}\n{}", tq.log_text());
    body
}

async fn exercise(app: &str, worker: bool) {
    let (_p, tq) = serve(app, worker);
    let c = common::client();
    let page = hello(&tq, "World").await;
    assert!(page.contains("<h1>Hello World</h1>"), "{page}");
    assert!(
        page.contains("<li>hello</li><li>bonjour</li><li>hallo</li>"),
        "{page}"
    );
    assert_eq!(
        text_of(&page, "query").replace("&quot;", "\""),
        r#"{"x":"1"}"#
    );
    let first_pid = text_of(&page, "pid");

    // A write, seen by the next read.
    let r = c
        .post(tq.url("/app/greet"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("word=hej")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.text().await.unwrap(), "4");
    let page = hello(&tq, "Again").await;
    assert!(page.contains("<li>hej</li>"), "{page}");
    assert!(page.contains("<h1>Hello Again</h1>"), "{page}");

    // The application answers what it does not route.
    let r = c.get(tq.url("/app/no/such/page")).send().await.unwrap();
    assert_eq!(r.status(), 404, "{}", tq.log_text());

    // Classic mode builds the framework for each request; worker mode
    // keeps it, and its state, in one process.
    let mut served = Vec::new();
    for _ in 0..3 {
        let page = hello(&tq, "Count").await;
        assert_eq!(text_of(&page, "pid"), first_pid);
        served.push(text_of(&page, "served").parse::<u32>().unwrap());
    }
    if worker {
        assert!(
            served.windows(2).all(|w| w[1] == w[0] + 1) && served[0] >= 3,
            "{served:?}"
        );
    } else {
        assert_eq!(served, [1, 1, 1]);
    }
}

#[tokio::test]
async fn symfony_classic() {
    exercise("symfony", false).await;
}

#[tokio::test]
async fn symfony_worker_mode() {
    exercise("symfony", true).await;
}

#[tokio::test]
async fn laravel_classic() {
    exercise("laravel", false).await;
}

#[tokio::test]
async fn laravel_worker_mode() {
    exercise("laravel", true).await;
}
