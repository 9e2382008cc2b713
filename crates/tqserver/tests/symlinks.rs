//! The symlink policy (`symlinks`, nginx's `disable_symlinks`) against
//! real php-fpm and php-cgi: a Debian-style document root whose entries
//! are root's links into /usr/share (Debian's own jQuery from
//! libjs-jquery, a script kept elsewhere) is served under the default
//! `owner`, a link planted by another user to root's file is refused and
//! logged with its target, `inside` refuses what leads outside, and
//! `tqserver check` reports the links.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::tls::curl;
use common::{Project, Tq, run_cli};

const JQUERY: &str = "/usr/share/javascript/jquery/jquery.min.js";

/// `{top}/share/app/page.php` and `secret.txt` (root's), and a document
/// root `{top}/root` of links: `page.php` and `js` (root's), and
/// `uploads/notes.txt`, a link owned by nobody to root's secret.
fn debian_like(top: &Path) -> PathBuf {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (it gives a link another owner)"
    );
    assert!(
        Path::new(JQUERY).is_file(),
        "this test needs Debian's libjs-jquery ({JQUERY})"
    );
    let share = top.join("share/app");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(
        share.join("page.php"),
        "<?php echo 'page ', $_SERVER['SCRIPT_FILENAME'], ' ', __FILE__;",
    )
    .unwrap();
    std::fs::write(share.join("secret.txt"), "root's secret").unwrap();
    let root = top.join("root");
    std::fs::create_dir_all(root.join("uploads")).unwrap();
    symlink(share.join("page.php"), root.join("page.php")).unwrap();
    symlink("/usr/share/javascript/jquery", root.join("js")).unwrap();
    let planted = root.join("uploads/notes.txt");
    symlink(share.join("secret.txt"), &planted).unwrap();
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        &planted,
        Some(nix::unistd::Uid::from_raw(65534)),
        None,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .unwrap();
    root
}

fn worker(p: &Project, name: &str, root: &Path, backend: &str, symlinks: &str) {
    p.worker(
        name,
        &format!(
            "path: /{name}\ntype: php\ndocument_root: {}\n{symlinks}php:\n  backend: {backend}\n  pool:\n    manager: static\n    max_workers: 1\n",
            root.display()
        ),
    );
}

/// Status and body of a GET.
fn get(tq: &Tq, path: &str) -> (String, String) {
    let r = curl(&["-w", "\n%{http_code}", &tq.url(path)]);
    assert!(r.ok, "{path}: {}", r.err);
    let (body, code) = r.out.rsplit_once('\n').unwrap();
    (code.to_string(), body.to_string())
}

#[test]
fn debian_links_are_served_and_a_planted_one_is_refused() {
    let top = tempfile::tempdir().unwrap();
    let top_path = top.path().canonicalize().unwrap();
    let root = debian_like(&top_path);
    let p = Project::new("", "");
    worker(&p, "fpm", &root, "fpm", "");
    worker(&p, "cgi", &root, "cgi", "");
    worker(&p, "inside", &root, "fpm", "symlinks: inside\n");

    let (status, out, err) = run_cli(p.path(), &["check"]);
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains("worker fpm: 3 symbolic link(s) under document_root")
            && out.contains("served except 1 whose owner is not its target's")
            && out.contains("uploads/notes.txt → "),
        "{out}"
    );
    assert!(
        out.contains("worker inside: 3 symbolic link(s)")
            && out.contains("refused (symlinks: inside)"),
        "{out}"
    );

    let tq = Tq::start(p.path(), &[]);
    let jquery = std::fs::read_to_string(JQUERY).unwrap();
    for w in ["fpm", "cgi"] {
        let (code, body) = get(&tq, &format!("/{w}/js/jquery.min.js"));
        assert_eq!(code, "200", "{w}: {body}");
        assert!(body == jquery, "{w}: not Debian's jquery.min.js");
        // The script under its link's name, as nginx passes it; PHP itself
        // resolves __FILE__.
        let (code, body) = get(&tq, &format!("/{w}/page.php"));
        assert_eq!(code, "200", "{w}: {body}");
        assert_eq!(
            body,
            format!(
                "page {} {}",
                root.join("page.php").display(),
                top_path.join("share/app/page.php").display()
            ),
            "{w}"
        );
        let (code, body) = get(&tq, &format!("/{w}/uploads/notes.txt"));
        assert_eq!(code, "403", "{w}: {body}");
        assert!(!body.contains("secret"), "{w}: {body}");
    }
    let log = tq.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("refused: a symbolic link"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{log}"));
    assert!(
        line.contains(&root.join("uploads/notes.txt").display().to_string())
            && line.contains(&top_path.join("share/app/secret.txt").display().to_string())
            && line.contains("symlinks: owner"),
        "{line}"
    );
    // inside: what leads out is refused, scripts and static files alike.
    assert_eq!(get(&tq, "/inside/js/jquery.min.js").0, "403");
    assert_eq!(get(&tq, "/inside/page.php").0, "403");
}
