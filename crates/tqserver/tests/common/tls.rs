//! HTTPS helpers: certificates made for a test (rcgen, or openssl's own
//! command), and the real clients — curl and `openssl s_client` — run
//! against the TLS port.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A certificate and key written as PEM files.
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A self-signed ECDSA P-256 certificate for `names`, valid from
/// `from_days` to `to_days` relative to now (negative: in the past),
/// written as `{dir}/{stem}.pem` and `.key`.
pub fn self_signed(
    dir: &Path,
    stem: &str,
    names: &[&str],
    from_days: i64,
    to_days: i64,
) -> CertFiles {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, names[0]);
    params.distinguished_name = dn;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(from_days);
    params.not_after = now + time::Duration::days(to_days);
    let cert = params.self_signed(&key).unwrap();
    let files = CertFiles {
        cert: dir.join(format!("{stem}.pem")),
        key: dir.join(format!("{stem}.key")),
    };
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    files
}

/// A certificate made by `openssl req` (ECDSA P-256), for `cn` and the
/// subjectAltName list `san` (`DNS:a.test,IP:127.0.0.1`).
pub fn openssl_cert(dir: &Path, stem: &str, cn: &str, san: &str) -> CertFiles {
    let files = CertFiles {
        cert: dir.join(format!("{stem}.pem")),
        key: dir.join(format!("{stem}.key")),
    };
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(&files.key)
        .arg("-out")
        .arg(&files.cert)
        .args(["-days", "30", "-subj", &format!("/CN={cn}"), "-addext"])
        .arg(format!("subjectAltName={san}"))
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    files
}

/// What curl said: exit status, stdout, stderr.
pub struct Curl {
    pub ok: bool,
    pub out: String,
    pub err: String,
}

/// Runs curl with `args` (10 s at most).
pub fn curl(args: &[&str]) -> Curl {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl");
    Curl {
        ok: out.status.success(),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// What a `openssl s_client` handshake showed.
pub struct Handshake {
    /// It completed.
    pub ok: bool,
    /// The server certificate's subject line (`subject=CN = a.test`).
    pub subject: String,
    /// `ALPN protocol: h2`, or `No ALPN negotiated`.
    pub alpn: String,
    /// `TLSv1.3`…
    pub protocol: String,
    /// Everything, for failure messages.
    pub all: String,
}

/// `openssl s_client` to 127.0.0.1:`port` with `args` (e.g.
/// `-servername b.test`, `-alpn h2`, `-tls1_1`).
pub fn s_client(port: u16, args: &[&str]) -> Handshake {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl s_client");
    let all = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |p: &str| {
        all.lines()
            .find(|l| l.trim_start().starts_with(p))
            .unwrap_or("")
            .trim()
            .to_string()
    };
    // "New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384"
    let protocol = line("New, ").split(", ").nth(1).unwrap_or("").to_string();
    Handshake {
        ok: out.status.success() && all.contains("Cipher is") && !all.contains("Cipher is (NONE)"),
        subject: line("subject="),
        alpn: if all.contains("No ALPN negotiated") {
            "none".into()
        } else {
            line("ALPN protocol:")
                .trim_start_matches("ALPN protocol:")
                .trim()
                .to_string()
        },
        protocol,
        all,
    }
}

/// The value of `series` in a metrics page (a missing series fails).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

/// The leaf's serial number as openssl prints it, from a handshake with
/// `args`.
pub fn served_serial(port: u16, args: &[&str]) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} {} </dev/null 2>/dev/null | openssl x509 -noout -serial",
            args.join(" ")
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
