//! The pidfile and the lockfile: single instance through `flock(2)`.
//!
//! Both are opened with `O_NOFOLLOW`, so a symlink is refused and its target
//! never touched, and locked `LOCK_EX|LOCK_NB` by the original process before
//! the first fork. The locked descriptor is inherited by the daemon, so the
//! lock lives exactly as long as the daemon; "running" therefore means "the
//! lock is held", which no reused PID can fake. This module only runs before
//! fork (or in `--status`/`--stop`); it never unlocks a descriptor the daemon
//! shares, since `LOCK_UN` on any copy would release the daemon's lock.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use nix::libc;
use nix::unistd::Pid;

use crate::error::{EXIT_RUNNING, Failure};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Holds the daemon's PID.
    Pidfile,
    /// Only a lock (bmc/daemonize `-l`); its content is never touched.
    Lockfile,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Pidfile => "pidfile",
            Kind::Lockfile => "lockfile",
        }
    }
}

/// A pidfile or lockfile whose exclusive lock this process holds.
#[derive(Debug)]
pub struct Lock {
    pub path: PathBuf,
    pub kind: Kind,
    /// Read-write, close-on-exec: only this process writes the PID.
    file: File,
    /// A read-only description of the same file that holds the lock and is
    /// inherited by the daemon. Read-only, so a daemon running as another
    /// user cannot rewrite the PID that root's `--stop` will signal.
    lock: File,
}

impl Lock {
    /// Opens (creating `0644` if needed) and locks `path`, or fails with
    /// exit 1 if another process holds the lock.
    pub fn acquire(path: &Path, kind: Kind) -> Result<Lock, Failure> {
        // A concurrent `--stop` or failed start may unlink the file between
        // our open and our lock; then we locked an orphan inode and must
        // try again on whatever the path names now.
        let mut busy = 0;
        for _ in 0..100 {
            let file = open_or_create(path, kind)?;
            let lock = reopen_read_only(&file).map_err(|e| open_error(path, kind, e))?;
            match lock.try_lock() {
                Ok(()) => {}
                // Replaced under us (by a --stop or a failed start): again.
                Err(std::fs::TryLockError::WouldBlock) if !names_same_file(path, &file) => continue,
                // `--status` and `--stop` probe with a shared lock for a few
                // microseconds; a start that meets such a probe must not
                // take it for a running daemon.
                Err(std::fs::TryLockError::WouldBlock) if busy < PROBE_RETRIES => {
                    busy += 1;
                    std::thread::sleep(PROBE_PAUSE);
                    continue;
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(already_running(path, kind, &file));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(anyhow!(e)
                        .context(format!("cannot lock {} '{}'", kind.noun(), path.display()))
                        .into());
                }
            }
            if names_same_file(path, &file) {
                tracing::debug!(path = %path.display(), kind = kind.noun(), "locked");
                // A stale PID must not be readable under our lock: --status
                // and --stop would take it for the daemon's. Locked and
                // empty reads as "a start in progress" until write_pid.
                if kind == Kind::Pidfile {
                    // Only what looks like a pidfile: `-p` naming the wrong
                    // file must not destroy it.
                    if let Err(e) = read_pid(&file) {
                        return Err(e
                            .context(format!("refusing to use '{}' as a pidfile", path.display()))
                            .into());
                    }
                    file.set_len(0)
                        .with_context(|| format!("cannot truncate pidfile '{}'", path.display()))?;
                }
                return Ok(Lock {
                    path: path.to_owned(),
                    kind,
                    file,
                    lock,
                });
            }
        }
        Err(anyhow!(
            "cannot lock {} '{}': it keeps being replaced",
            kind.noun(),
            path.display()
        )
        .into())
    }

    /// Whether `other` is the same file as this one.
    pub fn is_same_file(&self, other: &Path) -> bool {
        names_same_file(other, &self.file)
    }

    /// The locked descriptor, to be inherited by the daemon.
    pub fn fd(&self) -> RawFd {
        self.lock.as_raw_fd()
    }

    /// Writes `PID\n`: new content first, then truncate to its length, so a
    /// reader never sees an empty file in between.
    pub fn write_pid(&self, pid: Pid) -> anyhow::Result<()> {
        let content = format!("{pid}\n");
        self.file
            .write_all_at(content.as_bytes(), 0)
            .and_then(|()| self.file.set_len(content.len() as u64))
            .with_context(|| format!("cannot write pidfile '{}'", self.path.display()))
    }

    /// After a failed start: a pidfile must not name a process that is not
    /// running, so it is removed (while we still hold its lock).
    pub fn discard(&self) {
        if self.kind == Kind::Pidfile {
            remove_if_same(&self.path, &self.file);
        }
    }
}

/// A new open file description for the same inode, read-only, through
/// `/proc/self/fd` (race-free, unlike opening the path again). Without
/// /proc, the read-write description is shared instead.
fn reopen_read_only(file: &File) -> io::Result<File> {
    File::open(format!("/proc/self/fd/{}", file.as_raw_fd())).or_else(|_| file.try_clone())
}

fn open_or_create(path: &Path, kind: Kind) -> Result<File, Failure> {
    let mut options = OpenOptions::new();
    options
        .read(true)
        .write(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK);
    let opened = options
        .clone()
        .create_new(true)
        .open(path)
        .and_then(|file| {
            // Created by us: 0644 whatever the caller's umask, as SPEC.md says.
            file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
            Ok(file)
        });
    let file = match opened {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => options.open(path),
        other => other,
    };
    let file = file.map_err(|e| open_error(path, kind, e))?;
    check_regular(path, kind, &file)?;
    Ok(file)
}

/// Opens an existing pidfile for `--status` and `--stop`, never following a
/// symlink.
pub fn open_existing(path: &Path) -> Result<Option<File>, Failure> {
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path);
    match opened {
        Ok(file) => {
            check_regular(path, Kind::Pidfile, &file)?;
            Ok(Some(file))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(open_error(path, Kind::Pidfile, e)),
    }
}

/// How often, and how long apart, a start retries a lock that is busy, in
/// case it meets the brief probe of a `--status` rather than a daemon.
const PROBE_RETRIES: u32 = 5;
const PROBE_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

pub fn open_error(path: &Path, kind: Kind, e: io::Error) -> Failure {
    let context = format!("cannot open {} '{}'", kind.noun(), path.display());
    if e.raw_os_error() == Some(libc::ELOOP) {
        anyhow!("it is a symbolic link, which daemonize never follows")
            .context(context)
            .into()
    } else {
        anyhow!(e).context(context).into()
    }
}

fn check_regular(path: &Path, kind: Kind, file: &File) -> Result<(), Failure> {
    let meta = file
        .metadata()
        .with_context(|| format!("cannot stat {} '{}'", kind.noun(), path.display()))?;
    if meta.is_file() {
        Ok(())
    } else {
        Err(anyhow!(
            "cannot use {} '{}': it is not a regular file",
            kind.noun(),
            path.display()
        )
        .into())
    }
}

fn already_running(path: &Path, kind: Kind, file: &File) -> Failure {
    let holder = match (kind, read_pid(file)) {
        (Kind::Pidfile, Ok(Some(pid))) => format!(" (pid {pid})"),
        _ => String::new(),
    };
    Failure::new(
        EXIT_RUNNING,
        anyhow!("already running{holder} according to '{}'", path.display()),
    )
}

/// Whether another process holds a lock on `file`. Probes with a shared
/// lock that is dropped at once; it never touches the holder's lock.
pub fn is_locked(file: &File) -> io::Result<bool> {
    match file.try_lock_shared() {
        Ok(()) => {
            file.unlock()?;
            Ok(false)
        }
        Err(std::fs::TryLockError::WouldBlock) => Ok(true),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// What a pidfile says: `Ok(None)` when it is empty (a start in progress),
/// an error when it holds anything but one decimal PID.
pub fn read_pid(file: &File) -> anyhow::Result<Option<Pid>> {
    let mut buf = [0u8; 64];
    let len = file.read_at(&mut buf, 0)?;
    let content = String::from_utf8_lossy(&buf[..len]);
    let text = content.trim();
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<i32>() {
        Ok(pid) if pid > 0 => Ok(Some(Pid::from_raw(pid))),
        _ => Err(anyhow!("it does not hold a PID: {content:?}")),
    }
}

/// Whether `path` still names the open `file` (same device and inode).
fn names_same_file(path: &Path, file: &File) -> bool {
    match (std::fs::symlink_metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Unlinks `path` if it still names `file`; the caller holds its lock.
pub fn remove_if_same(path: &Path, file: &File) {
    if names_same_file(path, file)
        && let Err(e) = std::fs::remove_file(path)
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove pidfile");
    }
}
