//! Anti-replay window for ESP with 64-bit extended sequence numbers.
//!
//! The receiver remembers the highest authenticated sequence number (the
//! *top*) and one bit per sequence number in a window below it (RFC 4303
//! §3.4.3). The bits live in a ring of 64-bit blocks (RFC 6479): sliding the
//! window forward clears whole blocks instead of shifting the bitmap, so
//! moving it costs at most one pass over the ring, however far the peer
//! jumps. Only the low 32 bits of a sequence number travel on the wire; the
//! high half is inferred from the window position (RFC 4303 Appendix A).
//!
//! The check is split in two because ESP verifies the window twice: once
//! before authentication, to drop replays cheaply without touching the
//! cipher ([`ReplayWindow::check`], no mutation), and once after, to record
//! the packet ([`ReplayWindow::update`]), so forged packets never move the
//! window.
#![deny(clippy::indexing_slicing)]

/// Bits per bitmap block.
const BLOCK_BITS: u64 = u64::BITS as u64;
/// Blocks in the ring; a power of two so block indices reduce with a mask.
const BLOCKS: usize = 64;
/// How far below the top a sequence number may be and still be accepted
/// (if not already seen): one block less than the 4096-bit bitmap, because
/// the block holding the top is only partly in use (RFC 6479 §2). A packet
/// with `top - seq <= REPLAY_WINDOW` is inside the window.
pub const REPLAY_WINDOW: u64 = (BLOCKS as u64 - 1) * BLOCK_BITS;
const _: () = assert!(
    REPLAY_WINDOW >= 2048,
    "the design requires a window of at least 2048"
);
const _: () = assert!(BLOCKS.is_power_of_two());

/// Why a sequence number was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// This sequence number was already received.
    #[error("duplicate sequence number")]
    Duplicate,
    /// The sequence number is below the window; it can no longer be told
    /// apart from a replay.
    #[error("sequence number below the replay window")]
    TooOld,
    /// Sequence number 0 is never sent (RFC 4303 §3.3.3: the first packet
    /// carries 1).
    #[error("sequence number zero")]
    Zero,
}

impl ReplayError {
    /// A stable snake_case label for drop counters.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Duplicate => "duplicate",
            Self::TooOld => "too_old",
            Self::Zero => "zero",
        }
    }
}

/// The receive-side replay state of one inbound security association.
#[derive(Clone, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Highest sequence number recorded so far; 0 before the first packet.
    top: u64,
    /// Ring of blocks; bit `seq % 64` of block `(seq / 64) % BLOCKS` stands
    /// for `seq` while it is inside the window.
    bitmap: [u64; BLOCKS],
}

impl ReplayWindow {
    /// An empty window: nothing received yet.
    pub const fn new() -> Self {
        Self {
            top: 0,
            bitmap: [0; BLOCKS],
        }
    }

    /// The highest sequence number recorded so far (0 if none).
    pub fn top(&self) -> u64 {
        self.top
    }

    /// Reconstructs the full 64-bit sequence number from the 32 low bits on
    /// the wire (RFC 4303 Appendix A.2.2).
    ///
    /// The result is the one number with those low bits in the 2^32-wide
    /// range that starts at the bottom of the window, so packets just below
    /// the top and packets up to 2^32 - [`REPLAY_WINDOW`] - 1 ahead of it
    /// both map correctly across a 2^32 boundary. (A result past 2^64 - 1,
    /// which no sender can produce, wraps to a small number that
    /// [`check`](Self::check) then refuses as too old.)
    pub fn infer_seq(&self, seq_low: u32) -> u64 {
        let bottom = self.top.saturating_sub(REPLAY_WINDOW);
        // Truncation intended: distance from the bottom's low half, mod 2^32.
        let ahead_of_bottom = seq_low.wrapping_sub(bottom as u32);
        bottom.wrapping_add(u64::from(ahead_of_bottom))
    }

    /// Whether `seq` would be accepted, without recording it. Call before
    /// authenticating the packet.
    pub fn check(&self, seq: u64) -> Result<(), ReplayError> {
        if seq == 0 {
            return Err(ReplayError::Zero);
        }
        if seq > self.top {
            return Ok(());
        }
        if self.top - seq > REPLAY_WINDOW {
            return Err(ReplayError::TooOld);
        }
        let (block, bit) = Self::slot(seq);
        match self.bitmap.get(block) {
            Some(bits) if bits & bit == 0 => Ok(()),
            // `slot` always returns an index below BLOCKS; fail closed anyway.
            _ => Err(ReplayError::Duplicate),
        }
    }

    /// Checks `seq` again and records it, sliding the window forward if
    /// `seq` is above the top. Call only after the packet authenticated.
    pub fn update(&mut self, seq: u64) -> Result<(), ReplayError> {
        self.check(seq)?;
        if seq > self.top {
            let current = self.top / BLOCK_BITS;
            let target = seq / BLOCK_BITS;
            if target - current >= BLOCKS as u64 {
                self.bitmap = [0; BLOCKS];
            } else {
                // Blocks current+1 ..= target are reused for the new range.
                for block in current + 1..=target {
                    if let Some(bits) = self.bitmap.get_mut(Self::block_index(block)) {
                        *bits = 0;
                    }
                }
            }
            self.top = seq;
        }
        let (block, bit) = Self::slot(seq);
        match self.bitmap.get_mut(block) {
            Some(bits) => {
                *bits |= bit;
                Ok(())
            }
            None => Err(ReplayError::Duplicate),
        }
    }

    /// Ring index and bit mask of `seq`.
    #[inline]
    fn slot(seq: u64) -> (usize, u64) {
        (Self::block_index(seq / BLOCK_BITS), 1 << (seq % BLOCK_BITS))
    }

    #[inline]
    fn block_index(block: u64) -> usize {
        // Truncation intended: BLOCKS is a power of two below 2^32.
        (block as usize) & (BLOCKS - 1)
    }
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("top", &self.top)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::collections::HashSet;

    fn window_with(seqs: &[u64]) -> ReplayWindow {
        let mut w = ReplayWindow::new();
        for &s in seqs {
            w.update(s).unwrap();
        }
        w
    }

    #[test]
    fn window_is_large_enough() {
        assert_eq!(REPLAY_WINDOW, 4032);
    }

    #[test]
    fn in_order_and_duplicates() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.top(), 0);
        for seq in 1..=10_000u64 {
            assert_eq!(w.check(seq), Ok(()));
            w.update(seq).unwrap();
            assert_eq!(w.top(), seq);
            assert_eq!(w.check(seq), Err(ReplayError::Duplicate));
            assert_eq!(w.update(seq), Err(ReplayError::Duplicate));
        }
        for seq in 10_000 - REPLAY_WINDOW..=10_000 {
            assert_eq!(w.check(seq), Err(ReplayError::Duplicate), "{seq}");
        }
        assert_eq!(
            w.check(10_000 - REPLAY_WINDOW - 1),
            Err(ReplayError::TooOld)
        );
    }

    #[test]
    fn zero_is_never_valid() {
        let w = ReplayWindow::new();
        assert_eq!(w.check(0), Err(ReplayError::Zero));
        let mut w = window_with(&[5]);
        assert_eq!(w.update(0), Err(ReplayError::Zero));
        assert_eq!(ReplayError::Zero.as_str(), "zero");
    }

    #[test]
    fn window_edge() {
        // Table: (top, seq, expected) with seq at and around the edge.
        let top = 100_000u64;
        let w = window_with(&[top]);
        let cases = [
            (top - REPLAY_WINDOW, Ok(())),
            (top - REPLAY_WINDOW + 1, Ok(())),
            (top - REPLAY_WINDOW - 1, Err(ReplayError::TooOld)),
            (top - REPLAY_WINDOW - 64, Err(ReplayError::TooOld)),
            (1, Err(ReplayError::TooOld)),
            (top - 1, Ok(())),
            (top, Err(ReplayError::Duplicate)),
            (top + 1, Ok(())),
        ];
        for (seq, expected) in cases {
            assert_eq!(w.check(seq), expected, "seq {seq}");
        }
        // The edge works for every alignment of the top within its block.
        for top in 5000..5000 + 2 * BLOCK_BITS {
            let mut w = window_with(&[top]);
            assert_eq!(w.check(top - REPLAY_WINDOW - 1), Err(ReplayError::TooOld));
            w.update(top - REPLAY_WINDOW).unwrap();
            assert_eq!(w.check(top - REPLAY_WINDOW), Err(ReplayError::Duplicate));
        }
    }

    #[test]
    fn far_jumps_clear_the_bitmap() {
        for jump in [
            1,
            63,
            64,
            65,
            REPLAY_WINDOW,
            REPLAY_WINDOW + 1,
            4096,
            4097,
            1 << 20,
            1 << 40,
        ] {
            // Fill the whole window, then jump.
            let mut w = ReplayWindow::new();
            for seq in 1..=5000 {
                w.update(seq).unwrap();
            }
            let top = 5000 + jump;
            w.update(top).unwrap();
            // Every number in the new window that was never received is
            // fresh; the old ones still in range stay duplicates.
            for seq in top.saturating_sub(REPLAY_WINDOW).max(1)..top {
                let expected = if seq <= 5000 {
                    Err(ReplayError::Duplicate)
                } else {
                    Ok(())
                };
                assert_eq!(w.check(seq), expected, "jump {jump} seq {seq}");
            }
        }
    }

    /// Random traffic against a model that keeps every accepted number.
    #[test]
    fn random_reordering_matches_model() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x6479);
        let mut w = ReplayWindow::new();
        let mut seen = HashSet::new();
        let mut model_top = 0u64;
        let mut front = 1u64;
        for i in 0..100_000 {
            let seq = match rng.gen_range(0..100) {
                // Occasional far jump.
                0 => front + rng.gen_range(0..3 * REPLAY_WINDOW),
                // Mostly: near the front, reordered by up to 1.2 windows.
                _ => front.saturating_sub(rng.gen_range(0..REPLAY_WINDOW + REPLAY_WINDOW / 5)),
            };
            front = front.max(seq) + u64::from(rng.gen_range(0..3u8));
            let expected = if seq == 0 {
                Err(ReplayError::Zero)
            } else if seq <= model_top && model_top - seq > REPLAY_WINDOW {
                Err(ReplayError::TooOld)
            } else if seen.contains(&seq) {
                Err(ReplayError::Duplicate)
            } else {
                Ok(())
            };
            assert_eq!(w.check(seq), expected, "step {i} seq {seq} top {model_top}");
            // Authenticate only some of the accepted packets; the rest are
            // "forgeries" that must not change the window.
            if rng.gen_bool(0.9) {
                assert_eq!(w.update(seq), expected, "step {i} seq {seq}");
                if expected.is_ok() {
                    seen.insert(seq);
                    model_top = model_top.max(seq);
                }
            }
            assert_eq!(w.top(), model_top);
        }
    }

    #[test]
    fn infer_seq_near_start() {
        let w = ReplayWindow::new();
        assert_eq!(w.infer_seq(1), 1);
        assert_eq!(w.infer_seq(0xffff_ffff), 0xffff_ffff);
        let w = window_with(&[10]);
        assert_eq!(w.infer_seq(3), 3);
        assert_eq!(w.infer_seq(5000), 5000);
    }

    #[test]
    fn infer_seq_table() {
        // (top, seq_low, inferred)
        let cases: [(u64, u32, u64); 10] = [
            // Window within one 2^32 subspace (RFC 4303 A.2.2 case A).
            (0x1_0000_8000, 0x8001, 0x1_0000_8001),
            (0x1_0000_8000, 0x8000 - 4032, 0x1_0000_8000 - 4032),
            (0x1_0000_8000, 0x8000 - 4033, 0x2_0000_8000 - 4033),
            // Window spanning the boundary (case B).
            (0x2_0000_0010, 0xffff_fff0, 0x1_ffff_fff0),
            (0x2_0000_0010, 0x0000_0020, 0x2_0000_0020),
            // Top just below the boundary, packet just above it.
            ((1 << 32) - 5, 3, (1 << 32) + 3),
            // Top just above the boundary, late packet just below it.
            ((1 << 32) + 3, 0xffff_fffe, (1 << 32) - 2),
            // Exactly at the window's bottom.
            ((1 << 32) + 3, 0xffff_f043, (1 << 32) - 4029),
            // One below the bottom maps to the next subspace (ahead).
            ((1 << 32) + 3, 0xffff_f042, (2 << 32) - 4030),
            // At the very end of the number space the window still works.
            (u64::MAX - 1, 0xffff_ffff, u64::MAX),
        ];
        for (top, low, inferred) in cases {
            let w = window_with(&[top]);
            assert_eq!(w.infer_seq(low), inferred, "top {top:#x} low {low:#x}");
        }
        // Past 2^64 - 1 wraps to a number the window refuses.
        let w = window_with(&[u64::MAX - 10]);
        let seq = w.infer_seq(5);
        assert_eq!(w.check(seq), Err(ReplayError::TooOld));
    }

    #[test]
    fn esn_boundary_both_ways() {
        let mut w = window_with(&[(1 << 32) - 5]);
        let seq = w.infer_seq(3);
        assert_eq!(seq, (1 << 32) + 3);
        w.update(seq).unwrap();
        assert_eq!(w.top(), (1 << 32) + 3);

        let late = w.infer_seq(0xffff_fffe);
        assert_eq!(late, (1 << 32) - 2);
        assert_eq!(w.check(late), Ok(()));
        w.update(late).unwrap();
        assert_eq!(
            w.update(w.infer_seq(0xffff_fffe)),
            Err(ReplayError::Duplicate)
        );
        // The old top is still remembered.
        assert_eq!(
            w.check(w.infer_seq(0xffff_fffb)),
            Err(ReplayError::Duplicate)
        );
    }

    #[test]
    fn debug_is_short() {
        let w = window_with(&[42]);
        assert_eq!(format!("{w:?}"), "ReplayWindow { top: 42, .. }");
    }
}
