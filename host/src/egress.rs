//! The operator's egress policy: which addresses an outbound connection
//! made on a tenant's behalf may reach. Plugins' `wasi:http` requests (the
//! built-in `http_request` among them) and webhook deliveries all go
//! through it.
//!
//! A destination is public unless [`classify`] names the special-purpose
//! range it falls in (loopback, private, link-local, CGNAT, benchmarking,
//! NAT64, documentation, multicast, broadcast, reserved, unique-local,
//! site-local, unspecified); addresses that embed an IPv4 address
//! (IPv4-mapped, IPv4-compatible, 6to4, Teredo) are judged by that address.
//! Non-public destinations are refused unless the operator allows them all
//! (`--egress-allow-private`) or lists their range (`--egress-allow`).
//! Tenants' grants only narrow this further.
//!
//! The check is made on the address actually connected to, never on a
//! separate look-up: [`EgressPolicy::resolve`] resolves a name once, drops
//! the refused addresses and hands back only the rest to connect to (the
//! `wasi:http` sender uses it), and [`Resolver`] does the same inside
//! reqwest. A DNS answer that changes between a check and a connect
//! (rebinding) therefore cannot slip a refused address through.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

/// How the operator names its flags in messages.
const HOW_TO_ALLOW: &str =
    "the operator allows non-public addresses with --egress-allow-private or --egress-allow <CIDR>";

/// What makes an address non-public.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Unspecified,
    ThisNetwork,
    Loopback,
    Private,
    Cgnat,
    LinkLocal,
    Benchmarking,
    Documentation,
    ProtocolAssignment,
    Multicast,
    Broadcast,
    Reserved,
    Nat64,
    UniqueLocal,
    SiteLocal,
}

impl Kind {
    /// The kind with its article, as a message says it ("a loopback address").
    fn described(self) -> &'static str {
        match self {
            Kind::Unspecified => "an unspecified address",
            Kind::ThisNetwork => "a \"this network\" address",
            Kind::Loopback => "a loopback address",
            Kind::Private => "a private address",
            Kind::Cgnat => "a carrier-grade NAT address",
            Kind::LinkLocal => "a link-local address",
            Kind::Benchmarking => "a benchmarking address",
            Kind::Documentation => "a documentation address",
            Kind::ProtocolAssignment => "an IETF protocol assignment address",
            Kind::Multicast => "a multicast address",
            Kind::Broadcast => "the broadcast address",
            Kind::Reserved => "a reserved address",
            Kind::Nat64 => "a NAT64 address",
            Kind::UniqueLocal => "a unique-local address",
            Kind::SiteLocal => "a site-local address",
        }
    }
}

/// A block of addresses: a network address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Self {
        Self {
            network: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            prefix,
        }
    }

    const fn v6(segments: [u16; 8], prefix: u8) -> Self {
        let [a, b, c, d, e, f, g, h] = segments;
        Self {
            network: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
            prefix,
        }
    }

    /// Whether `ip` lies in this block (an IPv4 block holds no IPv6
    /// address: callers compare [`canonical`] addresses).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.network.is_ipv4() && masked(ip, self.prefix) == self.network
    }
}

/// `ip` with every bit past the first `prefix` cleared (`prefix` is at
/// most the address's length).
fn masked(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(ip) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(ip) & mask))
        }
        IpAddr::V6(ip) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(ip) & mask))
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Why a `--egress-allow` value is not a CIDR block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a CIDR block like 10.0.0.0/8 or fd00::/8")]
pub struct CidrError(String);

impl FromStr for Cidr {
    type Err = CidrError;

    /// `10.0.0.0/8`, `fd00::/8`, or a bare address (the block of one).
    /// Bits past the prefix are ignored: `10.1.2.3/8` is `10.0.0.0/8`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || CidrError(text.to_owned());
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let network: IpAddr = address.parse().map_err(|_| bad())?;
        let most = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= most)
                .ok_or_else(bad)?,
            None => most,
        };
        Ok(Self {
            network: masked(network, prefix),
            prefix,
        })
    }
}

/// A special-purpose range and what it is; the first that holds an address
/// names it, so narrower ranges come before the ranges around them.
const RANGES: &[(Cidr, Kind)] = &[
    (Cidr::v4(0, 0, 0, 0, 32), Kind::Unspecified),
    (Cidr::v4(0, 0, 0, 0, 8), Kind::ThisNetwork),
    (Cidr::v4(10, 0, 0, 0, 8), Kind::Private),
    (Cidr::v4(100, 64, 0, 0, 10), Kind::Cgnat),
    (Cidr::v4(127, 0, 0, 0, 8), Kind::Loopback),
    (Cidr::v4(169, 254, 0, 0, 16), Kind::LinkLocal),
    (Cidr::v4(172, 16, 0, 0, 12), Kind::Private),
    (Cidr::v4(192, 0, 0, 0, 24), Kind::ProtocolAssignment),
    (Cidr::v4(192, 0, 2, 0, 24), Kind::Documentation),
    (Cidr::v4(192, 88, 99, 0, 24), Kind::Reserved),
    (Cidr::v4(192, 168, 0, 0, 16), Kind::Private),
    (Cidr::v4(198, 18, 0, 0, 15), Kind::Benchmarking),
    (Cidr::v4(198, 51, 100, 0, 24), Kind::Documentation),
    (Cidr::v4(203, 0, 113, 0, 24), Kind::Documentation),
    (Cidr::v4(224, 0, 0, 0, 4), Kind::Multicast),
    (Cidr::v4(255, 255, 255, 255, 32), Kind::Broadcast),
    (Cidr::v4(240, 0, 0, 0, 4), Kind::Reserved),
    (Cidr::v6([0, 0, 0, 0, 0, 0, 0, 0], 128), Kind::Unspecified),
    (Cidr::v6([0, 0, 0, 0, 0, 0, 0, 1], 128), Kind::Loopback),
    (Cidr::v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96), Kind::Nat64),
    (Cidr::v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), Kind::Nat64),
    (Cidr::v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), Kind::Reserved),
    (
        Cidr::v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48),
        Kind::Benchmarking,
    ),
    (
        Cidr::v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        Kind::Documentation,
    ),
    (
        Cidr::v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),
        Kind::Documentation,
    ),
    (
        Cidr::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        Kind::UniqueLocal,
    ),
    (Cidr::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), Kind::LinkLocal),
    (Cidr::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), Kind::SiteLocal),
    (Cidr::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), Kind::Multicast),
    // Global unicast is 2000::/3; the rest of IPv6 is not routed publicly.
    (Cidr::v6([0, 0, 0, 0, 0, 0, 0, 0], 0), Kind::Reserved),
];

/// The global unicast space; outside it, [`RANGES`]' last entry applies.
const GLOBAL_UNICAST: Cidr = Cidr::v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3);
const SIX_TO_FOUR: Cidr = Cidr::v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16);
const TEREDO: Cidr = Cidr::v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32);

/// The address an IPv6 address stands for when it is IPv4-mapped
/// (`::ffff:a.b.c.d`) or IPv4-compatible (`::a.b.c.d`, but not `::` or
/// `::1`); any other address as it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let bits = u128::from(v6);
    if bits >> 32 == 0 && bits > 1 {
        return IpAddr::V4(Ipv4Addr::from(bits as u32));
    }
    ip
}

/// The IPv4 address a 6to4 address (`2002:a.b.c.d::/48`) or a Teredo
/// address (its client, the last 32 bits inverted) carries.
fn tunnelled_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    if SIX_TO_FOUR.contains(IpAddr::V6(ip)) {
        Some(Ipv4Addr::from((bits >> 80) as u32))
    } else if TEREDO.contains(IpAddr::V6(ip)) {
        Some(Ipv4Addr::from(!(bits as u32)))
    } else {
        None
    }
}

/// The non-public range `ip` falls in, if any, with the range that decided
/// it (for an address that embeds IPv4, the IPv4 range).
pub fn classify(ip: IpAddr) -> Option<(Kind, Cidr)> {
    let ip = canonical(ip);
    if let IpAddr::V6(v6) = ip {
        if let Some(v4) = tunnelled_v4(v6) {
            return classify(IpAddr::V4(v4));
        }
        if GLOBAL_UNICAST.contains(ip) {
            // Only the named ranges inside 2000::/3 are special.
            return RANGES[..RANGES.len() - 1]
                .iter()
                .find(|(range, _)| range.contains(ip))
                .map(|(range, kind)| (*kind, *range));
        }
    }
    RANGES
        .iter()
        .find(|(range, _)| range.contains(ip))
        .map(|(range, kind)| (*kind, *range))
}

/// Why a destination is refused: it names the address, its kind and the
/// flags that would allow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The name that resolved to `ip`, when the destination was a name.
    pub host: Option<String>,
    pub ip: IpAddr,
    pub kind: Kind,
    pub range: Cidr,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (ip, kind, range) = (self.ip, self.kind.described(), self.range);
        match &self.host {
            Some(host) => write!(f, "refused: {host} resolves to {ip}")?,
            None => write!(f, "refused: {ip}")?,
        }
        let embedded = canonical(ip);
        let embedded = match ip {
            IpAddr::V6(v6) if embedded == ip => tunnelled_v4(v6).map(IpAddr::V4),
            _ => Some(embedded).filter(|e| *e != ip),
        };
        match (&self.host, embedded) {
            (_, Some(v4)) => write!(f, ", which embeds {v4}, {kind} ({range})")?,
            (Some(_), None) => write!(f, ", {kind} ({range})")?,
            (None, None) => write!(f, " is {kind} ({range})")?,
        }
        write!(f, ", not a public address; {HOW_TO_ALLOW}")
    }
}

impl std::error::Error for Refused {}

/// Why a destination could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("{0}")]
    Refused(Refused),
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
}

/// Which non-public addresses outbound connections may reach; public ones
/// always may. The default refuses every non-public address.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    /// Every non-public address is allowed (`--egress-allow-private`).
    allow_private: bool,
    /// Non-public blocks allowed one by one (`--egress-allow`).
    allow: Arc<[Cidr]>,
}

impl EgressPolicy {
    pub fn new(allow_private: bool, allow: Vec<Cidr>) -> Self {
        Self {
            allow_private,
            allow: allow.into(),
        }
    }

    /// Whether a connection may be made to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refused> {
        let Some((kind, range)) = classify(ip) else {
            return Ok(());
        };
        let canonical = canonical(ip);
        if self.allow_private || self.allow.iter().any(|c| c.contains(canonical)) {
            return Ok(());
        }
        Err(Refused {
            host: None,
            ip,
            kind,
            range,
        })
    }

    /// The addresses of `host` (a name or an IP literal, IPv6 with or
    /// without brackets) a connection may be made to, on `port`. A name is
    /// resolved once, here: callers connect to what this returns and to
    /// nothing else. Fails when no address is left.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, EgressError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            self.check(ip).map_err(EgressError::Refused)?;
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let found: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|source| EgressError::Resolve {
                host: bare.to_owned(),
                source,
            })?
            .collect();
        self.keep_allowed(bare, found)
    }

    /// The allowed ones of the addresses `host` resolved to; the first
    /// refusal when none is.
    fn keep_allowed(
        &self,
        host: &str,
        found: Vec<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, EgressError> {
        let mut refused = None;
        let allowed: Vec<SocketAddr> = found
            .into_iter()
            .filter(|addr| match self.check(addr.ip()) {
                Ok(()) => true,
                Err(r) => {
                    refused.get_or_insert(r);
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), refused) {
            (false, _) => Ok(allowed),
            (true, Some(refused)) => Err(EgressError::Refused(Refused {
                host: Some(host.to_owned()),
                ..refused
            })),
            (true, None) => Err(EgressError::NoAddress {
                host: host.to_owned(),
            }),
        }
    }

    /// Checks a URL whose host is an IP literal (reqwest connects to those
    /// without asking its resolver); names are left to [`Resolver`].
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Refused> {
        let host = url.host_str().unwrap_or_default();
        match host.trim_start_matches('[').trim_end_matches(']').parse() {
            Ok(ip) => self.check(ip),
            Err(_) => Ok(()),
        }
    }
}

/// What the policy allows, in words, for the start-up log.
impl fmt::Display for EgressPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.allow_private {
            return f.write_str("every address");
        }
        f.write_str("public addresses")?;
        for (i, block) in self.allow.iter().enumerate() {
            f.write_str(if i == 0 { " and " } else { ", " })?;
            write!(f, "{block}")?;
        }
        Ok(())
    }
}

/// A reqwest resolver that hands back only the addresses the policy
/// allows, so the connection is made to a checked address.
#[derive(Debug, Clone)]
pub struct Resolver(pub EgressPolicy);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            // Port 0: reqwest puts the URL's port in.
            let addrs = policy.resolve(name.as_str(), 0).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every range on both sides of each boundary: `None` is public.
    #[test]
    fn classify_names_every_non_public_range() {
        use Kind::*;
        let cases: &[(&str, Option<Kind>)] = &[
            ("0.0.0.0", Some(Unspecified)),
            ("0.0.0.1", Some(ThisNetwork)),
            ("0.255.255.255", Some(ThisNetwork)),
            ("1.0.0.0", None),
            ("9.255.255.255", None),
            ("10.0.0.0", Some(Private)),
            ("10.255.255.255", Some(Private)),
            ("11.0.0.0", None),
            ("100.63.255.255", None),
            ("100.64.0.0", Some(Cgnat)),
            ("100.127.255.255", Some(Cgnat)),
            ("100.128.0.0", None),
            ("126.255.255.255", None),
            ("127.0.0.0", Some(Loopback)),
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.255", Some(Loopback)),
            ("128.0.0.0", None),
            ("169.253.255.255", None),
            ("169.254.0.0", Some(LinkLocal)),
            ("169.254.169.254", Some(LinkLocal)),
            ("169.254.255.255", Some(LinkLocal)),
            ("169.255.0.0", None),
            ("172.15.255.255", None),
            ("172.16.0.0", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("172.32.0.0", None),
            ("191.255.255.255", None),
            ("192.0.0.0", Some(ProtocolAssignment)),
            ("192.0.0.255", Some(ProtocolAssignment)),
            ("192.0.1.0", None),
            ("192.0.2.0", Some(Documentation)),
            ("192.0.2.255", Some(Documentation)),
            ("192.0.3.0", None),
            ("192.88.98.255", None),
            ("192.88.99.0", Some(Reserved)),
            ("192.88.99.255", Some(Reserved)),
            ("192.88.100.0", None),
            ("192.167.255.255", None),
            ("192.168.0.0", Some(Private)),
            ("192.168.255.255", Some(Private)),
            ("192.169.0.0", None),
            ("198.17.255.255", None),
            ("198.18.0.0", Some(Benchmarking)),
            ("198.19.255.255", Some(Benchmarking)),
            ("198.20.0.0", None),
            ("198.51.99.255", None),
            ("198.51.100.0", Some(Documentation)),
            ("198.51.100.255", Some(Documentation)),
            ("198.51.101.0", None),
            ("203.0.112.255", None),
            ("203.0.113.0", Some(Documentation)),
            ("203.0.113.255", Some(Documentation)),
            ("203.0.114.0", None),
            ("223.255.255.255", None),
            ("224.0.0.0", Some(Multicast)),
            ("239.255.255.255", Some(Multicast)),
            ("240.0.0.0", Some(Reserved)),
            ("255.255.255.254", Some(Reserved)),
            ("255.255.255.255", Some(Broadcast)),
            ("1.1.1.1", None),
            ("93.184.216.34", None),
            // IPv6.
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("::2", Some(ThisNetwork)), // compatible: 0.0.0.2
            // IPv4-mapped and -compatible: the embedded address decides.
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:10.0.0.1", Some(Private)),
            ("::ffff:169.254.169.254", Some(LinkLocal)),
            ("::ffff:1.1.1.1", None),
            ("::127.0.0.1", Some(Loopback)),
            ("::192.168.1.1", Some(Private)),
            ("::8.8.8.8", None),
            ("::1:0:0:0", Some(Reserved)),
            // NAT64, well-known and local-use.
            ("64:ff9a:ffff:ffff:ffff:ffff:ffff:ffff", Some(Reserved)),
            ("64:ff9b::", Some(Nat64)),
            ("64:ff9b::8.8.8.8", Some(Nat64)),
            ("64:ff9b::ffff:ffff", Some(Nat64)),
            ("64:ff9b::1:0:0", Some(Reserved)),
            ("64:ff9b:1::", Some(Nat64)),
            ("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", Some(Nat64)),
            ("64:ff9b:2::", Some(Reserved)),
            ("100::", Some(Reserved)),
            ("1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(Reserved)),
            ("2000::", None),
            // Teredo: the client address is the last 32 bits, inverted.
            ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", None), // client 8.8.8.8
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Some(Documentation)), // client 192.0.2.45
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", Some(Loopback)), // client 127.0.0.1
            ("2001:0:4136:e378:8000:63bf:f5ff:fffe", Some(Private)), // client 10.0.0.1
            ("2001:1::", None),
            ("2001:1:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("2001:2::", Some(Benchmarking)),
            ("2001:2:0:ffff:ffff:ffff:ffff:ffff", Some(Benchmarking)),
            ("2001:2:1::", None),
            ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("2001:db8::", Some(Documentation)),
            (
                "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
                Some(Documentation),
            ),
            ("2001:db9::", None),
            // 6to4: the IPv4 address in bits 16..48 decides.
            ("2002:7f00:1::", Some(Loopback)),
            ("2002:a9fe:a9fe::1", Some(LinkLocal)),
            ("2002:0808:0808::1", None),
            ("2606:4700::1111", None),
            ("3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("3fff::", Some(Documentation)),
            (
                "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some(Documentation),
            ),
            ("3fff:1000::", None),
            ("3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("4000::", Some(Reserved)),
            ("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(Reserved)),
            ("fc00::", Some(UniqueLocal)),
            ("fd00::1", Some(UniqueLocal)),
            ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(UniqueLocal)),
            ("fe00::", Some(Reserved)),
            ("fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(Reserved)),
            ("fe80::", Some(LinkLocal)),
            ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(LinkLocal)),
            ("fec0::", Some(SiteLocal)),
            ("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(SiteLocal)),
            ("ff00::", Some(Multicast)),
            ("ff02::1", Some(Multicast)),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(Multicast)),
        ];
        for (text, expected) in cases {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(classify(ip).map(|(kind, _)| kind), *expected, "{text}");
        }
    }

    #[test]
    fn the_ranges_are_written_as_their_network_addresses() {
        for (range, _) in RANGES {
            assert_eq!(
                masked(range.network, range.prefix),
                range.network,
                "{range}"
            );
        }
    }

    #[test]
    fn the_default_policy_refuses_what_is_not_public_and_says_how_to_allow_it() {
        let policy = EgressPolicy::default();
        assert!(policy.check("1.1.1.1".parse().unwrap()).is_ok());
        let refused = policy
            .check("169.254.169.254".parse().unwrap())
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "refused: 169.254.169.254 is a link-local address (169.254.0.0/16), not a public address; \
             the operator allows non-public addresses with --egress-allow-private or --egress-allow <CIDR>"
        );
        let refused = policy
            .check("::ffff:127.0.0.1".parse().unwrap())
            .unwrap_err();
        assert!(
            refused
                .to_string()
                .starts_with("refused: ::ffff:127.0.0.1, which embeds 127.0.0.1, a loopback address (127.0.0.0/8)"),
            "{refused}"
        );
        let named = Refused {
            host: Some("metadata.internal".into()),
            ..refused
        };
        assert!(
            named.to_string().starts_with(
                "refused: metadata.internal resolves to ::ffff:127.0.0.1, which embeds"
            ),
            "{named}"
        );
    }

    #[test]
    fn the_operator_allows_all_non_public_addresses_or_listed_blocks() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(
            EgressPolicy::new(true, vec![])
                .check(ip("10.1.2.3"))
                .is_ok()
        );
        let listed = EgressPolicy::new(
            false,
            vec![
                "127.0.0.1/32".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap(),
            ],
        );
        for allowed in ["127.0.0.1", "::ffff:127.0.0.1", "10.200.0.1", "8.8.8.8"] {
            assert!(listed.check(ip(allowed)).is_ok(), "{allowed}");
        }
        for refused in ["127.0.0.2", "::1", "172.16.0.1", "169.254.169.254"] {
            assert!(listed.check(ip(refused)).is_err(), "{refused}");
        }
    }

    #[test]
    fn the_policy_says_what_it_allows() {
        let cases = [
            (EgressPolicy::default(), "public addresses"),
            (EgressPolicy::new(true, vec![]), "every address"),
            (
                EgressPolicy::new(
                    false,
                    vec!["127.0.0.1".parse().unwrap(), "fd00::/8".parse().unwrap()],
                ),
                "public addresses and 127.0.0.1/32, fd00::/8",
            ),
        ];
        for (policy, text) in cases {
            assert_eq!(policy.to_string(), text);
        }
    }

    #[test]
    fn cidr_blocks_parse_and_hold_their_addresses() {
        let cases: &[(&str, &str, bool)] = &[
            ("127.0.0.1/32", "127.0.0.1", true),
            ("127.0.0.1/32", "127.0.0.2", false),
            ("127.0.0.1", "127.0.0.1", true),
            ("10.1.2.3/8", "10.255.0.0", true),
            ("10.0.0.0/8", "11.0.0.0", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "::1", false),
            ("fd00::/8", "fd12::1", true),
            ("fd00::/8", "fe00::1", false),
            ("::1/128", "::1", true),
            ("::/0", "2001:db8::1", true),
        ];
        for (cidr, ip, inside) in cases {
            let block: Cidr = cidr.parse().unwrap();
            assert_eq!(block.contains(ip.parse().unwrap()), *inside, "{cidr} {ip}");
        }
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "localhost/32",
            "10.0.0.0/-1",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
        assert_eq!(
            "10.1.2.3/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
    }

    #[test]
    fn a_name_is_judged_by_every_address_it_resolves_to() {
        let policy = EgressPolicy::default();
        let addr = |s: &str| SocketAddr::new(s.parse().unwrap(), 80);
        let kept = policy
            .keep_allowed("mixed.test", vec![addr("127.0.0.1"), addr("93.184.216.34")])
            .unwrap();
        assert_eq!(kept, [addr("93.184.216.34")]);
        let error = policy
            .keep_allowed("rebound.test", vec![addr("10.0.0.1"), addr("::1")])
            .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("refused: rebound.test resolves to 10.0.0.1, a private address"),
            "{error}"
        );
        assert!(matches!(
            policy.keep_allowed("empty.test", vec![]),
            Err(EgressError::NoAddress { .. })
        ));
    }

    /// `localhost` is a name, not an IP literal: it is refused for what it
    /// resolves to, and nothing connects.
    #[tokio::test]
    async fn localhost_is_refused_by_what_it_resolves_to() {
        let error = EgressPolicy::default()
            .resolve("localhost", 80)
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("refused: localhost resolves to "),
            "{error}"
        );
        let allowed = EgressPolicy::new(false, vec!["127.0.0.0/8".parse().unwrap()])
            .resolve("localhost", 80)
            .await
            .unwrap();
        assert!(
            allowed.iter().all(|a| a.ip().is_loopback() && a.is_ipv4()),
            "{allowed:?}"
        );
        let literal = EgressPolicy::default()
            .resolve("[::1]", 80)
            .await
            .unwrap_err();
        assert!(
            literal
                .to_string()
                .starts_with("refused: ::1 is a loopback"),
            "{literal}"
        );
    }
}
