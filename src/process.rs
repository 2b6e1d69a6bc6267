//! The processes a start leaves behind, seen from the original process.
//!
//! `daemonize` is a child subreaper (`launch`): when the intermediate child
//! exits, the daemon becomes its child, and when anything the daemon
//! started is orphaned, that process becomes its child too, whatever
//! process group or session it moved to. So "every process this start left"
//! is exactly "every child of ours", found through `/proc` (the kernel's
//! `/proc/PID/task/TID/children` is optional and absent on some kernels).
//! Nothing here runs in a forked child.

use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::{Pid, getpid};

use crate::sys;

/// A child of ours, as `/proc/PID/stat` shows it.
#[derive(Clone, Copy, Debug)]
struct Child {
    pid: Pid,
    zombie: bool,
    /// Clock ticks after boot at which it started.
    started: u64,
}

/// Every child of this process, zombies included.
fn children() -> Vec<Child> {
    let me = getpid().as_raw();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let fields = stat_fields(&stat)?;
            let ppid: i32 = fields.get(1)?.parse().ok()?;
            (ppid == me).then(|| Child {
                pid: Pid::from_raw(pid),
                zombie: fields[0] == "Z",
                started: fields.get(19).and_then(|s| s.parse().ok()).unwrap_or(0),
            })
        })
        .collect()
}

/// The fields of `/proc/PID/stat` after the command name (which may hold
/// spaces and parentheses): state, ppid, pgrp, ...
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().collect())
}

/// Whether this process has any child, running or not (reaping none).
fn has_children() -> bool {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    !matches!(waitid(Id::All, flags), Err(Errno::ECHILD))
}

/// The children of ours that are still running (reaping none).
pub fn live_children() -> Vec<Pid> {
    children()
        .into_iter()
        .filter(|c| !c.zombie)
        .map(|c| c.pid)
        .collect()
}

/// Reaps every child that has already exited.
fn reap_exited() {
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

/// Stops everything a failed start left: every child of ours (the daemon,
/// its orphans, whatever session they moved to) gets SIGKILL and is reaped;
/// what they leave is reparented to us and goes the same way, until no
/// child remains. Each is our unreaped child when signalled, so its PID
/// cannot have been reused. Returns how many processes were killed.
pub fn kill_leftovers() -> usize {
    let mut killed = 0;
    // Bounded, in case something forks as fast as we kill.
    for _ in 0..1000 {
        reap_exited();
        let live: Vec<Child> = children().into_iter().filter(|c| !c.zombie).collect();
        if live.is_empty() {
            break;
        }
        for child in live {
            if kill(child.pid, Signal::SIGKILL).is_ok() {
                killed += 1;
            }
        }
        for child in children() {
            reap(child.pid);
        }
    }
    reap_exited();
    killed
}

/// How long a lone process left by a command that forked and exited may
/// take to exit in turn (the first child of a daemon(3)-style double
/// fork), before it is taken for the daemon.
const FOLLOW_GRACE: Duration = Duration::from_millis(100);

/// After COMMAND exited 0 at start: the process it went into the
/// background as (`nginx` without `daemon off;`, `memcached -d`), which as
/// its orphan is now our child. `None` if nothing is left: it ran and is
/// done. With several left, the oldest, which started the others.
pub fn follow_fork() -> Option<Pid> {
    for _ in 0..100 {
        // One system call for the common case, a command that is done:
        // with no child at all, waitid fails with ECHILD, and /proc need
        // not be read.
        if !has_children() {
            return None;
        }
        reap_exited();
        let mut live: Vec<Child> = children().into_iter().filter(|c| !c.zombie).collect();
        live.sort_by_key(|c| (c.started, c.pid.as_raw()));
        match live.as_slice() {
            [] => return None,
            [only] => {
                let exits = sys::pidfd_open(only.pid)
                    .and_then(|fd| sys::pidfd_exited_within(&fd, FOLLOW_GRACE))
                    .unwrap_or(true);
                if !exits {
                    return Some(only.pid);
                }
            }
            [oldest, ..] => {
                tracing::info!(
                    pids = ?live.iter().map(|c| c.pid.as_raw()).collect::<Vec<_>>(),
                    "several processes were left; following the oldest"
                );
                return Some(oldest.pid);
            }
        }
    }
    None
}

/// How a child ended, as a phrase: `exited with status 3`, `was killed by
/// signal SIGSEGV (core dumped)`.
pub fn ended(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with status {code}"),
        WaitStatus::Signaled(_, signal, core) => format!(
            "was killed by signal {signal}{}",
            if core { " (core dumped)" } else { "" }
        ),
        _ => "exited".to_owned(),
    }
}

/// Waits for a child that is known to be exiting, retrying on EINTR.
pub fn reap(pid: Pid) -> Option<WaitStatus> {
    loop {
        match waitpid(pid, None) {
            Err(Errno::EINTR) => continue,
            other => return other.ok(),
        }
    }
}
