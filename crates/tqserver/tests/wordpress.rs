//! Debian's own WordPress package (`/usr/share/wordpress`, configured the
//! Debian way in `/etc/wordpress/config-NAME.php`), on a MariaDB the test
//! starts itself, through TQServer as a user writes it in docs/php.md:
//! the install wizard, logging in, pretty permalinks chosen on the
//! permalink page and saved without an `.htaccess` notice, a post with a
//! non-ASCII title published over the REST API and read at its pretty
//! permalink, an image uploaded to the media library and loaded back
//! (through the `/wp-content` alias), wp-cron.php, the theme's 404, and
//! a Debian symlink into /usr/share/javascript — on every PHP backend (fpm, cgi, embed).

mod common;

use std::path::{Path, PathBuf};

use common::mariadb::MariaDb;
use common::web::{SettingsFile, form, input};
use common::{Project, Tq};

/// Debian's site configuration for `name`, in `/etc/wordpress`.
fn site_config(name: &str, db: &MariaDb, content: &Path) -> SettingsFile {
    let text = format!(
        "<?php\ndefine('DB_NAME', 'wp');\ndefine('DB_USER', 'wp');\ndefine('DB_PASSWORD', 'secret-pw');\ndefine('DB_HOST', 'localhost:{}');\ndefine('WP_CONTENT_DIR', '{}');\ndefine('WP_CONTENT_URL', 'http://' . $_SERVER['HTTP_HOST'] . '/wp-content');\n",
        db.socket().display(),
        content.display()
    );
    SettingsFile::write(format!("/etc/wordpress/config-{name}.php"), &text)
}

/// A 2×2 PNG, made here (the media library checks that it is an image).
fn png() -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &[0, 0, 0, 2, 0, 0, 0, 2, 8, 2, 0, 0, 0]);
    let raw = [0u8, 255, 0, 0, 0, 255, 0, 0, 0, 0, 255, 255, 255, 255];
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut z, &raw).unwrap();
    chunk(&mut out, b"IDAT", &z.finish().unwrap());
    chunk(&mut out, b"IEND", &[]);
    out
}

async fn wordpress_on(backend: &str) {
    let db = MariaDb::start();
    db.database("wp", "wp", "secret-pw");
    let p = Project::new("", "");
    let content = p.path().join("wp-content");
    for d in ["themes", "plugins", "uploads"] {
        std::fs::create_dir_all(content.join(d)).unwrap();
    }
    std::os::unix::fs::symlink(
        "/usr/share/wordpress/wp-content/themes/twentytwentyone",
        content.join("themes/twentytwentyone"),
    )
    .unwrap();
    let name = format!("tqtest-{backend}-{}", std::process::id());
    let _site = site_config(&name, &db, &content);
    p.worker(
        "wordpress",
        &format!(
            r#"path: /
type: php
document_root: /usr/share/wordpress
alias:
  "/wp-content": {}
rules:
  - path: /wp-content/uploads
    php: false
php:
  backend: {backend}
  params:
    WORDPRESS_CONFIG: {name}
  pool:
    manager: static
    max_workers: 2
"#,
            content.display()
        ),
    );
    let tq = Tq::start(p.path(), &["--mode", "prod"]);
    let c = common::client();
    let url = |path: &str| tq.url(path);
    let post = |path: &str, body: String| {
        c.post(url(path))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };

    // The install wizard.
    let r = c.get(url("/")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .ends_with("/wp-admin/install.php")
    );
    let page = c.get(url("/wp-admin/install.php")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("weblog_title"));
    let password = "a long Passphrase 4 the test";
    let r = post(
        "/wp-admin/install.php?step=2",
        form(&[
            ("weblog_title", "TQ Blog"),
            ("user_name", "admin"),
            ("admin_password", password),
            ("admin_password2", password),
            ("pw_weak", "on"),
            ("admin_email", "admin@example.com"),
            ("blog_public", "0"),
            ("Submit", "Install WordPress"),
            ("language", ""),
        ]),
    )
    .await
    .unwrap();
    let text = r.text().await.unwrap();
    assert!(
        text.contains("Success!"),
        "install: {text}\n{}",
        tq.log_text()
    );

    // Logging in.
    c.get(url("/wp-login.php")).send().await.unwrap();
    let r = post(
        "/wp-login.php",
        form(&[
            ("log", "admin"),
            ("pwd", password),
            ("wp-submit", "Log In"),
            ("redirect_to", &url("/wp-admin/")),
            ("testcookie", "1"),
        ]),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 302, "login");
    let r = c.get(url("/wp-admin/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Dashboard"));

    // The permalink page offers pretty permalinks (no /index.php/ prefix)
    // and saves them without asking for an .htaccess.
    let structure = "/%year%/%monthnum%/%day%/%postname%/";
    let page = c
        .get(url("/wp-admin/options-permalink.php"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(&format!("value=\"{structure}\"")), "offered");
    assert!(
        !page.contains("/index.php/%year%"),
        "index.php permalinks only"
    );
    let nonce = input(&page, "_wpnonce");
    let r = post(
        "/wp-admin/options-permalink.php",
        form(&[
            ("_wpnonce", &nonce),
            ("_wp_http_referer", "/wp-admin/options-permalink.php"),
            ("selection", structure),
            ("permalink_structure", structure),
            ("category_base", ""),
            ("tag_base", ""),
            ("submit", "Save Changes"),
        ]),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 302, "saved");
    let to = r.headers()["location"].to_str().unwrap().to_string();
    let page = c.get(to).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Permalink structure updated."), "{page}");
    assert!(!page.contains(".htaccess"), "an .htaccess notice: {page}");

    // A post with a non-ASCII title, over the REST API at its pretty URL.
    let nonce = c
        .get(url("/wp-admin/admin-ajax.php?action=rest-nonce"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let title = "Grüße aus Köln – 東京";
    let r = c
        .post(url("/wp-json/wp/v2/posts"))
        .header("X-WP-Nonce", &nonce)
        .json(&serde_json::json!({"title": title, "content": "<p>Hallo, Welt.</p>", "status": "publish"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let created: serde_json::Value = r.json().await.unwrap();
    let link = created["link"].as_str().unwrap().to_string();
    let path = link.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap();
    assert!(
        path.starts_with("/20")
            && path.ends_with('/')
            && !path.contains("index.php")
            && !path.contains('?'),
        "a pretty permalink: {link}"
    );
    let r = c.get(url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    let text = r.text().await.unwrap();
    assert!(text.contains("Grüße aus Köln"), "{text}");
    assert!(text.contains("Hallo, Welt."));

    // An image into the media library, loaded back through the alias.
    let image = png();
    let r = c
        .post(url("/wp-json/wp/v2/media"))
        .header("X-WP-Nonce", &nonce)
        .header("Content-Type", "image/png")
        .header("Content-Disposition", "attachment; filename=\"pixel.png\"")
        .body(image.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let media: serde_json::Value = r.json().await.unwrap();
    let src = media["source_url"].as_str().unwrap().to_string();
    assert!(src.contains("/wp-content/uploads/"), "{src}");
    let r = c.get(&src).send().await.unwrap();
    assert_eq!(r.status(), 200, "{src}");
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.bytes().await.unwrap().as_ref(), image.as_slice());
    let on_disk: Vec<_> = walk(&content.join("uploads"));
    assert!(
        on_disk.iter().any(|f| f.ends_with("pixel.png")),
        "{on_disk:?}"
    );

    // The REST index at its pretty address, wp-cron, the theme's 404, and
    // a file Debian links into /usr/share/javascript.
    let r = c.get(url("/wp-json/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let index: serde_json::Value = r.json().await.unwrap();
    assert_eq!(index["name"], "TQ Blog");
    let r = c.get(url("/wp-cron.php")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(url("/no-such-page-here/")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("Nothing here"));
    let r = c
        .get(url("/wp-includes/js/underscore.min.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let log = tq.log_text();
    assert!(!log.contains("PHP Fatal"), "{log}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn debians_wordpress_on_php_fpm() {
    wordpress_on("fpm").await;
}

#[tokio::test]
async fn debians_wordpress_on_the_cgi_backend() {
    wordpress_on("cgi").await;
}

#[tokio::test]
async fn debians_wordpress_on_the_embed_backend() {
    wordpress_on("embed").await;
}
