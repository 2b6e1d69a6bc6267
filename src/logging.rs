//! Diagnostics: `-v` and `-vv` map to tracing levels, `DAEMONIZE_LOG` (tracing
//! filter syntax) overrides both. Output goes to standard error, never stdout.
//!
//! Nothing here may be used after `fork()` in a child: the subscriber locks
//! and allocates. The child reports to the parent through `report` instead,
//! and the parent logs what it learns.

use tracing_subscriber::EnvFilter;

/// Installs a subscriber only when asked for: a silent run pays nothing.
pub fn init(verbose: u8) {
    let filter = match std::env::var_os("DAEMONIZE_LOG") {
        Some(spec) => EnvFilter::new(spec.to_string_lossy()),
        None => match verbose {
            0 => return,
            1 => EnvFilter::new("daemonize=info"),
            2 => EnvFilter::new("daemonize=debug"),
            _ => EnvFilter::new("daemonize=trace"),
        },
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
}
