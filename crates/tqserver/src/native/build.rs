//! Building a native worker: `cargo build` for `type: rust`, `go build -o
//! bin/{name} ./src` for `type: go`, `command.build` for commands. A built
//! executable is copied into a folder of its own version, so a rebuild
//! never touches the file an older instance runs (and restarts of an older
//! instance keep running the code it was started with).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::config::{Mode, NativeConfig, NativeKind, WorkerConfig};
use crate::logging::WorkerLog;

/// Compiler output kept for the build-error page, at most (the end is kept:
/// cargo and go print the summary last).
const MAX_OUTPUT: usize = 64 * 1024;

/// What a successful build gives: the program and arguments to run.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// argv of an instance.
    pub argv: Vec<String>,
    /// How long the build took.
    pub took: Duration,
}

/// A failed build: the first line for logs, the compiler's output for the
/// dev-mode error page.
#[derive(Debug, Clone)]
pub struct BuildFailure {
    /// One line: what failed.
    pub summary: String,
    /// The build's output (stderr and stdout), possibly cut at the front.
    pub output: String,
}

impl BuildFailure {
    fn new(summary: impl Into<String>) -> Self {
        Self {
            summary: summary.into(),
            output: String::new(),
        }
    }
}

/// Builds `worker` and places its executable (rust, go) in `out_dir`.
pub async fn build(
    worker: &WorkerConfig,
    native: &NativeConfig,
    mode: Mode,
    out_dir: &Path,
    log: &WorkerLog,
) -> Result<Artifact, BuildFailure> {
    let started = Instant::now();
    let dir = &native.dir;
    let argv = match native.kind {
        NativeKind::Rust => {
            if !dir.join("Cargo.toml").is_file() {
                return Err(BuildFailure::new(format!(
                    "type: rust needs a cargo package: {} has no Cargo.toml",
                    dir.display()
                )));
            }
            let cargo = find_on_path("cargo", &cargo_dirs()).ok_or_else(|| {
                BuildFailure::new(
                    "cargo is not installed (not on PATH nor in ~/.cargo/bin); install Rust from https://rustup.rs",
                )
            })?;
            let mut args = vec![
                cargo.to_string_lossy().into_owned(),
                "build".into(),
                "--message-format=json-render-diagnostics".into(),
                "--target-dir".into(),
                dir.join("target").to_string_lossy().into_owned(),
            ];
            if mode == Mode::Prod {
                args.push("--release".into());
            }
            let out = run(&args, dir, log).await?;
            let exe = cargo_executable(&out.stdout, &worker.name)?;
            vec![install(&exe, out_dir)?]
        }
        NativeKind::Go => {
            let go = find_on_path("go", &["/usr/lib/go/bin", "/usr/local/go/bin"]).ok_or_else(|| {
                BuildFailure::new(
                    "Go is not installed: no `go` on PATH, in /usr/lib/go/bin or in /usr/local/go/bin; on Debian: apt-get install golang-go",
                )
            })?;
            if !dir.join("src").is_dir() {
                return Err(BuildFailure::new(format!(
                    "type: go builds ./src, as the original TQServer: {} has no src/ folder",
                    dir.display()
                )));
            }
            let bin = dir.join("bin").join(&worker.name);
            let args = vec![
                go.to_string_lossy().into_owned(),
                "build".into(),
                "-o".into(),
                bin.to_string_lossy().into_owned(),
                "./src".into(),
            ];
            run(&args, dir, log).await?;
            vec![install(&bin, out_dir)?]
        }
        NativeKind::Bun => {
            let bun = find_on_path("bun", &bun_dirs()).ok_or_else(|| {
                BuildFailure::new(
                    "Bun is not installed: no `bun` on PATH nor in ~/.bun/bin; see https://bun.sh (or npm install -g bun)",
                )
            })?;
            let bun = bun.to_string_lossy().into_owned();
            bun_install(&bun, dir, log).await?;
            vec![bun, "run".into(), native.entrypoint.clone()]
        }
        NativeKind::Command => {
            if let Some(b) = &native.build {
                run(b, dir, log).await?;
            }
            native.run.clone()
        }
    };
    Ok(Artifact {
        argv,
        took: started.elapsed(),
    })
}

/// Where `bun install` records the package.json it installed (in
/// node_modules/, which the watcher ignores).
const BUN_STAMP: &str = "node_modules/.tqserver-installed";

/// `bun install` when the folder has a package.json that changed since
/// the last install (its bytes and the lockfile's, compared with the
/// stamp), as the Go TQServer runs it before every start.
async fn bun_install(bun: &str, dir: &Path, log: &WorkerLog) -> Result<(), BuildFailure> {
    let Some(before) = package_stamp(dir) else {
        return Ok(());
    };
    if std::fs::read_to_string(dir.join(BUN_STAMP)).is_ok_and(|s| s == before) {
        return Ok(());
    }
    run(&[bun.to_string(), "install".into()], dir, log).await?;
    // The lockfile bun install wrote is part of what was installed.
    if let Some(after) = package_stamp(dir) {
        let _ = std::fs::write(dir.join(BUN_STAMP), after);
    }
    Ok(())
}

/// A hash of package.json and the lockfile, or `None` without a
/// package.json.
fn package_stamp(dir: &Path) -> Option<String> {
    let mut seen = std::fs::read(dir.join("package.json")).ok()?;
    for lock in ["bun.lock", "bun.lockb"] {
        if let Ok(l) = std::fs::read(dir.join(lock)) {
            seen.extend_from_slice(&l);
        }
    }
    Some(format!("{:016x}", fnv1a(&seen)))
}

/// FNV-1a, 64 bits: enough to see that a file changed.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn bun_dirs() -> Vec<String> {
    std::env::var_os("HOME")
        .map(|h| {
            vec![
                Path::new(&h)
                    .join(".bun/bin")
                    .to_string_lossy()
                    .into_owned(),
            ]
        })
        .unwrap_or_default()
}

struct Output {
    stdout: String,
}

/// Runs one build command in `dir`; its stderr goes to the worker's log as
/// it comes, and both streams are kept for the error page.
async fn run(argv: &[String], dir: &Path, log: &WorkerLog) -> Result<Output, BuildFailure> {
    let shown = argv.join(" ");
    log.info(&format!("build: {shown}"));
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A build left running when TQServer stops a reload is killed.
        .kill_on_drop(true);
    let mut child = crate::process::spawn_tied(&mut cmd, nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| BuildFailure::new(format!("cannot run {}: {e}", argv[0])))?;
    let mut stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let log2 = log.clone();
    let err_task = tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut kept = String::new();
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            log2.info(&format!("build: {line}"));
            kept.push_str(&line);
            kept.push('\n');
            keep_tail(&mut kept);
        }
        kept
    });
    let mut out = Vec::new();
    let _ = stdout.read_to_end(&mut out).await;
    let status = child.wait().await;
    // What it left in its group (cargo's rustc, say) goes with it.
    drop(child);
    let errors = err_task.await.unwrap_or_default();
    let stdout = String::from_utf8_lossy(&out).into_owned();
    match status {
        Ok(s) if s.success() => Ok(Output { stdout }),
        other => {
            // cargo's stdout is JSON messages; the rendered diagnostics are
            // on stderr. Other tools may print errors on either.
            let mut output = errors;
            if !stdout.trim_start().starts_with('{') {
                output.push_str(&stdout);
            }
            keep_tail(&mut output);
            Err(BuildFailure {
                summary: format!(
                    "build failed ({shown}: {})",
                    crate::process::describe_exit(&other)
                ),
                output,
            })
        }
    }
}

fn keep_tail(s: &mut String) {
    if s.len() > MAX_OUTPUT {
        let mut cut = s.len() - MAX_OUTPUT;
        while !s.is_char_boundary(cut) {
            cut += 1;
        }
        s.replace_range(..cut, "…\n");
    }
}

/// The executable cargo built, from its JSON messages: the only binary,
/// or the one named like the worker.
fn cargo_executable(stdout: &str, name: &str) -> Result<PathBuf, BuildFailure> {
    let mut bins = Vec::new();
    for line in stdout.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        if let Some(exe) = msg["executable"].as_str() {
            let target = msg["target"]["name"].as_str().unwrap_or_default();
            bins.push((target.to_string(), PathBuf::from(exe)));
        }
    }
    match bins.len() {
        0 => Err(BuildFailure::new(
            "cargo built no executable: the package needs a binary target (src/main.rs)",
        )),
        1 => Ok(bins.remove(0).1),
        _ => bins
            .iter()
            .find(|(t, _)| t == name)
            .map(|(_, p)| p.clone())
            .ok_or_else(|| {
                let names: Vec<&str> = bins.iter().map(|(t, _)| t.as_str()).collect();
                BuildFailure::new(format!(
                    "cargo built several executables ({}); name one of them {name:?} like the worker folder",
                    names.join(", ")
                ))
            }),
    }
}

/// Copies `exe` into `out_dir` (created) and returns the copy's path.
fn install(exe: &Path, out_dir: &Path) -> Result<String, BuildFailure> {
    let fail = |e: std::io::Error| {
        BuildFailure::new(format!(
            "cannot copy {} into {}: {e}",
            exe.display(),
            out_dir.display()
        ))
    };
    crate::runtime::create_private_dir(out_dir).map_err(fail)?;
    let to = out_dir.join(exe.file_name().unwrap_or_default());
    std::fs::copy(exe, &to).map_err(fail)?;
    Ok(to.to_string_lossy().into_owned())
}

fn cargo_dirs() -> Vec<String> {
    let mut dirs = Vec::new();
    if let Some(h) = std::env::var_os("CARGO_HOME") {
        dirs.push(Path::new(&h).join("bin").to_string_lossy().into_owned());
    }
    if let Some(h) = std::env::var_os("HOME") {
        dirs.push(
            Path::new(&h)
                .join(".cargo/bin")
                .to_string_lossy()
                .into_owned(),
        );
    }
    dirs
}

/// `name` on PATH, else in one of `extra`.
fn find_on_path<S: AsRef<str>>(name: &str, extra: &[S]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().map(|d| PathBuf::from(d.as_ref())))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_executable_from_cargo_messages() {
        let msgs = r#"{"reason":"compiler-artifact","target":{"name":"dep","kind":["lib"]},"executable":null}
{"reason":"compiler-artifact","target":{"name":"index","kind":["bin"]},"executable":"/t/debug/index"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            cargo_executable(msgs, "x").unwrap(),
            PathBuf::from("/t/debug/index")
        );
        let two = format!(
            "{msgs}\n{}",
            r#"{"reason":"compiler-artifact","target":{"name":"tool","kind":["bin"]},"executable":"/t/debug/tool"}"#
        );
        assert_eq!(
            cargo_executable(&two, "tool").unwrap(),
            PathBuf::from("/t/debug/tool")
        );
        let e = cargo_executable(&two, "other").unwrap_err();
        assert!(e.summary.contains("index, tool"), "{}", e.summary);
        assert!(cargo_executable("", "x").is_err());
    }

    #[test]
    fn output_keeps_its_end() {
        let mut s = "é".repeat(MAX_OUTPUT);
        keep_tail(&mut s);
        assert!(s.len() <= MAX_OUTPUT + 4);
        assert!(s.starts_with('…'));
    }
}
