//! Readiness (docs/design.md, "The readiness channel": `--wait-ready`,
//! `--ready-fd`, `--ready-timeout`):
//! daemonize returns only once the daemon says it is ready, and a daemon
//! that dies, reports an error or times out first is a failed start (125)
//! that leaves nothing behind.
//!
//! The daemon is `tests/helpers/notify.py`, run by `/usr/bin/python3` and
//! driven by its arguments (see [`Helper`]). To show that daemonize does not
//! return early, the helper waits for a *gate* file that the test creates
//! only after it has seen daemonize still running; nothing here depends on
//! timing to pass. (The tests with a 1 s `--ready-timeout` measure when the
//! helper finished its set-up, and retry an attempt in which it was too slow
//! for the result to mean anything.) Each test gives daemonize its own
//! `TMPDIR`, which root's daemonize leaves alone: its notification directory
//! is in `/run`, found through the daemon's `NOTIFY_SOCKET` and shown to be
//! gone afterwards. Tests of other callers run daemonize itself as `nobody`.
//!
//! Needs `/usr/bin/python3` (standard library only) and a `nobody` user.

mod common;

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use common::{
    Cmd, Daemon, Output, TIMEOUT, assert_no_leftover, daemonize, init, procfs, read_pid, shell,
    test_pid, unique_marker, wait_for_optional, wait_until,
};
use nix::sys::signal::{SigHandler, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

/// Absolute: the `python3` in `PATH` may be a shim that other users cannot run.
const PYTHON: &str = "/usr/bin/python3";

/// How long a test watches daemonize keep waiting while the gate is closed.
/// A lower bound on what is checked, never something a test waits *for*.
const HOLD_WINDOW: Duration = Duration::from_millis(300);

/// How long daemonize may take to finish once it should (generous: the
/// slowest path is a timeout of 1 s plus a 3 s grace before SIGKILL).
const FINISH_LIMIT: Duration = Duration::from_secs(30);

const NOBODY_UID: u32 = 65534;
const NOGROUP_GID: u32 = 65534;

/// Where root's daemonize makes the socket's directory.
const ROOT_BASE: &str = "/run";

fn helper_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helpers/notify.py")
}

/// `CLOCK_MONOTONIC` in seconds: the clock of Python's `time.monotonic()`.
fn monotonic() -> f64 {
    let mut ts = nix::libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { nix::libc::clock_gettime(nix::libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// A `CLOCK_MONOTONIC` reading that the helper wrote with `stamp`.
fn read_stamp(path: &Path) -> Option<f64> {
    fs::read_to_string(path)
        .ok()?
        .strip_suffix('\n')?
        .parse()
        .ok()
}

/// The PID in `the daemon (pid N) ...`.
#[track_caller]
fn pid_in_message(stderr: &str) -> i32 {
    let rest = stderr
        .split_once("the daemon (pid ")
        .unwrap_or_else(|| panic!("no daemon PID in the message: {stderr:?}"))
        .1;
    rest.split_once(')')
        .and_then(|(pid, _)| pid.parse().ok())
        .unwrap_or_else(|| panic!("malformed daemon PID in the message: {stderr:?}"))
}

/// Asserts that the daemon has ended (a zombie counts as ended). If it has
/// not, the guard kills it. Once its PID is gone entirely, the guard is
/// released rather than left to signal a PID that may have been reused.
#[track_caller]
fn assert_gone(daemon: Daemon) {
    let pid = daemon.pid();
    assert!(!daemon.is_alive(), "the daemon (pid {pid}) still runs");
    if procfs::stat(pid).is_err() {
        std::mem::forget(daemon);
    }
}

// ---------------------------------------------------------------------------
// A test's files and its daemon program
// ---------------------------------------------------------------------------

/// A test's own directory: PID files, gates, logs, and `tmp/`, the `TMPDIR`
/// that daemonize makes its notification directory in.
struct Fixture {
    dir: TempDir,
    tmp: PathBuf,
    script: PathBuf,
    marker: String,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("cannot create a temporary directory");
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        Fixture {
            dir,
            tmp,
            script: helper_script(),
            marker: unique_marker(),
        }
    }

    /// For a daemon that runs as `nobody`: the directory is writable by
    /// everyone (for its PID file) and sticky, like `/tmp` (a directory
    /// anyone may rename things in could not be on the way to a socket),
    /// `tmp/` can be traversed, and the helper is a readable copy, whatever
    /// the permissions of the checkout.
    fn for_other_users() -> Fixture {
        let mut fx = Fixture::new();
        let mode = |path: &Path, mode| {
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        };
        mode(fx.dir.path(), 0o1777);
        mode(&fx.tmp, 0o755);
        let script = fx.dir.path().join("notify.py");
        fs::copy(&fx.script, &script).unwrap();
        mode(&script, 0o644);
        fx.script = script;
        fx
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The daemon program: `python3 notify.py mark MARKER`, then actions.
    fn helper(&self) -> Helper {
        Helper {
            argv: vec![
                PYTHON.into(),
                self.script.clone().into(),
                "mark".into(),
                self.marker.clone().into(),
            ],
        }
    }

    /// `daemonize` with `TMPDIR` set to this fixture's `tmp/`.
    fn daemonize(&self) -> Cmd {
        let mut cmd = daemonize();
        cmd.env("TMPDIR", &self.tmp);
        cmd
    }

    /// Creates a gate file that the helper waits for.
    fn open(&self, gate: &Path) {
        fs::write(gate, "").unwrap();
    }

    /// Nothing was left in (or made in) `TMPDIR`. With `env_file` (where
    /// the helper wrote `$NOTIFY_SOCKET`), also that the socket was in a
    /// directory of its own directly under `/run` (root's daemonize), and
    /// is gone with it.
    #[track_caller]
    fn assert_notify_dir_removed(&self, env_file: Option<&Path>) {
        if let Some(env_file) = env_file {
            assert_socket_and_dir_removed(&notify_socket_from(env_file), Path::new(ROOT_BASE));
        }
        let left: Vec<_> = fs::read_dir(&self.tmp)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(left.is_empty(), "left in TMPDIR: {left:?}");
    }
}

/// `socket` was `BASE/daemonize.XXXXXX/notify`, and both it and its
/// directory are gone.
#[track_caller]
fn assert_socket_and_dir_removed(socket: &Path, base: &Path) {
    let dir = socket.parent().expect("the socket has a directory");
    assert_eq!(dir.parent(), Some(base), "socket {socket:?}");
    let name = dir.file_name().unwrap().to_string_lossy();
    assert!(
        name.starts_with("daemonize.") && name.len() == "daemonize.XXXXXX".len(),
        "socket {socket:?}"
    );
    assert_eq!(socket.file_name().unwrap(), "notify");
    assert!(
        fs::symlink_metadata(socket).is_err(),
        "{socket:?} still exists"
    );
    assert!(fs::symlink_metadata(dir).is_err(), "{dir:?} still exists");
}

/// The `NOTIFY_SOCKET` in a process's environment, if any.
fn notify_socket_of(pid: i32) -> Option<PathBuf> {
    procfs::environ(pid)
        .expect("read /proc/PID/environ")
        .iter()
        .find_map(|v| v.as_encoded_bytes().strip_prefix(b"NOTIFY_SOCKET="))
        .map(|v| PathBuf::from(OsStr::new(std::str::from_utf8(v).unwrap())))
}

/// Sets the uid and gid (and no supplementary groups) that `cmd` runs as.
fn as_user(cmd: &mut Cmd, uid: u32, gid: u32) -> &mut Cmd {
    cmd.command_mut().uid(uid).gid(gid);
    cmd
}

/// daemonize itself run by nobody, from a directory nobody may enter.
fn daemonize_as_nobody() -> Cmd {
    let mut cmd = daemonize();
    fs::set_permissions(cmd.dir(), fs::Permissions::from_mode(0o777)).unwrap();
    as_user(&mut cmd, NOBODY_UID, NOGROUP_GID);
    cmd
}

/// `cmd` starts with `signal`'s disposition set to `handler` (as `nohup`
/// sets SIGHUP's to ignore), whatever this test process inherited.
fn with_disposition(cmd: &mut Cmd, signal: Signal, handler: SigHandler) {
    // SAFETY: the closure runs in the forked child before exec; it makes one
    // signal(2) call, which is async-signal-safe, and allocates nothing.
    unsafe {
        cmd.command_mut().pre_exec(move || {
            nix::sys::signal::signal(signal, handler)
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
}

/// A directory made by root with `mode` (umask aside).
fn dir_with_mode(path: &Path, mode: u32) {
    fs::create_dir(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// The socket path that the helper's `env FILE` action wrote.
#[track_caller]
fn notify_socket_from(env_file: &Path) -> PathBuf {
    let text = fs::read_to_string(env_file)
        .unwrap_or_else(|e| panic!("the helper did not write {env_file:?}: {e}"));
    let path = text.strip_suffix('\n').unwrap_or(&text);
    assert!(
        path.starts_with('/'),
        "NOTIFY_SOCKET is not an absolute path: {path:?}"
    );
    PathBuf::from(path)
}

/// The argv of `tests/helpers/notify.py`, one action at a time. After its
/// last action the helper waits until it is killed.
#[derive(Clone)]
struct Helper {
    argv: Vec<OsString>,
}

impl Helper {
    fn action(mut self, action: &str, args: &[&OsStr]) -> Helper {
        self.argv.push(action.into());
        self.argv.extend(args.iter().map(|a| a.to_os_string()));
        self
    }

    /// One datagram to `$NOTIFY_SOCKET`.
    fn send(self, text: &str) -> Helper {
        self.action("send", &[text.as_ref()])
    }

    fn write(self, fd: i32, text: &str) -> Helper {
        self.action("write", &[fd.to_string().as_ref(), text.as_ref()])
    }

    fn close(self, fd: i32) -> Helper {
        self.action("close", &[fd.to_string().as_ref()])
    }

    /// A line on standard output.
    fn print(self, text: &str) -> Helper {
        self.action("print", &[text.as_ref()])
    }

    fn pid(self, file: &Path) -> Helper {
        self.action("pid", &[file.as_os_str()])
    }

    /// Writes `$NOTIFY_SOCKET` to `file`.
    fn env(self, file: &Path) -> Helper {
        self.action("env", &[file.as_os_str()])
    }

    /// Writes `time.monotonic()` to `file`.
    fn stamp(self, file: &Path) -> Helper {
        self.action("stamp", &[file.as_os_str()])
    }

    /// Waits until `gate` exists.
    fn wait(self, gate: &Path) -> Helper {
        self.action("wait", &[gate.as_os_str()])
    }

    fn ignore(self, signal: &str) -> Helper {
        self.action("ignore", &[signal.as_ref()])
    }

    fn kill(self, signal: &str) -> Helper {
        self.action("kill", &[signal.as_ref()])
    }

    /// Tries to pass descriptor 0 to the socket; the outcome goes to `result`.
    fn send_fd(self, result: &Path) -> Helper {
        self.action("send-fd", &[result.as_os_str()])
    }

    /// Sends `signal` to the helper's parent: daemonize, its subreaper.
    fn kill_parent(self, signal: &str) -> Helper {
        self.action("kill-parent", &[signal.as_ref()])
    }

    fn exit(self, code: i32) -> Helper {
        self.action("exit", &[code.to_string().as_ref()])
    }

    /// The remaining actions run in a child of the helper.
    fn fork(self) -> Helper {
        self.action("fork", &[])
    }

    /// The remaining actions run in a grandchild whose parent has exited.
    fn orphan(self) -> Helper {
        self.action("orphan", &[])
    }

    /// The helper drops root by itself to `uid` (and gid `uid`).
    fn become_user(self, uid: u32) -> Helper {
        self.action("become", &[uid.to_string().as_ref()])
    }

    /// Tries to replace the socket's directory with a symlink to `target`;
    /// the outcome (`ok` or an errno name) goes to `result`.
    fn swap_dir(self, target: &Path, result: &Path) -> Helper {
        self.action("swap-dir", &[target.as_os_str(), result.as_os_str()])
    }

    /// Tries to create a directory in the socket's directory.
    fn try_create(self, result: &Path) -> Helper {
        self.action("try-create", &[result.as_os_str()])
    }

    /// Tries to remove the socket.
    fn try_unlink(self, result: &Path) -> Helper {
        self.action("try-unlink", &[result.as_os_str()])
    }

    /// READY=1 for `--wait-ready`, a newline on descriptor 3 for `--ready-fd=3`.
    fn send_or_write(self, option: &str) -> Helper {
        match option {
            "--wait-ready" => self.send("READY=1"),
            _ => self.write(3, "\n"),
        }
    }

    fn argv(&self) -> &[OsString] {
        &self.argv
    }
}

// ---------------------------------------------------------------------------
// daemonize running in the background
// ---------------------------------------------------------------------------

/// daemonize started without waiting for it, output captured in files.
/// Killed (it is our own child, by its handle) if still running on drop.
struct Running {
    child: Child,
    stdout: File,
    stderr: File,
    spawned: Instant,
    exited: Option<(ExitStatus, Instant)>,
    _cmd: Cmd,
}

fn spawn(mut cmd: Cmd) -> Running {
    let stdout = tempfile::tempfile().expect("cannot create a capture file");
    let stderr = tempfile::tempfile().expect("cannot create a capture file");
    cmd.command_mut()
        .stdout(stdout.try_clone().expect("dup capture file"))
        .stderr(stderr.try_clone().expect("dup capture file"));
    let spawned = Instant::now();
    let child = cmd
        .command_mut()
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.command_mut()));
    Running {
        child,
        stdout,
        stderr,
        spawned,
        exited: None,
        _cmd: cmd,
    }
}

/// A whole capture file, read without moving the offset daemonize writes at.
fn read_capture(file: &File) -> String {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = file
            .read_at(&mut buf, bytes.len() as u64)
            .expect("read capture");
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

impl Running {
    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    /// Whether daemonize has exited (reaping it the first time).
    fn has_exited(&mut self) -> bool {
        if self.exited.is_none()
            && let Some(status) = self.child.try_wait().expect("try_wait")
        {
            self.exited = Some((status, Instant::now()));
        }
        self.exited.is_some()
    }

    fn stderr_so_far(&self) -> String {
        read_capture(&self.stderr)
    }

    /// How daemonize ended; it must have exited.
    fn output(&self) -> Output {
        let (status, _) = self.exited.expect("daemonize has not exited");
        Output {
            status,
            code: status.code(),
            stdout: read_capture(&self.stdout),
            stderr: read_capture(&self.stderr),
        }
    }

    /// Waits for daemonize to exit (at most [`FINISH_LIMIT`]).
    #[track_caller]
    fn finish(&mut self) -> Output {
        if wait_for_optional(FINISH_LIMIT, || self.has_exited().then_some(())).is_none() {
            panic!(
                "daemonize did not exit within {FINISH_LIMIT:?}; stderr so far: {:?}",
                self.stderr_so_far()
            );
        }
        self.output()
    }

    /// From spawn to the moment its exit was seen (an upper bound on how
    /// long it ran; a lower bound too, to within the polling interval).
    fn elapsed(&self) -> Duration {
        let (_, at) = self.exited.expect("daemonize has not exited");
        at - self.spawned
    }

    /// Watches daemonize for [`HOLD_WINDOW`]: it must not exit meanwhile.
    #[track_caller]
    fn assert_still_running(&mut self, why: &str) {
        let end = Instant::now() + HOLD_WINDOW;
        while Instant::now() < end {
            if self.has_exited() {
                panic!("daemonize returned {why}: {:?}", self.output());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the helper to write its PID to `file`. Fails at once,
    /// showing daemonize's output, if daemonize exits before that.
    #[track_caller]
    fn wait_for_pid(&mut self, file: &Path) -> i32 {
        let found = wait_for_optional(TIMEOUT, || {
            if let Some(pid) = read_pid(file) {
                return Some(Some(pid));
            }
            // Looked at again after the exit: the helper may have just written it.
            self.has_exited().then(|| read_pid(file))
        });
        match found {
            Some(Some(pid)) => pid,
            Some(None) => panic!(
                "daemonize exited before the daemon wrote {file:?}: {:?}",
                self.output()
            ),
            None => panic!("timed out waiting for a PID in {file:?}"),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.has_exited() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs daemonize to completion.
#[track_caller]
fn run(cmd: Cmd) -> (Output, Duration) {
    let mut running = spawn(cmd);
    let output = running.finish();
    (output, running.elapsed())
}

/// Exit 125 and a message on stderr naming every one of `words`; nothing on
/// stdout. The message may go on over several lines (the log tail).
#[track_caller]
fn assert_failed_start(output: &Output, words: &[&str]) {
    output.assert_code(125);
    assert_eq!(output.stdout, "", "stdout not empty: {output:?}");
    assert!(
        output.stderr.starts_with("daemonize: "),
        "no 'daemonize: ' message: {output:?}"
    );
    for word in words {
        assert!(
            output.stderr.contains(word),
            "stderr lacks {word:?}: {output:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// --wait-ready: success
// ---------------------------------------------------------------------------

#[test]
fn wait_ready_returns_only_after_ready_and_writes_the_pidfile_then() {
    init();
    let fx = Fixture::new();
    let (daemon_pid, gate, pidfile) = (fx.file("daemon.pid"), fx.file("gate"), fx.file("app.pid"));
    let helper = fx.helper().pid(&daemon_pid).wait(&gate).send("READY=1");
    let mut cmd = fx.daemonize();
    cmd.arg("--wait-ready")
        .arg("-p")
        .arg(&pidfile)
        .arg("--")
        .args(helper.argv());
    let mut running = spawn(cmd);
    let daemon = Daemon::new(running.wait_for_pid(&daemon_pid));

    running.assert_still_running("before the daemon sent READY=1");
    let before = fs::read_to_string(&pidfile).unwrap_or_default();
    assert_eq!(before, "", "the pidfile was written before readiness");

    fx.open(&gate);
    running.finish().assert_started();
    assert_eq!(
        fs::read_to_string(&pidfile).unwrap(),
        format!("{}\n", daemon.pid())
    );
    assert!(daemon.is_alive(), "the daemon died after it was ready");
    fx.assert_notify_dir_removed(None);
}

/// A signal that reaches daemonize between READY=1 and the pidfile's write
/// (here sent by the daemon right after READY=1, so daemonize always sees
/// the datagram first) must not end it with a locked pidfile that names
/// nobody: the start completes, the pidfile names the daemon.
#[test]
fn a_signal_right_after_ready_1_never_leaves_a_pidfile_without_a_pid() {
    init();
    for _ in 0..10 {
        let fx = Fixture::new();
        let (daemon_pid, pidfile) = (fx.file("daemon.pid"), fx.file("app.pid"));
        let helper = fx
            .helper()
            .pid(&daemon_pid)
            .send("READY=1")
            .kill_parent("TERM");
        let mut cmd = fx.daemonize();
        cmd.arg("--wait-ready")
            .arg("-p")
            .arg(&pidfile)
            .arg("--")
            .args(helper.argv());
        let mut running = spawn(cmd);
        let daemon = Daemon::new(running.wait_for_pid(&daemon_pid));
        running.finish().assert_started();
        assert_eq!(
            fs::read_to_string(&pidfile).unwrap(),
            format!("{}\n", daemon.pid())
        );
        assert!(daemon.is_alive());
    }
}

/// Nobody can pass descriptors to the socket (closing one another user
/// prepared could block daemonize for an hour): the sender's sendmsg fails,
/// and the start goes on.
#[test]
fn descriptors_passed_to_the_notify_socket_are_refused() {
    init();
    let fx = Fixture::new();
    let (daemon_pid, result) = (fx.file("daemon.pid"), fx.file("result"));
    let helper = fx
        .helper()
        .pid(&daemon_pid)
        .send_fd(&result)
        .send("READY=1");
    let mut cmd = fx.daemonize();
    cmd.arg("--wait-ready").arg("--").args(helper.argv());
    let mut running = spawn(cmd);
    let _daemon = Daemon::new(running.wait_for_pid(&daemon_pid));
    running.finish().assert_started();
    assert_eq!(fs::read_to_string(&result).unwrap(), "EPERM\n");
}

#[test]
fn notifications_other_than_ready_1_do_not_count() {
    init();
    let fx = Fixture::new();
    let (daemon_pid, gate) = (fx.file("daemon.pid"), fx.file("gate"));
    let helper = fx
        .helper()
        .send("READY=0")
        .send("STATUS=READY=1")
        .send("NOTREADY=1\nREADY=10\nREADY")
        .send("MAINPID=1")
        .pid(&daemon_pid)
        .wait(&gate)
        .send("READY=1");
    let mut cmd = fx.daemonize();
    cmd.arg("--wait-ready").arg("--").args(helper.argv());
    let mut running = spawn(cmd);
    let _daemon = Daemon::new(running.wait_for_pid(&daemon_pid));
    running.assert_still_running("on a notification other than READY=1");
    fx.open(&gate);
    running.finish().assert_started();
}

#[test]
fn status_lines_are_traced_under_verbose_and_one_datagram_may_hold_several_lines() {
    init();
    let fx = Fixture::new();
    let (daemon_pid, gate) = (fx.file("daemon.pid"), fx.file("gate"));
    let helper = fx
        .helper()
        .send("STATUS=warming up the caches")
        .pid(&daemon_pid)
        .wait(&gate)
        .send("STATUS=serving on port 8080\nREADY=1\n");
    let mut cmd = fx.daemonize();
    cmd.args(["-v", "--wait-ready", "--"]).args(helper.argv());
    let mut running = spawn(cmd);
    let _daemon = Daemon::new(running.wait_for_pid(&daemon_pid));
    // Traced as it arrives, while daemonize still waits.
    wait_until(TIMEOUT, "the first STATUS in the trace", || {
        running.stderr_so_far().contains("warming up the caches")
    });
    running.assert_still_running("on a STATUS line");

    fx.open(&gate);
    let output = running.finish();
    output.assert_code(0);
    assert_eq!(output.stdout, "");
    let first = output.stderr.find("warming up the caches").unwrap();
    let second = output
        .stderr
        .find("serving on port 8080")
        .unwrap_or_else(|| panic!("second STATUS not traced: {output:?}"));
    assert!(first < second, "STATUS lines out of order: {output:?}");
}

#[test]
fn status_and_ready_in_one_datagram_without_verbose_is_a_silent_start() {
    init();
    let fx = Fixture::new();
    let (daemon_pid, env_file) = (fx.file("daemon.pid"), fx.file("env"));
    let helper = fx
        .helper()
        .env(&env_file)
        .pid(&daemon_pid)
        .send("STATUS=x\nREADY=1");
    let mut cmd = fx.daemonize();
    cmd.arg("--wait-ready").arg("--").args(helper.argv());
    let mut running = spawn(cmd);
    let daemon = Daemon::new(running.wait_for_pid(&daemon_pid));
    running.finish().assert_started();
    assert!(daemon.is_alive());
    fx.assert_notify_dir_removed(Some(&env_file));
}

#[test]
fn the_detach_state_after_readiness_is_the_usual_one() {
    init();
    let fx = Fixture::new();
    let (daemon_pid, env_file, settled) =
        (fx.file("daemon.pid"), fx.file("env"), fx.file("settled"));
    // `settled` is written once the helper has closed its own sending
    // socket, so that every descriptor seen then is one it was given.
    let helper = fx
        .helper()
        .env(&env_file)
        .pid(&daemon_pid)
        .send("READY=1")
        .pid(&settled);
    let mut cmd = fx.daemonize();
    cmd.arg("--wait-ready").arg("--").args(helper.argv());
    let mut running = spawn(cmd);
    let daemon = Daemon::new(running.wait_for_pid(&daemon_pid));
    running.finish().assert_started();
    common::wait_for_pid_file(&settled, TIMEOUT);

    let pid = daemon.pid();
    let stat = daemon.stat();
    assert_eq!(stat.ppid, test_pid(), "not reparented to the subreaper");
    assert_ne!(stat.session, pid, "the daemon is a session leader");
    assert_ne!(stat.pgrp, pid, "the daemon is a process group leader");
    assert_ne!(stat.session, procfs::stat(test_pid()).unwrap().session);
    assert_eq!(stat.tty_nr, 0, "the daemon has a controlling terminal");
    assert_eq!(stat.tpgid, -1);
    assert_eq!(daemon.cwd(), Path::new("/"));
    let null = PathBuf::from("/dev/null");
    assert_eq!(
        daemon.fds(),
        [(0, null.clone()), (1, null.clone()), (2, null)].into(),
        "the notification socket or another descriptor leaked"
    );
    let socket = notify_socket_from(&env_file);
    let expected = format!("NOTIFY_SOCKET={}", socket.display());
    let environ: Vec<String> = daemon.environ().iter().map(|v| common::lossy(v)).collect();
    assert!(
        environ.contains(&expected),
        "{expected} not in the daemon's environment: {environ:?}"
    );
    fx.assert_notify_dir_removed(Some(&env_file));
}

#[test]
fn the_notify_directory_is_roots_own_in_run_and_others_may_only_pass_through() {
    init();
    let fx = Fixture::new();
    let (daemon_pid, env_file, gate) = (fx.file("daemon.pid"), fx.file("env"), fx.file("gate"));
    let helper = fx
        .helper()
        .env(&env_file)
        .pid(&daemon_pid)
        .wait(&gate)
        .send("READY=1");
    // A caller's umask changes neither mode.
    let mut cmd = shell("sh", r#"umask 077; exec "$DAEMONIZE" "$@""#);
    cmd.env("TMPDIR", &fx.tmp)
        .arg("--wait-ready")
        .arg("--")
        .args(helper.argv());
    let mut running = spawn(cmd);
    let _daemon = Daemon::new(running.wait_for_pid(&daemon_pid));
    let socket = notify_socket_from(&env_file);
    let dir = socket.parent().unwrap();
    assert_eq!(dir.parent(), Some(Path::new(ROOT_BASE)), "{socket:?}");
    let meta = fs::symlink_metadata(dir).unwrap();
    assert!(meta.is_dir(), "{dir:?}");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o711, "{dir:?}");
    assert_eq!((meta.uid(), meta.gid()), (0, 0), "{dir:?}");
    let meta = fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket(), "{socket:?}");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o777, "{socket:?}");
    assert_eq!((meta.uid(), meta.gid()), (0, 0), "{socket:?}");
    fx.open(&gate);
    running.finish().assert_started();
    fx.assert_notify_dir_removed(Some(&env_file));
}

#[test]
fn a_notify_socket_in_the_callers_environment_is_replaced() {
    init();
    let fx = Fixture::new();
    let (daemon_pid, env_file) = (fx.file("daemon.pid"), fx.file("env"));
    let helper = fx.helper().env(&env_file).pid(&daemon_pid).send("READY=1");
    let mut cmd = fx.daemonize();
    cmd.env("NOTIFY_SOCKET", "/run/systemd/notify")
        .args(["-E", "NOTIFY_SOCKET=/elsewhere", "--wait-ready", "--"])
        .args(helper.argv());
    let mut running = spawn(cmd);
    let daemon = Daemon::new(running.wait_for_pid(&daemon_pid));
    running.finish().assert_started();
    let socket = notify_socket_from(&env_file);
    assert_eq!(
        socket.parent().unwrap().parent(),
        Some(Path::new(ROOT_BASE))
    );
    let count = daemon
        .environ()
        .iter()
        .filter(|v| v.as_encoded_bytes().starts_with(b"NOTIFY_SOCKET="))
        .count();
    assert_eq!(count, 1, "NOTIFY_SOCKET appears {count} times");
}

#[test]
fn wait_ready_works_for_a_daemon_running_as_nobody() {
    init();
    let fx = Fixture::for_other_users();
    let (daemon_pid, env_file, gate) = (fx.file("daemon.pid"), fx.file("env"), fx.file("gate"));
    let helper = fx
        .helper()
        .env(&env_file)
        .pid(&daemon_pid)
        .wait(&gate)
        .send("READY=1");
    let mut cmd = fx.daemonize();
    cmd.args(["-u", "nobody", "--wait-ready", "--"])
        .args(helper.argv());
    let mut running = spawn(cmd);
    let daemon = Daemon::new(running.wait_for_pid(&daemon_pid));
    assert_eq!(daemon.status().uids(), [NOBODY_UID; 4]);
    // Nothing is handed to the daemon's user: it may reach the socket, as
    // anyone may, but owns neither the socket nor its directory.
    let socket = notify_socket_from(&env_file);
    let dir = socket.parent().unwrap();
    let meta = fs::symlink_metadata(dir).unwrap();
    assert_eq!(meta.uid(), 0, "owner of {dir:?}");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o711, "{dir:?}");
    assert_eq!(fs::symlink_metadata(&socket).unwrap().uid(), 0);
    running.assert_still_running("before the daemon sent READY=1");

    fx.open(&gate);
    running.finish().assert_started();
    assert!(daemon.is_alive());
    assert_eq!(daemon.status().uids(), [NOBODY_UID; 4]);
    fx.assert_notify_dir_removed(Some(&env_file));
}

// ---------------------------------------------------------------------------
// --wait-ready: failures
// ---------------------------------------------------------------------------

#[test]
fn a_daemon_that_exits_before_ready_fails_the_start_at_once() {
    init();
    let fx = Fixture::new();
    let (daemon_pid, env_file, pidfile) =
        (fx.file("daemon.pid"), fx.file("env"), fx.file("app.pid"));
    let helper = fx.helper().env(&env_file).pid(&daemon_pid).exit(3);
    let mut cmd = fx.daemonize();
    cmd.arg("--wait-ready")
        .arg("-p")
        .arg(&pidfile)
        .arg("--")
        .args(helper.argv());
    let (output, _) = run(cmd);
    output.assert_failed(
        125,
        &["exited with status 3 before it was ready", "status 3"],
    );
    let pid = read_pid(&daemon_pid).expect("the daemon wrote its PID");
    assert_eq!(pid_in_message(&output.stderr), pid);
    assert_gone(Daemon::new(pid));
    assert_no_leftover(&fx.marker);
    assert!(
        !pidfile.exists(),
        "the pidfile is left after a failed start"
    );
    fx.assert_notify_dir_removed(Some(&env_file));
}

#[test]
fn early_death_shows_the_last_lines_of_the_log() {
    init();
    let fx = Fixture::new();
    let (daemon_pid, log) = (fx.file("daemon.pid"), fx.file("app.log"));
    fs::write(&log, "an older run\n").unwrap();
    let helper = fx
        .helper()
        .print("starting up")
        .print("fatal: no configuration in /etc/app.conf")
        .pid(&daemon_pid)
        .exit(3);
    let mut cmd = fx.daemonize();
    cmd.arg("--wait-ready")
        .arg("-o")
        .arg(&log)
        .arg("--")
        .args(helper.argv());
    let (output, _) = run(cmd);
    assert_failed_start(
        &output,
        &[
            "status 3",
            &format!("; last lines of '{}':", log.display()),
            "\n    starting up\n",
            "\n    fatal: no configuration in /etc/app.conf",
        ],
    );
    assert_gone(Daemon::new(read_pid(&daemon_pid).unwrap()));
    fx.assert_notify_dir_removed(None);
}

#[test]
fn a_daemon_killed_by_a_signal_before_ready_is_reported_with_the_signal() {
    init();
    for signal in ["KILL", "USR1"] {
        let fx = Fixture::new();
        let (daemon_pid, env_file) = (fx.file("daemon.pid"), fx.file("env"));
        let helper = fx.helper().env(&env_file).pid(&daemon_pid).kill(signal);
        let mut cmd = fx.daemonize();
        cmd.arg("--wait-ready").arg("--").args(helper.argv());
        let (output, _) = run(cmd);
        output.assert_failed(
            125,
            &[&format!(
                "was killed by signal SIG{signal} before it was ready"
            )],
        );
        let pid = read_pid(&daemon_pid).unwrap();
        assert_eq!(pid_in_message(&output.stderr), pid);
        assert_gone(Daemon::new(pid));
        fx.assert_notify_dir_removed(Some(&env_file));
    }
}

#[test]
fn errno_before_ready_fails_the_start_and_stops_the_daemon() {
    init();
    let fx = Fixture::new();
    let (daemon_pid, env_file, pidfile) =
        (fx.file("daemon.pid"), fx.file("env"), fx.file("app.pid"));
    // The helper then waits to be stopped: daemonize has to stop it.
    let helper = fx
        .helper()
        .env(&env_file)
        .pid(&daemon_pid)
        .send("STATUS=cannot bind\nERRNO=98");
    let mut cmd = fx.daemonize();
    cmd.arg("--wait-ready")
        .arg("-p")
        .arg(&pidfile)
        .arg("--")
        .args(helper.argv());
    let mut running = spawn(cmd);
    let daemon = Daemon::new(running.wait_for_pid(&daemon_pid));
    let output = running.finish();
    output.assert_failed(125, &["ERRNO=98", "before it was ready"]);
    assert_eq!(pid_in_message(&output.stderr), daemon.pid());
    assert_gone(daemon);
    assert!(!pidfile.exists(), "the pidfile is left after ERRNO=");
    fx.assert_notify_dir_removed(Some(&env_file));
}

#[test]
fn a_daemon_that_is_never_ready_is_stopped_after_the_timeout() {
    init();
    let fx = Fixture::new();
    let (env_file, pidfile) = (fx.file("env"), fx.file("app.pid"));
    let helper = fx.helper().env(&env_file);
    let mut cmd = fx.daemonize();
    cmd.args(["--wait-ready", "--ready-timeout", "1", "-p"])
        .arg(&pidfile)
        .arg("--")
        .args(helper.argv());
    let (output, elapsed) = run(cmd);
    output.assert_failed(125, &["was not ready after 1s", "stopped it with SIGTERM"]);
    assert!(
        elapsed >= Duration::from_secs(1),
        "gave up after {elapsed:?}"
    );
    assert!(elapsed < FINISH_LIMIT, "took {elapsed:?}");
    assert_gone(Daemon::new(pid_in_message(&output.stderr)));
    assert_no_leftover(&fx.marker);
    assert!(!pidfile.exists(), "the pidfile is left after a timeout");
    fx.assert_notify_dir_removed(env_file.exists().then_some(env_file.as_path()));
}

/// Runs `attempt` until it is conclusive (returns `Some`), at most 5 times:
/// an attempt is inconclusive only when the helper was too slow to get
/// through its set-up before the 1 s timeout could have run out.
fn conclusive<T>(mut attempt: impl FnMut() -> Option<T>) -> T {
    for _ in 0..5 {
        if let Some(result) = attempt() {
            return result;
        }
    }
    panic!("the helper never got through its set-up within 0.8 s of the start (machine too busy)");
}

/// The helper stamped `stamp` soon enough after `spawned` (both
/// CLOCK_MONOTONIC) for a 1 s timeout counted from after the spawn to have
/// still been running then.
fn in_time(stamp: &Path, spawned: f64) -> bool {
    read_stamp(stamp).is_some_and(|at| at - spawned < 0.8)
}

#[test]
fn a_daemon_that_ignores_sigterm_is_killed_after_the_grace_period() {
    init();
    let (output, elapsed) = conclusive(|| {
        let fx = Fixture::new();
        let (daemon_pid, stamp) = (fx.file("daemon.pid"), fx.file("stamp"));
        let helper = fx.helper().ignore("TERM").stamp(&stamp).pid(&daemon_pid);
        let mut cmd = fx.daemonize();
        cmd.args(["--wait-ready", "--ready-timeout", "1", "--"])
            .args(helper.argv());
        let spawned = monotonic();
        let (output, elapsed) = run(cmd);
        if output.code == Some(125) && output.stderr.contains("pid ") {
            assert_gone(Daemon::new(pid_in_message(&output.stderr)));
        }
        assert_no_leftover(&fx.marker);
        fx.assert_notify_dir_removed(None);
        in_time(&stamp, spawned).then_some((output, elapsed))
    });
    output.assert_failed(125, &["was not ready after 1s", "killed it with SIGKILL"]);
    // The timeout, then the grace period between SIGTERM and SIGKILL.
    assert!(
        elapsed >= Duration::from_secs(4),
        "gave up after {elapsed:?}"
    );
}

#[test]
fn extend_timeout_usec_moves_the_deadline() {
    init();
    conclusive(|| {
        let fx = Fixture::new();
        let (daemon_pid, stamp, gate) = (fx.file("daemon.pid"), fx.file("stamp"), fx.file("gate"));
        let helper = fx
            .helper()
            .send("EXTEND_TIMEOUT_USEC=20000000")
            .stamp(&stamp)
            .pid(&daemon_pid)
            .wait(&gate)
            .send("READY=1");
        let mut cmd = fx.daemonize();
        cmd.args(["--wait-ready", "--ready-timeout", "1", "--"])
            .args(helper.argv());
        let spawned = monotonic();
        let mut running = spawn(cmd);
        // Did daemonize give up before it could have seen the extension?
        let inconclusive = |running: &mut Running| {
            running.has_exited()
                && running.output().stderr.contains("not ready after")
                && !in_time(&stamp, spawned)
        };
        let pid = wait_for_optional(TIMEOUT, || {
            read_pid(&daemon_pid).or_else(|| running.has_exited().then_some(0))
        })
        .expect("timed out waiting for the helper");
        let _daemon = (pid != 0).then(|| Daemon::new(pid));
        if inconclusive(&mut running) {
            return None;
        }
        // daemonize counts the timeout from just after it opened a pidfd for
        // the daemon: from then on, wait 1.5 s, more than the 1 s timeout.
        let waiting = wait_for_optional(TIMEOUT, || {
            if running.has_exited() {
                return Some(None);
            }
            let fds = procfs::fds(running.pid()).ok()?;
            fds.values()
                .any(|link| link.to_string_lossy().contains("pidfd"))
                .then(|| Some(Instant::now()))
        })
        .expect("daemonize never opened a pidfd");
        if let Some(waiting) = waiting {
            while waiting.elapsed() < Duration::from_millis(1500) && !running.has_exited() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if inconclusive(&mut running) {
            return None;
        }
        if running.has_exited() {
            panic!(
                "daemonize gave up despite EXTEND_TIMEOUT_USEC: {:?}",
                running.output()
            );
        }
        fx.open(&gate);
        running.finish().assert_started();
        assert!(running.elapsed() >= Duration::from_millis(1500));
        Some(())
    });
}

/// The last actions of a helper that never gets ready.
type HowItEnds = fn(Helper) -> Helper;

#[test]
fn the_notification_directory_is_removed_after_each_kind_of_failure() {
    init();
    let cases: [(&str, HowItEnds, &str); 4] = [
        ("--ready-timeout=1", |h| h, "not ready after"),
        ("--ready-timeout=60", |h| h.exit(3), "status 3"),
        ("--ready-timeout=60", |h| h.kill("KILL"), "SIGKILL"),
        ("--ready-timeout=60", |h| h.send("ERRNO=5"), "ERRNO=5"),
    ];
    for (timeout, finish, word) in cases {
        let fx = Fixture::new();
        let env_file = fx.file("env");
        let helper = finish(fx.helper().env(&env_file));
        let mut cmd = fx.daemonize();
        cmd.args(["--wait-ready", timeout, "--"])
            .args(helper.argv());
        let (output, _) = run(cmd);
        output.assert_failed(125, &[word]);
        assert_gone(Daemon::new(pid_in_message(&output.stderr)));
        // The helper writes the path first thing; only a helper stopped by
        // the 1 s timeout before it even got there would not have.
        if word != "not ready after" || env_file.exists() {
            let socket = notify_socket_from(&env_file);
            assert!(!socket.exists(), "{socket:?} is left after {word:?}");
            assert!(!socket.parent().unwrap().exists());
        }
        fx.assert_notify_dir_removed(None);
    }
}

// ---------------------------------------------------------------------------
// --ready-fd
// ---------------------------------------------------------------------------

/// The `pipe:[INODE]` that descriptor `fd` of `pid` is, if it is a pipe.
fn pipe_link(pid: i32, fd: i32) -> Option<String> {
    let link = procfs::fds(pid)
        .ok()?
        .get(&fd)?
        .to_string_lossy()
        .into_owned();
    link.starts_with("pipe:[").then_some(link)
}

#[test]
fn ready_fd_returns_only_after_a_newline_on_the_descriptor() {
    init();
    let fx = Fixture::new();
    let (daemon_pid, gate, closed) = (fx.file("daemon.pid"), fx.file("gate"), fx.file("closed"));
    let helper = fx
        .helper()
        .write(3, "almost")
        .pid(&daemon_pid)
        .wait(&gate)
        .write(3, " ready\n")
        .wait(&closed)
        .close(3);
    let mut cmd = fx.daemonize();
    cmd.args(["--ready-fd", "3", "--"]).args(helper.argv());
    let mut running = spawn(cmd);
    let daemon = Daemon::new(running.wait_for_pid(&daemon_pid));
    running.assert_still_running("before a newline was written");
    // The daemon's 3 is the write end of a pipe whose other end daemonize reads.
    let link = pipe_link(daemon.pid(), 3).expect("the daemon's descriptor 3 is not a pipe");
    let theirs = procfs::fds(running.pid()).unwrap();
    assert!(
        theirs.values().any(|l| l.to_string_lossy() == link),
        "daemonize holds no end of {link}: {theirs:?}"
    );

    fx.open(&gate);
    running.finish().assert_started();
    assert_eq!(daemon.fd_numbers(), [0, 1, 2, 3]);
    assert_eq!(pipe_link(daemon.pid(), 3).as_ref(), Some(&link));
    fx.open(&closed);
    wait_until(TIMEOUT, "the daemon to close descriptor 3", || {
        daemon.fd_numbers() == [0, 1, 2]
    });
    assert!(daemon.is_alive());
}

#[test]
fn ready_fd_takes_the_place_of_a_descriptor_the_caller_left_open() {
    init();
    let fx = Fixture::new();
    let daemon_pid = fx.file("daemon.pid");
    let helper = fx.helper().pid(&daemon_pid).write(3, "\n");
    let mut cmd = shell(
        "sh",
        r#"exec 3</dev/null; [ -e /proc/$$/fd/3 ] || exit 99; exec "$DAEMONIZE" "$@""#,
    );
    cmd.args(["--ready-fd", "3", "--"]).args(helper.argv());
    let mut running = spawn(cmd);
    let daemon = Daemon::new(running.wait_for_pid(&daemon_pid));
    running.finish().assert_started();
    assert!(pipe_link(daemon.pid(), 3).is_some(), "{:?}", daemon.fds());
    assert_eq!(daemon.fd_numbers(), [0, 1, 2, 3]);
}

#[test]
fn ready_fd_closed_without_a_newline_fails_the_start() {
    init();
    let fx = Fixture::new();
    let (daemon_pid, pidfile) = (fx.file("daemon.pid"), fx.file("app.pid"));
    // Then waits to be stopped: daemonize has to stop it.
    let helper = fx.helper().pid(&daemon_pid).write(3, "partial").close(3);
    let mut cmd = fx.daemonize();
    cmd.args(["--ready-fd", "3", "-p"])
        .arg(&pidfile)
        .arg("--")
        .args(helper.argv());
    let mut running = spawn(cmd);
    let pid = running.wait_for_pid(&daemon_pid);
    let daemon = Daemon::new(pid);
    let output = running.finish();
    output.assert_failed(
        125,
        &[
            "closed descriptor 3 without writing a newline",
            "stopped it with SIGTERM",
        ],
    );
    assert_eq!(pid_in_message(&output.stderr), pid);
    assert_gone(daemon);
    assert!(
        !pidfile.exists(),
        "the pidfile is left after a failed start"
    );
}

/// Like `--wait-ready`, an early death is reported as such, although it
/// also closes the pipe: with its exit status or signal and the end of its
/// log, without claiming to have stopped a daemon that had already exited.
#[test]
fn ready_fd_daemon_that_dies_before_ready_is_reported_with_its_status_and_log() {
    init();
    let cases: [(HowItEnds, &str); 2] = [
        (|h| h.exit(3), "exited with status 3 before it was ready"),
        (
            |h| h.kill("KILL"),
            "was killed by signal SIGKILL before it was ready",
        ),
    ];
    for (finish, words) in cases {
        let fx = Fixture::new();
        let (daemon_pid, log) = (fx.file("daemon.pid"), fx.file("app.log"));
        let helper = finish(
            fx.helper()
                .print("fatal: no configuration")
                .pid(&daemon_pid),
        );
        let mut cmd = fx.daemonize();
        cmd.args(["--ready-fd", "4", "-o"])
            .arg(&log)
            .arg("--")
            .args(helper.argv());
        let (output, _) = run(cmd);
        assert_failed_start(
            &output,
            &[
                words,
                &format!("; last lines of '{}':", log.display()),
                "\n    fatal: no configuration",
            ],
        );
        assert!(!output.stderr.contains("SIGTERM"), "{output:?}");
        let pid = read_pid(&daemon_pid).unwrap();
        assert_eq!(pid_in_message(&output.stderr), pid);
        assert_gone(Daemon::new(pid));
    }
}

#[test]
fn ready_fd_that_is_also_kept_is_refused() {
    init();
    let fx = Fixture::new();
    let daemon_pid = fx.file("daemon.pid");
    let helper = fx.helper().pid(&daemon_pid).write(3, "\n");
    let mut cmd = shell("sh", r#"exec 3</dev/null; exec "$DAEMONIZE" "$@""#);
    cmd.args(["--ready-fd", "3", "--keep-fds", "3", "--"])
        .args(helper.argv());
    let (output, _) = run(cmd);
    output.assert_failed(125, &["--ready-fd", "--keep-fds"]);
    assert!(!daemon_pid.exists(), "the daemon command ran");
    assert_no_leftover(&fx.marker);
}

#[test]
fn wait_ready_and_ready_fd_together_are_refused() {
    init();
    let fx = Fixture::new();
    let daemon_pid = fx.file("daemon.pid");
    let helper = fx.helper().pid(&daemon_pid);
    let mut cmd = fx.daemonize();
    cmd.args(["--wait-ready", "--ready-fd", "3", "--"])
        .args(helper.argv());
    let (output, _) = run(cmd);
    output.assert_failed(125, &["--wait-ready", "--ready-fd"]);
    assert!(!daemon_pid.exists(), "the daemon command ran");
    assert_no_leftover(&fx.marker);
    fx.assert_notify_dir_removed(None);
}

// ---------------------------------------------------------------------------
// Measurement (not part of the normal suite)
// ---------------------------------------------------------------------------

/// How long after the daemon's death daemonize reports it: the helper
/// stamps CLOCK_MONOTONIC right before `_exit(3)`, this test reads the same
/// clock the moment its blocking `waitpid` on daemonize returns.
///
///     cargo test --test ready -- --ignored --nocapture death_report_latency
#[test]
#[ignore = "a measurement, not a check: run with --ignored --nocapture"]
fn death_report_latency() {
    init();
    const RUNS: usize = 20;
    let mut latencies = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let fx = Fixture::new();
        let stamp = fx.file("stamp");
        let helper = fx
            .helper()
            .action("stamp-exit", &[stamp.as_os_str(), "3".as_ref()]);
        let mut cmd = fx.daemonize();
        cmd.arg("--wait-ready").arg("--").args(helper.argv());
        let mut child = cmd
            .command_mut()
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn daemonize");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let status = child.wait();
            let _ = tx.send((status, monotonic()));
        });
        let (status, exited) = rx
            .recv_timeout(FINISH_LIMIT)
            .expect("daemonize did not exit");
        assert_eq!(status.expect("wait").code(), Some(125));
        let died = read_stamp(&stamp).expect("the helper stamped its death");
        latencies.push((exited - died) * 1e3);
    }
    latencies.sort_by(f64::total_cmp);
    let median = (latencies[RUNS / 2 - 1] + latencies[RUNS / 2]) / 2.0;
    let shown: Vec<String> = latencies.iter().map(|ms| format!("{ms:.3}")).collect();
    println!(
        "death report latency over {RUNS} runs (ms): median {median:.3}, min {:.3}, max {:.3}",
        latencies[0],
        latencies[RUNS - 1]
    );
    println!("all (ms, sorted): {}", shown.join(" "));
}

// ---------------------------------------------------------------------------
// Interrupting daemonize
// ---------------------------------------------------------------------------

/// Ctrl-C (or `timeout(1)`, or a hang-up) while daemonize waits aborts the
/// start like any other failure: the daemon is stopped and daemonize exits
/// 125, instead of dying and leaving a half-started daemon behind.
#[test]
fn interrupting_daemonize_while_it_waits_stops_the_daemon() {
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        init();
        let fx = Fixture::new();
        let (daemon_pid, pidfile) = (fx.file("daemon.pid"), fx.file("app.pid"));
        let helper = fx.helper().pid(&daemon_pid);
        let mut cmd = fx.daemonize();
        // Whatever this test inherited (a background job's ignored SIGINT).
        with_disposition(&mut cmd, signal, SigHandler::SigDfl);
        cmd.arg("--wait-ready")
            .arg("-p")
            .arg(&pidfile)
            .arg("--")
            .args(helper.argv());
        let mut running = spawn(cmd);
        let daemon = Daemon::new(running.wait_for_pid(&daemon_pid));
        nix::sys::signal::kill(Pid::from_raw(running.pid()), signal).unwrap();
        let output = running.finish();
        assert_failed_start(
            &output,
            &[&format!("interrupted by {signal}"), "stopped it"],
        );
        assert_gone(daemon);
        assert!(!pidfile.exists(), "the pidfile is left after {signal}");
    }
}

// ---------------------------------------------------------------------------
// The notification socket: nobody but root may change it, anyone may send,
// only the daemon's processes count (issue 9, items 1 to 4)
// ---------------------------------------------------------------------------

/// The attack of items 1 and 2: a daemon running as its user renames the
/// socket's directory away and puts a symlink in its place, so that root's
/// cleanup (or a later chown) goes through it. `TMPDIR` is sticky and
/// world-writable here, like `/tmp`, where that used to work.
#[test]
fn a_daemon_running_as_nobody_cannot_replace_the_notify_directory() {
    init();
    let fx = Fixture::for_other_users();
    fs::set_permissions(&fx.tmp, fs::Permissions::from_mode(0o1777)).unwrap();
    let decoy_dir = fx.file("decoy");
    dir_with_mode(&decoy_dir, 0o755);
    let decoy = decoy_dir.join("notify");
    fs::write(&decoy, "precious\n").unwrap();
    fs::set_permissions(&decoy, fs::Permissions::from_mode(0o600)).unwrap();
    let (daemon_pid, swap, create, unlink) = (
        fx.file("daemon.pid"),
        fx.file("swap"),
        fx.file("create"),
        fx.file("unlink"),
    );
    let helper = fx
        .helper()
        .pid(&daemon_pid)
        .swap_dir(&decoy_dir, &swap)
        .try_create(&create)
        .try_unlink(&unlink)
        .send("READY=1");
    let mut cmd = fx.daemonize();
    cmd.args(["-u", "nobody", "--wait-ready", "--"])
        .args(helper.argv());
    let mut running = spawn(cmd);
    let daemon = Daemon::new(running.wait_for_pid(&daemon_pid));
    let output = running.finish();
    for (what, file) in [
        ("rename", &swap),
        ("create in", &create),
        ("unlink", &unlink),
    ] {
        let result = fs::read_to_string(file).unwrap();
        assert_eq!(
            result, "EACCES\n",
            "nobody could {what} the notify directory"
        );
    }
    let meta = fs::symlink_metadata(&decoy).unwrap();
    assert!(meta.is_file());
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o600));
    assert_eq!(fs::read_to_string(&decoy).unwrap(), "precious\n");
    output.assert_started();
    assert_eq!(daemon.status().uids(), [NOBODY_UID; 4]);
    fx.assert_notify_dir_removed(None);
}

/// Item 3: once daemonize has returned, the path in the daemon's
/// `NOTIFY_SOCKET` is in a directory where only root can create entries, so
/// no other user can receive what the daemon sends there later.
#[test]
fn after_return_no_other_user_can_create_the_notify_socket_path() {
    init();
    let fx = Fixture::for_other_users();
    fs::set_permissions(&fx.tmp, fs::Permissions::from_mode(0o1777)).unwrap();
    let daemon_pid = fx.file("daemon.pid");
    let helper = fx.helper().pid(&daemon_pid).send("READY=1");
    let mut cmd = fx.daemonize();
    cmd.args(["-u", "nobody", "--wait-ready", "--"])
        .args(helper.argv());
    let mut running = spawn(cmd);
    let daemon = Daemon::new(running.wait_for_pid(&daemon_pid));
    running.finish().assert_started();
    let socket = notify_socket_of(daemon.pid()).expect("the daemon has no NOTIFY_SOCKET");
    assert!(socket.is_absolute(), "{socket:?}");
    assert!(fs::symlink_metadata(&socket).is_err(), "{socket:?} is left");
    let nearest = socket
        .ancestors()
        .skip(1)
        .find(|a| fs::symlink_metadata(a).is_ok())
        .unwrap();
    let meta = fs::symlink_metadata(nearest).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.uid(), 0, "{nearest:?}");
    assert_eq!(meta.mode() & 0o022, 0, "{nearest:?} is writable by others");
    assert_eq!(nearest, Path::new(ROOT_BASE), "{socket:?}");
    // And so nobody cannot make the socket's directory again.
    let mut mkdir = Cmd::new(PYTHON);
    fs::set_permissions(mkdir.dir(), fs::Permissions::from_mode(0o777)).unwrap();
    let output = as_user(&mut mkdir, NOBODY_UID, NOGROUP_GID)
        .args(["-c", "import os, sys; os.makedirs(sys.argv[1])"])
        .arg(socket.parent().unwrap())
        .run();
    assert_eq!(output.code, Some(1), "{output:?}");
    assert!(output.stderr.contains("PermissionError"), "{output:?}");
}

/// Item 4: unbound (`username:`) and squid (`cache_effective_user`) drop
/// root by themselves, then send READY=1.
#[test]
fn a_daemon_that_drops_root_by_itself_before_ready_1_is_ready() {
    init();
    let fx = Fixture::new();
    let daemon_pid = fx.file("daemon.pid");
    let helper = fx
        .helper()
        .pid(&daemon_pid)
        .become_user(NOBODY_UID)
        .send("READY=1");
    let mut cmd = fx.daemonize();
    cmd.args(["--wait-ready", "--ready-timeout", "20", "--"])
        .args(helper.argv());
    let mut running = spawn(cmd);
    let daemon = Daemon::new(running.wait_for_pid(&daemon_pid));
    running.finish().assert_started();
    assert!(daemon.is_alive());
    assert_eq!(daemon.status().uids(), [NOBODY_UID; 4]);
}

/// Item 4: anyone may send to the socket, but only the daemon's own
/// processes count. Here the test process (root, daemonize's parent) and a
/// process of nobody's send READY=1 while the daemon never does.
#[test]
fn ready_1_from_a_process_that_is_not_the_daemons_is_ignored() {
    init();
    let (output, elapsed, outsiders) = conclusive(|| {
        let fx = Fixture::for_other_users();
        let daemon_pid = fx.file("daemon.pid");
        let helper = fx.helper().pid(&daemon_pid);
        let mut cmd = fx.daemonize();
        cmd.args(["-vv", "--wait-ready", "--ready-timeout", "3", "--"])
            .args(helper.argv());
        let mut running = spawn(cmd);
        let daemon = Daemon::new(running.wait_for_pid(&daemon_pid));
        let socket = notify_socket_of(daemon.pid()).expect("the daemon has no NOTIFY_SOCKET");

        let ours = UnixDatagram::unbound().unwrap();
        ours.send_to(b"READY=1", &socket).unwrap();
        let mut theirs = Cmd::new(PYTHON);
        fs::set_permissions(theirs.dir(), fs::Permissions::from_mode(0o777)).unwrap();
        as_user(&mut theirs, NOBODY_UID, NOGROUP_GID)
            .env("NOTIFY_SOCKET", &socket)
            .arg(&fx.script)
            .args(["send", "READY=1", "exit", "0"]);
        let mut child = theirs.command_mut().spawn().unwrap();
        let nobody_pid = child.id();
        let status = child.wait().unwrap();
        assert!(status.success(), "nobody could not send: {status}");
        // Both were sent while daemonize still waited, or the attempt says nothing.
        if running.has_exited() {
            return None;
        }
        let output = running.finish();
        assert_gone(daemon);
        assert_no_leftover(&fx.marker);
        Some((output, running.elapsed(), [test_pid() as u32, nobody_pid]))
    });
    // The trace (-vv), then the one line of the failure.
    output.assert_code(125);
    let last = output.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("daemonize: the daemon (pid ")
            && last.ends_with("was not ready after 3s; stopped it with SIGTERM"),
        "{output:?}"
    );
    assert!(
        elapsed >= Duration::from_secs(3),
        "gave up after {elapsed:?}"
    );
    for pid in outsiders {
        let line = format!(
            "ignored a notification from a process that is neither the daemon nor one of its descendants pid={pid}"
        );
        assert!(
            output.stderr.contains(&line),
            "{line:?} not traced: {output:?}"
        );
    }
}

#[test]
fn ready_1_from_a_grandchild_of_the_daemon_counts() {
    init();
    let fx = Fixture::new();
    let pids = [
        fx.file("daemon.pid"),
        fx.file("child.pid"),
        fx.file("grandchild.pid"),
    ];
    let helper = fx
        .helper()
        .pid(&pids[0])
        .fork()
        .pid(&pids[1])
        .fork()
        .pid(&pids[2])
        .send("READY=1");
    let mut cmd = fx.daemonize();
    cmd.args(["--wait-ready", "--"]).args(helper.argv());
    let mut running = spawn(cmd);
    // Youngest first, so that each is killed before its parent.
    let grandchild = Daemon::new(running.wait_for_pid(&pids[2]));
    let child = Daemon::new(running.wait_for_pid(&pids[1]));
    let daemon = Daemon::new(running.wait_for_pid(&pids[0]));
    running.finish().assert_started();
    assert_eq!(grandchild.stat().ppid, child.pid());
    assert_eq!(child.stat().ppid, daemon.pid());
    assert!(daemon.is_alive());
}

/// A descendant whose parent has exited is reparented to daemonize (the
/// subreaper), no longer to the daemon; it still counts.
#[test]
fn ready_1_from_an_orphaned_descendant_of_the_daemon_counts() {
    init();
    let fx = Fixture::new();
    let (daemon_pid, orphan_pid) = (fx.file("daemon.pid"), fx.file("orphan.pid"));
    let helper = fx
        .helper()
        .pid(&daemon_pid)
        .orphan()
        .pid(&orphan_pid)
        .send("READY=1");
    let mut cmd = fx.daemonize();
    cmd.args(["--wait-ready", "--"]).args(helper.argv());
    let mut running = spawn(cmd);
    let orphan = Daemon::new(running.wait_for_pid(&orphan_pid));
    let daemon = Daemon::new(running.wait_for_pid(&daemon_pid));
    running.finish().assert_started();
    assert!(daemon.is_alive());
    // Reparented from daemonize to its subreaper, this test.
    assert_eq!(orphan.stat().ppid, test_pid());
}

// ---------------------------------------------------------------------------
// Where other callers' sockets go (items 3 and 22)
// ---------------------------------------------------------------------------

/// For a caller other than root, `$XDG_RUNTIME_DIR` (here nobody's, in a
/// directory only root can write to, as `/run/user` is).
#[test]
fn a_caller_other_than_root_gets_its_socket_in_xdg_runtime_dir() {
    init();
    let fx = Fixture::for_other_users();
    let run = tempfile::tempdir().unwrap();
    fs::set_permissions(run.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let xdg = run.path().join("65534");
    dir_with_mode(&xdg, 0o700);
    std::os::unix::fs::chown(&xdg, Some(NOBODY_UID), Some(NOGROUP_GID)).unwrap();
    let (daemon_pid, env_file) = (fx.file("daemon.pid"), fx.file("env"));
    let helper = fx.helper().env(&env_file).pid(&daemon_pid).send("READY=1");
    let mut cmd = daemonize_as_nobody();
    cmd.env("XDG_RUNTIME_DIR", &xdg)
        .env("TMPDIR", &fx.tmp)
        .args(["--wait-ready", "--"])
        .args(helper.argv());
    let mut running = spawn(cmd);
    let daemon = Daemon::new(running.wait_for_pid(&daemon_pid));
    running.finish().assert_started();
    assert_eq!(daemon.status().uids(), [NOBODY_UID; 4]);
    assert_socket_and_dir_removed(&notify_socket_from(&env_file), &xdg);
    assert_eq!(fs::read_dir(&xdg).unwrap().count(), 0);
    fx.assert_notify_dir_removed(None);
}

/// Otherwise `TMPDIR/daemonize-UID`, made `0711` and kept, so that nobody
/// else can ever create entries where the sockets were. Here
/// `$XDG_RUNTIME_DIR` will not do: it is in a directory where anyone may
/// rename it away (writable by all, not sticky).
#[test]
fn the_fallback_is_a_per_user_directory_in_tmpdir_made_0711_and_kept() {
    init();
    let fx = Fixture::for_other_users();
    fs::set_permissions(&fx.tmp, fs::Permissions::from_mode(0o1777)).unwrap();
    let open = fx.file("open");
    dir_with_mode(&open, 0o777);
    let xdg = open.join("xdg");
    dir_with_mode(&xdg, 0o700);
    std::os::unix::fs::chown(&xdg, Some(NOBODY_UID), Some(NOGROUP_GID)).unwrap();
    let (daemon_pid, env_file) = (fx.file("daemon.pid"), fx.file("env"));
    let helper = fx.helper().env(&env_file).pid(&daemon_pid).send("READY=1");
    let mut cmd = daemonize_as_nobody();
    cmd.env("XDG_RUNTIME_DIR", &xdg)
        .env("TMPDIR", &fx.tmp)
        .args(["--wait-ready", "--"])
        .args(helper.argv());
    let mut running = spawn(cmd);
    let _daemon = Daemon::new(running.wait_for_pid(&daemon_pid));
    running.finish().assert_started();
    let per_user = fx.tmp.join(format!("daemonize-{NOBODY_UID}"));
    assert_socket_and_dir_removed(&notify_socket_from(&env_file), &per_user);
    let meta = fs::symlink_metadata(&per_user).unwrap();
    assert!(meta.is_dir());
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (NOBODY_UID, 0o711));
    assert_eq!(fs::read_dir(&per_user).unwrap().count(), 0);
    assert_eq!(fs::read_dir(&xdg).unwrap().count(), 0);
}

#[test]
fn a_per_user_directory_that_is_not_the_callers_own_is_refused() {
    init();
    type Setup = fn(&Path);
    let cases: [(Setup, &[&str]); 3] = [
        (
            |p| dir_with_mode(p, 0o755),
            &[
                "belongs to uid 0, not to uid 65534",
                "remove it, or set TMPDIR or XDG_RUNTIME_DIR",
            ],
        ),
        (
            |p| {
                dir_with_mode(p, 0o777);
                std::os::unix::fs::chown(p, Some(NOBODY_UID), Some(NOGROUP_GID)).unwrap();
            },
            &["is writable by its group or others (mode 0777)"],
        ),
        (
            |p| {
                let real = p.with_file_name("real");
                dir_with_mode(&real, 0o711);
                std::os::unix::fs::chown(&real, Some(NOBODY_UID), Some(NOGROUP_GID)).unwrap();
                std::os::unix::fs::symlink(&real, p).unwrap();
            },
            &["(it must be a directory, not a symlink)"],
        ),
    ];
    for (setup, words) in cases {
        let fx = Fixture::for_other_users();
        let per_user = fx.tmp.join(format!("daemonize-{NOBODY_UID}"));
        setup(&per_user);
        let daemon_pid = fx.file("daemon.pid");
        let helper = fx.helper().pid(&daemon_pid).send("READY=1");
        let mut cmd = daemonize_as_nobody();
        cmd.env("TMPDIR", &fx.tmp)
            .args(["--wait-ready", "--"])
            .args(helper.argv());
        let (output, _) = run(cmd);
        let mut all = vec![
            "found no safe place for the notification socket (--wait-ready)",
            per_user.to_str().unwrap(),
        ];
        all.extend_from_slice(words);
        output.assert_failed(125, &all);
        assert!(!daemon_pid.exists(), "the daemon command ran");
        assert_no_leftover(&fx.marker);
    }
}

/// Item 22: a relative `TMPDIR` would give a `NOTIFY_SOCKET` that the daemon
/// cannot reach from `/`; it is not used.
#[test]
fn a_relative_tmpdir_still_gives_an_absolute_notify_socket() {
    init();
    let fx = Fixture::for_other_users();
    let (daemon_pid, env_file) = (fx.file("daemon.pid"), fx.file("env"));
    let helper = fx.helper().env(&env_file).pid(&daemon_pid).send("READY=1");
    let mut cmd = daemonize_as_nobody();
    fs::create_dir(cmd.dir().join("tmp")).unwrap();
    fs::set_permissions(cmd.dir().join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    cmd.env("TMPDIR", "tmp")
        .args(["--wait-ready", "--"])
        .args(helper.argv());
    let mut running = spawn(cmd);
    let _daemon = Daemon::new(running.wait_for_pid(&daemon_pid));
    running.finish().assert_started();
    let socket = notify_socket_from(&env_file);
    assert_socket_and_dir_removed(
        &socket,
        &Path::new("/tmp").join(format!("daemonize-{NOBODY_UID}")),
    );
}

// ---------------------------------------------------------------------------
// Signals the caller ignores (item 13)
// ---------------------------------------------------------------------------

/// Under `nohup`, SIGHUP is ignored: a hang-up must not abort the wait and
/// kill a healthy daemon.
#[test]
fn a_signal_the_caller_ignores_does_not_interrupt_the_wait() {
    init();
    let fx = Fixture::new();
    let (daemon_pid, gate, pidfile) = (fx.file("daemon.pid"), fx.file("gate"), fx.file("app.pid"));
    let helper = fx.helper().pid(&daemon_pid).wait(&gate).send("READY=1");
    let mut cmd = fx.daemonize();
    with_disposition(&mut cmd, Signal::SIGHUP, SigHandler::SigIgn);
    cmd.arg("--wait-ready")
        .arg("-p")
        .arg(&pidfile)
        .arg("--")
        .args(helper.argv());
    let mut running = spawn(cmd);
    let daemon = Daemon::new(running.wait_for_pid(&daemon_pid));
    nix::sys::signal::kill(Pid::from_raw(running.pid()), Signal::SIGHUP).unwrap();
    running.assert_still_running("on a SIGHUP that its caller ignores");
    fx.open(&gate);
    running.finish().assert_started();
    assert!(daemon.is_alive(), "the daemon died");
    assert_eq!(
        fs::read_to_string(&pidfile).unwrap(),
        format!("{}\n", daemon.pid())
    );
}

// ---------------------------------------------------------------------------
// Readiness edge cases (item 22)
// ---------------------------------------------------------------------------

/// As systemd's `TimeoutStartSec=0`.
#[test]
fn ready_timeout_0_waits_without_a_deadline() {
    init();
    for option in ["--wait-ready", "--ready-fd=3"] {
        let fx = Fixture::new();
        let (daemon_pid, gate) = (fx.file("daemon.pid"), fx.file("gate"));
        let helper = fx
            .helper()
            .pid(&daemon_pid)
            .wait(&gate)
            .send_or_write(option);
        let mut cmd = fx.daemonize();
        cmd.args([option, "--ready-timeout", "0", "--"])
            .args(helper.argv());
        let mut running = spawn(cmd);
        let daemon = Daemon::new(running.wait_for_pid(&daemon_pid));
        running.assert_still_running(&format!("at once with {option} --ready-timeout 0"));
        fx.open(&gate);
        running.finish().assert_started();
        assert!(daemon.is_alive());
    }
}

#[test]
fn ready_timeout_without_a_readiness_option_is_a_usage_error() {
    init();
    let fx = Fixture::new();
    let daemon_pid = fx.file("daemon.pid");
    let helper = fx.helper().pid(&daemon_pid);
    let mut cmd = fx.daemonize();
    cmd.args(["--ready-timeout", "5", "--"]).args(helper.argv());
    let (output, _) = run(cmd);
    output.assert_failed(
        125,
        &[
            "--ready-timeout goes with --wait-ready or --ready-fd",
            "try 'daemonize --help'",
        ],
    );
    assert!(!daemon_pid.exists(), "the daemon command ran");
    assert_no_leftover(&fx.marker);
}

/// An inherited `NOTIFY_SOCKET` belongs to whoever started daemonize (a
/// systemd unit, say): the daemon would report to it. It is dropped, unless
/// `--wait-ready` sets a new one or `-E` names one explicitly.
#[test]
fn an_inherited_notify_socket_is_not_passed_on_without_wait_ready() {
    init();
    let cases: [(&[&str], Option<&str>); 3] = [
        (&[], None),
        (&["--ready-fd", "3"], None),
        (
            &["-E", "NOTIFY_SOCKET=/run/explicit"],
            Some("/run/explicit"),
        ),
    ];
    for (options, expected) in cases {
        let fx = Fixture::new();
        let daemon_pid = fx.file("daemon.pid");
        let helper = fx.helper().pid(&daemon_pid);
        let helper = match options.contains(&"--ready-fd") {
            true => helper.write(3, "\n"),
            false => helper,
        };
        let mut cmd = fx.daemonize();
        cmd.env("NOTIFY_SOCKET", "/run/systemd/notify")
            .args(options)
            .arg("--")
            .args(helper.argv());
        run(cmd).0.assert_started();
        let daemon = Daemon::new(common::wait_for_pid_file(&daemon_pid, TIMEOUT));
        assert_eq!(
            notify_socket_of(daemon.pid()).as_deref(),
            expected.map(Path::new),
            "with {options:?}"
        );
    }
}
