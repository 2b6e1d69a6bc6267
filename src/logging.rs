//! Diagnostics: `-v` and `-vv` map to tracing levels, `DAEMONIZE_LOG`
//! overrides both with a tracing filter (`debug`, `daemonize=trace`, the
//! `target=level,...` directives of tracing-subscriber's `Targets`).
//! Output goes to standard error, never stdout.
//!
//! Nothing here may be used after `fork()` in a child: the subscriber locks
//! and allocates. The child reports to the parent through `report` instead,
//! and the parent logs what it learns.

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;

/// Installs a subscriber only when asked for: a silent run pays nothing.
pub fn init(verbose: u8) {
    let filter = match std::env::var_os("DAEMONIZE_LOG") {
        Some(spec) => match spec.to_string_lossy().parse::<Targets>() {
            Ok(targets) => targets,
            Err(e) => {
                eprintln!("daemonize: ignoring DAEMONIZE_LOG: {e}");
                return;
            }
        },
        None => {
            let level = match verbose {
                0 => return,
                1 => LevelFilter::INFO,
                2 => LevelFilter::DEBUG,
                _ => LevelFilter::TRACE,
            };
            Targets::new().with_target("daemonize", level)
        }
    };
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .with_target(false),
        )
        .with(filter)
        .init();
}
