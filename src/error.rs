//! Failures and exit codes. Every error that ends a run is a [`Failure`]: an
//! `anyhow` chain plus the exit code the contract (docs/design.md, "Exit
//! status") assigns to it. It is printed exactly once, as one line prefixed
//! `daemonize: `, by `main`.

use std::fmt::Write as _;

/// Another instance holds the pidfile or lockfile; also "could not stop".
pub const EXIT_RUNNING: u8 = 1;
/// daemonize itself failed: usage, a setup step, or the daemon died or timed
/// out before it was ready (GNU `env`/`nohup`/`timeout` use 125 the same way).
pub const EXIT_FAILURE: u8 = 125;
/// COMMAND was found but could not be executed.
pub const EXIT_CANNOT_EXEC: u8 = 126;
/// COMMAND was not found.
pub const EXIT_NOT_FOUND: u8 = 127;

/// An error that ends the run with a specific exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn new(code: u8, error: anyhow::Error) -> Failure {
        Failure { code, error }
    }

    /// Prints `daemonize: <context>: <reason>` on stderr and returns the code.
    pub fn report(self) -> u8 {
        eprintln!("daemonize: {}", render(&self.error));
        self.code
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Failure {
        Failure::new(EXIT_FAILURE, error)
    }
}

/// Joins the error chain with `: `, showing OS errors by their reason only
/// ("Permission denied", not "Permission denied (os error 13)" or
/// "EACCES: Permission denied"), as coreutils does.
pub fn render(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for (i, cause) in error.chain().enumerate() {
        if i > 0 {
            line.push_str(": ");
        }
        if let Some(errno) = cause.downcast_ref::<nix::errno::Errno>() {
            line.push_str(&errno_text(*errno as i32));
        } else if let Some(raw) = cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
        {
            line.push_str(&errno_text(raw));
        } else {
            let _ = write!(line, "{cause}");
        }
    }
    line
}

/// The C library's own words for an errno (`strerror`), which users know
/// from every other tool: "Resource temporarily unavailable", not nix's
/// "Try again"; "Bad file descriptor", not "Bad file number".
pub fn errno_text(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    match text.rfind(" (os error ") {
        Some(end) => text[..end].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_reasons_are_the_c_library_s() {
        assert_eq!(
            errno_text(nix::libc::EAGAIN),
            "Resource temporarily unavailable"
        );
        assert_eq!(errno_text(nix::libc::EBADF), "Bad file descriptor");
        let chain = anyhow::Error::new(nix::errno::Errno::ENOEXEC).context("cannot execute 'x'");
        assert_eq!(render(&chain), "cannot execute 'x': Exec format error");
    }
}
