//! Shared harness for the integration tests.
//!
//! - [`init`] makes the test process a child subreaper, so every daemon is
//!   reparented to it (its PPID is [`test_pid`]) and can be reaped by it.
//! - [`daemonize`] and [`shell`] build commands with a scrubbed environment,
//!   run in their own temporary directory; [`Cmd::run`] returns the exit code
//!   and output without depending on the daemon's descriptors.
//! - [`DaemonSpec`] is a daemon command that reports its PID through a file
//!   and carries a unique marker in its command line; [`DaemonSpec::start`]
//!   returns a [`Daemon`] guard that kills (by PID) and reaps it on drop.
//! - [`procfs`] reads what the kernel says about a process.
//! - [`wait_until`] polls with a deadline: nothing waits with a fixed sleep.
//! - [`assert_no_leftover`] checks that no live process carries a marker.

#![allow(dead_code)]

pub mod procfs;

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use tempfile::TempDir;

/// How long anything may take before a test gives up. Generous: it is only
/// reached when something is wrong, never on the way to passing.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// How often [`wait_until`] checks its condition.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_daemonize")
}

/// Call at the top of every test. Makes this process a child subreaper, so
/// orphaned daemons are reparented to it rather than to init: their PPID is
/// [`test_pid`], and [`Daemon`] can reap them. Idempotent.
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        nix::sys::prctl::set_child_subreaper(true).expect("cannot become a child subreaper");
    });
}

/// This test process's PID.
pub fn test_pid() -> i32 {
    i32::try_from(std::process::id()).expect("PID fits in pid_t")
}

// ---------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------

/// Polls `probe` until it returns `Some`, and returns that value. Panics
/// with `what` once `timeout` has passed.
#[track_caller]
pub fn wait_for<T>(timeout: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Polls `cond` until it holds. Panics with `what` once `timeout` has passed.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    wait_for(timeout, what, || cond().then_some(()))
}

/// Waits until `path` holds a PID followed by a newline (so a half-written
/// file is never read) and returns it.
#[track_caller]
pub fn wait_for_pid_file(path: &Path, timeout: Duration) -> i32 {
    wait_for(timeout, &format!("a PID in {}", path.display()), || {
        read_pid(path)
    })
}

/// The PID in a pidfile (decimal and a newline), or `None` (no file yet,
/// none in it, or half written).
pub fn read_pid(path: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(path).ok()?;
    text.strip_suffix('\n')?.trim().parse().ok()
}

/// Waits until the file at `path` has exactly `expected` as its content.
#[track_caller]
pub fn wait_for_content(path: &Path, expected: &str) {
    let mut last = None;
    let what = format!("{} to contain {expected:?}", path.display());
    let found = wait_for_optional(TIMEOUT, || {
        last = std::fs::read_to_string(path).ok();
        (last.as_deref() == Some(expected)).then_some(())
    });
    assert!(
        found.is_some(),
        "timed out waiting for {what}; it holds {last:?}"
    );
}

/// Like [`wait_for`], but returns `None` at the deadline instead of panicking.
pub fn wait_for_optional<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

// ---------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------

/// A command with a scrubbed environment (only `PATH`, and `LANG=C`),
/// stdin on `/dev/null`, run in a fresh temporary directory of its own.
pub struct Cmd {
    command: Command,
    dir: TempDir,
}

/// `daemonize` with the arguments still to be added.
pub fn daemonize() -> Cmd {
    Cmd::new(bin())
}

/// `SHELL -c SCRIPT SHELL`: a calling shell. The script finds the binary
/// under test in `$DAEMONIZE`; arguments added to the command are its `"$@"`.
pub fn shell(shell: &str, script: &str) -> Cmd {
    let mut cmd = Cmd::new(shell);
    cmd.arg("-c").arg(script).arg(shell).env("DAEMONIZE", bin());
    cmd
}

/// The `PATH` that commands run with: this process's own.
pub fn inherited_path() -> OsString {
    std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into())
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Cmd {
        let dir = tempfile::tempdir().expect("cannot create a temporary directory");
        let mut command = Command::new(program);
        command
            .env_clear()
            .env("PATH", inherited_path())
            .env("LANG", "C")
            .current_dir(dir.path())
            .stdin(Stdio::null());
        Cmd { command, dir }
    }

    /// The command's own temporary directory (its working directory unless
    /// [`Cmd::current_dir`] changed it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Cmd {
        self.command.arg(arg);
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    pub fn env(&mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Cmd {
        self.command.env(name, value);
        self
    }

    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Cmd {
        self.command.current_dir(dir);
        self
    }

    /// The underlying command, for stdio or `pre_exec` set-ups.
    pub fn command_mut(&mut self) -> &mut Command {
        &mut self.command
    }

    /// Runs to completion with stdout and stderr captured in files (not
    /// pipes, so a descriptor leaked to a daemon cannot make this hang).
    /// Panics if the process has not exited within [`TIMEOUT`].
    #[track_caller]
    pub fn run(&mut self) -> Output {
        let mut stdout = tempfile::tempfile().expect("cannot create a capture file");
        let mut stderr = tempfile::tempfile().expect("cannot create a capture file");
        self.command
            .stdout(stdout.try_clone().expect("dup capture file"))
            .stderr(stderr.try_clone().expect("dup capture file"));
        let mut child = self
            .command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", self.command));
        let status = wait_for_optional(TIMEOUT, || child.try_wait().expect("try_wait"));
        let Some(status) = status else {
            // Our own direct child: safe to kill by its handle.
            let _ = child.kill();
            let _ = child.wait();
            panic!("{:?} did not exit within {TIMEOUT:?}", self.command);
        };
        Output {
            status,
            code: status.code(),
            stdout: read_capture(&mut stdout),
            stderr: read_capture(&mut stderr),
        }
    }
}

fn read_capture(file: &mut File) -> String {
    let mut bytes = Vec::new();
    file.rewind().expect("rewind capture file");
    file.read_to_end(&mut bytes).expect("read capture file");
    String::from_utf8_lossy(&bytes).into_owned()
}

/// How a command ended.
pub struct Output {
    pub status: ExitStatus,
    /// `None` if it was killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

impl Output {
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Output {
        assert_eq!(self.code, Some(code), "unexpected exit status: {self:?}");
        self
    }

    /// Exit 0 and nothing printed: daemonize is silent on success.
    #[track_caller]
    pub fn assert_started(&self) -> &Output {
        self.assert_code(0);
        assert_eq!(self.stdout, "", "stdout not empty: {self:?}");
        assert_eq!(self.stderr, "", "stderr not empty: {self:?}");
        self
    }

    /// Exit `code`, nothing on stdout, and one line on stderr starting with
    /// `daemonize: ` and containing every one of `words`.
    #[track_caller]
    pub fn assert_failed(&self, code: i32, words: &[&str]) -> &Output {
        self.assert_code(code);
        assert_eq!(self.stdout, "", "stdout not empty: {self:?}");
        assert!(
            self.stderr.starts_with("daemonize: ") && self.stderr.lines().count() == 1,
            "expected one 'daemonize: ' line on stderr: {self:?}"
        );
        for word in words {
            assert!(
                self.stderr.contains(word),
                "stderr lacks {word:?}: {self:?}"
            );
        }
        self
    }
}

// ---------------------------------------------------------------------------
// Daemons
// ---------------------------------------------------------------------------

/// A fresh marker, unique in this test process and across test processes
/// (it embeds the test PID), that GNU `sleep` accepts as a duration:
/// `1000.PPPPPPPNNNNN`. Fixed width, so no marker is a prefix of another.
pub fn unique_marker() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("1000.{:07}{n:05}", std::process::id())
}

/// A daemon command: `sh -c SCRIPT PIDFILE [ARG]...`. The script runs an
/// optional prelude, writes the shell's PID (`$$`) to PIDFILE, then either
/// execs `sleep MARKER` (the default) or, with [`DaemonSpec::hold`], stays the
/// shell, blocked opening a FIFO that nobody writes, so its own argv and
/// environment stay observable.
pub struct DaemonSpec {
    pub pidfile: PathBuf,
    pub marker: String,
    prelude: String,
    hold: Option<PathBuf>,
    args: Vec<OsString>,
}

impl DaemonSpec {
    /// The PID file goes into `dir`.
    pub fn new(dir: &Path) -> DaemonSpec {
        let marker = unique_marker();
        DaemonSpec {
            pidfile: dir.join(format!("daemon-{marker}.pid")),
            marker,
            prelude: String::new(),
            hold: None,
            args: Vec::new(),
        }
    }

    /// Shell code to run before the PID is written (so once the PID file
    /// exists, the prelude has finished).
    pub fn prelude(mut self, script: &str) -> DaemonSpec {
        self.prelude = script.to_owned();
        self
    }

    /// Keep the shell as the daemon instead of exec'ing `sleep`.
    pub fn hold(mut self) -> DaemonSpec {
        let fifo = self.pidfile.with_extension("hold");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).expect("mkfifo");
        self.hold = Some(fifo);
        self
    }

    /// Extra arguments for the shell (`$1`...), after the PID file.
    pub fn arg(mut self, arg: impl Into<OsString>) -> DaemonSpec {
        self.args.push(arg.into());
        self
    }

    pub fn script(&self) -> String {
        let mut script = format!(": {}\n", self.marker);
        if !self.prelude.is_empty() {
            script.push_str(&self.prelude);
            script.push('\n');
        }
        script.push_str("echo $$ > \"$0\"\n");
        match &self.hold {
            Some(fifo) => script.push_str(&format!("read _ < '{}'\n", fifo.display())),
            None => script.push_str(&format!("exec sleep {}\n", self.marker)),
        }
        script
    }

    /// `sh -c SCRIPT PIDFILE [ARG]...`: COMMAND and its arguments.
    pub fn argv(&self) -> Vec<OsString> {
        let mut argv: Vec<OsString> = vec!["sh".into(), "-c".into(), self.script().into()];
        argv.push(self.pidfile.clone().into());
        argv.extend(self.args.iter().cloned());
        argv
    }

    /// The argv that the daemon finally runs as, once it has exec'd.
    pub fn final_argv(&self) -> Vec<OsString> {
        match self.hold {
            Some(_) => self.argv(),
            None => vec!["sleep".into(), self.marker.clone().into()],
        }
    }

    /// Waits for the PID file, takes ownership of the daemon, and waits until
    /// it runs its final program (so exec-time state is what is observed).
    #[track_caller]
    pub fn start(&self) -> Daemon {
        let daemon = Daemon::new(wait_for_pid_file(&self.pidfile, TIMEOUT));
        let expected = self.final_argv();
        wait_until(TIMEOUT, "the daemon to run its final program", || {
            assert!(daemon.is_alive(), "daemon {} died", daemon.pid());
            procfs::cmdline(daemon.pid()).is_ok_and(|argv| argv == expected)
        });
        daemon
    }
}

/// A daemon started by `daemonize OPTIONS -- SPEC`, with what it needs
/// kept alive. Fields drop in order: the daemon is killed before its
/// directory goes.
pub struct Launched {
    pub daemon: Daemon,
    pub spec: DaemonSpec,
    pub cmd: Cmd,
}

/// Runs `cmd OPTIONS -- SPEC` (`cmd` is daemonize or a shell that runs it),
/// asserts a silent success, and takes the daemon over.
#[track_caller]
pub fn launch_with<S: AsRef<OsStr>>(
    mut cmd: Cmd,
    spec: DaemonSpec,
    options: impl IntoIterator<Item = S>,
) -> Launched {
    cmd.args(options)
        .arg("--")
        .args(spec.argv())
        .run()
        .assert_started();
    let daemon = spec.start();
    Launched { daemon, spec, cmd }
}

/// An unrelated process of our own (`sleep MARKER`), killed by its handle
/// on drop.
pub struct Bystander {
    child: Child,
    marker: String,
}

impl Bystander {
    pub fn spawn() -> Bystander {
        Bystander::spawn_with(Stdio::null())
    }

    /// With `stdin` as its standard input (a file it then holds open).
    pub fn spawn_with(stdin: Stdio) -> Bystander {
        let marker = unique_marker();
        let child = Command::new("sleep")
            .arg(&marker)
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sleep");
        let bystander = Bystander { child, marker };
        wait_until(TIMEOUT, "the bystander to run sleep", || {
            procfs::cmdline(bystander.pid())
                .is_ok_and(|argv| argv.last().is_some_and(|a| a == bystander.marker.as_str()))
        });
        bystander
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("PID fits in pid_t")
    }

    /// Still running: not exited, not even a zombie.
    #[track_caller]
    pub fn assert_untouched(&mut self) {
        assert_eq!(
            self.child.try_wait().expect("try_wait"),
            None,
            "the bystander was signalled"
        );
        assert!(procfs::is_alive(self.pid()));
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Owns a running daemon by PID. On drop (also when a test panics) it sends
/// SIGKILL to that PID and reaps it; it is this process's child once
/// daemonize has exited, thanks to [`init`]. Never kills by name.
#[derive(Debug)]
pub struct Daemon {
    pid: i32,
}

impl Daemon {
    pub fn new(pid: i32) -> Daemon {
        assert!(
            pid > 1 && pid != test_pid(),
            "refusing to own PID {pid} as a daemon"
        );
        Daemon { pid }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn is_alive(&self) -> bool {
        procfs::is_alive(self.pid)
    }

    pub fn stat(&self) -> procfs::Stat {
        procfs::stat(self.pid).expect("read /proc/PID/stat")
    }

    pub fn status(&self) -> procfs::Status {
        procfs::status(self.pid).expect("read /proc/PID/status")
    }

    pub fn fds(&self) -> std::collections::BTreeMap<i32, PathBuf> {
        procfs::fds(self.pid).expect("list /proc/PID/fd")
    }

    pub fn fd_numbers(&self) -> Vec<i32> {
        procfs::fd_numbers(self.pid).expect("list /proc/PID/fd")
    }

    pub fn cwd(&self) -> PathBuf {
        procfs::cwd(self.pid).expect("read /proc/PID/cwd")
    }

    pub fn cmdline(&self) -> Vec<OsString> {
        procfs::cmdline(self.pid).expect("read /proc/PID/cmdline")
    }

    pub fn environ(&self) -> Vec<OsString> {
        procfs::environ(self.pid).expect("read /proc/PID/environ")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.pid);
        // ESRCH: already gone (reaped). Anything else is ignored as well:
        // a destructor must not panic while a test is already unwinding.
        let _ = kill(pid, Signal::SIGKILL);
        // ECHILD (not our child yet, e.g. daemonize still runs) ends it too.
        while let Err(Errno::EINTR) = waitpid(pid, None) {}
    }
}

// ---------------------------------------------------------------------------
// Leftovers
// ---------------------------------------------------------------------------

/// Live (non-zombie) processes whose command line contains `marker`, with
/// their command lines.
pub fn processes_with_marker(marker: &str) -> Vec<(i32, String)> {
    let needle = marker.as_bytes();
    procfs::pids()
        .into_iter()
        .filter(|&pid| pid != test_pid())
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let found = raw.windows(needle.len()).any(|w| w == needle);
            (found && procfs::is_alive(pid)).then(|| {
                let argv = procfs::cmdline(pid).unwrap_or_default();
                let shown: Vec<_> = argv.iter().map(|a| a.to_string_lossy()).collect();
                (pid, shown.join(" "))
            })
        })
        .collect()
}

/// No live process carries `marker`: neither a daemon nor a stray copy of
/// daemonize (whose argv holds the daemon command and so the marker).
#[track_caller]
pub fn assert_no_leftover(marker: &str) {
    let found = processes_with_marker(marker);
    assert!(
        found.is_empty(),
        "processes with marker {marker} are still running: {found:?}"
    );
}

/// `OsStr` bytes as a lossy string, for messages.
pub fn lossy(s: &OsStr) -> String {
    String::from_utf8_lossy(s.as_bytes()).into_owned()
}
