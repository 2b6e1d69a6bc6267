//! The daemon's standard output and error files.
//!
//! Paths are resolved here, before `fork()`, against the caller's working
//! directory (not `--chdir`), and turned into `CString`s with their open
//! flags. The files themselves are opened by the daemon, after any privilege
//! drop, so they are opened with the daemon's own credentials; this module
//! never opens them and never runs after fork.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::fcntl::OFlag;

/// One output file, ready for `open(2)` in the daemon.
#[derive(Debug)]
pub struct OutputFile {
    /// Absolute path, as shown to the user in messages.
    pub path: PathBuf,
    /// The same path for `open(2)`.
    pub c_path: CString,
    /// Flags for `open(2)`; the mode is [`OutputFile::MODE`].
    pub flags: OFlag,
}

impl OutputFile {
    /// Created `0644`, then reduced by the daemon's umask.
    pub const MODE: nix::libc::mode_t = 0o644;

    /// Appending (`O_APPEND`) is the default so nothing already logged is
    /// lost; `truncate` empties the file first. Both keep `O_APPEND`, so two
    /// descriptors on one file never overwrite each other's lines.
    pub fn new(path: &Path, truncate: bool) -> anyhow::Result<OutputFile> {
        let path = std::path::absolute(path)
            .with_context(|| format!("cannot resolve log file path '{}'", path.display()))?;
        let c_path = CString::new(path.as_os_str().as_bytes())
            .with_context(|| format!("log file path '{}' contains a NUL byte", path.display()))?;
        let mut flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_APPEND | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
        if truncate {
            flags |= OFlag::O_TRUNC;
        }
        Ok(OutputFile {
            path,
            c_path,
            flags,
        })
    }
}

/// Where the daemon's fds 1 and 2 go. `None` means `/dev/null`.
#[derive(Debug)]
pub struct Outputs {
    pub stdout: Option<OutputFile>,
    /// `None` with `stdout` set means standard error follows standard output
    /// (one open file description, like systemd's `StandardError=inherit`).
    pub stderr: Option<OutputFile>,
}

impl Outputs {
    pub fn new(
        stdout: Option<&Path>,
        stderr: Option<&Path>,
        truncate: bool,
    ) -> anyhow::Result<Outputs> {
        let open = |p: Option<&Path>| p.map(|p| OutputFile::new(p, truncate)).transpose();
        let stdout = open(stdout)?;
        let mut stderr = open(stderr)?;
        // `-o f -e f` names one file: share one description instead of two.
        if stderr.as_ref().map(|e| &e.path) == stdout.as_ref().map(|o| &o.path) {
            stderr = None;
        }
        Ok(Outputs { stdout, stderr })
    }

    /// The files given, for a message about the daemon's last words.
    pub fn files(&self) -> impl Iterator<Item = &OutputFile> {
        self.stdout.iter().chain(self.stderr.iter())
    }
}
