//! # daemon-kit — what the permanet daemons share
//!
//! tunneld, addrd and wap-adapter are three daemons with one way of being
//! run: a kebab-case TOML config whose errors name the file, the key and
//! the problem ([`config`]), a `log-level` whose logger SIGHUP can turn
//! up or down ([`logging`]), and a Unix control socket of mode 0600 in a
//! 0700 directory that the daemon's own commands (`status`, `users`, …)
//! talk to ([`control`]). Each daemon keeps its own keys, problems and
//! requests; the mechanics live here once.
#![forbid(unsafe_code)]

pub mod config;
pub mod control;
pub mod logging;
