//! Logs: the `log-level` config key and a stderr logger whose level
//! SIGHUP can change.

use std::fmt;
use std::io::{self, IsTerminal as _};

use serde::Deserialize;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{reload, Registry};

/// Most verbose log level shown (`log-level`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// The default.
    Info,
    /// Per-event detail.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The matching `tracing` level.
    pub const fn to_tracing(self) -> tracing::Level {
        match self {
            LogLevel::Error => tracing::Level::ERROR,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Trace => tracing::Level::TRACE,
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        })
    }
}

/// Changes the level of the logger [`init`] installed.
#[derive(Clone, Debug)]
pub struct LogLevelHandle(reload::Handle<LevelFilter, Registry>);

impl LogLevelHandle {
    /// Show `level` and above from now on.
    pub fn set(&self, level: LogLevel) -> Result<(), reload::Error> {
        self.0
            .modify(|filter| *filter = LevelFilter::from_level(level.to_tracing()))
    }
}

/// Log to stderr at `level` (colours only on a terminal). `None` if a
/// logger was already installed (tests running several daemons in one
/// process).
pub fn init(level: LogLevel) -> Option<LogLevelHandle> {
    let (filter, handle) = reload::Layer::new(LevelFilter::from_level(level.to_tracing()));
    let output = tracing_subscriber::fmt::layer()
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal());
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .ok()
        .map(|()| LogLevelHandle(handle))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn levels_read_and_print_in_config_spelling() {
        #[derive(Deserialize)]
        #[serde(rename_all = "kebab-case")]
        struct Raw {
            log_level: LogLevel,
        }
        for (text, level) in [
            ("error", LogLevel::Error),
            ("warn", LogLevel::Warn),
            ("info", LogLevel::Info),
            ("debug", LogLevel::Debug),
            ("trace", LogLevel::Trace),
        ] {
            let raw: Raw = toml::from_str(&format!("log-level = \"{text}\"")).unwrap();
            assert_eq!(raw.log_level, level);
            assert_eq!(level.to_string(), text);
        }
        assert!(toml::from_str::<Raw>("log-level = \"loud\"").is_err());
    }

    #[test]
    fn the_level_changes_at_runtime() {
        let handle = init(LogLevel::Warn).unwrap();
        assert_eq!(LevelFilter::current(), LevelFilter::WARN);
        handle.set(LogLevel::Debug).unwrap();
        assert_eq!(LevelFilter::current(), LevelFilter::DEBUG);
        // A second logger is not installed.
        assert!(init(LogLevel::Info).is_none());
    }
}
