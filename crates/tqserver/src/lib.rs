//! TQServer: an HTTP server that routes URL prefixes to workers: PHP
//! workers on php-fpm or its own php-cgi pool, and native workers (Rust,
//! Go, any command) it builds, supervises and hot-reloads.
//!
//! # Layout
//!
//! - [`cli`]: the command line (`main.rs` only calls it).
//! - [`config`]: server.yaml and worker.yaml, read, resolved, checked.
//! - [`server`]: start-up order, serving, the shutdown's phases.
//! - [`fronts`]: the public and admin listeners (rebound by reloads).
//! - [`reload`]: live configuration (watcher, SIGHUP, `tqserver reload`):
//!   the diff of a new configuration, and the worker factory.
//! - [`app`]: the public front's handler: routing, what is recorded per
//!   request, dev-mode live reload.
//! - [`workers`]: a running worker of any kind — the only module that
//!   knows the kinds.
//! - [`http`]: the HTTP transport, generic over a handler: connections,
//!   timeouts, limits, bodies, static files, error pages.
//! - [`php`]: script resolution, CGI params, the php-fpm backend, the
//!   php-cgi pool, proxying, the FastCGI listener.
//! - [`native`]: native workers: build, instances, supervisor, HTTP proxy.
//! - [`certs`]: HTTPS certificates: files (watched), a local CA, ACME.
//! - [`watch`]: the file watcher behind hot reload and live configuration.
//! - [`process`]: child processes that cannot outlive TQServer (and the
//!   watchdog).
//! - [`privileges`]: `server.user` / `server.group` when started as root.
//! - [`runtime`]: the private runtime directory (0700, files 0600).
//! - [`supervise`]: what every supervised process shares: backoff, readiness.
//! - [`systemd`]: `Type=notify` readiness (`READY=1`, `STOPPING=1`).
//! - [`ports`], [`logging`]: the worker port range; server and worker logs.
//! - [`metrics`], [`access`], [`admin`]: Prometheus metrics, access log
//!   lines, and the admin listener (health, metrics, status pages,
//!   dashboard).

pub mod access;
pub mod admin;
pub mod app;
pub mod certs;
pub mod cli;
pub mod config;
pub mod egress;
pub mod fronts;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod native;
pub mod php;
pub mod ports;
pub mod privileges;
pub mod process;
pub mod reload;
pub mod runtime;
pub mod server;
pub mod supervise;
pub mod systemd;
pub mod watch;
pub mod workers;
