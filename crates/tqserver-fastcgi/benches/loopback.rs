//! Loopback throughput: our client against the `fastcgi-client` crate
//! (0.12, the most used Rust FastCGI client), both talking to the same
//! server (ours) over 127.0.0.1, in the same run, rounds interleaved.
//!
//! Server and client run on separate single-threaded runtimes (one core
//! each on a 2-core machine). Each run is `TQ_BENCH_SECS` seconds (default
//! 2); each cell is the median of `TQ_BENCH_ROUNDS` rounds (default 3).
//! With `TQ_BENCH_OUT=path`, a Markdown table is written there.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use fastcgi_client::StreamExt;
use fastcgi_client::response::Content;
use nix::sys::resource::{UsageWho, getrusage};
use tqserver_fastcgi::client::Request;
use tqserver_fastcgi::server::{Request as SrvRequest, ResponseWriter, Server, ServerConfig};
use tqserver_fastcgi::transport::Stream;
use tqserver_fastcgi::{Address, Client, ClientConfig, Params};

const BIG: usize = 1 << 20;
const HEAD: &[u8] = b"Content-Type: application/octet-stream\r\n\r\n";

/// `SCRIPT_NAME=/big` → 1 MiB body in 64 KiB writes; else a 13-byte body.
async fn handler(req: SrvRequest, mut out: ResponseWriter) -> u32 {
    static BODY: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    let body = BODY.get_or_init(|| Bytes::from(vec![b'x'; BIG]));
    if req.params().get_str("SCRIPT_NAME") == Some("/big") {
        let _ = out.write_stdout(Bytes::from_static(HEAD)).await;
        for i in 0..16 {
            let _ = out.write_stdout(body.slice(i << 16..(i + 1) << 16)).await;
        }
    } else {
        let _ = out
            .write_stdout(Bytes::from_static(
                b"Content-Type: text/plain\r\n\r\nHello, world!",
            ))
            .await;
    }
    0
}

#[derive(Clone, Copy, PartialEq)]
enum Who {
    Ours,
    TheirsStream,
    TheirsBuffered,
}

impl Who {
    fn name(self) -> &'static str {
        match self {
            Who::Ours => "tqserver-fastcgi",
            Who::TheirsStream => "fastcgi-client 0.12 (execute_stream)",
            Who::TheirsBuffered => "fastcgi-client 0.12 (execute)",
        }
    }
}

fn our_params(script: &str) -> Params {
    Params::new()
        .with("REQUEST_METHOD", "GET")
        .with("SCRIPT_NAME", script.to_string())
        .with("SCRIPT_FILENAME", format!("/srv{script}"))
        .with("REQUEST_URI", script.to_string())
        .with("SERVER_PROTOCOL", "HTTP/1.1")
        .with("REMOTE_ADDR", "127.0.0.1")
        .with("CONTENT_LENGTH", "0")
}

fn their_params(script: &str) -> fastcgi_client::Params<'static> {
    fastcgi_client::Params::default()
        .request_method("GET")
        .script_name(script.to_string())
        .script_filename(format!("/srv{script}"))
        .request_uri(script.to_string())
        .server_protocol("HTTP/1.1")
        .remote_addr("127.0.0.1")
        .content_length(0)
}

/// Requests completed in `secs` by `conns` concurrent callers, and bytes.
async fn run(who: Who, addr: &Address, script: &str, conns: usize, secs: f64) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let expect = if script == "/big" { BIG } else { 13 };
    let mut tasks = Vec::new();
    let ours = Client::new(addr.clone(), ClientConfig::new(conns));
    for _ in 0..conns {
        let ours = ours.clone();
        let addr = addr.clone();
        let script = script.to_string();
        tasks.push(tokio::task::spawn_local(async move {
            match who {
                Who::Ours => {
                    let (mut reqs, mut bytes) = (0u64, 0u64);
                    let params = our_params(&script);
                    while Instant::now() < deadline {
                        let resp = ours.request(Request::new(params.clone())).await.unwrap();
                        let (_, mut body) = resp.into_parts();
                        let mut n = 0;
                        while let Some(c) = body.chunk().await {
                            n += c.unwrap().len();
                        }
                        assert_eq!(n, expect);
                        reqs += 1;
                        bytes += n as u64;
                    }
                    (reqs, bytes)
                }
                Who::TheirsStream | Who::TheirsBuffered => {
                    let params = their_params(&script);
                    match addr.connect().await.unwrap() {
                        Stream::Tcp(s) => theirs(who, s, &params, expect, deadline).await,
                        Stream::Unix(s) => theirs(who, s, &params, expect, deadline).await,
                    }
                }
            }
        }));
    }
    let mut total = (0, 0);
    for t in tasks {
        let (r, b) = t.await.unwrap();
        total.0 += r;
        total.1 += b;
    }
    total
}

async fn theirs<S>(
    who: Who,
    stream: S,
    params: &fastcgi_client::Params<'static>,
    expect: usize,
    deadline: Instant,
) -> (u64, u64)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut reqs, mut bytes) = (0u64, 0u64);
    let mut client = fastcgi_client::Client::new_keep_alive_tokio(stream);
    while Instant::now() < deadline {
        let req = fastcgi_client::Request::new(params.clone(), fastcgi_client::io::empty());
        let n = if who == Who::TheirsStream {
            let mut s = client.execute_stream(req).await.unwrap();
            let mut n = 0;
            while let Some(c) = s.next().await {
                if let Content::Stdout(b) = c.unwrap() {
                    n += b.len();
                }
            }
            n
        } else {
            client
                .execute(req)
                .await
                .unwrap()
                .stdout
                .map_or(0, |s| s.len())
        };
        // Their stdout includes the CGI head.
        assert!(n >= expect);
        reqs += 1;
        bytes += n as u64;
    }
    (reqs, bytes)
}

/// CPU time (user + system) of the calling thread.
fn thread_cpu() -> Duration {
    let u = getrusage(UsageWho::RUSAGE_THREAD).unwrap();
    let tv =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    tv(u.user_time()) + tv(u.system_time())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; accept and ignore harness flags.
    let secs: f64 = std::env::var("TQ_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let rounds: usize = std::env::var("TQ_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let unix: Address = format!("unix:{}", dir.path().join("bench.sock").display())
        .parse()
        .unwrap();
    let addrs = server_rt.block_on(async {
        let mut addrs = Vec::new();
        for a in ["127.0.0.1:0".parse().unwrap(), unix] {
            let server = Server::bind(&a, ServerConfig::default()).await.unwrap();
            addrs.push(server.local_addr().unwrap());
            tokio::spawn(server.serve(handler, std::future::pending()));
        }
        addrs
    });

    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    let cases = [
        ("1 MiB responses", "/big", 1usize),
        ("1 MiB responses", "/big", 4),
        ("13-byte responses", "/tiny", 1),
        ("13-byte responses", "/tiny", 4),
    ];
    // TQ_BENCH_ONLY=big|tiny runs one workload (for profiling).
    let only = std::env::var("TQ_BENCH_ONLY").ok();
    let whos = [Who::Ours, Who::TheirsStream, Who::TheirsBuffered];
    // TQ_BENCH_WHO=ours|stream|buffered runs one client only (for profiling).
    let who_only = std::env::var("TQ_BENCH_WHO").ok();
    let whos: Vec<Who> = whos
        .into_iter()
        .filter(|w| match who_only.as_deref() {
            Some("ours") => *w == Who::Ours,
            Some("stream") => *w == Who::TheirsStream,
            Some("buffered") => *w == Who::TheirsBuffered,
            _ => true,
        })
        .collect();
    let mut table = String::from(
        "| transport | workload | connections | client | requests/s | MB/s | client CPU µs/request | throughput: ours ÷ this | CPU: this ÷ ours |\n|---|---|---:|---|---:|---:|---:|---:|---:|\n",
    );
    for addr in &addrs {
        let transport = match addr {
            Address::Tcp(_) => "TCP",
            Address::Unix(_) => "Unix",
        };
        for (label, script, conns) in cases {
            if only.as_deref().is_some_and(|o| !script.ends_with(o)) {
                continue;
            }
            // Warm-up, then interleaved rounds so drift hits every client alike.
            local.block_on(&client_rt, async {
                for &who in &whos {
                    run(who, addr, script, conns, 0.3).await;
                }
            });
            let mut rps: Vec<Vec<f64>> = vec![Vec::new(); whos.len()];
            let mut mbs: Vec<Vec<f64>> = vec![Vec::new(); whos.len()];
            let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); whos.len()];
            for _ in 0..rounds {
                for (i, who) in whos.iter().enumerate() {
                    let before = thread_cpu();
                    let (r, b) = local.block_on(&client_rt, run(*who, addr, script, conns, secs));
                    let used = thread_cpu() - before;
                    rps[i].push(r as f64 / secs);
                    mbs[i].push(b as f64 / secs / 1e6);
                    cpu[i].push(used.as_secs_f64() * 1e6 / r as f64);
                }
            }
            let (ours_rps, ours_cpu) = if whos[0] == Who::Ours {
                (median(rps[0].clone()), median(cpu[0].clone()))
            } else {
                (f64::NAN, f64::NAN)
            };
            for (i, who) in whos.iter().enumerate() {
                let r = median(rps[i].clone());
                let m = median(mbs[i].clone());
                let c = median(cpu[i].clone());
                let (tr, cr) = if i == 0 {
                    ("—".to_string(), "—".to_string())
                } else {
                    (
                        format!("{:.2}×", ours_rps / r),
                        format!("{:.2}×", c / ours_cpu),
                    )
                };
                let m = if script == "/big" {
                    format!("{m:.0}")
                } else {
                    "—".to_string()
                };
                let line = format!(
                    "| {transport} | {label} | {conns} | {} | {r:.0} | {m} | {c:.1} | {tr} | {cr} |\n",
                    who.name()
                );
                print!("{line}");
                table.push_str(&line);
            }
        }
    }
    // The goal of the FastCGI work: at least 1.5x fastcgi-client's throughput.
    let ratios: Vec<(String, f64)> = table
        .lines()
        .filter(|l| l.contains("fastcgi-client"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let r = cells.get(8)?.trim_end_matches('×').parse().ok()?;
            Some((
                format!("{} {} ×{} {}", cells[1], cells[2], cells[3], cells[4]),
                r,
            ))
        })
        .collect();
    if !ratios.is_empty() {
        let met = ratios.iter().filter(|(_, r)| *r >= 1.5).count();
        let (lo_case, lo) = ratios.iter().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
        let (hi_case, hi) = ratios.iter().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
        let line = format!(
            "\nThroughput goal (at least 1.5× fastcgi-client): met in {met} of {} comparisons; lowest {lo:.2}× ({lo_case}), highest {hi:.2}× ({hi_case}).\n",
            ratios.len()
        );
        print!("{line}");
        table.push_str(&line);
    }
    if let Ok(path) = std::env::var("TQ_BENCH_OUT") {
        std::fs::write(path, table).unwrap();
    }
}
