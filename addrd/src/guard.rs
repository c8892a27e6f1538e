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
mod tests {
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
}
