//! Response compression, as Caddy's `encode` and nginx's `gzip`: gzip,
//! brotli or zstd by the client's `Accept-Encoding`, for compressible
//! types, streamed.
//!
//! [`Policy`] is what a worker allows; [`Asked::new`] reads the request
//! before it is handed on; [`respond`] wraps the answer. The encoder
//! compresses each chunk as it arrives and flushes whenever the body it
//! wraps has nothing ready (a PHP `flush()`, a native worker's stream), so
//! a streamed answer stays streamed and a file read at once compresses
//! as one stream. Nothing is buffered whole.
//!
//! Not compressed: a HEAD's (headers only), 1xx, 204, 206 and 304
//! answers, one that already has a `Content-Encoding` or a
//! `Content-Range`, `Cache-Control: no-transform`, a type outside the
//! policy's list (images, archives and fonts in WOFF are compressed
//! already), and one shorter than `min_length`. A compressed answer loses
//! its `Content-Length` and `Accept-Ranges`, and a strong `ETag` becomes
//! weak (it names the identity bytes); every answer of a compressible type
//! carries `Vary: Accept-Encoding`, compressed or not, so caches keep the
//! two apart.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::{Body as _, Frame};
use http_body_util::BodyExt;

use super::{Body, empty};

/// A content coding TQServer can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// Zstandard (RFC 8878).
    Zstd,
    /// Brotli (RFC 7932).
    Br,
    /// gzip (RFC 1952).
    Gzip,
}

impl Encoding {
    /// Every one, smallest output first: the order precompressed
    /// siblings are looked for in (they cost nothing to send).
    pub const ALL: [Encoding; 3] = [Encoding::Zstd, Encoding::Br, Encoding::Gzip];

    /// The default order of preference for compressing on the fly: by
    /// cost. zstd at level 3 is the fastest and about the smallest; gzip
    /// (level 2) is about as fast as nginx's level 1 for smaller output;
    /// brotli (in Rust, level 4) costs twice that for the size of zstd's,
    /// so it is chosen only by a client that takes neither of the others.
    pub const BY_COST: [Encoding; 3] = [Encoding::Zstd, Encoding::Gzip, Encoding::Br];

    /// The `Content-Encoding` token.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Zstd => "zstd",
            Encoding::Br => "br",
            Encoding::Gzip => "gzip",
        }
    }

    /// The suffix of a precompressed sibling (`app.js.br`).
    pub fn suffix(self) -> &'static str {
        match self {
            Encoding::Zstd => ".zst",
            Encoding::Br => ".br",
            Encoding::Gzip => ".gz",
        }
    }

    /// The coding named `token` (`x-gzip` is gzip, RFC 9110 §8.4.1.3).
    pub fn parse(token: &str) -> Option<Self> {
        match token.to_ascii_lowercase().as_str() {
            "zstd" => Some(Encoding::Zstd),
            "br" => Some(Encoding::Br),
            "gzip" | "x-gzip" => Some(Encoding::Gzip),
            _ => None,
        }
    }
}

/// Compression levels, one per coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels {
    /// gzip, 1–9.
    pub gzip: u32,
    /// brotli, 0–11.
    pub br: u32,
    /// zstd, 1–19.
    pub zstd: i32,
}

/// Default levels, for answers made per request (measured in
/// bench/compress.sh and docs/BENCHMARKS.md). zstd 3 is zstd's own
/// default. gzip 2, not nginx's 1: zlib-rs's level 1 is a quicker
/// algorithm whose output is a third larger than zlib's level 1, and its
/// level 2 is zlib's level 1 in size and speed. brotli 4 is what CDNs use
/// on the fly.
pub const DEFAULT_LEVELS: Levels = Levels {
    gzip: 2,
    br: 4,
    zstd: 3,
};

/// Default `min_length`: shorter answers gain too little (Caddy: 512).
pub const DEFAULT_MIN_LENGTH: u64 = 512;

/// Default compressible types: text and the text-like application types.
/// `type/*` matches a whole type, `*+json` a structured suffix.
pub const DEFAULT_TYPES: [&str; 13] = [
    "text/*",
    "application/javascript",
    "application/x-javascript",
    "application/json",
    "application/*+json",
    "application/xml",
    "application/*+xml",
    "application/wasm",
    "application/x-httpd-php-source",
    "image/svg+xml",
    "image/x-icon",
    "font/ttf",
    "font/otf",
];

/// What a worker compresses, and how (`compression:` in worker.yaml).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `enabled`: compress answers at all.
    pub enabled: bool,
    /// `encodings`: offered, in the server's order of preference (used
    /// when the client weighs several the same).
    pub encodings: Vec<Encoding>,
    /// `levels`.
    pub levels: Levels,
    /// `min_length`: answers with a shorter `Content-Length` are sent as
    /// they are (an answer of unknown length is compressed).
    pub min_length: u64,
    /// `types`: media types compressed (lower case; `text/*`,
    /// `application/*+json` patterns).
    pub types: Vec<String>,
    /// `precompressed`: serve `file.br` / `.zst` / `.gz` next to a static
    /// file, when the client accepts it and it is not older than the file.
    pub precompressed: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            enabled: true,
            encodings: Encoding::BY_COST.to_vec(),
            levels: DEFAULT_LEVELS,
            min_length: DEFAULT_MIN_LENGTH,
            types: DEFAULT_TYPES.iter().map(|s| (*s).to_string()).collect(),
            precompressed: true,
        }
    }
}

impl Policy {
    /// Whether a `Content-Type` value is one this policy compresses.
    pub fn compressible(&self, content_type: &str) -> bool {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let Some((ty, sub)) = essence.split_once('/') else {
            return false;
        };
        self.types.iter().any(|p| {
            let Some((pty, psub)) = p.split_once('/') else {
                return false;
            };
            pty == ty
                && (psub == "*"
                    || psub == sub
                    || psub
                        .strip_prefix('*')
                        .is_some_and(|suffix| sub.ends_with(suffix)))
        })
    }

    /// The codings this policy offers that `accept` (an `Accept-Encoding`
    /// value) takes, best first: the client's weight, then the policy's
    /// order. RFC 9110 §12.5.3: a coding is acceptable when listed with a
    /// non-zero weight, or covered by `*` with one.
    pub fn acceptable(&self, accept: &str) -> Vec<Encoding> {
        self.ranked(accept, |e| self.encodings.iter().position(|o| *o == e))
    }

    /// The precompressed siblings to look for, best first: as
    /// [`Self::acceptable`], but among codings the client weighs the same
    /// the smallest output first ([`Encoding::ALL`]), since a file
    /// compressed ahead of time costs nothing to send.
    pub fn siblings(&self, accept: &str) -> Vec<Encoding> {
        self.ranked(accept, |e| Encoding::ALL.iter().position(|o| *o == e))
    }

    /// The offered codings `accept` takes, by its weight, then `rank`.
    fn ranked(&self, accept: &str, rank: impl Fn(Encoding) -> Option<usize>) -> Vec<Encoding> {
        let listed = weights(accept);
        let star = listed.iter().find(|(_, s, _)| *s).map(|(_, _, q)| *q);
        let mut found: Vec<(u16, Option<usize>, Encoding)> = self
            .encodings
            .iter()
            .filter_map(|e| {
                let explicit = listed.iter().find(|(l, _, _)| *l == Some(*e)).map(|l| l.2);
                let q = explicit.or(star).unwrap_or(0);
                (q > 0).then(|| (q, rank(*e), *e))
            })
            .collect();
        found.sort_by_key(|(q, r, _)| (std::cmp::Reverse(*q), *r));
        found.into_iter().map(|(_, _, e)| e).collect()
    }
}

/// An `Accept-Encoding` value's items: the coding (if one of ours),
/// whether it is `*`, its weight in thousandths.
fn weights(accept: &str) -> Vec<(Option<Encoding>, bool, u16)> {
    let mut listed = Vec::new();
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let token = parts.next().unwrap_or("").trim();
        if token.is_empty() {
            continue;
        }
        // Several weights (malformed): the lowest, so a coding one of
        // them refuses is refused.
        let mut q = 1000;
        for p in parts {
            let p = p.trim();
            if let Some(v) = p.strip_prefix("q=").or(p.strip_prefix("Q=")) {
                q = q.min(parse_q(v).unwrap_or(0));
            }
        }
        listed.push((Encoding::parse(token), token == "*", q));
    }
    listed
}

/// A qvalue (`0`, `0.5`, `1.000`) in thousandths.
fn parse_q(v: &str) -> Option<u16> {
    let v = v.trim();
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole = match int {
        "0" => 0,
        "1" => 1000,
        _ => return None,
    };
    let mut f = 0u16;
    for (i, b) in frac.bytes().enumerate() {
        f += u16::from(b - b'0') * [100, 10, 1][i];
    }
    (whole + f <= 1000).then_some(whole + f)
}

/// What a request asks of compression, read before it is handed on.
#[derive(Debug, Clone)]
pub struct Asked {
    /// The coding to use, if any is acceptable.
    pub encoding: Option<Encoding>,
    head: bool,
}

impl Asked {
    /// Reads `Accept-Encoding` against `policy`; `None`: compression is
    /// off for this worker.
    pub fn new(policy: &Policy, method: &Method, headers: &HeaderMap) -> Option<Self> {
        if !policy.enabled || policy.encodings.is_empty() {
            return None;
        }
        let encoding =
            accept_encoding(headers).and_then(|a| policy.acceptable(&a).first().copied());
        Some(Self {
            encoding,
            head: method == Method::HEAD,
        })
    }
}

/// The request's `Accept-Encoding` values, joined.
pub fn accept_encoding(headers: &HeaderMap) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// Adds `Accept-Encoding` to `Vary` unless it is there (or `*` is).
pub fn vary(headers: &mut HeaderMap) {
    let present = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.eq_ignore_ascii_case("accept-encoding")
        });
    if !present {
        headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// `resp`, compressed as `asked` and `policy` say (see the module's
/// rules).
pub fn respond(policy: &Policy, asked: &Asked, mut resp: Response<Body>) -> Response<Body> {
    let status = resp.status();
    let h = resp.headers();
    if status.is_informational()
        || matches!(
            status,
            StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
        )
        || h.contains_key(header::CONTENT_ENCODING)
        || h.contains_key(header::CONTENT_RANGE)
        || h.get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains("no-transform"))
    {
        if status == StatusCode::NOT_MODIFIED && asked.encoding.is_some() {
            // The 200 it stands for may have been compressed.
            vary(resp.headers_mut());
        }
        return resp;
    }
    let compressible = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| policy.compressible(t));
    if !compressible {
        return resp;
    }
    let length = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .or_else(|| resp.body().size_hint().exact());
    if length.is_some_and(|n| n < policy.min_length) {
        return resp;
    }
    vary(resp.headers_mut());
    let Some(encoding) = asked.encoding else {
        return resp;
    };
    let h = resp.headers_mut();
    h.remove(header::CONTENT_LENGTH);
    h.remove(header::ACCEPT_RANGES);
    h.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(encoding.as_str()),
    );
    if let Some(tag) = h.get(header::ETAG).and_then(|v| v.to_str().ok()) {
        if !tag.starts_with("W/") {
            if let Ok(weak) = HeaderValue::from_str(&format!("W/{tag}")) {
                h.insert(header::ETAG, weak);
            }
        }
    }
    if asked.head {
        return resp.map(|_| empty());
    }
    match Encoder::new(encoding, policy.levels) {
        Ok(enc) => resp.map(|inner| {
            Encoded {
                inner,
                enc: Some(enc),
                unflushed: false,
                trailers: None,
            }
            .boxed_unsync()
        }),
        Err(e) => {
            tracing::error!("cannot start a {} encoder: {e}", encoding.as_str());
            let mut r = super::pages::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The answer could not be compressed.",
            );
            r.headers_mut().remove(header::CONTENT_ENCODING);
            r
        }
    }
}

/// Compressed output gathered before it is sent while more input is
/// ready.
const OUT_CHUNK: usize = 32 << 10;

/// One stream's compressor, writing into a `Vec` drained after each call.
enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Br(Option<Box<brotli::CompressorWriter<Vec<u8>>>>, Vec<u8>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    fn new(e: Encoding, levels: Levels) -> std::io::Result<Self> {
        Ok(match e {
            Encoding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(levels.gzip),
            )),
            // A 1 MiB window (lgwin 20): the ratio of the default 4 MiB
            // for web pages, a quarter of the memory per stream.
            Encoding::Br => Encoder::Br(
                Some(Box::new(brotli::CompressorWriter::new(
                    Vec::new(),
                    4096,
                    levels.br,
                    20,
                ))),
                Vec::new(),
            ),
            Encoding::Zstd => {
                Encoder::Zstd(zstd::stream::write::Encoder::new(Vec::new(), levels.zstd)?)
            }
        })
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(g) => g.write_all(data),
            Encoder::Br(Some(b), _) => b.write_all(data),
            Encoder::Br(None, _) => Err(std::io::Error::other("brotli stream finished")),
            Encoder::Zstd(z) => z.write_all(data),
        }
    }

    /// Everything written so far made decodable by the client.
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(g) => g.flush(),
            Encoder::Br(Some(b), _) => b.flush(),
            Encoder::Br(None, _) => Ok(()),
            Encoder::Zstd(z) => z.flush(),
        }
    }

    /// Ends the stream (its trailer: gzip's CRC, zstd's last block).
    fn finish(&mut self) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(g) => g.try_finish(),
            Encoder::Br(b, out) => {
                if let Some(w) = b.take() {
                    let rest = w.into_inner();
                    out.extend_from_slice(&rest);
                }
                Ok(())
            }
            Encoder::Zstd(z) => z.do_finish(),
        }
    }

    /// The output produced so far.
    fn take(&mut self) -> Vec<u8> {
        match self {
            Encoder::Gzip(g) => std::mem::take(g.get_mut()),
            Encoder::Br(Some(b), out) => {
                let mut v = std::mem::take(out);
                v.append(b.get_mut());
                v
            }
            Encoder::Br(None, out) => std::mem::take(out),
            Encoder::Zstd(z) => std::mem::take(z.get_mut()),
        }
    }

    fn pending(&mut self) -> usize {
        match self {
            Encoder::Gzip(g) => g.get_ref().len(),
            Encoder::Br(Some(b), out) => out.len() + b.get_ref().len(),
            Encoder::Br(None, out) => out.len(),
            Encoder::Zstd(z) => z.get_ref().len(),
        }
    }
}

/// A body compressed as it is read.
struct Encoded {
    inner: Body,
    /// `None` once the stream is finished and its last bytes sent.
    enc: Option<Encoder>,
    /// Input written since the last flush.
    unflushed: bool,
    /// The inner body's trailers, sent after the last compressed bytes.
    trailers: Option<HeaderMap>,
}

impl http_body::Body for Encoded {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        let Some(enc) = this.enc.as_mut() else {
            return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
        };
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if data.is_empty() {
                            continue;
                        }
                        if let Err(e) = enc.write(&data) {
                            this.enc = None;
                            return Poll::Ready(Some(Err(e)));
                        }
                        this.unflushed = true;
                        if enc.pending() >= OUT_CHUNK {
                            return Poll::Ready(Some(Ok(Frame::data(enc.take().into()))));
                        }
                    }
                    Err(frame) => {
                        if let Ok(t) = frame.into_trailers() {
                            this.trailers = Some(t);
                        }
                    }
                },
                Poll::Ready(Some(Err(e))) => {
                    this.enc = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    let mut enc = this.enc.take().expect("present above");
                    return match enc.finish() {
                        Ok(()) => {
                            let out = enc.take();
                            if out.is_empty() {
                                Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
                            } else {
                                Poll::Ready(Some(Ok(Frame::data(out.into()))))
                            }
                        }
                        Err(e) => Poll::Ready(Some(Err(e))),
                    };
                }
                Poll::Pending => {
                    // Nothing more is ready: what came so far goes out
                    // decodable, so a streamed answer stays streamed.
                    if this.unflushed {
                        this.unflushed = false;
                        if let Err(e) = enc.flush() {
                            this.enc = None;
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                    let out = enc.take();
                    if out.is_empty() {
                        return Poll::Pending;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(out.into()))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.enc.is_none() && self.trailers.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn policy() -> Policy {
        Policy::default()
    }

    #[test]
    fn negotiation_follows_weights_then_the_servers_order() {
        let p = policy();
        assert_eq!(
            p.acceptable("gzip, deflate, br, zstd"),
            vec![Encoding::Zstd, Encoding::Gzip, Encoding::Br]
        );
        assert_eq!(
            p.acceptable("gzip;q=1, br;q=0.5"),
            vec![Encoding::Gzip, Encoding::Br]
        );
        assert_eq!(p.acceptable("br;q=0, gzip"), vec![Encoding::Gzip]);
        assert_eq!(p.acceptable("identity"), Vec::<Encoding>::new());
        assert_eq!(
            p.acceptable("*;q=0.1, gzip;q=0"),
            vec![Encoding::Zstd, Encoding::Br]
        );
        assert_eq!(
            p.siblings("gzip, br;q=0.9, zstd;q=0"),
            vec![Encoding::Gzip, Encoding::Br]
        );
        assert_eq!(
            p.siblings("gzip, deflate, br"),
            vec![Encoding::Br, Encoding::Gzip]
        );
        assert_eq!(p.acceptable("X-GZIP"), vec![Encoding::Gzip]);
        assert_eq!(p.acceptable("gzip;q=2"), Vec::<Encoding>::new());
        assert_eq!(p.acceptable("gzip;q=0.001"), vec![Encoding::Gzip]);
        assert_eq!(p.acceptable("gzip;q=0;q=1"), Vec::<Encoding>::new());
        assert_eq!(p.acceptable(""), Vec::<Encoding>::new());
    }

    #[test]
    fn types_match_whole_types_and_suffixes() {
        let p = policy();
        assert!(p.compressible("text/html; charset=UTF-8"));
        assert!(p.compressible("Application/JSON"));
        assert!(p.compressible("application/ld+json"));
        assert!(p.compressible("image/svg+xml"));
        assert!(!p.compressible("image/png"));
        assert!(!p.compressible("application/zip"));
        assert!(!p.compressible("font/woff2"));
        assert!(!p.compressible("nonsense"));
    }

    fn answer(ct: &str, body: &'static [u8]) -> Response<Body> {
        Response::builder()
            .header(header::CONTENT_TYPE, ct)
            .header(header::CONTENT_LENGTH, body.len())
            .header(header::ETAG, "\"abc\"")
            .header(header::ACCEPT_RANGES, "bytes")
            .body(
                http_body_util::Full::new(Bytes::from_static(body))
                    .map_err(|e| match e {})
                    .boxed_unsync(),
            )
            .unwrap()
    }

    fn asked(accept: &str) -> Asked {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(accept).unwrap(),
        );
        Asked::new(&policy(), &Method::GET, &h).unwrap()
    }

    async fn bytes(r: Response<Body>) -> Vec<u8> {
        r.into_body().collect().await.unwrap().to_bytes().to_vec()
    }

    const TEXT: &[u8] = b"<p>compressible text, compressible text, compressible text</p>\n\
        <p>compressible text, compressible text, compressible text</p>\n\
        <p>compressible text, compressible text, compressible text</p>\n\
        <p>compressible text, compressible text, compressible text</p>\n\
        <p>compressible text, compressible text, compressible text</p>\n\
        <p>compressible text, compressible text, compressible text</p>\n\
        <p>compressible text, compressible text, compressible text</p>\n\
        <p>compressible text, compressible text, compressible text</p>\n\
        <p>compressible text, compressible text, compressible text</p>\n";

    #[tokio::test]
    async fn each_coding_round_trips_with_its_headers() {
        for (accept, enc) in [("gzip", "gzip"), ("br", "br"), ("zstd", "zstd")] {
            let r = respond(&policy(), &asked(accept), answer("text/html", TEXT));
            let h = r.headers().clone();
            assert_eq!(h[header::CONTENT_ENCODING], enc);
            assert_eq!(h[header::VARY], "Accept-Encoding");
            assert_eq!(h[header::ETAG], "W/\"abc\"");
            assert!(!h.contains_key(header::CONTENT_LENGTH));
            assert!(!h.contains_key(header::ACCEPT_RANGES));
            let got = bytes(r).await;
            assert!(got.len() < TEXT.len(), "{enc}: {} bytes", got.len());
            let mut plain = Vec::new();
            match enc {
                "gzip" => {
                    flate2::read::GzDecoder::new(&got[..])
                        .read_to_end(&mut plain)
                        .unwrap();
                }
                "br" => {
                    brotli::Decompressor::new(&got[..], 4096)
                        .read_to_end(&mut plain)
                        .unwrap();
                }
                _ => plain = zstd::decode_all(&got[..]).unwrap(),
            }
            assert_eq!(plain, TEXT, "{enc}");
        }
    }

    #[tokio::test]
    async fn what_is_left_alone() {
        let p = policy();
        // Not accepted: identity, but Vary still says it depends.
        let r = respond(&p, &asked("identity"), answer("text/html", TEXT));
        assert!(!r.headers().contains_key(header::CONTENT_ENCODING));
        assert_eq!(r.headers()[header::VARY], "Accept-Encoding");
        assert_eq!(r.headers()[header::ETAG], "\"abc\"");
        // A type that is compressed already: untouched, no Vary.
        let r = respond(&p, &asked("gzip"), answer("image/png", TEXT));
        assert!(!r.headers().contains_key(header::CONTENT_ENCODING));
        assert!(!r.headers().contains_key(header::VARY));
        // Too short.
        let r = respond(&p, &asked("gzip"), answer("text/html", b"short"));
        assert!(!r.headers().contains_key(header::CONTENT_ENCODING));
        // Already encoded, a range, no-transform.
        for (name, value) in [
            (header::CONTENT_ENCODING, "br"),
            (header::CONTENT_RANGE, "bytes 0-9/100"),
            (header::CACHE_CONTROL, "public, no-transform"),
        ] {
            let mut a = answer("text/html", TEXT);
            a.headers_mut()
                .insert(name.clone(), HeaderValue::from_static(value));
            let r = respond(&p, &asked("gzip"), a);
            assert_ne!(
                r.headers()
                    .get(header::CONTENT_ENCODING)
                    .map(|v| v.to_str().unwrap()),
                Some("gzip"),
                "{name}"
            );
            assert_eq!(bytes(r).await, TEXT);
        }
        // 206 and 304.
        for status in [StatusCode::PARTIAL_CONTENT, StatusCode::NOT_MODIFIED] {
            let mut a = answer("text/html", TEXT);
            *a.status_mut() = status;
            let r = respond(&p, &asked("gzip"), a);
            assert!(!r.headers().contains_key(header::CONTENT_ENCODING));
        }
        // Off.
        let off = Policy {
            enabled: false,
            ..policy()
        };
        assert!(Asked::new(&off, &Method::GET, &HeaderMap::new()).is_none());
    }

    #[tokio::test]
    async fn an_existing_vary_is_extended_once() {
        let mut a = answer("text/html", TEXT);
        a.headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Cookie"));
        let r = respond(&policy(), &asked("gzip"), a);
        let v: Vec<_> = r.headers().get_all(header::VARY).iter().collect();
        assert_eq!(v, ["Cookie", "Accept-Encoding"]);
        let mut a = answer("text/html", TEXT);
        a.headers_mut()
            .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        let r = respond(&policy(), &asked("gzip"), a);
        assert_eq!(r.headers().get_all(header::VARY).iter().count(), 1);
    }

    /// A body fed through a channel, as a PHP answer arrives.
    struct Fed(tokio::sync::mpsc::Receiver<Bytes>);

    impl http_body::Body for Fed {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            self.get_mut()
                .0
                .poll_recv(cx)
                .map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    /// A streamed body: each chunk is decodable when it is sent, before
    /// the next is produced.
    #[tokio::test]
    async fn a_stream_is_flushed_when_its_source_waits() {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let resp = Response::builder()
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Fed(rx).boxed_unsync())
            .unwrap();
        let r = respond(&policy(), &asked("gzip"), resp);
        let mut body = r.into_body();
        tx.send(Bytes::from_static(b"first part\n")).await.unwrap();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        let mut d = flate2::write::GzDecoder::new(Vec::new());
        d.write_all(&first).unwrap();
        d.flush().unwrap();
        assert_eq!(d.get_ref().as_slice(), b"first part\n");
        tx.send(Bytes::from_static(b"second\n")).await.unwrap();
        drop(tx);
        while let Some(f) = body.frame().await {
            d.write_all(&f.unwrap().into_data().unwrap()).unwrap();
        }
        assert_eq!(d.finish().unwrap(), b"first part\nsecond\n");
    }
}
