//! URL path → script / static file / PATH_INFO resolution on arbitrary
//! paths, over a small real tree (with a symlink out of it), under each
//! `symlinks` policy (the first byte picks it): never a panic, no name
//! outside the root, no script that does not end in `.php`, and no
//! redirect that a browser would take off-site.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tqserver::config::Symlinks;
use tqserver::php::script::{DocRoot, Target, resolve};

struct Tree {
    _dir: tempfile::TempDir,
    root: PathBuf,
    docs: [DocRoot; 4],
}

fn tree() -> &'static Tree {
    static T: OnceLock<Tree> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        for d in ["sub/deeper", "uploads", ".git", "a b"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in ["index.php", "x.php", "sub/page.php", "style.css", "uploads/a.jpg", "X.PHP", ".env", "a b/c.php"] {
            std::fs::write(root.join(f), "x").unwrap();
        }
        std::fs::write(dir.path().join("outside.php"), "x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside.php"), root.join("out.php")).unwrap();
        std::os::unix::fs::symlink("../..", root.join("sub/up")).unwrap();
        let root = root.canonicalize().unwrap();
        let docs = [Symlinks::Owner, Symlinks::Inside, Symlinks::Any, Symlinks::None]
            .map(|s| DocRoot::open(&root, s));
        Tree { _dir: dir, root, docs }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(raw) = std::str::from_utf8(rest) else {
        return;
    };
    let t = tree();
    let doc = &t.docs[usize::from(flags >> 1) % 4];
    match resolve(doc, raw, flags & 1 == 1) {
        Target::Script { file, name, path_info } => {
            assert!(file.starts_with(&t.root), "{file:?} outside the root for {raw:?}");
            assert!(name.starts_with('/') && name.ends_with(".php"), "{name:?}");
            assert!(!path_info.contains('\0'));
        }
        Target::Static(o) => assert!(o.path.starts_with(&t.root), "{:?} for {raw:?}", o.path),
        Target::AddSlash(to) => {
            assert!(to.starts_with('/') && to.ends_with('/'), "{to:?}");
            assert!(!to.starts_with("//") && !to.contains('\\'), "{to:?} for {raw:?}");
        }
        Target::NotFound | Target::Forbidden | Target::BadRequest(_) => {}
    }
});
