//! Starts that do not stay up, and commands that must not run the wrong
//! way (docs/design.md, "A start that does not stay up"): a command that
//! exits at once, one that forks into the background, what a failed start
//! leaves, the log lines a failure quotes, FIFOs as logs, binaries that are
//! not for this machine, missing interpreters, and callers that ignore
//! SIGCHLD.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use common::{
    Daemon, Output, TIMEOUT, assert_no_leftover, daemonize, init, processes_with_marker, procfs,
    unique_marker, wait_for, wait_until,
};

fn executable(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, content).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The PID a pidfile holds, once it holds one.
fn pid_in(pidfile: &Path) -> Option<i32> {
    fs::read_to_string(pidfile).ok()?.trim().parse().ok()
}

// ---------------------------------------------------------------------------
// Commands that end as they start
// ---------------------------------------------------------------------------

/// A command that has already failed when daemonize looks is a failed
/// start (125, with its status), never exit 0; and no pidfile names it.
/// Whether it has ended by then is up to the scheduler, so each of several
/// starts must be one of the two consistent outcomes, and every failure
/// must say why.
#[test]
fn a_command_that_exits_non_zero_at_once_is_never_reported_as_started_and_leaves_no_pidfile() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("app.pid");
    let log = dir.path().join("app.log");
    for _ in 0..20 {
        let output = daemonize()
            .arg("-p")
            .arg(&pidfile)
            .arg("-o")
            .arg(&log)
            .args(["--", "sh", "-c", "echo the config is broken >&2; exit 3"])
            .run();
        match output.code {
            Some(0) => {
                // It was still running when daemonize returned: the pidfile
                // named it, and it is stale once it has exited.
                let status = daemonize().arg("-p").arg(&pidfile).arg("--status").run();
                assert_ne!(status.code, Some(0), "{status:?}");
            }
            Some(125) => {
                assert!(
                    output.stderr.contains("exited with status 3")
                        && output.stderr.contains("the config is broken"),
                    "{output:?}"
                );
                assert!(!pidfile.exists(), "a failed start left its pidfile");
            }
            _ => panic!("unexpected result: {output:?}"),
        }
    }
}

/// `daemonize -- true`: it ran and is done; a success that leaves no
/// pidfile (or a stale one, if daemonize returned before it exited).
#[test]
fn a_command_that_exits_0_leaving_nothing_is_a_success_with_no_live_pidfile() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("app.pid");
    daemonize()
        .arg("-p")
        .arg(&pidfile)
        .args(["--", "true"])
        .run()
        .assert_code(0);
    wait_until(TIMEOUT, "the pidfile to stop naming a live daemon", || {
        daemonize()
            .arg("-p")
            .arg(&pidfile)
            .arg("--status")
            .run()
            .code
            != Some(0)
    });
}

/// A command that forks into the background and exits 0 (nginx without
/// `daemon off;`) is followed: its pidfile is never deleted while the
/// process it left holds the lock; `--status` finds it, a second start is
/// refused, `--stop` stops it. That holds whether daemonize saw the exit
/// (then the pidfile names the child) or returned first.
#[test]
fn a_command_that_forks_into_the_background_is_followed_and_never_run_twice() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("app.pid");
    let marker = unique_marker();
    let forker = format!("sleep {marker} & exit 0");
    let start = || {
        daemonize()
            .arg("-p")
            .arg(&pidfile)
            .args(["--", "sh", "-c", &forker])
            .run()
    };
    start().assert_code(0);
    let child = wait_for(TIMEOUT, "the background child", || {
        processes_with_marker(&marker).first().map(|(pid, _)| *pid)
    });
    let _guard = Daemon::new(child);
    let status = daemonize().arg("-p").arg(&pidfile).arg("--status").run();
    status.assert_code(0);
    if let Some(pid) = pid_in(&pidfile)
        && procfs::stat(pid).is_ok_and(|s| s.state != 'Z')
    {
        assert_eq!(
            pid, child,
            "the pidfile names a live process that is not the daemon"
        );
    }
    start().assert_failed(1, &["already running"]);
    assert_eq!(
        processes_with_marker(&marker).len(),
        1,
        "a second copy runs"
    );
    daemonize()
        .arg("-p")
        .arg(&pidfile)
        .arg("--stop")
        .run()
        .assert_code(0);
    assert_no_leftover(&marker);
    assert!(!pidfile.exists());
}

/// `daemonize --ready-fd 3 -p PIDFILE` of a command that starts a child
/// which calls setsid (leaving the daemon's session and group) and runs
/// `sleep MARKER`, waits until that child has started, and exits `code`
/// before it is ready.
fn start_leaving_a_setsid_child(dir: &Path, pidfile: &Path, marker: &str, code: i32) -> Output {
    let started = dir.join("started");
    daemonize()
        .args(["--ready-fd", "3", "-p"])
        .arg(pidfile)
        .args(["--", "sh", "-c"])
        .arg(format!(
            "setsid sh -c 'touch {}; exec sleep {marker}' 3>&- &\n\
             while [ ! -e {} ]; do sleep 0.01; done; exit {code}",
            started.display(),
            started.display()
        ))
        .run()
}

/// With readiness, a command that exits 0 before it is ready and leaves a
/// process behind went into the background: a failed start that stops
/// everything it left (even after setsid) and says how to keep it in the
/// foreground.
#[test]
fn with_readiness_a_command_that_goes_into_the_background_is_a_failed_start_that_stops_it_all() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("app.pid");
    let marker = unique_marker();
    let output = start_leaving_a_setsid_child(dir.path(), &pidfile, &marker, 0);
    assert_eq!(output.code, Some(125), "{output:?}");
    assert!(
        output.stderr.contains("went into the background"),
        "{output:?}"
    );
    assert!(output.stderr.contains("foreground"), "{output:?}");
    assert_no_leftover(&marker);
    assert!(!pidfile.exists());
}

// ---------------------------------------------------------------------------
// What a failed start leaves
// ---------------------------------------------------------------------------

/// A failed start stops everything it started, even a child that called
/// setsid (out of the daemon's process group), so nothing keeps its lock.
#[test]
fn a_failed_start_stops_children_that_left_the_daemons_session() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("app.pid");
    let marker = unique_marker();
    let output = start_leaving_a_setsid_child(dir.path(), &pidfile, &marker, 1);
    assert_eq!(output.code, Some(125), "{output:?}");
    assert!(output.stderr.contains("exited with status 1"), "{output:?}");
    assert_no_leftover(&marker);
    assert!(!pidfile.exists());
    // Nothing holds the lock: the next start works.
    let marker2 = unique_marker();
    daemonize()
        .arg("-p")
        .arg(&pidfile)
        .args(["--", "sleep", &marker2])
        .run()
        .assert_code(0);
    let pid = wait_for(TIMEOUT, "the pidfile", || pid_in(&pidfile));
    drop(Daemon::new(pid));
}

/// The log lines quoted after a failure are this start's, not what earlier
/// runs appended to the same log.
#[test]
fn a_failure_quotes_only_the_log_lines_of_this_start() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    fs::write(&log, "error from the previous run\n").unwrap();
    let output = daemonize()
        .args(["--ready-fd", "3", "-o"])
        .arg(&log)
        .args(["--", "sh", "-c", "echo this start failed; exit 2"])
        .run();
    assert_eq!(output.code, Some(125), "{output:?}");
    assert!(output.stderr.contains("this start failed"), "{output:?}");
    assert!(
        !output.stderr.contains("previous run"),
        "quoted an earlier run: {output:?}"
    );
    // The earlier lines are still in the log: appending is the default.
    let text = fs::read_to_string(&log).unwrap();
    assert_eq!(text, "error from the previous run\nthis start failed\n");
}

// ---------------------------------------------------------------------------
// Log files that are FIFOs
// ---------------------------------------------------------------------------

#[test]
fn a_fifo_with_no_reader_as_the_log_is_a_clear_error_not_a_hang() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("log.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let pidfile = dir.path().join("app.pid");
    let marker = unique_marker();
    let output = daemonize()
        .arg("-p")
        .arg(&pidfile)
        .arg("-o")
        .arg(&fifo)
        .args(["--", "sleep", &marker])
        .run();
    output.assert_failed(
        125,
        &["cannot open log file", "FIFO", "no process is reading"],
    );
    assert_no_leftover(&marker);
    assert!(!pidfile.exists());
}

#[test]
fn a_fifo_with_a_reader_as_the_log_gets_the_daemons_output_in_blocking_mode() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("log.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // Read-write keeps the FIFO open for reading without blocking here.
    let reader = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    let marker = unique_marker();
    let pidfile = dir.path().join("app.pid");
    daemonize()
        .arg("-p")
        .arg(&pidfile)
        .arg("-o")
        .arg(&fifo)
        .args(["--", "sh", "-c"])
        .arg(format!("echo hello; exec sleep {marker}"))
        .run()
        .assert_code(0);
    let pid = wait_for(TIMEOUT, "the pidfile", || pid_in(&pidfile));
    let daemon = Daemon::new(pid);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(&reader), &mut line).unwrap();
    assert_eq!(line, "hello\n");
    // The daemon's descriptor is blocking again (no O_NONBLOCK, 04000).
    wait_until(TIMEOUT, "the daemon to exec sleep", || {
        procfs::cmdline(daemon.pid()).is_ok_and(|argv| argv.first().is_some_and(|a| a == "sleep"))
    });
    let fdinfo = fs::read_to_string(format!("/proc/{}/fdinfo/1", daemon.pid())).unwrap();
    let flags = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
        .unwrap();
    assert_eq!(flags & nix::libc::O_NONBLOCK as u32, 0, "{fdinfo}");
    assert_ne!(flags & nix::libc::O_APPEND as u32, 0, "{fdinfo}");
}

// ---------------------------------------------------------------------------
// Files that must not run through the shell
// ---------------------------------------------------------------------------

/// `/bin/true` with its ELF header saying it is for another machine.
fn foreign_elf(dir: &Path) -> PathBuf {
    let mut bytes = fs::read("/bin/true").unwrap();
    // e_machine (offset 18, 2 bytes): 0x00B7 is AArch64, 0x003E x86-64.
    let other: u16 = if bytes[18] == 0xB7 { 0x3E } else { 0xB7 };
    bytes[18..20].copy_from_slice(&other.to_le_bytes());
    executable(dir, "foreign", &bytes)
}

#[test]
fn a_binary_for_another_machine_is_126_exec_format_error_and_never_run_by_the_shell() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let binary = foreign_elf(dir.path());
    let output = daemonize().arg(&binary).run();
    output.assert_failed(126, &["cannot execute", "Exec format error"]);
}

/// A file that starts like an ELF but is not a valid one: the shell would
/// run its text lines (here, one that creates a file).
#[test]
fn a_corrupt_elf_is_126_and_its_bytes_never_run_as_shell_commands() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let created = dir.path().join("created-by-the-shell");
    let mut content = b"\x7fELF\x02\x01\x01\0garbage\n".to_vec();
    content.extend_from_slice(format!("touch '{}'\n", created.display()).as_bytes());
    let corrupt = executable(dir.path(), "corrupt", &content);
    let truncated = executable(
        dir.path(),
        "truncated",
        &fs::read("/bin/true").unwrap()[..200],
    );
    for file in [corrupt, truncated] {
        daemonize()
            .arg(&file)
            .run()
            .assert_failed(126, &["cannot execute", "Exec format error"]);
    }
    assert!(!created.exists(), "the shell ran the corrupt ELF");
}

/// A script without `#!` still runs through /bin/sh, as POSIX execvp does.
#[test]
fn a_text_script_without_shebang_still_runs_through_the_shell() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let script = executable(
        dir.path(),
        "script",
        format!("echo \"$0 $1\" > '{}'\n", ran.display()).as_bytes(),
    );
    daemonize().arg(&script).arg("arg1").run().assert_code(0);
    wait_until(TIMEOUT, "the script to run", || {
        fs::read_to_string(&ran).is_ok_and(|s| s.ends_with('\n'))
    });
    assert_eq!(
        fs::read_to_string(&ran).unwrap(),
        format!("{} arg1\n", script.display())
    );
}

#[test]
fn a_missing_interpreter_is_126_naming_it_not_127() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let script = executable(
        dir.path(),
        "script",
        b"#!/nonexistent/interpreter -x\necho\n",
    );
    daemonize().arg(&script).run().assert_failed(
        126,
        &[
            &format!("cannot execute '{}'", script.display()),
            "interpreter '/nonexistent/interpreter' does not exist",
        ],
    );
    // Found through PATH, the message names the file that was found.
    let output = daemonize().env("PATH", dir.path()).arg("script").run();
    output.assert_failed(
        126,
        &[
            &format!("'{}'", script.display()),
            "/nonexistent/interpreter",
        ],
    );
}

#[test]
fn a_crlf_shebang_is_126_naming_the_carriage_return() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let script = executable(dir.path(), "dos.sh", b"#!/bin/sh\r\necho hi\r\n");
    daemonize()
        .arg("-c")
        .arg(dir.path())
        .arg("./dos.sh")
        .run()
        .assert_failed(
            126,
            &[
                &format!("cannot execute '{}'", script.display()),
                "'/bin/sh\\r'",
                "carriage return",
            ],
        );
}

// ---------------------------------------------------------------------------
// Callers
// ---------------------------------------------------------------------------

/// A caller that ignores SIGCHLD (the kernel would reap daemonize's
/// children for it) changes nothing: the death is reported with its
/// status, and a running daemon is named by the pidfile.
#[test]
fn a_caller_that_ignores_sigchld_still_gets_exit_statuses_and_a_true_pidfile() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let ignoring = |cmd: &mut common::Cmd| {
        // SAFETY: signal(2) with SIG_IGN in the forked child before exec;
        // async-signal-safe, no allocation.
        unsafe {
            cmd.command_mut().pre_exec(|| {
                nix::sys::signal::signal(
                    nix::sys::signal::Signal::SIGCHLD,
                    nix::sys::signal::SigHandler::SigIgn,
                )
                .map(drop)
                .map_err(std::io::Error::from)
            });
        }
    };
    let mut cmd = daemonize();
    ignoring(&mut cmd);
    let output = cmd
        .args(["--ready-fd", "3", "--", "sh", "-c", "exit 3"])
        .run();
    assert_eq!(output.code, Some(125), "{output:?}");
    assert!(output.stderr.contains("exited with status 3"), "{output:?}");

    let pidfile = dir.path().join("app.pid");
    let marker = unique_marker();
    let mut cmd = daemonize();
    ignoring(&mut cmd);
    cmd.arg("-p")
        .arg(&pidfile)
        .args(["--", "sleep", &marker])
        .run()
        .assert_code(0);
    let pid = wait_for(TIMEOUT, "the pidfile", || pid_in(&pidfile));
    let daemon = Daemon::new(pid);
    assert!(daemon.is_alive());
    assert_eq!(processes_with_marker(&marker)[0].0, pid);
}

/// Children the caller started before it exec'd daemonize (`job & exec
/// daemonize ...`) are not part of the start: a failed start does not stop
/// them, and a command that exits 0 is not "followed" into them.
#[test]
fn children_the_caller_had_before_the_start_are_neither_followed_nor_stopped() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("app.pid");
    for (options, code) in [("--ready-fd 3 -- sh -c 'exit 1'", 125), ("-- true", 0)] {
        let marker = unique_marker();
        let output = common::shell(
            "bash",
            &format!(
                "sleep {marker} & exec \"$DAEMONIZE\" -p '{}' {options}",
                pidfile.display()
            ),
        )
        .run();
        let job = wait_for(TIMEOUT, "the caller's job", || {
            processes_with_marker(&marker).first().map(|(pid, _)| *pid)
        });
        let job = Daemon::new(job);
        assert_eq!(output.code, Some(code), "{output:?}");
        assert!(job.is_alive(), "daemonize stopped the caller's job");
        assert_ne!(
            pid_in(&pidfile),
            Some(job.pid()),
            "the pidfile names the caller's job"
        );
        let status = daemonize().arg("-p").arg(&pidfile).arg("--status").run();
        assert_ne!(status.code, Some(0), "{status:?}");
    }
}

/// The missing-interpreter message quotes the `#!` line only if the
/// daemon's user could read the script: root never shows a line of a file
/// that user may not read.
#[test]
fn the_interpreter_of_a_script_the_daemons_user_cannot_read_is_not_shown() {
    init();
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let script = dir.path().join("secret.sh");
    fs::write(&script, "#!/nonexistent/SECRET-TOKEN\n").unwrap();
    // Executable by anyone, readable by root only.
    fs::set_permissions(&script, fs::Permissions::from_mode(0o711)).unwrap();
    let output = daemonize().args(["-u", "nobody", "--"]).arg(&script).run();
    output.assert_failed(126, &["cannot execute", "interpreter"]);
    assert!(!output.stderr.contains("SECRET"), "{output:?}");
}
