//! # overlay-proto — the permanet protocol core
//!
//! This crate is the sans-IO heart of permanet. It knows the address plan
//! (the overlay /48, 6to4 mapping, system virtual networks), the wire formats
//! (RFC 4303 ESP with ChaCha20-Poly1305 per RFC 7634 inside RFC 3948 UDP
//! framing, and the control messages behind the non-ESP marker), the Noise
//! `IK` handshake with its cookie defence, signed leases, the anti-replay
//! window, and the per-peer state machine that turns all of that into
//! security associations that rekey make-before-break. It owns no socket, no
//! TUN device, no thread and no clock: drivers (`tunneld`) feed it datagrams
//! and the current time, and poll it for datagrams to send and for the next
//! timeout. The data path works in caller-provided buffers and allocates
//! nothing per packet.
#![forbid(unsafe_code)]

pub mod addr;
pub mod aead;
pub mod authority;
pub mod cookie;
pub mod counters;
pub mod esp;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod handshake;
pub mod lease;
pub mod names;
pub mod node;
pub mod ratelimit;
pub mod replay;
pub mod session;
#[cfg(feature = "sim")]
pub mod sim;
pub mod time;
pub mod wire;
mod x25519;
