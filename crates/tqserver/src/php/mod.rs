//! PHP workers: script resolution, HTTP → CGI params, the php-fpm backend
//! and the request path between them.

pub mod cgi;
mod error;
pub mod fpm;
pub mod listener;
pub mod params;
pub mod proxy;
pub mod response;
pub mod script;
pub mod sendfile;
pub mod upstream;
pub mod wordpress;
pub mod worker;

pub use worker::PhpWorker;

pub use error::LifecycleError;

use std::path::{Path, PathBuf};

/// Finds a PHP program: `php.binary` if set (a path, or a name looked up
/// on PATH), else `base` then `baseX.Y` (newest first) on PATH and in
/// `dirs`; `install` says how to get it.
pub(crate) fn find_program(
    binary: Option<&Path>,
    base: &str,
    dirs: &[&str],
    install: &str,
) -> Result<PathBuf, String> {
    let search = |names: &[String]| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut all: Vec<PathBuf> = std::env::split_paths(&path).collect();
        all.extend(dirs.iter().map(PathBuf::from));
        names
            .iter()
            .find_map(|n| all.iter().map(|d| d.join(n)).find(|p| p.is_file()))
    };
    if let Some(b) = binary {
        if b.components().count() > 1 {
            return if b.is_file() {
                Ok(b.to_path_buf())
            } else {
                Err(format!("php.binary {} does not exist", b.display()))
            };
        }
        return search(&[b.to_string_lossy().into_owned()])
            .ok_or_else(|| format!("php.binary {} is not on PATH", b.display()));
    }
    let mut names = vec![base.to_string()];
    for major in [8, 7] {
        for minor in (0..=9).rev() {
            names.push(format!("{base}{major}.{minor}"));
        }
    }
    search(&names).ok_or_else(|| {
        format!(
            "{base} is not installed (looked for {base} and {base}X.Y on PATH, {}); {install} or set php.binary",
            dirs.join(", ")
        )
    })
}
