//! The client's address (`docs/edge.md` "Behind a proxy"): the peer of
//! the connection, or, when that peer is one of the configured
//! `trusted_proxies`, the address those proxies name in
//! `X-Forwarded-For`. Per-address rate limits, login lockouts and the
//! audit log all key on it.
//!
//! `X-Forwarded-For` is read right to left: each trusted proxy appends
//! the peer it saw, so the first entry that is not a trusted proxy is the
//! client. Entries to its left were written by the client itself and are
//! never believed. A peer that is not a trusted proxy is the client,
//! whatever headers it sends.

use axum::extract::{ConnectInfo, Request};
use axum::http::{Extensions, HeaderMap, HeaderName};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Most `X-Forwarded-For` entries read: more hops than any real chain of
/// proxies, few enough that a long header costs little.
const MAX_HOPS: usize = 32;

/// One `trusted_proxies` entry: a network (`10.0.0.0/8`, `fd00::/8`) or a
/// single address (`192.0.2.10`, `::1`).
pub fn parse_proxy(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    match text.parse::<IpAddr>() {
        Ok(ip) => Ok(IpNet::from(ip.to_canonical())),
        Err(_) => Err(format!(
            "{text:?} is neither an IP address nor a network in CIDR notation \
             (e.g. 10.0.0.0/8)"
        )),
    }
}

fn trusted(proxies: &[IpNet], ip: IpAddr) -> bool {
    proxies.iter().any(|net| net.contains(&ip))
}

/// An `X-Forwarded-For` entry: an address, possibly with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`) or in brackets.
fn entry(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            text.strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<IpAddr>().ok())
        })
        .map(|ip| ip.to_canonical())
}

/// The client of a connection from `peer` that sent `headers`.
pub fn resolve(proxies: &[IpNet], peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let peer = peer.to_canonical();
    if proxies.is_empty() || !trusted(proxies, peer) {
        return peer;
    }
    // The nearest address known so far; every one before the client is a
    // trusted proxy. A malformed entry ends the walk there: a trusted
    // proxy appends only addresses, so it came from further out.
    let mut nearest = peer;
    let entries = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .rev()
        .flat_map(|value| value.to_str().unwrap_or("!").rsplit(','))
        .take(MAX_HOPS);
    for text in entries {
        let Some(ip) = entry(text) else {
            return nearest;
        };
        if !trusted(proxies, ip) {
            return ip;
        }
        nearest = ip;
    }
    nearest
}

/// The client address of `req`; `None` for a router served without
/// connect info (tests calling it in process).
pub fn ip(proxies: &[IpNet], req: &Request) -> Option<IpAddr> {
    of_parts(proxies, req.extensions(), req.headers())
}

/// [`ip`] from a request's parts.
pub fn of_parts(proxies: &[IpNet], extensions: &Extensions, headers: &HeaderMap) -> Option<IpAddr> {
    let peer = extensions.get::<ConnectInfo<SocketAddr>>()?.0.ip();
    Some(resolve(proxies, peer, headers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|t| parse_proxy(t).unwrap()).collect()
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(&X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(t: &str) -> IpAddr {
        t.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let h = headers(&["198.51.100.7"]);
        assert_eq!(resolve(&[], ip("203.0.113.1"), &h), ip("203.0.113.1"));
        let proxies = nets(&["10.0.0.0/8"]);
        assert_eq!(resolve(&proxies, ip("203.0.113.1"), &h), ip("203.0.113.1"));
    }

    #[test]
    fn a_trusted_peer_names_the_client_rightmost_first() {
        let proxies = nets(&["10.0.0.0/8", "192.0.2.10"]);
        // The client forged the first entry; the load balancer (10.1.1.1)
        // appended what it saw, then the edge proxy (192.0.2.10).
        let h = headers(&["1.2.3.4, 198.51.100.7, 10.1.1.1"]);
        assert_eq!(resolve(&proxies, ip("192.0.2.10"), &h), ip("198.51.100.7"));
        // The same chain spread over several headers.
        let h = headers(&["1.2.3.4", "198.51.100.7", "10.1.1.1"]);
        assert_eq!(resolve(&proxies, ip("192.0.2.10"), &h), ip("198.51.100.7"));
        // Only proxies: the farthest one.
        let h = headers(&["10.9.9.9, 10.1.1.1"]);
        assert_eq!(resolve(&proxies, ip("192.0.2.10"), &h), ip("10.9.9.9"));
        // No header: the proxy itself.
        assert_eq!(
            resolve(&proxies, ip("192.0.2.10"), &HeaderMap::new()),
            ip("192.0.2.10")
        );
    }

    #[test]
    fn malformed_entries_end_the_walk_and_ports_and_brackets_are_read() {
        let proxies = nets(&["10.0.0.0/8"]);
        let h = headers(&["198.51.100.7, unknown, 10.2.2.2"]);
        assert_eq!(resolve(&proxies, ip("10.0.0.1"), &h), ip("10.2.2.2"));
        let h = headers(&["[2001:db8::7]:4711"]);
        assert_eq!(resolve(&proxies, ip("10.0.0.1"), &h), ip("2001:db8::7"));
        let h = headers(&["198.51.100.7:4711"]);
        assert_eq!(resolve(&proxies, ip("10.0.0.1"), &h), ip("198.51.100.7"));
        let h = headers(&["[2001:db8::8]"]);
        assert_eq!(resolve(&proxies, ip("10.0.0.1"), &h), ip("2001:db8::8"));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_networks() {
        let proxies = nets(&["127.0.0.1"]);
        let h = headers(&["198.51.100.7"]);
        assert_eq!(
            resolve(&proxies, ip("::ffff:127.0.0.1"), &h),
            ip("198.51.100.7")
        );
        assert_eq!(resolve(&proxies, ip("127.0.0.1"), &h), ip("198.51.100.7"));
    }

    #[test]
    fn a_long_header_is_read_only_so_far() {
        let proxies = nets(&["10.0.0.0/8"]);
        let chain: Vec<String> = std::iter::once("198.51.100.7".to_owned())
            .chain((0..40).map(|i| format!("10.0.0.{i}")))
            .collect();
        let h = headers(&[&chain.join(", ")]);
        // 32 proxies read, all trusted: the farthest of those.
        assert_eq!(resolve(&proxies, ip("10.0.0.1"), &h), ip("10.0.0.8"));
    }

    #[test]
    fn proxies_parse_as_networks_or_addresses() {
        assert_eq!(parse_proxy("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_proxy(" ::1 ").unwrap().to_string(), "::1/128");
        assert_eq!(
            parse_proxy("::ffff:192.0.2.1").unwrap().to_string(),
            "192.0.2.1/32"
        );
        for bad in ["", "10.0.0.0/33", "example.com", "10.0.0"] {
            assert!(parse_proxy(bad).is_err(), "{bad}");
        }
    }
}
