//! Which certificate a handshake gets: the one whose names cover the
//! client's SNI (an exact name before a wildcard, the configured files
//! before issued ones), else the default (the first); for ACME's
//! tls-alpn-01 check, the challenge certificate of the name.
//! Certificates are swapped whole: a handshake sees the old set or the
//! new one, never a mix, and none fails while a set is replaced.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::certificate::Loaded;
use super::storage;
use crate::http::tls::ACME_TLS_ALPN;

/// The certificates handshakes are served from.
#[derive(Debug, Default)]
pub struct Store {
    /// Configured files, in order.
    files: ArcSwap<Vec<Arc<Loaded>>>,
    /// The one TQServer issued or obtained (internal CA or ACME).
    managed: ArcSwap<Option<Arc<Loaded>>>,
    /// tls-alpn-01 challenge certificates, by domain.
    challenges: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    /// Where replicas sharing the storage put theirs
    /// (`{acme dir}/challenges/tls-alpn-01/{domain}.pem`).
    shared: Mutex<Option<PathBuf>>,
}

impl Store {
    /// Puts the configured files' certificates in place.
    pub fn set_files(&self, certs: Vec<Arc<Loaded>>) {
        self.files.store(Arc::new(certs));
    }

    /// Puts an issued certificate in place (the one it replaces still
    /// serves the handshakes that already chose it).
    pub fn set_managed(&self, cert: Option<Arc<Loaded>>) {
        self.managed.store(Arc::new(cert));
    }

    /// The issued certificate in use.
    pub fn managed(&self) -> Option<Arc<Loaded>> {
        self.managed.load().as_ref().clone()
    }

    /// Every certificate in use, files first.
    pub fn all(&self) -> Vec<Arc<Loaded>> {
        let mut v: Vec<_> = self.files.load().iter().cloned().collect();
        v.extend(self.managed());
        v
    }

    /// Looks for replicas' tls-alpn-01 answers in `dir`.
    pub fn share_challenges_in(&self, dir: PathBuf) {
        *lock(&self.shared) = Some(dir);
    }

    /// Answers tls-alpn-01 for `domain` with `cert` (`pem`: the same, for
    /// replicas) until [`Store::clear_challenge`].
    pub fn set_challenge(&self, domain: &str, cert: Arc<CertifiedKey>, pem: &str) {
        let domain = domain.to_ascii_lowercase();
        if let Some(f) = self.shared_file(&domain) {
            if let Err(e) = storage::write_private(&f, pem.as_bytes()) {
                tracing::warn!(
                    "ACME: cannot share the tls-alpn-01 answer in {}: {e}",
                    f.display()
                );
            }
        }
        lock(&self.challenges).insert(domain, cert);
    }

    /// Stops answering tls-alpn-01 for `domain`.
    pub fn clear_challenge(&self, domain: &str) {
        let domain = domain.to_ascii_lowercase();
        if lock(&self.challenges).remove(&domain).is_some() {
            if let Some(f) = self.shared_file(&domain) {
                let _ = std::fs::remove_file(f);
            }
        }
    }

    /// The shared answer's file for `domain` (a DNS name: never a path).
    fn shared_file(&self, domain: &str) -> Option<PathBuf> {
        let dir = lock(&self.shared).clone()?;
        let plain = !domain.is_empty()
            && domain.len() <= 253
            && !domain.starts_with('.')
            && domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            && !domain.contains("..");
        plain.then(|| dir.join(format!("{domain}.pem")))
    }

    /// The tls-alpn-01 certificate for `domain`: this server's, or one a
    /// replica opened.
    fn challenge(&self, domain: &str) -> Option<Arc<CertifiedKey>> {
        if let Some(c) = lock(&self.challenges).get(domain) {
            return Some(c.clone());
        }
        // Rare (only ACME servers offer acme-tls/1), small, and the
        // handshake cannot wait for async I/O here.
        let pem = std::fs::read(self.shared_file(domain)?).ok()?;
        challenge_key(&pem).ok()
    }

    /// The certificate for a client that asked for `sni` (`None`: it sent
    /// no name).
    pub fn choose(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let files = self.files.load();
        let managed = self.managed.load();
        let all = || files.iter().chain(managed.as_ref().iter());
        if let Some(name) = sni {
            if let Some(c) = all().find(|c| c.covers_exactly(name)) {
                return Some(c.key.clone());
            }
            if let Some(c) = all().find(|c| c.covers(name)) {
                return Some(c.key.clone());
            }
        }
        all().next().map(|c| c.key.clone())
    }
}

impl ResolvesServerCert for Store {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // An ACME server offers acme-tls/1 and nothing else (RFC 8737 §3).
        let acme = hello.alpn().is_some_and(|mut protocols| {
            protocols.next() == Some(ACME_TLS_ALPN) && protocols.next().is_none()
        });
        if acme {
            // RFC 8737 §3: only the challenge certificate, for the name
            // being validated; no challenge, no handshake.
            let name = hello.server_name()?.to_ascii_lowercase();
            return self.challenge(&name);
        }
        self.choose(hello.server_name())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A tls-alpn-01 certificate and key from PEM. Not through
/// `CertifiedKey::from_der`: its key check parses the certificate with
/// webpki, which refuses the critical acmeIdentifier extension.
pub fn challenge_key(pem: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    use rustls_pki_types::pem::PemObject as _;
    let cert = rustls_pki_types::CertificateDer::from_pem_slice(pem).map_err(|e| e.to_string())?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(pem).map_err(|e| e.to_string())?;
    let signer = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(CertifiedKey::new(vec![cert], signer)))
}
