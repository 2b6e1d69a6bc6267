//! The state a daemon starts in (docs/design.md, "The detach steps"),
//! observed in /proc, and how daemonize behaves for various callers.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;

use common::{
    Cmd, Daemon, DaemonSpec, Launched, TIMEOUT, assert_no_leftover, daemonize, init, launch_with,
    procfs, shell, test_pid, wait_for_content, wait_for_pid_file, wait_until,
};

/// Runs `daemonize OPTIONS -- DAEMON` and takes the daemon over.
fn launch<S: AsRef<OsStr>>(options: impl IntoIterator<Item = S>) -> Launched {
    let cmd = daemonize();
    let spec = DaemonSpec::new(cmd.dir());
    launch_with(cmd, spec, options)
}

fn dev_null() -> PathBuf {
    PathBuf::from("/dev/null")
}

/// The expected `/proc/PID/fd` listing for descriptors 0, 1, 2.
fn stdio_fds(stdin: &Path, stdout: &Path, stderr: &Path) -> BTreeMap<i32, PathBuf> {
    BTreeMap::from([
        (0, stdin.to_owned()),
        (1, stdout.to_owned()),
        (2, stderr.to_owned()),
    ])
}

/// The bit of signal number `signal` in a /proc signal mask.
fn signal_bit(signal: i32) -> u64 {
    1 << (signal - 1)
}

fn signal_bits(signals: impl IntoIterator<Item = i32>) -> u64 {
    signals
        .into_iter()
        .map(signal_bit)
        .fold(0, |mask, bit| mask | bit)
}

/// Signals 32 and 33, which glibc reserves for itself (SIGCANCEL,
/// SIGSETXID): its `signal()` and `sigaction()` refuse them.
const GLIBC_INTERNAL_SIGNALS: [i32; 2] = [32, 33];

// ---------------------------------------------------------------------------
// Process relationships and terminal
// ---------------------------------------------------------------------------

#[test]
fn daemon_is_reparented_to_the_nearest_subreaper() {
    init();
    let launched = launch::<&str>([]);
    assert_eq!(launched.daemon.stat().ppid, test_pid());
}

#[test]
fn daemon_runs_in_a_new_session_that_it_does_not_lead() {
    init();
    let launched = launch::<&str>([]);
    let stat = launched.daemon.stat();
    let pid = launched.daemon.pid();
    let own = procfs::stat(test_pid()).unwrap();
    assert_ne!(stat.session, pid, "the daemon is a session leader");
    assert_ne!(stat.pgrp, pid, "the daemon is a process group leader");
    assert_ne!(
        stat.session, own.session,
        "the daemon is in the caller's session"
    );
    assert_eq!(
        stat.pgrp, stat.session,
        "the daemon is not in the group the intermediate child led"
    );
}

/// See also the pty test below, where the caller does have a terminal.
#[test]
fn daemon_has_no_controlling_terminal() {
    init();
    let launched = launch::<&str>([]);
    let stat = launched.daemon.stat();
    assert_eq!(stat.tty_nr, 0);
    assert_eq!(stat.tpgid, -1);
}

/// Opens a pseudo-terminal pair, both ends close-on-exec so that no other
/// test's child process can inherit them and delay the hangup.
fn open_pty() -> (nix::pty::PtyMaster, OwnedFd) {
    use nix::fcntl::{OFlag, open};
    use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = posix_openpt(flags).expect("posix_openpt");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    let name = ptsname_r(&master).expect("ptsname_r");
    let slave = open(name.as_str(), flags, nix::sys::stat::Mode::empty()).expect("open pty slave");
    (master, slave)
}

#[test]
fn daemon_survives_the_hangup_of_the_terminal_it_was_started_from() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let spec = DaemonSpec::new(dir.path());
    let shell_pidfile = dir.path().join("shell.pid");
    let status_file = dir.path().join("daemonize.status");
    let (master, slave) = open_pty();

    // setsid --ctty: a new session whose controlling terminal is stdin, the
    // pty. The shell stays in `read` on the terminal until the hangup.
    let mut cmd = Cmd::new("setsid");
    cmd.arg("--ctty")
        .args(["sh", "-c"])
        .arg(r#"echo $$ > "$SHELL_PID"; "$DAEMONIZE" "$@"; echo $? > "$STATUS"; read _"#)
        .arg("sh")
        .args(spec.argv())
        .env("DAEMONIZE", common::bin())
        .env("SHELL_PID", &shell_pidfile)
        .env("STATUS", &status_file);
    let stdio = || Stdio::from(slave.try_clone().expect("dup pty slave"));
    cmd.command_mut()
        .stdin(stdio())
        .stdout(stdio())
        .stderr(stdio());
    let mut launcher = cmd.command_mut().spawn().expect("spawn setsid");
    drop(cmd); // The Command holds copies of the slave.
    drop(slave);

    let shell_pid = wait_for_pid_file(&shell_pidfile, TIMEOUT);
    let status = wait_for_pid_file(&status_file, TIMEOUT);
    assert_eq!(status, 0, "daemonize failed (its message went to the pty)");
    let daemon = spec.start();

    let shell = procfs::stat(shell_pid).expect("the launching shell waits on the terminal");
    assert_ne!(
        shell.tty_nr, 0,
        "the launching shell has no controlling terminal"
    );
    assert_eq!(shell.session, shell_pid);
    let stat = daemon.stat();
    assert_eq!(stat.tty_nr, 0, "the daemon has a controlling terminal");
    assert_eq!(stat.tpgid, -1);
    assert_ne!(stat.session, shell.session);

    drop(master); // Hang up: the shell, as controlling process, gets SIGHUP.
    wait_until(TIMEOUT, "the launching shell to exit", || {
        launcher.try_wait().expect("try_wait").is_some()
    });
    assert!(
        daemon.is_alive(),
        "the daemon died with its launching terminal"
    );
    assert_eq!(daemon.stat().tty_nr, 0);
}

// ---------------------------------------------------------------------------
// Working directory and umask
// ---------------------------------------------------------------------------

#[test]
fn default_working_directory_is_root() {
    init();
    let launched = launch::<&str>([]);
    assert_ne!(launched.cmd.dir(), Path::new("/"));
    assert_eq!(launched.daemon.cwd(), Path::new("/"));
}

#[test]
fn chdir_sets_the_working_directory() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let launched = launch([OsStr::new("-c"), dir.path().as_os_str()]);
    assert_eq!(launched.daemon.cwd(), dir.path());
}

#[test]
fn default_umask_is_022_whatever_the_caller_has() {
    init();
    let mut cmd = shell("sh", r#"umask 077; exec "$DAEMONIZE" "$@""#);
    let spec = DaemonSpec::new(cmd.dir());
    cmd.args(spec.argv()).run().assert_started();
    let daemon = spec.start();
    assert_eq!(daemon.status().umask(), 0o022);
}

#[test]
fn umask_option_sets_the_mask_in_plain_octal() {
    init();
    let launched = launch(["-m", "077"]);
    assert_eq!(launched.daemon.status().umask(), 0o077);
}

#[test]
fn umask_option_accepts_the_0o_prefix() {
    init();
    let launched = launch(["--umask", "0o027"]);
    assert_eq!(launched.daemon.status().umask(), 0o027);
}

// ---------------------------------------------------------------------------
// Descriptors
// ---------------------------------------------------------------------------

#[test]
fn without_log_files_only_0_1_2_are_open_all_on_dev_null() {
    init();
    let launched = launch::<&str>([]);
    let null = dev_null();
    assert_eq!(launched.daemon.fds(), stdio_fds(&null, &null, &null));
}

#[test]
fn with_a_stdout_log_both_1_and_2_point_at_it() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("out.log");
    let launched = launch([OsStr::new("-o"), log.as_os_str()]);
    assert_eq!(launched.daemon.fds(), stdio_fds(&dev_null(), &log, &log));
}

#[test]
fn with_stdout_and_stderr_logs_1_and_2_point_at_each() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.log");
    let err = dir.path().join("err.log");
    let launched = launch([
        OsStr::new("-o"),
        out.as_os_str(),
        OsStr::new("-e"),
        err.as_os_str(),
    ]);
    assert_eq!(launched.daemon.fds(), stdio_fds(&dev_null(), &out, &err));
}

#[test]
fn keep_fds_leaves_exactly_the_named_descriptors_open() {
    init();
    // 7 to 11 are open in the caller (checked, so the test cannot pass by
    // accident); 7, 9 and 11 are kept, as a list and by repeating the option.
    let mut cmd = shell(
        "bash",
        r#"exec 7</dev/null; exec 8</dev/null; exec 9>/dev/null
           exec 10</dev/null; exec 11</dev/null
           for fd in 7 8 9 10 11; do [ -e /proc/$$/fd/$fd ] || exit 99; done
           exec "$DAEMONIZE" --keep-fds 7,9 --keep-fds 11 "$@""#,
    );
    let spec = DaemonSpec::new(cmd.dir());
    cmd.args(spec.argv()).run().assert_started();
    let daemon = spec.start();
    let fds = daemon.fds();
    assert_eq!(fds.keys().copied().collect::<Vec<_>>(), [0, 1, 2, 7, 9, 11]);
    for fd in [7, 9, 11] {
        assert_eq!(fds[&fd], dev_null(), "descriptor {fd}");
    }
}

#[test]
fn a_thousand_inherited_descriptors_are_all_closed() {
    init();
    let mut cmd = shell(
        "bash",
        r#"ulimit -n 4096 || exit 98
           for i in $(seq 10 1010); do eval "exec $i</dev/null"; done
           for i in $(seq 10 1010); do [ -e /proc/$$/fd/$i ] || exit 99; done
           exec "$DAEMONIZE" "$@""#,
    );
    let spec = DaemonSpec::new(cmd.dir());
    cmd.args(spec.argv()).run().assert_started();
    let daemon = spec.start();
    assert_eq!(daemon.fd_numbers(), [0, 1, 2]);
}

// ---------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------

#[test]
fn signals_ignored_or_blocked_by_the_caller_are_reset() {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
    init();
    // The caller ignores HUP, INT, PIPE and a real-time signal (like nohup,
    // or a script with traps) and blocks USR1 and TERM. A control child of
    // the same shell shows that this really is what daemonize inherits.
    // (bash, because dash empties the signal mask when it starts.)
    let rtmin_1 = nix::libc::SIGRTMIN() + 1;
    let mut cmd = shell(
        "bash",
        r#"trap "" HUP INT PIPE RTMIN+1
           cat /proc/self/status > "$CONTROL"
           exec "$DAEMONIZE" "$@""#,
    );
    let control = cmd.dir().join("control-status");
    let spec = DaemonSpec::new(cmd.dir());
    cmd.env("CONTROL", &control).args(spec.argv());
    let blocked = [Signal::SIGUSR1, Signal::SIGTERM];
    // SAFETY: the closure only calls sigprocmask (async-signal-safe) on a
    // stack-allocated set; it neither allocates nor takes locks.
    unsafe {
        cmd.command_mut().pre_exec(move || {
            let mut set = SigSet::empty();
            for signal in blocked {
                set.add(signal);
            }
            sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
            Ok(())
        });
    }
    cmd.run().assert_started();
    let daemon = spec.start();

    let ignored = signal_bits([
        Signal::SIGHUP as i32,
        Signal::SIGINT as i32,
        Signal::SIGPIPE as i32,
        rtmin_1,
    ]);
    let blocked = signal_bits(blocked.map(|s| s as i32));
    let control = procfs::parse_status(&fs::read_to_string(&control).unwrap());
    assert_eq!(
        control.sig_ign() & ignored,
        ignored,
        "caller set-up: SigIgn"
    );
    assert_eq!(
        control.sig_blk() & blocked,
        blocked,
        "caller set-up: SigBlk"
    );

    let status = daemon.status();
    assert_eq!(
        status.sig_ign(),
        0,
        "SigIgn of the daemon: {:#x}",
        status.sig_ign()
    );
    assert_eq!(status.sig_blk(), 0, "SigBlk of the daemon");
}

/// Sets SIG_IGN with the raw system call: glibc's `sigaction` refuses
/// [`GLIBC_INTERNAL_SIGNALS`]. Async-signal-safe.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn ignore_with_raw_sigaction(signal: i32) -> std::io::Result<()> {
    use nix::libc;
    /// The kernel's `struct sigaction` on these architectures.
    #[repr(C)]
    struct KernelSigaction {
        handler: libc::sighandler_t,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let action = KernelSigaction {
        handler: libc::SIG_IGN,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    let no_old: *mut KernelSigaction = std::ptr::null_mut();
    // SAFETY: `action` is a valid kernel sigaction for the duration of the
    // call, the old action is not requested, and 8 is the kernel sigset size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            signal,
            &action as *const KernelSigaction,
            no_old,
            8usize,
        )
    };
    if rc == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[test]
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn signals_reserved_by_glibc_that_the_caller_ignores_are_reset() {
    init();
    let mut cmd = shell(
        "sh",
        r#"cat /proc/self/status > "$CONTROL"; exec "$DAEMONIZE" "$@""#,
    );
    let control = cmd.dir().join("control-status");
    let spec = DaemonSpec::new(cmd.dir());
    cmd.env("CONTROL", &control).args(spec.argv());
    // SAFETY: the closure only makes rt_sigaction system calls on stack data.
    unsafe {
        cmd.command_mut().pre_exec(|| {
            for signal in GLIBC_INTERNAL_SIGNALS {
                ignore_with_raw_sigaction(signal)?;
            }
            Ok(())
        });
    }
    cmd.run().assert_started();
    let daemon = spec.start();

    let internal = signal_bits(GLIBC_INTERNAL_SIGNALS);
    let control = procfs::parse_status(&fs::read_to_string(&control).unwrap());
    assert_eq!(
        control.sig_ign() & internal,
        internal,
        "caller set-up: SigIgn"
    );
    let status = daemon.status();
    assert_eq!(
        status.sig_ign(),
        0,
        "SigIgn of the daemon: {:#x}",
        status.sig_ign()
    );
}

// ---------------------------------------------------------------------------
// Command line and environment
// ---------------------------------------------------------------------------

#[test]
fn non_utf8_arguments_reach_the_daemon_unchanged() {
    init();
    let mut cmd = daemonize();
    let spec = DaemonSpec::new(cmd.dir())
        .hold()
        .arg(OsStr::from_bytes(b"caf\xe9 \xff\xfe"))
        .arg(OsStr::from_bytes(b"\x80"));
    cmd.arg("--").args(spec.argv()).run().assert_started();
    let daemon = spec.start();
    assert_eq!(daemon.cmdline(), spec.argv());
}

#[test]
fn arguments_after_command_go_to_it_even_when_they_look_like_options() {
    init();
    // `sh -c` itself already looks like `--chdir`; no `--` before COMMAND.
    let mut cmd = daemonize();
    let spec = DaemonSpec::new(cmd.dir())
        .hold()
        .arg("-l")
        .arg("-v")
        .arg("--bogus")
        .arg("-o")
        .arg("--")
        .arg("--help");
    cmd.args(spec.argv()).run().assert_started();
    let daemon = spec.start();
    assert_eq!(daemon.cmdline(), spec.argv());
    assert_eq!(daemon.cwd(), Path::new("/"), "-c was taken as --chdir");
}

#[test]
fn env_option_sets_variables_on_top_of_the_inherited_environment() {
    init();
    let mut cmd = daemonize();
    let spec = DaemonSpec::new(cmd.dir()).hold();
    cmd.env("KEEP", "kept")
        .env("OVERRIDE", "old")
        .args(["-E", "OVERRIDE=new", "--env", "ADDED=a=b", "-E", "EMPTY="])
        .arg("--")
        .args(spec.argv())
        .run()
        .assert_started();
    let daemon = spec.start();
    let mut environ: Vec<String> = daemon.environ().iter().map(|v| common::lossy(v)).collect();
    environ.sort();
    let path = common::lossy(&common::inherited_path());
    let mut expected = vec![
        "ADDED=a=b".to_owned(),
        "EMPTY=".to_owned(),
        "KEEP=kept".to_owned(),
        "LANG=C".to_owned(),
        "OVERRIDE=new".to_owned(),
        format!("PATH={path}"),
    ];
    expected.sort();
    assert_eq!(environ, expected);
}

/// Without -E, the daemon gets the caller's environment exactly,
/// including the backtrace variables daemonize briefly touches for itself.
#[test]
fn without_env_options_the_environment_is_passed_on_exactly() {
    init();
    for backtrace in [
        &[("RUST_BACKTRACE", "1")][..],
        &[("RUST_LIB_BACKTRACE", "full"), ("RUST_BACKTRACE", "0")][..],
        &[][..],
    ] {
        let mut cmd = daemonize();
        let spec = DaemonSpec::new(cmd.dir()).hold();
        cmd.env("FIRST", "1");
        for (name, value) in backtrace {
            cmd.env(name, value);
        }
        cmd.env("LAST", "2")
            .arg("--")
            .args(spec.argv())
            .run()
            .assert_started();
        let daemon = spec.start();
        let environ: Vec<String> = daemon.environ().iter().map(|v| common::lossy(v)).collect();
        let mut expected: Vec<String> = vec![
            "FIRST=1".to_owned(),
            "LANG=C".to_owned(),
            "LAST=2".to_owned(),
            format!("PATH={}", common::lossy(&common::inherited_path())),
        ];
        expected.extend(backtrace.iter().map(|(n, v)| format!("{n}={v}")));
        let mut sorted = environ.clone();
        sorted.sort();
        expected.sort();
        assert_eq!(sorted, expected, "{backtrace:?}");
    }
}

#[test]
fn bmc_style_options_before_an_absolute_command_without_double_dash() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("out");
    let mut cmd = daemonize();
    let spec = DaemonSpec::new(cmd.dir()).prelude("pwd");
    let mut argv = spec.argv();
    argv[0] = "/bin/sh".into();
    cmd.arg("-c")
        .arg(dir.path())
        .arg("-o")
        .arg("out")
        .args(argv)
        .current_dir(dir.path())
        .run()
        .assert_started();
    let daemon = spec.start();
    assert_eq!(daemon.cwd(), dir.path());
    wait_for_content(&log, &format!("{}\n", dir.path().display()));
}

#[test]
fn relative_command_is_resolved_after_chdir() {
    init();
    let app = tempfile::tempdir().unwrap();
    let mut cmd = daemonize();
    let spec = DaemonSpec::new(cmd.dir());
    let script = app.path().join("run.sh");
    fs::write(
        &script,
        format!("#!/bin/sh\necho $$ > \"$1\"\nexec sleep {}\n", spec.marker),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    assert!(!cmd.dir().join("run.sh").exists());
    cmd.arg("-c")
        .arg(app.path())
        .arg("./run.sh")
        .arg(&spec.pidfile)
        .run()
        .assert_started();
    let daemon = spec.start();
    assert_eq!(daemon.cwd(), app.path());
}

// ---------------------------------------------------------------------------
// Callers
// ---------------------------------------------------------------------------

/// Runs `cmd` with stdout and stderr on pipes, as `$(daemonize ...)` does,
/// and returns once it has exited *and* both pipes have reached end of file,
/// which needs every copy of their write ends closed. Fails if that takes
/// longer than [`TIMEOUT`], e.g. because the daemon inherited a copy.
fn run_with_pipes(cmd: &mut Cmd, spec: &DaemonSpec) -> (Daemon, std::process::Output) {
    let child = cmd
        .command_mut()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    // Owned before waiting, so the daemon is killed (and the reader thread
    // released) if the pipes stay open.
    let daemon = spec.start();
    let output = rx
        .recv_timeout(TIMEOUT)
        .expect("the caller's output pipes stayed open after daemonize exited")
        .expect("wait_with_output");
    (daemon, output)
}

#[test]
fn command_substitution_returns_once_the_daemon_runs() {
    init();
    let mut cmd = daemonize();
    let spec = DaemonSpec::new(cmd.dir());
    cmd.arg("--").args(spec.argv());
    let (daemon, output) = run_with_pipes(&mut cmd, &spec);
    assert_eq!(output.status.code(), Some(0));
    assert!(output.stdout.is_empty() && output.stderr.is_empty());
    assert!(daemon.is_alive());
}

#[test]
fn a_pipe_held_on_a_high_descriptor_does_not_keep_the_caller_waiting() {
    init();
    let mut cmd = shell("bash", r#"exec 9>&1; exec "$DAEMONIZE" "$@""#);
    let spec = DaemonSpec::new(cmd.dir());
    cmd.args(spec.argv());
    let (daemon, output) = run_with_pipes(&mut cmd, &spec);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(daemon.fd_numbers(), [0, 1, 2]);
}

#[test]
fn caller_with_closed_stdio_still_gets_correct_logs() {
    init();
    let mut cmd = shell("sh", r#"exec "$DAEMONIZE" "$@" <&- >&- 2>&-"#);
    let out = cmd.dir().join("out.log");
    let err = cmd.dir().join("err.log");
    let spec = DaemonSpec::new(cmd.dir()).prelude("echo to-stdout; echo to-stderr >&2");
    cmd.arg("-o")
        .arg(&out)
        .arg("-e")
        .arg(&err)
        .args(spec.argv())
        .run()
        .assert_code(0);
    let daemon = spec.start();
    wait_for_content(&out, "to-stdout\n");
    wait_for_content(&err, "to-stderr\n");
    assert_eq!(daemon.fds(), stdio_fds(&dev_null(), &out, &err));
}

// ---------------------------------------------------------------------------
// Log files
// ---------------------------------------------------------------------------

const WRITE_BOTH: &str = "echo out; echo err >&2";

/// Starts a daemon that writes `out` to stdout and `err` to stderr, with
/// `options` (log files among them), and returns it once it runs.
fn launch_writer(options: &[&OsStr]) -> (Daemon, Cmd) {
    let mut cmd = daemonize();
    let spec = DaemonSpec::new(cmd.dir()).prelude(WRITE_BOTH);
    cmd.args(options).args(spec.argv()).run().assert_started();
    let daemon = spec.start();
    (daemon, cmd) // Dropped in this order: the daemon goes first.
}

#[test]
fn existing_log_content_is_kept_by_default() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("out.log");
    fs::write(&log, "old\n").unwrap();
    let _launched = launch_writer(&[OsStr::new("-o"), log.as_os_str()]);
    wait_for_content(&log, "old\nout\nerr\n");
}

#[test]
fn append_flag_keeps_existing_log_content() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("out.log");
    fs::write(&log, "old\n").unwrap();
    let _launched = launch_writer(&[OsStr::new("-a"), OsStr::new("-o"), log.as_os_str()]);
    wait_for_content(&log, "old\nout\nerr\n");
}

#[test]
fn stdout_and_stderr_go_to_their_own_files() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.log");
    let err = dir.path().join("err.log");
    let _launched = launch_writer(&[
        OsStr::new("-o"),
        out.as_os_str(),
        OsStr::new("-e"),
        err.as_os_str(),
    ]);
    wait_for_content(&out, "out\n");
    wait_for_content(&err, "err\n");
}

#[test]
fn stderr_follows_stdout_when_not_given() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("out.log");
    let _launched = launch_writer(&[OsStr::new("--stdout"), log.as_os_str()]);
    wait_for_content(&log, "out\nerr\n");
}

#[test]
fn the_same_file_for_stdout_and_stderr_gets_both_in_order() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("both.log");
    fs::write(&log, "old\n").unwrap();
    let _launched = launch_writer(&[
        OsStr::new("-o"),
        log.as_os_str(),
        OsStr::new("-e"),
        log.as_os_str(),
    ]);
    wait_for_content(&log, "old\nout\nerr\n");
}

#[test]
fn truncate_empties_the_log_files_first() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.log");
    let err = dir.path().join("err.log");
    fs::write(&out, "old stdout\n").unwrap();
    fs::write(&err, "old stderr\n").unwrap();
    let _launched = launch_writer(&[
        OsStr::new("--truncate"),
        OsStr::new("-o"),
        out.as_os_str(),
        OsStr::new("-e"),
        err.as_os_str(),
    ]);
    wait_for_content(&out, "out\n");
    wait_for_content(&err, "err\n");
}

#[test]
fn log_files_are_created_0644_less_the_umask() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.log");
    let err = dir.path().join("err.log");
    let _default = launch_writer(&[OsStr::new("-o"), out.as_os_str()]);
    let _masked = launch_writer(&[
        OsStr::new("-m"),
        OsStr::new("027"),
        OsStr::new("-e"),
        err.as_os_str(),
    ]);
    let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&out), 0o644);
    assert_eq!(mode(&err), 0o640);
}

// ---------------------------------------------------------------------------
// The guard itself
// ---------------------------------------------------------------------------

#[test]
fn dropping_the_guard_kills_and_reaps_the_daemon() {
    init();
    let launched = launch::<&str>([]);
    let pid = launched.daemon.pid();
    let marker = launched.spec.marker.clone();
    assert_eq!(common::processes_with_marker(&marker).len(), 1);
    drop(launched);
    assert!(procfs::stat(pid).is_err(), "PID {pid} still exists");
    assert_no_leftover(&marker);
}

// ---------------------------------------------------------------------------
// Diagnostics
// ---------------------------------------------------------------------------

/// `-v` traces the steps on stderr (never stdout) and names the daemon's
/// PID; `-vv` adds details; `DAEMONIZE_LOG` overrides both; a plain run is
/// silent (checked by `assert_started` everywhere else).
#[test]
fn verbose_traces_the_steps_on_stderr_and_daemonize_log_overrides() {
    init();
    for (options, env, present, absent) in [
        (
            &["-v"][..],
            None,
            &["launch plan ready", "daemon running"][..],
            &["DEBUG"][..],
        ),
        (
            &["-vv"][..],
            None,
            &["DEBUG", "daemon running"][..],
            &[][..],
        ),
        (
            &[][..],
            Some("debug"),
            &["DEBUG", "daemon running"][..],
            &[][..],
        ),
        (&["-vv"][..], Some("warn"), &[][..], &["INFO", "DEBUG"][..]),
    ] {
        let mut cmd = daemonize();
        if let Some(filter) = env {
            cmd.env("DAEMONIZE_LOG", filter);
        }
        let spec = DaemonSpec::new(cmd.dir());
        let output = cmd.args(options).arg("--").args(spec.argv()).run();
        let daemon = spec.start();
        output.assert_code(0);
        assert_eq!(output.stdout, "", "stdout: {output:?}");
        for word in present {
            assert!(
                output.stderr.contains(word),
                "{options:?} {env:?}: no {word:?} in {output:?}"
            );
        }
        for word in absent {
            assert!(
                !output.stderr.contains(word),
                "{options:?} {env:?}: {word:?} in {output:?}"
            );
        }
        if !present.is_empty() {
            let pid = format!("pid={}", daemon.pid());
            assert!(output.stderr.contains(&pid), "no {pid} in {output:?}");
        }
    }
}
