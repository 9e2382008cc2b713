//! HTTP/1.1 to and from an instance, apart from any I/O (as the FastCGI
//! crate keeps its protocol): the request head TQServer writes, the
//! response head it reads (framing checked, hop-by-hop headers dropped),
//! and the chunked decoder. Pure functions over bytes: "need more bytes"
//! is `Ok(None)`, malformed bytes an error, never a panic.

use bytes::{Buf, Bytes, BytesMut};
use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Largest response head accepted (nginx's proxy_buffer_size is 4–8 KiB;
/// hyper's default limit is ~400 KiB).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most response headers accepted.
const MAX_HEADERS: usize = 128;

/// Why an instance's bytes are not HTTP this client accepts (502).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct H1Error(pub String);

fn bad(msg: impl Into<String>) -> H1Error {
    H1Error(msg.into())
}

/// Headers never forwarded to or from an instance: the hop-by-hop ones,
/// and proxy credentials (TQServer is the proxy they would be meant for).
pub fn not_forwarded(name: &HeaderName) -> bool {
    crate::http::hop_by_hop(name)
        || matches!(name.as_str(), "proxy-authenticate" | "proxy-authorization")
}

/// How a request body is framed on the wire: always by TQServer, from
/// what it checked, never by passing on the client's framing headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length: n` (the client's length, which hyper enforced on
    /// the way in and the connection counts again on the way out).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Serialises a request head: request line, the client's end-to-end
/// headers (the caller has dropped every framing header), `extra` lines,
/// the framing of `body` as TQServer will send it, blank line.
pub fn request_head<'a>(
    method: &http::Method,
    target: &str,
    headers: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    extra: &[(&str, &[u8])],
    body: Option<Framing>,
) -> Bytes {
    let mut out = BytesMut::with_capacity(512);
    out.extend_from_slice(method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (k, v) in headers {
        out.extend_from_slice(k.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (k, v) in extra {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    match body {
        Some(Framing::Chunked) => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Some(Framing::Length(n)) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        None if matches!(
            *method,
            http::Method::POST | http::Method::PUT | http::Method::PATCH
        ) =>
        {
            out.extend_from_slice(b"content-length: 0\r\n");
        }
        None => {}
    }
    out.extend_from_slice(b"\r\n");
    out.freeze()
}

/// How the body after a response head is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body (HEAD, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunks, decoded by [`Chunked`].
    Chunked,
    /// Until the instance closes the connection.
    Close,
}

/// A final response head from an instance.
#[derive(Debug)]
pub struct Head {
    /// Its status (200–999).
    pub status: StatusCode,
    /// End-to-end headers, with `Content-Length` written anew from the
    /// checked length (absent when chunked or read to close).
    pub headers: HeaderMap,
    /// How its body is read.
    pub body: BodyKind,
    /// The connection can carry another request once the body is read.
    pub keep_alive: bool,
}

/// What is at the front of the buffer.
#[derive(Debug)]
pub enum Parsed {
    /// An interim 1xx (100 Continue, 103 Early Hints) of this many bytes:
    /// not passed on.
    Interim(StatusCode, usize),
    /// The final head, and the bytes it took.
    Final(Head, usize),
    /// `101 Switching Protocols`: its end-to-end headers, the protocol
    /// its `Upgrade` names, and the bytes the head took. Only an answer to
    /// an upgrade request; after it the connection carries that protocol.
    Switching(HeaderMap, HeaderValue, usize),
}

/// Parses the response head at the front of `buf`; `head_only` when the
/// request was a HEAD. `Ok(None)`: need more bytes.
pub fn parse_head(buf: &[u8], head_only: bool) -> Result<Option<Parsed>, H1Error> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut slots);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(bad(format!("response head larger than {MAX_HEAD} bytes")));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(bad(format!("bad response head: {e}"))),
    };
    let code = parsed.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| bad(format!("invalid status {code}")))?;
    if status.is_informational() {
        if code == 101 {
            let upgrade = parsed
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("upgrade"))
                .and_then(|h| HeaderValue::from_bytes(h.value).ok())
                .ok_or_else(|| bad("101 Switching Protocols without an Upgrade header"))?;
            let (headers, _) = response_headers(parsed.headers)?;
            return Ok(Some(Parsed::Switching(headers, upgrade, len)));
        }
        return Ok(Some(Parsed::Interim(status, len)));
    }
    let version_10 = parsed.version == Some(0);
    let (headers, info) = response_headers(parsed.headers)?;
    let no_body =
        head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let body = if no_body {
        BodyKind::Empty
    } else if info.chunked {
        BodyKind::Chunked
    } else if let Some(n) = info.length {
        BodyKind::Length(n)
    } else {
        BodyKind::Close
    };
    let keep_alive = !info.close && (!version_10 || info.keep_alive) && body != BodyKind::Close;
    Ok(Some(Parsed::Final(
        Head {
            status,
            headers,
            body,
            keep_alive,
        },
        len,
    )))
}

struct HeadInfo {
    length: Option<u64>,
    chunked: bool,
    close: bool,
    keep_alive: bool,
}

/// The end-to-end headers of a response, and what its framing headers say.
fn response_headers(raw: &[httparse::Header<'_>]) -> Result<(HeaderMap, HeadInfo), H1Error> {
    let mut info = HeadInfo {
        length: None,
        chunked: false,
        close: false,
        keep_alive: false,
    };
    let mut named: Vec<String> = Vec::new();
    for h in raw {
        if h.name.eq_ignore_ascii_case("connection") {
            for t in String::from_utf8_lossy(h.value).split(',') {
                let t = t.trim().to_ascii_lowercase();
                match t.as_str() {
                    "close" => info.close = true,
                    "keep-alive" => info.keep_alive = true,
                    _ => named.push(t),
                }
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // RFC 9112 §6.3: chunked last means chunked; anything else
            // without chunked is read to close.
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if v.split(',').next_back().map(str::trim) == Some("chunked") {
                info.chunked = true;
            } else {
                info.close = true;
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            // Digits only, every value the same (RFC 9112 §6.3): anything
            // else is a bad response, never passed on.
            for part in h.value.split(|&b| b == b',') {
                let n = crate::http::body::parse_length(part)
                    .ok_or_else(|| bad("invalid Content-Length"))?;
                if info.length.is_some_and(|m| m != n) {
                    return Err(bad("conflicting Content-Length"));
                }
                info.length = Some(n);
            }
        }
    }
    let mut map = HeaderMap::with_capacity(raw.len());
    for h in raw {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            return Err(bad(format!("invalid header name {:?}", h.name)));
        };
        if not_forwarded(&name) || named.iter().any(|n| n == name.as_str()) {
            continue;
        }
        if name == http::header::CONTENT_LENGTH {
            continue; // the body is framed anew from what was checked (below)
        }
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| bad(format!("invalid value of {name}")))?;
        map.append(name, value);
    }
    if let (Some(n), false) = (info.length, info.chunked) {
        map.insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    Ok((map, info))
}

/// The chunked decoder's place in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a size line.
    Size,
    /// This many bytes of chunk data left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines until an empty one.
    Trailers,
    /// The last chunk and its trailers were read.
    Done,
}

/// A chunked body, decoded as bytes arrive.
#[derive(Debug, Clone)]
pub struct Chunked {
    state: ChunkState,
}

impl Default for Chunked {
    fn default() -> Self {
        Self {
            state: ChunkState::Size,
        }
    }
}

/// One step of [`Chunked::decode`].
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes (taken from the buffer without a copy).
    Data(Bytes),
    /// The body is complete (trailers dropped).
    End,
}

impl Chunked {
    /// Decodes from the front of `buf`, taking what it consumes;
    /// `Ok(None)`: need more bytes.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, H1Error> {
        loop {
            match self.state {
                ChunkState::Done => return Ok(Some(Decoded::End)),
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = left.min(buf.len() as u64) as usize;
                    let data = buf.split_to(n).freeze();
                    self.state = if left == n as u64 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - n as u64)
                    };
                    return Ok(Some(Decoded::Data(data)));
                }
                ChunkState::Size | ChunkState::DataEnd | ChunkState::Trailers => {
                    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                        if buf.len() > MAX_HEAD {
                            return Err(bad("chunk line too long"));
                        }
                        return Ok(None);
                    };
                    let line = buf.split_to(end + 2);
                    let line = &line[..end];
                    match self.state {
                        ChunkState::Size => {
                            let hex = line.split(|&b| b == b';').next().unwrap_or_default();
                            let size = std::str::from_utf8(hex)
                                .ok()
                                .map(str::trim)
                                .filter(|h| !h.is_empty() && h.len() <= 16)
                                .and_then(|h| u64::from_str_radix(h, 16).ok());
                            self.state = match size {
                                Some(0) => ChunkState::Trailers,
                                Some(n) => ChunkState::Data(n),
                                None => return Err(bad("bad chunk size line")),
                            };
                        }
                        ChunkState::DataEnd if line.is_empty() => self.state = ChunkState::Size,
                        ChunkState::DataEnd => return Err(bad("missing CRLF after a chunk")),
                        ChunkState::Trailers if line.is_empty() => {
                            self.state = ChunkState::Done;
                            return Ok(Some(Decoded::End));
                        }
                        _ => {} // a trailer line: dropped
                    }
                }
            }
        }
    }
}

/// Drops `n` bytes from the front of `buf` (an interim head).
pub fn skip(buf: &mut BytesMut, n: usize) {
    buf.advance(n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_framed_from_what_was_checked() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close, x-a\r\nx-a: 1\r\nx-b: 2\r\n\r\nhello";
        let Some(Parsed::Final(h, n)) = parse_head(wire, false).unwrap() else {
            panic!()
        };
        assert_eq!(n, wire.len() - 5);
        assert_eq!(h.body, BodyKind::Length(5));
        assert!(!h.keep_alive);
        assert!(h.headers.get("x-a").is_none() && h.headers.get("connection").is_none());
        assert_eq!(h.headers["content-length"], "5");
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"HTTP/1.1 2000 No\r\n\r\n",
        ] {
            assert!(
                parse_head(bad, false).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            parse_head(b"HTTP/1.1 100 Continue\r\n\r\n", false),
            Ok(Some(Parsed::Interim(StatusCode::CONTINUE, 25)))
        ));
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Le", false)
                .unwrap()
                .is_none()
        );
        let Some(Parsed::Final(h, _)) = parse_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
            false,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(h.body, BodyKind::Chunked);
        assert!(h.headers.get("content-length").is_none());
    }

    #[test]
    fn chunks_decode_across_any_split() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n";
        for split in 1..wire.len() {
            let mut d = Chunked::default();
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            let mut ended = false;
            for piece in wire.chunks(split) {
                buf.extend_from_slice(piece);
                while let Some(step) = d.decode(&mut buf).unwrap() {
                    match step {
                        Decoded::Data(b) => out.extend_from_slice(&b),
                        Decoded::End => {
                            ended = true;
                            break;
                        }
                    }
                }
            }
            assert!(ended, "split {split}");
            assert_eq!(out, b"hello world", "split {split}");
        }
        let mut d = Chunked::default();
        assert!(d.decode(&mut BytesMut::from(&b"zz\r\n"[..])).is_err());
        let mut d = Chunked::default();
        assert!(d.decode(&mut BytesMut::from(&b"1\r\nab"[..])).is_ok());
    }
}
