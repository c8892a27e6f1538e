//! WTP, the Wireless Transaction Protocol (WAP-224-WTP-20010710-a), server
//! side: the PDU codec ([`pdu`], §9), segmentation and reassembly
//! (`sar.rs`, §7.14) and the sans-IO responder state machine
//! ([`responder`], §8 and §10.2) that carries WSP's connection-mode
//! requests (UDP 9201). The driver owns the socket and the clock: it feeds
//! datagrams and time to [`Responder`] and sends what it polls out.

pub mod fuzzing;
pub mod pdu;
pub mod responder;
mod sar;

pub use pdu::{AbortReason, DecodeError, EncodeError, Pdu, ProviderAbortReason, TransactionClass};
pub use responder::{Responder, Transmit, TxId, WtpConfig, WtpCounters, WtpError, WtpEvent};
pub use sar::MAX_PACKETS;
