//! The head TQServer forwards to a native worker, from arbitrary client
//! headers: always one well-formed HTTP/1.1 head that httparse reads,
//! with exactly the framing TQServer chose (one Content-Length of the
//! right value, or chunked, never both), one Host, and none of the
//! headers a client may not pass on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tqserver::http::ConnInfo;
use tqserver::http::forwarded::Trusted;
use tqserver::native::h1::Framing;
use tqserver::native::proxy::head;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    // Lines of "name: value" from the input; invalid ones are what hyper
    // would have refused, so they are skipped as hyper would not build them.
    let mut b = http::Request::builder()
        .method(["GET", "POST", "PUT", "HEAD"][usize::from(flags & 3)])
        .uri("/app/x?y=1");
    // hyper takes at most 100 headers (its default max_headers).
    for line in rest.split(|&c| c == b'\n').take(100) {
        let Some(i) = line.iter().position(|&c| c == b':') else {
            continue;
        };
        let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(&line[..i]),
            http::HeaderValue::from_bytes(line[i + 1..].trim_ascii()),
        ) else {
            continue;
        };
        b = b.header(n, v);
    }
    let Ok(req) = b.body(()) else {
        return;
    };
    let (parts, ()) = req.into_parts();
    let trusted = if flags & 4 == 4 {
        Trusted::new(vec!["127.0.0.0/8".parse().unwrap()])
    } else {
        Trusted::default()
    };
    let conn = ConnInfo::new("127.0.0.1:5000".parse().unwrap(), "127.0.0.1:80".parse().unwrap())
        .for_request(&trusted, &parts.headers);
    let framing = match flags >> 4 {
        0 => None,
        1 => Some(Framing::Chunked),
        n => Some(Framing::Length(u64::from(n) * 1000)),
    };
    // Half the runs strip the route, as `proxy.strip_prefix` does.
    let strip = (flags & 8 == 8).then_some("/app");
    let bytes = head(&parts, &conn, framing, strip);
    let mut slots = [httparse::EMPTY_HEADER; 256];
    let mut r = httparse::Request::new(&mut slots);
    match r.parse(&bytes) {
        Ok(httparse::Status::Complete(n)) => assert_eq!(n, bytes.len()),
        other => panic!("not one whole head: {other:?}\n{}", String::from_utf8_lossy(&bytes)),
    }
    let count = |name: &str| r.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)).count();
    assert_eq!(count("host"), 1);
    assert!(count("x-forwarded-prefix") <= 1);
    assert_eq!(r.path, Some(if strip.is_some() { "/x?y=1" } else { "/app/x?y=1" }));
    assert!(count("transfer-encoding") + count("content-length") <= 1);
    match framing {
        Some(Framing::Chunked) => assert_eq!(count("transfer-encoding"), 1),
        Some(Framing::Length(n)) => {
            let cl = r.headers.iter().find(|h| h.name.eq_ignore_ascii_case("content-length")).unwrap();
            assert_eq!(cl.value, n.to_string().as_bytes());
        }
        None => assert_eq!(count("transfer-encoding"), 0),
    }
    for h in r.headers.iter() {
        let n = h.name.to_ascii_lowercase();
        assert!(!n.contains('_'), "{n}");
        assert!(!matches!(n.as_str(), "connection" | "keep-alive" | "proxy" | "te" | "upgrade" | "trailer" | "proxy-authorization"), "{n}");
        if flags & 4 == 0 {
            assert!(n != "forwarded" && n != "x-real-ip", "{n} from an untrusted client");
        }
    }
});
