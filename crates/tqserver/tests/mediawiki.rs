//! Debian's own MediaWiki package, whose document root
//! (`/var/lib/mediawiki`) is a folder of absolute links into
//! `/usr/share/mediawiki`, on a MariaDB the test starts itself, through
//! TQServer with the worker.yaml of docs/php.md (php-fpm): installed with
//! its own `maintenance/install.php`, its pages at `/wiki/Title` through
//! the front controller, ResourceLoader's styles and scripts, a login and
//! an edit over its API (session and CSRF token across requests), and the
//! folders the rules close.

mod common;

use std::process::Command;

use common::mariadb::MariaDb;
use common::web::form;
use common::{Project, Tq};

#[tokio::test]
async fn debians_mediawiki_serves_logs_in_and_edits() {
    assert!(
        std::path::Path::new("/usr/share/mediawiki/maintenance/install.php").is_file(),
        "MediaWiki is not installed (Debian: apt-get install mediawiki); scripts/test installs it"
    );
    let db = MariaDb::start();
    db.database("wiki", "wiki", "wiki-secret");
    let p = Project::new("", "");
    let conf = p.path().join("wiki-config");
    std::fs::create_dir_all(&conf).unwrap();
    let settings = conf.join("LocalSettings.php");
    p.worker(
        "wiki",
        &format!(
            r#"path: /wiki
type: php
document_root: /var/lib/mediawiki
rules:
  - path: /images
    php: false
  - path: /cache
    deny: 403
  - path: /includes
    deny: 403
  - path: /maintenance
    deny: 403
php:
  params:
    MW_CONFIG_FILE: {}
  pool:
    manager: static
    max_workers: 2
"#,
            settings.display()
        ),
    );
    let tq = Tq::start(p.path(), &["--mode", "prod"]);
    let server = tq.url("");
    let server = server.trim_end_matches('/');
    let password = "a long wiki passphrase";
    let out = Command::new("php")
        .arg("/usr/share/mediawiki/maintenance/install.php")
        .arg(format!("--confpath={}", conf.display()))
        .args([
            "--dbtype=mysql",
            "--dbname=wiki",
            "--dbuser=wiki",
            "--dbpass=wiki-secret",
        ])
        .arg(format!("--dbserver=localhost:{}", db.socket().display()))
        .arg(format!("--server={server}"))
        .args(["--scriptpath=/wiki", "--lang=en"])
        .arg(format!("--pass={password}"))
        .args(["TQ Wiki", "Admin"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install.php: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut text = std::fs::read_to_string(&settings).unwrap();
    // Pretty URLs, and the caches the web installer picks when it finds
    // APCu (Debian recommends php-apcu): sessions in APCu, so they hold
    // only if every process of the pool shares it (php-fpm does).
    text.push_str("\n$wgArticlePath = \"/wiki/$1\";\n$wgMainCacheType = CACHE_ACCEL;\n$wgSessionCacheType = CACHE_ACCEL;\n");
    std::fs::write(&settings, text).unwrap();

    let c = common::client();
    // A page at its pretty address, through the front controller.
    let r = c.get(tq.url("/wiki/Main_Page")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", tq.log_text());
    let page = r.text().await.unwrap();
    assert!(page.contains("TQ Wiki"), "{page}");
    // ResourceLoader's style sheet, and a file behind Debian's links.
    let r = c
        .get(tq.url("/wiki/load.php?modules=site.styles&only=styles"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    let r = c
        .get(tq.url("/wiki/resources/assets/poweredby_mediawiki_88x31.png"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "a static file behind /var/lib/mediawiki/resources"
    );
    // Closed folders.
    for path in [
        "/wiki/includes/WebStart.php",
        "/wiki/maintenance/install.php",
        "/wiki/cache/",
    ] {
        let r = c.get(tq.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
    }

    // Log in and edit over the API: a session and a CSRF token that hold
    // from one request to the next (on whichever process serves them).
    let api = tq.url("/wiki/api.php");
    let token = |kind: &'static str| {
        let url = format!("{api}?action=query&meta=tokens&type={kind}&format=json");
        let c = c.clone();
        async move {
            let v: serde_json::Value = c.get(url).send().await.unwrap().json().await.unwrap();
            v["query"]["tokens"][format!("{kind}token")]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let post = |pairs: Vec<(&'static str, String)>| {
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let req = c
            .post(&api)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form(&pairs));
        async move {
            let v: serde_json::Value = req.send().await.unwrap().json().await.unwrap();
            v
        }
    };
    let r = post(vec![
        ("action", "login".into()),
        ("lgname", "Admin".into()),
        ("lgpassword", password.into()),
        ("lgtoken", token("login").await),
        ("format", "json".into()),
    ])
    .await;
    assert_eq!(r["login"]["result"], "Success", "{r}");
    for round in 0..4 {
        let csrf = token("csrf").await;
        assert_ne!(
            csrf, "+\\",
            "logged out (an anonymous token) in round {round}"
        );
        let r = post(vec![
            ("action", "edit".into()),
            ("title", "Über TQServer".into()),
            ("text", format!("Bearbeitet, Runde {round}.")),
            ("token", csrf),
            ("format", "json".into()),
        ])
        .await;
        assert_eq!(r["edit"]["result"], "Success", "round {round}: {r}");
    }
    let r = c
        .get(tq.url("/wiki/%C3%9Cber_TQServer"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Bearbeitet, Runde 3."));
}
