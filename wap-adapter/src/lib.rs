//! wap-adapter: the HTTP and WAP front of permanet applications, on their
//! permanent overlay addresses (DESIGN §12).
//!
//! Requests arrive over HTTP/1.1 (and WSP/WTP) on each application's
//! address, directly (TUN mode) or through tunneld's userspace mode with a
//! PROXY v2 header. Their overlay source is resolved to the user's verified
//! lease ([`identity`]); the [`adapter`] enforces the application's groups,
//! sets the identity headers clients can never inject and hands the request
//! to the backend (reverse proxy or CGI). [`config`] is the TOML file;
//! [`server`] holds the listeners.

#![forbid(unsafe_code)]

pub mod adapter;
pub mod config;
pub mod identity;
pub mod server;
