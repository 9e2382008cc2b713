//! The PROXY protocol header parser on arbitrary bytes: never a panic,
//! never more taken than given, and a header that parses parses the same
//! from exactly its own bytes, with every shorter prefix "need more".
#![no_main]

use libfuzzer_sys::fuzz_target;
use tqserver::http::proxy_protocol::{MAX_HEADER, parse};

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(MAX_HEADER + 64)];
    if let Ok(Some((h, n))) = parse(data) {
        assert!(n <= data.len() && n > 0);
        assert_eq!(parse(&data[..n]), Ok(Some((h, n))));
        for k in 0..n {
            assert_eq!(parse(&data[..k]), Ok(None), "prefix {k} of {n}");
        }
    }
});
