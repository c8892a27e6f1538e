//! End-to-end tests in Linux network namespaces (real daemons, TUN devices,
//! LDAP, NAT). The tests arrive with the daemons (issue #6); this crate is a
//! placeholder so the workspace layout is final.
