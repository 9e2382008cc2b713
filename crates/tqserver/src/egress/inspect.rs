//! HTTPS inspection (`socks5.https_inspection`, dev mode only): a TLS
//! connection a worker opens through the proxy is answered with a
//! certificate minted for the name it asked for (SNI) by a CA of
//! TQServer's (`ca_cert` / `ca_key`, made on first use with
//! `auto_generate`), and re-originated to the real host with rustls,
//! which verifies it against the system's roots (or `$SSL_CERT_FILE`'s,
//! as TQServer itself was started). The worker trusts the CA because
//! TQServer gives it `SSL_CERT_FILE` and `NODE_EXTRA_CA_CERTS`. Both
//! ends speak HTTP/1.1 (ALPN), so the proxy can read the request and
//! response it logs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::certs::{Loaded, Source, internal};
use crate::config::Inspection;

/// How long a minted certificate is valid.
const MINTED_DAYS: i64 = 7;
/// Where Debian keeps the system's roots.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The CA, the certificates minted so far, and the client side's roots.
pub struct Inspector {
    ca: (String, String),
    minted: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    client: Arc<rustls::ClientConfig>,
    /// `log_body`.
    pub log_body: bool,
    /// `max_body_size`.
    pub max_body: usize,
}

impl Inspector {
    /// Loads (or, with `auto_generate`, makes) the CA and the roots.
    pub fn open(i: &Inspection) -> Result<Self, String> {
        let (ca, made) = internal::ca_files(
            &i.ca_cert,
            &i.ca_key,
            i.auto_generate.then_some(internal::CaHome::Outside),
            "TQServer egress inspection CA",
        )
        .map_err(|e| {
            format!("socks5.https_inspection: {e} (ca_cert / ca_key, or auto_generate: true)")
        })?;
        if made {
            tracing::warn!(
                "made the HTTPS inspection CA {}: workers trust it through SSL_CERT_FILE; keep {} private",
                i.ca_cert.display(),
                i.ca_key.display()
            );
        }
        let roots_file = std::env::var_os("SSL_CERT_FILE")
            .map_or_else(|| SYSTEM_ROOTS.into(), std::path::PathBuf::from);
        let pem = std::fs::read(&roots_file).map_err(|e| {
            format!(
                "HTTPS inspection verifies hosts with {}: {e}",
                roots_file.display()
            )
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&pem).flatten() {
            let _ = roots.add(c);
        }
        if roots.is_empty() {
            return Err(format!(
                "{}: no certificates to verify hosts with",
                roots_file.display()
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            ca,
            minted: Mutex::new(HashMap::new()),
            client: Arc::new(client),
            log_body: i.log_body,
            max_body: usize::try_from(i.max_body_size).unwrap_or(usize::MAX),
        })
    }

    /// A certificate for `host`, minted once.
    fn certificate(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        let mut m = self.minted.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = m.get(host) {
            return Some(k.clone());
        }
        let (chain, key) =
            internal::issue(&self.ca.0, &self.ca.1, &[host.to_string()], MINTED_DAYS)
                .map_err(|e| tracing::warn!("HTTPS inspection: {e}"))
                .ok()?;
        let loaded = Loaded::from_pem(chain.as_bytes(), key.as_bytes(), Source::Internal).ok()?;
        m.insert(host.to_string(), loaded.key.clone());
        Some(loaded.key)
    }

    /// Terminates the worker's TLS on `client` (the name it asked for, or
    /// `host`) and opens TLS to the real host on `dest`, verified. Errors
    /// say which side failed.
    pub async fn intercept(
        self: &Arc<Self>,
        client: TcpStream,
        dest: TcpStream,
        host: &str,
    ) -> Result<
        (
            tokio_rustls::server::TlsStream<TcpStream>,
            tokio_rustls::client::TlsStream<TcpStream>,
        ),
        String,
    > {
        let asked = Arc::new(Mutex::new(None));
        let resolver = Arc::new(Minter {
            inspector: self.clone(),
            fallback: host.to_string(),
            asked: asked.clone(),
        });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let worker_side = tokio_rustls::TlsAcceptor::from(Arc::new(server))
            .accept(client)
            .await
            .map_err(|e| {
                format!("the worker's TLS handshake failed (does it trust the inspection CA?): {e}")
            })?;
        let name = asked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| host.to_string());
        let server_name = ServerName::try_from(name.clone())
            .map_err(|e| format!("{name}: not a TLS server name: {e}"))?;
        let host_side = tokio_rustls::TlsConnector::from(self.client.clone())
            .connect(server_name, dest)
            .await
            .map_err(|e| format!("TLS to {name} failed (its certificate is checked): {e}"))?;
        Ok((worker_side, host_side))
    }
}

/// Chooses the minted certificate by the ClientHello's name.
struct Minter {
    inspector: Arc<Inspector>,
    fallback: String,
    asked: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter")
            .field("fallback", &self.fallback)
            .finish()
    }
}

impl ResolvesServerCert for Minter {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello
            .server_name()
            .map_or_else(|| self.fallback.clone(), str::to_ascii_lowercase);
        *self.asked.lock().unwrap_or_else(|e| e.into_inner()) = Some(name.clone());
        self.inspector.certificate(&name)
    }
}
