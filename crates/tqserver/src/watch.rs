//! The file watcher: inotify (through `notify`) on server.yaml and every
//! worker folder, minus build output and dependencies (`target/`, `bin/`,
//! `node_modules/`, `vendor/`, `__pycache__/`, dot folders) and editor
//! temporaries. Folders created later are watched as they appear, and a
//! worker folder added or removed is reported. Changes are debounced per
//! worker: one [`Change`] once the folder has been quiet for
//! `file_watcher.debounce_ms`.

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
                || name == "4913"
                // Written by `bun install` (a type: bun build step):
                // package.json is what a person changes.
                || name == "bun.lock"
                || name == "bun.lockb")
        {
            return false;
        }
    }
    true
}

/// Whether `rel` (inside a worker folder; empty: the folder itself) is
/// the worker's configuration: the folder appearing or going away, its
/// `config/` folder, `config/worker.yaml`, or the `..data` links a
/// Kubernetes ConfigMap volume swaps. Other files in `config/` are the
/// worker's own (its code reads them).
fn is_config(rel: &Path) -> bool {
    let mut c = rel.components();
    match (c.next(), c.next(), c.next()) {
        (None, ..) => true,
        (Some(Component::Normal(d)), None, _) => d == "config",
        (Some(Component::Normal(d)), Some(Component::Normal(f)), None) => {
            d == "config" && (f == "worker.yaml" || f.to_string_lossy().starts_with(".."))
        }
        _ => false,
    }
}

/// cargo creates `target/` as `targetXXXXXX` and renames it.
fn cargo_temp_target(name: &str) -> bool {
    name.strip_prefix("target")
        .is_some_and(|r| r.len() == 6 && r.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// What the watcher reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A worker folder changed (or appeared, or went away).
    WorkerConfig(Change),
    /// server.yaml changed (written, replaced, or its Kubernetes ConfigMap
    /// symlinks swapped).
    ServerConfig,
}

/// Starts watching `workers_dir` (every worker folder in it, and folders
/// added later) and `server_file`; events come out of the receiver. With
/// `code` off only configuration is watched: each worker's `config/`
/// folder and the workers directory itself. The watcher stops when the
/// receiver is dropped.
pub fn start(
    workers_dir: &Path,
    server_file: &Path,
    code: bool,
    debounce: Duration,
) -> notify::Result<mpsc::UnboundedReceiver<Event>> {
    let root = std::path::absolute(workers_dir)?;
    let server_file = std::path::absolute(server_file)?;
    let server_dir = server_file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let server_name = server_file
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<notify::Event>();
    let mut watcher = notify::recommended_watcher(move |r: notify::Result<notify::Event>| {
        if let Ok(ev) = r {
            let _ = raw_tx.send(ev);
        }
    })?;
    watcher.watch(&root, RecursiveMode::NonRecursive)?;
    if let Ok(entries) = std::fs::read_dir(&root) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) && watched(Path::new(&e.file_name())) {
                add_tree(&mut watcher, &e.path(), code);
            }
        }
    }
    if server_dir != root {
        watcher.watch(&server_dir, RecursiveMode::NonRecursive)?;
    }
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        // worker (None: server.yaml) → (quiet until, paths, config changed)
        let mut pending: HashMap<Option<String>, (Instant, Vec<PathBuf>, bool)> = HashMap::new();
        loop {
            let next = pending.values().map(|p| p.0).min();
            tokio::select! {
                ev = raw_rx.recv() => {
                    let Some(ev) = ev else { return };
                    if matches!(ev.kind, EventKind::Access(_)) {
                        continue;
                    }
                    for path in ev.paths {
                        if path.parent() == Some(server_dir.as_path()) {
                            let name = path.file_name().unwrap_or_default();
                            // `..data` is how a Kubernetes ConfigMap volume
                            // swaps its files in.
                            if name == server_name.as_os_str() || name.to_string_lossy().starts_with("..") {
                                let e = pending
                                    .entry(None)
                                    .or_insert_with(|| (Instant::now(), Vec::new(), true));
                                e.0 = Instant::now() + debounce;
                                continue;
                            }
                        }
                        let Ok(rel) = path.strip_prefix(&root) else { continue };
                        let mut comps = rel.components();
                        let Some(Component::Normal(worker)) = comps.next() else { continue };
                        if !watched(Path::new(worker)) {
                            continue;
                        }
                        let inner = comps.as_path().to_path_buf();
                        let config = is_config(&inner);
                        if !config && !watched(&inner) {
                            continue;
                        }
                        if !code && !config {
                            continue;
                        }
                        if matches!(ev.kind, EventKind::Create(_)) && path.is_dir() {
                            add_tree(&mut watcher, &path, code);
                        }
                        let e = pending
                            .entry(Some(worker.to_string_lossy().into_owned()))
                            .or_insert_with(|| (Instant::now(), Vec::new(), false));
                        e.0 = Instant::now() + debounce;
                        e.2 |= config;
                        if !inner.as_os_str().is_empty() && !e.1.contains(&inner) {
                            e.1.push(inner);
                        }
                    }
                }
                () = sleep_until(next), if next.is_some() => {
                    let now = Instant::now();
                    let due: Vec<Option<String>> = pending
                        .iter()
                        .filter(|(_, p)| p.0 <= now)
                        .map(|(w, _)| w.clone())
                        .collect();
                    for key in due {
                        let Some((_, paths, config)) = pending.remove(&key) else { continue };
                        let ev = match key {
                            None => Event::ServerConfig,
                            Some(worker) => Event::WorkerConfig(Change { worker, paths, config }),
                        };
                        if tx.send(ev).is_err() {
                            return;
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
/// non-recursive watch each, so `target/` never costs a watch); with
/// `code` off, only `dir` and its `config/`.
fn add_tree(w: &mut notify::RecommendedWatcher, dir: &Path, code: bool) {
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
            && (code || name == "config")
        {
            add_tree(w, &e.path(), code);
        }
    }
}

/// Watches the folders of `files` (certificate and key files) and reports
/// once they have been quiet for `debounce` after a change to one of
/// them: written, replaced, or swapped in by a symlink change (certbot's
/// `live/` links, a Kubernetes Secret's `..data`). Stops when the
/// receiver is dropped.
pub fn files(files: &[PathBuf], debounce: Duration) -> notify::Result<mpsc::UnboundedReceiver<()>> {
    let mut names: HashMap<PathBuf, Vec<std::ffi::OsString>> = HashMap::new();
    for f in files {
        let f = std::path::absolute(f)?;
        let dir = f.parent().map(Path::to_path_buf).unwrap_or_default();
        let name = f.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        names.entry(dir).or_default().push(name);
    }
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<notify::Event>();
    let mut watcher = notify::recommended_watcher(move |r: notify::Result<notify::Event>| {
        if let Ok(ev) = r {
            let _ = raw_tx.send(ev);
        }
    })?;
    for dir in names.keys() {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _watcher = watcher;
        let mut due: Option<Instant> = None;
        loop {
            tokio::select! {
                ev = raw_rx.recv() => {
                    let Some(ev) = ev else { return };
                    if matches!(ev.kind, EventKind::Access(_)) {
                        continue;
                    }
                    let ours = ev.paths.iter().any(|p| {
                        let (Some(dir), Some(name)) = (p.parent(), p.file_name()) else {
                            return false;
                        };
                        names.get(dir).is_some_and(|n| {
                            n.iter().any(|x| x == name) || name.to_string_lossy().starts_with("..")
                        })
                    });
                    if ours {
                        due = Some(Instant::now() + debounce);
                    }
                }
                () = sleep_until(due), if due.is_some() => {
                    due = None;
                    if tx.send(()).is_err() {
                        return;
                    }
                }
                () = tx.closed() => return,
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_counts_as_configuration() {
        for yes in ["", "config", "config/worker.yaml", "config/..data"] {
            assert!(is_config(Path::new(yes)), "{yes:?}");
        }
        for no in [
            "config/app.json",
            "src/main.rs",
            "worker.yaml",
            "config/sub/worker.yaml",
        ] {
            assert!(!is_config(Path::new(no)), "{no:?}");
        }
    }

    #[test]
    fn ignores_build_output_dependencies_and_editor_files() {
        for yes in [
            "src/main.rs",
            "config/worker.yaml",
            "app.py",
            "public/x.php",
            "package.json",
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
            "bun.lock",
            "bun.lockb",
            "targetT8rPmp",
        ] {
            assert!(!watched(Path::new(no)), "{no}");
        }
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<Event>) -> Event {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an event within 5 s")
            .expect("the watcher runs")
    }

    fn worker(e: Event) -> Change {
        match e {
            Event::WorkerConfig(c) => c,
            Event::ServerConfig => panic!("expected a worker change, got server.yaml"),
        }
    }

    async fn quiet(rx: &mut mpsc::UnboundedReceiver<Event>, why: &str) {
        let r = tokio::time::timeout(Duration::from_millis(400), rx.recv()).await;
        assert!(r.is_err(), "{why}: {r:?}");
    }

    #[tokio::test]
    async fn debounces_and_sees_new_folders() {
        let dir = tempfile::tempdir().unwrap();
        let server = dir.path().join("server.yaml");
        std::fs::write(&server, "x").unwrap();
        let workers = dir.path().join("workers");
        let w = workers.join("api");
        std::fs::create_dir_all(w.join("src")).unwrap();
        let mut rx = start(&workers, &server, true, Duration::from_millis(100)).unwrap();
        for i in 0..5 {
            std::fs::write(w.join("src/main.rs"), format!("// {i}")).unwrap();
        }
        let c = worker(next(&mut rx).await);
        assert_eq!(c.worker, "api");
        assert_eq!(c.paths, vec![PathBuf::from("src/main.rs")]);
        assert!(!c.config);
        quiet(&mut rx, "one change for the burst").await;
        std::fs::create_dir_all(w.join("src/new")).unwrap();
        let c = worker(next(&mut rx).await);
        assert_eq!(c.paths, vec![PathBuf::from("src/new")]);
        std::fs::write(w.join("src/new/mod.rs"), "x").unwrap();
        let c = worker(next(&mut rx).await);
        assert_eq!(c.paths, vec![PathBuf::from("src/new/mod.rs")]);
        std::fs::create_dir_all(w.join("target/debug")).unwrap();
        std::fs::write(w.join("target/debug/x"), "x").unwrap();
        quiet(&mut rx, "target/ is ignored").await;
        // server.yaml, rewritten by an editor that renames over it.
        std::fs::write(dir.path().join("server.yaml.tmp"), "y").unwrap();
        std::fs::rename(dir.path().join("server.yaml.tmp"), &server).unwrap();
        assert_eq!(next(&mut rx).await, Event::ServerConfig);
        // A ConfigMap volume's swap of its `..data` link.
        std::os::unix::fs::symlink("workers", dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        assert_eq!(next(&mut rx).await, Event::ServerConfig);
        // A worker folder added, then removed.
        std::fs::create_dir_all(workers.join("new/config")).unwrap();
        std::fs::write(workers.join("new/config/worker.yaml"), "path: /new").unwrap();
        let c = worker(next(&mut rx).await);
        assert_eq!((c.worker.as_str(), c.config), ("new", true));
        std::fs::remove_dir_all(workers.join("new")).unwrap();
        let c = worker(next(&mut rx).await);
        assert_eq!((c.worker.as_str(), c.config), ("new", true));
    }

    #[tokio::test]
    async fn config_only_ignores_code() {
        let dir = tempfile::tempdir().unwrap();
        let server = dir.path().join("server.yaml");
        std::fs::write(&server, "x").unwrap();
        let w = dir.path().join("workers/api");
        std::fs::create_dir_all(w.join("src")).unwrap();
        std::fs::create_dir_all(w.join("config")).unwrap();
        let mut rx = start(
            &dir.path().join("workers"),
            &server,
            false,
            Duration::from_millis(50),
        )
        .unwrap();
        std::fs::write(w.join("src/main.rs"), "x").unwrap();
        quiet(&mut rx, "code is not watched").await;
        std::fs::write(w.join("config/worker.yaml"), "x").unwrap();
        let c = worker(next(&mut rx).await);
        assert!(c.config);
        // A Kubernetes ConfigMap volume's update: a new timestamped folder,
        // then the `..data` link swapped to it by a rename.
        let cfg = w.join("config");
        std::fs::create_dir(cfg.join("..2026_11_26_06_00_00.1")).unwrap();
        std::os::unix::fs::symlink("..2026_11_26_06_00_00.1", cfg.join("..data_tmp")).unwrap();
        std::fs::rename(cfg.join("..data_tmp"), cfg.join("..data")).unwrap();
        let c = worker(next(&mut rx).await);
        assert!(c.config, "{c:?}");
    }
}
