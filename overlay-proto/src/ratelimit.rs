//! Handshake admission control: who may make the responder work, and when
//! the responder is too busy to do DH work at all.
//!
//! Two independent checks guard the handshake responder. [`RateLimiter`] is
//! a token bucket per source (an IPv4 address, or the /64 of an IPv6 source,
//! since one host commonly owns a whole /64); an initiation from a source
//! whose bucket is empty is dropped before any cryptography. Its table has a
//! fixed maximum size: a flood of spoofed sources recycles buckets that have
//! refilled, and otherwise new sources are refused rather than let memory
//! grow. [`LoadMonitor`] counts all initiations in one-second windows; while
//! the count is above a threshold the responder answers with stateless
//! cookie replies instead of doing DH, so a flood cannot starve established
//! tunnels.
//!
//! [`IcmpLimiter`] is a single token bucket for the ICMPv6 errors a node
//! originates (RFC 4443 §2.4 f), used by tunneld's data plane and addrd's
//! home agent.
//!
//! All are deterministic: the driver passes `now` into every call.
#![deny(clippy::indexing_slicing)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Nanoseconds in a second: tokens are counted in nanoseconds of credit.
const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// Length of one [`LoadMonitor`] counting window.
const LOAD_WINDOW: Duration = Duration::from_secs(1);

/// Initiations per second above which a responder is under load by default.
pub const DEFAULT_LOAD_THRESHOLD: u32 = 1000;

/// Tuning of a [`RateLimiter`]. Zero values are treated as 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Sustained handshake initiations per second per source.
    pub per_second: u32,
    /// Initiations a source may send at once after being quiet.
    pub burst: u32,
    /// Most sources tracked at once.
    pub max_entries: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_second: 20,
            burst: 5,
            max_entries: 65_536,
        }
    }
}

/// Why [`RateLimiter::check`] refused an initiation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum RateLimited {
    /// The source's bucket is empty.
    #[error("source exceeded its handshake rate")]
    SourceRate,
    /// The source is new and the table is full of sources with live state.
    #[error("rate limiter table full")]
    TableFull,
}

impl RateLimited {
    /// A stable snake_case label for counters.
    pub fn as_str(&self) -> &'static str {
        match self {
            RateLimited::SourceRate => "source_rate",
            RateLimited::TableFull => "table_full",
        }
    }
}

/// What a [`RateLimiter`] keys its buckets by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceKey {
    /// An IPv4 source (including an IPv4-mapped IPv6 one, `::ffff:a.b.c.d`).
    V4([u8; 4]),
    /// The /64 of an IPv6 source.
    V6Prefix([u8; 8]),
}

impl SourceKey {
    /// The key of source address `src`.
    pub fn of(src: IpAddr) -> Self {
        match src {
            IpAddr::V4(v4) => SourceKey::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => SourceKey::V4(v4.octets()),
                None => {
                    let [a, b, c, d, e, f, g, h, ..] = v6.octets();
                    SourceKey::V6Prefix([a, b, c, d, e, f, g, h])
                }
            },
        }
    }
}

/// A token bucket per source, with a bounded table.
///
/// Credit is kept in nanoseconds: an initiation costs `1 s / per_second` and
/// a bucket holds at most `burst` initiations' worth. A source seen for the
/// first time starts with a full bucket.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimitConfig,
    /// Credit one initiation costs, in nanoseconds.
    cost: u64,
    /// Credit of a full bucket, in nanoseconds.
    capacity: u64,
    buckets: HashMap<SourceKey, Bucket>,
    /// When a full table was last swept for refilled buckets.
    last_full_sweep: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Credit in nanoseconds as of `last`.
    credit: u64,
    last: Instant,
}

impl Bucket {
    /// Credit as of `now`, capped at `capacity`.
    fn credit_at(&self, now: Instant, capacity: u64) -> u64 {
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        let elapsed = u64::try_from(elapsed).unwrap_or(u64::MAX);
        self.credit.saturating_add(elapsed).min(capacity)
    }
}

impl RateLimiter {
    /// An empty limiter.
    pub fn new(config: RateLimitConfig) -> Self {
        let config = RateLimitConfig {
            per_second: config.per_second.max(1),
            burst: config.burst.max(1),
            max_entries: config.max_entries.max(1),
        };
        let cost = (NANOS_PER_SECOND / u64::from(config.per_second)).max(1);
        RateLimiter {
            config,
            cost,
            capacity: cost.saturating_mul(u64::from(config.burst)),
            buckets: HashMap::new(),
            last_full_sweep: None,
        }
    }

    /// The configuration in force (zeros replaced by 1).
    pub fn config(&self) -> RateLimitConfig {
        self.config
    }

    /// Whether an initiation from `src` at `now` may proceed; takes a token
    /// if so.
    pub fn allow(&mut self, src: IpAddr, now: Instant) -> bool {
        self.check(src, now).is_ok()
    }

    /// Like [`RateLimiter::allow`], saying why an initiation is refused.
    pub fn check(&mut self, src: IpAddr, now: Instant) -> Result<(), RateLimited> {
        let key = SourceKey::of(src);
        if let Some(bucket) = self.buckets.get_mut(&key) {
            let credit = bucket.credit_at(now, self.capacity);
            bucket.last = bucket.last.max(now);
            return match credit.checked_sub(self.cost) {
                Some(left) => {
                    bucket.credit = left;
                    Ok(())
                }
                None => {
                    bucket.credit = credit;
                    Err(RateLimited::SourceRate)
                }
            };
        }
        if self.buckets.len() >= self.config.max_entries {
            self.sweep_full_table(now);
            if self.buckets.len() >= self.config.max_entries {
                return Err(RateLimited::TableFull);
            }
        }
        self.buckets.insert(
            key,
            Bucket {
                credit: self.capacity.saturating_sub(self.cost),
                last: now,
            },
        );
        Ok(())
    }

    /// Forgets every source whose bucket has refilled by `now`: it would
    /// start full anyway, so forgetting it loses nothing. Drivers call this
    /// from a periodic timer.
    pub fn sweep(&mut self, now: Instant) {
        let capacity = self.capacity;
        self.buckets
            .retain(|_, bucket| bucket.credit_at(now, capacity) < capacity);
    }

    /// Number of sources tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Sweeps a full table, at most once per token interval: a sweep is a
    /// scan of the whole table, and a flood of new sources must not trigger
    /// one per packet. Within one token interval few buckets can refill.
    fn sweep_full_table(&mut self, now: Instant) {
        let interval = Duration::from_nanos(self.cost);
        let due = self
            .last_full_sweep
            .is_none_or(|last| now.saturating_duration_since(last) >= interval);
        if due {
            self.last_full_sweep = Some(now);
            self.sweep(now);
        }
    }
}

/// Decides when the handshake responder is under load and must answer
/// initiations with cookie replies instead of doing DH work.
///
/// Initiations are counted in consecutive one-second windows. The responder
/// is under load while the current or the previous window counted more than
/// the threshold, or while a driver forces it (for example because its
/// handshake queue is deep). Every operation is O(1).
#[derive(Clone, Copy, Debug)]
pub struct LoadMonitor {
    threshold: u32,
    forced: bool,
    /// Start of the current window; `None` before the first initiation.
    window_start: Option<Instant>,
    current: u32,
    previous: u32,
}

impl Default for LoadMonitor {
    fn default() -> Self {
        LoadMonitor::new(DEFAULT_LOAD_THRESHOLD)
    }
}

impl LoadMonitor {
    /// A monitor that reports load above `threshold_per_second` initiations
    /// in a one-second window.
    pub fn new(threshold_per_second: u32) -> Self {
        LoadMonitor {
            threshold: threshold_per_second,
            forced: false,
            window_start: None,
            current: 0,
            previous: 0,
        }
    }

    /// The threshold in initiations per second.
    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    /// Counts one initiation received at `now`.
    pub fn record(&mut self, now: Instant) {
        let (start, current, previous) = self.windows_at(now);
        self.window_start = Some(start);
        self.current = current.saturating_add(1);
        self.previous = previous;
    }

    /// Whether initiations at `now` must be answered with cookie replies.
    pub fn under_load(&self, now: Instant) -> bool {
        if self.forced {
            return true;
        }
        let (_, current, previous) = self.windows_at(now);
        current > self.threshold || previous > self.threshold
    }

    /// Forces (or stops forcing) the under-load state.
    pub fn set_forced(&mut self, forced: bool) {
        self.forced = forced;
    }

    /// Whether the under-load state is forced.
    pub fn is_forced(&self) -> bool {
        self.forced
    }

    /// Initiations counted in the current window and the previous one, as
    /// of `now`.
    pub fn counts(&self, now: Instant) -> (u32, u32) {
        let (_, current, previous) = self.windows_at(now);
        (current, previous)
    }

    /// The window start and the current and previous counts as they would
    /// be after rolling the windows forward to `now`.
    fn windows_at(&self, now: Instant) -> (Instant, u32, u32) {
        let Some(start) = self.window_start else {
            return (now, 0, 0);
        };
        let elapsed = now.saturating_duration_since(start);
        if elapsed < LOAD_WINDOW {
            (start, self.current, self.previous)
        } else if elapsed < 2 * LOAD_WINDOW {
            (start + LOAD_WINDOW, 0, self.current)
        } else {
            (now, 0, 0)
        }
    }
}

/// A token bucket for ICMPv6 errors: `burst` at once, then one every
/// `interval` (RFC 4443 §2.4 f). Time is passed in.
#[derive(Clone, Debug)]
pub struct IcmpLimiter {
    interval: Duration,
    /// Credit saved up, at most `burst × interval`.
    credit: Duration,
    capacity: Duration,
    last: Option<Instant>,
}

impl IcmpLimiter {
    /// Errors allowed per second by [`IcmpLimiter::default`], and its burst.
    pub const PER_SECOND: u32 = 10;

    /// A bucket holding `burst` errors, refilled one per `interval`. It
    /// starts full.
    pub fn new(burst: u32, interval: Duration) -> IcmpLimiter {
        let capacity = interval.saturating_mul(burst);
        IcmpLimiter {
            interval,
            credit: capacity,
            capacity,
            last: None,
        }
    }

    /// Take one error's token at `now`: `false` means suppress it.
    pub fn allow(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let earned = now.saturating_duration_since(last);
            self.credit = self.credit.saturating_add(earned).min(self.capacity);
        }
        self.last = Some(now);
        match self.credit.checked_sub(self.interval) {
            Some(left) => {
                self.credit = left;
                true
            }
            None => false,
        }
    }
}

impl Default for IcmpLimiter {
    /// Ten errors per second, in bursts of at most ten.
    fn default() -> IcmpLimiter {
        IcmpLimiter::new(
            IcmpLimiter::PER_SECOND,
            Duration::from_secs(1) / IcmpLimiter::PER_SECOND,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn burst_then_refusal_then_refill() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(RateLimitConfig::default());
        let src = ip("198.51.100.1");
        for i in 0..5 {
            assert!(rl.allow(src, t0), "burst {i}");
        }
        assert_eq!(rl.check(src, t0), Err(RateLimited::SourceRate));
        // Refusals do not consume credit: 1/20 s after the burst, one more.
        assert_eq!(rl.check(src, t0 + ms(49)), Err(RateLimited::SourceRate));
        assert!(rl.allow(src, t0 + ms(50)));
        assert!(!rl.allow(src, t0 + ms(50)));
        assert!(!rl.allow(src, t0 + ms(99)));
        assert!(rl.allow(src, t0 + ms(100)));
        // After a long pause the bucket holds a burst again, not more.
        let later = t0 + Duration::from_secs(60);
        for i in 0..5 {
            assert!(rl.allow(src, later), "second burst {i}");
        }
        assert!(!rl.allow(src, later));
        assert_eq!(rl.len(), 1);
    }

    #[test]
    fn sustained_rate_is_per_second() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(RateLimitConfig::default());
        let src = ip("192.0.2.7");
        // One attempt per millisecond for ten seconds.
        let allowed = (0..10_000).filter(|i| rl.allow(src, t0 + ms(*i))).count();
        // 250 ms of initial credit plus 9.999 s of refill, 50 ms per token.
        assert_eq!(allowed, 5 + 199);
    }

    #[test]
    fn sources_are_independent() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(RateLimitConfig {
            per_second: 1,
            burst: 1,
            ..RateLimitConfig::default()
        });
        let sources = [
            "192.0.2.1",
            "192.0.2.2",
            "2001:db8:0:1::1",
            "2001:db8:0:2::1",
        ];
        for s in sources {
            assert!(rl.allow(ip(s), t0), "{s}");
        }
        for s in sources {
            assert!(!rl.allow(ip(s), t0), "{s}");
        }
        assert_eq!(rl.len(), sources.len());
    }

    #[test]
    fn ipv6_sources_share_their_slash_64() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(RateLimitConfig {
            per_second: 1,
            burst: 2,
            ..RateLimitConfig::default()
        });
        assert!(rl.allow(ip("2001:db8:1:2::1"), t0));
        assert!(rl.allow(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), t0));
        assert!(!rl.allow(ip("2001:db8:1:2:1234::5"), t0));
        // The neighbouring /64 has its own bucket.
        assert!(rl.allow(ip("2001:db8:1:3::1"), t0));
        assert_eq!(rl.len(), 2);
    }

    #[test]
    fn source_keys() {
        let table = [
            ("203.0.113.9", SourceKey::V4([203, 0, 113, 9])),
            ("::ffff:203.0.113.9", SourceKey::V4([203, 0, 113, 9])),
            (
                "2001:db8:aa:bb:1:2:3:4",
                SourceKey::V6Prefix([0x20, 0x01, 0x0d, 0xb8, 0, 0xaa, 0, 0xbb]),
            ),
            ("::1", SourceKey::V6Prefix([0; 8])),
        ];
        for (s, key) in table {
            assert_eq!(SourceKey::of(ip(s)), key, "{s}");
        }
        // IPv4-mapped sources from a dual-stack socket do not share ::/64.
        assert_ne!(
            SourceKey::of(ip("::ffff:192.0.2.1")),
            SourceKey::of(ip("::ffff:192.0.2.2"))
        );
    }

    #[test]
    fn table_is_bounded_and_recycles_refilled_buckets() {
        let t0 = Instant::now();
        let max = 64;
        let mut rl = RateLimiter::new(RateLimitConfig {
            max_entries: max,
            ..RateLimitConfig::default()
        });
        let v4 = |i: u32| IpAddr::V4(Ipv4Addr::from(0xc633_6400 + i));
        for i in 0..max as u32 {
            assert!(rl.allow(v4(i), t0));
        }
        assert_eq!(rl.len(), max);
        // Full of live buckets: new sources are refused, known ones still work.
        for i in max as u32..2 * max as u32 {
            assert_eq!(rl.check(v4(i), t0 + ms(10)), Err(RateLimited::TableFull));
            assert_eq!(rl.len(), max);
        }
        assert!(rl.allow(v4(0), t0 + ms(10)));
        // A bucket that spent one token refills 1/20 s later. The sweep at
        // 10 ms holds the next one off until 60 ms. Source 0 spent a second
        // token at 10 ms, so it is not refilled and keeps its bucket.
        let refilled = t0 + ms(60);
        for i in max as u32..2 * max as u32 - 1 {
            assert!(rl.allow(v4(i), refilled), "{i}");
            assert!(rl.len() <= max);
        }
        assert_eq!(rl.len(), max);
        assert_eq!(
            rl.check(v4(2 * max as u32), refilled),
            Err(RateLimited::TableFull)
        );
        // Source 0 still has its partly spent bucket: 210 ms of credit.
        for _ in 0..4 {
            assert!(rl.allow(v4(0), refilled));
        }
        assert_eq!(rl.check(v4(0), refilled), Err(RateLimited::SourceRate));
        assert_eq!(rl.len(), max);
    }

    #[test]
    fn full_table_sweeps_are_throttled() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(RateLimitConfig {
            per_second: 10,
            burst: 3,
            max_entries: 4,
        });
        let v6 = |i: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, i, 0, 0, 0, 0, 1));
        // Source 0 spends one token (refilled after 100 ms), the others all
        // three (refilled after 300 ms).
        assert!(rl.allow(v6(0), t0));
        for i in 1..4 {
            for _ in 0..3 {
                assert!(rl.allow(v6(i), t0));
            }
        }
        // The sweep at 50 ms finds nothing to recycle.
        assert_eq!(rl.check(v6(10), t0 + ms(50)), Err(RateLimited::TableFull));
        // At 100 ms source 0 has refilled, but the next sweep waits until
        // 150 ms (one token interval after the last).
        assert_eq!(rl.check(v6(11), t0 + ms(100)), Err(RateLimited::TableFull));
        assert_eq!(rl.check(v6(11), t0 + ms(149)), Err(RateLimited::TableFull));
        assert!(rl.allow(v6(12), t0 + ms(150)));
        assert_eq!(rl.len(), 4);
    }

    #[test]
    fn sweep_forgets_only_refilled_buckets() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(RateLimitConfig::default());
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        for _ in 0..5 {
            rl.allow(a, t0);
        }
        rl.allow(b, t0 + ms(210));
        rl.sweep(t0 + ms(240));
        assert_eq!(rl.len(), 2);
        // a needs 250 ms for five tokens, b (seen at 210 ms) 50 ms for one.
        rl.sweep(t0 + ms(250));
        assert_eq!(rl.len(), 1);
        rl.sweep(t0 + ms(249));
        assert_eq!(rl.len(), 1);
        // b was not forgotten: it still lacks a token until 260 ms.
        for _ in 0..4 {
            assert!(rl.allow(b, t0 + ms(249)));
        }
        assert!(!rl.allow(b, t0 + ms(249)));
        rl.sweep(t0 + Duration::from_secs(10));
        assert!(rl.is_empty());
    }

    #[test]
    fn time_going_backwards_grants_nothing() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let mut rl = RateLimiter::new(RateLimitConfig {
            per_second: 1,
            burst: 1,
            ..RateLimitConfig::default()
        });
        let src = ip("192.0.2.1");
        assert!(rl.allow(src, t0));
        assert!(!rl.allow(src, t0 - ms(500)));
        assert!(!rl.allow(src, t0 + ms(999)));
        assert!(rl.allow(src, t0 + ms(1000)));
    }

    #[test]
    fn zero_config_is_clamped() {
        let rl = RateLimiter::new(RateLimitConfig {
            per_second: 0,
            burst: 0,
            max_entries: 0,
        });
        assert_eq!(
            rl.config(),
            RateLimitConfig {
                per_second: 1,
                burst: 1,
                max_entries: 1
            }
        );
        assert_ne!(
            RateLimited::SourceRate.as_str(),
            RateLimited::TableFull.as_str()
        );
    }

    #[test]
    fn load_crosses_threshold_and_falls_back() {
        let t0 = Instant::now();
        let mut lm = LoadMonitor::new(100);
        assert!(!lm.under_load(t0));
        for i in 0..100 {
            lm.record(t0 + Duration::from_micros(i * 1000));
        }
        assert!(!lm.under_load(t0 + ms(100)), "at the threshold");
        lm.record(t0 + ms(101));
        assert!(lm.under_load(t0 + ms(101)), "above the threshold");
        assert_eq!(lm.counts(t0 + ms(101)), (101, 0));
        // The next window stays under load: the previous one was busy.
        assert!(lm.under_load(t0 + ms(1500)));
        assert_eq!(lm.counts(t0 + ms(1500)), (0, 101));
        lm.record(t0 + ms(1500));
        assert!(lm.under_load(t0 + ms(1999)));
        // Two quiet windows later it is over.
        assert!(!lm.under_load(t0 + ms(2000)));
        assert_eq!(lm.counts(t0 + ms(2000)), (0, 1));
        assert!(!lm.under_load(t0 + ms(5000)));
        assert_eq!(lm.counts(t0 + ms(5000)), (0, 0));
    }

    #[test]
    fn load_windows_roll_forward() {
        let t0 = Instant::now();
        let mut lm = LoadMonitor::new(2);
        for at in [0, 400, 900, 1100, 1200, 2300] {
            lm.record(t0 + ms(at));
        }
        // Windows: [0,1) had 3, [1,2) had 2, [2,3) has 1.
        assert_eq!(lm.counts(t0 + ms(2300)), (1, 2));
        assert!(!lm.under_load(t0 + ms(2300)));
        // A long gap restarts the windows at the next initiation.
        lm.record(t0 + ms(9_000));
        assert_eq!(lm.counts(t0 + ms(9_999)), (1, 0));
        assert_eq!(lm.counts(t0 + ms(10_000)), (0, 1));
    }

    #[test]
    fn load_can_be_forced() {
        let t0 = Instant::now();
        let mut lm = LoadMonitor::default();
        assert_eq!(lm.threshold(), DEFAULT_LOAD_THRESHOLD);
        assert!(!lm.under_load(t0));
        lm.set_forced(true);
        assert!(lm.is_forced());
        assert!(lm.under_load(t0));
        lm.set_forced(false);
        assert!(!lm.under_load(t0));
        for _ in 0..=DEFAULT_LOAD_THRESHOLD {
            lm.record(t0);
        }
        assert!(lm.under_load(t0));
    }

    #[test]
    fn limiter_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut limiter = IcmpLimiter::default();
        for i in 0..10 {
            assert!(limiter.allow(start), "burst {i}");
        }
        assert!(!limiter.allow(start));
        assert!(!limiter.allow(start + Duration::from_millis(99)));
        assert!(limiter.allow(start + Duration::from_millis(100)));
        assert!(!limiter.allow(start + Duration::from_millis(150)));
        // A long pause refills at most the burst.
        let later = start + Duration::from_secs(60);
        for i in 0..10 {
            assert!(limiter.allow(later), "refill {i}");
        }
        assert!(!limiter.allow(later));
    }
}
