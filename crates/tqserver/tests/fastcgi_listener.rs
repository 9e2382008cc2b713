//! TQServer's FastCGI listener (`fastcgi.listen`) behind real nginx
//! (Debian's, started here with its own configuration on 127.0.0.1) and
//! real `cgi-fcgi`, for both PHP backends.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Project, Tq, client, free_port, php_dir, sha256_hex};
use reqwest::StatusCode;

/// nginx in the foreground, one process, everything in `dir`.
struct Nginx {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Nginx {
    fn start(dir: &Path, docroot: &Path, fastcgi: &str) -> Self {
        let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("nginx not found: install nginx, or run the README test command, which does");
        let port = free_port();
        let d = dir.display();
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    fastcgi_temp_path {d}/fastcgi;
    proxy_temp_path {d}/proxy;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_max_body_size 20m;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location ~ [^/]\.php(/|$) {{
            fastcgi_split_path_info ^(.+?\.php)(/.*)$;
            include /etc/nginx/fastcgi.conf;
            fastcgi_param PATH_INFO $fastcgi_path_info;
            fastcgi_pass {fastcgi};
        }}
        location = /ping {{
            include /etc/nginx/fastcgi.conf;
            fastcgi_pass {fastcgi};
        }}
        location = /status {{
            include /etc/nginx/fastcgi.conf;
            fastcgi_pass {fastcgi};
        }}
    }}
}}
"#,
            root = docroot.display()
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let n = Self {
            child,
            port,
            dir: dir.to_path_buf(),
        };
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < until,
                "nginx did not start: {}",
                n.errors()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        n
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn errors(&self) -> String {
        std::fs::read_to_string(self.dir.join("nginx-error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A PHP worker over the test scripts with a FastCGI listener.
fn project(backend: &str, listen: &str) -> Project {
    let p = Project::new("", "");
    p.worker(
        "app",
        &format!(
            "path: /app\ntype: php\ndocument_root: {}\nphp:\n  backend: {backend}\n  pool:\n    manager: static\n    max_workers: 2\nfastcgi:\n  listen: {listen}\n  ping_path: /ping\n  status_path: /status\n",
            php_dir().display()
        ),
    );
    p
}

async fn through_nginx(backend: &str) {
    let lport = free_port();
    let p = project(backend, &format!("127.0.0.1:{lport}"));
    let tq = Tq::start(p.path(), &[]);
    let nginx = Nginx::start(p.path(), &php_dir(), &format!("127.0.0.1:{lport}"));
    let c = client();

    // hello: a script runs, with the params nginx computed.
    let r = c.get(nginx.url("/echo.php/tail?q=1")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}\n{}", nginx.errors(), tq.log_text());
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["SCRIPT_NAME"], "/echo.php");
    assert_eq!(v["PATH_INFO"], "/tail");
    assert_eq!(v["QUERY_STRING"], "q=1");
    assert_eq!(v["WORKER_NAME"], "app");

    // A POST upload streams through both hops intact.
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let r = c
        .post(nginx.url("/echo.php"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["body_length"], body.len());
    assert_eq!(v["body_sha256"], sha256_hex(&body));

    // A 302 with two cookies.
    let r = c.get(nginx.url("/redirect.php")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(r.headers()["location"], "/app/echo.php");
    let cookies: Vec<_> = r.headers().get_all("set-cookie").iter().collect();
    assert_eq!(cookies.len(), 2, "{cookies:?}");

    // Containment and limit_extensions are TQServer's, whatever nginx sends.
    let r = c.get(nginx.url("/missing.php")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.text().await.unwrap(), "File not found.\n");

    // php-fpm's ping and status paths.
    let r = c.get(nginx.url("/ping")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "pong");
    let r = c.get(nginx.url("/status?json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["pool"], "app");
    assert_eq!(v["process manager"], "static");
    assert!(v["accepted conn"].as_u64().unwrap() >= 3, "{v}");
    if backend == "cgi" {
        // TQServer's own counts. (php-fpm's own page, for the fpm backend,
        // recounts its processes once a second; right after start its
        // figures are not yet settled.)
        assert_eq!(v["total processes"], 2, "{v}");
        assert_eq!(
            v["idle processes"].as_u64().unwrap() + v["active processes"].as_u64().unwrap(),
            2,
            "{v}"
        );
        // ?full lists the processes the OS sees, with what they last ran.
        let r = c.get(nginx.url("/status?json&full")).send().await.unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        let mut listed: Vec<u64> = v["processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["pid"].as_u64().unwrap())
            .collect();
        listed.sort_unstable();
        let mut os: Vec<u64> = common::children_of(tq.pid())
            .into_iter()
            .filter(|(_, c)| c.starts_with("php-cgi"))
            .map(|(p, _)| u64::from(p))
            .collect();
        os.sort_unstable();
        assert_eq!(listed, os, "{v}");
        let served: u64 = v["processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["requests"].as_u64().unwrap())
            .sum();
        assert!(served >= 3, "{v}");
        let text = c
            .get(nginx.url("/status?full"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(
            text.matches("************************").count(),
            2,
            "{text}"
        );
        assert!(text.contains("\nscript:               "), "{text}");
    }
}

#[tokio::test]
async fn nginx_to_the_listener_to_a_php_cgi_pool() {
    through_nginx("cgi").await;
}

#[tokio::test]
async fn nginx_to_the_listener_to_php_fpm() {
    through_nginx("fpm").await;
}

/// Runs one request with `cgi-fcgi -bind -connect`.
fn cgi_fcgi(addr: &str, env: &[(&str, &str)]) -> String {
    let out = Command::new("cgi-fcgi")
        .args(["-bind", "-connect", addr])
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("cgi-fcgi not found: install libfcgi-bin, or run the README test command");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn cgi_fcgi_on_a_unix_socket_and_what_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("app.sock");
    let p = project("cgi", &format!("unix:{}", sock.display()));
    let tq = Tq::start(p.path(), &[]);
    let addr = sock.display().to_string();
    let script = php_dir().join("pid.php");
    let out = cgi_fcgi(
        &addr,
        &[
            ("REQUEST_METHOD", "GET"),
            ("SCRIPT_FILENAME", script.to_str().unwrap()),
            ("SCRIPT_NAME", "/pid.php"),
        ],
    );
    let pid = out.rsplit("\r\n\r\n").next().unwrap().trim();
    assert!(pid.parse::<u32>().is_ok(), "{out}\n{}", tq.log_text());

    // Outside the document root, and a file PHP must not run.
    for f in ["/etc/passwd", php_dir().join("style.css").to_str().unwrap()] {
        let out = cgi_fcgi(
            &addr,
            &[
                ("REQUEST_METHOD", "GET"),
                ("SCRIPT_FILENAME", f),
                ("SCRIPT_NAME", "/x"),
            ],
        );
        assert!(out.starts_with("Status: 403"), "{f}: {out}");
        assert!(out.ends_with("Access denied.\n"), "{out}");
    }
    assert!(tq.log_text().contains("has been denied"));

    // FCGI_GET_VALUES from a FastCGI client.
    let c = tqserver_fastcgi::Client::new(
        tqserver_fastcgi::Address::Unix(sock.clone()),
        tqserver_fastcgi::ClientConfig::new(1),
    );
    let v = c
        .get_values(&["FCGI_MAX_CONNS", "FCGI_MPXS_CONNS"])
        .await
        .unwrap();
    assert_eq!(v.get_str("FCGI_MPXS_CONNS"), Some("1"));
    assert!(v.get_str("FCGI_MAX_CONNS").is_some());
}

#[test]
fn a_listener_other_machines_can_reach_needs_an_allow_list() {
    let p = project("cgi", "0.0.0.0:9001");
    let (status, out, err) = common::run_cli(p.path(), &["check"]);
    assert_eq!(status.code(), Some(78), "{out}{err}");
    assert!(
        err.contains("worker.yaml:")
            && err.contains("fastcgi.listen")
            && err.contains("fastcgi.allowed_clients"),
        "{err}"
    );
}

#[tokio::test]
async fn a_client_not_in_allowed_clients_is_closed_and_logged() {
    let port = free_port();
    let p = Project::new("", "");
    p.worker(
        "app",
        &format!(
            "path: /app\ntype: php\ndocument_root: {}\nphp:\n  backend: cgi\n  pool:\n    manager: static\n    max_workers: 1\nfastcgi:\n  listen: 127.0.0.1:{port}\n  allowed_clients: [10.1.2.3]\n",
            php_dir().display()
        ),
    );
    let tq = Tq::start(p.path(), &[]);
    let script = php_dir().join("pid.php");
    let out = cgi_fcgi(
        &format!("127.0.0.1:{port}"),
        &[
            ("REQUEST_METHOD", "GET"),
            ("SCRIPT_FILENAME", script.to_str().unwrap()),
        ],
    );
    assert_eq!(out, "", "nothing answered");
    let until = Instant::now() + Duration::from_secs(5);
    while !tq.log_text().contains("not in fastcgi.allowed_clients") {
        assert!(Instant::now() < until, "{}", tq.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
