//! The identity rule (docs/design.md, "The identity rule"): finding a
//! daemon that dropped its lock.
//!
//! sshd (`closefrom`) and dnsmasq close every descriptor they inherit at
//! start-up, the lock among them, so the lock no longer says whether they
//! run. The PID in the pidfile still names such a daemon if that process
//! exists, is not a zombie, and started no later than the pidfile was last
//! written: the daemon already ran when its PID was written, whereas a
//! process that reused the PID after the daemon died started later. That
//! holds only if nobody else could have written the file (any PID, then any
//! mtime with `touch`): it must be a regular file owned by the caller or by
//! root and writable by no one else.
//!
//! The start time is field 22 of `/proc/PID/stat`, in clock ticks since
//! boot (suspend included), turned into wall-clock time with the current
//! `CLOCK_REALTIME` and `CLOCK_BOOTTIME`. A step of the wall clock between
//! the daemon's start and the check (not a slew, which moves both clocks)
//! shifts that estimate by the step.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;

use anyhow::{Context, anyhow};
use nix::errno::Errno;
use nix::time::{ClockId, clock_gettime};
use nix::unistd::{Pid, SysconfVar, geteuid, sysconf};

use crate::sys::pidfd_open;

const NANOS_PER_SECOND: i128 = 1_000_000_000;

/// Whether `pid`, read from `pidfile`, names the daemon by the identity
/// rule. If it does, returns a pidfd pinning that process: every check on
/// the process is made after the pidfd was opened, so a PID reused in the
/// meantime fails them, and a signal sent through the pidfd reaches exactly
/// the process that passed.
pub fn identify(pidfile: &File, pid: Pid) -> anyhow::Result<Option<OwnedFd>> {
    let meta = pidfile.metadata().context("cannot stat the pidfile")?;
    if !meta.is_file() {
        return Ok(None);
    }
    if let Some(why) = untrusted(meta.uid(), meta.mode(), geteuid().as_raw()) {
        tracing::debug!(%pid, why, "the pidfile cannot name a daemon by identity");
        return Ok(None);
    }
    let pidfd = match pidfd_open(pid) {
        Ok(fd) => fd,
        // No such process, or a thread's ID rather than a process's.
        Err(Errno::ESRCH | Errno::EINVAL) => return Ok(None),
        Err(e) => return Err(anyhow!(e).context(format!("cannot open a pidfd for pid {pid}"))),
    };
    let path = format!("/proc/{pid}/stat");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        // Gone since the pidfd was opened.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(Errno::ESRCH as i32) => return Ok(None),
        Err(e) => return Err(anyhow!(e).context(format!("cannot read '{path}'"))),
    };
    let (state, start_ticks) =
        parse_stat(&text).ok_or_else(|| anyhow!("cannot parse '{path}': {text:?}"))?;
    // A zombie has exited: it is no daemon, and signals would be lost on it.
    if matches!(state, 'Z' | 'X') {
        return Ok(None);
    }
    let written = i128::from(meta.mtime()) * NANOS_PER_SECOND + i128::from(meta.mtime_nsec());
    let clocks = Clocks::now()?;
    let daemon = started_no_later_than(
        start_ticks,
        clocks.ticks_per_second,
        clocks.realtime,
        clocks.boottime,
        written,
    );
    tracing::debug!(%pid, daemon, "identity rule: start time against the pidfile's mtime");
    Ok(daemon.then_some(pidfd))
}

/// Whether `pid` started after the daemon that `pidfile` named could have:
/// no earlier than `slack` before the file was written. A process that
/// took over the daemon's lock (it forked into the background) started
/// after it; one that was running long before (a service that received
/// the lock's descriptor) did not. False when it cannot be told.
pub fn started_since(pidfile: &File, pid: Pid, slack: std::time::Duration) -> bool {
    let Ok(meta) = pidfile.metadata() else {
        return false;
    };
    if untrusted(meta.uid(), meta.mode(), geteuid().as_raw()).is_some() {
        return false;
    }
    let Some((_, start_ticks)) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|text| parse_stat(&text))
    else {
        return false;
    };
    let Ok(clocks) = Clocks::now() else {
        return false;
    };
    let written = i128::from(meta.mtime()) * NANOS_PER_SECOND + i128::from(meta.mtime_nsec());
    let earliest = written - slack.as_nanos() as i128;
    !started_no_later_than(
        start_ticks,
        clocks.ticks_per_second,
        clocks.realtime,
        clocks.boottime,
        earliest,
    )
}

/// The parent of `pid`, from `/proc/PID/stat`.
pub fn parent(pid: Pid) -> Option<Pid> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_ppid(&stat).map(Pid::from_raw)
}

/// Field 4 of `/proc/PID/stat`, counted after the *last* `)`: the command
/// name in field 2 may hold spaces, parentheses and any other byte.
fn parse_ppid(stat: &[u8]) -> Option<i32> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Whether process `pid` exists and has not exited (a zombie has).
pub fn is_alive(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|text| parse_stat(&text))
        .is_some_and(|(state, _)| !matches!(state, 'Z' | 'X'))
}

/// Why a pidfile owned by `uid` with `mode` cannot be trusted to name a
/// daemon by identity, for a caller whose effective uid is `euid`; `None`
/// if it can.
fn untrusted(uid: u32, mode: u32, euid: u32) -> Option<&'static str> {
    if uid != euid && uid != 0 {
        Some("it is owned by another user, who could write any PID into it")
    } else if mode & 0o022 != 0 {
        Some("group or others may write to it, and so write any PID into it")
    } else {
        None
    }
}

/// The state (field 3) and start time (field 22, clock ticks since boot)
/// in the text of `/proc/PID/stat`. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after the last `)`.
fn parse_stat(text: &str) -> Option<(char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(22 - 3)?.parse().ok()?;
    Some((state, start))
}

/// The clocks, read once, in nanoseconds.
struct Clocks {
    realtime: i128,
    boottime: i128,
    ticks_per_second: u64,
}

impl Clocks {
    fn now() -> anyhow::Result<Clocks> {
        let nanos = |id: ClockId| {
            clock_gettime(id)
                .map(|t| i128::from(t.tv_sec()) * NANOS_PER_SECOND + i128::from(t.tv_nsec()))
                .with_context(|| format!("cannot read clock {id}"))
        };
        let ticks_per_second = sysconf(SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .and_then(|t| u64::try_from(t).ok())
            .filter(|&t| t > 0)
            .ok_or_else(|| anyhow!("cannot read the clock tick rate (_SC_CLK_TCK)"))?;
        Ok(Clocks {
            realtime: nanos(ClockId::CLOCK_REALTIME)?,
            boottime: nanos(ClockId::CLOCK_BOOTTIME)?,
            ticks_per_second,
        })
    }
}

/// The identity rule's comparison: a process that started `start_ticks`
/// clock ticks after boot started at `realtime_now - (boottime_now -
/// start)`; it may be the daemon if that is no later than `written` (the
/// pidfile's mtime). All times in nanoseconds, wall-clock times since the
/// epoch. The kernel truncates the start time to a whole tick, so a
/// process started in the same tick as the write still counts: daemonize
/// writes the PID after the daemon has exec'd, well after its fork, while a
/// PID is reused only after the daemon has died.
fn started_no_later_than(
    start_ticks: u64,
    ticks_per_second: u64,
    realtime_now: i128,
    boottime_now: i128,
    written: i128,
) -> bool {
    let since_boot =
        i128::from(start_ticks) * NANOS_PER_SECOND / i128::from(ticks_per_second.max(1));
    let started = realtime_now - (boottime_now - since_boot);
    started <= written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_pid_is_read_after_the_last_parenthesis() {
        assert_eq!(parse_ppid(b"42 (sleep) S 7 42 42 0 -1"), Some(7));
        assert_eq!(parse_ppid(b"42 (a) b) (c) R 9 1 1 0 -1"), Some(9));
        assert_eq!(parse_ppid(b"42 (odd \xff name) S 3 1 1"), Some(3));
        assert_eq!(parse_ppid(b"42 (cut"), None);
        assert_eq!(parse_ppid(b""), None);
    }

    const S: i128 = NANOS_PER_SECOND;
    /// A wall-clock moment, in seconds since the epoch.
    const NOW: i128 = 1_800_000_000;

    #[test]
    fn a_process_started_before_the_write_is_the_daemon() {
        // Booted 1000 s ago; started 5 s after boot; the pidfile was
        // written 2 ms after that.
        let written = (NOW - 1000 + 5) * S + 2_000_000;
        assert!(started_no_later_than(500, 100, NOW * S, 1000 * S, written));
    }

    #[test]
    fn a_process_started_after_the_write_reused_the_pid() {
        // Written at 5 s after boot; this process started at 5.02 s.
        let written = (NOW - 1000 + 5) * S;
        assert!(!started_no_later_than(502, 100, NOW * S, 1000 * S, written));
        // Much later, too, and with another tick rate.
        assert!(!started_no_later_than(
            900_000,
            1000,
            NOW * S,
            1000 * S,
            written
        ));
    }

    #[test]
    fn the_start_tick_of_the_write_counts_as_no_later() {
        // Started at exactly the moment of the write, and within the tick
        // that contains it (the kernel truncates to whole ticks).
        let written = (NOW - 1000 + 5) * S;
        assert!(started_no_later_than(500, 100, NOW * S, 1000 * S, written));
        assert!(started_no_later_than(
            500,
            100,
            NOW * S,
            1000 * S,
            written + 9 * S / 1000
        ));
    }

    #[test]
    fn the_comparison_is_to_the_nanosecond() {
        // Started 5 s after boot, 995 s ago: a pidfile written a
        // nanosecond after that names it, one written a nanosecond before
        // does not.
        let written = (NOW - 995) * S + 1;
        assert!(started_no_later_than(500, 100, NOW * S, 1000 * S, written));
        assert!(!started_no_later_than(
            500,
            100,
            NOW * S,
            1000 * S,
            written - 2
        ));
    }

    #[test]
    fn only_a_pidfile_nobody_else_can_write_is_trusted() {
        assert_eq!(untrusted(1000, 0o100644, 1000), None);
        assert_eq!(untrusted(0, 0o100644, 1000), None, "root's pidfile");
        assert_eq!(untrusted(0, 0o100600, 0), None);
        assert!(untrusted(1001, 0o100644, 1000).is_some(), "another user's");
        assert!(untrusted(1000, 0o100644, 0).is_some(), "a user's, for root");
        assert!(untrusted(1000, 0o100664, 1000).is_some(), "group-writable");
        assert!(untrusted(0, 0o100646, 1000).is_some(), "world-writable");
    }

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        let text = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    1 2 0 0 20 0 1 0 123456 2000000 100 18446744073709551615";
        assert_eq!(parse_stat(text), Some(('S', 123456)));
        assert_eq!(
            parse_stat("1 (z) Z 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 77 0 0"),
            Some(('Z', 77))
        );
        assert_eq!(parse_stat("1 (short) S 0 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }
}
