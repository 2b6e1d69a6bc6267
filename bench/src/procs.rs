//! Processes and interrupts, for the benchmarks that start daemons
//! (`--supervisor`, `--capture`): pidfds, to signal and wait for a process
//! without PID reuse; SIGINT and SIGTERM turned into a readable pipe, so
//! that every wait ends on them and the cleanup still runs; and what /proc
//! says about parents and PID files. Nothing here looks up or kills a
//! process by name.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

type R<T> = Result<T, String>;

/// The PID in a PID file, if it holds a positive one.
pub(crate) fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|&pid| pid > 0)
}

/// Every process whose parent is `parent`, from /proc (the children file
/// lists only one thread's).
pub(crate) fn children_by_ppid(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            (ppid(pid)? == parent).then_some(pid)
        })
        .collect()
}

pub(crate) fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name, which may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// A process held by a pidfd: signalled and waited for without PID reuse.
pub(crate) struct Proc {
    pub(crate) name: String,
    pub(crate) pid: i32,
    pub(crate) fd: OwnedFd,
    /// Ours to reap (our child when opened).
    pub(crate) child: bool,
}

impl Proc {
    pub(crate) fn open(name: &str, pid: i32) -> R<Proc> {
        // SAFETY: pidfd_open takes a PID and flags, and returns a new
        // descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(format!(
                "pidfd_open {pid} ({name}): {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        let child = ppid(pid) == Some(std::process::id() as i32);
        Ok(Proc {
            name: name.to_owned(),
            pid,
            fd,
            child,
        })
    }

    pub(crate) fn signal(&self, signal: libc::c_int) -> std::io::Result<()> {
        // SAFETY: pidfd_send_signal on our pidfd, with no siginfo.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        let error = std::io::Error::last_os_error();
        match rc {
            0 => Ok(()),
            _ if error.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            _ => Err(error),
        }
    }

    pub(crate) fn exited(&self) -> bool {
        self.wait(Duration::ZERO)
    }

    /// Waits (not interruptibly) up to `timeout` for the end; true if ended.
    pub(crate) fn wait(&self, timeout: Duration) -> bool {
        matches!(
            wait_readable(Some(self.fd.as_raw_fd()), None, timeout),
            Ok(Wake::Ready)
        )
    }

    /// Reaps it if it is our child and has ended; its wait status.
    pub(crate) fn reap(&self) -> Option<i32> {
        if !self.child {
            return None;
        }
        let mut status = 0;
        // SAFETY: waitpid on our own child, writing into a local.
        let rc = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        (rc == self.pid).then(|| {
            if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            }
        })
    }
}

/// SIGINT and SIGTERM, caught and turned into a byte on a pipe (the
/// read end is this), so that every wait of the benchmark ends on them and
/// the cleanup still runs. Caught rather than blocked: a blocked mask, unlike
/// a handler, would be inherited by every program started (std's Command
/// keeps it), strace included, which then cannot be stopped with SIGINT.
pub(crate) struct Signals(OwnedFd);

/// The pipe's write end, for the handler.
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(_: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    // SAFETY: write(2) is async-signal-safe; the buffer is a static byte.
    // The pipe is non-blocking: a full one already says enough.
    unsafe { libc::write(fd, c"!".as_ptr().cast(), 1) };
}

impl Signals {
    pub(crate) fn catch() -> std::io::Result<Signals> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 writes two descriptors into the local array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: two new descriptors that nothing else owns; the write end
        // is kept open for the rest of the process's life, for the handler.
        let read = unsafe { OwnedFd::from_raw_fd(fds[0]) };
        SIGNAL_PIPE.store(fds[1], Ordering::Relaxed);
        for signal in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: a zeroed sigaction with a handler that only calls
            // write(2); sigaction reads it.
            let rc = unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(signal, &action, std::ptr::null_mut())
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(Signals(read))
    }

    /// Sleeps for `duration`, or until SIGINT or SIGTERM (an error).
    pub(crate) fn sleep(&self, duration: Duration) -> R<()> {
        wait_readable(None, Some(self), duration).map(|_| ())
    }
}

pub(crate) enum Wake {
    Ready,
    Timeout,
}

/// Polls `fd` for input for at most `timeout`; SIGINT or SIGTERM pending on
/// `signals` is an error.
pub(crate) fn wait_readable(
    fd: Option<RawFd>,
    signals: Option<&Signals>,
    timeout: Duration,
) -> R<Wake> {
    let deadline = Instant::now() + timeout;
    let mut fds = Vec::with_capacity(2);
    for fd in [fd, signals.map(|s| s.0.as_raw_fd())].into_iter().flatten() {
        fds.push(libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
    }
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Rounded up, so that a wait never returns early.
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: `fds` is a valid array of fds.len() pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll: {error}"));
        }
        let ready =
            |wanted: Option<RawFd>| fds.iter().any(|p| Some(p.fd) == wanted && p.revents != 0);
        if ready(signals.map(|s| s.0.as_raw_fd())) {
            return Err("interrupted".into());
        }
        if ready(fd) {
            return Ok(Wake::Ready);
        }
        if n == 0 && Instant::now() >= deadline {
            return Ok(Wake::Timeout);
        }
    }
}
