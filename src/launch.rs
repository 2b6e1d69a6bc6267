//! The original process's side of a start: spawn, collect the report, reap
//! the intermediate child, and decide the exit status. It returns only once
//! the daemon has exec'd, or once it knows which step failed and why.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStringExt;

use anyhow::{Context, anyhow};
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;

use crate::cli::Cli;
use crate::detach;
use crate::error::Failure;
use crate::output::{NoPump, Pump};
use crate::plan::Plan;
use crate::process;
use crate::report;
use crate::sys;

pub fn start(plan: &mut Plan) -> Result<(), Failure> {
    let started = spawn_and_confirm(plan, detach::Fork::Detach, &mut NoPump).map(|_| ());
    if started.is_err() {
        undo(plan);
    }
    started
}

/// A supervisor's first start (`supervise`): COMMAND forked as its child,
/// confirmed exactly as a plain start is, and undone the same way on
/// failure. `Some(pid)` names the process the pidfile now names; `None`
/// says COMMAND has already exited 0, leaving nothing. `pump` keeps log
/// capture going meanwhile.
pub fn start_child(plan: &mut Plan, pump: &mut dyn Pump) -> Result<Option<Pid>, Failure> {
    let started = spawn_and_confirm(plan, detach::Fork::Child, pump);
    if started.is_err() {
        undo(plan);
    }
    started
}

/// What a failed start leaves is stopped, and its pidfiles go.
fn undo(plan: &Plan) {
    // docs/design.md, "A start that does not stay up": nothing is left
    // behind, not even what called setsid; only then may the pidfile go.
    let killed = process::kill_leftovers();
    if killed > 0 {
        tracing::info!(killed, "stopped what the failed start left running");
    }
    for lock in &plan.locks {
        lock.discard();
    }
}

fn spawn_and_confirm(
    plan: &mut Plan,
    fork: detach::Fork,
    pump: &mut dyn Pump,
) -> Result<Option<Pid>, Failure> {
    // As a subreaper, the original process inherits the daemon when the
    // intermediate child exits, and whatever the daemon leaves when it
    // forks and exits, so a start can follow it, or stop all of it.
    if let Err(errno) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::debug!(%errno, "cannot become a child subreaper");
    }
    // An interrupt between the daemon's start and the pidfile's write
    // would leave a locked, empty pidfile ("starting") for good. They stay
    // blocked until daemonize exits (pending ones die with it); the
    // readiness wait reads them from a signalfd instead.
    if plan.ready.is_none() {
        block_interrupts();
    }
    process::note_preexisting();
    plan.outputs.mark_start();
    let spawned = detach::spawn(plan, fork)?;
    if let Some(intermediate) = spawned.intermediate {
        tracing::debug!(pid = intermediate.as_raw(), "intermediate child done");
        process::reap(intermediate);
    }
    let outcome = spawned.outcome?;
    if outcome.garbled {
        return Err(anyhow!("garbled report from the forked children").into());
    }

    if let Some((stage, errno)) = outcome.failure {
        if let Some(pid) = outcome.pid {
            process::reap(pid);
        }
        tracing::debug!(?stage, %errno, "start failed");
        return Err(report::describe(plan, &outcome, stage, errno));
    }
    let pid = outcome
        .pid
        .ok_or_else(|| anyhow!("the intermediate child exited without starting the daemon"))?;
    // Relayed from the children, whose silence proves each step succeeded.
    tracing::info!(
        pid = pid.as_raw(),
        command = %plan.command(),
        "daemon running: new session without a terminal, cwd and umask set, \
         stdio redirected, other descriptors closed, signals reset, command executed"
    );
    if let Some(ready) = plan.ready.as_mut() {
        // On failure the daemon has been stopped and reaped already.
        ready.wait(pid, &plan.outputs, plan.creds.as_ref(), pump)?;
        write_pid(plan, pid)?;
        return Ok(Some(pid));
    }
    // A supervisor keeps its pidfiles when COMMAND is done: it may be
    // restarted.
    let done = |plan: &Plan| {
        if fork == detach::Fork::Detach {
            done(plan);
        }
    };
    let Some(pid) = settle(pid, plan, pump)? else {
        done(plan);
        return Ok(None);
    };
    write_pid(plan, pid)?;
    // One more look, now that the pidfile names it: a command that failed
    // at once has had a little longer to show it.
    match settle(pid, plan, pump)? {
        Some(same) if same == pid => Ok(Some(pid)),
        Some(other) => write_pid(plan, other).map(|()| Some(other)),
        None => {
            done(plan);
            Ok(None)
        }
    }
}

pub fn write_pid(plan: &Plan, pid: Pid) -> Result<(), Failure> {
    if let Some(pidfile) = plan.pidfile() {
        tracing::debug!(path = %pidfile.path.display(), pid = pid.as_raw(), "writing pidfile");
        // A daemon nobody can find is worse than none: `start` takes it
        // back on this error.
        pidfile.write_pid(pid)?;
    }
    Ok(())
}

/// COMMAND ran and is done, leaving nothing (`daemonize -- true`): a
/// success, but no pidfile may name it.
fn done(plan: &Plan) {
    tracing::info!("the command has already exited, leaving no process behind");
    for lock in &plan.locks {
        lock.discard();
    }
}

/// Looks, without waiting, at whether the daemon `pid` has already ended.
/// Still running: `Some(pid)`. Exited 0: it went into the background (or
/// was done); the process it left becomes the daemon (`Some`), if any
/// (docs/design.md, "A start that does not stay up"). Any other end is a
/// failed start, reported with its status and what it wrote to its log.
fn settle(pid: Pid, plan: &Plan, pump: &mut dyn Pump) -> Result<Option<Pid>, Failure> {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    match waitid(Id::Pid(pid), flags) {
        Ok(WaitStatus::Exited(_, 0)) => {
            process::reap(pid);
            let followed = process::follow_fork();
            if let Some(daemon) = followed {
                tracing::info!(
                    exited = pid.as_raw(),
                    daemon = daemon.as_raw(),
                    "the command went into the background: following it, the pidfile names pid {daemon}"
                );
            }
            Ok(followed)
        }
        Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => {
            let why = process::reap(pid).map_or_else(|| "exited".to_owned(), process::ended);
            // Under capture, its last words may still be in the pipes.
            pump.drain();
            let tail = plan.outputs.tail(plan.creds.as_ref());
            Err(anyhow!("the daemon (pid {pid}) {why} as it started{tail}").into())
        }
        _ => Ok(Some(pid)),
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP for the rest of daemonize's short
/// life, and returns them: those the caller does not ignore (Linux queues
/// a blocked signal even when it is ignored, and a signalfd would report
/// it: `nohup`).
fn block_interrupts() -> SigSet {
    let mut mask = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        if !sys::signal_is_ignored(signal).unwrap_or(false) {
            mask.add(signal);
        }
    }
    if let Err(errno) = mask.thread_block() {
        tracing::debug!(%errno, "cannot block signals");
    }
    mask
}

/// The environment variable that tells a `daemonize` it is the supervisor
/// of a supervised start, and which descriptor is its status pipe
/// (docs/design.md, "Supervision").
pub const SUPERVISOR_MARKER: &str = "DAEMONIZE_SUPERVISOR";

/// The original process's side of a supervised start (`--restart`): the
/// supervisor is started detached (a double fork into a fresh
/// `daemonize`), and it runs the first start itself, printing any failure
/// on our standard error, which it shares until then. Its verdict comes
/// back as one byte on the status pipe: the exit status. Returns it.
pub fn start_supervised(cli: &Cli) -> Result<u8, Failure> {
    let argv = std::env::args_os()
        .map(|a| CString::new(a.into_vec()))
        .collect::<Result<Vec<_>, _>>()
        .context("an argument contains a NUL byte")?;
    let (status_r, status_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).context("cannot create the status pipe")?;
    // Above every descriptor the supervisor must find free or keep.
    let floor = cli
        .keep_fds
        .iter()
        .chain(&cli.ready_fd)
        .copied()
        .max()
        .unwrap_or(2)
        .max(2)
        + 1;
    let status_w = sys::dup_above(&status_w, floor).context("cannot move the status pipe")?;
    let mut envp: Vec<CString> = std::env::vars_os()
        .filter(|(name, _)| name != SUPERVISOR_MARKER)
        .filter_map(|(name, value)| {
            let mut entry = name.into_vec();
            entry.push(b'=');
            entry.extend(value.into_vec());
            CString::new(entry).ok()
        })
        .collect();
    envp.push(
        CString::new(format!("{SUPERVISOR_MARKER}={}", status_w.as_raw_fd()))
            .context("cannot build the supervisor's environment")?,
    );
    let mut inherit: Vec<i32> = cli
        .keep_fds
        .iter()
        .copied()
        .filter(|&fd| sys::fd_is_open(fd))
        .collect();
    inherit.push(status_w.as_raw_fd());
    inherit.sort_unstable();
    inherit.dedup();
    let dev_null = nix::fcntl::open(
        "/dev/null",
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .context("cannot open '/dev/null'")?;
    // The caller's interrupts, while the first start waits for readiness,
    // go on to the supervisor, which stops that start (exit 125).
    let forward = cli.waits_for_readiness();
    let mask = block_interrupts();
    let interrupts = match forward {
        true => Some(
            nix::sys::signalfd::SignalFd::with_flags(
                &mask,
                nix::sys::signalfd::SfdFlags::SFD_CLOEXEC
                    | nix::sys::signalfd::SfdFlags::SFD_NONBLOCK,
            )
            .context("cannot create a signalfd")?,
        ),
        false => None,
    };
    let spawned = detach::spawn_supervisor(&detach::SupervisorSpawn {
        argv: &argv,
        envp: &envp,
        inherit: &inherit,
        dev_null: dev_null.as_raw_fd(),
    })?;
    drop(status_w);
    if let Some(intermediate) = spawned.intermediate {
        process::reap(intermediate);
    }
    let outcome = spawned.outcome?;
    if let Some((stage, errno)) = outcome.failure {
        if let Some(pid) = outcome.pid {
            process::reap(pid);
        }
        return Err(anyhow!(errno)
            .context(format!("cannot start the supervisor ({stage:?})"))
            .into());
    }
    let supervisor = outcome
        .pid
        .ok_or_else(|| anyhow!("the intermediate child exited without starting the supervisor"))?;
    tracing::debug!(pid = supervisor.as_raw(), "supervisor started");
    let pidfd = forward.then(|| sys::pidfd_open(supervisor).ok()).flatten();
    let mut status = File::from(status_r);
    loop {
        let mut fds = vec![PollFd::new(status.as_fd(), PollFlags::POLLIN)];
        if let Some(sfd) = &interrupts {
            fds.push(PollFd::new(sfd.as_fd(), PollFlags::POLLIN));
        }
        if let Err(e) = sys::poll_until(&mut fds, None) {
            return Err(anyhow!(e).context("cannot wait for the supervisor").into());
        }
        let interrupted = fds.get(1).and_then(|f| f.any()).unwrap_or(false);
        let answered = fds[0].any().unwrap_or(false);
        if interrupted
            && let Some(sfd) = &interrupts
            && let Ok(Some(info)) = sfd.read_signal()
        {
            tracing::debug!(
                signal = info.ssi_signo,
                "passing the interrupt on to the supervisor"
            );
            // Through a pidfd opened while its status pipe was still open
            // (so while it ran): a reused PID is never signalled.
            if let Some(pidfd) = &pidfd {
                let _ = sys::pidfd_send_signal(pidfd, info.ssi_signo as i32);
            }
        }
        if answered {
            let mut byte = [0u8; 1];
            return match status.read(&mut byte) {
                Ok(1) => Ok(byte[0]),
                Ok(_) => Err(anyhow!(
                    "the supervisor (pid {supervisor}) ended before it reported the start"
                )
                .into()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(anyhow!(e)
                    .context("cannot read the supervisor's status")
                    .into()),
            };
        }
    }
}
