//! A CGI response head from PHP turned into an HTTP response head, on
//! arbitrary bytes: never a panic; when accepted, a final status, a
//! Content-Length that is exactly the checked length and only once, and
//! no hop-by-hop header passed on.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tqserver::php::response::http_head;
use tqserver_fastcgi::Limits;
use tqserver_fastcgi::proto::HeadParser;

fuzz_target!(|data: &[u8]| {
    let Ok(Some((head, _))) = HeadParser::new(Limits::default()).push(Bytes::copy_from_slice(data)) else {
        return;
    };
    let Ok(h) = http_head(&head) else {
        return;
    };
    assert!(h.status.as_u16() >= 200);
    let lengths: Vec<_> = h.headers.get_all(http::header::CONTENT_LENGTH).iter().collect();
    match h.length {
        Some(n) => assert_eq!(lengths, vec![&http::HeaderValue::from(n)]),
        None => assert!(lengths.is_empty()),
    }
    for n in ["connection", "transfer-encoding", "keep-alive", "upgrade", "te", "trailer"] {
        assert!(h.headers.get(n).is_none(), "{n} passed on");
    }
});
