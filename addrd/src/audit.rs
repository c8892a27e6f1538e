//! The audit log: one structured line for every login, renewal, refusal,
//! revocation and lockout (DESIGN §7, issue #4).
//!
//! [`AuditLog::record`] writes each [`AuditEvent`] twice: as a tracing
//! event with target `audit` (so it reaches whatever log the daemon
//! keeps, with fields), and, when configured, as one JSON object per line
//! to a file of its own ([`AuditLog::open`]: created mode 0600, opened for
//! append, a file readable by others refused; [`AuditLog::reopen`] after
//! log rotation). Each line is handed to the kernel in one `write` as soon
//! as it is made; a failed write is counted
//! ([`AuditCounters::write_failures`]) and logged (at most once a minute),
//! never returned: the daemon's login path does not fail because a disk is
//! full, and the tracing line has already been emitted by then.
//!
//! Fields of a line (absent ones are left out):
//!
//! | field | meaning |
//! |---|---|
//! | `time` | RFC 3339, UTC, milliseconds |
//! | `event` | `login_accepted`, `login_refused`, `login_delayed`, `login_locked_out`, `renewal_granted`, `renewal_refused`, `revoked`, `lockout_started`, `lockout_ended` |
//! | `kind` | `revoked`: the entity's kind (`user`, `system`, `application`) |
//! | `user` | the name as given, sanitised (below) |
//! | `source` | the client's IP address |
//! | `key` | the client's static public key, base64 |
//! | `serial` | the lease serial (granted, or held at renewal) |
//! | `previous_serial` | at renewal: the serial renewed |
//! | `reason` | why a login or renewal was refused (a stable label) |
//! | `retry_after_ms` | what the client was told to wait |
//! | `lockout_until`, `lockout_seconds`, `lockout_count` | a lockout's end, length, and how many in a row |
//!
//! **No secrets.** No event has a field that could carry a password: the
//! reasons are enums, the names and keys have their own types. The
//! internal refusal reasons ([`RefusalReason`], [`WaitReason`]) appear
//! here and nowhere the client can see them.
//!
//! **Hostile names.** The user name is whatever a client typed. Before it
//! is logged, [`sanitise_user`] escapes backslashes, control characters
//! (NUL, newline, ESC of ANSI sequences…) and the invisible formatting
//! characters that reorder text (bidi overrides), and cuts it at
//! [`MAX_AUDIT_USER_CHARS`] characters, noting the full length: a name can
//! neither forge a line nor bloat one.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use overlay_proto::handshake::PublicKey;
use serde::Serialize;

use crate::directory::RefusalReason;
use crate::guard::{GuardEvent, WaitReason};

/// At most one error line per this many seconds about failed writes.
pub const WRITE_FAILURE_LOG_INTERVAL_SECS: u64 = 60;

/// Characters of a user name kept in an audit line; the rest is cut.
pub const MAX_AUDIT_USER_CHARS: usize = 64;

/// One thing to audit. See the module documentation for the fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditEvent<'a> {
    /// A login was accepted and a lease granted.
    LoginAccepted {
        /// The user name as given.
        user: &'a str,
        /// Where the request came from.
        source: IpAddr,
        /// The client's static key, the lease's key.
        key: &'a PublicKey,
        /// The granted lease's serial.
        serial: u64,
    },
    /// A login was refused, by the directory or by the guard.
    LoginRefused {
        /// The user name as given.
        user: &'a str,
        /// Where the request came from.
        source: IpAddr,
        /// The client's static key, when the session established it.
        key: Option<&'a PublicKey>,
        /// Why (audit only).
        reason: LoginRefusal,
        /// What the client was told to wait.
        retry_after: Duration,
    },
    /// A lease was renewed.
    RenewalGranted {
        /// The lease holder's name.
        user: &'a str,
        /// Where the request came from.
        source: IpAddr,
        /// The holder's static key.
        key: &'a PublicKey,
        /// The new lease's serial.
        serial: u64,
        /// The serial of the lease that was renewed.
        previous_serial: u64,
    },
    /// A renewal was refused.
    RenewalRefused {
        /// The lease holder's name.
        user: &'a str,
        /// Where the request came from.
        source: IpAddr,
        /// The holder's static key.
        key: &'a PublicKey,
        /// The serial of the lease presented.
        serial: u64,
        /// Why.
        reason: RenewalRefusal,
    },
    /// `addrd revoke NAME`: further renewals refused.
    Revoked {
        /// The kind of entity revoked (a user, a system, an application).
        kind: overlay_proto::lease::EntityKind,
        /// The entity's name.
        user: &'a str,
        /// The key revoked, when one key (not the whole user) was.
        key: Option<&'a PublicKey>,
    },
    /// A user was locked out after too many refusals.
    LockoutStarted {
        /// The user name (as the guard normalised it).
        user: &'a str,
        /// The source of the refusal that started it.
        source: IpAddr,
        /// How long it lasts (from the event's time).
        period: Duration,
        /// Lockouts in a row, this one included.
        count: u32,
    },
    /// A lockout ran out.
    LockoutEnded {
        /// The user name (as the guard normalised it).
        user: &'a str,
    },
}

/// Why a login was refused, for the audit log only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LoginRefusal {
    /// The directory refused the credentials.
    Directory(RefusalReason),
    /// The guard refused the attempt before the directory was asked.
    Guard(WaitReason),
    /// The directory could not be asked.
    DirectoryUnavailable,
}

impl LoginRefusal {
    /// Stable snake_case label.
    pub const fn as_str(self) -> &'static str {
        match self {
            LoginRefusal::Directory(reason) => reason.as_str(),
            LoginRefusal::Guard(reason) => reason.as_str(),
            LoginRefusal::DirectoryUnavailable => "directory_unavailable",
        }
    }

    /// The event name of a login refused for this reason.
    const fn event(self) -> &'static str {
        match self {
            LoginRefusal::Guard(WaitReason::LockedOut) => "login_locked_out",
            LoginRefusal::Guard(_) => "login_delayed",
            LoginRefusal::Directory(_) | LoginRefusal::DirectoryUnavailable => "login_refused",
        }
    }
}

impl From<RefusalReason> for LoginRefusal {
    fn from(reason: RefusalReason) -> Self {
        LoginRefusal::Directory(reason)
    }
}

impl From<WaitReason> for LoginRefusal {
    fn from(reason: WaitReason) -> Self {
        LoginRefusal::Guard(reason)
    }
}

impl<'a> From<&'a GuardEvent> for AuditEvent<'a> {
    fn from(event: &'a GuardEvent) -> Self {
        match event {
            GuardEvent::LockoutEnded { user } => AuditEvent::LockoutEnded { user },
        }
    }
}

/// Why a renewal was refused, for the audit log only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RenewalRefusal {
    /// The lease presented has ended.
    LeaseExpired,
    /// The session is older than the maximum session age.
    SessionTooOld,
    /// The user or key was revoked.
    Revoked,
    /// The account is disabled now.
    Disabled,
    /// The user is no longer in the directory.
    Removed,
    /// The lease presented is not one this authority issued to that key.
    UnknownLease,
    /// The directory could not be asked.
    DirectoryUnavailable,
}

impl RenewalRefusal {
    /// Stable snake_case label.
    pub const fn as_str(self) -> &'static str {
        match self {
            RenewalRefusal::LeaseExpired => "lease_expired",
            RenewalRefusal::SessionTooOld => "session_too_old",
            RenewalRefusal::Revoked => "revoked",
            RenewalRefusal::Disabled => "disabled",
            RenewalRefusal::Removed => "removed",
            RenewalRefusal::UnknownLease => "unknown_lease",
            RenewalRefusal::DirectoryUnavailable => "directory_unavailable",
        }
    }
}

/// The audit log file could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// Opening (or creating) the file failed.
    #[error("audit log {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The path is not a regular file.
    #[error("audit log {path}: not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The file exists and others may read or write it.
    #[error("audit log {path}: mode {mode:04o} lets others read it; make it 0600")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// Counters of an [`AuditLog`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditCounters {
    /// Events recorded (each one reached tracing).
    pub events: u64,
    /// Lines written to the file.
    pub lines_written: u64,
    /// Lines the file did not take.
    pub write_failures: u64,
}

impl AuditCounters {
    /// Every counter with its stable snake_case label.
    pub fn labelled(&self) -> [(&'static str, u64); 3] {
        [
            ("events", self.events),
            ("lines_written", self.lines_written),
            ("write_failures", self.write_failures),
        ]
    }
}

/// The audit log. Shared by reference between the daemon's tasks.
pub struct AuditLog {
    file: Option<Mutex<Box<dyn Write + Send>>>,
    /// The file's path, for [`AuditLog::reopen`].
    path: Option<PathBuf>,
    events: AtomicU64,
    lines_written: AtomicU64,
    write_failures: AtomicU64,
    /// When (seconds since the epoch, plus one; 0 = never) a failed write
    /// was last logged.
    failure_logged_at: AtomicU64,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("file", &self.file.is_some())
            .field("counters", &self.counters())
            .finish()
    }
}

impl AuditLog {
    /// An audit log to tracing only.
    pub fn tracing_only() -> AuditLog {
        AuditLog::with(None)
    }

    /// An audit log to tracing and to the JSON-lines file `path`: created
    /// with mode 0600 if absent, appended to if present. A file that is
    /// not a regular file, or that group or others may access, is refused.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        let mut log = AuditLog::to_writer(open_file(path)?);
        log.path = Some(path.to_owned());
        Ok(log)
    }

    /// Open the file again at its path, after log rotation moved it away
    /// (SIGHUP). Until this returns, lines go to the old file. Without a
    /// file path ([`AuditLog::tracing_only`], [`AuditLog::to_writer`])
    /// there is nothing to reopen. On an error the old file stays in use.
    pub fn reopen(&self) -> Result<(), AuditError> {
        let (Some(path), Some(file)) = (&self.path, &self.file) else {
            return Ok(());
        };
        let new = open_file(path)?;
        *file.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Box::new(new);
        Ok(())
    }

    /// An audit log to tracing and to `writer`, one JSON line per `write`
    /// (a pipe to a log shipper, a device; tests).
    pub fn to_writer(writer: impl Write + Send + 'static) -> AuditLog {
        AuditLog::with(Some(Mutex::new(Box::new(writer))))
    }

    fn with(file: Option<Mutex<Box<dyn Write + Send>>>) -> AuditLog {
        AuditLog {
            file,
            path: None,
            events: AtomicU64::new(0),
            lines_written: AtomicU64::new(0),
            write_failures: AtomicU64::new(0),
            failure_logged_at: AtomicU64::new(0),
        }
    }

    /// Record `event`, which happened at `now`. Never fails: see the module
    /// documentation.
    pub fn record(&self, now: SystemTime, event: &AuditEvent<'_>) {
        let line = Line::of(now, event);
        self.events.fetch_add(1, Ordering::Relaxed);
        line.trace();
        let Some(file) = &self.file else {
            return;
        };
        let mut bytes = match serde_json::to_vec(&line) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.write_failed(now, &e);
                return;
            }
        };
        bytes.push(b'\n');
        // A writer that panicked mid-line leaves nothing to protect.
        let mut file = file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match file.write_all(&bytes).and_then(|()| file.flush()) {
            Ok(()) => {
                self.lines_written.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.write_failed(now, &e),
        }
    }

    /// A copy of the counters.
    pub fn counters(&self) -> AuditCounters {
        AuditCounters {
            events: self.events.load(Ordering::Relaxed),
            lines_written: self.lines_written.load(Ordering::Relaxed),
            write_failures: self.write_failures.load(Ordering::Relaxed),
        }
    }

    /// Count a failed write; log it unless one was logged less than
    /// [`WRITE_FAILURE_LOG_INTERVAL_SECS`] ago (a full disk under a flood of
    /// refusals must not double the log).
    fn write_failed(&self, now: SystemTime, error: &dyn std::fmt::Display) {
        let failures = self.write_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let stamp = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_add(1);
        let last = self.failure_logged_at.load(Ordering::Relaxed);
        let due = last == 0 || stamp >= last.saturating_add(WRITE_FAILURE_LOG_INTERVAL_SECS);
        if !due
            || self
                .failure_logged_at
                .compare_exchange(last, stamp, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        tracing::error!(
            target: "audit",
            %error,
            failures,
            "audit file write failed; the event is in this log only"
        );
    }
}

/// Open (or create, mode 0600) the audit file for append; refuse what is
/// not a regular file or what group or others may access.
fn open_file(path: &Path) -> Result<File, AuditError> {
    let open_error = |source| AuditError::Open {
        path: path.to_owned(),
        source,
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(open_error)?;
    let meta = file.metadata().map_err(open_error)?;
    if !meta.is_file() {
        return Err(AuditError::NotAFile {
            path: path.to_owned(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(AuditError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(file)
}

/// `user` made safe to log: backslashes doubled; control characters and
/// invisible formatting characters written `\u{…}`; at most
/// [`MAX_AUDIT_USER_CHARS`] characters kept, with `…[N bytes]` (the
/// original length) added when cut.
pub fn sanitise_user(user: &str) -> String {
    let mut out = String::with_capacity(user.len().min(MAX_AUDIT_USER_CHARS * 2));
    let mut chars = user.chars();
    for c in chars.by_ref().take(MAX_AUDIT_USER_CHARS) {
        if c == '\\' {
            out.push_str("\\\\");
        } else if c.is_control() || is_invisible_format(c) {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    if chars.next().is_some() {
        let _ = write!(out, "…[{} bytes]", user.len());
    }
    out
}

/// Characters that change how the text around them is shown without
/// showing themselves: zero-width ones, bidi embeddings, overrides and
/// isolates, the byte order mark, soft hyphen, line/paragraph separators.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{61c}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
    )
}

/// One audit line, as serialised.
#[derive(Debug, Serialize)]
struct Line {
    time: String,
    event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    serial: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_serial: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lockout_until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lockout_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lockout_count: Option<u32>,
}

impl Line {
    fn of(now: SystemTime, event: &AuditEvent<'_>) -> Line {
        let mut line = Line {
            time: rfc3339(now),
            event: "",
            kind: None,
            user: None,
            source: None,
            key: None,
            serial: None,
            previous_serial: None,
            reason: None,
            retry_after_ms: None,
            lockout_until: None,
            lockout_seconds: None,
            lockout_count: None,
        };
        let key = |k: &PublicKey| base64::engine::general_purpose::STANDARD.encode(k.as_bytes());
        match *event {
            AuditEvent::LoginAccepted {
                user,
                source,
                key: k,
                serial,
            } => {
                line.event = "login_accepted";
                line.user = Some(sanitise_user(user));
                line.source = Some(source);
                line.key = Some(key(k));
                line.serial = Some(serial);
            }
            AuditEvent::LoginRefused {
                user,
                source,
                key: k,
                reason,
                retry_after,
            } => {
                line.event = reason.event();
                line.user = Some(sanitise_user(user));
                line.source = Some(source);
                line.key = k.map(key);
                line.reason = Some(reason.as_str());
                line.retry_after_ms =
                    Some(u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX));
            }
            AuditEvent::RenewalGranted {
                user,
                source,
                key: k,
                serial,
                previous_serial,
            } => {
                line.event = "renewal_granted";
                line.user = Some(sanitise_user(user));
                line.source = Some(source);
                line.key = Some(key(k));
                line.serial = Some(serial);
                line.previous_serial = Some(previous_serial);
            }
            AuditEvent::RenewalRefused {
                user,
                source,
                key: k,
                serial,
                reason,
            } => {
                line.event = "renewal_refused";
                line.user = Some(sanitise_user(user));
                line.source = Some(source);
                line.key = Some(key(k));
                line.serial = Some(serial);
                line.reason = Some(reason.as_str());
            }
            AuditEvent::Revoked { kind, user, key: k } => {
                line.event = "revoked";
                line.kind = Some(kind.as_str());
                line.user = Some(sanitise_user(user));
                line.key = k.map(key);
            }
            AuditEvent::LockoutStarted {
                user,
                source,
                period,
                count,
            } => {
                line.event = "lockout_started";
                line.user = Some(sanitise_user(user));
                line.source = Some(source);
                line.lockout_until = now.checked_add(period).map(rfc3339);
                line.lockout_seconds = Some(period.as_secs());
                line.lockout_count = Some(count);
            }
            AuditEvent::LockoutEnded { user } => {
                line.event = "lockout_ended";
                line.user = Some(sanitise_user(user));
            }
        }
        line
    }

    /// The tracing event (target `audit`): a lockout is a warning, the rest
    /// is information.
    fn trace(&self) {
        macro_rules! emit {
            ($level:expr) => {
                tracing::event!(
                    target: "audit",
                    $level,
                    time = %self.time,
                    event = self.event,
                    user = self.user.as_deref(),
                    source = self.source.map(tracing::field::display),
                    key = self.key.as_deref(),
                    serial = self.serial,
                    previous_serial = self.previous_serial,
                    reason = self.reason,
                    retry_after_ms = self.retry_after_ms,
                    lockout_until = self.lockout_until.as_deref(),
                    lockout_seconds = self.lockout_seconds,
                    lockout_count = self.lockout_count,
                    "audit"
                )
            };
        }
        if self.event == "lockout_started" {
            emit!(tracing::Level::WARN);
        } else {
            emit!(tracing::Level::INFO);
        }
    }
}

/// `t` in RFC 3339, UTC, to the millisecond. A time `time` cannot format
/// (beyond year 9999) is written as seconds since the epoch.
fn rfc3339(t: SystemTime) -> String {
    let millis: i128 = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => i128::try_from(after.as_millis()).unwrap_or(i128::MAX),
        Err(before) => i128::try_from(before.duration().as_millis()).map_or(i128::MIN, |m| -m),
    };
    time::OffsetDateTime::from_unix_timestamp_nanos(millis.saturating_mul(1_000_000))
        .ok()
        .and_then(|dt| {
            dt.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{}", millis.div_euclid(1000)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;
    use std::sync::Arc;

    const KEY: PublicKey = PublicKey([7; 32]);

    fn source() -> IpAddr {
        "2001:db8::42".parse().unwrap()
    }

    /// 2026-11-21T09:10:11.123Z
    fn at() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_252_211_123)
    }

    /// Every kind of event once.
    fn all_events() -> Vec<AuditEvent<'static>> {
        vec![
            AuditEvent::LoginAccepted {
                user: "alice",
                source: source(),
                key: &KEY,
                serial: 17,
            },
            AuditEvent::LoginRefused {
                user: "alice",
                source: source(),
                key: Some(&KEY),
                reason: LoginRefusal::Directory(RefusalReason::WrongPassword),
                retry_after: Duration::from_millis(2000),
            },
            AuditEvent::LoginRefused {
                user: "alice",
                source: source(),
                key: None,
                reason: LoginRefusal::Guard(WaitReason::UserDelay),
                retry_after: Duration::from_secs(4),
            },
            AuditEvent::LoginRefused {
                user: "alice",
                source: source(),
                key: None,
                reason: LoginRefusal::Guard(WaitReason::LockedOut),
                retry_after: Duration::from_secs(900),
            },
            AuditEvent::RenewalGranted {
                user: "alice",
                source: source(),
                key: &KEY,
                serial: 18,
                previous_serial: 17,
            },
            AuditEvent::RenewalRefused {
                user: "alice",
                source: source(),
                key: &KEY,
                serial: 18,
                reason: RenewalRefusal::Disabled,
            },
            AuditEvent::Revoked {
                kind: overlay_proto::lease::EntityKind::User,
                user: "alice",
                key: None,
            },
            AuditEvent::LockoutStarted {
                user: "alice",
                source: source(),
                period: Duration::from_secs(900),
                count: 1,
            },
            AuditEvent::LockoutEnded { user: "alice" },
        ]
    }

    /// A writer into shared memory.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Capture {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// A writer that always fails.
    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Serialises the tests that emit audit events. tracing caches each
    /// callsite's interest globally; a callsite first hit on a thread
    /// without a subscriber while another test thread installs its
    /// subscriber can stay disabled for that subscriber, losing events.
    fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
        static LOCK: Mutex<()> = Mutex::new(());
        LOCK.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` with tracing captured (plain text, no colours).
    fn with_tracing(f: impl FnOnce()) -> String {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        capture.text()
    }

    fn json_lines(text: &str) -> Vec<serde_json::Value> {
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect()
    }

    #[test]
    fn every_event_is_one_json_line_with_its_fields() {
        let _serial = one_at_a_time();
        let capture = Capture::default();
        let log = AuditLog::to_writer(capture.clone());
        for event in all_events() {
            log.record(at(), &event);
        }
        let text = capture.text();
        let lines = json_lines(&text);
        assert_eq!(lines.len(), 9, "{text}");
        let events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
        assert_eq!(
            events,
            [
                "login_accepted",
                "login_refused",
                "login_delayed",
                "login_locked_out",
                "renewal_granted",
                "renewal_refused",
                "revoked",
                "lockout_started",
                "lockout_ended"
            ]
        );
        for line in &lines {
            assert_eq!(line["time"], "2026-11-21T09:10:11.123Z");
            assert_eq!(line["user"], "alice");
        }
        let key_b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(lines[0]["key"], key_b64.as_str());
        assert_eq!(lines[0]["source"], "2001:db8::42");
        assert_eq!(lines[0]["serial"], 17);
        assert_eq!(lines[1]["reason"], "wrong_password");
        assert_eq!(lines[1]["retry_after_ms"], 2000);
        assert_eq!(lines[2]["reason"], "user_delay");
        assert!(lines[2].get("key").is_none(), "absent fields are left out");
        assert_eq!(lines[3]["reason"], "locked_out");
        assert_eq!(lines[4]["previous_serial"], 17);
        assert_eq!(lines[5]["reason"], "disabled");
        assert!(lines[6].get("source").is_none());
        assert_eq!(lines[6]["kind"], "user");
        assert_eq!(lines[7]["lockout_until"], "2026-11-21T09:25:11.123Z");
        assert_eq!(lines[7]["lockout_seconds"], 900);
        assert_eq!(lines[7]["lockout_count"], 1);
        // Nothing else than the documented fields, ever.
        let documented = [
            "time",
            "event",
            "kind",
            "user",
            "source",
            "key",
            "serial",
            "previous_serial",
            "reason",
            "retry_after_ms",
            "lockout_until",
            "lockout_seconds",
            "lockout_count",
        ];
        for line in &lines {
            for field in line.as_object().unwrap().keys() {
                assert!(documented.contains(&field.as_str()), "{field}");
            }
        }
        assert_eq!(
            log.counters(),
            AuditCounters {
                events: 9,
                lines_written: 9,
                write_failures: 0
            }
        );
    }

    #[test]
    fn events_reach_tracing_with_target_audit() {
        let _serial = one_at_a_time();
        let log = AuditLog::tracing_only();
        let text = with_tracing(|| {
            for event in all_events() {
                log.record(at(), &event);
            }
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 9, "{text}");
        for line in &lines {
            assert!(line.contains(" audit: "), "{line}");
        }
        assert!(lines[0].contains("INFO") && lines[0].contains("event=\"login_accepted\""));
        assert!(lines[0].contains("source=2001:db8::42") && lines[0].contains("serial=17"));
        assert!(lines[1].contains("reason=\"wrong_password\""));
        assert!(lines[7].contains("WARN") && lines[7].contains("event=\"lockout_started\""));
        assert_eq!(log.counters().events, 9);
    }

    #[test]
    fn hostile_names_are_escaped_and_capped() {
        assert_eq!(sanitise_user("alice"), "alice");
        assert_eq!(sanitise_user("élise"), "élise");
        assert_eq!(sanitise_user("a\0b"), "a\\u{0}b");
        assert_eq!(
            sanitise_user("bob\n{\"event\":\"login_accepted\"}"),
            "bob\\u{a}{\"event\":\"login_accepted\"}"
        );
        assert_eq!(
            sanitise_user("\u{1b}[31mred\u{1b}[0m"),
            "\\u{1b}[31mred\\u{1b}[0m"
        );
        assert_eq!(
            sanitise_user("a\\u{0}"),
            "a\\\\u{0}",
            "a literal escape stays distinct"
        );
        assert_eq!(sanitise_user("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(
            sanitise_user("\r\t\u{7f}\u{85}"),
            "\\u{d}\\u{9}\\u{7f}\\u{85}"
        );
        let huge = "x".repeat(10 * 1024);
        let cut = sanitise_user(&huge);
        assert_eq!(
            cut,
            format!("{}…[10240 bytes]", "x".repeat(MAX_AUDIT_USER_CHARS))
        );
        // The worst case stays small: every character escaped.
        let worst = sanitise_user(&"\u{10ffff}\0".repeat(5000));
        assert!(worst.len() < 600, "{} bytes", worst.len());
        assert_eq!(
            sanitise_user(&"x".repeat(MAX_AUDIT_USER_CHARS)).len(),
            MAX_AUDIT_USER_CHARS
        );
    }

    #[test]
    fn hostile_names_cannot_forge_or_bloat_lines() {
        let _serial = one_at_a_time();
        let capture = Capture::default();
        let log = AuditLog::to_writer(capture.clone());
        let names = [
            "mallory\0".to_owned(),
            "mallory\n{\"time\":\"x\",\"event\":\"login_accepted\",\"user\":\"admin\"}".to_owned(),
            "\u{1b}[2J\u{1b}[Hadmin".to_owned(),
            "m".repeat(10 * 1024),
        ];
        let traced = with_tracing(|| {
            for name in &names {
                log.record(
                    at(),
                    &AuditEvent::LoginRefused {
                        user: name,
                        source: source(),
                        key: None,
                        reason: LoginRefusal::Directory(RefusalReason::UnknownUser),
                        retry_after: Duration::from_secs(1),
                    },
                );
            }
        });
        let text = capture.text();
        let lines = json_lines(&text);
        assert_eq!(lines.len(), names.len(), "one line per event: {text}");
        for (line, name) in lines.iter().zip(&names) {
            assert_eq!(line["event"], "login_refused");
            assert_eq!(line["user"], sanitise_user(name).as_str());
        }
        assert!(text.len() < 2000, "{} bytes", text.len());
        assert!(!text.contains('\0') && !text.contains('\u{1b}'));
        // The tracing side: one line each, no raw control characters.
        assert_eq!(traced.lines().count(), names.len(), "{traced}");
        assert!(!traced.contains('\0') && !traced.contains('\u{1b}'));
        assert!(traced.len() < 3000, "{} bytes", traced.len());
    }

    #[test]
    fn the_file_is_created_0600_and_appended_to() {
        let _serial = one_at_a_time();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let event = AuditEvent::LockoutEnded { user: "alice" };
        {
            let log = AuditLog::open(&path).unwrap();
            log.record(at(), &event);
        }
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        {
            let log = AuditLog::open(&path).unwrap();
            log.record(at(), &event);
            assert_eq!(log.counters().lines_written, 1);
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(json_lines(&text).len(), 2, "appended, not truncated");

        // A file others may read is refused.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        match AuditLog::open(&path) {
            Err(AuditError::Permissions { mode, .. }) => assert_eq!(mode, 0o644),
            other => panic!("expected Permissions, got {other:?}"),
        }
        // A directory is not a log file; a missing parent is an error.
        assert!(matches!(
            AuditLog::open(dir.path()),
            Err(AuditError::Open { .. } | AuditError::NotAFile { .. })
        ));
        assert!(matches!(
            AuditLog::open(&dir.path().join("missing/audit.jsonl")),
            Err(AuditError::Open { .. })
        ));
    }

    #[test]
    fn reopen_follows_log_rotation() {
        let _serial = one_at_a_time();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let rotated = dir.path().join("audit.jsonl.1");
        let log = AuditLog::open(&path).unwrap();
        log.record(at(), &AuditEvent::LockoutEnded { user: "before" });
        std::fs::rename(&path, &rotated).unwrap();
        log.record(at(), &AuditEvent::LockoutEnded { user: "moved" });
        log.reopen().unwrap();
        log.record(at(), &AuditEvent::LockoutEnded { user: "after" });
        let users = |p: &Path| -> Vec<String> {
            json_lines(&std::fs::read_to_string(p).unwrap())
                .iter()
                .map(|l| l["user"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(users(&rotated), ["before", "moved"]);
        assert_eq!(users(&path), ["after"]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A failed reopen keeps the current file.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(log.reopen().is_err());
        log.record(at(), &AuditEvent::LockoutEnded { user: "kept" });
        assert_eq!(log.counters().write_failures, 0);
        assert!(AuditLog::tracing_only().reopen().is_ok());
    }

    #[test]
    fn a_failing_file_is_counted_and_the_event_still_traced() {
        let _serial = one_at_a_time();
        let log = AuditLog::to_writer(Broken);
        let event = AuditEvent::Revoked {
            kind: overlay_proto::lease::EntityKind::User,
            user: "alice",
            key: Some(&KEY),
        };
        let later = at() + Duration::from_secs(WRITE_FAILURE_LOG_INTERVAL_SECS);
        let traced = with_tracing(|| {
            log.record(at(), &event);
            log.record(at(), &event);
            log.record(later - Duration::from_secs(1), &event);
            log.record(later, &event);
        });
        assert_eq!(
            log.counters(),
            AuditCounters {
                events: 4,
                lines_written: 0,
                write_failures: 4
            }
        );
        // Every event is traced; the failure is logged once a minute.
        assert_eq!(traced.matches("event=\"revoked\"").count(), 4, "{traced}");
        let failures = traced.matches("audit file write failed").count();
        assert_eq!(failures, 2, "{traced}");
        assert!(traced.contains("disk on fire") && traced.contains("failures=4"));
    }

    #[test]
    fn a_full_device_is_counted_not_fatal() {
        let _serial = one_at_a_time();
        let Ok(full) = OpenOptions::new().append(true).open("/dev/full") else {
            eprintln!("SKIP: no /dev/full on this machine");
            return;
        };
        let log = AuditLog::to_writer(full);
        log.record(at(), &AuditEvent::LockoutEnded { user: "alice" });
        assert_eq!(log.counters().write_failures, 1);
        assert_eq!(log.counters().events, 1);
    }

    #[test]
    fn timestamps_are_rfc3339_utc_milliseconds() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at()), "2026-11-21T09:10:11.123Z");
        let before = SystemTime::UNIX_EPOCH - Duration::from_millis(1500);
        assert_eq!(rfc3339(before), "1969-12-31T23:59:58.5Z");
    }

    #[test]
    fn labels_are_stable() {
        assert_eq!(
            LoginRefusal::Directory(RefusalReason::UnknownUser).as_str(),
            "unknown_user"
        );
        assert_eq!(
            LoginRefusal::DirectoryUnavailable.as_str(),
            "directory_unavailable"
        );
        assert_eq!(RenewalRefusal::SessionTooOld.as_str(), "session_too_old");
        assert_eq!(AuditCounters::default().labelled()[2].0, "write_failures");
    }
}
