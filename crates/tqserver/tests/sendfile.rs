//! `X-Sendfile` and `X-Accel-Redirect` from real PHP (php-fpm and the
//! cgi backend): the file named is sent by TQServer with PHP's own
//! headers (type, disposition, cookies), ranges and validators; a name
//! outside the worker's `sendfile` folders (or with `..`) is refused; the
//! application is told which header to use, whatever the client says;
//! and a worker without `sendfile` passes the header on untouched.

mod common;

use std::path::Path;

use common::web::{curl_get as get, header};
use common::{Project, Tq};

fn scripts(root: &Path, files: &Path) {
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(
        root.join("download.php"),
        "<?php header('Content-Type: application/x-report'); header('Content-Disposition: attachment; filename=\"r.bin\"'); setcookie('a', '1'); setcookie('b', '2'); header('X-Sendfile: ' . $_GET['p']); echo 'this body is never sent';",
    )
    .unwrap();
    std::fs::write(
        root.join("accel.php"),
        "<?php header('X-Accel-Redirect: /protected/' . $_GET['f']);",
    )
    .unwrap();
    std::fs::write(
        root.join("type.php"),
        "<?php echo $_SERVER['HTTP_X_SENDFILE_TYPE'] ?? 'none';",
    )
    .unwrap();
    std::fs::create_dir_all(files.join("sub dir")).unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(files.join("report.bin"), &data).unwrap();
    std::fs::write(files.join("sub dir/note.txt"), "a note").unwrap();
}

#[test]
fn a_php_answer_naming_a_file_gets_the_file() {
    let p = Project::new("", "");
    let root = p.path().join("site");
    let files = p.path().join("files");
    scripts(&root, &files);
    let files = files.canonicalize().unwrap();
    for (name, route, backend) in [("fpm", "/", "fpm"), ("cgi", "/cgi", "cgi")] {
        p.worker(
            name,
            &format!(
                "path: {route}\ntype: php\ndocument_root: {}\nphp:\n  backend: {backend}\n  front_controller: false\n  pool:\n    manager: static\n    max_workers: 1\nsendfile:\n  /protected: {}\n",
                root.display(),
                files.display()
            ),
        );
    }
    p.worker(
        "bare",
        &format!(
            "path: /bare\ntype: php\ndocument_root: {}\nphp:\n  front_controller: false\n  pool:\n    manager: static\n    max_workers: 1\n",
            root.display()
        ),
    );
    let tq = Tq::start(p.path(), &[]);
    let data = std::fs::read(files.join("report.bin")).unwrap();
    let report = files.join("report.bin").display().to_string();

    for prefix in ["", "/cgi"] {
        let dl = format!("{prefix}/download.php?p={report}");
        let (status, head, body) = get(&tq, &dl, &[]);
        assert_eq!(status, "200", "{dl}: {head}");
        assert!(body == data, "{dl}: {} bytes, not the file", body.len());
        assert_eq!(header(&head, "content-length"), [data.len().to_string()]);
        assert_eq!(
            header(&head, "content-type"),
            ["application/x-report"],
            "{head}"
        );
        assert_eq!(
            header(&head, "content-disposition"),
            ["attachment; filename=\"r.bin\""]
        );
        assert_eq!(header(&head, "set-cookie").len(), 2, "{head}");
        assert!(header(&head, "x-sendfile").is_empty(), "{head}");
        let etag = header(&head, "etag")[0].to_string();
        // A range of it, and its validator.
        let (status, _, body) = get(&tq, &dl, &["-r", "1000-1999"]);
        assert_eq!(status, "206");
        assert_eq!(body, &data[1000..2000]);
        let (status, _, _) = get(&tq, &dl, &["-H", &format!("If-None-Match: {etag}")]);
        assert_eq!(status, "304");
        // X-Accel-Redirect: a URI under the prefix, percent-encoded.
        let (status, head, body) = get(
            &tq,
            &format!("{prefix}/accel.php?f=sub%2520dir/note.txt"),
            &[],
        );
        assert_eq!(status, "200", "{head}");
        assert_eq!(body, b"a note");
        assert_eq!(header(&head, "content-type"), ["text/plain"], "{head}");
        // Refused: outside the folders, a climb out of one, a missing file.
        for (q, want) in [
            ("/etc/passwd".to_string(), "403"),
            (format!("{}/../site/type.php", files.display()), "403"),
            (format!("{}/missing.bin", files.display()), "404"),
        ] {
            let (status, _, body) = get(&tq, &format!("{prefix}/download.php?p={q}"), &[]);
            assert_eq!(status, want, "{q}");
            assert!(!String::from_utf8_lossy(&body).contains("root:"), "{q}");
        }
        let (status, _, _) = get(&tq, &format!("{prefix}/accel.php?f=../site/type.php"), &[]);
        assert_eq!(status, "403");
        // The application is told, and the client cannot say otherwise.
        let (_, _, body) = get(
            &tq,
            &format!("{prefix}/type.php"),
            &["-H", "X-Sendfile-Type: X-Accel-Redirect"],
        );
        assert_eq!(body, b"X-Sendfile");
    }
    let log = tq.log_text();
    assert!(log.contains("is not under a sendfile folder"), "{log}");
    // Without `sendfile`, the header is PHP's like any other.
    let (status, head, body) = get(&tq, &format!("/bare/download.php?p={report}"), &[]);
    assert_eq!(status, "200");
    assert_eq!(body, b"this body is never sent");
    assert_eq!(header(&head, "x-sendfile"), [report.to_ascii_lowercase()]);
    let (_, _, body) = get(&tq, "/bare/type.php", &[]);
    assert_eq!(body, b"none");
}
