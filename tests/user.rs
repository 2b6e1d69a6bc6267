//! Running as another user (`-u`, `-g`; docs/design.md, detach step 7 and
//! "Files"):
//! the ids, groups, capabilities and environment the daemon gets, observed
//! in /proc; which files are opened as root and which as the user; and who
//! may use the options at all.
//!
//! The tests run as root and drop to `nobody` (uid 65534, group `nogroup`
//! 65534). Expected group lists and passwd fields are computed on their own,
//! with `id` and `getent`, never with the code under test. Temporary
//! directories are created 0700 root: those that a daemon running as nobody
//! must reach are opened up explicitly.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::procfs::{self, Status};
use common::{
    Cmd, Daemon, DaemonSpec, Launched, Output, assert_no_leftover, bin, daemonize, init,
    launch_with, shell, unique_marker,
};
use tempfile::TempDir;

const NOBODY: u32 = 65534;
const NOGROUP: u32 = 65534;
/// A uid and a gid that have no passwd or group entry ([`assert_no_entry`]).
const NO_ENTRY_UID: u32 = 4242;
const NO_ENTRY_GID: u32 = 4243;

// ---------------------------------------------------------------------------
// Set-up helpers
// ---------------------------------------------------------------------------

#[track_caller]
fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// A temporary directory (root's) with `mode`.
fn dir_with_mode(mode: u32) -> TempDir {
    let dir = tempfile::tempdir().expect("cannot create a temporary directory");
    set_mode(dir.path(), mode);
    dir
}

/// `daemonize` whose own directory, where the daemon writes the PID file of
/// its [`DaemonSpec`], is writable by any user.
fn daemonize_for_anyone() -> Cmd {
    let cmd = daemonize();
    set_mode(cmd.dir(), 0o777);
    cmd
}

/// Runs the command as nobody (std sets groups to none, then gid, then uid).
fn as_nobody(cmd: &mut Cmd) -> &mut Cmd {
    cmd.command_mut().uid(NOBODY).gid(NOGROUP);
    cmd
}

/// The command starts with `groups` as its supplementary groups, so that
/// the caller (root) has groups a daemon could leak.
fn with_caller_groups(cmd: &mut Cmd, groups: &'static [u32]) {
    // SAFETY: the closure runs in the forked child before exec. It makes one
    // raw system call on a static array and builds an io::Error from errno:
    // async-signal-safe, no allocation, no lock.
    unsafe {
        cmd.command_mut().pre_exec(move || {
            let done = nix::libc::syscall(nix::libc::SYS_setgroups, groups.len(), groups.as_ptr());
            if done == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// [`DaemonSpec::hold`], with the FIFO it blocks on openable by any user.
fn hold_for_anyone(spec: DaemonSpec) -> DaemonSpec {
    let spec = spec.hold();
    let fifo = spec.pidfile.with_extension("hold");
    assert!(fifo.exists(), "DaemonSpec::hold has no FIFO at {fifo:?}");
    set_mode(&fifo, 0o666);
    spec
}

/// `daemonize OPTIONS -- sh -c ...`, the shell staying the daemon so that
/// its environment is exactly the one daemonize gave it.
#[track_caller]
fn launch<S: AsRef<OsStr>>(options: impl IntoIterator<Item = S>) -> Launched {
    let cmd = daemonize_for_anyone();
    let spec = hold_for_anyone(DaemonSpec::new(cmd.dir()));
    launch_with(cmd, spec, options)
}

/// Runs `cmd OPTIONS -- DAEMON`, asserts exit 125 with a message holding
/// all of `words`, that the daemon command never ran and nothing is left.
#[track_caller]
fn refused<S: AsRef<OsStr>>(
    mut cmd: Cmd,
    options: impl IntoIterator<Item = S>,
    words: &[&str],
) -> Output {
    let spec = DaemonSpec::new(cmd.dir());
    let output = cmd.args(options).arg("--").args(spec.argv()).run();
    output.assert_failed(125, words);
    assert_no_leftover(&spec.marker);
    assert!(!spec.pidfile.exists(), "the daemon command ran");
    output
}

// ---------------------------------------------------------------------------
// The user database, read with getent and id
// ---------------------------------------------------------------------------

/// Runs a system tool and returns its standard output; it must exit 0.
#[track_caller]
fn tool(program: &str, args: &[&str]) -> String {
    let output = Cmd::new(program).args(args).run();
    output.assert_code(0);
    output.stdout
}

/// A passwd entry, from `getent passwd`.
struct Passwd {
    name: String,
    uid: u32,
    gid: u32,
    dir: String,
    shell: String,
}

#[track_caller]
fn passwd(user: &str) -> Passwd {
    let text = tool("getent", &["passwd", user]);
    let fields: Vec<&str> = text.trim_end_matches('\n').split(':').collect();
    assert_eq!(fields.len(), 7, "bad passwd entry: {text:?}");
    Passwd {
        name: fields[0].to_owned(),
        uid: fields[2].parse().expect("numeric uid"),
        gid: fields[3].parse().expect("numeric gid"),
        dir: fields[5].to_owned(),
        shell: fields[6].to_owned(),
    }
}

/// The gid of a group, from `getent group`.
#[track_caller]
fn group_gid(group: &str) -> u32 {
    let text = tool("getent", &["group", group]);
    let fields: Vec<&str> = text.trim_end_matches('\n').split(':').collect();
    assert_eq!(fields.len(), 4, "bad group entry: {text:?}");
    fields[2].parse().expect("numeric gid")
}

/// What `getgrouplist(user, primary)` must give: `primary` and every group
/// whose member list names `user`. Sorted, without duplicates.
fn expected_groups(user: &str, primary: u32) -> Vec<u32> {
    let text = tool("getent", &["group"]);
    let mut groups: Vec<u32> = text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let members = fields.get(3)?;
            members
                .split(',')
                .any(|m| m == user)
                .then(|| fields[2].parse().expect("numeric gid"))
        })
        .collect();
    groups.push(primary);
    sorted(groups)
}

/// `id -G user`: the user's primary and supplementary gids.
fn id_groups(user: &str) -> Vec<u32> {
    let text = tool("id", &["-G", user]);
    sorted(
        text.split_whitespace()
            .map(|g| g.parse().expect("numeric gid"))
            .collect(),
    )
}

/// The id has no entry in the passwd or group database (the tests that
/// use [`NO_ENTRY_UID`] need one that does not).
#[track_caller]
fn assert_no_entry(database: &str, id: u32) {
    let output = Cmd::new("getent").arg(database).arg(id.to_string()).run();
    assert_eq!(
        output.code,
        Some(2),
        "this test needs {database} id {id} to have no entry: {output:?}"
    );
}

fn sorted(mut ids: Vec<u32>) -> Vec<u32> {
    ids.sort_unstable();
    ids.dedup();
    ids
}

// ---------------------------------------------------------------------------
// Assertions on a running daemon
// ---------------------------------------------------------------------------

/// Real, effective, saved and filesystem uid are all `uid`, likewise for
/// `gid`, and the supplementary groups are exactly `groups`.
#[track_caller]
fn assert_ids(status: &Status, uid: u32, gid: u32, groups: &[u32]) {
    assert_eq!(status.uids(), [uid; 4], "Uid (real, effective, saved, fs)");
    assert_eq!(status.gids(), [gid; 4], "Gid (real, effective, saved, fs)");
    assert_eq!(
        sorted(status.groups()),
        sorted(groups.to_vec()),
        "supplementary groups"
    );
}

fn capabilities(status: &Status, name: &str) -> u64 {
    u64::from_str_radix(status.field(name), 16).expect("hex capability mask")
}

/// Every value of `name` in the daemon's environment (one, unless broken).
fn env_values(daemon: &Daemon, name: &str) -> Vec<String> {
    let prefix = format!("{name}=");
    daemon
        .environ()
        .iter()
        .filter_map(|var| common::lossy(var).strip_prefix(&prefix).map(str::to_owned))
        .collect()
}

// ---------------------------------------------------------------------------
// Ids, groups and capabilities
// ---------------------------------------------------------------------------

/// Supplementary groups that root (the caller) holds, none of which nobody
/// has: root, adm, sudo.
const CALLER_GROUPS: &[u32] = &[0, 4, 27];

#[test]
fn user_option_sets_every_uid_gid_and_the_users_groups_and_no_capabilities() {
    init();
    let expected = id_groups("nobody");
    assert_eq!(expected, expected_groups("nobody", NOGROUP));
    assert!(!expected.contains(&0), "nobody is in group 0: {expected:?}");

    // The caller records its own groups, then execs daemonize.
    let mut cmd = shell(
        "sh",
        r#"grep '^Groups:' /proc/self/status > caller-groups; exec "$DAEMONIZE" "$@""#,
    );
    set_mode(cmd.dir(), 0o777);
    with_caller_groups(&mut cmd, CALLER_GROUPS);
    let caller_groups = cmd.dir().join("caller-groups");
    let spec = DaemonSpec::new(cmd.dir());
    let launched = launch_with(cmd, spec, ["-u", "nobody"]);
    let caller = procfs::parse_status(&fs::read_to_string(caller_groups).unwrap());
    assert_eq!(
        sorted(caller.groups()),
        CALLER_GROUPS,
        "the caller's groups"
    );

    let status = launched.daemon.status();
    assert_ids(&status, NOBODY, NOGROUP, &expected);
    assert!(!status.groups().contains(&0), "root's group leaked");
    assert_eq!(capabilities(&status, "CapEff"), 0, "effective capabilities");
    assert_eq!(capabilities(&status, "CapPrm"), 0, "permitted capabilities");
}

/// The daemon's program tries every way back to root that perl offers
/// (setuid, setgid, setreuid, setresuid through `$<` and `$>`, setgroups
/// through `$)`), then prints what the kernel says about it.
const TRY_TO_REGAIN_ROOT: &str = r#"perl -MPOSIX -e '
print "setuid(0): ", (POSIX::setuid(0) ? "succeeded" : "failed: $!"), "\n";
print "setgid(0): ", (POSIX::setgid(0) ? "succeeded" : "failed: $!"), "\n";
($<, $>) = (0, 0); $< = 0; $> = 0; $( = 0; $) = "0 0";
open my $status, "<", "/proc/self/status" or die "status: $!";
print grep { /^(Uid|Gid|Groups|CapEff):/ } <$status>;
' > "$1""#;

#[test]
fn the_daemon_cannot_become_root_again() {
    init();
    let cmd = daemonize_for_anyone();
    let result = cmd.dir().join("regain");
    let spec = DaemonSpec::new(cmd.dir())
        .prelude(TRY_TO_REGAIN_ROOT)
        .arg(&result);
    // The prelude has finished once the daemon runs its final program.
    let launched = launch_with(cmd, spec, ["-u", "nobody"]);
    assert_ids(
        &launched.daemon.status(),
        NOBODY,
        NOGROUP,
        &id_groups("nobody"),
    );
    let text = fs::read_to_string(&result).unwrap();
    let after = procfs::parse_status(&text);
    assert_eq!(after.field("setuid(0)"), "failed: Operation not permitted");
    assert_eq!(after.field("setgid(0)"), "failed: Operation not permitted");
    assert_ids(&after, NOBODY, NOGROUP, &id_groups("nobody"));
    assert_eq!(capabilities(&after, "CapEff"), 0, "{text}");
}

#[test]
fn group_option_replaces_the_users_primary_group() {
    init();
    let daemon_gid = group_gid("daemon");
    let expected = expected_groups("nobody", daemon_gid);
    assert!(expected.contains(&daemon_gid));
    let launched = launch(["-u", "nobody", "-g", "daemon"]);
    let status = launched.daemon.status();
    assert_ids(&status, NOBODY, daemon_gid, &expected);
    assert!(!status.groups().contains(&0), "root's group leaked");
}

#[test]
fn group_option_takes_a_number() {
    init();
    let launched = launch(["-u", "nobody", "-g", "1"]);
    assert_ids(
        &launched.daemon.status(),
        NOBODY,
        1,
        &expected_groups("nobody", 1),
    );
}

#[test]
fn group_option_takes_a_gid_that_has_no_group_entry() {
    init();
    assert_no_entry("group", NO_ENTRY_GID);
    let gid = NO_ENTRY_GID.to_string();
    let launched = launch(["-u", "nobody", "-g", &gid]);
    assert_ids(
        &launched.daemon.status(),
        NOBODY,
        NO_ENTRY_GID,
        &expected_groups("nobody", NO_ENTRY_GID),
    );
}

#[test]
fn numeric_user_is_the_same_as_the_user_name() {
    init();
    let by_name = launch(["-u", "nobody"]);
    let by_number = launch(["-u", "65534"]);
    let (name, number) = (by_name.daemon.status(), by_number.daemon.status());
    assert_ids(&number, NOBODY, NOGROUP, &id_groups("nobody"));
    assert_eq!(number.uids(), name.uids());
    assert_eq!(number.gids(), name.gids());
    assert_eq!(sorted(number.groups()), sorted(name.groups()));
    for var in ["HOME", "USER", "LOGNAME", "SHELL"] {
        assert_eq!(
            env_values(&by_number.daemon, var),
            env_values(&by_name.daemon, var),
            "{var}"
        );
    }
    assert_eq!(env_values(&by_number.daemon, "USER"), ["nobody"]);
}

#[test]
fn uid_without_a_passwd_entry_gets_the_same_gid_and_only_that_group() {
    init();
    assert_no_entry("passwd", NO_ENTRY_UID);
    let uid = NO_ENTRY_UID.to_string();
    let launched = launch(["-u", &uid]);
    assert_ids(
        &launched.daemon.status(),
        NO_ENTRY_UID,
        NO_ENTRY_UID,
        &[NO_ENTRY_UID],
    );
    assert_eq!(env_values(&launched.daemon, "HOME"), ["/"]);
    assert_eq!(env_values(&launched.daemon, "USER"), [uid.as_str()]);
    assert_eq!(env_values(&launched.daemon, "LOGNAME"), [uid.as_str()]);
}

#[test]
fn uid_without_a_passwd_entry_takes_the_group_option() {
    init();
    assert_no_entry("passwd", NO_ENTRY_UID);
    assert_no_entry("group", NO_ENTRY_GID);
    let (uid, gid) = (NO_ENTRY_UID.to_string(), NO_ENTRY_GID.to_string());
    let launched = launch(["-u", &uid, "-g", &gid]);
    assert_ids(
        &launched.daemon.status(),
        NO_ENTRY_UID,
        NO_ENTRY_GID,
        &[NO_ENTRY_GID],
    );
    assert_eq!(env_values(&launched.daemon, "HOME"), ["/"]);
    assert_eq!(env_values(&launched.daemon, "USER"), [uid.as_str()]);
}

#[test]
fn group_option_alone_keeps_the_uid_and_sets_only_that_group() {
    init();
    let mut cmd = daemonize_for_anyone();
    cmd.env("HOME", "/root").env("USER", "root");
    with_caller_groups(&mut cmd, CALLER_GROUPS);
    let spec = hold_for_anyone(DaemonSpec::new(cmd.dir()));
    let launched = launch_with(cmd, spec, ["-g", "nogroup"]);
    assert_ids(&launched.daemon.status(), 0, NOGROUP, &[NOGROUP]);
    // Still root, so still root's environment.
    assert_eq!(env_values(&launched.daemon, "HOME"), ["/root"]);
    assert_eq!(env_values(&launched.daemon, "USER"), ["root"]);
}

// ---------------------------------------------------------------------------
// Unknown users and groups
// ---------------------------------------------------------------------------

/// The static-build bug, for the record:
///
///     daemonize -u no-such-user-... true
///
/// is expected to exit 125 with `daemonize: unknown user 'no-such-user-...'`;
/// on a host whose /etc/nsswitch.conf says `passwd: files systemd` (Debian's
/// default) and has libnss_systemd.so.2, the binary (statically linked with
/// glibc since commit 9e9c846) dies with SIGSEGV (exit 139 in a shell)
/// inside `_nss_systemd_is_blocked`, called from `getpwnam_r`. The
/// dynamically linked build passes.
#[test]
fn unknown_user_exits_125() {
    init();
    let name = format!("no-such-user-{}", unique_marker());
    refused(
        daemonize(),
        ["-u", &name],
        &[&format!("daemonize: unknown user '{name}'")],
    );
}

#[test]
fn unknown_group_exits_125() {
    init();
    let name = format!("no-such-group-{}", unique_marker());
    refused(
        daemonize(),
        ["-u", "nobody", "-g", &name],
        &[&format!("daemonize: unknown group '{name}'")],
    );
}

// ---------------------------------------------------------------------------
// Files: as the user or as root
// ---------------------------------------------------------------------------

#[test]
fn log_files_are_created_by_the_daemon_user() {
    init();
    let logs = dir_with_mode(0o777);
    let log = logs.path().join("daemon.log");
    let cmd = daemonize_for_anyone();
    let spec = DaemonSpec::new(cmd.dir()).prelude("id -u");
    let _launched = launch_with(
        cmd,
        spec,
        [
            OsStr::new("-u"),
            "nobody".as_ref(),
            "-o".as_ref(),
            log.as_os_str(),
        ],
    );
    common::wait_for_content(&log, &format!("{NOBODY}\n"));
    let meta = fs::metadata(&log).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (NOBODY, NOGROUP), "log owner");
    assert_eq!(meta.mode() & 0o777, 0o644);
}

#[test]
fn log_file_in_a_directory_only_root_can_write_exits_125() {
    init();
    let root_only = dir_with_mode(0o700);
    let log = root_only.path().join("daemon.log");
    refused(
        daemonize(),
        [
            OsStr::new("-u"),
            "nobody".as_ref(),
            "-o".as_ref(),
            log.as_os_str(),
        ],
        &[
            &format!(
                "daemonize: cannot open log file '{}' as user 'nobody'",
                log.display()
            ),
            "Permission denied",
        ],
    );
    assert!(!log.exists(), "root created the log file");
}

#[test]
fn stderr_log_in_a_directory_only_root_can_write_exits_125() {
    init();
    let logs = dir_with_mode(0o777);
    let root_only = dir_with_mode(0o700);
    let out = logs.path().join("out.log");
    let err = root_only.path().join("err.log");
    refused(
        daemonize(),
        [
            OsStr::new("-u"),
            "nobody".as_ref(),
            "-o".as_ref(),
            out.as_os_str(),
            "-e".as_ref(),
            err.as_os_str(),
        ],
        &[
            &format!("cannot open log file '{}' as user 'nobody'", err.display()),
            "Permission denied",
        ],
    );
    assert!(!err.exists(), "root created the log file");
}

/// What a file looked like, to prove it was not touched.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    content: Vec<u8>,
    mode: u32,
    owner: (u32, u32),
    mtime: (i64, i64),
    ctime: (i64, i64),
}

fn snapshot(path: &Path) -> Snapshot {
    let meta = fs::symlink_metadata(path).unwrap();
    Snapshot {
        content: fs::read(path).unwrap(),
        mode: meta.mode(),
        owner: (meta.uid(), meta.gid()),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        ctime: (meta.ctime(), meta.ctime_nsec()),
    }
}

/// A root-owned 0600 file, dated in the past, in a directory of `dir_mode`.
fn secret_file(dir_mode: u32) -> (TempDir, PathBuf) {
    let dir = dir_with_mode(dir_mode);
    let secret = dir.path().join("secret");
    fs::write(&secret, "root only\n").unwrap();
    set_mode(&secret, 0o600);
    let past = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    fs::File::options()
        .write(true)
        .open(&secret)
        .unwrap()
        .set_modified(past)
        .unwrap();
    (dir, secret)
}

/// A log path in a directory that nobody owns (so nobody could have put
/// anything there), which is nobody's symlink to a root-only file. Opening
/// it as root would append to that file; as nobody it must fail.
#[track_caller]
fn assert_log_symlink_to_root_file_is_refused(secret_dir_mode: u32, stream: &str) {
    let (_secret_dir, secret) = secret_file(secret_dir_mode);
    let users = dir_with_mode(0o755);
    std::os::unix::fs::chown(users.path(), Some(NOBODY), Some(NOGROUP)).unwrap();
    let log = users.path().join("daemon.log");
    std::os::unix::fs::symlink(&secret, &log).unwrap();
    std::os::unix::fs::lchown(&log, Some(NOBODY), Some(NOGROUP)).unwrap();
    let before = snapshot(&secret);

    let mut cmd = daemonize();
    let spec = DaemonSpec::new(cmd.dir()).prelude("echo written-through-the-link");
    let output = cmd
        .args(["-u", "nobody", stream])
        .arg(&log)
        .arg("--")
        .args(spec.argv())
        .run();
    output.assert_failed(
        125,
        &[
            &format!("cannot open log file '{}' as user 'nobody'", log.display()),
            "Permission denied",
        ],
    );
    assert!(
        !output.stderr.contains("root only"),
        "the message shows the root-only file: {output:?}"
    );
    assert_no_leftover(&spec.marker);
    assert!(!spec.pidfile.exists(), "the daemon command ran");
    assert_eq!(snapshot(&secret), before, "the root-only file changed");
    assert!(fs::symlink_metadata(&log).unwrap().is_symlink());
}

#[test]
fn stdout_log_symlinked_to_a_file_in_a_root_only_directory_is_not_written() {
    init();
    assert_log_symlink_to_root_file_is_refused(0o700, "-o");
}

#[test]
fn stdout_log_symlinked_to_a_root_only_file_is_not_written() {
    init();
    assert_log_symlink_to_root_file_is_refused(0o755, "-o");
}

#[test]
fn stderr_log_symlinked_to_a_root_only_file_is_not_written() {
    init();
    assert_log_symlink_to_root_file_is_refused(0o755, "-e");
}

#[test]
fn working_directory_is_reached_as_the_user() {
    init();
    let root_only = dir_with_mode(0o700);
    refused(
        daemonize(),
        [
            OsStr::new("-u"),
            "nobody".as_ref(),
            "-c".as_ref(),
            root_only.path().as_os_str(),
        ],
        &[
            &format!(
                "cannot change directory to '{}' as user 'nobody'",
                root_only.path().display()
            ),
            "Permission denied",
        ],
    );
}

#[test]
fn pidfile_in_a_root_only_directory_is_written_by_root_for_a_user_daemon() {
    init();
    let run_dir = dir_with_mode(0o755);
    let pidfile = run_dir.path().join("daemon.pid");
    let launched = launch([
        OsStr::new("-u"),
        "nobody".as_ref(),
        "-p".as_ref(),
        pidfile.as_os_str(),
    ]);
    let pid = launched.daemon.pid();
    assert_eq!(launched.daemon.status().uids(), [NOBODY; 4]);
    assert_eq!(fs::read_to_string(&pidfile).unwrap(), format!("{pid}\n"));
    let meta = fs::metadata(&pidfile).unwrap();
    assert_eq!(meta.uid(), 0, "pidfile owner");

    let status = daemonize()
        .arg("--pidfile")
        .arg(&pidfile)
        .arg("--status")
        .run();
    status.assert_code(0);
    assert_eq!(
        status.stdout,
        format!("running (pid {pid})\n"),
        "{status:?}"
    );

    daemonize()
        .arg("--pidfile")
        .arg(&pidfile)
        .arg("--stop")
        .run()
        .assert_started();
    assert!(
        !launched.daemon.is_alive(),
        "--stop returned, the daemon runs"
    );
    assert!(!pidfile.exists(), "--stop left the pidfile");
    daemonize()
        .arg("--pidfile")
        .arg(&pidfile)
        .arg("--status")
        .run()
        .assert_code(3);
}

// ---------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------

#[test]
fn home_user_logname_shell_are_the_users() {
    init();
    let entry = passwd("nobody");
    assert_eq!((entry.uid, entry.gid), (NOBODY, NOGROUP));
    let mut cmd = daemonize_for_anyone();
    cmd.env("HOME", "/root")
        .env("USER", "root")
        .env("LOGNAME", "root")
        .env("SHELL", "/bin/bash");
    let spec = hold_for_anyone(DaemonSpec::new(cmd.dir()));
    let launched = launch_with(cmd, spec, ["-u", "nobody"]);
    let daemon = &launched.daemon;
    assert_eq!(env_values(daemon, "HOME"), [entry.dir.as_str()]);
    assert_eq!(env_values(daemon, "USER"), [entry.name.as_str()]);
    assert_eq!(env_values(daemon, "LOGNAME"), [entry.name.as_str()]);
    assert_eq!(env_values(daemon, "SHELL"), [entry.shell.as_str()]);
}

#[test]
fn env_option_wins_over_the_users_home() {
    init();
    let entry = passwd("nobody");
    let launched = launch(["-u", "nobody", "-E", "HOME=/custom", "-E", "SHELL=/bin/sh"]);
    let daemon = &launched.daemon;
    assert_eq!(env_values(daemon, "HOME"), ["/custom"]);
    assert_eq!(env_values(daemon, "SHELL"), ["/bin/sh"]);
    assert_eq!(env_values(daemon, "USER"), [entry.name.as_str()]);
    assert_eq!(env_values(daemon, "LOGNAME"), [entry.name.as_str()]);
}

// ---------------------------------------------------------------------------
// Who may change the user
// ---------------------------------------------------------------------------

#[test]
fn non_root_caller_cannot_become_root() {
    init();
    let mut cmd = daemonize_for_anyone();
    as_nobody(&mut cmd);
    refused(
        cmd,
        ["-u", "root"],
        &[
            "cannot run as user 'root'",
            "only root can change the user or group",
        ],
    );
}

#[test]
fn non_root_caller_cannot_change_its_group() {
    init();
    for options in [
        ["-u", "nobody", "-g", "daemon"],
        ["-u", "0", "-g", "nogroup"],
    ] {
        let mut cmd = daemonize_for_anyone();
        as_nobody(&mut cmd);
        refused(cmd, options, &["only root can change the user or group"]);
    }
    let mut cmd = daemonize_for_anyone();
    as_nobody(&mut cmd);
    refused(
        cmd,
        ["-g", "root"],
        &["only root can change the user or group"],
    );
}

#[test]
fn non_root_caller_may_name_itself() {
    init();
    let mut cmd = daemonize_for_anyone();
    as_nobody(&mut cmd);
    let spec = hold_for_anyone(DaemonSpec::new(cmd.dir()));
    let launched = launch_with(cmd, spec, ["-u", "nobody"]);
    // Unchanged: the caller's own ids, and its own groups (none).
    assert_ids(&launched.daemon.status(), NOBODY, NOGROUP, &[]);
    assert_eq!(env_values(&launched.daemon, "USER"), ["nobody"]);
}

// ---------------------------------------------------------------------------
// Set-user-ID and set-group-ID
// ---------------------------------------------------------------------------

/// The first `name` in `PATH`.
fn find_in_path(name: &str) -> PathBuf {
    std::env::split_paths(&common::inherited_path())
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{name} not found in PATH"))
}

/// A 0755 temporary directory on a filesystem mounted without `nosuid`: in
/// the system's temporary directory, else under the target directory.
fn setid_capable_dir() -> TempDir {
    let bases = [
        std::env::temp_dir(),
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
    ];
    for base in &bases {
        let dir = tempfile::tempdir_in(base).expect("cannot create a temporary directory");
        let flags = nix::sys::statvfs::statvfs(dir.path())
            .expect("statvfs")
            .flags();
        if !flags.contains(nix::sys::statvfs::FsFlags::ST_NOSUID) {
            set_mode(dir.path(), 0o755);
            return dir;
        }
    }
    panic!("every candidate directory is on a nosuid filesystem: {bases:?}");
}

/// Copies `source` into `dir` as `name`, owned by root, with `mode`.
///
/// `cp` writes the copy, not this process: a descriptor open for writing
/// here would be inherited by any child that another test thread forks
/// meanwhile, and executing the copy while such a child has not exec'd yet
/// fails with ETXTBSY ("Text file busy").
fn install(source: &Path, dir: &Path, name: &str, mode: u32) -> PathBuf {
    let dest = dir.join(name);
    Cmd::new("cp").arg(source).arg(&dest).run().assert_code(0);
    std::os::unix::fs::chown(&dest, Some(0), Some(0)).unwrap();
    set_mode(&dest, mode); // After chown, which clears the set-id bits.
    assert_eq!(fs::metadata(&dest).unwrap().mode() & 0o7777, mode);
    dest
}

/// Runs `program ARGS` as nobody.
fn run_as_nobody(program: &Path, args: &[&str]) -> Output {
    let mut cmd = Cmd::new(program);
    set_mode(cmd.dir(), 0o777);
    as_nobody(&mut cmd).args(args).run()
}

#[track_caller]
fn assert_refuses_to_run_set_id(mode: u32, id_option: &str) {
    let dir = setid_capable_dir();
    // Control: the bit takes effect in this directory for this caller (not
    // a nosuid mount, no no_new_privs): a set-id `id` sees effective id 0.
    let id = install(&find_in_path("id"), dir.path(), "id", mode);
    let control = run_as_nobody(&id, &[id_option]);
    control.assert_code(0);
    assert_eq!(
        control.stdout, "0\n",
        "the set-id bit had no effect: {control:?}"
    );

    let copy = install(Path::new(common::bin()), dir.path(), "daemonize", mode);
    let mut cmd = Cmd::new(&copy);
    set_mode(cmd.dir(), 0o777);
    as_nobody(&mut cmd);
    refused(cmd, ["-u", "root"], &["refusing to run setuid or setgid"]);

    let mut cmd = Cmd::new(&copy);
    set_mode(cmd.dir(), 0o777);
    as_nobody(&mut cmd);
    refused(
        cmd,
        Vec::<&str>::new(),
        &["refusing to run setuid or setgid"],
    );

    let pidfile = dir.path().join("some.pid");
    let status = run_as_nobody(&copy, &["--pidfile", pidfile.to_str().unwrap(), "--status"]);
    status.assert_failed(125, &["refusing to run setuid or setgid"]);
}

#[test]
fn setuid_binary_refuses_to_run() {
    init();
    assert_refuses_to_run_set_id(0o4755, "-u");
}

#[test]
fn setgid_binary_refuses_to_run() {
    init();
    assert_refuses_to_run_set_id(0o2755, "-g");
}

// ---------------------------------------------------------------------------
// The static build (issue 6)
// ---------------------------------------------------------------------------

/// Whether an ELF executable asks for a dynamic loader (has PT_INTERP).
fn has_program_interpreter(path: &str) -> bool {
    let elf = fs::read(path).expect("read the binary");
    assert_eq!(&elf[..4], b"\x7fELF", "{path} is not an ELF file");
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == 3 // PT_INTERP
    })
}

/// The binary under test is the statically linked build that README and
/// the benchmark describe, and it still resolves a local user and group by
/// name (static glibc reads /etc/passwd and /etc/group itself).
#[test]
fn the_static_build_resolves_local_users_and_groups_by_name() {
    init();
    assert!(
        !has_program_interpreter(bin()),
        "{} is dynamically linked; .cargo/config.toml should make it static",
        bin()
    );
    let launched = launch(["-u", "nobody", "-g", "nogroup"]);
    let status = launched.daemon.status();
    assert_ids(
        &status,
        NOBODY,
        NOGROUP,
        &expected_groups("nobody", NOGROUP),
    );
}
