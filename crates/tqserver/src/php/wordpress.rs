//! WordPress's pretty permalinks with no `.htaccess`: a PHP worker whose
//! document root is WordPress (with the front controller on) gets a small
//! `auto_prepend_file` that tells WordPress, through its own hooks, that
//! URL rewriting is the server's (`wordpress.php` says how). Nothing is
//! claimed to other applications: `SERVER_SOFTWARE` stays TQServer's.
//! A worker with its own `php.settings.auto_prepend_file` keeps it and
//! does without.

use std::path::{Path, PathBuf};

use crate::config::WorkerConfig;

/// The file given to PHP.
pub const HELPER: &str = include_str!("wordpress.php");

/// The helper's name in the runtime directory.
const FILE_NAME: &str = "wordpress-permalinks.php";

/// Whether `root` holds WordPress (its loader and its version file).
pub fn detected(root: &Path) -> bool {
    root.join("wp-settings.php").is_file() && root.join("wp-includes/version.php").is_file()
}

/// Whether `worker` gets the helper: a PHP worker with the front
/// controller on, over WordPress, that sets no `auto_prepend_file` itself.
pub fn applies(worker: &WorkerConfig) -> bool {
    worker.is_php()
        && worker.php.front_controller
        && !worker
            .php
            .settings
            .iter()
            .any(|(k, _)| k == "auto_prepend_file")
        && detected(&worker.php.document_root)
}

/// Where the helper is in `runtime_dir`.
pub fn helper_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join(FILE_NAME)
}

/// Writes the helper into `runtime_dir` (readable by TQServer's user,
/// which its PHP processes run as); its path.
pub fn write_helper(runtime_dir: &Path) -> std::io::Result<PathBuf> {
    let path = helper_path(runtime_dir);
    crate::runtime::write_private(&path, HELPER.as_bytes())?;
    Ok(path)
}
