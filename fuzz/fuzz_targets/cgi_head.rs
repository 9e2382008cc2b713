//! The CGI response head parser on arbitrary bytes, in pieces: never a
//! panic, never more buffered than the limit allows, and the same answer
//! as parsing everything at once.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tqserver_fastcgi::Limits;
use tqserver_fastcgi::proto::HeadParser;

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_head_bytes: 4096,
        max_head_fields: 32,
        ..Limits::default()
    };
    let whole = HeadParser::new(limits).push(Bytes::copy_from_slice(rest));
    let mut p = HeadParser::new(limits);
    let mut got = None;
    let mut body = Vec::new();
    for piece in rest.chunks(usize::from(step).max(1)) {
        if got.is_some() {
            body.extend_from_slice(piece);
            continue;
        }
        match p.push(Bytes::copy_from_slice(piece)) {
            Ok(Some((head, first))) => {
                body.extend_from_slice(&first);
                got = Some(head);
            }
            Ok(None) => assert!(p.buffered() <= 4096 + usize::from(step).max(1)),
            Err(e) => {
                // Pieces can only fail where the whole fails (or fails
                // later for the same reason: too large).
                assert!(whole.is_err(), "piecewise error {e:?} but whole parsed");
                return;
            }
        }
    }
    match (got, whole) {
        (Some(head), Ok(Some((w, wbody)))) => {
            assert_eq!(head, w);
            assert_eq!(&body[..], &wbody[..]);
        }
        (None, Ok(None)) => {}
        (Some(_), Err(e)) => panic!("whole failed ({e:?}) but pieces parsed"),
        (None, Err(_)) => {}
        (g, w) => panic!("disagree: pieces {g:?} whole {w:?}"),
    }
});
