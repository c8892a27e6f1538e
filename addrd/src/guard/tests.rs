//! Tests of the login guard, on a fake clock (`Instant`s passed in).

use super::*;

const SECOND: Duration = Duration::from_secs(1);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn proceed(admission: Admission) -> Ticket {
    match admission {
        Admission::Proceed(ticket) => ticket,
        other => panic!("expected Proceed, got {other:?}"),
    }
}

fn waits(admission: Admission) -> (Duration, WaitReason) {
    match admission {
        Admission::Wait {
            retry_after,
            reason,
        } => (retry_after, reason),
        other => panic!("expected Wait, got {other:?}"),
    }
}

/// A refused attempt by `user` from `source` at `now` (admitted first).
fn fail(guard: &mut LoginGuard, now: Instant, user: &str, source: &str) -> Recorded {
    let ticket = proceed(guard.admit(now, user, ip(source)));
    guard.record(now, ticket, Outcome::Refused)
}

/// No per-source delays, so per-user behaviour shows alone.
fn user_only() -> GuardConfig {
    GuardConfig {
        source_backoff: Backoff {
            free: u32::MAX,
            ..GuardConfig::default().source_backoff
        },
        ..GuardConfig::default()
    }
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let b = GuardConfig::default().user_backoff;
    let delays: Vec<u64> = (0..14).map(|k| b.delay(k).as_secs()).collect();
    assert_eq!(
        delays,
        [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900, 900]
    );
    assert_eq!(b.delay(u32::MAX), b.cap);
    let free = Backoff { free: 3, ..b };
    assert_eq!(free.delay(3), Duration::ZERO);
    assert_eq!(free.delay(4), SECOND);
    assert_eq!(free.delay(6), 4 * SECOND);
}

#[test]
fn delays_grow_and_retry_after_says_how_long() {
    let mut guard = LoginGuard::new(GuardConfig {
        lockout_threshold: 0,
        ..user_only()
    });
    let mut now = Instant::now();
    for k in 0..12u32 {
        let recorded = fail(&mut guard, now, "alice", "192.0.2.1");
        let expected = Duration::from_secs((1u64 << k).min(900));
        assert_eq!(recorded.retry_after, expected, "after {} refusals", k + 1);
        assert_eq!(recorded.lockout, None);
        // Just before the delay ends: refused, with what is left.
        let (retry, reason) =
            waits(guard.admit(now + expected - SECOND / 2, "alice", ip("192.0.2.9")));
        assert_eq!(reason, WaitReason::UserDelay);
        assert_eq!(retry, SECOND / 2);
        now += expected;
    }
    assert_eq!(guard.counters().delayed, 12);
    assert_eq!(guard.counters().refused, 12);
}

#[test]
fn lockout_after_threshold_ends_after_its_period_and_doubles() {
    let config = GuardConfig {
        lockout_threshold: 3,
        ..user_only()
    };
    let mut guard = LoginGuard::new(config);
    let mut now = Instant::now();
    for _ in 0..2 {
        let r = fail(&mut guard, now, "bob", "192.0.2.1");
        now += r.retry_after;
    }
    let r = fail(&mut guard, now, "bob", "192.0.2.1");
    let lockout = r.lockout.expect("third refusal locks out");
    assert_eq!(lockout.period, config.lockout_period);
    assert_eq!(lockout.count, 1);
    assert_eq!(r.retry_after, config.lockout_period);
    assert_eq!(guard.poll_timeout(), Some(lockout.until));
    assert_eq!(guard.locked_until(now, "BOB"), Some(lockout.until));

    // Locked for everyone, from anywhere, until the end.
    let (retry, reason) = waits(guard.admit(now + 60 * SECOND, "bob", ip("2001:db8::1")));
    assert_eq!(reason, WaitReason::LockedOut);
    assert_eq!(retry, config.lockout_period - 60 * SECOND);
    let (_, reason) = waits(guard.admit(lockout.until - SECOND, "bob", ip("198.51.100.1")));
    assert_eq!(reason, WaitReason::LockedOut);
    assert_eq!(guard.counters().locked_out, 2);
    assert_eq!(guard.poll_event(), None);

    // The end is an event, and the count starts again from zero.
    now = lockout.until;
    guard.handle_timeout(now);
    assert_eq!(
        guard.poll_event(),
        Some(GuardEvent::LockoutEnded { user: "bob".into() })
    );
    assert_eq!(guard.poll_timeout(), None);
    assert_eq!(guard.locked_until(now, "bob"), None);
    let r = fail(&mut guard, now, "bob", "192.0.2.1");
    assert_eq!(r.retry_after, SECOND);
    assert_eq!(r.lockout, None);
    now += SECOND;
    now += fail(&mut guard, now, "bob", "192.0.2.1").retry_after;
    // The second lockout in a row lasts twice as long.
    let second = fail(&mut guard, now, "bob", "192.0.2.1").lockout.unwrap();
    assert_eq!(second.count, 2);
    assert_eq!(second.period, 2 * config.lockout_period);
    let c = guard.counters();
    assert_eq!((c.lockouts_started, c.lockouts_ended), (2, 1));
}

#[test]
fn lockout_period_is_capped() {
    let config = GuardConfig {
        lockout_threshold: 1,
        lockout_period: Duration::from_secs(3600),
        max_lockout_period: Duration::from_secs(5 * 3600),
        ..user_only()
    };
    let mut guard = LoginGuard::new(config);
    let mut now = Instant::now();
    let mut periods = Vec::new();
    for _ in 0..5 {
        let lockout = fail(&mut guard, now, "carol", "192.0.2.1").lockout.unwrap();
        periods.push(lockout.period.as_secs() / 3600);
        now = lockout.until;
    }
    assert_eq!(periods, [1, 2, 4, 5, 5]);
}

#[test]
fn success_resets_refusals_and_lockouts() {
    let config = GuardConfig {
        lockout_threshold: 3,
        ..user_only()
    };
    let mut guard = LoginGuard::new(config);
    let mut now = Instant::now();
    // A lockout, served.
    for _ in 0..3 {
        now += fail(&mut guard, now, "dave", "192.0.2.1").retry_after;
    }
    // Two more refusals, then a success.
    for _ in 0..2 {
        now += fail(&mut guard, now, "dave", "192.0.2.1").retry_after;
    }
    let ticket = proceed(guard.admit(now, "dave", ip("192.0.2.1")));
    let r = guard.record(now, ticket, Outcome::Accepted);
    assert_eq!(r.retry_after, Duration::ZERO);
    // Back to the first step: 1 s, and a first (15 min) lockout at 3.
    assert_eq!(
        fail(&mut guard, now, "dave", "192.0.2.1").retry_after,
        SECOND
    );
    now += SECOND;
    now += fail(&mut guard, now, "dave", "192.0.2.1").retry_after;
    let lockout = fail(&mut guard, now, "dave", "192.0.2.1").lockout.unwrap();
    assert_eq!((lockout.count, lockout.period), (1, config.lockout_period));
}

#[test]
fn unavailable_directory_counts_neither_way() {
    let mut guard = LoginGuard::new(user_only());
    let now = Instant::now();
    for _ in 0..20 {
        let ticket = proceed(guard.admit(now, "erin", ip("192.0.2.1")));
        let r = guard.record(now, ticket, Outcome::Unavailable);
        assert_eq!(
            r,
            Recorded {
                retry_after: Duration::ZERO,
                lockout: None
            }
        );
    }
    assert_eq!(guard.counters().unavailable, 20);
    assert_eq!(guard.counters().lockouts_started, 0);
}

#[test]
fn names_differing_in_case_share_a_budget() {
    let mut guard = LoginGuard::new(user_only());
    let now = Instant::now();
    fail(&mut guard, now, "Alice", "192.0.2.1");
    for name in ["alice", "ALICE", " aLiCe "] {
        let (retry, reason) = waits(guard.admit(now, name, ip("192.0.2.2")));
        assert_eq!((retry, reason), (SECOND, WaitReason::UserDelay), "{name:?}");
    }
    // Another name is not affected.
    let _ = proceed(guard.admit(now, "alicia", ip("192.0.2.2")));
    assert_eq!(normalise_user("  ÉLISE "), "élise".into());
    let long = "A".repeat(10_000);
    assert_eq!(normalise_user(&long).len(), MAX_USER_KEY_BYTES);
    let wide = "é".repeat(200);
    assert!(normalise_user(&wide).len() <= MAX_USER_KEY_BYTES);
}

#[test]
fn unknown_and_known_users_are_treated_alike() {
    // The directory's refusal reason never reaches the guard: the same
    // sequence of calls yields the same answers for any name. Run one
    // script for a user that exists and one that does not, compare.
    let script = |user: &str| {
        let mut guard = LoginGuard::new(GuardConfig {
            lockout_threshold: 4,
            ..GuardConfig::default()
        });
        let start = Instant::now();
        let mut answers = Vec::new();
        for step in 0..40u32 {
            let now = start + step * 7 * SECOND;
            match guard.admit(now, user, ip("192.0.2.7")) {
                Admission::Proceed(ticket) => {
                    let answer_at = ticket.answer_not_before() - now;
                    let r = guard.record(now, ticket, Outcome::Refused);
                    answers.push(format!(
                        "refused {:?} {:?} {answer_at:?}",
                        r.retry_after,
                        r.lockout.map(|l| l.period)
                    ));
                }
                Admission::Wait {
                    retry_after,
                    reason,
                } => {
                    answers.push(format!("wait {retry_after:?} {reason:?}"));
                }
            }
        }
        (answers, guard.counters())
    };
    let known = script("alice");
    let unknown = script("no-such-user");
    assert_eq!(known, unknown);
    assert!(known.1.lockouts_started >= 1);
}

#[test]
fn sources_have_their_own_delays() {
    let config = GuardConfig {
        lockout_threshold: 0,
        source_backoff: Backoff {
            free: 2,
            base: SECOND,
            cap: Duration::from_secs(60),
        },
        ..GuardConfig::default()
    };
    let mut guard = LoginGuard::new(config);
    let now = Instant::now();
    // A spray: one refusal each for many users from one source.
    assert_eq!(fail(&mut guard, now, "u1", "192.0.2.1").retry_after, SECOND);
    assert_eq!(fail(&mut guard, now, "u2", "192.0.2.1").retry_after, SECOND);
    // The third is past the free ones: the source waits 1 s, then 2 s.
    assert_eq!(fail(&mut guard, now, "u3", "192.0.2.1").retry_after, SECOND);
    let (retry, reason) = waits(guard.admit(now, "u4", ip("192.0.2.1")));
    assert_eq!((retry, reason), (SECOND, WaitReason::SourceDelay));
    let r = fail(&mut guard, now + SECOND, "u4", "192.0.2.1");
    assert_eq!(r.retry_after, 2 * SECOND);
    // Another source, even for the same users, is not delayed by it.
    let _ = proceed(guard.admit(now + SECOND, "u5", ip("192.0.2.2")));
    // An IPv6 source is its /64.
    for i in 0..3 {
        fail(&mut guard, now, &format!("v{i}"), "2001:db8:1:2::1");
    }
    let (_, reason) = waits(guard.admit(now, "fresh", ip("2001:db8:1:2:ffff::9")));
    assert_eq!(reason, WaitReason::SourceDelay);
    let _ = proceed(guard.admit(now, "fresh", ip("2001:db8:1:3::1")));
    // A success does not reset the source.
    let ok = proceed(guard.admit(now + 3 * SECOND, "u9", ip("192.0.2.1")));
    guard.record(now + 3 * SECOND, ok, Outcome::Accepted);
    let r = fail(&mut guard, now + 3 * SECOND, "u10", "192.0.2.1");
    assert_eq!(r.retry_after, 4 * SECOND, "five refusals, two free");
}

#[test]
fn pending_attempts_are_capped_per_source_and_user() {
    let config = GuardConfig {
        max_pending_per_source: 3,
        max_pending_per_user: 2,
        ..GuardConfig::default()
    };
    let mut guard = LoginGuard::new(config);
    let now = Instant::now();
    let a = proceed(guard.admit(now, "a", ip("192.0.2.1")));
    let b = proceed(guard.admit(now, "b", ip("192.0.2.1")));
    let c = proceed(guard.admit(now, "c", ip("192.0.2.1")));
    let (retry, reason) = waits(guard.admit(now, "d", ip("192.0.2.1")));
    assert_eq!((retry, reason), (config.busy_retry_after, WaitReason::Busy));
    // Another source may go on, but not a third parallel try for "a".
    let a2 = proceed(guard.admit(now, "a", ip("192.0.2.2")));
    let (_, reason) = waits(guard.admit(now, "a", ip("192.0.2.3")));
    assert_eq!(reason, WaitReason::Busy);
    // Recording frees the slot.
    guard.record(now, c, Outcome::Accepted);
    let d = proceed(guard.admit(now, "d", ip("192.0.2.1")));
    // Tickets never recorded stop counting after the attempt timeout.
    let later = now + config.attempt_timeout;
    let _ = proceed(guard.admit(later, "a", ip("192.0.2.1")));
    assert_eq!(
        guard.counters().abandoned,
        5,
        "a, b, d on the source; a, a2 on the user"
    );
    // A late record of an abandoned ticket is still counted.
    guard.record(later, a, Outcome::Refused);
    assert_eq!(guard.counters().refused, 1);
    drop((b, a2, d));
    assert_eq!(guard.counters().busy, 2);
}

#[test]
fn pending_attempts_are_capped_in_all() {
    let config = GuardConfig {
        max_pending: 3,
        ..GuardConfig::default()
    };
    let mut guard = LoginGuard::new(config);
    let now = Instant::now();
    let tickets: Vec<Ticket> = (0..3u8)
        .map(|i| proceed(guard.admit(now, &format!("u{i}"), IpAddr::from([10, 0, 0, i]))))
        .collect();
    // A fourth user from a fourth source still waits.
    let (retry, reason) = waits(guard.admit(now, "u3", ip("10.0.0.3")));
    assert_eq!((retry, reason), (config.busy_retry_after, WaitReason::Busy));
    let mut tickets = tickets.into_iter();
    if let Some(first) = tickets.next() {
        guard.record(now, first, Outcome::Accepted);
    }
    let fourth = proceed(guard.admit(now, "u3", ip("10.0.0.3")));
    // Abandoned tickets free their places too.
    let later = now + config.attempt_timeout;
    let _ = proceed(guard.admit(later, "u4", ip("10.0.0.4")));
    drop((tickets, fourth));
    // Zero ceilings are taken as one.
    let mut zero = LoginGuard::new(GuardConfig {
        max_pending: 0,
        max_pending_per_user: 0,
        max_pending_per_source: 0,
        ..GuardConfig::default()
    });
    let _held = proceed(zero.admit(now, "a", ip("10.0.0.1")));
    let (_, reason) = waits(zero.admit(now, "b", ip("10.0.0.2")));
    assert_eq!(reason, WaitReason::Busy);
}

#[test]
fn a_flood_of_names_cannot_release_a_locked_out_victim() {
    let config = GuardConfig {
        lockout_threshold: 3,
        max_users: 64,
        max_sources: 64,
        ..GuardConfig::default()
    };
    let mut guard = LoginGuard::new(config);
    let mut now = Instant::now();
    for _ in 0..2 {
        now += fail(&mut guard, now, "victim", "192.0.2.1").retry_after;
    }
    let lockout = fail(&mut guard, now, "victim", "192.0.2.1")
        .lockout
        .unwrap();
    let end = lockout.until;
    // The attacker's own source, sprayed until it is delayed for long.
    let attacker = "198.51.100.66";
    let mut source_delay = Duration::ZERO;
    for i in 0..13 {
        now += source_delay;
        source_delay = fail(&mut guard, now, &format!("m{i}"), attacker).retry_after;
    }
    assert_eq!(source_delay, Duration::from_secs(128));
    let source_until = now + source_delay;

    // Then random names from random sources, for the whole lockout,
    // each refused once (as an unknown user would be), and twice a
    // second a guess for a name the attacker locks out in turn, so the
    // table fills with lockouts more recent than the victim's.
    let mut refused = 0u64;
    let mut table_full = 0u64;
    let mut locked_names = 0u32;
    let mut rng = 0x1234_5678_9abc_def0u64;
    let mut t = now;
    let mut step = 0u32;
    while t < end {
        step += 1;
        if step % 25 == 0 {
            let name = format!("locker{locked_names}");
            let src = IpAddr::from([10, 255, 0, (locked_names % 250) as u8]);
            match guard.admit(t, &name, src) {
                Admission::Proceed(ticket) => {
                    if guard.record(t, ticket, Outcome::Refused).lockout.is_some() {
                        locked_names += 1;
                    }
                }
                Admission::Wait { reason, .. } => assert!(
                    matches!(reason, WaitReason::UserDelay | WaitReason::TableFull),
                    "{reason:?}"
                ),
            }
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let name = format!("rnd{rng:016x}");
        let [a, b, c, ..] = rng.to_le_bytes();
        match guard.admit(t, &name, IpAddr::from([10, a, b, c])) {
            Admission::Proceed(ticket) => {
                guard.record(t, ticket, Outcome::Refused);
                refused += 1;
            }
            Admission::Wait { reason, .. } => {
                assert_eq!(reason, WaitReason::TableFull);
                table_full += 1;
            }
        }
        // The victim stays locked out, the attacker's source delayed.
        assert_eq!(
            guard.locked_until(t, "victim"),
            Some(end),
            "at {:?}",
            t - now
        );
        let (_, reason) = waits(guard.admit(t, "Victim", ip("203.0.113.5")));
        assert_eq!(reason, WaitReason::LockedOut);
        if t < source_until {
            let (retry, reason) = waits(guard.admit(t, "fresh", ip(attacker)));
            assert_eq!((retry, reason), (source_until - t, WaitReason::SourceDelay));
        }
        t += SECOND / 50;
    }
    let (users, sources) = guard.len();
    assert!(
        users <= 64 && sources <= 64,
        "bounded: {users} users, {sources} sources"
    );
    let c = guard.counters();
    assert!(c.evictions > 500, "evictions {}", c.evictions);
    assert!(
        refused > 500 && table_full > 0,
        "refused {refused}, table full {table_full}"
    );
    assert!(locked_names > 32, "{locked_names} names locked out");
    eprintln!(
        "flood: {refused} refused, {table_full} table full, {} evictions, {locked_names} names locked out",
        c.evictions
    );
    // The lockout ends on time, not before; once the flood stops the
    // victim may try again.
    assert_eq!(guard.locked_until(end, "victim"), None);
    let _ = proceed(guard.admit(end + 2 * SECOND, "victim", ip("203.0.113.5")));
}

#[test]
fn evicting_prefers_the_least_incriminated() {
    let config = GuardConfig {
        lockout_threshold: 0,
        max_users: 8,
        ..user_only()
    };
    let mut guard = LoginGuard::new(config);
    let start = Instant::now();
    // "old" has 5 refusals, its delay long over; others 1 refusal each.
    let mut now = start;
    for _ in 0..5 {
        now += fail(&mut guard, now, "old", "192.0.2.1").retry_after;
    }
    now += Duration::from_secs(100);
    for i in 0..7 {
        fail(&mut guard, now, &format!("n{i}"), "192.0.2.1");
    }
    now += SECOND;
    // Full: the next name evicts one of the single-refusal names.
    fail(&mut guard, now, "newcomer", "192.0.2.1");
    assert_eq!(guard.counters().evictions, 1);
    // "old" kept its five refusals: the sixth costs 32 s, not 1 s.
    assert_eq!(
        fail(&mut guard, now, "old", "192.0.2.9").retry_after,
        32 * SECOND
    );
}

#[test]
fn full_table_of_active_entries_refuses_newcomers() {
    let config = GuardConfig {
        max_users: 4,
        ..user_only()
    };
    let mut guard = LoginGuard::new(config);
    let now = Instant::now();
    for i in 0..4 {
        fail(&mut guard, now, &format!("u{i}"), "192.0.2.1");
    }
    let (retry, reason) = waits(guard.admit(now, "u4", ip("192.0.2.1")));
    assert_eq!(
        (retry, reason),
        (config.busy_retry_after, WaitReason::TableFull)
    );
    // Still full within the sweep interval, even once the delays pass.
    let (_, reason) = waits(guard.admit(now + SECOND / 2, "u4", ip("192.0.2.1")));
    assert_eq!(reason, WaitReason::TableFull);
    // Later the idle entries may make room.
    let _ = proceed(guard.admit(now + 2 * SECOND, "u4", ip("192.0.2.1")));
    assert_eq!(guard.counters().table_full, 2);
    assert_eq!(guard.counters().evictions, 1);
}

#[test]
fn quiet_entries_are_forgotten_before_anything_is_evicted() {
    let config = GuardConfig {
        lockout_threshold: 0,
        max_users: 4,
        forget_after: Duration::from_secs(3600),
        ..user_only()
    };
    let mut guard = LoginGuard::new(config);
    let now = Instant::now();
    for i in 0..4 {
        fail(&mut guard, now, &format!("u{i}"), "192.0.2.1");
    }
    let later = now + config.forget_after;
    let _ = proceed(guard.admit(later, "new", ip("192.0.2.1")));
    let c = guard.counters();
    // The 4 users by the sweep of the full table, and the source,
    // touched again, afresh in place.
    assert_eq!((c.forgotten, c.evictions), (5, 0));
    assert_eq!(guard.len(), (1, 1));
}

#[test]
fn refusals_are_forgotten_after_a_quiet_period() {
    let config = GuardConfig {
        lockout_threshold: 3,
        forget_after: Duration::from_secs(3600),
        ..user_only()
    };
    let mut guard = LoginGuard::new(config);
    let mut now = Instant::now();
    // Two mistakes a day for a week never add up to a lockout.
    for _ in 0..7 {
        assert_eq!(
            fail(&mut guard, now, "frank", "192.0.2.1").retry_after,
            SECOND
        );
        let r = fail(&mut guard, now + SECOND, "frank", "192.0.2.1");
        assert_eq!((r.retry_after, r.lockout), (2 * SECOND, None));
        now += Duration::from_secs(24 * 3600);
    }
    // Six times the user, and six times the source.
    assert_eq!(guard.counters().forgotten, 12);
    assert_eq!(guard.counters().lockouts_started, 0);
    // Within the quiet period they do.
    fail(&mut guard, now, "frank", "192.0.2.1");
    fail(&mut guard, now + SECOND, "frank", "192.0.2.1");
    let r = fail(&mut guard, now + 3 * SECOND, "frank", "192.0.2.1");
    assert!(r.lockout.is_some());
}

#[test]
fn answers_wait_for_the_response_floor() {
    let config = GuardConfig {
        response_floor: Duration::from_millis(750),
        ..GuardConfig::default()
    };
    let mut guard = LoginGuard::new(config);
    let now = Instant::now();
    let ticket = proceed(guard.admit(now, "alice", ip("192.0.2.1")));
    assert_eq!(ticket.answer_not_before(), now + Duration::from_millis(750));
    assert_eq!(ticket.admitted_at(), now);
    assert_eq!(ticket.user(), "alice");
    assert_eq!(ticket.source(), SourceKey::V4([192, 0, 2, 1]));
    assert_eq!(answer_not_before(now, Duration::ZERO), now);
    assert_eq!(answer_not_before(now, SECOND), now + SECOND);
    // An absurd floor does not overflow.
    let far = answer_not_before(now, Duration::MAX);
    assert!(far > now);
}

#[test]
fn counters_have_stable_labels() {
    let labels: Vec<&str> = GuardCounters::default()
        .labelled()
        .iter()
        .map(|(l, _)| *l)
        .collect();
    assert_eq!(labels.len(), 14);
    assert!(labels.contains(&"admitted") && labels.contains(&"evictions"));
    assert!(labels.contains(&"lockouts_started") && labels.contains(&"locked_out"));
    assert_eq!(WaitReason::LockedOut.as_str(), "locked_out");
}
