//! Raw HTTP/1.1 over a TCP socket, for tests that must send exactly the
//! bytes an attacker would and see exactly the bytes that come back (no
//! client library to normalise either side).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// One response as it was framed on the wire.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A connection to 127.0.0.1:`port`; reads time out after `read` (a
/// bound for a test that would otherwise hang, not a timing assertion).
pub fn connect(port: u16, read: Duration) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(read)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Sends `req`, reads at least `bytes` of the answer, then closes the
/// connection: a client that goes away mid-answer. What it read.
pub fn leave_mid_answer(port: u16, req: &[u8], bytes: usize) -> Vec<u8> {
    let mut s = connect(port, Duration::from_secs(5));
    s.write_all(req).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < bytes {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// Reads whatever arrives until the peer closes, nothing more has come
/// for `quiet`, or `cap` has passed. The second value: the peer closed.
pub fn read_until_quiet(s: &mut TcpStream, quiet: Duration, cap: Duration) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(quiet)).unwrap();
    let until = Instant::now() + cap;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while Instant::now() < until {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (out, false);
            }
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

/// Sends `req` on a new connection and returns every byte that came back
/// (until the server closed or went quiet for a second).
pub fn exchange(port: u16, req: &[u8]) -> Vec<u8> {
    let mut s = connect(port, Duration::from_secs(10));
    s.write_all(req).unwrap();
    read_until_quiet(&mut s, Duration::from_secs(2), Duration::from_secs(30)).0
}

/// Parses one response off the front of `buf` (`head` says the request
/// was a HEAD); `None` if `buf` holds no complete response. Returns it and
/// the bytes it took; a body without a length runs to the end of `buf`.
pub fn parse_one(buf: &[u8], head: bool) -> Option<(Resp, usize)> {
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut r = httparse::Response::new(&mut slots);
    let httparse::Status::Complete(len) = r.parse(buf).ok()? else {
        return None;
    };
    let status = r.code?;
    let headers: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let rest = &buf[len..];
    if head || status == 204 || status == 304 || (100..200).contains(&status) {
        return Some((
            Resp {
                status,
                headers,
                body: Vec::new(),
            },
            len,
        ));
    }
    if get("transfer-encoding").is_some_and(|t| t.to_ascii_lowercase().contains("chunked")) {
        let mut body = Vec::new();
        let mut at = 0;
        loop {
            let line_end = rest[at..].windows(2).position(|w| w == b"\r\n")? + at;
            let size_text = std::str::from_utf8(&rest[at..line_end]).ok()?;
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            at = line_end + 2;
            if size == 0 {
                // Trailers until an empty line.
                loop {
                    let e = rest[at..].windows(2).position(|w| w == b"\r\n")? + at;
                    let empty = e == at;
                    at = e + 2;
                    if empty {
                        break;
                    }
                }
                return Some((
                    Resp {
                        status,
                        headers,
                        body,
                    },
                    len + at,
                ));
            }
            if rest.len() < at + size + 2 {
                return None;
            }
            body.extend_from_slice(&rest[at..at + size]);
            at += size + 2;
        }
    }
    match get("content-length") {
        Some(n) => {
            let n: usize = n.trim().parse().ok()?;
            if rest.len() < n {
                return None;
            }
            Some((
                Resp {
                    status,
                    headers,
                    body: rest[..n].to_vec(),
                },
                len + n,
            ))
        }
        None => Some((
            Resp {
                status,
                headers,
                body: rest.to_vec(),
            },
            buf.len(),
        )),
    }
}

/// Every complete response in `buf`, in order, and what is left over.
pub fn parse_all(buf: &[u8]) -> (Vec<Resp>, Vec<u8>) {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        match parse_one(&buf[at..], false) {
            Some((r, n)) if n > 0 => {
                out.push(r);
                at += n;
            }
            _ => break,
        }
    }
    (out, buf[at..].to_vec())
}

/// Reads one whole response from `s` (waiting up to `cap`).
pub fn read_response(s: &mut TcpStream, head: bool, cap: Duration) -> Option<Resp> {
    let until = Instant::now() + cap;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    loop {
        if let Some((r, _)) = parse_one(&buf, head) {
            let framed = r.header("content-length").is_some()
                || r.header("transfer-encoding").is_some()
                || head;
            if framed {
                return Some(r);
            }
        }
        if Instant::now() >= until {
            return parse_one(&buf, head).map(|(r, _)| r);
        }
        match s.read(&mut chunk) {
            Ok(0) => return parse_one(&buf, head).map(|(r, _)| r),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return parse_one(&buf, head).map(|(r, _)| r),
        }
    }
}

/// Whether the server closes `s` (EOF or reset) within `cap`, reading and
/// dropping whatever it sends meanwhile.
pub fn closed_within(s: &mut TcpStream, cap: Duration) -> bool {
    let until = Instant::now() + cap;
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}
