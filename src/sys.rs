//! Thin wrappers over raw system calls, at the bottom of the layout: every
//! `unsafe` block of the library that is not about forking lives here
//! (`detach` holds the rest: the children's code, their stacks, `clone`). Nothing here knows about plans, pidfiles or
//! daemons; each function is one system call (or a short fixed sequence)
//! with its errors turned into `nix`/`anyhow` results. Nothing here runs in
//! a forked child.

#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::ptr;

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::libc::{self, c_char, c_int, c_uint};
use nix::unistd::Pid;

/// daemonize's errors are messages for people and are never shown with a
/// backtrace, but anyhow captures one for every error whenever
/// `RUST_BACKTRACE` is set (as it often is on a Rust developer's machine),
/// and a capture costs about a millisecond, on the very path that reports
/// a failed start. std decides once per process whether to capture, reading
/// `RUST_LIB_BACKTRACE` first; so that variable is set to `0` for that one
/// decision, and the environment is then put back as it was, since the
/// daemon inherits it. Nothing happens when neither variable is set.
pub fn disable_backtrace_capture() {
    const VAR: &str = "RUST_LIB_BACKTRACE";
    let old = std::env::var_os(VAR);
    if old.is_none() && std::env::var_os("RUST_BACKTRACE").is_none() {
        return;
    }
    // SAFETY: called first thing in `main`, while the process is
    // single-threaded and nothing holds a pointer into the environment.
    unsafe { std::env::set_var(VAR, "0") };
    let _ = std::backtrace::Backtrace::capture();
    // SAFETY: as above.
    unsafe {
        match old {
            Some(value) => std::env::set_var(VAR, value),
            None => std::env::remove_var(VAR),
        }
    }
}

/// Reads and removes the environment variable `name`, so that nothing
/// started from here inherits it (the supervisor's marker, see `launch`).
pub fn take_env(name: &str) -> Option<std::ffi::OsString> {
    let value = std::env::var_os(name)?;
    // SAFETY: called first thing in `main`, while the process is
    // single-threaded and nothing holds a pointer into the environment.
    unsafe { std::env::remove_var(name) };
    Some(value)
}

/// A duplicate of `fd` at the lowest free number at or above `floor`,
/// close-on-exec (`F_DUPFD_CLOEXEC`).
pub fn dup_above(fd: &impl AsRawFd, floor: RawFd) -> nix::Result<OwnedFd> {
    // SAFETY: fcntl on an open descriptor with an integer argument.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, floor) };
    if new == -1 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just created `new`; nothing else owns it.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(new) })
}

/// Whether `fd` is an open pipe (or FIFO).
pub fn fd_is_pipe(fd: RawFd) -> bool {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes one `struct stat` into valid memory.
    if unsafe { libc::fstat(fd, stat.as_mut_ptr()) } == -1 {
        return false;
    }
    // SAFETY: fstat succeeded, so it filled in `stat`.
    let stat = unsafe { stat.assume_init() };
    stat.st_mode & libc::S_IFMT == libc::S_IFIFO
}

/// Ignores `signal` (SIG_IGN), as a supervisor does SIGPIPE: a log that
/// went away is an error to handle, not a death.
pub fn ignore_signal(signal: nix::sys::signal::Signal) {
    use nix::sys::signal::{SigHandler, signal as set};
    // SAFETY: SIG_IGN installs no handler, so no code of ours runs
    // asynchronously.
    let _ = unsafe { set(signal, SigHandler::SigIgn) };
}

/// Whether `fd` is an open descriptor in this process.
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor flags; any integer is a
    // valid argument and a closed one yields EBADF.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// Detach step 1 (docs/design.md): descriptors 0, 1 and 2 are occupied
/// (with `/dev/null`) before anything else is opened, so no file ever lands
/// on them by accident.
pub fn occupy_stdio() -> anyhow::Result<()> {
    for fd in 0..3 {
        if !fd_is_open(fd) {
            let null = nix::fcntl::open("/dev/null", OFlag::O_RDWR, nix::sys::stat::Mode::empty())
                .context("cannot open '/dev/null'")?;
            // The lowest free descriptor is `fd` itself: keep it open for good.
            std::mem::forget(null);
        }
    }
    Ok(())
}

/// Makes sure descriptor `target` is occupied in this process, so that
/// nothing we open lands on it: `--ready-fd` will install the readiness pipe
/// there in the daemon. An inherited descriptor already occupies it (the
/// daemon gets the pipe instead); otherwise `/dev/null` is put there.
pub fn reserve_fd(target: RawFd) -> anyhow::Result<Option<OwnedFd>> {
    if fd_is_open(target) {
        return Ok(None);
    }
    let null = nix::fcntl::open(
        "/dev/null",
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .context("cannot open '/dev/null'")?;
    if null.as_raw_fd() == target {
        return Ok(Some(null));
    }
    // SAFETY: `target` is not open (checked above, and we are single-
    // threaded), so dup3 creates it and the OwnedFd is its only owner.
    let fd = unsafe { libc::dup3(null.as_raw_fd(), target, libc::O_CLOEXEC) };
    if fd == -1 {
        return Err(Errno::last()).with_context(|| format!("cannot reserve descriptor {target}"));
    }
    // SAFETY: dup3 just created `fd`; nothing else owns it.
    Ok(Some(unsafe {
        <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
    }))
}

/// Restricts the user and group databases to `/etc/passwd` and
/// `/etc/group` in the statically linked build. Static glibc would otherwise
/// dlopen the NSS modules named in nsswitch.conf (systemd, ldap, sss) into a
/// process that has its own copy of libc, and those modules crash there
/// (nss_systemd's thread-local state is the first to fault). Local users
/// always work; see README for users from other sources.
pub fn nss_files_only_if_static() {
    unsafe extern "C" {
        /// glibc's `<nss.h>`: overrides the nsswitch.conf line of one database.
        fn __nss_configure_lookup(db: *const c_char, service_line: *const c_char) -> c_int;
    }
    if cfg!(target_feature = "crt-static") {
        for db in [c"passwd", c"group", c"initgroups"] {
            // SAFETY: both arguments are static C strings; the call only
            // records the service line for later lookups.
            unsafe { __nss_configure_lookup(db.as_ptr(), c"files".as_ptr()) };
        }
    }
}

/// `pidfd_open(2)`: a handle on a process that stays bound to it even if
/// its PID is reused later.
pub fn pidfd_open(pid: Pid) -> nix::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor or
    // -1; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0 as c_uint) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as RawFd) })
}

/// Waits up to `timeout` for the process behind `pidfd` to exit (a pidfd
/// polls readable then); true once it has. Retries on EINTR.
pub fn pidfd_exited_within(pidfd: &OwnedFd, timeout: std::time::Duration) -> nix::Result<bool> {
    use nix::poll::{PollFd, PollFlags};
    use std::os::fd::AsFd;
    let deadline = std::time::Instant::now() + timeout;
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    Ok(poll_until(&mut fds, deadline)? > 0)
}

/// `poll(2)` until `deadline`: returns the number of ready descriptors, or 0
/// once the deadline has passed (at once if it already has). Retries on
/// EINTR with the time left, so a signal neither ends the wait early nor
/// makes it longer. With no descriptors, it waits out the deadline; with
/// no deadline (`None`), it waits until a descriptor is ready.
pub fn poll_until(
    fds: &mut [nix::poll::PollFd<'_>],
    deadline: impl Into<Option<std::time::Instant>>,
) -> nix::Result<usize> {
    let deadline = deadline.into();
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
        let timeout = left.map_or(nix::poll::PollTimeout::NONE, poll_timeout);
        match nix::poll::poll(fds, timeout) {
            Ok(0) if left.is_some_and(|left| left.is_zero()) => return Ok(0),
            Ok(0) | Err(Errno::EINTR) => {}
            Ok(n) => return Ok(usize::try_from(n).unwrap_or_default()),
            Err(e) => return Err(e),
        }
    }
}

/// `left` as a poll(2) timeout, rounded *up* to the millisecond (rounded
/// down, a wait would end just before its deadline and spin until it), and
/// at most about 24 days (i32 milliseconds; the caller polls again).
fn poll_timeout(left: std::time::Duration) -> nix::poll::PollTimeout {
    let millis = left.as_nanos().div_ceil(1_000_000);
    nix::poll::PollTimeout::try_from(millis).unwrap_or(nix::poll::PollTimeout::MAX)
}

/// A signal number as the kernel takes it. nix's `Signal` cannot hold the
/// real-time signals (`SIGRTMIN+3`), so callers that accept any signal
/// pass the raw number; callers with a `Signal` pass that.
pub trait SignalNumber {
    fn number(self) -> c_int;
}

impl SignalNumber for c_int {
    fn number(self) -> c_int {
        self
    }
}

impl SignalNumber for nix::sys::signal::Signal {
    fn number(self) -> c_int {
        self as c_int
    }
}

/// `pidfd_send_signal(2)`: signals exactly the process `pidfd` refers to.
pub fn pidfd_send_signal(pidfd: &OwnedFd, signal: impl SignalNumber) -> nix::Result<()> {
    // SAFETY: a NULL siginfo asks the kernel to fill it in as kill(2) would;
    // the descriptor is valid for the duration of the borrow.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal.number(),
            ptr::null::<libc::siginfo_t>(),
            0 as c_uint,
        )
    };
    if rc == 0 { Ok(()) } else { Err(Errno::last()) }
}

/// `pidfd_send_signal(2)` with a value, as `sigqueue(3)` sends one: the
/// receiver's signalfd sees `value` in `ssi_ptr` and `SI_QUEUE` in
/// `ssi_code`. This is how control actions talk to a supervisor (`state`).
pub fn pidfd_send_value(pidfd: &OwnedFd, signal: c_int, value: u64) -> nix::Result<()> {
    /// The kernel's `siginfo_t` for a queued signal on 64-bit Linux: three
    /// ints, padding to the union's 8-byte alignment, then `_rt`'s sender
    /// PID, UID and value; 128 bytes in all.
    #[repr(C)]
    struct QueuedInfo {
        signo: c_int,
        errno: c_int,
        code: c_int,
        _pad: c_int,
        pid: libc::pid_t,
        uid: libc::uid_t,
        value: u64,
        _rest: [u8; 128 - 32],
    }
    const SI_QUEUE: c_int = -1;
    let info = QueuedInfo {
        signo: signal,
        errno: 0,
        code: SI_QUEUE,
        _pad: 0,
        pid: std::process::id() as libc::pid_t,
        // SAFETY: getuid takes no arguments and cannot fail.
        uid: unsafe { libc::getuid() },
        value,
        _rest: [0; 128 - 32],
    };
    // SAFETY: `info` is a live struct of the kernel's siginfo layout and
    // size, which the kernel only reads; the descriptor is borrowed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            &info as *const QueuedInfo,
            0 as c_uint,
        )
    };
    if rc == 0 { Ok(()) } else { Err(Errno::last()) }
}

/// `killpg(2)` with any signal number (nix's `killpg` takes only a
/// `Signal`, which cannot hold the real-time signals).
pub fn killpg(pgid: Pid, signal: impl SignalNumber) -> nix::Result<()> {
    // SAFETY: killpg takes two integers and touches no memory of ours.
    Errno::result(unsafe { libc::killpg(pgid.as_raw(), signal.number()) }).map(drop)
}

/// Puts SIGCHLD back to its default disposition (docs/design.md, detach
/// step 2). A caller that ignores SIGCHLD would otherwise have the kernel
/// reap our children for us, and no exit status could be collected.
pub fn default_sigchld() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: SIG_DFL installs no handler, so no code of ours can run
    // asynchronously; this is called first thing in `main`, single-threaded.
    let _ = unsafe { signal(Signal::SIGCHLD, SigHandler::SigDfl) };
}

/// Whether `signal`'s disposition is `SIG_IGN`, as the caller left it (under
/// `nohup`, SIGHUP is). Read with sigaction(2) and a null new action, which
/// changes nothing; nix's `sigaction` always installs one.
pub fn signal_is_ignored(signal: nix::sys::signal::Signal) -> nix::Result<bool> {
    let mut old = std::mem::MaybeUninit::<libc::sigaction>::uninit();
    // SAFETY: with a null new action sigaction only writes the current one
    // into `old`, which is valid, writable memory for one `struct sigaction`.
    let rc = unsafe { libc::sigaction(signal as c_int, ptr::null(), old.as_mut_ptr()) };
    Errno::result(rc)?;
    // SAFETY: sigaction succeeded, so the kernel filled in `old`.
    let old = unsafe { old.assume_init() };
    Ok(old.sa_sigaction == libc::SIG_IGN)
}

/// Refuses descriptors passed over the datagram socket `socket`
/// (`SO_PASSRIGHTS` off, Linux 6.16 and later): a sender's `sendmsg` with
/// `SCM_RIGHTS` fails instead. A descriptor we received would have to be
/// closed by us, and closing one that another user prepared (a TCP socket
/// lingering for an hour) can block for that long. `Ok(false)` on kernels
/// without the option.
pub fn refuse_passed_descriptors(socket: &impl AsRawFd) -> nix::Result<bool> {
    /// `SO_PASSRIGHTS` from the kernel's `asm-generic/socket.h`.
    const SO_PASSRIGHTS: c_int = 83;
    let off: c_int = 0;
    // SAFETY: `off` is a live c_int and its size is passed; setsockopt only
    // reads it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PASSRIGHTS,
            (&off as *const c_int).cast(),
            std::mem::size_of::<c_int>() as libc::socklen_t,
        )
    };
    match Errno::result(rc) {
        Ok(_) => Ok(true),
        Err(Errno::ENOPROTOOPT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A signal set of any signal numbers, real-time ones included (nix's
/// `SigSet::add` takes only a `Signal`).
pub fn signal_set(numbers: &[c_int]) -> nix::sys::signal::SigSet {
    // SAFETY: sigemptyset initialises the whole set before it is read, and
    // sigaddset only sets a bit in it (an invalid number is EINVAL, no
    // write).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &number in numbers {
            libc::sigaddset(&mut set, number);
        }
        nix::sys::signal::SigSet::from_sigset_t_unchecked(set)
    }
}

/// Redirects this process's standard error to `fd` (`dup2`).
pub fn redirect_stderr(fd: &impl AsRawFd) -> nix::Result<()> {
    // SAFETY: dup2 on two integers; descriptor 2 is ours to replace.
    Errno::result(unsafe { libc::dup2(fd.as_raw_fd(), libc::STDERR_FILENO) }).map(drop)
}

/// Takes ownership of descriptor `fd`, passed to us by number, if it is
/// an open pipe (the supervisor's status pipe, see `launch`).
pub fn adopt_pipe(fd: RawFd) -> Option<OwnedFd> {
    if fd <= 2 || !fd_is_pipe(fd) {
        return None;
    }
    // SAFETY: the descriptor is open, was passed to us for this alone, and
    // nothing else in this process owns it.
    Some(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// The local time zone's offset from UTC at `secs` after the epoch, in
/// seconds (`tm_gmtoff` of localtime_r), for syslog's local timestamps; 0
/// if the time cannot be converted.
pub fn utc_offset(secs: i64) -> i64 {
    let t = secs as libc::time_t;
    let mut tm = std::mem::MaybeUninit::<libc::tm>::zeroed();
    // SAFETY: localtime_r reads `t` and writes only into `tm`, which we own;
    // the struct is zeroed, so it is initialised whatever the call does.
    let converted = unsafe { !libc::localtime_r(&t, tm.as_mut_ptr()).is_null() };
    // SAFETY: zero-initialised above, and filled in by localtime_r.
    let tm = unsafe { tm.assume_init() };
    if converted { tm.tm_gmtoff } else { 0 }
}

/// Lets go of the resident pages of our own executable's read-only
/// mappings (`MADV_DONTNEED`): a supervisor's start-up code (parsing, the
/// plan, the first start) is done with, and need not stay mapped for the
/// daemon's whole life. The pages stay in the page cache, and any still
/// used are mapped again from it on their next access. Only a mapping
/// without a private copy of any page (`Anonymous: 0 kB` in smaps) is
/// touched, so no content can change (a relocated page, an ifunc slot);
/// a failure changes nothing.
pub fn release_executable_pages() {
    let (Ok(smaps), Ok(exe)) = (
        std::fs::read_to_string("/proc/self/smaps"),
        std::fs::read_link("/proc/self/exe"),
    ) else {
        return;
    };
    // (start, end) of the mapping whose fields are being read, if it is
    // one of ours and read-only.
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        if let Some(kib) = line.strip_prefix("Anonymous:") {
            let pristine = kib.trim().strip_suffix("kB").map(str::trim) == Some("0");
            if let (Some((start, end)), true) = (current.take(), pristine) {
                // SAFETY: the range is a whole read-only private mapping of
                // our executable with no private page: dropping its pages
                // only makes the next access read the same bytes from the
                // file again.
                unsafe {
                    libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED)
                };
            }
            continue;
        }
        let mut fields = line.split_ascii_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            // A field line ("Rss: 4 kB"), not a mapping's header.
            continue;
        };
        let path = fields.nth(3).map(std::path::Path::new);
        let ours = perms.starts_with('r')
            && !perms.contains('w')
            && perms.ends_with('p')
            && path == Some(exe.as_path())
            && end > start;
        current = ours.then_some((start, end));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn poll_timeouts_round_up_to_the_millisecond() {
        let ms = |t: nix::poll::PollTimeout| i32::from(t);
        assert_eq!(ms(poll_timeout(Duration::ZERO)), 0);
        assert_eq!(ms(poll_timeout(Duration::from_nanos(1))), 1);
        assert_eq!(ms(poll_timeout(Duration::from_micros(999))), 1);
        assert_eq!(ms(poll_timeout(Duration::from_millis(1))), 1);
        assert_eq!(ms(poll_timeout(Duration::from_micros(1001))), 2);
        assert_eq!(ms(poll_timeout(Duration::from_secs(3))), 3000);
        // Beyond i32 milliseconds: the longest single wait.
        assert_eq!(
            ms(poll_timeout(Duration::from_secs(30 * 24 * 3600))),
            i32::MAX
        );
    }

    #[test]
    fn polling_nothing_waits_out_the_deadline() {
        let start = Instant::now();
        assert_eq!(
            poll_until(&mut [], start + Duration::from_millis(30)),
            Ok(0)
        );
        assert!(start.elapsed() >= Duration::from_millis(30));
        // A deadline already past returns at once.
        assert_eq!(poll_until(&mut [], start), Ok(0));
    }
}
