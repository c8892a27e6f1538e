//! The zone data: built once from a directory snapshot, then only read.
//!
//! A [`Zone`] holds one or more *authorities* — the forward zone
//! (`ZONE`, with `users.`, `apps.` and `systems.` below it) and one
//! `ip6.arpa` zone per reverse prefix — and answers a question with
//! [`Zone::resolve`]. It is immutable: the server swaps whole zones (see
//! [`super::ZoneHandle`]), so a query never sees half an update.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv6Addr;

use hickory_proto::rr::rdata::{AAAA, NS, PTR, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use ipnet::Ipv6Net;
use overlay_proto::lease::EntityKind;
use overlay_proto::names::is_valid_label as valid_label;
pub use overlay_proto::names::{BadZone, OverlayZone, DEFAULT_ZONE};

use crate::directory::Entity;

/// TTL of every record (AAAA, PTR, NS, SOA) and of negative answers (the
/// SOA minimum), in seconds. Short, so a newly assigned address is seen
/// within a minute by caches that saw an NXDOMAIN for it; addresses never
/// change once assigned, so this costs little.
pub const DEFAULT_TTL: u32 = 60;

/// SOA timers (seconds). No secondaries are expected (replicas build the
/// same zone from the same directory), so these only need to be sane.
const SOA_REFRESH: i32 = 3600;
const SOA_RETRY: i32 = 600;
const SOA_EXPIRE: i32 = 86_400;

/// Reverse zone given to an address outside every configured reverse
/// prefix: its /48 (a deployment's overlay prefix, or a server's own 6to4
/// prefix).
const DERIVED_REVERSE_PREFIX_LEN: u8 = 48;

/// What the zone is built with (the daemon's `[dns]` config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneConfig {
    /// The forward zone.
    pub zone: OverlayZone,
    /// Reverse zones to be authoritative for, as prefixes whose length is
    /// a multiple of 4 (nibble boundary), e.g. the deployment's /48. A
    /// name under one of them that has no address gets NXDOMAIN, not
    /// REFUSED. An assigned address outside all of them gets its /48's
    /// reverse zone added automatically.
    pub reverse_prefixes: Vec<Ipv6Net>,
    /// addrd's own overlay address: published as the AAAA of `ns.ZONE`,
    /// the NS of every zone served. `None` publishes the NS without an
    /// address.
    pub nameserver: Option<Ipv6Addr>,
    /// TTL of records and negative answers, in seconds.
    pub ttl: u32,
}

impl ZoneConfig {
    /// A config for `zone` with the default TTL, no reverse prefixes
    /// beyond the derived ones and no nameserver address.
    pub fn new(zone: OverlayZone) -> ZoneConfig {
        ZoneConfig {
            zone,
            reverse_prefixes: Vec::new(),
            nameserver: None,
            ttl: DEFAULT_TTL,
        }
    }

    /// Check what [`Zone::build`] relies on: reverse prefixes on nibble
    /// boundaries.
    pub fn validate(&self) -> Result<(), ZoneConfigError> {
        for prefix in &self.reverse_prefixes {
            if prefix.prefix_len() % 4 != 0 || prefix.prefix_len() == 0 {
                return Err(ZoneConfigError::ReversePrefix(*prefix));
            }
        }
        Ok(())
    }
}

/// A [`ZoneConfig`] that cannot be served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ZoneConfigError {
    /// A reverse prefix not on a nibble boundary (or /0): `ip6.arpa`
    /// zones are cut at multiples of 4 bits.
    #[error("reverse prefix {0} is not on a nibble boundary (length 4 to 128, a multiple of 4)")]
    ReversePrefix(Ipv6Net),
}

/// An entity left out of the zone, and why. Logged and counted by the
/// caller ([`super::ZoneHandle`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{dn}: not published in DNS: {reason}")]
pub struct SkippedEntity {
    /// The entity's DN.
    pub dn: String,
    /// Its short name, as the directory spells it.
    pub name: String,
    /// Why it was skipped.
    pub reason: SkipReason,
}

/// Why an entity is not in the zone.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SkipReason {
    /// Its name (lowercased) is not a DNS label: a-z, 0-9 and '-', 1 to
    /// 63 long, not starting or ending with '-'.
    #[error("name is not a valid DNS label")]
    InvalidLabel,
    /// Another entity of the same kind has the same name (ignoring case);
    /// the one whose DN sorts first keeps it.
    #[error("name already used by {0}")]
    DuplicateName(String),
    /// Another entity has the same address (a directory inconsistency);
    /// the one whose DN sorts first keeps it.
    #[error("address already used by {0}")]
    DuplicateAddress(String),
}

/// What a build produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildReport {
    /// Entities published (each has one AAAA and one PTR).
    pub published: usize,
    /// Entities left out.
    pub skipped: Vec<SkippedEntity>,
}

/// The answer to one question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The name is not in any zone served: REFUSED.
    Refused,
    /// NOERROR with these records in the answer section.
    Records(Vec<Record>),
    /// NOERROR, no answer: the name exists (it has other types, or names
    /// below it exist). The zone's SOA goes in the authority section.
    NoData(Record),
    /// NXDOMAIN: the name does not exist in a zone served. The zone's SOA
    /// goes in the authority section.
    NxDomain(Record),
}

/// One zone served (forward or reverse).
#[derive(Debug)]
struct Authority {
    origin: LowerName,
    soa: Record,
    /// Records by owner name (the apex's SOA and NS included).
    records: HashMap<LowerName, Vec<Record>>,
    /// Names that exist without records of their own (empty non-terminals
    /// such as `users.ZONE` or the nibbles of `ip6.arpa`).
    empty_non_terminals: HashSet<LowerName>,
}

/// An immutable, fully built set of zones. See the module documentation.
#[derive(Debug)]
pub struct Zone {
    serial: u32,
    /// Longest origin first, so the first zone containing a name is the
    /// most specific one.
    authorities: Vec<Authority>,
}

impl Zone {
    /// Build the zones for `config` from a directory snapshot. Entities
    /// without an address are ignored; entities whose name is not a DNS
    /// label, or whose name or address another entity already has, are
    /// left out and listed in the report. `serial` is the SOA serial.
    pub fn build(
        config: &ZoneConfig,
        entities: &[Entity],
        serial: u32,
    ) -> Result<(Zone, BuildReport), ZoneConfigError> {
        config.validate()?;
        let mut report = BuildReport::default();
        let ttl = config.ttl;
        let forward_origin = fqdn(config.zone.as_str());
        let ns_name = fqdn(&format!("ns.{}", config.zone));

        // Deterministic: the same snapshot always gives the same zone,
        // whatever order the directory listed it in.
        let mut sorted: Vec<&Entity> = entities.iter().filter(|e| e.address.is_some()).collect();
        sorted.sort_by(|a, b| a.dn.cmp(&b.dn));

        let mut names: HashMap<(String, EntityKind), &str> = HashMap::new();
        let mut addresses: HashMap<Ipv6Addr, &str> = HashMap::new();
        let mut published: Vec<(Name, Ipv6Addr)> = Vec::new();
        for entity in sorted {
            let Some(address) = entity.address else {
                continue;
            };
            let label = entity.name.to_ascii_lowercase();
            let skip = |reason| SkippedEntity {
                dn: entity.dn.clone(),
                name: entity.name.clone(),
                reason,
            };
            if !valid_label(&label) {
                report.skipped.push(skip(SkipReason::InvalidLabel));
                continue;
            }
            if let Some(other) = names.get(&(label.clone(), entity.kind)) {
                report
                    .skipped
                    .push(skip(SkipReason::DuplicateName((*other).to_owned())));
                continue;
            }
            if let Some(other) = addresses.get(&address) {
                report
                    .skipped
                    .push(skip(SkipReason::DuplicateAddress((*other).to_owned())));
                continue;
            }
            let owner = fqdn(&config.zone.name_of(&label, entity.kind));
            names.insert((label, entity.kind), &entity.dn);
            addresses.insert(address, &entity.dn);
            published.push((owner, address));
        }
        report.published = published.len();

        // The zones served: forward, configured reverse, derived reverse.
        let mut reverse: BTreeSet<Ipv6Net> =
            config.reverse_prefixes.iter().map(|p| p.trunc()).collect();
        for (_, address) in &published {
            if !reverse.iter().any(|p| p.contains(address)) {
                if let Ok(net) = Ipv6Net::new(*address, DERIVED_REVERSE_PREFIX_LEN) {
                    reverse.insert(net.trunc());
                }
            }
        }
        let soa = SOA::new(
            ns_name.clone(),
            fqdn(&format!("hostmaster.{}", config.zone)),
            serial,
            SOA_REFRESH,
            SOA_RETRY,
            SOA_EXPIRE,
            ttl,
        );
        let mut authorities = Vec::with_capacity(1 + reverse.len());
        authorities.push(Authority::new(&forward_origin, soa.clone(), &ns_name, ttl));
        for net in &reverse {
            let origin = reverse_name(net.addr(), usize::from(net.prefix_len() / 4));
            authorities.push(Authority::new(&origin, soa.clone(), &ns_name, ttl));
        }
        authorities.sort_by_key(|a| std::cmp::Reverse(a.origin.num_labels()));

        let mut zone = Zone {
            serial,
            authorities,
        };
        if let Some(address) = config.nameserver {
            zone.insert(Record::from_rdata(
                ns_name.clone(),
                ttl,
                RData::AAAA(AAAA(address)),
            ));
        }
        for (owner, address) in published {
            zone.insert(Record::from_rdata(
                owner.clone(),
                ttl,
                RData::AAAA(AAAA(address)),
            ));
            zone.insert(Record::from_rdata(
                reverse_name(address, 32),
                ttl,
                RData::PTR(PTR(owner)),
            ));
        }
        Ok((zone, report))
    }

    /// The SOA serial.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// The origins of the zones served (forward and reverse), most
    /// specific first.
    pub fn origins(&self) -> impl Iterator<Item = String> + '_ {
        self.authorities.iter().map(|a| a.origin.to_string())
    }

    /// Answer a question (class IN). Names compare case-insensitively.
    pub fn resolve(&self, name: &LowerName, record_type: RecordType) -> Answer {
        let Some(authority) = self.authorities.iter().find(|a| a.origin.zone_of(name)) else {
            return Answer::Refused;
        };
        match authority.records.get(name) {
            Some(records) => {
                let found: Vec<Record> = records
                    .iter()
                    .filter(|r| record_type == RecordType::ANY || r.record_type() == record_type)
                    .cloned()
                    .collect();
                if found.is_empty() {
                    Answer::NoData(authority.soa.clone())
                } else {
                    Answer::Records(found)
                }
            }
            None if authority.empty_non_terminals.contains(name) => {
                Answer::NoData(authority.soa.clone())
            }
            None => Answer::NxDomain(authority.soa.clone()),
        }
    }

    /// Add `record` to the most specific zone containing its owner (every
    /// owner built here is inside one), with the empty non-terminals
    /// between it and the apex.
    fn insert(&mut self, record: Record) {
        let owner = LowerName::new(record.name());
        let Some(authority) = self
            .authorities
            .iter_mut()
            .find(|a| a.origin.zone_of(&owner))
        else {
            return;
        };
        let mut parent = owner.base_name();
        // Stop at the first name already known: its ancestors are too.
        while parent != authority.origin
            && authority.origin.zone_of(&parent)
            && authority.empty_non_terminals.insert(parent.clone())
        {
            parent = parent.base_name();
        }
        authority.records.entry(owner).or_default().push(record);
    }
}

impl Authority {
    fn new(origin: &Name, soa: SOA, ns_name: &Name, ttl: u32) -> Authority {
        let soa = Record::from_rdata(origin.clone(), ttl, RData::SOA(soa));
        let ns = Record::from_rdata(origin.clone(), ttl, RData::NS(NS(ns_name.clone())));
        let mut records = HashMap::new();
        records.insert(LowerName::new(origin), vec![soa.clone(), ns]);
        Authority {
            origin: LowerName::new(origin),
            soa,
            records,
            empty_non_terminals: HashSet::new(),
        }
    }
}

/// `text` as a fully qualified name. Only called with names checked by
/// [`OverlayZone`] and [`valid_label`], which always parse; a failure
/// would give the root name, which no query can reach by mistake.
fn fqdn(text: &str) -> Name {
    let mut name = Name::from_ascii(text).unwrap_or_else(|_| Name::root());
    name.set_fqdn(true);
    name
}

/// The `ip6.arpa` name of the first `nibbles` nibbles of `address`
/// (32 for a /128's PTR owner, `len / 4` for a zone apex).
pub fn reverse_name(address: Ipv6Addr, nibbles: usize) -> Name {
    let octets = address.octets();
    let digits: Vec<u8> = octets
        .iter()
        .flat_map(|b| [b >> 4, b & 0xf])
        .take(nibbles)
        .collect();
    let mut text = String::with_capacity(nibbles * 2 + 9);
    for digit in digits.iter().rev() {
        text.push(char::from_digit(u32::from(*digit), 16).unwrap_or('0'));
        text.push('.');
    }
    text.push_str("ip6.arpa");
    fqdn(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(kind: EntityKind, name: &str, address: Option<&str>) -> Entity {
        Entity {
            dn: format!("cn={name},ou={kind:?},dc=example,dc=org"),
            name: name.into(),
            kind,
            groups: Vec::new(),
            disabled: false,
            address: address.map(|a| a.parse().unwrap()),
            allowed_groups: Vec::new(),
            system: None,
            public_ipv4: None,
        }
    }

    fn lower(name: &str) -> LowerName {
        LowerName::new(&Name::from_ascii(name).unwrap())
    }

    fn config() -> ZoneConfig {
        let mut config = ZoneConfig::new(OverlayZone::default());
        config.reverse_prefixes = vec!["fd00:1:2::/48".parse().unwrap()];
        config
    }

    #[test]
    fn zone_names_follow_tunneld() {
        let zone = OverlayZone::new("Corp.Example.").unwrap();
        assert_eq!(zone.as_str(), "corp.example");
        assert_eq!(
            zone.name_of("Alice", EntityKind::User),
            "alice.users.corp.example"
        );
        assert_eq!(
            zone.name_of("wiki", EntityKind::Application),
            "wiki.apps.corp.example"
        );
        assert_eq!(
            zone.name_of("app1", EntityKind::System),
            "app1.systems.corp.example"
        );
        assert_eq!(OverlayZone::default().as_str(), "permanet.internal");
        for bad in ["", ".", "a..b", "-a", "a_b", "ä.b", &"a".repeat(64)] {
            assert_eq!(OverlayZone::new(bad), Err(BadZone(bad.into())), "{bad:?}");
        }
    }

    #[test]
    fn reverse_names_are_nibbles() {
        let address: Ipv6Addr = "2001:db8::567:89ab".parse().unwrap();
        assert_eq!(
            reverse_name(address, 32).to_ascii(),
            "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
        );
        assert_eq!(
            reverse_name(address, 12).to_ascii(),
            "0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
        );
    }

    #[test]
    fn misaligned_reverse_prefix_is_refused() {
        let mut config = config();
        config.reverse_prefixes.push("fd00::/47".parse().unwrap());
        assert!(matches!(
            Zone::build(&config, &[], 1),
            Err(ZoneConfigError::ReversePrefix(_))
        ));
    }

    #[test]
    fn answers_nodata_nxdomain_and_refused() {
        let entities = [
            entity(EntityKind::User, "alice", Some("fd00:1:2:1::a")),
            entity(EntityKind::User, "bob", None),
            entity(EntityKind::System, "app1", Some("2002:c633:640a:1::1")),
        ];
        let (zone, report) = Zone::build(&config(), &entities, 7).unwrap();
        assert_eq!(report.published, 2);
        assert!(report.skipped.is_empty());
        assert_eq!(zone.serial(), 7);
        let origins: Vec<String> = zone.origins().collect();
        assert!(
            origins.contains(&"2.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa.".to_owned()),
            "{origins:?}"
        );
        assert!(
            origins.contains(&"a.0.4.6.3.3.6.c.2.0.0.2.ip6.arpa.".to_owned()),
            "{origins:?}"
        );
        assert!(origins.contains(&"permanet.internal.".to_owned()));

        let Answer::Records(records) =
            zone.resolve(&lower("ALICE.Users.permanet.internal."), RecordType::AAAA)
        else {
            panic!("no AAAA");
        };
        assert_eq!(records.len(), 1);
        assert_eq!(
            records[0].data(),
            &RData::AAAA(AAAA("fd00:1:2:1::a".parse().unwrap()))
        );
        assert_eq!(records[0].ttl(), DEFAULT_TTL);

        for (name, record_type) in [
            ("alice.users.permanet.internal.", RecordType::A),
            ("users.permanet.internal.", RecordType::AAAA),
            ("permanet.internal.", RecordType::AAAA),
            ("2.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa.", RecordType::PTR),
            ("1.0.0.0.2.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa.", RecordType::PTR),
        ] {
            assert!(
                matches!(zone.resolve(&lower(name), record_type), Answer::NoData(_)),
                "{name} {record_type}"
            );
        }
        for name in [
            "bob.users.permanet.internal.",
            "alice.apps.permanet.internal.",
            "x.alice.users.permanet.internal.",
            "b.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.2.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa.",
        ] {
            assert!(
                matches!(
                    zone.resolve(&lower(name), RecordType::AAAA),
                    Answer::NxDomain(_)
                ),
                "{name}"
            );
        }
        for name in [
            "example.org.",
            "internal.",
            ".",
            "1.ip6.arpa.",
            "f.ip6.arpa.",
        ] {
            assert_eq!(
                zone.resolve(&lower(name), RecordType::AAAA),
                Answer::Refused,
                "{name}"
            );
        }
        let Answer::Records(soa) = zone.resolve(&lower("permanet.internal."), RecordType::SOA)
        else {
            panic!("no SOA");
        };
        assert!(
            matches!(soa[0].data(), RData::SOA(s) if s.serial() == 7 && s.minimum() == DEFAULT_TTL)
        );
        assert!(matches!(
            zone.resolve(&lower("permanet.internal."), RecordType::NS),
            Answer::Records(ns) if ns.len() == 1
        ));
    }

    #[test]
    fn bad_and_duplicate_names_are_skipped() {
        let mut clash = entity(EntityKind::User, "ALICE", Some("fd00:1:2:1::b"));
        clash.dn = "uid=zz,ou=people,dc=example,dc=org".into();
        let mut same_address = entity(EntityKind::User, "carol", Some("fd00:1:2:1::a"));
        same_address.dn = "uid=zzz,ou=people,dc=example,dc=org".into();
        let entities = [
            entity(EntityKind::User, "alice", Some("fd00:1:2:1::a")),
            entity(EntityKind::Application, "alice", Some("fd00:1:2:2::a")),
            clash,
            same_address,
            entity(EntityKind::User, "under_score", Some("fd00:1:2:1::c")),
            entity(EntityKind::User, "-dash", Some("fd00:1:2:1::d")),
            entity(EntityKind::User, "a.b", Some("fd00:1:2:1::e")),
            entity(EntityKind::User, &"x".repeat(64), Some("fd00:1:2:1::f")),
        ];
        let (zone, report) = Zone::build(&config(), &entities, 1).unwrap();
        assert_eq!(report.published, 2);
        let reasons: Vec<&SkipReason> = report.skipped.iter().map(|s| &s.reason).collect();
        assert_eq!(
            reasons
                .iter()
                .filter(|r| ***r == SkipReason::InvalidLabel)
                .count(),
            4
        );
        assert!(reasons.contains(&&SkipReason::DuplicateName(
            "cn=alice,ou=User,dc=example,dc=org".into()
        )));
        assert!(reasons.contains(&&SkipReason::DuplicateAddress(
            "cn=alice,ou=User,dc=example,dc=org".into()
        )));
        assert!(matches!(
            zone.resolve(&lower("alice.apps.permanet.internal."), RecordType::AAAA),
            Answer::Records(_)
        ));
    }

    #[test]
    fn ten_thousand_entities() {
        let entities: Vec<Entity> = (0..10_000u32)
            .map(|i| {
                let address = format!("fd00:1:2:1::{:x}:{:x}", i >> 16, i & 0xffff);
                entity(EntityKind::User, &format!("user{i}"), Some(&address))
            })
            .collect();
        let started = std::time::Instant::now();
        let (zone, report) = Zone::build(&config(), &entities, 1).unwrap();
        let elapsed = started.elapsed();
        eprintln!("built 10,000 entities in {elapsed:?}");
        assert_eq!(report.published, 10_000);
        assert!(matches!(
            zone.resolve(&lower("user9999.users.permanet.internal."), RecordType::AAAA),
            Answer::Records(r) if r[0].data() == &RData::AAAA(AAAA("fd00:1:2:1::0:270f".parse().unwrap()))
        ));
        let ptr = reverse_name("fd00:1:2:1::0:270f".parse().unwrap(), 32);
        assert!(matches!(
            zone.resolve(&LowerName::new(&ptr), RecordType::PTR),
            Answer::Records(r) if r.len() == 1
        ));
    }
}
