//! Config files: reading, TOML syntax, and the one error type whose
//! `Display` form is `FILE: KEY: PROBLEM` (or `FILE: PROBLEM` for a file
//! that cannot be read or does not parse).
//!
//! Each daemon has its own `Problem` enum (what can be wrong with one of
//! its keys) and names `ConfigError<Problem>` with a type alias; it reads
//! with [`read`], parses with [`parse_toml`] into its raw, serde-derived
//! config (`deny_unknown_fields`, so a misspelt key is a syntax error with
//! its line and column) and checks the values key by key, making
//! [`ConfigError::Key`] errors with [`ConfigError::at`].

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A config file could not be used. The `Display` form is
/// `FILE: KEY: WHAT` (or `FILE: WHAT` for unreadable files and TOML
/// syntax errors).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError<P: fmt::Debug + fmt::Display> {
    /// The config file itself could not be read.
    #[error("{}: {error}", file.display())]
    Read {
        /// The config file.
        file: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// TOML syntax, an unknown key or a value of the wrong type; `message`
    /// carries `toml`'s line and column.
    #[error("{}: {message}", file.display())]
    Syntax {
        /// The config file.
        file: PathBuf,
        /// `toml`'s report.
        message: String,
    },
    /// A key's value is refused.
    #[error("{}: {key}: {problem}", file.display())]
    Key {
        /// The config file.
        file: PathBuf,
        /// Dotted path of the key, e.g. `applications[1].address`.
        key: String,
        /// What is wrong (boxed: keeps `Result<_, ConfigError>` small).
        problem: Box<P>,
    },
}

impl<P: fmt::Debug + fmt::Display> ConfigError<P> {
    /// An error about `key` of the config `file`.
    pub fn at(file: &Path, key: impl Into<String>, problem: P) -> Self {
        ConfigError::Key {
            file: file.to_owned(),
            key: key.into(),
            problem: Box::new(problem),
        }
    }

    /// The key the error is about, if it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Key { key, .. } => Some(key),
            _ => None,
        }
    }

    /// What is wrong with the key, if the error is about one.
    pub fn problem(&self) -> Option<&P> {
        match self {
            ConfigError::Key { problem, .. } => Some(problem),
            _ => None,
        }
    }
}

/// The text of the config file at `path`.
pub fn read<P: fmt::Debug + fmt::Display>(path: &Path) -> Result<String, ConfigError<P>> {
    std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        file: path.to_owned(),
        error,
    })
}

/// `text` (read from `path`, which names the file in errors) parsed as
/// TOML into `T`.
pub fn parse_toml<T: DeserializeOwned, P: fmt::Debug + fmt::Display>(
    text: &str,
    path: &Path,
) -> Result<T, ConfigError<P>> {
    toml::from_str(text).map_err(|e| ConfigError::Syntax {
        file: path.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })
}

/// The directory relative paths in the config at `path` are resolved
/// against: the file's own directory.
pub fn base_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("too small")]
    struct TooSmall;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    #[allow(dead_code)] // only parsed
    struct Raw {
        log_level: String,
    }

    #[test]
    fn errors_name_file_key_and_problem() {
        let file = Path::new("/etc/permanet/x.toml");
        let err = ConfigError::at(file, "limits.body", TooSmall);
        assert_eq!(
            err.to_string(),
            "/etc/permanet/x.toml: limits.body: too small"
        );
        assert_eq!(err.key(), Some("limits.body"));
        assert!(err.problem().is_some());

        let syntax = parse_toml::<Raw, TooSmall>("log-levl = 1\n", file).unwrap_err();
        let text = syntax.to_string();
        assert!(text.starts_with("/etc/permanet/x.toml: "), "{text}");
        assert!(text.contains("log-levl"), "{text}");
        assert!(text.contains("line 1"), "{text}");
        assert_eq!(syntax.key(), None);

        let missing = read::<TooSmall>(Path::new("/nonexistent/permanet.toml")).unwrap_err();
        assert!(matches!(missing, ConfigError::Read { .. }), "{missing}");
    }

    #[test]
    fn relative_paths_are_against_the_config_directory() {
        assert_eq!(base_dir(Path::new("/etc/x/a.toml")), Path::new("/etc/x"));
        assert_eq!(base_dir(Path::new("a.toml")), Path::new("."));
    }
}
