//! Readiness: `--wait-ready` (the sd_notify protocol) and `--ready-fd` (the
//! s6 notification-fd protocol).
//!
//! Both channels are prepared before fork: a datagram socket in a fresh
//! `0700` directory whose path the daemon gets in `NOTIFY_SOCKET`, or a pipe
//! whose write end the daemon gets as descriptor FD. After exec, the original
//! process waits on three things at once: the channel, a pidfd for the
//! daemon (which is its child: it is a subreaper, see `launch`), and a
//! deadline. So a daemon that dies is noticed the moment it dies, and one
//! that never gets ready is stopped, as systemd stops a service whose start
//! timed out. Nothing here runs in a forked child.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, killpg};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{Pid, getpgid, getpgrp};

use crate::error::Failure;
use crate::plan::Plan;
use crate::sys;
use crate::user::Credentials;

/// How long a daemon that is stopped after a failed start gets between
/// SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

pub struct Readiness {
    channel: Channel,
    /// Zero: no deadline (systemd's `TimeoutStartSec=0`).
    timeout: Duration,
    /// Blocked from before the fork, so no interrupt can slip in between
    /// the daemon's start and our wait.
    interrupts: Interrupts,
}

enum Channel {
    Notify(NotifySocket),
    Fd(ReadyPipe),
}

/// The sd_notify socket and its private directory, removed on drop.
struct NotifySocket {
    dir: PathBuf,
    path: PathBuf,
    socket: UnixDatagram,
}

struct ReadyPipe {
    /// The descriptor number the daemon writes to.
    target: RawFd,
    read: File,
    /// Installed as `target` in the daemon; closed here after fork.
    write: Option<OwnedFd>,
    /// Keeps `target` occupied in this process until fork, so that none of
    /// our own descriptors lands on it.
    _reserved: Option<OwnedFd>,
}

/// What one look at the channel found.
enum Event {
    Nothing,
    Ready,
    Extend(Duration),
    Failed(String),
    /// The readiness pipe reached EOF without a newline.
    Closed,
}

/// How long an EOF on the readiness pipe may precede the pidfd reporting
/// the exit that caused it: the kernel closes a dying process's files
/// before it notifies its pidfd.
const EXIT_AFTER_EOF: Duration = Duration::from_millis(200);

impl Readiness {
    /// `--wait-ready`: the socket, and `NOTIFY_SOCKET` for the daemon.
    pub fn notify(
        creds: Option<&Credentials>,
        timeout: Duration,
    ) -> anyhow::Result<(Readiness, PathBuf)> {
        let template = std::env::temp_dir().join("daemonize-XXXXXX");
        let dir = nix::unistd::mkdtemp(&template).with_context(|| {
            format!(
                "cannot create a notification directory like '{}'",
                template.display()
            )
        })?;
        let path = dir.join("notify");
        let socket = NotifySocket {
            socket: UnixDatagram::bind(&path).with_context(|| {
                format!("cannot create notification socket '{}'", path.display())
            })?,
            dir,
            path,
        };
        socket
            .socket
            .set_nonblocking(true)
            .context("cannot configure the notification socket")?;
        // The directory is 0700 (mkdtemp). A daemon that runs as another user
        // gets the directory and the socket, so it can send and nobody else can.
        if let Some(c) = creds.filter(|c| c.change) {
            for p in [&socket.dir, &socket.path] {
                nix::unistd::chown(p, Some(c.uid), Some(c.gid)).with_context(|| {
                    format!("cannot hand '{}' to user '{}'", p.display(), c.shown)
                })?;
            }
        }
        let env_path = socket.path.clone();
        Ok((
            Readiness {
                channel: Channel::Notify(socket),
                timeout,
                interrupts: Interrupts::new()?,
            },
            env_path,
        ))
    }

    /// `--ready-fd FD`. Must be called before any other descriptor of ours
    /// is opened, so that FD can be reserved.
    pub fn fd(target: RawFd, timeout: Duration) -> anyhow::Result<Readiness> {
        let reserved = sys::reserve_fd(target)?;
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .context("cannot create the readiness pipe")?;
        Ok(Readiness {
            channel: Channel::Fd(ReadyPipe {
                target,
                read: File::from(read),
                write: Some(write),
                _reserved: reserved,
            }),
            timeout,
            interrupts: Interrupts::new()?,
        })
    }

    /// `(write end, FD)` to install in the daemon for `--ready-fd`.
    pub fn child_fd(&self) -> Option<(RawFd, RawFd)> {
        match &self.channel {
            Channel::Fd(pipe) => pipe.write.as_ref().map(|w| (w.as_raw_fd(), pipe.target)),
            Channel::Notify(_) => None,
        }
    }

    /// Waits until the daemon `pid` is ready. On any other ending (death,
    /// `ERRNO=`, EOF, timeout) the daemon is gone when this returns.
    pub fn wait(mut self, pid: Pid, plan: &Plan) -> Result<(), Failure> {
        // Our copy of the pipe's write end would hide the daemon's EOF.
        if let Channel::Fd(pipe) = &mut self.channel {
            pipe.write = None;
        }
        let pidfd = match sys::pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) => {
                // It is our child and unreaped, so the PID is still its own.
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
                return Err(anyhow!(e)
                    .context("cannot open a pidfd to watch the daemon; killed it")
                    .into());
            }
        };
        let interrupts = &self.interrupts;
        tracing::info!(pid = pid.as_raw(), timeout = ?self.timeout, "waiting for the daemon to be ready");
        let started = Instant::now();
        // `--ready-timeout 0` waits for ever, as systemd's TimeoutStartSec=0.
        let mut deadline = (!self.timeout.is_zero()).then(|| started + self.timeout);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let timeout = match left {
                Some(left) => PollTimeout::try_from(left.min(Duration::from_secs(3600)))
                    .unwrap_or(PollTimeout::MAX),
                None => PollTimeout::NONE,
            };

            let mut fds = [
                PollFd::new(self.channel.fd(), PollFlags::POLLIN),
                PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
                PollFd::new(interrupts.fd.as_fd(), PollFlags::POLLIN),
            ];
            let n = match poll(&mut fds, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(anyhow!(e).context("cannot wait for the daemon").into()),
            };
            let channel_ready = fds[0].any().unwrap_or(false);
            let exited = fds[1].any().unwrap_or(false);
            if fds[2].any().unwrap_or(false)
                && let Ok(Some(info)) = interrupts.fd.read_signal()
            {
                let name = Signal::try_from(info.ssi_signo as i32)
                    .map_or_else(|_| info.ssi_signo.to_string(), |s| s.to_string());
                let how = stop(&pidfd, pid);
                return Err(anyhow!(
                    "interrupted by {name} before the daemon (pid {pid}) was ready; {how}"
                )
                .into());
            }
            if channel_ready {
                match self.channel.receive() {
                    Ok(Event::Ready) => {
                        tracing::info!(pid = pid.as_raw(), after = ?started.elapsed(), "daemon is ready");
                        return Ok(());
                    }
                    Ok(Event::Extend(by)) => match &mut deadline {
                        Some(deadline) => {
                            *deadline = (*deadline).max(Instant::now() + by);
                            tracing::debug!(?by, "deadline extended");
                        }
                        None => tracing::debug!(?by, "no deadline to extend"),
                    },
                    Ok(Event::Nothing) => {}
                    Ok(Event::Closed) if exited_within(&pidfd, EXIT_AFTER_EOF) => {
                        return Err(died(pid, plan));
                    }
                    Ok(Event::Closed) => {
                        let how = stop(&pidfd, pid);
                        return Err(anyhow!(
                            "the daemon (pid {pid}) closed descriptor {} without writing a newline \
                             (not ready); {how}",
                            self.channel.target()
                        )
                        .into());
                    }
                    Ok(Event::Failed(why)) => {
                        let how = stop(&pidfd, pid);
                        return Err(anyhow!(
                            "the daemon (pid {pid}) {why} before it was ready; {how}"
                        )
                        .into());
                    }
                    Err(e) => {
                        let how = stop(&pidfd, pid);
                        return Err(e
                            .context(format!("the daemon (pid {pid}) is not ready; {how}"))
                            .into());
                    }
                }
            } else if exited {
                return Err(died(pid, plan));
            } else if n == 0 && left.is_some_and(|left| left.is_zero()) {
                let how = stop(&pidfd, pid);
                return Err(anyhow!(
                    "the daemon (pid {pid}) was not ready after {:?}; {how}",
                    self.timeout
                )
                .into());
            }
        }
    }
}

/// Interrupting daemonize while it waits (Ctrl-C, `timeout(1)` in the
/// calling script, a hang-up) aborts the start like any other failure: the
/// daemon is stopped before daemonize exits 125. SIGINT, SIGTERM and SIGHUP
/// are blocked and read from a signalfd; dropping this unblocks them. The
/// daemon does not inherit the mask: it empties its own before exec.
///
/// A signal the caller ignores (SIGHUP under `nohup`) is left out: Linux
/// queues a blocked signal even when its disposition is `SIG_IGN`, and the
/// signalfd would report it (issue 9, item 13).
struct Interrupts {
    fd: SignalFd,
    mask: SigSet,
}

impl Interrupts {
    fn new() -> anyhow::Result<Interrupts> {
        let mut mask = SigSet::empty();
        for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            if sys::signal_is_ignored(signal).unwrap_or(false) {
                tracing::debug!(%signal, "ignored by the caller, so it does not interrupt the wait");
            } else {
                mask.add(signal);
            }
        }

        mask.thread_block().context("cannot block signals")?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .context("cannot create a signalfd")?;
        Ok(Interrupts { fd, mask })
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        let _ = self.mask.thread_unblock();
    }
}

impl Channel {
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Channel::Notify(n) => n.socket.as_fd(),
            Channel::Fd(p) => p.read.as_fd(),
        }
    }

    /// The daemon's descriptor number for `--ready-fd`.
    fn target(&self) -> RawFd {
        match self {
            Channel::Fd(p) => p.target,
            Channel::Notify(_) => -1,
        }
    }

    fn receive(&mut self) -> anyhow::Result<Event> {
        match self {
            Channel::Notify(n) => n.receive(),
            Channel::Fd(p) => p.receive(),
        }
    }
}

impl NotifySocket {
    /// Drains every queued datagram. Each holds newline-separated
    /// `KEY=VALUE` lines (sd_notify(3)); READY=1 anywhere wins.
    fn receive(&mut self) -> anyhow::Result<Event> {
        let mut event = Event::Nothing;
        let mut buf = [0u8; 4096];
        loop {
            let len = match self.socket.recv(&mut buf) {
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(event),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(anyhow!(e).context("cannot read the notification socket")),
            };
            for line in String::from_utf8_lossy(&buf[..len]).lines() {
                let (key, value) = line.split_once('=').unwrap_or((line, ""));
                match key {
                    "READY" if value == "1" => event = Event::Ready,
                    "STATUS" => tracing::info!(status = value, "daemon status"),
                    "ERRNO" if !matches!(event, Event::Ready) => {
                        let why = match value.parse::<i32>() {
                            Ok(n) => format!("reported ERRNO={n} ({})", Errno::from_raw(n).desc()),
                            Err(_) => format!("reported ERRNO={value}"),
                        };
                        event = Event::Failed(why);
                    }
                    "EXTEND_TIMEOUT_USEC" if matches!(event, Event::Nothing | Event::Extend(_)) => {
                        if let Ok(usec) = value.parse::<u64>() {
                            event = Event::Extend(Duration::from_micros(usec));
                        }
                    }
                    _ => tracing::debug!(line, "notification"),
                }
            }
            if matches!(event, Event::Ready | Event::Failed(_)) {
                return Ok(event);
            }
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

impl ReadyPipe {
    /// s6: ready once a newline arrives; EOF before it means "not ready".
    fn receive(&mut self) -> anyhow::Result<Event> {
        let mut buf = [0u8; 512];
        match self.read.read(&mut buf) {
            Ok(0) => Ok(Event::Closed),
            Ok(len) if buf[..len].contains(&b'\n') => Ok(Event::Ready),
            Ok(_) => Ok(Event::Nothing),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Event::Nothing),
            Err(e) => Err(anyhow!(e).context("cannot read the readiness pipe")),
        }
    }
}

/// Stops a daemon whose start failed: SIGTERM, a short grace, SIGKILL, then
/// reap it. Returns what was done, for the message.
fn stop(pidfd: &OwnedFd, pid: Pid) -> &'static str {
    if exited_within(pidfd, Duration::ZERO) {
        end_group(pid);
        let _ = waitpid(pid, None);
        return "it has exited";
    }
    let group = daemon_group(pid);
    let term = || match group {
        Some(pgid) => killpg(pgid, Signal::SIGTERM).map_err(drop),
        None => sys::pidfd_send_signal(pidfd, Signal::SIGTERM).map_err(drop),
    };
    let _ = term();
    let how = if exited_within(pidfd, STOP_GRACE) {
        "stopped it with SIGTERM"
    } else {
        let _ = sys::pidfd_send_signal(pidfd, Signal::SIGKILL);
        exited_within(pidfd, STOP_GRACE);
        "killed it with SIGKILL"
    };
    end_group(pid);
    let _ = waitpid(pid, None);
    how
}

/// The daemon's process group (its session, unless it moved), if signalling
/// it cannot hit anyone else: the daemon is our unreaped child, so the group
/// ID stays reserved while we use it, and it is never our own group.
fn daemon_group(pid: Pid) -> Option<Pid> {
    let pgid = getpgid(Some(pid)).ok()?;
    (pgid.as_raw() > 1 && pgid != getpgrp()).then_some(pgid)
}

/// A failed start leaves nothing behind: what the daemon started in its
/// process group (a script's children, a server's workers, which may hold
/// its lock) is killed too. Call before reaping the daemon.
pub fn end_group(pid: Pid) {
    if let Some(pgid) = daemon_group(pid) {
        let _ = killpg(pgid, Signal::SIGKILL);
    }
}

/// The failure for a daemon that exited on its own before it was ready:
/// reaps it (it is our child) for its status, and adds its last log lines.
fn died(pid: Pid, plan: &Plan) -> Failure {
    end_group(pid);
    let why = match waitpid(pid, None) {
        Ok(WaitStatus::Exited(_, code)) => format!("exited with status {code}"),
        Ok(WaitStatus::Signaled(_, signal, core)) => format!(
            "was killed by signal {signal}{}",
            if core { " (core dumped)" } else { "" }
        ),
        _ => "exited".to_owned(),
    };
    let tail = plan.outputs.tail(plan.creds.as_ref());
    anyhow!("the daemon (pid {pid}) {why} before it was ready{tail}").into()
}

/// Whether the process behind `pidfd` exits within `grace`.
fn exited_within(pidfd: &OwnedFd, grace: Duration) -> bool {
    sys::pidfd_exited_within(pidfd, grace).unwrap_or(false)
}
