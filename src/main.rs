//! Entry point: parse the command line, set up diagnostics, run, and turn the
//! outcome into an exit status. Everything else lives in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match daemonize::cli::parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    daemonize::logging::init(cli.verbose);
    match daemonize::run(cli) {
        Ok(code) => code,
        Err(failure) => failure.report(),
    }
}
