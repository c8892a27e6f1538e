//! wap-adapter: the WAP (WSP/WTP) and HTTP front of permanet applications.
//!
//! It serves each application on its permanent overlay address, to WAP
//! terminals and to browsers alike, adapting content on the way (HTML to WML
//! for WAP clients, WML to WBXML when they accept it, WML to HTML for
//! browsers). Everything runs on the application server, inside the overlay's
//! end-to-end encryption (DESIGN.md §12).
#![forbid(unsafe_code)]

pub mod convert;
