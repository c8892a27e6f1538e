//! addrd's key files.
//!
//! Secrets live in files, never on the command line. A secret file must be
//! a regular file with no permission bits for group or others (0600 or
//! stricter), checked on the opened file so it cannot be swapped between
//! the check and the read. Keys are 32 bytes written as standard padded
//! base64 (44 characters), as `wg genkey` writes them: the authority's
//! Ed25519 seed, the login channel's X25519 private key and the allocation
//! key all have this form, so `addrd genkey` makes any of them.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::str::FromStr;

use overlay_proto::handshake::{PublicKey, StaticKeypair};
use overlay_proto::lease::{AuthorityKey, LeaseAuthority};
use rand::RngCore as _;
use zeroize::{Zeroize, Zeroizing};

use crate::alloc::AllocationKey;
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

/// Reads a secret file holding 32 base64 bytes.
pub fn read_key_file(path: &Path) -> Result<Zeroizing<[u8; 32]>, Problem> {
    let text = read_secret_file(path)?;
    // `PublicKey` is only the base64 codec here; its copy is wiped.
    let mut key = PublicKey::from_str(&text).map_err(|error| Problem::BadKeyFile {
        path: path.to_owned(),
        error,
    })?;
    let bytes = Zeroizing::new(key.0);
    key.0.zeroize();
    Ok(bytes)
}

/// The lease authority from its seed file.
pub fn read_authority_file(path: &Path) -> Result<LeaseAuthority, Problem> {
    Ok(LeaseAuthority::from_seed(*read_key_file(path)?))
}

/// The login channel's X25519 key pair from its private key file.
pub fn read_static_key_file(path: &Path) -> Result<StaticKeypair, Problem> {
    Ok(StaticKeypair::from_private(*read_key_file(path)?))
}

/// The allocator's key from its file.
pub fn read_allocation_key_file(path: &Path) -> Result<AllocationKey, Problem> {
    Ok(AllocationKey::from_bytes(*read_key_file(path)?))
}

/// Reads a public X25519 key (base64) from a file: not a secret, so the
/// mode is not checked.
pub fn read_public_key_file(path: &Path) -> Result<PublicKey, Problem> {
    let io_error = |error| Problem::Io {
        path: path.to_owned(),
        error,
    };
    let mut text = String::new();
    File::open(path)
        .map_err(io_error)?
        .take(MAX_SECRET_FILE_LEN)
        .read_to_string(&mut text)
        .map_err(io_error)?;
    PublicKey::from_str(text.trim()).map_err(|error| Problem::BadKeyFile {
        path: path.to_owned(),
        error,
    })
}

/// 32 fresh random bytes as base64 (a new key of any of the three kinds),
/// wiped on drop.
pub fn generate_key() -> Zeroizing<String> {
    let mut bytes = PublicKey([0; 32]);
    rand::rngs::OsRng.fill_bytes(&mut bytes.0);
    let text = Zeroizing::new(bytes.to_string());
    bytes.0.zeroize();
    text
}

/// The authority's public key as tunneld's `authority-key` takes it.
pub fn authority_public_text(authority: &LeaseAuthority) -> String {
    authority_public_text_of(&authority.public_key())
}

/// An authority public key in base64, as tunneld's `authority-key` takes it.
pub fn authority_public_text_of(key: &AuthorityKey) -> String {
    PublicKey(key.to_bytes()).to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

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
    fn generated_keys_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let text = generate_key();
        assert_eq!(text.len(), 44);
        assert_ne!(*text, *generate_key());
        let path = write(dir.path(), "k", &format!("{}\n", *text), 0o600);
        let authority = read_authority_file(&path).unwrap();
        let again = read_authority_file(&path).unwrap();
        assert_eq!(authority.public_key(), again.public_key());
        assert_eq!(authority_public_text(&authority).len(), 44);
        read_static_key_file(&path).unwrap();
        read_allocation_key_file(&path).unwrap();
    }

    #[test]
    fn secret_files_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let key = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";
        for mode in [0o600, 0o400, 0o700] {
            let path = write(dir.path(), "ok", key, mode);
            assert_eq!(*read_key_file(&path).unwrap(), [0x42; 32], "{mode:o}");
        }
        for mode in [0o644, 0o640, 0o604, 0o660, 0o601, 0o620] {
            let path = write(dir.path(), "open", key, mode);
            for err in [
                read_authority_file(&path).unwrap_err(),
                read_static_key_file(&path).unwrap_err(),
                read_allocation_key_file(&path).unwrap_err(),
            ] {
                assert!(matches!(err, Problem::InsecureMode { mode: m, .. } if m == mode));
                let msg = err.to_string();
                assert!(msg.contains(&path.display().to_string()), "{msg}");
                assert!(msg.contains(&format!("mode 0{mode:o}")), "{msg}");
            }
        }
        // A public key file may be world-readable.
        let path = write(dir.path(), "pub", key, 0o644);
        assert_eq!(read_public_key_file(&path).unwrap().0, [0x42; 32]);
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
        let err = read_authority_file(&bad).unwrap_err();
        assert!(matches!(err, Problem::BadKeyFile { .. }), "{err}");
    }
}
