//! One certificate ready for handshakes: the chain and key read from PEM,
//! checked (the key is the certificate's, the dates), and what it covers
//! (its DNS and IP names, for SNI and for the checks of
//! `tqserver check`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Where a certificate came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `server.tls.certificates`: these files.
    Files {
        /// The chain.
        cert: PathBuf,
        /// Its key.
        key: PathBuf,
    },
    /// Issued by ACME (kept in storage).
    Acme,
    /// Issued by the local CA (`server.tls.internal`).
    Internal,
}

impl Source {
    /// `files`, `acme` or `internal` (labels, the dashboard).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Files { .. } => "files",
            Self::Acme => "acme",
            Self::Internal => "internal",
        }
    }
}

/// A certificate chain with its key, as handshakes use it.
#[derive(Debug)]
pub struct Loaded {
    /// What rustls serves.
    pub key: Arc<CertifiedKey>,
    /// The DNS names (lower case, `*.` wildcards kept) and IP addresses
    /// the leaf covers.
    pub names: Vec<String>,
    /// Valid from.
    pub not_before: SystemTime,
    /// Valid until.
    pub not_after: SystemTime,
    /// Where it came from.
    pub source: Source,
}

/// Why a certificate cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertError {
    /// A file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: String,
    },
    /// No PEM certificate in the file.
    #[error("{0}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it")]
    NoCertificate(String),
    /// No usable PEM private key.
    #[error("{0}: no PEM private key in it (PKCS#8, RSA or EC)")]
    NoKey(String),
    /// The key is of a kind rustls does not sign with.
    #[error("{what}: the key cannot sign: {error}")]
    BadKey {
        /// The file.
        what: String,
        /// rustls' reason.
        error: String,
    },
    /// The leaf does not parse.
    #[error("{what}: the certificate does not parse: {error}")]
    BadCertificate {
        /// The file.
        what: String,
        /// The parser's reason.
        error: String,
    },
    /// The key is not the certificate's.
    #[error("{cert}: the certificate does not match its key {key}")]
    KeyMismatch {
        /// The chain.
        cert: String,
        /// The key.
        key: String,
    },
}

impl Loaded {
    /// Reads `cert` (the chain, leaf first) and `key` (PEM files).
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, CertError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| CertError::Read {
                path: p.to_path_buf(),
                error: e.to_string(),
            })
        };
        let (c, k) = (read(cert)?, read(key)?);
        Self::from_pem(
            &c,
            &k,
            Source::Files {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            },
        )
    }

    /// A chain and key from PEM text.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8], source: Source) -> Result<Self, CertError> {
        let (cert_what, key_what) = match &source {
            Source::Files { cert, key } => (cert.display().to_string(), key.display().to_string()),
            s => (
                format!("the {} certificate", s.kind()),
                format!("the {} key", s.kind()),
            ),
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .filter_map(Result::ok)
            .collect();
        if chain.is_empty() {
            return Err(CertError::NoCertificate(cert_what));
        }
        let key_der = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|_| CertError::NoKey(key_what.clone()))?;
        let provider = rustls::crypto::ring::default_provider();
        let signer = provider
            .key_provider
            .load_private_key(key_der)
            .map_err(|e| CertError::BadKey {
                what: key_what.clone(),
                error: e.to_string(),
            })?;
        let certified = CertifiedKey::new(chain, signer);
        match certified.keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(_) => {
                return Err(CertError::KeyMismatch {
                    cert: cert_what,
                    key: key_what,
                });
            }
        }
        let leaf = &certified.cert[0];
        let (names, not_before, not_after) =
            describe(leaf).map_err(|error| CertError::BadCertificate {
                what: cert_what,
                error,
            })?;
        Ok(Self {
            key: Arc::new(certified),
            names,
            not_before,
            not_after,
            source,
        })
    }

    /// Does the leaf cover `name` (a DNS name or an IP address)? A
    /// wildcard covers one label (RFC 6125 §6.4.3).
    pub fn covers(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.names.iter().any(|n| matches_name(n, &name))
    }

    /// Covers `name` exactly (not through a wildcard).
    pub fn covers_exactly(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.names.contains(&name)
    }

    /// Past its end date at `now`.
    pub fn expired(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }

    /// The whole validity period.
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }

    /// Time left at `now` (zero once expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or_default()
    }

    /// The leaf, DER.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.key.cert[0]
    }

    /// What the dashboard and logs call it: its first name.
    pub fn label(&self) -> String {
        self.names
            .first()
            .cloned()
            .unwrap_or_else(|| "(no name)".into())
    }
}

/// `pattern` (a certificate name) covers `name` (lower case).
fn matches_name(pattern: &str, name: &str) -> bool {
    if pattern == name {
        return true;
    }
    match pattern.strip_prefix("*.") {
        Some(base) => name
            .split_once('.')
            .is_some_and(|(first, rest)| !first.is_empty() && rest == base),
        None => false,
    }
}

/// The leaf's names and validity.
fn describe(leaf: &CertificateDer<'_>) -> Result<(Vec<String>, SystemTime, SystemTime), String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => {
                    names.push(d.trim_end_matches('.').to_ascii_lowercase())
                }
                x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                    4 => names.push(
                        std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())
                            .to_string(),
                    ),
                    16 => names.push(
                        std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())
                            .to_string(),
                    ),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    if names.is_empty() {
        // No SAN: clients no longer read the common name (RFC 6125 §6.4.4),
        // but SNI selection may still use it.
        for cn in cert.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                names.push(s.to_ascii_lowercase());
            }
        }
    }
    let at = |t: i64| {
        if t >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(t as u64)
        } else {
            SystemTime::UNIX_EPOCH
        }
    };
    let v = cert.validity();
    Ok((
        names,
        at(v.not_before.timestamp()),
        at(v.not_after.timestamp()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn names_wildcards_and_key_match() {
        let (c, k) = make(&["example.com", "*.example.org", "127.0.0.1"]);
        let l = Loaded::from_pem(c.as_bytes(), k.as_bytes(), Source::Internal).unwrap();
        assert!(l.covers("EXAMPLE.com."));
        assert!(l.covers("www.example.org"));
        assert!(!l.covers("example.org"));
        assert!(!l.covers("a.b.example.org"));
        assert!(l.covers("127.0.0.1"));
        assert!(!l.covers("example.net"));
        assert!(l.covers_exactly("example.com"));
        assert!(!l.covers_exactly("www.example.org"));
        let (_, other) = make(&["example.com"]);
        let e = Loaded::from_pem(c.as_bytes(), other.as_bytes(), Source::Internal).unwrap_err();
        assert!(matches!(e, CertError::KeyMismatch { .. }), "{e}");
        let e = Loaded::from_pem(b"nothing", k.as_bytes(), Source::Internal).unwrap_err();
        assert!(matches!(e, CertError::NoCertificate(_)), "{e}");
        let e = Loaded::from_pem(c.as_bytes(), b"", Source::Internal).unwrap_err();
        assert!(matches!(e, CertError::NoKey(_)), "{e}");
    }
}
