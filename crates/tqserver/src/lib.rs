//! TQServer: an HTTP server that routes URL prefixes to workers: PHP
//! workers on php-fpm or its own php-cgi pool, and native workers (Rust,
//! Go, any command) it builds, supervises and hot-reloads.
//!
//! # Layout
//!
//! - [`cli`]: the command line (`main.rs` only calls it).
//! - [`config`]: server.yaml and worker.yaml, read, resolved, checked.
//! - [`app`]: start-up, the request handler, the listeners, shutdown.
//! - [`reload`]: live configuration (watcher, SIGHUP, `tqserver reload`).
//! - [`http`]: the hyper server, routing, timeouts, static files, error pages.
//! - [`php`]: script resolution, CGI params, the php-fpm backend, proxying.
//! - [`native`]: native workers: build, instances, supervisor, HTTP proxy.
//! - [`watch`]: the file watcher behind hot reload and live configuration.
//! - [`process`]: child processes that cannot outlive TQServer (and the
//!   watchdog).
//! - [`privileges`]: `server.user` / `server.group` when started as root.
//! - [`runtime`]: the private runtime directory (0700, files 0600).
//! - [`systemd`]: `Type=notify` readiness (`READY=1`, `STOPPING=1`).
//! - [`ports`], [`logging`]: the worker port range; server and worker logs.
//! - [`metrics`], [`access`], [`admin`]: Prometheus metrics, access log
//!   lines, and the admin listener (health, metrics, status pages,
//!   dashboard).

pub mod access;
pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
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
pub mod systemd;
pub mod watch;
