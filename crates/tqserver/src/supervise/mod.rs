//! What every supervised thing shares — php-fpm masters, php-cgi
//! processes, native worker instances — so each is written once:
//!
//! - [`backoff`]: restart delays, one [`backoff::Backoff`] with named
//!   policies;
//! - [`ready`]: readiness published on a `watch`, waited for with
//!   `wait_for` and a timeout (never sleep-polling);
//! - [`scope::Scope`]: what every worker starts in, and the shutdown phase
//!   its supervising tasks belong to;
//! - stopping a child is [`crate::process::stop`] (signal, grace, kill,
//!   reap, and whether it had to escalate).

pub mod backoff;
pub mod ready;
pub mod scope;

pub use backoff::{Backoff, Policy};
pub use ready::Ready;
pub use scope::Scope;
