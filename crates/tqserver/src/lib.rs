//! TQServer: an HTTP server that routes URL prefixes to workers and runs
//! PHP workers on php-fpm it configures and supervises.
//!
//! # Layout
//!
//! - [`cli`]: the command line (`main.rs` only calls it).
//! - [`config`]: server.yaml and worker.yaml, read, resolved, checked.
//! - [`app`]: start-up, the request handler, shutdown.
//! - [`http`]: the hyper server, routing, timeouts, static files, error pages.
//! - [`php`]: script resolution, CGI params, the php-fpm backend, proxying.
//! - [`process`]: child processes that cannot outlive TQServer.
//! - [`ports`], [`logging`]: the worker port range; server and worker logs.

pub mod app;
pub mod cli;
pub mod config;
pub mod http;
pub mod logging;
pub mod php;
pub mod ports;
pub mod process;
