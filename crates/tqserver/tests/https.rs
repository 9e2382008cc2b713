//! HTTPS against real clients: curl and `openssl s_client` on the TLS port
//! (HTTP/1.1 and HTTP/2 by ALPN, SNI between two certificates, a client
//! without SNI, TLS 1.0/1.1 refused), what PHP (real php-fpm) and a native
//! worker see, the plain port's redirect and HSTS, `tqserver check` on bad
//! certificates, a certificate replaced under h2load and wrk, the local
//! CA, and a graceful stop with an HTTP/2 request in flight.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::tls::{curl, metric, openssl_cert, s_client, self_signed, served_serial};
use common::{Project, Tq, free_port, run_cli};

/// The Python worker (tests/native/app.py) at `route`.
fn python_worker(p: &Project, name: &str, route: &str) {
    p.worker(
        name,
        &format!("path: {route}\ntype: command\ncommand:\n  run: [\"python3\", \"app.py\"]\n"),
    );
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/native/app.py"),
        p.path().join("workers").join(name).join("app.py"),
    )
    .unwrap();
}

/// Waits until the HTTPS listener is up.
fn wait_https(tq: &Tq) {
    let until = Instant::now() + Duration::from_secs(30);
    while !tq.log_text().contains("listening on https://") {
        assert!(
            Instant::now() < until,
            "no HTTPS listener:\n{}",
            tq.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A project with an HTTPS port serving the one certificate `c`.
fn tls_project(tls_port: u16, c: &common::tls::CertFiles) -> Project {
    Project::new(
        &format!(
            "  tls:\n    port: {tls_port}\n    certificates:\n      - {{ cert: {}, key: {} }}\n",
            c.cert.display(),
            c.key.display()
        ),
        "",
    )
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn alpn_sni_versions_and_what_applications_see() {
    let tls_port = free_port();
    let certs = tempfile::tempdir().unwrap();
    // One from openssl itself, one from rcgen.
    let a = openssl_cert(
        certs.path(),
        "a",
        "a.test",
        "DNS:a.test,DNS:localhost,IP:127.0.0.1",
    );
    let b = self_signed(certs.path(), "b", &["b.test", "*.b.test"], -1, 30);
    let access = certs.path().join("access.log");
    let p = Project::new(
        &format!(
            "  access_log: {}\n  access_log_format: json\n  tls:\n    port: {tls_port}\n    certificates:\n      - {{ cert: {}, key: {} }}\n      - {{ cert: {}, key: {}, names: [b.test, www.b.test] }}\n    redirect_http: true\n    hsts: 600\n",
            access.display(),
            a.cert.display(),
            a.key.display(),
            b.cert.display(),
            b.key.display()
        ),
        "",
    );
    p.php_worker("php", "/php", "");
    python_worker(&p, "api", "/api");
    let tq = Tq::start(p.path(), &[]);
    wait_https(&tq);
    let base = format!("https://a.test:{tls_port}");
    let resolve = format!("a.test:{tls_port}:127.0.0.1");
    let ca = a.cert.to_str().unwrap();

    // HTTP/2 and HTTP/1.1 by ALPN, verified against the certificate.
    let h2 = curl(&[
        "--http2",
        "--cacert",
        ca,
        "--resolve",
        &resolve,
        "-w",
        "\n%{http_version}",
        &format!("{base}/php/echo.php?x=1"),
    ]);
    assert!(h2.ok, "{}", h2.err);
    let (body, version) = h2.out.rsplit_once('\n').unwrap();
    assert_eq!(version, "2");
    let env = json(body);
    assert_eq!(env["HTTPS"], "on", "{env}");
    assert_eq!(env["REQUEST_SCHEME"], "https");
    assert_eq!(env["SERVER_PORT"], tls_port.to_string());
    assert_eq!(env["SERVER_PROTOCOL"], "HTTP/2.0");
    let h1 = curl(&[
        "--http1.1",
        "--cacert",
        ca,
        "--resolve",
        &resolve,
        "-w",
        "\n%{http_version}",
        &format!("{base}/php/echo.php"),
    ]);
    assert!(h1.ok, "{}", h1.err);
    assert!(h1.out.ends_with("\n1.1"), "{}", h1.out);
    // A native worker hears X-Forwarded-Proto: https.
    let n = curl(&[
        "--cacert",
        ca,
        "--resolve",
        &resolve,
        &format!("{base}/api/x"),
    ]);
    assert!(n.ok, "{}", n.err);
    assert!(n.out.contains("xfp=https"), "{}", n.out);

    // SNI picks the certificate; no SNI gets the first.
    let hs = s_client(tls_port, &["-servername", "b.test"]);
    assert!(hs.ok, "{}", hs.all);
    assert!(hs.subject.contains("b.test"), "{}", hs.subject);
    let hs = s_client(tls_port, &["-servername", "www.b.test"]);
    assert!(hs.subject.contains("b.test"), "wildcard: {}", hs.subject);
    let hs = s_client(tls_port, &["-servername", "a.test"]);
    assert!(hs.subject.contains("a.test"), "{}", hs.subject);
    let hs = s_client(tls_port, &["-noservername"]);
    assert!(hs.ok, "{}", hs.all);
    assert!(hs.subject.contains("a.test"), "default: {}", hs.subject);
    // ALPN as the client offers it.
    assert_eq!(s_client(tls_port, &["-alpn", "h2,http/1.1"]).alpn, "h2");
    assert_eq!(s_client(tls_port, &["-alpn", "http/1.1"]).alpn, "http/1.1");
    assert_eq!(s_client(tls_port, &[]).alpn, "none");
    // TLS 1.3 by default, 1.2 when asked; 1.1 and 1.0 refused even when
    // the client would accept them.
    assert_eq!(s_client(tls_port, &[]).protocol, "TLSv1.3");
    let v12 = s_client(tls_port, &["-tls1_2"]);
    assert!(v12.ok && v12.protocol == "TLSv1.2", "{}", v12.all);
    // The server's cipher order, not the client's: a client preferring
    // ChaCha20 gets AES-GCM, which comes first on the server's list.
    let hs = s_client(
        tls_port,
        &[
            "-ciphersuites",
            "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256",
        ],
    );
    assert!(
        hs.all.contains("Cipher is TLS_AES_128_GCM_SHA256"),
        "{}",
        hs.all
    );
    let hs = s_client(
        tls_port,
        &[
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256",
        ],
    );
    assert!(
        hs.all.contains("Cipher is ECDHE-ECDSA-AES128-GCM-SHA256"),
        "{}",
        hs.all
    );
    for old in ["-tls1_1", "-tls1"] {
        let hs = s_client(tls_port, &[old, "-cipher", "DEFAULT@SECLEVEL=0"]);
        assert!(!hs.ok, "{old} was accepted:\n{}", hs.all);
        assert!(
            // rustls answers a hello with no version it speaks with
            // handshake_failure (40).
            hs.all.contains("alert handshake failure") || hs.all.contains("protocol version"),
            "{old}: {}",
            hs.all
        );
    }

    // HSTS on HTTPS answers only.
    let head = curl(&[
        "-sI",
        "--cacert",
        ca,
        "--resolve",
        &resolve,
        &format!("{base}/php/echo.php"),
    ]);
    assert!(
        head.out
            .to_ascii_lowercase()
            .contains("strict-transport-security: max-age=600"),
        "{}",
        head.out
    );
    // The plain port redirects, keeping path and query, without HSTS.
    let r = curl(&["-sI", &tq.url("/php/echo.php?a=1&b=2")]);
    let lower = r.out.to_ascii_lowercase();
    assert!(r.out.starts_with("HTTP/1.1 308"), "{}", r.out);
    assert!(
        lower.contains(&format!(
            "location: https://127.0.0.1:{tls_port}/php/echo.php?a=1&b=2"
        )),
        "{}",
        r.out
    );
    assert!(!lower.contains("strict-transport-security"), "{}", r.out);
    // …but not ACME's http-01 path (nothing is open: the app's 404).
    let r = curl(&["-sI", &tq.url("/.well-known/acme-challenge/abc")]);
    assert!(r.out.starts_with("HTTP/1.1 404"), "{}", r.out);
    // A Host that would change the redirect's authority is refused.
    let r = curl(&[
        "-sI",
        "-H",
        "Host: evil.example/x",
        &tq.url("/php/echo.php"),
    ]);
    assert!(r.out.starts_with("HTTP/1.1 400"), "{}", r.out);
    let r = curl(&["-sI", "-H", "Host: a@evil.example", &tq.url("/")]);
    assert!(r.out.starts_with("HTTP/1.1 400"), "{}", r.out);

    // Metrics: certificates, handshakes, protocols.
    let m = curl(&[&format!("{}/metrics", tq.admin)]).out;
    let left = metric(
        &m,
        "tqserver_tls_certificate_expiry_seconds{name=\"a.test\",source=\"files\"}",
    );
    assert!(left > 28.0 * 86400.0 && left <= 30.0 * 86400.0, "{left}");
    assert!(
        metric(
            &m,
            "tqserver_tls_certificate_expiry_seconds{name=\"b.test\",source=\"files\"}"
        ) > 0.0
    );
    assert!(metric(&m, "tqserver_tls_handshakes_total{result=\"ok\"}") >= 10.0);
    assert!(metric(&m, "tqserver_tls_handshakes_total{result=\"failed\"}") >= 2.0);
    assert!(
        metric(
            &m,
            "tqserver_http_requests_by_protocol_total{scheme=\"https\",protocol=\"h2\"}"
        ) >= 3.0
    );
    assert!(
        metric(
            &m,
            "tqserver_http_requests_by_protocol_total{scheme=\"https\",protocol=\"http/1.1\"}"
        ) >= 1.0
    );
    // The access log carries scheme and protocol.
    let until = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let text = std::fs::read_to_string(&access).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains("/php/echo.php?x=1")) {
            break json(l);
        }
        assert!(Instant::now() < until, "no access line: {text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(line["scheme"], "https", "{line}");
    assert_eq!(line["protocol"], "HTTP/2.0", "{line}");
    // The dashboard lists the certificates.
    let d = json(&curl(&[&format!("{}/api/dashboard", tq.admin)]).out);
    let names: Vec<&str> = d["tls"]["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a.test", "b.test"]);
}

#[test]
fn check_names_certificates_that_cannot_serve() {
    let certs = tempfile::tempdir().unwrap();
    let good = self_signed(certs.path(), "good", &["good.test"], -1, 30);
    let other = self_signed(certs.path(), "other", &["other.test"], -1, 30);
    let expired = self_signed(certs.path(), "old", &["old.test"], -30, -1);
    let cases = [
        (
            format!(
                "{{ cert: {}, key: {} }}",
                good.cert.display(),
                other.key.display()
            ),
            "does not match its key",
        ),
        (
            format!(
                "{{ cert: {}, key: {} }}",
                expired.cert.display(),
                expired.key.display()
            ),
            "expired on",
        ),
        (
            format!(
                "{{ cert: {}, key: {}, names: [good.test, shop.test] }}",
                good.cert.display(),
                good.key.display()
            ),
            "does not cover shop.test",
        ),
        (
            "{ cert: /nonexistent/cert.pem, key: /nonexistent/key.pem }".to_string(),
            "cannot read /nonexistent/cert.pem",
        ),
    ];
    for (entry, says) in cases {
        let p = Project::new(
            &format!(
                "  tls:\n    port: {}\n    certificates:\n      - {entry}\n",
                free_port()
            ),
            "",
        );
        let (status, out, err) = run_cli(p.path(), &["check"]);
        assert_eq!(status.code(), Some(78), "{entry}: {out}{err}");
        // The file, the line of the entry, the key, the reason.
        assert!(
            err.contains(
                "config/server.yaml:7: server.tls.certificates: server.tls.certificates[0]: "
            ),
            "{err}"
        );
        assert!(err.contains(says), "{says}: {err}");
        // And the server does not start with it.
        let (status, _, err) = run_cli(p.path(), &["--port", &free_port().to_string()]);
        assert_eq!(status.code(), Some(78), "{err}");
        assert!(err.contains(says), "{err}");
    }
    // Keys of the section are checked too.
    let p = Project::new(
        &format!(
            "  tls:\n    port: {}\n    min_version: \"1.1\"\n    internal: true\n",
            free_port()
        ),
        "",
    );
    let (status, _, err) = run_cli(p.path(), &["check"]);
    assert_eq!(status.code(), Some(78));
    assert!(
        err.contains("config/server.yaml:6: server.tls.min_version"),
        "{err}"
    );
    let p = Project::new(&format!("  tls:\n    port: {}\n", free_port()), "");
    let (status, _, err) = run_cli(p.path(), &["check"]);
    assert_eq!(status.code(), Some(78));
    assert!(err.contains("server.tls: no certificate"), "{err}");
}

/// Writes `files` to `dest` the way deploy tools do: a new file renamed
/// over the old one.
fn replace(src: &common::tls::CertFiles, dest: &common::tls::CertFiles) {
    for (from, to) in [(&src.key, &dest.key), (&src.cert, &dest.cert)] {
        let tmp = to.with_extension("new");
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    }
}

#[test]
fn certificates_replaced_under_load_fail_no_request() {
    let tls_port = free_port();
    let certs = tempfile::tempdir().unwrap();
    let live = self_signed(certs.path(), "live", &["one.test", "localhost"], -1, 30);
    let p = tls_project(tls_port, &live);
    p.php_worker("php", "/", "");
    let tq = Tq::start(p.path(), &[]);
    wait_https(&tq);
    let first = served_serial(tls_port, &[]);
    assert!(first.starts_with("serial="), "{first}");
    let url = format!("https://127.0.0.1:{tls_port}/index.php");
    // Open connections (h2load over HTTP/2, wrk over HTTP/1.1) and new
    // handshakes (a curl per request) while the files change three times,
    // once with SIGHUP.
    let h2load = std::process::Command::new("h2load")
        .args(["-D", "6", "-c", "4", "-m", "4", &url])
        .output();
    let h2load = std::thread::spawn(move || h2load);
    let wrk_url = url.clone();
    let wrk = std::thread::spawn(move || {
        std::process::Command::new("wrk")
            .args(["-t", "1", "-c", "4", "-d", "6s", &wrk_url])
            .output()
            .unwrap()
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let u = url.clone();
    let fresh = std::thread::spawn(move || {
        let (mut ok, mut failed) = (0, Vec::new());
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            let c = curl(&["-k", "-o", "/dev/null", "-w", "%{http_code}", &u]);
            if c.ok && c.out == "200" {
                ok += 1;
            } else {
                failed.push(format!("{} {}", c.out, c.err));
            }
        }
        (ok, failed)
    });
    let mut serials = vec![first];
    for i in 0..3 {
        std::thread::sleep(Duration::from_millis(1200));
        let next = self_signed(
            certs.path(),
            &format!("n{i}"),
            &["one.test", "localhost"],
            -1,
            30,
        );
        replace(&next, &live);
        if i == 2 {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(tq.pid() as i32),
                nix::sys::signal::Signal::SIGHUP,
            )
            .unwrap();
        }
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let s = served_serial(tls_port, &[]);
            if !serials.contains(&s) && s.starts_with("serial=") {
                serials.push(s);
                break;
            }
            assert!(
                Instant::now() < until,
                "certificate {i} never served:\n{}",
                tq.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let h2 = h2load.join().unwrap().expect("h2load");
    let h2 = String::from_utf8_lossy(&h2.stdout).into_owned();
    let w = wrk.join().unwrap();
    let w = String::from_utf8_lossy(&w.stdout).into_owned();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = fresh.join().unwrap();
    assert_eq!(serials.len(), 4, "{serials:?}");
    // h2load: "requests: N total, N started, N done, N succeeded, 0 failed, 0 errored"
    let line = h2
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_else(|| panic!("{h2}"));
    assert!(line.contains(" 0 failed, 0 errored"), "{h2}");
    let done: u64 = line
        .split(", ")
        .find_map(|f| f.strip_suffix(" succeeded")?.parse().ok())
        .unwrap();
    assert!(done > 100, "{h2}");
    assert!(
        !w.contains("Socket errors") && !w.contains("Non-2xx"),
        "{w}"
    );
    assert!(w.contains("requests in"), "{w}");
    assert!(failed.is_empty() && ok > 10, "{ok} ok, failed: {failed:?}");
    assert!(
        tq.log_text().contains("certificate files changed"),
        "{}",
        tq.log_text()
    );
}

#[test]
fn a_bad_replacement_keeps_the_old_certificate() {
    let tls_port = free_port();
    let certs = tempfile::tempdir().unwrap();
    let live = self_signed(certs.path(), "live", &["localhost"], -1, 30);
    let other = self_signed(certs.path(), "other", &["localhost"], -1, 30);
    let p = tls_project(tls_port, &live);
    p.php_worker("php", "/", "");
    let tq = Tq::start(p.path(), &[]);
    wait_https(&tq);
    let before = served_serial(tls_port, &[]);
    // A certificate whose key is not there: refused, the old one serves.
    std::fs::copy(&other.cert, &live.cert).unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while !tq.log_text().contains("cannot be used") {
        assert!(Instant::now() < until, "{}", tq.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        tq.log_text().contains("does not match its key"),
        "{}",
        tq.log_text()
    );
    assert_eq!(served_serial(tls_port, &[]), before);
    let r = curl(&[
        "-k",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("https://127.0.0.1:{tls_port}/index.php"),
    ]);
    assert_eq!(r.out, "200", "{}", r.err);
    // A reload with the bad file is refused as a whole.
    let (status, out, err) = run_cli(
        p.path(),
        &[
            "reload",
            "--admin-listen",
            tq.admin.trim_start_matches("http://"),
        ],
    );
    assert_eq!(status.code(), Some(78), "{out}{err}");
    assert!(
        format!("{out}{err}").contains("does not match its key"),
        "{out}{err}"
    );
}

#[test]
fn the_internal_ca_issues_a_certificate_clients_can_trust() {
    use std::os::unix::fs::PermissionsExt as _;
    let tls_port = free_port();
    let p = Project::new(
        &format!(
            "  tls:\n    port: {tls_port}\n    internal: [app.test]\n    storage: state/tls\n"
        ),
        "",
    );
    p.php_worker("php", "/", "");
    let serial;
    {
        let tq = Tq::start(p.path(), &[]);
        wait_https(&tq);
        let ca = p.path().join("state/tls/internal/ca.pem");
        // The log says where the CA is, so it can be trusted.
        assert!(
            tq.log_text().contains(&ca.display().to_string()),
            "{}",
            tq.log_text()
        );
        for (host, resolve) in [
            ("localhost", format!("localhost:{tls_port}:127.0.0.1")),
            ("app.test", format!("app.test:{tls_port}:127.0.0.1")),
        ] {
            let r = curl(&[
                "--cacert",
                ca.to_str().unwrap(),
                "--resolve",
                &resolve,
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("https://{host}:{tls_port}/index.php"),
            ]);
            assert!(r.ok && r.out == "200", "{host}: {} {}", r.out, r.err);
        }
        // Not trusted without the CA: a real verification happened.
        let r = curl(&[&format!("https://127.0.0.1:{tls_port}/index.php")]);
        assert!(!r.ok, "{}", r.out);
        let mode = |rel: &str| {
            std::fs::metadata(p.path().join(rel))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("state/tls"), 0o700);
        assert_eq!(mode("state/tls/internal"), 0o700);
        assert_eq!(mode("state/tls/internal/ca.key"), 0o600);
        assert_eq!(mode("state/tls/internal/localhost.key"), 0o600);
        serial = served_serial(tls_port, &[]);
        let m = curl(&[&format!("{}/metrics", tq.admin)]).out;
        assert!(
            metric(
                &m,
                "tqserver_tls_certificate_expiry_seconds{name=\"localhost\",source=\"internal\"}"
            ) > 29.0 * 86400.0
        );
    }
    // The next start serves the same certificate from the same CA.
    let tq = Tq::start(p.path(), &[]);
    wait_https(&tq);
    assert_eq!(served_serial(tls_port, &[]), serial);
    assert!(
        !tq.log_text().contains("made a local certificate authority"),
        "{}",
        tq.log_text()
    );
}

#[test]
fn a_stop_lets_an_http2_request_over_tls_finish() {
    let tls_port = free_port();
    let certs = tempfile::tempdir().unwrap();
    let c = self_signed(certs.path(), "c", &["localhost"], -1, 30);
    let p = tls_project(tls_port, &c);
    p.php_worker("php", "/", "");
    let mut tq = Tq::start(p.path(), &[]);
    wait_https(&tq);
    let url = format!("https://127.0.0.1:{tls_port}/sleep.php?ms=1500");
    let slow = std::thread::spawn(move || {
        curl(&["-k", "--http2", "-w", " %{http_code} %{http_version}", &url])
    });
    // The request is in PHP's hands when the access log has not got it
    // yet but php-fpm's pool is busy: wait for the connection instead.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let m = curl(&[&format!("{}/metrics", tq.admin)]).out;
        if m.lines()
            .any(|l| l.starts_with("tqserver_http_requests_in_flight{") && !l.ends_with(" 0"))
        {
            break;
        }
        assert!(Instant::now() < until, "the request never arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tq.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let r = slow.join().unwrap();
    assert!(r.ok, "{}", r.err);
    assert_eq!(r.out, "slept 200 2", "{}", r.err);
    assert!(
        tq.wait_exit(15).is_some_and(|s| s.success()),
        "{}",
        tq.log_text()
    );
    // Closed: no new handshakes.
    let r = curl(&["-k", &format!("https://127.0.0.1:{tls_port}/")]);
    assert!(!r.ok);
}

/// What `openssl s_client -ign_eof` says when it sends `input` after the
/// handshake and then reads until the server closes.
fn s_client_sending(port: u16, alpn: &str, input: &[u8]) -> String {
    use std::io::Write as _;
    let mut child = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-alpn", alpn, "-ign_eof", "-quiet"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let until = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            panic!("the server never closed the connection");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_connection_the_server_gives_up_on_ends_with_close_notify() {
    let tls_port = free_port();
    let certs = tempfile::tempdir().unwrap();
    let c = self_signed(certs.path(), "c", &["localhost"], -1, 30);
    let p = tls_project(tls_port, &c);
    let tq = Tq::start(p.path(), &[]);
    wait_https(&tq);
    // No HTTP/2 preface: hyper gives the connection up. Without a
    // close_notify, OpenSSL 3 reports the close as a truncation.
    for (alpn, input) in [
        ("h2", &b"not a preface\n"[..]),
        ("http/1.1", &b"GARBAGE\r\n\r\n"[..]),
    ] {
        let said = s_client_sending(tls_port, alpn, input);
        assert!(
            !said.contains("unexpected eof"),
            "{alpn}: closed without close_notify:\n{said}"
        );
    }
}

/// An HTTP/2 frame: type, flags, stream, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = u32::try_from(payload.len()).unwrap().to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

/// Sends `frames` after the client preface over TLS (`openssl s_client
/// -alpn h2`, which writes what it is given and prints what it gets), and
/// returns the server's frames as (type, payload) once it has closed the
/// connection; panics when it keeps it open for 20 s.
fn h2_over_tls(port: u16, frames: Vec<u8>) -> Vec<(u8, Vec<u8>)> {
    use std::io::{Read as _, Write as _};
    let mut child = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-alpn", "h2", "-quiet", "-ign_eof"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let mut all = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        all.extend(h2_frame(4, 0, 0, &[]));
        all.extend(frames);
        // The server may close before it has read everything.
        let _ = stdin.write_all(&all);
    });
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let until = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            panic!("the server kept the connection open");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    writer.join().unwrap();
    let out = reader.join().unwrap();
    let mut frames = Vec::new();
    let mut i = 0;
    while i + 9 <= out.len() {
        let len =
            usize::from(out[i]) << 16 | usize::from(out[i + 1]) << 8 | usize::from(out[i + 2]);
        let end = (i + 9 + len).min(out.len());
        frames.push((out[i + 3], out[i + 9..end].to_vec()));
        i += 9 + len;
    }
    frames
}

/// The error code of the GOAWAY among `frames`.
fn goaway_code(frames: &[(u8, Vec<u8>)]) -> Option<u32> {
    frames
        .iter()
        .find(|(kind, p)| *kind == 7 && p.len() >= 8)
        .map(|(_, p)| u32::from_be_bytes([p[4], p[5], p[6], p[7]]))
}

#[test]
fn http2_over_tls_keeps_the_h2c_limits() {
    const ENHANCE_YOUR_CALM: u32 = 0xb;
    let tls_port = free_port();
    let certs = tempfile::tempdir().unwrap();
    let c = self_signed(certs.path(), "c", &["localhost"], -1, 30);
    let p = tls_project(tls_port, &c);
    p.php_worker("php", "/", "");
    let tq = Tq::start(p.path(), &[]);
    wait_https(&tq);
    // GET / on HPACK's static table: :method GET, :scheme https, :path /,
    // :authority localhost.
    let mut get = vec![0x82, 0x87, 0x84, 0x41, 9];
    get.extend(b"localhost");
    // Rapid reset (CVE-2023-44487): 2,000 requests, each cancelled at once.
    let mut frames = Vec::new();
    for i in 0..2000u32 {
        let stream = 2 * i + 1;
        frames.extend(h2_frame(1, 0x5, stream, &get));
        frames.extend(h2_frame(3, 0, stream, &8u32.to_be_bytes()));
    }
    // h2_over_tls returns only once the server has closed the connection
    // (without the limit it would stay open, idle). Its GOAWAY may be
    // lost to the reset of a close with unread input; when it arrives it
    // says why.
    let got = h2_over_tls(tls_port, frames);
    let code = goaway_code(&got);
    assert!(code.is_none() || code == Some(ENHANCE_YOUR_CALM), "{got:?}");
    // CONTINUATION flood (CVE-2024-27316 and kin): a header block that
    // never ends, 11 MB of it.
    let mut block = Vec::new();
    for i in 0..140 {
        let name = format!("x-a{i:03}");
        block.extend([0x00, name.len() as u8]);
        block.extend(name.as_bytes());
        block.push(100);
        block.extend([b'v'; 100]);
    }
    let mut frames = h2_frame(1, 0x1, 1, &get);
    for _ in 0..700 {
        frames.extend(h2_frame(9, 0, 1, &block));
    }
    // Closed (without the limit the server would wait for the block's
    // end until the read timeout, 30 s, past h2_over_tls's 20).
    let got = h2_over_tls(tls_port, frames);
    let code = goaway_code(&got);
    assert!(code.is_none() || code == Some(ENHANCE_YOUR_CALM), "{got:?}");
    // The port still serves.
    let r = curl(&[
        "-k",
        "--http2",
        "-w",
        " %{http_version}",
        &format!("https://127.0.0.1:{tls_port}/hello.php"),
    ]);
    assert!(r.ok && r.out.ends_with(" 2"), "{}", r.err);
}
