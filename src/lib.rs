//! daemonize: run a command as a Unix daemon and report whether it started.
//!
//! Where things live:
//! - `cli`: the clap definition and value syntax (also feeds man/ and completions/);
//! - `plan`: the command line resolved into a launch plan, before fork;
//! - `output`: the daemon's log files;
//! - `pidfile`: the pidfile and lockfile, locked for single instance;
//! - `control`: `--status` and `--stop`;
//! - `user`: `--user` and `--group` resolved to ids before fork;
//! - `detach`: the double fork and exec, the only `unsafe` code;
//! - `ready`: `--wait-ready` and `--ready-fd`, and waiting for them;
//! - `report`: the child-to-parent failure records and their messages;
//! - `launch`: the original process's side of a start;
//! - `error`, `logging`: exit codes and diagnostics.

#![deny(unsafe_code)]

pub mod cli;
mod control;
mod detach;
mod error;
mod launch;
pub mod logging;
mod output;
mod pidfile;
mod plan;
mod ready;
mod report;
mod user;

use std::process::ExitCode;

pub use error::Failure;

/// Runs one invocation; `main` prints a failure and exits with its code.
pub fn run(cli: cli::Cli) -> Result<ExitCode, Failure> {
    detach::occupy_stdio()?;
    user::refuse_setid()?;
    match (&cli.pidfile, cli.status, cli.stop) {
        (Some(path), true, _) => return control::status(path),
        (Some(path), _, true) => return control::stop(path, cli.signal, cli.timeout),
        _ => {}
    }
    let mut plan = plan::Plan::new(&cli)?;
    launch::start(&mut plan)
}
