//! The command line as clap sees it: raw options, value syntax, help text.
//!
//! This module only checks the *form* of each value (an octal umask, a
//! `NAME=VALUE` pair, a descriptor number). Anything that touches the system
//! (paths, users, descriptors being open) is resolved later by `plan`. The man
//! page and the shell completions are generated from [`command`].

use std::ffi::OsString;
use std::fmt;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgAction, ArgGroup, CommandFactory, Parser};
use nix::libc::{self, c_int};
use nix::sys::signal::Signal;

pub use crate::lines::Facility;
pub use crate::machine::Policy;

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
  daemonize -p /run/app.pid --reload          # SIGHUP to the daemon, nothing more
  sudo daemonize -u app -g app -p /run/app.pid -o /var/log/app/app.log -- server
  daemonize --wait-ready -p /run/redis.pid -- redis-server --supervised systemd
  daemonize --ready-fd 3 -- s6-style-server"
    ),
    (
        "EXIT STATUS",
        "Exit status",
        "  \
  0    the daemon runs: COMMAND was executed (and is ready, when waiting)
  1    not started: another instance runs (it holds the lock, or the
       pidfile names it)
  125  daemonize failed: a usage error, a setup step (chdir, log file,
       pidfile, user, fork...), or the daemon died, reported ERRNO= or
       timed out before it was ready
  126  COMMAND was found but could not be executed
  127  COMMAND was not found

  --status (LSB codes): 0 running (the PID is printed), 1 not running but
  the pidfile exists (stale), 3 not running (no pidfile), 4 unknown (the
  pidfile cannot be read or holds something that is not a PID, or what
  would tell is not the caller's to see).
  --stop: 0 stopped or was not running, 1 could not stop it, 4 cannot tell.
  --signal alone and --reload: 0 sent, 7 not running (no pidfile, a stale
  one, or a dead PID), 4 cannot tell, 125 any other error."
    ),
    (
        "PIDFILE AND LOCKS",
        "Pidfile and locks",
        "  \
  The pidfile holds the daemon's PID and a newline. It is created 0644 and
  opened with O_NOFOLLOW (a symlink is refused, never followed). The lock
  is not on the pidfile, which anyone may read and so could lock, but on
  its lock file FILE.lock beside it: created 0600, so that only its owner
  can open it; one that belongs to another user, or is not a regular file,
  is refused, and one of yours open to others is made 0600 (a descriptor
  opened before cannot be revoked, though). It is locked with flock(2)
  before the first fork, and the daemon inherits a read-only descriptor
  holding the lock, so the lock lives exactly as long as the daemon. -l
  FILE locks FILE itself, under the same rule; -p F -l F is one locked
  pidfile. Every lock is taken before any file changes. A second start
  exits 1 and names the running PID; a pidfile that nobody holds the lock
  of and that names no daemon (empty, NUL bytes, a dead or reused PID) is
  stale and is taken over. The PID is written before daemonize returns;
  after a failed start the pidfile and its lock file are removed. The
  pidfile, lockfile and lock file may not be an output file.

  Daemons that close every inherited descriptor drop the lock (sshd,
  dnsmasq). The PID in the pidfile still names such a daemon if that
  process runs and started no later than the pidfile was last written (a
  reused PID always starts later), provided only the caller or root can
  write the pidfile. Starts, --status, --stop and --signal all use this.

  --status, --stop and --signal never use kill(pid, 0): --stop and
  --signal open a pidfd for the PID, confirm that this very process holds
  the lock (or is the daemon by the rule above), and signal through the
  pidfd, so a PID reused by another process is never signalled. --stop
  removes the pidfile and its lock file once the daemon is gone and nobody
  holds the lock. Processes the daemon started inherit the lock and count
  as part of it: once the daemon has exited, each one still holding the
  lock gets the same signal, and SIGKILL at the timeout. A caller who may
  not see the lock (another user's lock file, or /proc/PID/fd of another
  user's process) is told that it cannot tell (4) unless the pidfile shows
  the daemon."
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
    (
        "LOG CAPTURE",
        "Log capture",
        "  \
  Without these options the daemon writes its -o/-e files itself. With
  --log-max-size, --log-timestamps or --syslog (or --restart with -o/-e)
  the supervisor reads COMMAND's output from pipes and writes it: lines
  are never split between files nor lost (at a rotation, a restart, or a
  final line without newline, which gets one); lines over 64 KiB are cut
  into 64 KiB lines. Rotation renames FILE.N-1 to FILE.N ... FILE to
  FILE.1, as the daemon's user. When the disk is full or syslog does not
  read, COMMAND blocks on its pipe and the supervisor retries every
  second. --reopen-logs reopens the files for logrotate's postrotate
  (use create, not copytruncate); SIGHUP still goes to COMMAND.
  --syslog sends each line to /dev/log (rsyslog, journald) as
  <PRI>Mmm dd hh:mm:ss TAG[PID]: line, stdout at info, stderr at err.

    daemonize -p /run/app.pid -o /var/log/app.log --log-max-size 10M -- app
    daemonize -p /run/app.pid --reopen-logs
    daemonize --syslog=local3 --syslog-tag app -p /run/app.pid -- app"
    ),
];

/// Raw options. See docs/design.md, "Command line", for the contract behind
/// each one.
#[derive(Parser, Debug)]
#[command(
    name = "daemonize",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = "Run 'daemonize --help' for examples and exit codes.",
    after_long_help = AFTER_LONG_HELP,
    max_term_width = 100,
    group(ArgGroup::new("instance").args(["pidfile", "supervisor_pidfile"]).multiple(true))
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

    /// Write the daemon's PID to FILE and hold a lock (on FILE.lock, 0600) while the
    /// daemon runs; refuse to start a second instance
    #[arg(short = 'p', long, value_name = "FILE")]
    pub pidfile: Option<PathBuf>,

    /// Hold a lock on FILE (created 0600) while the daemon runs, without writing a PID
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

    /// Keep COMMAND running: restart it whenever it ends (always, the default), or
    /// only when it fails (on-failure: a non-zero exit, a signal other than TERM,
    /// INT, HUP or PIPE, a missed readiness or watchdog deadline)
    #[arg(
        short = 'r',
        long,
        value_name = "POLICY",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "always",
        value_parser = parse_policy
    )]
    pub restart: Option<Policy>,

    /// Seconds before the first restart; doubled after each run that was not
    /// healthy, up to --restart-max-delay [default: 0.1]
    #[arg(long, value_name = "SECS", value_parser = parse_seconds, requires = "restart")]
    pub restart_delay: Option<Duration>,

    /// The longest delay between restarts [default: 30]
    #[arg(long, value_name = "SECS", value_parser = parse_seconds, requires = "restart")]
    pub restart_max_delay: Option<Duration>,

    /// Give up after N restarts in a row without a healthy run (one that lasted
    /// 10 s, or became ready); 0 never gives up [default: 0]
    #[arg(long, value_name = "N", requires = "restart")]
    pub max_restarts: Option<u32>,

    /// With --restart, write the supervisor's PID to FILE (locked, like --pidfile);
    /// control actions accept it instead of --pidfile
    #[arg(short = 'P', long, value_name = "FILE")]
    pub supervisor_pidfile: Option<PathBuf>,

    /// With --restart and --wait-ready: COMMAND gets WATCHDOG_USEC and must send
    /// WATCHDOG=1 at least every SECS; a miss is SIGABRT and a restart
    #[arg(long, value_name = "SECS", value_parser = parse_seconds, requires_all = ["restart", "wait_ready"])]
    pub watchdog: Option<Duration>,

    /// Rotate an output file before it would exceed SIZE (bytes, or K, M, G:
    /// powers of 1024), keeping --log-keep old ones: FILE.1 (newest) ... FILE.N
    #[arg(long, value_name = "SIZE", value_parser = crate::lines::parse_size)]
    pub log_max_size: Option<u64>,

    /// How many rotated files --log-max-size keeps [default: 5]
    #[arg(long, value_name = "N", value_parser = crate::lines::parse_keep, requires = "log_max_size")]
    pub log_keep: Option<u32>,

    /// Prefix each line of the output files with its arrival time, RFC 3339 UTC
    /// with microseconds: 2026-11-22T02:14:30.123456Z
    #[arg(long)]
    pub log_timestamps: bool,

    /// Send each line of output to syslog as one message (standard output at
    /// info, standard error at err), with FACILITY [default: daemon]
    #[arg(
        long,
        value_name = "FACILITY",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "daemon",
        value_parser = crate::lines::parse_facility
    )]
    pub syslog: Option<Facility>,

    /// The tag of --syslog messages [default: COMMAND's file name]
    #[arg(long, value_name = "TAG", value_parser = crate::lines::parse_tag, requires = "syslog")]
    pub syslog_tag: Option<String>,

    /// The syslog socket (a datagram socket, as rsyslog's and journald's)
    /// [default: /dev/log]
    #[arg(long, value_name = "PATH", requires = "syslog")]
    pub syslog_socket: Option<PathBuf>,

    /// Make the supervisor of the daemon named by --pidfile (or -P) close and reopen
    /// its output files, as logrotate's postrotate wants; returns once it has
    #[arg(long, requires = "instance", conflicts_with_all = ["status", "stop", "signal", "reload", "restart_now", "command"])]
    pub reopen_logs: bool,

    /// Report whether the daemon named by --pidfile runs (LSB codes: 0 running,
    /// 1 stale pidfile, 3 not running, 4 unknown)
    #[arg(long, requires = "instance", conflicts_with_all = ["stop", "signal", "command"])]
    pub status: bool,

    /// Stop the daemon named by --pidfile: send --signal, wait --timeout seconds,
    /// then SIGKILL; a supervised one is not restarted
    #[arg(long, requires = "instance", conflicts_with = "command")]
    pub stop: bool,

    /// With --stop, the signal that stops the daemon [default: TERM]; alone,
    /// send SIG to the daemon named by --pidfile and do nothing more (exit 7 if it
    /// is not running). By name or number: TERM, SIGUSR1, 15, RTMIN+3
    #[arg(long, value_name = "SIG", value_parser = parse_signal, requires = "instance", conflicts_with = "command")]
    pub signal: Option<Sig>,

    /// Send SIGHUP to the daemon named by --pidfile (the same as --signal HUP)
    #[arg(long, requires = "instance", conflicts_with_all = ["status", "stop", "signal", "command"])]
    pub reload: bool,

    /// Restart the supervised daemon named by --pidfile (or -P) at once, with the
    /// restart delay reset
    #[arg(long, requires = "instance", conflicts_with_all = ["status", "stop", "signal", "reload", "command"])]
    pub restart_now: bool,

    /// Seconds --stop waits before sending SIGKILL [default: 10]
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub timeout: Option<Duration>,

    /// Trace each step to standard error (-vv for more; DAEMONIZE_LOG overrides)
    #[arg(short = 'v', long, action = ArgAction::Count)]
    pub verbose: u8,

    /// The program to run, searched in PATH, and its arguments
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        num_args = 1..,
        required_unless_present_any = ["status", "stop", "signal", "reload", "restart_now", "reopen_logs"],
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

    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(Duration::from_secs(10))
    }

    /// Whether standard output and error go through the supervisor's
    /// pipes (docs/design.md, "Log capture"): any capture option, or
    /// `--restart` with an output file (whose lines must survive restarts).
    pub fn captures(&self) -> bool {
        self.log_max_size.is_some()
            || self.log_timestamps
            || self.syslog.is_some()
            || (self.restart.is_some() && (self.stdout.is_some() || self.stderr.is_some()))
    }

    /// What this invocation does.
    pub fn mode(&self) -> Mode<'_> {
        let instance = Instance {
            pidfile: self.pidfile.as_deref(),
            supervisor: self.supervisor_pidfile.as_deref(),
        };
        if self.status {
            Mode::Status(instance)
        } else if self.stop {
            Mode::Stop {
                instance,
                signal: self.signal.unwrap_or(Sig::TERM),
                timeout: self.timeout(),
            }
        } else if self.restart_now {
            Mode::RestartNow(instance)
        } else if self.reopen_logs {
            Mode::ReopenLogs(instance)
        } else if let Some(signal) = self.signal.or(self.reload.then_some(Sig::HUP)) {
            Mode::Signal { instance, signal }
        } else if self.restart.is_some() || self.captures() {
            Mode::Supervise
        } else {
            Mode::Start
        }
    }
}

/// The files that name an instance for a control action: the pidfile, the
/// supervisor pidfile, or both (clap requires one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instance<'a> {
    pub pidfile: Option<&'a Path>,
    pub supervisor: Option<&'a Path>,
}

/// What an invocation does: start a daemon (plain, or supervised), or one
/// of the control actions on the instance a pidfile names.
#[derive(Debug, PartialEq, Eq)]
pub enum Mode<'a> {
    Start,
    /// `--restart`, or log capture: a supervisor starts COMMAND (and keeps
    /// it running, with `--restart`).
    Supervise,
    Status(Instance<'a>),
    Stop {
        instance: Instance<'a>,
        signal: Sig,
        timeout: Duration,
    },
    /// `--signal` without `--stop`, or `--reload`.
    Signal {
        instance: Instance<'a>,
        signal: Sig,
    },
    RestartNow(Instance<'a>),
    ReopenLogs(Instance<'a>),
}

/// A signal for `--signal`: any number the kernel accepts, including the
/// real-time signals that nix's `Signal` cannot hold (issue 9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sig(c_int);

impl Sig {
    pub const TERM: Sig = Sig(libc::SIGTERM);
    pub const HUP: Sig = Sig(libc::SIGHUP);

    pub fn number(self) -> c_int {
        self.0
    }
}

impl fmt::Display for Sig {
    /// `SIGTERM`, `SIGRTMIN+3`, `SIGRTMAX-2`, or `signal 32` for a number
    /// without a name (glibc keeps 32 and 33 for itself).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
        match Signal::try_from(self.0) {
            Ok(signal) => f.write_str(signal.as_str()),
            Err(_) if self.0 == min => f.write_str("SIGRTMIN"),
            Err(_) if self.0 == max => f.write_str("SIGRTMAX"),
            Err(_) if (min..max).contains(&self.0) && self.0 - min <= max - self.0 => {
                write!(f, "SIGRTMIN+{}", self.0 - min)
            }
            Err(_) if (min..max).contains(&self.0) => write!(f, "SIGRTMAX-{}", max - self.0),
            Err(_) => write!(f, "signal {}", self.0),
        }
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
    // Checked here rather than with clap's `requires`, whose message would
    // name only --stop, and which clap leaves unchecked when the required
    // argument conflicts with one that is present (--stop and COMMAND).
    if !cli.stop && cli.timeout.is_some() {
        return Err(usage_error("--timeout goes with --stop"));
    }
    // Checked by hand for the same reason, and because a timeout with
    // nothing to wait for is a mistake in the calling script.
    if cli.ready_timeout.is_some() && !cli.waits_for_readiness() {
        return Err(usage_error(
            "--ready-timeout goes with --wait-ready or --ready-fd",
        ));
    }
    // -P names a supervisor, which only --restart starts; control actions
    // take it as well as -p.
    let control = cli.status
        || cli.stop
        || cli.signal.is_some()
        || cli.reload
        || cli.restart_now
        || cli.reopen_logs;
    if cli.supervisor_pidfile.is_some() && !control && !cli.captures() && cli.restart.is_none() {
        return Err(usage_error(
            "--supervisor-pidfile goes with --restart or log capture",
        ));
    }
    // Rotation and timestamps are about files.
    let files = cli.stdout.is_some() || cli.stderr.is_some();
    for (given, name) in [
        (cli.log_max_size.is_some(), "--log-max-size"),
        (cli.log_timestamps, "--log-timestamps"),
    ] {
        if given && !files {
            return Err(usage_error(&format!(
                "{name} needs an output file (-o/--stdout or -e/--stderr)"
            )));
        }
    }
    if let (Some(delay), Some(max)) = (cli.restart_delay, cli.restart_max_delay)
        && delay > max
    {
        return Err(usage_error(
            "--restart-delay cannot be longer than --restart-max-delay",
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

/// A signal by name (`TERM`, `SIGTERM`, `term`), real-time name
/// (`RTMIN`, `RTMIN+3`, `SIGRTMAX-2`) or number (`15`, `37`: from 1 to
/// SIGRTMAX, as given).
pub fn parse_signal(s: &str) -> Result<Sig, String> {
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    // `+3` after RTMIN, `-2` after RTMAX, or nothing.
    let offset = |rest: &str, sign: char| -> Option<c_int> {
        match rest.strip_prefix(sign) {
            None if rest.is_empty() => Some(0),
            Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                digits.parse().ok()
            }
            _ => None,
        }
    };
    let number = if let Ok(n) = s.parse::<c_int>() {
        Some(n)
    } else if let Some(rest) = name.strip_prefix("RTMIN") {
        offset(rest, '+').and_then(|k| min.checked_add(k))
    } else if let Some(rest) = name.strip_prefix("RTMAX") {
        offset(rest, '-').and_then(|k| max.checked_sub(k))
    } else {
        format!("SIG{name}")
            .parse::<Signal>()
            .ok()
            .map(|signal| signal as c_int)
    };
    let named_rt = name.starts_with("RTM");
    match number {
        Some(n) if named_rt && (min..=max).contains(&n) => Ok(Sig(n)),
        Some(n) if !named_rt && (1..=max).contains(&n) => Ok(Sig(n)),
        _ => Err(format!(
            "expected a signal name like TERM or RTMIN+3, or a number from 1 to {max}"
        )),
    }
}

/// `always` or `on-failure` (`--restart=POLICY`).
fn parse_policy(s: &str) -> Result<Policy, String> {
    match s {
        "always" => Ok(Policy::Always),
        "on-failure" => Ok(Policy::OnFailure),
        _ => Err("expected always or on-failure, like --restart=on-failure".into()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn number(s: &str) -> c_int {
        parse_signal(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .number()
    }

    #[test]
    fn signals_by_name_sig_name_any_case_and_number() {
        for s in ["TERM", "SIGTERM", "term", "15"] {
            assert_eq!(number(s), libc::SIGTERM, "{s}");
        }
        assert_eq!(number("HUP"), libc::SIGHUP);
        assert_eq!(number("sigusr1"), libc::SIGUSR1);
    }

    #[test]
    fn real_time_signals_by_name_and_number() {
        let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
        assert_eq!(number("RTMIN"), min);
        assert_eq!(number("RTMIN+3"), min + 3);
        assert_eq!(number("SIGRTMIN+3"), min + 3);
        assert_eq!(number("rtmin+3"), min + 3);
        assert_eq!(number("RTMAX"), max);
        assert_eq!(number("RTMAX-2"), max - 2);
        assert_eq!(number(&(min + 3).to_string()), min + 3);
        assert_eq!(number(&max.to_string()), max);
        // Numbers are taken as given, even those glibc keeps for itself.
        assert_eq!(number("32"), 32);
    }

    #[test]
    fn out_of_range_or_malformed_signals_are_refused() {
        let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
        let beyond = format!("RTMIN+{}", max - min + 1);
        let below = format!("RTMAX-{}", max - min + 1);
        let over = (max + 1).to_string();
        for s in [
            "", "0", "-1", "BOGUS", "SIGBOGUS", "RTMIN-1", "RTMAX+1", "RTMIN+", "RTMIN+x",
            "RTMIN+ 3", "RTMINUTE", &beyond, &below, &over, "99",
        ] {
            assert!(parse_signal(s).is_err(), "{s:?} was accepted");
        }
    }

    #[test]
    fn signals_are_shown_by_their_names() {
        let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
        assert_eq!(Sig::TERM.to_string(), "SIGTERM");
        assert_eq!(Sig(min).to_string(), "SIGRTMIN");
        assert_eq!(Sig(min + 3).to_string(), "SIGRTMIN+3");
        assert_eq!(Sig(max - 2).to_string(), "SIGRTMAX-2");
        assert_eq!(Sig(max).to_string(), "SIGRTMAX");
        assert_eq!(Sig(32).to_string(), "signal 32");
    }

    #[test]
    fn reload_is_signal_hup_and_signal_alone_is_the_signal_mode() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).expect("parses");
        let cli = parse(&["daemonize", "-p", "x.pid", "--reload"]);
        let instance = Instance {
            pidfile: Some(Path::new("x.pid")),
            supervisor: None,
        };
        assert_eq!(
            cli.mode(),
            Mode::Signal {
                instance,
                signal: Sig::HUP
            }
        );
        let cli = parse(&["daemonize", "-p", "x.pid", "--signal", "USR1"]);
        assert_eq!(
            cli.mode(),
            Mode::Signal {
                instance,
                signal: Sig(libc::SIGUSR1)
            }
        );
        let cli = parse(&["daemonize", "-p", "x.pid", "--stop", "--signal", "INT"]);
        assert!(matches!(cli.mode(), Mode::Stop { signal, .. } if signal.number() == libc::SIGINT));
        let cli = parse(&["daemonize", "-p", "x.pid", "--", "true"]);
        assert_eq!(cli.mode(), Mode::Start);
        let cli = parse(&["daemonize", "-r", "-p", "x.pid", "--", "true"]);
        assert_eq!(cli.mode(), Mode::Supervise);
        assert_eq!(cli.restart, Some(Policy::Always));
        let cli = parse(&["daemonize", "--restart=on-failure", "true"]);
        assert_eq!(cli.restart, Some(Policy::OnFailure));
        // `-r COMMAND`: the command is not taken for a policy.
        let cli = parse(&["daemonize", "-r", "sleep", "5"]);
        assert_eq!(cli.restart, Some(Policy::Always));
        assert_eq!(cli.command, ["sleep", "5"]);
        let cli = parse(&["daemonize", "-P", "s.pid", "--restart-now"]);
        assert_eq!(
            cli.mode(),
            Mode::RestartNow(Instance {
                pidfile: None,
                supervisor: Some(Path::new("s.pid"))
            })
        );
        for args in [
            &["daemonize", "-p", "x.pid", "--reload", "--stop"][..],
            &["daemonize", "-p", "x.pid", "--reload", "--signal", "HUP"],
            &["daemonize", "-p", "x.pid", "--status", "--signal", "HUP"],
            &["daemonize", "--reload"],
            &["daemonize", "--signal", "HUP"],
            &["daemonize", "--restart-now"],
            &["daemonize", "--restart=sometimes", "true"],
            &["daemonize", "--restart-delay", "1", "true"],
            &["daemonize", "-r", "--watchdog", "5", "true"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?} was accepted");
        }
    }
}
