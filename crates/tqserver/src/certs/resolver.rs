//! Which certificate a handshake gets: the one whose names cover the
//! client's SNI (an exact name before a wildcard, the configured files
//! before issued ones), else the default (the first); for ACME's
//! tls-alpn-01 check, the challenge certificate of the name.
//! Certificates are swapped whole: a handshake sees the old set or the
//! new one, never a mix, and none fails while a set is replaced.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::certificate::Loaded;
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

    /// Answers tls-alpn-01 for `domain` with `cert` until
    /// [`Store::clear_challenge`].
    pub fn set_challenge(&self, domain: &str, cert: Arc<CertifiedKey>) {
        self.challenges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(domain.to_ascii_lowercase(), cert);
    }

    /// Stops answering tls-alpn-01 for `domain`.
    pub fn clear_challenge(&self, domain: &str) {
        self.challenges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&domain.to_ascii_lowercase());
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
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if acme {
            // RFC 8737 §3: only the challenge certificate, for the name
            // being validated; no challenge, no handshake.
            let name = hello.server_name()?.to_ascii_lowercase();
            return self
                .challenges
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&name)
                .cloned();
        }
        self.choose(hello.server_name())
    }
}
