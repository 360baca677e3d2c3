//! The client's address (`docs/edge.md` "Behind a proxy"): the peer of
//! the connection, or, when that peer is one of the configured
//! `trusted_proxies`, the address those proxies name in the header they
//! write: `X-Forwarded-For` (the default) or RFC 7239's `Forwarded`
//! (`forwarded_header`). Per-address rate limits, login lockouts and the
//! audit log all key on it.
//!
//! The header is read right to left: each trusted proxy appends the peer
//! it saw, so the first entry that is not a trusted proxy is the client.
//! Entries to its left were written by the client itself and are never
//! believed. A peer that is not a trusted proxy is the client, whatever
//! headers it sends. Only the configured header is read: a proxy that
//! writes one passes the other through from the client unchanged.

use super::config::EdgeConfig;
use axum::extract::{ConnectInfo, Request};
use axum::http::{Extensions, HeaderMap, HeaderName, header};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The header the trusted proxies name the client in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: 198.51.100.7, 10.1.1.1`.
    #[default]
    XForwardedFor,
    /// RFC 7239: `Forwarded: for=198.51.100.7;proto=https, for=10.1.1.1`
    /// (the `for` parameter of each element).
    Forwarded,
}

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

/// A `Forwarded` node (RFC 7239 section 6): an IPv4 address or a
/// bracketed IPv6 one, either with an optional port (a number, or an
/// obfuscated one such as `_p`). `unknown`, an obfuscated name
/// (`_hidden`) and anything else are no address.
fn node(text: &str) -> Option<IpAddr> {
    let (ip, port) = match text.strip_prefix('[') {
        Some(rest) => {
            let (ip, after) = rest.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(port) => Some(port),
                None if after.is_empty() => None,
                None => return None,
            };
            (
                IpAddr::V6(ip.parse::<Ipv6Addr>().ok()?).to_canonical(),
                port,
            )
        }
        None => {
            let (ip, port) = text
                .split_once(':')
                .map_or((text, None), |(h, p)| (h, Some(p)));
            (IpAddr::V4(ip.parse::<Ipv4Addr>().ok()?), port)
        }
    };
    let port_ok = port.is_none_or(|p| {
        let digits = !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
        let hidden = p.len() > 1
            && p.starts_with('_')
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        digits || hidden
    });
    port_ok.then_some(ip)
}

/// `text` split at each `separator` that is not inside a quoted string.
fn split_unquoted(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// The address in one `Forwarded` element's `for` parameter (the name
/// in any case, the value a token or a quoted string); `None` when it
/// has none or it names no address.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let value = split_unquoted(element, ';').into_iter().find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim())
    })?;
    match value.strip_prefix('"') {
        Some(quoted) => node(&quoted.strip_suffix('"')?.replace('\\', "")),
        None => node(value),
    }
}

/// The client of a connection from `peer` that sent `headers`, when the
/// `proxies` name it in `header`.
pub fn resolve(
    proxies: &[IpNet],
    header: ForwardedHeader,
    peer: IpAddr,
    headers: &HeaderMap,
) -> IpAddr {
    let peer = peer.to_canonical();
    if proxies.is_empty() || !trusted(proxies, peer) {
        return peer;
    }
    match header {
        ForwardedHeader::XForwardedFor => {
            let hops = headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .rev()
                .flat_map(|value| value.to_str().unwrap_or("!").rsplit(','))
                .map(entry);
            walk(proxies, peer, hops)
        }
        ForwardedHeader::Forwarded => {
            // Read as far as the walk goes: each header's elements are
            // split only when the walk reaches it. A value that is not
            // text is one hop with no address.
            let hops =
                headers
                    .get_all(header::FORWARDED)
                    .iter()
                    .rev()
                    .flat_map(|value| match value.to_str() {
                        Ok(text) => split_unquoted(text, ',')
                            .into_iter()
                            .rev()
                            .map(forwarded_for)
                            .collect(),
                        Err(_) => vec![None],
                    });
            walk(proxies, peer, hops)
        }
    }
}

/// Walk `hops` (nearest first) from a trusted `peer`: the first hop that
/// is not a trusted proxy is the client. A hop that names no address
/// (malformed, or a proxy's `unknown`) ends the walk at the nearest
/// address known, since nothing beyond it can be told apart; so does
/// the end of the list, or [`MAX_HOPS`].
fn walk(proxies: &[IpNet], peer: IpAddr, hops: impl Iterator<Item = Option<IpAddr>>) -> IpAddr {
    let mut nearest = peer;
    for hop in hops.take(MAX_HOPS) {
        let Some(ip) = hop else {
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
pub fn ip(edge: &EdgeConfig, req: &Request) -> Option<IpAddr> {
    of_parts(edge, req.extensions(), req.headers())
}

/// [`ip`] from a request's parts.
pub fn of_parts(edge: &EdgeConfig, extensions: &Extensions, headers: &HeaderMap) -> Option<IpAddr> {
    let peer = extensions.get::<ConnectInfo<SocketAddr>>()?.0.ip();
    Some(resolve(
        &edge.trusted_proxies,
        edge.forwarded_header,
        peer,
        headers,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const XFF: ForwardedHeader = ForwardedHeader::XForwardedFor;
    const FWD: ForwardedHeader = ForwardedHeader::Forwarded;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|t| parse_proxy(t).unwrap()).collect()
    }

    /// One header `name` per value.
    fn with(name: &HeaderName, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn headers(values: &[&str]) -> HeaderMap {
        with(&X_FORWARDED_FOR, values)
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        with(&header::FORWARDED, values)
    }

    /// One header per list of hops, as a proxy writing `kind` writes them.
    fn chain(kind: ForwardedHeader, lists: &[&[&str]]) -> HeaderMap {
        let texts: Vec<String> = lists
            .iter()
            .map(|hops| match kind {
                XFF => hops.join(", "),
                FWD => hops
                    .iter()
                    .map(|hop| format!("for={hop}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
            .collect();
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        match kind {
            XFF => headers(&texts),
            FWD => forwarded(&texts),
        }
    }

    fn ip(t: &str) -> IpAddr {
        t.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let h = headers(&["198.51.100.7"]);
        assert_eq!(resolve(&[], XFF, ip("203.0.113.1"), &h), ip("203.0.113.1"));
        let proxies = nets(&["10.0.0.0/8"]);
        assert_eq!(
            resolve(&proxies, XFF, ip("203.0.113.1"), &h),
            ip("203.0.113.1")
        );
    }

    #[test]
    fn a_trusted_peer_names_the_client_rightmost_first() {
        let proxies = nets(&["10.0.0.0/8", "192.0.2.10"]);
        for kind in [XFF, FWD] {
            let client =
                |lists: &[&[&str]]| resolve(&proxies, kind, ip("192.0.2.10"), &chain(kind, lists));
            // The client forged the first entry; the load balancer
            // (10.1.1.1) appended what it saw, then the edge proxy
            // (192.0.2.10).
            let forged = ["1.2.3.4", "198.51.100.7", "10.1.1.1"];
            assert_eq!(client(&[&forged]), ip("198.51.100.7"), "{kind:?}");
            // The same chain spread over several headers.
            let spread: [&[&str]; 3] = [&["1.2.3.4"], &["198.51.100.7"], &["10.1.1.1"]];
            assert_eq!(client(&spread), ip("198.51.100.7"), "{kind:?}");
            // Only proxies: the farthest one. No header: the proxy itself.
            assert_eq!(client(&[&["10.9.9.9", "10.1.1.1"]]), ip("10.9.9.9"));
            assert_eq!(client(&[]), ip("192.0.2.10"), "{kind:?}");
        }
    }

    #[test]
    fn malformed_entries_end_the_walk_and_ports_and_brackets_are_read() {
        let proxies = nets(&["10.0.0.0/8"]);
        let h = headers(&["198.51.100.7, unknown, 10.2.2.2"]);
        assert_eq!(resolve(&proxies, XFF, ip("10.0.0.1"), &h), ip("10.2.2.2"));
        let h = headers(&["[2001:db8::7]:4711"]);
        assert_eq!(
            resolve(&proxies, XFF, ip("10.0.0.1"), &h),
            ip("2001:db8::7")
        );
        let h = headers(&["198.51.100.7:4711"]);
        assert_eq!(
            resolve(&proxies, XFF, ip("10.0.0.1"), &h),
            ip("198.51.100.7")
        );
        let h = headers(&["[2001:db8::8]"]);
        assert_eq!(
            resolve(&proxies, XFF, ip("10.0.0.1"), &h),
            ip("2001:db8::8")
        );
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_networks() {
        let proxies = nets(&["127.0.0.1"]);
        let h = headers(&["198.51.100.7"]);
        assert_eq!(
            resolve(&proxies, XFF, ip("::ffff:127.0.0.1"), &h),
            ip("198.51.100.7")
        );
        assert_eq!(
            resolve(&proxies, XFF, ip("127.0.0.1"), &h),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn a_long_header_is_read_only_so_far() {
        let proxies = nets(&["10.0.0.0/8"]);
        let hops: Vec<String> = std::iter::once("198.51.100.7".to_owned())
            .chain((0..40).map(|i| format!("10.0.0.{i}")))
            .collect();
        let hops: Vec<&str> = hops.iter().map(String::as_str).collect();
        for kind in [XFF, FWD] {
            let h = chain(kind, &[&hops]);
            // 32 proxies read, all trusted: the farthest of those.
            assert_eq!(
                resolve(&proxies, kind, ip("10.0.0.1"), &h),
                ip("10.0.0.8"),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn forwarded_elements_are_read_by_their_for_parameter() {
        let proxies = nets(&["10.0.0.0/8", "192.0.2.10"]);
        // Other parameters, and the name in any case.
        let h = forwarded(&["for=1.2.3.4, For=198.51.100.7;proto=https;by=10.1.1.1, for=10.1.1.1"]);
        assert_eq!(
            resolve(&proxies, FWD, ip("192.0.2.10"), &h),
            ip("198.51.100.7")
        );
        // Quoted values, ports, IPv6, and a comma inside another
        // parameter's quotes.
        let h = forwarded(&[
            "for=1.2.3.4",
            "for=\"[2001:db8:cafe::17]:4711\";host=\"a,b\"",
            "for=\"10.1.1.1:80\"",
        ]);
        assert_eq!(
            resolve(&proxies, FWD, ip("192.0.2.10"), &h),
            ip("2001:db8:cafe::17")
        );
    }

    #[test]
    fn forwarded_hops_without_an_address_end_the_walk() {
        let proxies = nets(&["10.0.0.0/8"]);
        for hidden in [
            "for=unknown",
            "for=_hidden",
            "proto=https",
            "for=\"2001:db8::1\"",
            "for=\"[2001:db8::1]x\"",
            "for=198.51.100.7.1",
            "for=\"198.51.100.7:80:90\"",
            "for=\"198.51.100.7:\"",
            "for=\"[2001:db8::1]:_\"",
        ] {
            let h = forwarded(&[&format!("for=198.51.100.9, {hidden}, for=10.2.2.2")]);
            assert_eq!(
                resolve(&proxies, FWD, ip("10.0.0.1"), &h),
                ip("10.2.2.2"),
                "{hidden}"
            );
        }
        // A value that is not text ends the walk where it stands.
        let cases = [
            (XFF, &X_FORWARDED_FOR, "10.2.2.2"),
            (FWD, &header::FORWARDED, "for=10.2.2.2"),
        ];
        for (kind, name, nearest) in cases {
            let mut h = chain(kind, &[&["198.51.100.9"]]);
            h.append(name, HeaderValue::from_bytes(b"\xff").unwrap());
            h.append(name, HeaderValue::from_static(nearest));
            assert_eq!(
                resolve(&proxies, kind, ip("10.0.0.1"), &h),
                ip("10.2.2.2"),
                "{kind:?}"
            );
        }
        // An obfuscated port still names the address.
        let h = forwarded(&["for=\"198.51.100.7:_p\""]);
        assert_eq!(
            resolve(&proxies, FWD, ip("10.0.0.1"), &h),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn only_the_configured_header_is_believed() {
        let proxies = nets(&["10.0.0.0/8"]);
        // A proxy writing X-Forwarded-For passes a client's Forwarded on.
        let mut h = headers(&["198.51.100.7"]);
        h.append(
            header::FORWARDED,
            HeaderValue::from_static("for=203.0.113.66"),
        );
        assert_eq!(
            resolve(&proxies, XFF, ip("10.0.0.1"), &h),
            ip("198.51.100.7")
        );
        assert_eq!(
            resolve(&proxies, FWD, ip("10.0.0.1"), &h),
            ip("203.0.113.66")
        );
        // And one writing Forwarded passes X-Forwarded-For on.
        let h = headers(&["203.0.113.66"]);
        assert_eq!(resolve(&proxies, FWD, ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn the_header_setting_reads_as_kebab_case() {
        let parse = |t: &str| serde_json::from_str::<ForwardedHeader>(t);
        assert_eq!(parse("\"x-forwarded-for\"").unwrap(), XFF);
        assert_eq!(parse("\"forwarded\"").unwrap(), FWD);
        assert!(parse("\"x-real-ip\"").is_err());
        assert_eq!(ForwardedHeader::default(), XFF);
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
