//! Which file a URL path means under a document root: a PHP script (with
//! PATH_INFO), a static file, the front controller, or nothing.
//!
//! The rules, in order: percent-decode (a NUL is a bad request); resolve
//! `.` and `..` (climbing above the root is a bad request); hidden segments
//! (`.env`, `.git`) are not found, except `.well-known`; the first segment
//! ending in `.php` (ASCII, case-sensitive) is the script and the rest is
//! PATH_INFO, so `/uploads/a.jpg/x.php` names `a.jpg/x.php`, never
//! `a.jpg`; the script must be a regular file, reached through links the
//! worker's `symlinks` policy follows; a missing `.php` is 404; any other
//! missing path goes to `index.php` when the front controller is on.
//!
//! The policies (see [`Symlinks`]): `owner` opens a path with no link in
//! one `openat2(RESOLVE_NO_SYMLINKS)`, and walks one with a link a
//! component at a time, comparing each link's owner with its target's.
//! `inside` leaves containment to the kernel: `openat2(RESOLVE_BENEATH)`
//! opens the file only if resolving it never leaves the root; absolute
//! symlinks, which it refuses on principle, fall back to `realpath` and a
//! prefix check, then the real path is opened beneath the root again.
//! `any` and `none` are one `openat2` each. A static file is served from
//! the descriptor the check opened, never reopened by name (a link swapped
//! in between cannot lead elsewhere).

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};

use crate::config::Symlinks;

/// A canonical document root, held open for `openat2`.
#[derive(Debug)]
pub struct DocRoot {
    path: PathBuf,
    fd: Option<OwnedFd>,
    symlinks: Symlinks,
}

impl DocRoot {
    /// Opens `path` (canonical) as a root whose links are followed as
    /// `symlinks` says; without a descriptor (it could not be opened)
    /// resolution uses `realpath` and the `inside` rule only.
    pub fn open(path: &Path, symlinks: Symlinks) -> Self {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok();
        Self {
            path: path.to_path_buf(),
            fd,
            symlinks,
        }
    }

    /// The root's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A worker's document roots, opened once: its `document_root` and the
/// folder of each `alias` (prefix, longest first), all under its
/// `symlinks` policy.
#[derive(Debug)]
pub struct Roots {
    /// `document_root`.
    pub main: DocRoot,
    /// `alias`: URL prefix under the route, and its folder.
    pub aliases: Vec<(String, DocRoot)>,
    /// `sendfile`: the folders `X-Sendfile` / `X-Accel-Redirect` may name,
    /// with their URI prefixes.
    pub sendfile: Vec<(String, DocRoot)>,
}

impl Roots {
    /// Opens the roots `php` names.
    pub fn open(php: &crate::config::PhpConfig) -> Self {
        Self {
            main: DocRoot::open(&php.document_root, php.symlinks),
            aliases: php
                .aliases
                .iter()
                .map(|(prefix, dir)| (prefix.clone(), DocRoot::open(dir, php.symlinks)))
                .collect(),
            sendfile: php
                .sendfile
                .iter()
                .map(|(prefix, dir)| (prefix.clone(), DocRoot::open(dir, php.symlinks)))
                .collect(),
        }
    }
}

/// A static file, open: the descriptor the containment check returned.
#[derive(Debug, Clone)]
pub struct Opened {
    /// Its path under the root (for the Content-Type and logs).
    pub path: PathBuf,
    file: Arc<std::fs::File>,
    meta: std::fs::Metadata,
}

impl PartialEq for Opened {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

impl Eq for Opened {}

impl Opened {
    /// The open file, and its metadata as the check read it.
    pub fn into_file(self) -> std::io::Result<(std::fs::File, std::fs::Metadata)> {
        let file = Arc::try_unwrap(self.file).or_else(|shared| shared.try_clone())?;
        Ok((file, self.meta))
    }
}

/// The sibling of a static file with `suffix` added to its name
/// (`app.js.br` for `app.js`), under the same root and symlink policy; only
/// a regular file at least as new as `of` (a stale precompressed copy is
/// not served in place of the file edited since).
pub fn sibling(doc: &DocRoot, of: &Opened, suffix: &str) -> Option<Opened> {
    let rel = of.path.strip_prefix(&doc.path).ok()?;
    let mut name = rel.as_os_str().to_os_string();
    name.push(suffix);
    match contained_file(doc, Path::new(&name), Open::Read) {
        Found::File(path, Some((file, meta)))
            if meta.modified().ok()? >= of.meta.modified().ok()? =>
        {
            Some(Opened { path, file, meta })
        }
        _ => None,
    }
}

/// The file at `rel` (decoded bytes, relative to `doc`) for an
/// application that named it (`X-Sendfile`): any regular file under the
/// root and its symlink policy; a `..` segment anywhere, or a NUL, is
/// refused outright (an application never needs one to name its file).
pub fn named_file(doc: &DocRoot, rel: &[u8]) -> Target {
    if rel.contains(&0) {
        return Target::BadRequest("NUL byte in the path");
    }
    if rel.split(|&b| b == b'/').any(|s| s == b"..") {
        return Target::BadRequest("a .. segment in the path");
    }
    let segs: Vec<&[u8]> = rel
        .split(|&b| b == b'/')
        .filter(|s| !s.is_empty() && *s != b".")
        .collect();
    if segs.is_empty() {
        return Target::NotFound;
    }
    let joined = join(&segs);
    match contained_file(doc, Path::new(OsStr::from_bytes(&joined[1..])), Open::Read) {
        Found::File(path, Some((file, meta))) => Target::Static(Opened { path, file, meta }),
        Found::Outside(..) => Target::Forbidden,
        Found::File(_, None) | Found::Missing => Target::NotFound,
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

/// A script's `SCRIPT_NAME`: its path under `root` with a leading `/`,
/// or `/` and its file name when it is not under the root.
pub fn name_under(root: &Path, script: &Path) -> String {
    match script.strip_prefix(root) {
        Ok(rel) => format!("/{}", rel.display()),
        Err(_) => format!(
            "/{}",
            script
                .file_name()
                .map_or_else(String::new, |f| f.to_string_lossy().into_owned())
        ),
    }
}

/// Resolves `raw` (the URL path below the route prefix, still
/// percent-encoded) under `root`.
pub fn resolve(doc: &DocRoot, raw: &str, front_controller: bool) -> Target {
    let root = doc.path();
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    if decoded.contains(&0) {
        return Target::BadRequest("NUL byte in the path");
    }
    let segs = match segments(&decoded) {
        Ok(s) => s,
        Err(why) => return Target::BadRequest(why),
    };
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
            Found::Outside(..) => Target::Forbidden,
            Found::Missing => Target::NotFound,
        };
    }
    let rel = join(&segs);
    let rel_path = Path::new(OsStr::from_bytes(&rel[1..]));
    // `.php` in another case (`x.PHP`) is never served as source.
    let upper_php = segs
        .last()
        .is_some_and(|s| s.len() >= 4 && s[s.len() - 4..].eq_ignore_ascii_case(b".php"));
    // A file first, the common case: one openat2 and its fstat.
    if !segs.is_empty() && !upper_php {
        match contained_file(doc, rel_path, Open::Read) {
            Found::File(path, Some((file, meta))) => {
                return Target::Static(Opened { path, file, meta });
            }
            Found::Outside(..) => return Target::Forbidden,
            Found::File(_, None) | Found::Missing => {}
        }
    }
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
                Found::File(path, Some((file, meta))) => {
                    return Target::Static(Opened { path, file, meta });
                }
                Found::File(_, None) | Found::Missing => {}
                Found::Outside(..) => return Target::Forbidden,
            }
        }
        return front(doc, front_controller);
    }
    if upper_php {
        return Target::NotFound;
    }
    front(doc, front_controller)
}

/// The symbolic links under a document root that lead outside it, as
/// `tqserver check` reports them.
#[derive(Debug, Default)]
pub struct Survey {
    /// Links that lead outside: path under the root, and where it leads.
    pub outside: Vec<(PathBuf, PathBuf)>,
    /// Those of them whose owner differs from their target's (refused by
    /// `symlinks: owner`).
    pub other_owner: Vec<(PathBuf, PathBuf)>,
    /// The walk stopped at [`SURVEY_LIMIT`] entries.
    pub truncated: bool,
}

/// Entries [`survey`] looks at, at most (a WordPress tree has ~3,000).
pub const SURVEY_LIMIT: usize = 100_000;

/// Walks `root` (not through linked folders) for links whose real path
/// is outside it; broken links are left out.
pub fn survey(root: &Path) -> Survey {
    use std::os::unix::fs::MetadataExt;
    let mut out = Survey::default();
    let mut seen = 0usize;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            seen += 1;
            if seen > SURVEY_LIMIT {
                out.truncated = true;
                return out;
            }
            let path = e.path();
            let Ok(own) = path.symlink_metadata() else {
                continue;
            };
            if own.is_dir() {
                stack.push(path);
                continue;
            }
            if !own.is_symlink() {
                continue;
            }
            let (Ok(real), Ok(target)) = (path.canonicalize(), path.metadata()) else {
                continue;
            };
            if real.starts_with(root) {
                continue;
            }
            let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            if own.uid() != target.uid() {
                out.other_owner.push((rel.clone(), real.clone()));
            }
            out.outside.push((rel, real));
        }
    }
    out.outside.sort();
    out.other_owner.sort();
    out
}

/// What `tqserver check` says of a PHP worker's document root under its
/// `symlinks` policy, if it has links leading outside.
pub fn survey_note(worker: &str, root: &Path, symlinks: Symlinks) -> Option<String> {
    let s = survey(root);
    let (rel, real) = s.outside.first()?;
    let n = s.outside.len();
    let more = if s.truncated {
        format!(" (the first {SURVEY_LIMIT} entries looked at)")
    } else {
        String::new()
    };
    let example = format!("{} → {}", rel.display(), real.display());
    let verdict = match symlinks {
        Symlinks::Owner if s.other_owner.is_empty() => {
            "served (symlinks: owner; each has its target's owner)".to_string()
        }
        Symlinks::Owner => {
            let (r, t) = &s.other_owner[0];
            format!(
                "served except {} whose owner is not its target's (symlinks: owner refuses them, e.g. {} → {})",
                s.other_owner.len(),
                r.display(),
                t.display()
            )
        }
        Symlinks::Inside => "refused (symlinks: inside); `symlinks: owner` serves those whose owner is their target's".into(),
        Symlinks::Any => "served (symlinks: any)".into(),
        Symlinks::None => "refused (symlinks: none)".into(),
    };
    Some(format!(
        "worker {worker}: {n} symbolic link(s) under document_root {} lead outside it{more}, e.g. {example}: {verdict}",
        root.display()
    ))
}

/// The segments of a decoded path, `.` and `..` resolved.
fn segments(decoded: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    let mut segs: Vec<&[u8]> = Vec::new();
    for seg in decoded.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                if segs.pop().is_none() {
                    return Err("the path climbs above the document root");
                }
            }
            s => segs.push(s),
        }
    }
    Ok(segs)
}

/// `raw` (percent-encoded, below the route) decoded and normalised as
/// [`resolve`] sees it (`/a/b`; `/` for the root), for `rules` to match;
/// `None` for a path `resolve` refuses (a NUL, `..` above the root).
pub fn normalize(raw: &str) -> Option<String> {
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    if decoded.contains(&0) {
        return None;
    }
    let segs = segments(&decoded).ok()?;
    Some(String::from_utf8_lossy(&join(&segs)).into_owned())
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
    /// Refused by the symlink policy: the path that is a link, and where
    /// it leads.
    Outside(PathBuf, PathBuf),
    /// A file inside: its path, and with [`Open::Read`] the file opened
    /// beneath the root.
    File(PathBuf, Option<(Arc<std::fs::File>, std::fs::Metadata)>),
}

/// Looks `rel` (relative to the root) up under the root's symlink
/// policy; see [`Found`]. A refusal is logged with the link and its target.
fn contained_file(doc: &DocRoot, rel: &Path, open: Open) -> Found {
    let found = match (doc.symlinks, &doc.fd) {
        (Symlinks::Inside, _) | (_, None) => inside(doc, rel, open),
        // A path without links (nearly all) is one openat2; the walk
        // only for one with a link on it.
        (Symlinks::Owner, Some(fd)) => {
            match open_how(fd, rel, open, ResolveFlag::RESOLVE_NO_SYMLINKS) {
                Err(Errno::ELOOP) => by_owner(doc, fd, rel, open),
                r => opened(doc, rel, open, r),
            }
        }
        (Symlinks::Any, Some(fd)) => opened(
            doc,
            rel,
            open,
            open_how(fd, rel, open, ResolveFlag::empty()),
        ),
        (Symlinks::None, Some(fd)) => {
            match open_how(fd, rel, open, ResolveFlag::RESOLVE_NO_SYMLINKS) {
                Err(Errno::ELOOP) => first_link(doc, rel),
                r => opened(doc, rel, open, r),
            }
        }
    }
    .unwrap_or(Found::Missing);
    if let Found::Outside(link, target) = &found {
        tracing::warn!(
            link = %link.display(),
            target = %target.display(),
            "refused: a symbolic link under the document_root (symlinks: {})",
            doc.symlinks.as_str()
        );
    }
    found
}

/// A file opened at `rel`: a regular file, or nothing.
fn opened(doc: &DocRoot, rel: &Path, open: Open, r: Result<std::fs::File, Errno>) -> Option<Found> {
    found(doc.path.join(rel), r.ok()?, open)
}

/// `f`, opened for `path`, if it is a regular file: kept open (with its
/// metadata, so nothing stats it again) when it is to be read.
fn found(path: PathBuf, f: std::fs::File, open: Open) -> Option<Found> {
    let meta = f.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let file = (open == Open::Read).then(|| (Arc::new(f), meta));
    Some(Found::File(path, file))
}

/// `symlinks: owner` (nginx's `disable_symlinks if_not_owner`): walks
/// `rel` one component at a time from the root; a component that is a
/// link must have the owner of what it leads to. Each step opens the
/// component (following it) and compares that descriptor's owner with
/// the name's own (not followed), as nginx does.
fn by_owner(doc: &DocRoot, root: &OwnedFd, rel: &Path, open: Open) -> Option<Found> {
    use nix::fcntl::AtFlags;
    let names: Vec<&OsStr> = rel
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let mut at: Option<OwnedFd> = None;
    for (i, name) in names.iter().enumerate() {
        let dir = at.as_ref().unwrap_or(root);
        let flags = if i + 1 == names.len() {
            flags(open)
        } else {
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC
        };
        let fd = nix::fcntl::openat(dir, *name, flags, nix::sys::stat::Mode::empty()).ok()?;
        let object = nix::sys::stat::fstat(&fd).ok()?;
        let own = nix::sys::stat::fstatat(dir, *name, AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
        let kind = nix::sys::stat::SFlag::from_bits_truncate(own.st_mode);
        let is_link = kind & nix::sys::stat::SFlag::S_IFMT == nix::sys::stat::SFlag::S_IFLNK;
        if is_link && own.st_uid != object.st_uid {
            let target = nix::fcntl::readlinkat(dir, *name).unwrap_or_default();
            let link: PathBuf = names[..=i].iter().collect();
            return Some(Found::Outside(doc.path.join(link), PathBuf::from(target)));
        }
        at = Some(fd);
    }
    found(doc.path.join(rel), std::fs::File::from(at?), open)
}

/// `symlinks: none`: the first component of `rel` that is a link.
fn first_link(doc: &DocRoot, rel: &Path) -> Option<Found> {
    let mut path = doc.path.clone();
    for c in rel.components() {
        path.push(c);
        if path.symlink_metadata().ok()?.is_symlink() {
            let target = std::fs::read_link(&path).unwrap_or_default();
            return Some(Found::Outside(path, target));
        }
    }
    None
}

fn inside(doc: &DocRoot, rel: &Path, open: Open) -> Option<Found> {
    if let Some(fd) = &doc.fd {
        match open_beneath(fd, rel, open) {
            Ok(f) => return found(doc.path.join(rel), f, open),
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
        return Some(Found::Outside(path, real));
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
    found(real, f, open)
}

/// How a file is opened: for reading (never blocking on a FIFO), or
/// `O_PATH` when it is only checked.
fn flags(open: Open) -> OFlag {
    match open {
        Open::Check => OFlag::O_PATH | OFlag::O_CLOEXEC,
        Open::Read => OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
    }
}

/// `openat2(RESOLVE_BENEATH)`.
fn open_beneath(fd: &OwnedFd, rel: &Path, open: Open) -> Result<std::fs::File, Errno> {
    open_how(fd, rel, open, ResolveFlag::RESOLVE_BENEATH)
}

/// `openat2` of `rel` from the root with `resolve` (never through
/// /proc's magic links).
fn open_how(
    fd: &OwnedFd,
    rel: &Path,
    open: Open,
    resolve: ResolveFlag,
) -> Result<std::fs::File, Errno> {
    let how = OpenHow::new()
        .flags(flags(open))
        .resolve(resolve | ResolveFlag::RESOLVE_NO_MAGICLINKS);
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
        let doc = DocRoot::open(&root, crate::config::Symlinks::Inside);
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
        let doc = DocRoot::open(&root, crate::config::Symlinks::Inside);
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

    /// A Debian-like layout: `root/js` and `root/app.php` link (as root)
    /// to files outside; `root/planted.css` and `root/planted.php` are
    /// links owned by another user to root's files, one outside, one
    /// inside (`root/secret.php`); `root/inside.css` is root's link to a
    /// file inside.
    fn linked_tree() -> (tempfile::TempDir, PathBuf) {
        use std::os::unix::fs::symlink;
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (it gives a link another owner)"
        );
        let d = tempfile::tempdir().unwrap();
        let top = d.path().canonicalize().unwrap();
        let share = top.join("share");
        std::fs::create_dir_all(share.join("javascript")).unwrap();
        std::fs::write(share.join("javascript/jquery.js"), "jq").unwrap();
        std::fs::write(share.join("app.php"), "<?php").unwrap();
        std::fs::write(share.join("private.css"), "secret").unwrap();
        let root = top.join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("secret.php"), "<?php").unwrap();
        std::fs::write(root.join("real.css"), "real").unwrap();
        symlink(share.join("javascript"), root.join("js")).unwrap();
        symlink(share.join("app.php"), root.join("app.php")).unwrap();
        symlink("real.css", root.join("inside.css")).unwrap();
        symlink(share.join("private.css"), root.join("planted.css")).unwrap();
        symlink("secret.php", root.join("planted.php")).unwrap();
        let nobody = nix::unistd::Uid::from_raw(65534);
        for planted in ["planted.css", "planted.php"] {
            nix::unistd::fchownat(
                nix::fcntl::AT_FDCWD,
                &root.join(planted),
                Some(nobody),
                None,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .unwrap();
        }
        (d, root)
    }

    #[test]
    fn each_symlink_policy_follows_what_it_says() {
        let (_d, root) = linked_tree();
        let static_text = |t: Target| match t {
            Target::Static(o) => {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut o.into_file().unwrap().0, &mut s).unwrap();
                s
            }
            other => panic!("not static: {other:?}"),
        };
        let is_script = |t: &Target| matches!(t, Target::Script { .. });
        // owner (the default): the packages' links are served, under
        // their own names; the planted ones are refused, inside or not.
        let doc = DocRoot::open(&root, Symlinks::Owner);
        let r = |p: &str| resolve(&doc, p, false);
        assert_eq!(static_text(r("/js/jquery.js")), "jq");
        assert_eq!(static_text(r("/inside.css")), "real");
        match r("/app.php") {
            Target::Script { file, .. } => assert_eq!(file, root.join("app.php")),
            other => panic!("app.php: {other:?}"),
        }
        assert_eq!(r("/planted.css"), Target::Forbidden);
        assert_eq!(r("/planted.php"), Target::Forbidden);
        assert_eq!(r("/js/missing.js"), Target::NotFound);
        // inside: only what stays inside the root.
        let doc = DocRoot::open(&root, Symlinks::Inside);
        let r = |p: &str| resolve(&doc, p, false);
        assert_eq!(r("/js/jquery.js"), Target::Forbidden);
        assert_eq!(r("/app.php"), Target::Forbidden);
        assert_eq!(static_text(r("/inside.css")), "real");
        assert!(is_script(&r("/planted.php")));
        // any: everything.
        let doc = DocRoot::open(&root, Symlinks::Any);
        let r = |p: &str| resolve(&doc, p, false);
        assert_eq!(static_text(r("/js/jquery.js")), "jq");
        assert_eq!(static_text(r("/planted.css")), "secret");
        assert!(is_script(&r("/app.php")));
        // none: no link at all.
        let doc = DocRoot::open(&root, Symlinks::None);
        let r = |p: &str| resolve(&doc, p, false);
        assert_eq!(r("/js/jquery.js"), Target::Forbidden);
        assert_eq!(r("/inside.css"), Target::Forbidden);
        assert_eq!(r("/app.php"), Target::Forbidden);
        assert_eq!(static_text(r("/real.css")), "real");
        assert!(is_script(&r("/secret.php")));
    }

    #[test]
    fn a_static_file_is_served_from_the_descriptor_that_was_checked() {
        use std::io::Read;
        let d = tree();
        let root = d.path().canonicalize().unwrap();
        let doc = DocRoot::open(&root, crate::config::Symlinks::Inside);
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
            .0
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "x");
        assert_eq!(resolve(&doc, "/style.css", false), Target::Forbidden);
    }
}
