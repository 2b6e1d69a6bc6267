//! Processes, seen from the original process: one handle on a process
//! ([`Process`]: signal it, wait for it, stop it), and the processes a start
//! leaves behind.
//!
//! A [`Process`] pins a process with a pidfd, so a signal sent through it
//! reaches that process or nobody, never one that reused its PID, and its
//! exit is an event that poll(2) waits for with a deadline. Every "signal,
//! wait out a grace period, SIGKILL" of daemonize is [`Process::stop`]: the
//! readiness wait's (`ready`), `--stop`'s (`control`).
//!
//! `daemonize` is a child subreaper (`launch`): when the intermediate child
//! exits, the daemon becomes its child, and when anything the daemon
//! started is orphaned, that process becomes its child too, whatever
//! process group or session it moved to. So "every process this start left"
//! is exactly "every child of ours", found through `/proc` (the kernel's
//! `/proc/PID/task/TID/children` is optional and absent on some kernels).
//! Nothing here runs in a forked child.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::{Pid, getpgid, getpgrp, getpid};

use crate::sys::{self, SignalNumber};

/// A handle on one process: its PID, pinned by a pidfd. Signals go through
/// the pidfd, so they reach this very process or, once it has exited and
/// been reaped, nobody (`ESRCH`); waits are polls on the pidfd, which turns
/// readable when the process exits. The PID itself is only a name for
/// messages and for `/proc`: it may be reused once the process is reaped,
/// so whoever reads `/proc/PID` checks the process after pinning it.
#[derive(Debug)]
pub struct Process {
    pid: Pid,
    pidfd: OwnedFd,
    /// Our own child, which nothing but this handle reaps ([`Process::reap`]):
    /// until then its PID, and so the ID of the process group it leads or
    /// belongs to, stays reserved, and the group may be signalled.
    child: bool,
}

/// What [`Process::stop`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// It had exited before anything was sent.
    AlreadyExited,
    /// The first signal ended it within the grace period.
    BySignal,
    /// It outlived the grace period, and SIGKILL ended it.
    Killed,
    /// It outlived SIGKILL's grace period too (stuck in the kernel: an
    /// uninterruptible sleep, a hung NFS mount).
    StillRunning,
}

/// Why [`Process::stop`] could not go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopError {
    /// The first signal could not be sent (`EPERM`: not ours to signal).
    Signal(Errno),
    /// SIGKILL could not be sent.
    Kill(Errno),
    /// Waiting on the pidfd failed.
    Wait(Errno),
}

impl Process {
    /// Pins process `pid` (`pidfd_open(2)`). `ESRCH`: there is none (a
    /// thread's ID gives `EINVAL`). Whatever is checked about the process
    /// through `/proc` must be checked after this, so that a PID reused
    /// meanwhile fails the check rather than being signalled.
    pub fn open(pid: Pid) -> nix::Result<Process> {
        Ok(Process::from_pidfd(pid, sys::pidfd_open(pid)?))
    }

    /// Pins `pid`, an unreaped child of ours that only this handle will
    /// reap: its process group may then be signalled too
    /// ([`Process::signal_group`]).
    pub fn child(pid: Pid) -> nix::Result<Process> {
        Ok(Process {
            child: true,
            ..Process::open(pid)?
        })
    }

    /// A handle on `pid` from `pidfd`, a pidfd already open on it.
    pub fn from_pidfd(pid: Pid, pidfd: OwnedFd) -> Process {
        Process {
            pid,
            pidfd,
            child: false,
        }
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Sends `signal` to this process: `Ok(true)` once sent, `Ok(false)` if
    /// it has already exited and been reaped (`ESRCH`, no error: there is
    /// nothing left to signal).
    pub fn signal(&self, signal: impl SignalNumber) -> nix::Result<bool> {
        match sys::pidfd_send_signal(&self.pidfd, signal) {
            Ok(()) => Ok(true),
            Err(Errno::ESRCH) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sends `signal` with `value` queued along (`SI_QUEUE`), as control
    /// actions send requests to a supervisor (`state`); `Ok(false)` as for
    /// [`Process::signal`].
    pub fn queue(&self, signal: nix::libc::c_int, value: u64) -> nix::Result<bool> {
        match sys::pidfd_send_value(&self.pidfd, signal, value) {
            Ok(()) => Ok(true),
            Err(Errno::ESRCH) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The process group to signal along with this process: only that of
    /// a child of ours (its ID stays reserved while the child is unreaped),
    /// and never init's or our own. Looked up at each use, as the child may
    /// have moved to a group of its own since it was pinned.
    pub fn group(&self) -> Option<Pid> {
        if !self.child {
            return None;
        }
        let pgid = getpgid(Some(self.pid)).ok()?;
        safe_group(pgid, getpgrp()).then_some(pgid)
    }

    /// Sends `signal` to this process's group when [`Process::group`]
    /// knows one (what it started there goes too: a script's children, a
    /// server's workers), else to the process alone. `Ok(false)` if nobody
    /// was left to receive it.
    pub fn signal_group(&self, signal: impl SignalNumber) -> nix::Result<bool> {
        match self.group() {
            Some(pgid) => match sys::killpg(pgid, signal) {
                Ok(()) => Ok(true),
                Err(Errno::ESRCH) => Ok(false),
                Err(e) => Err(e),
            },
            None => self.signal(signal),
        }
    }

    /// Waits up to `timeout` for this process to exit: true once it has
    /// (at once if it already had; `Duration::ZERO` only looks). One
    /// poll(2) on the pidfd with a deadline.
    pub fn exited_within(&self, timeout: Duration) -> nix::Result<bool> {
        sys::pidfd_exited_within(&self.pidfd, timeout)
    }

    /// Waits until one of `processes` exits, `also` is readable, or
    /// `deadline` passes: true in the first two cases (at once if one
    /// already had). One poll(2) over all their pidfds; with none, it waits
    /// out the deadline.
    pub fn wait_any(
        processes: &[Process],
        also: Option<BorrowedFd<'_>>,
        deadline: Instant,
    ) -> nix::Result<bool> {
        let mut fds: Vec<PollFd> = processes
            .iter()
            .map(|p| PollFd::new(p.as_fd(), PollFlags::POLLIN))
            .chain(also.map(|fd| PollFd::new(fd, PollFlags::POLLIN)))
            .collect();
        Ok(sys::poll_until(&mut fds, deadline)? > 0)
    }

    /// Stops this process: `first` (to its group, see
    /// [`Process::signal_group`]), then up to `grace` for it to exit, then
    /// SIGKILL (to the process alone) and up to `kill_grace` more. Returns
    /// what it took. Nothing is sent to a process that has already exited.
    /// The caller reaps a child.
    pub fn stop(
        &self,
        first: impl SignalNumber,
        grace: Duration,
        kill_grace: Duration,
    ) -> Result<Stopped, StopError> {
        if self
            .exited_within(Duration::ZERO)
            .map_err(StopError::Wait)?
        {
            return Ok(Stopped::AlreadyExited);
        }
        self.signal_group(first).map_err(StopError::Signal)?;
        self.escalate(grace, kill_grace)
    }

    /// The rest of a stop, once this process has been told to end (by a
    /// signal, or by a request, as a supervisor is): up to `grace` for it
    /// to exit, then SIGKILL (to the process alone) and up to `kill_grace`
    /// more.
    pub fn escalate(&self, grace: Duration, kill_grace: Duration) -> Result<Stopped, StopError> {
        let exited = |within| self.exited_within(within).map_err(StopError::Wait);
        if exited(grace)? {
            return Ok(Stopped::BySignal);
        }
        tracing::info!(
            pid = self.pid.as_raw(),
            "still running after the timeout: sending SIGKILL"
        );
        self.signal(Signal::SIGKILL).map_err(StopError::Kill)?;
        Ok(match exited(kill_grace)? {
            true => Stopped::Killed,
            false => Stopped::StillRunning,
        })
    }

    /// Reaps this process, a child of ours, once it is known to be exiting,
    /// for its status. The handle goes with it: the PID may be reused from
    /// now on.
    pub fn reap(self) -> Option<WaitStatus> {
        reap(self.pid)
    }
}

impl AsFd for Process {
    /// The pidfd: readable once the process has exited.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }
}

/// Whether process group `pgid` may be signalled by a process in group
/// `ours`: not init's (nor the "every process" of `kill(-1)`), and not
/// our own, which holds the caller too.
fn safe_group(pgid: Pid, ours: Pid) -> bool {
    pgid.as_raw() > 1 && pgid != ours
}

/// A child of ours, as `/proc/PID/stat` shows it.
#[derive(Clone, Copy, Debug)]
struct Child {
    pid: Pid,
    zombie: bool,
    /// Clock ticks after boot at which it started.
    started: u64,
}

/// Children the caller gave us before the start (`job & exec daemonize`):
/// they are not part of the start, so they are never followed or stopped.
static PREEXISTING: std::sync::OnceLock<Vec<i32>> = std::sync::OnceLock::new();

/// Notes the children this process already has, before the daemon is
/// forked. One `waitid` when there are none, the usual case.
pub fn note_preexisting() {
    let pids = match has_children() {
        true => children().iter().map(|c| c.pid.as_raw()).collect(),
        false => Vec::new(),
    };
    // Set only when there are some: a launch then touches none of it.
    if !pids.is_empty() {
        tracing::debug!(?pids, "children from before the start, left alone");
        let _ = PREEXISTING.set(pids);
    }
}

/// Every child of this process that the start made, zombies included.
fn children() -> Vec<Child> {
    let preexisting = PREEXISTING.get().map_or(&[][..], Vec::as_slice);
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
            (ppid == me && !preexisting.contains(&pid)).then(|| Child {
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
                let exits = Process::open(only.pid)
                    .and_then(|p| p.exited_within(FOLLOW_GRACE))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Child, Command, Stdio};

    const LONG: Duration = Duration::from_secs(10);

    /// `sh -c script`, with its stdout piped; `own_group` puts it in a
    /// process group of its own.
    fn sh(script: &str, own_group: bool) -> Child {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        if own_group {
            cmd.process_group(0);
        }
        cmd.spawn().expect("spawn sh")
    }

    fn pid(child: &Child) -> Pid {
        Pid::from_raw(child.id() as i32)
    }

    /// The first line `child` writes.
    fn line(child: &mut Child) -> String {
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        line.trim().to_owned()
    }

    fn killed_by(child: &mut Child) -> Option<i32> {
        child.wait().unwrap().signal()
    }

    #[test]
    fn only_a_group_other_than_init_s_and_ours_may_be_signalled() {
        let ours = Pid::from_raw(500);
        assert!(safe_group(Pid::from_raw(600), ours));
        assert!(!safe_group(ours, ours));
        assert!(!safe_group(Pid::from_raw(1), ours));
        assert!(!safe_group(Pid::from_raw(0), ours));
    }

    #[test]
    fn stop_ends_a_process_with_the_first_signal() {
        let mut child = sh("exec sleep 60", false);
        let process = Process::open(pid(&child)).unwrap();
        assert_eq!(
            process.stop(Signal::SIGTERM, LONG, LONG),
            Ok(Stopped::BySignal)
        );
        assert_eq!(killed_by(&mut child), Some(Signal::SIGTERM as i32));
    }

    #[test]
    fn stop_kills_a_process_that_outlives_the_grace_period() {
        // The ignored disposition survives exec.
        let mut child = sh(r#"trap "" TERM; echo set; exec sleep 60"#, false);
        assert_eq!(line(&mut child), "set");
        let process = Process::open(pid(&child)).unwrap();
        let grace = Duration::from_millis(100);
        let before = Instant::now();
        assert_eq!(
            process.stop(Signal::SIGTERM, grace, LONG),
            Ok(Stopped::Killed)
        );
        assert!(before.elapsed() >= grace);
        assert_eq!(killed_by(&mut child), Some(Signal::SIGKILL as i32));
    }

    #[test]
    fn nothing_is_sent_to_a_process_that_has_exited() {
        let mut child = sh("exit 3", false);
        let process = Process::open(pid(&child)).unwrap();
        assert_eq!(process.exited_within(LONG), Ok(true));
        assert_eq!(
            process.stop(Signal::SIGTERM, LONG, LONG),
            Ok(Stopped::AlreadyExited)
        );
        assert_eq!(child.wait().unwrap().code(), Some(3));
        // Reaped: no process is left behind the pidfd, whoever has the PID.
        assert_eq!(process.signal(Signal::SIGKILL), Ok(false));
    }

    #[test]
    fn a_child_in_our_own_group_is_signalled_alone() {
        let mut child = sh("exec sleep 60", false);
        let process = Process::child(pid(&child)).unwrap();
        assert_eq!(process.group(), None);
        assert_eq!(process.signal_group(Signal::SIGKILL), Ok(true));
        assert_eq!(killed_by(&mut child), Some(Signal::SIGKILL as i32));
        // Only a child's group is ever signalled: a process merely pinned
        // might be reaped by someone else, and its group ID reused.
        let mut other = sh("exec sleep 60", true);
        let process = Process::open(pid(&other)).unwrap();
        assert_eq!(process.group(), None);
        assert_eq!(process.signal_group(Signal::SIGKILL), Ok(true));
        assert_eq!(killed_by(&mut other), Some(Signal::SIGKILL as i32));
    }

    #[test]
    fn a_child_s_own_group_is_signalled_whole() {
        let mut child = sh("sleep 60 & echo $!; wait", true);
        let grandchild: i32 = line(&mut child).parse().unwrap();
        let grandchild = Process::open(Pid::from_raw(grandchild)).unwrap();
        let process = Process::child(pid(&child)).unwrap();
        assert_eq!(process.group(), Some(pid(&child)));
        assert_eq!(process.signal_group(Signal::SIGTERM), Ok(true));
        assert_eq!(grandchild.exited_within(LONG), Ok(true));
        assert_eq!(process.exited_within(LONG), Ok(true));
        assert!(matches!(
            process.reap(),
            Some(WaitStatus::Signaled(_, Signal::SIGTERM, _))
        ));
    }

    #[test]
    fn wait_any_wakes_at_the_first_exit_or_else_at_the_deadline() {
        let children = [sh("exec sleep 60", false), sh("exec sleep 60", false)];
        let processes: Vec<Process> = children
            .iter()
            .map(|c| Process::child(pid(c)).unwrap())
            .collect();
        let before = Instant::now();
        let short = Duration::from_millis(50);
        assert_eq!(
            Process::wait_any(&processes, None, before + short),
            Ok(false)
        );
        assert!(before.elapsed() >= short);
        assert_eq!(processes[1].signal(Signal::SIGKILL), Ok(true));
        let before = Instant::now();
        assert_eq!(Process::wait_any(&processes, None, before + LONG), Ok(true));
        assert!(before.elapsed() < LONG);
        // Nothing to wait for: the deadline.
        let before = Instant::now();
        assert_eq!(Process::wait_any(&[], None, before + short), Ok(false));
        assert!(before.elapsed() >= short);
        for process in processes {
            process.signal(Signal::SIGKILL).unwrap();
            assert!(matches!(
                process.reap(),
                Some(WaitStatus::Signaled(_, Signal::SIGKILL, _))
            ));
        }
    }
}
