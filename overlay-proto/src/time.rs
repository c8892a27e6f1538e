//! Time as the protocol core sees it: always passed in, never read.
//!
//! The core never calls a clock. Drivers pass a [`Now`] into every
//! control-plane entry point: a monotonic [`Instant`] for timers and ages,
//! and a wall-clock [`UnixTime`] for lease validity and the TAI64N
//! timestamps that order handshake initiations. The data path only needs the
//! `Instant`.

use std::time::{Duration, Instant};

/// Seconds and nanoseconds since the Unix epoch, as told by the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UnixTime(Duration);

impl UnixTime {
    /// The Unix epoch.
    pub const EPOCH: UnixTime = UnixTime(Duration::ZERO);

    /// A time `since_epoch` after 1970-01-01T00:00:00Z.
    pub const fn from_duration(since_epoch: Duration) -> Self {
        UnixTime(since_epoch)
    }

    /// A whole number of seconds after the epoch.
    pub const fn from_secs(secs: u64) -> Self {
        UnixTime(Duration::from_secs(secs))
    }

    /// Time since the epoch.
    pub const fn as_duration(self) -> Duration {
        self.0
    }

    /// Whole seconds since the epoch.
    pub const fn as_secs(self) -> u64 {
        self.0.as_secs()
    }

    /// This time moved forward by `d`, saturating at the far future.
    pub fn saturating_add(self, d: Duration) -> Self {
        UnixTime(self.0.saturating_add(d))
    }

    /// The TAI64N label of this time (RFC-less but widely used format of
    /// D. J. Bernstein's libtai: 8-byte big-endian `2^62 + 10 + seconds`,
    /// then 4-byte big-endian nanoseconds). The constant 10 is the TAI−UTC
    /// offset at the TAI64 epoch, as WireGuard uses it; what matters here is
    /// only that labels are strictly ordered in time.
    pub fn tai64n(self) -> Tai64N {
        let secs = (1u64 << 62)
            .saturating_add(10)
            .saturating_add(self.0.as_secs());
        let mut out = [0u8; 12];
        let (s, n) = out.split_at_mut(8);
        s.copy_from_slice(&secs.to_be_bytes());
        n.copy_from_slice(&self.0.subsec_nanos().to_be_bytes());
        Tai64N(out)
    }
}

/// A 12-byte TAI64N timestamp. Byte-wise comparison is chronological order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Tai64N(pub [u8; 12]);

impl Tai64N {
    /// Encoded length in bytes.
    pub const LEN: usize = 12;

    /// The timestamp as bytes.
    pub const fn as_bytes(&self) -> &[u8; 12] {
        &self.0
    }
}

/// The two clocks a control-plane call needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time, for timers, ages and rate limits.
    pub instant: Instant,
    /// Wall-clock time, for lease validity and handshake timestamps.
    pub unix: UnixTime,
}

impl Now {
    /// Both clocks moved forward by `d` (used by simulations).
    pub fn advanced(self, d: Duration) -> Self {
        Now {
            instant: self.instant + d,
            unix: self.unix.saturating_add(d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tai64n_is_ordered_and_encodes_the_epoch_offset() {
        let a = UnixTime::from_duration(Duration::new(1_700_000_000, 999_999_999)).tai64n();
        let b = UnixTime::from_duration(Duration::new(1_700_000_001, 0)).tai64n();
        assert!(a < b);
        let epoch = UnixTime::EPOCH.tai64n();
        assert_eq!(epoch.0, [0x40, 0, 0, 0, 0, 0, 0, 0x0a, 0, 0, 0, 0]);
    }

    #[test]
    fn advancing_moves_both_clocks() {
        let now = Now {
            instant: Instant::now(),
            unix: UnixTime::from_secs(100),
        };
        let later = now.advanced(Duration::from_millis(1500));
        assert_eq!(later.instant - now.instant, Duration::from_millis(1500));
        assert_eq!(later.unix.as_duration(), Duration::from_millis(101_500));
    }
}
