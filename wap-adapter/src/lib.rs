//! wap-adapter: the HTTP and WAP (WSP/WTP) front of permanet applications,
//! on their permanent overlay addresses, with HTML↔WML conversion and
//! WBXML (DESIGN §12, `docs/architecture.md`).
//!
//! Requests arrive over HTTP/1.1 (and WSP/WTP) on each application's
//! address, directly (TUN mode) or through tunneld's userspace mode with a
//! PROXY v2 header. Their overlay source is resolved to the user's verified
//! lease ([`identity`]); the [`adapter`] enforces the application's groups,
//! sets the identity headers clients can never inject and hands the request
//! to the backend (reverse proxy or CGI). [`config`] is the TOML file;
//! [`server`] holds the listeners. The protocol layers are sans-IO library
//! modules: [`wtp`] (WAP-224), [`wsp`] (WAP-230), [`wbxml`] (WAP-192, WML
//! tokens of WAP-191) and [`convert`] (HTML → WML decks split into cards by
//! compiled size, WML → HTML).

#![forbid(unsafe_code)]

pub mod adapter;
pub mod config;
pub mod convert;
pub mod identity;
pub mod server;
pub mod wbxml;
pub mod wsp;
pub mod wtp;
