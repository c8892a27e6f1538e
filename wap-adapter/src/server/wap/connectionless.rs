//! WSP connectionless (WAP-230-WSP §7.1.3, UDP 9200): each datagram is a TID
//! octet and a Get- or Post-class PDU; the answer is one Reply datagram with
//! the same TID, sent to the datagram's sender.
//!
//! There is no session, no capability negotiation and no segmentation:
//! the client's SDU is the application's `sdu-size` (WSP's default of 1400
//! unless configured), at most one UDP datagram, and a larger Reply becomes
//! a short 413 (see [the module above](super)). Datagrams that do not decode
//! are dropped and counted (`wap_malformed`): without a TID there is
//! nothing to answer. Other PDUs (a client never sends Reply or Push here)
//! are dropped and counted (`wap_unexpected_pdus`).

use std::net::SocketAddr;
use std::sync::Arc;

use http::StatusCode;
use tokio::net::UdpSocket;
use tracing::debug;

use super::{bump, refusal_reply, reply_pdu, Shared, WspRequest};
use crate::adapter::Origin;
use crate::wsp::pdu::{decode, Mode};

/// Answer one connectionless datagram `datagram` from `peer` (overlay
/// identity `origin`): the request runs as its own task, whose Reply goes
/// out on `socket`.
pub(super) async fn handle(
    shared: &Arc<Shared>,
    socket: &Arc<UdpSocket>,
    peer: SocketAddr,
    origin: Origin,
    datagram: &[u8],
) {
    let counters = &shared.counters;
    let decoded = match decode(datagram, Mode::Connectionless) {
        Ok(decoded) => decoded,
        Err(error) => {
            bump(&counters.malformed);
            debug!(application = %shared.adapter.name(), %peer, %error, "malformed connectionless WSP datagram");
            return;
        }
    };
    if !decoded.header_errors.is_empty() {
        counters.header_errors.fetch_add(
            decoded.header_errors.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
    let tid = decoded.tid;
    let Some(request) = WspRequest::of(decoded.pdu) else {
        bump(&counters.unexpected_pdus);
        return;
    };
    let limit = shared.settings.connectionless_limit();
    let Ok(sending) = Arc::clone(&shared.sending).try_acquire_owned() else {
        return;
    };
    let Ok(permit) = Arc::clone(&shared.in_flight).try_acquire_owned() else {
        bump(&counters.overloaded);
        send(
            socket,
            peer,
            &refusal_reply(StatusCode::SERVICE_UNAVAILABLE, tid),
        )
        .await;
        return;
    };
    let http = match request.to_http(&origin, limit, counters) {
        Ok(http) => http,
        Err(why) => {
            bump(&counters.bad_requests);
            debug!(application = %shared.adapter.name(), %peer, why, "WSP request refused");
            send(socket, peer, &refusal_reply(StatusCode::BAD_REQUEST, tid)).await;
            return;
        }
    };
    bump(&counters.requests);
    let shared = Arc::clone(shared);
    let socket = Arc::clone(socket);
    let head = request.is_head();
    tokio::spawn(async move {
        let response = shared.adapter.handle(http, origin).await;
        let reply = reply_pdu(response, head, tid, limit, &shared.counters);
        // Free before the client can see the answer and ask again.
        drop(permit);
        send(&socket, peer, &reply).await;
        drop(sending);
    });
}

/// Send `datagram` to `peer`; a failure is only logged (UDP).
async fn send(socket: &UdpSocket, peer: SocketAddr, datagram: &[u8]) {
    if let Err(error) = socket.send_to(datagram, peer).await {
        debug!(%peer, %error, "WAP send failed");
    }
}
