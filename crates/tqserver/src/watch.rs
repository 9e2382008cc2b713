//! The file watcher: inotify (through `notify`) on every worker folder,
//! minus build output and dependencies (`target/`, `bin/`,
//! `node_modules/`, `vendor/`, `__pycache__/`, dot folders) and editor
//! temporaries. Folders created later are watched as they appear. Changes
//! are debounced per worker: one [`Change`] once the folder has been quiet
//! for `file_watcher.debounce_ms`.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Folder names never watched: build output, dependencies, caches.
const IGNORED_DIRS: [&str; 5] = ["target", "bin", "node_modules", "vendor", "__pycache__"];

/// A worker folder that changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The worker (its folder name).
    pub worker: String,
    /// The files that changed, relative to the worker folder.
    pub paths: Vec<PathBuf>,
    /// Its `config/worker.yaml` was among them.
    pub config: bool,
}

impl Change {
    /// "src/main.rs, src/lib.rs" (the first few).
    pub fn describe(&self) -> String {
        let mut names: Vec<String> = self
            .paths
            .iter()
            .take(3)
            .map(|p| p.display().to_string())
            .collect();
        if self.paths.len() > 3 {
            names.push(format!("and {} more", self.paths.len() - 3));
        }
        names.join(", ")
    }
}

/// Is `rel` (a path inside a worker folder) something a change of which
/// matters?
fn watched(rel: &Path) -> bool {
    let mut comps = rel.components().peekable();
    while let Some(c) = comps.next() {
        let Component::Normal(name) = c else {
            return false;
        };
        let name = name.to_string_lossy();
        let last = comps.peek().is_none();
        if name.starts_with('.') {
            return false;
        }
        if IGNORED_DIRS.contains(&name.as_ref()) || cargo_temp_target(&name) {
            return false;
        }
        if last
            && (name.ends_with('~')
                || name.ends_with(".swp")
                || name.ends_with(".swx")
                || name.ends_with(".pyc")
                || name == "4913")
        {
            return false;
        }
    }
    true
}

/// cargo creates `target/` as `targetXXXXXX` and renames it.
fn cargo_temp_target(name: &str) -> bool {
    name.strip_prefix("target")
        .is_some_and(|r| r.len() == 6 && r.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// Starts watching `workers_dir/{name}` for each name; changes come out of
/// the receiver. The watcher stops when the receiver is dropped.
pub fn start(
    workers_dir: &Path,
    names: &[String],
    debounce: Duration,
) -> notify::Result<mpsc::UnboundedReceiver<Change>> {
    let root = std::path::absolute(workers_dir)?;
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<notify::Event>();
    let mut watcher = notify::recommended_watcher(move |r: notify::Result<notify::Event>| {
        if let Ok(ev) = r {
            let _ = raw_tx.send(ev);
        }
    })?;
    for n in names {
        add_tree(&mut watcher, &root.join(n));
    }
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        // worker → (quiet until, paths, config changed)
        let mut pending: HashMap<String, (Instant, Vec<PathBuf>, bool)> = HashMap::new();
        loop {
            let next = pending.values().map(|p| p.0).min();
            tokio::select! {
                ev = raw_rx.recv() => {
                    let Some(ev) = ev else { return };
                    if matches!(ev.kind, EventKind::Access(_)) {
                        continue;
                    }
                    for path in ev.paths {
                        let Ok(rel) = path.strip_prefix(&root) else { continue };
                        let mut comps = rel.components();
                        let Some(Component::Normal(worker)) = comps.next() else { continue };
                        let inner = comps.as_path().to_path_buf();
                        if inner.as_os_str().is_empty() || !watched(&inner) {
                            continue;
                        }
                        if matches!(ev.kind, EventKind::Create(_)) && path.is_dir() {
                            add_tree(&mut watcher, &path);
                        }
                        let config = inner == Path::new("config/worker.yaml");
                        let e = pending
                            .entry(worker.to_string_lossy().into_owned())
                            .or_insert_with(|| (Instant::now(), Vec::new(), false));
                        e.0 = Instant::now() + debounce;
                        e.2 |= config;
                        if !e.1.contains(&inner) {
                            e.1.push(inner);
                        }
                    }
                }
                () = sleep_until(next), if next.is_some() => {
                    let now = Instant::now();
                    let due: Vec<String> = pending
                        .iter()
                        .filter(|(_, p)| p.0 <= now)
                        .map(|(w, _)| w.clone())
                        .collect();
                    for worker in due {
                        if let Some((_, paths, config)) = pending.remove(&worker) {
                            if tx.send(Change { worker, paths, config }).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        }
    });
    Ok(rx)
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// Watches `dir` and every folder below it that is not ignored (one
/// non-recursive watch each, so `target/` never costs a watch).
fn add_tree(w: &mut notify::RecommendedWatcher, dir: &Path) {
    if w.watch(dir, RecursiveMode::NonRecursive).is_err() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if e.file_type().is_ok_and(|t| t.is_dir())
            && !name.starts_with('.')
            && !IGNORED_DIRS.contains(&name.as_ref())
        {
            add_tree(w, &e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignores_build_output_dependencies_and_editor_files() {
        for yes in [
            "src/main.rs",
            "config/worker.yaml",
            "app.py",
            "public/x.php",
        ] {
            assert!(watched(Path::new(yes)), "{yes}");
        }
        for no in [
            "target/debug/index",
            "bin/api",
            "node_modules/x/index.js",
            ".git/HEAD",
            "src/.main.rs.swp",
            "src/main.rs~",
            "__pycache__/app.cpython-311.pyc",
            "src/4913",
            "targetT8rPmp",
        ] {
            assert!(!watched(Path::new(no)), "{no}");
        }
    }

    #[tokio::test]
    async fn debounces_and_sees_new_folders() {
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path().join("api");
        std::fs::create_dir_all(w.join("src")).unwrap();
        let mut rx = start(dir.path(), &["api".into()], Duration::from_millis(100)).unwrap();
        for i in 0..5 {
            std::fs::write(w.join("src/main.rs"), format!("// {i}")).unwrap();
        }
        let c = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c.worker, "api");
        assert_eq!(c.paths, vec![PathBuf::from("src/main.rs")]);
        // One change for the burst.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), rx.recv())
                .await
                .is_err()
        );
        std::fs::create_dir_all(w.join("src/new")).unwrap();
        let c = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c.paths, vec![PathBuf::from("src/new")]);
        std::fs::write(w.join("src/new/mod.rs"), "x").unwrap();
        let c = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c.paths, vec![PathBuf::from("src/new/mod.rs")]);
        std::fs::create_dir_all(w.join("target/debug")).unwrap();
        std::fs::write(w.join("target/debug/x"), "x").unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(400), rx.recv())
                .await
                .is_err(),
            "target/ is ignored"
        );
    }
}
