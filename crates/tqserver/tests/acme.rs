//! Automatic certificates against Debian's `pebble` (the Let's Encrypt
//! test server) on loopback, with a CA the test makes for Pebble's own
//! HTTPS and a mock DNS that sends every name to 127.0.0.1: a certificate
//! obtained with tls-alpn-01 and with http-01, served (verified by curl
//! against Pebble's root), renewed from a short-lived certificate, the
//! storage reused at the next start without an order, failed attempts
//! retried while the old certificate serves, and the replicas' lock.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::pebble::Pebble;
use common::tls::{curl, metric, self_signed, served_serial};
use common::{Project, Tq, free_port};

fn project(
    tls_port: u16,
    storage: &Path,
    pebble: &Pebble,
    acme_extra: &str,
    tls_extra: &str,
) -> Project {
    let p = Project::new(
        &format!(
            "  tls:\n    port: {tls_port}\n    storage: {}\n{tls_extra}    acme:\n      email: ops@example.test\n      directory: {}\n      directory_ca: {}\n{acme_extra}",
            storage.display(),
            pebble.directory,
            pebble.ca.display()
        ),
        "",
    );
    p.php_worker("php", "/", "");
    p
}

fn start(p: &Project, port: u16) -> Tq {
    let tq = Tq::start_file_port(
        p.path(),
        port,
        &["--port", &port.to_string(), "--host", "127.0.0.1"],
    );
    wait_log(&tq, "listening on https://", 30);
    tq
}

fn wait_log(tq: &Tq, needle: &str, secs: u64) {
    wait_count(tq, needle, 1, secs);
}

/// Waits until the log says `needle` `n` times.
fn wait_count(tq: &Tq, needle: &str, n: usize, secs: u64) {
    let until = Instant::now() + Duration::from_secs(secs);
    while tq.log_text().matches(needle).count() < n {
        assert!(
            Instant::now() < until,
            "the log never said {needle:?} {n}×:\n{}",
            tq.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A request to `name` over HTTPS, verified against `root`: the status.
fn get_verified(name: &str, tls_port: u16, root: &Path) -> String {
    let r = curl(&[
        "--cacert",
        root.to_str().unwrap(),
        "--resolve",
        &format!("{name}:{tls_port}:127.0.0.1"),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("https://{name}:{tls_port}/index.php"),
    ]);
    assert!(r.ok, "{name}: {}", r.err);
    r.out
}

fn metrics(tq: &Tq) -> String {
    curl(&[&format!("{}/metrics", tq.admin)]).out
}

#[test]
fn tls_alpn_01_obtains_renews_and_reuses_the_storage() {
    use std::os::unix::fs::PermissionsExt as _;
    let (port, tls_port) = (free_port(), free_port());
    // 40 s certificates: renewal is due with a third left (~27 s).
    let pebble = Pebble::start(port, tls_port, 40);
    let state = tempfile::tempdir().unwrap();
    let storage = state.path().join("tls");
    let p = project(
        tls_port,
        &storage,
        &pebble,
        "      domains: [a.acme.test, www.a.acme.test]\n      challenge: tls-alpn-01\n",
        "",
    );
    let serial;
    {
        let tq = start(&p, port);
        wait_log(
            &tq,
            "ACME: certificate for a.acme.test, www.a.acme.test obtained",
            30,
        );
        let root = pebble.root();
        assert_eq!(get_verified("a.acme.test", tls_port, &root), "200");
        assert_eq!(get_verified("www.a.acme.test", tls_port, &root), "200");
        serial = served_serial(tls_port, &["-servername", "a.acme.test"]);
        let m = metrics(&tq);
        assert_eq!(
            metric(&m, "tqserver_tls_acme_attempts_total{result=\"success\"}"),
            1.0
        );
        // Validated over acme-tls/1 on the TLS port (Pebble checks from
        // three perspectives).
        assert!(
            metric(
                &m,
                "tqserver_tls_handshakes_total{result=\"acme_challenge\"}"
            ) >= 2.0
        );
        let left = metric(
            &m,
            "tqserver_tls_certificate_expiry_seconds{name=\"a.acme.test\",source=\"acme\"}",
        );
        assert!(left > 0.0 && left <= 40.0, "{left}");
        // Stored: account and certificate, 0600 files in 0700 folders.
        let d = pebble.storage_dir(&storage);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        for f in [
            "account.json",
            "a.acme.test/cert.pem",
            "a.acme.test/key.pem",
        ] {
            assert_eq!(mode(&d.join(f)), 0o600, "{f}");
        }
        for dir in [&storage, &storage.join("acme"), &d, &d.join("a.acme.test")] {
            assert_eq!(mode(dir), 0o700, "{}", dir.display());
        }
        // The dashboard shows the attempt.
        let dash: serde_json::Value =
            serde_json::from_str(&curl(&[&format!("{}/api/dashboard", tq.admin)]).out).unwrap();
        let attempts = dash["tls"]["acme"]["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "{dash}");
        assert_eq!(attempts[0][1], true);
    }
    assert_eq!(pebble.orders(), 1, "{}", pebble.log());
    // The next start serves the stored certificate: no new order…
    let tq = start(&p, port);
    assert_eq!(
        served_serial(tls_port, &["-servername", "a.acme.test"]),
        serial
    );
    assert!(
        !tq.log_text().contains("ACME: obtaining"),
        "{}",
        tq.log_text()
    );
    assert_eq!(pebble.orders(), 1, "{}", pebble.log());
    // …until renewal is due; then a new one, served without a restart.
    wait_log(&tq, "ACME: renewing a certificate for a.acme.test", 40);
    wait_log(
        &tq,
        "ACME: certificate for a.acme.test, www.a.acme.test obtained",
        30,
    );
    let renewed = served_serial(tls_port, &["-servername", "a.acme.test"]);
    assert_ne!(renewed, serial);
    assert_eq!(pebble.orders(), 2);
    assert_eq!(get_verified("a.acme.test", tls_port, &pebble.root()), "200");
    assert_eq!(
        metric(
            &metrics(&tq),
            "tqserver_tls_acme_attempts_total{result=\"success\"}"
        ),
        1.0
    );
}

#[test]
fn http_01_behind_the_redirect_and_one_replica_orders() {
    let (port, tls_port) = (free_port(), free_port());
    let pebble = Pebble::start(port, tls_port, 3600);
    let state = tempfile::tempdir().unwrap();
    let storage = state.path().join("tls");
    let p = project(
        tls_port,
        &storage,
        &pebble,
        "      domains: [b.acme.test]\n      challenge: http-01\n",
        "    redirect_http: true\n",
    );
    // Another replica holds the lock (flock(1) on the same file): this
    // one waits and orders nothing until it is released.
    let d = pebble.storage_dir(&storage);
    std::fs::create_dir_all(&d).unwrap();
    let mut holder = std::process::Command::new("flock")
        .arg(d.join("lock"))
        .args(["sleep", "3"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let tq = start(&p, port);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !tq.log_text().contains("ACME: obtaining"),
        "{}",
        tq.log_text()
    );
    assert_eq!(pebble.orders(), 0);
    holder.wait().unwrap();
    wait_log(&tq, "ACME: certificate for b.acme.test obtained", 30);
    assert!(
        pebble.log().contains("validate w/ HTTP"),
        "{}",
        pebble.log()
    );
    assert_eq!(get_verified("b.acme.test", tls_port, &pebble.root()), "200");
    // Other requests on the plain port are still redirected.
    let r = curl(&["-sI", "-H", "Host: b.acme.test", &tq.url("/index.php")]);
    assert!(r.out.starts_with("HTTP/1.1 308"), "{}", r.out);
    let serial = served_serial(tls_port, &["-servername", "b.acme.test"]);
    // A second replica on the same storage finds the certificate.
    let tls2 = free_port();
    let port2 = free_port();
    let p2 = project(
        tls2,
        &storage,
        &pebble,
        "      domains: [b.acme.test]\n      challenge: http-01\n",
        "",
    );
    let tq2 = start(&p2, port2);
    assert_eq!(served_serial(tls2, &["-servername", "b.acme.test"]), serial);
    assert!(
        !tq2.log_text().contains("ACME: obtaining"),
        "{}",
        tq2.log_text()
    );
    assert_eq!(pebble.orders(), 1);
}

#[test]
fn failed_attempts_are_retried_while_the_old_certificate_serves() {
    let (port, tls_port) = (free_port(), free_port());
    let mut pebble = Pebble::start(port, tls_port, 30);
    let state = tempfile::tempdir().unwrap();
    let storage = state.path().join("tls");
    // Renewal is due a second into the certificate's 30 s life
    // (renew_before 29s); attempts are retried after 1 s, 2 s, 4 s
    // (check_interval 1s).
    let p = project(
        tls_port,
        &storage,
        &pebble,
        "      domains: [c.acme.test]\n      renew_before: 29s\n      check_interval: 1s\n",
        "",
    );
    let tq = start(&p, port);
    wait_log(&tq, "ACME: certificate for c.acme.test obtained", 30);
    let serial = served_serial(tls_port, &["-servername", "c.acme.test"]);
    pebble.kill();
    wait_count(&tq, "next try in", 2, 30);
    // Still serving the certificate it has.
    assert_eq!(
        served_serial(tls_port, &["-servername", "c.acme.test"]),
        serial
    );
    assert!(
        tq.log_text()
            .contains("still serving the current certificate"),
        "{}",
        tq.log_text()
    );
    let m = metrics(&tq);
    assert!(metric(&m, "tqserver_tls_acme_attempts_total{result=\"failure\"}") >= 2.0);
    // The directory is back: the next attempt succeeds.
    pebble.restart();
    wait_count(&tq, "ACME: certificate for c.acme.test obtained", 2, 40);
    let m = metrics(&tq);
    assert!(metric(&m, "tqserver_tls_acme_attempts_total{result=\"success\"}") >= 2.0);
    // The new Pebble knows no account: a new one was registered.
    assert!(
        tq.log_text().contains("does not know the stored account"),
        "{}",
        tq.log_text()
    );
}

/// Replica X answers the directory's checks for an order replica Y
/// placed, from the storage they share (Pebble only knows X's ports: the
/// order succeeds only if X answers), for both challenges; then X serves
/// the certificate Y obtained, without ordering one itself.
#[test]
fn a_replica_answers_the_challenges_another_one_opened() {
    for challenge in ["http-01", "tls-alpn-01"] {
        let (x_port, x_tls) = (free_port(), free_port());
        let pebble = Pebble::start(x_port, x_tls, 3600);
        let state = tempfile::tempdir().unwrap();
        let storage = state.path().join("tls");
        let domain = format!("shared-{challenge}.acme.test");
        // A certificate in the storage already, 19 days from renewal for
        // X (a third of its 31 days left); Y renews with 30 days left:
        // now.
        let d = pebble.storage_dir(&storage).join(&domain);
        std::fs::create_dir_all(&d).unwrap();
        let seeded = self_signed(&d, "seed", &[&domain], -1, 30);
        std::fs::rename(&seeded.cert, d.join("cert.pem")).unwrap();
        std::fs::rename(&seeded.key, d.join("key.pem")).unwrap();
        let x = project(
            x_tls,
            &storage,
            &pebble,
            &format!(
                "      domains: [{domain}]\n      challenge: {challenge}\n      check_interval: 1s\n"
            ),
            "",
        );
        let tx = start(&x, x_port);
        let before = served_serial(x_tls, &["-servername", &domain]);
        let (y_port, y_tls) = (free_port(), free_port());
        let y = project(
            y_tls,
            &storage,
            &pebble,
            &format!(
                "      domains: [{domain}]\n      challenge: {challenge}\n      renew_before: 30d\n"
            ),
            "",
        );
        let ty = start(&y, y_port);
        wait_log(&ty, &format!("ACME: certificate for {domain} obtained"), 30);
        assert_eq!(pebble.orders(), 1, "{challenge}");
        assert!(
            !tx.log_text().contains("ACME: renewing"),
            "{}",
            tx.log_text()
        );
        if challenge == "tls-alpn-01" {
            let m = metrics(&tx);
            assert!(
                metric(
                    &m,
                    "tqserver_tls_handshakes_total{result=\"acme_challenge\"}"
                ) >= 1.0
            );
            let m = metrics(&ty);
            assert_eq!(
                metric(
                    &m,
                    "tqserver_tls_handshakes_total{result=\"acme_challenge\"}"
                ),
                0.0
            );
        }
        // X takes Y's certificate from the storage at its next look.
        let until = Instant::now() + Duration::from_secs(10);
        while served_serial(x_tls, &["-servername", &domain]) == before {
            assert!(
                Instant::now() < until,
                "X kept the old certificate:\n{}",
                tx.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(get_verified(&domain, x_tls, &pebble.root()), "200");
        // The shared answers are gone.
        let open: Vec<_> = walk(&pebble.storage_dir(&storage).join("challenges"));
        assert!(open.is_empty(), "{open:?}");
    }
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}
