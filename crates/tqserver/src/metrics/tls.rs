//! HTTPS metrics: each certificate's time to expiry (sampled at scrape
//! time from what handshakes are served with), TLS handshakes, ACME
//! attempts, and requests by scheme and protocol.

use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// One certificate in use, at scrape time.
#[derive(Debug, Clone, PartialEq)]
pub struct CertSample {
    /// Its first name.
    pub name: String,
    /// `files`, `acme` or `internal`.
    pub source: &'static str,
    /// Seconds until it expires (negative once it has).
    pub seconds_left: f64,
}

/// Encodes the certificates sampled for the current scrape.
#[derive(Debug, Default)]
pub struct CertsCollector {
    samples: Mutex<Vec<CertSample>>,
}

impl CertsCollector {
    /// Puts the samples of this scrape in place.
    pub fn set(&self, samples: Vec<CertSample>) {
        *self.samples.lock().unwrap_or_else(|e| e.into_inner()) = samples;
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertLabels {
    name: String,
    source: &'static str,
}

impl Collector for CertsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let samples = self
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // Declared without samples too (no HTTPS, no certificate yet).
        let mut m = encoder.encode_descriptor(
            "tqserver_tls_certificate_expiry_seconds",
            "Seconds until a certificate in use expires (negative: expired), by its first name and where it came from",
            None,
            MetricType::Gauge,
        )?;
        for s in &samples {
            let l = CertLabels {
                name: s.name.clone(),
                source: s.source,
            };
            ConstGauge::new(s.seconds_left).encode(m.encode_family(&l)?)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    scheme: &'static str,
    protocol: &'static str,
}

/// Request protocols with a series of their own.
const PROTOCOLS: [&str; 3] = ["http/1.0", "http/1.1", "h2"];

/// The HTTPS families.
#[derive(Clone)]
pub struct TlsMetrics {
    handshakes: [Counter; 3],
    acme: [Counter; 2],
    /// `[scheme][protocol]`: http, https × [`PROTOCOLS`].
    requests: [[Counter; 3]; 2],
    /// Certificates, filled just before each scrape.
    pub certs: std::sync::Arc<CertsCollector>,
}

impl std::fmt::Debug for TlsMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMetrics").finish_non_exhaustive()
    }
}

impl TlsMetrics {
    /// Registers the families in `registry` (every series from the start,
    /// at 0, so `increase()` sees the first).
    pub fn register(registry: &mut Registry) -> Self {
        let handshakes_f = Family::<ResultLabel, Counter>::default();
        let handshakes = ["ok", "failed", "acme_challenge"]
            .map(|result| handshakes_f.get_or_create_owned(&ResultLabel { result }));
        registry.register(
            "tqserver_tls_handshakes",
            "TLS handshakes on the HTTPS listener: ok, failed (timeout, bad hello, no certificate, no common version), or an ACME tls-alpn-01 check",
            handshakes_f,
        );
        let acme_f = Family::<ResultLabel, Counter>::default();
        let acme = ["success", "failure"]
            .map(|result| acme_f.get_or_create_owned(&ResultLabel { result }));
        registry.register(
            "tqserver_tls_acme_attempts",
            "Attempts to obtain or renew a certificate from the ACME directory, by result",
            acme_f,
        );
        let requests_f = Family::<ProtocolLabels, Counter>::default();
        let requests = ["http", "https"].map(|scheme| {
            PROTOCOLS.map(|protocol| {
                requests_f.get_or_create_owned(&ProtocolLabels { scheme, protocol })
            })
        });
        registry.register(
            "tqserver_http_requests_by_protocol",
            "Requests by scheme (http, https) and protocol (http/1.0, http/1.1, h2)",
            requests_f,
        );
        let certs = std::sync::Arc::new(CertsCollector::default());
        registry.register_collector(Box::new(certs.clone()));
        Self {
            handshakes,
            acme,
            requests,
            certs,
        }
    }

    /// A handshake ended: `Some(true)` ok, `Some(false)` failed, `None`
    /// an ACME challenge check.
    pub fn handshake(&self, ok: Option<bool>) {
        let i = match ok {
            Some(true) => 0,
            Some(false) => 1,
            None => 2,
        };
        self.handshakes[i].inc();
    }

    /// An ACME attempt ended.
    pub fn acme_attempt(&self, success: bool) {
        self.acme[usize::from(!success)].inc();
    }

    /// A request arrived over `https` (or not) with `version`.
    pub fn request(&self, https: bool, version: http::Version) {
        let p = match version {
            http::Version::HTTP_2 => 2,
            http::Version::HTTP_10 | http::Version::HTTP_09 => 0,
            _ => 1,
        };
        self.requests[usize::from(https)][p].inc();
    }
}
