//! TUN mode: the kernel's IPv6 stack on a TUN device is the tunnel's
//! inner side.
//!
//! [`DevicePlan::new`] decides what the device carries:
//! - **addresses** ([`addresses`]): a user's lease is its permanent /128;
//!   a server's lease is its system virtual network, whose system address
//!   (`::1`) and every application's address go on the device, each as a
//!   /128 (no on-link prefix: nothing in the overlay is a neighbour);
//! - **routes** ([`overlay_routes`]): `2002::/16`, where every 6to4
//!   destination lives — the home /48 of a 6to4 deployment and the system
//!   virtual networks that servers place in their own 6to4 prefixes
//!   (DESIGN §2) —, plus the /48 around this node's lease and each
//!   configured peer's lease when it is outside `2002::/16` (a ULA
//!   deployment). Destinations no peer covers are counted and dropped by
//!   the data plane (`no_route`).
//!
//! [`TunPort::open`] creates the device with `tun-rs` (name, MTU, no
//! packet-information header), turns its link-local address off (so the
//! kernel sends no router solicitations or MLD reports into the tunnel),
//! brings it up and adds the addresses and routes over rtnetlink. Nothing
//! needs undoing by hand: the device is not persistent, so when its file
//! descriptor closes — the port dropped after a clean shutdown, a panic,
//! or the kernel closing the files of a process killed by SIGKILL — the
//! kernel deletes the device and, with it, its addresses and routes.
//!
//! [`TunPort`] is an [`InnerPort`]: one `read` per outbound packet into
//! the tunnel's buffer (cancel safe: readiness, then a non-blocking read),
//! one non-blocking `write` per decrypted packet. Neither allocates.

use std::fmt;
use std::io;
use std::net::Ipv6Addr;
use std::time::Duration;

use futures_util::StreamExt as _;
use ipnet::Ipv6Net;
use overlay_proto::node::Node;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use rtnetlink::packet_route::link::{AfSpecInet6, AfSpecUnspec, In6AddrGenMode, LinkAttribute};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::RouteMessageBuilder;
use tracing::{debug, info, warn};

use crate::config::{Config, Role};
use crate::dataplane::InnerPort;

/// The device's name unless `tun-name` says otherwise.
pub const DEFAULT_NAME: &str = "permanet0";

/// Longest interface name Linux accepts (`IFNAMSIZ` - 1).
pub const MAX_NAME_LEN: usize = 15;

/// The 6to4 block, `2002::/16` (RFC 3056): routed to the device always.
const SIX_TO_FOUR: Ipv6Net = match Ipv6Net::new(Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16) {
    Ok(net) => net,
    Err(_) => panic!("2002::/16 is a valid prefix"),
};

/// Length of a deployment's overlay prefix.
const OVERLAY_PREFIX_LEN: u8 = overlay_proto::addr::OVERLAY_PREFIX_LEN;

/// What the TUN device carries. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevicePlan {
    /// The interface name (`tun-name`).
    pub name: String,
    /// The interface MTU (`mtu`).
    pub mtu: u16,
    /// The node's permanent addresses, each assigned as a /128.
    pub addresses: Vec<Ipv6Addr>,
    /// The prefixes routed to the device.
    pub routes: Vec<Ipv6Net>,
}

impl DevicePlan {
    /// The plan for a node built from `config`.
    pub fn new(config: &Config, node: &Node) -> DevicePlan {
        let prefix = node.local_lease().lease().prefix;
        let applications = config.applications.iter().map(|a| a.address);
        let leases = std::iter::once(prefix).chain(node.peers().map(|p| p.lease().lease().prefix));
        DevicePlan {
            name: config.tun_name.clone(),
            mtu: config.mtu,
            addresses: addresses(config.role, prefix, applications),
            routes: overlay_routes(leases),
        }
    }
}

/// The addresses a node answers on: a client its lease's /128; a server
/// the system address of its system virtual network (`::1`) and every
/// application's address, without duplicates.
pub fn addresses(
    role: Role,
    lease_prefix: Ipv6Net,
    applications: impl IntoIterator<Item = Ipv6Addr>,
) -> Vec<Ipv6Addr> {
    let mut out = Vec::new();
    match role {
        Role::Client => out.push(lease_prefix.addr()),
        Role::Server => {
            let system = overlay_proto::addr::SystemVirtualNetwork::from_prefix(lease_prefix)
                .map(|svn| svn.system_address())
                .unwrap_or_else(|_| lease_prefix.network());
            out.push(system);
            for address in applications {
                if !out.contains(&address) {
                    out.push(address);
                }
            }
        }
    }
    out
}

/// The prefixes routed to the device: `2002::/16`, and the /48 around
/// each of `leases` that lies outside it. Sorted, without duplicates.
pub fn overlay_routes(leases: impl IntoIterator<Item = Ipv6Net>) -> Vec<Ipv6Net> {
    let mut routes = vec![SIX_TO_FOUR];
    for lease in leases {
        let len = lease.prefix_len().min(OVERLAY_PREFIX_LEN);
        let Ok(overlay) = Ipv6Net::new(lease.addr(), len).map(|n| n.trunc()) else {
            continue;
        };
        if !routes.iter().any(|r| r.contains(&overlay)) {
            routes.push(overlay);
        }
    }
    routes.sort();
    routes
}

/// The TUN device could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunError {
    /// The process may not create devices or change the network
    /// configuration.
    #[error("TUN mode needs root or CAP_NET_ADMIN ({step}: {error})")]
    NotPermitted {
        /// What was refused.
        step: Step,
        /// The kernel's answer.
        error: io::Error,
    },
    /// There is no `/dev/net/tun`.
    #[error("{step}: /dev/net/tun does not exist (load the tun module; in a container, pass the device in): {error}")]
    NoDevice {
        /// What failed.
        step: Step,
        /// The kernel's answer.
        error: io::Error,
    },
    /// A device of that name exists and is in use.
    #[error("{step}: the interface exists and is in use (another tunneld? set tun-name): {error}")]
    Busy {
        /// What failed.
        step: Step,
        /// The kernel's answer.
        error: io::Error,
    },
    /// Any other failure.
    #[error("{step}: {error}")]
    Failed {
        /// What failed.
        step: Step,
        /// The kernel's answer.
        error: io::Error,
    },
}

impl TunError {
    fn new(step: Step, error: io::Error) -> TunError {
        match error.raw_os_error() {
            Some(code) if code == EPERM || code == EACCES => TunError::NotPermitted { step, error },
            Some(EBUSY) => TunError::Busy { step, error },
            Some(ENOENT) if matches!(step, Step::Create { .. }) => {
                TunError::NoDevice { step, error }
            }
            _ if error.kind() == io::ErrorKind::PermissionDenied => {
                TunError::NotPermitted { step, error }
            }
            _ => TunError::Failed { step, error },
        }
    }
}

/// `EPERM`, `ENOENT`, `EACCES`, `EBUSY` on Linux.
const EPERM: i32 = 1;
const ENOENT: i32 = 2;
const EACCES: i32 = 13;
const EBUSY: i32 = 16;

/// One step of [`TunPort::open`], for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Creating the device (and setting its MTU).
    Create {
        /// The interface name.
        name: String,
    },
    /// Opening the rtnetlink socket.
    Netlink,
    /// Turning the device's link-local address off (`addr_gen_mode none`).
    LinkLocal {
        /// The interface name.
        name: String,
    },
    /// Bringing the device up.
    Up {
        /// The interface name.
        name: String,
    },
    /// Assigning an address.
    Address {
        /// The interface name.
        name: String,
        /// The address.
        address: Ipv6Addr,
    },
    /// Reading the addresses back.
    ReadAddresses {
        /// The interface name.
        name: String,
    },
    /// Adding a route.
    Route {
        /// The interface name.
        name: String,
        /// The prefix.
        route: Ipv6Net,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Create { name } => write!(f, "creating TUN device {name}"),
            Step::Netlink => f.write_str("opening a netlink socket"),
            Step::LinkLocal { name } => write!(f, "turning off {name}'s link-local address"),
            Step::Up { name } => write!(f, "bringing {name} up"),
            Step::Address { name, address } => write!(f, "assigning {address}/128 to {name}"),
            Step::ReadAddresses { name } => write!(f, "reading the addresses of {name}"),
            Step::Route { name, route } => write!(f, "routing {route} to {name}"),
        }
    }
}

/// The TUN device as the tunnel's [`InnerPort`]. Dropping it deletes the
/// device, its addresses and its routes (module documentation).
pub struct TunPort {
    device: tun_rs::AsyncDevice,
    name: String,
}

impl fmt::Debug for TunPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunPort").field("name", &self.name).finish()
    }
}

impl TunPort {
    /// Create the device `plan` describes, bring it up, assign its
    /// addresses and route its prefixes to it. Needs CAP_NET_ADMIN and a
    /// tokio runtime. On error everything done so far is undone (the
    /// device is dropped).
    pub async fn open(plan: &DevicePlan) -> Result<TunPort, TunError> {
        let name = plan.name.clone();
        let device = tun_rs::DeviceBuilder::new()
            .name(&plan.name)
            .mtu(plan.mtu)
            .packet_information(false)
            // Up only after `configure` turned the link-local address off.
            .enable(false)
            .build_async()
            .map_err(|e| TunError::new(Step::Create { name: name.clone() }, e))?;
        let index = device
            .if_index()
            .map_err(|e| TunError::new(Step::Create { name: name.clone() }, e))?;
        // Strict checking: the kernel filters route dumps by table and
        // device (wait_usable), instead of sending every route it has.
        let (connection, netlink, _) = rtnetlink::new_connection_with_strict_check()
            .map_err(|e| TunError::new(Step::Netlink, e))?;
        let connection = tokio::spawn(connection);
        let configured = configure(&netlink, index, plan).await;
        // The handle was the connection's only user.
        drop(netlink);
        connection.abort();
        configured?;
        info!(
            device = %name,
            mtu = plan.mtu,
            addresses = ?plan.addresses,
            routes = ?plan.routes,
            "TUN device up"
        );
        Ok(TunPort { device, name })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// No link-local address, up, addresses, routes, in that order (a route
/// needs the device up; the link-local address would be made on up).
async fn configure(
    netlink: &rtnetlink::Handle,
    index: u32,
    plan: &DevicePlan,
) -> Result<(), TunError> {
    let name = || plan.name.clone();
    // `addr_gen_mode none`: no fe80:: address, so the kernel sends no
    // router solicitations or MLD reports into the tunnel, where no peer
    // routes them (nothing in the overlay is on-link).
    let no_link_local = AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)]);
    let link = rtnetlink::LinkUnspec::new_with_index(index)
        .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![no_link_local]))
        .build();
    netlink
        .link()
        .set(link)
        .execute()
        .await
        .map_err(|e| TunError::new(Step::LinkLocal { name: name() }, netlink_io(e)))?;
    let link = rtnetlink::LinkUnspec::new_with_index(index).up().build();
    netlink
        .link()
        .set(link)
        .execute()
        .await
        .map_err(|e| TunError::new(Step::Up { name: name() }, netlink_io(e)))?;
    for &address in &plan.addresses {
        // No duplicate address detection: nothing else is on the link, and
        // a tentative address can be neither a source nor a destination
        // (the kernel's DAD worker runs late on a busy host).
        let mut request = netlink.address().add(index, address.into(), 128);
        let message = request.message_mut();
        message.header.flags |= AddressHeaderFlags::Nodad;
        message
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
        request.execute().await.map_err(|e| {
            let step = Step::Address {
                name: name(),
                address,
            };
            TunError::new(step, netlink_io(e))
        })?;
    }
    wait_usable(netlink, index, plan).await?;
    for &route in &plan.routes {
        let message = RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(route.addr(), route.prefix_len())
            .output_interface(index)
            .protocol(RouteProtocol::Static)
            .build();
        netlink.route().add(message).execute().await.map_err(|e| {
            let step = Step::Route {
                name: name(),
                route,
            };
            TunError::new(step, netlink_io(e))
        })?;
    }
    Ok(())
}

/// How long [`wait_usable`] waits for the kernel to finish with the
/// addresses.
const USABLE_DEADLINE: Duration = Duration::from_secs(10);

/// The kernel's `local` routing table.
const LOCAL_TABLE: u32 = 255;

/// How often [`wait_usable`] looks.
const USABLE_POLL: Duration = Duration::from_millis(10);

/// Wait until the kernel has finished with every address of `plan`: none
/// is tentative (a tentative address is no source) and each has its local
/// route (without it, packets to the address are refused as not ours).
/// Even with `nodad` the kernel's address worker does the second part
/// later, late on a busy host; the daemon must not say it runs before. Past
/// [`USABLE_DEADLINE`] a warning is logged and the daemon runs on.
async fn wait_usable(
    netlink: &rtnetlink::Handle,
    index: u32,
    plan: &DevicePlan,
) -> Result<(), TunError> {
    let started = tokio::time::Instant::now();
    let read_error = |e| {
        let step = Step::ReadAddresses {
            name: plan.name.clone(),
        };
        TunError::new(step, netlink_io(e))
    };
    loop {
        let mut usable = Vec::with_capacity(plan.addresses.len());
        let mut addresses = netlink
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(message) = addresses.next().await {
            if let Some(address) = usable_address(&message.map_err(read_error)?) {
                usable.push(address);
            }
        }
        let mut local = Vec::with_capacity(plan.addresses.len());
        // A filter, with strict checking: table `local`, type local, this
        // device, any protocol.
        let mut local_table = RouteMessageBuilder::<Ipv6Addr>::new()
            .table_id(LOCAL_TABLE)
            .output_interface(index)
            .build();
        local_table.header.protocol = RouteProtocol::Unspec;
        local_table.header.kind = RouteType::Local;
        let mut routes = netlink.route().get(local_table).execute();
        while let Some(message) = routes.next().await {
            if let Some(address) = local_route(&message.map_err(read_error)?, index) {
                local.push(address);
            }
        }
        let pending: Vec<Ipv6Addr> = plan
            .addresses
            .iter()
            .filter(|a| !usable.contains(a) || !local.contains(a))
            .copied()
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= USABLE_DEADLINE {
            warn!(device = %plan.name, ?pending, "addresses not ready yet (tentative or without local route); programs may not use them yet");
            return Ok(());
        }
        tokio::time::sleep(USABLE_POLL).await;
    }
}

/// The address whose local route (`local ADDR dev DEVICE` in table
/// `local`) `message` is, if it is one on device `index`.
fn local_route(message: &RouteMessage, index: u32) -> Option<Ipv6Addr> {
    if message.header.kind != RouteType::Local || message.header.destination_prefix_length != 128 {
        return None;
    }
    let mut destination = None;
    let mut on_device = false;
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => destination = Some(*a),
            RouteAttribute::Oif(oif) => on_device = *oif == index,
            _ => {}
        }
    }
    destination.filter(|_| on_device)
}

/// The IPv6 address `message` carries, unless it is tentative (or failed
/// duplicate address detection).
fn usable_address(message: &AddressMessage) -> Option<Ipv6Addr> {
    let mut address = None;
    let mut unusable = message
        .header
        .flags
        .intersects(AddressHeaderFlags::Tentative | AddressHeaderFlags::Dadfailed);
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Address(std::net::IpAddr::V6(a)) => address = Some(*a),
            AddressAttribute::Flags(flags) => {
                unusable = flags.intersects(AddressFlags::Tentative | AddressFlags::Dadfailed);
            }
            _ => {}
        }
    }
    address.filter(|_| !unusable)
}

/// An rtnetlink error as the `io::Error` the kernel sent.
fn netlink_io(error: rtnetlink::Error) -> io::Error {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

impl InnerPort for TunPort {
    async fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
        loop {
            // Cancel safe: `recv` waits for readiness and then reads
            // without blocking; dropped while waiting, it has read nothing.
            match self.device.recv(buf).await {
                Ok(0) => continue,
                Ok(len) => return Some(len),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    warn!(device = %self.name, %error, "reading the TUN device failed; stopping");
                    return None;
                }
            }
        }
    }

    fn try_recv(&mut self, buf: &mut [u8]) -> Option<usize> {
        loop {
            match self.device.try_recv(buf) {
                Ok(0) => return None,
                Ok(len) => return Some(len),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Nothing ready (WouldBlock); any other error is reported
                // by the `recv` that follows.
                Err(_) => return None,
            }
        }
    }

    fn deliver(&mut self, packet: &[u8]) -> io::Result<()> {
        self.device.try_send(packet).map(drop)
    }
}

impl Drop for TunPort {
    fn drop(&mut self) {
        debug!(device = %self.name, "closing the TUN device; the kernel removes it with its addresses and routes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv6Net {
        s.parse().unwrap()
    }

    fn addr(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn client_has_its_lease_address() {
        let got = addresses(Role::Client, net("2002:a00:1:1::1234/128"), []);
        assert_eq!(got, [addr("2002:a00:1:1::1234")]);
    }

    #[test]
    fn server_has_its_system_address_and_each_application_once() {
        let apps = [
            addr("2002:a00:1:2::80"),
            addr("2002:a00:1:2::22"),
            addr("2002:a00:1:2::80"),
        ];
        let got = addresses(Role::Server, net("2002:a00:1:2::/64"), apps);
        assert_eq!(
            got,
            [
                addr("2002:a00:1:2::1"),
                addr("2002:a00:1:2::80"),
                addr("2002:a00:1:2::22")
            ]
        );
    }

    #[test]
    fn routes_cover_six_to_four_and_each_other_overlay_48() {
        // 6to4 leases are inside 2002::/16 already.
        let got = overlay_routes([net("2002:a00:1:1::1234/128"), net("2002:c000:201:2::/64")]);
        assert_eq!(got, [net("2002::/16")]);
        // A ULA deployment: its /48 once, whichever lease names it.
        let got = overlay_routes([
            net("fd12:3456:789a:1::5/128"),
            net("fd12:3456:789a:2::/64"),
            net("2002:c000:201:2::/64"),
        ]);
        assert_eq!(got, [net("2002::/16"), net("fd12:3456:789a::/48")]);
        // A lease wider than /48 is routed as it is.
        assert_eq!(
            overlay_routes([net("fd00::/40")]),
            [net("2002::/16"), net("fd00::/40")]
        );
    }

    #[test]
    fn errors_say_what_was_refused() {
        let step = Step::Create {
            name: "permanet0".to_owned(),
        };
        let e = TunError::new(step.clone(), io::Error::from_raw_os_error(EPERM));
        assert!(matches!(e, TunError::NotPermitted { .. }));
        let text = e.to_string();
        assert!(
            text.starts_with(
                "TUN mode needs root or CAP_NET_ADMIN (creating TUN device permanet0: "
            ),
            "{text}"
        );
        let e = TunError::new(step, io::Error::from_raw_os_error(EBUSY));
        assert!(e.to_string().contains("in use"), "{e}");
    }
}
