//! Codec speed: records and name-value pairs encoded and decoded, and the
//! CGI response head parsed, with no I/O. Throughput is in bytes (MB/s)
//! for large records and in elements (records/s) for small ones.
#![allow(missing_docs)]

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use tqserver_fastcgi::Limits;
use tqserver_fastcgi::proto::params::decode_pairs;
use tqserver_fastcgi::proto::record::{self, STREAM_CHUNK_LEN};
use tqserver_fastcgi::proto::{HeadParser, Params, StreamKind};

/// The params nginx's `fastcgi_params` plus a few request headers send.
fn typical_params() -> Params {
    [
        ("QUERY_STRING", "page=2&sort=desc"),
        ("REQUEST_METHOD", "GET"),
        ("CONTENT_TYPE", ""),
        ("CONTENT_LENGTH", ""),
        ("SCRIPT_NAME", "/blog/index.php"),
        ("REQUEST_URI", "/blog/index.php?page=2&sort=desc"),
        ("DOCUMENT_URI", "/blog/index.php"),
        ("DOCUMENT_ROOT", "/srv/www/blog/public"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_SCHEME", "http"),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("SERVER_SOFTWARE", "tqserver/0.1"),
        ("REMOTE_ADDR", "203.0.113.7"),
        ("REMOTE_PORT", "51234"),
        ("SERVER_ADDR", "10.0.0.2"),
        ("SERVER_PORT", "8080"),
        ("SERVER_NAME", "example.com"),
        ("REDIRECT_STATUS", "200"),
        ("SCRIPT_FILENAME", "/srv/www/blog/public/index.php"),
        ("HTTP_HOST", "example.com"),
        ("HTTP_USER_AGENT", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"),
        ("HTTP_ACCEPT", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("HTTP_ACCEPT_ENCODING", "gzip, deflate, br"),
        ("HTTP_ACCEPT_LANGUAGE", "en-US,en;q=0.9"),
        ("HTTP_COOKIE", "session=0123456789abcdef0123456789abcdef; theme=dark"),
    ]
    .into_iter()
    .collect()
}

const HEAD: &[u8] = b"X-Powered-By: PHP/8.2.36\r\nSet-Cookie: session=abc; path=/; HttpOnly\r\nExpires: Thu, 19 Nov 1981 08:52:00 GMT\r\nCache-Control: no-store, no-cache, must-revalidate\r\nPragma: no-cache\r\nContent-type: text/html; charset=UTF-8\r\n\r\n<!doctype html>";

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    let big = vec![7u8; STREAM_CHUNK_LEN];
    let mut buf = BytesMut::with_capacity(1 << 20);
    g.throughput(Throughput::Bytes(big.len() as u64));
    g.bench_function("stdout record 64 KiB", |b| {
        b.iter(|| {
            buf.clear();
            record::encode_stream(&mut buf, StreamKind::Stdout, 1, black_box(&big));
            black_box(buf.len())
        })
    });
    let small = vec![7u8; 100];
    g.throughput(Throughput::Elements(1000));
    g.bench_function("stdout records 100 B x1000", |b| {
        b.iter(|| {
            buf.clear();
            for _ in 0..1000 {
                record::encode_stream(&mut buf, StreamKind::Stdout, 1, black_box(&small));
            }
            black_box(buf.len())
        })
    });
    let params = typical_params();
    g.throughput(Throughput::Elements(1));
    g.bench_function("request head (begin + 25 params)", |b| {
        b.iter(|| {
            buf.clear();
            record::encode_begin_request(&mut buf, 1, tqserver_fastcgi::proto::Role::Responder, 1);
            record::encode_params(&mut buf, 1, black_box(&params));
            black_box(buf.len())
        })
    });
    g.finish();
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    let mut big = BytesMut::new();
    record::encode_stream(&mut big, StreamKind::Stdout, 1, &vec![7u8; 1 << 20]);
    let big = big.freeze();
    // Decoding slices payloads out of the read buffer without copying them,
    // so bytes/s would only measure the header walk: count records instead.
    g.throughput(Throughput::Elements(16));
    g.bench_function("stdout records 64 KiB x16 (zero-copy)", |b| {
        b.iter_batched(
            || BytesMut::from(&big[..]),
            |mut src| {
                let mut n = 0;
                while let Some(r) = record::decode(&mut src).unwrap() {
                    n += 1;
                    black_box(r);
                }
                n
            },
            BatchSize::LargeInput,
        )
    });
    let mut small = BytesMut::new();
    for _ in 0..1000 {
        record::encode_stream(&mut small, StreamKind::Stdout, 1, &[7u8; 100]);
    }
    let small = small.freeze();
    g.throughput(Throughput::Elements(1000));
    g.bench_function("stdout records 100 B x1000", |b| {
        b.iter_batched(
            || BytesMut::from(&small[..]),
            |mut src| {
                while let Some(r) = record::decode(&mut src).unwrap() {
                    black_box(r);
                }
            },
            BatchSize::LargeInput,
        )
    });
    let mut pairs = BytesMut::new();
    for (n, v) in typical_params().iter() {
        tqserver_fastcgi::proto::params::encode_pair(&mut pairs, n, v);
    }
    let pairs = pairs.freeze();
    g.throughput(Throughput::Elements(1));
    g.bench_function("params (25 pairs)", |b| {
        b.iter(|| black_box(decode_pairs(black_box(pairs.clone()), 4096).unwrap()))
    });
    g.bench_function("CGI response head (6 fields)", |b| {
        let head = Bytes::from_static(HEAD);
        b.iter(|| {
            let mut p = HeadParser::new(Limits::default());
            black_box(p.push(black_box(head.clone())).unwrap().unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
