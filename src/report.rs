//! The report channel between the forked processes and the original one.
//!
//! A close-on-exec pipe carries fixed-size records of two native-endian
//! 32-bit words: a [`Stage`] and a value (an errno, or for [`Stage::Pid`]
//! the daemon's PID). Writes of 8 bytes are atomic on a pipe, so records from
//! the intermediate child and the daemon never interleave. The children only
//! call [`encode`]: no allocation, no formatting. Turning a record into a
//! message with context is the original process's job ([`Outcome`]).
//!
//! End of file with no failure record means `execvp` succeeded: the last
//! write end was closed by exec itself.

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use nix::errno::Errno;
use nix::unistd::Pid;

use crate::error::{EXIT_CANNOT_EXEC, EXIT_FAILURE, EXIT_NOT_FOUND, Failure};
use crate::plan::Plan;

/// Where a forked process was when it wrote a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Stage {
    /// Not a failure: the intermediate child names the daemon it forked.
    Pid = 1,
    Setsid,
    Fork,
    SetGroups,
    SetGid,
    SetUid,
    /// Root could be regained after the drop: refuse to run anything.
    Regain,
    Chdir,
    Stdin,
    Stdout,
    Stderr,
    ReadyFd,
    CloseFds,
    Signals,
    Exec,
    /// Not a failure: which file of the command search the failure that
    /// follows is about (the index of its `PATH` element, or -1 for a
    /// command given with a `/`).
    ExecPath,
    /// The command exists, but the interpreter its `#!` line (or its ELF
    /// header) names does not.
    Interpreter,
    /// A supervisor's child could not make a process group of its own.
    ProcessGroup,
}

impl Stage {
    const ALL: [Stage; 18] = [
        Stage::Pid,
        Stage::Setsid,
        Stage::Fork,
        Stage::SetGroups,
        Stage::SetGid,
        Stage::SetUid,
        Stage::Regain,
        Stage::Chdir,
        Stage::Stdin,
        Stage::Stdout,
        Stage::Stderr,
        Stage::ReadyFd,
        Stage::CloseFds,
        Stage::Signals,
        Stage::Exec,
        Stage::ExecPath,
        Stage::Interpreter,
        Stage::ProcessGroup,
    ];

    fn from_u32(n: u32) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| *s as u32 == n)
    }
}

pub const RECORD_LEN: usize = 8;

/// Async-signal-safe: builds the record on the stack.
pub const fn encode(stage: Stage, value: i32) -> [u8; RECORD_LEN] {
    let s = (stage as u32).to_ne_bytes();
    let v = value.to_ne_bytes();
    [s[0], s[1], s[2], s[3], v[0], v[1], v[2], v[3]]
}

fn decode(record: [u8; RECORD_LEN]) -> Option<(Stage, i32)> {
    let [s0, s1, s2, s3, v0, v1, v2, v3] = record;
    let stage = Stage::from_u32(u32::from_ne_bytes([s0, s1, s2, s3]))?;
    Some((stage, i32::from_ne_bytes([v0, v1, v2, v3])))
}

/// What the original process learned from the channel.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The daemon's PID, once the intermediate child forked it.
    pub pid: Option<Pid>,
    /// The first step that failed, and why.
    pub failure: Option<(Stage, Errno)>,
    /// Which candidate of the command search an exec failure is about.
    pub exec_path: Option<i32>,
    /// A record made no sense (it cannot happen; reported as a failure).
    pub garbled: bool,
}

impl Outcome {
    /// Reads records until every write end is closed.
    pub fn read(channel: OwnedFd) -> anyhow::Result<Outcome> {
        let mut channel = std::fs::File::from(channel);
        let mut outcome = Outcome::default();
        loop {
            let mut record = [0u8; RECORD_LEN];
            match read_record(&mut channel, &mut record) {
                Ok(false) => return Ok(outcome),
                Ok(true) => {}
                Err(e) => return Err(anyhow!(e).context("cannot read the daemon's report")),
            }
            match decode(record) {
                Some((Stage::Pid, pid)) => outcome.pid = Some(Pid::from_raw(pid)),
                Some((Stage::ExecPath, index)) => outcome.exec_path = Some(index),
                Some((stage, errno)) => {
                    outcome
                        .failure
                        .get_or_insert((stage, Errno::from_raw(errno)));
                }
                // Read on to the end all the same: the end is what says the
                // children are done (see `detach::spawn`).
                None => outcome.garbled = true,
            }
        }
    }
}

/// `Ok(false)` on a clean end of file between records.
fn read_record(
    channel: &mut std::fs::File,
    record: &mut [u8; RECORD_LEN],
) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < RECORD_LEN {
        match channel.read(&mut record[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The user-facing failure for a step that failed in a forked process.
pub fn describe(plan: &Plan, outcome: &Outcome, stage: Stage, errno: Errno) -> Failure {
    let context = match stage {
        Stage::Pid | Stage::ExecPath => "internal error: a note treated as a failure".to_owned(),
        Stage::Setsid => "cannot create a new session (setsid)".to_owned(),
        Stage::Fork => "cannot fork the daemon".to_owned(),
        Stage::ProcessGroup => "cannot make a process group for the daemon (setpgid)".to_owned(),
        Stage::SetGroups | Stage::SetGid | Stage::SetUid | Stage::Regain => {
            let (uid, gid) = plan
                .creds
                .as_ref()
                .map_or((0, 0), |c| (c.uid.as_raw(), c.gid.as_raw()));
            match stage {
                Stage::SetGroups => "cannot set the supplementary groups (setgroups)".to_owned(),
                Stage::SetGid => format!("cannot change group to gid {gid} (setresgid)"),
                Stage::SetUid => format!("cannot change user to uid {uid} (setresuid)"),
                _ => format!(
                    "refusing to run: root privileges could be regained after changing to uid {uid}"
                ),
            }
        }
        Stage::Chdir => format!(
            "cannot change directory to '{}'{}",
            plan.chdir.display(),
            plan.as_user()
        ),
        Stage::Stdin => "cannot redirect standard input to '/dev/null'".to_owned(),
        Stage::Stdout | Stage::Stderr => {
            let file = match stage {
                Stage::Stdout => plan.outputs.stdout.as_ref(),
                _ => plan.outputs.stderr.as_ref(),
            };
            match file {
                Some(file) if errno == Errno::ENXIO => {
                    return Failure::new(
                        EXIT_FAILURE,
                        anyhow!(
                            "cannot open log file '{}': it is a FIFO that no process is reading",
                            file.path.display()
                        ),
                    );
                }
                Some(file) => format!(
                    "cannot open log file '{}'{}",
                    file.path.display(),
                    plan.as_user()
                ),
                None if stage == Stage::Stderr && plan.outputs.stdout.is_some() => {
                    "cannot send standard error to the standard output file".to_owned()
                }
                None => "cannot redirect output to '/dev/null'".to_owned(),
            }
        }
        Stage::ReadyFd => "cannot install the readiness descriptor (--ready-fd)".to_owned(),
        Stage::CloseFds => "cannot close inherited descriptors".to_owned(),
        Stage::Signals => "cannot reset signal dispositions".to_owned(),
        Stage::Exec => match outcome.exec_path.and_then(|i| exec_candidate(plan, i)) {
            Some(path) => format!("cannot execute '{}'", path.display()),
            None => format!("cannot execute '{}'", plan.command()),
        },
        Stage::Interpreter => {
            let path = outcome.exec_path.and_then(|i| exec_candidate(plan, i));
            return Failure::new(EXIT_CANNOT_EXEC, missing_interpreter(plan, path));
        }
    };
    let code = match (stage, errno) {
        (Stage::Exec, Errno::ENOENT) => EXIT_NOT_FOUND,
        (Stage::Exec, _) => EXIT_CANNOT_EXEC,
        _ => EXIT_FAILURE,
    };
    Failure::new(code, anyhow::Error::new(errno).context(context))
}

/// The file that candidate `index` of the command search named: COMMAND
/// itself (-1), or COMMAND in that `PATH` element; relative to `--chdir`.
fn exec_candidate(plan: &Plan, index: i32) -> Option<PathBuf> {
    let command = Path::new(OsStr::from_bytes(plan.argv[0].as_bytes()));
    let file = match usize::try_from(index) {
        Err(_) => command.to_owned(),
        Ok(i) => {
            let dir = plan.search_path.as_bytes().split(|&b| b == b':').nth(i)?;
            let dir = if dir.is_empty() { b"." as &[u8] } else { dir };
            Path::new(OsStr::from_bytes(dir)).join(command)
        }
    };
    // `./run.sh` after `-c /srv` reads `/srv/run.sh`, not `/srv/./run.sh`.
    Some(plan.chdir.join(file).components().collect())
}

/// "cannot execute 'x': its interpreter '/bin/bash\r' does not exist", read
/// from the script's `#!` line, with the usual cause of a trailing CR named.
fn missing_interpreter(plan: &Plan, path: Option<PathBuf>) -> anyhow::Error {
    let shown = path
        .as_ref()
        .map_or_else(|| plan.command().into_owned(), |p| p.display().to_string());
    let daemon_uid = plan
        .creds
        .as_ref()
        .filter(|c| c.change)
        .map(|c| c.uid.as_raw());
    let interpreter = path.as_deref().and_then(|p| shebang(p, daemon_uid));
    match interpreter {
        Some(name) => {
            let crlf = name.ends_with('\r');
            let name: String = name.chars().flat_map(char::escape_default).collect();
            let hint = match crlf {
                true => " (its #! line ends in a carriage return: the script has DOS line endings)",
                false => "",
            };
            anyhow!("cannot execute '{shown}': its interpreter '{name}' does not exist{hint}")
        }
        None => anyhow!(
            "cannot execute '{shown}': its interpreter (the #! line, or the ELF loader) does not exist"
        ),
    }
}

/// The interpreter named by a file's `#!` line, if it has one. When the
/// daemon ran as another user, the file was named by that user's PATH or
/// command, so it is read only if that user could read it too: a regular
/// file, not through a symlink, owned by them or readable by anyone (root
/// must not show a line of a file that only root may read).
fn shebang(path: &Path, daemon_uid: Option<u32>) -> Option<String> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY | nix::libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    let readable = |uid: u32| meta.uid() == uid || meta.mode() & 0o004 != 0;
    if !meta.is_file() || daemon_uid.is_some_and(|uid| !readable(uid)) {
        return None;
    }
    let mut head = [0u8; 256];
    let n = file.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = line.split(|&b| b == b'\n').next()?;
    let line = String::from_utf8_lossy(line);
    let name = line.trim_start_matches([' ', '\t']);
    let end = name.find([' ', '\t']).unwrap_or(name.len());
    Some(name[..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        for stage in Stage::ALL {
            assert_eq!(decode(encode(stage, -7)), Some((stage, -7)));
        }
        assert_eq!(decode([0; RECORD_LEN]), None);
    }
}
