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
    let ca_key = KeyPair::from_pem(&ca_key).map_err(|e| format!("the internal CA's key: {e}"))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
        .map_err(|e| format!("the internal CA's certificate: {e}"))?;
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = CertificateParams::new(all.clone()).map_err(|e| e.to_string())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, all[0].clone());
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    // An hour back: a client whose clock is a little behind still accepts it.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(LEAF_DAYS);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| format!("cannot issue the internal certificate: {e}"))?;
    let chain = format!("{}{}", cert.pem(), ca_pem);
    let key_pem = key.serialize_pem();
    storage::write_private(&leaf_key, key_pem.as_bytes()).map_err(|e| io(&leaf_key, e))?;
    storage::write_private(&leaf_pem, chain.as_bytes()).map_err(|e| io(&leaf_pem, e))?;
    Loaded::from_pem(chain.as_bytes(), key_pem.as_bytes(), Source::Internal)
        .map_err(|e| e.to_string())
}

/// The CA's certificate and key (PEM), made and stored if missing.
fn ca(dir: &Path) -> Result<(String, String), String> {
    let (pem, key) = (dir.join("ca.pem"), dir.join("ca.key"));
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    if let (Some(c), Some(k)) = (
        storage::read(&pem).map_err(|e| io(&pem, e))?,
        storage::read(&key).map_err(|e| io(&key, e))?,
    ) {
        let text = |b: Vec<u8>, p: &Path| {
            String::from_utf8(b).map_err(|_| format!("{}: not PEM text", p.display()))
        };
        return Ok((text(c, &pem)?, text(k, &key)?));
    }
    let ca_key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    let mut dn = DistinguishedName::new();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    dn.push(DnType::OrganizationName, "TQServer local CA");
    dn.push(DnType::CommonName, format!("TQServer local CA ({host})"));
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
        .map_err(|e| format!("cannot make the internal CA: {e}"))?;
    let (c, k) = (cert.pem(), ca_key.serialize_pem());
    storage::write_private(&key, k.as_bytes()).map_err(|e| io(&key, e))?;
    storage::write_private(&pem, c.as_bytes()).map_err(|e| io(&pem, e))?;
    tracing::info!(
        "made a local certificate authority for server.tls.internal: {}",
        pem.display()
    );
    Ok((c, k))
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
