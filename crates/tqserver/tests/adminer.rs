//! A real PHP application: Debian's `adminer` package served as a PHP
//! worker. Its login page renders, and its login POST round-trips the
//! session cookie (the next page knows the login from the session).

mod common;

use common::web::form;
use common::{Project, Tq, client};

const ADMINER: &str = "/usr/share/adminer";

#[tokio::test]
async fn adminer_login_page_and_session_cookie() {
    assert!(
        std::path::Path::new(ADMINER).join("adminer.php").is_file(),
        "adminer is not installed: apt-get install adminer (the README test command does)"
    );
    let p = Project::new("", "");
    p.worker(
        "adminer",
        &format!("path: /adminer\ntype: php\ndocument_root: {ADMINER}\nphp:\n  front_controller: false\n  pool:\n    manager: static\n    max_workers: 2\n"),
    );
    let tq = Tq::start(p.path(), &[]);
    let c = client();

    let r = c.get(tq.url("/adminer/adminer.php")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let sets: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().into())
        .collect();
    assert!(
        sets.iter().any(|c| c.starts_with("adminer_sid=")),
        "{sets:?}"
    );
    let page = r.text().await.unwrap();
    assert!(
        page.contains("name=\"auth[username]\"") && page.contains("Login"),
        "{page}"
    );

    let r = c
        .post(tq.url("/adminer/adminer.php"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("auth[driver]", "server"),
            ("auth[server]", "127.0.0.1:1"),
            ("auth[username]", "tq"),
            ("auth[password]", "secret"),
            ("auth[db]", ""),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with("adminer.php?server=127.0.0.1"),
        "{location}"
    );

    // With the session cookie, Adminer remembers the login and tries to
    // connect (and refuses the privileged port).
    let next = tq.url(&format!("/adminer/{location}"));
    let page = c.get(&next).send().await.unwrap().text().await.unwrap();
    assert!(
        page.contains("Connecting to privileged ports is not allowed"),
        "{page}"
    );
    // Without it, the same URL is just the login form again.
    let page = client()
        .get(&next)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("Connecting to privileged ports is not allowed"));
    assert!(page.contains("name=\"auth[username]\""));
}
