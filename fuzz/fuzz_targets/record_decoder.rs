//! The record decoder on arbitrary bytes, fed in pieces whose size comes
//! from the first input byte: it must never panic, must consume nothing
//! when it answers "need more", and every record it returns must encode
//! back to bytes that decode to the same record.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tqserver_fastcgi::proto::{Body, record};

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut buf = BytesMut::new();
    for piece in rest.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match record::decode(&mut buf) {
                Ok(Some(rec)) => {
                    // Encoding may split a 65535-byte stream record in two
                    // (we write at most 65528 per record, so no padding is
                    // needed); the stream bytes must come back the same.
                    let mut again = BytesMut::new();
                    rec.encode(&mut again).expect("a decoded record re-encodes");
                    let mut back = Vec::new();
                    while let Some(r) = record::decode(&mut again).expect("re-encoded bytes decode")
                    {
                        back.push(r);
                    }
                    assert!(again.is_empty());
                    match &rec.body {
                        Body::Stream { kind, data } if !data.is_empty() => {
                            let mut joined = Vec::new();
                            for r in &back {
                                assert_eq!(r.request_id, rec.request_id);
                                let Body::Stream { kind: k, data: d } = &r.body else {
                                    panic!("stream record re-encoded as {r:?}");
                                };
                                assert_eq!(k, kind);
                                joined.extend_from_slice(d);
                            }
                            assert!(joined == data[..], "stream bytes changed");
                        }
                        _ => assert!(back.len() == 1 && back[0] == rec, "record changed: {rec:?}"),
                    }
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "need-more consumes nothing");
                    break;
                }
                Err(_) => return,
            }
        }
    }
});
