//! The listeners TQServer serves HTTP on: the public ones (the app, plain
//! and TLS) and the admin listener. A reload can bind a new address; the old listener then
//! stops accepting and finishes its open connections. Every accept loop,
//! current or retired, is one task of its listener's [`TaskTracker`], so
//! the shutdown waits for exactly those.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::Admin;
use crate::app::App;
use crate::http::tls::Config as TlsConfig;

/// One listener's place: the accept loop running now (its stop), and
/// every accept loop it ever ran, retired ones still finishing.
struct Slot {
    current: Mutex<Option<CancellationToken>>,
    tasks: TaskTracker,
}

impl Slot {
    fn new() -> Self {
        Self {
            current: Mutex::new(None),
            tasks: TaskTracker::new(),
        }
    }

    /// Puts `next` in place; the one it replaces stops accepting.
    fn replace(&self, next: Option<CancellationToken>) {
        let old = std::mem::replace(
            &mut *self.current.lock().unwrap_or_else(|e| e.into_inner()),
            next,
        );
        if let Some(old) = old {
            old.cancel();
        }
    }

    /// Stops accepting and waits until every connection of every accept
    /// loop (current and retired) is done.
    async fn close(&self) {
        self.replace(None);
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// The public (plain and TLS) and admin listeners.
pub struct Fronts {
    public: Slot,
    secure: Slot,
    admin: Slot,
    grace: Duration,
}

/// The admin listener's connections get this long to finish at a stop
/// (short requests).
const ADMIN_GRACE: Duration = Duration::from_secs(1);

impl Fronts {
    /// No listener yet; connections get `grace` to finish at a stop.
    pub fn new(grace: Duration) -> Arc<Self> {
        Arc::new(Self {
            public: Slot::new(),
            secure: Slot::new(),
            admin: Slot::new(),
            grace,
        })
    }

    /// Serves `app` on `listener` (the one a previous call started stops
    /// accepting).
    pub fn start_public(&self, listener: TcpListener, app: Arc<App>) {
        let stop = CancellationToken::new();
        let (s, grace) = (stop.clone(), self.grace);
        self.public
            .tasks
            .spawn(crate::http::serve(listener, app, None, s, grace, "HTTP"));
        self.public.replace(Some(stop));
    }

    /// Serves `app` over TLS on `listener`, with the certificates and
    /// versions `tls` holds for each new handshake.
    pub fn start_secure(&self, listener: TcpListener, app: Arc<App>, tls: TlsConfig) {
        let stop = CancellationToken::new();
        let (s, grace) = (stop.clone(), self.grace);
        self.secure.tasks.spawn(crate::http::serve(
            listener,
            app,
            Some(tls),
            s,
            grace,
            "HTTPS",
        ));
        self.secure.replace(Some(stop));
    }

    /// Binds `addr` for HTTPS (or, with `None`, stops serving HTTPS); the
    /// old listener stops accepting and finishes its connections.
    pub async fn rebind_secure(
        &self,
        addr: Option<&str>,
        app: Arc<App>,
        tls: TlsConfig,
    ) -> std::io::Result<()> {
        match addr {
            Some(a) => {
                let l = TcpListener::bind(a).await?;
                tracing::info!("TQServer listening on https://{a}");
                self.start_secure(l, app, tls);
            }
            None => self.secure.replace(None),
        }
        Ok(())
    }

    /// Serves `admin` on `listener`.
    pub fn start_admin(&self, listener: TcpListener, admin: Arc<Admin>) {
        let addr = listener
            .local_addr()
            .map_or_else(|_| "?".into(), |a| a.to_string());
        tracing::info!(
            "admin listener on http://{addr} (dashboard /, /metrics, /status/{{worker}}, /healthz, /readyz, POST /reload)"
        );
        let stop = CancellationToken::new();
        let s = stop.clone();
        self.admin.tasks.spawn(crate::http::serve(
            listener,
            admin,
            None,
            s,
            ADMIN_GRACE,
            "admin",
        ));
        self.admin.replace(Some(stop));
    }

    /// Binds `addr` and serves `app` there; the old listener stops
    /// accepting and finishes its connections.
    pub async fn rebind_public(&self, addr: &str, app: Arc<App>) -> std::io::Result<()> {
        let l = TcpListener::bind(addr).await?;
        tracing::info!("TQServer listening on http://{addr}");
        self.start_public(l, app);
        Ok(())
    }

    /// Binds the new admin address (or closes the admin listener).
    pub async fn rebind_admin(
        &self,
        addr: Option<std::net::SocketAddr>,
        admin: Arc<Admin>,
    ) -> std::io::Result<()> {
        match addr {
            Some(a) => {
                let l = TcpListener::bind(a).await?;
                self.start_admin(l, admin);
            }
            None => self.admin.replace(None),
        }
        Ok(())
    }

    /// The front phase of the shutdown: stops accepting on the public
    /// listener and waits for its connections (and those of listeners a
    /// reload replaced).
    pub async fn close_public(&self) {
        tokio::join!(self.public.close(), self.secure.close());
    }

    /// The last phase: closes the admin listener (`/readyz` answers until
    /// here).
    pub async fn close_admin(&self) {
        self.admin.close().await;
    }
}
