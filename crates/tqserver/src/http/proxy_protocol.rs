//! The PROXY protocol (HAProxy's, v1 text and v2 binary), which load
//! balancers put before the first byte of a connection to say who the
//! client is (`server.proxy_protocol: true`). Accepted only from
//! `server.trusted_proxies`; anyone else could claim any address.
//!
//! [`parse`] is a pure function over the bytes received so far: `Ok(None)`
//! means "need more", never an error; it looks at no more than
//! [`MAX_HEADER`] bytes. The fuzz target `proxy_header` calls it directly.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// v2's fixed signature (PROXY protocol spec §2.2).
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line, CRLF included (spec §2.1: 107 bytes).
const V1_MAX: usize = 107;
/// The largest v2 header we accept: 16 bytes plus addresses and TLVs.
/// The spec allows up to 65,535 + 16; AWS and GCP send a few hundred.
pub const MAX_HEADER: usize = 16 + 4096;

/// What the header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A proxied connection: the client's address (and our address as the
    /// client saw it, which TQServer does not use).
    Proxied {
        /// The client.
        source: SocketAddr,
        /// What the client connected to.
        destination: SocketAddr,
    },
    /// The balancer's own connection (health check) or an address family
    /// that carries no IP (`UNKNOWN`, `LOCAL`, Unix): keep the peer.
    Local,
}

/// Why a header is refused (the connection is closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Neither signature.
    #[error("the connection did not start with a PROXY protocol header")]
    Missing,
    /// A v1 line that does not parse.
    #[error("bad PROXY v1 line: {0}")]
    V1(&'static str),
    /// A v2 header that does not parse.
    #[error("bad PROXY v2 header: {0}")]
    V2(&'static str),
}

/// Parses a header off the front of `buf`: the header and the bytes it
/// took, `Ok(None)` when `buf` is a prefix of a valid header so far.
pub fn parse(buf: &[u8]) -> Result<Option<(Header, usize)>, Error> {
    if buf.len() < V2_SIGNATURE.len() {
        let v1 = b"PROXY ".starts_with(&buf[..buf.len().min(6)]);
        let v2 = V2_SIGNATURE.starts_with(buf);
        return if v1 || v2 {
            Ok(None)
        } else {
            Err(Error::Missing)
        };
    }
    if buf.starts_with(V2_SIGNATURE) {
        return parse_v2(buf);
    }
    if buf.starts_with(b"PROXY ") {
        return parse_v1(buf);
    }
    Err(Error::Missing)
}

fn parse_v1(buf: &[u8]) -> Result<Option<(Header, usize)>, Error> {
    let Some(end) = buf.windows(2).take(V1_MAX - 1).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(Error::V1("no CRLF within 107 bytes"))
        } else {
            Ok(None)
        };
    };
    let line = std::str::from_utf8(&buf[6..end]).map_err(|_| Error::V1("not ASCII"))?;
    let used = end + 2;
    let mut parts = line.split(' ');
    let family = parts.next().ok_or(Error::V1("no protocol"))?;
    if family == "UNKNOWN" {
        // The rest of the line is to be ignored (spec §2.1).
        return Ok(Some((Header::Local, used)));
    }
    let (v6, rest): (bool, Vec<&str>) = match family {
        "TCP4" => (false, parts.collect()),
        "TCP6" => (true, parts.collect()),
        _ => return Err(Error::V1("protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let [src, dst, sport, dport] = rest[..] else {
        return Err(Error::V1("expected four fields after the protocol"));
    };
    let ip = |s: &str| -> Result<IpAddr, Error> {
        let ip: IpAddr = s.parse().map_err(|_| Error::V1("bad address"))?;
        if ip.is_ipv6() != v6 {
            return Err(Error::V1("address family does not match the protocol"));
        }
        Ok(ip)
    };
    let port = |s: &str| -> Result<u16, Error> {
        // Decimal without a leading zero (spec §2.1).
        if s.is_empty()
            || (s.len() > 1 && s.starts_with('0'))
            || !s.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(Error::V1("bad port"));
        }
        s.parse().map_err(|_| Error::V1("bad port"))
    };
    Ok(Some((
        Header::Proxied {
            source: SocketAddr::new(ip(src)?, port(sport)?),
            destination: SocketAddr::new(ip(dst)?, port(dport)?),
        },
        used,
    )))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(Header, usize)>, Error> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(Error::V2("version is not 2"));
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if 16 + len > MAX_HEADER {
        return Err(Error::V2("header larger than TQServer accepts"));
    }
    if buf.len() < 16 + len {
        return Ok(None);
    }
    let used = 16 + len;
    let body = &buf[16..used];
    match ver_cmd & 0x0f {
        0 => return Ok(Some((Header::Local, used))), // LOCAL
        1 => {}                                      // PROXY
        _ => return Err(Error::V2("unknown command")),
    }
    let family = buf[13] >> 4;
    let transport = buf[13] & 0x0f;
    if transport != 1 && family != 0 && family != 3 {
        // Only STREAM (TCP) makes sense in front of HTTP.
        return Err(Error::V2("transport is not STREAM"));
    }
    let header = match family {
        1 => {
            if body.len() < 12 {
                return Err(Error::V2("IPv4 addresses cut short"));
            }
            let src = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            let dst = Ipv4Addr::new(body[4], body[5], body[6], body[7]);
            Header::Proxied {
                source: SocketAddr::new(src.into(), u16::from_be_bytes([body[8], body[9]])),
                destination: SocketAddr::new(dst.into(), u16::from_be_bytes([body[10], body[11]])),
            }
        }
        2 => {
            if body.len() < 36 {
                return Err(Error::V2("IPv6 addresses cut short"));
            }
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&body[0..16]);
            d.copy_from_slice(&body[16..32]);
            Header::Proxied {
                source: SocketAddr::new(
                    Ipv6Addr::from(s).into(),
                    u16::from_be_bytes([body[32], body[33]]),
                ),
                destination: SocketAddr::new(
                    Ipv6Addr::from(d).into(),
                    u16::from_be_bytes([body[34], body[35]]),
                ),
            }
        }
        // UNSPEC and UNIX carry no IP address.
        0 | 3 => Header::Local,
        _ => return Err(Error::V2("unknown address family")),
    };
    Ok(Some((header, used)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut b = V2_SIGNATURE.to_vec();
        b.push(0x20 | cmd);
        b.push(fam);
        b.extend_from_slice(&(body.len() as u16).to_be_bytes());
        b.extend_from_slice(body);
        b
    }

    #[test]
    fn v1_lines() {
        let (h, n) = parse(b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\nGET /")
            .unwrap()
            .unwrap();
        assert_eq!(n, 41);
        assert_eq!(
            h,
            Header::Proxied {
                source: "203.0.113.7:5555".parse().unwrap(),
                destination: "10.0.0.1:80".parse().unwrap()
            }
        );
        let (h, _) = parse(b"PROXY TCP6 ::1 ::2 1 2\r\n").unwrap().unwrap();
        assert!(
            matches!(h, Header::Proxied { source, .. } if source == "[::1]:1".parse().unwrap())
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN whatever\r\n").unwrap().unwrap().0,
            Header::Local
        );
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4"), Ok(None));
        assert_eq!(parse(b"PRO"), Ok(None));
        for bad in [
            &b"PROXY TCP4 ::1 1.2.3.4 1 2\r\n"[..],
            b"PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n",
            b"PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 99999 2\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let long = [b"PROXY ".as_slice(), &[b'x'; 200]].concat();
        assert!(parse(&long).is_err());
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(Error::Missing));
    }

    #[test]
    fn v2_headers() {
        let mut body = vec![198, 51, 100, 9, 127, 0, 0, 1];
        body.extend_from_slice(&4444u16.to_be_bytes());
        body.extend_from_slice(&80u16.to_be_bytes());
        body.extend_from_slice(&[1, 0, 1, b'x']); // a TLV, skipped
        let b = v2(1, 0x11, &body);
        let (h, n) = parse(&b).unwrap().unwrap();
        assert_eq!(n, b.len());
        assert!(
            matches!(h, Header::Proxied { source, .. } if source == "198.51.100.9:4444".parse().unwrap())
        );
        // Every prefix is "need more".
        for i in 0..b.len() {
            assert_eq!(parse(&b[..i]), Ok(None), "prefix {i}");
        }
        assert_eq!(parse(&v2(0, 0, &[])).unwrap().unwrap().0, Header::Local);
        assert!(parse(&v2(1, 0x11, &[1, 2, 3])).is_err());
        assert!(parse(&v2(1, 0x12, &body)).is_err()); // UDP
        let mut huge = v2(1, 0x11, &[]);
        huge[14..16].copy_from_slice(&60000u16.to_be_bytes());
        assert!(parse(&huge).is_err());
    }
}
