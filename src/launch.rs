//! The original process's side of a start: spawn, collect the report, reap
//! the intermediate child, and decide the exit status. It returns only once
//! the daemon has exec'd, or once it knows which step failed and why.

use anyhow::anyhow;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;

use crate::detach;
use crate::error::Failure;
use crate::plan::Plan;
use crate::report;

pub fn start(plan: &mut Plan) -> Result<(), Failure> {
    let started = spawn_and_confirm(plan);
    if started.is_err() {
        for lock in &plan.locks {
            lock.discard();
        }
    }
    started
}

fn spawn_and_confirm(plan: &mut Plan) -> Result<(), Failure> {
    // As a subreaper, the original process inherits the daemon when the
    // intermediate child exits, so a daemon that fails before exec is reaped
    // here instead of lingering as a zombie until init gets round to it.
    if let Err(errno) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::debug!(%errno, "cannot become a child subreaper");
    }
    let spawned = detach::spawn(plan)?;
    tracing::debug!(
        pid = spawned.intermediate.as_raw(),
        "intermediate child done"
    );
    reap(spawned.intermediate);
    let outcome = spawned.outcome?;
    if outcome.garbled {
        return Err(anyhow!("garbled report from the forked children").into());
    }

    if let Some((stage, errno)) = outcome.failure {
        if let Some(pid) = outcome.pid {
            reap(pid);
        }
        tracing::debug!(?stage, %errno, "start failed");
        return Err(report::describe(plan, stage, errno));
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
    if let Some(ready) = plan.ready.take() {
        // On failure the daemon has been stopped and reaped already.
        ready.wait(pid, plan)?;
    } else if let Some(ended) = already_ended(pid)? {
        // It ran and is done (`daemonize -- true`): a success, but no pidfile
        // may name it.
        tracing::info!(pid = pid.as_raw(), status = ?ended, "the daemon has already exited");
        for lock in &plan.locks {
            lock.discard();
        }
        return Ok(());
    }
    if let Some(pidfile) = plan.pidfile() {
        tracing::debug!(path = %pidfile.path.display(), pid = pid.as_raw(), "writing pidfile");
    }
    if let Some(pidfile) = plan.pidfile()
        && let Err(e) = pidfile.write_pid(pid)
    {
        // A daemon nobody can find is worse than none: take it back.
        abort(pid);
        return Err(e.into());
    }
    Ok(())
}

/// Whether the daemon has already exited by itself (leaving it unreaped).
/// A daemon killed by a signal before or as it exec'd looks like a success
/// on the report pipe (nothing failed, the pipe closed): that is a failed
/// start, reported as such.
fn already_ended(pid: Pid) -> Result<Option<WaitStatus>, Failure> {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    match waitid(Id::Pid(pid), flags) {
        Ok(WaitStatus::Signaled(_, signal, _)) => {
            crate::ready::end_group(pid);
            reap(pid);
            Err(
                anyhow!("the daemon (pid {pid}) was killed by signal {signal} as it started")
                    .into(),
            )
        }
        Ok(status @ WaitStatus::Exited(..)) => Ok(Some(status)),
        _ => Ok(None),
    }
}

/// Kills a daemon whose start failed after exec, and what it started in its
/// process group. It is our child (we are its subreaper and have not reaped
/// it), so its PID cannot have been reused.
fn abort(pid: Pid) {
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    crate::ready::end_group(pid);
    reap(pid);
}

/// Waits for a child that is known to be exiting, retrying on EINTR.
fn reap(pid: Pid) {
    while let Err(nix::errno::Errno::EINTR) = waitpid(pid, None) {}
}
