//! `tqserver check` and configuration errors, through the real binary.

mod common;

use common::{Project, php_dir, run_cli};

#[test]
fn the_demo_configuration_checks_and_shows_routes_and_pools() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let (status, out, err) = run_cli(&root, &["check"]);
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains("/blog") && out.contains("-> blog (php, php-fpm)"),
        "{out}"
    );
    assert!(
        out.contains("dynamic, start 3, keep 2..4 idle, at most 10 processes"),
        "{out}"
    );
    assert!(
        out.contains("max_requests 1000, request_timeout 30s"),
        "{out}"
    );
}

/// The original TQServer's blog worker.yaml (keys and values as it ships
/// them, logging section included) loads without a change.
#[test]
fn the_original_blog_worker_yaml_loads() {
    let p = Project::new("", "");
    std::fs::create_dir_all(p.path().join("workers/blog/public")).unwrap();
    p.worker(
        "blog",
        "path: \"/blog\"\ntype: php\nenabled: true\nphp:\n  settings:\n    max_execution_time: \"30\"\n    memory_limit: \"128M\"\n    display_errors: \"1\"\n    error_reporting: \"E_ALL\"\n    upload_max_filesize: \"10M\"\n    post_max_size: \"10M\"\n  pool:\n    manager: dynamic\n    min_workers: 2\n    max_workers: 10\n    start_workers: 3\n    max_requests: 1000\n    request_timeout: 30\n    idle_timeout: 10\n    listen_address: \"127.0.0.1\"\ndocument_root: ./public\nlogging:\n  level: info\n  access_log: true\n  slow_log:\n    enabled: true\n    threshold: 1s\n",
    );
    let (status, out, err) = run_cli(p.path(), &["check"]);
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("listen 127.0.0.1:<port from "), "{out}");
}

fn check_fails(p: &Project) -> String {
    let (status, out, err) = run_cli(p.path(), &["check"]);
    assert_eq!(status.code(), Some(78), "expected exit 78\n{out}{err}");
    err
}

#[test]
fn a_misspelt_key_names_file_line_and_the_nearest_key() {
    let p = Project::new("", "");
    p.worker(
        "app",
        &format!("path: /app\ntype: php\ndocument_root: {}\nphp:\n  pool:\n    manager: static\n    max_worker: 3\n", php_dir().display()),
    );
    let err = check_fails(&p);
    assert!(
        err.contains("workers/app/config/worker.yaml:7: php.pool.max_worker: unknown key; did you mean php.pool.max_workers?"),
        "{err}"
    );
    let p = Project::new("  prot: 80\n", "");
    let err = check_fails(&p);
    assert!(
        err.contains("config/server.yaml:4: server.prot: unknown key; did you mean server.port?"),
        "{err}"
    );
}

#[test]
fn inconsistent_pool_numbers_name_the_keys() {
    let p = Project::new("", "");
    p.worker(
        "app",
        &format!(
            "path: /app\ntype: php\ndocument_root: {}\nphp:\n  pool:\n    manager: dynamic\n    min_workers: 4\n    start_workers: 2\n    max_workers: 10\n",
            php_dir().display()
        ),
    );
    let err = check_fails(&p);
    assert!(
        err.contains("worker.yaml:7: php.pool.min_workers: php.pool.min_workers (4) is above php.pool.start_workers (2)"),
        "{err}"
    );
    let p = Project::new("", "");
    p.worker(
        "app",
        &format!(
            "path: /app\ntype: php\ndocument_root: {}\nphp:\n  pool:\n    manager: dynamic\n    start_workers: 12\n    max_workers: 10\n",
            php_dir().display()
        ),
    );
    let err = check_fails(&p);
    assert!(
        err.contains("php.pool.start_workers (12) is above php.pool.max_workers (10)"),
        "{err}"
    );
}

#[test]
fn keys_of_another_worker_type_and_duplicate_paths_are_clear_errors() {
    let p = Project::new("", "");
    p.worker(
        "native",
        "path: /api\ntype: rust\nphp:\n  pool:\n    max_workers: 3\n",
    );
    let err = check_fails(&p);
    assert!(
        err.contains("worker.yaml:3: php: php is for type: php workers; this one is type: rust"),
        "{err}"
    );
    p.worker("native", "path: /api\ntype: perl\n");
    let err = check_fails(&p);
    assert!(
        err.contains(
            "worker.yaml:2: type: unknown type \"perl\"; one of: php, static, rust, go, command, bun"
        ),
        "{err}"
    );
    p.worker(
        "native",
        "path: /api\ntype: php\nscaling:\n  max_workers: 3\n",
    );
    let err = check_fails(&p);
    assert!(
        err.contains("worker.yaml:3: scaling: scaling is for native workers"),
        "{err}"
    );

    let p = Project::new("", "");
    p.php_worker("one", "/same", "");
    p.php_worker("two", "/same/", "");
    let err = check_fails(&p);
    assert!(
        err.contains(
            "workers/two/config/worker.yaml:1: path: /same is also the path of worker one"
        ),
        "{err}"
    );

    // A disabled worker may share a path with an enabled one.
    let p = Project::new("", "");
    p.php_worker("one", "/same", "");
    p.php_worker("two", "/same", "enabled: false\n");
    let (status, out, _) = run_cli(p.path(), &["check"]);
    assert!(status.success());
    assert!(out.contains("-> two (disabled in dev mode)"), "{out}");
}

#[test]
fn development_workers_run_only_in_dev_mode() {
    let p = Project::new("", "");
    p.php_worker("devtools", "/dev", "enabled: development\n");
    let (_, out, _) = run_cli(p.path(), &["check", "--mode", "prod"]);
    assert!(out.contains("-> devtools (disabled in prod mode)"), "{out}");
    let (_, out, _) = run_cli(p.path(), &["check"]);
    assert!(out.contains("-> devtools (php, php-fpm)"), "{out}");
    let (status, _, err) = run_cli(p.path(), &["check", "--mode", "staging"]);
    assert_eq!(status.code(), Some(64), "{err}");
}

#[test]
fn a_missing_php_fpm_stops_start_up_with_a_clear_message() {
    let p = Project::new("", "");
    p.php_worker("app", "/app", "  binary: /nonexistent/php-fpm\n");
    let (status, _, err) = run_cli(
        p.path(),
        &[
            "--port",
            &common::free_port().to_string(),
            "--host",
            "127.0.0.1",
            // Not the default 127.0.0.1:8081, which another test or a
            // running TQServer may hold.
            "--admin-listen",
            "",
        ],
    );
    assert_eq!(status.code(), Some(78), "{err}");
    assert!(
        err.contains("worker app: php.binary /nonexistent/php-fpm does not exist"),
        "{err}"
    );
}

#[test]
fn the_cgi_backend_and_fastcgi_listener_keys_are_checked() {
    let root = php_dir();
    let p = Project::new("", "");
    p.worker(
        "app",
        &format!("path: /app\ntype: php\ndocument_root: {}\nphp:\n  backend: cgi\n  pool:\n    manager: ondemand\n    max_workers: 4\nfastcgi:\n  listen: 127.0.0.1:9101\n", root.display()),
    );
    let (status, out, err) = run_cli(p.path(), &["check"]);
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains("-> app (php, php-cgi, TQServer's process manager)"),
        "{out}"
    );
    assert!(out.contains("fastcgi listener 127.0.0.1:9101"), "{out}");

    let p = Project::new("", "");
    p.worker(
        "app",
        &format!(
            "path: /app\ntype: php\ndocument_root: {}\nphp:\n  backend: cgl\n",
            root.display()
        ),
    );
    let err = check_fails(&p);
    assert!(
        err.contains("worker.yaml:5: php.backend: unknown backend \"cgl\"; did you mean cgi?"),
        "{err}"
    );

    let p = Project::new("", "");
    p.worker(
        "app",
        &format!("path: /app\ntype: php\ndocument_root: {}\nphp:\n  backend: cgi\n  pool:\n    listen_address: 127.0.0.1:9000\nfastcgi:\n  listen: somewhere\n  limit_extensions: [php]\n", root.display()),
    );
    let err = check_fails(&p);
    assert!(
        err.contains(
            "php.pool.listen_address: the cgi backend gives each PHP process its own address"
        ),
        "{err}"
    );
    assert!(
        err.contains("fastcgi.listen: \"somewhere\" is neither ip:port"),
        "{err}"
    );
    assert!(
        err.contains("fastcgi.limit_extensions: \"php\" is not a file extension"),
        "{err}"
    );
}

#[test]
fn the_thread_count_is_auto_or_a_number() {
    let p = Project::new("  threads: 0\n", "");
    let err = check_fails(&p);
    assert!(
        err.contains("config/server.yaml:4: server.threads: 0 is not a thread count"),
        "{err}"
    );
    let p = Project::new("  threads: many\n", "");
    assert!(check_fails(&p).contains("server.threads: \"many\" is not a thread count"));
    let p = Project::new("  threads: 3\n", "");
    let (status, out, err) = run_cli(p.path(), &["check"]);
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("threads  3"), "{out}");
    let p = Project::new("  threads: auto\n", "");
    let (_, out, _) = run_cli(p.path(), &["check"]);
    assert!(out.contains("threads  auto ("), "{out}");
}

/// `server.threads` connection threads (each its own event loop), and
/// one runtime thread for the rest.
#[test]
fn the_thread_count_is_the_number_of_connection_threads() {
    let named = |pid: u32, prefix: &str| {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|c| c.trim().starts_with(prefix))
            })
            .count()
    };
    for n in [1, 3] {
        let p = Project::new(&format!("  threads: {n}\n"), "");
        let tq = common::Tq::start(p.path(), &[]);
        assert_eq!(named(tq.pid(), "tqserver-conn-"), n, "threads: {n}");
        assert_eq!(named(tq.pid(), "tokio-rt-worker"), 1, "threads: {n}");
    }
}

/// One `tqserver check` shows every problem of every file: several
/// unknown keys and bad values of one file, and the worker files' even
/// when server.yaml has its own.
#[test]
fn every_problem_of_every_file_is_reported_in_one_run() {
    let p = Project::new("  prot: 80\n", "");
    p.worker(
        "a",
        "path: /a\ntype: command\ncommand:\n  run: [python3, app.py]\nscaling:\n  qeue_threshold: 3\n  min_workers: x\nhelth:\n  path: /h\nproxy:\n  strip_prefix: maybe\n",
    );
    p.worker(
        "b",
        "path: /b\ntype: bun\nbun:\n  entrypoint: main.ts\n  envv: {}\n",
    );
    let err = check_fails(&p);
    for want in [
        "config/server.yaml:4: server.prot: unknown key; did you mean server.port?",
        "workers/a/config/worker.yaml:6: scaling.qeue_threshold: unknown key; did you mean scaling.queue_threshold?",
        "workers/a/config/worker.yaml:7: scaling.min_workers",
        "workers/a/config/worker.yaml:8: helth: unknown key; did you mean health?",
        "workers/a/config/worker.yaml:11: proxy.strip_prefix",
        "workers/b/config/worker.yaml:5: bun.envv: unknown key; did you mean bun.env?",
        "workers/b/config/worker.yaml:4: bun.entrypoint: ",
    ] {
        assert!(err.contains(want), "missing {want:?} in\n{err}");
    }
    assert!(err.contains("configuration has 7 problem(s)"), "{err}");
}

/// The Go TQServer's keys load with its meanings, and a key it had that
/// TQServer does not act on is said once, with file, line and key; HTTPS
/// inspection gives the workers its CA, and is refused in prod mode.
#[test]
fn the_go_tqservers_keys_load_and_unused_ones_are_warned_about() {
    let p = Project::new(
        "  read_timeout_seconds: 30\n  log_file: \"logs/tqserver_{date}.log\"\nsocks5:\n  enabled: \"true\"\n  port: 10800\n  log_file: \"logs/socks5_{date}.log\"\n  log_format: text\n  https_inspection:\n    enabled: true\n    auto_generate: true\n    max_body_size: 1048576\n",
        "  health_check_timeout_ms: 250\n",
    );
    p.worker(
        "api",
        "name: \"other\"\npath: \"/api\"\ntype: \"bun\"\nenabled: \"true\"\nlog_file: \"logs/api.log\"\nscaling:\n  min_workers: 1\n  max_workers: 5\n  queue_threshold: 7\n  scale_down_delay: 45\nbun:\n  entrypoint: \"index.ts\"\n  env:\n    FOO: bar\ntimeouts:\n  read_timeout_seconds: 31\n  write_timeout_seconds: 32\n  idle_timeout_seconds: 121\nruntime:\n  go_max_procs: 2\n  go_mem_limit: \"512MiB\"\n  max_requests: 100\n",
    );
    std::fs::write(p.path().join("workers/api/index.ts"), "").unwrap();
    let (status, out, err) = run_cli(p.path(), &["check"]);
    assert!(status.success(), "{out}{err}");
    for want in [
        "/api             -> api (bun, bun run, proxied over HTTP)",
        "api: 1 instance(s) (up to 5, one more at 7 requests in hand each, one fewer after 45s idle)",
        "replaced after 100 requests",
        "path prefix stripped",
        "socks5   127.0.0.1:10800",
        "env FOO=bar GOMAXPROCS=2 GOMEMLIMIT=512MiB WORKER_READ_TIMEOUT_SECONDS=31 WORKER_WRITE_TIMEOUT_SECONDS=32 WORKER_IDLE_TIMEOUT_SECONDS=121",
        "warning: workers/api/config/worker.yaml:1: name: \"other\" is not acted on",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    assert_eq!(out.matches("warning:").count(), 1, "{out}");
    // Inspection decrypts the workers' HTTPS: never in prod.
    let (status, _, err) = run_cli(p.path(), &["--mode", "prod", "check"]);
    assert_eq!(status.code(), Some(78));
    assert!(
        err.contains("socks5.https_inspection.enabled: HTTPS inspection decrypts"),
        "{err}"
    );
}
