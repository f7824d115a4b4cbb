//! Keeps deliveries away from the node's own networks: loopback, private, link- and site-local,
//! CGNAT, multicast, reserved and cloud-metadata addresses are refused unless an operator allowed
//! the network, and so are IPv6 addresses that carry a refused IPv4 address to its host
//! (IPv4-mapped and -compatible, NAT64, 6to4, Teredo).
//! The check runs on literal IPs before a request is made and on every address DNS returns,
//! inside the HTTP client's resolver, so a hostname cannot smuggle a private address past it.

use std::{
    fmt,
    future::Future,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use hyper_util::client::legacy::connect::dns::Name;
use ipnet::IpNet;

use crate::Error;

/// Why an address is not a delivery target by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForbiddenRange {
    Loopback,
    Private,
    LinkLocal,
    CarrierGradeNat,
    Multicast,
    CloudMetadata,
    Unspecified,
    Broadcast,
    Reserved,
}

impl ForbiddenRange {
    fn described(self) -> &'static str {
        match self {
            Self::Loopback => "a loopback address",
            Self::Private => "a private address",
            Self::LinkLocal => "a link-local address",
            Self::CarrierGradeNat => "a carrier-grade NAT address",
            Self::Multicast => "a multicast address",
            Self::CloudMetadata => "a cloud metadata address",
            Self::Unspecified => "an unspecified address",
            Self::Broadcast => "a broadcast address",
            Self::Reserved => "a reserved address",
        }
    }
}

/// A target address the guard turned down; its `Display` is the attempt's failure reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub addr: IpAddr,
    pub range: ForbiddenRange,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refused: {} is {} (allow with --allow-target-network)",
            self.addr,
            self.range.described()
        )
    }
}

/// The addresses deliveries may reach: everything public plus the operator's allowed networks.
#[derive(Debug, Clone, Default)]
pub struct TargetGuard {
    allowed: Vec<IpNet>,
}

impl TargetGuard {
    pub fn new(allowed: Vec<IpNet>) -> Self {
        Self { allowed }
    }

    /// Ok when a delivery may connect to `addr`.
    pub fn check(&self, addr: IpAddr) -> Result<(), Refusal> {
        let Some(range) = forbidden_range(addr) else {
            return Ok(());
        };
        if self.is_allowed(addr) {
            return Ok(());
        }
        Err(Refusal { addr, range })
    }

    fn is_allowed(&self, addr: IpAddr) -> bool {
        let mapped = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.allowed
            .iter()
            .any(|net| net.contains(&addr) || mapped.is_some_and(|m| net.contains(&m)))
    }

    /// Checks a URL whose host is a literal IP (the HTTP client does not resolve those).
    pub fn check_url(&self, url: &url::Url) -> Result<(), Refusal> {
        match url.host() {
            Some(url::Host::Ipv4(v4)) => self.check(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => self.check(IpAddr::V6(v6)),
            _ => Ok(()),
        }
    }
}

fn forbidden_range(addr: IpAddr) -> Option<ForbiddenRange> {
    match addr {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<ForbiddenRange> {
    let [a, b, c, d] = ip.octets();
    // Metadata first: 169.254.169.254 is also link-local, but the sharper name helps the reader.
    // 168.63.129.16 is Azure's wire server (DNS, DHCP, the VM agent's health and config).
    let metadata = matches!((a, b, c, d), (169, 254, 169, 254) | (169, 254, 170, 2))
        || (a, b, c, d) == (100, 100, 100, 200)
        || (a, b, c, d) == (168, 63, 129, 16);
    if metadata {
        return Some(ForbiddenRange::CloudMetadata);
    }
    Some(match (a, b) {
        (127, _) => ForbiddenRange::Loopback,
        (0, _) if ip.is_unspecified() => ForbiddenRange::Unspecified,
        (0, _) => ForbiddenRange::Reserved,
        (10, _) | (192, 168) => ForbiddenRange::Private,
        (172, 16..=31) => ForbiddenRange::Private,
        (169, 254) => ForbiddenRange::LinkLocal,
        (100, 64..=127) => ForbiddenRange::CarrierGradeNat,
        (224..=239, _) => ForbiddenRange::Multicast,
        _ if ip.is_broadcast() => ForbiddenRange::Broadcast,
        (240..=255, _) => ForbiddenRange::Reserved,
        // 192.0.0.0/24 (IETF protocol assignments) and 198.18.0.0/15 (benchmarking) are not
        // routed publicly; something answering there is inside the operator's network.
        (192, 0) if c == 0 => ForbiddenRange::Reserved,
        (198, 18..=19) => ForbiddenRange::Reserved,
        _ => return None,
    })
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<ForbiddenRange> {
    if ip.is_loopback() {
        return Some(ForbiddenRange::Loopback);
    }
    if ip.is_unspecified() {
        return Some(ForbiddenRange::Unspecified);
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let segments = ip.segments();
    let v4_at =
        |i: usize| Ipv4Addr::from((u32::from(segments[i]) << 16) | u32::from(segments[i + 1]));
    // IPv4-compatible (::a.b.c.d, deprecated but still routed by some stacks) and NAT64
    // (64:ff9b::/96) reach the embedded IPv4 address.
    if segments[..6] == [0, 0, 0, 0, 0, 0] || segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return forbidden_v4(v4_at(6));
    }
    // Local-use NAT64 (64:ff9b:1::/48, RFC 8215) translates into the operator's own network.
    if segments[..3] == [0x64, 0xff9b, 1] {
        return Some(ForbiddenRange::Reserved);
    }
    // 6to4 (2002::/16) carries its IPv4 address in bits 16-47.
    if segments[0] == 0x2002
        && let Some(range) = forbidden_v4(v4_at(1))
    {
        return Some(range);
    }
    // Teredo (2001::/32): the server's IPv4 address in bits 32-63, the client's, inverted, in
    // the last 32.
    if segments[..2] == [0x2001, 0] {
        let client = Ipv4Addr::from(!u32::from(v4_at(6)));
        if let Some(range) = forbidden_v4(v4_at(2)).or_else(|| forbidden_v4(client)) {
            return Some(range);
        }
    }
    // AWS's IPv6 instance metadata endpoint.
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return Some(ForbiddenRange::CloudMetadata);
    }
    let first = segments[0];
    if first & 0xfe00 == 0xfc00 {
        return Some(ForbiddenRange::Private);
    }
    if first & 0xffc0 == 0xfe80 {
        return Some(ForbiddenRange::LinkLocal);
    }
    // Site-local (fec0::/10), deprecated, still private where it is used.
    if first & 0xffc0 == 0xfec0 {
        return Some(ForbiddenRange::Private);
    }
    if first & 0xff00 == 0xff00 {
        return Some(ForbiddenRange::Multicast);
    }
    None
}

/// The delivery client's DNS resolver: the system resolver, then the guard on every answer.
/// Only allowed addresses are handed to the connector; when none is left the lookup fails with
/// the refusal, which the attempt then reports.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    guard: Arc<TargetGuard>,
}

impl GuardedResolver {
    pub fn new(guard: Arc<TargetGuard>) -> Self {
        Self { guard }
    }
}

type Resolving = Pin<Box<dyn Future<Output = Result<Addrs, ResolveError>> + Send>>;
type Addrs = std::vec::IntoIter<SocketAddr>;
type ResolveError = Box<dyn std::error::Error + Send + Sync>;

/// The resolver of the HTTP connector (`HttpConnector::new_with_resolver`).
impl tower_service::Service<Name> for GuardedResolver {
    type Response = Addrs;
    type Error = ResolveError;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Resolving {
        let guard = Arc::clone(&self.guard);
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (allowed, refused) = filter_addresses(&guard, found);
            if allowed.is_empty() {
                return Err(match refused.into_iter().next() {
                    Some(refusal) => Box::new(Error::TargetRefused(refusal)) as _,
                    None => format!("no address found for {host}").into(),
                });
            }
            Ok(allowed.into_iter())
        })
    }
}

fn filter_addresses(
    guard: &TargetGuard,
    found: Vec<SocketAddr>,
) -> (Vec<SocketAddr>, Vec<Refusal>) {
    let mut allowed = Vec::new();
    let mut refused = Vec::new();
    for addr in found {
        match guard.check(addr.ip()) {
            Ok(()) => allowed.push(addr),
            Err(refusal) => refused.push(refusal),
        }
    }
    (allowed, refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(addr: &str) -> Option<ForbiddenRange> {
        TargetGuard::default()
            .check(addr.parse().unwrap())
            .err()
            .map(|r| r.range)
    }

    #[test]
    fn public_addresses_pass() {
        assert_eq!(refused("8.8.8.8"), None);
        assert_eq!(refused("203.104.138.174"), None);
        assert_eq!(refused("2001:4860:4860::8888"), None);
    }

    #[test]
    fn loopback_is_refused() {
        assert_eq!(refused("127.0.0.1"), Some(ForbiddenRange::Loopback));
        assert_eq!(refused("127.255.0.9"), Some(ForbiddenRange::Loopback));
        assert_eq!(refused("::1"), Some(ForbiddenRange::Loopback));
    }

    #[test]
    fn ten_slash_eight_is_private() {
        assert_eq!(refused("10.0.0.1"), Some(ForbiddenRange::Private));
        assert_eq!(refused("10.255.255.255"), Some(ForbiddenRange::Private));
    }

    #[test]
    fn one_seven_two_sixteen_slash_twelve_is_private_and_its_neighbours_are_not() {
        assert_eq!(refused("172.16.0.1"), Some(ForbiddenRange::Private));
        assert_eq!(refused("172.31.255.254"), Some(ForbiddenRange::Private));
        assert_eq!(refused("172.15.0.1"), None);
        assert_eq!(refused("172.32.0.1"), None);
    }

    #[test]
    fn one_nine_two_one_six_eight_is_private() {
        assert_eq!(refused("192.168.1.1"), Some(ForbiddenRange::Private));
    }

    #[test]
    fn carrier_grade_nat_is_refused() {
        assert_eq!(refused("100.64.0.1"), Some(ForbiddenRange::CarrierGradeNat));
        assert_eq!(
            refused("100.127.255.254"),
            Some(ForbiddenRange::CarrierGradeNat)
        );
        assert_eq!(refused("100.128.0.1"), None);
    }

    #[test]
    fn cloud_metadata_is_named_as_such() {
        assert_eq!(
            refused("169.254.169.254"),
            Some(ForbiddenRange::CloudMetadata)
        );
        assert_eq!(
            refused("fd00:ec2::254"),
            Some(ForbiddenRange::CloudMetadata)
        );
    }

    #[test]
    fn link_local_is_refused() {
        assert_eq!(refused("169.254.1.1"), Some(ForbiddenRange::LinkLocal));
        assert_eq!(refused("fe80::1"), Some(ForbiddenRange::LinkLocal));
        assert_eq!(refused("febf::1"), Some(ForbiddenRange::LinkLocal));
    }

    #[test]
    fn unique_local_ipv6_is_private() {
        assert_eq!(refused("fc00::1"), Some(ForbiddenRange::Private));
        assert_eq!(refused("fdff::1"), Some(ForbiddenRange::Private));
    }

    #[test]
    fn multicast_is_refused() {
        assert_eq!(refused("224.0.0.1"), Some(ForbiddenRange::Multicast));
        assert_eq!(refused("239.255.255.250"), Some(ForbiddenRange::Multicast));
        assert_eq!(refused("ff02::1"), Some(ForbiddenRange::Multicast));
    }

    #[test]
    fn unspecified_and_broadcast_are_refused() {
        assert_eq!(refused("0.0.0.0"), Some(ForbiddenRange::Unspecified));
        assert_eq!(refused("::"), Some(ForbiddenRange::Unspecified));
        assert_eq!(refused("255.255.255.255"), Some(ForbiddenRange::Broadcast));
    }

    #[test]
    fn ipv4_mapped_ipv6_is_judged_by_its_ipv4_address() {
        assert_eq!(refused("::ffff:127.0.0.1"), Some(ForbiddenRange::Loopback));
        assert_eq!(refused("::ffff:10.1.2.3"), Some(ForbiddenRange::Private));
        assert_eq!(
            refused("::ffff:169.254.169.254"),
            Some(ForbiddenRange::CloudMetadata)
        );
        assert_eq!(refused("::ffff:8.8.8.8"), None);
    }

    #[test]
    fn nat64_is_judged_by_its_embedded_ipv4_address() {
        assert_eq!(refused("64:ff9b::7f00:1"), Some(ForbiddenRange::Loopback));
        assert_eq!(refused("64:ff9b::808:808"), None);
    }

    #[test]
    fn ipv4_compatible_ipv6_is_judged_by_its_ipv4_address() {
        assert_eq!(refused("::127.0.0.1"), Some(ForbiddenRange::Loopback));
        assert_eq!(refused("::10.0.0.1"), Some(ForbiddenRange::Private));
        assert_eq!(refused("::8.8.8.8"), None);
    }

    #[test]
    fn site_local_ipv6_is_private() {
        assert_eq!(refused("fec0::1"), Some(ForbiddenRange::Private));
        assert_eq!(refused("feff:ffff::1"), Some(ForbiddenRange::Private));
    }

    #[test]
    fn local_use_nat64_is_refused_whatever_it_embeds() {
        assert_eq!(
            refused("64:ff9b:1::808:808"),
            Some(ForbiddenRange::Reserved)
        );
        assert_eq!(refused("64:ff9b:1:ffff::1"), Some(ForbiddenRange::Reserved));
        assert_eq!(refused("64:ff9b:2::1"), None);
    }

    #[test]
    fn six_to_four_is_judged_by_its_embedded_ipv4_address() {
        assert_eq!(refused("2002:7f00:1::1"), Some(ForbiddenRange::Loopback));
        assert_eq!(
            refused("2002:a9fe:a9fe::"),
            Some(ForbiddenRange::CloudMetadata)
        );
        assert_eq!(refused("2002:c0a8:101::1"), Some(ForbiddenRange::Private));
        assert_eq!(refused("2002:808:808::1"), None);
    }

    #[test]
    fn teredo_is_judged_by_its_server_and_client_ipv4_addresses() {
        // Server 127.0.0.1.
        assert_eq!(refused("2001:0:7f00:1::1"), Some(ForbiddenRange::Loopback));
        // A public server (65.54.227.120), client 10.0.0.1 (stored inverted: f5ff:fffe).
        assert_eq!(
            refused("2001:0:4136:e378:8000:63bf:f5ff:fffe"),
            Some(ForbiddenRange::Private)
        );
        // A public server and a public client (8.8.8.8, inverted f7f7:f7f7).
        assert_eq!(refused("2001:0:4136:e378:8000:63bf:f7f7:f7f7"), None);
        // Not Teredo: 2001:db8::/32 and the rest of 2001::/16 stay as they are.
        assert_eq!(refused("2001:4860:4860::8888"), None);
    }

    #[test]
    fn azures_wire_server_is_cloud_metadata() {
        assert_eq!(
            refused("168.63.129.16"),
            Some(ForbiddenRange::CloudMetadata)
        );
        assert_eq!(
            refused("::ffff:168.63.129.16"),
            Some(ForbiddenRange::CloudMetadata)
        );
        assert_eq!(refused("168.63.129.17"), None);
    }

    #[test]
    fn an_allowed_network_lets_its_addresses_through() {
        let guard = TargetGuard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(guard.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(guard.check("::ffff:127.0.0.1".parse().unwrap()).is_ok());
        assert!(guard.check("10.0.0.1".parse().unwrap()).is_err());
        assert!(guard.check("::1".parse().unwrap()).is_err());
    }

    #[test]
    fn the_refusal_reads_as_a_reason() {
        let err = TargetGuard::default()
            .check("127.0.0.1".parse().unwrap())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "refused: 127.0.0.1 is a loopback address (allow with --allow-target-network)"
        );
    }

    #[test]
    fn literal_ip_urls_are_checked_and_hostnames_left_to_the_resolver() {
        let guard = TargetGuard::default();
        let url = |s: &str| url::Url::parse(s).unwrap();
        assert!(guard.check_url(&url("http://10.0.0.5:8080/hook")).is_err());
        assert!(guard.check_url(&url("http://[::1]/hook")).is_err());
        assert!(guard.check_url(&url("https://example.com/hook")).is_ok());
    }

    #[test]
    fn resolved_addresses_are_filtered_and_refusals_kept() {
        let guard = TargetGuard::default();
        let found = vec![
            "10.0.0.1:0".parse().unwrap(),
            "93.184.216.34:0".parse().unwrap(),
        ];
        let (allowed, refused) = filter_addresses(&guard, found);
        assert_eq!(allowed, vec!["93.184.216.34:0".parse().unwrap()]);
        assert_eq!(refused.len(), 1);
    }

    #[tokio::test]
    async fn a_hostname_resolving_to_loopback_is_refused_by_the_resolver() {
        use tower_service::Service as _;
        let mut resolver = GuardedResolver::new(Arc::new(TargetGuard::default()));
        let err = match resolver.call("localhost".parse().unwrap()).await {
            Ok(_) => panic!("localhost must be refused"),
            Err(e) => e,
        };
        assert!(err.to_string().starts_with("refused: "), "{err}");
    }
}
