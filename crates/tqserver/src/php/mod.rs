//! PHP workers: script resolution, HTTP → CGI params, the php-fpm backend
//! and the request path between them.

pub mod cgi;
pub mod fpm;
pub mod listener;
pub mod params;
pub mod proxy;
pub mod script;
pub mod upstream;
