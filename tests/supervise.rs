//! Supervision (`--restart`, docs/design.md "Supervision"): backoff, giving
//! up, policies, forwarded signals, stopping, `-p`/`-P`, the watchdog, a
//! supervisor killed by SIGKILL, and the control actions on a supervised
//! instance. Every fact is read from the processes themselves (`/proc`)
//! and from the pidfiles, with exact exit codes.
//!
//! The test process is a subreaper (`common::init`), so the supervisor is
//! reparented to it; each [`Supervised`] guard kills the supervisor and
//! everything left in its session by PID when the test ends.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{Cmd, Output, TIMEOUT, daemonize, procfs, read_pid, test_pid, wait_for, wait_until};
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

/// A supervised instance started by one test, with its files in the
/// test's own directory.
struct Supervised {
    cmd: Cmd,
    dir: PathBuf,
    pidfile: PathBuf,
    sup_pidfile: PathBuf,
    log: PathBuf,
    starts: PathBuf,
    marker: String,
    supervisor: i32,
    session: i32,
}

/// The child script: appends its PID to `starts`, runs `body`, and then
/// waits until the test writes an exit status into `exit.PID`.
fn child_script(dir: &Path, body: &str) -> PathBuf {
    let script = dir.join("child.sh");
    let text = format!(
        "#!/bin/sh\n\
         # $1 is the test's marker.\n\
         echo $$ >> '{dir}/starts'\n\
         {body}\n\
         while [ ! -e '{dir}/exit.'$$ ]; do sleep 0.02; done\n\
         read code < '{dir}/exit.'$$\n\
         exit $code\n",
        dir = dir.display()
    );
    fs::write(&script, text).expect("write the child script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    script
}

impl Supervised {
    /// `daemonize -r OPTIONS -p PID -P SUP -o LOG -- CHILD MARKER`, with
    /// the child script running `body` first. Returns what daemonize
    /// printed and its status, and the guard when it started.
    fn try_start(options: &[&str], body: &str) -> (Output, Result<Supervised, Failed>) {
        Self::try_start_with(options, |dir| {
            vec![child_script(dir, body).into_os_string()]
        })
    }

    fn try_start_with(
        options: &[&str],
        argv: impl FnOnce(&Path) -> Vec<std::ffi::OsString>,
    ) -> (Output, Result<Supervised, Failed>) {
        common::init();
        let mut cmd = daemonize();
        let dir = cmd.dir().to_owned();
        let marker = common::unique_marker();
        let pidfile = dir.join("app.pid");
        let sup_pidfile = dir.join("sup.pid");
        let log = dir.join("app.log");
        let mut argv = argv(&dir);
        argv.push(marker.clone().into());
        if !options.iter().any(|o| o.starts_with("--restart=")) {
            cmd.arg("-r");
        }
        let output = cmd
            .args(options)
            .arg("-p")
            .arg(&pidfile)
            .arg("-P")
            .arg(&sup_pidfile)
            .arg("-o")
            .arg(&log)
            .arg("--")
            .args(argv)
            .run();
        if output.code != Some(0) {
            return (output, Err(Failed { cmd, marker }));
        }
        let supervisor = read_pid(&sup_pidfile).expect("a started supervisor's -P file names it");
        let session = procfs::stat(supervisor)
            .expect("the supervisor runs")
            .session;
        let sup = Supervised {
            cmd,
            starts: dir.join("starts"),
            dir,
            pidfile,
            sup_pidfile,
            log,
            marker,
            supervisor,
            session,
        };
        (output, Ok(sup))
    }

    #[track_caller]
    fn start(options: &[&str], body: &str) -> Supervised {
        let (output, sup) = Supervised::try_start(options, body);
        output.assert_started();
        sup.ok().expect("started")
    }

    /// The PIDs of the children started so far, in order.
    fn starts(&self) -> Vec<i32> {
        fs::read_to_string(&self.starts)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Waits until `n` children have been started; returns the last.
    #[track_caller]
    fn wait_starts(&self, n: usize) -> i32 {
        wait_for(TIMEOUT, &format!("{n} starts"), || {
            let starts = self.starts();
            (starts.len() >= n).then(|| starts[n - 1])
        })
    }

    /// Makes child `pid` exit with `code`.
    fn exit_child(&self, pid: i32, code: i32) {
        let tmp = self.dir.join(format!("exit.tmp.{pid}"));
        fs::write(&tmp, format!("{code}\n")).expect("write the exit file");
        fs::rename(&tmp, self.dir.join(format!("exit.{pid}"))).expect("rename the exit file");
    }

    /// The child the pidfile names, once it names one that runs (the
    /// child script has started, so it is the child of this run).
    #[track_caller]
    fn current_child(&self, not: Option<i32>) -> i32 {
        wait_for(TIMEOUT, "the pidfile to name a running child", || {
            let pid = read_pid(&self.pidfile)?;
            (Some(pid) != not && procfs::is_alive(pid) && self.starts().contains(&pid))
                .then_some(pid)
        })
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    #[track_caller]
    fn wait_log(&self, text: &str) {
        wait_until(TIMEOUT, &format!("{text:?} in the log"), || {
            self.log_text().contains(text)
        });
    }

    fn supervisor_alive(&self) -> bool {
        procfs::is_alive(self.supervisor)
    }

    #[track_caller]
    fn wait_supervisor_gone(&self) {
        wait_until(TIMEOUT, "the supervisor to exit", || {
            !self.supervisor_alive()
        });
    }

    /// `daemonize ARGS -p PID` run from the test's directory.
    fn control(&self, args: &[&str]) -> Output {
        daemonize().args(args).arg("-p").arg(&self.pidfile).run()
    }

    fn control_sup(&self, args: &[&str]) -> Output {
        daemonize()
            .args(args)
            .arg("-P")
            .arg(&self.sup_pidfile)
            .run()
    }

    fn signal_supervisor(&self, signal: Signal) {
        // Our child (reparented to us), unreaped: its PID is its own.
        kill(Pid::from_raw(self.supervisor), signal).expect("signal the supervisor");
    }

    /// Nothing of this instance is left: no process with the marker, and
    /// neither pidfile nor their lock files.
    #[track_caller]
    fn assert_all_gone(&self) {
        self.wait_supervisor_gone();
        wait_until(TIMEOUT, "no process with the marker", || {
            common::processes_with_marker(&self.marker).is_empty()
        });
        for file in [&self.pidfile, &self.sup_pidfile] {
            assert!(!file.exists(), "{} is left behind", file.display());
            let lock = PathBuf::from(format!("{}.lock", file.display()));
            assert!(!lock.exists(), "{} is left behind", lock.display());
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        let _ = &self.cmd;
        let supervisor = Pid::from_raw(self.supervisor);
        // The supervisor is our child, unreaped until this waitpid, so
        // the PID is its own; what it leaves is reparented to us and, in
        // its session, is this test's.
        let _ = kill(supervisor, Signal::SIGKILL);
        while let Err(Errno::EINTR) = waitpid(supervisor, None) {}
        for _ in 0..100 {
            let ours: Vec<i32> = procfs::pids()
                .into_iter()
                .filter(|&pid| {
                    procfs::stat(pid)
                        .is_ok_and(|s| s.ppid == test_pid() && s.session == self.session)
                })
                .collect();
            if ours.is_empty() {
                break;
            }
            for pid in ours {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                while let Err(Errno::EINTR) = waitpid(Pid::from_raw(pid), None) {}
            }
        }
    }
}

/// A supervised start that failed: its directory and marker, to show
/// that it left nothing.
struct Failed {
    cmd: Cmd,
    marker: String,
}

impl Failed {
    #[track_caller]
    fn assert_nothing_left(&self) {
        common::assert_no_leftover(&self.marker);
        let dir = self.cmd.dir();
        for name in ["app.pid", "app.pid.lock", "sup.pid", "sup.pid.lock"] {
            assert!(!dir.join(name).exists(), "{name} is left behind");
        }
    }
}

/// The restart delays the supervisor announced in its log, in order.
fn announced_delays(log: &str) -> Vec<f64> {
    log.lines()
        .filter_map(|line| {
            let rest = line.split("restarting it in ").nth(1)?;
            rest.split(' ').next()?.parse().ok()
        })
        .collect()
}

#[test]
fn a_crash_loop_backs_off_then_gives_up_and_leaves_nothing() {
    let sup = Supervised::start(
        &["--restart-delay", "0.2", "--max-restarts", "3"],
        "date +%s%N >> \"$(dirname \"$0\")/starts.time\"",
    );
    // Every run fails at once once it is up (the first start had to be
    // confirmed first, so the first run is told to fail).
    let first = sup.wait_starts(1);
    sup.exit_child(first, 1);
    for n in 2..=4 {
        let pid = sup.wait_starts(n);
        sup.exit_child(pid, 1);
    }
    sup.wait_log("giving up after 3 restarts without a healthy run (--max-restarts 3)");
    sup.assert_all_gone();
    assert_eq!(sup.starts().len(), 4, "one start and three restarts");
    // The delays doubled, and each gap between starts lasted at least its
    // delay.
    let log = sup.log_text();
    assert_eq!(announced_delays(&log), vec![0.2, 0.4, 0.8], "{log}");
    let times: Vec<u128> = fs::read_to_string(sup.dir.join("starts.time"))
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(times.len(), 4);
    for (i, delay_ms) in [200u128, 400, 800].into_iter().enumerate() {
        let gap_ms = (times[i + 1] - times[i]) / 1_000_000;
        assert!(
            gap_ms >= delay_ms,
            "gap {i} was {gap_ms} ms, under {delay_ms} ms"
        );
    }
    // Why it ended is in the log, with the command and the last child.
    let last = sup.starts()[3];
    assert!(
        log.contains(&format!("(pid {last}) exited with status 1; giving up")),
        "{log}"
    );
}

/// `python3 notify.py ACTIONS...` (tests/helpers/notify.py).
fn notify_argv(actions: &[&str]) -> impl FnOnce(&Path) -> Vec<std::ffi::OsString> {
    let actions: Vec<String> = actions.iter().map(|a| a.to_string()).collect();
    move |dir: &Path| {
        let mut argv: Vec<std::ffi::OsString> = vec![
            "/usr/bin/python3".into(),
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/helpers/notify.py")
                .into(),
        ];
        for a in actions {
            argv.push(a.replace("DIR", &dir.display().to_string()).into());
        }
        argv.push("mark".into());
        argv
    }
}

#[test]
fn a_run_that_became_ready_resets_the_delay() {
    // Each child declares itself ready, then fails once `go` exists: a
    // healthy run, so the delay starts over each time.
    let (output, sup) = Supervised::try_start_with(
        &[
            "--wait-ready",
            "--restart-delay",
            "0.3",
            "--max-restarts",
            "2",
        ],
        notify_argv(&["send", "READY=1", "wait", "DIR/go", "exit", "1"]),
    );
    output.assert_started();
    let sup = sup.ok().unwrap();
    fs::write(sup.dir.join("go"), "").unwrap();
    sup.wait_log("(restart 4)");
    let delays = announced_delays(&sup.log_text());
    assert!(delays.len() >= 4, "{delays:?}");
    assert!(
        delays.iter().all(|&d| d == 0.3),
        "no backoff after ready runs: {delays:?}"
    );
    // --max-restarts 2 counts only restarts without a healthy run.
    assert!(sup.supervisor_alive());
    sup.control(&["--stop"]).assert_code(0);
    sup.assert_all_gone();
}

#[test]
fn on_failure_restarts_after_a_failure_only() {
    let sup = Supervised::start(&["--restart=on-failure", "--restart-delay", "0"], "");
    // exit 1: restarted.
    let first = sup.wait_starts(1);
    sup.exit_child(first, 1);
    let second = sup.wait_starts(2);
    assert_eq!(sup.current_child(Some(first)), second);
    // SIGSEGV: restarted.
    kill(Pid::from_raw(second), Signal::SIGSEGV).unwrap();
    let third = sup.wait_starts(3);
    assert_eq!(sup.current_child(Some(second)), third);
    // exit 0: the end.
    sup.exit_child(third, 0);
    sup.wait_log("exited with status 0; not restarting it (on-failure)");
    sup.assert_all_gone();
    assert_eq!(sup.starts().len(), 3);
    assert!(sup.log_text().contains("SIGSEGV"), "{}", sup.log_text());
}

#[test]
fn on_failure_does_not_restart_after_a_sigterm_from_outside() {
    let sup = Supervised::start(&["--restart=on-failure", "--restart-delay", "0"], "");
    let first = sup.wait_starts(1);
    kill(Pid::from_raw(first), Signal::SIGTERM).unwrap();
    sup.wait_log("not restarting it (on-failure)");
    sup.assert_all_gone();
    assert_eq!(sup.starts(), vec![first]);
}

#[test]
fn forwarded_signals_reach_the_child_and_term_ends_both() {
    let names = ["HUP", "USR1", "USR2", "QUIT", "WINCH", "ALRM", "CONT"];
    let traps: String = names
        .iter()
        .map(|s| format!("trap 'echo {s} >> got' {s}\n"))
        .collect();
    let sup = Supervised::start(&[], &format!("cd \"$(dirname \"$0\")\"\n{traps}"));
    let child = sup.current_child(None);
    let got = sup.dir.join("got");
    for (i, name) in names.iter().enumerate() {
        let signal: Signal = format!("SIG{name}").parse().unwrap();
        sup.signal_supervisor(signal);
        wait_until(TIMEOUT, &format!("the child to get {name}"), || {
            fs::read_to_string(&got).is_ok_and(|t| t.lines().count() > i)
        });
        assert_eq!(
            fs::read_to_string(&got).unwrap().lines().last(),
            Some(*name)
        );
    }
    // Still the same child: none of them ended it.
    assert!(procfs::is_alive(child));
    assert_eq!(sup.starts(), vec![child]);
    sup.signal_supervisor(Signal::SIGTERM);
    sup.assert_all_gone();
    assert_eq!(sup.starts(), vec![child], "no restart after TERM");
    assert!(sup.log_text().contains("stopped"), "{}", sup.log_text());
}

#[test]
fn term_during_a_long_restart_delay_ends_at_once() {
    let sup = Supervised::start(
        &["--restart-delay", "3600", "--restart-max-delay", "3600"],
        "",
    );
    let first = sup.wait_starts(1);
    sup.exit_child(first, 1);
    sup.wait_log("restarting it in 3600.000 s");
    sup.signal_supervisor(Signal::SIGTERM);
    // TIMEOUT is far below the delay: only an immediate end passes.
    sup.assert_all_gone();
    assert_eq!(sup.starts(), vec![first]);
}

#[test]
fn stop_during_a_crash_loop_sees_no_new_child() {
    // Every child fails as soon as it runs; no delay between restarts.
    let sup = Supervised::start(
        &["--restart-delay", "0", "--restart-max-delay", "0"],
        "[ -e \"$(dirname \"$0\")/crash\" ] && exit 1",
    );
    fs::write(sup.dir.join("crash"), "").unwrap();
    let first = sup.wait_starts(1);
    sup.exit_child(first, 1);
    sup.wait_starts(5);
    sup.control(&["--stop"]).assert_code(0);
    // --stop returns once supervision has ended: nothing can start now.
    assert!(!sup.supervisor_alive(), "the supervisor outlived --stop");
    let after_stop = sup.starts();
    common::assert_no_leftover(&sup.marker);
    assert!(!sup.pidfile.exists());
    assert!(!sup.sup_pidfile.exists());
    assert_eq!(sup.starts(), after_stop);
}

#[test]
fn the_pidfile_names_each_new_child_and_the_sup_pidfile_the_supervisor() {
    let sup = Supervised::start(&["--restart-delay", "0"], "");
    let first = sup.current_child(None);
    assert_eq!(read_pid(&sup.sup_pidfile), Some(sup.supervisor));
    assert_eq!(procfs::stat(first).unwrap().ppid, sup.supervisor);
    // FreeBSD daemon(8)'s test: a child killed is restarted.
    kill(Pid::from_raw(first), Signal::SIGKILL).unwrap();
    let second = sup.current_child(Some(first));
    assert_ne!(first, second);
    assert_eq!(procfs::stat(second).unwrap().ppid, sup.supervisor);
    sup.exit_child(second, 7);
    let third = sup.current_child(Some(second));
    assert_eq!(sup.starts(), vec![first, second, third]);
    // The supervisor pidfile still names the supervisor, which is the same.
    assert_eq!(read_pid(&sup.sup_pidfile), Some(sup.supervisor));
    let status = sup.control(&["--status"]);
    status.assert_code(0);
    assert!(
        status.stdout.contains(&format!(
            "running (pid {third}; supervisor pid {}; 2 restarts; last end: exited with status 7)",
            sup.supervisor
        )),
        "{status:?}"
    );
}

#[test]
fn both_pidfiles_are_locked_while_supervised() {
    let sup = Supervised::start(&[], "");
    sup.current_child(None);
    // A second start on either file is refused.
    let mut again = daemonize();
    again
        .args(["-r", "-p"])
        .arg(&sup.pidfile)
        .args(["--", "sleep", "1000"]);
    again.run().assert_failed(1, &["already running"]);
    let mut again = daemonize();
    let other = again.dir().join("other.pid");
    again
        .args(["-r", "-p"])
        .arg(other)
        .arg("-P")
        .arg(&sup.sup_pidfile)
        .args(["--", "sleep", "1000"]);
    again.run().assert_failed(1, &["already running"]);
    // A plain start too.
    let mut plain = daemonize();
    plain
        .arg("-p")
        .arg(&sup.pidfile)
        .args(["--", "sleep", "1000"]);
    plain.run().assert_failed(1, &["already running"]);
    // Each lock is held: by the supervisor (both) and the child (-p's).
    for file in [&sup.pidfile, &sup.sup_pidfile] {
        let lock = fs::File::open(format!("{}.lock", file.display())).unwrap();
        assert!(
            lock.try_lock_shared().is_err(),
            "{} is not locked",
            file.display()
        );
    }
}

#[test]
fn a_watchdog_miss_restarts_the_daemon() {
    let (output, sup) = Supervised::try_start_with(
        &["--wait-ready", "--watchdog", "0.5", "--restart-delay", "0"],
        notify_argv(&["pid", "DIR/last", "send", "READY=1"]),
    );
    output.assert_started();
    let sup = sup.ok().unwrap();
    let first = read_pid(&sup.pidfile).unwrap();
    sup.wait_log("watchdog timeout (no WATCHDOG=1 in time): aborting it");
    let second = wait_for(TIMEOUT, "a new child after the watchdog", || {
        read_pid(&sup.pidfile).filter(|&p| p != first && procfs::is_alive(p))
    });
    assert_eq!(procfs::stat(second).unwrap().ppid, sup.supervisor);
    assert!(sup.log_text().contains("SIGABRT"), "{}", sup.log_text());
    // The notification socket the children use goes with the supervisor.
    let socket = procfs::environ(second)
        .unwrap()
        .into_iter()
        .find_map(|e| {
            let e = e.to_str()?.to_owned();
            e.strip_prefix("NOTIFY_SOCKET=").map(PathBuf::from)
        })
        .expect("the child has NOTIFY_SOCKET");
    assert!(socket.exists());
    // The child was told its watchdog.
    let env = procfs::environ(second).unwrap();
    assert!(env.iter().any(|e| e == "WATCHDOG_USEC=500000"), "{env:?}");
    assert!(
        env.iter().any(|e| *e == *format!("WATCHDOG_PID={second}")),
        "{env:?}"
    );
    sup.control(&["--stop"]).assert_code(0);
    sup.assert_all_gone();
    assert!(!socket.exists(), "{} is left behind", socket.display());
    assert!(
        !socket.parent().unwrap().exists(),
        "the socket's directory is left behind"
    );
}

#[test]
fn a_supervisor_killed_by_sigkill_leaves_a_child_still_found_and_stopped() {
    let sup = Supervised::start(&[], "");
    let child = sup.current_child(None);
    sup.signal_supervisor(Signal::SIGKILL);
    sup.wait_supervisor_gone();
    assert!(
        procfs::is_alive(child),
        "the child died with its supervisor"
    );
    let status = sup.control(&["--status"]);
    status.assert_code(0);
    assert!(
        status.stdout.contains(&format!(
            "running (pid {child}; its supervisor, pid {}, is gone)",
            sup.supervisor
        )),
        "{status:?}"
    );
    // A new start is refused while it runs.
    let mut again = daemonize();
    again
        .args(["-r", "-p"])
        .arg(&sup.pidfile)
        .args(["--", "sleep", "1000"]);
    again.run().assert_failed(1, &["already running"]);
    // --stop still stops it.
    sup.control(&["--stop"]).assert_code(0);
    wait_until(TIMEOUT, "the child to be stopped", || {
        !procfs::is_alive(child)
    });
    assert!(!sup.pidfile.exists());
}

#[test]
fn supervisor_and_child_are_detached_like_daemons() {
    let sup = Supervised::start(&[], "");
    let child = sup.current_child(None);
    let s = procfs::stat(sup.supervisor).unwrap();
    let c = procfs::stat(child).unwrap();
    // The supervisor: reparented (to us, the subreaper), in a session of
    // its own that it does not lead, with no terminal.
    assert_eq!(s.ppid, test_pid());
    assert_ne!(s.session, test_pid());
    assert_ne!(
        s.session, sup.supervisor,
        "the supervisor leads its session"
    );
    assert_eq!(s.tty_nr, 0);
    assert_eq!(s.tpgid, -1);
    assert_eq!(procfs::cwd(sup.supervisor).unwrap(), Path::new("/"));
    let fds = procfs::fds(sup.supervisor).unwrap();
    assert_eq!(fds[&0], Path::new("/dev/null"));
    assert_eq!(fds[&1], Path::new("/dev/null"));
    // Its messages go to the log through the capture, which holds the
    // log open itself (and one pipe from the child, both ends).
    assert_eq!(fds[&2], Path::new("/dev/null"));
    assert!(
        fds.iter().any(|(fd, path)| *fd > 2 && *path == sup.log),
        "the supervisor writes the log: {fds:?}"
    );
    let pipe_of_child_stdout = procfs::fds(child).unwrap()[&1].clone();
    assert!(
        pipe_of_child_stdout.to_string_lossy().starts_with("pipe:"),
        "{pipe_of_child_stdout:?}"
    );
    assert!(
        fds.values().any(|path| *path == pipe_of_child_stdout),
        "the child's output goes into the supervisor's pipe: {fds:?}"
    );
    // The child: the supervisor's, in its session, no terminal, cwd /,
    // umask 022, and only stdio and the pidfile's lock.
    assert_eq!(c.ppid, sup.supervisor);
    assert_eq!(c.session, s.session);
    assert_ne!(c.session, child);
    assert_eq!(c.pgrp, child, "the child has a process group of its own");
    assert_eq!(c.tty_nr, 0);
    assert_eq!(c.tpgid, -1);
    assert_eq!(procfs::cwd(child).unwrap(), Path::new("/"));
    assert_eq!(procfs::status(child).unwrap().umask(), 0o022);
    let fds = procfs::fds(child).unwrap();
    let lock = PathBuf::from(format!("{}.lock", sup.pidfile.display()));
    // Besides the script that sh itself reads.
    let script = sup.dir.join("child.sh");
    let others: Vec<_> = fds
        .iter()
        .filter(|(fd, path)| **fd > 2 && **path != script)
        .collect();
    assert_eq!(fds[&0], Path::new("/dev/null"));
    // One pipe for both: they share one log file, so their order holds.
    assert!(fds[&1].to_string_lossy().starts_with("pipe:"), "{fds:?}");
    assert_eq!(fds[&2], fds[&1]);
    assert_eq!(others.len(), 1, "{fds:?}");
    assert_eq!(others[0].1, &lock);
    // sh blocks every signal for a moment while it forks a command
    // (glibc's fork): the empty mask it was given shows between those.
    wait_until(TIMEOUT, "the child's empty signal mask", || {
        procfs::status(child).unwrap().sig_blk() == 0
    });
}

#[test]
fn restart_now_restarts_with_the_delay_reset() {
    let sup = Supervised::start(
        &["--restart-delay", "3600", "--restart-max-delay", "3600"],
        "",
    );
    let first = sup.current_child(None);
    sup.control(&["--restart-now"]).assert_code(0);
    let second = sup.current_child(Some(first));
    assert_eq!(sup.starts(), vec![first, second]);
    // With only -P, a signal the supervisor would not pass on is refused.
    sup.control_sup(&["--signal", "RTMIN+3"])
        .assert_failed(125, &["passes on only", "--pidfile"]);
    assert!(sup.supervisor_alive());
    // -P names the instance too.
    sup.control_sup(&["--restart-now"]).assert_code(0);
    let third = sup.current_child(Some(second));
    let status = sup.control_sup(&["--status"]);
    status.assert_code(0);
    assert!(
        status
            .stdout
            .contains(&format!("running (pid {third}; supervisor pid")),
        "{status:?}"
    );
    assert!(status.stdout.contains("2 restarts"), "{status:?}");
}

#[test]
fn restart_now_needs_a_supervised_running_instance() {
    common::init();
    let mut plain = daemonize();
    let pidfile = plain.dir().join("plain.pid");
    plain.arg("-p").arg(&pidfile).args(["--", "sleep", "1000"]);
    plain.run().assert_started();
    let _daemon = common::Daemon::new(read_pid(&pidfile).unwrap());
    daemonize()
        .args(["--restart-now", "-p"])
        .arg(&pidfile)
        .run()
        .assert_failed(125, &["not supervised"]);
    daemonize()
        .args(["--restart-now", "-p"])
        .arg(plain.dir().join("none.pid"))
        .run()
        .assert_failed(7, &["not running"]);
}

#[test]
fn status_shows_a_pending_restart_and_signal_finds_no_child() {
    let sup = Supervised::start(
        &["--restart-delay", "3600", "--restart-max-delay", "3600"],
        "",
    );
    let first = sup.wait_starts(1);
    sup.exit_child(first, 4);
    sup.wait_log("restarting it in 3600.000 s");
    let status = sup.control(&["--status"]);
    status.assert_code(0);
    assert!(
        status.stdout.contains(&format!(
            "restarting (supervisor pid {}; restart due in ",
            sup.supervisor
        )),
        "{status:?}"
    );
    assert!(
        status
            .stdout
            .contains("1 restart; last end: exited with status 4)"),
        "{status:?}"
    );
    // The supervisor's last message is in the status channel too.
    assert!(
        status.stdout.contains(
            "last message from the supervisor: exited with status 4; restarting it in 3600.000 s (restart 1)"
        ),
        "{status:?}"
    );
    // The pidfile is empty while no child runs.
    assert_eq!(fs::read_to_string(&sup.pidfile).unwrap(), "");
    sup.control(&["--reload"])
        .assert_failed(7, &["restart pending"]);
    sup.control_sup(&["--stop"]).assert_code(0);
    sup.assert_all_gone();
    sup.wait_log("stopped while a restart was pending");
}

#[test]
fn a_failed_first_start_is_reported_like_a_plain_one() {
    let (output, sup) =
        Supervised::try_start_with(&[], |dir| vec![dir.join("no-such-command").into()]);
    output.assert_failed(127, &["cannot execute", "no-such-command"]);
    sup.err().unwrap().assert_nothing_left();
    let (output, sup) = Supervised::try_start(&["--chdir", "/no/such/dir"], "");
    output.assert_failed(125, &["cannot change directory to '/no/such/dir'"]);
    sup.err().unwrap().assert_nothing_left();
}

#[test]
fn a_first_start_that_is_never_ready_fails_and_leaves_nothing() {
    let (output, sup) = Supervised::try_start_with(
        &["--wait-ready", "--ready-timeout", "0.5"],
        notify_argv(&["print", "starting"]),
    );
    output.assert_failed(125, &["not ready after"]);
    sup.err().unwrap().assert_nothing_left();
}

#[test]
fn stop_escalates_to_sigkill_for_a_child_that_ignores_the_signal() {
    let sup = Supervised::start(&[], "trap '' TERM");
    let child = sup.current_child(None);
    sup.control(&["--stop", "--timeout", "0.5"]).assert_code(0);
    assert!(!procfs::is_alive(child), "the child outlived --stop");
    sup.assert_all_gone();
    assert!(
        sup.log_text()
            .contains("still running after the stop timeout: SIGKILL"),
        "{}",
        sup.log_text()
    );
    assert_eq!(sup.starts(), vec![child], "no restart after --stop");
}

#[test]
fn what_a_run_leaves_in_its_process_group_goes_before_the_restart() {
    let sup = Supervised::start(
        &["--restart-delay", "0"],
        "sleep 1000 &\necho $! >> \"$(dirname \"$0\")/workers\"",
    );
    let first = sup.wait_starts(1);
    let workers = sup.dir.join("workers");
    let worker: i32 = wait_for(TIMEOUT, "the first run's worker", || {
        fs::read_to_string(&workers)
            .ok()?
            .lines()
            .next()?
            .parse()
            .ok()
    });
    assert!(procfs::is_alive(worker));
    sup.exit_child(first, 1);
    sup.wait_starts(2);
    wait_until(TIMEOUT, "the first run's worker to be killed", || {
        !procfs::is_alive(worker)
    });
    // The new run's own worker is untouched.
    let second_worker: i32 = wait_for(TIMEOUT, "the second run's worker", || {
        fs::read_to_string(&workers)
            .ok()?
            .lines()
            .nth(1)?
            .parse()
            .ok()
    });
    assert!(procfs::is_alive(second_worker));
}
