//! Readiness: `--wait-ready` (the sd_notify protocol) and `--ready-fd` (the
//! s6 notification-fd protocol).
//!
//! Both channels are prepared before fork: a datagram socket whose path the
//! daemon gets in `NOTIFY_SOCKET`, or a pipe whose write end the daemon gets
//! as descriptor FD. After exec, the original process waits on three things
//! at once: the channel, a pidfd for the daemon (which is its child: it is a
//! subreaper, see `launch`), and a deadline. So a daemon that dies is
//! noticed the moment it dies, and one that never gets ready is stopped, as
//! systemd stops a service whose start timed out. Nothing here runs in a
//! forked child.
//!
//! The notification socket (issue 9, items 1 to 4): any uid may send to it,
//! as to systemd's, because servers such as unbound and squid drop root by
//! themselves before they send `READY=1`; only datagrams whose
//! `SCM_CREDENTIALS` name the daemon or one of its descendants count. It
//! lives in a `0711` directory of daemonize's own, made in a directory where
//! only the caller can create entries (`/run` for root, `$XDG_RUNTIME_DIR`,
//! or `<temp dir>/daemonize-<euid>`), so nobody else can put a socket at the
//! path the daemon keeps in `NOTIFY_SOCKET` once daemonize has returned. No
//! ownership or mode is ever changed, and everything is created and removed
//! through directory descriptors, never through a path someone else could
//! have replaced.

use std::fs::File;
use std::io::{self, IoSliceMut, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use nix::errno::Errno;
use nix::fcntl::{OFlag, open, openat};
use nix::poll::{PollFd, PollFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{
    AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr, UnixCredentials,
    bind, recvmsg, setsockopt, socket, sockopt,
};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, mkdirat, umask};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{Pid, Uid, UnlinkatFlags, geteuid, getpid, unlinkat};

use crate::error::Failure;
use crate::identity;
use crate::output::{Outputs, Pump};
use crate::process::{self, Process, Stopped};
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
    /// The daemon's last `STATUS=` (sd_notify), for a supervisor's
    /// `--status`.
    pub status: Option<String>,
}

/// What one look at the channel found, for a supervisor's loop
/// ([`Readiness::notices`]).
#[derive(Debug, Default)]
pub struct Notices {
    pub ready: bool,
    /// `WATCHDOG=1`.
    pub watchdog: bool,
    /// `ERRNO=`, or the readiness pipe closed without a newline.
    pub failed: Option<String>,
}

enum Channel {
    Notify(NotifySocket),
    Fd(ReadyPipe),
}

/// The sd_notify socket and its directory, both removed on drop through
/// descriptors.
struct NotifySocket {
    /// Bound to `<base>/<name>/notify`, with `SO_PASSCRED` set.
    socket: OwnedFd,
    /// The directory the socket's directory was made in (`O_PATH`).
    base: OwnedFd,
    /// The socket's own directory, `daemonize.XXXXXX` (`O_PATH`).
    dir: OwnedFd,
    /// Its name in `base`.
    name: String,
    /// Room for the control data of one datagram: the sender's credentials
    /// and as many descriptors as a datagram can carry.
    cmsg: Vec<u8>,
}

struct ReadyPipe {
    /// The descriptor number the daemon writes to.
    target: RawFd,
    read: File,
    /// Installed as `target` in the daemon; closed here after fork.
    write: Option<OwnedFd>,
    /// Still worth reading: no newline and no EOF yet in this run.
    open: bool,
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
    pub fn notify(timeout: Duration) -> anyhow::Result<(Readiness, PathBuf)> {
        let (socket, path) = NotifySocket::create()?;
        tracing::debug!(path = %path.display(), "notification socket ready");
        Ok((
            Readiness {
                channel: Channel::Notify(socket),
                timeout,
                interrupts: Interrupts::new()?,
                status: None,
            },
            path,
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
                open: true,
            }),
            timeout,
            interrupts: Interrupts::new()?,
            status: None,
        })
    }

    /// `(write end, FD)` to install in the daemon for `--ready-fd`.
    pub fn child_fd(&self) -> Option<(RawFd, RawFd)> {
        match &self.channel {
            Channel::Fd(pipe) => pipe.write.as_ref().map(|w| (w.as_raw_fd(), pipe.target)),
            Channel::Notify(_) => None,
        }
    }

    /// For a supervisor, before each restart: `--ready-fd` gets a fresh
    /// pipe (the last child's end was closed), and the notification socket
    /// is kept.
    pub fn rearm(&mut self) -> anyhow::Result<()> {
        if let Channel::Fd(pipe) = &mut self.channel {
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .context("cannot create the readiness pipe")?;
            pipe.read = File::from(read);
            pipe.write = Some(write);
            pipe.open = true;
        }
        Ok(())
    }

    /// For a supervisor, once its child is started: our copy of the pipe's
    /// write end would hide the child's EOF.
    pub fn spawned(&mut self) {
        if let Channel::Fd(pipe) = &mut self.channel {
            pipe.write = None;
        }
    }

    /// The descriptor a supervisor's loop polls, while there is anything
    /// to read: the notification socket always, the readiness pipe until
    /// its newline or its end.
    pub fn poll_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        match &self.channel {
            Channel::Notify(n) => Some(n.socket.as_fd()),
            Channel::Fd(p) if p.open => Some(p.read.as_fd()),
            Channel::Fd(_) => None,
        }
    }

    /// Everything that has arrived from the daemon `pid` (or its
    /// descendants), without waiting: for a supervisor's loop, which
    /// readies, pings and failures count for restarts. `STATUS=` is kept
    /// in [`Readiness::status`].
    pub fn notices(&mut self, pid: Option<Pid>) -> Notices {
        let mut notices = Notices::default();
        match &mut self.channel {
            Channel::Notify(n) => n.drain(pid, &mut notices, &mut self.status),
            Channel::Fd(p) => match p.receive() {
                Ok(Event::Ready) => {
                    notices.ready = true;
                    p.open = false;
                }
                Ok(Event::Closed) => {
                    p.open = false;
                    notices.failed = Some(format!(
                        "closed descriptor {} without writing a newline",
                        p.target
                    ));
                }
                Ok(_) => {}
                Err(e) => {
                    p.open = false;
                    notices.failed = Some(crate::error::render(&e));
                }
            },
        }
        notices
    }

    /// Waits until the daemon `pid` is ready. On any other ending (death,
    /// `ERRNO=`, EOF, timeout) the daemon is gone when this returns.
    pub fn wait(
        &mut self,
        pid: Pid,
        outputs: &Outputs,
        creds: Option<&Credentials>,
        pump: &mut dyn Pump,
    ) -> Result<(), Failure> {
        // Our copy of the pipe's write end would hide the daemon's EOF.
        if let Channel::Fd(pipe) = &mut self.channel {
            pipe.write = None;
        }
        let daemon = match Process::child(pid) {
            Ok(daemon) => daemon,
            Err(e) => {
                // It is our child and unreaped, so the PID is still its own.
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
                return Err(anyhow!(e)
                    .context("cannot open a pidfd to watch the daemon; killed it")
                    .into());
            }
        };
        let verdict = self.watch(&daemon, pump);
        // The decision is made; now its effect, outside the loop.
        let what = match verdict {
            Verdict::Ready => return Ok(()),
            Verdict::Died => {
                // Its last words are in the pipes still, under capture.
                pump.drain();
                return Err(died(daemon, outputs, creds));
            }
            Verdict::Closed(fd) => format!(
                "the daemon (pid {pid}) closed descriptor {fd} without writing a newline (not ready)"
            ),
            Verdict::Failed(why) => format!("the daemon (pid {pid}) {why} before it was ready"),
            Verdict::Interrupted(name) => {
                format!("interrupted by {name} before the daemon (pid {pid}) was ready")
            }
            Verdict::TimedOut => format!(
                "the daemon (pid {pid}) was not ready after {:?}",
                self.timeout
            ),
            Verdict::Broken(e) => {
                let how = stop(daemon);
                return Err(e
                    .context(format!("the daemon (pid {pid}) is not ready; {how}"))
                    .into());
            }
        };
        let how = stop(daemon);
        Err(anyhow!("{what}; {how}").into())
    }

    /// The readiness wait's loop: one poll over the channel, the daemon's
    /// pidfd and the interrupts, whose only wait is the poll, until a
    /// deadline (the timeout, or the grace an EOF gives the exit behind
    /// it). It decides, and acts on nothing: [`Readiness::wait`] does.
    fn watch(&mut self, daemon: &Process, pump: &mut dyn Pump) -> Verdict {
        let pid = daemon.pid();
        tracing::info!(pid = pid.as_raw(), timeout = ?self.timeout, "waiting for the daemon to be ready");
        let started = Instant::now();
        // `--ready-timeout 0` waits for ever, as systemd's TimeoutStartSec=0.
        let mut deadline = (!self.timeout.is_zero()).then(|| started + self.timeout);
        // The readiness pipe's EOF: when it came, the daemon's exit (which
        // the kernel reports after it closes the files) has until then.
        let mut eof_until: Option<Instant> = None;
        loop {
            let wake = [deadline, eof_until, pump.deadline()]
                .into_iter()
                .flatten()
                .min();
            let pumped = pump.fds();
            let mut fds = vec![
                PollFd::new(daemon.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.interrupts.fd.as_fd(), PollFlags::POLLIN),
            ];
            // After its EOF, the channel has nothing more to say.
            let listening = eof_until.is_none();
            if listening {
                fds.push(PollFd::new(self.channel.fd(), PollFlags::POLLIN));
            }
            let first_pumped = fds.len();
            fds.extend(pumped);
            if let Err(e) = sys::poll_until(&mut fds, wake) {
                return Verdict::Broken(anyhow!(e).context("cannot wait for the daemon"));
            }
            let ready: Vec<bool> = fds.iter().map(|f| f.any().unwrap_or(false)).collect();
            let (exited, interrupted) = (ready[0], ready[1]);
            let channel_ready = listening && ready[2];
            drop(fds);
            pump.pump(&ready[first_pumped..]);
            if pump.deadline().is_some_and(|d| Instant::now() >= d) {
                pump.retry();
            }
            if channel_ready {
                match self.channel.receive(pid, &mut self.status) {
                    Ok(Event::Ready) => {
                        tracing::info!(pid = pid.as_raw(), after = ?started.elapsed(), "daemon is ready");
                        return Verdict::Ready;
                    }
                    Ok(Event::Extend(by)) => match &mut deadline {
                        Some(deadline) => {
                            *deadline = (*deadline).max(Instant::now() + by);
                            tracing::debug!(?by, "deadline extended");
                        }
                        None => tracing::debug!(?by, "no deadline to extend"),
                    },
                    Ok(Event::Nothing) => {}
                    Ok(Event::Closed) => eof_until = Some(Instant::now() + EXIT_AFTER_EOF),
                    Ok(Event::Failed(why)) => return Verdict::Failed(why),
                    Err(e) => return Verdict::Broken(e),
                }
            }
            // After the channel: a READY=1 that came first wins over an
            // interrupt that follows it.
            if interrupted && let Ok(Some(info)) = self.interrupts.fd.read_signal() {
                let name = Signal::try_from(info.ssi_signo as i32)
                    .map_or_else(|_| info.ssi_signo.to_string(), |s| s.to_string());
                return Verdict::Interrupted(name);
            }
            if channel_ready {
                continue;
            }
            if exited {
                return Verdict::Died;
            }
            let now = Instant::now();
            if eof_until.is_some_and(|t| now >= t) {
                return Verdict::Closed(self.channel.target());
            }
            if deadline.is_some_and(|d| now >= d) {
                return Verdict::TimedOut;
            }
        }
    }
}

/// How a readiness wait ended ([`Readiness::watch`]).
enum Verdict {
    Ready,
    /// The daemon exited first.
    Died,
    /// The readiness pipe (descriptor N in the daemon) reached EOF without
    /// a newline, and the daemon lives on.
    Closed(RawFd),
    /// `ERRNO=` or the like: what it said.
    Failed(String),
    /// SIGINT, SIGTERM or SIGHUP to daemonize.
    Interrupted(String),
    TimedOut,
    /// The channel or the wait itself failed.
    Broken(anyhow::Error),
}

/// Interrupting daemonize while it waits (Ctrl-C, `timeout(1)` in the
/// calling script, a hang-up) aborts the start like any other failure: the
/// daemon is stopped before daemonize exits 125. SIGINT, SIGTERM and SIGHUP
/// are blocked and read from a signalfd. They stay blocked after the wait,
/// until daemonize exits: one that arrives between READY=1 and the
/// pidfile's write must not end daemonize with a locked pidfile that names
/// nobody (issue 9, item 15); pending ones die with the process. The
/// daemon does not inherit the mask: it empties its own before exec.
///
/// A signal the caller ignores (SIGHUP under `nohup`) is left out: Linux
/// queues a blocked signal even when its disposition is `SIG_IGN`, and the
/// signalfd would report it (issue 9, item 13).
struct Interrupts {
    fd: SignalFd,
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
        Ok(Interrupts { fd })
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

    /// What arrived from the daemon `pid`; a `STATUS=` goes to `status`.
    fn receive(&mut self, pid: Pid, status: &mut Option<String>) -> anyhow::Result<Event> {
        match self {
            Channel::Notify(n) => n.receive(pid, status),
            Channel::Fd(p) => p.receive(),
        }
    }
}

/// The socket's name in its directory.
const SOCKET_NAME: &str = "notify";

/// How to open each directory on the way to the socket: a handle for `*at`
/// calls that needs no read permission and never follows a symlink.
const DIR_HANDLE: OFlag = OFlag::O_PATH
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// `0711`: others may pass through to reach the socket, not list or create.
const DIR_MODE: Mode = Mode::from_bits_truncate(0o711);

/// The most descriptors one datagram can carry (the kernel's `SCM_MAX_FD`).
/// Room for all of them, so that control data is never cut short (which
/// would hide the credentials) and every descriptor received is closed.
const SCM_MAX_FD: usize = 253;

/// How far up the process tree a sender is followed towards the daemon.
const ANCESTRY_LIMIT: usize = 256;

impl NotifySocket {
    /// Makes the socket, and returns it with the path for `NOTIFY_SOCKET`.
    fn create() -> anyhow::Result<(NotifySocket, PathBuf)> {
        let socket = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .context("cannot create the notification socket")?;
        // Before bind, so that every datagram carries its sender's credentials.
        setsockopt(&socket, sockopt::PassCred, &true)
            .context("cannot ask for senders' credentials on the notification socket")?;
        // Anyone may send here, so nobody may pass us a descriptor: closing
        // one can block for as long as its sender arranged.
        match sys::refuse_passed_descriptors(&socket) {
            Ok(true) => {}
            Ok(false) => tracing::debug!("this kernel cannot refuse passed descriptors"),
            Err(e) => {
                return Err(
                    anyhow!(e).context("cannot refuse descriptors on the notification socket")
                );
            }
        }
        let me = geteuid();
        // The directories come out exactly 0711 and the socket 0777, which
        // any uid may send to, whatever the caller's umask. daemonize is
        // single-threaded: nothing else creates files meanwhile.
        let _umask = UmaskZero::set();
        let (base, base_path) = notify_base(me)?;
        let (dir, name) = make_socket_dir(&base, &base_path)?;
        let path = base_path.join(&name).join(SOCKET_NAME);
        // From here on, dropping it removes the directory.
        let notify = NotifySocket {
            socket,
            base,
            dir,
            name,
            cmsg: nix::cmsg_space!(UnixCredentials, [RawFd; SCM_MAX_FD]),
        };
        // By path, which is safe: no one but the caller can change any
        // directory on it (`notify_base`), and the last one is brand new.
        UnixAddr::new(&path)
            .and_then(|addr| bind(notify.socket.as_raw_fd(), &addr))
            .with_context(|| format!("cannot create notification socket '{}'", path.display()))?;
        Ok((notify, path))
    }

    /// Drains every queued datagram. Each holds newline-separated
    /// `KEY=VALUE` lines (sd_notify(3)); READY=1 anywhere wins. Only the
    /// daemon's own processes are listened to.
    fn receive(&mut self, daemon: Pid, status: &mut Option<String>) -> anyhow::Result<Event> {
        let mut event = Event::Nothing;
        let mut buf = [0u8; 4096];
        loop {
            let (len, sender) = match self.recv(&mut buf) {
                Ok(got) => got,
                Err(Errno::EAGAIN) => return Ok(event),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(anyhow!(e).context("cannot read the notification socket")),
            };
            match sender {
                Some(pid) if from_the_daemon(pid, daemon) => {}
                Some(pid) => {
                    tracing::debug!(
                        pid = pid.as_raw(),
                        "ignored a notification from a process that is neither the daemon nor one of its descendants"
                    );
                    continue;
                }
                None => {
                    tracing::debug!("ignored a notification without its sender's credentials");
                    continue;
                }
            }
            for line in String::from_utf8_lossy(&buf[..len]).lines() {
                let (key, value) = line.split_once('=').unwrap_or((line, ""));
                match key {
                    "READY" if value == "1" => event = Event::Ready,
                    "STATUS" => {
                        tracing::info!(status = value, "daemon status");
                        *status = Some(value.to_owned());
                    }
                    "ERRNO" if !matches!(event, Event::Ready) => {
                        let why = match value.parse::<i32>() {
                            Ok(n) => {
                                format!("reported ERRNO={n} ({})", crate::error::errno_text(n))
                            }
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

    /// Every queued datagram, for a supervisor's loop: from the daemon
    /// `daemon` (or its descendants, or the supervisor's orphans) only;
    /// with no daemon running, every datagram is dropped.
    fn drain(&mut self, daemon: Option<Pid>, notices: &mut Notices, status: &mut Option<String>) {
        let mut buf = [0u8; 4096];
        loop {
            let (len, sender) = match self.recv(&mut buf) {
                Ok(got) => got,
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            };
            let (Some(sender), Some(daemon)) = (sender, daemon) else {
                continue;
            };
            if !from_the_daemon(sender, daemon) {
                tracing::debug!(
                    pid = sender.as_raw(),
                    "ignored a notification from an outsider"
                );
                continue;
            }
            for line in String::from_utf8_lossy(&buf[..len]).lines() {
                let (key, value) = line.split_once('=').unwrap_or((line, ""));
                match (key, value) {
                    ("READY", "1") => notices.ready = true,
                    ("WATCHDOG", "1") => notices.watchdog = true,
                    ("STATUS", _) => *status = Some(value.to_owned()),
                    ("ERRNO", _) => {
                        notices.failed = Some(match value.parse::<i32>() {
                            Ok(n) => {
                                format!("reported ERRNO={n} ({})", crate::error::errno_text(n))
                            }
                            Err(_) => format!("reported ERRNO={value}"),
                        });
                    }
                    _ => {}
                }
            }
        }
    }

    /// One datagram into `buf`: its length, and the sender's PID from
    /// `SCM_CREDENTIALS` (`None` without it, or when the sender is outside
    /// our PID namespace). Descriptors sent with it (`FDSTORE=1`,
    /// sd_notify_barrier's, or anyone's) are closed at once.
    fn recv(&mut self, buf: &mut [u8]) -> nix::Result<(usize, Option<Pid>)> {
        let mut iov = [IoSliceMut::new(buf)];
        let fd = self.socket.as_raw_fd();
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
        let msg = recvmsg::<()>(fd, &mut iov, Some(&mut self.cmsg), flags)?;
        let mut sender = None;
        match msg.cmsgs() {
            Ok(cmsgs) => {
                for cmsg in cmsgs {
                    match cmsg {
                        ControlMessageOwned::ScmCredentials(creds) if creds.pid() > 0 => {
                            sender = Some(Pid::from_raw(creds.pid()));
                        }
                        ControlMessageOwned::ScmRights(fds) => {
                            for fd in fds {
                                let _ = nix::unistd::close(fd);
                            }
                        }
                        _ => {}
                    }
                }
            }
            Err(_) => tracing::debug!("a notification's control data was cut short"),
        }
        Ok((msg.bytes, sender))
    }
}

impl Drop for NotifySocket {
    /// Through the directory descriptors, never by path: the names are
    /// looked up in directories that only the caller can change, so this
    /// removes exactly what `create` made (issue 9, item 2).
    fn drop(&mut self) {
        let _ = unlinkat(&self.dir, SOCKET_NAME, UnlinkatFlags::NoRemoveDir);
        let _ = unlinkat(&self.base, self.name.as_str(), UnlinkatFlags::RemoveDir);
    }
}

/// The process umask, 0 until dropped.
struct UmaskZero(Mode);

impl UmaskZero {
    fn set() -> UmaskZero {
        UmaskZero(umask(Mode::empty()))
    }
}

impl Drop for UmaskZero {
    fn drop(&mut self) {
        umask(self.0);
    }
}

/// Where the socket's directory is made: a directory in which only the
/// caller (`me`) can create entries, on a path that nobody else can change,
/// so that once daemonize has removed the socket, nobody else can put one
/// at the path the daemon keeps in `NOTIFY_SOCKET` (issue 9, item 3). For
/// root that is `/run`; for anyone else, `$XDG_RUNTIME_DIR`; when that will
/// not do, a directory of the caller's own in the temporary directory.
/// Returns a handle on it and its canonical path.
fn notify_base(me: Uid) -> anyhow::Result<(OwnedFd, PathBuf)> {
    let preferred = match me.is_root() {
        true => Some(PathBuf::from("/run")),
        false => std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute()),
    };
    if let Some(path) = preferred {
        let opened = open_checked(&path, me).and_then(|(fd, path, stat)| {
            check_private(&path, &stat, me)?;
            Ok((fd, path))
        });
        match opened {
            Ok(found) => return Ok(found),
            Err(e) => tracing::debug!(
                path = %path.display(),
                "not used for the notification socket: {}",
                crate::error::render(&e)
            ),
        }
    }
    per_user_dir(me).context("found no safe place for the notification socket (--wait-ready)")
}

/// `<temp dir>/daemonize-<euid>`, the temporary directory being `$TMPDIR`
/// when it is absolute (a relative one would not hold once the daemon is in
/// `/`), else `/tmp`. Made `0711` if missing, and then left in place:
/// removing it would let someone else make it. If it exists, it must be a
/// directory of the caller's own that nobody else can write to.
fn per_user_dir(me: Uid) -> anyhow::Result<(OwnedFd, PathBuf)> {
    let tmp = std::env::var_os("TMPDIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let (tmp_fd, tmp, stat) = open_checked(&tmp, me)?;
    check_ancestor(&tmp, &stat, me)?;
    let name = format!("daemonize-{me}");
    let path = tmp.join(&name);
    match mkdirat(&tmp_fd, name.as_str(), DIR_MODE) {
        Ok(()) => tracing::debug!(path = %path.display(), "created"),
        Err(Errno::EEXIST) => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create '{}'", path.display())),
    }
    let fd = openat(&tmp_fd, name.as_str(), DIR_HANDLE, Mode::empty()).with_context(|| {
        format!(
            "cannot open '{}' (it must be a directory, not a symlink)",
            path.display()
        )
    })?;
    let stat = fstat(&fd).with_context(|| format!("cannot examine '{}'", path.display()))?;
    if let Err(e) = check_private(&path, &stat, me) {
        let xdg = if me.is_root() {
            ""
        } else {
            " or XDG_RUNTIME_DIR"
        };
        bail!("{e}; remove it, or set TMPDIR{xdg} to a directory of your own");
    }
    Ok((fd, path))
}

/// Opens directory `path` (as [`DIR_HANDLE`]) by walking its canonical form
/// down from `/` without following any symlink, and checks each directory
/// above it with [`check_ancestor`]. Returns the handle, the canonical path
/// and the status of the directory itself, which the caller checks.
fn open_checked(path: &Path, me: Uid) -> anyhow::Result<(OwnedFd, PathBuf, FileStat)> {
    let canonical = std::fs::canonicalize(path)
        .with_context(|| format!("cannot resolve '{}'", path.display()))?;
    let mut at = PathBuf::from("/");
    let mut fd = open(&at, DIR_HANDLE, Mode::empty()).context("cannot open '/'")?;
    let mut stat = fstat(&fd).context("cannot examine '/'")?;
    for component in canonical.components().skip(1) {
        check_ancestor(&at, &stat, me)?;
        let name = component.as_os_str();
        fd = openat(&fd, name, DIR_HANDLE, Mode::empty())
            .with_context(|| format!("cannot open '{}'", at.join(name).display()))?;
        at.push(name);
        stat = fstat(&fd).with_context(|| format!("cannot examine '{}'", at.display()))?;
    }
    Ok((fd, canonical, stat))
}

/// A directory on the way to the socket: nobody but root and `me` may
/// rename or replace what is in it. So it is theirs, and either not
/// writable by group and others, or sticky (like `/tmp`: others cannot
/// rename entries that are not theirs, and the next directory down is
/// checked to be root's or `me`'s).
fn check_ancestor(path: &Path, stat: &FileStat, me: Uid) -> anyhow::Result<()> {
    check_directory(path, stat)?;
    if stat.st_uid != 0 && stat.st_uid != me.as_raw() {
        bail!(
            "'{}' belongs to uid {}, who could replace what is in it",
            path.display(),
            stat.st_uid
        );
    }
    if stat.st_mode & 0o022 != 0 && stat.st_mode & 0o1000 == 0 {
        bail!(
            "'{}' is writable by others and not sticky (mode {:04o})",
            path.display(),
            stat.st_mode & 0o7777
        );
    }
    Ok(())
}

/// The directory the socket's directory is made in: the caller's own, and
/// no one else may create entries in it.
fn check_private(path: &Path, stat: &FileStat, me: Uid) -> anyhow::Result<()> {
    check_directory(path, stat)?;
    if stat.st_uid != me.as_raw() {
        bail!(
            "'{}' belongs to uid {}, not to uid {me}",
            path.display(),
            stat.st_uid
        );
    }
    if stat.st_mode & 0o022 != 0 {
        bail!(
            "'{}' is writable by its group or others (mode {:04o})",
            path.display(),
            stat.st_mode & 0o7777
        );
    }
    Ok(())
}

fn check_directory(path: &Path, stat: &FileStat) -> anyhow::Result<()> {
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
        bail!("'{}' is not a directory", path.display());
    }
    Ok(())
}

/// Makes `daemonize.XXXXXX` (random, as mkdtemp(3) does) in `base`, `0711`,
/// and opens it. Nobody else can create entries in `base`, so a name that
/// exists is one of ours from another start: the next one is tried.
fn make_socket_dir(base: &OwnedFd, base_path: &Path) -> anyhow::Result<(OwnedFd, String)> {
    let seed = std::collections::hash_map::RandomState::new();
    for attempt in 0..100 {
        let name = format!("daemonize.{}", random_suffix(&seed, attempt));
        match mkdirat(base, name.as_str(), DIR_MODE) {
            Ok(()) => {
                return match openat(base, name.as_str(), DIR_HANDLE, Mode::empty()) {
                    Ok(dir) => Ok((dir, name)),
                    Err(e) => {
                        let _ = unlinkat(base, name.as_str(), UnlinkatFlags::RemoveDir);
                        Err(e).with_context(|| {
                            format!("cannot open '{}'", base_path.join(&name).display())
                        })
                    }
                };
            }
            Err(Errno::EEXIST) => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot create a directory in '{}'", base_path.display())
                });
            }
        }
    }
    bail!(
        "cannot create a directory in '{}': every name tried exists",
        base_path.display()
    )
}

/// Six letters or digits, from std's randomly keyed SipHash (seeded by the
/// OS once per process), the attempt number and our PID.
fn random_suffix(seed: &std::collections::hash_map::RandomState, attempt: u32) -> String {
    use std::hash::{BuildHasher, Hasher};
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut hasher = seed.build_hasher();
    hasher.write_u32(attempt);
    hasher.write_u32(std::process::id());
    let mut bits = hasher.finish();
    (0..6)
        .map(|_| {
            let c = ALPHABET[(bits % 62) as usize];
            bits /= 62;
            char::from(c)
        })
        .collect()
}

/// Whether `sender` is the daemon or one of its descendants (issue 9, item
/// 4). A descendant whose parent died was reparented to daemonize, the
/// daemon's subreaper, which has no other children: reaching daemonize
/// counts too.
fn from_the_daemon(sender: Pid, daemon: Pid) -> bool {
    descends_from(sender, &[daemon, getpid()], identity::parent)
}

/// Whether walking up from `pid` through `parent` reaches one of `roots`,
/// stopping at PID 1, at a process that is gone, or after
/// [`ANCESTRY_LIMIT`] steps.
fn descends_from(pid: Pid, roots: &[Pid], parent: impl Fn(Pid) -> Option<Pid>) -> bool {
    let mut pid = pid;
    for _ in 0..ANCESTRY_LIMIT {
        if roots.contains(&pid) {
            return true;
        }
        if pid.as_raw() <= 1 {
            return false;
        }
        match parent(pid) {
            Some(ppid) => pid = ppid,
            None => return false,
        }
    }
    false
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

/// Stops a daemon whose start failed: SIGTERM (to its group), a short
/// grace, SIGKILL; then ends its group and reaps it. Returns what was done,
/// for the message.
fn stop(daemon: Process) -> &'static str {
    let how = match daemon.stop(Signal::SIGTERM, STOP_GRACE, STOP_GRACE) {
        Ok(Stopped::AlreadyExited) => "it has exited",
        Ok(Stopped::BySignal) => "stopped it with SIGTERM",
        Ok(Stopped::Killed | Stopped::StillRunning) => "killed it with SIGKILL",
        // Our own child, so a signal cannot be refused, nor a poll on its
        // pidfd fail, short of a broken system: kill it outright.
        Err(e) => {
            tracing::debug!(?e, "cannot stop the daemon in steps");
            let _ = daemon.signal(Signal::SIGKILL);
            "killed it with SIGKILL"
        }
    };
    end(daemon);
    how
}

/// A failed start leaves nothing behind: what the daemon started in its
/// process group (a script's children, a server's workers, which may hold
/// its lock) is killed too, before the daemon is reaped (which frees the
/// group's ID). Returns how the daemon ended.
fn end(daemon: Process) -> Option<WaitStatus> {
    let _ = daemon.signal_group(Signal::SIGKILL);
    daemon.reap()
}

/// The failure for a daemon that exited on its own before it was ready:
/// reaps it (it is our child) for its status, and adds its last log lines.
/// An exit 0 that left processes behind is a program that went into the
/// background, which no readiness protocol can follow: say so, and how to
/// keep it in the foreground (`launch` then stops what it left).
fn died(daemon: Process, outputs: &Outputs, creds: Option<&Credentials>) -> Failure {
    let pid = daemon.pid();
    // The daemon is a zombie now, so what it left is already ours.
    let left = process::live_children();
    let status = end(daemon);
    let tail = outputs.tail(creds);
    if let Some(WaitStatus::Exited(_, 0)) = status
        && !left.is_empty()
    {
        let left: Vec<String> = left.iter().map(|p| p.to_string()).collect();
        return anyhow!(
            "the daemon (pid {pid}) went into the background before it was ready: it \
             exited with status 0 and left pid {} running, which daemonize stops; keep it in \
             the foreground (nginx: 'daemon off;', redis: '--daemonize no', memcached: \
             no -d){tail}",
            left.join(", ")
        )
        .into();
    }
    let why = status.map_or_else(|| "exited".to_owned(), process::ended);
    anyhow!("the daemon (pid {pid}) {why} before it was ready{tail}").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_descendants_of_a_root_count() {
        // 1 <- 10 (the test) <- 20 (daemonize) <- 30 (daemon) <- 40 <- 50;
        // 60 was orphaned and reparented to daemonize; 70 is an outsider.
        let parent = |pid: Pid| {
            let ppid = match pid.as_raw() {
                10 => 1,
                20 => 10,
                30 => 20,
                40 => 30,
                50 => 40,
                60 => 20,
                70 => 10,
                _ => return None,
            };
            Some(Pid::from_raw(ppid))
        };
        let roots = [Pid::from_raw(30), Pid::from_raw(20)];
        for pid in [30, 40, 50, 60] {
            assert!(descends_from(Pid::from_raw(pid), &roots, parent), "{pid}");
        }
        // An ancestor of daemonize, an outsider, init, a PID that is gone.
        for pid in [10, 70, 1, 99] {
            assert!(!descends_from(Pid::from_raw(pid), &roots, parent), "{pid}");
        }
        // A cycle (impossible in the kernel's tree) ends at the step limit.
        let cycle = |pid: Pid| Some(Pid::from_raw(if pid.as_raw() == 5 { 6 } else { 5 }));
        assert!(!descends_from(Pid::from_raw(5), &roots, cycle));
    }

    #[test]
    fn random_suffixes_are_six_letters_or_digits_and_differ() {
        let seed = std::collections::hash_map::RandomState::new();
        let names: std::collections::BTreeSet<String> =
            (0..50).map(|n| random_suffix(&seed, n)).collect();
        assert_eq!(names.len(), 50);
        assert!(
            names
                .iter()
                .all(|n| n.len() == 6 && n.bytes().all(|b| b.is_ascii_alphanumeric()))
        );
    }
}
