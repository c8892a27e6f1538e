//! # tunneld — the permanet tunnel daemon
//!
//! `tunneld` runs on every terminal (client role) and every server (server
//! role). It drives the sans-IO protocol core [`overlay_proto`]: it owns the
//! UDP socket, the TUN device or userspace stack, the clock and the files,
//! and feeds the core datagrams and time. This library holds everything the
//! binary does that is worth testing in-process: the configuration
//! ([`config`]), key files ([`keys`]), the debugging ESP key log
//! ([`keylog`]), turning both into a ready
//! [`overlay_proto::node::Node`] ([`startup`]) and the UDP data plane that
//! drives it ([`dataplane`], its socket batched with GSO and GRO in
//! [`udp`]) — with the server's access control by lease
//! groups ([`access`]) and the ICMPv6 errors that answer refused packets
//! ([`icmp`]) —, the userspace mode that plugs into its
//! inner-packet port — a smoltcp IPv6 stack with the client's SOCKS5 proxy
//! and the server's application forwarding with PROXY v2 ([`userspace`]),
//! its proxy resolving overlay names ([`names`]) — and the control socket
//! `tunneld status` talks to ([`control`]); or, in TUN mode, the kernel's
//! own stack on a TUN device that carries the permanent addresses and the
//! overlay routes ([`tun`]). Around the running tunnel: the Prometheus
//! endpoint ([`metrics`]), SIGHUP reloads applied between packets
//! ([`reload`]) and where leases come from and when they are renewed
//! ([`leases`]).
#![forbid(unsafe_code)]

pub mod access;
pub mod addrd;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod icmp;
pub mod keylog;
pub mod keys;
pub mod leases;
pub mod metrics;
pub mod names;
pub mod reload;
pub mod startup;
pub mod tun;
pub mod udp;
pub mod userspace;

#[cfg(test)]
mod tests;
