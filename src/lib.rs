//! daemonize: run a command as a Unix daemon and report whether it started.
//!
//! Where things live:
//! - `cli`: the clap definition and value syntax (also feeds man/ and completions/);
//! - `plan`: the command line resolved into a launch plan, before fork;
//! - `output`: the daemon's log files;
//! - `pidfile`: the pidfile and lockfile, locked for single instance;
//! - `control`: `--status`, `--stop` and `--signal`;
//! - `identity`: whether a PID in a pidfile is the daemon that wrote it;
//! - `user`: `--user` and `--group` resolved to ids before fork;
//! - `detach`: the double fork and exec: the fork-child code, with `unsafe`;
//! - `sys`: thin wrappers over raw system calls (pidfds, descriptors, NSS),
//!   the library's only other `unsafe` code, imported by everything above
//!   and importing nothing of ours;
//! - `ready`: `--wait-ready` and `--ready-fd`, and waiting for them;
//! - `report`: the child-to-parent failure records and their messages;
//! - `launch`: the original process's side of a start;
//! - `process`: what a start left running (as subreaper): follow it, or
//!   stop all of it;
//! - `error`, `logging`: exit codes and diagnostics.

#![deny(unsafe_code)]

pub mod cli;
mod control;
mod detach;
mod error;
mod identity;
mod launch;
// The supervisor's decisions; its loop (issue 10) is not built yet.
pub mod logging;
#[cfg(test)]
mod machine;
mod output;
mod pidfile;
mod plan;
mod process;
mod ready;
mod report;
mod sys;
mod user;

pub use error::Failure;

/// The whole program: parse, set up diagnostics, run, and return the exit
/// status (a failure is printed once, here).
pub fn main() -> u8 {
    sys::disable_backtrace_capture();
    sys::default_sigchld();
    // SPEC.md step 1, before anything can open a file.
    if let Err(e) = sys::occupy_stdio() {
        return Failure::from(e).report();
    }
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(status) => return status,
    };
    logging::init(cli.verbose);
    match run(cli) {
        Ok(status) => status,
        Err(failure) => failure.report(),
    }
}

/// Runs one parsed invocation and returns its exit status.
pub fn run(cli: cli::Cli) -> Result<u8, Failure> {
    user::refuse_setid()?;
    match cli.mode() {
        cli::Mode::Status(pidfile) => control::status(pidfile),
        cli::Mode::Stop {
            pidfile,
            signal,
            timeout,
        } => control::stop(pidfile, signal, timeout),
        cli::Mode::Signal { pidfile, signal } => control::signal(pidfile, signal),
        cli::Mode::Start => {
            let mut plan = plan::Plan::new(&cli)?;
            launch::start(&mut plan)?;
            Ok(0)
        }
    }
}
