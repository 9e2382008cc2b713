//! FastCGI records: the 8-byte header, the typed bodies, and the pure
//! `decode` / `encode_*` functions that turn bytes into records and back.
//!
//! Decoding never allocates before a whole record is buffered, and a record
//! is at most `8 + 65535 + 255` bytes, so the decoder's memory is bounded by
//! construction. Payloads are zero-copy slices of the input buffer.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::ProtoError;
use super::params::{self, Params};

/// Protocol version byte; FastCGI 1.0 spec §3.3 (`FCGI_VERSION_1`).
pub const VERSION_1: u8 = 1;
/// Size of every record header; spec §3.3 (`FCGI_HEADER_LEN`).
pub const HEADER_LEN: usize = 8;
/// Largest content a single record can carry (16-bit length); spec §3.3.
pub const MAX_CONTENT_LEN: usize = 0xffff;
/// How much of a stream we put in one record when we split it: the largest
/// multiple of 8 that fits, so full records need no padding.
pub const STREAM_CHUNK_LEN: usize = MAX_CONTENT_LEN & !7;
/// Request id of management records (GET_VALUES…); spec §3.3 (`FCGI_NULL_REQUEST_ID`).
pub const NULL_REQUEST_ID: u16 = 0;
/// `flags` bit asking the application to keep the connection open; spec §5.1 (`FCGI_KEEP_CONN`).
pub const KEEP_CONN: u8 = 1;
/// Largest record on the wire: header, full content, maximal padding.
pub const MAX_RECORD_LEN: usize = HEADER_LEN + MAX_CONTENT_LEN + 255;

/// The record types of FastCGI 1.0; spec §8 (`FCGI_BEGIN_REQUEST` … `FCGI_UNKNOWN_TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordType {
    /// Starts a request (web server → application).
    BeginRequest = 1,
    /// Cancels a request (web server → application).
    AbortRequest = 2,
    /// Ends a request (application → web server).
    EndRequest = 3,
    /// Name-value pairs of the request (stream).
    Params = 4,
    /// Request body (stream).
    Stdin = 5,
    /// Response bytes (stream).
    Stdout = 6,
    /// Error output of the application (stream).
    Stderr = 7,
    /// Extra data for the Filter role (stream).
    Data = 8,
    /// Management query for variables.
    GetValues = 9,
    /// Management answer with variables.
    GetValuesResult = 10,
    /// Reply to a management record of a type the peer does not know.
    UnknownType = 11,
}

impl RecordType {
    /// Maps a type byte to a known record type.
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::BeginRequest,
            2 => Self::AbortRequest,
            3 => Self::EndRequest,
            4 => Self::Params,
            5 => Self::Stdin,
            6 => Self::Stdout,
            7 => Self::Stderr,
            8 => Self::Data,
            9 => Self::GetValues,
            10 => Self::GetValuesResult,
            11 => Self::UnknownType,
            _ => return None,
        })
    }
}

/// The five stream record types, whose content is a byte stream ended by an
/// empty record; spec §3.3 "stream records".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// `FCGI_PARAMS`
    Params,
    /// `FCGI_STDIN`
    Stdin,
    /// `FCGI_STDOUT`
    Stdout,
    /// `FCGI_STDERR`
    Stderr,
    /// `FCGI_DATA`
    Data,
}

impl StreamKind {
    /// The record type carrying this stream.
    pub fn record_type(self) -> RecordType {
        match self {
            Self::Params => RecordType::Params,
            Self::Stdin => RecordType::Stdin,
            Self::Stdout => RecordType::Stdout,
            Self::Stderr => RecordType::Stderr,
            Self::Data => RecordType::Data,
        }
    }
}

/// The role a request asks the application to play; spec §6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `FCGI_RESPONDER` (1): CGI/1.1 semantics, what PHP does.
    Responder,
    /// `FCGI_AUTHORIZER` (2): decide whether a request is allowed.
    Authorizer,
    /// `FCGI_FILTER` (3): like Responder with an extra DATA stream (the file to filter).
    Filter,
    /// Any other value; the application answers `FCGI_UNKNOWN_ROLE`.
    Other(u16),
}

impl Role {
    /// The wire value.
    pub fn to_u16(self) -> u16 {
        match self {
            Self::Responder => 1,
            Self::Authorizer => 2,
            Self::Filter => 3,
            Self::Other(v) => v,
        }
    }

    /// Maps a wire value to a role.
    pub fn from_u16(value: u16) -> Self {
        match value {
            1 => Self::Responder,
            2 => Self::Authorizer,
            3 => Self::Filter,
            v => Self::Other(v),
        }
    }
}

/// The protocol-level outcome of a request; spec §5.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolStatus {
    /// `FCGI_REQUEST_COMPLETE` (0): normal end.
    RequestComplete,
    /// `FCGI_CANT_MPX_CONN` (1): the application does not multiplex connections.
    CantMpxConn,
    /// `FCGI_OVERLOADED` (2): the application is out of some resource.
    Overloaded,
    /// `FCGI_UNKNOWN_ROLE` (3): the role is not supported.
    UnknownRole,
    /// Any other value.
    Other(u8),
}

impl ProtocolStatus {
    /// The wire value.
    pub fn to_u8(self) -> u8 {
        match self {
            Self::RequestComplete => 0,
            Self::CantMpxConn => 1,
            Self::Overloaded => 2,
            Self::UnknownRole => 3,
            Self::Other(v) => v,
        }
    }

    /// Maps a wire value to a status.
    pub fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::RequestComplete,
            1 => Self::CantMpxConn,
            2 => Self::Overloaded,
            3 => Self::UnknownRole,
            v => Self::Other(v),
        }
    }
}

/// A decoded record: the request it belongs to and its typed body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// 0 for management records, otherwise the request id chosen by the web server.
    pub request_id: u16,
    /// What the record says.
    pub body: Body,
}

/// The typed content of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// `FCGI_BEGIN_REQUEST`: role and flags (bit 0 is [`KEEP_CONN`]).
    BeginRequest {
        /// What the application should do.
        role: Role,
        /// Raw flags byte, unknown bits preserved.
        flags: u8,
    },
    /// `FCGI_ABORT_REQUEST`.
    AbortRequest,
    /// `FCGI_END_REQUEST`.
    EndRequest {
        /// The application's exit status (what a CGI program would `exit()` with).
        app_status: u32,
        /// Protocol-level outcome.
        protocol_status: ProtocolStatus,
    },
    /// One record of a stream; empty `data` ends the stream.
    Stream {
        /// Which stream.
        kind: StreamKind,
        /// The payload, a zero-copy slice of the read buffer.
        data: Bytes,
    },
    /// `FCGI_GET_VALUES`: the variable names asked for (values are empty on the wire).
    GetValues(Params),
    /// `FCGI_GET_VALUES_RESULT`: the variables the application knows.
    GetValuesResult(Params),
    /// `FCGI_UNKNOWN_TYPE`: the peer did not understand a management record of this type.
    UnknownType(u8),
    /// A record of a type FastCGI 1.0 does not define; kept so the caller can
    /// answer `FCGI_UNKNOWN_TYPE` (spec §4.2).
    Unrecognized {
        /// The type byte.
        record_type: u8,
        /// Its content.
        content: Bytes,
    },
}

impl Record {
    /// Convenience constructor for stream records.
    pub fn stream(request_id: u16, kind: StreamKind, data: impl Into<Bytes>) -> Self {
        Self {
            request_id,
            body: Body::Stream {
                kind,
                data: data.into(),
            },
        }
    }

    /// Appends this record to `dst` in wire format. Stream data longer than
    /// one record is split into as many records as needed; an empty stream
    /// record is written as the end-of-stream marker it is.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), ProtoError> {
        let id = self.request_id;
        match &self.body {
            Body::BeginRequest { role, flags } => encode_begin_request(dst, id, *role, *flags),
            Body::AbortRequest => encode_header(dst, RecordType::AbortRequest, id, 0, 0),
            Body::EndRequest {
                app_status,
                protocol_status,
            } => encode_end_request(dst, id, *app_status, *protocol_status),
            Body::Stream { kind, data } if data.is_empty() => encode_stream_end(dst, *kind, id),
            Body::Stream { kind, data } => encode_stream(dst, *kind, id, data),
            Body::GetValues(p) => encode_management(dst, RecordType::GetValues as u8, id, p)?,
            Body::GetValuesResult(p) => {
                encode_management(dst, RecordType::GetValuesResult as u8, id, p)?
            }
            Body::UnknownType(t) => unknown_type(dst, id, *t),
            Body::Unrecognized {
                record_type,
                content,
            } => {
                if content.len() > MAX_CONTENT_LEN {
                    return Err(ProtoError::RecordTooLong { len: content.len() });
                }
                encode_raw(dst, *record_type, id, content);
            }
        }
        Ok(())
    }
}

/// Padding that brings `len` to a multiple of 8, as spec §3.3 recommends.
#[inline]
fn padding_for(len: usize) -> usize {
    (8 - (len & 7)) & 7
}

/// Writes a header whose content (and padding) the caller appends.
#[inline]
fn encode_header(dst: &mut BytesMut, ty: RecordType, id: u16, len: usize, pad: usize) {
    debug_assert!(len <= MAX_CONTENT_LEN && pad <= 255);
    dst.put_slice(&[
        VERSION_1,
        ty as u8,
        (id >> 8) as u8,
        id as u8,
        (len >> 8) as u8,
        len as u8,
        pad as u8,
        0,
    ]);
}

#[inline]
fn encode_raw(dst: &mut BytesMut, ty: u8, id: u16, content: &[u8]) {
    let pad = padding_for(content.len());
    dst.reserve(HEADER_LEN + content.len() + pad);
    dst.put_slice(&[
        VERSION_1,
        ty,
        (id >> 8) as u8,
        id as u8,
        (content.len() >> 8) as u8,
        content.len() as u8,
        pad as u8,
        0,
    ]);
    dst.put_slice(content);
    dst.put_bytes(0, pad);
}

/// Appends a `BEGIN_REQUEST` record.
pub fn encode_begin_request(dst: &mut BytesMut, id: u16, role: Role, flags: u8) {
    let role = role.to_u16();
    encode_header(dst, RecordType::BeginRequest, id, 8, 0);
    dst.put_slice(&[(role >> 8) as u8, role as u8, flags, 0, 0, 0, 0, 0]);
}

/// Appends an `ABORT_REQUEST` record.
pub fn encode_abort_request(dst: &mut BytesMut, id: u16) {
    encode_header(dst, RecordType::AbortRequest, id, 0, 0);
}

/// Appends an `END_REQUEST` record.
pub fn encode_end_request(dst: &mut BytesMut, id: u16, app_status: u32, status: ProtocolStatus) {
    encode_header(dst, RecordType::EndRequest, id, 8, 0);
    dst.put_u32(app_status);
    dst.put_slice(&[status.to_u8(), 0, 0, 0]);
}

/// Appends an `UNKNOWN_TYPE` record answering a management record of type `ty`.
pub fn encode_unknown_type(dst: &mut BytesMut, ty: u8) {
    unknown_type(dst, NULL_REQUEST_ID, ty);
}

/// `UNKNOWN_TYPE` with any request id: what `Record::encode` must write
/// back for a decoded record, even one whose id a peer set to non-zero.
fn unknown_type(dst: &mut BytesMut, id: u16, ty: u8) {
    encode_header(dst, RecordType::UnknownType, id, 8, 0);
    dst.put_slice(&[ty, 0, 0, 0, 0, 0, 0, 0]);
}

/// Appends `data` as stream records of `kind`, split into records of at most
/// [`STREAM_CHUNK_LEN`] bytes. Empty `data` appends nothing: the end of a
/// stream is written by [`encode_stream_end`].
pub fn encode_stream(dst: &mut BytesMut, kind: StreamKind, id: u16, data: &[u8]) {
    let ty = kind.record_type();
    let records = data.len().div_ceil(STREAM_CHUNK_LEN);
    dst.reserve(data.len() + records * (HEADER_LEN + 7));
    for chunk in data.chunks(STREAM_CHUNK_LEN) {
        let pad = padding_for(chunk.len());
        encode_header(dst, ty, id, chunk.len(), pad);
        dst.put_slice(chunk);
        dst.put_bytes(0, pad);
    }
}

/// Appends the empty record that ends a stream.
pub fn encode_stream_end(dst: &mut BytesMut, kind: StreamKind, id: u16) {
    encode_header(dst, kind.record_type(), id, 0, 0);
}

/// Appends a whole `PARAMS` stream: the pairs, packed into records without
/// splitting a pair across records when it fits in one (PHP parses each
/// PARAMS record on its own and rejects pairs that span records), then the
/// empty end record. A pair larger than one record is split, which the spec
/// allows; [`params::MAX_RECORD_PAIR_LEN`] tells callers where that starts.
pub fn encode_params(dst: &mut BytesMut, id: u16, params: &Params) {
    let mut start = dst.len();
    // Reserve the header of the first record; fill it when the record closes.
    let close = |dst: &mut BytesMut, start: usize| {
        let len = dst.len() - start - HEADER_LEN;
        if len == 0 {
            dst.truncate(start);
            return;
        }
        let pad = padding_for(len);
        dst.put_bytes(0, pad);
        dst[start..start + HEADER_LEN].copy_from_slice(&[
            VERSION_1,
            RecordType::Params as u8,
            (id >> 8) as u8,
            id as u8,
            (len >> 8) as u8,
            len as u8,
            pad as u8,
            0,
        ]);
    };
    dst.reserve(params.encoded_len() + HEADER_LEN * 2 + 8);
    dst.put_bytes(0, HEADER_LEN);
    for (name, value) in params.iter() {
        let pair_len = params::pair_len(name.len(), value.len());
        let used = dst.len() - start - HEADER_LEN;
        if used + pair_len <= MAX_CONTENT_LEN {
            params::encode_pair(dst, name, value);
            continue;
        }
        if pair_len <= MAX_CONTENT_LEN {
            // Start a new record so the pair stays whole.
            close(dst, start);
            start = dst.len();
            dst.put_bytes(0, HEADER_LEN);
            params::encode_pair(dst, name, value);
            continue;
        }
        // The pair cannot fit in any record: split it across as many as needed.
        let mut pair = BytesMut::with_capacity(pair_len);
        params::encode_pair(&mut pair, name, value);
        let mut rest = &pair[..];
        while !rest.is_empty() {
            let used = dst.len() - start - HEADER_LEN;
            let room = MAX_CONTENT_LEN - used;
            if room == 0 {
                close(dst, start);
                start = dst.len();
                dst.put_bytes(0, HEADER_LEN);
                continue;
            }
            let n = room.min(rest.len());
            dst.put_slice(&rest[..n]);
            rest = &rest[n..];
        }
    }
    close(dst, start);
    encode_stream_end(dst, StreamKind::Params, id);
}

/// Appends a `GET_VALUES` record asking for `names`.
pub fn encode_get_values<'a>(
    dst: &mut BytesMut,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<(), ProtoError> {
    let mut p = Params::new();
    for n in names {
        p.push(n.as_bytes().to_vec(), Bytes::new());
    }
    encode_management(dst, RecordType::GetValues as u8, NULL_REQUEST_ID, &p)
}

/// Appends a `GET_VALUES_RESULT` record.
pub fn encode_get_values_result(dst: &mut BytesMut, values: &Params) -> Result<(), ProtoError> {
    encode_management(
        dst,
        RecordType::GetValuesResult as u8,
        NULL_REQUEST_ID,
        values,
    )
}

fn encode_management(dst: &mut BytesMut, ty: u8, id: u16, p: &Params) -> Result<(), ProtoError> {
    let len = p.encoded_len();
    if len > MAX_CONTENT_LEN {
        // Management records are single records (spec §4.1).
        return Err(ProtoError::RecordTooLong { len });
    }
    let mut content = BytesMut::with_capacity(len);
    for (n, v) in p.iter() {
        params::encode_pair(&mut content, n, v);
    }
    encode_raw(dst, ty, id, &content);
    Ok(())
}

/// Decodes one record from the front of `src`.
///
/// Returns `Ok(None)` when `src` does not yet hold a whole record (header,
/// content and padding); nothing is consumed then, so the caller reads more
/// bytes and calls again. On success the record's bytes are removed from
/// `src` and stream payloads are zero-copy slices of it.
pub fn decode(src: &mut BytesMut) -> Result<Option<Record>, ProtoError> {
    if src.len() < HEADER_LEN {
        return Ok(None);
    }
    let h = &src[..HEADER_LEN];
    if h[0] != VERSION_1 {
        return Err(ProtoError::UnsupportedVersion(h[0]));
    }
    let ty = h[1];
    let request_id = u16::from_be_bytes([h[2], h[3]]);
    let len = u16::from_be_bytes([h[4], h[5]]) as usize;
    let pad = h[6] as usize;
    if src.len() < HEADER_LEN + len + pad {
        return Ok(None);
    }
    let expect_len = |want: usize| {
        if len == want {
            Ok(())
        } else {
            Err(ProtoError::BadRecordLength {
                record_type: ty,
                len,
                expected: want,
            })
        }
    };
    if let Some(RecordType::BeginRequest | RecordType::EndRequest | RecordType::UnknownType) =
        RecordType::from_u8(ty)
    {
        expect_len(8)?;
    }
    src.advance(HEADER_LEN);
    let content = src.split_to(len).freeze();
    src.advance(pad);
    let c = &content[..];
    let body = match RecordType::from_u8(ty) {
        Some(RecordType::BeginRequest) => Body::BeginRequest {
            role: Role::from_u16(u16::from_be_bytes([c[0], c[1]])),
            flags: c[2],
        },
        // Any content of an abort is meaningless and ignored.
        Some(RecordType::AbortRequest) => Body::AbortRequest,
        Some(RecordType::EndRequest) => Body::EndRequest {
            app_status: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
            protocol_status: ProtocolStatus::from_u8(c[4]),
        },
        Some(RecordType::UnknownType) => Body::UnknownType(c[0]),
        Some(RecordType::Params) => stream(StreamKind::Params, content),
        Some(RecordType::Stdin) => stream(StreamKind::Stdin, content),
        Some(RecordType::Stdout) => stream(StreamKind::Stdout, content),
        Some(RecordType::Stderr) => stream(StreamKind::Stderr, content),
        Some(RecordType::Data) => stream(StreamKind::Data, content),
        Some(RecordType::GetValues) => {
            Body::GetValues(params::decode_pairs(content, params::MAX_MANAGEMENT_PAIRS)?)
        }
        Some(RecordType::GetValuesResult) => {
            Body::GetValuesResult(params::decode_pairs(content, params::MAX_MANAGEMENT_PAIRS)?)
        }
        None => Body::Unrecognized {
            record_type: ty,
            content,
        },
    };
    Ok(Some(Record { request_id, body }))
}

#[inline]
fn stream(kind: StreamKind, data: Bytes) -> Body {
    Body::Stream { kind, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(r: &Record) -> Vec<Record> {
        let mut buf = BytesMut::new();
        r.encode(&mut buf).unwrap();
        assert_eq!(buf.len() % 8, 0, "records are padded to 8");
        let mut out = Vec::new();
        while let Some(rec) = decode(&mut buf).unwrap() {
            out.push(rec);
        }
        assert!(buf.is_empty());
        out
    }

    #[test]
    fn every_fixed_record_roundtrips() {
        let records = [
            Record {
                request_id: 1,
                body: Body::BeginRequest {
                    role: Role::Responder,
                    flags: KEEP_CONN,
                },
            },
            Record {
                request_id: 2,
                body: Body::BeginRequest {
                    role: Role::Authorizer,
                    flags: 0,
                },
            },
            Record {
                request_id: 3,
                body: Body::BeginRequest {
                    role: Role::Filter,
                    flags: 0,
                },
            },
            Record {
                request_id: 4,
                body: Body::BeginRequest {
                    role: Role::Other(77),
                    flags: 0,
                },
            },
            Record {
                request_id: 65535,
                body: Body::AbortRequest,
            },
            Record {
                request_id: 9,
                body: Body::EndRequest {
                    app_status: 0xdead_beef,
                    protocol_status: ProtocolStatus::Overloaded,
                },
            },
            Record {
                request_id: 0,
                body: Body::UnknownType(200),
            },
            Record {
                request_id: 0,
                body: Body::GetValues(
                    [("FCGI_MAX_CONNS", ""), ("FCGI_MPXS_CONNS", "")]
                        .into_iter()
                        .collect(),
                ),
            },
            Record {
                request_id: 0,
                body: Body::GetValuesResult([("FCGI_MAX_CONNS", "10")].into_iter().collect()),
            },
            Record {
                request_id: 0,
                body: Body::Unrecognized {
                    record_type: 42,
                    content: Bytes::from_static(b"abc"),
                },
            },
            Record::stream(5, StreamKind::Stdout, "hello"),
            Record::stream(5, StreamKind::Stderr, ""),
            Record::stream(5, StreamKind::Data, "d"),
        ];
        for r in &records {
            assert_eq!(roundtrip(r), vec![r.clone()], "{r:?}");
        }
    }

    #[test]
    fn unknown_type_keeps_a_nonzero_request_id() {
        // Found by fuzz/record_decoder: the id was dropped on re-encode.
        let r = Record {
            request_id: 250,
            body: Body::UnknownType(200),
        };
        assert_eq!(roundtrip(&r), vec![r]);
    }

    #[test]
    fn long_stream_is_split_and_reassembles() {
        // Regression (Go TQServer): a body over 64 KiB was written with its
        // 16-bit length truncated. 200 000 bytes must become 4 records.
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut buf = BytesMut::new();
        encode_stream(&mut buf, StreamKind::Stdin, 7, &data);
        let mut got = Vec::new();
        let mut n = 0;
        while let Some(rec) = decode(&mut buf).unwrap() {
            let Body::Stream { kind, data } = rec.body else {
                panic!()
            };
            assert_eq!(kind, StreamKind::Stdin);
            assert!(data.len() <= MAX_CONTENT_LEN);
            got.extend_from_slice(&data);
            n += 1;
        }
        assert_eq!(n, 4);
        assert_eq!(got, data);
    }

    #[test]
    fn partial_input_is_not_an_error_and_consumes_nothing() {
        let mut full = BytesMut::new();
        encode_stream(&mut full, StreamKind::Stdout, 1, b"abc");
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert_eq!(decode(&mut part).unwrap(), None);
            assert_eq!(part.len(), cut);
        }
    }

    #[test]
    fn bad_version_and_bad_lengths_are_errors() {
        let mut b = BytesMut::from(&[2u8, 6, 0, 1, 0, 0, 0, 0][..]);
        assert_eq!(decode(&mut b), Err(ProtoError::UnsupportedVersion(2)));
        let mut b = BytesMut::from(&[1u8, 1, 0, 1, 0, 4, 0, 0, 0, 1, 0, 0][..]);
        assert!(matches!(
            decode(&mut b),
            Err(ProtoError::BadRecordLength { len: 4, .. })
        ));
        let mut b = BytesMut::from(&[1u8, 3, 0, 1, 0, 0, 0, 0][..]);
        assert!(matches!(
            decode(&mut b),
            Err(ProtoError::BadRecordLength { expected: 8, .. })
        ));
    }

    #[test]
    fn padding_is_skipped_whatever_the_sender_chose() {
        // Some peers pad to 8, some do not pad, some use odd padding.
        let mut b = BytesMut::from(&[1u8, 6, 0, 1, 0, 2, 3, 0, b'h', b'i', 9, 9, 9][..]);
        b.extend_from_slice(&[1u8, 6, 0, 1, 0, 0, 0, 0]);
        assert_eq!(
            decode(&mut b).unwrap(),
            Some(Record::stream(1, StreamKind::Stdout, "hi"))
        );
        assert_eq!(
            decode(&mut b).unwrap(),
            Some(Record::stream(1, StreamKind::Stdout, ""))
        );
        assert!(b.is_empty());
    }

    #[test]
    fn params_pairs_never_span_records_when_they_fit() {
        // 3 pairs of ~30 KiB: a naive packer would split the second one
        // across two records, which PHP rejects as malformed.
        let mut p = Params::new();
        for i in 0..3 {
            p.push(format!("HTTP_X_{i}"), vec![b'v'; 30_000]);
        }
        let mut buf = BytesMut::new();
        encode_params(&mut buf, 1, &p);
        let mut seen = Params::new();
        let mut records = 0;
        while let Some(rec) = decode(&mut buf).unwrap() {
            let Body::Stream { data, .. } = rec.body else {
                panic!()
            };
            if data.is_empty() {
                break;
            }
            records += 1;
            // Each record decodes on its own, as PHP decodes it.
            for (n, v) in params::decode_pairs(data, usize::MAX).unwrap().iter() {
                seen.push(n.clone(), v.clone());
            }
        }
        assert_eq!(records, 2);
        assert_eq!(seen, p);
    }

    #[test]
    fn a_pair_larger_than_a_record_is_split() {
        let mut p = Params::new();
        p.push("BIG", vec![b'x'; 100_000]);
        p.push("SMALL", "1");
        let mut buf = BytesMut::new();
        encode_params(&mut buf, 1, &p);
        let mut stream = BytesMut::new();
        while let Some(rec) = decode(&mut buf).unwrap() {
            let Body::Stream { data, .. } = rec.body else {
                panic!()
            };
            stream.extend_from_slice(&data);
        }
        assert_eq!(
            params::decode_pairs(stream.freeze(), usize::MAX).unwrap(),
            p
        );
    }
}
