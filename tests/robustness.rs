//! Edge cases found in review: huge argument lists, processes that die or
//! are killed half-way through a start, onlookers and impostors around a
//! pidfile, files that are not pidfiles, and odd option values.

mod common;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{
    Bystander, Daemon, DaemonSpec, TIMEOUT, assert_no_leftover, daemonize, init, launch_with,
    procfs, wait_for, wait_until,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A script without `#!` runs through /bin/sh with all of its arguments
/// (the daemon's own command search, with a scratch argument list set
/// aside before the fork): thousands of arguments must fit.
#[test]
fn a_script_without_shebang_and_thousands_of_arguments_starts() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("run");
    let count = dir.path().join("count");
    let marker = common::unique_marker();
    fs::write(
        &script,
        format!("echo $# > '{}'\nexec sleep {marker}\n", count.display()),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let args: Vec<String> = (0..20000).map(|i| i.to_string()).collect();
    let mut cmd = daemonize();
    cmd.arg("--")
        .arg(&script)
        .args(&args)
        .run()
        .assert_started();
    let written = wait_for(TIMEOUT, "the script to count its arguments", || {
        fs::read_to_string(&count)
            .ok()
            .filter(|s| s.ends_with('\n'))
    });
    assert_eq!(written, "20000\n");
    // The script execs sleep with a marker of its own.
    let daemon = wait_for(TIMEOUT, "the daemon", || {
        procfs::pids()
            .into_iter()
            .find(|&pid| procfs::cmdline(pid).is_ok_and(|argv| argv == ["sleep", marker.as_str()]))
    });
    drop(Daemon::new(daemon));
}

/// A start under strace, held with its daemon stopped before exec.
struct Held {
    strace: Child,
    /// strace's log, which records how each traced process ended.
    log: std::path::PathBuf,
    original: i32,
    intermediate: i32,
    daemon: i32,
    spec: DaemonSpec,
}

impl Drop for Held {
    fn drop(&mut self) {
        // strace waits for every tracee. A daemonize or intermediate still
        // running here belongs to a failed attempt or a failed test: they
        // are killed by PID while each is still ours to reap (the daemon
        // itself is owned elsewhere).
        // Each is checked to be still where it was (its parent unchanged;
        // strace is alive), so a reused PID is never hit.
        let strace = self.strace.id() as i32;
        for (pid, parent) in [(self.intermediate, self.original), (self.original, strace)] {
            if pid > 0 && procfs::stat(pid).is_ok_and(|s| s.state != 'Z' && s.ppid == parent) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        let _ = self.strace.kill();
        let _ = self.strace.wait();
    }
}

/// A daemon held before exec, and the chain of processes above it. strace
/// stops the daemon with SIGSTOP as it returns from its `chdir` (the only
/// one to DIR), so it stays in daemonize's shared memory, before exec,
/// until the test sends SIGCONT. Now and then strace's injection lands on
/// the intermediate child instead (a race in how it follows vfork
/// children); that attempt is torn down and the set-up made again.
fn start_stopped_before_exec(dir: &Path) -> Held {
    for _ in 0..5 {
        if let Some(held) = try_start_stopped_before_exec(dir) {
            return held;
        }
    }
    panic!("strace never stopped the daemon before exec in 5 attempts");
}

fn try_start_stopped_before_exec(dir: &Path) -> Option<Held> {
    let spec = DaemonSpec::new(dir);
    let log = dir.join("strace.log");
    let strace = Command::new("strace")
        .args(["-f", "-q", "-e", "signal=none", "-o"])
        .arg(&log)
        .arg("-P")
        .arg(dir)
        .args(["-e", "trace=chdir", "-e", "inject=chdir:signal=SIGSTOP"])
        .arg("--")
        .arg(common::bin())
        .arg("-c")
        .arg(dir)
        .arg("--")
        .args(spec.argv())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(dir.join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let child_of = |parent: i32| {
        procfs::pids()
            .into_iter()
            .find(|&pid| procfs::stat(pid).is_ok_and(|s| s.ppid == parent))
    };
    let stopped = |pid: i32| procfs::stat(pid).is_ok_and(|s| matches!(s.state, 't' | 'T'));
    let original = wait_for(TIMEOUT, "daemonize under strace", || {
        child_of(strace.id() as i32)
    });
    let mut held = Held {
        strace,
        log,
        original,
        intermediate: 0,
        daemon: 0,
        spec,
    };
    // Either the daemon stops (the set-up wanted), or strace stopped
    // another process of the chain by mistake (the race).
    let alive = |pid: i32| procfs::stat(pid).is_ok_and(|s| s.state != 'Z');
    let exec_d = |pid: i32| {
        procfs::cmdline(pid).is_ok_and(|argv| argv.first().is_some_and(|a| a != common::bin()))
    };
    let chain = common::wait_for_optional(TIMEOUT, || match child_of(original) {
        // Stopped by mistake, or the start went through unstopped.
        None if stopped(original) || !alive(original) => Some(None),
        None => None,
        Some(intermediate) => {
            held.intermediate = intermediate;
            match child_of(intermediate) {
                Some(daemon) if stopped(daemon) => Some(Some((intermediate, daemon))),
                Some(daemon) if exec_d(daemon) => Some(None),
                None if stopped(intermediate) => Some(None),
                _ => None,
            }
        }
    });
    let Some(chain) = chain else {
        let show = |pid: i32| {
            format!(
                "{pid}: {:?} {:?}",
                procfs::stat(pid).map(|s| (s.state, s.ppid)),
                procfs::cmdline(pid).map(|a| a.into_iter().next())
            )
        };
        let inter = child_of(original).unwrap_or(0);
        panic!(
            "no process of the start stopped: original {}, intermediate {}, its child {}; \
             strace log: {:?}",
            show(original),
            show(inter),
            show(child_of(inter).unwrap_or(0)),
            fs::read_to_string(&held.log).unwrap_or_default()
        );
    };
    let Some((intermediate, daemon)) = chain else {
        // A failed attempt: a daemon that ran on is owned (and killed by
        // PID) here; `held` kills the rest as it drops.
        for (pid, _) in common::processes_with_marker(&held.spec.marker) {
            drop(Daemon::new(pid));
        }
        return None;
    };
    (held.intermediate, held.daemon) = (intermediate, daemon);
    Some(held)
}

/// Sends SIGCONT to the stopped daemon until daemonize has exited, and
/// returns its exit code as strace saw it. Again and again: a SIGCONT
/// that arrives while strace is still turning the injected SIGSTOP into a
/// stop comes too early to end it.
fn continue_until_done(held: &Held) -> i32 {
    let original = held.original.to_string();
    let code = common::wait_for_optional(TIMEOUT, || {
        let _ = kill(Pid::from_raw(held.daemon), Signal::SIGCONT);
        let log = fs::read_to_string(&held.log).ok()?;
        // `PID +++ exited with N +++`, the PID padded to a width.
        log.lines().find_map(
            |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                [pid, "+++", "exited", "with", code, "+++"] if pid == original => code.parse().ok(),
                _ => None,
            },
        )
    });
    code.unwrap_or_else(|| {
        panic!(
            "daemonize (pid {}) did not finish; strace saw:\n{}",
            held.original,
            fs::read_to_string(&held.log).unwrap_or_default()
        )
    })
}

/// If the intermediate child is killed while the daemon is still setting
/// up on memory it shares with daemonize, daemonize must wait for the
/// daemon to exec before it frees anything, and then report the start.
#[test]
fn killing_the_intermediate_child_mid_start_does_not_break_the_daemon() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let held = start_stopped_before_exec(dir.path());
    kill(Pid::from_raw(held.intermediate), Signal::SIGKILL).unwrap();
    // Let the daemon go on to exec.
    let code = continue_until_done(&held);
    let daemon = held.spec.start();
    assert!(daemon.is_alive());
    assert_eq!(code, 0, "daemonize did not report the start");
}

/// A daemon killed before it could exec has not started, whatever the
/// report pipe says (it closed without a failure record).
#[test]
fn a_daemon_killed_before_exec_is_a_failed_start() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let held = start_stopped_before_exec(dir.path());
    kill(Pid::from_raw(held.daemon), Signal::SIGTERM).unwrap();
    let code = continue_until_done(&held);
    assert_eq!(code, 125);
    let stderr = fs::read_to_string(dir.path().join("stderr")).unwrap();
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert_no_leftover(&held.spec.marker);
}

/// A daemon that leaves a child behind and exits before it is ready: the
/// failed start takes the child too, so no second instance can slip past a
/// lock that child would still hold.
#[test]
fn a_failed_start_leaves_none_of_the_daemons_children() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("app.pid");
    let marker = common::unique_marker();
    let output = daemonize()
        .args(["--ready-fd", "3", "-p"])
        .arg(&pidfile)
        .args(["--", "sh", "-c"])
        .arg(format!("sleep {marker} & exit 0"))
        .run();
    output.assert_failed(125, &["status 0", "before it was ready"]);
    wait_until(TIMEOUT, "the daemon's child to be gone", || {
        common::processes_with_marker(&marker).is_empty()
    });
    assert!(!pidfile.exists());
}

/// Someone who can write the pidfile puts another process's PID in it:
/// `--stop` must not signal that process, only what holds the lock.
#[test]
fn stop_never_signals_a_pid_that_does_not_hold_the_lock() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("app.pid");
    let spec = DaemonSpec::new(dir.path());
    let daemon = launch_with(daemonize(), spec, [OsStr::new("-p"), pidfile.as_os_str()]).daemon;
    let mut bystander = Bystander::spawn();
    fs::write(&pidfile, format!("{}\n", bystander.pid())).unwrap();
    // An onlooker with the file open (like `tail -f`) but no lock.
    let mut onlooker = Bystander::spawn_with(File::open(&pidfile).unwrap().into());
    daemonize()
        .arg("-p")
        .arg(&pidfile)
        .arg("--stop")
        .run()
        .assert_code(0);
    bystander.assert_untouched();
    onlooker.assert_untouched();
    wait_until(TIMEOUT, "the daemon to be stopped", || !daemon.is_alive());
}

/// `-p` naming a file that is not a pidfile must not destroy it.
#[test]
fn a_file_that_is_not_a_pidfile_is_never_truncated_or_removed() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("important.conf");
    fs::write(&conf, "setting = 1\n").unwrap();
    let spec = DaemonSpec::new(dir.path());
    daemonize()
        .arg("-p")
        .arg(&conf)
        .arg("--")
        .args(spec.argv())
        .run()
        .assert_failed(125, &["refusing to use", "important.conf"]);
    assert_no_leftover(&spec.marker);
    daemonize().arg("-p").arg(&conf).arg("--stop").run();
    daemonize()
        .arg("-p")
        .arg(&conf)
        .args(["--", "/nonexistent/command"])
        .run();
    assert_eq!(fs::read_to_string(&conf).unwrap(), "setting = 1\n");
}

#[test]
fn odd_option_values_are_usage_errors() {
    init();
    let dir = tempfile::tempdir().unwrap();
    for (options, words) in [
        (
            vec!["--ready-fd", "3", "--ready-timeout", "1e19"],
            vec!["--ready-timeout"],
        ),
        (
            vec!["-p", "x.pid", "--stop", "--timeout", "1e19"],
            vec!["--timeout"],
        ),
    ] {
        let spec = DaemonSpec::new(dir.path());
        let mut cmd = daemonize();
        cmd.args(&options);
        if !options.contains(&"--stop") {
            cmd.arg("--").args(spec.argv());
        }
        cmd.run().assert_failed(125, &words);
        assert_no_leftover(&spec.marker);
    }
}

/// `--keep-fds 4` is checked against the caller's descriptors, before
/// daemonize opens its own (which could otherwise take number 4).
#[test]
fn keep_fds_of_a_closed_descriptor_is_refused_even_with_ready_fd() {
    init();
    let spec = DaemonSpec::new(Path::new("/tmp"));
    daemonize()
        .args(["--ready-fd", "3", "--keep-fds", "9"])
        .arg("--")
        .args(spec.argv())
        .run()
        .assert_failed(125, &["descriptor 9", "not open"]);
    assert_no_leftover(&spec.marker);
}

#[test]
fn status_and_stop_of_a_directory_cannot_tell() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let output = daemonize().arg("-p").arg(dir.path()).arg("--status").run();
    output.assert_code(4);
    daemonize()
        .arg("-p")
        .arg(dir.path())
        .arg("--stop")
        .run()
        .assert_failed(1, &["not a regular file"]);
}

/// `--status | head -0`: a reader that went away does not turn the LSB
/// code into a death by SIGPIPE.
#[test]
fn status_exit_code_survives_a_closed_stdout() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(common::bin())
        .arg("-p")
        .arg(dir.path().join("none.pid"))
        .arg("--status")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    assert_eq!(child.wait().unwrap().code(), Some(3));
}

#[test]
fn env_values_may_be_any_bytes() {
    init();
    let mut cmd = daemonize();
    let spec = DaemonSpec::new(cmd.dir()).hold();
    cmd.arg("-E")
        .arg(OsStr::from_bytes(b"BYTES=\xff\xfe"))
        .arg("--")
        .args(spec.argv())
        .run()
        .assert_started();
    let daemon = spec.start();
    assert!(
        daemon
            .environ()
            .iter()
            .any(|v| v.as_bytes() == b"BYTES=\xff\xfe"),
        "{:?}",
        daemon.environ()
    );
}
