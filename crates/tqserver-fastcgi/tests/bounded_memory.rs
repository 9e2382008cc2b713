//! 50 MB responses read with bounded memory, from real php-fpm and php-cgi.
//! Alone in this test binary because it measures the process's peak RSS:
//! the two tests here stream, so running them side by side stays bounded.

mod common;

use common::{PhpCgi, PhpFpm, scenarios};
use tqserver_fastcgi::{Client, ClientConfig};

#[tokio::test]
async fn php_fpm_50mb_response() {
    let fpm = PhpFpm::start(1, false).await;
    let client = Client::new(fpm.address.clone(), ClientConfig::new(1));
    scenarios::response_50mb_bounded_memory(&client).await;
}

#[tokio::test]
async fn php_cgi_50mb_response() {
    let cgi = PhpCgi::start(0, 0, true).await;
    let client = Client::new(cgi.address.clone(), ClientConfig::new(1));
    scenarios::response_50mb_bounded_memory(&client).await;
}
