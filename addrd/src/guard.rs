//! Login admission control: growing delays, lockouts and concurrency
//! ceilings per user and per source (DESIGN §7, issue #4).
//!
//! [`LoginGuard`] is a sans-IO state machine the login path calls twice per
//! attempt: [`LoginGuard::admit`] *before* the directory is asked, which
//! either lets the attempt proceed (with a [`Ticket`]) or says how long to
//! wait, and [`LoginGuard::record`] *after*, with what the directory said.
//! Every call takes `now`; nothing here reads a clock, sleeps or does I/O.
//!
//! **What is tracked.** State is kept per *user* — the name as typed,
//! trimmed and lower-cased, so `Alice` and `alice` share one budget — and
//! per *source* ([`SourceKey`]: an IPv4 address, or the /64 of an IPv6
//! one). The guard never learns whether a user exists: an unknown user, a
//! wrong password, an empty password and a disabled account are all one
//! [`Outcome::Refused`], so the guard's answers (and their `retry_after`)
//! are the same for a name that exists and one that does not.
//!
//! **Delays.** After `k` consecutive refusals a user must wait
//! `min(base · 2^(k-1), cap)` after the last refusal before the next
//! attempt is admitted (1 s, 2 s, 4 s … 15 min by default). A source gets
//! the same treatment after a number of free refusals (a NAT'd office
//! mistyping passwords is not slowed at once); its count is not reset by a
//! success, because an attacker holding one valid account could otherwise
//! wipe his source's record between guesses. It is forgotten after
//! `forget_after` without a refusal.
//!
//! **Lockouts.** `lockout_threshold` consecutive refusals lock the user
//! out for `lockout_period`; each further lockout without a success in
//! between doubles the period (up to `max_lockout_period`). A success
//! resets the user's refusals and lockouts. When a lockout ends the
//! refusal count starts again from zero, so an online attacker gets at most
//! `lockout_threshold` guesses per lockout, with the lockouts growing.
//! The user is locked out whoever asks, so an attacker can keep a known
//! user out of password logins; renewals (no password) are not affected,
//! and an operator sees every lockout in the audit log.
//!
//! **Concurrency.** At most `max_pending_per_source` and
//! `max_pending_per_user` attempts may be with the directory at once;
//! without the per-user ceiling, a burst of parallel guesses would all be
//! admitted before the first refusal was recorded. `max_pending` bounds
//! them all together: a password check can cost 64 MiB of Argon2 memory
//! (the embedded backend's default), so a flood from many sources must not
//! start thousands at once. An attempt whose ticket
//! is never recorded (a task that died) stops counting after
//! `attempt_timeout` ([`GuardCounters::abandoned`]).
//!
//! **Memory.** Both tables are bounded (`max_users`, `max_sources`).
//! Entries with nothing to remember (no refusals, no lockout, nothing
//! pending) and entries quiet for `forget_after` are forgotten. When a
//! table is full, a new key may only take the place of an *idle* entry: no
//! active delay, no active lockout, no pending attempt. Idle entries are
//! evicted in the order (past lockouts, consecutive refusals, last
//! refusal): the least incriminated and least recently refused first. So
//! an entry that is locked out or waiting out a delay is never evicted —
//! a flood of random names cannot release a victim, nor the attacker's
//! own name or source — and evicting an idle entry with `k` refusals first
//! takes evicting every idle entry with fewer: the flood has to earn `k`
//! refusals per name, each behind the per-source delays. When no entry is
//! idle the new attempt waits ([`WaitReason::TableFull`]). Eviction scans
//! the table, so it runs at most once per [`SWEEP_INTERVAL`] and frees an
//! eighth of the table at a time.
//!
//! **Uniform answers and timing.** The daemon answers every refusal —
//! directory refusal, delay, lockout, busy — with the same
//! `LoginRefused { retry_after }`; the reason goes only to the audit log.
//! The directory backends already make an unknown user cost what a wrong
//! password costs (the embedded backend verifies a dummy hash, LDAP binds a
//! DN that does not exist). On top, [`Ticket::answer_not_before`] gives the
//! instant before which the daemon must not answer an admitted attempt
//! (admission plus `response_floor`), so whatever the directory's path,
//! every answer to an admitted attempt leaves at the same time unless the
//! directory was slower than the floor. Refusals from [`LoginGuard::admit`]
//! are answered at once: the guard's state is the same for an unknown user
//! and a known one, so their timing reveals nothing about the directory.
//!
//! # The daemon's login path
//!
//! ```
//! use std::net::IpAddr;
//! use std::time::{Duration, Instant, SystemTime};
//!
//! use addrd::audit::{AuditEvent, AuditLog, LoginRefusal};
//! use addrd::directory::{AuthError, RefusalReason};
//! use addrd::guard::{Admission, GuardConfig, LoginGuard, Outcome};
//! use overlay_proto::handshake::PublicKey;
//!
//! /// What goes back to the client: a lease, or one refusal shape for all.
//! #[derive(Debug, PartialEq)]
//! enum Answer {
//!     LoginOk { serial: u64 },
//!     LoginRefused { retry_after: Duration },
//! }
//!
//! /// One login; returns the answer and the instant before which it must
//! /// not be sent. `ask` stands for `Directory::authenticate`.
//! fn login(
//!     guard: &mut LoginGuard,
//!     audit: &AuditLog,
//!     (user, source, key): (&str, IpAddr, &PublicKey),
//!     ask: impl FnOnce() -> Result<u64, AuthError>,
//! ) -> (Answer, Instant) {
//!     let now = Instant::now();
//!     let ticket = match guard.admit(now, user, source) {
//!         Admission::Proceed(ticket) => ticket,
//!         Admission::Wait { retry_after, reason } => {
//!             let event = AuditEvent::LoginRefused {
//!                 user, source, key: Some(key), reason: reason.into(), retry_after,
//!             };
//!             audit.record(SystemTime::now(), &event);
//!             return (Answer::LoginRefused { retry_after }, now);
//!         }
//!     };
//!     let answer_at = ticket.answer_not_before();
//!     let result = ask();
//!     let outcome = match &result {
//!         Ok(_) => Outcome::Accepted,
//!         Err(AuthError::Refused { .. }) => Outcome::Refused,
//!         Err(_) => Outcome::Unavailable,
//!     };
//!     let recorded = guard.record(Instant::now(), ticket, outcome);
//!     if let Some(lockout) = recorded.lockout {
//!         let event = AuditEvent::LockoutStarted {
//!             user, source, period: lockout.period, count: lockout.count,
//!         };
//!         audit.record(SystemTime::now(), &event);
//!     }
//!     let (answer, reason) = match result {
//!         Ok(serial) => {
//!             let event = AuditEvent::LoginAccepted { user, source, key, serial };
//!             audit.record(SystemTime::now(), &event);
//!             return (Answer::LoginOk { serial }, answer_at);
//!         }
//!         Err(AuthError::Refused { reason }) => (recorded.retry_after, reason.into()),
//!         Err(_) => (guard.config().busy_retry_after, LoginRefusal::DirectoryUnavailable),
//!     };
//!     let event = AuditEvent::LoginRefused {
//!         user, source, key: Some(key), reason, retry_after: answer,
//!     };
//!     audit.record(SystemTime::now(), &event);
//!     (Answer::LoginRefused { retry_after: answer }, answer_at)
//! }
//!
//! let mut guard = LoginGuard::new(GuardConfig::default());
//! let audit = AuditLog::tracing_only();
//! let client = ("Alice", "192.0.2.1".parse().unwrap(), &PublicKey([1; 32]));
//! let wrong = || Err(AuthError::Refused { reason: RefusalReason::WrongPassword });
//! let (answer, _) = login(&mut guard, &audit, client, wrong);
//! assert_eq!(answer, Answer::LoginRefused { retry_after: Duration::from_secs(1) });
//! // At once again, even with the right password: wait.
//! let (answer, _) = login(&mut guard, &audit, client, || Ok(7));
//! assert!(matches!(answer, Answer::LoginRefused { .. }));
//! assert_eq!(audit.counters().events, 2);
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub use overlay_proto::ratelimit::SourceKey;

/// How often at most a full table is swept for entries to forget or evict.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Longest user key kept, in bytes. Longer names (which no directory
/// accepts) are cut at a character boundary, so memory per entry is
/// bounded.
pub const MAX_USER_KEY_BYTES: usize = 256;

/// How a count of consecutive refusals becomes a delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Refusals that cost no delay (0: the first refusal is delayed).
    pub free: u32,
    /// The delay after the first delayed refusal.
    pub base: Duration,
    /// The longest delay.
    pub cap: Duration,
}

impl Backoff {
    /// The delay after `refusals` consecutive refusals: zero up to `free`,
    /// then `base`, doubling per refusal, at most `cap`.
    pub fn delay(&self, refusals: u32) -> Duration {
        let Some(over) = refusals.checked_sub(self.free).filter(|&n| n > 0) else {
            return Duration::ZERO;
        };
        let shift = over.saturating_sub(1).min(63);
        self.base
            .checked_mul(1u32.checked_shl(shift).unwrap_or(u32::MAX))
            .unwrap_or(self.cap)
            .min(self.cap)
    }
}

/// Tuning of a [`LoginGuard`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardConfig {
    /// Delays per user (default: none free, 1 s doubling to 15 min).
    pub user_backoff: Backoff,
    /// Delays per source (default: 5 free, 1 s doubling to 5 min).
    pub source_backoff: Backoff,
    /// Consecutive refusals that lock a user out (default 10; 0 = never).
    pub lockout_threshold: u32,
    /// The first lockout's length (default 15 min); each further one
    /// without a success in between is twice as long.
    pub lockout_period: Duration,
    /// The longest lockout (default 24 h).
    pub max_lockout_period: Duration,
    /// Attempts from one source with the directory at once (default 8;
    /// 0 is taken as 1).
    pub max_pending_per_source: u32,
    /// Attempts for one user with the directory at once (default 2; 0 is
    /// taken as 1).
    pub max_pending_per_user: u32,
    /// Attempts with the directory at once in all (default 16: 1 GiB of
    /// Argon2 memory at the embedded backend's default cost; 0 is taken
    /// as 1).
    pub max_pending: u32,
    /// After this long an admitted attempt that was never recorded stops
    /// counting as pending (default 60 s).
    pub attempt_timeout: Duration,
    /// `retry_after` when an attempt waits for a pending one or for room in
    /// a full table (default 1 s).
    pub busy_retry_after: Duration,
    /// Refusals are forgotten after this long without one, unless a
    /// lockout or delay is still running (default 24 h).
    pub forget_after: Duration,
    /// Users tracked at once (default 65,536).
    pub max_users: usize,
    /// Sources tracked at once (default 65,536).
    pub max_sources: usize,
    /// The earliest an admitted attempt is answered, counted from its
    /// admission (default 1 s). See [`Ticket::answer_not_before`].
    pub response_floor: Duration,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            user_backoff: Backoff {
                free: 0,
                base: Duration::from_secs(1),
                cap: Duration::from_secs(15 * 60),
            },
            source_backoff: Backoff {
                free: 5,
                base: Duration::from_secs(1),
                cap: Duration::from_secs(5 * 60),
            },
            lockout_threshold: 10,
            lockout_period: Duration::from_secs(15 * 60),
            max_lockout_period: Duration::from_secs(24 * 3600),
            max_pending_per_source: 8,
            max_pending_per_user: 2,
            max_pending: 16,
            attempt_timeout: Duration::from_secs(60),
            busy_retry_after: Duration::from_secs(1),
            forget_after: Duration::from_secs(24 * 3600),
            max_users: 65_536,
            max_sources: 65_536,
            response_floor: Duration::from_secs(1),
        }
    }
}

/// What [`LoginGuard::admit`] decided.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "an admitted attempt must be recorded"]
pub enum Admission {
    /// Ask the directory, then pass the ticket to [`LoginGuard::record`].
    Proceed(Ticket),
    /// Refuse now, without asking the directory.
    Wait {
        /// What the client is told: try again after this long.
        retry_after: Duration,
        /// Why, for the audit log and counters only.
        reason: WaitReason,
    },
}

/// Why an attempt was refused before the directory was asked: for the
/// audit log and counters, never for the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WaitReason {
    /// The user's delay after its last refusal has not passed.
    UserDelay,
    /// The source's delay after its last refusal has not passed.
    SourceDelay,
    /// The user is locked out.
    LockedOut,
    /// Too many attempts are pending: from the source, for the user, or
    /// in all.
    Busy,
    /// The tables are full of entries that may not be evicted.
    TableFull,
}

impl WaitReason {
    /// Stable snake_case label for counters and audit lines.
    pub const fn as_str(self) -> &'static str {
        match self {
            WaitReason::UserDelay => "user_delay",
            WaitReason::SourceDelay => "source_delay",
            WaitReason::LockedOut => "locked_out",
            WaitReason::Busy => "busy",
            WaitReason::TableFull => "table_full",
        }
    }
}

/// An admitted attempt. Not `Clone`: [`LoginGuard::record`] consumes it, so
/// an attempt is recorded at most once.
#[derive(Debug, PartialEq, Eq)]
pub struct Ticket {
    id: u64,
    user: Box<str>,
    source: SourceKey,
    admitted_at: Instant,
    answer_not_before: Instant,
}

impl Ticket {
    /// The normalised user name the attempt counts against.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The source the attempt counts against.
    pub fn source(&self) -> SourceKey {
        self.source
    }

    /// When the attempt was admitted.
    pub fn admitted_at(&self) -> Instant {
        self.admitted_at
    }

    /// The daemon must not send the answer to this attempt before this
    /// instant: admission plus the configured response floor. Holding
    /// every answer (accepted or refused, whatever the reason) until then
    /// hides how long the directory took.
    pub fn answer_not_before(&self) -> Instant {
        self.answer_not_before
    }
}

/// What the directory said about an admitted attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The password was accepted.
    Accepted,
    /// The login was refused: unknown user, wrong or empty password,
    /// disabled account — all alike, on purpose.
    Refused,
    /// The directory could not be asked: neither a success nor a refusal.
    Unavailable,
}

/// What [`LoginGuard::record`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// For a refusal: what the client is told (the longer of the user's
    /// and the source's delay, or the lockout's remainder). Zero after a
    /// success.
    pub retry_after: Duration,
    /// This refusal started a lockout.
    pub lockout: Option<Lockout>,
}

/// A lockout that has just started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lockout {
    /// When it ends.
    pub until: Instant,
    /// How long it lasts.
    pub period: Duration,
    /// How many lockouts in a row, this one included.
    pub count: u32,
}

/// Something the daemon should audit that happened without a call of its
/// own (see [`LoginGuard::poll_event`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GuardEvent {
    /// A user's lockout ended.
    LockoutEnded {
        /// The normalised user name.
        user: String,
    },
}

/// Counters of a [`LoginGuard`], by stable label ([`GuardCounters::labelled`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardCounters {
    /// Attempts admitted.
    pub admitted: u64,
    /// Attempts refused because a user's or source's delay was running.
    pub delayed: u64,
    /// Attempts refused because the user was locked out.
    pub locked_out: u64,
    /// Attempts refused because too many were pending.
    pub busy: u64,
    /// Attempts refused because the tables were full of live entries.
    pub table_full: u64,
    /// Attempts recorded as accepted.
    pub accepted: u64,
    /// Attempts recorded as refused.
    pub refused: u64,
    /// Attempts recorded with the directory unavailable.
    pub unavailable: u64,
    /// Lockouts started.
    pub lockouts_started: u64,
    /// Lockouts that ran to their end.
    pub lockouts_ended: u64,
    /// Pending attempts dropped after `attempt_timeout` without a record.
    pub abandoned: u64,
    /// Entries forgotten because they had nothing left to remember.
    pub forgotten: u64,
    /// Idle entries evicted from a full table (refusals lost).
    pub evictions: u64,
    /// Outcomes that could not be kept (entry gone and table full).
    pub unrecorded: u64,
}

impl GuardCounters {
    /// Every counter with its stable snake_case label.
    pub fn labelled(&self) -> [(&'static str, u64); 14] {
        [
            ("admitted", self.admitted),
            ("delayed", self.delayed),
            ("locked_out", self.locked_out),
            ("busy", self.busy),
            ("table_full", self.table_full),
            ("accepted", self.accepted),
            ("refused", self.refused),
            ("unavailable", self.unavailable),
            ("lockouts_started", self.lockouts_started),
            ("lockouts_ended", self.lockouts_ended),
            ("abandoned", self.abandoned),
            ("forgotten", self.forgotten),
            ("evictions", self.evictions),
            ("unrecorded", self.unrecorded),
        ]
    }
}

/// The login guard. See the module documentation.
#[derive(Debug)]
pub struct LoginGuard {
    config: GuardConfig,
    users: Table<Box<str>>,
    sources: Table<SourceKey>,
    /// Lockout ends, for [`LoginGuard::poll_timeout`] and the events.
    lockout_ends: BTreeMap<(Instant, u64), Box<str>>,
    /// Every pending attempt: ticket id → admitted at.
    pending: BTreeMap<u64, Instant>,
    events: VecDeque<GuardEvent>,
    next_id: u64,
    counters: GuardCounters,
}

impl LoginGuard {
    /// A guard with no state.
    pub fn new(config: GuardConfig) -> LoginGuard {
        LoginGuard {
            config,
            users: Table::new(config.max_users),
            sources: Table::new(config.max_sources),
            lockout_ends: BTreeMap::new(),
            pending: BTreeMap::new(),
            events: VecDeque::new(),
            next_id: 0,
            counters: GuardCounters::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &GuardConfig {
        &self.config
    }

    /// Decide whether a login attempt by `user` from `source` may ask the
    /// directory now. Call before anything else is done for the attempt.
    pub fn admit(&mut self, now: Instant, user: &str, source: IpAddr) -> Admission {
        self.handle_timeout(now);
        let user = normalise_user(user);
        let source = SourceKey::of(source);
        let timeout = self.config.attempt_timeout;

        // The longest wait wins: a lockout over a delay over busy.
        let mut wait: Option<(Duration, WaitReason)> = None;
        let mut consider = |remaining: Duration, reason: WaitReason| {
            if !remaining.is_zero() && wait.is_none_or(|(w, _)| remaining > w) {
                wait = Some((remaining, reason));
            }
        };
        let forget_after = self.config.forget_after;
        let mut abandoned = 0;
        let mut forgotten = 0;
        if let Some(entry) = self.sources.map.get_mut(&source) {
            abandoned += entry.drop_abandoned(now, timeout);
            forgotten += entry.forget_if_quiet(now, forget_after);
            consider(entry.delay_remaining(now), WaitReason::SourceDelay);
            if entry.pending.len() >= pending_cap(self.config.max_pending_per_source) {
                consider(self.config.busy_retry_after, WaitReason::Busy);
            }
        }
        if let Some(entry) = self.users.map.get_mut(&user) {
            abandoned += entry.drop_abandoned(now, timeout);
            forgotten += entry.forget_if_quiet(now, forget_after);
            consider(entry.lock_remaining(now), WaitReason::LockedOut);
            consider(entry.delay_remaining(now), WaitReason::UserDelay);
            if entry.pending.len() >= pending_cap(self.config.max_pending_per_user) {
                consider(self.config.busy_retry_after, WaitReason::Busy);
            }
        }
        // Abandoned attempts were counted with their entries above.
        self.pending
            .retain(|_, &mut at| now.saturating_duration_since(at) < timeout);
        if self.pending.len() >= pending_cap(self.config.max_pending) {
            consider(self.config.busy_retry_after, WaitReason::Busy);
        }
        self.counters.abandoned += abandoned;
        self.counters.forgotten += forgotten;
        if let Some((retry_after, reason)) = wait {
            return self.wait(retry_after, reason);
        }

        let (Some(_), Some(_)) = (
            self.sources
                .make_room(now, &source, forget_after, &mut self.counters),
            self.users
                .make_room(now, &user, forget_after, &mut self.counters),
        ) else {
            return self.wait(self.config.busy_retry_after, WaitReason::TableFull);
        };
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(id, now);
        self.sources
            .map
            .entry(source)
            .or_default()
            .pending
            .push((id, now));
        self.users
            .map
            .entry(user.clone())
            .or_default()
            .pending
            .push((id, now));
        self.counters.admitted += 1;
        Admission::Proceed(Ticket {
            id,
            user,
            source,
            admitted_at: now,
            answer_not_before: answer_not_before(now, self.config.response_floor),
        })
    }

    /// Record what the directory said about an admitted attempt. For a
    /// refusal, [`Recorded::retry_after`] is what the client is told.
    pub fn record(&mut self, now: Instant, ticket: Ticket, outcome: Outcome) -> Recorded {
        self.handle_timeout(now);
        let forget_after = self.config.forget_after;
        let mut recorded = Recorded {
            retry_after: Duration::ZERO,
            lockout: None,
        };
        self.pending.remove(&ticket.id);
        match outcome {
            Outcome::Accepted => self.counters.accepted += 1,
            Outcome::Refused => self.counters.refused += 1,
            Outcome::Unavailable => self.counters.unavailable += 1,
        }

        // The entries were created at admission and are not evicted while
        // the attempt is pending; they may be gone only if it was
        // abandoned, and are then made again if there is room.
        let have_source = self
            .sources
            .make_room(now, &ticket.source, forget_after, &mut self.counters)
            .is_some();
        if have_source {
            let entry = self.sources.map.entry(ticket.source).or_default();
            entry.pending.retain(|&(id, _)| id != ticket.id);
            if outcome == Outcome::Refused {
                entry.refuse(now, &self.config.source_backoff);
                recorded.retry_after = entry.delay_remaining(now);
            }
        }
        let have_user = self
            .users
            .make_room(now, &ticket.user, forget_after, &mut self.counters)
            .is_some();
        if have_user {
            let entry = self.users.map.entry(ticket.user.clone()).or_default();
            entry.pending.retain(|&(id, _)| id != ticket.id);
            match outcome {
                Outcome::Accepted => entry.succeed(),
                Outcome::Refused => {
                    entry.refuse(now, &self.config.user_backoff);
                    let threshold = self.config.lockout_threshold;
                    if threshold > 0 && entry.refusals >= threshold {
                        let lockout = entry.lock(now, &self.config);
                        recorded.lockout = Some(lockout);
                        self.counters.lockouts_started += 1;
                        self.lockout_ends
                            .insert((lockout.until, ticket.id), ticket.user.clone());
                    }
                    recorded.retry_after = recorded
                        .retry_after
                        .max(entry.delay_remaining(now))
                        .max(entry.lock_remaining(now));
                }
                Outcome::Unavailable => {}
            }
        }
        if (!have_source || !have_user) && outcome != Outcome::Unavailable {
            self.counters.unrecorded += 1;
        }
        recorded
    }

    /// End the lockouts due by `now` (queueing [`GuardEvent::LockoutEnded`]).
    /// [`LoginGuard::admit`] and [`LoginGuard::record`] call it too.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(entry) = self.lockout_ends.first_entry() {
            let (until, _) = *entry.key();
            if until > now {
                break;
            }
            let user = entry.remove();
            if let Some(state) = self.users.map.get(&user) {
                // Kept (in the past) so that forgetting counts from the
                // lockout's end; a success clears it.
                if state.locked_until == Some(until) {
                    self.counters.lockouts_ended += 1;
                    self.events.push_back(GuardEvent::LockoutEnded {
                        user: user.into_string(),
                    });
                }
            }
        }
    }

    /// When [`LoginGuard::handle_timeout`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.lockout_ends.keys().next().map(|&(until, _)| until)
    }

    /// The next event to audit.
    pub fn poll_event(&mut self) -> Option<GuardEvent> {
        self.events.pop_front()
    }

    /// Whether `user` is locked out at `now`, and until when.
    pub fn locked_until(&self, now: Instant, user: &str) -> Option<Instant> {
        self.users
            .map
            .get(&normalise_user(user))
            .and_then(|e| e.locked_until)
            .filter(|&until| until > now)
    }

    /// Users and sources tracked now.
    pub fn len(&self) -> (usize, usize) {
        (self.users.map.len(), self.sources.map.len())
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.users.map.is_empty() && self.sources.map.is_empty()
    }

    /// A copy of the counters.
    pub fn counters(&self) -> GuardCounters {
        self.counters
    }

    fn wait(&mut self, retry_after: Duration, reason: WaitReason) -> Admission {
        match reason {
            WaitReason::UserDelay | WaitReason::SourceDelay => self.counters.delayed += 1,
            WaitReason::LockedOut => self.counters.locked_out += 1,
            WaitReason::Busy => self.counters.busy += 1,
            WaitReason::TableFull => self.counters.table_full += 1,
        }
        Admission::Wait {
            retry_after,
            reason,
        }
    }
}

/// The instant before which the answer to an attempt that started at
/// `started` must not be sent, with a response floor of `floor`. An
/// instant that cannot be represented is clamped to `started` plus a year.
pub fn answer_not_before(started: Instant, floor: Duration) -> Instant {
    started
        .checked_add(floor)
        .or_else(|| started.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(started)
}

/// A pending ceiling as a length: at least 1.
fn pending_cap(configured: u32) -> usize {
    usize::try_from(configured.max(1)).unwrap_or(usize::MAX)
}

/// The key a user name counts against: trimmed, lower-cased (Unicode
/// simple lower case, like LDAP's case-insensitive `uid` match), at most
/// [`MAX_USER_KEY_BYTES`] bytes.
pub fn normalise_user(user: &str) -> Box<str> {
    let mut key = user.trim().to_lowercase();
    if key.len() > MAX_USER_KEY_BYTES {
        let mut cut = MAX_USER_KEY_BYTES;
        while !key.is_char_boundary(cut) {
            cut -= 1;
        }
        key.truncate(cut);
    }
    key.into_boxed_str()
}

/// One bounded table of entries.
#[derive(Debug)]
struct Table<K> {
    map: HashMap<K, Entry>,
    capacity: usize,
    last_sweep: Option<Instant>,
}

impl<K: Clone + Eq + Hash> Table<K> {
    fn new(capacity: usize) -> Self {
        Table {
            map: HashMap::new(),
            capacity: capacity.max(1),
            last_sweep: None,
        }
    }

    /// Make sure `key` has (or may get) an entry: `Some(())` if it is
    /// there or there is room, after forgetting and evicting if needed.
    fn make_room(
        &mut self,
        now: Instant,
        key: &K,
        forget_after: Duration,
        counters: &mut GuardCounters,
    ) -> Option<()> {
        if self.map.contains_key(key) || self.map.len() < self.capacity {
            return Some(());
        }
        if self
            .last_sweep
            .is_some_and(|last| now.saturating_duration_since(last) < SWEEP_INTERVAL)
        {
            return None;
        }
        self.last_sweep = Some(now);
        let before = self.map.len();
        self.map.retain(|_, e| !e.forgettable(now, forget_after));
        counters.forgotten += (before - self.map.len()) as u64;
        if self.map.len() >= self.capacity {
            let mut idle: Vec<(u32, u32, Option<Instant>, K)> = self
                .map
                .iter()
                .filter(|(_, e)| e.idle(now))
                .map(|(k, e)| (e.lockouts, e.refusals, e.last_refusal, k.clone()))
                .collect();
            idle.sort_unstable_by_key(|&(lockouts, refusals, last, _)| (lockouts, refusals, last));
            let goal = (self.capacity / 8).max(self.map.len() + 1 - self.capacity);
            for (.., k) in idle.into_iter().take(goal) {
                self.map.remove(&k);
                counters.evictions += 1;
            }
        }
        (self.map.len() < self.capacity).then_some(())
    }
}

/// What is remembered about one user or source.
#[derive(Debug, Default)]
struct Entry {
    /// Consecutive refusals (since the last success, lockout or forgetting).
    refusals: u32,
    last_refusal: Option<Instant>,
    /// No attempt admitted before this.
    next_allowed: Option<Instant>,
    /// Lockouts in a row (users only).
    lockouts: u32,
    locked_until: Option<Instant>,
    /// Admitted attempts not yet recorded: (ticket id, admitted at).
    pending: Vec<(u64, Instant)>,
}

impl Entry {
    fn delay_remaining(&self, now: Instant) -> Duration {
        self.next_allowed
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }

    fn lock_remaining(&self, now: Instant) -> Duration {
        self.locked_until
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }

    fn drop_abandoned(&mut self, now: Instant, timeout: Duration) -> u64 {
        let before = self.pending.len();
        self.pending
            .retain(|&(_, at)| now.saturating_duration_since(at) < timeout);
        (before - self.pending.len()) as u64
    }

    fn refuse(&mut self, now: Instant, backoff: &Backoff) {
        self.refusals = self.refusals.saturating_add(1);
        self.last_refusal = Some(now);
        let delay = backoff.delay(self.refusals);
        self.next_allowed = (!delay.is_zero()).then(|| answer_not_before(now, delay));
    }

    fn succeed(&mut self) {
        self.refusals = 0;
        self.lockouts = 0;
        self.next_allowed = None;
        self.locked_until = None;
    }

    fn lock(&mut self, now: Instant, config: &GuardConfig) -> Lockout {
        self.lockouts = self.lockouts.saturating_add(1);
        let shift = self.lockouts.saturating_sub(1).min(31);
        let period = config
            .lockout_period
            .checked_mul(1u32 << shift)
            .unwrap_or(config.max_lockout_period)
            .min(config.max_lockout_period);
        let until = answer_not_before(now, period);
        self.refusals = 0;
        self.next_allowed = None;
        self.locked_until = Some(until);
        Lockout {
            until,
            period,
            count: self.lockouts,
        }
    }

    /// Start afresh if [`Entry::forgettable`]; 1 if so.
    fn forget_if_quiet(&mut self, now: Instant, forget_after: Duration) -> u64 {
        let remembers = self.refusals > 0 || self.lockouts > 0;
        if remembers && self.forgettable(now, forget_after) {
            *self = Entry::default();
            1
        } else {
            0
        }
    }

    /// Nothing running: no delay, no lockout, nothing pending.
    fn idle(&self, now: Instant) -> bool {
        self.pending.is_empty()
            && self.delay_remaining(now).is_zero()
            && self.lock_remaining(now).is_zero()
    }

    /// Idle, and nothing worth remembering: no refusals or lockouts, or
    /// none for `forget_after`.
    fn forgettable(&self, now: Instant, forget_after: Duration) -> bool {
        if !self.idle(now) {
            return false;
        }
        let last = match (self.last_refusal, self.locked_until) {
            (a, b) if a.is_none() && b.is_none() => return true,
            (a, b) => a.max(b),
        };
        last.is_some_and(|t| now.saturating_duration_since(t) >= forget_after)
    }
}

#[cfg(test)]
mod tests;
