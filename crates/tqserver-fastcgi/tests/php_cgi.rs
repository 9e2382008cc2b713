//! The client against real `php-cgi -b`.

mod common;

use std::collections::BTreeSet;

use common::{PhpCgi, cgi_params, scenarios};
use tqserver_fastcgi::client::Request;
use tqserver_fastcgi::{Client, ClientConfig};

fn client(cgi: &PhpCgi, max: usize) -> Client {
    Client::new(cgi.address.clone(), ClientConfig::new(max))
}

#[tokio::test]
async fn get_over_tcp_and_unix() {
    let cgi = PhpCgi::start(0, 0, false).await;
    scenarios::get_hello(&client(&cgi, 1)).await;
    let cgi = PhpCgi::start(0, 0, true).await;
    scenarios::get_hello(&client(&cgi, 1)).await;
}

#[tokio::test]
async fn post_10mb_checksum_echoed() {
    let cgi = PhpCgi::start(0, 0, false).await;
    scenarios::post_10mb(&client(&cgi, 1)).await;
}

#[tokio::test]
async fn status_location_and_cookies() {
    let cgi = PhpCgi::start(0, 0, false).await;
    scenarios::status_location_cookies(&client(&cgi, 1)).await;
}

#[tokio::test]
async fn error_log_arrives_as_stderr() {
    let cgi = PhpCgi::start(0, 0, false).await;
    scenarios::stderr_lines(&client(&cgi, 1)).await;
}

#[tokio::test]
async fn params_block_over_64k() {
    let cgi = PhpCgi::start(0, 0, false).await;
    scenarios::params_over_64k(&client(&cgi, 1)).await;
}

#[tokio::test]
async fn keep_conn_reuses_one_connection_for_1000_requests() {
    let cgi = PhpCgi::start(0, 0, false).await;
    scenarios::keep_conn_1000(&client(&cgi, 1)).await;
}

/// php-cgi children exit after `PHP_FCGI_MAX_REQUESTS` and close the
/// connection we keep; the pool notices (or retries once) and no request
/// fails.
#[tokio::test]
async fn child_exiting_after_max_requests_is_invisible_to_callers() {
    let cgi = PhpCgi::start(1, 3, false).await;
    let client = client(&cgi, 1);
    let mut pids = BTreeSet::new();
    for _ in 0..12 {
        let (status, pid) =
            scenarios::text(&client, Request::new(cgi_params("pid.php", "GET", "", 0))).await;
        assert_eq!(status, 200);
        pids.insert(pid);
        // Let the parent respawn the child, as real traffic would.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(pids.len() >= 4, "a new child every 3 requests: {pids:?}");
    assert!(client.stats().connects >= 4, "{:?}", client.stats());
}

/// php-cgi answers `FCGI_GET_VALUES` with its `PHP_FCGI_CHILDREN`, which
/// is the number of connections it can serve at once.
#[tokio::test]
async fn get_values_from_php_cgi() {
    let cgi = PhpCgi::start(2, 0, false).await;
    let values = client(&cgi, 2)
        .get_values(&["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"])
        .await
        .unwrap();
    assert_eq!(values.get_str("FCGI_MAX_CONNS"), Some("2"));
    assert_eq!(values.get_str("FCGI_MAX_REQS"), Some("2"));
    assert_eq!(values.get_str("FCGI_MPXS_CONNS"), Some("0"));
}
