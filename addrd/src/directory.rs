//! The directory: who exists, who they are, which groups they are in, and
//! where their permanent addresses are kept (DESIGN §2, §7).
//!
//! [`Directory`] is the one contract both backends implement:
//! - the **LDAP** backend (`ldap3`): service bind, escaped search, bind as
//!   the found DN, groups from `groupOfNames`/`member` and `memberOf`,
//!   addresses as attributes on the entries and reservation entries that
//!   make concurrent replicas safe;
//! - the **embedded** backend (the default): an LDIF file with the same
//!   entries and `{SSHA}`/`{ARGON2}` password hashes, addresses in a redb
//!   store next to it.
//!
//! Addresses are *reserved* before they are *recorded*. A reservation is a
//! create-if-absent write that never goes away — not when the entity is
//! deleted, not when its address is recorded — so it doubles as the
//! tombstone that keeps an address from ever being reused, and two
//! replicas racing for the same address cannot both win (in LDAP: adding
//! the reservation entry fails with `entryAlreadyExists` for the loser).
//! The allocator ([`crate::alloc`]) picks candidates, reserves, records.
//!
//! Errors are split by who can act on them: [`AuthError`] is what a login
//! may learn (never whether a user exists), [`DirectoryError`] is for the
//! operator's log.

use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr};

use overlay_proto::lease::EntityKind;
use zeroize::Zeroizing;

/// One user, application or system, as the directory describes it.
///
/// Both backends give the same `Entity` for the same entry (the shared
/// cases in `addrd/tests/directory_cases.rs` check it); the canonical forms
/// are:
/// - `name`, `system`: the `uid`/`cn`/`permanetSystem` value trimmed and
///   ASCII-lowercased ([`canonical_name`]); it must then be a lease name
///   and a DNS label — 1 to 63 of `a-z 0-9 - _`, not starting with `-` —
///   or the entry is skipped as malformed ([`DirectoryError::BadEntry`]).
///   When `cn` has several values, the name is the one the RDN uses. Names
///   are looked up and logged in without regard to case (`ALICE` is
///   alice), as LDAP's `caseIgnoreMatch` does; nothing else is folded
///   (`" alice"` is nobody).
/// - `groups`, `allowed_groups`: each group `cn` (or `permanetAllowedGroup`
///   value) trimmed and lowercased ([`canonical_group`]), sorted, without
///   duplicates: `Staff` on an application names the group `staff`, as it
///   does for the LDAP server. A group with an invalid name is skipped; an
///   application allowing one is malformed.
/// - `dn`: as the directory spells it (compare DNs with
///   [`crate::ldif::normalize_dn`]).
/// - Where: users are `inetOrgPerson` entries below `ou=people`,
///   applications below `ou=applications`, systems below `ou=systems`,
///   groups below `ou=groups` (the LDAP backend searches those subtrees of
///   its base; the embedded one skips such entries elsewhere, naming them),
///   so an `inetOrgPerson` service account under `ou=services` is no user.
///
/// One difference stays: the embedded directory skips a malformed entry
/// when it loads the file, so a lookup of it finds nothing, while the LDAP
/// backend reads entries live and a lookup of a malformed one is the
/// [`DirectoryError::BadEntry`] that names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entity {
    /// The entry's distinguished name, as the directory spells it.
    pub dn: String,
    /// Short name: the user's `uid`, the application's or system's `cn`,
    /// in canonical form ([`canonical_name`]). Unique per kind; it is the
    /// lease name and the DNS label.
    pub name: String,
    /// User, application or system.
    pub kind: EntityKind,
    /// The groups the entity is a member of, by group `cn` in canonical
    /// form ([`canonical_group`]), sorted.
    pub groups: Vec<String>,
    /// Disabled entries may not log in or renew.
    pub disabled: bool,
    /// The permanent address recorded on the entry, if assigned: a user's
    /// or application's /128, a system's system address (`::1` of its
    /// SVN).
    pub address: Option<Ipv6Addr>,
    /// Applications only: the groups (by `cn`, canonical, sorted) whose
    /// members may reach it.
    pub allowed_groups: Vec<String>,
    /// Applications only: the system (by `name`, canonical) whose SVN it
    /// lives in.
    pub system: Option<String>,
    /// Systems only: the public IPv4 address its SVN's 6to4 prefix is
    /// built from; `None` puts the SVN under the home prefix.
    pub public_ipv4: Option<Ipv4Addr>,
}

/// The canonical form of an entity name (`uid`, `cn`, `permanetSystem`):
/// trimmed, ASCII-lowercased, and valid as a lease name and a DNS label (1
/// to [`overlay_proto::lease::MAX_NAME_LEN`] of `a-z 0-9 - _`, not
/// starting with `-`).
/// `None` when it is not valid.
pub fn canonical_name(raw: &str) -> Option<String> {
    let name = raw.trim().to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= overlay_proto::lease::MAX_NAME_LEN
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_'));
    valid.then_some(name)
}

/// The canonical form of a group name (a group's `cn`, a
/// `permanetAllowedGroup` value): trimmed and lowercased (Unicode, like
/// LDAP's `caseIgnoreMatch`); valid in a lease (1 to
/// [`overlay_proto::lease::MAX_GROUP_LEN`] bytes, no `,`, no control
/// character). `None` when it is not valid.
pub fn canonical_group(raw: &str) -> Option<String> {
    let group = raw.trim().to_lowercase();
    let valid = !group.is_empty()
        && group.len() <= overlay_proto::lease::MAX_GROUP_LEN
        && !group.chars().any(|c| c == ',' || c.is_control());
    valid.then_some(group)
}

/// The password a login presents. Wiped when dropped; never logged.
pub type Password = Zeroizing<String>;

/// Why a login failed, as the client may learn it. An unknown user, a
/// wrong password, an empty password and a disabled account are all
/// [`AuthError::Refused`], so the answer never reveals which.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The credentials were not accepted.
    #[error("login refused")]
    Refused {
        /// Why, for the audit log only.
        reason: RefusalReason,
    },
    /// The directory could not be asked (down, timed out, misconfigured).
    #[error("directory unavailable: {0}")]
    Unavailable(#[source] DirectoryError),
}

/// Why a login was refused: for the audit log and counters, never for
/// the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusalReason {
    /// No user with that name (or the name is not a valid user name).
    UnknownUser,
    /// The bind (or hash check) failed.
    WrongPassword,
    /// The password was empty: refused before the directory is asked,
    /// because an empty-password simple bind is an anonymous bind.
    EmptyPassword,
    /// The account is disabled.
    Disabled,
}

impl RefusalReason {
    /// Stable snake_case label for counters and audit lines.
    pub const fn as_str(self) -> &'static str {
        match self {
            RefusalReason::UnknownUser => "unknown_user",
            RefusalReason::WrongPassword => "wrong_password",
            RefusalReason::EmptyPassword => "empty_password",
            RefusalReason::Disabled => "disabled",
        }
    }
}

/// A directory operation failed for a reason an operator must see.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// The server could not be reached or the connection broke.
    #[error("directory connection: {0}")]
    Connection(String),
    /// The server did not answer in time.
    #[error("directory timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The service account's bind failed.
    #[error("service bind refused: {0}")]
    ServiceBind(String),
    /// An entry is malformed (a missing or unreadable attribute): names
    /// the DN and what is wrong. The entry is skipped, never half-used.
    #[error("{dn}: {problem}")]
    BadEntry {
        /// The entry.
        dn: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The local store (embedded backend) failed.
    #[error("address store: {0}")]
    Store(String),
    /// Any other operation error the server returned.
    #[error("directory operation failed: {0}")]
    Operation(String),
}

/// Who holds a reserved address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reservation {
    /// The reservation was created now, for the DN asked.
    Created,
    /// The address was already reserved, by this DN (a previous attempt
    /// that crashed before recording it, or another replica for the same
    /// entity): it is this entity's.
    Ours,
    /// The address was already reserved by another (maybe deleted) DN.
    Taken {
        /// The DN that holds it.
        holder: String,
    },
}

/// The directory contract. See the module documentation.
///
/// Implementations are cheap to share (`Clone` behind an `Arc`, or
/// internally reference counted) and safe to call from many tasks.
pub trait Directory: Send + Sync {
    /// Check a user's password and return the user. Must refuse an empty
    /// password before contacting any server, escape the name in any
    /// filter, and take the same path for an unknown user as for a wrong
    /// password.
    fn authenticate(
        &self,
        user: &str,
        password: &Password,
    ) -> impl Future<Output = Result<Entity, AuthError>> + Send;

    /// The entity of `kind` named `name`, read fresh (renewal re-checks
    /// groups and the disabled flag here). `None` if it does not exist.
    fn lookup(
        &self,
        kind: EntityKind,
        name: &str,
    ) -> impl Future<Output = Result<Option<Entity>, DirectoryError>> + Send;

    /// Every user, application and system (for DNS, netmaps and
    /// `addrd users`). Malformed entries are skipped and logged.
    fn entities(&self) -> impl Future<Output = Result<Vec<Entity>, DirectoryError>> + Send;

    /// Reserve `address` for the entry `dn`, atomically and for ever.
    fn reserve_address(
        &self,
        address: Ipv6Addr,
        dn: &str,
    ) -> impl Future<Output = Result<Reservation, DirectoryError>> + Send;

    /// Record `address` (already reserved for it) on the entry `dn`, where
    /// administrators see it. Idempotent.
    fn record_address(
        &self,
        dn: &str,
        address: Ipv6Addr,
    ) -> impl Future<Output = Result<(), DirectoryError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names_are_lowercase_dns_labels() {
        assert_eq!(canonical_name("alice").as_deref(), Some("alice"));
        assert_eq!(canonical_name(" Erin ").as_deref(), Some("erin"));
        assert_eq!(canonical_name("WAP-News_2").as_deref(), Some("wap-news_2"));
        let longest = "a".repeat(overlay_proto::lease::MAX_NAME_LEN);
        assert_eq!(canonical_name(&longest), Some(longest.clone()));
        for bad in [
            "",
            " ",
            "-x",
            "frank smith",
            "web.site",
            "al\0ice",
            "*",
            "é",
        ] {
            assert_eq!(canonical_name(bad), None, "{bad:?}");
        }
        assert_eq!(canonical_name(&format!("{longest}a")), None);
    }

    #[test]
    fn canonical_groups_are_lowercase() {
        assert_eq!(canonical_group(" Staff ").as_deref(), Some("staff"));
        assert_eq!(canonical_group("Équipe Ops").as_deref(), Some("équipe ops"));
        for bad in ["", "  ", "a,b", "a\nb"] {
            assert_eq!(canonical_group(bad), None, "{bad:?}");
        }
        let long = "g".repeat(overlay_proto::lease::MAX_GROUP_LEN + 1);
        assert_eq!(canonical_group(&long), None);
    }
}
