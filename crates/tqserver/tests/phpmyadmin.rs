//! Debian's own phpMyAdmin package (`/usr/share/phpmyadmin`, its jQuery,
//! jQuery UI and CodeMirror linked into /usr/share/javascript), on a
//! MariaDB the test starts itself, through TQServer with the worker.yaml
//! of docs/php.md: every asset its login page loads answers 200, a user
//! logs in, and the server's databases are listed — on every backend (fpm, cgi, embed).

mod common;

use common::mariadb::MariaDb;
use common::web::{SettingsFile, form, input};
use common::{Project, Tq};

/// Put in `/etc/phpmyadmin/conf.d/`, which Debian's config.inc.php
/// includes: it points phpMyAdmin at the socket the worker passes (so two
/// tests running at once each find their own server).
const PMA_CONF: &str = "<?php\nif (isset($_SERVER['TQTEST_MARIADB_SOCKET'])) {\n    $cfg['Servers'][1]['host'] = 'localhost';\n    $cfg['Servers'][1]['socket'] = $_SERVER['TQTEST_MARIADB_SOCKET'];\n    $cfg['Servers'][1]['connect_type'] = 'socket';\n    $cfg['Servers'][1]['auth_type'] = 'cookie';\n    $cfg['Servers'][1]['controluser'] = '';\n    $cfg['Servers'][1]['controlpass'] = '';\n    $cfg['Servers'][1]['pmadb'] = '';\n}\n";

/// The `href` / `src` values of `<link>`, `<script>` and `<img>` tags.
fn assets(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for tag in html.split('<').skip(1) {
        let (name, rest) = tag.split_once([' ', '\n']).unwrap_or((tag, ""));
        let attr = match name {
            "link" => "href=\"",
            "script" | "img" => "src=\"",
            _ => continue,
        };
        let end = rest.find('>').unwrap_or(rest.len());
        if let Some(at) = rest[..end].find(attr) {
            let v = &rest[at + attr.len()..];
            out.push(v[..v.find('"').unwrap_or(v.len())].replace("&amp;", "&"));
        }
    }
    out
}

#[tokio::test]
async fn debians_phpmyadmin_loads_logs_in_and_lists_databases() {
    let db = MariaDb::start();
    db.database("tq_pma_test", "pma", "pma-secret");
    let _conf = SettingsFile::write(
        format!(
            "/etc/phpmyadmin/conf.d/tqserver-test-{}.php",
            std::process::id()
        ),
        PMA_CONF,
    );
    let p = Project::new("", "");
    for backend in ["fpm", "cgi", "embed"] {
        p.worker(
            &format!("pma-{backend}"),
            &format!(
                r#"path: /pma-{backend}
type: php
document_root: /usr/share/phpmyadmin
rules:
  - path: /libraries
    deny: 404
  - path: /templates
    deny: 404
php:
  backend: {backend}
  front_controller: false
  params:
    TQTEST_MARIADB_SOCKET: {}
  pool:
    manager: static
    max_workers: 2
"#,
                db.socket().display()
            ),
        );
    }
    let tq = Tq::start(p.path(), &["--mode", "prod"]);
    for backend in ["fpm", "cgi", "embed"] {
        let base = format!("/pma-{backend}/");
        let c = common::client();
        let r = c.get(tq.url(&base)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{base}\n{}", tq.log_text());
        let login = r.text().await.unwrap();
        assert!(login.contains("pma_username"), "a login page:\n{login}");

        // Every asset of the login page, Debian's links included.
        let list = assets(&login);
        assert!(list.len() >= 10, "{list:?}");
        assert!(list.iter().any(|a| a.contains("jquery")), "{list:?}");
        for a in &list {
            let u = if a.starts_with("http") {
                a.clone()
            } else if let Some(abs) = a.strip_prefix('/') {
                tq.url(&format!("/{abs}"))
            } else {
                tq.url(&format!("{base}{a}"))
            };
            let r = c.get(&u).send().await.unwrap();
            assert_eq!(r.status(), 200, "{u}");
        }
        // Private folders stay private.
        let r = c
            .get(tq.url(&format!("{base}libraries/classes/Config.php")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);

        // Log in; the databases are listed.
        let r = c
            .post(tq.url(&format!("{base}index.php?route=/")))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form(&[
                ("route", "/"),
                ("token", &input(&login, "token")),
                ("set_session", &input(&login, "set_session")),
                ("pma_username", "pma"),
                ("pma_password", "pma-secret"),
                ("server", "1"),
            ]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
        let r = c
            .get(tq.url(&format!("{base}index.php?route=/server/databases")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let page = r.text().await.unwrap();
        assert!(page.contains("tq_pma_test"), "{page}");
        assert!(!page.contains("pma_username"), "still the login page");
    }
}
