//! The client against real php-fpm (`php-fpm -F -y`, `-R` only as root).

mod common;

use common::{PhpFpm, cgi_params, scenarios};
use tqserver_fastcgi::client::Request;
use tqserver_fastcgi::{Client, ClientConfig};

fn client(fpm: &PhpFpm, max: usize) -> Client {
    Client::new(fpm.address.clone(), ClientConfig::new(max))
}

#[tokio::test]
async fn get_over_unix_socket() {
    let fpm = PhpFpm::start(2, true).await;
    scenarios::get_hello(&client(&fpm, 2)).await;
}

#[tokio::test]
async fn get_over_tcp() {
    let fpm = PhpFpm::start(2, false).await;
    scenarios::get_hello(&client(&fpm, 2)).await;
}

#[tokio::test]
async fn post_10mb_checksum_echoed() {
    let fpm = PhpFpm::start(1, true).await;
    scenarios::post_10mb(&client(&fpm, 1)).await;
}

#[tokio::test]
async fn status_location_and_cookies() {
    let fpm = PhpFpm::start(1, true).await;
    scenarios::status_location_cookies(&client(&fpm, 1)).await;
}

#[tokio::test]
async fn error_log_arrives_as_stderr() {
    let fpm = PhpFpm::start(1, true).await;
    scenarios::stderr_lines(&client(&fpm, 1)).await;
}

#[tokio::test]
async fn params_block_over_64k() {
    let fpm = PhpFpm::start(1, true).await;
    scenarios::params_over_64k(&client(&fpm, 1)).await;
}

#[tokio::test]
async fn keep_conn_reuses_one_connection_for_1000_requests() {
    let fpm = PhpFpm::start(2, false).await;
    scenarios::keep_conn_1000(&client(&fpm, 1)).await;
}

/// With the pool sized to the children, 8 concurrent callers against 2
/// php-fpm children all get served: requests queue in the client, never
/// behind an idle connection in php-fpm's listen queue.
#[tokio::test]
async fn pool_sized_to_children_serves_more_callers_than_children() {
    let fpm = PhpFpm::start(2, true).await;
    let client = client(&fpm, 2);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                let (status, body) =
                    scenarios::text(&c, Request::new(cgi_params("sleep.php", "GET", "ms=1", 0)))
                        .await;
                assert_eq!(status, 200);
                assert!(body.starts_with("slept "));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = client.stats();
    assert!(stats.open <= 2 && stats.connects <= 2, "{stats:?}");
}
