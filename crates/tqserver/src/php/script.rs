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
//! Absolute symlinks, which it refuses on principle, fall back to
//! `realpath` and a prefix check, then the real path is opened beneath the
//! root again. A static file is served from the descriptor that check
//! opened, never reopened by name (a link swapped in between cannot lead
//! elsewhere).

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// A static file, open: the descriptor the containment check returned.
#[derive(Debug, Clone)]
pub struct Opened {
    /// Its path under the root (for the Content-Type and logs).
    pub path: PathBuf,
    file: Arc<std::fs::File>,
}

impl PartialEq for Opened {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

impl Eq for Opened {}

impl Opened {
    /// The open file.
    pub fn into_file(self) -> std::io::Result<std::fs::File> {
        Arc::try_unwrap(self.file).or_else(|shared| shared.try_clone())
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
    Static(Opened),
    /// A directory asked for without its trailing slash: redirect to this
    /// path below the root (normalised, percent-encoded, ending in `/`).
    AddSlash(String),
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
        return match contained_file(doc, rel, Open::Check) {
            Found::File(f, _) => Target::Script {
                file: f,
                name: String::from_utf8_lossy(&name).into_owned(),
                path_info,
            },
            Found::Outside => Target::Forbidden,
            Found::Missing => Target::NotFound,
        };
    }
    let rel = join(&segs);
    let rel_path = Path::new(OsStr::from_bytes(&rel[1..]));
    let path = root.join(rel_path);
    if path.is_dir() {
        if !segs.is_empty() && !trailing_slash {
            let mut to = String::new();
            for s in &segs {
                to.push('/');
                to.extend(percent_encoding::percent_encode(s, SEGMENT));
            }
            to.push('/');
            return Target::AddSlash(to);
        }
        for index in ["index.php", "index.html"] {
            let candidate = rel_path.join(index);
            let open = if index == "index.php" {
                Open::Check
            } else {
                Open::Read
            };
            match contained_file(doc, &candidate, open) {
                Found::File(f, _) if index == "index.php" => {
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
                Found::File(path, Some(file)) => return Target::Static(Opened { path, file }),
                Found::File(_, None) | Found::Missing => {}
                Found::Outside => return Target::Forbidden,
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
    match contained_file(doc, rel_path, Open::Read) {
        Found::File(path, Some(file)) => Target::Static(Opened { path, file }),
        Found::File(_, None) | Found::Missing => front(doc, front_controller),
        Found::Outside => Target::Forbidden,
    }
}

/// What a redirect path segment keeps as it is: RFC 3986 unreserved
/// characters and a few sub-delimiters; everything else (`\`, `%`, `?`,
/// `#`, controls, non-ASCII) is percent-encoded.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

fn front(doc: &DocRoot, on: bool) -> Target {
    if !on {
        return Target::NotFound;
    }
    match contained_file(doc, Path::new("index.php"), Open::Check) {
        Found::File(file, _) => Target::Script {
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

/// Whether the file found is only checked (a script: PHP opens it) or
/// opened for reading (a static file: served from this descriptor).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    Check,
    Read,
}

/// What [`contained_file`] found.
enum Found {
    /// No regular file there.
    Missing,
    /// Resolving the path leaves the root.
    Outside,
    /// A file inside: its path, and with [`Open::Read`] the file opened
    /// beneath the root.
    File(PathBuf, Option<Arc<std::fs::File>>),
}

/// Looks `rel` (relative to the root) up; see [`Found`].
fn contained_file(doc: &DocRoot, rel: &Path, open: Open) -> Found {
    inside(doc, rel, open).unwrap_or(Found::Missing)
}

fn inside(doc: &DocRoot, rel: &Path, open: Open) -> Option<Found> {
    if let Some(fd) = &doc.fd {
        match open_beneath(fd, rel, open) {
            Ok(f) => {
                let meta = f.metadata().ok()?;
                if !meta.is_file() {
                    return None;
                }
                let file = (open == Open::Read).then(|| Arc::new(f));
                return Some(Found::File(doc.path.join(rel), file));
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
    let Ok(below) = real.strip_prefix(&doc.path) else {
        return Some(Found::Outside);
    };
    if open == Open::Check {
        return Some(Found::File(real, None));
    }
    // The real path has no symlink left: open it beneath the root, so a
    // link planted since cannot lead outside.
    let f = match &doc.fd {
        Some(fd) => open_beneath(fd, below, open).ok()?,
        None => std::fs::File::open(&real).ok()?,
    };
    f.metadata()
        .ok()
        .filter(std::fs::Metadata::is_file)
        .map(|_| Found::File(real.clone(), Some(Arc::new(f))))
}

/// `openat2(RESOLVE_BENEATH)`: for reading (never blocking on a FIFO), or
/// `O_PATH` when the file is only checked.
fn open_beneath(fd: &OwnedFd, rel: &Path, open: Open) -> Result<std::fs::File, Errno> {
    let flags = match open {
        Open::Check => OFlag::O_PATH | OFlag::O_CLOEXEC,
        Open::Read => OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
    };
    let how = OpenHow::new()
        .flags(flags)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    nix::fcntl::openat2(fd, rel, how).map(std::fs::File::from)
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
        let stat = |t: Target| match t {
            Target::Static(o) => o.path,
            other => panic!("not static: {other:?}"),
        };
        assert_eq!(stat(r("/style.css")), root.join("style.css"));
        assert_eq!(r("/sub"), Target::AddSlash("/sub/".into()));
        assert_eq!(r("//x/..%2fsub"), Target::AddSlash("/sub/".into()));
        assert_eq!(r("/sub/deeper/.."), Target::AddSlash("/sub/".into()));
        assert_eq!(stat(r("/sub/deeper/")), root.join("sub/deeper/index.html"));
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

    #[test]
    fn a_static_file_is_served_from_the_descriptor_that_was_checked() {
        use std::io::Read;
        let d = tree();
        let root = d.path().canonicalize().unwrap();
        let doc = DocRoot::open(&root);
        let Target::Static(opened) = resolve(&doc, "/style.css", false) else {
            panic!("style.css is static");
        };
        // The name now leads outside the root; what was opened is served.
        std::fs::remove_file(root.join("style.css")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("style.css")).unwrap();
        let mut text = String::new();
        opened
            .into_file()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "x");
        assert_eq!(resolve(&doc, "/style.css", false), Target::Forbidden);
    }
}
