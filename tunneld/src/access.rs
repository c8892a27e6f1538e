//! Access control in server role: which leases may reach which
//! application.
//!
//! After decryption the protocol core has already checked the inner source
//! of a packet against the sending peer's lease (cryptokey routing), so the
//! peer's lease *is* the authenticated identity of the packet. An
//! [`AccessPolicy`] maps each application address to the groups allowed in
//! (from the config's `allowed-groups`); the data plane asks it once per
//! decrypted packet with the packet's inner destination and the peer's
//! lease. The lookup is one hash probe and, for a restricted application, a
//! scan of its few groups against the lease's few groups: no allocation.
//!
//! Destinations that are not an application address are allowed: the
//! system address and anything else is the userspace stack's or the host's
//! business.

use std::collections::HashMap;
use std::net::Ipv6Addr;

use overlay_proto::lease::Lease;

use crate::config::Application;

/// Application address → who may reach it. See the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    applications: HashMap<Ipv6Addr, Rule>,
}

/// One application's rule.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    name: String,
    /// Empty: anyone with a valid lease.
    allowed_groups: Vec<String>,
}

/// What [`AccessPolicy::allows`] decided for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Deliver the packet.
    Allowed,
    /// The destination is an application whose allowed groups the lease
    /// does not meet: drop the packet and answer "administratively
    /// prohibited".
    Prohibited {
        /// The application's name.
        application: &'a str,
    },
}

impl AccessPolicy {
    /// A policy that allows everything (client role, or no applications).
    pub fn allow_all() -> AccessPolicy {
        AccessPolicy::default()
    }

    /// The policy of a server's applications. Applications with an empty
    /// `allowed_groups` admit any valid lease.
    pub fn from_applications<'a>(
        applications: impl IntoIterator<Item = &'a Application>,
    ) -> AccessPolicy {
        let applications = applications
            .into_iter()
            .map(|app| {
                let rule = Rule {
                    name: app.name.clone(),
                    allowed_groups: app.allowed_groups.clone(),
                };
                (app.address, rule)
            })
            .collect();
        AccessPolicy { applications }
    }

    /// Whether the policy restricts no application at all: every packet
    /// is allowed.
    pub fn is_empty(&self) -> bool {
        self.applications
            .values()
            .all(|rule| rule.allowed_groups.is_empty())
    }

    /// Whether a packet to `destination` from the holder of `lease` may be
    /// delivered.
    pub fn allows(&self, destination: &Ipv6Addr, lease: &Lease) -> Verdict<'_> {
        match self.applications.get(destination) {
            Some(rule)
                if !rule.allowed_groups.is_empty()
                    && !lease.member_of_any(&rule.allowed_groups) =>
            {
                Verdict::Prohibited {
                    application: &rule.name,
                }
            }
            _ => Verdict::Allowed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use overlay_proto::lease::EntityKind;
    use overlay_proto::time::UnixTime;

    fn app(name: &str, address: &str, groups: &[&str]) -> Application {
        Application {
            name: name.into(),
            address: address.parse().unwrap(),
            ports: vec![80],
            backend: Some("127.0.0.1:8080".parse().unwrap()),
            allowed_groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn lease(groups: &[&str]) -> Lease {
        Lease {
            kind: EntityKind::User,
            serial: 1,
            not_before: UnixTime::from_secs(0),
            not_after: UnixTime::from_secs(1),
            public_key: [1; 32],
            prefix: "2002:102:304:1::a/128".parse().unwrap(),
            name: "alice".into(),
            dn: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn verdict_per_destination_and_groups() {
        let apps = [
            app("wiki", "2001:db8::80", &["staff", "admins"]),
            app("open", "2001:db8::81", &[]),
        ];
        let policy = AccessPolicy::from_applications(&apps);
        assert!(!policy.is_empty());
        let wiki: Ipv6Addr = "2001:db8::80".parse().unwrap();
        let open: Ipv6Addr = "2001:db8::81".parse().unwrap();
        let other: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let prohibited = Verdict::Prohibited {
            application: "wiki",
        };
        let cases: &[(&Ipv6Addr, &[&str], Verdict<'_>)] = &[
            (&wiki, &["students"], prohibited),
            (&wiki, &[], prohibited),
            // Exact, case-sensitive group names.
            (&wiki, &["Staff"], prohibited),
            (&wiki, &["students", "staff"], Verdict::Allowed),
            (&wiki, &["admins"], Verdict::Allowed),
            (&open, &[], Verdict::Allowed),
            (&open, &["students"], Verdict::Allowed),
            (&other, &[], Verdict::Allowed),
        ];
        for (destination, groups, expected) in cases {
            assert_eq!(
                policy.allows(destination, &lease(groups)),
                *expected,
                "{destination} {groups:?}"
            );
        }
    }

    #[test]
    fn empty_policies() {
        assert!(AccessPolicy::allow_all().is_empty());
        let open = AccessPolicy::from_applications(&[app("open", "2001:db8::81", &[])]);
        assert!(open.is_empty());
    }
}
