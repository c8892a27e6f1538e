//! `wap-adapter`: the WAP (WSP/WTP) and HTTP front that serves an
//! application on its permanent overlay address (issue #5, DESIGN.md §12).
#![forbid(unsafe_code)]

pub mod wsp;
