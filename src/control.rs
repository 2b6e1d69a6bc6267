//! `--status` and `--stop`: questions and orders about the daemon that a
//! pidfile names.
//!
//! Whether the daemon runs is decided by the pidfile's lock, never by
//! `kill(pid, 0)`: the lock dies with the daemon, while its PID may be
//! reused by an unrelated process. `--stop` additionally opens a pidfd and
//! confirms the lock and the PID *after* opening it, then signals through
//! the pidfd, so a reused PID is never signalled.

use std::fs::File;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::os::fd::{AsFd, OwnedFd};

use crate::detach::{pidfd_open, pidfd_send_signal};
use crate::error::{EXIT_RUNNING, Failure};
use crate::pidfile::{self, Kind};

/// LSB init-script status codes (LSB 4.1, "Init Script Actions").
const STATUS_RUNNING: u8 = 0;
const STATUS_DEAD_PIDFILE_EXISTS: u8 = 1;
const STATUS_NOT_RUNNING: u8 = 3;
const STATUS_UNKNOWN: u8 = 4;

/// How long to wait for a process to vanish after SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// `--status`: 0 running (prints the PID), 1 stale pidfile, 3 no pidfile,
/// 4 cannot tell.
pub fn status(path: &Path) -> Result<u8, Failure> {
    let unknown = |e: anyhow::Error| {
        Failure::new(
            STATUS_UNKNOWN,
            e.context("cannot tell whether the daemon runs"),
        )
    };
    let file = match pidfile::open_existing(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            println!("not running (no pidfile '{}')", path.display());
            return Ok(STATUS_NOT_RUNNING);
        }
        Err(e) => return Err(unknown(pidfile::open_error(path, Kind::Pidfile, e).error)),
    };
    let locked = pidfile::is_locked(&file).map_err(|e| unknown(lock_error(path, e)))?;
    if !locked {
        println!("not running (stale pidfile '{}')", path.display());
        return Ok(STATUS_DEAD_PIDFILE_EXISTS);
    }
    match pidfile::read_pid(&file) {
        Ok(Some(pid)) => println!("running (pid {pid})"),
        // Locked but still empty: a start is between its lock and its write.
        Ok(None) => println!("running (starting; no PID in '{}' yet)", path.display()),
        Err(e) => {
            return Err(unknown(
                e.context(format!("cannot read pidfile '{}'", path.display())),
            ));
        }
    }
    Ok(STATUS_RUNNING)
}

/// `--stop`: signal, wait up to `timeout`, then SIGKILL. Exit 0 once the
/// daemon is gone (or was not running), 1 if it could not be stopped.
pub fn stop(path: &Path, signal: Signal, timeout: Duration) -> Result<u8, Failure> {
    let cannot = |e: anyhow::Error| Failure::new(EXIT_RUNNING, e.context("cannot stop the daemon"));
    let file = match pidfile::open_existing(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::info!(path = %path.display(), "no pidfile: not running");
            return Ok(0);
        }
        Err(e) => return Err(cannot(pidfile::open_error(path, Kind::Pidfile, e).error)),
    };
    if !pidfile::is_locked(&file).map_err(|e| cannot(lock_error(path, e)))? {
        tracing::info!(path = %path.display(), "not running");
        remove_unlocked(path, &file);
        return Ok(0);
    }
    let pid = match pidfile::read_pid(&file) {
        Ok(Some(pid)) => pid,
        Ok(None) => {
            return Err(cannot(anyhow!(
                "'{}' is locked but names no PID yet (a start in progress?)",
                path.display()
            )));
        }
        Err(e) => {
            return Err(cannot(
                e.context(format!("cannot read pidfile '{}'", path.display())),
            ));
        }
    };
    let pidfd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(Errno::ESRCH) => {
            return Err(cannot(anyhow!(
                "pid {pid} from '{}' is gone, but another process still holds its lock",
                path.display()
            )));
        }
        Err(e) => {
            return Err(cannot(
                anyhow!(e).context(format!("cannot open a pidfd for pid {pid}")),
            ));
        }
    };
    // The pidfd now pins whatever process has this PID. If the lock is still
    // held and the pidfile still names it, that process is the daemon (it
    // could not have died and been replaced while it held the lock).
    let confirmed = pidfile::is_locked(&file).map_err(|e| cannot(lock_error(path, e)))?
        && matches!(pidfile::read_pid(&file), Ok(Some(p)) if p == pid);
    if !confirmed {
        tracing::info!(pid = pid.as_raw(), "the daemon exited on its own meanwhile");
        remove_unlocked(path, &file);
        return Ok(0);
    }

    tracing::info!(pid = pid.as_raw(), %signal, "signalling");
    send(&pidfd, signal, pid).map_err(cannot)?;
    if !wait_exit(&pidfd, timeout).map_err(cannot)? {
        tracing::info!(
            pid = pid.as_raw(),
            ?timeout,
            "still running after the timeout: sending SIGKILL"
        );
        send(&pidfd, Signal::SIGKILL, pid).map_err(cannot)?;
        if !wait_exit(&pidfd, KILL_GRACE).map_err(cannot)? {
            return Err(cannot(anyhow!("pid {pid} is still running after SIGKILL")));
        }
    }
    tracing::info!(pid = pid.as_raw(), "stopped");
    if !remove_unlocked(path, &file) {
        return Err(cannot(anyhow!(
            "pid {pid} exited, but another process (a child of the daemon?) still holds the lock on '{}'",
            path.display()
        )));
    }
    Ok(0)
}

fn send(pidfd: &OwnedFd, signal: Signal, pid: Pid) -> anyhow::Result<()> {
    match pidfd_send_signal(pidfd, signal) {
        // Exited between our checks and the signal: nothing left to stop.
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(anyhow!(e).context(format!("cannot send {signal} to pid {pid}"))),
    }
}

/// Polls the pidfd until the process exits (true) or `timeout` passes.
fn wait_exit(pidfd: &OwnedFd, timeout: Duration) -> anyhow::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms =
            PollTimeout::try_from(left.min(Duration::from_secs(3600))).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(0) if left.is_zero() => return Ok(false),
            Ok(0) | Err(Errno::EINTR) => {}
            Ok(_) => return Ok(true),
            Err(e) => return Err(anyhow!(e).context("cannot wait for the daemon to exit")),
        }
    }
}

/// Removes the pidfile if nobody holds its lock (taking the lock ourselves
/// so no start can slip in between). False if the lock is held.
fn remove_unlocked(path: &Path, file: &File) -> bool {
    match file.try_lock() {
        Ok(()) => {
            pidfile::remove_if_same(path, file);
            true
        }
        Err(_) => false,
    }
}

fn lock_error(path: &Path, e: io::Error) -> anyhow::Error {
    anyhow!(e).context(format!("cannot probe the lock on '{}'", path.display()))
}
