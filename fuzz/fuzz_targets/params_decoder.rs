//! Name-value pair decoding on arbitrary bytes, whole and through the
//! record-by-record collector: never a panic, both agree, and decoded
//! pairs survive an encode/decode round trip.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tqserver_fastcgi::Limits;
use tqserver_fastcgi::proto::params::{ParamsCollector, decode_pairs, encode_pair};

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let whole = decode_pairs(Bytes::copy_from_slice(rest), 4096);
    let mut c = ParamsCollector::new(Limits::default());
    let mut pushed = Ok(());
    for piece in rest.chunks(usize::from(step).max(1)) {
        pushed = pushed.and(c.push(Bytes::copy_from_slice(piece)));
    }
    if pushed.is_ok() {
        assert_eq!(c.finish().ok(), whole.clone().ok());
    }
    if let Ok(p) = whole {
        let mut enc = BytesMut::new();
        for (n, v) in p.iter() {
            encode_pair(&mut enc, n, v);
        }
        assert_eq!(enc.len(), p.encoded_len());
        assert_eq!(decode_pairs(enc.freeze(), 4096).unwrap(), p);
    }
});
