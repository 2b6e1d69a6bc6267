//! Bad input: the exit status (docs/design.md, "Exit status"), the one-line
//! message, and that nothing was left running.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{DaemonSpec, Output, assert_no_leftover, daemonize, init, unique_marker};

/// Runs `daemonize OPTIONS -- DAEMON` (a daemon command carrying a marker),
/// asserts that it fails with `code` and a message with all of `words`,
/// that the daemon command never ran, and that no process was left behind.
#[track_caller]
fn refused<S: AsRef<OsStr>>(
    options: impl IntoIterator<Item = S>,
    code: i32,
    words: &[&str],
) -> Output {
    let mut cmd = daemonize();
    let spec = DaemonSpec::new(cmd.dir());
    let output = cmd.args(options).arg("--").args(spec.argv()).run();
    output.assert_failed(code, words);
    assert_no_leftover(&spec.marker);
    assert!(!spec.pidfile.exists(), "the daemon command ran");
    output
}

/// Runs `daemonize COMMAND` for a COMMAND that cannot be run; its path
/// carries `marker`.
#[track_caller]
fn refused_command(command: &Path, marker: &str, code: i32, words: &[&str]) {
    let output = daemonize().arg(command).arg(marker).run();
    output.assert_failed(code, words);
    assert_no_leftover(marker);
}

// ---------------------------------------------------------------------------
// COMMAND
// ---------------------------------------------------------------------------

#[test]
fn command_not_found_in_path_exits_127() {
    init();
    let marker = unique_marker();
    let name = format!("daemonize-test-missing-{marker}");
    refused_command(
        Path::new(&name),
        &marker,
        127,
        &[
            &format!("cannot execute '{name}'"),
            "No such file or directory",
        ],
    );
}

#[test]
fn command_path_that_does_not_exist_exits_127() {
    init();
    let marker = unique_marker();
    let path = format!("/nonexistent-{marker}/daemon");
    refused_command(
        Path::new(&path),
        &marker,
        127,
        &[
            &format!("cannot execute '{path}'"),
            "No such file or directory",
        ],
    );
}

#[test]
fn directory_as_command_exits_126() {
    init();
    let marker = unique_marker();
    let dir = tempfile::tempdir().unwrap();
    let command = dir.path().join(&marker);
    fs::create_dir(&command).unwrap();
    refused_command(
        &command,
        &marker,
        126,
        &[&format!("cannot execute '{}'", command.display())],
    );
}

#[test]
fn non_executable_file_as_command_exits_126() {
    init();
    let marker = unique_marker();
    let dir = tempfile::tempdir().unwrap();
    let command = dir.path().join(format!("{marker}.sh"));
    fs::write(&command, "#!/bin/sh\nexec sleep 1000\n").unwrap();
    fs::set_permissions(&command, fs::Permissions::from_mode(0o644)).unwrap();
    refused_command(
        &command,
        &marker,
        126,
        &[
            &format!("cannot execute '{}'", command.display()),
            "Permission denied",
        ],
    );
}

// ---------------------------------------------------------------------------
// Setup steps in the daemon
// ---------------------------------------------------------------------------

#[test]
fn missing_chdir_directory_exits_125() {
    init();
    let dir = format!("/nonexistent-{}", unique_marker());
    refused(
        ["-c", dir.as_str()],
        125,
        &[
            &format!("cannot change directory to '{dir}'"),
            "No such file or directory",
        ],
    );
}

#[test]
fn chdir_to_a_file_exits_125() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    fs::write(&file, "").unwrap();
    refused(
        [OsStr::new("--chdir"), file.as_os_str()],
        125,
        &[
            &format!("cannot change directory to '{}'", file.display()),
            "Not a directory",
        ],
    );
}

#[test]
fn log_file_in_a_missing_directory_exits_125() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("missing").join("out.log");
    refused(
        [OsStr::new("-o"), log.as_os_str()],
        125,
        &[
            &format!("cannot open log file '{}'", log.display()),
            "No such file or directory",
        ],
    );
}

#[test]
fn log_file_in_a_directory_root_cannot_write_exits_125() {
    init();
    // No one, not even root, can create a file in the top of procfs.
    let log = format!("/proc/daemonize-test-{}.log", unique_marker());
    refused(
        ["-o", log.as_str()],
        125,
        &[&format!("cannot open log file '{log}'")],
    );
}

#[test]
fn log_file_that_is_a_directory_exits_125() {
    init();
    let dir = tempfile::tempdir().unwrap();
    refused(
        [OsStr::new("-o"), dir.path().as_os_str()],
        125,
        &[
            &format!("cannot open log file '{}'", dir.path().display()),
            "Is a directory",
        ],
    );
}

#[test]
fn unopenable_stderr_log_is_named_in_the_message() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.log");
    let err = dir.path().join("missing").join("err.log");
    refused(
        [
            OsStr::new("-o"),
            out.as_os_str(),
            OsStr::new("-e"),
            err.as_os_str(),
        ],
        125,
        &[
            &format!("cannot open log file '{}'", err.display()),
            "No such file or directory",
        ],
    );
}

#[test]
fn relative_log_path_is_shown_absolute() {
    init();
    let mut cmd = daemonize();
    let spec = DaemonSpec::new(cmd.dir());
    let expected = cmd.dir().join("missing/out.log");
    let output = cmd
        .args(["-o", "missing/out.log", "--"])
        .args(spec.argv())
        .run();
    output.assert_failed(
        125,
        &[&format!("cannot open log file '{}'", expected.display())],
    );
    assert_no_leftover(&spec.marker);
}

// ---------------------------------------------------------------------------
// Option values
// ---------------------------------------------------------------------------

fn assert_bad_umask(value: &str) {
    refused(
        ["-m", value],
        125,
        &[
            &format!("invalid value '{value}' for '--umask <MODE>'"),
            "octal",
        ],
    );
}

#[test]
fn umask_with_a_non_octal_digit_exits_125() {
    init();
    assert_bad_umask("8");
}

#[test]
fn umask_in_hex_exits_125() {
    init();
    assert_bad_umask("0x22");
}

#[test]
fn umask_above_777_exits_125() {
    init();
    assert_bad_umask("1000");
}

#[test]
fn umask_that_is_not_a_number_exits_125() {
    init();
    assert_bad_umask("abc");
}

#[test]
fn keep_fds_that_is_not_a_number_exits_125() {
    init();
    refused(
        ["--keep-fds", "abc"],
        125,
        &["invalid value 'abc' for '--keep-fds", "descriptor number"],
    );
}

#[test]
fn keep_fds_naming_a_standard_descriptor_exits_125() {
    init();
    refused(
        ["--keep-fds", "2"],
        125,
        &["invalid value '2' for '--keep-fds", "above 2"],
    );
}

#[test]
fn keep_fds_naming_a_closed_descriptor_exits_125() {
    init();
    refused(
        ["--keep-fds", "77"],
        125,
        &["cannot keep descriptor 77 (--keep-fds): it is not open"],
    );
}

#[test]
fn env_without_equals_sign_exits_125() {
    init();
    refused(
        ["-E", "FOO"],
        125,
        &["invalid value 'FOO' for '--env <NAME=VALUE>'", "NAME=VALUE"],
    );
}

#[test]
fn env_with_an_empty_name_exits_125() {
    init();
    refused(
        ["-E", "=value"],
        125,
        &[
            "invalid value '=value' for '--env <NAME=VALUE>'",
            "name is empty",
        ],
    );
}

#[test]
fn unknown_option_exits_125() {
    init();
    refused(
        ["--bogus"],
        125,
        &["unexpected argument '--bogus' found", "daemonize --help"],
    );
}

#[test]
fn missing_command_exits_125() {
    init();
    let marker = unique_marker();
    let output = daemonize()
        .args(["-c", "/", "-E"])
        .arg(format!("MARKER={marker}"))
        .run();
    output.assert_failed(
        125,
        &[
            "the following required arguments were not provided",
            "<COMMAND>",
        ],
    );
    assert_no_leftover(&marker);
}

// ---------------------------------------------------------------------------
// Help and version
// ---------------------------------------------------------------------------

#[test]
fn help_goes_to_stdout_and_exits_0() {
    init();
    for flag in ["--help", "-h"] {
        let output = daemonize().arg(flag).run();
        output.assert_code(0);
        assert!(
            output.stdout.contains("Usage: daemonize") && output.stdout.contains("--chdir"),
            "{flag}: {output:?}"
        );
        assert_eq!(output.stderr, "", "{flag}");
    }
}

#[test]
fn version_goes_to_stdout_and_exits_0() {
    init();
    let output = daemonize().arg("--version").run();
    output.assert_code(0);
    assert_eq!(
        output.stdout,
        format!("daemonize {}\n", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(output.stderr, "");
}
