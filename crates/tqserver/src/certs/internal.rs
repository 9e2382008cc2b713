//! `server.tls.internal`: a certificate authority of TQServer's own, for
//! development (as Caddy's internal issuer). The CA (ECDSA P-256, ten
//! years) is made once in `{storage}/internal/` and kept; it issues a
//! certificate for localhost, 127.0.0.1, ::1 and the configured names,
//! valid for [`LEAF_DAYS`] and issued again when a third of that is left
//! or the names change. Trust `ca.pem` once (the start-up log says how)
//! and browsers accept every certificate it issues.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use super::certificate::{Loaded, Source};
use super::storage;

/// How long an issued certificate is valid.
pub const LEAF_DAYS: i64 = 30;
/// How long the CA is valid.
const CA_YEARS: i64 = 10;

/// The names every internal certificate covers.
pub const LOCAL_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The files of the local CA under `storage`.
pub fn ca_file(storage: &Path) -> PathBuf {
    storage.join("internal").join("ca.pem")
}

/// The certificate for `names` (plus [`LOCAL_NAMES`]): the stored one if
/// it still covers them with more than a third of its life left, else a
/// new one from the CA (made first if there is none).
pub fn certificate(storage: &Path, names: &[String]) -> Result<Loaded, String> {
    let dir = storage.join("internal");
    let all = all_names(names);
    let (leaf_pem, leaf_key) = (dir.join("localhost.pem"), dir.join("localhost.key"));
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    if let (Some(c), Some(k)) = (
        storage::read(&leaf_pem).map_err(|e| io(&leaf_pem, e))?,
        storage::read(&leaf_key).map_err(|e| io(&leaf_key, e))?,
    ) {
        if let Ok(l) = Loaded::from_pem(&c, &k, Source::Internal) {
            let now = SystemTime::now();
            if all.iter().all(|n| l.covers_exactly(n)) && l.remaining(now) > l.lifetime() / 3 {
                return Ok(l);
            }
        }
    }
    let (ca_pem, ca_key) = ca(&dir)?;
    let (chain, key_pem) = issue(&ca_pem, &ca_key, &all, LEAF_DAYS)?;
    storage::write_private(&leaf_key, key_pem.as_bytes()).map_err(|e| io(&leaf_key, e))?;
    storage::write_private(&leaf_pem, chain.as_bytes()).map_err(|e| io(&leaf_pem, e))?;
    Loaded::from_pem(chain.as_bytes(), key_pem.as_bytes(), Source::Internal)
        .map_err(|e| e.to_string())
}

/// A server certificate for `names` (the first is its common name), from
/// the CA `ca_pem` / `ca_key`, valid for `days`: its chain (leaf, then the
/// CA) and its key, as PEM. Also what the egress proxy's HTTPS inspection
/// mints per host.
pub fn issue(
    ca_pem: &str,
    ca_key: &str,
    names: &[String],
    days: i64,
) -> Result<(String, String), String> {
    let ca_key = KeyPair::from_pem(ca_key).map_err(|e| format!("the CA's key: {e}"))?;
    let issuer = Issuer::from_ca_cert_pem(ca_pem, ca_key)
        .map_err(|e| format!("the CA's certificate: {e}"))?;
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(|e| e.to_string())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    // An hour back: a client whose clock is a little behind still accepts it.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| format!("cannot issue a certificate for {}: {e}", names.join(", ")))?;
    Ok((format!("{}{}", cert.pem(), ca_pem), key.serialize_pem()))
}

/// The CA's certificate and key (PEM), made and stored if missing.
fn ca(dir: &Path) -> Result<(String, String), String> {
    let made = ca_files(
        &dir.join("ca.pem"),
        &dir.join("ca.key"),
        Some(CaHome::Storage),
        "TQServer local CA",
    )?;
    if made.1 {
        tracing::info!(
            "made a local certificate authority for server.tls.internal: {}",
            dir.join("ca.pem").display()
        );
    }
    Ok(made.0)
}

/// Where a CA that [`ca_files`] makes is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaHome {
    /// TQServer's storage: a 0700 folder, both files 0600.
    Storage,
    /// A folder of the user's, left as it is: the key 0600, the
    /// certificate 0644 (for clients to read).
    Outside,
}

/// A CA's certificate and key (PEM) from `pem` and `key`; when both are
/// missing and `make` says where, a new one (ECDSA P-256, ten years,
/// named `what` and this host) is written there first. The flag says it
/// was made.
pub fn ca_files(
    pem: &Path,
    key: &Path,
    make: Option<CaHome>,
    what: &str,
) -> Result<((String, String), bool), String> {
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    match (
        storage::read(pem).map_err(|e| io(pem, e))?,
        storage::read(key).map_err(|e| io(key, e))?,
    ) {
        (Some(c), Some(k)) => {
            let text = |b: Vec<u8>, p: &Path| {
                String::from_utf8(b).map_err(|_| format!("{}: not PEM text", p.display()))
            };
            return Ok(((text(c, pem)?, text(k, key)?), false));
        }
        (None, None) if make.is_some() => {}
        (c, _) => {
            let missing = if c.is_none() { pem } else { key };
            return Err(format!("{} does not exist", missing.display()));
        }
    }
    let ca_key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    let mut dn = DistinguishedName::new();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    dn.push(DnType::OrganizationName, what);
    dn.push(DnType::CommonName, format!("{what} ({host})"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(365 * CA_YEARS);
    let cert = params
        .self_signed(&ca_key)
        .map_err(|e| format!("cannot make the CA {what}: {e}"))?;
    let (c, k) = (cert.pem(), ca_key.serialize_pem());
    if make == Some(CaHome::Storage) {
        storage::write_private(key, k.as_bytes()).map_err(|e| io(key, e))?;
        storage::write_private(pem, c.as_bytes()).map_err(|e| io(pem, e))?;
    } else {
        storage::write_outside(key, k.as_bytes(), 0o600).map_err(|e| io(key, e))?;
        storage::write_outside(pem, c.as_bytes(), 0o644).map_err(|e| io(pem, e))?;
    }
    Ok(((c, k), true))
}

/// [`LOCAL_NAMES`] then `extra`, lower case, without repeats.
fn all_names(extra: &[String]) -> Vec<String> {
    let mut all: Vec<String> = LOCAL_NAMES.iter().map(|s| s.to_string()).collect();
    for n in extra {
        let n = n.to_ascii_lowercase();
        if !all.contains(&n) {
            all.push(n);
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_ca_issues_and_the_certificate_is_reused() {
        let t = tempfile::tempdir().unwrap();
        let a = certificate(t.path(), &["app.test".into()]).unwrap();
        assert!(a.covers("localhost") && a.covers("127.0.0.1") && a.covers("app.test"));
        let ca1 = std::fs::read(ca_file(t.path())).unwrap();
        let b = certificate(t.path(), &["app.test".into()]).unwrap();
        assert_eq!(a.leaf(), b.leaf(), "a valid certificate is reused");
        let c = certificate(t.path(), &["other.test".into()]).unwrap();
        assert!(c.covers("other.test"));
        assert_ne!(a.leaf(), c.leaf());
        assert_eq!(std::fs::read(ca_file(t.path())).unwrap(), ca1, "one CA");
        // The chain ends with the CA, and the CA signed the leaf.
        assert_eq!(c.key.cert.len(), 2);
    }
}
