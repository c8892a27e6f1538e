//! Segmentation and reassembly (WAP-224-WTP §7.14): a message of up to 256
//! packets (packet sequence numbers 0-255), sent in segment groups; the last
//! packet of each group carries GTR (the last of the message TTR), the
//! receiver acknowledges each complete group with an Ack carrying a PSN TPI
//! (the group's last packet) and asks for missing packets with a Negative
//! Ack. [`Outgoing`] splits a result into packets and groups and tracks the
//! group in flight; [`Reassembly`] collects a segmented invoke, in any
//! order, within memory bounds.

#![deny(clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};

use super::pdu::{Pdu, ResultPdu, Segment};

/// The most packets one message can have (the PSN is one octet).
pub const MAX_PACKETS: usize = 256;

/// A result being sent: its packets, its groups, the group in flight.
#[derive(Debug)]
pub(crate) struct Outgoing {
    packets: Vec<Vec<u8>>,
    /// Inclusive packet ranges, one per group.
    groups: Vec<(u8, u8)>,
    current: usize,
}

/// What an Ack did to an [`Outgoing`] result.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AckOutcome {
    /// It acknowledged an earlier group or an unknown packet: ignored.
    Stale,
    /// The group in flight is acknowledged; the next one is now in flight.
    NextGroup,
    /// The last group is acknowledged: the result has arrived.
    Done,
}

impl Outgoing {
    /// Split `data` into packets of `segment_size` octets, `group_packets` per group.
    /// `None` if that takes more than [`MAX_PACKETS`] packets.
    pub(crate) fn new(data: Vec<u8>, segment_size: usize, group_packets: usize) -> Option<Self> {
        let segment_size = segment_size.max(1);
        let group_packets = group_packets.max(1);
        let packets: Vec<Vec<u8>> = if data.is_empty() {
            vec![Vec::new()]
        } else {
            data.chunks(segment_size).map(<[u8]>::to_vec).collect()
        };
        if packets.len() > MAX_PACKETS {
            return None;
        }
        let last = packets.len() - 1;
        let groups = (0..=last)
            .step_by(group_packets)
            .map(|start| (start as u8, (start + group_packets - 1).min(last) as u8))
            .collect();
        Some(Self {
            packets,
            groups,
            current: 0,
        })
    }

    fn last_psn(&self) -> u8 {
        (self.packets.len() - 1) as u8
    }

    /// The group in flight, as an inclusive packet range.
    pub(crate) fn current_group(&self) -> Option<(u8, u8)> {
        self.groups.get(self.current).copied()
    }

    /// Packet `psn` as a PDU: a Result for packet 0, a Segmented Result after.
    pub(crate) fn packet(&self, tid: u16, psn: u8, rid: bool) -> Option<Pdu> {
        let data = self.packets.get(usize::from(psn))?.clone();
        let single = self.packets.len() == 1;
        let ttr = psn == self.last_psn();
        // An unsegmented Result carries both trailers, as kannel sends it.
        let gtr = single || (!ttr && self.groups.iter().any(|(_, end)| *end == psn));
        Some(if psn == 0 {
            Pdu::Result(ResultPdu {
                tid,
                gtr,
                ttr,
                rid,
                tpis: Vec::new(),
                user_data: data,
            })
        } else {
            Pdu::SegmentedResult(Segment {
                tid,
                gtr,
                ttr,
                rid,
                psn,
                tpis: Vec::new(),
                user_data: data,
            })
        })
    }

    /// An Ack arrived, with the PSN TPI it carried (if any). An Ack without
    /// a PSN acknowledges the group in flight (clients send a plain Ack
    /// when the packet that completed the group was packet 0).
    pub(crate) fn ack(&mut self, psn: Option<u8>) -> AckOutcome {
        let Some((_, end)) = self.current_group() else {
            return AckOutcome::Stale;
        };
        if psn.is_some_and(|p| p != end) {
            return AckOutcome::Stale;
        }
        self.current += 1;
        if self.current >= self.groups.len() {
            AckOutcome::Done
        } else {
            AckOutcome::NextGroup
        }
    }
}

/// Why a segmented invoke was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// More octets than the configured maximum message size.
    TooLarge,
    /// More segment groups than the configured maximum.
    TooManyGroups,
    /// A second, different transmission trailer, or a packet past it.
    Inconsistent,
}

/// A segmented invoke being received.
#[derive(Debug, Default)]
pub(crate) struct Reassembly {
    packets: BTreeMap<u8, Vec<u8>>,
    /// Packets that carried GTR.
    trailers: BTreeSet<u8>,
    /// The packet that carried TTR.
    ttr: Option<u8>,
    /// Group trailers already acknowledged.
    acked: BTreeSet<u8>,
    bytes: usize,
}

impl Reassembly {
    /// Add packet `psn`; `Ok(false)` if it was a duplicate.
    pub(crate) fn insert(
        &mut self,
        psn: u8,
        gtr: bool,
        ttr: bool,
        data: &[u8],
        max_bytes: usize,
        max_groups: usize,
    ) -> Result<bool, Refusal> {
        if self.packets.contains_key(&psn) {
            return Ok(false);
        }
        if ttr && self.ttr.is_some_and(|t| t != psn) {
            return Err(Refusal::Inconsistent);
        }
        if self.ttr.is_some_and(|t| psn > t) || (ttr && self.packets.keys().any(|p| *p > psn)) {
            return Err(Refusal::Inconsistent);
        }
        if self.bytes + data.len() > max_bytes {
            return Err(Refusal::TooLarge);
        }
        if gtr && !ttr && self.trailers.len() + 1 >= max_groups {
            return Err(Refusal::TooManyGroups);
        }
        self.bytes += data.len();
        self.packets.insert(psn, data.to_vec());
        if ttr {
            self.ttr = Some(psn);
        } else if gtr {
            self.trailers.insert(psn);
        }
        Ok(true)
    }

    /// Whether `psn` is a group trailer (GTR) that was already acknowledged.
    pub(crate) fn is_acked_trailer(&self, psn: u8) -> bool {
        self.acked.contains(&psn)
    }

    /// The packet that carried TTR, once it has arrived.
    pub(crate) fn last_psn(&self) -> Option<u8> {
        self.ttr
    }

    /// Whether every packet of the message, through TTR, has arrived.
    pub(crate) fn is_complete(&self) -> bool {
        self.ttr
            .is_some_and(|t| (0..=t).all(|p| self.packets.contains_key(&p)))
    }

    fn group_start(&self, trailer: u8) -> u8 {
        self.trailers
            .range(..trailer)
            .next_back()
            .map_or(0, |t| t.saturating_add(1))
    }

    /// Group trailers (GTR, not TTR) whose groups are complete and not yet
    /// acknowledged; they are marked acknowledged.
    pub(crate) fn take_complete_groups(&mut self) -> Vec<u8> {
        let ready: Vec<u8> = self
            .trailers
            .iter()
            .copied()
            .filter(|t| !self.acked.contains(t))
            .filter(|t| (self.group_start(*t)..=*t).all(|p| self.packets.contains_key(&p)))
            .collect();
        self.acked.extend(ready.iter().copied());
        ready
    }

    /// Missing packets of the groups whose trailer has arrived.
    pub(crate) fn missing(&self) -> Vec<u8> {
        let mut missing = Vec::new();
        let ends = self.trailers.iter().copied().chain(self.ttr);
        for end in ends {
            let start = self.group_start(end);
            missing.extend((start..=end).filter(|p| !self.packets.contains_key(p)));
        }
        missing.sort_unstable();
        missing.dedup();
        missing
    }

    /// The message, in packet order.
    pub(crate) fn into_message(self) -> Vec<u8> {
        self.packets.into_values().flatten().collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn outgoing_groups_and_flags() {
        let out = Outgoing::new(vec![1; 10], 3, 2).unwrap();
        // 4 packets: [0,1] [2,3]
        assert_eq!(out.groups, vec![(0, 1), (2, 3)]);
        let flags = |psn| match out.packet(0x8001, psn, false).unwrap() {
            Pdu::Result(r) => (r.gtr, r.ttr),
            Pdu::SegmentedResult(s) => (s.gtr, s.ttr),
            _ => panic!(),
        };
        assert_eq!(
            (flags(0), flags(1), flags(2), flags(3)),
            ((false, false), (true, false), (false, false), (false, true))
        );
        let single = Outgoing::new(vec![1; 3], 3, 2).unwrap();
        assert_eq!(single.groups, vec![(0, 0)]);
        assert!(matches!(single.packet(1, 0, false), Some(Pdu::Result(r)) if r.gtr && r.ttr));
        assert!(Outgoing::new(vec![0; 257], 1, 4).is_none());
        assert!(Outgoing::new(vec![0; 256], 1, 4).is_some());
    }

    #[test]
    fn outgoing_acks() {
        let mut out = Outgoing::new(vec![1; 10], 3, 2).unwrap();
        assert_eq!(out.ack(Some(3)), AckOutcome::Stale);
        assert_eq!(out.ack(Some(1)), AckOutcome::NextGroup);
        assert_eq!(out.ack(Some(1)), AckOutcome::Stale);
        assert_eq!(out.ack(None), AckOutcome::Done);
    }

    #[test]
    fn reassembly_out_of_order_with_gap() {
        let mut r = Reassembly::default();
        assert_eq!(r.insert(0, false, false, b"a", 100, 10), Ok(true));
        assert_eq!(r.insert(2, true, false, b"c", 100, 10), Ok(true));
        assert_eq!(r.missing(), vec![1]);
        assert!(r.take_complete_groups().is_empty());
        assert_eq!(r.insert(1, false, false, b"b", 100, 10), Ok(true));
        assert_eq!(r.take_complete_groups(), vec![2]);
        assert!(r.is_acked_trailer(2));
        assert_eq!(r.insert(2, true, false, b"c", 100, 10), Ok(false));
        assert_eq!(r.insert(4, false, true, b"e", 100, 10), Ok(true));
        assert_eq!(r.missing(), vec![3]);
        assert!(!r.is_complete());
        assert_eq!(r.insert(3, false, false, b"d", 100, 10), Ok(true));
        assert!(r.is_complete());
        assert_eq!(r.into_message(), b"abcde");
    }

    #[test]
    fn reassembly_limits() {
        let mut r = Reassembly::default();
        assert_eq!(r.insert(0, false, false, &[0; 5], 8, 10), Ok(true));
        assert_eq!(
            r.insert(1, false, false, &[0; 5], 8, 10),
            Err(Refusal::TooLarge)
        );
        let mut r = Reassembly::default();
        assert_eq!(r.insert(0, true, false, b"", 8, 2), Ok(true));
        assert_eq!(
            r.insert(1, true, false, b"", 8, 2),
            Err(Refusal::TooManyGroups)
        );
        let mut r = Reassembly::default();
        assert_eq!(r.insert(2, false, true, b"", 8, 2), Ok(true));
        assert_eq!(
            r.insert(3, false, false, b"", 8, 2),
            Err(Refusal::Inconsistent)
        );
        assert_eq!(
            r.insert(1, false, true, b"", 8, 2),
            Err(Refusal::Inconsistent)
        );
    }
}
