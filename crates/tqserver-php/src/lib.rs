//! TQServer's own PHP runtime: a SAPI on libphp (Debian's
//! `libphp8.2-embed`) that starts PHP once in a master process and forks
//! FastCGI workers from it, so they share opcache and APCu and start warm.
//!
//! The `tqserver` binary runs this as `tqserver __tqserver-php [-v] [-c
//! php.ini] [-d key=value]…` with a listening socket as file descriptor 0,
//! the FastCGI convention php-cgi follows too, and `PHP_FCGI_CHILDREN`
//! children; TQServer's php-cgi pool (`php.pool.shared_memory`) drives it
//! as it drives php-cgi's master.
//!
//! # Layout
//! - `sapi.c`: the SAPI callbacks and PHP's globals (C, since they are
//!   macros over PHP's structs), `fastcgi_finish_request()`, and worker
//!   mode's `tqserver_handle_request()` (also named
//!   `frankenphp_handle_request`), which ends and starts PHP's per-request
//!   layer around the handler.
//! - [`php`]: the only unsafe code: the calls into `sapi.c` and the
//!   callbacks it makes back, behind [`php::startup`], [`php::run`] and
//!   [`php::run_worker`].
//! - [`serve`]: the FastCGI side of a child, pulled one request at a time.
//! - [`master`]: start-up, forking the children, replacing them, stopping;
//!   a child's classic loop or its worker script.
//!
//! Classic mode runs every request's script from scratch; worker mode
//! (`--worker script`) boots one script per process that loops on
//! `tqserver_handle_request()`. The master keeps a fixed number of
//! children (static), or (`--on-demand FIFO`, TQServer's dynamic and
//! ondemand managers) forks one for each byte TQServer writes.

// The workspace denies unsafe code; this crate is the documented
// exception (the FFI with libphp, fork, raw descriptors), each block with
// its reason.
#![allow(unsafe_code)]

pub mod master;
pub mod php;
pub mod serve;

/// The first argument that makes `tqserver` run as the PHP master.
pub const ARG: &str = "__tqserver-php";

/// What `-v` prints after the PHP version; TQServer checks for it.
pub const VERSION_MARK: &str = "(fpm-fcgi, embedded in TQServer)";

/// Whether this build has PHP in it (libphp8.2-embed and php8.2-dev were
/// there when it was built).
pub const AVAILABLE: bool = php::AVAILABLE;
