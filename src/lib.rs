//! daemonize: run a command as a Unix daemon, report whether it started,
//! and, with `--restart`, keep it running.
//!
//! Where things live, bottom up (a module imports only modules listed before
//! it; none imports one that imports it back; docs/design.md,
//! "Module layout", has the table):
//! - `sys`: thin wrappers over raw system calls (pidfds, descriptors,
//!   signal sets and dispositions, NSS); with `detach`, the only `unsafe`
//!   code; imports nothing of ours. `error` and `logging`: exit codes and
//!   diagnostics. `clock` (RFC 3339 time), `machine` (the supervisor's
//!   decisions as a pure state machine), `state` (the supervisor's
//!   record and the control requests, encoded) and `lines` (log
//!   capture's decisions: line ends, cuts, rotation, prefixes): plain
//!   code, no syscalls.
//! - `user` (`--user`/`--group` resolved to ids before fork), `identity`
//!   (whether a PID in a pidfile is the daemon that wrote it), `process`
//!   (one process handle: signal, wait, escalate; and what a start left
//!   running, as subreaper), `cli` (the clap definition, value syntax and
//!   `Mode`; also feeds man/ and completions/).
//! - `output` (the daemon's log files, or capture pipes), `pidfile` (the pidfile, lockfile
//!   and supervisor pidfile, locked through private lock files), `ready`
//!   (`--wait-ready` and `--ready-fd`: the channels, and the wait).
//! - `plan`: the command line resolved into a launch plan, before fork.
//! - `report`: the child-to-parent failure records and their messages.
//! - `detach`: the fork-child code: the double fork (or a supervisor's
//!   single fork) and the daemon's set-up up to exec, which may call only
//!   async-signal-safe system calls.
//! - `capture`: log capture in the supervisor: COMMAND's pipes read and
//!   written to files (rotated, timestamped) and syslog, with backpressure.
//! - `launch`: starting a process, from the original process's side: a
//!   plain start, a supervisor's first start, and a supervised start's
//!   hand-over to its supervisor.
//! - `supervise`: the supervisor's event loop (one poll; its decisions
//!   are `machine`'s).
//! - `control`: `--status`, `--stop`, `--signal`, `--restart-now`,
//!   `--reopen-logs`.
//! - `lib` itself: parse, pick the mode, run it.

#![deny(unsafe_code)]

mod capture;
pub mod cli;
mod clock;
mod control;
mod detach;
mod error;
mod identity;
mod launch;
mod lines;
pub mod logging;
mod machine;
mod output;
mod pidfile;
mod plan;
mod process;
mod ready;
mod report;
mod state;
mod supervise;
mod sys;
mod user;

pub use error::Failure;

/// The whole program: parse, set up diagnostics, run, and return the exit
/// status (a failure is printed once, here).
pub fn main() -> u8 {
    sys::disable_backtrace_capture();
    sys::default_sigchld();
    // docs/design.md, detach step 1, before anything can open a file.
    if let Err(e) = sys::occupy_stdio() {
        return Failure::from(e).report();
    }
    // A supervised start's supervisor (launch::start_supervised) learns it
    // is one, and where its status pipe is, from its environment; the
    // variable goes at once, so COMMAND never sees it.
    let status_pipe = sys::take_env(launch::SUPERVISOR_MARKER)
        .and_then(|fd| fd.to_str()?.parse::<std::os::fd::RawFd>().ok())
        .and_then(sys::adopt_pipe);
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(status) => return status,
    };
    logging::init(cli.verbose);
    if let Some(fd) = status_pipe {
        return supervise::run(cli, fd);
    }
    match run(cli) {
        Ok(status) => status,
        Err(failure) => failure.report(),
    }
}

/// Runs one parsed invocation and returns its exit status.
pub fn run(cli: cli::Cli) -> Result<u8, Failure> {
    user::refuse_setid()?;
    match cli.mode() {
        cli::Mode::Status(instance) => control::status(instance),
        cli::Mode::Stop {
            instance,
            signal,
            timeout,
        } => control::stop(instance, signal, timeout),
        cli::Mode::Signal { instance, signal } => control::signal(instance, signal),
        cli::Mode::RestartNow(instance) => control::restart_now(instance),
        cli::Mode::ReopenLogs(instance) => control::reopen_logs(instance),
        cli::Mode::Supervise => launch::start_supervised(&cli),
        cli::Mode::Start => {
            let mut plan = plan::Plan::new(&cli)?;
            launch::start(&mut plan)?;
            Ok(0)
        }
    }
}
