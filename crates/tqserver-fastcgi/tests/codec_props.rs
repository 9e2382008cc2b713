//! Property tests of the sans-IO codec: the same byte stream split at
//! arbitrary points decodes to the same records; encoders and decoders
//! agree; arbitrary bytes never panic.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use tqserver_fastcgi::Limits;
use tqserver_fastcgi::proto::params::{ParamsCollector, decode_pairs};
use tqserver_fastcgi::proto::record::{self, encode_params};
use tqserver_fastcgi::proto::{Body, HeadParser, Params, ProtocolStatus, Record, Role, StreamKind};

fn kind() -> impl Strategy<Value = StreamKind> {
    prop_oneof![
        Just(StreamKind::Params),
        Just(StreamKind::Stdin),
        Just(StreamKind::Stdout),
        Just(StreamKind::Stderr),
        Just(StreamKind::Data),
    ]
}

fn pairs(max: usize) -> impl Strategy<Value = Params> {
    vec((vec(any::<u8>(), 0..200), vec(any::<u8>(), 0..300)), 0..max)
        .prop_map(|v| v.into_iter().collect())
}

/// Any record that encodes to exactly one record (streams under 64 KiB).
fn record() -> impl Strategy<Value = Record> {
    let id = any::<u16>();
    prop_oneof![
        (id, 0u16..6, any::<u8>()).prop_map(|(request_id, role, flags)| Record {
            request_id,
            body: Body::BeginRequest {
                role: Role::from_u16(role),
                flags
            },
        }),
        id.prop_map(|request_id| Record {
            request_id,
            body: Body::AbortRequest
        }),
        (id, any::<u32>(), 0u8..6).prop_map(|(request_id, app_status, p)| Record {
            request_id,
            body: Body::EndRequest {
                app_status,
                protocol_status: ProtocolStatus::from_u8(p)
            },
        }),
        (id, kind(), vec(any::<u8>(), 1..4000))
            .prop_map(|(request_id, kind, data)| Record::stream(request_id, kind, data)),
        (id, kind()).prop_map(|(request_id, kind)| Record::stream(request_id, kind, Bytes::new())),
        pairs(8).prop_map(|p| Record {
            request_id: 0,
            body: Body::GetValuesResult(p)
        }),
        pairs(8).prop_map(|p| Record {
            request_id: 0,
            body: Body::GetValues(p)
        }),
        // Any id: fuzzing found the encoder dropping a non-zero one.
        (id, any::<u8>()).prop_map(|(request_id, t)| Record {
            request_id,
            body: Body::UnknownType(t)
        }),
        (12u8.., id, vec(any::<u8>(), 0..100)).prop_map(|(record_type, request_id, c)| Record {
            request_id,
            body: Body::Unrecognized {
                record_type,
                content: c.into()
            },
        }),
    ]
}

fn encode_all(records: &[Record]) -> Vec<u8> {
    let mut b = BytesMut::new();
    for r in records {
        r.encode(&mut b).unwrap();
    }
    b.to_vec()
}

/// Feeds `bytes` in pieces whose sizes cycle through `sizes`, decoding
/// everything available after each piece, as a connection does.
fn decode_in_pieces(bytes: &[u8], sizes: &[usize]) -> Vec<Record> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < bytes.len() {
        let n = sizes[i % sizes.len()].max(1).min(bytes.len() - at);
        buf.extend_from_slice(&bytes[at..at + n]);
        at += n;
        i += 1;
        while let Some(r) = record::decode(&mut buf).unwrap() {
            out.push(r);
        }
    }
    assert!(buf.is_empty(), "bytes left over");
    out
}

proptest! {
    #[test]
    fn any_split_decodes_the_same_records(
        records in vec(record(), 1..40),
        sizes in vec(1usize..9000, 1..20),
    ) {
        let bytes = encode_all(&records);
        prop_assert_eq!(decode_in_pieces(&bytes, &sizes), records.clone());
        // Everything in one read.
        prop_assert_eq!(decode_in_pieces(&bytes, &[bytes.len()]), records);
    }

    #[test]
    fn params_roundtrip_through_records_and_the_collector(p in pairs(400), sizes in vec(1usize..70_000, 1..6)) {
        let mut b = BytesMut::new();
        encode_params(&mut b, 9, &p);
        let recs = decode_in_pieces(&b, &sizes);
        let mut c = ParamsCollector::new(Limits { max_params_bytes: usize::MAX, ..Limits::default() });
        let mut ended = false;
        for r in recs {
            let Body::Stream { kind: StreamKind::Params, data } = r.body else { panic!() };
            prop_assert!(!ended);
            if data.is_empty() { ended = true } else { c.push(data).unwrap() }
        }
        prop_assert!(ended);
        prop_assert_eq!(c.finish().unwrap(), p);
    }

    #[test]
    fn head_split_anywhere_parses_the_same(
        fields in vec(("[A-Za-z][A-Za-z0-9-]{0,20}", "[ -~]{0,60}"), 0..30),
        status in 100u16..1000,
        crlf in any::<bool>(),
        body in vec(any::<u8>(), 0..500),
        sizes in vec(1usize..200, 1..10),
    ) {
        let nl = if crlf { "\r\n" } else { "\n" };
        let mut text = format!("Status: {status} Reason{nl}");
        for (n, v) in &fields {
            if n.eq_ignore_ascii_case("status") { continue; }
            text.push_str(&format!("{n}: {v}{nl}"));
        }
        text.push_str(nl);
        let mut all = text.into_bytes();
        all.extend_from_slice(&body);

        let whole = HeadParser::new(Limits::default()).push(Bytes::from(all.clone())).unwrap().unwrap();
        prop_assert_eq!(whole.0.status, status);
        let mut p = HeadParser::new(Limits::default());
        let mut at = 0;
        let mut i = 0;
        let (head, mut rest) = loop {
            let n = sizes[i % sizes.len()].min(all.len() - at);
            i += 1;
            let got = p.push(Bytes::copy_from_slice(&all[at..at + n])).unwrap();
            at += n;
            if let Some((h, r)) = got { break (h, r.to_vec()); }
            prop_assert!(at < all.len());
        };
        rest.extend_from_slice(&all[at..]);
        prop_assert_eq!(&head, &whole.0);
        prop_assert_eq!(rest, body);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..2000), sizes in vec(1usize..300, 1..5)) {
        let mut buf = BytesMut::new();
        let mut at = 0;
        let mut i = 0;
        'outer: while at < bytes.len() {
            let n = sizes[i % sizes.len()].min(bytes.len() - at);
            i += 1;
            buf.extend_from_slice(&bytes[at..at + n]);
            at += n;
            loop {
                match record::decode(&mut buf) {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => break 'outer,
                }
            }
        }
        let _ = decode_pairs(Bytes::from(bytes.clone()), 1000);
        let _ = HeadParser::new(Limits::default()).push(Bytes::from(bytes));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// 1 MiB+ payloads among other records, across many reads of any size.
    #[test]
    fn megabyte_streams_across_many_reads(
        len in (1usize << 20)..(3usize << 20),
        sizes in vec(1usize..200_000, 1..12),
        seed in any::<u8>(),
    ) {
        let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        let mut b = BytesMut::new();
        record::encode_begin_request(&mut b, 1, Role::Responder, 1);
        record::encode_stream(&mut b, StreamKind::Stdout, 1, &data);
        record::encode_stream(&mut b, StreamKind::Stderr, 1, b"a warning");
        record::encode_stream_end(&mut b, StreamKind::Stdout, 1);
        record::encode_end_request(&mut b, 1, 0, ProtocolStatus::RequestComplete);
        let recs = decode_in_pieces(&b, &sizes);
        let mut stdout = Vec::with_capacity(len);
        let mut n_stdout = 0;
        for r in &recs {
            if let Body::Stream { kind: StreamKind::Stdout, data } = &r.body {
                prop_assert!(data.len() <= 65535);
                stdout.extend_from_slice(data);
                n_stdout += 1;
            }
        }
        prop_assert_eq!(stdout, data);
        prop_assert_eq!(n_stdout, len.div_ceil(record::STREAM_CHUNK_LEN) + 1);
        let ends = matches!(recs.last().unwrap().body, Body::EndRequest { .. });
        prop_assert!(ends, "last record is END_REQUEST");
    }
}

/// One byte at a time over a stream of every record type.
#[test]
fn one_byte_at_a_time() {
    let mut records = vec![
        Record {
            request_id: 1,
            body: Body::BeginRequest {
                role: Role::Filter,
                flags: 1,
            },
        },
        Record::stream(1, StreamKind::Params, vec![5u8; 300]),
        Record::stream(1, StreamKind::Params, Bytes::new()),
        Record::stream(1, StreamKind::Stdin, vec![1u8; 70]),
        Record::stream(1, StreamKind::Data, vec![2u8; 9]),
        Record {
            request_id: 1,
            body: Body::AbortRequest,
        },
        Record {
            request_id: 0,
            body: Body::GetValues([("FCGI_MAX_CONNS", "")].into_iter().collect()),
        },
        Record {
            request_id: 0,
            body: Body::UnknownType(77),
        },
    ];
    records.push(Record {
        request_id: 1,
        body: Body::EndRequest {
            app_status: 3,
            protocol_status: ProtocolStatus::UnknownRole,
        },
    });
    let bytes = encode_all(&records);
    assert_eq!(decode_in_pieces(&bytes, &[1]), records);
}
