//! Which file a URL path means under a document root: a PHP script (with
//! PATH_INFO), a static file, the front controller, or nothing.
//!
//! The rules, in order: percent-decode (a NUL is a bad request); resolve
//! `.` and `..` (climbing above the root is a bad request); hidden segments
//! (`.env`, `.git`) are not found, except `.well-known`; the first segment
//! ending in `.php` (ASCII, case-sensitive) is the script and the rest is
//! PATH_INFO, so `/uploads/a.jpg/x.php` names `a.jpg/x.php`, never
//! `a.jpg`; the script must be a regular file inside the root after
//! symlinks are resolved; a missing `.php` is 404; any other missing path
//! goes to `index.php` when the front controller is on.
//!
//! Containment is checked by the kernel: `openat2(RESOLVE_BENEATH)` from
//! the document root opens the file only if resolving it never leaves the
//! root (one system call, where `realpath` makes one per path component).
//! Absolute symlinks, which it refuses on principle, and kernels before
//! 5.6 fall back to `realpath` and a prefix check.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};

/// A canonical document root, held open for `openat2`.
#[derive(Debug)]
pub struct DocRoot {
    path: PathBuf,
    fd: Option<OwnedFd>,
}

impl DocRoot {
    /// Opens `path` (canonical) as a root; without a descriptor (it could
    /// not be opened) resolution uses `realpath` only.
    pub fn open(path: &Path) -> Self {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok();
        Self {
            path: path.to_path_buf(),
            fd,
        }
    }

    /// The root's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What a request path resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Run this script.
    Script {
        /// Absolute path of the script (SCRIPT_FILENAME).
        file: PathBuf,
        /// The script's path under the root, with a leading `/`.
        name: String,
        /// What followed the script in the URL (decoded), or empty.
        path_info: String,
    },
    /// Serve this file as it is.
    Static(PathBuf),
    /// A directory asked for without its trailing slash: redirect.
    AddSlash,
    /// Nothing here.
    NotFound,
    /// The path resolves outside the document root (via a symlink).
    Forbidden,
    /// A malformed path (NUL byte, `..` above the root).
    BadRequest(&'static str),
}

/// Resolves `raw` (the URL path below the route prefix, still
/// percent-encoded) under `root`.
pub fn resolve(doc: &DocRoot, raw: &str, front_controller: bool) -> Target {
    let root = doc.path();
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    if decoded.contains(&0) {
        return Target::BadRequest("NUL byte in the path");
    }
    let mut segs: Vec<&[u8]> = Vec::new();
    for seg in decoded.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                if segs.pop().is_none() {
                    return Target::BadRequest("the path climbs above the document root");
                }
            }
            s => segs.push(s),
        }
    }
    if segs
        .iter()
        .any(|s| s.starts_with(b".") && *s != b".well-known")
    {
        return Target::NotFound;
    }
    let trailing_slash = decoded.ends_with(b"/");
    if let Some(i) = segs
        .iter()
        .position(|s| s.len() > 4 && s.ends_with(b".php"))
    {
        let name = join(&segs[..=i]);
        let rel = Path::new(OsStr::from_bytes(&name[1..]));
        let path_info = if i + 1 < segs.len() {
            let mut p = join(&segs[i + 1..]);
            if trailing_slash {
                p.push(b'/');
            }
            String::from_utf8_lossy(&p).into_owned()
        } else {
            String::new()
        };
        return match contained_file(doc, rel) {
            Some(Ok(f)) => Target::Script {
                file: f,
                name: String::from_utf8_lossy(&name).into_owned(),
                path_info,
            },
            Some(Err(())) => Target::Forbidden,
            None => Target::NotFound,
        };
    }
    let rel = join(&segs);
    let rel_path = Path::new(OsStr::from_bytes(&rel[1..]));
    let path = root.join(rel_path);
    if path.is_dir() {
        if !segs.is_empty() && !trailing_slash {
            return Target::AddSlash;
        }
        for index in ["index.php", "index.html"] {
            let candidate = rel_path.join(index);
            match contained_file(doc, &candidate) {
                Some(Ok(f)) if index == "index.php" => {
                    let mut name = rel.clone();
                    if name.len() > 1 {
                        name.push(b'/');
                    }
                    name.extend_from_slice(index.as_bytes());
                    return Target::Script {
                        file: f,
                        name: String::from_utf8_lossy(&name).into_owned(),
                        path_info: String::new(),
                    };
                }
                Some(Ok(f)) => return Target::Static(f),
                Some(Err(())) => return Target::Forbidden,
                None => {}
            }
        }
        return front(doc, front_controller);
    }
    // `.php` in another case (`x.PHP`) is never served as source.
    if segs
        .last()
        .is_some_and(|s| s.len() >= 4 && s[s.len() - 4..].eq_ignore_ascii_case(b".php"))
    {
        return Target::NotFound;
    }
    match contained_file(doc, rel_path) {
        Some(Ok(f)) => Target::Static(f),
        Some(Err(())) => Target::Forbidden,
        None => front(doc, front_controller),
    }
}

fn front(doc: &DocRoot, on: bool) -> Target {
    if !on {
        return Target::NotFound;
    }
    match contained_file(doc, Path::new("index.php")) {
        Some(Ok(file)) => Target::Script {
            file,
            name: "/index.php".into(),
            path_info: String::new(),
        },
        _ => Target::NotFound,
    }
}

fn join(segs: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in segs {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

/// `None` when `rel` (relative to the root) is not a regular file;
/// `Some(Err)` when resolving it leaves the root; else its path.
fn contained_file(doc: &DocRoot, rel: &Path) -> Option<Result<PathBuf, ()>> {
    if let Some(fd) = &doc.fd {
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        match nix::fcntl::openat2(fd, rel, how) {
            Ok(f) => {
                let meta = std::fs::File::from(f).metadata().ok()?;
                return meta.is_file().then(|| Ok(doc.path.join(rel)));
            }
            // Left the root, or an absolute symlink: decide by real path.
            Err(Errno::EXDEV) | Err(Errno::ENOSYS) | Err(Errno::EPERM) => {}
            Err(_) => return None,
        }
    }
    let path = doc.path.join(rel);
    let meta = std::fs::metadata(&path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let real = path.canonicalize().ok()?;
    Some(if real.starts_with(&doc.path) {
        Ok(real)
    } else {
        Err(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("sub/deeper")).unwrap();
        std::fs::create_dir_all(r.join("uploads")).unwrap();
        std::fs::create_dir_all(r.join(".git")).unwrap();
        for f in [
            "index.php",
            "hello.php",
            "sub/page.php",
            "style.css",
            "uploads/a.jpg",
            "sub/deeper/index.html",
            "SHOUT.PHP",
            ".env",
        ] {
            std::fs::write(r.join(f), "x").unwrap();
        }
        std::os::unix::fs::symlink("/etc/hostname", r.join("escape.php")).unwrap();
        std::os::unix::fs::symlink("/etc", r.join("etc")).unwrap();
        // Symlinks that stay inside the root are followed, relative or absolute.
        std::os::unix::fs::symlink("hello.php", r.join("alias.php")).unwrap();
        std::os::unix::fs::symlink(
            r.canonicalize().unwrap().join("style.css"),
            r.join("abs.css"),
        )
        .unwrap();
        std::os::unix::fs::symlink("../sub", r.join("uploads/up")).unwrap();
        d
    }

    fn script(name: &str, info: &str) -> impl Fn(&Target) -> bool {
        let (name, info) = (name.to_string(), info.to_string());
        move |t| matches!(t, Target::Script { name: n, path_info: p, .. } if *n == name && *p == info)
    }

    #[test]
    fn scripts_path_info_and_front_controller() {
        let d = tree();
        let root = d.path().canonicalize().unwrap();
        let doc = DocRoot::open(&root);
        let r = |p: &str| resolve(&doc, p, true);
        assert!(script("/hello.php", "")(&r("/hello.php")));
        assert!(script("/hello.php", "/a/b")(&r("/hello.php/a/b")));
        assert!(script("/hello.php", "/a/")(&r("/hello.php/a/")));
        assert!(script("/sub/page.php", "")(&r("/sub/x/../page.php")));
        assert!(script("/hello.php", "")(&r("/%68ello.php")));
        assert!(script("/index.php", "")(&r("/")));
        assert!(script("/index.php", "")(&r("")));
        assert!(script("/index.php", "")(&r("/no/such/page")));
        assert_eq!(r("/missing.php"), Target::NotFound);
        assert_eq!(resolve(&doc, "/no/such/page", false), Target::NotFound);
        assert_eq!(r("/style.css"), Target::Static(root.join("style.css")));
        assert_eq!(r("/sub"), Target::AddSlash);
        assert_eq!(
            r("/sub/deeper/"),
            Target::Static(root.join("sub/deeper/index.html"))
        );
    }

    #[test]
    fn what_must_never_happen() {
        let d = tree();
        let root = d.path().canonicalize().unwrap();
        let doc = DocRoot::open(&root);
        let r = |p: &str| resolve(&doc, p, true);
        // a.jpg is never executed as PHP.
        assert_eq!(r("/uploads/a.jpg/x.php"), Target::NotFound);
        assert_eq!(
            r("/../etc/passwd"),
            Target::BadRequest("the path climbs above the document root")
        );
        assert_eq!(
            r("/a/../../etc/passwd"),
            Target::BadRequest("the path climbs above the document root")
        );
        assert_eq!(
            r("/%2e%2e/etc/passwd"),
            Target::BadRequest("the path climbs above the document root")
        );
        assert_eq!(
            r("/hello.php%00.jpg"),
            Target::BadRequest("NUL byte in the path")
        );
        assert_eq!(r("/escape.php"), Target::Forbidden);
        assert_eq!(r("/etc/passwd"), Target::Forbidden);
        assert_eq!(r("/.env"), Target::NotFound);
        assert_eq!(r("/.git/config"), Target::NotFound);
        // PHP source in another case is not served as a static file.
        assert_eq!(r("/SHOUT.PHP"), Target::NotFound);
    }
}
