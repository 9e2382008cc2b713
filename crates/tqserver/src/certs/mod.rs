//! Certificates for the HTTPS listener, the three ways: files
//! (`server.tls.certificates`, watched and reloaded), a local CA
//! (`server.tls.internal`), and ACME (`server.tls.acme`). [`Certs`] owns
//! what handshakes are served from and the rustls configuration the
//! transport ([`crate::http::tls`]) uses; [`check`] is what `tqserver
//! check`, the start and every reload say about the files.
//!
//! # Layout
//! - `mod.rs`: [`Certs`] (configure, start, reload, status), [`check`].
//! - [`certificate`]: one chain and key, read and checked.
//! - [`resolver`]: SNI → certificate; tls-alpn-01 challenge certificates.
//! - [`internal`]: the local CA.
//! - [`acme`]: obtaining and renewing from an ACME directory.
//! - [`storage`]: 0700 folders, 0600 files, the replicas' lock.

pub mod acme;
pub mod certificate;
pub mod internal;
pub mod resolver;
pub mod storage;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

pub use certificate::{CertError, Loaded, Source};

use crate::config::{Config, ConfigErrors, TlsSettings, TlsVersion};
use crate::metrics::tls::{CertSample, TlsMetrics};

/// How long certificate files must be quiet after a change before they
/// are read again (an editor, certbot and `cp` write in steps).
const FILES_DEBOUNCE: Duration = Duration::from_millis(200);
/// How often the internal certificate is looked at for renewal.
const INTERNAL_CHECK: Duration = Duration::from_secs(12 * 3600);

/// What `tqserver check` (and a start, and a reload) says about
/// `server.tls`: every certificate file must exist, parse, match its key,
/// not be expired and cover its `names`; `acme.directory_ca` must be
/// readable.
pub fn check(config: &Config) -> Result<(), ConfigErrors> {
    let Some(tls) = &config.server.tls else {
        return Ok(());
    };
    let mut errors = Vec::new();
    let now = SystemTime::now();
    for (i, f) in tls.certificates.iter().enumerate() {
        let key = format!("server.tls.certificates[{i}]");
        let err = |m: String| {
            config.server_error("server.tls.certificates", f.line, format!("{key}: {m}"))
        };
        match Loaded::from_files(&f.cert, &f.key) {
            Err(e) => errors.push(err(e.to_string())),
            Ok(l) => {
                if l.expired(now) {
                    errors.push(err(format!(
                        "{} expired on {}; renew it (or use server.tls.acme)",
                        f.cert.display(),
                        rfc3339(l.not_after)
                    )));
                }
                let missing: Vec<&str> = f
                    .names
                    .iter()
                    .filter(|n| !l.covers(n))
                    .map(String::as_str)
                    .collect();
                if !missing.is_empty() {
                    errors.push(err(format!(
                        "{} does not cover {} (it covers {})",
                        f.cert.display(),
                        missing.join(", "),
                        l.names.join(", ")
                    )));
                }
            }
        }
    }
    if let Some(ca) = tls.acme.as_ref().and_then(|a| a.directory_ca.as_ref()) {
        if let Err(e) = std::fs::read(ca) {
            errors.push(config.server_error(
                "server.tls.acme.directory_ca",
                None,
                format!("cannot read {}: {e}", ca.display()),
            ));
        }
    }
    if tls.storage.exists() && !tls.storage.is_dir() {
        errors.push(config.server_error(
            "server.tls.storage",
            None,
            format!("{} is not a folder", tls.storage.display()),
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

/// A time as `2026-12-01T10:00:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// One certificate in use, for the dashboard and /metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertInfo {
    /// Its first name.
    pub name: String,
    /// Every name it covers.
    pub names: Vec<String>,
    /// `files`, `acme` or `internal`.
    pub source: &'static str,
    /// The certificate file (files only).
    pub file: Option<String>,
    /// Valid until (RFC 3339).
    pub not_after: String,
    /// Seconds until then (negative once expired).
    pub seconds_left: f64,
}

/// The HTTPS side of the dashboard.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CertsStatus {
    /// The certificates handshakes are served from.
    pub certificates: Vec<CertInfo>,
    /// ACME: the directory, the latest attempts, the next check.
    pub acme: Option<AcmeView>,
    /// The local CA's certificate, to trust.
    pub internal_ca: Option<String>,
}

/// [`acme::Status`] as the dashboard shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AcmeView {
    /// The directory URL.
    pub directory: String,
    /// The names.
    pub domains: Vec<String>,
    /// Latest attempts, newest last: time, result, message.
    pub attempts: Vec<(String, bool, String)>,
    /// When renewal is next considered.
    pub next_check: Option<String>,
    /// When the certificate in use is due for renewal.
    pub renew_at: Option<String>,
}

/// The settings the running tasks were started with (what a reload
/// compares).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Issuing {
    internal: Option<Vec<String>>,
    acme: Option<crate::config::AcmeSettings>,
    storage: PathBuf,
    /// What the file watcher checks the files against.
    certificates: Vec<crate::config::CertificateFiles>,
}

/// The certificates of the HTTPS listener, and the tasks that keep them
/// current.
pub struct Certs {
    store: Arc<resolver::Store>,
    tls: crate::http::tls::Config,
    /// The lowest version and whether acme-tls/1 is offered: what the
    /// rustls configuration was built for.
    built: Mutex<(TlsVersion, bool)>,
    tokens: Arc<acme::Tokens>,
    acme: Mutex<Option<Arc<Mutex<acme::Status>>>>,
    internal_ca: Mutex<Option<PathBuf>>,
    issuing: Mutex<Option<(Issuing, CancellationToken)>>,
    metrics: TlsMetrics,
}

impl std::fmt::Debug for Certs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certs").finish_non_exhaustive()
    }
}

impl Certs {
    /// Reads the certificate files of `tls` and builds the rustls
    /// configuration (no task yet: [`Certs::start`] after root is
    /// dropped).
    pub fn new(tls: &TlsSettings, metrics: TlsMetrics) -> Result<Arc<Self>, String> {
        let store = Arc::new(resolver::Store::default());
        let files = load_files(tls)?;
        store.set_files(files);
        let acme_alpn = acme_alpn(tls);
        let config = crate::http::tls::server_config(
            store.clone(),
            tls.min_version == TlsVersion::V13,
            acme_alpn,
        )
        .map_err(|e| format!("server.tls: {e}"))?;
        Ok(Arc::new(Self {
            store,
            tls: Arc::new(ArcSwap::from_pointee(config)),
            built: Mutex::new((tls.min_version, acme_alpn)),
            tokens: Arc::default(),
            acme: Mutex::new(None),
            internal_ca: Mutex::new(None),
            issuing: Mutex::new(None),
            metrics,
        }))
    }

    /// What the HTTPS listener serves handshakes with.
    pub fn tls_config(&self) -> crate::http::tls::Config {
        self.tls.clone()
    }

    /// The answer to an ACME http-01 challenge for `token`, while one is
    /// open.
    pub fn http01_answer(&self, token: &str) -> Option<String> {
        self.tokens.get(token)
    }

    /// Starts what `tls` asks for beyond files: the local CA's
    /// certificate (issued now), the ACME task, the file watcher. A
    /// second call with other settings replaces them (a reload).
    pub fn start(self: &Arc<Self>, tls: &TlsSettings) -> Result<(), String> {
        let wanted = Issuing {
            internal: tls.internal.clone(),
            acme: tls.acme.clone(),
            storage: tls.storage.clone(),
            certificates: tls.certificates.clone(),
        };
        let mut issuing = self.issuing.lock().unwrap_or_else(|e| e.into_inner());
        if issuing.as_ref().is_some_and(|(i, _)| *i == wanted) {
            return Ok(());
        }
        if let Some((_, stop)) = issuing.take() {
            stop.cancel();
        }
        let stop = CancellationToken::new();
        let mut managed = false;
        if let Some(names) = &tls.internal {
            let cert = internal::certificate(&tls.storage, names)
                .map_err(|e| format!("server.tls.internal: {e}"))?;
            let ca = internal::ca_file(&tls.storage);
            let abs = std::path::absolute(&ca).unwrap_or(ca.clone());
            tracing::info!(
                "server.tls.internal: serving a certificate for {} from the local CA {}; trust it once: sudo cp {} /usr/local/share/ca-certificates/tqserver-local-ca.crt && sudo update-ca-certificates (browsers: import it under Settings → Certificates → Authorities)",
                cert.names.join(", "),
                abs.display(),
                abs.display()
            );
            self.store.set_managed(Some(Arc::new(cert)));
            *self.internal_ca.lock().unwrap_or_else(|e| e.into_inner()) = Some(abs);
            managed = true;
            tokio::spawn(renew_internal(
                self.clone(),
                tls.storage.clone(),
                names.clone(),
                stop.clone(),
            ));
        } else {
            *self.internal_ca.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        if let Some(a) = &tls.acme {
            let status = Arc::new(Mutex::new(acme::Status::default()));
            let task = acme::Acme::new(
                a.clone(),
                &tls.storage,
                self.store.clone(),
                self.tokens.clone(),
                self.metrics.clone(),
                status.clone(),
            );
            // The stored certificate serves from the first handshake.
            if let Some(l) = task.stored() {
                self.store.set_managed(Some(Arc::new(l)));
                managed = true;
            }
            *self.acme.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
            tokio::spawn(task.run(stop.clone()));
        } else {
            *self.acme.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        if !managed && tls.acme.is_none() {
            self.store.set_managed(None);
        }
        let files: Vec<PathBuf> = tls
            .certificates
            .iter()
            .flat_map(|c| [c.cert.clone(), c.key.clone()])
            .collect();
        if !files.is_empty() {
            match crate::watch::files(&files, FILES_DEBOUNCE) {
                Ok(rx) => {
                    tokio::spawn(watch_files(self.clone(), tls.clone(), rx, stop.clone()));
                }
                Err(e) => tracing::warn!(
                    "cannot watch the certificate files: {e}; they are read again on SIGHUP or `tqserver reload`"
                ),
            }
        }
        *issuing = Some((wanted, stop));
        Ok(())
    }

    /// A reload: reads the files again (a changed certificate serves the
    /// next handshakes; a bad one is refused and the old one stays),
    /// rebuilds the rustls configuration if the versions or challenges
    /// changed, and restarts the tasks whose settings changed. One line
    /// per thing done.
    pub fn reload(self: &Arc<Self>, tls: &TlsSettings) -> Result<Vec<String>, String> {
        let mut done = Vec::new();
        let before: Vec<Vec<u8>> = self
            .store
            .all()
            .iter()
            .filter(|c| matches!(c.source, Source::Files { .. }))
            .map(|c| c.leaf().to_vec())
            .collect();
        let files = load_files(tls)?;
        let after: Vec<Vec<u8>> = files.iter().map(|c| c.leaf().to_vec()).collect();
        if before != after {
            done.push(format!(
                "certificates read again: {}",
                files
                    .iter()
                    .map(|c| c.label())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        self.store.set_files(files);
        let acme_alpn = acme_alpn(tls);
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        if *built != (tls.min_version, acme_alpn) {
            let config = crate::http::tls::server_config(
                self.store.clone(),
                tls.min_version == TlsVersion::V13,
                acme_alpn,
            )
            .map_err(|e| format!("server.tls: {e}"))?;
            self.tls.store(Arc::new(config));
            *built = (tls.min_version, acme_alpn);
            done.push("server.tls.min_version / challenge: new handshakes use them".into());
        }
        drop(built);
        self.start(tls)?;
        Ok(done)
    }

    /// The certificate files changed: read them again.
    fn files_changed(&self, tls: &TlsSettings) {
        match load_files(tls) {
            Ok(files) => {
                let names: Vec<String> = files.iter().map(|c| c.label()).collect();
                self.store.set_files(files);
                tracing::info!(
                    "certificate files changed: new handshakes use them ({})",
                    names.join(", ")
                );
            }
            Err(e) => tracing::error!(
                "certificate files changed but cannot be used: {e}; still serving the previous ones"
            ),
        }
    }

    /// Stops the tasks (at shutdown).
    pub fn stop(&self) {
        if let Some((_, stop)) = self
            .issuing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            stop.cancel();
        }
    }

    /// The certificates in use and what issues them.
    pub fn status(&self) -> CertsStatus {
        let now = SystemTime::now();
        let certificates = self
            .store
            .all()
            .iter()
            .map(|c| CertInfo {
                name: c.label(),
                names: c.names.clone(),
                source: c.source.kind(),
                file: match &c.source {
                    Source::Files { cert, .. } => Some(cert.display().to_string()),
                    _ => None,
                },
                not_after: rfc3339(c.not_after),
                seconds_left: seconds_between(now, c.not_after),
            })
            .collect();
        let acme = self
            .acme
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|s| {
                let s = s.lock().unwrap_or_else(|e| e.into_inner()).clone();
                AcmeView {
                    directory: s.directory,
                    domains: s.domains,
                    attempts: s
                        .attempts
                        .into_iter()
                        .map(|a| (rfc3339(a.at), a.ok, a.message))
                        .collect(),
                    next_check: s.next_check.map(rfc3339),
                    renew_at: s.renew_at.map(rfc3339),
                }
            });
        CertsStatus {
            certificates,
            acme,
            internal_ca: self
                .internal_ca
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|p| p.display().to_string()),
        }
    }

    /// The `tqserver_tls_certificate_expiry_seconds` samples of now.
    pub fn samples(&self) -> Vec<CertSample> {
        let now = SystemTime::now();
        self.store
            .all()
            .iter()
            .map(|c| CertSample {
                name: c.label(),
                source: c.source.kind(),
                seconds_left: seconds_between(now, c.not_after),
            })
            .collect()
    }
}

/// `to - from` in seconds, negative when `to` is earlier.
fn seconds_between(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// tls-alpn-01 needs `acme-tls/1` offered.
fn acme_alpn(tls: &TlsSettings) -> bool {
    tls.acme
        .as_ref()
        .is_some_and(|a| a.challenge == crate::config::AcmeChallenge::TlsAlpn01)
}

/// Every configured file, read and checked (the first problem is the
/// error: nothing changes).
fn load_files(tls: &TlsSettings) -> Result<Vec<Arc<Loaded>>, String> {
    let now = SystemTime::now();
    let mut out = Vec::new();
    for f in &tls.certificates {
        let l = Loaded::from_files(&f.cert, &f.key).map_err(|e| e.to_string())?;
        if l.expired(now) {
            return Err(format!(
                "{} expired on {}",
                f.cert.display(),
                rfc3339(l.not_after)
            ));
        }
        if let Some(n) = f.names.iter().find(|n| !l.covers(n)) {
            return Err(format!("{} does not cover {n}", f.cert.display()));
        }
        out.push(Arc::new(l));
    }
    Ok(out)
}

/// Reads the files again after each reported change, until `stop`.
async fn watch_files(
    certs: Arc<Certs>,
    tls: TlsSettings,
    mut changes: tokio::sync::mpsc::UnboundedReceiver<()>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            c = changes.recv() => {
                if c.is_none() {
                    return;
                }
                certs.files_changed(&tls);
            }
        }
    }
}

/// Issues the internal certificate again when a third of its life is
/// left.
async fn renew_internal(
    certs: Arc<Certs>,
    storage: PathBuf,
    names: Vec<String>,
    stop: CancellationToken,
) {
    loop {
        let wait = certs
            .store
            .managed()
            .map_or(Duration::ZERO, |c| {
                let due = c.not_after - c.lifetime() / 3;
                due.duration_since(SystemTime::now()).unwrap_or_default()
            })
            .min(INTERNAL_CHECK);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait.max(Duration::from_secs(1))) => {}
        }
        match internal::certificate(&storage, &names) {
            Ok(c) => {
                let new = certs.store.managed().is_none_or(|m| m.leaf() != c.leaf());
                if new {
                    tracing::info!(
                        "server.tls.internal: certificate issued again, valid until {}",
                        rfc3339(c.not_after)
                    );
                    certs.store.set_managed(Some(Arc::new(c)));
                }
            }
            Err(e) => tracing::error!("server.tls.internal: {e}"),
        }
    }
}
