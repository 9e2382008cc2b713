//! The house's dependency rule, checked on every test run: each top-level
//! module of `crates/tqserver/src` may import (`crate::…` paths, in `use`
//! lines and inline) only modules of a lower layer, so imports run one
//! way and there is no cycle. The layers are those of
//! docs/architecture.md; a new module must be given one here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Bottom first. A module may use only modules of earlier lines.
const LAYERS: &[&[&str]] = &[
    // Foundations: processes, ports, files, logs.
    &["process", "ports", "runtime", "systemd", "logging", "watch"],
    // The access log format; the HTTP transport (knows no application).
    &["access", "http"],
    &["config"],
    // What every worker kind shares: supervision, metrics; privileges.
    &["supervise", "metrics", "privileges"],
    // The kinds of worker, neither knowing the other; certificates.
    &["php", "native", "certs"],
    // The one owner of "a running worker".
    &["workers", "egress"],
    &["admin"],
    &["app"],
    &["fronts"],
    &["reload"],
    &["server"],
    &["cli"],
];

/// Top-level module → the modules it names as `crate::x`.
fn imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap();
            let first = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            let top = first.trim_end_matches(".rs").to_string();
            if top == "lib" || top == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code: String = text
                .lines()
                .map(|l| l.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            let deps = edges.entry(top.clone()).or_default();
            let mut rest = code.as_str();
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + "crate::".len()..];
                if let Some(group) = rest.strip_prefix('{') {
                    let end = group.find('}').unwrap_or(group.len());
                    for part in group[..end].split(',') {
                        let name = part.trim().split("::").next().unwrap_or("").trim();
                        if !name.is_empty() {
                            deps.insert(name.to_string());
                        }
                    }
                    continue;
                }
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    deps.insert(name);
                }
            }
            deps.remove(&top);
        }
    }
    edges
}

#[test]
fn imports_run_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = imports(&src);
    let layer_of = |m: &str| LAYERS.iter().position(|l| l.contains(&m));
    let mut problems = Vec::new();
    for (module, deps) in &edges {
        let Some(mine) = layer_of(module) else {
            problems.push(format!(
                "src/{module} has no layer: add it to LAYERS in tests/layers.rs and to docs/architecture.md"
            ));
            continue;
        };
        for d in deps {
            match layer_of(d) {
                Some(theirs) if theirs < mine => {}
                Some(_) => problems.push(format!(
                    "{module} imports {d}, which is not below it (layers in tests/layers.rs)"
                )),
                None if edges.contains_key(d) => {
                    problems.push(format!("{module} imports {d}, which has no layer"))
                }
                None => {} // not a module of ours (a macro path, say)
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The rule this enforces, in the words of issue 15.
    let http = &edges["http"];
    for never in ["app", "workers", "php", "native", "reload", "admin"] {
        assert!(!http.contains(never), "http imports {never}");
    }
    for kinds_owner_only in ["reload", "admin", "app", "metrics"] {
        for kind in ["php", "native"] {
            assert!(
                !edges[kinds_owner_only].contains(kind),
                "{kinds_owner_only} imports {kind}: ask crate::workers instead"
            );
        }
    }
}

#[test]
fn the_checker_sees_imports() {
    // A cycle or a reversed import must not pass unseen: the parser finds
    // the grouped and the plain forms.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(
        src.join("a/mod.rs"),
        "use crate::{b::X, c};\nfn f() { crate::d::g(); } // crate::e::h\n",
    )
    .unwrap();
    std::fs::write(src.join("b.rs"), "use crate::a::Y;\n").unwrap();
    let edges = imports(src);
    let a: Vec<&str> = edges["a"].iter().map(String::as_str).collect();
    assert_eq!(a, ["b", "c", "d"]);
    assert!(edges["b"].contains("a"));
}
