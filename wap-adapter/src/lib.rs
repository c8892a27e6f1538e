//! wap-adapter: WAP (WSP/WTP) and HTTP front for applications on their
//! permanent overlay addresses, with HTML <-> WML conversion and WBXML.
#![forbid(unsafe_code)]

pub mod wbxml;
