//! What tunneld's integration tests share. [`daemon`] runs the `tunneld`
//! binary as an operator would (a directory of key, leases and config; a
//! daemon process to wait on, query and signal); [`node`] builds the
//! client and server nodes the in-process data-plane and userspace tests
//! drive. A test binary includes this module with `#[allow(dead_code)]`:
//! each uses only part of it.

pub mod addrd;
pub mod daemon;
pub mod node;
