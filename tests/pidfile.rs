//! The pidfile and the lockfile (docs/design.md, "Files"), `--status` and
//! `--stop`, and the LSB init script in examples/ that drives them.
//!
//! Every daemon is owned by a [`Daemon`] guard as soon as its PID is known.
//! A daemon that a test reaps itself (to see which signal ended it) is
//! handed over by [`reap`], so that no guard ever signals a PID that has
//! been freed and may have been reused.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tempfile::TempDir;

use common::{
    Bystander, Daemon, DaemonSpec, Launched, Output, TIMEOUT, assert_no_leftover, daemonize, init,
    launch_with, processes_with_marker, procfs, shell, test_pid, unique_marker, wait_for,
    wait_for_optional, wait_for_pid_file, wait_until,
};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn tempdir() -> TempDir {
    tempfile::tempdir().expect("cannot create a temporary directory")
}

/// The lock file of a pidfile, which carries its lock: `FILE.lock`.
fn lock_of(pidfile: &Path) -> PathBuf {
    let mut name = pidfile.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Writes a stale pidfile naming `pid`, a process that started after the
/// file was written (its mtime is long past), as one that reused the PID
/// of a dead daemon would: the identity rule must not take it for the
/// daemon.
fn write_stale_pidfile(pidfile: &Path, pid: i32) {
    fs::write(pidfile, format!("{pid}\n")).unwrap();
    set_old_mtime(pidfile);
}

/// `-p FILE`.
fn pidfile_option(pidfile: &Path) -> [&OsStr; 2] {
    [OsStr::new("-p"), pidfile.as_os_str()]
}

/// Runs `daemonize OPTIONS -- DAEMON` for a fresh [`DaemonSpec`] whose own
/// PID file goes into `dir`; the daemon is not waited for.
fn start(dir: &Path, options: &[&OsStr]) -> (Output, DaemonSpec) {
    let spec = DaemonSpec::new(dir);
    let output = daemonize().args(options).arg("--").args(spec.argv()).run();
    (output, spec)
}

/// Like [`start`], asserting that the daemon started, and takes it over.
#[track_caller]
fn launch(dir: &Path, options: &[&OsStr]) -> (Daemon, DaemonSpec) {
    let Launched { daemon, spec, .. } = launch_with(daemonize(), DaemonSpec::new(dir), options);
    (daemon, spec)
}

/// `daemonize -p PIDFILE --status`.
fn status(pidfile: &Path) -> Output {
    daemonize().arg("-p").arg(pidfile).arg("--status").run()
}

/// `daemonize -p PIDFILE --stop EXTRA...`.
fn stop(pidfile: &Path, extra: &[&str]) -> Output {
    daemonize()
        .arg("-p")
        .arg(pidfile)
        .arg("--stop")
        .args(extra)
        .run()
}

/// The PID in a pidfile, which must hold exactly one decimal PID and a
/// newline.
#[track_caller]
fn pid_in(path: &Path) -> i32 {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.strip_suffix('\n')
        .and_then(|digits| digits.parse::<i32>().ok())
        .filter(|&pid| pid > 0 && text == format!("{pid}\n"))
        .unwrap_or_else(|| {
            panic!(
                "{} does not hold a PID and a newline: {text:?}",
                path.display()
            )
        })
}

/// The text of `/proc/PID/fdinfo/FD`.
fn fdinfo(pid: i32, fd: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
        .unwrap_or_else(|e| panic!("cannot read fdinfo {fd} of {pid}: {e}"))
}

/// Asserts that the daemon's descriptors are 0, 1, 2 on `/dev/null` and
/// exactly one more, on `file` (a pidfile's lock file, or a lockfile),
/// open read-only and carrying an exclusive `flock` (the kernel lists it in
/// fdinfo). Returns that descriptor.
#[track_caller]
fn assert_holds_lock_on(daemon: &Daemon, file: &Path) -> i32 {
    assert_descriptors(daemon, Path::new("/dev/null"), file)
}

/// Like [`assert_holds_lock_on`], with standard output and error on `log`.
#[track_caller]
fn assert_descriptors(daemon: &Daemon, log: &Path, file: &Path) -> i32 {
    let canonical = |path: &Path| fs::canonicalize(path).expect("canonicalize");
    let (log, target) = (canonical(log), canonical(file));
    let fds = daemon.fds();
    assert_eq!(fds.get(&0), Some(&PathBuf::from("/dev/null")), "{fds:?}");
    assert_eq!(fds.get(&1), Some(&log), "{fds:?}");
    assert_eq!(fds.get(&2), Some(&log), "{fds:?}");
    let extra: Vec<(i32, &PathBuf)> = fds
        .iter()
        .filter(|(fd, _)| **fd > 2)
        .map(|(fd, path)| (*fd, path))
        .collect();
    let [(fd, path)] = extra[..] else {
        panic!("expected exactly one descriptor above 2, the lock: {fds:?}");
    };
    assert_eq!(path, &target, "descriptor {fd}: {fds:?}");

    let info = fdinfo(daemon.pid(), fd);
    let flags = info
        .lines()
        .find_map(|line| line.strip_prefix("flags:"))
        .and_then(|octal| i32::from_str_radix(octal.trim(), 8).ok())
        .unwrap_or_else(|| panic!("no flags in fdinfo: {info:?}"));
    assert_eq!(
        flags & libc::O_ACCMODE,
        libc::O_RDONLY,
        "the lock descriptor is not read-only: {info:?}"
    );
    assert!(
        info.lines()
            .any(|l| l.starts_with("lock:") && l.contains("FLOCK") && l.contains("WRITE")),
        "descriptor {fd} carries no exclusive flock: {info:?}"
    );
    fd
}

/// Waits until the daemon has exited (a zombie counts: it has released
/// every descriptor, and so its lock, before it becomes one).
#[track_caller]
fn wait_exited(daemon: &Daemon) {
    wait_until(TIMEOUT, &format!("pid {} to exit", daemon.pid()), || {
        !daemon.is_alive()
    });
}

/// Reaps the daemon (this process's child, see [`init`]) once it has exited
/// and returns how it ended. Consumes the guard without running it: its
/// PID is free from now on and must never be signalled again.
#[track_caller]
fn reap(daemon: Daemon) -> WaitStatus {
    let pid = Pid::from_raw(daemon.pid());
    let status = wait_for(TIMEOUT, &format!("pid {pid} to exit"), || {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => None,
            Ok(status) => Some(status),
            Err(e) => panic!("waitpid({pid}): {e}"),
        }
    });
    std::mem::forget(daemon);
    status
}

/// Sets a file's modification time to a fixed past moment, so that any
/// write would show.
fn set_old_mtime(path: &Path) -> SystemTime {
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(old))
        .expect("set mtime");
    old
}

fn mtime(path: &Path) -> SystemTime {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .expect("mtime")
}

// ---------------------------------------------------------------------------
// The pidfile of a running daemon
// ---------------------------------------------------------------------------

/// The pidfile is `0644` and holds only the PID; the lock is on its
/// companion `FILE.lock`, `0600` (issue 9, item 5: anyone who can open a
/// file can take a shared flock on it), which the daemon holds read-only.
#[test]
fn pidfile_names_the_daemon_which_holds_a_read_only_lock_on_its_0600_lock_file() {
    init();
    let dir = tempdir();
    let pidfile = dir.path().join("app.pid");
    let mut cmd = shell(
        "sh",
        r#"umask 077; [ "$(umask)" = 0077 ] || exit 99; exec "$DAEMONIZE" "$@""#,
    );
    let spec = DaemonSpec::new(dir.path());
    cmd.arg("-p")
        .arg(&pidfile)
        .arg("--")
        .args(spec.argv())
        .run()
        .assert_started();
    // Written before daemonize returned: read at once, without waiting.
    let written = fs::read_to_string(&pidfile).expect("no pidfile after daemonize returned");
    let daemon = spec.start();

    assert_eq!(written, format!("{}\n", daemon.pid()));
    assert!(daemon.is_alive());
    assert_eq!(daemon.stat().ppid, test_pid());
    assert_holds_lock_on(&daemon, &lock_of(&pidfile));

    let meta = fs::metadata(&pidfile).unwrap();
    assert!(meta.is_file());
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o644,
        "mode {:o} despite umask 077",
        meta.permissions().mode()
    );
    assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());

    let lock = fs::symlink_metadata(lock_of(&pidfile)).unwrap();
    assert!(lock.is_file());
    assert_eq!(lock.permissions().mode() & 0o7777, 0o600);
    assert_eq!(lock.uid(), nix::unistd::geteuid().as_raw());
    assert_eq!(lock.len(), 0, "the lock file has content");
}

#[test]
fn a_second_start_is_refused_with_exit_1_naming_the_running_pid() {
    init();
    let dir = tempdir();
    let pidfile = dir.path().join("app.pid");
    let (first, _spec) = launch(dir.path(), &pidfile_option(&pidfile));
    let content = fs::read(&pidfile).unwrap();
    let inode = fs::metadata(&pidfile).unwrap().ino();

    let (output, second) = start(dir.path(), &pidfile_option(&pidfile));
    output.assert_failed(1, &[]);
    assert_eq!(
        output.stderr,
        format!(
            "daemonize: already running (pid {}) according to '{}'\n",
            first.pid(),
            pidfile.display()
        )
    );
    assert_no_leftover(&second.marker);
    assert!(!second.pidfile.exists(), "the second daemon command ran");

    assert!(first.is_alive());
    assert_eq!(fs::read(&pidfile).unwrap(), content);
    assert_eq!(fs::metadata(&pidfile).unwrap().ino(), inode);
    assert_holds_lock_on(&first, &lock_of(&pidfile));
}

/// Kills (by handle) and reaps every spawned process that has not been
/// waited for, when a test fails half way.
struct Spawned(Vec<Child>);

impl Drop for Spawned {
    fn drop(&mut self) {
        for child in &mut self.0 {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

#[test]
fn forty_concurrent_starts_leave_exactly_one_daemon_named_by_the_pidfile() {
    init();
    let dir = tempdir();
    concurrent_starts(&dir.path().join("race.pid"));
}

#[test]
fn forty_concurrent_starts_over_a_stale_pidfile_leave_exactly_one_daemon() {
    init();
    let dir = tempdir();
    let pidfile = dir.path().join("race.pid");
    // Stale: nobody holds its lock. It names a live process that is not
    // the daemon, which nobody may signal.
    let mut bystander = Bystander::spawn();
    write_stale_pidfile(&pidfile, bystander.pid());
    concurrent_starts(&pidfile);
    bystander.assert_untouched();
}

/// Starts `daemonize -p PIDFILE -- sleep MARKER` 40 times at once and
/// checks that exactly one daemon runs, named by the pidfile, and that the
/// 39 others were refused with exit 1.
fn concurrent_starts(pidfile: &Path) {
    const STARTS: usize = 40;
    let marker = unique_marker();

    // Spawn all, each held at a start gate: a shell reading a pipe that
    // they share. Closing its write end releases them all at once, and each
    // execs daemonize; they race for the lock. Then wait for all.
    let (gate, release) = std::io::pipe().expect("pipe");
    let mut cmds = Vec::new();
    let mut stderrs = Vec::new();
    let mut spawned = Spawned(Vec::new());
    for _ in 0..STARTS {
        let mut cmd = shell("sh", r#"read _; exec "$DAEMONIZE" "$@""#);
        let stderr = tempfile::tempfile().expect("capture file");
        cmd.arg("-p")
            .arg(pidfile)
            .args(["--", "sleep", marker.as_str()]);
        cmd.command_mut()
            .stdin(gate.try_clone().expect("dup the gate"))
            .stdout(Stdio::null())
            .stderr(stderr.try_clone().expect("dup capture file"));
        spawned.0.push(cmd.command_mut().spawn().expect("spawn sh"));
        cmds.push(cmd);
        stderrs.push(stderr);
    }
    drop(gate);
    // Best effort, for a tighter race: every shell has started. The result
    // does not depend on it.
    for child in &spawned.0 {
        let pid = i32::try_from(child.id()).expect("PID fits in pid_t");
        wait_for_optional(TIMEOUT, || {
            procfs::cmdline(pid)
                .map_or(true, |argv| argv.first().is_some_and(|a| a == "sh"))
                .then_some(())
        });
    }
    drop(release);
    let codes: Vec<Option<i32>> = spawned
        .0
        .iter_mut()
        .map(|child| {
            wait_for(TIMEOUT, "a concurrent daemonize to exit", || {
                child.try_wait().expect("try_wait")
            })
            .code()
        })
        .collect();

    // Own every daemon before asserting anything: the one the pidfile
    // names (the PID is written before daemonize returns) once it runs
    // `sleep MARKER` (so never a stale PID), and any other process with the
    // marker.
    let mut guards = Vec::new();
    let mut owned = BTreeSet::new();
    let named = fs::read_to_string(pidfile)
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok());
    if let Some(pid) = named {
        let runs_sleep = wait_for_optional(TIMEOUT, || {
            procfs::cmdline(pid)
                .is_ok_and(|argv| argv == ["sleep", marker.as_str()])
                .then_some(())
        });
        if runs_sleep.is_some() {
            owned.insert(pid);
            guards.push(Daemon::new(pid));
        }
    }
    let running: Vec<(i32, String)> = processes_with_marker(&marker);
    for &(pid, _) in &running {
        if owned.insert(pid) {
            guards.push(Daemon::new(pid));
        }
    }

    let messages: Vec<String> = stderrs
        .iter_mut()
        .map(|file| {
            use std::io::{Read, Seek};
            let mut text = String::new();
            file.rewind().unwrap();
            file.read_to_string(&mut text).unwrap();
            text
        })
        .collect();
    let started = codes.iter().filter(|&&c| c == Some(0)).count();
    let refused = codes.iter().filter(|&&c| c == Some(1)).count();
    assert_eq!(
        (started, refused),
        (1, STARTS - 1),
        "exit codes {codes:?}, messages {messages:?}"
    );
    for (code, message) in codes.iter().zip(&messages) {
        match code {
            Some(0) => assert_eq!(message, "", "the winner printed something"),
            _ => assert!(
                message.starts_with("daemonize: already running")
                    && message.contains(&format!("according to '{}'", pidfile.display()))
                    && message.lines().count() == 1,
                "unexpected refusal: {message:?}"
            ),
        }
    }
    let survivor = pid_in(pidfile);
    assert_eq!(
        running.iter().map(|(pid, _)| *pid).collect::<Vec<_>>(),
        [survivor],
        "processes with the marker: {running:?}"
    );
    assert_eq!(procfs::stat(survivor).unwrap().ppid, test_pid());
    assert_eq!(
        status(pidfile).assert_code(0).stdout,
        format!("running (pid {survivor})\n")
    );
    drop(guards);
    assert_no_leftover(&marker);
}

// ---------------------------------------------------------------------------
// Stale pidfiles
// ---------------------------------------------------------------------------

#[test]
fn after_kill_9_the_pidfile_is_stale_and_a_new_start_takes_it_over() {
    init();
    let dir = tempdir();
    let pidfile = dir.path().join("app.pid");
    let (old, _old_spec) = launch(dir.path(), &pidfile_option(&pidfile));
    let old_pid = old.pid();

    nix::sys::signal::kill(Pid::from_raw(old_pid), Signal::SIGKILL).expect("kill -9");
    // Not reaped yet: a zombie, whose lock is already gone.
    wait_exited(&old);
    assert_eq!(pid_in(&pidfile), old_pid, "the pidfile was touched");
    let stale = status(&pidfile);
    stale.assert_code(1);
    assert_eq!(
        stale.stdout,
        format!("not running (stale pidfile '{}')\n", pidfile.display())
    );
    drop(old); // Reaps it.
    status(&pidfile).assert_code(1);

    let (new, _new_spec) = launch(dir.path(), &pidfile_option(&pidfile));
    assert_ne!(new.pid(), old_pid);
    assert_eq!(pid_in(&pidfile), new.pid());
    assert_holds_lock_on(&new, &lock_of(&pidfile));
    assert_eq!(
        status(&pidfile).assert_code(0).stdout,
        format!("running (pid {})\n", new.pid())
    );
}

#[test]
fn a_failed_start_removes_a_stale_pidfile_rather_than_leave_it_naming_a_dead_process() {
    init();
    let dir = tempdir();
    let pidfile = dir.path().join("app.pid");
    let mut bystander = Bystander::spawn();
    write_stale_pidfile(&pidfile, bystander.pid());
    let marker = unique_marker();
    let missing = format!("daemonize-test-missing-{marker}");

    let output = daemonize()
        .arg("-p")
        .arg(&pidfile)
        .arg("--")
        .arg(&missing)
        .arg(&marker)
        .run();
    output.assert_failed(127, &[&format!("cannot execute '{missing}'")]);
    assert!(!pidfile.exists(), "the pidfile was left behind");
    assert!(!lock_of(&pidfile).exists(), "its lock file was left behind");
    assert_no_leftover(&marker);
    bystander.assert_untouched();

    // Nor is one left when there was none before.
    let output = daemonize()
        .arg("-p")
        .arg(&pidfile)
        .arg("--")
        .arg(&missing)
        .arg(&marker)
        .run();
    output.assert_failed(127, &[]);
    assert!(!pidfile.exists(), "the pidfile was left behind");
    assert!(!lock_of(&pidfile).exists(), "its lock file was left behind");
    status(&pidfile).assert_code(3);
}

/// While a start over a stale pidfile is under way (it holds the lock, and
/// with `--ready-fd` it keeps holding it until the daemon is ready), the
/// file still holds the *stale* PID: the new PID is only written at the
/// end. `--status` then reports that stale PID as running, and `--stop`
/// trusts it (the lock is held, the content unchanged) and signals whatever
/// process has that PID now: exactly the PID-reuse case docs/design.md says
/// `--stop` cannot hit. Here the stale PID is a live bystander of ours.
/// `--stop` must end the start in progress through the lock instead.
#[test]
fn a_start_in_progress_over_a_stale_pidfile_never_exposes_the_stale_pid() {
    init();
    let dir = tempdir();
    let pidfile = dir.path().join("app.pid");
    let mut bystander = Bystander::spawn();
    write_stale_pidfile(&pidfile, bystander.pid());

    // A start that waits for a readiness notification that never comes.
    let mut cmd = daemonize();
    let spec = DaemonSpec::new(dir.path());
    cmd.args(["--ready-fd", "3", "--ready-timeout", "60"])
        .arg("-p")
        .arg(&pidfile)
        .arg("--")
        .args(spec.argv());
    cmd.command_mut()
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut starting = Spawned(vec![cmd.command_mut().spawn().expect("spawn daemonize")]);
    let daemon = spec.start(); // It runs, and daemonize holds the lock.

    let during = status(&pidfile);
    assert_eq!(during.code, Some(0), "{during:?}");
    assert!(
        during.stdout.contains("starting"),
        "--status did not say a start is in progress: {during:?}"
    );
    // --stop ends the start in progress: it signals what holds the lock,
    // never the stale PID.
    let stopped = stop(&pidfile, &["--timeout", "1"]);
    bystander.assert_untouched();
    stopped.assert_code(0);
    wait_until(TIMEOUT, "the starting daemon to be stopped", || {
        !daemon.is_alive()
    });
    // daemonize, its subreaper, reaps it: the guard must not touch the PID.
    std::mem::forget(daemon);

    // The daemon died before it was ready: daemonize gives up.
    let child = &mut starting.0[0];
    let ended = wait_for(TIMEOUT, "daemonize to give up", || {
        child.try_wait().expect("try_wait")
    });
    assert_eq!(ended.code(), Some(125));
}

// ---------------------------------------------------------------------------
// --stop
// ---------------------------------------------------------------------------

/// The bit of `signal` in a /proc signal mask.
fn signal_bit(signal: Signal) -> u64 {
    1 << (signal as i32 - 1)
}

#[test]
fn stop_kills_a_daemon_that_ignores_the_signal_after_the_timeout() {
    init();
    let dir = tempdir();
    let pidfile = dir.path().join("app.pid");
    // The ignored disposition survives `exec sleep`: the process that holds
    // the lock is the one that ignores TERM, and it has no children.
    let spec = DaemonSpec::new(dir.path()).prelude(r#"trap "" TERM"#);
    let Launched { daemon, .. } = launch_with(daemonize(), spec, pidfile_option(&pidfile));
    assert_ne!(
        daemon.status().sig_ign() & signal_bit(Signal::SIGTERM),
        0,
        "set-up: the daemon does not ignore TERM"
    );
    assert_holds_lock_on(&daemon, &lock_of(&pidfile));

    let before = Instant::now();
    let output = stop(&pidfile, &["--timeout", "1"]);
    let elapsed = before.elapsed();
    output.assert_code(0);
    assert_eq!(output.stderr, "", "{output:?}");
    assert!(!daemon.is_alive());
    assert!(!pidfile.exists(), "the pidfile was not removed");
    assert!(
        elapsed >= Duration::from_secs(1),
        "stopped after {elapsed:?}, before the 1 s timeout"
    );
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
    let pid = daemon.pid();
    assert!(
        matches!(reap(daemon), WaitStatus::Signaled(_, Signal::SIGKILL, _)),
        "pid {pid} did not end by SIGKILL"
    );
    status(&pidfile).assert_code(3);
}

/// A daemon whose child inherited its locked descriptor, as children do: a
/// shell script's `sleep`, a server's workers. `child_prelude` runs in the
/// child before it execs `sleep`. Returns (daemon, child, pidfile).
fn daemon_with_a_lock_holding_child(dir: &Path, child_prelude: &str) -> (Daemon, Daemon, PathBuf) {
    let pidfile = dir.join("app.pid");
    let child_pid = dir.join("child.pid");
    let spec = DaemonSpec::new(dir).prelude(&format!(
        r#"({child_prelude} exec sleep 1000) & echo $! > "{}""#,
        child_pid.display()
    ));
    let Launched { daemon, .. } = launch_with(daemonize(), spec, pidfile_option(&pidfile));
    let child = Daemon::new(wait_for_pid_file(&child_pid, TIMEOUT));
    wait_until(TIMEOUT, "the child to exec sleep", || {
        procfs::cmdline(child.pid()).is_ok_and(|argv| argv.first().is_some_and(|a| a == "sleep"))
    });
    assert_holds_lock_on(&daemon, &lock_of(&pidfile));
    assert_holds_lock_on(&child, &lock_of(&pidfile));
    (daemon, child, pidfile)
}

/// The lock is the daemon's lifetime, and a child that inherited it is part
/// of it: `--stop` stops it too, instead of failing with a pidfile that a
/// next start would find locked.
#[test]
fn stop_also_stops_children_that_inherited_the_lock() {
    init();
    let dir = tempdir();
    let (daemon, child, pidfile) = daemon_with_a_lock_holding_child(dir.path(), "");
    let output = stop(&pidfile, &[]);
    output.assert_code(0);
    assert_eq!(output.stderr, "", "{output:?}");
    assert!(!pidfile.exists(), "the pidfile was not removed");
    for process in [daemon, child] {
        let pid = process.pid();
        assert!(
            matches!(reap(process), WaitStatus::Signaled(_, Signal::SIGTERM, _)),
            "pid {pid} did not end by SIGTERM"
        );
    }
    status(&pidfile).assert_code(3);
}

#[test]
fn a_child_holding_the_lock_that_ignores_the_signal_is_killed_at_the_timeout() {
    init();
    let dir = tempdir();
    let (daemon, child, pidfile) = daemon_with_a_lock_holding_child(dir.path(), r#"trap "" TERM;"#);
    let before = Instant::now();
    let output = stop(&pidfile, &["--timeout", "1"]);
    let elapsed = before.elapsed();
    output.assert_code(0);
    assert!(!pidfile.exists(), "the pidfile was not removed");
    assert!(
        elapsed >= Duration::from_secs(1),
        "stopped after {elapsed:?}"
    );
    assert!(matches!(
        reap(daemon),
        WaitStatus::Signaled(_, Signal::SIGTERM, _)
    ));
    let pid = child.pid();
    assert!(
        matches!(reap(child), WaitStatus::Signaled(_, Signal::SIGKILL, _)),
        "child {pid} did not end by SIGKILL"
    );
}

/// The daemon died on its own; a child still holds the lock. The instance
/// still runs as far as the lock goes: the one process left holding it
/// took over (as a program that forked into the background after
/// daemonize returned), `--status` names it and points the pidfile at it,
/// and `--stop` ends it.
#[test]
fn stop_after_the_daemon_died_stops_the_children_holding_its_lock() {
    init();
    let dir = tempdir();
    let (daemon, child, pidfile) = daemon_with_a_lock_holding_child(dir.path(), "");
    kill(Pid::from_raw(daemon.pid()), Signal::SIGKILL).unwrap();
    let _ = reap(daemon);
    let output = status(&pidfile);
    output.assert_code(0);
    assert_eq!(output.stdout, format!("running (pid {})\n", child.pid()));
    assert_eq!(
        pid_in(&pidfile),
        child.pid(),
        "the pidfile was not pointed at it"
    );
    stop(&pidfile, &[]).assert_code(0);
    assert!(!pidfile.exists(), "the pidfile was not removed");
    let pid = child.pid();
    assert!(
        matches!(reap(child), WaitStatus::Signaled(_, Signal::SIGTERM, _)),
        "child {pid} did not end by SIGTERM"
    );
}

/// When the daemon has died and the processes left holding its lock are
/// not one tree (two children of the daemon's), none of them is "the
/// daemon": `--status` says the instance runs, `--signal` cannot tell whom
/// to signal (4) and signals nobody, and `--stop` stops them all.
#[test]
fn signal_after_the_daemon_died_leaving_two_lock_holders_cannot_tell_and_sends_nothing() {
    init();
    let dir = tempdir();
    let pidfile = dir.path().join("app.pid");
    let (first, second) = (dir.path().join("first.pid"), dir.path().join("second.pid"));
    let spec = DaemonSpec::new(dir.path()).prelude(&format!(
        r#"(exec sleep 1000) & echo $! > "{}"; (exec sleep 1000) & echo $! > "{}""#,
        first.display(),
        second.display()
    ));
    let Launched { daemon, .. } = launch_with(daemonize(), spec, pidfile_option(&pidfile));
    let children = [first, second].map(|f| Daemon::new(wait_for_pid_file(&f, TIMEOUT)));
    for child in &children {
        wait_until(TIMEOUT, "the child to exec sleep", || {
            procfs::cmdline(child.pid())
                .is_ok_and(|argv| argv.first().is_some_and(|a| a == "sleep"))
        });
    }
    kill(Pid::from_raw(daemon.pid()), Signal::SIGKILL).unwrap();
    let _ = reap(daemon);
    status(&pidfile).assert_code(0);
    control(&pidfile, &["--signal", "TERM"]).assert_failed(
        4,
        &[
            "cannot tell which process is the daemon",
            "not one process tree",
        ],
    );
    for child in &children {
        assert!(child.is_alive(), "--signal signalled {}", child.pid());
    }
    stop(&pidfile, &[]).assert_code(0);
    for child in children {
        let pid = child.pid();
        assert!(
            matches!(reap(child), WaitStatus::Signaled(_, Signal::SIGTERM, _)),
            "child {pid} did not end by SIGTERM"
        );
    }
}

/// Starts a daemon, stops it with `options`, and checks that it ended by
/// `expected` and that the pidfile is gone.
#[track_caller]
fn assert_stopped_by(options: &[&str], expected: Signal) {
    let dir = tempdir();
    let pidfile = dir.path().join("app.pid");
    let (daemon, _spec) = launch(dir.path(), &pidfile_option(&pidfile));
    let pid = daemon.pid();

    let output = stop(&pidfile, options);
    output.assert_code(0);
    assert_eq!(output.stderr, "", "{options:?}: {output:?}");
    assert!(!daemon.is_alive(), "{options:?}: the daemon still runs");
    assert!(
        !pidfile.exists(),
        "{options:?}: the pidfile was not removed"
    );
    assert!(
        !lock_of(&pidfile).exists(),
        "{options:?}: its lock file was not removed"
    );
    let ended = reap(daemon);
    assert!(
        matches!(ended, WaitStatus::Signaled(p, s, _) if p.as_raw() == pid && s == expected),
        "{options:?}: expected the daemon to end by {expected}, got {ended:?}"
    );
    status(&pidfile).assert_code(3);
}

#[test]
fn stop_sends_term_by_default_and_removes_the_pidfile() {
    init();
    assert_stopped_by(&[], Signal::SIGTERM);
}

#[test]
fn stop_signal_is_accepted_by_name_number_and_sig_name() {
    init();
    for spelling in ["INT", "2", "SIGINT", "int"] {
        assert_stopped_by(&["--signal", spelling], Signal::SIGINT);
    }
}

#[test]
fn stop_without_a_pidfile_succeeds_and_creates_nothing() {
    init();
    let dir = tempdir();
    let pidfile = dir.path().join("app.pid");
    stop(&pidfile, &[]).assert_code(0);
    assert!(!pidfile.exists());
}

#[test]
fn stop_with_a_stale_pidfile_removes_it_and_signals_nobody() {
    init();
    let dir = tempdir();
    let pidfile = dir.path().join("app.pid");
    // The stale pidfile names a live process, which is not the daemon: it
    // started after the file was written.
    let mut bystander = Bystander::spawn();
    write_stale_pidfile(&pidfile, bystander.pid());
    stop(&pidfile, &["--timeout", "0"]).assert_code(0);
    assert!(!pidfile.exists(), "the stale pidfile was not removed");
    assert!(!lock_of(&pidfile).exists(), "a lock file was left");
    bystander.assert_untouched();
}

/// A pidfile that holds something other than a PID names no process to
/// stop, locked or not: `--stop` cannot tell what runs (4), and leaves it.
#[test]
fn stop_of_a_pidfile_that_holds_no_pid_cannot_tell_and_leaves_it() {
    init();
    let dir = tempdir();
    let pidfile = dir.path().join("app.pid");
    fs::write(&pidfile, "hello").unwrap();
    stop(&pidfile, &[]).assert_failed(4, &["cannot tell whether the daemon runs", "hello"]);
    let holder = File::create(lock_of(&pidfile)).unwrap();
    holder.try_lock().expect("lock the lock file");
    stop(&pidfile, &[]).assert_failed(4, &["cannot tell whether the daemon runs", "hello"]);
    holder.unlock().expect("unlock the lock file");
    assert_eq!(fs::read_to_string(&pidfile).unwrap(), "hello");
}

// ---------------------------------------------------------------------------
// --status
// ---------------------------------------------------------------------------

#[test]
fn status_of_a_running_daemon_exits_0_and_prints_its_pid() {
    init();
    let dir = tempdir();
    let pidfile = dir.path().join("app.pid");
    let (daemon, _spec) = launch(dir.path(), &pidfile_option(&pidfile));
    let output = status(&pidfile);
    output.assert_code(0);
    assert_eq!(output.stdout, format!("running (pid {})\n", daemon.pid()));
    assert_eq!(output.stderr, "");
}

#[test]
fn status_without_a_pidfile_exits_3() {
    init();
    let dir = tempdir();
    let pidfile = dir.path().join("app.pid");
    let output = status(&pidfile);
    output.assert_code(3);
    assert_eq!(
        output.stdout,
        format!("not running (no pidfile '{}')\n", pidfile.display())
    );
    assert_eq!(output.stderr, "");
    assert!(!pidfile.exists());
}

/// README and `--help` promise 4 for a pidfile that holds garbage (issue 9,
/// item 21): whether its lock is held or not, it names no process, and the
/// daemon may run without its lock (identity rule), so nobody can tell.
#[test]
fn status_of_a_pidfile_with_garbage_exits_4_locked_or_not() {
    init();
    let dir = tempdir();
    let pidfile = dir.path().join("app.pid");
    fs::write(&pidfile, "hello").unwrap();
    let unknown = |output: Output| {
        output.assert_failed(
            4,
            &[
                "cannot tell whether the daemon runs",
                &format!("'{}'", pidfile.display()),
                "hello",
            ],
        );
    };

    // Nobody holds its lock.
    unknown(status(&pidfile));

    // We hold the lock: something runs, but the file names no PID.
    let holder = File::create(lock_of(&pidfile)).unwrap();
    holder.try_lock().expect("lock the lock file");
    unknown(status(&pidfile));
    // Unlock explicitly rather than by closing: a process that another
    // test thread is forking may hold a copy of the descriptor until it
    // execs, and the lock lives as long as any copy does.
    holder.unlock().expect("unlock the lock file");
    unknown(status(&pidfile));
    assert_eq!(fs::read_to_string(&pidfile).unwrap(), "hello");
}

// ---------------------------------------------------------------------------
// Bad pidfile paths
// ---------------------------------------------------------------------------

#[test]
fn a_symlinked_pidfile_is_refused_and_its_target_untouched() {
    init();
    let dir = tempdir();
    let target = dir.path().join("target");
    fs::write(&target, "precious\n").unwrap();
    let old = set_old_mtime(&target);
    let link = dir.path().join("app.pid");
    std::os::unix::fs::symlink(&target, &link).unwrap();

    let (output, spec) = start(dir.path(), &pidfile_option(&link));
    output.assert_failed(
        125,
        &[
            &format!("cannot open pidfile '{}'", link.display()),
            "symbolic link",
        ],
    );
    assert_no_leftover(&spec.marker);
    assert!(!spec.pidfile.exists(), "the daemon command ran");

    status(&link).assert_failed(4, &["cannot tell whether the daemon runs", "symbolic link"]);
    stop(&link, &[]).assert_failed(1, &["cannot stop the daemon", "symbolic link"]);

    assert_eq!(fs::read_to_string(&target).unwrap(), "precious\n");
    assert_eq!(mtime(&target), old, "the target was written to");
    assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
}

#[test]
fn a_dangling_symlinked_pidfile_is_refused_and_its_target_not_created() {
    init();
    let dir = tempdir();
    let target = dir.path().join("target");
    let link = dir.path().join("app.pid");
    std::os::unix::fs::symlink(&target, &link).unwrap();

    let (output, spec) = start(dir.path(), &pidfile_option(&link));
    output.assert_failed(125, &["symbolic link"]);
    assert_no_leftover(&spec.marker);
    assert!(!target.exists(), "the symlink was followed");
    status(&link).assert_failed(4, &["symbolic link"]);
    assert!(!target.exists(), "the symlink was followed");
}

#[test]
fn a_pidfile_in_a_missing_directory_exits_125_naming_it() {
    init();
    let dir = tempdir();
    let pidfile = dir.path().join("missing").join("app.pid");
    let (output, spec) = start(dir.path(), &pidfile_option(&pidfile));
    output.assert_failed(
        125,
        &[
            &format!("cannot open lock file '{}'", lock_of(&pidfile).display()),
            &format!("of pidfile '{}'", pidfile.display()),
            "No such file or directory",
        ],
    );
    assert_no_leftover(&spec.marker);
    assert!(!spec.pidfile.exists(), "the daemon command ran");
    assert!(!dir.path().join("missing").exists());
}

// ---------------------------------------------------------------------------
// Usage errors
// ---------------------------------------------------------------------------

#[test]
fn status_stop_signal_and_reload_need_a_pidfile() {
    init();
    for action in [
        &["--status"][..],
        &["--stop"],
        &["--signal", "HUP"],
        &["--reload"],
    ] {
        daemonize()
            .args(action)
            .run()
            .assert_failed(125, &["--pidfile"]);
    }
}

#[test]
fn status_or_stop_with_a_command_is_a_usage_error() {
    init();
    for action in ["--status", "--stop"] {
        let dir = tempdir();
        let pidfile = dir.path().join("app.pid");
        let (output, spec) = start(
            dir.path(),
            &[OsStr::new(action), OsStr::new("-p"), pidfile.as_os_str()],
        );
        output.assert_failed(125, &[action, "cannot be used with"]);
        assert_no_leftover(&spec.marker);
        assert!(!spec.pidfile.exists(), "{action}: the daemon command ran");
        assert!(!pidfile.exists(), "{action}: a pidfile was created");
    }
}

#[test]
fn an_unknown_signal_or_a_bad_timeout_is_a_usage_error_and_stops_nothing() {
    init();
    let dir = tempdir();
    let pidfile = dir.path().join("app.pid");
    let (daemon, _spec) = launch(dir.path(), &pidfile_option(&pidfile));
    let beyond = format!("RTMIN+{}", libc::SIGRTMAX() - libc::SIGRTMIN() + 1);
    for bogus in [
        "BOGUS", "SIGBOGUS", "0", "99", "", "65", "RTMIN-1", "RTMAX+1", "RTMIN+x", &beyond,
    ] {
        stop(&pidfile, &["--signal", bogus]).assert_failed(
            125,
            &[&format!("invalid value '{bogus}' for '--signal <SIG>'")],
        );
    }
    for bogus in ["abc", "inf", "1s"] {
        stop(&pidfile, &["--timeout", bogus]).assert_failed(
            125,
            &[&format!("invalid value '{bogus}' for '--timeout <SECS>'")],
        );
    }
    assert!(daemon.is_alive());
    assert_eq!(pid_in(&pidfile), daemon.pid());
}

/// `--signal`, `--reload` and `--timeout` are control options: given with a
/// command they must be refused, not silently ignored (clap alone lets a
/// `requires` pass when the required option conflicts with COMMAND).
#[test]
fn signal_reload_or_timeout_with_a_command_is_a_usage_error() {
    init();
    for option in [&["--signal", "INT"][..], &["--timeout", "3"], &["--reload"]] {
        let dir = tempdir();
        let pidfile = dir.path().join("app.pid");
        let (output, spec) = start(
            dir.path(),
            &[OsStr::new("-p"), pidfile.as_os_str()]
                .into_iter()
                .chain(option.iter().map(OsStr::new))
                .collect::<Vec<_>>(),
        );
        // Own the daemon if it was started after all.
        let _daemon = (output.code == Some(0)).then(|| spec.start());
        output.assert_failed(125, &[option[0]]);
        assert_no_leftover(&spec.marker);
    }
}

/// `--timeout` is how long `--stop` waits; a lone `--signal` waits for
/// nothing.
#[test]
fn timeout_without_stop_is_a_usage_error() {
    init();
    let dir = tempdir();
    let pidfile = dir.path().join("app.pid");
    daemonize()
        .arg("-p")
        .arg(&pidfile)
        .args(["--signal", "HUP", "--timeout", "3"])
        .run()
        .assert_failed(125, &["--timeout", "--stop"]);
    assert!(!pidfile.exists());
}

// ---------------------------------------------------------------------------
// The lockfile
// ---------------------------------------------------------------------------

#[test]
fn lockfile_refuses_a_second_start_and_its_content_is_never_touched() {
    init();
    let dir = tempdir();
    let lockfile = dir.path().join("app.lock");
    fs::write(&lockfile, "not a pid\n").unwrap();
    let old = set_old_mtime(&lockfile);
    let option = [OsStr::new("-l"), lockfile.as_os_str()];

    let (first, _spec) = launch(dir.path(), &option);
    assert_holds_lock_on(&first, &lockfile);
    assert_eq!(fs::read_to_string(&lockfile).unwrap(), "not a pid\n");
    assert_eq!(mtime(&lockfile), old, "the lockfile was written to");

    let (output, second) = start(dir.path(), &option);
    output.assert_failed(1, &[]);
    assert_eq!(
        output.stderr,
        format!(
            "daemonize: already running according to '{}'\n",
            lockfile.display()
        )
    );
    assert_no_leftover(&second.marker);
    assert!(!second.pidfile.exists(), "the second daemon command ran");
    assert!(first.is_alive());
    assert_eq!(fs::read_to_string(&lockfile).unwrap(), "not a pid\n");
    assert_eq!(mtime(&lockfile), old, "the lockfile was written to");
}

/// Created `0600`: like a pidfile's lock file, only its owner may open it,
/// so nobody else can take a lock on it (issue 9, item 5); whatever the
/// umask, even one that takes the owner's write bit.
#[test]
fn lockfile_is_created_empty_and_0600() {
    init();
    let dir = tempdir();
    let lockfile = dir.path().join("app.lock");
    let mut cmd = shell("sh", r#"umask 277; exec "$DAEMONIZE" "$@""#);
    let spec = DaemonSpec::new(dir.path());
    cmd.arg("-l")
        .arg(&lockfile)
        .arg("--")
        .args(spec.argv())
        .run()
        .assert_started();
    let daemon = spec.start();
    assert_holds_lock_on(&daemon, &lockfile);
    let meta = fs::metadata(&lockfile).unwrap();
    assert_eq!(meta.len(), 0);
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
}

// ---------------------------------------------------------------------------
// The LSB init script example
// ---------------------------------------------------------------------------

const INIT_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/init.d/daemonize-example"
);

/// The init script's configuration, all in a temporary directory.
struct Service {
    name: String,
    marker: String,
    pidfile: PathBuf,
    logfile: PathBuf,
    _dir: TempDir,
}

impl Service {
    fn new() -> Service {
        let dir = tempdir();
        let marker = unique_marker();
        Service {
            // Unique, so no /etc/default/NAME is sourced.
            name: format!("daemonize-test-{marker}"),
            pidfile: dir.path().join("service.pid"),
            logfile: dir.path().join("service.log"),
            marker,
            _dir: dir,
        }
    }

    /// `sh daemonize-example ACTION`.
    fn run(&self, action: &str) -> Output {
        let mut cmd = common::Cmd::new("sh");
        cmd.arg(INIT_SCRIPT)
            .arg(action)
            .env("NAME", &self.name)
            .env("DAEMON", "/bin/sleep")
            .env("DAEMON_ARGS", &self.marker)
            .env("DAEMONIZE", common::bin())
            .env("PIDFILE", &self.pidfile)
            .env("LOGFILE", &self.logfile)
            .env("STOP_TIMEOUT", "10");
        cmd.run()
    }

    /// Owns the daemon with this PID, once it runs `/bin/sleep MARKER`.
    #[track_caller]
    fn daemon(&self, pid: i32) -> Daemon {
        let daemon = Daemon::new(pid);
        wait_until(TIMEOUT, "the service to run sleep", || {
            assert!(daemon.is_alive(), "the service {} died", daemon.pid());
            procfs::cmdline(daemon.pid())
                .is_ok_and(|argv| argv == ["/bin/sleep", self.marker.as_str()])
        });
        daemon
    }

    #[track_caller]
    fn assert_status_running(&self, daemon: &Daemon) {
        let output = self.run("status");
        output.assert_code(0);
        assert_eq!(output.stdout, format!("running (pid {})\n", daemon.pid()));
    }
}

#[test]
fn init_script_start_status_restart_stop() {
    init();
    let service = Service::new();
    service.run("status").assert_code(3);

    service.run("start").assert_started();
    let first = service.daemon(pid_in(&service.pidfile));
    assert_descriptors(&first, &service.logfile, &lock_of(&service.pidfile));
    service.assert_status_running(&first);

    // LSB: starting a running service succeeds, and changes nothing.
    let again = service.run("start");
    again.assert_code(0);
    assert!(
        again.stdout.contains("already running"),
        "second start: {again:?}"
    );
    assert_eq!(pid_in(&service.pidfile), first.pid());
    assert_eq!(processes_with_marker(&service.marker).len(), 1);

    let restart = service.run("restart");
    restart.assert_code(0);
    let pid = pid_in(&service.pidfile);
    assert_ne!(pid, first.pid(), "restart: {restart:?}");
    // The new daemon is owned before anything else is checked.
    let second = service.daemon(pid);
    assert!(!first.is_alive(), "the old daemon survived the restart");
    service.assert_status_running(&second);
    assert_eq!(
        processes_with_marker(&service.marker)
            .iter()
            .map(|(pid, _)| *pid)
            .collect::<Vec<_>>(),
        [second.pid()]
    );

    service.run("stop").assert_code(0);
    assert!(!second.is_alive(), "the daemon survived stop");
    assert!(!service.pidfile.exists(), "stop left the pidfile");
    let output = service.run("status");
    output.assert_code(3);
    assert!(output.stdout.starts_with("not running"), "{output:?}");
    assert_no_leftover(&service.marker);

    // Stopping a stopped service succeeds too.
    service.run("stop").assert_code(0);
}

#[test]
fn init_script_rejects_an_unknown_action() {
    init();
    let service = Service::new();
    let output = service.run("bogus");
    output.assert_code(3);
    assert!(output.stderr.contains("Usage:"), "{output:?}");
    assert!(!service.pidfile.exists());
    assert_no_leftover(&service.marker);
}

// ---------------------------------------------------------------------------
// Other users: readers, owners, callers who may not look
// ---------------------------------------------------------------------------

const NOBODY: u32 = 65534;
const NOGROUP: u32 = 65534;

/// A temporary directory (root's) that any user may enter and read.
fn dir_for_anyone() -> TempDir {
    let dir = tempdir();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// `daemonize ARGS`, run as nobody.
fn as_nobody(args: &[&OsStr]) -> Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = daemonize();
    fs::set_permissions(cmd.dir(), fs::Permissions::from_mode(0o755)).unwrap();
    cmd.args(args);
    cmd.command_mut().uid(NOBODY).gid(NOGROUP);
    cmd.run()
}

/// A PID that no process has: a child of ours that has exited and been
/// reaped.
fn dead_pid() -> i32 {
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    child.wait().expect("wait for true");
    i32::try_from(child.id()).expect("PID fits in pid_t")
}

/// `sleep MARKER`, run as nobody, holding a shared flock on `file`, which it
/// opened read-only, as anyone who may read the file can. Killed (by its
/// handle) on drop.
struct Reader {
    child: Child,
}

impl Reader {
    fn lock_shared(file: &Path) -> Reader {
        use std::os::unix::process::CommandExt;
        let marker = unique_marker();
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg(r#"exec 3< "$0" && flock -s -n 3 && exec sleep "$1""#)
            .arg(file)
            .arg(&marker)
            .uid(NOBODY)
            .gid(NOGROUP)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn the reader");
        let reader = Reader { child };
        let pid = i32::try_from(reader.child.id()).unwrap();
        wait_until(TIMEOUT, "the reader to hold its shared lock", || {
            procfs::cmdline(pid).is_ok_and(|argv| argv == ["sleep", marker.as_str()])
        });
        assert!(
            fdinfo(pid, 3)
                .lines()
                .any(|l| l.contains("FLOCK") && l.contains("READ")),
            "set-up: the reader holds no shared lock"
        );
        reader
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Issue 9, item 5: the pidfile is world-readable, so anyone could take a
/// shared flock on it; then a start said "already running", `--status`
/// said running and `--stop` could not stop. The lock is on the `0600`
/// lock file now, which a reader cannot even open.
#[test]
fn a_reader_holding_a_shared_lock_on_the_pidfile_blocks_no_start_status_or_stop() {
    init();
    let dir = dir_for_anyone();
    let pidfile = dir.path().join("app.pid");
    fs::write(&pidfile, format!("{}\n", dead_pid())).unwrap();
    let _reader = Reader::lock_shared(&pidfile);

    let stale = status(&pidfile);
    stale.assert_code(1);
    assert_eq!(
        stale.stdout,
        format!("not running (stale pidfile '{}')\n", pidfile.display())
    );

    let (daemon, _spec) = launch(dir.path(), &pidfile_option(&pidfile));
    assert_eq!(pid_in(&pidfile), daemon.pid());
    assert_holds_lock_on(&daemon, &lock_of(&pidfile));
    let running = status(&pidfile);
    running.assert_code(0);
    assert_eq!(running.stdout, format!("running (pid {})\n", daemon.pid()));

    // The reader cannot take the lock that matters.
    let mut locker = common::Cmd::new("flock");
    fs::set_permissions(locker.dir(), fs::Permissions::from_mode(0o755)).unwrap();
    locker.args(["-s", "-n"]).arg(lock_of(&pidfile)).arg("true");
    {
        use std::os::unix::process::CommandExt;
        locker.command_mut().uid(NOBODY).gid(NOGROUP);
    }
    let denied = locker.run();
    assert_ne!(
        denied.code,
        Some(0),
        "nobody locked the lock file: {denied:?}"
    );
    assert!(denied.stderr.contains("Permission denied"), "{denied:?}");

    stop(&pidfile, &[]).assert_code(0);
    assert!(
        matches!(reap(daemon), WaitStatus::Signaled(_, Signal::SIGTERM, _)),
        "the daemon did not end by SIGTERM"
    );
    assert!(!pidfile.exists(), "the pidfile was not removed");
    assert!(!lock_of(&pidfile).exists(), "its lock file was not removed");
}

/// Whoever owns a lock file can hold its lock, and so block or falsify
/// every start, `--status` and `--stop`: one that another user owns is
/// refused, naming the owner, and nothing is started or changed.
#[test]
fn a_lock_file_or_lockfile_owned_by_another_user_is_refused_naming_its_owner() {
    init();
    for option in ["-p", "-l"] {
        let dir = dir_for_anyone();
        let given = dir.path().join(if option == "-p" {
            "app.pid"
        } else {
            "app.lock"
        });
        let locked = if option == "-p" {
            lock_of(&given)
        } else {
            given.clone()
        };
        fs::write(&locked, "").unwrap();
        std::os::unix::fs::chown(&locked, Some(NOBODY), Some(NOGROUP)).unwrap();

        let (output, spec) = start(dir.path(), &[OsStr::new(option), given.as_os_str()]);
        let _daemon = (output.code == Some(0)).then(|| spec.start());
        output.assert_failed(
            125,
            &[
                &format!(
                    "cannot use {}",
                    if option == "-p" {
                        "lock file"
                    } else {
                        "lockfile"
                    }
                ),
                &format!("'{}'", locked.display()),
                "'nobody' (uid 65534)",
                "not to you",
                "block or falsify",
            ],
        );
        assert_no_leftover(&spec.marker);
        if option == "-p" {
            assert!(!given.exists(), "{option}: a pidfile was created");
        }
        let meta = fs::metadata(&locked).unwrap();
        assert_eq!(
            (meta.uid(), meta.len()),
            (NOBODY, 0),
            "{option}: it was changed"
        );
    }
}

#[test]
fn a_lock_file_that_is_not_a_regular_file_is_refused_and_a_symlink_never_followed() {
    init();
    let dir = tempdir();
    let target = dir.path().join("target");
    fs::write(&target, "precious\n").unwrap();
    let old = set_old_mtime(&target);
    let mode = fs::metadata(&target).unwrap().permissions().mode();
    for (kind, words) in [
        ("fifo", &["not a regular file"][..]),
        ("directory", &["not a regular file"]),
        ("symlink", &["symbolic link"]),
        ("hardlink", &["hard links"]),
    ] {
        let pidfile = dir.path().join(format!("{kind}.pid"));
        let lock = lock_of(&pidfile);
        match kind {
            "fifo" => {
                nix::unistd::mkfifo(&lock, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap()
            }
            "directory" => fs::create_dir(&lock).unwrap(),
            "hardlink" => fs::hard_link(&target, &lock).unwrap(),
            _ => std::os::unix::fs::symlink(&target, &lock).unwrap(),
        }
        let (output, spec) = start(dir.path(), &pidfile_option(&pidfile));
        let _daemon = (output.code == Some(0)).then(|| spec.start());
        output.assert_failed(125, words);
        assert!(
            output.stderr.contains(&format!("'{}'", lock.display())),
            "{kind}: {output:?}"
        );
        assert_no_leftover(&spec.marker);
        assert!(!pidfile.exists(), "{kind}: a pidfile was created");
        status(&pidfile).assert_code(3);
    }
    assert_eq!(fs::read_to_string(&target).unwrap(), "precious\n");
    assert_eq!(mtime(&target), old, "the symlink's target was written to");
    assert_eq!(
        fs::metadata(&target).unwrap().permissions().mode(),
        mode,
        "the linked file's mode was changed"
    );
}

/// A lock file (or lockfile) of ours that others may open loses their
/// permission bits: from then on only its owner can take its lock.
#[test]
fn a_lock_file_or_lockfile_open_to_others_is_made_0600() {
    init();
    let dir = tempdir();
    let pidfile = dir.path().join("app.pid");
    let lockfile = dir.path().join("app.lock");
    fs::write(lock_of(&pidfile), "").unwrap();
    fs::set_permissions(lock_of(&pidfile), fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&lockfile, "kept\n").unwrap();
    fs::set_permissions(&lockfile, fs::Permissions::from_mode(0o666)).unwrap();
    let (daemon, _spec) = launch(
        dir.path(),
        &[
            OsStr::new("-p"),
            pidfile.as_os_str(),
            OsStr::new("-l"),
            lockfile.as_os_str(),
        ],
    );
    assert_eq!(pid_in(&pidfile), daemon.pid());
    for file in [lock_of(&pidfile), lockfile.clone()] {
        let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", file.display());
    }
    assert_eq!(fs::read_to_string(&lockfile).unwrap(), "kept\n");
}

/// Issue 9, item 20: a user asking about root's daemon may not read
/// `/proc/PID/fd`, nor open the lock file. That is not "it does not hold
/// the lock" (which gave false answers and a 6 s `--stop` that did
/// nothing): the caller learns what it can (the identity rule) or that it
/// cannot tell (4).
#[test]
fn nobody_asking_about_roots_daemon_learns_the_truth_or_that_it_cannot_tell() {
    init();
    let dir = dir_for_anyone();
    let pidfile = dir.path().join("app.pid");
    let (daemon, _spec) = launch(dir.path(), &pidfile_option(&pidfile));
    let pid = daemon.pid();
    let p = pidfile.as_os_str();
    let action = |args: &[&str]| {
        let mut all = vec![OsStr::new("-p"), p];
        all.extend(args.iter().map(OsStr::new));
        let before = Instant::now();
        let output = as_nobody(&all);
        assert!(
            before.elapsed() < Duration::from_secs(3),
            "{args:?} took {:?}",
            before.elapsed()
        );
        output
    };

    // Root's own pidfile, written after the daemon started: it is the
    // daemon, whatever the caller can see of the lock.
    let output = action(&["--status"]);
    output.assert_code(0);
    assert_eq!(
        output.stdout,
        format!("running (pid {pid})\n"),
        "{output:?}"
    );
    action(&["--stop"]).assert_failed(
        1,
        &[
            "cannot stop the daemon",
            &format!("pid {pid}"),
            "Operation not permitted",
        ],
    );
    action(&["--signal", "HUP"]).assert_failed(125, &["Operation not permitted"]);
    assert!(daemon.is_alive());

    // Once the pidfile seems older than the daemon, only the lock could
    // tell, and the caller cannot see it: first because it may not open
    // the lock file, then because it may not look into root's /proc/PID/fd.
    set_old_mtime(&pidfile);
    for (loose, words) in [
        (
            false,
            &[
                "cannot tell whether the daemon runs",
                "lock file",
                "Permission denied",
            ],
        ),
        (
            true,
            &[
                "cannot tell whether the daemon runs",
                "/fd",
                "Permission denied",
            ],
        ),
    ] {
        if loose {
            fs::set_permissions(lock_of(&pidfile), fs::Permissions::from_mode(0o644)).unwrap();
        }
        action(&["--status"]).assert_failed(4, words);
        action(&["--stop", "--timeout", "1"]).assert_failed(4, words);
        action(&["--signal", "HUP"]).assert_failed(4, words);
        assert!(daemon.is_alive(), "loose {loose}: the daemon was stopped");
        assert_eq!(pid_in(&pidfile), pid);
    }
    // Root can see the lock.
    status(&pidfile).assert_code(0);
}

// ---------------------------------------------------------------------------
// Daemons that close their lock, and whom the identity rule trusts
// ---------------------------------------------------------------------------

/// Issue 9, item 6: sshd (`closefrom`) and dnsmasq close every descriptor
/// they inherit, the lock's among them. The PID in the pidfile still names
/// such a daemon: it started before the file was written.
#[test]
fn a_daemon_that_closed_its_lock_is_still_found_through_its_pidfile() {
    init();
    let dir = tempdir();
    let pidfile = dir.path().join("app.pid");
    let spec = DaemonSpec::new(dir.path()).prelude("exec 3<&- 4<&- 5<&- 6<&- 7<&- 8<&- 9<&-");
    let Launched { daemon, .. } = launch_with(daemonize(), spec, pidfile_option(&pidfile));
    let pid = daemon.pid();
    assert_eq!(
        daemon.fd_numbers(),
        [0, 1, 2],
        "set-up: the lock is still open"
    );

    let output = status(&pidfile);
    output.assert_code(0);
    assert_eq!(output.stdout, format!("running (pid {pid})\n"));

    let content = fs::read(&pidfile).unwrap();
    let (second, spec) = start(dir.path(), &pidfile_option(&pidfile));
    let _second = (second.code == Some(0)).then(|| spec.start());
    second.assert_failed(1, &[]);
    assert_eq!(
        second.stderr,
        format!(
            "daemonize: already running (pid {pid}) according to '{}'\n",
            pidfile.display()
        )
    );
    assert_no_leftover(&spec.marker);
    assert_eq!(fs::read(&pidfile).unwrap(), content);

    stop(&pidfile, &[]).assert_code(0);
    assert!(
        matches!(reap(daemon), WaitStatus::Signaled(_, Signal::SIGTERM, _)),
        "pid {pid} did not end by SIGTERM"
    );
    assert!(!pidfile.exists(), "the pidfile was not removed");
    assert!(!lock_of(&pidfile).exists(), "its lock file was not removed");
    status(&pidfile).assert_code(3);
}

/// The identity rule trusts only a pidfile that nobody but the caller or
/// root could have written, since anyone who may write it can put any PID
/// in it (and set any mtime).
#[test]
fn a_pidfile_that_others_may_write_names_no_daemon_without_its_lock() {
    init();
    let dir = tempdir();
    let mut bystander = Bystander::spawn();
    for (name, mode, owner) in [
        ("open", 0o666, 0),
        ("group", 0o664, 0),
        ("theirs", 0o644, NOBODY),
    ] {
        let pidfile = dir.path().join(format!("{name}.pid"));
        // The bystander started before the file was written.
        fs::write(&pidfile, format!("{}\n", bystander.pid())).unwrap();
        fs::set_permissions(&pidfile, fs::Permissions::from_mode(mode)).unwrap();
        std::os::unix::fs::chown(&pidfile, Some(owner), None).unwrap();
        status(&pidfile).assert_code(1);
        daemonize()
            .arg("-p")
            .arg(&pidfile)
            .args(["--signal", "KILL"])
            .run()
            .assert_failed(7, &["not running", "stale pidfile"]);
        stop(&pidfile, &["--timeout", "0"]).assert_code(0);
        bystander.assert_untouched();
    }
}

// ---------------------------------------------------------------------------
// Files that are the same
// ---------------------------------------------------------------------------

/// Issue 9, item 16: the daemon's output would overwrite its own pidfile
/// (or lock), and it could no longer be stopped. The files are compared,
/// so a symlink or another path to the same file is refused too.
#[test]
fn an_output_file_that_is_a_pidfile_lockfile_or_lock_file_is_refused_naming_both_options() {
    init();
    let cases: &[(&str, &str, &str, &[&str])] = &[
        ("-p", "-o", "app.pid", &["--stdout", "--pidfile"]),
        ("-p", "-e", "app.pid", &["--stderr", "--pidfile"]),
        ("-l", "-o", "app.lock", &["--stdout", "--lockfile"]),
        ("-p", "-o", "link", &["--stdout", "--pidfile"]),
        ("-p", "-o", "sub/../app.pid", &["--stdout", "--pidfile"]),
        (
            "-p",
            "-o",
            "app.pid.lock",
            &["--stdout", "lock file", "--pidfile"],
        ),
    ];
    for &(locked, output, named, words) in cases {
        let dir = tempdir();
        fs::create_dir(dir.path().join("sub")).unwrap();
        let file = dir.path().join(if locked == "-p" {
            "app.pid"
        } else {
            "app.lock"
        });
        std::os::unix::fs::symlink(&file, dir.path().join("link")).unwrap();
        let out = dir.path().join(named);
        let (result, spec) = start(
            dir.path(),
            &[
                OsStr::new(locked),
                file.as_os_str(),
                OsStr::new(output),
                out.as_os_str(),
            ],
        );
        let _daemon = (result.code == Some(0)).then(|| spec.start());
        result.assert_failed(125, words);
        assert!(result.stderr.contains("same file"), "{result:?}");
        assert_no_leftover(&spec.marker);
        assert!(
            !file.exists(),
            "{locked} {output} {named}: {} was left",
            file.display()
        );
        assert!(
            !lock_of(&file).exists(),
            "{locked} {output} {named}: a lock file was left"
        );
    }
}

/// Issue 9, item 17: bmc/daemonize documents `-p F -l F` ("It is possible
/// to use the pidfile as the lock file"). It is one locked pidfile, however
/// the two paths are spelled, and so is `-l` naming its lock file.
#[test]
fn pidfile_and_lockfile_on_the_same_file_are_one_locked_pidfile() {
    init();
    for lockfile in ["./app.pid", "app.pid", "app.pid.lock"] {
        let dir = tempdir();
        let pidfile = dir.path().join("app.pid");
        let lockfile = dir.path().join(lockfile);
        let (daemon, _spec) = launch(
            dir.path(),
            &[
                OsStr::new("-p"),
                pidfile.as_os_str(),
                OsStr::new("-l"),
                lockfile.as_os_str(),
            ],
        );
        assert_eq!(pid_in(&pidfile), daemon.pid());
        assert_holds_lock_on(&daemon, &lock_of(&pidfile));
        assert_eq!(
            status(&pidfile).assert_code(0).stdout,
            format!("running (pid {})\n", daemon.pid())
        );
        let (second, spec) = start(
            dir.path(),
            &[
                OsStr::new("-p"),
                pidfile.as_os_str(),
                OsStr::new("-l"),
                lockfile.as_os_str(),
            ],
        );
        let _second = (second.code == Some(0)).then(|| spec.start());
        second.assert_failed(1, &["already running", &format!("(pid {})", daemon.pid())]);
        stop(&pidfile, &[]).assert_code(0);
        let _ = reap(daemon);
        assert!(
            !pidfile.exists() && !lock_of(&pidfile).exists(),
            "{lockfile:?}"
        );
    }
}

/// Issue 9, item 18: a start refused because `-l` is busy truncated a stale
/// pidfile first. Every lock is taken before any file changes.
#[test]
fn a_busy_lockfile_leaves_a_stale_pidfile_untouched() {
    init();
    let dir = tempdir();
    let lockfile = dir.path().join("app.lock");
    let (holder, _spec) = launch(dir.path(), &[OsStr::new("-l"), lockfile.as_os_str()]);
    let pidfile = dir.path().join("app.pid");
    let content = format!("{}\n", dead_pid());
    fs::write(&pidfile, &content).unwrap();
    let old = set_old_mtime(&pidfile);

    let (output, spec) = start(
        dir.path(),
        &[
            OsStr::new("-p"),
            pidfile.as_os_str(),
            OsStr::new("-l"),
            lockfile.as_os_str(),
        ],
    );
    let _daemon = (output.code == Some(0)).then(|| spec.start());
    output.assert_failed(
        1,
        &[&format!(
            "already running according to '{}'",
            lockfile.display()
        )],
    );
    assert_no_leftover(&spec.marker);
    assert_eq!(
        fs::read_to_string(&pidfile).unwrap(),
        content,
        "the pidfile was changed"
    );
    assert_eq!(mtime(&pidfile), old, "the pidfile was written to");
    assert!(!lock_of(&pidfile).exists(), "a lock file was left behind");
    assert!(holder.is_alive());
}

/// Issue 9, item 19: a crash can leave a pidfile of NUL bytes (the size
/// reached the disk, the data did not). That is an empty, stale pidfile:
/// a start takes it over and `--stop` removes it. Whitespace too.
#[test]
fn a_pidfile_of_nul_bytes_or_whitespace_is_stale() {
    init();
    for content in ["\0\0\0\0\0\0", " \n\t\n"] {
        let dir = tempdir();
        let pidfile = dir.path().join("app.pid");
        fs::write(&pidfile, content).unwrap();
        status(&pidfile).assert_code(1);
        stop(&pidfile, &[]).assert_code(0);
        assert!(!pidfile.exists(), "{content:?}: --stop left it");

        fs::write(&pidfile, content).unwrap();
        let (daemon, _spec) = launch(dir.path(), &pidfile_option(&pidfile));
        assert_eq!(pid_in(&pidfile), daemon.pid(), "{content:?}");
    }
}

// ---------------------------------------------------------------------------
// --signal and --reload
// ---------------------------------------------------------------------------

/// `daemonize -p PIDFILE ARGS...`.
fn control(pidfile: &Path, args: &[&str]) -> Output {
    daemonize().arg("-p").arg(pidfile).args(args).run()
}

/// The state letter of a process (`S`, `T`, `Z`...).
fn state(pid: i32) -> char {
    procfs::stat(pid).expect("read /proc/PID/stat").state
}

/// The signal that ended `daemon`, read from its zombie's
/// `/proc/PID/stat` (field 52, the wait status), since nix's `WaitStatus`
/// cannot hold a real-time signal. Consumes the guard, which then reaps it.
#[track_caller]
fn end_signal(daemon: Daemon) -> i32 {
    let pid = daemon.pid();
    let text = wait_for(TIMEOUT, &format!("pid {pid} to exit"), || {
        let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &text[text.rfind(')')? + 1..];
        rest.split_whitespace()
            .next()
            .is_some_and(|state| state == "Z")
            .then_some(text)
    });
    let rest = &text[text.rfind(')').unwrap() + 1..];
    let status: i32 = rest
        .split_whitespace()
        .nth(52 - 3)
        .unwrap()
        .parse()
        .unwrap();
    drop(daemon);
    status & 0x7f
}

/// Issue 9, item 25: `--signal` without `--stop` sends the signal to the
/// verified daemon and does nothing more (start-stop-daemon users reload
/// this way).
#[test]
fn signal_without_stop_sends_only_that_signal_to_the_daemon() {
    init();
    let dir = tempdir();
    let pidfile = dir.path().join("app.pid");
    let (daemon, _spec) = launch(dir.path(), &pidfile_option(&pidfile));
    let pid = daemon.pid();

    control(&pidfile, &["--signal", "STOP"]).assert_started();
    wait_until(TIMEOUT, "the daemon to be stopped", || state(pid) == 'T');
    control(&pidfile, &["--signal", "CONT"]).assert_started();
    wait_until(TIMEOUT, "the daemon to continue", || state(pid) != 'T');
    assert!(daemon.is_alive());
    assert_eq!(pid_in(&pidfile), pid);
    assert_eq!(
        status(&pidfile).assert_code(0).stdout,
        format!("running (pid {pid})\n")
    );

    control(&pidfile, &["--signal", "USR1"]).assert_started();
    assert_eq!(end_signal(daemon), libc::SIGUSR1);
    // Nothing more: the pidfile stays, stale now.
    assert!(pidfile.exists());
    status(&pidfile).assert_code(1);
}

/// `--reload` is `--signal HUP`.
#[test]
fn reload_sends_hup_to_the_daemon_and_nothing_more() {
    init();
    let dir = tempdir();
    let pidfile = dir.path().join("app.pid");
    let own = dir.path().join("daemon.pid");
    let log = dir.path().join("reloads");
    let marker = unique_marker();
    daemonize()
        .arg("-p")
        .arg(&pidfile)
        .args(["--", "sh", "-c"])
        .arg(format!(
            ": {marker}; trap 'echo hup >> \"$1\"' HUP; echo $$ > \"$0\"; \
             while :; do sleep 0.2 & wait $!; done"
        ))
        .arg(&own)
        .arg(&log)
        .run()
        .assert_started();
    let daemon = Daemon::new(wait_for_pid_file(&own, TIMEOUT));
    assert_eq!(pid_in(&pidfile), daemon.pid());

    control(&pidfile, &["--reload"]).assert_started();
    common::wait_for_content(&log, "hup\n");
    control(&pidfile, &["--signal", "HUP"]).assert_started();
    common::wait_for_content(&log, "hup\nhup\n");
    assert!(daemon.is_alive());
    assert_eq!(pid_in(&pidfile), daemon.pid());

    stop(&pidfile, &[]).assert_code(0);
    assert!(!daemon.is_alive());
    assert!(!pidfile.exists());
    assert_no_leftover(&marker);
}

/// No daemon: LSB's 7, "program is not running", and nothing is changed
/// or signalled (a stale pidfile is not removed: `--signal` does nothing
/// more than signal).
#[test]
fn signal_exits_7_when_no_daemon_runs_and_changes_nothing() {
    init();
    let dir = tempdir();
    let pidfile = dir.path().join("app.pid");
    for args in [&["--signal", "HUP"][..], &["--reload"]] {
        control(&pidfile, args)
            .assert_failed(7, &["cannot send SIGHUP", "not running", "no pidfile"]);
        assert!(!pidfile.exists());
    }

    let content = format!("{}\n", dead_pid());
    fs::write(&pidfile, &content).unwrap();
    control(&pidfile, &["--signal", "TERM"])
        .assert_failed(7, &["cannot send SIGTERM", "not running", "stale pidfile"]);
    assert_eq!(fs::read_to_string(&pidfile).unwrap(), content);

    // A process that reused the PID started after the file was written.
    let mut bystander = Bystander::spawn();
    write_stale_pidfile(&pidfile, bystander.pid());
    control(&pidfile, &["--signal", "KILL"]).assert_failed(7, &["stale pidfile"]);
    control(&pidfile, &["--reload"]).assert_failed(7, &["stale pidfile"]);
    bystander.assert_untouched();

    fs::write(&pidfile, "hello\n").unwrap();
    control(&pidfile, &["--reload"]).assert_failed(4, &["cannot tell", "hello"]);
}

/// Issue 9, item 23: real-time signals by name (`RTMIN+3`, `SIGRTMAX-2`)
/// and by number, with `--signal` alone and with `--stop`.
#[test]
fn signal_accepts_real_time_signals_by_name_and_number() {
    init();
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    let number = (min + 3).to_string();
    for (spelling, expected) in [
        ("RTMIN+3", min + 3),
        ("SIGRTMIN+3", min + 3),
        ("rtmin+3", min + 3),
        (number.as_str(), min + 3),
        ("RTMAX-2", max - 2),
        ("RTMIN", min),
    ] {
        let dir = tempdir();
        let pidfile = dir.path().join("app.pid");
        let (daemon, _spec) = launch(dir.path(), &pidfile_option(&pidfile));
        control(&pidfile, &["--signal", spelling]).assert_started();
        assert_eq!(end_signal(daemon), expected, "--signal {spelling}");
    }
    let dir = tempdir();
    let pidfile = dir.path().join("app.pid");
    let (daemon, _spec) = launch(dir.path(), &pidfile_option(&pidfile));
    stop(&pidfile, &["--signal", "RTMIN+3"]).assert_code(0);
    assert!(!pidfile.exists());
    assert_eq!(end_signal(daemon), min + 3, "--stop --signal RTMIN+3");
}

/// A process that got the lock's descriptor from the daemon but was
/// running long before it (a service the daemon passed the descriptor to)
/// never takes over as "the daemon": the pidfile is not pointed at it, and
/// `--signal` does not reach it.
#[test]
fn an_older_process_holding_the_daemons_lock_never_takes_over() {
    init();
    let dir = tempdir();
    let pidfile = dir.path().join("app.pid");
    let (socket, got, gate) = (
        dir.path().join("svc.sock"),
        dir.path().join("got"),
        dir.path().join("gate"),
    );
    // The service: keeps every descriptor it is sent.
    let service_script = format!(
        "import socket, os, time\n\
         s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind('{sock}')\n\
         kept = []\n\
         while True:\n\
         \x20   msg, fds, _, _ = socket.recv_fds(s, 16, 4)\n\
         \x20   kept += fds; open('{got}', 'w').close()\n",
        sock = socket.display(),
        got = got.display()
    );
    let mut service = std::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(&service_script)
        .spawn()
        .unwrap();
    let service_pid = service.id() as i32;
    let _service = Daemon::new(service_pid);
    wait_until(TIMEOUT, "the service's socket", || socket.exists());
    // Make sure the service is older than the daemon by more than the slack.
    wait_until(TIMEOUT, "a second to pass", || {
        procfs::stat(service_pid).is_ok()
            && std::time::SystemTime::now()
                .duration_since(fs::metadata(&socket).unwrap().modified().unwrap())
                .is_ok_and(|d| d > Duration::from_millis(1500))
    });
    let daemon_script = format!(
        "import socket, os, time\n\
         fds = [(int(f), os.readlink('/proc/self/fd/' + f)) for f in os.listdir('/proc/self/fd') if os.path.islink('/proc/self/fd/' + f)]\n\
         fd = [f for f, target in fds if target.endswith('.pid.lock')][0]\n\
         s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
         s.sendmsg([b'x'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fd.to_bytes(4, 'little'))], 0, '{sock}')\n\
         while not os.path.exists('{gate}'): time.sleep(0.01)\n",
        sock = socket.display(),
        gate = gate.display()
    );
    daemonize()
        .arg("-p")
        .arg(&pidfile)
        .args(["--", "/usr/bin/python3", "-c", &daemon_script])
        .run()
        .assert_code(0);
    let daemon = Daemon::new(wait_for_pid_file(&pidfile, TIMEOUT));
    wait_until(TIMEOUT, "the service to get the lock", || got.exists());
    fs::write(&gate, "").unwrap();
    let _ = reap(daemon);
    let before = fs::read_to_string(&pidfile).unwrap();
    let output = status(&pidfile);
    output.assert_code(0);
    assert!(
        !output
            .stdout
            .contains(&format!("running (pid {service_pid})")),
        "{output:?}"
    );
    assert_eq!(
        fs::read_to_string(&pidfile).unwrap(),
        before,
        "the pidfile was pointed elsewhere"
    );
    control(&pidfile, &["--signal", "TERM"]).assert_code(4);
    assert!(
        service.try_wait().unwrap().is_none(),
        "the service was signalled"
    );
}

/// A pidfile with a second name (a hard link someone made to another file)
/// is refused: daemonize would otherwise write a PID into that file.
#[test]
fn a_hard_linked_pidfile_is_refused_and_the_other_file_untouched() {
    init();
    let dir = tempdir();
    let target = dir.path().join("someone-elses-file");
    fs::write(&target, "").unwrap();
    let pidfile = dir.path().join("app.pid");
    fs::hard_link(&target, &pidfile).unwrap();
    let (output, spec) = start(dir.path(), &pidfile_option(&pidfile));
    let _daemon = (output.code == Some(0)).then(|| spec.start());
    output.assert_failed(125, &["pidfile", "hard links"]);
    assert_no_leftover(&spec.marker);
    assert_eq!(fs::read_to_string(&target).unwrap(), "");
}
