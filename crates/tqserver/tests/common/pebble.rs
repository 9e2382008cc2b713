//! Debian's `pebble` (Let's Encrypt's ACME test server) on loopback for a
//! test: its own TLS certificate from a CA the test makes, a mock DNS
//! (`pebble-challtestsrv`) that answers every name with 127.0.0.1, and
//! validation sent to the ports TQServer listens on. Both processes are
//! ended by PID when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// A running Pebble.
pub struct Pebble {
    pebble: Option<Child>,
    dns: Child,
    pub dir: tempfile::TempDir,
    /// The directory URL.
    pub directory: String,
    /// The CA of Pebble's own HTTPS (for `acme.directory_ca`).
    pub ca: PathBuf,
    port: u16,
    mgmt: u16,
    dns_port: u16,
    http_port: u16,
    tls_port: u16,
    validity: u64,
}

impl Pebble {
    /// Pebble validating http-01 on `http_port` and tls-alpn-01 on
    /// `tls_port`, issuing certificates valid for `validity` seconds.
    pub fn start(http_port: u16, tls_port: u16, validity: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // The test's CA, and Pebble's certificate from it.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "TQServer test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        let dns_port = free_port();
        let dns = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{}", free_port())])
            .args(["-defaultIPv6", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv (Debian package pebble)");
        let (port, mgmt) = (free_port(), free_port());
        let mut p = Self {
            pebble: None,
            dns,
            directory: format!("https://127.0.0.1:{port}/dir"),
            ca,
            dir,
            port,
            mgmt,
            dns_port,
            http_port,
            tls_port,
            validity,
        };
        p.launch();
        p
    }

    fn launch(&mut self) {
        let cfg = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{}", self.port),
            "managementListenAddress": format!("127.0.0.1:{}", self.mgmt),
            "certificate": self.dir.path().join("cert.pem"),
            "privateKey": self.dir.path().join("key.pem"),
            "httpPort": self.http_port,
            "tlsPort": self.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": self.validity,
        }});
        let file = self.dir.path().join("pebble.json");
        std::fs::write(&file, cfg.to_string()).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .unwrap();
        let child = Command::new("pebble")
            .arg("-config")
            .arg(&file)
            .args(["-dnsserver", &format!("127.0.0.1:{}", self.dns_port)])
            // No random sleeps before validating, every nonce good, every
            // order validated afresh.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("pebble (Debian package pebble)");
        self.pebble = Some(child);
        let until = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < until,
                "pebble did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("pebble.log")
    }

    /// What Pebble logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    /// Orders Pebble has issued a certificate for.
    pub fn issued(&self) -> usize {
        self.log().matches("Issued certificate serial").count()
    }

    /// Orders Pebble has received.
    pub fn orders(&self) -> usize {
        self.log().matches("POST /order-plz").count()
    }

    /// The root that signs what Pebble issues (PEM), for clients.
    pub fn root(&self) -> PathBuf {
        let out = Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(&self.ca)
            .arg(format!("https://127.0.0.1:{}/roots/0", self.mgmt))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = self.dir.path().join(format!("root-{}.pem", self.roots()));
        std::fs::write(&path, &out.stdout).unwrap();
        path
    }

    fn roots(&self) -> usize {
        self.log().matches("Generated new root issuer").count()
    }

    /// Ends Pebble (the DNS stays): the directory is unreachable.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.pebble.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts Pebble again on the same address (a new root: Pebble keeps
    /// nothing).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// The folder ACME keeps this directory's files in, under `storage`.
    pub fn storage_dir(&self, storage: &Path) -> PathBuf {
        storage
            .join("acme")
            .join(format!("127.0.0.1_{}_dir", self.port))
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.kill();
        let _ = self.dns.kill();
        let _ = self.dns.wait();
    }
}
