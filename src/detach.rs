//! The fork boundary: the double fork, the daemon's setup, and `execvp`.
//!
//! With `sys` (the raw system-call wrappers), this is the only module
//! allowed `unsafe`: here it is the fork-child code. It receives a finished
//! [`Plan`] and turns it into raw pointers *before* forking. After `fork()`
//! the children call only async-signal-safe syscalls through `libc`: no
//! allocation, no formatting, no `tracing`, no locks, no panicking paths, no
//! NSS, and not `nix::unistd::execvp` (it allocates, nix#555). Failures are
//! written to the report channel as fixed-size records and the process
//! `_exit`s; the original process turns them into messages (`report`).
//!
//! The shape follows systemd daemon(7) and Stevens (APUE 13.3): fork, setsid
//! in the child, fork again so the daemon is not a session leader and can
//! never acquire a controlling terminal, and let the intermediate exit.
//!
//! Both forks are `clone(CLONE_VM | CLONE_VFORK)` on a stack of their own,
//! the way glibc's posix_spawn works: the children borrow the original
//! process's memory instead of copying its page tables, and each parent
//! sleeps until its child has exec'd or exited. So the original process
//! resumes only once the daemon has exec'd (or failed), and nothing is
//! copied or torn down on the way; a launcher is mostly that work (issue 6).
//! Sharing memory adds one rule to the usual ones: a child writes only to its
//! own stack, the report pipe, `errno`, and the scratch memory its parent
//! set aside for it: the argument list of the `/bin/sh` fallback, the digits
//! of `WATCHDOG_PID`, and the opener's result slot.
//!
//! Three kinds of child start here (docs/design.md, "The supervisor
//! design"): the double fork of a plain start ([`Fork::Detach`]), the same
//! double fork ending in `/proc/self/exe` for a supervisor
//! ([`spawn_supervisor`]), and the single fork of a supervisor's child into
//! a process group of its own ([`Fork::Child`]). [`open_as`] opens a log
//! file with the daemon's credentials, for the supervisor's own messages.
//!
//! The daemon searches `PATH` itself instead of calling glibc's `execvp`:
//! glibc runs any file that fails with `ENOEXEC` through `/bin/sh`, even a
//! binary for another machine or a corrupt ELF, whose bytes then run as
//! shell commands. Here, as in bash, only a file that does not look binary
//! goes to the shell; a binary is 126 `Exec format error`. A file that
//! exists but fails with `ENOENT` has a missing interpreter (its `#!` line,
//! or an ELF's loader): that is reported as such, 126, not as "not found".

#![allow(unsafe_code)]

use std::os::fd::AsRawFd;
use std::ptr;

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::libc::{self, c_char, c_int, c_uint};
use nix::unistd::{Pid, pipe2};

use crate::plan::Plan;
use crate::report::{Outcome, RECORD_LEN, Stage, encode};
use crate::user::Credentials;

unsafe extern "C" {
    /// The process environment, passed on when the plan does not change it
    /// (POSIX `environ`).
    static environ: *const *const c_char;
}

/// How [`spawn`] forks the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fork {
    /// A plain start: an intermediate child makes a new session and forks
    /// the daemon, then exits, so the daemon is no session leader.
    Detach,
    /// The supervisor's child: one fork, into a process group of its own
    /// in the supervisor's session (which is already detached).
    Child,
}

/// The processes started by [`spawn`], seen from the original process.
pub struct Spawned {
    /// The intermediate child, which the caller must reap (`Fork::Detach`).
    pub intermediate: Option<Pid>,
    /// What the children reported; complete, since they have all exec'd or
    /// exited by the time `spawn` returns.
    pub outcome: anyhow::Result<Outcome>,
}

/// Where the daemon's standard output or error goes.
#[derive(Clone, Copy)]
enum RawOutput {
    /// A file for `open(2)` in the daemon.
    Open { path: *const c_char, flags: c_int },
    /// A descriptor to `dup2` (a capture pipe of the supervisor's).
    Fd(c_int),
}

/// Ids for the privilege drop, resolved before fork.
#[derive(Clone, Copy)]
struct RawCreds<'a> {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: &'a [libc::gid_t],
}

/// Everything the children read, as raw values and pointers into `Plan`,
/// which outlives the fork in the parent and is copied into the children.
struct ChildArgs<'a> {
    report: c_int,
    argv: &'a [*const c_char],
    /// The environment to install, or `None` to keep ours.
    envp: Option<&'a [*const c_char]>,
    /// `PATH` for the command search (the daemon's, or the default).
    search_path: &'a std::ffi::CStr,
    /// `["/bin/sh", <script>, argv[1..], NULL]` for a script without `#!`:
    /// the daemon fills in slot 1 (scratch memory set aside for it).
    sh_argv: *mut *const c_char,
    /// A file to execute as it is, without the command search (the
    /// supervisor's `/proc/self/exe`); null to search for `argv[0]`.
    exec_path: *const c_char,
    /// Null: the working directory is kept (the supervisor resolves the
    /// caller's relative paths before it moves to `/` itself).
    chdir: *const c_char,
    /// `None` keeps the caller's umask (the supervisor sets its own).
    umask: Option<libc::mode_t>,
    /// Standard error is left as it is (the supervisor reports a failed
    /// first start on the caller's standard error).
    keep_stderr: bool,
    /// `Fork::Child`: `setpgid(0, 0)` first.
    new_group: bool,
    /// Room for the decimal PID after `WATCHDOG_PID=` in the environment
    /// (11 bytes, scratch memory set aside for it); null without one.
    watchdog_pid: *mut u8,
    creds: Option<RawCreds<'a>>,
    dev_null: c_int,
    stdout: Option<RawOutput>,
    stderr: Option<RawOutput>,
    /// `--ready-fd`: (pipe write end, FD) to install with dup2.
    ready: Option<(c_int, c_int)>,
    /// Close-on-exec descriptors the daemon must inherit (the locks).
    inherit: &'a [c_int],
    /// Descriptors above 2 that survive into the daemon, sorted ascending.
    keep: &'a [c_int],
    /// The top of the daemon's stack, used by the intermediate to clone it.
    daemon_stack: *mut libc::c_void,
}

/// Forks the daemon, by a double fork through an intermediate child
/// (`Fork::Detach`) or by one fork (`Fork::Child`). Returns in the parent
/// only; the children end in `execve` or `_exit`.
pub fn spawn(plan: &Plan, fork: Fork) -> anyhow::Result<Spawned> {
    let (report_r, report_w) = pipe2(OFlag::O_CLOEXEC).context("cannot create the report pipe")?;
    let groups: Vec<libc::gid_t> = plan
        .creds
        .iter()
        .flat_map(|c| c.groups.iter().map(|g| g.as_raw()))
        .collect();
    let creds = plan.creds.as_ref().filter(|c| c.change).map(|c| RawCreds {
        uid: c.uid.as_raw(),
        gid: c.gid.as_raw(),
        groups: &groups,
    });
    let inherit: Vec<c_int> = plan
        .locks
        .iter()
        .filter(|lock| lock.kind.inherited())
        .map(|lock| lock.fd())
        .collect();
    let ready = plan.ready.as_ref().and_then(|r| r.child_fd());
    let mut keep: Vec<c_int> = plan.keep_fds.clone();
    keep.extend(&inherit);
    keep.extend(ready.map(|(_, target)| target));
    keep.push(report_w.as_raw_fd());
    keep.sort_unstable();
    keep.dedup();
    let argv = null_terminated(plan.argv.iter().map(|a| a.as_ptr()));
    let mut sh_argv = null_terminated(
        [c"/bin/sh".as_ptr(), ptr::null()]
            .into_iter()
            .chain(plan.argv[1..].iter().map(|a| a.as_ptr())),
    );
    // `WATCHDOG_PID=` and room for the daemon to write its PID after it.
    let mut watchdog = plan.watchdog.then(|| {
        let mut entry = WATCHDOG_PID.to_vec();
        entry.resize(WATCHDOG_PID.len() + PID_DIGITS, 0);
        entry
    });
    let envp = plan.envp.as_ref().map(|envp| {
        null_terminated(
            envp.iter()
                .map(|e| e.as_ptr())
                .chain(watchdog.as_ref().map(|w| w.as_ptr().cast())),
        )
    });
    let watchdog_pid = watchdog
        .as_mut()
        .map_or(ptr::null_mut(), |w| w[WATCHDOG_PID.len()..].as_mut_ptr());
    let raw_output = |file: &crate::output::OutputFile| RawOutput::Open {
        path: file.c_path.as_ptr(),
        flags: file.flags.bits(),
    };
    // Captured output goes into the supervisor's pipes, and the files are
    // the supervisor's to open.
    let (stdout, stderr) = match plan.outputs.captured {
        Some([out, err]) => (out.map(RawOutput::Fd), err.map(RawOutput::Fd)),
        None => (
            plan.outputs.stdout.as_ref().map(raw_output),
            plan.outputs.stderr.as_ref().map(raw_output),
        ),
    };
    let args = ChildArgs {
        report: report_w.as_raw_fd(),
        argv: &argv,
        envp: envp.as_deref(),
        search_path: &plan.search_path,
        sh_argv: sh_argv.as_mut_ptr(),
        exec_path: ptr::null(),
        chdir: plan.c_chdir.as_ptr(),
        umask: Some(plan.umask),
        keep_stderr: false,
        new_group: fork == Fork::Child,
        watchdog_pid,
        creds,
        dev_null: plan.dev_null.as_raw_fd(),
        stdout,
        stderr,
        ready,
        inherit: &inherit,
        keep: &keep,
        daemon_stack: ptr::null_mut(),
    };
    tracing::debug!(kept = ?keep, ?fork, "forking");
    run_children(args, fork, report_r, report_w)
}

/// The processes [`spawn_supervisor`] starts.
pub struct SupervisorSpawn<'a> {
    /// daemonize's own command line, as the caller gave it.
    pub argv: &'a [std::ffi::CString],
    /// The whole environment of the supervisor.
    pub envp: &'a [std::ffi::CString],
    /// The status pipe's write end and the caller's `--keep-fds`, sorted:
    /// the supervisor inherits them.
    pub inherit: &'a [c_int],
    pub dev_null: c_int,
}

/// The double fork of a supervised start (`--restart`): the daemon is a
/// fresh `daemonize` (`/proc/self/exe`), detached like any daemon (new
/// session, not its leader, stdin and stdout on `/dev/null`, descriptors
/// closed, signals reset), but still in the caller's working directory,
/// with the caller's umask and standard error, and the same credentials.
/// It parses the same command line and runs the start itself
/// (`supervise`). The fork children run no code of ours beyond the
/// system calls, exactly as for a plain start.
pub fn spawn_supervisor(spec: &SupervisorSpawn) -> anyhow::Result<Spawned> {
    let (report_r, report_w) = pipe2(OFlag::O_CLOEXEC).context("cannot create the report pipe")?;
    let argv = null_terminated(spec.argv.iter().map(|a| a.as_ptr()));
    let envp = null_terminated(spec.envp.iter().map(|e| e.as_ptr()));
    let mut keep: Vec<c_int> = spec.inherit.to_vec();
    keep.push(report_w.as_raw_fd());
    keep.sort_unstable();
    keep.dedup();
    let args = ChildArgs {
        report: report_w.as_raw_fd(),
        argv: &argv,
        envp: Some(&envp),
        search_path: c"",
        sh_argv: ptr::null_mut(),
        exec_path: c"/proc/self/exe".as_ptr(),
        chdir: ptr::null(),
        umask: None,
        keep_stderr: true,
        new_group: false,
        watchdog_pid: ptr::null_mut(),
        creds: None,
        dev_null: spec.dev_null,
        stdout: None,
        stderr: None,
        ready: None,
        inherit: spec.inherit,
        keep: &keep,
        daemon_stack: ptr::null_mut(),
    };
    run_children(args, Fork::Detach, report_r, report_w)
}

/// Forks as `fork` says, with `args`, and collects the report.
fn run_children(
    mut args: ChildArgs,
    fork: Fork,
    report_r: std::os::fd::OwnedFd,
    report_w: std::os::fd::OwnedFd,
) -> anyhow::Result<Spawned> {
    let daemon_stack = Stack::new(CHILD_STACK)?;
    let intermediate_stack = match fork {
        Fork::Detach => Some(Stack::new(CHILD_STACK)?),
        Fork::Child => None,
    };
    args.daemon_stack = daemon_stack.top();
    let pid = match &intermediate_stack {
        // SAFETY: see `vfork_into`. `args` and everything it points into
        // live in the caller's frame or in the Plan, both alive until clone
        // returns, which is after the children no longer use our memory.
        Some(stack) => unsafe { vfork_into(intermediate_entry, stack.top(), &args) },
        // SAFETY: as above; the daemon's stack is set aside for it alone.
        None => unsafe { vfork_into(daemon_entry, daemon_stack.top(), &args) },
    };
    if pid == -1 {
        return Err(Errno::last()).context("cannot fork");
    }
    drop(report_w);
    // The intermediate has exited, but if it was killed before its own clone
    // returned, the daemon may still be running on our memory. Its copy of
    // the report pipe closes only when it execs or exits, so the end of the
    // report is what makes it safe to touch or free anything it uses.
    let mut outcome = Outcome::read(report_r);
    if outcome.is_err() {
        // A pipe read failed (not EINTR, not EOF): we cannot know that the
        // daemon has left our memory, so nothing here may be freed or
        // changed. This does not happen on Linux; aborting beats corruption.
        std::process::abort();
    }
    let pid = Pid::from_raw(pid);
    let intermediate = match fork {
        Fork::Detach => Some(pid),
        Fork::Child => {
            // The child itself said nothing before it failed (it always
            // sends its PID first), but clone's result names it anyway.
            if let Ok(outcome) = &mut outcome {
                outcome.pid.get_or_insert(pid);
            }
            None
        }
    };
    Ok(Spawned {
        intermediate,
        outcome,
    })
}

/// The environment entry that names the daemon for the watchdog
/// (sd_watchdog_enabled(3)); the daemon writes its own PID after it.
const WATCHDOG_PID: &[u8] = b"WATCHDOG_PID=";

/// Room for a PID in decimal (at most 4194304 on Linux) and a NUL.
const PID_DIGITS: usize = 11;

/// Opens `file` with `flags` (and mode [`crate::output::OutputFile::MODE`])
/// as the daemon would: with `creds` when it changes user, so that root
/// never writes through a path the daemon's user controls. For that, a
/// child that shares our memory and our descriptor table (`CLONE_VM |
/// CLONE_VFORK | CLONE_FILES`) drops its privileges, opens the file and
/// exits: the descriptor it opened is ours. Without a change of user the
/// file is opened here. A FIFO without a reader is `ENXIO`, never a hang.
pub fn open_as(
    creds: Option<&Credentials>,
    path: &std::ffi::CStr,
    flags: c_int,
) -> nix::Result<std::os::fd::OwnedFd> {
    rotate_as(creds, &[], path, flags).map_err(|(_, errno)| errno)
}

/// Which step of [`rotate_as`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileStep {
    /// Renaming `renames[i].0` to `renames[i].1`.
    Rename(usize),
    Open,
}

/// Log rotation as the daemon's user: each `(from, to)` of `renames` in
/// turn (a missing `from` is skipped; `to` is replaced), then `path` is
/// opened as [`open_as`] opens it. All of it with `creds`, in one opener
/// child, so that root renames nothing in a directory the daemon's user
/// controls (nor in a sticky `/tmp`, whose other files root could move).
pub fn rotate_as(
    creds: Option<&Credentials>,
    renames: &[(std::ffi::CString, std::ffi::CString)],
    path: &std::ffi::CStr,
    flags: c_int,
) -> Result<std::os::fd::OwnedFd, (FileStep, Errno)> {
    let flags = flags | libc::O_NONBLOCK | libc::O_CLOEXEC;
    let mode = crate::output::OutputFile::MODE as c_uint;
    let pairs: Vec<(*const c_char, *const c_char)> = renames
        .iter()
        .map(|(from, to)| (from.as_ptr(), to.as_ptr()))
        .collect();
    let groups: Vec<libc::gid_t> = creds
        .filter(|c| c.change)
        .iter()
        .flat_map(|c| c.groups.iter().map(|g| g.as_raw()))
        .collect();
    let mut result: c_int = -libc::EINVAL;
    let mut step: c_int = -1;
    let args = OpenerArgs {
        creds: creds.filter(|c| c.change).map(|c| RawCreds {
            uid: c.uid.as_raw(),
            gid: c.gid.as_raw(),
            groups: &groups,
        }),
        renames: &pairs,
        path: path.as_ptr(),
        flags,
        mode,
        result: &mut result,
        step: &mut step,
    };
    if args.creds.is_some() {
        let stack = Stack::new(OPENER_STACK).map_err(|_| (FileStep::Open, Errno::ENOMEM))?;
        // SAFETY: the process is single-threaded; `opener` keeps to the
        // rules of `vfork_into` (it writes only its stack, errno and the
        // `result` and `step` slots, which outlive the call), and
        // CLONE_VFORK suspends us until it has exited. CLONE_FILES shares
        // our descriptor table, so the file it opens is ours.
        let pid = unsafe {
            libc::clone(
                opener_entry,
                stack.top(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_FILES | libc::SIGCHLD,
                (&args as *const OpenerArgs).cast_mut().cast(),
            )
        };
        if pid == -1 {
            return Err((FileStep::Open, Errno::last()));
        }
        let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
    } else {
        // Our own credentials: the same steps, here.
        opener(&args);
    }
    if result < 0 {
        let step = usize::try_from(step).map_or(FileStep::Open, FileStep::Rename);
        return Err((step, Errno::from_raw(-result)));
    }
    // SAFETY: a descriptor just opened (by us, or by the opener in our
    // shared table), owned by nothing else.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(result) };
    // Blocking again, as the daemon's own descriptor is.
    // SAFETY: fcntl on our own descriptor with integer arguments.
    unsafe {
        let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if fl != -1 {
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
    }
    Ok(fd)
}

/// What the opener reads, and where it writes its result: the new
/// descriptor, or minus the errno and the failed step (-1 for the open).
struct OpenerArgs<'a> {
    creds: Option<RawCreds<'a>>,
    renames: &'a [(*const c_char, *const c_char)],
    path: *const c_char,
    flags: c_int,
    mode: c_uint,
    result: *mut c_int,
    step: *mut c_int,
}

/// The opener needs only a few frames.
const OPENER_STACK: usize = 16 * 1024;

extern "C" fn opener_entry(args: *mut libc::c_void) -> c_int {
    // SAFETY: `rotate_as` passes a pointer to an OpenerArgs that outlives us.
    opener(unsafe { &*(args as *const OpenerArgs) });
    // SAFETY: _exit ends the child without running anything of the parent's.
    unsafe { libc::_exit(0) }
}

/// The opener's steps: async-signal-safe system calls only, writing only
/// the result slots.
fn opener(args: &OpenerArgs) {
    // SAFETY: `result` and `step` are the slots set aside by `rotate_as`.
    let put = |result: c_int, step: c_int| unsafe {
        *args.result = result;
        *args.step = step;
    };
    if let Some(creds) = args.creds
        && set_ids(creds).is_err()
    {
        return put(-Errno::last_raw(), -1);
    }
    for (i, &(from, to)) in args.renames.iter().enumerate() {
        // SAFETY: NUL-terminated paths prepared before the clone.
        if unsafe { libc::rename(from, to) } == -1 && Errno::last_raw() != libc::ENOENT {
            return put(-Errno::last_raw(), i as c_int);
        }
    }
    // SAFETY: open on the NUL-terminated path prepared before the clone.
    match unsafe { libc::open(args.path, args.flags, args.mode) } {
        -1 => put(-Errno::last_raw(), -1),
        fd => put(fd, -1),
    }
}

/// Stack space for one child: the intermediate needs little; the daemon
/// builds each candidate path of the command search (at most
/// [`PATH_BUF`] bytes) on it.
const CHILD_STACK: usize = 64 * 1024;

/// Room for one candidate path: a `PATH` element, `/`, the command, NUL.
const PATH_BUF: usize = libc::PATH_MAX as usize + libc::FILENAME_MAX as usize + 2;

/// A child's stack: an anonymous mapping with a `PROT_NONE` guard page at
/// its low end, so an overflow faults in the child instead of writing into
/// memory that the original process uses. Only the pages a child touches
/// are ever backed.
struct Stack {
    base: *mut libc::c_void,
    len: usize,
}

impl Stack {
    fn new(usable: usize) -> anyhow::Result<Stack> {
        const GUARD: usize = 4096;
        let len = usable.next_multiple_of(GUARD) + GUARD;
        // SAFETY: a fresh private anonymous mapping; no memory of ours is
        // affected, and the result is checked before use.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(Errno::last()).context("cannot allocate a stack for the child");
        }
        let stack = Stack { base, len };
        // SAFETY: the lowest page of the mapping just created, used by no one.
        if unsafe { libc::mprotect(base, GUARD, libc::PROT_NONE) } == -1 {
            return Err(Errno::last()).context("cannot protect the child's stack");
        }
        Ok(stack)
    }

    /// The initial stack pointer: the mapping's end, page-aligned.
    fn top(&self) -> *mut libc::c_void {
        self.base.wrapping_byte_add(self.len)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: our own mapping, which no child uses any more (see `spawn`).
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// Starts `entry(args)` in a child that shares our memory, on `stack`, and
/// returns its PID once it has exec'd or exited (or -1 with errno).
///
/// # Safety
/// The process must be single-threaded. `entry` must never return, must
/// write to no memory but its own stack, the `errno` it shares with us and
/// the `sh_argv` scratch array set aside for it, and may call only
/// async-signal-safe functions. `args` must stay
/// valid until this returns.
unsafe fn vfork_into(
    entry: extern "C" fn(*mut libc::c_void) -> c_int,
    top: *mut libc::c_void,
    args: &ChildArgs,
) -> libc::pid_t {
    // SAFETY: `top` is the page-aligned end of a live stack (a `Stack`) that
    // nothing else uses while the child runs; CLONE_VFORK suspends us until
    // the child execs or exits; the caller upholds the rest.
    unsafe {
        libc::clone(
            entry,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            args as *const ChildArgs as *mut libc::c_void,
        )
    }
}

extern "C" fn intermediate_entry(args: *mut libc::c_void) -> c_int {
    // SAFETY: `spawn` passes a pointer to a ChildArgs that outlives us.
    intermediate(unsafe { &*(args as *const ChildArgs) })
}

extern "C" fn daemon_entry(args: *mut libc::c_void) -> c_int {
    // SAFETY: `intermediate` passes on the pointer it received.
    daemon(unsafe { &*(args as *const ChildArgs) })
}

fn null_terminated(ptrs: impl Iterator<Item = *const c_char>) -> Vec<*const c_char> {
    ptrs.chain(std::iter::once(ptr::null())).collect()
}

/// The intermediate child: a new session, one more fork, report the PID,
/// exit. It is a session leader, so it must not open anything.
fn intermediate(args: &ChildArgs) -> ! {
    // SAFETY: setsid has no memory effects; we are not a group leader since
    // we were just forked.
    if unsafe { libc::setsid() } == -1 {
        fail(args.report, Stage::Setsid);
    }
    // SAFETY: the daemon's stack was set aside by `spawn` for it alone, and
    // `daemon` keeps to the rules of `vfork_into`.
    match unsafe { vfork_into(daemon_entry, args.daemon_stack, args) } {
        -1 => fail(args.report, Stage::Fork),
        // SAFETY: _exit ends the process without running atexit handlers or
        // flushing stdio buffers that belong to the original process.
        _ => unsafe { libc::_exit(0) },
    }
}

/// The daemon: docs/design.md, detach steps 7, 4, 5, 6 and 8. Privileges are
/// dropped first, so the working directory and the log files are reached
/// with the daemon's own credentials, never root's.
fn daemon(args: &ChildArgs) -> ! {
    let report = args.report;
    // First, so that the original process knows whom to reap or stop even
    // if the intermediate dies before it can say.
    // SAFETY: getpid takes no arguments and cannot fail.
    let pid = unsafe { libc::getpid() };
    send(report, Stage::Pid, pid);
    // SAFETY: setpgid on ourselves, integers only.
    if args.new_group && unsafe { libc::setpgid(0, 0) } == -1 {
        fail(report, Stage::ProcessGroup);
    }
    if !args.watchdog_pid.is_null() {
        // SAFETY: the PID_DIGITS bytes set aside for us by `spawn`.
        unsafe { write_decimal(args.watchdog_pid, pid) };
    }
    if let Some(creds) = args.creds {
        drop_privileges(report, creds);
    }
    // SAFETY: each call in this block is an async-signal-safe syscall whose
    // pointer arguments are NUL-terminated strings or NULL-terminated arrays
    // owned by the Plan, which was built before fork and is never freed here.
    unsafe {
        if let Some(mask) = args.umask {
            libc::umask(mask);
        }
        if !args.chdir.is_null() && libc::chdir(args.chdir) == -1 {
            fail(report, Stage::Chdir);
        }
        if libc::dup2(args.dev_null, 0) == -1 {
            fail(report, Stage::Stdin);
        }
        redirect(report, 1, args.stdout, args.dev_null, Stage::Stdout);
        match (args.stderr, args.stdout) {
            _ if args.keep_stderr => {}
            (Some(file), _) => redirect(report, 2, Some(file), args.dev_null, Stage::Stderr),
            (None, Some(_)) => {
                if libc::dup2(1, 2) == -1 {
                    fail(report, Stage::Stderr);
                }
            }
            (None, None) => redirect(report, 2, None, args.dev_null, Stage::Stderr),
        }
    }
    if let Some((pipe, target)) = args.ready {
        // SAFETY: dup2 on two integers; it clears FD_CLOEXEC on `target`.
        if unsafe { libc::dup2(pipe, target) } == -1 {
            fail(report, Stage::ReadyFd);
        }
    }
    for &fd in args.inherit {
        // SAFETY: F_SETFD with 0 only clears FD_CLOEXEC on our own descriptor.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
            fail(report, Stage::CloseFds);
        }
    }
    if !close_inherited(args.keep) {
        fail(report, Stage::CloseFds);
    }
    if !reset_signals() {
        fail(report, Stage::Signals);
    }
    exec_command(args)
}

/// `execvp(3)` as POSIX describes it, with bash's care about binaries: a
/// name with a `/` is executed as it is; otherwise each `PATH` element is
/// tried in turn (an empty one is the working directory), skipping those
/// where the file is missing or not a directory, remembering `EACCES`, and
/// stopping at any other error. Only returns by `_exit`.
fn exec_command(args: &ChildArgs) -> ! {
    let report = args.report;
    if !args.exec_path.is_null() {
        let envp = args.envp.map_or(ptr::null(), |e| e.as_ptr());
        // SAFETY: NUL-terminated path, NULL-terminated arrays prepared
        // before fork; execve only returns on failure.
        unsafe { libc::execve(args.exec_path, args.argv.as_ptr(), envp) };
        fail(report, Stage::Exec);
    }
    // SAFETY: argv[0] is a NUL-terminated string of the Plan; strlen only
    // reads it.
    let file = unsafe { std::ffi::CStr::from_ptr(args.argv[0]) }.to_bytes();
    if file.contains(&b'/') {
        let errno = try_exec(args, args.argv[0], -1);
        set_errno(errno);
        fail(report, Stage::Exec);
    }
    if file.is_empty() {
        set_errno(libc::ENOENT);
        fail(report, Stage::Exec);
    }
    // Not zeroed: only the bytes of each candidate are written, so the
    // daemon touches one page of its stack here, not the whole buffer.
    let mut buf = std::mem::MaybeUninit::<[u8; PATH_BUF]>::uninit();
    let base = buf.as_mut_ptr().cast::<u8>();
    let mut denied = false;
    for (index, dir) in args
        .search_path
        .to_bytes()
        .split(|&b| b == b':')
        .enumerate()
    {
        let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
        let len = dir.len() + 1 + file.len();
        if len + 1 > PATH_BUF {
            continue;
        }
        // SAFETY: `len + 1 <= PATH_BUF` bytes are written within the
        // buffer, from slices that do not overlap it; execve then reads
        // exactly those, up to the NUL.
        unsafe {
            ptr::copy_nonoverlapping(dir.as_ptr(), base, dir.len());
            *base.add(dir.len()) = b'/';
            ptr::copy_nonoverlapping(file.as_ptr(), base.add(dir.len() + 1), file.len());
            *base.add(len) = 0;
        }
        match try_exec(args, base.cast_const().cast(), index as c_int) {
            libc::EACCES => denied = true,
            libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
            errno => {
                set_errno(errno);
                fail(report, Stage::Exec);
            }
        }
    }
    set_errno(if denied { libc::EACCES } else { libc::ENOENT });
    fail(report, Stage::Exec)
}

/// Executes `path` (candidate `index` of the search, -1 for a name with a
/// `/`) and returns the errno if that fails. A file that is not a binary
/// and fails with `ENOEXEC` (a script without `#!`) runs through `/bin/sh`;
/// a binary that does is reported at once, as is a missing interpreter.
fn try_exec(args: &ChildArgs, path: *const c_char, index: c_int) -> c_int {
    let envp = match args.envp {
        Some(envp) => envp.as_ptr(),
        // SAFETY: reading the pointer of our (shared, unchanged) environment.
        None => unsafe { environ },
    };
    // SAFETY: path, argv and envp are NUL-terminated strings and
    // NULL-terminated arrays that outlive the call; execve only returns on
    // failure.
    unsafe { libc::execve(path, args.argv.as_ptr(), envp) };
    let errno = Errno::last_raw();
    match errno {
        libc::ENOEXEC if looks_binary(path) => {
            send(args.report, Stage::ExecPath, index);
            set_errno(libc::ENOEXEC);
            fail(args.report, Stage::Exec);
        }
        libc::ENOEXEC => {
            // SAFETY: slot 1 of the scratch array `spawn` set aside for us
            // (it has argv.len() + 2 slots); execve copies the strings.
            unsafe {
                *args.sh_argv.add(1) = path;
                libc::execve(c"/bin/sh".as_ptr(), args.sh_argv, envp);
            }
            Errno::last_raw()
        }
        // SAFETY: access reads the NUL-terminated path only.
        libc::ENOENT if unsafe { libc::access(path, libc::F_OK) } == 0 => {
            send(args.report, Stage::ExecPath, index);
            set_errno(libc::ENOENT);
            fail(args.report, Stage::Interpreter);
        }
        errno => errno,
    }
}

/// Whether the file at `path` is a binary that must never run through the
/// shell: an ELF, or (bash's test) a first line of text holding a NUL byte.
/// An unreadable file counts as binary: the shell could not read it either.
fn looks_binary(path: *const c_char) -> bool {
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe { libc::open(path, libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY) };
    if fd == -1 {
        return true;
    }
    let mut head = [0u8; 80];
    // SAFETY: the kernel writes at most head.len() bytes into head.
    let n = unsafe { libc::read(fd, head.as_mut_ptr().cast(), head.len()) };
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    let Ok(n) = usize::try_from(n) else {
        return true;
    };
    let head = &head[..n];
    let first_line = head.split(|&b| b == b'\n').next().unwrap_or(&[]);
    head.starts_with(b"\x7fELF") || first_line.contains(&0)
}

/// Writes `value` (not negative) in decimal and a NUL at `out`, which has
/// room for [`PID_DIGITS`] bytes.
///
/// # Safety
/// `out` must point to [`PID_DIGITS`] writable bytes.
unsafe fn write_decimal(out: *mut u8, value: c_int) {
    let mut digits = [0u8; PID_DIGITS];
    let mut n = value.max(0) as u32;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
        if n == 0 || len == PID_DIGITS - 1 {
            break;
        }
    }
    for i in 0..len {
        // SAFETY: i < len < PID_DIGITS, within the caller's buffer.
        unsafe { *out.add(i) = digits[len - 1 - i] };
    }
    // SAFETY: len < PID_DIGITS.
    unsafe { *out.add(len) = 0 };
}

fn set_errno(errno: c_int) {
    Errno::set_raw(errno);
}

/// setgroups, then setresgid, then setresuid (the order std and every
/// careful tool uses: after setuid we could no longer change groups). Raw
/// syscalls: glibc's wrappers may signal other threads, and after fork there
/// are none. Real, effective and saved ids all change; the filesystem ids
/// follow the effective ones.
fn drop_privileges(report: c_int, creds: RawCreds) {
    if let Err(stage) = set_ids(creds) {
        fail(report, stage);
    }
    // Belt and braces, as OpenSSH's permanently_set_uid does: if root
    // can be had back, something is badly wrong; run nothing.
    // SAFETY: setresuid takes integers only.
    if creds.uid != 0 && unsafe { libc::syscall(libc::SYS_setresuid, 0, 0, 0) } != -1 {
        send(report, Stage::Regain, 0);
        // SAFETY: _exit ends the child without running anything of ours.
        unsafe { libc::_exit(127) };
    }
}

/// setgroups, then setresgid, then setresuid to `creds`: the stage of the
/// first that fails, with errno set. Async-signal-safe.
fn set_ids(creds: RawCreds) -> Result<(), Stage> {
    // SAFETY: the group list is a live slice of gid_t prepared before fork;
    // the other calls take integers only.
    unsafe {
        if libc::syscall(
            libc::SYS_setgroups,
            creds.groups.len(),
            creds.groups.as_ptr(),
        ) == -1
        {
            return Err(Stage::SetGroups);
        }
        if libc::syscall(libc::SYS_setresgid, creds.gid, creds.gid, creds.gid) == -1 {
            return Err(Stage::SetGid);
        }
        if libc::syscall(libc::SYS_setresuid, creds.uid, creds.uid, creds.uid) == -1 {
            return Err(Stage::SetUid);
        }
    }
    Ok(())
}

/// Points `target` (1 or 2) at a freshly opened file, a capture pipe, or
/// `/dev/null`.
///
/// # Safety
/// A file's `path` must be a valid NUL-terminated string.
unsafe fn redirect(
    report: c_int,
    target: c_int,
    file: Option<RawOutput>,
    dev_null: c_int,
    stage: Stage,
) {
    // SAFETY: the caller guarantees the path; open/dup2/close are
    // async-signal-safe and take plain integers otherwise.
    unsafe {
        // O_NONBLOCK: a FIFO with no reader fails with ENXIO instead of
        // hanging the start; it is cleared again before the daemon runs.
        let (fd, opened) = match file {
            Some(RawOutput::Open { path, flags }) => (
                libc::open(
                    path,
                    flags | libc::O_NONBLOCK,
                    crate::output::OutputFile::MODE as c_uint,
                ),
                true,
            ),
            Some(RawOutput::Fd(fd)) => (fd, false),
            None => (dev_null, false),
        };
        if fd == -1 {
            fail(report, stage);
        }
        if opened {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags == -1 || libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) == -1 {
                fail(report, stage);
            }
        }
        if libc::dup2(fd, target) == -1 {
            fail(report, stage);
        }
        if opened {
            libc::close(fd);
        }
    }
}

/// Closes every descriptor above 2 except `keep` (sorted): `close_range(2)`
/// over the gaps, in constant time whatever RLIMIT_NOFILE is. Kernels
/// before 5.9 lack it; then `/proc/self/fd` is listed with a stack buffer.
fn close_inherited(keep: &[c_int]) -> bool {
    let mut low: c_uint = 3;
    for &fd in keep {
        let fd = fd as c_uint;
        if fd > low && !close_range(low, fd - 1) {
            return close_listed(keep);
        }
        low = low.max(fd.saturating_add(1));
    }
    close_range(low, c_uint::MAX) || close_listed(keep)
}

fn close_range(low: c_uint, high: c_uint) -> bool {
    // SAFETY: close_range only closes descriptors; none of them backs memory
    // that this process still uses (the Plan holds no open files we read).
    unsafe { libc::syscall(libc::SYS_close_range, low, high, 0 as c_uint) == 0 }
}

/// The fallback for [`close_inherited`], reading `/proc/self/fd` with raw
/// `getdents64` into a stack buffer (opendir would allocate).
fn close_listed(keep: &[c_int]) -> bool {
    // SAFETY: the path is a static C string literal.
    let dir = unsafe {
        libc::open(
            c"/proc/self/fd".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dir == -1 {
        return false;
    }
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: the kernel writes at most buf.len() bytes into buf.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len()) };
        if n <= 0 {
            // SAFETY: closing our own directory descriptor.
            unsafe { libc::close(dir) };
            return n == 0;
        }
        // linux_dirent64: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name.
        let mut offset = 0usize;
        while offset < n as usize {
            let Some(&[lo, hi]) = buf.get(offset + 16..offset + 18) else {
                break;
            };
            let reclen = u16::from_ne_bytes([lo, hi]) as usize;
            let name = buf.get(offset + 19..offset + reclen).unwrap_or(&[]);
            if let Some(fd) = parse_fd(name)
                && fd > 2
                && fd != dir
                && !keep.contains(&fd)
            {
                // SAFETY: closing an inherited descriptor nothing here uses.
                unsafe { libc::close(fd) };
            }
            if reclen == 0 {
                break;
            }
            offset += reclen;
        }
    }
}

/// Parses a NUL-terminated decimal name; `None` for `.` and `..`.
fn parse_fd(name: &[u8]) -> Option<c_int> {
    let mut fd: c_int = 0;
    let mut digits = 0;
    for &b in name {
        match b {
            0 => break,
            b'0'..=b'9' => {
                fd = fd.checked_mul(10)?.checked_add((b - b'0') as c_int)?;
                digits += 1;
            }
            _ => return None,
        }
    }
    (digits > 0).then_some(fd)
}

/// Every disposition back to `SIG_DFL` (the Rust runtime ignores SIGPIPE,
/// `nohup` leaves SIGHUP ignored, glibc's `posix_spawn` leaves its own
/// signals 32 and 33 ignored, and ignored signals survive exec), and an
/// empty signal mask. Raw `rt_sigaction`: glibc's wrappers refuse 32 and 33.
fn reset_signals() -> bool {
    /// The kernel's `struct sigaction` for x86_64 and friends (handler,
    /// flags, restorer, 64-bit mask), which rt_sigaction takes directly.
    #[repr(C)]
    struct KernelSigaction {
        handler: libc::sighandler_t,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let default = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for signal in 1..=64 {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: `default` is a live struct of the layout the kernel reads,
        // and the size argument is that of its mask; SIG_DFL runs no code.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                &default as *const KernelSigaction,
                ptr::null_mut::<KernelSigaction>(),
                std::mem::size_of::<u64>(),
            )
        };
    }
    // SAFETY: `set` is a local sigset_t initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, ptr::null_mut()) == 0
    }
}

/// Writes one record; a write error cannot be reported anywhere, so it is
/// ignored (the parent then sees a missing PID or a clean EOF).
fn send(report: c_int, stage: Stage, value: c_int) {
    let record = encode(stage, value);
    // SAFETY: `record` is a live stack buffer of RECORD_LEN bytes.
    unsafe { libc::write(report, record.as_ptr().cast(), RECORD_LEN) };
}

/// Reports `stage` with the current errno and exits.
fn fail(report: c_int, stage: Stage) -> ! {
    send(report, stage, Errno::last_raw());
    // SAFETY: see `intermediate`: _exit skips the parent's atexit handlers.
    unsafe { libc::_exit(127) }
}

#[cfg(test)]
mod tests {
    use super::{PID_DIGITS, parse_fd, write_decimal};

    #[test]
    fn writes_pids_in_decimal() {
        for (pid, text) in [
            (0, "0"),
            (7, "7"),
            (4194304, "4194304"),
            (i32::MAX, "2147483647"),
        ] {
            let mut buf = [0xffu8; PID_DIGITS];
            // SAFETY: a buffer of PID_DIGITS bytes.
            unsafe { write_decimal(buf.as_mut_ptr(), pid) };
            let end = buf.iter().position(|&b| b == 0).unwrap();
            assert_eq!(&buf[..end], text.as_bytes());
        }
    }

    #[test]
    fn parses_proc_fd_names() {
        assert_eq!(parse_fd(b"17\0\0"), Some(17));
        assert_eq!(parse_fd(b".\0"), None);
        assert_eq!(parse_fd(b"..\0"), None);
        assert_eq!(parse_fd(b"\0"), None);
    }
}
