//! # addrd — the permanet address authority
//!
//! `addrd` authenticates users against a directory (LDAP, or the embedded
//! LDIF directory), assigns every user, application and system a permanent
//! IPv6 address that never changes and is never reused, signs the short
//! leases that bind an entity's key to its address and groups, keeps the
//! binding cache of where each permanent address is now (the home agent),
//! and serves the overlay's DNS zone. See DESIGN §2–§3, §6–§7, §9.
//!
//! Layers: [`directory`] is the contract between the daemon and its
//! directory backends: [`ldap`] over a real LDAP server, [`embedded`] over
//! an LDIF file ([`ldif`], [`password`]) with addresses in a redb store
//! ([`store`]). [`alloc`] assigns permanent addresses through either;
//! [`dns`] serves the overlay zone; [`bindings`] is the home agent's
//! binding cache. Logins pass the [`guard`] (delays, lockouts, concurrency
//! per user and source) and every login, renewal, refusal and revocation
//! is written to the [`audit`] log.
//!
//! The daemon: [`config`] reads `addrd.toml`, [`keys`] the key files,
//! [`backend`] opens the configured directory, [`issuer`] signs leases
//! (serials, lifetimes, the lease book, netmaps), [`state`] keeps
//! sessions, revocations and the lease book, [`revocations`] keeps
//! `addrd revoke` where every replica sees it, [`service`] is what a login,
//! a renewal or an administrator asks, [`channel`] serves logins,
//! renewals and netmaps on the UDP login channel, [`control`] is the
//! running daemon's Unix control socket.
#![forbid(unsafe_code)]

pub mod alloc;
pub mod audit;
pub mod backend;
pub mod bindings;
pub mod channel;
pub mod config;
pub mod control;
pub mod directory;
pub mod dns;
pub mod embedded;
pub mod guard;
pub mod homeagent;
pub mod issuer;
pub mod keys;
pub mod ldap;
pub mod ldif;
pub mod password;
pub mod revocations;
pub mod service;
pub mod state;
pub mod store;
