//! SOCKS5 (RFC 1928) as far as the egress proxy speaks it: the greeting
//! (no authentication only), the CONNECT request, the reply. Pure: bytes
//! in, values out, so every branch is tested without a socket.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The protocol version, the first byte of every message.
pub const VERSION: u8 = 5;
/// Method "no authentication required".
const NO_AUTH: u8 = 0;
/// Method "no acceptable methods".
const NO_METHOD: u8 = 0xff;
/// `CMD` CONNECT.
const CONNECT: u8 = 1;

/// What a client asked to reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An address (ATYP 1 or 4).
    Addr(SocketAddr),
    /// A name the proxy resolves (ATYP 3; `--socks5-hostname`).
    Name(String, u16),
}

impl Target {
    /// `host:port`, as the log shows it.
    pub fn host(&self) -> String {
        match self {
            Self::Addr(a) => a.ip().to_string(),
            Self::Name(n, _) => n.clone(),
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            Self::Addr(a) => a.port(),
            Self::Name(_, p) => *p,
        }
    }
}

/// Reply codes (`REP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reply {
    /// Succeeded.
    Ok = 0,
    /// General failure (a name that does not resolve, say).
    Failure = 1,
    /// Network unreachable.
    NetworkUnreachable = 3,
    /// Host unreachable (or no answer in time).
    HostUnreachable = 4,
    /// Connection refused.
    Refused = 5,
    /// Command not supported (BIND, UDP ASSOCIATE).
    CommandNotSupported = 7,
    /// Address type not supported.
    AddressNotSupported = 8,
}

/// A malformed message: the connection is closed after the reply, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// What was wrong.
    pub why: &'static str,
    /// The reply to send first (`None`: close without one).
    pub reply: Option<Reply>,
}

fn bad(why: &'static str, reply: Option<Reply>) -> Malformed {
    Malformed { why, reply }
}

/// The greeting (`VER NMETHODS METHODS…`) at the front of `buf`:
/// `Ok(None)` needs more bytes; `Ok(Some((n, answer)))` took `n` bytes and
/// `answer` goes back (no authentication, or "no acceptable method",
/// after which the client closes).
pub fn greeting(buf: &[u8]) -> Result<Option<(usize, [u8; 2])>, Malformed> {
    let (Some(&ver), Some(&n)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    if ver != VERSION {
        return Err(bad("not SOCKS5 (an HTTP proxy client, or SOCKS4?)", None));
    }
    let end = 2 + usize::from(n);
    let Some(methods) = buf.get(2..end) else {
        return Ok(None);
    };
    let method = if methods.contains(&NO_AUTH) {
        NO_AUTH
    } else {
        NO_METHOD
    };
    Ok(Some((end, [VERSION, method])))
}

/// The request (`VER CMD RSV ATYP DST.ADDR DST.PORT`) at the front of
/// `buf`: `Ok(None)` needs more bytes.
pub fn request(buf: &[u8]) -> Result<Option<(usize, Target)>, Malformed> {
    if buf.len() < 5 {
        return Ok(None);
    }
    if buf[0] != VERSION {
        return Err(bad("request of another version", Some(Reply::Failure)));
    }
    if buf[1] != CONNECT {
        return Err(bad(
            "only CONNECT is offered",
            Some(Reply::CommandNotSupported),
        ));
    }
    let port_at = |i: usize| -> Option<u16> {
        let p = buf.get(i..i + 2)?;
        Some(u16::from_be_bytes([p[0], p[1]]))
    };
    match buf[3] {
        1 => {
            let (Some(a), Some(port)) = (buf.get(4..8), port_at(8)) else {
                return Ok(None);
            };
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Ok(Some((
                10,
                Target::Addr(SocketAddr::new(IpAddr::V4(ip), port)),
            )))
        }
        4 => {
            let (Some(a), Some(port)) = (buf.get(4..20), port_at(20)) else {
                return Ok(None);
            };
            let mut o = [0u8; 16];
            o.copy_from_slice(a);
            let ip = Ipv6Addr::from(o);
            Ok(Some((
                22,
                Target::Addr(SocketAddr::new(IpAddr::V6(ip), port)),
            )))
        }
        3 => {
            let len = usize::from(buf[4]);
            let (Some(name), Some(port)) = (buf.get(5..5 + len), port_at(5 + len)) else {
                return Ok(None);
            };
            let name = std::str::from_utf8(name)
                .ok()
                .filter(|n| {
                    !n.is_empty()
                        && n.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
                })
                .ok_or_else(|| bad("not a host name", Some(Reply::Failure)))?;
            Ok(Some((7 + len, Target::Name(name.to_string(), port))))
        }
        _ => Err(bad(
            "unknown address type",
            Some(Reply::AddressNotSupported),
        )),
    }
}

/// The reply to a request: `rep`, and the address the proxy connected
/// from (zeros when it did not connect).
pub fn reply(rep: Reply, bound: Option<SocketAddr>) -> Vec<u8> {
    let mut out = vec![VERSION, rep as u8, 0];
    match bound.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))) {
        SocketAddr::V4(a) => {
            out.push(1);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_be_bytes());
        }
        SocketAddr::V6(a) => {
            out.push(4);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_be_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greetings_pick_no_authentication_or_refuse() {
        assert_eq!(greeting(&[5]), Ok(None));
        assert_eq!(greeting(&[5, 2, 0]), Ok(None));
        assert_eq!(greeting(&[5, 2, 2, 0, 9]), Ok(Some((4, [5, 0]))));
        assert_eq!(greeting(&[5, 1, 2]), Ok(Some((3, [5, 0xff]))));
        assert!(greeting(b"GET / HTTP/1.1\r\n").is_err());
        assert!(greeting(&[4, 1, 0]).is_err());
    }

    #[test]
    fn requests_of_each_address_type() {
        let v4 = [5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90];
        assert_eq!(
            request(&v4),
            Ok(Some((10, Target::Addr("127.0.0.1:8080".parse().unwrap()))))
        );
        assert_eq!(request(&v4[..9]), Ok(None));
        let mut name = vec![5, 1, 0, 3, 11];
        name.extend_from_slice(b"example.org");
        name.extend_from_slice(&443u16.to_be_bytes());
        assert_eq!(
            request(&name),
            Ok(Some((18, Target::Name("example.org".into(), 443))))
        );
        assert_eq!(request(&name[..17]), Ok(None));
        let mut v6 = vec![5, 1, 0, 4];
        v6.extend_from_slice(&[0; 15]);
        v6.push(1);
        v6.extend_from_slice(&80u16.to_be_bytes());
        assert_eq!(
            request(&v6),
            Ok(Some((22, Target::Addr("[::1]:80".parse().unwrap()))))
        );
    }

    #[test]
    fn other_commands_and_bad_names_get_their_reply() {
        let bind = [5, 2, 0, 1, 127, 0, 0, 1, 0, 80];
        assert_eq!(
            request(&bind).unwrap_err().reply,
            Some(Reply::CommandNotSupported)
        );
        let atyp = [5, 1, 0, 9, 0, 0, 0];
        assert_eq!(
            request(&atyp).unwrap_err().reply,
            Some(Reply::AddressNotSupported)
        );
        let mut crlf = vec![5, 1, 0, 3, 4];
        crlf.extend_from_slice(b"a\r\nb");
        crlf.extend_from_slice(&[0, 80]);
        assert!(request(&crlf).is_err());
    }

    #[test]
    fn replies_carry_the_bound_address() {
        assert_eq!(
            reply(Reply::Ok, Some("127.0.0.1:5000".parse().unwrap())),
            vec![5, 0, 0, 1, 127, 0, 0, 1, 0x13, 0x88]
        );
        assert_eq!(
            reply(Reply::Refused, None),
            vec![5, 5, 0, 1, 0, 0, 0, 0, 0, 0]
        );
    }
}
