//! Log capture (SPEC.md "Log capture", issue 11): rotation that keeps every
//! line once, in order, and never splits one; nothing lost across restarts;
//! reopening with logrotate; timestamps; syslog, through a real rsyslogd and
//! on the wire; backpressure from a full filesystem and from a syslog that
//! stops reading; and SIGHUP, which stays COMMAND's.
//!
//! Every instance has a supervisor (`-P`) with COMMAND as its child, and the
//! test checks that through `/proc` (COMMAND's parent, its stdout and stderr
//! on pipes, the files the supervisor holds), not only through the output.
//! The test process is a subreaper (`common::init`), so the supervisor is
//! reparented to it; each [`Captured`] guard kills the supervisor and what is
//! left of the instance by PID when the test ends, also on a panic.
//!
//! COMMAND waits for the test's `go` file before it writes, so the pidfiles
//! are read while the instance runs. Without `--restart` the supervisor exits
//! once COMMAND has ended and its output is written: once it is dead (or a
//! zombie), the files are complete.
//!
//! The supervisor's own lines (` daemonize[PID]: `) are left out wherever
//! COMMAND's lines are counted.
//!
//! Needs root for the tmpfs, and logrotate and rsyslog (`.ci/run` installs
//! them). A test whose tool is not installed, or that needs root when not
//! run as root, says `skipped:` on stderr and passes.

mod common;

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Cmd, Output, TIMEOUT, daemonize, procfs, read_pid, test_pid, wait_for, wait_until};
use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use tempfile::TempDir;

const PYTHON: &str = "/usr/bin/python3";
const LOGROTATE: &str = "/usr/sbin/logrotate";
const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

/// What marks a line the supervisor wrote itself.
const SUPERVISOR_LINE: &str = " daemonize[";

// ---------------------------------------------------------------------------
// A capturing instance
// ---------------------------------------------------------------------------

/// An instance started by `daemonize OPTIONS -p app.pid -P sup.pid -- ARGV`
/// in the directory of its [`Cmd`]. On drop it kills the supervisor by PID
/// (it is this process's child, unreaped, so the PID is its own), then what
/// is left in its session and the strays the test registered.
struct Captured {
    cmd: Cmd,
    dir: PathBuf,
    pidfile: PathBuf,
    sup_pidfile: PathBuf,
    supervisor: i32,
    session: i32,
    /// Processes that left the instance's session (`setsid`), so the
    /// session sweep would not find them.
    strays: Vec<i32>,
}

impl Captured {
    /// Runs daemonize, asserts a silent start, and takes the supervisor
    /// over (asserting that it is detached and reparented to us).
    #[track_caller]
    fn start<S: AsRef<OsStr>>(
        mut cmd: Cmd,
        options: impl IntoIterator<Item = S>,
        argv: &[OsString],
    ) -> Captured {
        common::init();
        let dir = cmd.dir().to_owned();
        let pidfile = dir.join("app.pid");
        let sup_pidfile = dir.join("sup.pid");
        let output = cmd
            .args(options)
            .arg("-p")
            .arg(&pidfile)
            .arg("-P")
            .arg(&sup_pidfile)
            .arg("--")
            .args(argv)
            .run();
        let Some(supervisor) = read_pid(&sup_pidfile) else {
            output.assert_started();
            panic!("no supervisor PID in {}: {output:?}", sup_pidfile.display());
        };
        let stat = procfs::stat(supervisor).unwrap_or_else(|e| {
            panic!("the supervisor {supervisor} does not run ({e}): {output:?}")
        });
        assert_eq!(
            stat.ppid,
            test_pid(),
            "the supervisor {supervisor} is not detached to this subreaper: {output:?}"
        );
        let sup = Captured {
            cmd,
            dir,
            pidfile,
            sup_pidfile,
            supervisor,
            session: stat.session,
            strays: Vec::new(),
        };
        output.assert_started();
        sup
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Lets COMMAND go on (see [`await_go`]).
    fn go(&self) {
        fs::write(self.path("go"), "").expect("write the go file");
    }

    /// COMMAND, once the `-p` file names a running child of the supervisor.
    #[track_caller]
    fn child(&self) -> i32 {
        wait_for(
            TIMEOUT,
            "-p to name a running child of the supervisor",
            || {
                let pid = read_pid(&self.pidfile)?;
                procfs::stat(pid)
                    .is_ok_and(|s| s.ppid == self.supervisor && s.state != 'Z')
                    .then_some(pid)
            },
        )
    }

    /// Waits (at most `timeout`) until the supervisor is dead or a zombie:
    /// without `--restart`, COMMAND has ended and its output is written.
    #[track_caller]
    fn wait_finished(&self, timeout: Duration) {
        wait_until(timeout, "the supervisor to exit", || {
            !procfs::is_alive(self.supervisor)
        });
    }

    /// `daemonize ARGS -p app.pid`.
    fn control(&self, args: &[&str]) -> Output {
        daemonize().args(args).arg("-p").arg(&self.pidfile).run()
    }

    /// `daemonize ARGS -P sup.pid`.
    fn control_sup(&self, args: &[&str]) -> Output {
        daemonize()
            .args(args)
            .arg("-P")
            .arg(&self.sup_pidfile)
            .run()
    }

    /// Kill `pid` on drop as well: it left the session.
    fn adopt_stray(&mut self, pid: i32) {
        self.strays.push(pid);
    }
}

/// Kills and reaps every child of this process in `session`.
fn sweep_session(session: i32) {
    for _ in 0..100 {
        let ours: Vec<i32> = procfs::pids()
            .into_iter()
            .filter(|&pid| {
                procfs::stat(pid).is_ok_and(|s| s.ppid == test_pid() && s.session == session)
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

impl Drop for Captured {
    fn drop(&mut self) {
        let _ = &self.cmd;
        let supervisor = Pid::from_raw(self.supervisor);
        let _ = kill(supervisor, Signal::SIGKILL);
        while let Err(Errno::EINTR) = waitpid(supervisor, None) {}
        sweep_session(self.session);
        // A stray is ours once reparented to us, and leads a session of its
        // own (setsid made its session ID its PID), which no other test's
        // process with a reused PID does.
        for &pid in &self.strays {
            if procfs::stat(pid).is_ok_and(|s| s.ppid == test_pid() && s.session == pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                while let Err(Errno::EINTR) = waitpid(Pid::from_raw(pid), None) {}
                sweep_session(pid);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn os(s: impl AsRef<OsStr>) -> OsString {
    s.as_ref().to_owned()
}

/// Shell code that waits until the test calls [`Captured::go`].
fn await_go(dir: &Path) -> String {
    format!(
        "while [ ! -e '{}/go' ]; do sleep 0.01; done\n",
        dir.display()
    )
}

/// An executable `#!/bin/sh` script `dir/name`.
fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}")).expect("write a script");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod a script");
    path
}

/// A file's text (lossy), or "" when it does not exist.
fn read_text(path: &Path) -> String {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// COMMAND's lines: every line but the supervisor's own.
fn command_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|line| !line.contains(SUPERVISOR_LINE))
        .collect()
}

/// What `/proc/PID/fd/FD` points at.
fn fd_target(pid: i32, fd: i32) -> String {
    fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .unwrap_or_else(|e| panic!("readlink /proc/{pid}/fd/{fd}: {e}"))
        .to_string_lossy()
        .into_owned()
}

/// The live children of `pid`.
fn children_of(pid: i32) -> Vec<i32> {
    procfs::pids()
        .into_iter()
        .filter(|&p| procfs::stat(p).is_ok_and(|s| s.ppid == pid && s.state != 'Z'))
        .collect()
}

/// What the kernel says about a captured COMMAND: it is the supervisor's
/// only child (capture adds no process of its own), the supervisor is a
/// `daemonize` holding each of `logs` open, and COMMAND's stdin is
/// `/dev/null` and its stdout and stderr are pipes (the supervisor reads
/// them; COMMAND never sees a file).
#[track_caller]
fn assert_captured(sup: &Captured, child: i32, logs: &[&Path]) {
    let stat = procfs::stat(child).expect("COMMAND runs");
    assert_eq!(
        stat.ppid, sup.supervisor,
        "the supervisor is COMMAND's parent"
    );
    assert_eq!(
        stat.session, sup.session,
        "COMMAND is in the supervisor's session"
    );
    assert_eq!(
        children_of(sup.supervisor),
        vec![child],
        "the supervisor has COMMAND as its only child"
    );
    let exe = fs::read_link(format!("/proc/{}/exe", sup.supervisor)).expect("readlink exe");
    assert_eq!(
        exe,
        fs::canonicalize(common::bin()).unwrap(),
        "the supervisor is daemonize"
    );
    assert_eq!(fd_target(child, 0), "/dev/null");
    for fd in [1, 2] {
        let target = fd_target(child, fd);
        assert!(
            target.starts_with("pipe:["),
            "COMMAND's fd {fd} is {target}, not a pipe"
        );
    }
    let held = procfs::fds(sup.supervisor).expect("list the supervisor's fds");
    for log in logs {
        assert!(
            held.values().any(|p| p == log),
            "the supervisor does not hold {} open: {held:?}",
            log.display()
        );
    }
}

/// The pipes of COMMAND's stdout and stderr are two: the supervisor must
/// tell them apart (syslog severity).
#[track_caller]
fn assert_two_pipes(child: i32) {
    assert_ne!(
        fd_target(child, 1),
        fd_target(child, 2),
        "stdout and stderr share one pipe"
    );
}

/// utime + stime of `pid`, in clock ticks (proc_pid_stat(5) fields 14, 15).
fn cpu_ticks(pid: i32) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let after_comm = &text[text.rfind(')').expect("comm") + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // fields[0] is field 3 (state).
    let utime: u64 = fields[14 - 3].parse().expect("utime");
    let stime: u64 = fields[15 - 3].parse().expect("stime");
    utime + stime
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// Read and write system calls of `pid` so far (`/proc/PID/io`), if the
/// kernel counts them.
fn syscalls(pid: i32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))?
            .trim()
            .parse()
            .ok()
    };
    Some(field("syscr:")? + field("syscw:")?)
}

/// `pid` sleeps in a write to a full pipe.
fn blocked_writing_a_pipe(pid: i32) -> bool {
    let Ok(status) = procfs::status(pid) else {
        return false;
    };
    if status.state() != 'S' {
        return false;
    }
    let wchan = fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
    if wchan.contains("pipe_write") {
        return true;
    }
    // Without symbols wchan says "0"; then ask which system call it is in
    // (x86-64: 1 is write, on fd 1).
    (wchan.is_empty() || wchan == "0")
        && cfg!(target_arch = "x86_64")
        && fs::read_to_string(format!("/proc/{pid}/syscall")).is_ok_and(|s| s.starts_with("1 0x1 "))
}

fn now_micros() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970");
    i64::try_from(since.as_micros()).expect("fits")
}

// ---------------------------------------------------------------------------
// Rotation
// ---------------------------------------------------------------------------

/// The longest line the supervisor writes: longer ones are cut.
const CUT: usize = 65536;
const MIB: usize = 1 << 20;
/// Lines the integrity writer produces.
const LINES: u64 = 1_000_000;

/// Content length (without the newline) of line `i` of the integrity
/// writer: mostly 10..200 bytes, every 1009th up to 30 KiB, and every
/// 997th a long one: exactly 64 KiB, one byte under and over, 70 KiB, or
/// 32..62 KiB. About 180 MB in all. [`WRITER_PY`] computes the same.
fn line_length(i: u64) -> usize {
    let r = i * 7919 % 10007;
    let n = if i.is_multiple_of(997) {
        [65536, 65535, 65537, 71680, 32768 + r * 3][(i / 997 % 5) as usize]
    } else if i.is_multiple_of(1009) {
        200 + r * 3
    } else {
        10 + r % 190
    };
    usize::try_from(n).expect("fits")
}

/// The integrity writer: line `i` is its number in 7 digits, a space, and
/// the start of [`FILLER`]'s pattern, [`line_length`] bytes in all. It
/// waits for the go file (argv[1]), then writes in batches of 256 lines.
const WRITER_PY: &str = r#"
import os, sys, time
go = sys.argv[1]
while not os.path.exists(go):
    time.sleep(0.01)
FILLER = bytes(97 + j % 26 for j in range(72 * 1024))
def length(i):
    r = i * 7919 % 10007
    if i % 997 == 0:
        return (65536, 65535, 65537, 71680, 32768 + r * 3)[i // 997 % 5]
    if i % 1009 == 0:
        return 200 + r * 3
    return 10 + r % 190
batch = []
def flush():
    view = memoryview(b"".join(batch))
    batch.clear()
    while view:
        view = view[os.write(1, view):]
for i in range(1, 1000001):
    batch.append(b"%07d " % i + FILLER[:length(i) - 8] + b"\n")
    if len(batch) == 256:
        flush()
flush()
"#;

/// The lines the files must hold, in order: each writer line, cut into
/// pieces of at most [`CUT`] bytes.
struct Expected {
    filler: Vec<u8>,
    /// The writer line the next piece belongs to; past [`LINES`] at the end.
    line_no: u64,
    line: Vec<u8>,
    /// Where the next piece starts in `line`.
    offset: usize,
}

impl Expected {
    fn new() -> Expected {
        let mut expected = Expected {
            filler: (0..72 * 1024).map(|j| b'a' + (j % 26) as u8).collect(),
            line_no: 1,
            line: Vec::new(),
            offset: 0,
        };
        expected.build();
        expected
    }

    fn build(&mut self) {
        self.line.clear();
        self.line
            .extend_from_slice(format!("{:07} ", self.line_no).as_bytes());
        let n = line_length(self.line_no);
        self.line.extend_from_slice(&self.filler[..n - 8]);
    }

    /// The next line the files must hold (without its newline).
    fn piece(&self) -> Option<&[u8]> {
        (self.line_no <= LINES)
            .then(|| &self.line[self.offset..(self.offset + CUT).min(self.line.len())])
    }

    fn is_continuation(&self) -> bool {
        self.offset > 0
    }

    fn advance(&mut self) {
        self.offset += CUT;
        if self.offset >= self.line.len() {
            self.line_no += 1;
            self.offset = 0;
            if self.line_no <= LINES {
                self.build();
            }
        }
    }
}

/// `base` and its rotated files `base.1` ... `base.N`, oldest first
/// (`base.N` ... `base.1`, `base`), asserting that the numbers have no gap.
#[track_caller]
fn rotated_files(base: &Path) -> Vec<PathBuf> {
    let dir = base.parent().unwrap();
    let prefix = format!("{}.", base.file_name().unwrap().to_str().unwrap());
    let mut numbers: Vec<u32> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_prefix(&prefix)?.parse().ok()
        })
        .collect();
    numbers.sort_unstable();
    let count = u32::try_from(numbers.len()).unwrap();
    assert_eq!(
        numbers,
        (1..=count).collect::<Vec<_>>(),
        "rotated files of {} with gaps",
        base.display()
    );
    let mut files: Vec<PathBuf> = numbers
        .iter()
        .rev()
        .map(|n| PathBuf::from(format!("{}.{n}", base.display())))
        .collect();
    files.push(base.to_owned());
    files
}

/// One file of the rotation: its size, its lines, and the length of its
/// first line with the newline.
struct FileFacts {
    path: PathBuf,
    size: usize,
    lines: usize,
    first_line: usize,
}

#[test]
fn rotation_keeps_every_line_once_in_order_and_never_splits_one() {
    let cmd = daemonize();
    let dir = cmd.dir().to_owned();
    let writer = dir.join("writer.py");
    fs::write(&writer, WRITER_PY).unwrap();
    let out = dir.join("out.log");
    let err = dir.join("err.log");
    let sup = Captured::start(
        cmd,
        [
            os("--log-max-size"),
            os("1M"),
            os("--log-keep"),
            os("1000"),
            os("-o"),
            os(&out),
            os("-e"),
            os(&err),
        ],
        &[os(PYTHON), os(&writer), os(dir.join("go"))],
    );
    let child = sup.child();
    assert_captured(&sup, child, &[&out, &err]);
    let started = Instant::now();
    sup.go();
    // Generous: reached only when something is wrong.
    sup.wait_finished(Duration::from_secs(150));
    let elapsed = started.elapsed();

    let files = rotated_files(&out);
    let mut expected = Expected::new();
    let (mut pieces, mut continuations, mut supervisor_lines, mut bytes) = (0u64, 0u64, 0u64, 0);
    let mut facts = Vec::new();
    for path in &files {
        let data = fs::read(path).unwrap();
        let name = path.display();
        assert!(
            data.is_empty() || data.ends_with(b"\n"),
            "{name} does not end with a newline: a line is split"
        );
        let (mut pos, mut lines, mut first_line) = (0, 0, 0);
        while pos < data.len() {
            let rest = &data[pos..];
            let len = match expected.piece() {
                Some(piece)
                    if rest.len() > piece.len()
                        && rest[..piece.len()] == *piece
                        && rest[piece.len()] == b'\n' =>
                {
                    let len = piece.len() + 1;
                    pieces += 1;
                    continuations += u64::from(expected.is_continuation());
                    expected.advance();
                    len
                }
                _ => {
                    let end = rest.iter().position(|&b| b == b'\n').unwrap() + 1;
                    let line = String::from_utf8_lossy(&rest[..end]);
                    assert!(
                        line.contains(SUPERVISOR_LINE),
                        "{name} at byte {pos}: expected line {} (piece at {} of {} bytes), found {:?}",
                        expected.line_no,
                        expected.offset,
                        line_length(expected.line_no),
                        line.chars().take(120).collect::<String>()
                    );
                    supervisor_lines += 1;
                    end
                }
            };
            if lines == 0 {
                first_line = len;
            }
            lines += 1;
            pos += len;
        }
        bytes += data.len();
        facts.push(FileFacts {
            path: path.clone(),
            size: data.len(),
            lines,
            first_line,
        });
    }
    assert!(
        expected.line_no > LINES,
        "the files end before line {} of {LINES}",
        expected.line_no
    );
    for (i, file) in facts.iter().enumerate() {
        let name = file.path.display();
        assert!(
            file.size <= MIB || file.lines == 1,
            "{name} holds {} bytes in {} lines, over --log-max-size 1M",
            file.size,
            file.lines
        );
        // Rotated only when the next line would not fit (a rotated file
        // is full up to the line that opens the next one).
        if let Some(next) = facts.get(i + 1) {
            assert!(
                file.size + next.first_line > MIB,
                "{name} was rotated at {} bytes, though the next line ({} bytes) fit",
                file.size,
                next.first_line
            );
        }
    }
    // The supervisor's own lines went to the -e file; COMMAND wrote nothing
    // on stderr.
    let err_text = read_text(&err);
    assert!(
        command_lines(&err_text).is_empty(),
        "COMMAND lines in the -e file: {err_text}"
    );
    let smallest = facts[..facts.len() - 1].iter().map(|f| f.size).min();
    println!(
        "rotation: {LINES} lines written ({} bytes), {pieces} lines in {} files \
         ({} rotated + {}; {continuations} continuation lines of cut lines; \
         {supervisor_lines} supervisor lines), smallest rotated file {smallest:?} bytes, \
         written in {elapsed:?}",
        bytes,
        files.len(),
        files.len() - 1,
        out.display()
    );
}

/// 2000 lines of 8 bytes (`0000001\n` ...) through `options`, whose limit
/// is `size` bytes: each file holds `size / 8` lines exactly, and `keep`
/// rotated files are kept.
fn exact_rotation(options: &[&str], size: usize, keep: usize) {
    let cmd = daemonize();
    let dir = cmd.dir().to_owned();
    let out = dir.join("out.log");
    let err = dir.join("err.log");
    let script = format!("{}seq -f %07g 1 2000\n", await_go(&dir));
    let mut all: Vec<OsString> = options.iter().map(os).collect();
    all.extend([os("-o"), os(&out), os("-e"), os(&err)]);
    let sup = Captured::start(cmd, all, &[os("/bin/sh"), os("-c"), os(script)]);
    let child = sup.child();
    assert_captured(&sup, child, &[&out, &err]);
    sup.go();
    sup.wait_finished(TIMEOUT);

    let per_file = size / 8;
    let current = (2000 - 1) % per_file + 1;
    let files = rotated_files(&out);
    assert_eq!(files.len(), keep + 1, "{files:?}");
    let mut last = 2000;
    for path in files.iter().rev() {
        let n = if *path == out { current } else { per_file };
        let expected: String = (last + 1 - n..=last).map(|i| format!("{i:07}\n")).collect();
        assert_eq!(read_text(path), expected, "{}", path.display());
        last -= n;
    }
}

#[test]
fn rotation_fills_files_to_the_byte_and_keeps_five_by_default() {
    // 1K is 1024 bytes: 128 lines of 8 bytes, so a file reaches the limit
    // exactly and the next line goes to a new one.
    exact_rotation(&["--log-max-size", "1K"], 1024, 5);
}

#[test]
fn rotation_takes_a_size_in_bytes_and_keeps_log_keep_files() {
    exact_rotation(&["--log-max-size", "1000", "--log-keep", "2"], 1000, 2);
}

// ---------------------------------------------------------------------------
// Restarts
// ---------------------------------------------------------------------------

#[test]
fn nothing_is_lost_across_restarts() {
    let cmd = daemonize();
    let dir = cmd.dir().to_owned();
    let log = dir.join("app.log");
    // Run 1 leaves a child that calls setsid (so the end of the run does
    // not take it along) and writes once run 2 has started; then it writes
    // one line and crashes. Run 2 ends without a newline and fails; run 3
    // does the same and succeeds, which ends supervision (on-failure).
    let script = write_script(
        &dir,
        "app",
        &format!(
            r#"dir='{dir}'
echo $$ >> "$dir/starts"
run=$(( $(wc -l < "$dir/starts") ))
await_file() {{ while [ ! -e "$dir/$1" ]; do sleep 0.01; done; }}
case $run in
1)
    setsid sh -c '
        echo $$ > "$1/leftover.pid"
        n=0
        while [ ! -e "$1/run2.started" ] && [ $n -lt 3000 ]; do sleep 0.02; n=$((n + 1)); done
        i=1
        while [ $i -le 100 ]; do echo "leftover line $i"; i=$((i + 1)); done
        : > "$1/leftover.done"
    ' leftover "$dir" &
    await_file go
    echo "run 1: the last line before the crash"
    kill -SEGV $$
    ;;
2)
    : > "$dir/run2.started"
    await_file leftover.done
    await_file go2
    printf 'run 2: no newline'
    exit 3
    ;;
*)
    printf 'run 3: no newline either'
    exit 0
    ;;
esac
"#,
            dir = dir.display()
        ),
    );
    let mut sup = Captured::start(
        cmd,
        [
            os("--restart=on-failure"),
            os("--restart-delay"),
            os("0"),
            os("-o"),
            os(&log),
        ],
        &[os(&script)],
    );
    let starts = |n: usize| -> i32 {
        wait_for(TIMEOUT, &format!("run {n} to start"), || {
            let text = fs::read_to_string(dir.join("starts")).ok()?;
            text.lines().nth(n - 1)?.trim().parse().ok()
        })
    };
    let first = starts(1);
    let leftover = wait_for(TIMEOUT, "the leftover's PID", || {
        read_pid(&dir.join("leftover.pid"))
    });
    sup.adopt_stray(leftover);
    wait_until(
        TIMEOUT,
        "the first run to be the supervisor's only child",
        || children_of(sup.supervisor) == vec![first],
    );
    assert_captured(&sup, first, &[&log]);
    let pipe = fd_target(first, 1);
    assert_eq!(
        fd_target(leftover, 1),
        pipe,
        "the leftover writes to the same pipe"
    );
    assert_eq!(
        procfs::stat(leftover).unwrap().session,
        leftover,
        "the leftover left the session"
    );
    sup.go();
    let second = starts(2);
    assert_ne!(second, first);
    assert_eq!(procfs::stat(second).unwrap().ppid, sup.supervisor);
    // The pipes outlive a run: the second run writes to the first one's.
    assert_eq!(fd_target(second, 1), pipe, "a new pipe for the second run");
    wait_until(TIMEOUT, "the leftover to write its lines", || {
        dir.join("leftover.done").exists()
    });
    fs::write(dir.join("go2"), "").unwrap();
    sup.wait_finished(TIMEOUT);

    let text = read_text(&log);
    assert!(
        text.ends_with('\n'),
        "the log ends without a newline: {text:?}"
    );
    let mut expected = vec!["run 1: the last line before the crash".to_owned()];
    expected.extend((1..=100).map(|i| format!("leftover line {i}")));
    expected.push("run 2: no newline".to_owned());
    expected.push("run 3: no newline either".to_owned());
    assert_eq!(command_lines(&text), expected, "the log:\n{text}");
    assert!(text.contains("SIGSEGV"), "the crash is not logged:\n{text}");
    assert!(
        text.contains("exited with status 3"),
        "run 2's end is not logged:\n{text}"
    );
}

// ---------------------------------------------------------------------------
// Reopening
// ---------------------------------------------------------------------------

/// Writes `line N` every 2 ms until the file argv[1] exists, then `done N`,
/// and waits for ever.
const TICKER_PY: &str = r#"
import os, sys, time
stop = sys.argv[1]
i = 0
while not os.path.exists(stop):
    i += 1
    os.write(1, b"line %d\n" % i)
    time.sleep(0.002)
os.write(1, b"done %d\n" % i)
while True:
    time.sleep(3600)
"#;

/// The numbers of the `line N` lines in `text`, and N of `done N` if there.
#[track_caller]
fn ticker_lines(text: &str) -> (Vec<u64>, Option<u64>) {
    let (mut numbers, mut done) = (Vec::new(), None);
    for line in command_lines(text) {
        if let Some(n) = line.strip_prefix("line ") {
            numbers.push(n.parse().unwrap_or_else(|_| panic!("bad line {line:?}")));
        } else if let Some(n) = line.strip_prefix("done ") {
            done = Some(n.parse().unwrap_or_else(|_| panic!("bad line {line:?}")));
        } else {
            panic!("unexpected line {line:?}");
        }
    }
    (numbers, done)
}

#[test]
fn logrotate_with_create_and_reopen_logs_loses_no_line() {
    if !Path::new(LOGROTATE).exists() {
        eprintln!("skipped: logrotate is not installed");
        return;
    }
    let cmd = daemonize();
    let dir = cmd.dir().to_owned();
    let ticker = dir.join("ticker.py");
    fs::write(&ticker, TICKER_PY).unwrap();
    let log = dir.join("app.log");
    let old = dir.join("app.log.1");
    let stop = dir.join("stop");
    let sup = Captured::start(
        cmd,
        [os("-r"), os("-o"), os(&log)],
        &[os(PYTHON), os(&ticker), os(&stop)],
    );
    let child = sup.child();
    assert_captured(&sup, child, &[&log]);
    wait_until(TIMEOUT, "20 lines in the log", || {
        ticker_lines(&read_text(&log)).0.len() >= 20
    });

    let conf = dir.join("logrotate.conf");
    fs::write(
        &conf,
        format!(
            r#""{log}" {{
    create
    rotate 5
    postrotate
        "{bin}" -p "{pidfile}" --reopen-logs
        rc=$?
        echo $rc > "{dir}/reopen.rc"
        exit $rc
    endscript
}}
"#,
            log = log.display(),
            bin = common::bin(),
            pidfile = sup.pidfile.display(),
            dir = dir.display()
        ),
    )
    .unwrap();
    let output = Cmd::new(LOGROTATE)
        .arg("-f")
        .arg("-s")
        .arg(dir.join("logrotate.state"))
        .arg(&conf)
        .run();
    output.assert_code(0);
    assert_eq!(
        read_text(&dir.join("reopen.rc")),
        "0\n",
        "--reopen-logs in postrotate failed: {output:?}"
    );
    // --reopen-logs has returned: the supervisor writes to the new file
    // only, so nothing more goes to the old one.
    assert!(old.exists(), "logrotate did not move the log aside");
    let old_size = fs::metadata(&old).unwrap().len();
    let held = procfs::fds(sup.supervisor).unwrap();
    assert!(held.values().any(|p| *p == log), "{held:?}");
    assert!(
        !held.values().any(|p| *p == old),
        "the supervisor still holds the old file: {held:?}"
    );
    wait_until(TIMEOUT, "20 lines in the new log", || {
        ticker_lines(&read_text(&log)).0.len() >= 20
    });
    fs::write(&stop, "").unwrap();
    let done = wait_for(TIMEOUT, "the ticker's last line", || {
        ticker_lines(&read_text(&log)).1
    });
    assert_eq!(
        fs::metadata(&old).unwrap().len(),
        old_size,
        "lines went to the old file after --reopen-logs returned"
    );
    let (before, none) = ticker_lines(&read_text(&old));
    assert_eq!(none, None);
    let (after, _) = ticker_lines(&read_text(&log));
    assert!(!before.is_empty() && !after.is_empty());
    let all: Vec<u64> = before.iter().chain(&after).copied().collect();
    assert_eq!(
        all,
        (1..=done).collect::<Vec<_>>(),
        "lines lost or repeated around the rotation ({} in the old file, {} in the new)",
        before.len(),
        after.len()
    );
    assert_eq!(
        procfs::stat(child).unwrap().ppid,
        sup.supervisor,
        "no restart"
    );
}

/// SIGHUP, from `--reload` and sent to the supervisor, reaches COMMAND's
/// trap and leaves the log files alone; `--reopen-logs` then reopens them.
fn sighup_reaches_the_daemon_and_does_not_reopen_logs(options: &[&str]) {
    let cmd = daemonize();
    let dir = cmd.dir().to_owned();
    let log = dir.join("app.log");
    let moved = dir.join("app.log.moved");
    let script = write_script(
        &dir,
        "app",
        &format!(
            r#"dir='{dir}'
n=0
trap 'n=$((n + 1)); echo "got HUP $n"' HUP
echo started
k=1
while :; do
    if [ -e "$dir/more.$k" ]; then echo "more $k"; k=$((k + 1)); fi
    sleep 0.02
done
"#,
            dir = dir.display()
        ),
    );
    let mut all: Vec<OsString> = options.iter().map(os).collect();
    all.extend([os("-o"), os(&log)]);
    let sup = Captured::start(cmd, all, &[os(&script)]);
    let child = sup.child();
    assert_captured(&sup, child, &[&log]);
    let wait_line = |path: &Path, line: &str| {
        wait_until(TIMEOUT, &format!("{line:?} in {}", path.display()), || {
            command_lines(&read_text(path)).contains(&line)
        });
    };
    let more = |k: u32| fs::write(dir.join(format!("more.{k}")), "").unwrap();
    wait_line(&log, "started");
    fs::rename(&log, &moved).unwrap();

    sup.control(&["--reload"]).assert_code(0);
    wait_line(&moved, "got HUP 1");
    more(1);
    wait_line(&moved, "more 1");
    assert!(!log.exists(), "SIGHUP (--reload) reopened the log");

    kill(Pid::from_raw(sup.supervisor), Signal::SIGHUP).unwrap();
    wait_line(&moved, "got HUP 2");
    more(2);
    wait_line(&moved, "more 2");
    assert!(!log.exists(), "SIGHUP to the supervisor reopened the log");
    let held = procfs::fds(sup.supervisor).unwrap();
    assert!(held.values().any(|p| *p == moved), "{held:?}");
    // Still the same COMMAND: SIGHUP ended nothing.
    assert!(procfs::is_alive(child));
    assert_eq!(read_pid(&sup.pidfile), Some(child));

    // What does reopen them.
    sup.control_sup(&["--reopen-logs"]).assert_code(0);
    assert!(log.exists(), "--reopen-logs did not create the log again");
    more(3);
    wait_line(&log, "more 3");
    assert!(!command_lines(&read_text(&moved)).contains(&"more 3"));
    assert_eq!(
        command_lines(&read_text(&moved)),
        ["started", "got HUP 1", "more 1", "got HUP 2", "more 2"]
    );
}

#[test]
fn sighup_reaches_the_daemon_and_does_not_reopen_logs_without_restart() {
    sighup_reaches_the_daemon_and_does_not_reopen_logs(&["--log-max-size", "1G"]);
}

#[test]
fn sighup_reaches_the_daemon_and_does_not_reopen_logs_under_restart() {
    sighup_reaches_the_daemon_and_does_not_reopen_logs(&["-r"]);
}

#[test]
fn reopen_logs_exit_codes_and_usage_errors() {
    common::init();
    // A plain start writes its file directly: no supervisor, nothing to
    // reopen.
    let mut plain = daemonize();
    let dir = plain.dir().to_owned();
    let pidfile = dir.join("plain.pid");
    let log = dir.join("plain.log");
    let marker = common::unique_marker();
    plain
        .arg("-p")
        .arg(&pidfile)
        .arg("-o")
        .arg(&log)
        .args(["--", "sleep", &marker])
        .run()
        .assert_started();
    let daemon = common::Daemon::new(read_pid(&pidfile).unwrap());
    assert_eq!(
        daemon.stat().ppid,
        test_pid(),
        "a plain start has no supervisor"
    );
    assert_eq!(
        daemon.fds()[&1],
        log,
        "a plain start writes its file directly"
    );
    daemonize()
        .args(["--reopen-logs", "-p"])
        .arg(&pidfile)
        .run()
        .assert_failed(125, &[]);
    assert!(daemon.is_alive());

    // Nothing runs.
    daemonize()
        .args(["--reopen-logs", "-p"])
        .arg(dir.join("none.pid"))
        .run()
        .assert_failed(7, &["not running"]);

    // A capturing instance that has ended.
    let cmd = daemonize();
    let cdir = cmd.dir().to_owned();
    let sup = Captured::start(
        cmd,
        [
            os("--log-max-size"),
            os("1M"),
            os("-o"),
            os(cdir.join("app.log")),
        ],
        &[os("/bin/sh"), os("-c"), os(await_go(&cdir))],
    );
    sup.control(&["--reopen-logs"]).assert_code(0);
    sup.go();
    sup.wait_finished(TIMEOUT);
    sup.control(&["--reopen-logs"])
        .assert_failed(7, &["not running"]);
    sup.control_sup(&["--reopen-logs"])
        .assert_failed(7, &["not running"]);

    // Usage errors start nothing.
    for (options, words) in [
        (vec!["--log-max-size", "abc"], vec!["--log-max-size"]),
        (vec!["--log-max-size", "10X"], vec!["--log-max-size"]),
        (vec!["--log-keep", "abc", "-o", "x.log"], vec!["--log-keep"]),
        (vec!["--syslog=bogus"], vec!["bogus"]),
    ] {
        let marker = common::unique_marker();
        daemonize()
            .args(&options)
            .args(["--", "sleep", &marker])
            .run()
            .assert_failed(125, &words);
        common::assert_no_leftover(&marker);
    }
}

// ---------------------------------------------------------------------------
// Timestamps
// ---------------------------------------------------------------------------

/// Days from 1970-01-01 to the civil date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Parses the `2026-11-22T02:14:30.123456Z ` prefix of `line` (RFC 3339
/// UTC, exactly six fractional digits, `Z`, one space), by hand. Returns
/// the time in microseconds since the epoch and the rest of the line.
fn parse_timestamp(line: &str) -> Result<(i64, &str), String> {
    let b = line.as_bytes();
    let bad = |why: &str| format!("bad timestamp ({why}) in {line:?}");
    if b.len() < 28 {
        return Err(bad("too short"));
    }
    for (at, want) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (26, b'Z'),
        (27, b' '),
    ] {
        if b[at] != want {
            return Err(bad(&format!("byte {at} is not {:?}", want as char)));
        }
    }
    let number = |from: usize, to: usize| -> Result<i64, String> {
        b[from..to].iter().try_fold(0, |n, &c| match c {
            b'0'..=b'9' => Ok(n * 10 + i64::from(c - b'0')),
            _ => Err(bad(&format!("bytes {from}..{to} are not digits"))),
        })
    };
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
    let micros = number(20, 26)?;
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad("field out of range"));
    }
    let seconds = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second;
    Ok((seconds * 1_000_000 + micros, &line[28..]))
}

#[test]
fn timestamps_are_rfc3339_utc_microseconds_and_never_go_back() {
    let mut cmd = daemonize();
    // A zone far from UTC (a POSIX TZ, no zoneinfo needed), so local time
    // in place of UTC shows.
    cmd.env("TZ", "XXX-05:45");
    let dir = cmd.dir().to_owned();
    let log = dir.join("app.log");
    let script = format!(
        "{}i=1\n\
         while [ $i -le 500 ]; do echo \"out $i\"; echo \"err $i\" >&2; i=$((i + 1)); done\n\
         printf 'the last line, without a newline'\n",
        await_go(&dir)
    );
    let sup = Captured::start(
        cmd,
        [os("--log-timestamps"), os("-o"), os(&log)],
        &[os("/bin/sh"), os("-c"), os(script)],
    );
    let child = sup.child();
    assert_captured(&sup, child, &[&log]);
    let before = now_micros();
    sup.go();
    sup.wait_finished(TIMEOUT);
    let after = now_micros();

    let text = read_text(&log);
    assert!(text.ends_with('\n'), "no newline at the end: {text:?}");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut last = i64::MIN;
    for line in text.lines() {
        let (time, rest) = parse_timestamp(line).unwrap_or_else(|e| panic!("{e}"));
        if line.contains(SUPERVISOR_LINE) {
            continue;
        }
        // UTC: the line arrived between go and the end, give or take a
        // second (a zone would be hours off).
        assert!(
            (before - 1_000_000..=after + 1_000_000).contains(&time),
            "{line:?} is not between {before} and {after} µs since the epoch (UTC)"
        );
        assert!(time >= last, "the time goes back at {line:?}");
        last = time;
        match rest.strip_prefix("err ") {
            Some(_) => err.push(rest.to_owned()),
            None => out.push(rest.to_owned()),
        }
    }
    let mut expected_out: Vec<String> = (1..=500).map(|i| format!("out {i}")).collect();
    expected_out.push("the last line, without a newline".to_owned());
    assert_eq!(out, expected_out);
    assert_eq!(
        err,
        (1..=500).map(|i| format!("err {i}")).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------
// Syslog
// ---------------------------------------------------------------------------

/// A real rsyslogd, our child, with its configuration, socket and output in
/// a directory of its own: no system socket (`SysSock.Use="off"`), no
/// kernel log, so a system syslog is left alone. Killed by its handle (its
/// PID) on drop.
struct Rsyslogd {
    child: Child,
    socket: PathBuf,
    out: PathBuf,
    stderr: PathBuf,
    _dir: TempDir,
}

/// One message as rsyslogd parsed it.
#[derive(Debug)]
struct Record {
    tag: String,
    program: String,
    pid: String,
    facility: String,
    severity: String,
    msg: String,
}

impl Rsyslogd {
    fn start() -> Option<Rsyslogd> {
        if !Path::new(RSYSLOGD).exists() {
            eprintln!("skipped: rsyslogd is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("log.sock");
        let out = dir.path().join("messages");
        let conf = dir.path().join("rsyslog.conf");
        let stderr = dir.path().join("rsyslogd.stderr");
        // rsyslog keeps the space after `TAG:` in %msg%.
        fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{dir}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{socket}" RateLimit.Interval="0" UsePIDFromSystem="off")
template(name="fields" type="string"
         string="%syslogtag%|%programname%|%procid%|%syslogfacility-text%|%syslogseverity-text%|%msg%\n")
*.* action(type="omfile" file="{out}" template="fields")
"#,
                dir = dir.path().display(),
                socket = socket.display(),
                out = out.display()
            ),
        )
        .unwrap();
        let log = fs::File::create(&stderr).unwrap();
        let child = Command::new(RSYSLOGD)
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"))
            .env_clear()
            .env("PATH", common::inherited_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start rsyslogd");
        let mut rsyslogd = Rsyslogd {
            child,
            socket,
            out,
            stderr,
            _dir: dir,
        };
        wait_until(TIMEOUT, "rsyslogd's socket", || {
            if let Some(status) = rsyslogd.child.try_wait().unwrap() {
                panic!("rsyslogd ended ({status}): {}", read_text(&rsyslogd.stderr));
            }
            rsyslogd.socket.exists()
        });
        Some(rsyslogd)
    }

    fn records(&self) -> Vec<Record> {
        read_text(&self.out)
            .lines()
            .map(|line| {
                let f: Vec<&str> = line.splitn(6, '|').collect();
                assert_eq!(f.len(), 6, "bad record {line:?}");
                Record {
                    tag: f[0].to_owned(),
                    program: f[1].to_owned(),
                    pid: f[2].to_owned(),
                    facility: f[3].to_owned(),
                    severity: f[4].to_owned(),
                    msg: f[5].strip_prefix(' ').unwrap_or(f[5]).to_owned(),
                }
            })
            .collect()
    }

    /// Waits until `n` records of `program` have arrived, and returns them.
    #[track_caller]
    fn wait_records(&self, program: &str, n: usize) -> Vec<Record> {
        let mut seen = 0;
        let found = common::wait_for_optional(TIMEOUT, || {
            let records: Vec<Record> = self
                .records()
                .into_iter()
                .filter(|r| r.program == program)
                .collect();
            seen = records.len();
            (seen >= n).then_some(records)
        });
        found.unwrap_or_else(|| {
            panic!(
                "{seen} of {n} messages of {program} reached rsyslogd: {}\n{}",
                read_text(&self.out),
                read_text(&self.stderr)
            )
        })
    }
}

impl Drop for Rsyslogd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A script `dir/NAME` that waits for go and writes `N out I from PID` to
/// stdout and `N err I from PID` to stderr, for I in 1..=50.
fn syslog_script(dir: &Path, name: &str) -> PathBuf {
    write_script(
        dir,
        name,
        &format!(
            "{}i=1\n\
             while [ $i -le 50 ]; do echo \"out $i from $$\"; echo \"err $i from $$\" >&2; i=$((i + 1)); done\n",
            await_go(dir)
        ),
    )
}

/// The messages `syslog_script` sends, sorted.
fn syslog_script_lines(pid: i32) -> Vec<String> {
    let mut lines: Vec<String> = (1..=50)
        .flat_map(|i| [format!("out {i} from {pid}"), format!("err {i} from {pid}")])
        .collect();
    lines.sort();
    lines
}

#[test]
fn syslog_reaches_rsyslogd_with_tag_pid_facility_and_severity() {
    let Some(rsyslogd) = Rsyslogd::start() else {
        return;
    };

    // The defaults: facility daemon, COMMAND's file name as the tag; the
    // -o file is written as well.
    let cmd = daemonize();
    let dir = cmd.dir().to_owned();
    let log = dir.join("app.log");
    let script = syslog_script(&dir, "myapp");
    let sup = Captured::start(
        cmd,
        [
            os("--syslog"),
            os("--syslog-socket"),
            os(&rsyslogd.socket),
            os("-o"),
            os(&log),
        ],
        &[os(&script)],
    );
    let child = sup.child();
    assert_captured(&sup, child, &[&log]);
    assert_two_pipes(child);
    sup.go();
    sup.wait_finished(TIMEOUT);
    let records = rsyslogd.wait_records("myapp", 100);
    for r in &records {
        assert_eq!(r.tag, format!("myapp[{child}]:"), "{r:?}");
        assert_eq!(r.pid, child.to_string(), "{r:?}");
        assert_eq!(r.facility, "daemon", "{r:?}");
        let severity = if r.msg.starts_with("out ") {
            "info"
        } else {
            "err"
        };
        assert_eq!(r.severity, severity, "{r:?}");
    }
    let mut msgs: Vec<String> = records.iter().map(|r| r.msg.clone()).collect();
    msgs.sort();
    assert_eq!(msgs, syslog_script_lines(child));
    let text = read_text(&log);
    let mut in_file: Vec<String> = command_lines(&text)
        .into_iter()
        .map(str::to_owned)
        .collect();
    in_file.sort();
    assert_eq!(in_file, syslog_script_lines(child), "the -o file");

    // --syslog=FACILITY and --syslog-tag.
    let cmd = daemonize();
    let dir = cmd.dir().to_owned();
    let script = syslog_script(&dir, "myapp");
    let sup = Captured::start(
        cmd,
        [
            os("--syslog=local3"),
            os("--syslog-tag"),
            os("web-frontend"),
            os("--syslog-socket"),
            os(&rsyslogd.socket),
        ],
        &[os(&script)],
    );
    let child = sup.child();
    assert_captured(&sup, child, &[]);
    sup.go();
    sup.wait_finished(TIMEOUT);
    let records = rsyslogd.wait_records("web-frontend", 100);
    for r in &records {
        assert_eq!(r.tag, format!("web-frontend[{child}]:"), "{r:?}");
        assert_eq!(r.pid, child.to_string(), "{r:?}");
        assert_eq!(r.facility, "local3", "{r:?}");
        let severity = if r.msg.starts_with("out ") {
            "info"
        } else {
            "err"
        };
        assert_eq!(r.severity, severity, "{r:?}");
    }
    let mut msgs: Vec<String> = records.iter().map(|r| r.msg.clone()).collect();
    msgs.sort();
    assert_eq!(msgs, syslog_script_lines(child));
    assert!(
        !rsyslogd
            .records()
            .iter()
            .any(|r| r.program == "myapp" && r.pid == child.to_string()),
        "--syslog-tag was not used for every line"
    );
}

/// Receives one datagram, or `None` at `deadline`.
fn receive(socket: &UnixDatagram, deadline: Instant) -> Option<Vec<u8>> {
    let left = deadline.checked_duration_since(Instant::now())?;
    socket
        .set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .unwrap();
    let mut buf = vec![0; 256 * 1024];
    match socket.recv(&mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Some(buf)
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(e) => panic!("recv: {e}"),
    }
}

/// A datagram `<PRI>Mmm dd hh:mm:ss REST`, as (PRI, timestamp, REST),
/// checking the RFC 3164 timestamp's shape: an English month, the day
/// space-padded, and the time.
#[track_caller]
fn parse_datagram(datagram: &[u8]) -> (u32, String, String) {
    let text = std::str::from_utf8(datagram).expect("a UTF-8 datagram");
    let bad = |why: &str| -> ! { panic!("bad datagram ({why}): {text:?}") };
    let Some((pri, rest)) = text.strip_prefix('<').and_then(|t| t.split_once('>')) else {
        bad("no <PRI>")
    };
    let Ok(pri) = pri.parse::<u32>() else {
        bad("PRI is not a number")
    };
    let b = rest.as_bytes();
    if b.len() < 16 || b[15] != b' ' {
        bad("no timestamp and space");
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    if !MONTHS.contains(&&rest[..3]) {
        bad("no month");
    }
    let digit = |i: usize| b[i].is_ascii_digit();
    let day_ok = match b[4] {
        b' ' => (b'1'..=b'9').contains(&b[5]),
        b'1'..=b'2' => digit(5),
        b'3' => (b'0'..=b'1').contains(&b[5]),
        _ => false,
    };
    if b[3] != b' ' || !day_ok || b[6] != b' ' {
        bad("the day is not space-padded 1..31");
    }
    let time_ok = [7, 8, 10, 11, 13, 14].iter().all(|&i| digit(i)) && b[9] == b':' && b[12] == b':';
    let hms = |i: usize| (b[i] - b'0') * 10 + (b[i + 1] - b'0');
    if !time_ok || hms(7) > 23 || hms(10) > 59 || hms(13) > 60 {
        bad("no hh:mm:ss");
    }
    (pri, rest[..15].to_owned(), rest[16..].to_owned())
}

#[test]
fn syslog_datagrams_have_the_exact_wire_format() {
    let cmd = daemonize();
    let dir = cmd.dir().to_owned();
    let path = dir.join("log.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let script = format!(
        "{}echo \"to stdout from $$\"\necho \"to stderr from $$\" >&2\n",
        await_go(&dir)
    );
    let sup = Captured::start(
        cmd,
        [os("--syslog"), os("--syslog-socket"), os(&path)],
        &[os("/bin/sh"), os("-c"), os(script)],
    );
    let child = sup.child();
    assert_captured(&sup, child, &[]);
    assert_two_pipes(child);
    sup.go();
    // The tag is the file name of argv[0], /bin/sh.
    let prefix = format!("sh[{child}]: ");
    let deadline = Instant::now() + TIMEOUT;
    let mut got = Vec::new();
    while got.len() < 2 {
        let Some(datagram) = receive(&socket, deadline) else {
            panic!("only {got:?} arrived");
        };
        let (pri, stamp, rest) = parse_datagram(&datagram);
        if rest.starts_with(&prefix) {
            got.push((pri, stamp, rest));
        }
    }
    got.sort();
    // daemon is facility 3: 3 * 8 + err (3) and + info (6).
    assert_eq!(got[0].0, 27);
    assert_eq!(got[0].2, format!("sh[{child}]: to stderr from {child}"));
    assert_eq!(got[1].0, 30);
    assert_eq!(got[1].2, format!("sh[{child}]: to stdout from {child}"));
    sup.wait_finished(TIMEOUT);
}

#[test]
fn every_syslog_facility_has_its_number() {
    let facilities = [
        ("kern", 0),
        ("user", 1),
        ("mail", 2),
        ("daemon", 3),
        ("auth", 4),
        ("syslog", 5),
        ("lpr", 6),
        ("news", 7),
        ("uucp", 8),
        ("cron", 9),
        ("authpriv", 10),
        ("ftp", 11),
        ("local0", 16),
        ("local1", 17),
        ("local2", 18),
        ("local3", 19),
        ("local4", 20),
        ("local5", 21),
        ("local6", 22),
        ("local7", 23),
    ];
    let sockdir = tempfile::tempdir().unwrap();
    let path = sockdir.path().join("log.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    for (name, number) in facilities {
        let cmd = daemonize();
        let dir = cmd.dir().to_owned();
        let script = format!("{}echo out\necho err >&2\n", await_go(&dir));
        let tag = format!("t-{name}");
        let sup = Captured::start(
            cmd,
            [
                os(format!("--syslog={name}")),
                os("--syslog-tag"),
                os(&tag),
                os("--syslog-socket"),
                os(&path),
            ],
            &[os("/bin/sh"), os("-c"), os(script)],
        );
        let child = sup.child();
        sup.go();
        let prefix = format!("{tag}[{child}]: ");
        let deadline = Instant::now() + TIMEOUT;
        let mut got = Vec::new();
        while got.len() < 2 {
            let Some(datagram) = receive(&socket, deadline) else {
                panic!("--syslog={name}: only {got:?} arrived");
            };
            let (pri, _, rest) = parse_datagram(&datagram);
            if let Some(line) = rest.strip_prefix(&prefix) {
                got.push((line.to_owned(), pri));
            }
        }
        got.sort();
        assert_eq!(
            got,
            [
                ("err".to_owned(), number * 8 + 3),
                ("out".to_owned(), number * 8 + 6)
            ],
            "--syslog={name}"
        );
        sup.wait_finished(TIMEOUT);
    }
}

// ---------------------------------------------------------------------------
// Backpressure
// ---------------------------------------------------------------------------

/// Lines the backpressure writer writes: about 1 MB, far more than a pipe
/// holds.
const BACKPRESSURE_LINES: u64 = 10_000;

/// Waits for go (argv[2]), then writes `NNNNNN xxx...` lines (100 bytes
/// with the newline), one write each, and after each one the count so far
/// into the progress file (argv[1], outside the full filesystem).
const BACKPRESSURE_PY: &str = r#"
import os, sys, time
progress, go = sys.argv[1], sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.01)
fd = os.open(progress, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
for i in range(1, 10001):
    view = memoryview(b"%06d %s\n" % (i, b"x" * 92))
    while view:
        view = view[os.write(1, view):]
    os.pwrite(fd, b"%08d" % i, 0)
"#;

fn backpressure_line(i: u64) -> String {
    format!("{i:06} {}", "x".repeat(92))
}

fn progress(path: &Path) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// With the way out blocked: the writer (COMMAND) comes to sleep in a write
/// to its full pipe and stays there, and the supervisor, which retries every
/// second, uses (almost) no CPU and makes few system calls over ~2.5 s. A
/// spinning supervisor would use all of one CPU.
#[track_caller]
fn assert_blocked_and_idle(sup: &Captured, writer: i32, progress_file: &Path) {
    wait_until(TIMEOUT, "the writer to block on its full pipe", || {
        let done = progress(progress_file);
        assert!(
            done < BACKPRESSURE_LINES,
            "the writer wrote all {done} lines without blocking: the supervisor kept reading"
        );
        blocked_writing_a_pipe(writer)
    });
    let stuck_at = progress(progress_file);
    let (cpu_before, calls_before) = (cpu_ticks(sup.supervisor), syscalls(sup.supervisor));
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        std::thread::sleep(Duration::from_millis(100));
        assert!(blocked_writing_a_pipe(writer), "the writer went on");
        assert_eq!(progress(progress_file), stuck_at, "the writer went on");
    }
    let window = start.elapsed();
    let cpu = cpu_ticks(sup.supervisor) - cpu_before;
    let hz = clock_ticks_per_second();
    assert!(
        cpu * 10 <= hz,
        "the supervisor used {cpu} clock ticks (at {hz}/s) in {window:?} while blocked: it spins"
    );
    if let (Some(before), Some(after)) = (calls_before, syscalls(sup.supervisor)) {
        assert!(
            after - before <= 50,
            "the supervisor made {} read/write calls in {window:?} while blocked: it spins",
            after - before
        );
    }
    assert!(procfs::is_alive(sup.supervisor));
}

/// A tmpfs mounted on a temporary directory, unmounted on drop (also when a
/// test panics), before its directory is removed.
struct Tmpfs {
    mnt: PathBuf,
    _dir: TempDir,
}

impl Tmpfs {
    /// `None` (and a message) when not root; a failed mount as root fails
    /// the test.
    fn mount(size: &str) -> Option<Tmpfs> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        let output = Cmd::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0755"))
            .arg("tmpfs")
            .arg(&mnt)
            .run();
        assert_eq!(output.code, Some(0), "cannot mount a tmpfs: {output:?}");
        Some(Tmpfs { mnt, _dir: dir })
    }

    /// Fills the file system to the last byte with `mnt/filler`.
    fn fill(&self) -> PathBuf {
        let path = self.mnt.join("filler");
        let mut file = fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("fill the tmpfs: {e}"),
            }
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.mnt)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

#[test]
fn a_full_disk_blocks_the_daemon_without_spinning_and_loses_nothing() {
    // Declared before the instance, so dropped after it: the supervisor
    // holds the log open until it is killed.
    let Some(tmpfs) = Tmpfs::mount("2m") else {
        return;
    };
    let cmd = daemonize();
    let dir = cmd.dir().to_owned();
    let writer = dir.join("writer.py");
    fs::write(&writer, BACKPRESSURE_PY).unwrap();
    let progress_file = dir.join("progress");
    let log = tmpfs.mnt.join("app.log");
    let sup = Captured::start(
        cmd,
        [os("--log-max-size"), os("100M"), os("-o"), os(&log)],
        &[
            os(PYTHON),
            os(&writer),
            os(&progress_file),
            os(dir.join("go")),
        ],
    );
    let child = sup.child();
    assert_captured(&sup, child, &[&log]);
    let filler = tmpfs.fill();
    sup.go();
    assert_blocked_and_idle(&sup, child, &progress_file);

    fs::remove_file(&filler).unwrap();
    sup.wait_finished(TIMEOUT);
    assert_eq!(progress(&progress_file), BACKPRESSURE_LINES);
    let text = read_text(&log);
    let lines = command_lines(&text);
    let expected: Vec<String> = (1..=BACKPRESSURE_LINES).map(backpressure_line).collect();
    assert_eq!(lines.len(), expected.len(), "lines lost or repeated");
    assert!(lines == expected, "lines out of order or changed");
}

#[test]
fn a_syslog_that_stops_reading_blocks_the_daemon_and_loses_nothing() {
    let cmd = daemonize();
    let dir = cmd.dir().to_owned();
    let path = dir.join("log.sock");
    // Bound, but not read until the writer is blocked: its queue fills.
    let socket = UnixDatagram::bind(&path).unwrap();
    let writer = dir.join("writer.py");
    fs::write(&writer, BACKPRESSURE_PY).unwrap();
    let progress_file = dir.join("progress");
    let sup = Captured::start(
        cmd,
        [
            os("--syslog"),
            os("--syslog-tag"),
            os("bp"),
            os("--syslog-socket"),
            os(&path),
        ],
        &[
            os(PYTHON),
            os(&writer),
            os(&progress_file),
            os(dir.join("go")),
        ],
    );
    let child = sup.child();
    assert_captured(&sup, child, &[]);
    sup.go();
    assert_blocked_and_idle(&sup, child, &progress_file);

    let prefix = format!("bp[{child}]: ");
    let deadline = Instant::now() + TIMEOUT;
    let mut lines = Vec::new();
    while (lines.len() as u64) < BACKPRESSURE_LINES {
        let Some(datagram) = receive(&socket, deadline) else {
            panic!(
                "{} of {BACKPRESSURE_LINES} lines arrived after syslog read again",
                lines.len()
            );
        };
        let (pri, _, rest) = parse_datagram(&datagram);
        if let Some(line) = rest.strip_prefix(&prefix) {
            assert_eq!(pri, 30, "{rest:?}");
            lines.push(line.to_owned());
        }
    }
    let expected: Vec<String> = (1..=BACKPRESSURE_LINES).map(backpressure_line).collect();
    assert!(lines == expected, "lines lost, repeated or out of order");
    sup.wait_finished(TIMEOUT);
    // Nothing more arrives from COMMAND.
    let set: BTreeSet<&String> = lines.iter().collect();
    assert_eq!(set.len(), lines.len());
}
