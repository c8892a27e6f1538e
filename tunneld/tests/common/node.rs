//! The client and server nodes the data-plane and userspace tests drive:
//! a server node that learns users from their leases and a client node that
//! knows the server, built from test identities valid around the real clock.
//! The `loopback_throughput` example includes this file too.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use overlay_proto::lease::{EntityKind, LeaseAuthority};
use overlay_proto::node::{Node, NodeConfig};
use overlay_proto::session::{PeerConfig, Timers};
use overlay_proto::sim::{issue_identity, IdentitySpec};
use overlay_proto::time::UnixTime;
use tunneld::startup;

/// The client's lease: one user address.
pub const CLIENT_PREFIX: &str = "2002:102:304:1::a/128";
/// The server's lease: its system virtual network.
pub const SERVER_PREFIX: &str = "2002:b16:212c:1::/64";

/// The client's permanent address.
pub fn client_addr() -> Ipv6Addr {
    "2002:102:304:1::a".parse().unwrap()
}

/// The server's system address.
pub fn server_addr() -> Ipv6Addr {
    "2002:b16:212c:1::1".parse().unwrap()
}

/// How the client node differs between tests.
pub struct ClientSpec<'a> {
    /// Groups in the client's lease.
    pub groups: &'a [&'a str],
    /// The client's protocol timers.
    pub timers: Timers,
    /// Export SA keys (for a key log).
    pub export_keys: bool,
}

impl Default for ClientSpec<'_> {
    fn default() -> Self {
        ClientSpec {
            groups: &[],
            timers: Timers::DEFAULT,
            export_keys: false,
        }
    }
}

/// `(client, server)` nodes; the client knows the server at
/// `server_endpoint` (127.0.0.1 is not in the server's 6to4 prefix, so the
/// endpoint is given).
pub fn nodes(client: ClientSpec<'_>, server_endpoint: SocketAddr) -> (Node, Node) {
    let now = startup::now();
    let authority = LeaseAuthority::from_seed([7; 32]);
    let spec = |name, kind, prefix: &str, groups| IdentitySpec {
        name,
        kind,
        prefix: prefix.parse().unwrap(),
        groups,
        valid_from: UnixTime::from_secs(now.unix.as_secs() - 60),
        lifetime: Duration::from_secs(24 * 3600),
        serial: 1,
    };
    let (server_key, server_lease) = issue_identity(
        &authority,
        [2; 32],
        &spec("server", EntityKind::System, SERVER_PREFIX, &[]),
    );
    let (client_key, client_lease) = issue_identity(
        &authority,
        [1; 32],
        &spec("client", EntityKind::User, CLIENT_PREFIX, client.groups),
    );

    let mut server_config =
        NodeConfig::new(server_key, authority.public_key(), server_lease.clone());
    server_config.accept_unknown_peers = true;
    let server = Node::new(server_config, [3; 32]);

    let mut client_config = NodeConfig::new(client_key, authority.public_key(), client_lease);
    client_config.timers = client.timers;
    client_config.dangerous_export_keys = client.export_keys;
    let mut client_node = Node::new(client_config, [4; 32]);
    let peer = PeerConfig {
        endpoint: Some(server_endpoint),
        ..PeerConfig::default()
    };
    client_node
        .add_peer(server_lease, peer, now.instant)
        .unwrap();
    (client_node, server)
}
