//! # keyfile — secret files for the permanet daemons
//!
//! Secrets live in files, never on the command line. A secret file must be
//! a regular file with no permission bits for group or others (0600 or
//! stricter), checked on the opened file so it cannot be swapped between
//! the check and the read. The read is bounded and its buffer is wiped on
//! drop. `tunneld` and `addrd` both read their keys through
//! [`read_secret_file`] and turn [`SecretFileError`] into their own config
//! errors, which name the config key.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Longest secret file read; a key is 44 characters and a newline.
pub const MAX_SECRET_FILE_LEN: u64 = 1024;

/// Why a secret file was not read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretFileError {
    /// Opening or reading failed, or the contents are not a key file
    /// (too long, not UTF-8).
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        error: io::Error,
    },
    /// Not a regular file (a directory, a device, a FIFO).
    #[error("{}: not a regular file", path.display())]
    NotRegularFile {
        /// The file.
        path: PathBuf,
    },
    /// Group or others have some access.
    #[error("{}: mode {mode:04o} lets others read it; chmod 600", path.display())]
    InsecureMode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// Reads a secret file after checking it is a regular file of mode 0600
/// or stricter. The contents are returned trimmed, and wiped on drop.
pub fn read_secret_file(path: &Path) -> Result<Zeroizing<String>, SecretFileError> {
    let io_error = |error| SecretFileError::Io {
        path: path.to_owned(),
        error,
    };
    let file = File::open(path).map_err(io_error)?;
    let meta = file.metadata().map_err(io_error)?;
    if !meta.is_file() {
        return Err(SecretFileError::NotRegularFile {
            path: path.to_owned(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::InsecureMode {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn reads_trimmed_contents_of_a_0600_file() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o600, 0o400] {
            let path = write(dir.path(), "k", b"  c2VjcmV0\n", mode);
            assert_eq!(read_secret_file(&path).unwrap().as_str(), "c2VjcmV0");
        }
    }

    #[test]
    fn refuses_what_is_not_a_private_regular_key_file() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            let path = write(dir.path(), "open", b"key\n", mode);
            match read_secret_file(&path) {
                Err(SecretFileError::InsecureMode { mode: got, .. }) => assert_eq!(got, mode),
                other => panic!("{mode:o}: {other:?}"),
            }
        }
        assert!(matches!(
            read_secret_file(dir.path()),
            Err(SecretFileError::NotRegularFile { .. })
        ));
        assert!(matches!(
            read_secret_file(&dir.path().join("missing")),
            Err(SecretFileError::Io { .. })
        ));
        let long = write(dir.path(), "long", &[b'a'; 1025], 0o600);
        assert!(matches!(
            read_secret_file(&long),
            Err(SecretFileError::Io { .. })
        ));
        let binary = write(dir.path(), "binary", &[0xff, 0xfe], 0o600);
        assert!(matches!(
            read_secret_file(&binary),
            Err(SecretFileError::Io { .. })
        ));
    }
}
