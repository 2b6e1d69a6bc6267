//! The original process's side of a start: spawn, collect the report, reap
//! the intermediate child, and decide the exit status. It returns only once
//! the daemon has exec'd, or once it knows which step failed and why.

use anyhow::anyhow;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;

use crate::detach;
use crate::error::Failure;
use crate::plan::Plan;
use crate::process;
use crate::report;

pub fn start(plan: &mut Plan) -> Result<(), Failure> {
    let started = spawn_and_confirm(plan);
    if started.is_err() {
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
    started
}

fn spawn_and_confirm(plan: &mut Plan) -> Result<(), Failure> {
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
    let spawned = detach::spawn(plan)?;
    tracing::debug!(
        pid = spawned.intermediate.as_raw(),
        "intermediate child done"
    );
    process::reap(spawned.intermediate);
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
    if let Some(ready) = plan.ready.take() {
        // On failure the daemon has been stopped and reaped already.
        ready.wait(pid, &plan.outputs, plan.creds.as_ref())?;
        return write_pid(plan, pid);
    }
    let Some(pid) = settle(pid, plan)? else {
        return done(plan);
    };
    write_pid(plan, pid)?;
    // One more look, now that the pidfile names it: a command that failed
    // at once has had a little longer to show it.
    match settle(pid, plan)? {
        Some(same) if same == pid => Ok(()),
        Some(other) => write_pid(plan, other),
        None => done(plan),
    }
}

fn write_pid(plan: &Plan, pid: Pid) -> Result<(), Failure> {
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
fn done(plan: &Plan) -> Result<(), Failure> {
    tracing::info!("the command has already exited, leaving no process behind");
    for lock in &plan.locks {
        lock.discard();
    }
    Ok(())
}

/// Looks, without waiting, at whether the daemon `pid` has already ended.
/// Still running: `Some(pid)`. Exited 0: it went into the background (or
/// was done); the process it left becomes the daemon (`Some`), if any
/// (docs/design.md, "A start that does not stay up"). Any other end is a
/// failed start, reported with its status and what it wrote to its log.
fn settle(pid: Pid, plan: &Plan) -> Result<Option<Pid>, Failure> {
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
            let tail = plan.outputs.tail(plan.creds.as_ref());
            Err(anyhow!("the daemon (pid {pid}) {why} as it started{tail}").into())
        }
        _ => Ok(Some(pid)),
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP for the rest of daemonize's short life.
fn block_interrupts() {
    let mut mask = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        mask.add(signal);
    }
    if let Err(errno) = mask.thread_block() {
        tracing::debug!(%errno, "cannot block signals");
    }
}
