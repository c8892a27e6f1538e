//! wap-adapter: the WAP (WSP/WTP) and HTTP front of an application on its
//! permanent overlay address, with HTML↔WML conversion and WBXML (see
//! `docs/architecture.md` and DESIGN §12). Each protocol layer is a sans-IO
//! library module; the binary wires them to sockets.

#![forbid(unsafe_code)]

pub mod convert;
pub mod wbxml;
pub mod wsp;
pub mod wtp;
