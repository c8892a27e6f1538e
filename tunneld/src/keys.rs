//! Key files and keys in text form.
//!
//! Secrets live in files, never on the command line. A secret file must be
//! a regular file with no permission bits for group or others (0600 or
//! stricter), checked on the opened file so it cannot be swapped between
//! the check and the read. Keys are 32 bytes written as standard padded
//! base64, as `wg` writes them.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::str::FromStr;

use overlay_proto::handshake::{KeyParseError, Psk, PublicKey, StaticKeypair};
use zeroize::{Zeroize, Zeroizing};

use crate::config::Problem;

/// Longest secret file read; a key is 44 characters and a newline.
pub const MAX_SECRET_FILE_LEN: u64 = 1024;

/// Reads a secret file after checking it is a regular file of mode 0600
/// or stricter. The contents are returned trimmed, and wiped on drop.
pub fn read_secret_file(path: &Path) -> Result<Zeroizing<String>, Problem> {
    let io_error = |error| Problem::Io {
        path: path.to_owned(),
        error,
    };
    let file = File::open(path).map_err(io_error)?;
    let meta = file.metadata().map_err(io_error)?;
    if !meta.is_file() {
        return Err(Problem::NotRegularFile {
            path: path.to_owned(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Problem::InsecureMode {
            path: path.to_owned(),
            mode,
        });
    }
    // Capacity for the whole bounded read, so no reallocation leaves a
    // copy of the secret behind.
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_SECRET_FILE_LEN as usize + 1));
    file.take(MAX_SECRET_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > MAX_SECRET_FILE_LEN {
        return Err(io_error(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("longer than {MAX_SECRET_FILE_LEN} bytes; not a key file"),
        )));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        io_error(io::Error::new(
            io::ErrorKind::InvalidData,
            "not UTF-8 text; expected a base64 key",
        ))
    })?;
    Ok(Zeroizing::new(text.trim().to_owned()))
}

/// Reads a private key file (see [`read_secret_file`]).
pub fn read_private_key_file(path: &Path) -> Result<StaticKeypair, Problem> {
    let text = read_secret_file(path)?;
    parse_private_key(&text).map_err(|error| Problem::BadKeyFile {
        path: path.to_owned(),
        error,
    })
}

/// Reads a PSK file (see [`read_secret_file`]).
pub fn read_psk_file(path: &Path) -> Result<Psk, Problem> {
    let text = read_secret_file(path)?;
    Psk::from_str(&text).map_err(|error| Problem::BadKeyFile {
        path: path.to_owned(),
        error,
    })
}

/// Parses a base64 X25519 private key.
pub fn parse_private_key(text: &str) -> Result<StaticKeypair, KeyParseError> {
    // `PublicKey` is only the base64 codec here; its copy is wiped.
    let mut bytes = PublicKey::from_str(text.trim())?;
    let keypair = StaticKeypair::from_private(bytes.0);
    bytes.0.zeroize();
    Ok(keypair)
}

/// The base64 form of a private key, wiped on drop.
pub fn encode_private_key(keypair: &StaticKeypair) -> Zeroizing<String> {
    let mut bytes = PublicKey(*keypair.private_bytes());
    let text = Zeroizing::new(bytes.to_string());
    bytes.0.zeroize();
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(dir: &Path, name: &str, contents: &str, mode: u32) -> std::path::PathBuf {
        let path = dir.join(name);
        fs::write(&path, contents).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn private_key_text_round_trip() {
        let keypair = StaticKeypair::from_private([0x42; 32]);
        let text = encode_private_key(&keypair);
        assert_eq!(text.len(), 44);
        let back = parse_private_key(&format!("{}\n", *text)).unwrap();
        assert_eq!(back.public(), keypair.public());
        assert_eq!(back.private_bytes(), keypair.private_bytes());
    }

    #[test]
    fn secret_file_modes() {
        let dir = tempfile::tempdir().unwrap();
        let key = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";
        for mode in [0o600, 0o400, 0o700] {
            let path = write(dir.path(), "ok", &format!("{key}\n"), mode);
            assert_eq!(*read_secret_file(&path).unwrap(), key, "{mode:o}");
        }
        for mode in [0o644, 0o640, 0o604, 0o660, 0o601] {
            let path = write(dir.path(), "open", key, mode);
            let err = read_secret_file(&path).unwrap_err();
            assert!(matches!(err, Problem::InsecureMode { mode: m, .. } if m == mode));
            let msg = err.to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains(&format!("mode 0{mode:o}")), "{msg}");
        }
    }

    #[test]
    fn secret_file_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_secret_file(dir.path()).unwrap_err();
        assert!(matches!(err, Problem::NotRegularFile { .. }), "{err}");

        let err = read_secret_file(&dir.path().join("absent")).unwrap_err();
        assert!(matches!(err, Problem::Io { .. }), "{err}");

        let big = write(dir.path(), "big", &"A".repeat(2000), 0o600);
        assert!(matches!(read_secret_file(&big), Err(Problem::Io { .. })));

        let bad = write(dir.path(), "bad", "not a key", 0o600);
        let err = read_private_key_file(&bad).unwrap_err();
        assert!(matches!(err, Problem::BadKeyFile { .. }), "{err}");
        let err = read_psk_file(&bad).unwrap_err();
        assert!(matches!(err, Problem::BadKeyFile { .. }), "{err}");
    }
}
