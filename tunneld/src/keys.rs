//! Key files and keys in text form.
//!
//! Secrets live in files, never on the command line. A secret file must be
//! a regular file with no permission bits for group or others (0600 or
//! stricter), checked on the opened file so it cannot be swapped between
//! the check and the read. Keys are 32 bytes written as standard padded
//! base64, as `wg` writes them.

use std::io;
use std::path::Path;
use std::str::FromStr;

use overlay_proto::handshake::{KeyParseError, Psk, PublicKey, StaticKeypair};
use zeroize::{Zeroize, Zeroizing};

use crate::config::Problem;

pub use keyfile::MAX_SECRET_FILE_LEN;

/// Reads a secret file after checking it is a regular file of mode 0600
/// or stricter ([`keyfile::read_secret_file`]). The contents are returned
/// trimmed, and wiped on drop.
pub fn read_secret_file(path: &Path) -> Result<Zeroizing<String>, Problem> {
    keyfile::read_secret_file(path).map_err(|error| match error {
        keyfile::SecretFileError::NotRegularFile { path } => Problem::NotRegularFile { path },
        keyfile::SecretFileError::InsecureMode { path, mode } => {
            Problem::InsecureMode { path, mode }
        }
        keyfile::SecretFileError::Io { path, error } => Problem::Io { path, error },
        other => Problem::Io {
            path: path.to_owned(),
            error: io::Error::other(other.to_string()),
        },
    })
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
    use std::os::unix::fs::PermissionsExt;

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
