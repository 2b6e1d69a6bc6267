//! The control actions, `--status`, `--stop` and `--signal`: questions and
//! orders about the daemon that a pidfile names.
//!
//! The daemon is found by the pidfile's lock (held on its companion, see
//! `pidfile`), never by `kill(pid, 0)`: the lock dies with the daemon,
//! while its PID may be reused by an unrelated process. When nobody holds
//! the lock, the identity rule (`identity`) still finds a daemon that closed
//! its descriptors, as sshd and dnsmasq do. Before any signal, the process
//! is pinned with a pidfd and checked (lock or identity) *after* the pidfd
//! was opened, and the signal goes through the pidfd, so a reused PID is
//! never signalled.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use nix::errno::Errno;
use nix::libc::c_int;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::Pid;

use crate::cli::{Instance, Sig};
use crate::error::{EXIT_FAILURE, EXIT_RUNNING, Failure};
use crate::identity;
use crate::pidfile::{self, Companion, Removal};
use crate::process::{Process, StopError, Stopped};
use crate::state::{self, Record, Request};
use crate::sys;

/// LSB init-script status codes (LSB 4.1, "Init Script Actions").
const STATUS_RUNNING: u8 = 0;
const STATUS_DEAD_PIDFILE_EXISTS: u8 = 1;
const STATUS_NOT_RUNNING: u8 = 3;
const STATUS_UNKNOWN: u8 = 4;
/// LSB's exit status of an action on a program that is not running.
const EXIT_NOT_RUNNING: u8 = 7;

/// How long before the pidfile was written a process that took over the
/// daemon's lock may have started: daemonize writes the pidfile a moment
/// after the command has started, and the command may fork at once.
const TAKEOVER_SLACK: Duration = Duration::from_secs(1);

/// How long to wait for a process to vanish after SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// The pidfile and its lock file, as a control action opened them.
struct Pidfile<'a> {
    path: &'a Path,
    file: File,
    companion: Companion,
}

/// What the pidfile says about the daemon.
enum Found<'a> {
    /// Nobody holds the lock and the pidfile names no daemon: it is empty,
    /// or its PID is dead or was reused by another process.
    Stale,
    /// The daemon, pinned; found by its lock, or by the identity rule when
    /// it runs without it.
    Daemon { daemon: Process, by_lock: bool },
    /// The lock is held, but not by the PID in the file (it has exited, or
    /// it is not the daemon), or the file holds no PID yet (a start in
    /// progress). The processes holding the lock (on `lock`, the lock
    /// file) are the instance.
    Holders { pid: Option<Pid>, lock: &'a File },
}

/// Why a control action cannot go on.
enum Problem {
    /// The caller cannot tell whether the daemon runs (LSB 4): the pidfile
    /// holds no PID, or what would tell is not the caller's to see.
    CannotTell(anyhow::Error),
    /// The pidfile or its lock file is unusable (a symlink, a directory).
    Broken(anyhow::Error),
}

impl Problem {
    /// For `--status`, whose only answer to either is "unknown".
    fn unknown(self) -> Failure {
        let (Problem::CannotTell(e) | Problem::Broken(e)) = self;
        Failure::new(
            STATUS_UNKNOWN,
            e.context("cannot tell whether the daemon runs"),
        )
    }

    /// As a failure with `broken` as the exit status of a broken pidfile.
    fn into_failure(self, broken: u8, context: &str) -> Failure {
        match self {
            Problem::CannotTell(e) => Failure::new(
                STATUS_UNKNOWN,
                e.context("cannot tell whether the daemon runs"),
            ),
            Problem::Broken(e) => Failure::new(broken, e.context(context.to_owned())),
        }
    }
}

impl From<Failure> for Problem {
    /// A pidfile the caller may not read is a question it cannot answer.
    fn from(failure: Failure) -> Problem {
        let denied = failure
            .error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied);
        if denied {
            Problem::CannotTell(failure.error)
        } else {
            Problem::Broken(failure.error)
        }
    }
}

/// Opens the pidfile and its lock file; `None` if there is no pidfile.
fn open(path: &Path) -> Result<Option<Pidfile<'_>>, Problem> {
    let Some(file) = pidfile::open_existing(path)? else {
        return Ok(None);
    };
    let companion = pidfile::open_companion(path)?;
    Ok(Some(Pidfile {
        path,
        file,
        companion,
    }))
}

/// Finds the daemon that the pidfile names.
fn find<'a>(pf: &'a Pidfile) -> Result<Found<'a>, Problem> {
    let read = || {
        pidfile::read_pid(&pf.file).map_err(|e| {
            Problem::CannotTell(e.context(format!("cannot read pidfile '{}'", pf.path.display())))
        })
    };
    // The lock first, then the content: a start locks, then empties the
    // file, then writes the PID, so a locked file never shows a stale PID.
    if let Companion::Open(lock) = &pf.companion
        && probe(pf, lock)?
    {
        return by_lock(pf, lock, read()?);
    }
    let pid = read()?;
    let found = match pid {
        Some(pid) => by_identity(pf, pid)?,
        None => None,
    };
    match (found, &pf.companion) {
        (Some(found), _) => Ok(found),
        // Nobody holds the lock and the file names no daemon.
        (None, Companion::Open(_) | Companion::Missing) => Ok(Found::Stale),
        (None, Companion::Denied(e)) => {
            let why = match pid {
                Some(pid) => format!("the pidfile alone cannot show that pid {pid} is the daemon"),
                None => format!("'{}' holds no PID", pf.path.display()),
            };
            Err(Problem::CannotTell(
                anyhow!(std::io::Error::from_raw_os_error(
                    e.raw_os_error().unwrap_or(nix::libc::EACCES)
                ))
                .context(format!(
                    "{why}, and only the owner of lock file '{}' (and root) can see its lock",
                    pidfile::companion_path(pf.path).display()
                )),
            ))
        }
    }
}

/// Whether someone holds the lock.
fn probe(pf: &Pidfile, lock: &File) -> Result<bool, Problem> {
    pidfile::is_locked(lock).map_err(|e| {
        Problem::CannotTell(anyhow!(e).context(format!(
            "cannot probe the lock on '{}'",
            pidfile::companion_path(pf.path).display()
        )))
    })
}

/// The daemon by the identity rule, if `pid` is it.
fn by_identity(pf: &Pidfile, pid: Pid) -> Result<Option<Found<'static>>, Problem> {
    let pidfd = identity::identify(&pf.file, pid).map_err(|e| {
        Problem::CannotTell(e.context(format!("cannot check pid {pid} in '{}'", pf.path.display())))
    })?;
    Ok(pidfd.map(|pidfd| {
        tracing::info!(pid = pid.as_raw(), "the daemon found by the identity rule");
        Found::Daemon {
            daemon: Process::from_pidfd(pid, pidfd),
            by_lock: false,
        }
    }))
}

/// The daemon that took over from `gone`, the pidfile's PID, which has
/// exited while processes it started hold the lock: a program that went
/// into the background after daemonize returned (nginx without `daemon
/// off;`). If the holders form one tree, its root is the daemon; the
/// pidfile is pointed at it when the caller owns it, so `kill $(cat FILE)`
/// reaches it too. `None` when the holders are not one tree.
fn successor(pf: &Pidfile, lock: &File, gone: Pid) -> Result<Option<Found<'static>>, Problem> {
    let holders = visible_holders(lock)?;
    let roots: Vec<Pid> = holders
        .iter()
        .copied()
        .filter(|&h| identity::parent(h).is_none_or(|p| !holders.contains(&p)))
        .collect();
    let [root] = roots[..] else {
        return Ok(None);
    };
    // Only a process that started after the daemon did can have taken over
    // from it: one that ran long before (a service the daemon passed its
    // lock's descriptor to) never counts.
    if !identity::started_since(&pf.file, root, TAKEOVER_SLACK) {
        tracing::info!(
            pid = root.as_raw(),
            "holds the lock but is older than the daemon"
        );
        return Ok(None);
    }
    let Ok(daemon) = Process::open(root) else {
        return Ok(None);
    };
    // Pinned: check again that this very process holds the lock.
    if !holds_lock(root, lock).unwrap_or(false) {
        return Ok(None);
    }
    tracing::info!(
        exited = gone.as_raw(),
        daemon = root.as_raw(),
        "the pidfile's pid has exited; the process that holds its lock took over"
    );
    if let Err(e) = pidfile::repoint(pf.path, &pf.file, root) {
        tracing::debug!(error = %e, "pidfile left as it is");
    }
    Ok(Some(Found::Daemon {
        daemon,
        by_lock: true,
    }))
}

/// The lock is held: by the PID in the file, or by others.
fn by_lock<'a>(pf: &Pidfile, lock: &'a File, pid: Option<Pid>) -> Result<Found<'a>, Problem> {
    let Some(pid) = pid else {
        return Ok(Found::Holders { pid: None, lock });
    };
    let daemon = match Process::open(pid) {
        Ok(daemon) => daemon,
        // Gone (or a thread's ID): processes it started hold the lock.
        Err(Errno::ESRCH | Errno::EINVAL) => {
            return match successor(pf, lock, pid)? {
                Some(found) => Ok(found),
                None => Ok(Found::Holders {
                    pid: Some(pid),
                    lock,
                }),
            };
        }
        Err(e) => {
            return Err(Problem::CannotTell(
                anyhow!(e).context(format!("cannot open a pidfd for pid {pid}")),
            ));
        }
    };
    // The pidfd now pins whatever process has this PID. Only if that
    // process holds the lock is it the daemon: the PID may have been reused
    // since the daemon died (its children keeping the lock), or the file
    // rewritten by someone who may write it.
    match holds_lock(pid, lock) {
        Ok(true) => Ok(Found::Daemon {
            daemon,
            by_lock: true,
        }),
        // A zombie no longer holds anything: the same as gone.
        Ok(false) if !identity::is_alive(pid) => match successor(pf, lock, pid)? {
            Some(found) => Ok(found),
            None => Ok(Found::Holders {
                pid: Some(pid),
                lock,
            }),
        },
        Ok(false) => Ok(Found::Holders {
            pid: Some(pid),
            lock,
        }),
        // Not ours to see (another user's process, or one that is not
        // dumpable): that is no answer, but the identity rule may be.
        Err(e) => match by_identity(pf, pid)? {
            Some(found) => Ok(found),
            None => Err(Problem::CannotTell(
                e.context(format!("cannot see whether pid {pid} holds the lock")),
            )),
        },
    }
}

/// `--status`: 0 running (prints the PID), 1 stale pidfile, 3 no pidfile,
/// 4 cannot tell.
pub fn status(instance: Instance) -> Result<u8, Failure> {
    let supervision = supervision(instance);
    if let Supervision::Running { record, .. } = &supervision {
        say(&supervised_status(record));
        return Ok(STATUS_RUNNING);
    }
    let Some(path) = instance.pidfile else {
        let path = instance.supervisor.unwrap_or(Path::new(""));
        return Ok(
            match pidfile::open_existing(path)
                .map_err(Problem::from)
                .map_err(Problem::unknown)?
            {
                None => {
                    say(&format!(
                        "not running (no supervisor pidfile '{}')",
                        path.display()
                    ));
                    STATUS_NOT_RUNNING
                }
                Some(_) => {
                    say(&format!(
                        "not running (no supervisor runs for '{}')",
                        path.display()
                    ));
                    STATUS_DEAD_PIDFILE_EXISTS
                }
            },
        );
    };
    let Some(pf) = open(path).map_err(Problem::unknown)? else {
        say(&format!("not running (no pidfile '{}')", path.display()));
        return Ok(STATUS_NOT_RUNNING);
    };
    match find(&pf).map_err(Problem::unknown)? {
        Found::Stale => {
            say(&format!("not running (stale pidfile '{}')", path.display()));
            return Ok(STATUS_DEAD_PIDFILE_EXISTS);
        }
        Found::Daemon { daemon, .. } => match supervision {
            Supervision::Gone(record) if record.child == Some(daemon.pid().as_raw()) => {
                say(&format!(
                    "running (pid {}; its supervisor, pid {}, is gone)",
                    daemon.pid(),
                    record.supervisor
                ))
            }
            _ => say(&format!("running (pid {})", daemon.pid())),
        },
        // Locked but still empty: a start is between its lock and its write.
        Found::Holders { pid: None, .. } => say(&format!(
            "running (starting; no PID in '{}' yet)",
            path.display()
        )),
        // The lock is held, but not by the PID the file names: the daemon
        // has exited and processes it started keep its lock.
        Found::Holders {
            pid: Some(pid),
            lock,
        } => {
            let holders = visible_holders(lock).map_err(Problem::unknown)?;
            let what = if identity::is_alive(pid) {
                "does not hold the lock"
            } else {
                "has exited"
            };
            say(&format!(
                "running (pid {pid} {what}; processes {} hold the lock)",
                list(&holders)
            ));
        }
    }
    Ok(STATUS_RUNNING)
}

/// `--signal` without `--stop`: sends `signal` to the daemon and nothing
/// more. 0 once sent, 7 if no daemon runs, 4 if the caller cannot tell.
pub fn signal(instance: Instance, signal: Sig) -> Result<u8, Failure> {
    let context = format!("cannot send {signal}");
    let not_running = |why: String| {
        Failure::new(
            EXIT_NOT_RUNNING,
            anyhow!("the daemon is not running ({why})").context(context.clone()),
        )
    };
    let supervision = supervision(instance);
    let path = match (instance.pidfile, supervision) {
        (_, Supervision::Running { record, .. }) if record.child.is_none() => {
            return Err(not_running(format!(
                "its supervisor, pid {}, has a restart pending",
                record.supervisor
            )));
        }
        (Some(path), _) => path,
        // Only -P: the supervisor itself, which passes the signal on
        // (docs/design.md, "Supervision"), if it is one it passes on.
        (None, Supervision::Running { .. }) if !supervise_forwards(signal) => {
            return Err(Failure::new(
                EXIT_FAILURE,
                anyhow!(
                    "the supervisor passes on only HUP, USR1, USR2, QUIT, WINCH, ALRM and CONT \
                     (TERM and INT end supervision); name the daemon with --pidfile to send \
                     it {signal}"
                )
                .context(context),
            ));
        }
        (None, Supervision::Running { supervisor, .. }) => {
            let pid = supervisor.pid();
            return match supervisor.signal(signal.number()) {
                Ok(true) => Ok(0),
                Ok(false) => Err(not_running(format!("pid {pid} has just exited"))),
                Err(e) => Err(anyhow!(e)
                    .context(format!("cannot send {signal} to the supervisor, pid {pid}"))
                    .into()),
            };
        }
        (None, _) => {
            let path = instance.supervisor.unwrap_or(Path::new(""));
            return Err(not_running(format!(
                "no supervisor runs for '{}'",
                path.display()
            )));
        }
    };
    let Some(pf) = open(path).map_err(|p| p.into_failure(EXIT_FAILURE, &context))? else {
        return Err(not_running(format!("no pidfile '{}'", path.display())));
    };
    match find(&pf).map_err(|p| p.into_failure(EXIT_FAILURE, &context))? {
        Found::Stale => Err(not_running(format!("stale pidfile '{}'", path.display()))),
        Found::Holders { pid: None, .. } => Err(Failure::new(
            STATUS_UNKNOWN,
            anyhow!(
                "a start is in progress (no PID in '{}' yet)",
                path.display()
            )
            .context(context),
        )),
        // The instance runs (`--status` says so), but no one process of
        // it is the daemon to signal.
        Found::Holders { pid: Some(pid), .. } if !identity::is_alive(pid) => Err(Failure::new(
            STATUS_UNKNOWN,
            anyhow!(
                "pid {pid} in '{}' has exited, and the processes that hold its lock are \
                 not one process tree",
                path.display()
            )
            .context("cannot tell which process is the daemon")
            .context(context),
        )),
        Found::Holders { pid: Some(pid), .. } => Err(Failure::new(
            STATUS_UNKNOWN,
            anyhow!("pid {pid} in '{}' does not hold its lock", path.display())
                .context("cannot tell which process is the daemon"),
        )),
        Found::Daemon { daemon, by_lock } => {
            let pid = daemon.pid();
            tracing::info!(pid = pid.as_raw(), %signal, by_lock, "signalling the daemon");
            match daemon.signal(signal.number()) {
                Ok(true) => Ok(0),
                Ok(false) => Err(not_running(format!("pid {pid} has just exited"))),
                Err(e) => Err(anyhow!(e)
                    .context(format!("cannot send {signal} to pid {pid}"))
                    .into()),
            }
        }
    }
}

/// `--stop`: signal, wait up to `timeout`, then SIGKILL, and remove the
/// pidfile. Exit 0 once the daemon is gone (or was not running), 1 if it
/// could not be stopped, 4 if the caller cannot tell.
pub fn stop(instance: Instance, signal: Sig, timeout: Duration) -> Result<u8, Failure> {
    let context = "cannot stop the daemon";
    let cannot = |e: anyhow::Error| Failure::new(EXIT_RUNNING, e.context(context));
    let problem = |p: Problem| p.into_failure(EXIT_RUNNING, context);
    match supervision(instance) {
        Supervision::Running { supervisor, .. } => {
            stop_supervisor(&supervisor, signal, timeout).map_err(cannot)?;
        }
        Supervision::Gone(record) if instance.pidfile.is_none() => {
            return Err(cannot(anyhow!(
                "its supervisor, pid {}, is gone; name the daemon with --pidfile to stop it",
                record.supervisor
            )));
        }
        _ => {}
    }
    let Some(path) = instance.pidfile else {
        tracing::info!("no supervisor runs: not running");
        return Ok(0);
    };
    let Some(pf) = open(path).map_err(problem)? else {
        tracing::info!(path = %path.display(), "no pidfile: not running");
        return Ok(0);
    };
    let deadline = Instant::now()
        .checked_add(timeout)
        .unwrap_or_else(far_future);
    // A live PID that did not hold the lock while the lock was held is not
    // the daemon, even once the lock is free: the lock decides while it is
    // held (someone who may write the pidfile may have put any PID in it).
    let mut not_daemon = None;
    // Each pass ends one way the daemon can be found; it takes at most a
    // daemon found by its lock, its children still holding the lock, and
    // then the identity rule, before the pidfile is stale.
    for _ in 0..4 {
        match find(&pf).map_err(problem)? {
            Found::Daemon { daemon, by_lock } if !by_lock && Some(daemon.pid()) == not_daemon => {
                return Ok(remove(&pf, not_daemon));
            }
            Found::Stale => return Ok(remove(&pf, not_daemon)),
            Found::Holders { pid, lock } => {
                not_daemon = pid.filter(|&pid| identity::is_alive(pid));
                if stop_holders(&pf, lock, signal, deadline, not_daemon).map_err(problem)? {
                    return Ok(0);
                }
            }
            Found::Daemon { daemon, by_lock } => {
                stop_daemon(&daemon, signal, deadline).map_err(cannot)?;
                if !by_lock && matches!(pf.companion, Companion::Denied(_)) {
                    // Stopped, but its lock file is not ours to take, so
                    // the pidfile stays (stale: the next start takes it).
                    tracing::warn!(path = %path.display(), "cannot remove the pidfile");
                    return Ok(0);
                }
            }
        }
    }
    Err(cannot(anyhow!(
        "it keeps running according to '{}'",
        path.display()
    )))
}

/// `--restart-now`: 0 once the supervisor has the request, 7 if nothing
/// runs, 125 if what runs is not supervised.
pub fn restart_now(instance: Instance) -> Result<u8, Failure> {
    let context = "cannot restart the daemon";
    match supervision(instance) {
        Supervision::Running { supervisor, .. } => {
            let pid = supervisor.pid();
            match supervisor.queue(state::control_signal(), Request::RestartNow.encode()) {
                Ok(true) => Ok(0),
                Ok(false) => Err(Failure::new(
                    EXIT_NOT_RUNNING,
                    anyhow!("its supervisor, pid {pid}, has just exited").context(context),
                )),
                Err(e) => Err(anyhow!(e)
                    .context(format!("cannot signal the supervisor, pid {pid}"))
                    .context(context)
                    .into()),
            }
        }
        Supervision::Gone(record) => Err(Failure::new(
            EXIT_FAILURE,
            anyhow!("its supervisor, pid {}, is gone", record.supervisor).context(context),
        )),
        Supervision::None => {
            let running = runs_unsupervised(instance)?;
            Err(match running {
                true => Failure::new(
                    EXIT_FAILURE,
                    anyhow!("it is not supervised (started without --restart)").context(context),
                ),
                false => Failure::new(
                    EXIT_NOT_RUNNING,
                    anyhow!("the daemon is not running").context(context),
                ),
            })
        }
    }
}

/// `--reopen-logs`: 0 once the supervisor has reopened its files, 7 if
/// nothing runs, 125 if what runs does not capture its output.
pub fn reopen_logs(instance: Instance) -> Result<u8, Failure> {
    let context = "cannot reopen the logs";
    let not_captured = || {
        Failure::new(
            EXIT_FAILURE,
            anyhow!(
                "the daemon writes its output files itself (they are captured only with \
                 --restart and -o/-e, or a --log-* or --syslog option); reopen them with \
                 the daemon's own signal, or use logrotate's copytruncate"
            )
            .context(context),
        )
    };
    match supervision(instance) {
        Supervision::Running { record, .. } if !record.captures => Err(not_captured()),
        Supervision::Running {
            supervisor,
            record,
            lock,
        } => {
            let pid = supervisor.pid();
            // Watched before the request, so that its answer cannot be
            // missed.
            let changes = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
                .and_then(|fd| {
                    fd.add_watch(
                        format!("/proc/self/fd/{}", lock.as_raw_fd()).as_str(),
                        AddWatchFlags::IN_MODIFY,
                    )
                    .map(|_| fd)
                })
                .ok();
            match supervisor.queue(state::control_signal(), Request::ReopenLogs.encode()) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(Failure::new(
                        EXIT_NOT_RUNNING,
                        anyhow!("its supervisor, pid {pid}, has just exited").context(context),
                    ));
                }
                Err(e) => {
                    return Err(anyhow!(e)
                        .context(format!("cannot signal the supervisor, pid {pid}"))
                        .context(context)
                        .into());
                }
            }
            let deadline = Instant::now() + REOPEN_WAIT;
            loop {
                if read_record(&lock).is_some_and(|now| now.reopens > record.reopens) {
                    return Ok(0);
                }
                let now = Instant::now();
                if now >= deadline {
                    return Err(Failure::new(
                        EXIT_FAILURE,
                        anyhow!(
                            "the supervisor, pid {pid}, did not confirm within {} s",
                            REOPEN_WAIT.as_secs()
                        )
                        .context(context),
                    ));
                }
                let mut fds = vec![nix::poll::PollFd::new(
                    supervisor.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                if let Some(changes) = &changes {
                    fds.push(nix::poll::PollFd::new(
                        changes.as_fd(),
                        nix::poll::PollFlags::POLLIN,
                    ));
                }
                // Without inotify, a look every 10 ms.
                let wake = match changes {
                    Some(_) => deadline,
                    None => (now + Duration::from_millis(10)).min(deadline),
                };
                let _ = sys::poll_until(&mut fds, Some(wake));
                let gone = fds[0].any().unwrap_or(false);
                drop(fds);
                if let Some(changes) = &changes {
                    while matches!(changes.read_events(), Ok(events) if !events.is_empty()) {}
                }
                if gone && read_record(&lock).is_none_or(|now| now.reopens <= record.reopens) {
                    return Err(Failure::new(
                        EXIT_NOT_RUNNING,
                        anyhow!("its supervisor, pid {pid}, has exited").context(context),
                    ));
                }
            }
        }
        Supervision::Gone(record) => Err(Failure::new(
            EXIT_FAILURE,
            anyhow!(
                "its supervisor, pid {}, is gone, and with it the capture of its output",
                record.supervisor
            )
            .context(context),
        )),
        Supervision::None => {
            let running = runs_unsupervised(instance)?;
            Err(match running {
                true => not_captured(),
                false => Failure::new(
                    EXIT_NOT_RUNNING,
                    anyhow!("the daemon is not running").context(context),
                ),
            })
        }
    }
}

/// Whether the pidfile of an instance without a supervisor names a
/// running daemon (for the messages of `--restart-now`, `--reopen-logs`).
fn runs_unsupervised(instance: Instance) -> Result<bool, Failure> {
    let Some(path) = instance.pidfile else {
        return Ok(false);
    };
    Ok(match open(path).map_err(Problem::unknown)? {
        Some(pf) => !matches!(find(&pf).map_err(Problem::unknown)?, Found::Stale),
        None => false,
    })
}

/// How long `--reopen-logs` waits for the supervisor to confirm.
const REOPEN_WAIT: Duration = Duration::from_secs(10);

/// Whether a supervisor acts on `sig` as the contract says: passes it on
/// to its child, or (TERM, INT) ends supervision (see `supervise`).
fn supervise_forwards(sig: Sig) -> bool {
    use nix::libc::{
        SIGALRM, SIGCONT, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH,
    };
    [
        SIGHUP, SIGUSR1, SIGUSR2, SIGQUIT, SIGWINCH, SIGALRM, SIGCONT, SIGTERM, SIGINT,
    ]
    .contains(&sig.number())
}

/// The supervisor of an instance, as its state record names it.
enum Supervision {
    /// None runs (or the instance was not started with `--restart`).
    None,
    /// It runs: pinned, and seen to hold the instance's lock after that.
    Running {
        supervisor: Process,
        record: Record,
        /// The lock file the record is in.
        lock: File,
    },
    /// Its record is there, but it is not running (killed by SIGKILL): the
    /// record is only a hint, never a target.
    Gone(Record),
}

/// Reads the supervisor's record from the lock file of the pidfile or
/// the supervisor pidfile (docs/design.md, "The supervisor's channels"),
/// and checks it: the supervisor it names must be a `daemonize` (the
/// same executable as ours), pinned by a pidfd, that holds the lock.
/// Neither a stale record nor a forged one (only the lock file's owner
/// can write it) can name another process to signal.
fn supervision(instance: Instance) -> Supervision {
    for path in [instance.pidfile, instance.supervisor]
        .into_iter()
        .flatten()
    {
        let Ok(Companion::Open(lock)) = pidfile::open_companion(path) else {
            continue;
        };
        let Some(record) = read_record(&lock) else {
            continue;
        };
        if record.phase == state::Phase::Done {
            return Supervision::None;
        }
        let pid = Pid::from_raw(record.supervisor);
        let Ok(supervisor) = Process::open(pid) else {
            return Supervision::Gone(record);
        };
        if !is_daemonize(pid) || !holds_lock(pid, &lock).unwrap_or(false) {
            return Supervision::Gone(record);
        }
        return Supervision::Running {
            supervisor,
            record,
            lock,
        };
    }
    Supervision::None
}

/// The record in a lock file, read again if a write was met halfway.
fn read_record(lock: &File) -> Option<Record> {
    use std::os::unix::fs::FileExt;
    let mut bytes = [0u8; state::RECORD_LEN];
    (0..5).find_map(|_| {
        let n = lock.read_at(&mut bytes, 0).ok()?;
        Record::decode(&bytes[..n])
    })
}

/// Whether process `pid` runs the same executable as we do. A process we
/// may not look at passes: the lock check still stands.
fn is_daemonize(pid: Pid) -> bool {
    let id = |path: &str| std::fs::metadata(path).map(|m| (m.dev(), m.ino()));
    match (id(&format!("/proc/{pid}/exe")), id("/proc/self/exe")) {
        (Ok(theirs), Ok(ours)) => theirs == ours,
        _ => true,
    }
}

/// `--status` of a running supervisor's instance.
fn supervised_status(record: &Record) -> String {
    let mut facts = Vec::new();
    let restarts = match record.restarts {
        1 => "1 restart".to_owned(),
        n => format!("{n} restarts"),
    };
    let head = match (record.child, record.phase) {
        (Some(child), _) => {
            facts.push(format!("pid {child}"));
            facts.push(format!("supervisor pid {}", record.supervisor));
            "running"
        }
        (None, _) => {
            facts.push(format!("supervisor pid {}", record.supervisor));
            if let Some(due) = record.next_restart {
                let now = state::epoch_ms(std::time::SystemTime::now());
                let left = due.saturating_sub(now) as f64 / 1000.0;
                facts.push(format!("restart due in {left:.1} s"));
            }
            "restarting"
        }
    };
    facts.push(restarts);
    if let Some(end) = &record.last_end {
        facts.push(format!("last end: {end}"));
    }
    if let Some(status) = &record.status {
        facts.push(format!("status: {status}"));
    }
    let mut text = format!("{head} ({})", facts.join("; "));
    if let Some(message) = &record.message {
        text.push_str(&format!("\nlast message from the supervisor: {message}"));
    }
    text
}

/// Ends supervision: the supervisor stops COMMAND itself (with `signal`,
/// then SIGKILL after `timeout`) and exits, with no restart after the
/// request. If it does not exit in time, it is killed, and whatever it
/// left is for the pidfile's stop to find.
fn stop_supervisor(supervisor: &Process, signal: Sig, timeout: Duration) -> anyhow::Result<()> {
    let pid = supervisor.pid();
    tracing::info!(pid = pid.as_raw(), "asking the supervisor to stop");
    let request = Request::Stop {
        signal: signal.number(),
        timeout,
    };
    if !supervisor
        .queue(state::control_signal(), request.encode())
        .with_context(|| format!("cannot signal the supervisor, pid {pid}"))?
    {
        return Ok(());
    }
    // It has the timeout to stop COMMAND, and KILL_GRACE for the SIGKILL
    // it may need; then it is killed itself, and what it leaves is the
    // pidfile's to find.
    match supervisor.escalate(timeout.saturating_add(KILL_GRACE), KILL_GRACE) {
        Ok(Stopped::Killed) => {
            tracing::warn!(
                pid = pid.as_raw(),
                "the supervisor did not stop in time: killed it"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(pid = pid.as_raw(), ?e, "cannot wait for the supervisor"),
    }
    Ok(())
}

/// The end of a `--stop` that found no daemon (left): exit 0, with the
/// pidfile removed when it may be.
fn remove(pf: &Pidfile, not_daemon: Option<Pid>) -> u8 {
    tracing::info!(path = %pf.path.display(), "not running");
    if pidfile::remove_stale(pf.path, &pf.file, &pf.companion, not_daemon) != Removal::Removed {
        tracing::info!(path = %pf.path.display(), "pidfile left in place");
    }
    0
}

/// Signals the daemon through its pidfd, waits until the deadline, then
/// sends SIGKILL; returns once it has exited.
fn stop_daemon(daemon: &Process, signal: Sig, deadline: Instant) -> anyhow::Result<()> {
    let pid = daemon.pid();
    tracing::info!(pid = pid.as_raw(), %signal, "signalling");
    let grace = deadline.saturating_duration_since(Instant::now());
    match daemon.stop(signal.number(), grace, KILL_GRACE) {
        Ok(Stopped::AlreadyExited | Stopped::BySignal | Stopped::Killed) => {}
        Ok(Stopped::StillRunning) => bail!("pid {pid} is still running after SIGKILL"),
        Err(StopError::Signal(e)) => {
            return Err(anyhow!(e).context(format!("cannot send {signal} to pid {pid}")));
        }
        Err(StopError::Kill(e)) => {
            return Err(anyhow!(e).context(format!("cannot send SIGKILL to pid {pid}")));
        }
        Err(StopError::Wait(e)) => {
            return Err(anyhow!(e).context("cannot wait for the daemon to exit"));
        }
    }
    tracing::info!(pid = pid.as_raw(), "stopped");
    Ok(())
}

/// After the daemon itself has exited, processes it started may still hold
/// the lock: they inherited its descriptor, as children do. The lock is
/// the daemon's lifetime, so they are part of it: each gets `signal`
/// (through a pidfd, once it is confirmed to hold the lock), then SIGKILL
/// at the deadline. Returns once the lock is free: true if the pidfile was
/// removed with it, false if the pidfile now needs another look (it names
/// a daemon by the identity rule, or is not a pidfile).
///
/// flock(2) cannot wait for a release with a timeout, but the holders are
/// processes: each one signalled stays pinned, and one poll(2) over all
/// their pidfds waits for the first exit, up to the end of the phase (the
/// deadline, then [`KILL_GRACE`] after it). The same poll watches the lock
/// file and the pidfile (inotify, on the inodes we hold open): a holder
/// out of sight closes its descriptor when it exits, and a start in
/// progress writes its PID, and either wakes the wait at once. Each wake
/// brings another look at the lock and at who holds it, so a holder that
/// appears meanwhile is signalled too. See [`next_look`] for what no event
/// would show.
fn stop_holders(
    pf: &Pidfile,
    lock: &File,
    signal: Sig,
    deadline: Instant,
    not_daemon: Option<Pid>,
) -> Result<bool, Problem> {
    // Each holder gets `signal`, and SIGKILL, once (by its PID as seen).
    let mut signalled: Vec<Pid> = Vec::new();
    let mut killed: Vec<Pid> = Vec::new();
    let mut killing = false;
    // Holders pinned and waited on.
    let mut watched: Vec<Process> = Vec::new();
    let changes = FileChanges::watch(lock, &pf.file);
    loop {
        match pidfile::remove_stale(pf.path, &pf.file, &pf.companion, not_daemon) {
            Removal::Removed => return Ok(true),
            Removal::Kept => return Ok(false),
            Removal::Busy => {}
        }
        let holders = visible_holders(lock)?;
        let now = Instant::now();
        let phase = phase(now, deadline, killing);
        if phase == Phase::GiveUp {
            return Err(Problem::Broken(anyhow!(
                "the daemon has exited, but processes {} still hold the lock on '{}' after SIGKILL",
                list(&holders),
                pidfile::companion_path(pf.path).display()
            )));
        }
        // One still running now was running during the look, which so saw
        // it and not a process that took its PID since. One that let go of
        // the lock is no longer part of the daemon.
        watched.retain(|p| {
            holders.contains(&p.pid()) && !p.exited_within(Duration::ZERO).unwrap_or(false)
        });
        let (number, name, sent): (c_int, &dyn std::fmt::Display, _) = match phase {
            Phase::Signal => (signal.number(), &signal, &mut signalled),
            Phase::Kill | Phase::GiveUp => {
                (Signal::SIGKILL as c_int, &Signal::SIGKILL, &mut killed)
            }
        };
        for &holder in &holders {
            let at = watched.iter().position(|p| p.pid() == holder);
            if sent.contains(&holder) {
                // Signalled while there was no room to watch it.
                if at.is_none()
                    && watched.len() < WATCH_LIMIT
                    && let Some(pinned) = pin_holder(lock, holder)
                {
                    watched.push(pinned);
                }
                continue;
            }
            let pinned = match at {
                Some(_) => None,
                None => pin_holder(lock, holder),
            };
            let Some(process) = at.map(|i| &watched[i]).or(pinned.as_ref()) else {
                continue;
            };
            tracing::info!(pid = holder.as_raw(), signal = %name, "signalling a process that holds the lock");
            let _ = process.signal(number);
            sent.push(holder);
            if let Some(pinned) = pinned
                && watched.len() < WATCH_LIMIT
            {
                watched.push(pinned);
            }
        }
        killing |= phase == Phase::Kill;
        let until = next_look(now, deadline, changes.is_some());
        let also = changes.as_ref().map(|c| c.fd.as_fd());
        Process::wait_any(&watched, also, until).map_err(|e| {
            Problem::Broken(anyhow!(e).context("cannot wait for the processes that hold the lock"))
        })?;
        if let Some(changes) = &changes {
            changes.drain();
        }
    }
}

/// Closes of the lock file and writes to the pidfile, as inotify reports
/// them, on the very inodes we hold open (watched through
/// `/proc/self/fd`, so no path is followed). Our own looks neither open
/// nor write either file, so they cause no event.
struct FileChanges {
    fd: Inotify,
}

impl FileChanges {
    fn watch(lock: &File, pidfile: &File) -> Option<FileChanges> {
        let fd = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).ok()?;
        let watch = |file: &File, mask: AddWatchFlags| {
            fd.add_watch(format!("/proc/self/fd/{}", file.as_raw_fd()).as_str(), mask)
        };
        let gone = AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF;
        watch(lock, AddWatchFlags::IN_CLOSE | gone).ok()?;
        watch(
            pidfile,
            AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CLOSE_WRITE | gone,
        )
        .ok()?;
        Some(FileChanges { fd })
    }

    /// Reads the events that woke the wait: that they came is all we use.
    fn drain(&self) {
        while matches!(self.fd.read_events(), Ok(events) if !events.is_empty()) {}
    }
}

/// Where [`stop_holders`] stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Before the deadline: each holder gets the stop signal.
    Signal,
    /// From the deadline on: each holder gets SIGKILL.
    Kill,
    /// [`KILL_GRACE`] after the deadline, once SIGKILL has gone out at an
    /// earlier look: holders that remain are beyond stopping.
    GiveUp,
}

/// The phase at `now`; `killing`: a look in [`Phase::Kill`] has sent
/// SIGKILL already.
fn phase(now: Instant, deadline: Instant, killing: bool) -> Phase {
    if killing && now >= deadline + KILL_GRACE {
        Phase::GiveUp
    } else if now >= deadline {
        Phase::Kill
    } else {
        Phase::Signal
    }
}

/// The latest time of the next look at the lock: the end of the phase,
/// unless a recheck comes first. An exit of a watched holder, a close of
/// the lock file or a write to the pidfile come before either. None of
/// them shows a holder that lets go of the lock (`LOCK_UN`) and lives on:
/// that is looked for every [`LOCK_RECHECK`]. Without inotify (`files`
/// false: out of watches), the lock is looked at every [`HOLDER_POLL`].
fn next_look(now: Instant, deadline: Instant, files: bool) -> Instant {
    let end = if now < deadline {
        deadline
    } else {
        deadline + KILL_GRACE
    };
    let recheck = if files { LOCK_RECHECK } else { HOLDER_POLL };
    end.min(now + recheck)
}

/// How soon `stop_holders` looks at the lock again when inotify cannot
/// tell it of changes (the user's inotify limits are spent).
const HOLDER_POLL: Duration = Duration::from_millis(10);

/// How soon `stop_holders` looks at the lock again when nothing has woken
/// it: only a holder that unlocks without closing is seen no sooner.
const LOCK_RECHECK: Duration = Duration::from_secs(1);

/// The most holders watched at once: each pidfd is a descriptor, and the
/// caller's limit may be as low as 1024. A holder beyond it is signalled
/// all the same, and watched once there is room.
const WATCH_LIMIT: usize = 256;

/// Pins process `pid` if, once pinned, it still holds the lock: a PID
/// reused meanwhile belongs to a process that does not.
fn pin_holder(lock: &File, pid: Pid) -> Option<Process> {
    let holder = Process::open(pid).ok()?;
    holds_lock(pid, lock).unwrap_or(false).then_some(holder)
}

/// The processes that hold the lock, when the caller can see them all: if
/// none is visible while the lock is still held and some processes could
/// not be inspected (another user's, or not dumpable), the holders are
/// hidden from the caller, who cannot tell what runs.
fn visible_holders(lock: &File) -> Result<Vec<Pid>, Problem> {
    let (holders, hidden) = lock_holders(lock);
    match hidden {
        Some(e) if holders.is_empty() && pidfile::is_locked(lock).unwrap_or(true) => {
            Err(Problem::CannotTell(e.context(
                "the lock is held by processes the caller may not inspect",
            )))
        }
        _ => Ok(holders),
    }
}

/// Processes other than daemonize itself that hold the lock on `lock`, and
/// the first error met inspecting one, if any.
fn lock_holders(lock: &File) -> (Vec<Pid>, Option<anyhow::Error>) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return (Vec::new(), Some(anyhow!("cannot read '/proc'")));
    };
    // Other daemonize processes take the lock for a moment (a concurrent
    // --stop removing the pidfile) or hold it for a start in progress; they
    // are not the daemon, which never runs this program's image.
    let same_image = |pid: i32| {
        let exe = |p: &str| std::fs::metadata(format!("/proc/{p}/exe")).ok();
        matches!((exe("self"), exe(&pid.to_string())), (Some(a), Some(b)) if a.dev() == b.dev() && a.ino() == b.ino())
    };
    let mut hidden = None;
    let holders = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| !same_image(pid))
        .map(Pid::from_raw)
        .filter(|&pid| match holds_lock(pid, lock) {
            Ok(holds) => holds,
            Err(e) => {
                hidden.get_or_insert(e);
                false
            }
        })
        .collect();
    (holders, hidden)
}

/// Whether process `pid` holds the exclusive flock on `lock`'s inode: it
/// has a descriptor on the inode whose open file description carries the
/// lock (`/proc/PID/fdinfo` lists a description's locks). A process that
/// merely has the file open does not. An error means the caller may not
/// look (another user's process, or one that is not dumpable): that is no
/// answer, never a "no".
fn holds_lock(pid: Pid, lock: &File) -> anyhow::Result<bool> {
    let ours = lock.metadata()?;
    let dir = format!("/proc/{pid}/fd");
    let fds = match std::fs::read_dir(&dir) {
        Ok(fds) => fds,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(anyhow!(e).context(format!("cannot read '{dir}'"))),
    };
    for fd in fds.filter_map(Result::ok) {
        let same = std::fs::metadata(fd.path())
            .is_ok_and(|m| m.dev() == ours.dev() && m.ino() == ours.ino());
        if !same {
            continue;
        }
        let info = format!("/proc/{pid}/fdinfo/{}", fd.file_name().display());
        match std::fs::read_to_string(&info) {
            Ok(text) => {
                if text
                    .lines()
                    .any(|l| l.starts_with("lock:") && l.contains("FLOCK") && l.contains("WRITE"))
                {
                    return Ok(true);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow!(e).context(format!("cannot read '{info}'"))),
        }
    }
    Ok(false)
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

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn holders_get_the_signal_then_sigkill_then_a_grace_period() {
        let deadline = Instant::now() + 1000 * MS;
        let before = deadline - MS;
        let give_up = deadline + KILL_GRACE;
        assert_eq!(phase(before, deadline, false), Phase::Signal);
        assert_eq!(phase(deadline, deadline, false), Phase::Kill);
        assert_eq!(phase(deadline + MS, deadline, true), Phase::Kill);
        assert_eq!(phase(give_up - MS, deadline, true), Phase::Kill);
        assert_eq!(phase(give_up, deadline, true), Phase::GiveUp);
        // Nobody is given up on before SIGKILL has gone out.
        assert_eq!(phase(give_up + MS, deadline, false), Phase::Kill);
    }

    #[test]
    fn the_next_look_is_the_end_of_the_phase_or_a_recheck() {
        let deadline = Instant::now() + 10_000 * MS;
        let give_up = deadline + KILL_GRACE;
        // Exits and file changes wake the wait; rechecks are rare.
        let now = deadline - 5000 * MS;
        assert_eq!(next_look(now, deadline, true), now + LOCK_RECHECK);
        let now = deadline - MS;
        assert_eq!(next_look(now, deadline, true), deadline);
        assert_eq!(next_look(deadline, deadline, true), deadline + LOCK_RECHECK);
        let now = give_up - MS;
        assert_eq!(next_look(now, deadline, true), give_up);
        // No inotify: the lock itself is looked at.
        let now = deadline - 5000 * MS;
        assert_eq!(next_look(now, deadline, false), now + HOLDER_POLL);
        // Past the end: at once.
        let now = give_up + MS;
        assert_eq!(next_look(now, deadline, true), give_up);
    }
}
