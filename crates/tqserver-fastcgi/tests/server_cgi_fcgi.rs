//! Our server against the real `cgi-fcgi` client (Debian's libfcgi-bin),
//! over TCP and a Unix socket.

mod common;

use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tqserver_fastcgi::server::{Request, ResponseWriter, Server, ServerConfig};
use tqserver_fastcgi::transport::Address;

use common::{find_binary, scenarios::noise, sha256_hex};

/// Echoes the method, body length and SHA-256, and `CONTENT_LENGTH`; with
/// `QUERY_STRING=big=N`, appends N bytes; writes one `STDERR` line.
async fn echo(mut req: Request, mut out: ResponseWriter) -> u32 {
    let p = req.params().clone();
    let body = req.stdin().read_to_end(64 << 20).await.unwrap();
    let method = p.get_str("REQUEST_METHOD").unwrap_or("-").to_string();
    let head = format!(
        "Status: 201 Created\r\nContent-Type: text/plain\r\nX-Method: {method}\r\n\r\n{method} {} {} {}\n",
        body.len(),
        sha256_hex(&body),
        p.get_str("CONTENT_LENGTH").unwrap_or("-"),
    );
    out.write_stdout(head).await.unwrap();
    if let Some(n) = p
        .get_str("QUERY_STRING")
        .and_then(|q| q.strip_prefix("big="))
        .and_then(|n| n.parse::<usize>().ok())
    {
        let data = bytes::Bytes::from(noise(n, 3));
        // In pieces of various sizes, as a real application writes.
        let mut at = 0;
        for size in [1usize, 10, 100, 8191, 65535, 65536, 200_000]
            .iter()
            .cycle()
        {
            if at >= n {
                break;
            }
            let end = (at + size).min(n);
            out.write_stdout(data.slice(at..end)).await.unwrap();
            at = end;
        }
    }
    out.write_stderr("echo handler was here\n").await.unwrap();
    0
}

async fn start(address: &str) -> (Address, tokio::task::JoinHandle<()>) {
    let server = Server::bind(&address.parse().unwrap(), ServerConfig::default())
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let task = tokio::spawn(async move {
        server.serve(echo, std::future::pending()).await.unwrap();
    });
    (addr, task)
}

/// Runs one request through `cgi-fcgi -bind -connect`, which sends its
/// environment as params and its stdin as the body.
async fn cgi_fcgi(address: &Address, method: &str, query: &str, body: &[u8]) -> (Vec<u8>, String) {
    let bin = find_binary(&["cgi-fcgi"]).expect(
        "cgi-fcgi not found: install libfcgi-bin, or run the README test command, which does",
    );
    let connect = match address {
        Address::Tcp(a) => a.clone(),
        Address::Unix(p) => p.to_string_lossy().into_owned(),
    };
    let mut child = tokio::process::Command::new(bin)
        .args(["-bind", "-connect", &connect])
        .env_clear()
        .env("REQUEST_METHOD", method)
        .env("QUERY_STRING", query)
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("SCRIPT_FILENAME", "/srv/echo")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let body = body.to_vec();
    let feeder = tokio::spawn(async move {
        stdin.write_all(&body).await.unwrap();
    });
    let out = child.wait_with_output().await.unwrap();
    feeder.await.unwrap();
    assert!(
        out.status.success(),
        "cgi-fcgi failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn split_head(out: &[u8]) -> (String, &[u8]) {
    let at = out.windows(4).position(|w| w == b"\r\n\r\n").expect("head");
    (
        String::from_utf8_lossy(&out[..at]).into_owned(),
        &out[at + 4..],
    )
}

#[tokio::test]
async fn get_over_tcp() {
    let (addr, _task) = start("127.0.0.1:0").await;
    let (out, err) = cgi_fcgi(&addr, "GET", "", b"").await;
    let (head, body) = split_head(&out);
    assert!(
        head.contains("Status: 201 Created") && head.contains("X-Method: GET"),
        "{head}"
    );
    assert_eq!(body, format!("GET 0 {} 0\n", sha256_hex(b"")).as_bytes());
    assert!(err.contains("echo handler was here"), "stderr: {err}");
}

#[tokio::test]
async fn post_and_large_response_over_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("tq.sock");
    let (addr, _task) = start(&format!("unix:{}", sock.display())).await;
    let data = noise(3 << 20, 11);
    let (out, _) = cgi_fcgi(&addr, "POST", "big=2000000", &data).await;
    let (_, body) = split_head(&out);
    let line_end = body.iter().position(|&b| b == b'\n').unwrap() + 1;
    assert_eq!(
        &body[..line_end],
        format!("POST {} {} {}\n", data.len(), sha256_hex(&data), data.len()).as_bytes()
    );
    assert_eq!(&body[line_end..], &noise(2_000_000, 3)[..]);
}

#[tokio::test]
async fn many_cgi_fcgi_clients_at_once() {
    let (addr, _task) = start("127.0.0.1:0").await;
    let mut runs = Vec::new();
    for i in 0..16 {
        let addr = addr.clone();
        runs.push(tokio::spawn(async move {
            let data = noise(1000 * i + 1, i as u64);
            let (out, _) = cgi_fcgi(&addr, "PUT", "", &data).await;
            let (_, body) = split_head(&out);
            assert_eq!(
                body,
                format!("PUT {} {} {}\n", data.len(), sha256_hex(&data), data.len()).as_bytes()
            );
        }));
    }
    for r in runs {
        r.await.unwrap();
    }
}
