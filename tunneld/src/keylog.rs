//! The `dangerous-esp-keylog` file: the keys of every SA, for decrypting
//! captures with an independent tool.
//!
//! Writing this file defeats the encryption for anyone who can read it,
//! so it is off unless the configuration names it. The format is
//! docs/wire-format.md §7: one line per SA direction,
//! `<spi-hex> <in|out> <local-endpoint> <remote-endpoint> <key-hex> <salt-hex>`,
//! lower-case hex without `0x`. The file is opened for append and created
//! with mode 0600; an existing file with any permission bit for group or
//! others is refused, checked on the opened file. Each SA's two lines go
//! out in one `write` and the formatted text is wiped afterwards; the
//! file itself is not written through any buffer.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use overlay_proto::esp::EspKeyMaterial;
use overlay_proto::session::SaKeyLog;
use zeroize::Zeroize;

/// Room for the two lines of one SA, so formatting never reallocates and
/// leaves an unwiped copy of a key behind. A line is at most 8 + 3 + 2 ×
/// 53 (an IPv6 endpoint with scope) + 64 + 8 + 5 separators = 194 bytes.
const LINE_CAPACITY: usize = 512;

/// Mode of a newly created key log.
const CREATE_MODE: u32 = 0o600;

/// Why [`KeyLog::open`] or [`KeyLog::write`] failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyLogError {
    /// The file could not be opened, created or inspected.
    #[error("opening ESP key log {}: {source}", path.display())]
    Open {
        /// The key log.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The path exists and is not a regular file.
    #[error("ESP key log {} is not a regular file", path.display())]
    NotRegularFile {
        /// The key log.
        path: PathBuf,
    },
    /// The file exists and group or others have some permission on it.
    #[error(
        "ESP key log {} has mode {mode:04o}: group or others may access it; \
         it must be 0600 or stricter",
        path.display()
    )]
    InsecureMode {
        /// The key log.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Writing an SA's lines failed.
    #[error("writing ESP key log {}: {source}", path.display())]
    Write {
        /// The key log.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
}

impl KeyLogError {
    /// A stable snake_case label, for counters and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            KeyLogError::Open { .. } => "open",
            KeyLogError::NotRegularFile { .. } => "not_regular_file",
            KeyLogError::InsecureMode { .. } => "insecure_mode",
            KeyLogError::Write { .. } => "write",
        }
    }
}

/// An open ESP key log. See the module documentation.
pub struct KeyLog {
    file: File,
    path: PathBuf,
    /// The lines being written; wiped after every SA.
    line: String,
}

impl std::fmt::Debug for KeyLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl KeyLog {
    /// Opens `path` for append, creating it with mode 0600. An existing
    /// file must be a regular file of mode 0600 or stricter.
    pub fn open(path: &Path) -> Result<Self, KeyLogError> {
        let open_error = |source| KeyLogError::Open {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(CREATE_MODE)
            .open(path)
            .map_err(open_error)?;
        // Checked on the opened file, so it cannot be swapped in between.
        let meta = file.metadata().map_err(open_error)?;
        if !meta.is_file() {
            return Err(KeyLogError::NotRegularFile {
                path: path.to_owned(),
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyLogError::InsecureMode {
                path: path.to_owned(),
                mode,
            });
        }
        Ok(KeyLog {
            file,
            path: path.to_owned(),
            line: String::with_capacity(LINE_CAPACITY),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the `in` and the `out` line of one SA and flushes them.
    /// `local` is this host's UDP endpoint, `remote` the peer's at install
    /// time (`-` if it has none yet).
    pub fn write(
        &mut self,
        keys: &SaKeyLog,
        local: SocketAddr,
        remote: Option<SocketAddr>,
    ) -> Result<(), KeyLogError> {
        self.line.zeroize();
        format_line(
            &mut self.line,
            keys.inbound_spi,
            "in",
            local,
            remote,
            &keys.inbound,
        );
        format_line(
            &mut self.line,
            keys.outbound_spi,
            "out",
            local,
            remote,
            &keys.outbound,
        );
        let written = self
            .file
            .write_all(self.line.as_bytes())
            .and_then(|()| self.file.flush());
        self.line.zeroize();
        written.map_err(|source| KeyLogError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

impl Drop for KeyLog {
    fn drop(&mut self) {
        self.line.zeroize();
    }
}

/// Appends one key log line, with its newline, to `out`.
fn format_line(
    out: &mut String,
    spi: u32,
    direction: &str,
    local: SocketAddr,
    remote: Option<SocketAddr>,
    keys: &EspKeyMaterial,
) {
    // Writing into a String cannot fail.
    let _ = write!(out, "{spi:08x} {direction} {local} ");
    match remote {
        Some(remote) => {
            let _ = write!(out, "{remote} ");
        }
        None => out.push_str("- "),
    }
    push_hex(out, &keys.key);
    out.push(' ');
    push_hex(out, &keys.salt);
    out.push('\n');
}

/// Lower-case hex, without going through a temporary string.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use overlay_proto::session::PeerId;

    fn sa() -> SaKeyLog {
        let mut inbound_key = [0u8; 32];
        let mut outbound_key = [0u8; 32];
        for i in 0..32u8 {
            inbound_key[usize::from(i)] = i;
            outbound_key[usize::from(i)] = 0xff - i;
        }
        SaKeyLog {
            peer: PeerId(3),
            inbound_spi: 0x51d0_e7c4,
            outbound_spi: 0x0000_00a1,
            inbound: EspKeyMaterial {
                key: inbound_key,
                salt: [0xc2, 0xa9, 0xe0, 0x01],
            },
            outbound: EspKeyMaterial {
                key: outbound_key,
                salt: [0x0b, 0x3f, 0x5d, 0x21],
            },
        }
    }

    #[test]
    fn lines_follow_the_wire_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.log");
        let mut log = KeyLog::open(&path).unwrap();
        let local = "192.0.2.10:4500".parse().unwrap();
        log.write(&sa(), local, Some("198.51.100.1:4501".parse().unwrap()))
            .unwrap();
        log.write(&sa(), local, None).unwrap();
        assert!(log.line.is_empty());
        let text = std::fs::read_to_string(&path).unwrap();
        let expected = "\
51d0e7c4 in 192.0.2.10:4500 198.51.100.1:4501 \
000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f c2a9e001
000000a1 out 192.0.2.10:4500 198.51.100.1:4501 \
fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0efeeedecebeae9e8e7e6e5e4e3e2e1e0 0b3f5d21
51d0e7c4 in 192.0.2.10:4500 - \
000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f c2a9e001
000000a1 out 192.0.2.10:4500 - \
fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0efeeedecebeae9e8e7e6e5e4e3e2e1e0 0b3f5d21
";
        assert_eq!(text, expected);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn reopening_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.log");
        let local = "192.0.2.10:4500".parse().unwrap();
        for _ in 0..2 {
            KeyLog::open(&path)
                .unwrap()
                .write(&sa(), local, None)
                .unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 4);
    }

    #[test]
    fn loose_or_odd_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o640, 0o604, 0o660, 0o644] {
            let path = dir.path().join(format!("keys-{mode:o}.log"));
            std::fs::write(&path, b"").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let error = KeyLog::open(&path).unwrap_err();
            assert!(
                matches!(error, KeyLogError::InsecureMode { mode: m, .. } if m == mode),
                "{error:?}"
            );
            assert_eq!(error.as_str(), "insecure_mode");
            let message = error.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains(&format!("{mode:04o}")), "{message}");
        }
        let error = KeyLog::open(dir.path()).unwrap_err();
        assert_eq!(error.as_str(), "open", "{error:?}");
        let missing = dir.path().join("no-such-dir").join("keys.log");
        assert_eq!(KeyLog::open(&missing).unwrap_err().as_str(), "open");
    }

    #[test]
    fn a_stricter_existing_file_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.log");
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o200)).unwrap();
        KeyLog::open(&path).unwrap();
    }
}
