//! The demo's child processes: daemons it runs until the end, and tools
//! (genkey, login, status …) it runs to completion. Every wait has a
//! deadline; a daemon is stopped by SIGTERM to its PID (then SIGKILL if it
//! does not exit in time) and always reaped.

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How often a wait looks at its condition.
const POLL: Duration = Duration::from_millis(20);

/// How long a daemon has to exit after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// Wait until `condition` holds (`Ok(true)`), fails (`Err`) or `deadline`
/// passes (an error naming `what`).
pub fn wait_until(
    what: &str,
    deadline: Duration,
    mut condition: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let end = Instant::now() + deadline;
    loop {
        if condition()? {
            return Ok(());
        }
        if crate::interrupted() {
            bail!("interrupted (Ctrl-C or SIGTERM) while waiting for {what}");
        }
        if Instant::now() >= end {
            bail!(
                "timed out after {} s waiting for {what}",
                deadline.as_secs()
            );
        }
        std::thread::sleep(POLL);
    }
}

/// The last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A daemon the demo started: stderr goes to `log`. Dropped while still
/// running, it is killed and reaped.
#[derive(Debug)]
pub struct Daemon {
    pub name: &'static str,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    /// Start `program args…` in its own process group (so a Ctrl-C on the
    /// terminal reaches the demo only, which then stops it in order).
    pub fn spawn(
        name: &'static str,
        program: &Path,
        args: &[&str],
        log: PathBuf,
    ) -> anyhow::Result<Daemon> {
        let stderr =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Daemon {
            name,
            child: Some(child),
            log,
        })
    }

    /// The daemon's PID.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// An error if the daemon has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.as_mut() else {
            bail!("{} was stopped", self.name);
        };
        match child.try_wait().context("waiting for a child")? {
            None => Ok(()),
            Some(status) => {
                self.child = None;
                Err(anyhow!(
                    "{} exited ({}); the end of its log:\n{}",
                    self.name,
                    describe(status),
                    tail(&self.log, 15)
                ))
            }
        }
    }

    /// Wait until `needle` appears in the daemon's log; an error if it
    /// exits first or `deadline` passes.
    pub fn wait_for_log(&mut self, needle: &str, deadline: Duration) -> anyhow::Result<()> {
        let log = self.log.clone();
        let what = format!("{:?} in the log of {}", needle, self.name);
        wait_until(&what, deadline, || {
            self.check_alive()?;
            Ok(std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(needle))
        })
        .map_err(|e| anyhow!("{e:#}\nthe end of its log:\n{}", tail(&log, 15)))
    }

    /// SIGTERM, wait (SIGKILL after [`STOP_DEADLINE`]); how it ended.
    pub fn stop(&mut self) -> String {
        let Some(mut child) = self.child.take() else {
            return "had already exited".to_owned();
        };
        let pid = child.id();
        if let Ok(Some(status)) = child.try_wait() {
            return format!("had already exited ({})", describe(status));
        }
        let Ok(raw) = i32::try_from(pid) else {
            let _ = child.kill();
            let _ = child.wait();
            return "killed".to_owned();
        };
        if let Err(error) = kill(Pid::from_raw(raw), Signal::SIGTERM) {
            let _ = child.kill();
            let _ = child.wait();
            return format!("SIGTERM failed ({error}); killed");
        }
        let end = Instant::now() + STOP_DEADLINE;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return describe(status),
                Ok(None) if Instant::now() < end => std::thread::sleep(POLL),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return format!(
                        "did not exit within {} s of SIGTERM; killed",
                        STOP_DEADLINE.as_secs()
                    );
                }
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// "exit status 0", "killed by signal 9", …
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// What a tool printed.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Run `program args…` with `stdin` (secrets go this way, never on the
/// command line), wait at most `deadline`, return what it printed.
pub fn run_tool(
    program: &Path,
    args: &[&str],
    stdin: &[u8],
    deadline: Duration,
) -> anyhow::Result<Output> {
    let name = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let what = format!("{name} {}", args.first().copied().unwrap_or_default());
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let mut input = child.stdin.take().context("no stdin pipe")?;
    // A tool that exits without reading all of it is not an error here.
    let _ = input.write_all(stdin);
    drop(input);
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(pipe) = pipe {
                let _ = pipe.take(1 << 20).read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let mut status = None;
    let waited = wait_until(&what, deadline, || {
        status = child.try_wait()?;
        Ok(status.is_some())
    });
    if let Err(error) = waited {
        let _ = child.kill();
        let _ = child.wait();
        return Err(error);
    }
    let status = status.context("no exit status")?;
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// [`run_tool`], and an error (with what it printed on stderr) unless it
/// succeeded; its stdout.
pub fn run_ok(
    program: &Path,
    args: &[&str],
    stdin: &[u8],
    deadline: Duration,
) -> anyhow::Result<String> {
    let out = run_tool(program, args, stdin, deadline)?;
    if !out.status.success() {
        let name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        bail!(
            "`{name} {}` failed ({}): {}",
            args.first().copied().unwrap_or_default(),
            describe(out.status),
            out.stderr.trim()
        );
    }
    Ok(out.stdout)
}
