//! The daemon's standard output and error files.
//!
//! Paths are resolved here, before `fork()`, against the caller's working
//! directory (not `--chdir`), and turned into `CString`s with their open
//! flags. The files themselves are opened by the daemon, after any privilege
//! drop, so they are opened with the daemon's own credentials; this module
//! never opens them for writing. After a failed start, the original process
//! reads their last lines for the error message ([`Outputs::tail`]).

use std::ffi::CString;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::fcntl::OFlag;

use crate::user::Credentials;

/// One output file, ready for `open(2)` in the daemon.
#[derive(Debug)]
pub struct OutputFile {
    /// Absolute path, as shown to the user in messages.
    pub path: PathBuf,
    /// The same path for `open(2)`.
    pub c_path: CString,
    /// Flags for `open(2)`; the mode is [`OutputFile::MODE`].
    pub flags: OFlag,
    /// The file's size when this start began ([`Outputs::mark_start`]):
    /// what lies before it was written by earlier runs, and a failure
    /// message must not quote it as this start's.
    start: u64,
}

impl OutputFile {
    /// Created `0644`, then reduced by the daemon's umask.
    pub const MODE: nix::libc::mode_t = 0o644;

    /// Appending (`O_APPEND`) is the default so nothing already logged is
    /// lost; `truncate` empties the file first. Both keep `O_APPEND`, so two
    /// descriptors on one file never overwrite each other's lines.
    pub fn new(path: &Path, truncate: bool) -> anyhow::Result<OutputFile> {
        let path = std::path::absolute(path)
            .with_context(|| format!("cannot resolve log file path '{}'", path.display()))?;
        let c_path = CString::new(path.as_os_str().as_bytes())
            .with_context(|| format!("log file path '{}' contains a NUL byte", path.display()))?;
        let mut flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_APPEND | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
        if truncate {
            flags |= OFlag::O_TRUNC;
        }
        Ok(OutputFile {
            path,
            c_path,
            flags,
            start: 0,
        })
    }
}

/// Where the daemon's fds 1 and 2 go. `None` means `/dev/null`.
#[derive(Debug)]
pub struct Outputs {
    pub stdout: Option<OutputFile>,
    /// `None` with `stdout` set means standard error follows standard output
    /// (one open file description, like systemd's `StandardError=inherit`).
    pub stderr: Option<OutputFile>,
    /// Under log capture (`capture`): the supervisor's pipe ends that
    /// become the daemon's fds 1 and 2 instead of the files (`None` for 2
    /// with `Some` for 1: standard error shares standard output's pipe;
    /// `None` alone: `/dev/null`).
    pub captured: Option<[Option<std::os::fd::RawFd>; 2]>,
}

/// What must go on while a start is confirmed (`launch`, `ready`): the
/// supervisor's log capture reads COMMAND's pipes, or COMMAND would block
/// on a full one, and it writes out what it read before a failure message
/// quotes the log.
pub trait Pump {
    /// The descriptors to poll, with their events, in a fixed order.
    fn fds(&self) -> Vec<nix::poll::PollFd<'_>>;
    /// Serves each descriptor of [`Pump::fds`] marked ready.
    fn pump(&mut self, ready: &[bool]);
    /// When [`Pump::retry`] is due, if ever.
    fn deadline(&self) -> Option<std::time::Instant>;
    /// Retries what was held back (a full disk).
    fn retry(&mut self);
    /// Reads and writes out everything there is now, without waiting:
    /// COMMAND has ended, and its last words are wanted.
    fn drain(&mut self);
}

/// No capture: nothing to pump.
pub struct NoPump;

impl Pump for NoPump {
    fn fds(&self) -> Vec<nix::poll::PollFd<'_>> {
        Vec::new()
    }
    fn pump(&mut self, _: &[bool]) {}
    fn deadline(&self) -> Option<std::time::Instant> {
        None
    }
    fn retry(&mut self) {}
    fn drain(&mut self) {}
}

impl Outputs {
    pub fn new(
        stdout: Option<&Path>,
        stderr: Option<&Path>,
        truncate: bool,
    ) -> anyhow::Result<Outputs> {
        let open = |p: Option<&Path>| p.map(|p| OutputFile::new(p, truncate)).transpose();
        let stdout = open(stdout)?;
        let mut stderr = open(stderr)?;
        // `-o f -e f` names one file: share one description instead of two.
        if stderr.as_ref().map(|e| &e.path) == stdout.as_ref().map(|o| &o.path) {
            stderr = None;
        }
        Ok(Outputs {
            stdout,
            stderr,
            captured: None,
        })
    }

    /// Notes each file's current size, just before the daemon is started:
    /// [`Outputs::tail`] shows only what was appended after it.
    pub fn mark_start(&mut self) {
        for file in self.stdout.iter_mut().chain(self.stderr.iter_mut()) {
            file.start = match file.flags.contains(OFlag::O_TRUNC) {
                true => 0,
                false => std::fs::metadata(&file.path).map_or(0, |m| m.len()),
            };
        }
    }

    /// The last lines of each log file, formatted to follow an error
    /// message (empty when there are none). Opened with `O_NOFOLLOW`, and
    /// when the daemon ran as another user only if that user owns the file:
    /// root must not print a file the daemon's user pointed a link at.
    pub fn tail(&self, creds: Option<&Credentials>) -> String {
        let owner = creds.filter(|c| c.change).map(|c| c.uid.as_raw());
        let mut text = String::new();
        for file in self.stdout.iter().chain(self.stderr.iter()) {
            let Some(lines) = last_lines(&file.path, file.start, owner, TAIL_LINES) else {
                continue;
            };
            if lines.is_empty() {
                continue;
            }
            text.push_str(&format!("; last lines of '{}':", file.path.display()));
            for line in lines {
                text.push_str("\n    ");
                // The daemon's output is not ours to send to a terminal
                // raw: escape sequences and other controls are shown inert.
                text.extend(
                    line.chars()
                        .flat_map(|c| match c.is_control() && c != '\t' {
                            true => c.escape_default().collect::<Vec<_>>(),
                            false => vec![c],
                        }),
                );
            }
        }
        text
    }
}

/// How many lines of a log a failed start shows.
const TAIL_LINES: usize = 5;

/// The last `count` lines written at or after offset `start` (all of the
/// file's last 4 KiB if it is now shorter than that: it was replaced).
fn last_lines(path: &Path, start: u64, owner: Option<u32>, count: usize) -> Option<Vec<String>> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || owner.is_some_and(|uid| meta.uid() != uid) {
        return None;
    }
    let recent = meta.len().saturating_sub(4096);
    let start = match meta.len() >= start {
        true => start.max(recent),
        false => recent,
    };
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(count);
    Some(lines[skip..].iter().map(|l| l.to_string()).collect())
}
