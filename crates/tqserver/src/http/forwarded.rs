//! Who the client is when TQServer sits behind a load balancer:
//! `server.trusted_proxies` (CIDR ranges) and nginx's realip rule. A
//! request from a trusted address may say, in `X-Forwarded-For` and
//! `X-Forwarded-Proto`, who the client is and whether it came over HTTPS;
//! the client is the rightmost address of the chain that is not trusted
//! (nginx `real_ip_recursive on`). From anyone else those headers are
//! untrusted input: they are dropped, and TQServer says who connected.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

/// `X-Forwarded-For`.
pub const XFF: &str = "x-forwarded-for";
/// `X-Forwarded-Proto`.
pub const XFP: &str = "x-forwarded-proto";
/// `X-Forwarded-Host`.
pub const XFH: &str = "x-forwarded-host";
/// `Forwarded` (RFC 7239).
pub const FORWARDED: &str = "forwarded";
/// `X-Forwarded-Prefix`: the path prefix a proxy took off.
pub const XFPREFIX: &str = "x-forwarded-prefix";

/// Whether `name` is one of the forwarding headers a client may only set
/// through a trusted proxy.
pub fn is_forwarding(name: &str) -> bool {
    matches!(name, XFF | XFP | XFH | XFPREFIX | FORWARDED | "x-real-ip")
}

/// One CIDR range (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (ip, bits) = match s.split_once('/') {
            Some((ip, b)) => (ip, Some(b)),
            None => (s, None),
        };
        let net: IpAddr = ip
            .parse()
            .map_err(|_| format!("{s:?} is not an address or CIDR range (10.0.0.0/8, ::1/128)"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => match b.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{s:?}: the prefix length must be 0 to {max}")),
            },
        };
        // An IPv4-mapped range (`::ffff:10.0.0.0/104`) is the IPv4 range.
        Ok(match net {
            IpAddr::V6(v6) if bits >= 96 && v6.to_ipv4_mapped().is_some() => Self {
                net: canonical(net),
                bits: bits - 96,
            },
            _ => Self { net, bits },
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.bits)
    }
}

/// IPv4-mapped IPv6 (`::ffff:10.0.0.1`) as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

impl Cidr {
    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// `server.trusted_proxies`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trusted(Vec<Cidr>);

impl Trusted {
    /// The ranges.
    pub fn new(ranges: Vec<Cidr>) -> Self {
        Self(ranges)
    }

    /// No proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }
}

/// Who made a request, as far as TQServer can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The client's address: the connection's peer, or from a trusted
    /// proxy's `X-Forwarded-For`.
    pub ip: IpAddr,
    /// Its port: the peer's, or 0 when the address came from a header
    /// (which carries no port).
    pub port: u16,
    /// The request came over HTTPS (TLS here, or `X-Forwarded-Proto:
    /// https` from a trusted proxy).
    pub https: bool,
    /// The request came through a trusted proxy, whose forwarding headers
    /// are passed on; otherwise they are dropped.
    pub via_trusted: bool,
}

/// The client of a request that arrived from `peer` with `headers`.
pub fn client(trusted: &Trusted, peer: SocketAddr, tls: bool, headers: &HeaderMap) -> Client {
    let peer_ip = canonical(peer.ip());
    let mut c = Client {
        ip: peer_ip,
        port: peer.port(),
        https: tls,
        via_trusted: false,
    };
    if !trusted.contains(peer_ip) {
        return c;
    }
    c.via_trusted = true;
    // Every X-Forwarded-For line, left to right, as one chain.
    let chain: Vec<IpAddr> = headers
        .get_all(XFF)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(parse_hop)
        .collect();
    if let Some(&ip) = chain.iter().rev().find(|ip| !trusted.contains(**ip)) {
        c.ip = ip;
        c.port = 0;
    } else if let Some(&first) = chain.first() {
        // Every hop is trusted: the leftmost is the client (nginx).
        c.ip = first;
        c.port = 0;
    }
    if !tls {
        // The proxy nearest to us said it last.
        let proto = headers
            .get_all(XFP)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .map(|p| p.trim().to_ascii_lowercase());
        c.https = proto.as_deref() == Some("https");
    }
    c
}

/// One `X-Forwarded-For` entry: an address, `[v6]:port` or `v4:port`.
fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    s.parse::<SocketAddr>().ok().map(|a| canonical(a.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ranges: &[&str]) -> Trusted {
        Trusted::new(ranges.iter().map(|r| r.parse().unwrap()).collect())
    }

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    #[test]
    fn cidr_ranges() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains("10.255.1.2".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let mapped: Cidr = "::ffff:192.168.0.0/112".parse().unwrap();
        assert!(mapped.contains("192.168.7.7".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("example.org".parse::<Cidr>().is_err());
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_say() {
        let c = client(
            &t(&[]),
            "203.0.113.1:5000".parse().unwrap(),
            false,
            &h(&[
                ("x-forwarded-for", "1.2.3.4"),
                ("x-forwarded-proto", "https"),
            ]),
        );
        assert_eq!(c.ip, "203.0.113.1".parse::<IpAddr>().unwrap());
        assert_eq!(c.port, 5000);
        assert!(!c.https && !c.via_trusted);
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let tr = t(&["127.0.0.1", "10.0.0.0/8"]);
        let peer = "127.0.0.1:1".parse().unwrap();
        let c = client(
            &tr,
            peer,
            false,
            &h(&[
                ("x-forwarded-for", "6.6.6.6, 203.0.113.5"),
                ("x-forwarded-for", "10.1.1.1"),
                ("x-forwarded-proto", "https"),
            ]),
        );
        assert_eq!(c.ip, "203.0.113.5".parse::<IpAddr>().unwrap());
        assert_eq!(c.port, 0);
        assert!(c.https && c.via_trusted);
        // Every hop trusted: the leftmost.
        let c = client(
            &tr,
            peer,
            false,
            &h(&[("x-forwarded-for", "10.0.0.9, 10.0.0.8")]),
        );
        assert_eq!(c.ip, "10.0.0.9".parse::<IpAddr>().unwrap());
        // Garbage hops are skipped; no header: the peer.
        let c = client(
            &tr,
            peer,
            false,
            &h(&[("x-forwarded-for", "junk, [::1]:80")]),
        );
        assert_eq!(c.ip, "::1".parse::<IpAddr>().unwrap());
        let c = client(&tr, peer, false, &h(&[]));
        assert_eq!(c.ip, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert!(!c.https);
    }
}
