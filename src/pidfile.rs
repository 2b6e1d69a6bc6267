//! The pidfile and the lockfile: single instance through `flock(2)`.
//!
//! The lock is never taken on the pidfile itself. The pidfile is readable
//! by everyone (`0644`), and anyone who can open a file can take a shared
//! `flock` on it, which would block every start and make `--status` and
//! `--stop` see a daemon that is not there (issue 9). The exclusive lock is
//! taken on a companion, `FILE.lock` next to the pidfile, that only its
//! owner can open: it is created `0600`, and one that exists already must be
//! a regular file owned by the caller, whose group and other permission bits
//! are then removed. The `-l` lockfile is locked itself, under the same rule.
//!
//! Every file is opened with `O_NOFOLLOW`, so a symlink is refused and its
//! target never touched. The locks are taken by the original process before
//! the first fork, on read-only descriptors that the daemon inherits, so
//! they live exactly as long as the daemon. A daemon that closes them (sshd,
//! dnsmasq) is still found through the pidfile by the identity rule
//! (`identity`). This module runs only before fork (or in the control
//! actions); it never unlocks a descriptor the daemon shares, since
//! `LOCK_UN` on any copy would release the daemon's lock.
//!
//! A start takes every lock before it changes any file, so a refused start
//! changes nothing, and only then claims the pidfile (checks and truncates
//! it). The pidfile goes together with its companion: the pidfile first,
//! then the companion, removed by a process that holds the lock. A start
//! that locked a companion which was unlinked meanwhile locks whatever the
//! name holds now.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use nix::fcntl::OFlag;
use nix::libc;
use nix::sys::stat::Mode;
use nix::unistd::{Pid, Uid, geteuid};

use crate::error::{EXIT_RUNNING, Failure};
use crate::identity;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Holds the daemon's PID; locked through its companion `FILE.lock`.
    Pidfile,
    /// Only a lock (bmc/daemonize `-l`); its content is never touched.
    Lockfile,
    /// `-P`: holds the supervisor's PID, like a pidfile; its lock is the
    /// supervisor's alone (COMMAND does not inherit it).
    Supervisor,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Pidfile => "pidfile",
            Kind::Lockfile => "lockfile",
            Kind::Supervisor => "supervisor pidfile",
        }
    }

    /// What the locked file is called in messages.
    fn lock_noun(self) -> &'static str {
        match self {
            Kind::Pidfile | Kind::Supervisor => "lock file",
            Kind::Lockfile => "lockfile",
        }
    }

    /// Whether COMMAND inherits the lock: a pidfile's and a lockfile's
    /// lock last as long as the daemon, a supervisor pidfile's as long as
    /// the supervisor.
    pub fn inherited(self) -> bool {
        self != Kind::Supervisor
    }

    /// The locked file `path` of `shown` (the pidfile or lockfile given),
    /// as messages name it.
    fn describe(self, path: &Path, shown: &Path) -> String {
        match self {
            Kind::Pidfile => format!(
                "lock file '{}' of pidfile '{}'",
                path.display(),
                shown.display()
            ),
            Kind::Lockfile => format!("lockfile '{}'", path.display()),
            Kind::Supervisor => format!(
                "lock file '{}' of supervisor pidfile '{}'",
                path.display(),
                shown.display()
            ),
        }
    }
}

/// The companion of a pidfile, which carries its lock: `FILE.lock`.
pub fn companion_path(pidfile: &Path) -> PathBuf {
    let mut name = OsString::from(pidfile.as_os_str());
    name.push(".lock");
    PathBuf::from(name)
}

/// A pidfile or lockfile whose exclusive lock this process holds.
#[derive(Debug)]
pub struct Lock {
    pub path: PathBuf,
    pub kind: Kind,
    /// The pidfile, read-write, close-on-exec: only this process writes the
    /// PID. `None` for a lockfile.
    file: Option<File>,
    /// The locked file: the pidfile's companion, or the lockfile itself.
    lock_path: PathBuf,
    /// A read-only description of the locked file that holds the lock and
    /// is inherited by the daemon. Read-only, and not the pidfile, so a
    /// daemon running as another user cannot rewrite the PID that root's
    /// `--stop` will signal.
    lock: File,
    /// This start created the locked file. A failed start removes a
    /// lockfile (`-l`) it created; a pidfile's lock file goes with the
    /// pidfile in any case.
    created: bool,
}

/// A lock taken, before anything else is changed.
struct Held {
    path: PathBuf,
    file: File,
    created: bool,
}

impl Held {
    /// Undoes taking the lock after a refused start: a file created for it
    /// goes again (its lock is still ours, so nobody else uses it).
    fn abandon(self, kind: Kind) {
        if self.created {
            remove_if_same(&self.path, &self.file, kind.lock_noun());
        }
    }
}

impl Lock {
    /// Locks the pidfile (through its companion), the lockfile and the
    /// supervisor pidfile (`-P`, through its companion), or fails with exit
    /// 1 if another instance holds one, or runs without its lock by the
    /// identity rule. Every lock is taken before any file is changed; the
    /// pidfiles are then claimed: checked to hold nothing but a PID, and
    /// emptied. `-p F -l F` (as bmc/daemonize allows), or a lockfile that is
    /// the pidfile's companion, is one locked pidfile.
    pub fn acquire_all(
        pidfile: Option<&Path>,
        lockfile: Option<&Path>,
        supervisor: Option<&Path>,
    ) -> Result<Vec<Lock>, Failure> {
        let lockfile = lockfile.filter(|lockfile| {
            let same = pidfile.is_some_and(|pidfile| {
                same_entry(pidfile, lockfile) || same_entry(&companion_path(pidfile), lockfile)
            });
            if same {
                tracing::debug!(path = %lockfile.display(), "the lockfile is the pidfile: one lock");
            }
            !same
        });
        if let Some(sup) = supervisor {
            let clash = [pidfile, lockfile].into_iter().flatten().find(|other| {
                same_entry(sup, other)
                    || same_entry(&companion_path(sup), other)
                    || same_entry(sup, &companion_path(other))
            });
            if let Some(other) = clash {
                return Err(anyhow!(
                    "--supervisor-pidfile '{}' and '{}' must be different files",
                    sup.display(),
                    other.display()
                )
                .into());
            }
        }
        let wanted: Vec<(&Path, Kind)> = [
            (pidfile, Kind::Pidfile),
            (supervisor, Kind::Supervisor),
            (lockfile, Kind::Lockfile),
        ]
        .into_iter()
        .filter_map(|(path, kind)| path.map(|p| (p, kind)))
        .collect();
        let mut held: Vec<(&Path, Kind, Held)> = Vec::new();
        let abandon = |held: Vec<(&Path, Kind, Held)>| {
            for (_, kind, h) in held {
                h.abandon(kind);
            }
        };
        for &(path, kind) in &wanted {
            let locked = match kind {
                Kind::Lockfile => lock_file(path, path, kind),
                Kind::Pidfile | Kind::Supervisor => lock_file(&companion_path(path), path, kind),
            };
            match locked {
                Ok(h) => held.push((path, kind, h)),
                Err(e) => {
                    abandon(held);
                    return Err(e);
                }
            }
        }
        // Every lock is ours: only now may the pidfiles change.
        let mut claimed = Vec::new();
        let mut refused = None;
        for (path, kind, _) in &held {
            if *kind == Kind::Lockfile {
                claimed.push(None);
                continue;
            }
            match claim(path) {
                Ok(file) => claimed.push(Some(file)),
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = refused {
            abandon(held);
            return Err(e);
        }
        Ok(held
            .into_iter()
            .zip(claimed)
            .map(|((path, kind, h), file)| Lock {
                path: path.to_owned(),
                kind,
                file,
                lock_path: h.path,
                lock: h.file,
                created: h.created,
            })
            .collect())
    }

    /// Which of this lock's files `other` names, following symlinks: the
    /// pidfile or lockfile itself, or the pidfile's lock file.
    pub fn file_named_by(&self, other: &Path) -> Option<&Path> {
        let meta = std::fs::metadata(other).ok()?;
        let same = |file: &File| {
            file.metadata()
                .is_ok_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino())
        };
        if self.file.as_ref().is_some_and(same) {
            Some(&self.path)
        } else if same(&self.lock) {
            Some(&self.lock_path)
        } else {
            None
        }
    }

    /// The locked descriptor, to be inherited by the daemon.
    pub fn fd(&self) -> RawFd {
        self.lock.as_raw_fd()
    }

    /// Writes `PID\n`: new content first, then truncate to its length, so a
    /// reader never sees an empty file in between.
    pub fn write_pid(&self, pid: Pid) -> anyhow::Result<()> {
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| anyhow!("'{}' is a lockfile, not a pidfile", self.path.display()))?;
        let content = format!("{pid}\n");
        file.write_all_at(content.as_bytes(), 0)
            .and_then(|()| file.set_len(content.len() as u64))
            .with_context(|| format!("cannot write pidfile '{}'", self.path.display()))
    }

    /// Empties the pidfile: the supervisor's child has ended and a restart
    /// is pending (docs/design.md, "Supervision").
    pub fn clear_pid(&self) -> anyhow::Result<()> {
        if let Some(file) = &self.file {
            file.set_len(0)
                .with_context(|| format!("cannot empty pidfile '{}'", self.path.display()))?;
        }
        Ok(())
    }

    /// A descriptor for writing the supervisor's state into the lock file
    /// of a pidfile (private to its owner, see `state`): a new description
    /// of the very inode we hold locked, opened through `/proc/self/fd`, so
    /// no path is followed, and not inherited by COMMAND (whose own copy of
    /// the lock stays read-only). `None` for a lockfile (`-l`), which is the
    /// user's and never written.
    pub fn state_file(&self) -> Option<File> {
        self.file.as_ref()?;
        let path = format!("/proc/self/fd/{}", self.lock.as_raw_fd());
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(&path);
        match file {
            Ok(file)
                if file.metadata().ok().map(|m| (m.dev(), m.ino()))
                    == self.lock.metadata().ok().map(|m| (m.dev(), m.ino())) =>
            {
                Some(file)
            }
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(error = %e, path = %self.lock_path.display(), "no state channel");
                None
            }
        }
    }

    /// After a failed start: a pidfile must not name a process that is not
    /// running, so it is removed, and its lock file after it, while we still
    /// hold the lock. A lockfile is removed if this start created it.
    pub fn discard(&self) {
        match &self.file {
            Some(file) => {
                remove_if_same(&self.path, file, self.kind.noun());
                remove_if_same(&self.lock_path, &self.lock, self.kind.lock_noun());
            }
            None if self.created => {
                remove_if_same(&self.lock_path, &self.lock, self.kind.lock_noun());
            }
            None => {}
        }
    }
}

/// Opens (creating `0600` if needed) and locks `path`, the lock of `shown`
/// (a pidfile or lockfile, named in messages).
fn lock_file(path: &Path, shown: &Path, kind: Kind) -> Result<Held, Failure> {
    // A concurrent `--stop` or failed start may unlink the file between our
    // open and our lock; then we locked an orphan inode and must try again
    // on whatever the path names now.
    let mut busy = 0;
    for _ in 0..100 {
        let (file, created) = open_lock_file(path, &kind.describe(path, shown))?;
        match file.try_lock() {
            Ok(()) if names_same_file(path, &file) => {
                tracing::debug!(path = %path.display(), kind = kind.noun(), "locked");
                return Ok(Held {
                    path: path.to_owned(),
                    file,
                    created,
                });
            }
            // Replaced under us (by a --stop or a failed start): again.
            Ok(()) => continue,
            Err(std::fs::TryLockError::WouldBlock) if !names_same_file(path, &file) => continue,
            // `--status` and `--stop` probe with a shared lock for a few
            // microseconds; a start that meets such a probe must not take
            // it for a running daemon.
            Err(std::fs::TryLockError::WouldBlock) if busy < PROBE_RETRIES => {
                busy += 1;
                std::thread::sleep(PROBE_PAUSE);
            }
            Err(std::fs::TryLockError::WouldBlock) => return Err(already_running(shown, kind)),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(anyhow!(e)
                    .context(format!("cannot lock {}", kind.describe(path, shown)))
                    .into());
            }
        }
    }
    Err(anyhow!(
        "cannot lock {}: it keeps being replaced",
        kind.describe(path, shown)
    )
    .into())
}

/// Opens the file to lock, read-only, creating it `0600` if it does not
/// exist (true when created). One that exists must be a regular file owned
/// by the caller, who alone may then open it: it loses any group and other
/// permission bits.
fn open_lock_file(path: &Path, what: &str) -> Result<(File, bool), Failure> {
    let flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_NOCTTY
        | OFlag::O_NONBLOCK
        | OFlag::O_CLOEXEC;
    let create = OFlag::O_CREAT | OFlag::O_EXCL;
    let opened = match nix::fcntl::open(path, flags | create, Mode::from_bits_truncate(0o600)) {
        Ok(fd) => Ok((fd, true)),
        Err(nix::errno::Errno::EEXIST) => {
            nix::fcntl::open(path, flags, Mode::empty()).map(|fd| (fd, false))
        }
        Err(e) => Err(e),
    };
    let (fd, created) = opened.map_err(|e| open_error(what, e.into()))?;
    let file = File::from(fd);
    let meta = file
        .metadata()
        .with_context(|| format!("cannot stat {what}"))?;
    if !meta.is_file() {
        return Err(not_regular(what));
    }
    let euid = geteuid();
    if meta.uid() != euid.as_raw() {
        return Err(anyhow!(
            "cannot use {what}: it belongs to {}, not to you ({}), and its owner could \
             hold its lock to block or falsify every start, --status and --stop; \
             remove it if that user should not control this daemon",
            user_name(Uid::from_raw(meta.uid())),
            user_name(euid),
        )
        .into());
    }
    // A second name for the file elsewhere (a hard link someone made to a
    // file of root's) would have us lock, and chmod, that other file.
    if meta.nlink() != 1 {
        return Err(anyhow!(
            "cannot use {what}: it has {} names (hard links), so it may be another file \
             that someone linked here; remove it",
            meta.nlink()
        )
        .into());
    }
    // Created `0600` whatever the umask; an old one may have been left open
    // to others (a descriptor opened before cannot be revoked, though).
    let mode = meta.mode() & 0o777;
    if (created && mode != 0o600) || mode & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot make {what} 0600"))?;
    }
    Ok((file, created))
}

/// `'nobody' (uid 65534)`, or `uid 4242` for a uid without a name.
fn user_name(uid: Uid) -> String {
    crate::sys::nss_files_only_if_static();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => format!("'{}' (uid {uid})", user.name),
        _ => format!("uid {uid}"),
    }
}

/// Opens (creating `0644` if needed) the pidfile, whose lock we hold, and
/// empties it, unless it is not a pidfile (`-p` naming the wrong file must
/// not destroy it) or names a daemon that runs without its lock.
fn claim(path: &Path) -> Result<File, Failure> {
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
            // Created by us: 0644 whatever the caller's umask (docs/design.md,
            // "The pidfile").
            file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
            Ok(file)
        });
    let file = match opened {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => options.open(path),
        other => other,
    };
    let what = format!("pidfile '{}'", path.display());
    let file = file.map_err(|e| open_error(&what, e))?;
    check_regular(&what, &file)?;
    // As for the lock file: a second name means it may be someone else's
    // file, linked here to have us write into it.
    let links = file.metadata().map(|m| m.nlink()).unwrap_or(1);
    if links != 1 {
        return Err(anyhow!(
            "cannot use {what}: it has {links} names (hard links), so it may be another file \
             that someone linked here; remove it"
        )
        .into());
    }
    match read_pid(&file) {
        Err(e) => {
            return Err(e
                .context(format!("refusing to use '{}' as a pidfile", path.display()))
                .into());
        }
        // Nobody holds the lock, but sshd and its like drop it.
        Ok(Some(pid)) => {
            let daemon = identity::identify(&file, pid).with_context(|| {
                format!("cannot tell whether pid {pid} in '{}' runs", path.display())
            })?;
            if daemon.is_some() {
                return Err(Failure::new(
                    EXIT_RUNNING,
                    anyhow!(
                        "already running (pid {pid}) according to '{}'",
                        path.display()
                    ),
                ));
            }
        }
        Ok(None) => {}
    }
    tracing::debug!(path = %path.display(), "claimed the pidfile");
    // A stale PID must not be readable under our lock: --status and --stop
    // would take it for the daemon's. Locked and empty reads as "a start in
    // progress" until write_pid.
    file.set_len(0)
        .with_context(|| format!("cannot truncate pidfile '{}'", path.display()))?;
    Ok(file)
}

/// Opens an existing pidfile for the control actions, read-only, never
/// following a symlink.
pub fn open_existing(path: &Path) -> Result<Option<File>, Failure> {
    let what = format!("pidfile '{}'", path.display());
    match open_read_only(path) {
        Ok(file) => {
            check_regular(&what, &file)?;
            Ok(Some(file))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(open_error(&what, e)),
    }
}

/// The lock file of the pidfile `path`, opened read-only by a control
/// action.
pub enum Companion {
    Open(File),
    /// There is none, so nobody holds the lock.
    Missing,
    /// The caller may not open it (only its owner and root may): whether
    /// the lock is held cannot be seen.
    Denied(io::Error),
}

pub fn open_companion(path: &Path) -> Result<Companion, Failure> {
    let companion = companion_path(path);
    let what = Kind::Pidfile.describe(&companion, path);
    match open_read_only(&companion) {
        Ok(file) => {
            check_regular(&what, &file)?;
            Ok(Companion::Open(file))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Companion::Missing),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(Companion::Denied(e)),
        Err(e) => Err(open_error(&what, e)),
    }
}

fn open_read_only(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
}

/// How often, and how long apart, a start retries a lock that is busy, in
/// case it meets the brief probe of a `--status` rather than a daemon.
const PROBE_RETRIES: u32 = 5;
const PROBE_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

/// `cannot open WHAT: REASON`, where WHAT names the file and its role.
fn open_error(what: &str, e: io::Error) -> Failure {
    let context = format!("cannot open {what}");
    if e.raw_os_error() == Some(libc::ELOOP) {
        anyhow!("it is a symbolic link, which daemonize never follows")
            .context(context)
            .into()
    } else {
        anyhow!(e).context(context).into()
    }
}

fn check_regular(what: &str, file: &File) -> Result<(), Failure> {
    let meta = file
        .metadata()
        .with_context(|| format!("cannot stat {what}"))?;
    if meta.is_file() {
        Ok(())
    } else {
        Err(not_regular(what))
    }
}

fn not_regular(what: &str) -> Failure {
    anyhow!("cannot use {what}: it is not a regular file").into()
}

fn already_running(path: &Path, kind: Kind) -> Failure {
    let pid = match kind {
        Kind::Pidfile | Kind::Supervisor => open_existing(path)
            .ok()
            .flatten()
            .and_then(|file| read_pid(&file).ok().flatten()),
        Kind::Lockfile => None,
    };
    let holder = pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default();
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

/// The most a pidfile may hold: a PID, or what a crash left of one.
const PIDFILE_MAX: usize = 4096;

/// What a pidfile says: `Ok(None)` when it is empty (a start in progress,
/// or, unlocked, a stale file), an error when it holds anything but one
/// decimal PID. NUL bytes count as empty: a crash before the data reached
/// the disk leaves a file of zeros of the right size.
pub fn read_pid(file: &File) -> anyhow::Result<Option<Pid>> {
    let mut buf = vec![0u8; PIDFILE_MAX + 1];
    let mut len = 0;
    while len < buf.len() {
        match file.read_at(&mut buf[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    if len > PIDFILE_MAX {
        return Err(anyhow!(
            "it does not hold a PID: it is larger than {PIDFILE_MAX} bytes"
        ));
    }
    let content = String::from_utf8_lossy(&buf[..len]);
    let text = content.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<i32>() {
        Ok(pid) if pid > 0 => Ok(Some(Pid::from_raw(pid))),
        _ => {
            let shown: String = content.chars().take(64).collect();
            Err(anyhow!("it does not hold a PID: {shown:?}"))
        }
    }
}

/// Points an existing pidfile at `pid`, when the daemon it named has
/// exited and `pid` took over its lock (a program that forked into the
/// background after daemonize returned). Only a pidfile the caller owns,
/// reached without following a symlink, and still the inode `seen` that
/// was inspected; anything else is left as it is. The same write as a
/// start's: new content first, then the length.
pub fn repoint(path: &Path, seen: &File, pid: Pid) -> anyhow::Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)?;
    let (meta, old) = (file.metadata()?, seen.metadata()?);
    if meta.dev() != old.dev()
        || meta.ino() != old.ino()
        || meta.uid() != nix::unistd::geteuid().as_raw()
    {
        anyhow::bail!("'{}' is not the caller's pidfile any more", path.display());
    }
    let content = format!("{pid}\n");
    file.write_all_at(content.as_bytes(), 0)?;
    file.set_len(content.len() as u64)?;
    Ok(())
}

/// Whether `path` still names the open `file` (same device and inode).
fn names_same_file(path: &Path, file: &File) -> bool {
    match (std::fs::symlink_metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Whether two paths name the same directory entry: the same file if both
/// exist, else the same name in the same directory.
fn same_entry(a: &Path, b: &Path) -> bool {
    match (std::fs::symlink_metadata(a), std::fs::symlink_metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        (Err(_), Err(_)) => {
            let dir = |path: &Path| {
                let dir = path
                    .parent()
                    .filter(|dir| !dir.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
            };
            a.file_name().is_some() && a.file_name() == b.file_name() && {
                let dir_a = dir(a);
                dir_a.is_some() && dir_a == dir(b)
            }
        }
        _ => false,
    }
}

/// Unlinks `path` if it still names `file`; the caller holds its lock.
fn remove_if_same(path: &Path, file: &File, noun: &str) {
    if names_same_file(path, file)
        && let Err(e) = std::fs::remove_file(path)
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove {noun}");
    }
}

/// What [`remove_stale`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Removal {
    /// Removed, or there was nothing to remove.
    Removed,
    /// Someone holds the lock: a daemon, its children, or a start.
    Busy,
    /// Left in place: it is not a pidfile (a wrong `-p` must not delete
    /// it), it names a daemon by the identity rule, or its lock cannot be
    /// taken by this caller.
    Kept,
}

/// Removes the pidfile `path` (open as `file`) and its companion once no
/// daemon runs under it. The lock is taken first, so that no start slips in
/// between, and the pidfile is checked again under it: it must look like a
/// pidfile and name no daemon by the identity rule, unless it names
/// `not_daemon`, a process the caller saw alive without the lock while the
/// lock was held (the lock, not the identity rule, decides while it is
/// held). `companion` is the caller's read-only descriptor on the lock
/// file; without one (there was none), a caller who owns the pidfile
/// creates it, to lock it.
pub fn remove_stale(
    path: &Path,
    file: &File,
    companion: &Companion,
    not_daemon: Option<Pid>,
) -> Removal {
    let created;
    let companion = match companion {
        Companion::Open(companion) => companion,
        Companion::Denied(_) => return Removal::Kept,
        Companion::Missing => {
            let owner = file.metadata().map(|m| m.uid()).ok();
            if owner != Some(geteuid().as_raw()) {
                return Removal::Kept;
            }
            let companion = companion_path(path);
            match open_lock_file(&companion, &Kind::Pidfile.describe(&companion, path)) {
                Ok((file, _)) => {
                    created = file;
                    &created
                }
                Err(_) => return Removal::Kept,
            }
        }
    };
    if companion.try_lock().is_err() {
        return Removal::Busy;
    }
    let stale = match read_pid(file) {
        Ok(Some(pid)) if Some(pid) == not_daemon => true,
        Ok(Some(pid)) => identity::identify(file, pid).is_ok_and(|daemon| daemon.is_none()),
        Ok(None) => true,
        Err(_) => false,
    };
    if stale {
        remove_if_same(path, file, Kind::Pidfile.noun());
        remove_if_same(&companion_path(path), companion, Kind::Pidfile.lock_noun());
    }
    // Our own description (never the daemon's): unlocking it releases
    // nothing but this probe, for whoever comes next.
    let _ = companion.unlock();
    if stale {
        Removal::Removed
    } else {
        Removal::Kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid_of(content: &[u8]) -> anyhow::Result<Option<Pid>> {
        use std::io::Write;
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(content).unwrap();
        read_pid(&file)
    }

    #[test]
    fn read_pid_takes_nul_bytes_and_whitespace_for_empty() {
        assert_eq!(pid_of(b"").unwrap(), None);
        assert_eq!(pid_of(b"\0\0\0\0\0\0").unwrap(), None);
        assert_eq!(pid_of(b" \n\t\n").unwrap(), None);
        assert_eq!(pid_of(b"\0 \0\n").unwrap(), None);
        assert_eq!(pid_of(b"4242\n").unwrap(), Some(Pid::from_raw(4242)));
        assert_eq!(pid_of(b"  17  ").unwrap(), Some(Pid::from_raw(17)));
    }

    #[test]
    fn read_pid_refuses_anything_else() {
        for content in [&b"hello"[..], b"0\n", b"-3\n", b"12 34\n", b"1\0x"] {
            assert!(pid_of(content).is_err(), "{content:?}");
        }
        assert!(pid_of(&[b'\0'; PIDFILE_MAX + 1]).is_err(), "too large");
    }

    #[test]
    fn the_companion_is_the_pidfile_name_and_dot_lock() {
        assert_eq!(
            companion_path(Path::new("/run/app.pid")),
            Path::new("/run/app.pid.lock")
        );
        assert_eq!(companion_path(Path::new("x")), Path::new("x.lock"));
    }
}
