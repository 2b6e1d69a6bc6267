//! The LSB init script example (`examples/init.d/daemonize-example`): how
//! it maps daemonize's exit codes to LSB's, and how it passes DAEMON_ARGS.
//! Its start/status/restart/stop cycle is in tests/pidfile.rs.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{Daemon, Output, TIMEOUT, init, wait_for_pid_file, wait_until};

const INIT_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/init.d/daemonize-example"
);

/// `sh daemonize-example ACTION` for DAEMON with DAEMON_ARGS, its pidfile
/// and log in `dir`, run from `dir` (so a glob would match its files).
fn run(dir: &Path, action: &str, daemon: &Path, args: &str) -> Output {
    let mut cmd = common::Cmd::new("sh");
    cmd.arg(INIT_SCRIPT)
        .arg(action)
        .current_dir(dir)
        .env(
            "NAME",
            format!("daemonize-test-{}", common::unique_marker()),
        )
        .env("DAEMON", daemon)
        .env("DAEMON_ARGS", args)
        .env("DAEMONIZE", common::bin())
        .env("PIDFILE", dir.join("service.pid"))
        .env("LOGFILE", dir.join("service.log"))
        .env("STOP_TIMEOUT", "10");
    cmd.run()
}

fn script(dir: &Path, name: &str, body: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn daemon_args_are_split_into_words_but_never_glob_expanded() {
    init();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a-file-a-glob-would-find"), "").unwrap();
    let args_file = dir.path().join("args");
    let daemon = script(
        dir.path(),
        "service",
        &format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\nexec sleep 1000\n",
            args_file.display()
        ),
        0o755,
    );
    run(dir.path(), "start", &daemon, "one * two").assert_code(0);
    let pid = wait_for_pid_file(&dir.path().join("service.pid"), TIMEOUT);
    let _daemon = Daemon::new(pid);
    wait_until(TIMEOUT, "the service to record its arguments", || {
        std::fs::read_to_string(&args_file).is_ok_and(|a| a.ends_with('\n'))
    });
    assert_eq!(
        std::fs::read_to_string(&args_file).unwrap(),
        "one\n*\ntwo\n"
    );
    run(dir.path(), "stop", &daemon, "").assert_code(0);
}

#[test]
fn a_missing_program_is_lsb_5_not_installed() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let output = run(dir.path(), "start", &dir.path().join("no-such-program"), "");
    output.assert_code(5);
    assert!(
        output.stderr.contains("No such file or directory"),
        "{output:?}"
    );
}

#[test]
fn a_program_that_cannot_be_executed_is_lsb_4_insufficient_privilege() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let daemon = script(dir.path(), "not-executable", "#!/bin/sh\n", 0o644);
    let output = run(dir.path(), "start", &daemon, "");
    output.assert_code(4);
    assert!(output.stderr.contains("Permission denied"), "{output:?}");
}

#[test]
fn a_failed_setup_step_is_lsb_1_generic_error() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let daemon = script(dir.path(), "exits", "#!/bin/sh\nexit 3\n", 0o755);
    let mut cmd = common::Cmd::new("sh");
    // A log file in a missing directory: daemonize exits 125.
    cmd.arg(INIT_SCRIPT)
        .arg("start")
        .env(
            "NAME",
            format!("daemonize-test-{}", common::unique_marker()),
        )
        .env("DAEMON", &daemon)
        .env("DAEMONIZE", common::bin())
        .env("PIDFILE", dir.path().join("service.pid"))
        .env("LOGFILE", dir.path().join("missing/service.log"));
    let output = cmd.run();
    output.assert_code(1);
    assert!(output.stderr.contains("cannot open log file"), "{output:?}");
}

#[test]
fn an_unknown_action_is_lsb_3_unimplemented() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let output = run(dir.path(), "frobnicate", Path::new("/bin/sleep"), "1000");
    output.assert_code(3);
    assert!(output.stderr.contains("Usage:"), "{output:?}");
}

#[test]
fn reload_sends_hup_to_the_running_service_and_is_7_when_it_is_not_running() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let hups = dir.path().join("hups");
    let daemon = script(
        dir.path(),
        "service",
        &format!(
            "#!/bin/sh\ntrap 'echo hup >> {}' HUP\nwhile :; do sleep 1; done\n",
            hups.display()
        ),
        0o755,
    );
    run(dir.path(), "reload", &daemon, "").assert_code(7);
    run(dir.path(), "start", &daemon, "").assert_code(0);
    let pid = wait_for_pid_file(&dir.path().join("service.pid"), TIMEOUT);
    let service = Daemon::new(pid);
    // The shell installs its trap right after it starts.
    wait_until(TIMEOUT, "the service to trap SIGHUP", || {
        common::procfs::status(pid).is_ok_and(|s| {
            u64::from_str_radix(s.field("SigCgt"), 16).unwrap() & (1 << (libc_sighup() - 1)) != 0
        })
    });
    run(dir.path(), "reload", &daemon, "").assert_code(0);
    wait_until(TIMEOUT, "the service to see SIGHUP", || {
        std::fs::read_to_string(&hups).is_ok_and(|h| h == "hup\n")
    });
    assert!(service.is_alive(), "reload stopped the service");
    run(dir.path(), "stop", &daemon, "").assert_code(0);
}

fn libc_sighup() -> u32 {
    nix::libc::SIGHUP as u32
}
