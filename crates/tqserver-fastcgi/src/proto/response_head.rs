//! The CGI response head at the start of a Responder's `STDOUT`
//! (RFC 3875 §6): header lines up to an empty line, with the CGI-only
//! `Status:` field giving the HTTP status.
//!
//! The parser is incremental: feed it `STDOUT` payloads as they arrive
//! (the head may be split over many records) and it returns the head and
//! the first body bytes once the empty line is seen. `\n` and `\r\n` line
//! ends are both accepted. The head is bounded by [`Limits::max_head_bytes`]
//! and [`Limits::max_head_fields`]; anything malformed is an error the
//! server turns into 502 Bad Gateway.

use bytes::{Bytes, BytesMut};

use super::Limits;

/// Why a CGI response head was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// The head did not end within the limit.
    #[error("the CGI response head is longer than {limit} bytes")]
    TooLarge {
        /// `Limits::max_head_bytes`.
        limit: usize,
    },
    /// Too many header lines.
    #[error("the CGI response head has more than {limit} header lines")]
    TooManyFields {
        /// `Limits::max_head_fields`.
        limit: usize,
    },
    /// A header line is not `Name: value`.
    #[error("CGI response head line {line}: {reason}")]
    Malformed {
        /// 1-based line number in the head.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `Status:` is not a three-digit code (100–999) with an optional reason.
    #[error("CGI response head has an invalid Status: {0:?}")]
    BadStatus(String),
    /// `STDOUT` ended before the empty line that closes the head.
    #[error("the response ended before the end of its CGI head ({0} bytes received)")]
    Incomplete(usize),
}

/// A parsed CGI response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// HTTP status: from `Status:`, else 302 when `Location:` is present
    /// (RFC 3875 §6.2.3), else 200.
    pub status: u16,
    /// Reason phrase given after the code in `Status:`, if any.
    pub reason: Option<String>,
    /// Header fields in the order the application sent them, repeats kept
    /// (several `Set-Cookie`), without `Status`. Names keep their case.
    pub headers: Vec<(Bytes, Bytes)>,
}

impl ResponseHead {
    /// The first value of header `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Bytes> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }
}

/// Incremental parser of one response head.
#[derive(Debug)]
pub struct HeadParser {
    buf: BytesMut,
    /// Bytes of `buf` already scanned for line ends.
    scanned: usize,
    /// Start of the line being scanned.
    line_start: usize,
    limits: Limits,
}

impl HeadParser {
    /// A parser enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            buf: BytesMut::new(),
            scanned: 0,
            line_start: 0,
            limits,
        }
    }

    /// Bytes buffered so far (the head is not complete yet).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feeds the next `STDOUT` payload. Returns the head and the body bytes
    /// that followed it in this payload once the head is complete; the
    /// parser must not be used after that.
    pub fn push(&mut self, chunk: Bytes) -> Result<Option<(ResponseHead, Bytes)>, HeadError> {
        if self.buf.is_empty() {
            // Fast path: the whole head is in the first payload (the usual
            // case with PHP); parse it in place, no copy.
            let (end, line_start) = find_end(&chunk, 0, 0);
            match end {
                Some(end) => {
                    self.check_len(end)?;
                    let head = parse(chunk.slice(..end), &self.limits)?;
                    return Ok(Some((head, chunk.slice(end..))));
                }
                None => {
                    self.check_len(chunk.len())?;
                    self.buf.extend_from_slice(&chunk);
                    self.scanned = chunk.len();
                    self.line_start = line_start;
                    return Ok(None);
                }
            }
        }
        self.buf.extend_from_slice(&chunk);
        let (end, line_start) = find_end(&self.buf, self.scanned, self.line_start);
        match end {
            Some(end) => {
                self.check_len(end)?;
                let mut all = std::mem::take(&mut self.buf);
                let body = all.split_off(end).freeze();
                Ok(Some((parse(all.freeze(), &self.limits)?, body)))
            }
            None => {
                self.check_len(self.buf.len())?;
                self.scanned = self.buf.len();
                self.line_start = line_start;
                Ok(None)
            }
        }
    }

    /// Call when `STDOUT` has ended without a complete head.
    pub fn incomplete(&self) -> HeadError {
        HeadError::Incomplete(self.buf.len())
    }

    fn check_len(&self, len: usize) -> Result<(), HeadError> {
        if len > self.limits.max_head_bytes {
            Err(HeadError::TooLarge {
                limit: self.limits.max_head_bytes,
            })
        } else {
            Ok(())
        }
    }
}

/// Looks for the empty line ending the head in `buf[from..]`. Returns the
/// offset just past it, and where the current line starts.
fn find_end(buf: &[u8], from: usize, mut line_start: usize) -> (Option<usize>, usize) {
    let mut at = from;
    while let Some(i) = buf[at..].iter().position(|&b| b == b'\n') {
        let nl = at + i;
        let line = &buf[line_start..nl];
        if line.is_empty() || line == b"\r" {
            return (Some(nl + 1), line_start);
        }
        line_start = nl + 1;
        at = nl + 1;
    }
    (None, line_start)
}

fn is_token(b: u8) -> bool {
    // RFC 9110 §5.6.2 tchar
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_value_byte(b: u8) -> bool {
    // Visible ASCII, space, tab and obs-text; no other control bytes
    // (RFC 9110 §5.5), so every value is also a valid HTTP field value.
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Parses a complete head (ending with its empty line).
fn parse(head: Bytes, limits: &Limits) -> Result<ResponseHead, HeadError> {
    let mut status = None;
    let mut reason = None;
    let mut headers = Vec::new();
    let mut start = 0;
    let mut line_no = 0;
    while let Some(i) = head[start..].iter().position(|&b| b == b'\n') {
        let end = start + i;
        let line_end = if end > start && head[end - 1] == b'\r' {
            end - 1
        } else {
            end
        };
        let (ls, le) = (start, line_end);
        start = end + 1;
        line_no += 1;
        if ls == le {
            break;
        }
        let line = &head[ls..le];
        let malformed = |reason| HeadError::Malformed {
            line: line_no,
            reason,
        };
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| malformed("no ':' between name and value"))?;
        let name = &line[..colon];
        if name.is_empty() {
            return Err(malformed("empty header name"));
        }
        if !name.iter().all(|&b| is_token(b)) {
            return Err(malformed("header name has a character not allowed in HTTP"));
        }
        let raw_value = &line[colon + 1..];
        if !raw_value.iter().all(|&b| is_value_byte(b)) {
            return Err(malformed("header value has a control character"));
        }
        let value = trim_ows(raw_value);
        if name.eq_ignore_ascii_case(b"status") {
            let (code, why) = parse_status(value)?;
            status = Some(code);
            reason = why;
            continue;
        }
        if headers.len() == limits.max_head_fields {
            return Err(HeadError::TooManyFields {
                limit: limits.max_head_fields,
            });
        }
        let voff = ls + colon + 1 + (raw_value.len() - trim_ows_start(raw_value).len());
        headers.push((
            head.slice(ls..ls + colon),
            head.slice(voff..voff + value.len()),
        ));
    }
    let status = status.unwrap_or_else(|| {
        if headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(b"location"))
        {
            302
        } else {
            200
        }
    });
    Ok(ResponseHead {
        status,
        reason,
        headers,
    })
}

fn trim_ows_start(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    s
}

fn parse_status(value: &[u8]) -> Result<(u16, Option<String>), HeadError> {
    let bad = || HeadError::BadStatus(String::from_utf8_lossy(value).into_owned());
    if value.len() < 3 || !value[..3].iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    if value.len() > 3 && value[3] != b' ' && value[3] != b'\t' {
        return Err(bad());
    }
    let code =
        (value[0] - b'0') as u16 * 100 + (value[1] - b'0') as u16 * 10 + (value[2] - b'0') as u16;
    if code < 100 {
        return Err(bad());
    }
    let why = trim_ows(&value[3..]);
    let reason = (!why.is_empty()).then(|| String::from_utf8_lossy(why).into_owned());
    Ok((code, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_shot(s: &str) -> Result<(ResponseHead, Bytes), HeadError> {
        let mut p = HeadParser::new(Limits::default());
        match p.push(Bytes::copy_from_slice(s.as_bytes()))? {
            Some(x) => Ok(x),
            None => Err(p.incomplete()),
        }
    }

    fn names(h: &ResponseHead) -> Vec<(String, String)> {
        h.headers
            .iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into(),
                    String::from_utf8_lossy(v).into(),
                )
            })
            .collect()
    }

    #[test]
    fn status_line_with_reason() {
        let (h, body) =
            one_shot("Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope").unwrap();
        assert_eq!(h.status, 404);
        assert_eq!(h.reason.as_deref(), Some("Not Found"));
        assert_eq!(names(&h), [("Content-Type".into(), "text/plain".into())]);
        assert_eq!(&body[..], b"nope");
    }

    #[test]
    fn headers_after_status_are_kept() {
        // Regression (Go TQServer): every header after `Status:` was dropped.
        let (h, _) = one_shot(
            "X-Before: 1\r\nStatus: 201 Created\r\nX-After: 2\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.status, 201);
        assert_eq!(
            names(&h),
            [
                ("X-Before".into(), "1".into()),
                ("X-After".into(), "2".into()),
                ("Set-Cookie".into(), "a=1".into()),
                ("Set-Cookie".into(), "b=2".into()),
            ]
        );
        let cookies: Vec<_> = h.get_all("set-cookie").collect();
        assert_eq!(cookies, [&Bytes::from("a=1"), &Bytes::from("b=2")]);
    }

    #[test]
    fn location_without_status_is_302() {
        let (h, _) = one_shot("Location: /elsewhere\n\n").unwrap();
        assert_eq!(h.status, 302);
        let (h, _) = one_shot("Status: 301\nLocation: /x\n\n").unwrap();
        assert_eq!(h.status, 301);
        assert_eq!(h.reason, None);
    }

    #[test]
    fn bare_newlines_mixed_line_ends_and_empty_head() {
        let (h, b) = one_shot("A: 1\nB:2\r\n\nbody\r\n\r\nmore").unwrap();
        assert_eq!(
            names(&h),
            [("A".into(), "1".into()), ("B".into(), "2".into())]
        );
        assert_eq!(&b[..], b"body\r\n\r\nmore");
        let (h, b) = one_shot("\r\nonly body").unwrap();
        assert_eq!((h.status, h.headers.len()), (200, 0));
        assert_eq!(&b[..], b"only body");
    }

    #[test]
    fn head_split_at_every_byte_gives_the_same_result() {
        let text = "Status: 404 Not Found\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Long: vvvvvvvvvvvvvvvvvvvv\n\r\nthe body";
        let want = one_shot(text).unwrap();
        for step in 1..text.len() {
            let mut p = HeadParser::new(Limits::default());
            let mut got = None;
            let mut rest = Vec::new();
            for chunk in text.as_bytes().chunks(step) {
                if let Some((h, b)) = &got {
                    let _ = (h, b);
                    rest.extend_from_slice(chunk);
                    continue;
                }
                got = p.push(Bytes::copy_from_slice(chunk)).unwrap();
            }
            let (h, b) = got.unwrap();
            let mut body = b.to_vec();
            body.extend_from_slice(&rest);
            assert_eq!(h, want.0, "step {step}");
            assert_eq!(body, want.1.to_vec(), "step {step}");
        }
    }

    #[test]
    fn malformed_heads_are_errors() {
        for bad in [
            "no colon here\r\n\r\n",
            ": empty name\r\n\r\n",
            "Bad Name: x\r\n\r\n",
            "X: a\x01b\r\n\r\n",
            "Status: abc\r\n\r\n",
            "Status: 99\r\n\r\n",
            "Status: 2000\r\n\r\n",
            "Status: 099 Low\r\n\r\n",
        ] {
            assert!(one_shot(bad).is_err(), "{bad:?}");
        }
        assert_eq!(one_shot("A: 1\r\n"), Err(HeadError::Incomplete(6)));
    }

    #[test]
    fn oversize_head_is_refused_even_when_it_never_ends() {
        let limits = Limits {
            max_head_bytes: 64,
            max_head_fields: 3,
            ..Limits::default()
        };
        let mut p = HeadParser::new(limits);
        let mut err = None;
        for _ in 0..100 {
            match p.push(Bytes::from_static(b"X-Filler: 0123456789\r\n")) {
                Ok(_) => {}
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        assert_eq!(err, Some(HeadError::TooLarge { limit: 64 }));
        assert!(p.buffered() <= 64 + 22);
        let mut p = HeadParser::new(limits);
        assert_eq!(
            p.push(Bytes::from_static(b"A: 1\nA: 2\nA: 3\nA: 4\n\n")),
            Err(HeadError::TooManyFields { limit: 3 })
        );
    }
}
