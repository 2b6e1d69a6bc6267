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
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::Pid;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;

use crate::error::{EXIT_RUNNING, Failure};
use crate::pidfile;
use crate::sys::{pidfd_exited_within, pidfd_open, pidfd_send_signal};

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
        Ok(Some(file)) => file,
        Ok(None) => {
            say(&format!("not running (no pidfile '{}')", path.display()));
            return Ok(STATUS_NOT_RUNNING);
        }
        Err(e) => return Err(unknown(e.error)),
    };
    let locked = pidfile::is_locked(&file).map_err(|e| unknown(lock_error(path, e)))?;
    if !locked {
        say(&format!("not running (stale pidfile '{}')", path.display()));
        return Ok(STATUS_DEAD_PIDFILE_EXISTS);
    }
    match pidfile::read_pid(&file) {
        Ok(Some(pid)) if holds_lock(pid, &file) => say(&format!("running (pid {pid})")),
        // The lock is held, but not by the PID the file names: the daemon
        // has exited and processes it started keep its lock.
        Ok(Some(pid)) => say(&format!(
            "running (pid {pid} has exited; processes {} still hold the lock)",
            list(&lock_holders(&file))
        )),
        // Locked but still empty: a start is between its lock and its write.
        Ok(None) => say(&format!(
            "running (starting; no PID in '{}' yet)",
            path.display()
        )),
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
        Ok(Some(file)) => file,
        Ok(None) => {
            tracing::info!(path = %path.display(), "no pidfile: not running");
            return Ok(0);
        }
        Err(e) => return Err(cannot(e.error)),
    };
    if !pidfile::is_locked(&file).map_err(|e| cannot(lock_error(path, e)))? {
        tracing::info!(path = %path.display(), "not running");
        remove_unlocked(path, &file);
        return Ok(0);
    }
    let deadline = Instant::now()
        .checked_add(timeout)
        .unwrap_or_else(far_future);
    let pid = match pidfile::read_pid(&file) {
        Ok(Some(pid)) => pid,
        // Locked but empty: a start is in progress, or the daemonize that
        // started it died before writing the PID. The lock's holders are
        // the instance either way.
        Ok(None) => return stop_holders(path, &file, signal, deadline).map_err(cannot),
        Err(e) => {
            return Err(cannot(
                e.context(format!("cannot read pidfile '{}'", path.display())),
            ));
        }
    };
    let pidfd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(Errno::ESRCH) => {
            // The daemon is gone, but processes it started hold the lock.
            tracing::info!(
                pid = pid.as_raw(),
                "the daemon has exited; its lock is still held"
            );
            return stop_holders(path, &file, signal, deadline).map_err(cannot);
        }
        Err(e) => {
            return Err(cannot(
                anyhow!(e).context(format!("cannot open a pidfd for pid {pid}")),
            ));
        }
    };
    // The pidfd now pins whatever process has this PID. Only if that
    // process holds the pidfile's lock is it the daemon: the PID may have
    // been reused since the daemon died (its children keeping the lock), or
    // the file rewritten by someone who may write it.
    if !holds_lock(pid, &file) {
        tracing::info!(
            pid = pid.as_raw(),
            "pid does not hold the lock: not signalling it"
        );
        return stop_holders(path, &file, signal, deadline).map_err(cannot);
    }

    tracing::info!(pid = pid.as_raw(), %signal, "signalling");
    send(&pidfd, signal, pid).map_err(cannot)?;
    if !wait_exit(&pidfd, deadline.saturating_duration_since(Instant::now())).map_err(cannot)? {
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
    stop_holders(path, &file, signal, deadline).map_err(cannot)
}

/// After the daemon itself has exited, processes it started may still hold
/// the lock: they inherited its descriptor, as children do. The lock is
/// the daemon's lifetime, so they are part of it: each gets `signal`
/// (through a pidfd, once it is confirmed to hold the pidfile open), then
/// SIGKILL at the deadline. The pidfile is removed once the lock is free.
fn stop_holders(path: &Path, file: &File, signal: Signal, deadline: Instant) -> anyhow::Result<u8> {
    let mut signalled: Vec<Pid> = Vec::new();
    let mut killed = false;
    loop {
        if remove_unlocked(path, file) {
            return Ok(0);
        }
        let now = Instant::now();
        let holders = lock_holders(file);
        if killed && now >= deadline + KILL_GRACE {
            return Err(anyhow!(
                "the daemon has exited, but processes {} still hold the lock on '{}' after SIGKILL",
                list(&holders),
                path.display()
            ));
        }
        if now < deadline {
            for holder in holders {
                if !signalled.contains(&holder) {
                    signal_holder(file, holder, signal);
                    signalled.push(holder);
                }
            }
        } else if !killed {
            for holder in holders {
                signal_holder(file, holder, Signal::SIGKILL);
            }
            killed = true;
        }
        std::thread::sleep(HOLDER_POLL);
    }
}

/// How often `stop_holders` looks at the lock: flock(2) has no way to wait
/// for a release with a timeout.
const HOLDER_POLL: Duration = Duration::from_millis(10);

/// Signals `pid` only if, once pinned by a pidfd, it still has the
/// pidfile open: a PID reused meanwhile belongs to a process that does not.
fn signal_holder(file: &File, pid: Pid, signal: Signal) {
    if let Ok(pidfd) = pidfd_open(pid)
        && holds_lock(pid, file)
    {
        tracing::info!(pid = pid.as_raw(), %signal, "signalling a process that holds the lock");
        let _ = pidfd_send_signal(&pidfd, signal);
    }
}

/// Processes other than daemonize itself that hold the lock on `file`.
fn lock_holders(file: &File) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    // Other daemonize processes take the lock for a moment (a concurrent
    // --stop removing the pidfile) or hold it for a start in progress; they
    // are not the daemon, which never runs this program's image.
    let same_image = |pid: i32| {
        let exe = |p: &str| std::fs::metadata(format!("/proc/{p}/exe")).ok();
        matches!((exe("self"), exe(&pid.to_string())), (Some(a), Some(b)) if a.dev() == b.dev() && a.ino() == b.ino())
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| !same_image(pid))
        .map(Pid::from_raw)
        .filter(|&pid| holds_lock(pid, file))
        .collect()
}

/// Whether process `pid` holds the exclusive flock on `file`'s inode: it has
/// a descriptor on the inode whose open file description carries the lock
/// (`/proc/PID/fdinfo` lists a description's locks). A process that merely
/// has the file open (`tail -f`, another `--status`) does not.
fn holds_lock(pid: Pid, file: &File) -> bool {
    let Ok(ours) = file.metadata() else {
        return false;
    };
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok).any(|fd| {
        let same = std::fs::metadata(fd.path())
            .is_ok_and(|m| m.dev() == ours.dev() && m.ino() == ours.ino());
        same && std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().display()))
            .is_ok_and(|info| {
                info.lines()
                    .any(|l| l.starts_with("lock:") && l.contains("FLOCK") && l.contains("WRITE"))
            })
    })
}

/// `[123, 456]`.
fn list(pids: &[Pid]) -> String {
    let pids: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
    format!("[{}]", pids.join(", "))
}

/// A status line on stdout. A reader that went away (`--status | true`)
/// must not turn the LSB code into a death by SIGPIPE: the signal is
/// blocked (it is not inherited by anything here) and the error ignored.
fn say(line: &str) {
    use std::io::Write;
    let mut pipe = SigSet::empty();
    pipe.add(Signal::SIGPIPE);
    let _ = pipe.thread_block();
    let _ = writeln!(std::io::stdout(), "{line}");
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

fn send(pidfd: &OwnedFd, signal: Signal, pid: Pid) -> anyhow::Result<()> {
    match pidfd_send_signal(pidfd, signal) {
        // Exited between our checks and the signal: nothing left to stop.
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(anyhow!(e).context(format!("cannot send {signal} to pid {pid}"))),
    }
}

/// Waits for the process behind `pidfd` to exit (true) or `timeout` to pass.
fn wait_exit(pidfd: &OwnedFd, timeout: Duration) -> anyhow::Result<bool> {
    pidfd_exited_within(pidfd, timeout)
        .map_err(|e| anyhow!(e).context("cannot wait for the daemon to exit"))
}

/// Removes the pidfile if nobody holds its lock (taking the lock ourselves
/// so no start can slip in between) and it looks like a pidfile (empty, or
/// one PID): `-p` naming the wrong file must not delete it. False if the
/// lock is held.
fn remove_unlocked(path: &Path, file: &File) -> bool {
    match file.try_lock() {
        Ok(()) => {
            if pidfile::read_pid(file).is_ok() {
                pidfile::remove_if_same(path, file);
            }
            true
        }
        Err(_) => false,
    }
}

fn lock_error(path: &Path, e: io::Error) -> anyhow::Error {
    anyhow!(e).context(format!("cannot probe the lock on '{}'", path.display()))
}
