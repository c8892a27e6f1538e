//! The address plan: the overlay /48, its subnets, system virtual networks
//! and the 6to4 mapping between IPv6 addresses and IPv4 UDP endpoints.
//!
//! A deployment owns one overlay /48 ([`OverlayPrefix`]): by default the
//! RFC 3056 6to4 prefix `2002:AABB:CCDD::/48` of the home agent's public IPv4
//! address `AA.BB.CC.DD`, or a RFC 4193 ULA `fdXX:XXXX:XXXX::/48` for private
//! deployments. [`AddressPlan`] carves it up: subnet `0` is infrastructure
//! (the authority `addrd` is `::1` there), one subnet holds users' permanent
//! /128s, and the others are system virtual networks. A
//! [`SystemVirtualNetwork`] is a /64 of applications; a server with its own
//! public IPv4 places its SVN in *its own* 6to4 prefix, so any peer finds the
//! server's UDP endpoint in bytes 2–5 of the destination address
//! ([`six_to_four_endpoint`]).
//!
//! Only globally routable IPv4 addresses may appear inside a 6to4 prefix:
//! [`classify_ipv4`] sorts an address into its IANA special-purpose block and
//! [`Ipv4Policy`] decides which blocks are acceptable. The one relaxation,
//! [`Ipv4Policy::dangerous_allow_private`], exists for network-namespace labs.
#![deny(clippy::indexing_slicing)]

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::str::FromStr;

use ipnet::Ipv6Net;

/// Prefix length of the overlay prefix owned by a deployment.
pub const OVERLAY_PREFIX_LEN: u8 = 48;

/// Prefix length of a subnet: the user subnet and system virtual networks.
pub const SUBNET_PREFIX_LEN: u8 = 64;

/// Subnet id of the infrastructure subnet, which holds the authority.
pub const INFRASTRUCTURE_SUBNET_ID: u16 = 0x0000;

/// Subnet id of the user subnet unless configured otherwise.
pub const DEFAULT_USER_SUBNET_ID: u16 = 0x0001;

/// Interface identifier of the authority (`addrd`) in the infrastructure
/// subnet, and of the system itself in a system virtual network.
pub const SYSTEM_INTERFACE_ID: u64 = 0x0000_0000_0000_0001;

/// The 6to4 block, `2002::/16` (RFC 3056).
const SIX_TO_FOUR_FIRST_SEGMENT: u16 = 0x2002;

/// The locally assigned half of the ULA block, `fd00::/8` (RFC 4193, L = 1).
const ULA_FIRST_OCTET: u8 = 0xfd;

/// The overlay /48 a deployment owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OverlayPrefix {
    /// The 6to4 prefix `2002:AABB:CCDD::/48` of the home agent's public IPv4
    /// address `AA.BB.CC.DD`.
    SixToFour {
        /// The home agent's public IPv4 address.
        ipv4: Ipv4Addr,
        /// The /48 derived from it.
        net: Ipv6Net,
    },
    /// A unique local prefix `fdXX:XXXX:XXXX::/48`.
    Ula {
        /// The /48.
        net: Ipv6Net,
    },
}

impl OverlayPrefix {
    /// The 6to4 prefix of `ipv4`, which `policy` must accept.
    pub fn six_to_four(ipv4: Ipv4Addr, policy: Ipv4Policy) -> Result<Self, AddrError> {
        let net = six_to_four_prefix(ipv4, policy)?;
        Ok(OverlayPrefix::SixToFour { ipv4, net })
    }

    /// A configured ULA prefix: inside `fd00::/8`, exactly a /48, host bits
    /// zero.
    pub fn ula(net: Ipv6Net) -> Result<Self, AddrError> {
        check_prefix_len(net, OVERLAY_PREFIX_LEN)?;
        let [first, ..] = net.addr().octets();
        if first != ULA_FIRST_OCTET {
            return Err(AddrError::NotUla);
        }
        check_host_bits(net)?;
        Ok(OverlayPrefix::Ula { net })
    }

    /// The ULA prefix `fd<global id>::/48` for a 40-bit global id, which
    /// RFC 4193 §3.2 says must be chosen at random.
    pub fn ula_from_global_id(global_id: [u8; 5]) -> Self {
        let [g0, g1, g2, g3, g4] = global_id;
        let addr = Ipv6Addr::from([
            ULA_FIRST_OCTET,
            g0,
            g1,
            g2,
            g3,
            g4,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ]);
        OverlayPrefix::Ula {
            net: fixed_net(addr, OVERLAY_PREFIX_LEN),
        }
    }

    /// Parses a /48 written as an IPv6 network (`2002:c000:201::/48` or
    /// `fdXX:XXXX:XXXX::/48`). A 6to4 prefix must embed an IPv4 address that
    /// `policy` accepts.
    pub fn parse_with_policy(s: &str, policy: Ipv4Policy) -> Result<Self, AddrError> {
        let net: Ipv6Net = s.trim().parse().map_err(|_| AddrError::Parse)?;
        if is_six_to_four(&net.addr()) {
            check_prefix_len(net, OVERLAY_PREFIX_LEN)?;
            check_host_bits(net)?;
            OverlayPrefix::six_to_four(embedded_ipv4(&net.addr()), policy)
        } else if net.addr().octets().first() == Some(&ULA_FIRST_OCTET) {
            OverlayPrefix::ula(net)
        } else {
            Err(AddrError::NotOverlayPrefix)
        }
    }

    /// The /48.
    pub fn net(&self) -> Ipv6Net {
        match *self {
            OverlayPrefix::SixToFour { net, .. } | OverlayPrefix::Ula { net } => net,
        }
    }

    /// The home agent's IPv4 address, for a 6to4 prefix.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        match *self {
            OverlayPrefix::SixToFour { ipv4, .. } => Some(ipv4),
            OverlayPrefix::Ula { .. } => None,
        }
    }

    /// Whether `addr` lies inside the /48.
    pub fn contains(&self, addr: &Ipv6Addr) -> bool {
        self.net().contains(addr)
    }

    /// The /64 with subnet id `id`.
    pub fn subnet(&self, id: u16) -> Ipv6Net {
        let base = u128::from(self.net().network());
        let addr = Ipv6Addr::from(base | (u128::from(id) << 64));
        fixed_net(addr, SUBNET_PREFIX_LEN)
    }
}

impl fmt::Display for OverlayPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.net(), f)
    }
}

impl FromStr for OverlayPrefix {
    type Err = AddrError;

    /// Parses with the strict default [`Ipv4Policy`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OverlayPrefix::parse_with_policy(s, Ipv4Policy::default())
    }
}

/// How a deployment's overlay /48 is divided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AddressPlan {
    overlay: OverlayPrefix,
    user_subnet_id: u16,
}

impl AddressPlan {
    /// A plan whose users live in subnet `user_subnet_id`, which must not be
    /// the infrastructure subnet `0`.
    pub fn new(overlay: OverlayPrefix, user_subnet_id: u16) -> Result<Self, AddrError> {
        if user_subnet_id == INFRASTRUCTURE_SUBNET_ID {
            return Err(AddrError::ReservedSubnetId);
        }
        Ok(AddressPlan {
            overlay,
            user_subnet_id,
        })
    }

    /// The overlay /48.
    pub fn overlay(&self) -> OverlayPrefix {
        self.overlay
    }

    /// The subnet id of the user subnet.
    pub fn user_subnet_id(&self) -> u16 {
        self.user_subnet_id
    }

    /// The /64 in which users get their permanent addresses.
    pub fn user_subnet(&self) -> Ipv6Net {
        self.overlay.subnet(self.user_subnet_id)
    }

    /// The overlay address of the authority (`addrd`): `::1` in the
    /// infrastructure subnet.
    pub fn authority_address(&self) -> Ipv6Addr {
        with_interface_id(
            self.overlay.subnet(INFRASTRUCTURE_SUBNET_ID),
            SYSTEM_INTERFACE_ID,
        )
    }

    /// The permanent address of the user with assignment number `index`,
    /// used as the interface identifier. `0` (the subnet-router anycast
    /// address) and the reserved identifiers of RFC 5453 are refused.
    pub fn user_address(&self, index: u64) -> Result<Ipv6Addr, AddrError> {
        if is_reserved_interface_id(index) {
            return Err(AddrError::ReservedInterfaceId);
        }
        Ok(with_interface_id(self.user_subnet(), index))
    }

    /// The assignment number of a user address: the inverse of
    /// [`AddressPlan::user_address`]. `None` outside the user subnet or for a
    /// reserved interface identifier.
    pub fn user_index(&self, addr: &Ipv6Addr) -> Option<u64> {
        if !self.user_subnet().contains(addr) {
            return None;
        }
        let index = interface_id(addr);
        (!is_reserved_interface_id(index)).then_some(index)
    }

    /// The system virtual network with subnet id `svn_id` inside the overlay
    /// /48. Refuses the infrastructure subnet and the user subnet.
    pub fn svn(&self, svn_id: u16) -> Result<SystemVirtualNetwork, AddrError> {
        if svn_id == INFRASTRUCTURE_SUBNET_ID || svn_id == self.user_subnet_id {
            return Err(AddrError::ReservedSubnetId);
        }
        Ok(SystemVirtualNetwork {
            prefix: self.overlay.subnet(svn_id),
        })
    }
}

/// A system virtual network: the /64 holding one server system (`::1`) and
/// its applications.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SystemVirtualNetwork {
    prefix: Ipv6Net,
}

impl SystemVirtualNetwork {
    /// The SVN `2002:<ipv4>:<svn_id>::/64` of a server with its own public
    /// IPv4 address. Subnet `0` is refused: it is the infrastructure subnet
    /// when the server is also the home agent, and its `::1` would be the
    /// authority's address.
    pub fn on_own_ipv4(ipv4: Ipv4Addr, svn_id: u16, policy: Ipv4Policy) -> Result<Self, AddrError> {
        if svn_id == INFRASTRUCTURE_SUBNET_ID {
            return Err(AddrError::ReservedSubnetId);
        }
        let overlay = OverlayPrefix::six_to_four(ipv4, policy)?;
        Ok(SystemVirtualNetwork {
            prefix: overlay.subnet(svn_id),
        })
    }

    /// An SVN from a configured /64 with zero host bits.
    pub fn from_prefix(prefix: Ipv6Net) -> Result<Self, AddrError> {
        check_prefix_len(prefix, SUBNET_PREFIX_LEN)?;
        check_host_bits(prefix)?;
        Ok(SystemVirtualNetwork { prefix })
    }

    /// The /64.
    pub fn prefix(&self) -> Ipv6Net {
        self.prefix
    }

    /// The address of the system itself, `::1`.
    pub fn system_address(&self) -> Ipv6Addr {
        with_interface_id(self.prefix, SYSTEM_INTERFACE_ID)
    }

    /// The address of the application with host id `host_id`. Host ids start
    /// at 2 (`::1` is the system); RFC 5453 reserved identifiers are refused.
    pub fn application_address(&self, host_id: u64) -> Result<Ipv6Addr, AddrError> {
        if host_id <= SYSTEM_INTERFACE_ID || is_reserved_interface_id(host_id) {
            return Err(AddrError::ReservedInterfaceId);
        }
        Ok(with_interface_id(self.prefix, host_id))
    }

    /// Whether `addr` lies inside the /64.
    pub fn contains(&self, addr: &Ipv6Addr) -> bool {
        self.prefix.contains(addr)
    }

    /// The UDP endpoint that serves this SVN, when it is a 6to4 SVN whose
    /// embedded IPv4 address `policy` accepts.
    pub fn endpoint(&self, port: u16, policy: Ipv4Policy) -> Option<SocketAddrV4> {
        six_to_four_endpoint(&self.prefix.network(), port, policy).ok()
    }
}

impl fmt::Display for SystemVirtualNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.prefix, f)
    }
}

/// The 6to4 prefix `2002:AABB:CCDD::/48` of `ipv4` = `AA.BB.CC.DD`, which
/// `policy` must accept.
pub fn six_to_four_prefix(ipv4: Ipv4Addr, policy: Ipv4Policy) -> Result<Ipv6Net, AddrError> {
    policy.check(ipv4)?;
    let [a, b, c, d] = ipv4.octets();
    let addr = Ipv6Addr::new(
        SIX_TO_FOUR_FIRST_SEGMENT,
        u16::from_be_bytes([a, b]),
        u16::from_be_bytes([c, d]),
        0,
        0,
        0,
        0,
        0,
    );
    Ok(fixed_net(addr, OVERLAY_PREFIX_LEN))
}

/// Whether `addr` is a 6to4 address (`2002::/16`).
pub fn is_six_to_four(addr: &Ipv6Addr) -> bool {
    let [first, ..] = addr.segments();
    first == SIX_TO_FOUR_FIRST_SEGMENT
}

/// The 6to4 mapping: the UDP endpoint `AA.BB.CC.DD:port` of a 6to4 address
/// `2002:AABB:CCDD:…`, if `policy` accepts the embedded IPv4 address.
pub fn six_to_four_endpoint(
    addr: &Ipv6Addr,
    port: u16,
    policy: Ipv4Policy,
) -> Result<SocketAddrV4, AddrError> {
    if !is_six_to_four(addr) {
        return Err(AddrError::NotSixToFour);
    }
    let ipv4 = embedded_ipv4(addr);
    policy.check(ipv4)?;
    Ok(SocketAddrV4::new(ipv4, port))
}

/// Whether `iid` may not be assigned to a host: the subnet-router anycast
/// identifier `0` (RFC 4291) and the rest of the IANA "Reserved IPv6
/// Interface Identifiers" registry (RFC 5453): the reserved subnet anycast
/// identifiers `fdff:ffff:ffff:ff80`–`fdff:ffff:ffff:ffff` (RFC 2526) and the
/// IANA Ethernet block `0200:5eff:fe00:0000`–`0200:5eff:fe00:ffff`
/// (RFC 5453, RFC 6543).
pub fn is_reserved_interface_id(iid: u64) -> bool {
    const SUBNET_ANYCAST: std::ops::RangeInclusive<u64> =
        0xfdff_ffff_ffff_ff80..=0xfdff_ffff_ffff_ffff;
    const IANA_ETHERNET: std::ops::RangeInclusive<u64> =
        0x0200_5eff_fe00_0000..=0x0200_5eff_fe00_ffff;
    iid == 0 || SUBNET_ANYCAST.contains(&iid) || IANA_ETHERNET.contains(&iid)
}

/// Which IANA special-purpose block an IPv4 address belongs to (RFC 6890 and
/// the IANA IPv4 Special-Purpose Address Registry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ipv4Class {
    /// Anything not listed below: globally routable unicast.
    Global,
    /// `0.0.0.0`.
    Unspecified,
    /// The rest of `0.0.0.0/8`, "this network" (RFC 791).
    ThisNetwork,
    /// `127.0.0.0/8` (RFC 1122).
    Loopback,
    /// `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16` (RFC 1918).
    Private,
    /// `100.64.0.0/10`, carrier-grade NAT shared address space (RFC 6598).
    SharedCgn,
    /// `169.254.0.0/16` (RFC 3927).
    LinkLocal,
    /// `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24` (RFC 5737).
    Documentation,
    /// `198.18.0.0/15`, benchmarking (RFC 2544).
    Benchmarking,
    /// `192.0.0.0/24`, IETF protocol assignments (RFC 6890).
    IetfProtocol,
    /// `192.88.99.0/24`, the deprecated 6to4 relay anycast (RFC 7526).
    SixToFourRelayAnycast,
    /// `224.0.0.0/4` (RFC 5771).
    Multicast,
    /// `240.0.0.0/4` except the broadcast address (RFC 1112).
    Reserved,
    /// `255.255.255.255` (RFC 919).
    Broadcast,
}

impl Ipv4Class {
    /// A stable snake_case label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Ipv4Class::Global => "global",
            Ipv4Class::Unspecified => "unspecified",
            Ipv4Class::ThisNetwork => "this_network",
            Ipv4Class::Loopback => "loopback",
            Ipv4Class::Private => "private",
            Ipv4Class::SharedCgn => "shared_cgn",
            Ipv4Class::LinkLocal => "link_local",
            Ipv4Class::Documentation => "documentation",
            Ipv4Class::Benchmarking => "benchmarking",
            Ipv4Class::IetfProtocol => "ietf_protocol",
            Ipv4Class::SixToFourRelayAnycast => "six_to_four_relay_anycast",
            Ipv4Class::Multicast => "multicast",
            Ipv4Class::Reserved => "reserved",
            Ipv4Class::Broadcast => "broadcast",
        }
    }
}

impl fmt::Display for Ipv4Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Sorts `v4` into its special-purpose block, or [`Ipv4Class::Global`].
pub fn classify_ipv4(v4: Ipv4Addr) -> Ipv4Class {
    let [a, b, c, _] = v4.octets();
    match (a, b, c) {
        _ if v4 == Ipv4Addr::UNSPECIFIED => Ipv4Class::Unspecified,
        _ if v4 == Ipv4Addr::BROADCAST => Ipv4Class::Broadcast,
        (0, _, _) => Ipv4Class::ThisNetwork,
        (10, _, _) => Ipv4Class::Private,
        (100, 64..=127, _) => Ipv4Class::SharedCgn,
        (127, _, _) => Ipv4Class::Loopback,
        (169, 254, _) => Ipv4Class::LinkLocal,
        (172, 16..=31, _) => Ipv4Class::Private,
        (192, 0, 0) => Ipv4Class::IetfProtocol,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Ipv4Class::Documentation,
        (192, 88, 99) => Ipv4Class::SixToFourRelayAnycast,
        (192, 168, _) => Ipv4Class::Private,
        (198, 18..=19, _) => Ipv4Class::Benchmarking,
        (224..=239, _, _) => Ipv4Class::Multicast,
        (240..=255, _, _) => Ipv4Class::Reserved,
        _ => Ipv4Class::Global,
    }
}

/// Which IPv4 addresses may serve as 6to4 endpoints.
///
/// The default accepts only [`Ipv4Class::Global`] addresses.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Policy {
    /// Also accept [`Ipv4Class::Private`] and [`Ipv4Class::SharedCgn`]
    /// addresses. Meant for network-namespace labs: on the Internet such an
    /// address names no particular host.
    pub dangerous_allow_private: bool,
}

impl Ipv4Policy {
    /// Whether an address of class `class` is acceptable.
    pub fn accepts(&self, class: Ipv4Class) -> bool {
        match class {
            Ipv4Class::Global => true,
            Ipv4Class::Private | Ipv4Class::SharedCgn => self.dangerous_allow_private,
            _ => false,
        }
    }

    /// `Ok` with the class of `v4` when acceptable,
    /// [`AddrError::Ipv4NotUsable`] otherwise.
    pub fn check(&self, v4: Ipv4Addr) -> Result<Ipv4Class, AddrError> {
        let class = classify_ipv4(v4);
        if self.accepts(class) {
            Ok(class)
        } else {
            Err(AddrError::Ipv4NotUsable { addr: v4, class })
        }
    }
}

/// Why an address, prefix or identifier does not fit the address plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddrError {
    /// The IPv4 address may not be used as a 6to4 endpoint under the policy.
    #[error("IPv4 address {addr} ({class}) is not usable as a 6to4 endpoint")]
    Ipv4NotUsable {
        /// The address refused.
        addr: Ipv4Addr,
        /// Its class.
        class: Ipv4Class,
    },
    /// The address is not in `2002::/16`.
    #[error("not a 6to4 address (2002::/16)")]
    NotSixToFour,
    /// The prefix is not in `fd00::/8`.
    #[error("not a unique local prefix (fd00::/8)")]
    NotUla,
    /// The prefix is neither 6to4 nor ULA.
    #[error("overlay prefix must be a 6to4 (2002::/16) or ULA (fd00::/8) prefix")]
    NotOverlayPrefix,
    /// The prefix has the wrong length.
    #[error("prefix length /{found}, expected /{expected}")]
    WrongPrefixLength {
        /// The length required.
        expected: u8,
        /// The length given.
        found: u8,
    },
    /// The prefix has bits set after its prefix length.
    #[error("prefix has host bits set")]
    HostBitsSet,
    /// The interface identifier is reserved (anycast, system or RFC 5453).
    #[error("reserved interface identifier")]
    ReservedInterfaceId,
    /// The subnet id is reserved (infrastructure or user subnet).
    #[error("reserved subnet id")]
    ReservedSubnetId,
    /// The text is not an IPv6 network.
    #[error("not an IPv6 prefix")]
    Parse,
}

impl AddrError {
    /// A stable snake_case label for counters.
    pub fn as_str(&self) -> &'static str {
        match self {
            AddrError::Ipv4NotUsable { .. } => "ipv4_not_usable",
            AddrError::NotSixToFour => "not_six_to_four",
            AddrError::NotUla => "not_ula",
            AddrError::NotOverlayPrefix => "not_overlay_prefix",
            AddrError::WrongPrefixLength { .. } => "wrong_prefix_length",
            AddrError::HostBitsSet => "host_bits_set",
            AddrError::ReservedInterfaceId => "reserved_interface_id",
            AddrError::ReservedSubnetId => "reserved_subnet_id",
            AddrError::Parse => "parse",
        }
    }
}

/// The IPv4 address in bytes 2–5 of a 6to4 address.
fn embedded_ipv4(addr: &Ipv6Addr) -> Ipv4Addr {
    let [_, _, a, b, c, d, ..] = addr.octets();
    Ipv4Addr::new(a, b, c, d)
}

/// The low 64 bits of `addr`.
fn interface_id(addr: &Ipv6Addr) -> u64 {
    (u128::from(*addr) & u128::from(u64::MAX)) as u64
}

/// The address with interface identifier `iid` in the /64 `subnet`.
fn with_interface_id(subnet: Ipv6Net, iid: u64) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(subnet.network()) | u128::from(iid))
}

/// A network of one of this module's constant prefix lengths.
fn fixed_net(addr: Ipv6Addr, len: u8) -> Ipv6Net {
    debug_assert!(len <= 128);
    // `new` fails only for lengths above 128, and `len` is always a constant
    // of this module (48 or 64).
    Ipv6Net::new(addr, len).unwrap_or_default()
}

fn check_prefix_len(net: Ipv6Net, expected: u8) -> Result<(), AddrError> {
    if net.prefix_len() == expected {
        Ok(())
    } else {
        Err(AddrError::WrongPrefixLength {
            expected,
            found: net.prefix_len(),
        })
    }
}

fn check_host_bits(net: Ipv6Net) -> Result<(), AddrError> {
    if net.addr() == net.network() {
        Ok(())
    } else {
        Err(AddrError::HostBitsSet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: Ipv4Policy = Ipv4Policy {
        dangerous_allow_private: false,
    };
    const LAB: Ipv4Policy = Ipv4Policy {
        dangerous_allow_private: true,
    };

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> Ipv6Net {
        s.parse().unwrap()
    }

    #[test]
    fn classifies_ipv4_blocks_and_their_boundaries() {
        use Ipv4Class::*;
        let table = [
            ("0.0.0.0", Unspecified),
            ("0.0.0.1", ThisNetwork),
            ("0.255.255.255", ThisNetwork),
            ("1.0.0.0", Global),
            ("8.8.8.8", Global),
            ("9.255.255.255", Global),
            ("10.0.0.0", Private),
            ("10.255.255.255", Private),
            ("11.0.0.0", Global),
            ("100.63.255.255", Global),
            ("100.64.0.0", SharedCgn),
            ("100.127.255.255", SharedCgn),
            ("100.128.0.0", Global),
            ("126.255.255.255", Global),
            ("127.0.0.1", Loopback),
            ("127.255.255.255", Loopback),
            ("128.0.0.0", Global),
            ("169.253.255.255", Global),
            ("169.254.0.0", LinkLocal),
            ("169.254.255.255", LinkLocal),
            ("169.255.0.0", Global),
            ("172.15.255.255", Global),
            ("172.16.0.0", Private),
            ("172.31.255.255", Private),
            ("172.32.0.0", Global),
            ("191.255.255.255", Global),
            ("192.0.0.0", IetfProtocol),
            ("192.0.0.255", IetfProtocol),
            ("192.0.1.0", Global),
            ("192.0.2.0", Documentation),
            ("192.0.2.255", Documentation),
            ("192.0.3.0", Global),
            ("192.88.98.255", Global),
            ("192.88.99.0", SixToFourRelayAnycast),
            ("192.88.99.255", SixToFourRelayAnycast),
            ("192.88.100.0", Global),
            ("192.167.255.255", Global),
            ("192.168.0.0", Private),
            ("192.168.255.255", Private),
            ("192.169.0.0", Global),
            ("198.17.255.255", Global),
            ("198.18.0.0", Benchmarking),
            ("198.19.255.255", Benchmarking),
            ("198.20.0.0", Global),
            ("198.51.99.255", Global),
            ("198.51.100.0", Documentation),
            ("198.51.100.255", Documentation),
            ("198.51.101.0", Global),
            ("203.0.112.255", Global),
            ("203.0.113.0", Documentation),
            ("203.0.113.255", Documentation),
            ("203.0.114.0", Global),
            ("223.255.255.255", Global),
            ("224.0.0.0", Multicast),
            ("239.255.255.255", Multicast),
            ("240.0.0.0", Reserved),
            ("255.255.255.254", Reserved),
            ("255.255.255.255", Broadcast),
        ];
        for (addr, class) in table {
            assert_eq!(classify_ipv4(v4(addr)), class, "{addr}");
        }
    }

    #[test]
    fn class_labels_are_distinct() {
        use Ipv4Class::*;
        let all = [
            Global,
            Unspecified,
            ThisNetwork,
            Loopback,
            Private,
            SharedCgn,
            LinkLocal,
            Documentation,
            Benchmarking,
            IetfProtocol,
            SixToFourRelayAnycast,
            Multicast,
            Reserved,
            Broadcast,
        ];
        let labels: std::collections::HashSet<_> = all.iter().map(Ipv4Class::as_str).collect();
        assert_eq!(labels.len(), all.len());
    }

    #[test]
    fn policies_accept_the_right_classes() {
        // (address, strict accepts, lab accepts)
        let table = [
            ("8.8.8.8", true, true),
            ("10.1.2.3", false, true),
            ("172.16.0.1", false, true),
            ("192.168.1.1", false, true),
            ("100.64.0.1", false, true),
            ("0.0.0.0", false, false),
            ("0.1.2.3", false, false),
            ("127.0.0.1", false, false),
            ("169.254.1.1", false, false),
            ("192.0.2.1", false, false),
            ("198.18.0.1", false, false),
            ("192.0.0.8", false, false),
            ("192.88.99.1", false, false),
            ("224.0.0.1", false, false),
            ("240.0.0.1", false, false),
            ("255.255.255.255", false, false),
        ];
        for (addr, strict, lab) in table {
            let addr = v4(addr);
            assert_eq!(STRICT.check(addr).is_ok(), strict, "strict {addr}");
            assert_eq!(LAB.check(addr).is_ok(), lab, "lab {addr}");
            assert_eq!(
                six_to_four_prefix(addr, STRICT).is_ok(),
                strict,
                "prefix {addr}"
            );
        }
        assert_eq!(Ipv4Policy::default(), STRICT);
        assert_eq!(
            STRICT.check(v4("10.0.0.1")),
            Err(AddrError::Ipv4NotUsable {
                addr: v4("10.0.0.1"),
                class: Ipv4Class::Private
            })
        );
    }

    #[test]
    fn six_to_four_round_trips() {
        let table = [
            ("1.2.3.4", "2002:102:304::/48", STRICT),
            ("8.8.8.8", "2002:808:808::/48", STRICT),
            ("193.0.14.129", "2002:c100:e81::/48", STRICT),
            ("223.255.255.254", "2002:dfff:fffe::/48", STRICT),
            ("10.0.0.1", "2002:a00:1::/48", LAB),
            ("100.64.7.9", "2002:6440:709::/48", LAB),
        ];
        for (addr, prefix, policy) in table {
            let addr = v4(addr);
            let net = six_to_four_prefix(addr, policy).unwrap();
            assert_eq!(net, self::net(prefix));
            let host = Ipv6Addr::from(u128::from(net.network()) | 0xbeef_0000_0000_0000_1234);
            assert!(net.contains(&host));
            assert!(is_six_to_four(&host));
            assert_eq!(
                six_to_four_endpoint(&host, 4500, policy),
                Ok(SocketAddrV4::new(addr, 4500))
            );
        }
    }

    #[test]
    fn six_to_four_endpoint_refuses_other_addresses() {
        let table = [
            ("2001:db8::1", AddrError::NotSixToFour),
            ("fd00::1", AddrError::NotSixToFour),
            ("2003::1", AddrError::NotSixToFour),
            (
                "2002:a00:1::1",
                AddrError::Ipv4NotUsable {
                    addr: v4("10.0.0.1"),
                    class: Ipv4Class::Private,
                },
            ),
            (
                "2002:7f00:1::1",
                AddrError::Ipv4NotUsable {
                    addr: v4("127.0.0.1"),
                    class: Ipv4Class::Loopback,
                },
            ),
            (
                "2002::1",
                AddrError::Ipv4NotUsable {
                    addr: v4("0.0.0.0"),
                    class: Ipv4Class::Unspecified,
                },
            ),
        ];
        for (addr, err) in table {
            assert_eq!(
                six_to_four_endpoint(&v6(addr), 4500, STRICT),
                Err(err),
                "{addr}"
            );
        }
        // The lab policy still refuses loopback.
        assert!(six_to_four_endpoint(&v6("2002:7f00:1::1"), 1, LAB).is_err());
        assert!(six_to_four_endpoint(&v6("2002:a00:1::1"), 1, LAB).is_ok());
    }

    #[test]
    fn ula_constraints() {
        let table = [
            ("fd12:3456:789a::/48", Ok(())),
            ("fdff:ffff:ffff::/48", Ok(())),
            ("fc12:3456:789a::/48", Err(AddrError::NotUla)),
            ("2001:db8:1::/48", Err(AddrError::NotUla)),
            (
                "fd12:3456:789a::/56",
                Err(AddrError::WrongPrefixLength {
                    expected: 48,
                    found: 56,
                }),
            ),
            (
                "fd12:3456::/32",
                Err(AddrError::WrongPrefixLength {
                    expected: 48,
                    found: 32,
                }),
            ),
            ("fd12:3456:789a:1::/48", Err(AddrError::HostBitsSet)),
            ("fd12:3456:789a::1/48", Err(AddrError::HostBitsSet)),
        ];
        for (s, want) in table {
            let got = OverlayPrefix::ula(net(s));
            assert_eq!(got.map(|p| p.net()), want.map(|()| net(s)), "{s}");
        }
    }

    #[test]
    fn ula_from_global_id_places_the_id_after_fd() {
        let p = OverlayPrefix::ula_from_global_id([0x12, 0x34, 0x56, 0x78, 0x9a]);
        assert_eq!(p.net(), net("fd12:3456:789a::/48"));
        assert_eq!(p.ipv4(), None);
        assert_eq!(OverlayPrefix::ula(p.net()), Ok(p));
    }

    #[test]
    fn overlay_subnets_are_slash_64s_inside_the_slash_48() {
        let p = OverlayPrefix::six_to_four(v4("192.0.1.1"), STRICT).unwrap();
        assert_eq!(p.ipv4(), Some(v4("192.0.1.1")));
        assert_eq!(p.net(), net("2002:c000:101::/48"));
        assert_eq!(p.subnet(0), net("2002:c000:101::/64"));
        assert_eq!(p.subnet(0xbeef), net("2002:c000:101:beef::/64"));
        assert_eq!(p.subnet(0xffff), net("2002:c000:101:ffff::/64"));
        assert!(p.contains(&v6("2002:c000:101:ffff:ffff:ffff:ffff:ffff")));
        assert!(!p.contains(&v6("2002:c000:102::")));
        assert!(!p.contains(&v6("2002:c000:100:ffff::1")));
    }

    #[test]
    fn display_and_from_str_round_trip() {
        let table = [
            "2002:102:304::/48",
            "2002:c100:e81::/48",
            "fd12:3456:789a::/48",
            "fd00::/48",
        ];
        for s in table {
            let p: OverlayPrefix = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
            assert_eq!(p.to_string().parse::<OverlayPrefix>(), Ok(p));
        }
        // Leading zeros are accepted; the canonical form drops them.
        let p: OverlayPrefix = "2002:0102:0304::/48".parse().unwrap();
        assert_eq!(
            p,
            OverlayPrefix::SixToFour {
                ipv4: v4("1.2.3.4"),
                net: net("2002:102:304::/48")
            }
        );
    }

    #[test]
    fn from_str_refuses_bad_prefixes() {
        let table = [
            ("", AddrError::Parse),
            ("2002:102:304::", AddrError::Parse),
            ("1.2.3.4/24", AddrError::Parse),
            ("2002:102:304::/129", AddrError::Parse),
            ("2001:db8::/48", AddrError::NotOverlayPrefix),
            ("fc00::/48", AddrError::NotOverlayPrefix),
            (
                "2002:102:304::/64",
                AddrError::WrongPrefixLength {
                    expected: 48,
                    found: 64,
                },
            ),
            ("2002:102:304::1/48", AddrError::HostBitsSet),
            (
                "2002:c000:201::/48",
                AddrError::Ipv4NotUsable {
                    addr: v4("192.0.2.1"),
                    class: Ipv4Class::Documentation,
                },
            ),
            (
                "2002:a00:1::/48",
                AddrError::Ipv4NotUsable {
                    addr: v4("10.0.0.1"),
                    class: Ipv4Class::Private,
                },
            ),
        ];
        for (s, err) in table {
            assert_eq!(s.parse::<OverlayPrefix>(), Err(err), "{s:?}");
        }
        // The lab policy accepts what the strict one refused for privacy only.
        assert!(OverlayPrefix::parse_with_policy("2002:a00:1::/48", LAB).is_ok());
        assert!(OverlayPrefix::parse_with_policy("2002:c000:201::/48", LAB).is_err());
    }

    fn plan() -> AddressPlan {
        let overlay = OverlayPrefix::six_to_four(v4("198.51.99.7"), STRICT).unwrap();
        AddressPlan::new(overlay, DEFAULT_USER_SUBNET_ID).unwrap()
    }

    #[test]
    fn plan_layout() {
        let plan = plan();
        assert_eq!(plan.overlay().net(), net("2002:c633:6307::/48"));
        assert_eq!(plan.user_subnet_id(), 1);
        assert_eq!(plan.user_subnet(), net("2002:c633:6307:1::/64"));
        assert_eq!(plan.authority_address(), v6("2002:c633:6307::1"));
        assert_eq!(
            AddressPlan::new(plan.overlay(), 0),
            Err(AddrError::ReservedSubnetId)
        );
    }

    #[test]
    fn user_addresses_round_trip() {
        let plan = plan();
        let table = [
            (1, "2002:c633:6307:1::1"),
            (2, "2002:c633:6307:1::2"),
            (0xffff, "2002:c633:6307:1::ffff"),
            (0x1_0000_0000, "2002:c633:6307:1:0:1::"),
            (
                0xfdff_ffff_ffff_ff7f,
                "2002:c633:6307:1:fdff:ffff:ffff:ff7f",
            ),
            (0xfe00_0000_0000_0000, "2002:c633:6307:1:fe00::"),
            (u64::MAX, "2002:c633:6307:1:ffff:ffff:ffff:ffff"),
        ];
        for (index, addr) in table {
            assert_eq!(plan.user_address(index), Ok(v6(addr)), "{index:#x}");
            assert_eq!(plan.user_index(&v6(addr)), Some(index), "{addr}");
        }
    }

    #[test]
    fn reserved_user_indices_are_refused() {
        let plan = plan();
        let reserved = [
            0,
            0xfdff_ffff_ffff_ff80,
            0xfdff_ffff_ffff_ffc0,
            0xfdff_ffff_ffff_ffff,
            0x0200_5eff_fe00_0000,
            0x0200_5eff_fe00_5213,
            0x0200_5eff_fe00_ffff,
        ];
        for index in reserved {
            assert!(is_reserved_interface_id(index), "{index:#x}");
            assert_eq!(
                plan.user_address(index),
                Err(AddrError::ReservedInterfaceId),
                "{index:#x}"
            );
            let addr = with_interface_id(plan.user_subnet(), index);
            assert_eq!(plan.user_index(&addr), None, "{addr}");
        }
        for index in [1, 0x0200_5eff_fdff_ffff, 0x0200_5eff_fe01_0000] {
            assert!(!is_reserved_interface_id(index), "{index:#x}");
        }
        // Addresses outside the user subnet have no index.
        for addr in [
            "2002:c633:6307:2::1",
            "2002:c633:6307::1",
            "2002:c633:6308:1::1",
        ] {
            assert_eq!(plan.user_index(&v6(addr)), None, "{addr}");
        }
    }

    #[test]
    fn plan_svns_avoid_reserved_subnets() {
        let ula_plan = AddressPlan::new(
            OverlayPrefix::ula_from_global_id([0xab, 0xcd, 0xef, 0x01, 0x23]),
            0x0010,
        )
        .unwrap();
        assert_eq!(ula_plan.svn(0), Err(AddrError::ReservedSubnetId));
        assert_eq!(ula_plan.svn(0x0010), Err(AddrError::ReservedSubnetId));
        let svn = ula_plan.svn(0x0001).unwrap();
        assert_eq!(svn.prefix(), net("fdab:cdef:123:1::/64"));
        assert_eq!(svn.system_address(), v6("fdab:cdef:123:1::1"));
        // A ULA SVN has no 6to4 endpoint.
        assert_eq!(svn.endpoint(4500, LAB), None);
        // An SVN in a 6to4 home prefix is served by the home agent.
        let svn = plan().svn(0x0002).unwrap();
        assert_eq!(
            svn.endpoint(4500, STRICT),
            Some(SocketAddrV4::new(v4("198.51.99.7"), 4500))
        );
    }

    #[test]
    fn svn_on_own_ipv4() {
        let svn = SystemVirtualNetwork::on_own_ipv4(v4("203.0.114.9"), 0x0007, STRICT).unwrap();
        assert_eq!(svn.prefix(), net("2002:cb00:7209:7::/64"));
        assert_eq!(svn.to_string(), "2002:cb00:7209:7::/64");
        assert_eq!(svn.system_address(), v6("2002:cb00:7209:7::1"));
        let endpoint = SocketAddrV4::new(v4("203.0.114.9"), 4500);
        assert_eq!(svn.endpoint(4500, STRICT), Some(endpoint));
        for host_id in [2, 3, 0x1234_5678, u64::MAX] {
            let app = svn.application_address(host_id).unwrap();
            assert!(svn.contains(&app), "{app}");
            assert_eq!(interface_id(&app), host_id);
            assert_eq!(six_to_four_endpoint(&app, 4500, STRICT), Ok(endpoint));
        }
        assert!(svn.contains(&svn.system_address()));
        assert!(!svn.contains(&v6("2002:cb00:7209:8::2")));
        for host_id in [0, 1, 0xfdff_ffff_ffff_ff80, 0x0200_5eff_fe00_0001] {
            assert_eq!(
                svn.application_address(host_id),
                Err(AddrError::ReservedInterfaceId),
                "{host_id:#x}"
            );
        }
    }

    #[test]
    fn svn_on_own_ipv4_refusals() {
        assert_eq!(
            SystemVirtualNetwork::on_own_ipv4(v4("8.8.8.8"), 0, STRICT),
            Err(AddrError::ReservedSubnetId)
        );
        assert_eq!(
            SystemVirtualNetwork::on_own_ipv4(v4("10.9.8.7"), 1, STRICT),
            Err(AddrError::Ipv4NotUsable {
                addr: v4("10.9.8.7"),
                class: Ipv4Class::Private
            })
        );
        let lab = SystemVirtualNetwork::on_own_ipv4(v4("10.9.8.7"), 1, LAB).unwrap();
        assert_eq!(lab.prefix(), net("2002:a09:807:1::/64"));
        assert_eq!(
            lab.endpoint(4500, LAB),
            Some(SocketAddrV4::new(v4("10.9.8.7"), 4500))
        );
        // A driver that switches back to the strict policy will not send there.
        assert_eq!(lab.endpoint(4500, STRICT), None);
    }

    #[test]
    fn svn_from_prefix_constraints() {
        let table = [
            ("2002:808:808:5::/64", Ok(())),
            ("fd00:1:2:3::/64", Ok(())),
            ("2001:db8:0:1::/64", Ok(())),
            (
                "2002:808:808::/48",
                Err(AddrError::WrongPrefixLength {
                    expected: 64,
                    found: 48,
                }),
            ),
            ("2002:808:808:5::1/64", Err(AddrError::HostBitsSet)),
        ];
        for (s, want) in table {
            let got = SystemVirtualNetwork::from_prefix(net(s));
            assert_eq!(got.map(|svn| svn.prefix()), want.map(|()| net(s)), "{s}");
        }
        let svn = SystemVirtualNetwork::from_prefix(net("2002:808:808:5::/64")).unwrap();
        assert_eq!(
            svn.endpoint(9, STRICT),
            Some(SocketAddrV4::new(v4("8.8.8.8"), 9))
        );
    }

    #[test]
    fn error_labels_are_distinct() {
        let all = [
            AddrError::Ipv4NotUsable {
                addr: Ipv4Addr::UNSPECIFIED,
                class: Ipv4Class::Unspecified,
            },
            AddrError::NotSixToFour,
            AddrError::NotUla,
            AddrError::NotOverlayPrefix,
            AddrError::WrongPrefixLength {
                expected: 48,
                found: 64,
            },
            AddrError::HostBitsSet,
            AddrError::ReservedInterfaceId,
            AddrError::ReservedSubnetId,
            AddrError::Parse,
        ];
        let labels: std::collections::HashSet<_> = all.iter().map(AddrError::as_str).collect();
        assert_eq!(labels.len(), all.len());
        assert_eq!(
            all[0].to_string(),
            "IPv4 address 0.0.0.0 (unspecified) is not usable as a 6to4 endpoint"
        );
    }
}
