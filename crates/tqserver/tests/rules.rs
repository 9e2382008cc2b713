//! A PHP worker's `rules` against real php-fpm: `php: false` keeps a
//! script in an uploads folder from running (the file is still there to
//! download as anything else is not), `deny` closes a folder on segment
//! boundaries whatever the spelling of the path, `headers` and `cache` go
//! on answers below 400 (static and PHP), and `tqserver check` names the
//! entry and line of a bad rule.

mod common;

use common::raw;
use common::tls::curl;
use common::{Project, Tq, run_cli};

/// Status, headers and body of a GET.
fn get(tq: &Tq, path: &str) -> (String, String, String) {
    let r = curl(&["-s", "-D", "-", "--path-as-is", &tq.url(path)]);
    assert!(r.ok, "{path}: {}", r.err);
    let (head, body) = r.out.split_once("\r\n\r\n").unwrap_or((&r.out, ""));
    let status = head.split_whitespace().nth(1).unwrap_or("").to_string();
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn site(p: &Project) -> std::path::PathBuf {
    let root = p.path().join("site");
    std::fs::create_dir_all(root.join("uploads")).unwrap();
    std::fs::create_dir_all(root.join("private")).unwrap();
    std::fs::write(root.join("uploads/evil.php"), "<?php echo 'ran';").unwrap();
    std::fs::write(root.join("uploads/photo.txt"), "a photo").unwrap();
    std::fs::write(root.join("private/secret.txt"), "secret").unwrap();
    std::fs::write(root.join("privateer.txt"), "public").unwrap();
    std::fs::write(root.join("style.css"), "body{}").unwrap();
    std::fs::write(root.join("page.php"), "<?php echo 'page';").unwrap();
    root
}

#[test]
fn rules_refuse_scripts_close_folders_and_add_headers() {
    let p = Project::new("", "");
    let root = site(&p);
    p.worker(
        "site",
        &format!(
            r#"path: /
type: php
document_root: {}
php:
  front_controller: false
  pool:
    manager: static
    max_workers: 1
rules:
  - path: /uploads/
    php: false
  - path: /private
    deny: 404
  - ext: [css, JS]
    cache: 30d
  - path: /
    headers:
      X-Content-Type-Options: nosniff
"#,
            root.display()
        ),
    );
    let (status, out, err) = run_cli(p.path(), &["check"]);
    assert!(status.success(), "{out}{err}");
    for line in [
        "rule /uploads: no scripts",
        "rule /private: deny 404",
        "rule / *.css|js: cache 2592000s",
        "rule /: headers x-content-type-options",
    ] {
        assert!(out.contains(line), "{line}\n{out}");
    }
    let tq = Tq::start(p.path(), &[]);

    // php: false: not run, whatever the spelling.
    for path in [
        "/uploads/evil.php",
        "/uploads/../uploads/evil.php",
        "/%75ploads/evil.php",
    ] {
        let (status, _, body) = get(&tq, path);
        assert_eq!(status, "403", "{path}: {body}");
        assert!(!body.contains("ran"), "{path}: {body}");
    }
    let (status, _, body) = get(&tq, "/uploads/photo.txt");
    assert_eq!((status.as_str(), body.as_str()), ("200", "a photo"));
    // deny, on segment boundaries.
    for path in [
        "/private/secret.txt",
        "/private",
        "/private/",
        "/%70rivate/secret.txt",
        "/x/../private/secret.txt",
    ] {
        let (status, _, body) = get(&tq, path);
        assert_eq!(status, "404", "{path}: {body}");
        assert!(!body.contains("secret"), "{path}: {body}");
    }
    assert_eq!(get(&tq, "/privateer.txt").0, "200");
    // cache on the extensions, headers everywhere below 400.
    let (status, head, _) = get(&tq, "/style.css");
    assert_eq!(status, "200");
    assert!(head.contains("cache-control: max-age=2592000"), "{head}");
    assert!(head.contains("\r\nexpires: "), "{head}");
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    let (status, head, body) = get(&tq, "/page.php");
    assert_eq!((status.as_str(), body.as_str()), ("200", "page"));
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    assert!(!head.contains("cache-control: max-age"), "{head}");
    // Not on a 404.
    let (status, head, _) = get(&tq, "/missing.css");
    assert_eq!(status, "404");
    assert!(
        !head.contains("nosniff") && !head.contains("max-age"),
        "{head}"
    );
}

#[test]
fn a_bad_rule_names_its_entry_and_line() {
    let p = Project::new("", "");
    let root = site(&p);
    p.worker(
        "site",
        &format!(
            "path: /\ntype: php\ndocument_root: {}\nrules:\n  - path: /uploads\n    php: false\n  - path: /private\n    deny: 401\n  - headers:\n      X-A: b\n  - path: /x\n",
            root.display()
        ),
    );
    let (status, out, err) = run_cli(p.path(), &["check"]);
    assert_eq!(status.code(), Some(78), "{out}{err}");
    for line in [
        "worker.yaml:8: rules[1].deny: 401: deny answers 403 or 404",
        "worker.yaml:9: rules[2]: needs path or ext",
        "worker.yaml:11: rules[3]: does nothing",
    ] {
        assert!(err.contains(line), "{line}\n{err}");
    }
}

#[test]
fn a_static_worker_serves_files_without_php() {
    let p = Project::new("", "");
    let root = site(&p);
    std::fs::write(root.join("uploads/index.html"), "uploads index").unwrap();
    p.worker(
        "assets",
        &format!(
            "path: /assets\ntype: static\ndocument_root: {}\nrules:\n  - path: /private\n    deny: 404\n  - ext: [css]\n    cache: 1h\n",
            root.display()
        ),
    );
    let (status, out, err) = run_cli(p.path(), &["check"]);
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains("/assets") && out.contains("(static, files only, no PHP)"),
        "{out}"
    );
    assert!(out.contains("assets: no processes (static files)"), "{out}");
    let tq = Tq::start(p.path(), &[]);
    let (status, head, body) = get(&tq, "/assets/style.css");
    assert_eq!((status.as_str(), body.as_str()), ("200", "body{}"));
    assert!(head.contains("cache-control: max-age=3600"), "{head}");
    // No script runs and none is shown.
    for path in ["/assets/page.php", "/assets/uploads/evil.php"] {
        let (status, _, body) = get(&tq, path);
        assert_eq!(status, "404", "{path}: {body}");
        assert!(
            !body.contains("<?php") && !body.contains("ran"),
            "{path}: {body}"
        );
    }
    let (status, head, _) = get(&tq, "/assets/uploads");
    assert_eq!(status, "301");
    assert!(head.contains("location: /assets/uploads/"), "{head}");
    assert_eq!(get(&tq, "/assets/uploads/").2, "uploads index");
    assert_eq!(get(&tq, "/assets/private/secret.txt").0, "404");
    // And no PHP process was started for it.
    let children = common::children_of(tq.pid());
    assert!(
        !children.iter().any(|(_, name)| name.contains("php")),
        "{children:?}"
    );
}

#[test]
fn an_alias_serves_a_prefix_from_another_folder() {
    for backend in ["fpm", "cgi"] {
        alias_on(backend);
    }
}

fn alias_on(backend: &str) {
    let p = Project::new("", "");
    let root = site(&p);
    std::fs::write(
        root.join("index.php"),
        "<?php echo 'front ', $_SERVER['REQUEST_URI'];",
    )
    .unwrap();
    let content = p.path().join("content");
    std::fs::create_dir_all(content.join("uploads")).unwrap();
    std::fs::write(content.join("theme.css"), "h1{}").unwrap();
    std::fs::write(content.join("uploads/evil.php"), "<?php echo 'ran';").unwrap();
    std::fs::write(
        content.join("plugin.php"),
        "<?php echo $_SERVER['SCRIPT_NAME'], ' ', $_SERVER['SCRIPT_FILENAME'], ' ', $_SERVER['DOCUMENT_ROOT'];",
    )
    .unwrap();
    p.worker(
        "site",
        &format!(
            "path: /\ntype: php\ndocument_root: {}\nphp:\n  backend: {backend}\n  pool:\n    manager: static\n    max_workers: 1\nalias:\n  /wp-content: {}\nrules:\n  - path: /wp-content/uploads\n    php: false\n",
            root.display(),
            content.display()
        ),
    );
    let tq = Tq::start(p.path(), &[]);
    let content = content.canonicalize().unwrap();
    for path in ["/wp-content/theme.css", "/%77p-content/theme.css"] {
        let (status, _, body) = get(&tq, path);
        assert_eq!((status.as_str(), body.as_str()), ("200", "h1{}"), "{path}");
    }
    let (status, _, body) = get(&tq, "/wp-content/plugin.php");
    assert_eq!(status, "200", "{backend}: {body}");
    assert_eq!(
        body,
        format!(
            "/wp-content/plugin.php {} {}",
            content.join("plugin.php").display(),
            content.display()
        )
    );
    let (status, head, _) = get(&tq, "/wp-content");
    assert_eq!(status, "301");
    assert!(head.contains("location: /wp-content/"), "{head}");
    // No front controller under an alias; the worker's own elsewhere.
    assert_eq!(get(&tq, "/wp-content/missing").0, "404");
    assert_eq!(get(&tq, "/missing").2, "front /missing");
    // Rules see the whole path.
    let (status, _, body) = get(&tq, "/wp-content/uploads/evil.php");
    assert_eq!(status, "403", "{body}");
    // Leaving the alias by .. lands in the document root.
    assert_eq!(get(&tq, "/wp-content/../page.php").2, "page");
}

#[test]
fn an_alias_to_a_missing_folder_is_a_config_error() {
    let p = Project::new("", "");
    let root = site(&p);
    p.worker(
        "site",
        &format!(
            "path: /\ntype: php\ndocument_root: {}\nalias:\n  /a: {}/nothing-here\n  /../b: /tmp\n",
            root.display(),
            p.path().display()
        ),
    );
    let (status, out, err) = run_cli(p.path(), &["check"]);
    assert_eq!(status.code(), Some(78), "{out}{err}");
    assert!(
        err.contains("worker.yaml:5: alias./a: ")
            && err.contains("nothing-here is not a directory"),
        "{err}"
    );
    assert!(err.contains("worker.yaml:6: alias./../b: "), "{err}");
}

#[test]
fn a_static_worker_takes_no_php_settings() {
    let p = Project::new("", "");
    let root = site(&p);
    p.worker(
        "assets",
        &format!(
            "path: /assets\ntype: static\ndocument_root: {}\nphp:\n  backend: cgi\n",
            root.display()
        ),
    );
    let (status, out, err) = run_cli(p.path(), &["check"]);
    assert_eq!(status.code(), Some(78), "{out}{err}");
    assert!(
        err.contains("worker.yaml:4: php: php is for type: php workers; this one is type: static"),
        "{err}"
    );
}

#[test]
fn rules_and_aliases_hold_against_raw_request_targets() {
    let p = Project::new("", "");
    let root = site(&p);
    let content = p.path().join("content");
    std::fs::create_dir_all(content.join("uploads")).unwrap();
    std::fs::write(content.join("uploads/evil.php"), "<?php echo 'ran';").unwrap();
    p.worker(
        "site",
        &format!(
            "path: /\ntype: php\ndocument_root: {}\nphp:\n  front_controller: false\n  pool:\n    manager: static\n    max_workers: 1\nalias:\n  /wp-content: {}\nrules:\n  - path: /private\n    deny: 404\n  - path: /wp-content/uploads\n    php: false\n  - path: /uploads\n    php: false\n",
            root.display(),
            content.display()
        ),
    );
    let tq = Tq::start(p.path(), &[]);
    let ask = |target: &str| {
        let req = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let got = raw::exchange(tq.port, req.as_bytes());
        let (resp, _) = raw::parse_one(&got, false).unwrap_or_else(|| {
            panic!(
                "{target}: no response in {:?}",
                String::from_utf8_lossy(&got)
            )
        });
        resp
    };
    // The bytes an attacker would send, exactly: encoded slashes and dots,
    // doubled slashes, a dot segment, path info after the script.
    for target in [
        "/private%2Fsecret.txt",
        "//private/secret.txt",
        "/./private/secret.txt",
        "/%2e/private/secret.txt",
        "/uploads/%2e%2e/private/secret.txt",
    ] {
        let r = ask(target);
        assert_eq!(r.status, 404, "{target}: {}", r.text());
        assert!(!r.text().contains("secret"), "{target}: {}", r.text());
    }
    for target in [
        "/uploads/evil.php",
        "/uploads%2Fevil.php",
        "/uploads/evil.php/x",
        "//wp-content//uploads/evil.php",
        "/wp-content/uploads%2fevil.php",
        "/%77p-content/uploads/evil.php",
    ] {
        let r = ask(target);
        assert_eq!(r.status, 403, "{target}: {}", r.text());
        assert!(!r.text().contains("ran"), "{target}: {}", r.text());
    }
    // A NUL stays a bad request, not a rule's miss.
    assert_eq!(ask("/private%00/secret.txt").status, 400);
}
