//! The command line as clap sees it: raw options, value syntax, help text.
//!
//! This module only checks the *form* of each value (an octal umask, a
//! `NAME=VALUE` pair, a descriptor number). Anything that touches the system
//! (paths, users, descriptors being open) is resolved later by `plan`. The man
//! page and the shell completions are generated from [`command`].

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, CommandFactory, Parser};
use nix::sys::signal::Signal;

const ABOUT: &str = "Run a command as a Unix daemon, and report whether it started";

const LONG_ABOUT: &str = "\
Run COMMAND as a proper Unix daemon: double fork with setsid, no controlling \
terminal, cwd '/', a known umask, stdin on /dev/null, output appended to log \
files, default signal dispositions and no inherited descriptors beyond those \
asked for.

daemonize returns only once COMMAND has been executed (or, with --wait-ready \
or --ready-fd, once it has declared itself ready). Any failure on the way is \
reported on standard error, and the exit status says which kind: 125 for a \
setup failure, 126 if COMMAND cannot be executed, 127 if it is not found.";

/// Defines the extra sections of `--help` and of the man page once, as
/// literals, so that `--help` costs no formatting at run time.
macro_rules! sections {
    ($( ($title:literal, $heading:literal, $text:literal) ),* $(,)?) => {
        /// Extra sections of the man page, in order: (title, text). Plain
        /// text, indented by two spaces; the man page shows it unfilled.
        pub const SECTIONS: &[(&str, &str)] = &[$(($title, $text)),*];
        /// The same sections at the end of `--help`.
        const AFTER_LONG_HELP: &str = concat!($($heading, ":\n", $text, "\n\n"),*);
    };
}

sections![
    (
        "EXAMPLES",
        "Examples",
        "  \
  daemonize -- mysqld --foo
  daemonize -c /srv/app -o /var/log/app.log -E RUST_LOG=info -- ./server --port 8080
  x=$(daemonize -- long-job)      # returns as soon as long-job runs
  daemonize -p /run/app.pid -o /var/log/app.log -- app --serve
  daemonize -p /run/app.pid --status
  daemonize -p /run/app.pid --stop --signal INT --timeout 30
  sudo daemonize -u app -g app -p /run/app.pid -o /var/log/app/app.log -- server
  daemonize --wait-ready -p /run/redis.pid -- redis-server --supervised systemd
  daemonize --ready-fd 3 -- s6-style-server"
    ),
    (
        "EXIT STATUS",
        "Exit status",
        "  \
  0    the daemon runs: COMMAND was executed (and is ready, when waiting)
  1    not started: another instance holds the pidfile or lockfile
  125  daemonize failed: a usage error, a setup step (chdir, log file,
       pidfile, user, fork...), or the daemon died, reported ERRNO= or
       timed out before it was ready
  126  COMMAND was found but could not be executed
  127  COMMAND was not found

  --status (LSB codes): 0 running (the PID is printed), 1 not running but
  the pidfile exists (stale), 3 not running (no pidfile), 4 unknown (the
  pidfile cannot be read or holds no PID).
  --stop: 0 stopped or was not running, 1 could not stop it."
    ),
    (
        "PIDFILE AND LOCKS",
        "Pidfile and locks",
        "  \
  The pidfile is opened with O_NOFOLLOW (a symlink is refused, never
  followed), created 0644, and locked with flock(2) before the first fork.
  The daemon inherits a read-only descriptor holding the lock, so the lock
  lives exactly as long as the daemon. A second start while the lock is held
  exits 1 and names the running PID; a pidfile nobody holds a lock on is
  stale and is taken over. The PID is written before daemonize returns;
  after a failed start the pidfile is removed rather than left naming a dead
  process.

  --status and --stop decide \"running\" by the lock, not by kill(pid, 0), so
  a PID reused by another process after the daemon died is never reported
  or signalled. --stop opens a pidfd for the PID, confirms that this very
  process holds the flock (a PID written into the file by someone else, or
  reused, does not), signals through the pidfd, and removes the pidfile
  once the daemon is gone and nobody holds the lock. Processes the daemon
  started inherit the lock and count as part of it: once the daemon has
  exited, each one still holding the lock gets the same signal, and SIGKILL
  at the timeout."
    ),
    (
        "USERS AND SECURITY",
        "Users and security",
        "  \
  --user and --group are resolved before the fork. The daemon calls
  setgroups, setresgid and setresuid, so real, effective, saved and
  filesystem ids all change, and checks that root cannot be regained. HOME,
  USER, LOGNAME and SHELL are the user's unless -E sets them.

  The pidfile and lockfile are opened by the invoking user, but the log
  files are opened by the daemon after the drop, with its own credentials:
  root never writes through a path the daemon's user controls. daemonize
  refuses to run installed setuid or setgid."
    ),
    (
        "READINESS",
        "Readiness",
        "  \
  --wait-ready (sd_notify): the daemon gets NOTIFY_SOCKET and sends READY=1
  when it is ready. The socket is in a fresh 0711 directory, removed before
  daemonize returns, made where only the caller can create entries: /run
  for root, else $XDG_RUNTIME_DIR, else $TMPDIR/daemonize-UID (or
  /tmp/daemonize-UID; made 0711 and kept). So nobody else can put a socket
  at that path later. Any user may send to it, so a server that drops root
  by itself can still notify, but only messages from the daemon and its
  descendants count. STATUS= lines are shown with -v, EXTEND_TIMEOUT_USEC=
  extends the deadline, ERRNO= means a failed start. A NOTIFY_SOCKET that
  daemonize inherits is not passed on.
  --ready-fd FD (s6): the daemon writes a newline to descriptor FD.

  If the daemon exits before it is ready, daemonize reports its status or
  signal at once, with the last lines of its log files, and exits 125. If it
  is not ready after --ready-timeout seconds (default 60; 0 waits for ever),
  it gets SIGTERM, then SIGKILL after 3 seconds, and daemonize exits 125.
  SIGINT, SIGTERM or SIGHUP sent to daemonize while it waits stop the
  daemon the same way, unless the caller ignores them (as nohup does
  SIGHUP). The pidfile names the daemon only once it is ready."
    ),
];

/// Raw options. See SPEC.md for the contract behind each one.
#[derive(Parser, Debug)]
#[command(
    name = "daemonize",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = "Run 'daemonize --help' for examples and exit codes.",
    after_long_help = AFTER_LONG_HELP,
    max_term_width = 100
)]
pub struct Cli {
    /// Working directory of the daemon [default: /]
    #[arg(short = 'c', long, value_name = "DIR")]
    pub chdir: Option<PathBuf>,

    /// File-mode creation mask of the daemon, in octal (022, 0o027, 0077) [default: 022]
    #[arg(short = 'm', long, value_name = "MODE", value_parser = parse_umask)]
    pub umask: Option<u32>,

    /// Append the daemon's standard output to FILE [default: /dev/null]
    #[arg(short = 'o', long, value_name = "FILE")]
    pub stdout: Option<PathBuf>,

    /// Append the daemon's standard error to FILE [default: the --stdout file, else /dev/null]
    #[arg(short = 'e', long, value_name = "FILE")]
    pub stderr: Option<PathBuf>,

    /// Append to the output files (the default; kept for bmc/daemonize scripts)
    #[arg(short = 'a', long)]
    pub append: bool,

    /// Truncate the output files instead of appending
    #[arg(long, conflicts_with = "append")]
    pub truncate: bool,

    /// Set NAME to VALUE in the daemon's environment (repeatable)
    #[arg(short = 'E', long = "env", value_name = "NAME=VALUE", value_parser = parse_env())]
    pub env: Vec<(OsString, OsString)>,

    /// Inherited descriptors above 2 to leave open (repeatable); all others are closed
    #[arg(long, value_name = "FD[,FD...]", value_delimiter = ',', value_parser = parse_keep_fd)]
    pub keep_fds: Vec<RawFd>,

    /// Write the daemon's PID to FILE and hold a lock on it while the daemon runs;
    /// refuse to start a second instance
    #[arg(short = 'p', long, value_name = "FILE")]
    pub pidfile: Option<PathBuf>,

    /// Hold a lock on FILE while the daemon runs, without writing a PID
    #[arg(short = 'l', long, value_name = "FILE")]
    pub lockfile: Option<PathBuf>,

    /// Run the daemon as USER (name or uid): its uid, primary group and
    /// supplementary groups; root only
    #[arg(short = 'u', long, value_name = "USER|UID")]
    pub user: Option<String>,

    /// Primary group of the daemon (name or gid) [default: the user's]
    #[arg(short = 'g', long, value_name = "GROUP|GID")]
    pub group: Option<String>,

    /// Return only once the daemon sends READY=1 to $NOTIFY_SOCKET (sd_notify)
    #[arg(long, conflicts_with = "ready_fd")]
    pub wait_ready: bool,

    /// Return only once the daemon writes a newline to descriptor FD (s6)
    #[arg(long, value_name = "FD", value_parser = parse_ready_fd)]
    pub ready_fd: Option<RawFd>,

    /// Seconds to wait for readiness before stopping the daemon and failing;
    /// 0 waits for ever [default: 60]
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub ready_timeout: Option<Duration>,

    /// Report whether the daemon named by --pidfile runs (LSB codes: 0 running,
    /// 1 stale pidfile, 3 not running, 4 unknown)
    #[arg(long, requires = "pidfile", conflicts_with_all = ["stop", "command"])]
    pub status: bool,

    /// Stop the daemon named by --pidfile: send --signal, wait --timeout seconds,
    /// then SIGKILL
    #[arg(long, requires = "pidfile", conflicts_with = "command")]
    pub stop: bool,

    /// Signal for --stop, by name or number [default: TERM]
    #[arg(long, value_name = "SIG", value_parser = parse_signal, requires = "stop")]
    pub signal: Option<Signal>,

    /// Seconds --stop waits before sending SIGKILL [default: 10]
    #[arg(long, value_name = "SECS", value_parser = parse_seconds, requires = "stop")]
    pub timeout: Option<Duration>,

    /// Trace each step to standard error (-vv for more; DAEMONIZE_LOG overrides)
    #[arg(short = 'v', long, action = ArgAction::Count)]
    pub verbose: u8,

    /// The program to run, searched in PATH, and its arguments
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        num_args = 1..,
        required_unless_present_any = ["status", "stop"],
        value_parser = clap::builder::OsStringValueParser::new()
    )]
    pub command: Vec<OsString>,
}

// Defaults live here rather than in clap's `default_value`, which would parse
// each default string through its value parser on every run (issue 6); the
// help text states them.
impl Cli {
    pub fn chdir(&self) -> &std::path::Path {
        self.chdir.as_deref().unwrap_or(std::path::Path::new("/"))
    }

    /// Like systemd services get.
    pub fn umask(&self) -> u32 {
        self.umask.unwrap_or(0o022)
    }

    /// Whether a readiness option is given.
    pub fn waits_for_readiness(&self) -> bool {
        self.wait_ready || self.ready_fd.is_some()
    }

    /// Zero means no deadline.
    pub fn ready_timeout(&self) -> Duration {
        self.ready_timeout.unwrap_or(Duration::from_secs(60))
    }

    pub fn signal(&self) -> Signal {
        self.signal.unwrap_or(Signal::SIGTERM)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(Duration::from_secs(10))
    }
}

/// The clap definition, for the man page and completion generators.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Parses `std::env::args_os()`. On `--help`/`--version` prints and returns
/// exit status 0; on a usage error prints one line and returns exit 125 (clap's own
/// default of 2 would collide with what scripts expect from `env`-like tools).
pub fn parse() -> Result<Cli, u8> {
    use clap::error::ErrorKind;
    let cli = Cli::try_parse().map_err(|err| match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = err.print();
            0
        }
        _ => usage_error(&usage_line(&err)),
    })?;
    // clap lets a `requires` go unchecked when the required argument
    // conflicts with one that is present (here: --stop and COMMAND).
    if !cli.stop && (cli.signal.is_some() || cli.timeout.is_some()) {
        return Err(usage_error("--signal and --timeout go with --stop"));
    }
    // Checked by hand for the same reason, and because a timeout with
    // nothing to wait for is a mistake in the calling script.
    if cli.ready_timeout.is_some() && !cli.waits_for_readiness() {
        return Err(usage_error(
            "--ready-timeout goes with --wait-ready or --ready-fd",
        ));
    }
    Ok(cli)
}

fn usage_error(message: &str) -> u8 {
    eprintln!("daemonize: {message} (try 'daemonize --help')");
    crate::error::EXIT_FAILURE
}

/// The first paragraph of clap's message on one line, without `error: `
/// (clap puts the names of missing arguments on indented lines below).
fn usage_line(err: &clap::Error) -> String {
    let text = err.to_string();
    let paragraph: Vec<&str> = text
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect();
    let line = paragraph.join(" ");
    line.strip_prefix("error: ").unwrap_or(&line).to_owned()
}

/// Octal, with or without a leading `0` or `0o`: `22`, `022`, `0o027`.
pub fn parse_umask(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    let valid = !digits.is_empty() && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if valid && mode <= 0o777 => Ok(mode),
        _ => Err("expected an octal mode from 000 to 777, like 022 or 0o027".into()),
    }
}

/// `NAME=VALUE`, split at the first `=`; NAME must not be empty. Bytes, not
/// UTF-8: environment values are arbitrary on Unix.
fn parse_env() -> impl clap::builder::TypedValueParser<Value = (OsString, OsString)> {
    use clap::builder::TypedValueParser;
    clap::builder::OsStringValueParser::new().try_map(|s| split_env(&s))
}

fn split_env(s: &std::ffi::OsStr) -> Result<(OsString, OsString), String> {
    let bytes = s.as_bytes();
    match bytes.iter().position(|&b| b == b'=') {
        Some(i) if i > 0 => Ok((
            std::ffi::OsStr::from_bytes(&bytes[..i]).to_owned(),
            std::ffi::OsStr::from_bytes(&bytes[i + 1..]).to_owned(),
        )),
        Some(_) => Err("the variable name is empty".into()),
        None => Err("expected NAME=VALUE".into()),
    }
}

/// A descriptor number above 2: 0-2 are always set up by daemonize itself.
fn parse_keep_fd(s: &str) -> Result<RawFd, String> {
    match s.trim().parse::<RawFd>() {
        Ok(fd) if fd > 2 => Ok(fd),
        Ok(_) => {
            Err("descriptors 0, 1 and 2 are always redirected; name descriptors above 2".into())
        }
        Err(_) => Err("expected a descriptor number like 3 or 3,4".into()),
    }
}

/// `--ready-fd`: above 2, since 0-2 are the daemon's standard streams.
fn parse_ready_fd(s: &str) -> Result<RawFd, String> {
    match s.trim().parse::<RawFd>() {
        Ok(fd) if fd > 2 => Ok(fd),
        _ => Err("expected a descriptor number above 2, like 3".into()),
    }
}

/// A signal by name (`TERM`, `SIGTERM`, `term`) or number (`15`).
pub fn parse_signal(s: &str) -> Result<Signal, String> {
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    s.parse::<i32>()
        .ok()
        .and_then(|n| Signal::try_from(n).ok())
        .or_else(|| name.parse::<Signal>().ok())
        .ok_or_else(|| "expected a signal name like TERM or a number like 15".into())
}

/// Non-negative seconds, fractions allowed: `10`, `0.5`; at most a year
/// (a deadline must stay representable).
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    const YEAR: f64 = 365.0 * 24.0 * 3600.0;
    s.parse::<f64>()
        .ok()
        .filter(|secs| *secs <= YEAR)
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| "expected a number of seconds from 0 to a year, like 10 or 0.5".into())
}
