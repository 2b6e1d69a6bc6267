//! The launch plan: the command line resolved into everything the fork code
//! needs, with every fallible and allocating step already done.
//!
//! `argv` and `envp` are `CString`s, paths are absolute `CString`s, the
//! descriptors to keep are checked and sorted, `/dev/null` is open. The fork
//! code in `detach` only reads a finished `Plan`; nothing in here may be
//! called after `fork()`.

use std::collections::BTreeSet;
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use anyhow::{Context, bail};
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;

use crate::cli::Cli;
use crate::error::Failure;
use crate::output::Outputs;
use crate::pidfile::{Kind, Lock};
use crate::ready::Readiness;
use crate::sys;
use crate::user::{self, Credentials};

pub struct Plan {
    /// COMMAND and its arguments; `argv[0]` is what `execvp` searches.
    pub argv: Vec<CString>,
    /// The `PATH` that COMMAND is searched in: the daemon's own (so a `-E
    /// PATH=...` counts), or the default of `execvp`.
    pub search_path: CString,
    /// The daemon's whole environment, `NAME=VALUE`; `None` when nothing
    /// changes it, so the inherited one is passed on as it is, uncopied.
    pub envp: Option<Vec<CString>>,
    /// Working directory, as given (relative to the caller's cwd).
    pub chdir: PathBuf,
    pub c_chdir: CString,
    pub umask: nix::libc::mode_t,
    /// Who the daemon runs as; `None` keeps ours.
    pub creds: Option<Credentials>,
    pub outputs: Outputs,
    /// `/dev/null`, read-write, close-on-exec: the daemon's stdin and any
    /// output not sent to a file.
    pub dev_null: OwnedFd,
    /// Inherited descriptors the user asked to keep, sorted, all open.
    pub keep_fds: Vec<RawFd>,
    /// Locked pidfile and lockfile, taken last so a refused start changes
    /// nothing. Their descriptors are inherited by the daemon.
    pub locks: Vec<Lock>,
    /// How the daemon says it is ready, when `daemonize` waits for it.
    pub ready: Option<Readiness>,
    /// `--watchdog`: the daemon's environment gets `WATCHDOG_USEC` (set
    /// here) and `WATCHDOG_PID` (its own PID, written by `detach`).
    pub watchdog: bool,
}

impl Plan {
    pub fn new(cli: &Cli) -> Result<Plan, Failure> {
        // Before we open anything, so that only the caller's descriptors count.
        let keep_fds = keep_fds(&cli.keep_fds)?;
        // Next, so that no descriptor of ours takes FD's number.
        let ready_fd = cli
            .ready_fd
            .map(|fd| {
                if cli.keep_fds.contains(&fd) {
                    anyhow::bail!("descriptor {fd} cannot be both --ready-fd and --keep-fds");
                }
                Readiness::fd(fd, cli.ready_timeout())
            })
            .transpose()?;
        let argv = cli
            .command
            .iter()
            .map(|arg| cstring(arg, "argument"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let creds = user::resolve(cli.user.as_deref(), cli.group.as_deref())?;
        let mut overrides = creds.as_ref().map(|c| c.env.clone()).unwrap_or_default();
        overrides.extend(cli.env.iter().cloned());
        let ready = match ready_fd {
            Some(ready) => Some(ready),
            None if cli.wait_ready => {
                let (ready, socket) = Readiness::notify(cli.ready_timeout())?;
                // Last, so that it wins over an inherited or `-E` value.
                overrides.push((NOTIFY_SOCKET.into(), socket.into_os_string()));
                Some(ready)
            }
            None => None,
        };
        if let Some(watchdog) = cli.watchdog {
            let usec = watchdog.as_micros().max(1).to_string();
            overrides.push(("WATCHDOG_USEC".into(), usec.into()));
        }
        let search_path = overrides
            .iter()
            .rev()
            .find(|(name, _)| name == "PATH")
            .map(|(_, value)| value.clone())
            .or_else(|| std::env::var_os("PATH"))
            .unwrap_or_else(|| DEFAULT_PATH.into());
        let search_path = cstring(&search_path, "PATH")?;
        let overrides_count = overrides.len();
        // An inherited NOTIFY_SOCKET is not passed on (issue 9, item 22),
        // which takes a copy of the environment only when there is one.
        let envp = match overrides.is_empty() && std::env::var_os(NOTIFY_SOCKET).is_none() {
            true => None,
            false => Some(environment(std::env::vars_os(), &overrides)?),
        };
        let outputs = Outputs::new(cli.stdout.as_deref(), cli.stderr.as_deref(), cli.truncate)?;
        let dev_null = open(
            "/dev/null",
            OFlag::O_RDWR | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
            Mode::empty(),
        )
        .context("cannot open '/dev/null'")?;
        let locks = Lock::acquire_all(
            cli.pidfile.as_deref(),
            cli.lockfile.as_deref(),
            cli.supervisor_pidfile.as_deref(),
        )?;
        refuse_output_on_a_lock(cli, &locks)?;
        tracing::info!(
            command = ?cli.command,
            chdir = %cli.chdir().display(),
            umask = format_args!("{:03o}", cli.umask()),
            stdout = ?outputs.stdout.as_ref().map(|f| &f.path),
            stderr = ?outputs.stderr.as_ref().map(|f| &f.path),
            user = ?creds.as_ref().map(|c| (c.uid.as_raw(), c.gid.as_raw())),
            pidfile = ?cli.pidfile,
            "launch plan ready"
        );
        tracing::debug!(env_overrides = overrides_count, ?keep_fds, "plan details");
        Ok(Plan {
            locks,
            ready,
            argv,
            search_path,
            envp,
            c_chdir: cstring(cli.chdir().as_os_str(), "--chdir directory")?,
            chdir: cli.chdir().to_owned(),
            umask: cli.umask() as nix::libc::mode_t,
            creds,
            outputs,
            dev_null,
            keep_fds,
            watchdog: cli.watchdog.is_some(),
        })
    }

    /// The lock that holds the PID, if any.
    pub fn pidfile(&self) -> Option<&Lock> {
        self.locks.iter().find(|l| l.kind == Kind::Pidfile)
    }

    /// The supervisor pidfile (`-P`), if any.
    pub fn supervisor_pidfile(&self) -> Option<&Lock> {
        self.locks.iter().find(|l| l.kind == Kind::Supervisor)
    }

    /// ` as user 'app'` when the daemon changes user, for messages about
    /// steps it takes with its own credentials.
    pub fn as_user(&self) -> String {
        match &self.creds {
            Some(c) if c.change => format!(" as user '{}'", c.shown),
            _ => String::new(),
        }
    }

    /// COMMAND as the user typed it, for messages.
    pub fn command(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.argv[0].as_bytes())
    }
}

/// What glibc's `execvp` searches when `PATH` is unset (`confstr(_CS_PATH)`).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

fn cstring(s: &OsStr, what: &str) -> anyhow::Result<CString> {
    CString::new(s.as_bytes())
        .with_context(|| format!("{what} '{}' contains a NUL byte", s.to_string_lossy()))
}

/// The sd_notify variable. The caller's belongs to whoever started the
/// caller (systemd, another daemonize) and must not reach the daemon, which
/// would then report to them.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// The inherited environment with each `-E NAME=VALUE` applied on top, in
/// order: a later `-E` for the same name wins, an inherited variable keeps
/// its place. An inherited `NOTIFY_SOCKET` is left out unless it is
/// overridden (by `--wait-ready`, or explicitly with `-E`).
fn environment(
    inherited: impl Iterator<Item = (OsString, OsString)>,
    overrides: &[(OsString, OsString)],
) -> anyhow::Result<Vec<CString>> {
    let keep_notify = overrides.iter().any(|(name, _)| name == NOTIFY_SOCKET);
    let mut vars: Vec<(OsString, OsString)> = inherited
        .filter(|(name, _)| keep_notify || name != NOTIFY_SOCKET)
        .collect();
    for (name, value) in overrides {
        match vars.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value.clone(),
            None => vars.push((name.clone(), value.clone())),
        }
    }
    vars.into_iter()
        .map(|(name, value)| {
            let mut entry = name.into_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            CString::new(entry).context("environment variable contains a NUL byte")
        })
        .collect()
}

/// The daemon's output must not land in its pidfile, lockfile or lock file
/// (issue 9: `-p F -o F` corrupts the PID, and the daemon can no longer be
/// stopped). The files are compared, not the names: the output path is
/// followed through symlinks, after the locks have created their files. On
/// refusal nothing is left of this start.
fn refuse_output_on_a_lock(cli: &Cli, locks: &[Lock]) -> Result<(), Failure> {
    let outputs = [("--stdout", &cli.stdout), ("--stderr", &cli.stderr)];
    for (option, output) in outputs {
        let Some(output) = output else { continue };
        for lock in locks {
            let Some(file) = lock.file_named_by(output) else {
                continue;
            };
            let locked = match lock.kind {
                Kind::Pidfile => "--pidfile",
                Kind::Lockfile => "--lockfile",
                Kind::Supervisor => "--supervisor-pidfile",
            };
            let what = if file == lock.path {
                format!("{locked} '{}'", lock.path.display())
            } else {
                format!(
                    "the lock file '{}' of {locked} '{}'",
                    file.display(),
                    lock.path.display()
                )
            };
            for lock in locks {
                lock.discard();
            }
            return Err(anyhow::anyhow!(
                "{option} '{}' is the same file as {what}: the daemon's output would \
                 overwrite it",
                output.display()
            )
            .into());
        }
    }
    Ok(())
}

/// Each descriptor named by `--keep-fds` must be open now: keeping a closed
/// one is almost certainly a mistake in the calling script.
fn keep_fds(fds: &[RawFd]) -> anyhow::Result<Vec<RawFd>> {
    let set: BTreeSet<RawFd> = fds.iter().copied().collect();
    for &fd in &set {
        if !sys::fd_is_open(fd) {
            bail!("cannot keep descriptor {fd} (--keep-fds): it is not open");
        }
    }
    Ok(set.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> OsString {
        s.into()
    }

    #[test]
    fn env_overrides_replace_in_place_and_append_new_names() {
        let inherited = vec![(os("A"), os("1")), (os("B"), os("2"))];
        let env = environment(
            inherited.into_iter(),
            &[(os("B"), os("x=y")), (os("C"), os("")), (os("A"), os("3"))],
        )
        .unwrap();
        let env: Vec<_> = env.iter().map(|c| c.to_str().unwrap()).collect();
        assert_eq!(env, ["A=3", "B=x=y", "C="]);
    }

    #[test]
    fn an_inherited_notify_socket_is_dropped_unless_overridden() {
        let inherited = || {
            vec![
                (os("A"), os("1")),
                (os("NOTIFY_SOCKET"), os("/run/systemd/notify")),
                (os("B"), os("2")),
            ]
            .into_iter()
        };
        let strings = |env: Vec<CString>| -> Vec<String> {
            env.into_iter().map(|c| c.into_string().unwrap()).collect()
        };
        let env = environment(inherited(), &[(os("B"), os("3"))]).unwrap();
        assert_eq!(strings(env), ["A=1", "B=3"]);
        let ours = [(os("NOTIFY_SOCKET"), os("/run/daemonize.x/notify"))];
        let env = environment(inherited(), &ours).unwrap();
        assert_eq!(
            strings(env),
            ["A=1", "NOTIFY_SOCKET=/run/daemonize.x/notify", "B=2"]
        );
    }
}
