//! FastCGI 1.0 for TQServer: a sans-IO codec, a pooled streaming client
//! for php-fpm / php-cgi, and a multiplexing server for web servers that
//! speak FastCGI to us.
//!
//! # Layout
//!
//! - [`proto`]: records, name-value pairs and the CGI response head as pure
//!   functions over bytes; every length bounded by [`proto::Limits`].
//! - [`client`]: [`client::Client`] sends requests over a keep-alive
//!   connection pool sized to the application's processes, streams the body
//!   both ways, and retries once on a dead reused connection.
//! - [`server`]: [`server::Server`] accepts connections (TCP or Unix),
//!   demultiplexes requests, answers management records, and runs a
//!   [`server::Handler`] per request.
//! - [`transport`]: addresses, streams and listeners shared by both sides.
//!
//! The bugs this crate exists to avoid (each has a regression test): records
//! arriving together in one read, responses over 8 KiB, streams over 64 KiB
//! written with a truncated 16-bit length, and headers after `Status:` lost.

#![forbid(unsafe_code)]

pub mod client;
pub mod proto;
pub mod server;
pub mod transport;
mod write_queue;

pub use client::{Client, ClientConfig, ClientError};
pub use proto::{Limits, Params};
pub use server::{Handler, Server, ServerConfig};
pub use transport::Address;
