//! `server.tls.acme`: certificates from an ACME directory (RFC 8555; Let's
//! Encrypt by default), through instant-acme.
//!
//! One task per server: it installs the stored certificate, sleeps until
//! renewal is due (a third of the lifetime left, `acme.renew_before`, or
//! the window the directory suggests through ARI, RFC 9773), and then
//! orders: account (stored, or registered once), order, a tls-alpn-01
//! (RFC 8737) or http-01 answer per name, finalize with a CSR of a fresh
//! P-256 key, download, store, install. A failed attempt is retried with
//! a doubling delay while the old certificate keeps serving. Replicas
//! sharing the storage take a lock file before ordering and re-read the
//! storage once they hold it: the first one orders, the others find its
//! certificate.
//!
//! Storage, under `{storage}/acme/{directory}/`: `account.json` (the
//! account's key and URL), `{first domain}/cert.pem` and `key.pem`,
//! `lock`; folders 0700, files 0600.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use instant_acme::{
    Account, AuthorizationStatus, CertificateIdentifier, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use tokio_util::sync::CancellationToken;

use super::certificate::{Loaded, Source};
use super::resolver::Store;
use super::storage;
use crate::config::{AcmeChallenge, AcmeSettings};
use crate::metrics::tls::TlsMetrics;
use crate::supervise::{Backoff, Policy};

/// An attempt that takes longer than this failed (instant-acme's HTTP
/// client has no timeout of its own).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long to wait for the directory to validate the challenges, and
/// then to issue.
const POLL_TIMEOUT: Duration = Duration::from_secs(120);
/// Retry delays: from a minute (or `check_interval`, if shorter) doubling
/// to six hours, as Caddy does; Let's Encrypt allows 5 failed
/// validations per name and hour.
const RETRY: Policy = Policy {
    max: Duration::from_secs(6 * 3600),
    reset: crate::supervise::backoff::Reset::OnSuccess,
};

/// http-01 answers being served: token → key authorization, in memory
/// for the challenges this server opened, and in the shared storage for
/// those another replica opened (the directory's check may reach any
/// replica behind the load balancer).
#[derive(Debug, Default)]
pub struct Tokens {
    open: Mutex<HashMap<String, String>>,
    /// `{acme dir}/challenges/http-01`, once ACME runs.
    shared: Mutex<Option<PathBuf>>,
}

impl Tokens {
    /// The key authorization for `token`, while its challenge is open
    /// here or at a replica sharing the storage.
    pub fn get(&self, token: &str) -> Option<String> {
        if let Some(a) = lock(&self.open).get(token) {
            return Some(a.clone());
        }
        // RFC 8555 §8.3: a token is base64url; anything else is no
        // token (and never a path).
        let plain = !token.is_empty()
            && token.len() <= 256
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let dir = lock(&self.shared).clone()?;
        if !plain {
            return None;
        }
        let answer = std::fs::read_to_string(dir.join(token)).ok()?;
        Some(answer.trim().to_string())
    }

    fn set(&self, token: &str, answer: &str) {
        lock(&self.open).insert(token.to_string(), answer.to_string());
        if let Some(dir) = lock(&self.shared).clone() {
            if let Err(e) = storage::write_private(&dir.join(token), answer.as_bytes()) {
                tracing::warn!(
                    "ACME: cannot share the http-01 answer in {}: {e}",
                    dir.display()
                );
            }
        }
    }

    fn clear(&self) {
        let tokens: Vec<String> = lock(&self.open).drain().map(|(t, _)| t).collect();
        if let Some(dir) = lock(&self.shared).clone() {
            for t in tokens {
                let _ = std::fs::remove_file(dir.join(t));
            }
        }
    }

    fn share_in(&self, dir: PathBuf) {
        *lock(&self.shared) = Some(dir);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One attempt, for the dashboard and the log.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// When it ended.
    pub at: SystemTime,
    /// It produced a certificate.
    pub ok: bool,
    /// What happened.
    pub message: String,
}

/// What the ACME task is doing, for the dashboard.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// The directory URL.
    pub directory: String,
    /// The domains.
    pub domains: Vec<String>,
    /// The latest attempts, newest last (at most [`KEEP_ATTEMPTS`]).
    pub attempts: Vec<Attempt>,
    /// When renewal is next considered.
    pub next_check: Option<SystemTime>,
    /// When the certificate in use is due for renewal.
    pub renew_at: Option<SystemTime>,
}

/// Attempts kept for the dashboard.
pub const KEEP_ATTEMPTS: usize = 10;

/// The ACME task of one configuration.
pub struct Acme {
    settings: AcmeSettings,
    /// `{storage}/acme/{directory}`.
    dir: PathBuf,
    store: Arc<Store>,
    tokens: Arc<Tokens>,
    metrics: TlsMetrics,
    status: Arc<Mutex<Status>>,
    account: tokio::sync::Mutex<Option<Account>>,
    /// The directory answers ARI (unknown until asked).
    ari: Mutex<Option<bool>>,
}

impl Acme {
    /// The task for `settings`, keeping its files under `storage`.
    pub fn new(
        settings: AcmeSettings,
        storage: &std::path::Path,
        store: Arc<Store>,
        tokens: Arc<Tokens>,
        metrics: TlsMetrics,
        status: Arc<Mutex<Status>>,
    ) -> Self {
        let dir = storage
            .join("acme")
            .join(directory_folder(&settings.directory));
        tokens.share_in(dir.join("challenges").join("http-01"));
        store.share_challenges_in(dir.join("challenges").join("tls-alpn-01"));
        {
            let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
            s.directory = settings.directory.clone();
            s.domains = settings.domains.clone();
        }
        Self {
            settings,
            dir,
            store,
            tokens,
            metrics,
            status,
            account: tokio::sync::Mutex::new(None),
            ari: Mutex::new(None),
        }
    }

    fn cert_dir(&self) -> PathBuf {
        self.dir.join(&self.settings.domains[0])
    }

    /// The stored certificate, if it covers every domain and has not
    /// expired.
    pub fn stored(&self) -> Option<Loaded> {
        let d = self.cert_dir();
        let c = storage::read(&d.join("cert.pem")).ok()??;
        let k = storage::read(&d.join("key.pem")).ok()??;
        let l = match Loaded::from_pem(&c, &k, Source::Acme) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("{}: {e}; ordering a new certificate", d.display());
                return None;
            }
        };
        let covers = self.settings.domains.iter().all(|n| l.covers_exactly(n));
        (covers && !l.expired(SystemTime::now())).then_some(l)
    }

    /// Runs until `stop`: keeps a valid certificate installed.
    pub async fn run(self, stop: CancellationToken) {
        let first = self
            .settings
            .check_interval
            .min(Duration::from_secs(60))
            .max(Duration::from_secs(1));
        let mut backoff = Backoff::new(first, RETRY);
        loop {
            let stored = self.stored().map(Arc::new);
            self.install(stored.clone());
            let now = SystemTime::now();
            let (due, poll) = match &stored {
                None => (now, None),
                Some(l) => self.renew_at(l).await,
            };
            self.set_status(|s| s.renew_at = stored.as_ref().map(|_| due));
            let wait = due
                .duration_since(now)
                .unwrap_or_default()
                .min(self.settings.check_interval)
                .min(poll.unwrap_or(Duration::MAX));
            if !wait.is_zero() {
                self.set_status(|s| s.next_check = Some(now + wait));
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => continue,
                }
            }
            // Due. One replica at a time orders; the others wait here and
            // then find its certificate in the storage.
            let lock = tokio::select! {
                () = stop.cancelled() => return,
                l = storage::Lock::take(self.dir.join("lock")) => l,
            };
            let _lock = match lock {
                Ok(l) => l,
                Err(e) => {
                    let d = backoff.failed(None);
                    self.record(
                        false,
                        format!(
                            "cannot take {}: {e}; next try in {d:?}",
                            self.dir.join("lock").display()
                        ),
                    );
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(d) => continue,
                    }
                }
            };
            if let Some(l) = self.stored() {
                let (due, _) = self.renew_at(&l).await;
                if due > SystemTime::now() {
                    tracing::info!(
                        "ACME: a certificate for {} is in {} already (another replica renewed it)",
                        self.settings.domains.join(", "),
                        self.cert_dir().display()
                    );
                    continue;
                }
            }
            let what = if stored.is_some() {
                "renewing"
            } else {
                "obtaining"
            };
            tracing::info!(
                "ACME: {what} a certificate for {} from {} ({})",
                self.settings.domains.join(", "),
                self.settings.directory,
                match self.settings.challenge {
                    AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
                    AcmeChallenge::Http01 => "http-01",
                }
            );
            let result = tokio::select! {
                () = stop.cancelled() => return,
                r = tokio::time::timeout(ATTEMPT_TIMEOUT, self.obtain(stored.as_deref())) => {
                    r.unwrap_or_else(|_| Err(format!("no certificate within {ATTEMPT_TIMEOUT:?}")))
                }
            };
            self.tokens.clear();
            for d in &self.settings.domains {
                self.store.clear_challenge(d);
            }
            match result {
                Ok(l) => {
                    backoff.succeeded();
                    let msg = format!(
                        "certificate for {} obtained, valid until {}; stored in {}",
                        self.settings.domains.join(", "),
                        super::rfc3339(l.not_after),
                        self.cert_dir().display()
                    );
                    tracing::info!("ACME: {msg}");
                    self.record(true, msg);
                    self.install(Some(Arc::new(l)));
                }
                Err(e) => {
                    let d = backoff.failed(None);
                    let still = match &stored {
                        Some(l) => format!(
                            "still serving the current certificate (valid until {})",
                            super::rfc3339(l.not_after)
                        ),
                        None => "HTTPS has no certificate for these names until then".into(),
                    };
                    let msg = format!("{e}; next try in {d:?}, {still}");
                    tracing::warn!("ACME: {msg}");
                    self.record(false, msg);
                    drop(_lock);
                    self.set_status(|s| s.next_check = Some(SystemTime::now() + d));
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(d) => {}
                    }
                }
            }
        }
    }

    fn install(&self, cert: Option<Arc<Loaded>>) {
        let same = match (&cert, self.store.managed()) {
            (Some(a), Some(b)) => a.leaf() == b.leaf(),
            (None, None) => true,
            _ => false,
        };
        if !same && cert.is_some() {
            self.store.set_managed(cert);
        }
    }

    fn set_status(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn record(&self, ok: bool, message: String) {
        self.metrics.acme_attempt(ok);
        self.set_status(|s| {
            s.attempts.push(Attempt {
                at: SystemTime::now(),
                ok,
                message,
            });
            let extra = s.attempts.len().saturating_sub(KEEP_ATTEMPTS);
            s.attempts.drain(..extra);
        });
    }

    /// When `cert` is due for renewal, and when the directory asks to be
    /// asked again (ARI's Retry-After).
    async fn renew_at(&self, cert: &Loaded) -> (SystemTime, Option<Duration>) {
        let third = cert.not_after - cert.lifetime() / 3;
        match self.settings.renew_before {
            // Longer than the directory's certificates live: it would
            // renew in a loop.
            Some(before) if before >= cert.lifetime() => {
                tracing::warn!(
                    "ACME: acme.renew_before ({before:?}) is not shorter than the certificates {} issues ({:?}); renewing with a third of the life left instead",
                    self.settings.directory,
                    cert.lifetime()
                );
                return (third, None);
            }
            Some(before) => {
                return (
                    cert.not_after
                        .checked_sub(before)
                        .unwrap_or(cert.not_before),
                    None,
                );
            }
            None => {}
        }
        if *self.ari.lock().unwrap_or_else(|e| e.into_inner()) == Some(false) {
            return (third, None);
        }
        match self.ari(cert).await {
            Ok(Some((at, poll))) => (at, Some(poll)),
            Ok(None) => (third, None),
            Err(e) => {
                tracing::debug!("ACME renewal information: {e}");
                (third, None)
            }
        }
    }

    /// ARI: a random moment in the window the directory suggests
    /// (`Ok(None)`: it does not do ARI).
    async fn ari(&self, cert: &Loaded) -> Result<Option<(SystemTime, Duration)>, String> {
        let id = CertificateIdentifier::try_from(cert.leaf())?;
        // An account is registered only by an order (under the lock): a
        // look at the window needs one that exists.
        let known = self.account.lock().await.is_some() || self.dir.join("account.json").exists();
        if !known {
            return Ok(None);
        }
        let account = self.account().await?;
        match account.renewal_info(&id).await {
            Ok((info, poll)) => {
                *self.ari.lock().unwrap_or_else(|e| e.into_inner()) = Some(true);
                let w = info.suggested_window;
                let (start, end) = (w.start.unix_timestamp(), w.end.unix_timestamp());
                let span = u64::try_from(end - start).unwrap_or(0);
                let pick = if span == 0 { 0 } else { random() % span };
                let at = SystemTime::UNIX_EPOCH
                    + Duration::from_secs(u64::try_from(start).unwrap_or(0) + pick);
                Ok(Some((at, poll)))
            }
            Err(instant_acme::Error::Unsupported(_)) => {
                *self.ari.lock().unwrap_or_else(|e| e.into_inner()) = Some(false);
                Ok(None)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn builder(&self) -> Result<instant_acme::AccountBuilder, String> {
        match &self.settings.directory_ca {
            Some(ca) => Account::builder_with_root(ca)
                .map_err(|e| format!("acme.directory_ca {}: {e}", ca.display())),
            None => Account::builder().map_err(|e| e.to_string()),
        }
    }

    /// Forgets the account (the directory no longer knows it: a test
    /// directory restarted, an account deactivated): the next
    /// [`Acme::account`] registers a new one.
    async fn forget_account(&self) {
        *self.account.lock().await = None;
        let file = self.dir.join("account.json");
        if let Err(e) = std::fs::remove_file(&file) {
            tracing::warn!("{}: {e}", file.display());
        }
    }

    /// The account: loaded from `account.json`, else registered (and
    /// stored).
    async fn account(&self) -> Result<Account, String> {
        let mut guard = self.account.lock().await;
        if let Some(a) = guard.as_ref() {
            return Ok(a.clone());
        }
        let file = self.dir.join("account.json");
        let stored = storage::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let account = match stored {
            Some(json) => {
                let creds: instant_acme::AccountCredentials = serde_json::from_slice(&json)
                    .map_err(|e| format!("{}: {e}", file.display()))?;
                self.builder()?
                    .from_credentials(creds)
                    .await
                    .map_err(|e| format!("ACME account from {}: {e}", file.display()))?
            }
            None => {
                let contact: Vec<String> = self
                    .settings
                    .email
                    .iter()
                    .map(|e| format!("mailto:{e}"))
                    .collect();
                let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
                let (account, creds) = self
                    .builder()?
                    .create(
                        &NewAccount {
                            contact: &contact,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        self.settings.directory.clone(),
                        None,
                    )
                    .await
                    .map_err(|e| {
                        format!(
                            "cannot register an ACME account at {}: {e}",
                            self.settings.directory
                        )
                    })?;
                let json = serde_json::to_vec_pretty(&creds).map_err(|e| e.to_string())?;
                storage::write_private(&file, &json)
                    .map_err(|e| format!("{}: {e}", file.display()))?;
                tracing::info!(
                    "ACME: registered an account at {}; stored in {}",
                    self.settings.directory,
                    file.display()
                );
                account
            }
        };
        *guard = Some(account.clone());
        Ok(account)
    }

    /// One attempt: order, answer the challenges, finalize, download,
    /// store.
    async fn obtain(&self, replacing: Option<&Loaded>) -> Result<Loaded, String> {
        let account = self.account().await?;
        let ids: Vec<Identifier> = self
            .settings
            .domains
            .iter()
            .map(|d| Identifier::Dns(d.clone()))
            .collect();
        let mut new = NewOrder::new(&ids);
        let ari = *self.ari.lock().unwrap_or_else(|e| e.into_inner()) == Some(true);
        let replaces = replacing.and_then(|c| CertificateIdentifier::try_from(c.leaf()).ok());
        if let (true, Some(r)) = (ari, replaces) {
            new = new.replaces(r);
        }
        let mut order = match account.new_order(&new).await {
            Err(instant_acme::Error::Api(p))
                if p.r#type.as_deref()
                    == Some("urn:ietf:params:acme:error:accountDoesNotExist") =>
            {
                tracing::warn!(
                    "ACME: {} does not know the stored account; registering a new one",
                    self.settings.directory
                );
                self.forget_account().await;
                self.account()
                    .await?
                    .new_order(&new)
                    .await
                    .map_err(|e| format!("new order: {e}"))?
            }
            r => r.map_err(|e| format!("new order: {e}"))?,
        };
        let kind = match self.settings.challenge {
            AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            AcmeChallenge::Http01 => ChallengeType::Http01,
        };
        let mut authorizations = order.authorizations();
        while let Some(a) = authorizations.next().await {
            let mut a = a.map_err(|e| format!("authorization: {e}"))?;
            match a.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                s => return Err(format!("authorization for {} is {s:?}", a.identifier())),
            }
            let domain = a.identifier().to_string();
            let mut ch = a.challenge(kind.clone()).ok_or_else(|| {
                format!("the directory offers no {kind:?} challenge for {domain}; set acme.challenge to the other one")
            })?;
            let key_auth = ch.key_authorization();
            match kind {
                ChallengeType::TlsAlpn01 => {
                    let (cert, pem) = challenge_certificate(&domain, key_auth.digest().as_ref())?;
                    self.store.set_challenge(&domain, cert, &pem);
                }
                _ => self.tokens.set(&ch.token, key_auth.as_str()),
            }
            ch.set_ready()
                .await
                .map_err(|e| format!("challenge for {domain}: {e}"))?;
        }
        let policy = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .timeout(POLL_TIMEOUT);
        let status = order
            .poll_ready(&policy)
            .await
            .map_err(|e| format!("waiting for validation: {e}"))?;
        if status != OrderStatus::Ready {
            return Err(format!(
                "the directory did not validate {}: order {status:?}{}",
                self.settings.domains.join(", "),
                why_invalid(&mut order).await
            ));
        }
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let params = rcgen::CertificateParams::new(self.settings.domains.clone())
            .map_err(|e| e.to_string())?;
        let csr = params
            .serialize_request(&key)
            .map_err(|e| format!("CSR: {e}"))?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(|e| format!("finalize: {e}"))?;
        let chain = order
            .poll_certificate(&policy)
            .await
            .map_err(|e| format!("certificate download: {e}"))?;
        let key_pem = key.serialize_pem();
        let loaded = Loaded::from_pem(chain.as_bytes(), key_pem.as_bytes(), Source::Acme)
            .map_err(|e| format!("the issued certificate: {e}"))?;
        let d = self.cert_dir();
        storage::write_private(&d.join("key.pem"), key_pem.as_bytes())
            .map_err(|e| format!("{}: {e}", d.display()))?;
        storage::write_private(&d.join("cert.pem"), chain.as_bytes())
            .map_err(|e| format!("{}: {e}", d.display()))?;
        Ok(loaded)
    }
}

/// The errors of an invalid order's challenges, for the log.
async fn why_invalid(order: &mut instant_acme::Order) -> String {
    let mut why = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(a)) = authorizations.next().await {
        for c in &a.challenges {
            if let Some(p) = &c.error {
                why.push(format!(
                    "{}: {}",
                    a.identifier(),
                    p.detail.as_deref().unwrap_or("invalid")
                ));
            }
        }
    }
    if why.is_empty() {
        String::new()
    } else {
        format!(" ({})", why.join("; "))
    }
}

/// The self-signed certificate that answers tls-alpn-01 for `domain`: the
/// name and the critical acmeIdentifier extension holding the SHA-256 of
/// the key authorization (RFC 8737 §3).
/// Also as PEM (certificate, then key), for replicas.
fn challenge_certificate(
    domain: &str,
    digest: &[u8],
) -> Result<(Arc<rustls::sign::CertifiedKey>, String), String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(vec![domain.to_string()]).map_err(|e| e.to_string())?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let pem = format!("{}{}", cert.pem(), key.serialize_pem());
    Ok((super::resolver::challenge_key(pem.as_bytes())?, pem))
}

/// A folder name for a directory URL: its host, port and path.
fn directory_folder(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let name: String = rest
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    name.trim_matches('_').to_string()
}

/// A random number (for the ARI window): std's per-process random hash
/// keys, no dependency.
fn random() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_folders_are_plain_names() {
        assert_eq!(
            directory_folder("https://acme-v02.api.letsencrypt.org/directory"),
            "acme-v02.api.letsencrypt.org_directory"
        );
        assert_eq!(
            directory_folder("https://127.0.0.1:14000/dir"),
            "127.0.0.1_14000_dir"
        );
    }

    #[test]
    fn challenge_certificates_carry_the_acme_identifier() {
        let (ck, pem) = challenge_certificate("example.test", &[7u8; 32]).unwrap();
        assert!(pem.contains("BEGIN CERTIFICATE") && pem.contains("PRIVATE KEY"));
        let (_, cert) = x509_parser::parse_x509_certificate(ck.cert[0].as_ref()).unwrap();
        // id-pe-acmeIdentifier, 1.3.6.1.5.5.7.1.31 (RFC 8737 §6.1).
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier");
        assert!(ext.critical);
        // An OCTET STRING of the 32-byte digest.
        assert_eq!(&ext.value[..2], &[0x04, 32]);
        assert_eq!(&ext.value[2..], &[7u8; 32]);
    }
}
