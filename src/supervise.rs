//! The supervisor (`--restart`, docs/design.md "Supervision"): a detached
//! `daemonize` that starts COMMAND as its child and keeps it running.
//!
//! It is started by `launch::start_supervised` (a double fork and an exec
//! of `/proc/self/exe`), finds its status pipe in the environment, and
//! runs the first start itself, exactly as a plain start runs
//! (`launch::start_child`): every failure is printed on the caller's
//! standard error, which it shares until then, and the exit status goes
//! back as one byte on the status pipe. From then on its messages go to
//! the daemon's log (`-e`, else `-o`), one timestamped line each.
//!
//! The loop is thin: one `poll(2)` over a signalfd and the readiness
//! channel, with the state machine's deadline as its timeout (none while
//! nothing is pending, so an idle supervisor makes no system call). Each
//! wake turns what it finds into [`Event`]s for [`Machine::step`] and
//! carries out the [`Effect`]s. The decisions are all in `machine`.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use anyhow::{Context, anyhow};
use nix::libc::{self, c_int};
use nix::poll::{PollFd, PollFlags};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::{Pid, getpid};

use crate::capture::{Capture, Settings, SyslogSettings};
use crate::cli::Cli;
use crate::clock;
use crate::detach;
use crate::error::{self, Failure};
use crate::launch;
use crate::machine::{Config, Effect, End, Event, Machine, Policy, State};
use crate::output::{NoPump, Pump};
use crate::plan::Plan;
use crate::process;
use crate::report;
use crate::state::{self, Phase, Record, Request};
use crate::sys;

/// Signals passed on to COMMAND as they come (as FreeBSD daemon(8) and
/// s6-supervise do); TERM and INT end supervision instead.
const FORWARDED: [c_int; 7] = [
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGQUIT,
    libc::SIGWINCH,
    libc::SIGALRM,
    libc::SIGCONT,
];

/// The supervisor's `main`: `status` is the status pipe's write end.
/// Returns its exit status (the original process reports the first
/// start's, from the byte).
pub fn run(mut cli: Cli, status: OwnedFd) -> u8 {
    let mut status = Some(File::from(status));
    let mut answer = |code: u8| {
        if let Some(mut pipe) = status.take() {
            let _ = pipe.write_all(&[code]);
        }
    };
    let mut supervisor = match Supervisor::start(&mut cli) {
        Ok(supervisor) => supervisor,
        Err(failure) => {
            let code = failure.report();
            answer(code);
            return code;
        }
    };
    // From here on, nobody reads the caller's standard error.
    supervisor.redirect_messages();
    answer(0);
    supervisor.run()
}

struct Supervisor {
    plan: Plan,
    machine: Machine,
    signals: SignalFd,
    /// The child running COMMAND, unreaped (so its PID is still its own).
    child: Option<Pid>,
    /// The last child started, for messages about its end.
    last_child: Option<Pid>,
    me: Pid,
    command: String,
    record: Record,
    /// The lock files the record is written into (`state`).
    state_files: Vec<File>,
    /// `/dev/log`, when there is no log file for the messages.
    syslog: Option<UnixDatagram>,
    /// Log capture: COMMAND's output through our pipes.
    capture: Option<Capture>,
}

impl Supervisor {
    /// Everything up to the end of the first start.
    fn start(cli: &mut Cli) -> Result<Supervisor, Failure> {
        absolutize(cli)?;
        // Before the plan's readiness channel blocks its own interrupts,
        // and before any child exists: nothing may slip past the signalfd.
        let mut numbers = vec![libc::SIGCHLD, libc::SIGTERM, libc::SIGINT];
        numbers.extend(FORWARDED);
        numbers.push(state::control_signal());
        let mask = sys::signal_set(&numbers);
        mask.thread_block().context("cannot block signals")?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .context("cannot create a signalfd")?;
        // A log reader that went away is an error to handle, not a death.
        sys::ignore_signal(nix::sys::signal::Signal::SIGPIPE);
        let mut plan = Plan::new(cli)?;
        let mut capture = match cli.captures() {
            true => {
                let capture = Capture::open(
                    &plan.outputs,
                    plan.creds.as_ref(),
                    capture_settings(cli, &plan),
                    &plan.as_user(),
                );
                match capture {
                    Ok(capture) => Some(capture),
                    Err(e) => {
                        for lock in &plan.locks {
                            lock.discard();
                        }
                        return Err(e.into());
                    }
                }
            }
            false => None,
        };
        plan.outputs.captured = capture.as_ref().map(Capture::child_fds);
        // Our paths are absolute now: the supervisor pins no directory.
        std::env::set_current_dir("/").context("cannot change directory to '/'")?;
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(plan.umask));
        let me = getpid();
        if let Some(lock) = plan.supervisor_pidfile()
            && let Err(e) = lock.write_pid(me)
        {
            for lock in &plan.locks {
                lock.discard();
            }
            return Err(e.into());
        }
        let config = config(cli);
        let first = match capture.as_mut() {
            Some(capture) => launch::start_child(&mut plan, capture),
            None => launch::start_child(&mut plan, &mut NoPump),
        }?;
        if let (Some(capture), Some(pid)) = (capture.as_mut(), first) {
            capture.set_pid(pid.as_raw());
        }
        let now = Instant::now();
        let machine = Machine::confirmed(config, now);
        let state_files = plan.locks.iter().filter_map(|l| l.state_file()).collect();
        let command = plan.command().into_owned();
        let mut supervisor = Supervisor {
            plan,
            machine,
            signals,
            child: first,
            last_child: first,
            me,
            command,
            record: Record::new(me.as_raw()),
            state_files,
            syslog: None,
            capture,
        };
        supervisor.record.captures = supervisor.capture.is_some();
        supervisor.record.child = first.map(Pid::as_raw);
        supervisor.record.child_since = first.map(|_| state::epoch_ms(SystemTime::now()));
        Ok(supervisor)
    }

    /// Standard error becomes the daemon's log: `-e`, else `-o`, opened
    /// with the daemon's credentials (never root's through the daemon's
    /// path), appending; or `/dev/null` when there is none.
    fn redirect_messages(&mut self) {
        if self.capture.is_some() {
            // Our messages go through the capture, into its files.
            if let Err(errno) = sys::redirect_stderr(&self.plan.dev_null) {
                tracing::debug!(%errno, "cannot redirect standard error");
            }
            return;
        }
        let outputs = &self.plan.outputs;
        let log = outputs.stderr.as_ref().or(outputs.stdout.as_ref());
        let opened = log.and_then(|file| {
            let flags = libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_NOCTTY;
            detach::open_as(self.plan.creds.as_ref(), &file.c_path, flags).ok()
        });
        let result = match &opened {
            Some(fd) => sys::redirect_stderr(fd),
            None => {
                // No log: the local syslog daemon, if there is one, hears
                // them instead (and `--status` shows the last one).
                self.syslog = syslog_socket();
                sys::redirect_stderr(&self.plan.dev_null)
            }
        };
        if let Err(errno) = result {
            tracing::debug!(%errno, "cannot redirect standard error");
        }
    }

    fn run(mut self) -> u8 {
        let policy = match self.machine.config.policy {
            Policy::Always => Some("always"),
            Policy::OnFailure => Some("on-failure"),
            // Capture alone: nothing to announce.
            Policy::Never => None,
        };
        if let Some(policy) = policy {
            self.say(&format!("started; supervising it (restart {policy})"));
        }
        self.say_notes();
        if self.child.is_none() {
            // COMMAND was done at once: that end counts like any other.
            self.handle(Event::Exited(End::Exited(0)), Instant::now());
        }
        self.write_state();
        // The start-up code's pages go back; the loop's come back as used.
        sys::release_executable_pages();
        loop {
            let retry = self.capture.as_ref().and_then(|c| c.deadline());
            let deadline = [self.machine.deadline(), retry].into_iter().flatten().min();
            let woke = self.wait(deadline);
            if let Some(capture) = self.capture.as_mut() {
                capture.pump(&woke.pipes);
                if capture.deadline().is_some_and(|d| Instant::now() >= d) {
                    capture.retry();
                }
            }
            let said = self.say_notes();
            let now = Instant::now();
            let due = self.machine.deadline().is_some_and(|d| now >= d);
            if !(woke.signals || woke.notices || due || said) {
                // Only output came: nothing for the state machine, and a
                // system call per read is all the capture costs.
                continue;
            }
            if woke.signals {
                self.read_signals(now);
            }
            if woke.notices {
                self.read_notices(now);
            }
            // A child's end comes as SIGCHLD, which only the signalfd
            // reads; after the notices, so a READY=1 sent just before the
            // end counts.
            if woke.signals {
                self.reap(now);
            }
            if due {
                self.handle(Event::Timer, now);
            }
            self.write_state();
        }
    }

    /// One poll: until something arrives, or `deadline`.
    fn wait(&self, deadline: Option<Instant>) -> Woke {
        let ready_fd = self.plan.ready.as_ref().and_then(|r| r.poll_fd());
        let pipes = self.capture.as_ref().map(|c| c.fds()).unwrap_or_default();
        let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
        if let Some(fd) = ready_fd {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        let first_pipe = fds.len();
        let count = pipes.len();
        fds.extend(pipes);
        if let Err(errno) = sys::poll_until(&mut fds, deadline) {
            // Nothing better to do than to look at everything.
            tracing::warn!(%errno, "poll failed");
            return Woke {
                signals: true,
                notices: true,
                pipes: vec![true; count],
            };
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        Woke {
            signals: ready[0],
            notices: ready_fd.is_some() && ready[1],
            pipes: ready[first_pipe..].to_vec(),
        }
    }

    /// What the capture has to say (a held write, a failed rotation);
    /// whether there was anything.
    fn say_notes(&mut self) -> bool {
        let notes = self.capture.as_mut().map(Capture::take_notes);
        let notes = notes.unwrap_or_default();
        for note in &notes {
            self.say(note);
        }
        !notes.is_empty()
    }

    fn read_signals(&mut self, now: Instant) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            let signo = info.ssi_signo as c_int;
            match signo {
                libc::SIGCHLD => {}
                libc::SIGTERM | libc::SIGINT => self.handle(Event::Stop(signo), now),
                _ if signo == state::control_signal() => {
                    // Sent with a value (`SI_QUEUE`) by a control action.
                    let queued = info.ssi_code == libc::SI_QUEUE;
                    match queued.then(|| Request::decode(info.ssi_ptr)).flatten() {
                        Some(Request::Stop { signal, timeout }) => {
                            self.machine.config.stop_timeout = timeout;
                            self.handle(Event::Stop(signal), now);
                        }
                        Some(Request::RestartNow) => self.handle(Event::RestartNow, now),
                        Some(Request::ReopenLogs) => {
                            if let Some(capture) = self.capture.as_mut() {
                                capture.reopen();
                                self.record.reopens += 1;
                                self.say("reopened the log files (--reopen-logs)");
                                self.say_notes();
                            }
                        }
                        None => tracing::debug!(code = info.ssi_code, "stray control signal"),
                    }
                }
                _ => {
                    if let Some(child) = self.child {
                        // Our unreaped child: its PID is its own.
                        let _ = nix::sys::signal::kill(
                            child,
                            nix::sys::signal::Signal::try_from(signo).ok(),
                        );
                    }
                }
            }
        }
    }

    fn read_notices(&mut self, now: Instant) {
        let Some(ready) = self.plan.ready.as_mut() else {
            return;
        };
        let notices = ready.notices(self.child);
        self.record.status.clone_from(&ready.status);
        if let Some(why) = notices.failed {
            self.say(&format!("said: {why}"));
            self.handle(Event::NotReady, now);
        }
        if notices.ready {
            self.handle(Event::Ready, now);
        }
        if notices.watchdog {
            self.handle(Event::Watchdog, now);
        }
    }

    /// Reaps every child that has ended: COMMAND, and whatever it left
    /// that was reparented to us (we are a subreaper).
    fn reap(&mut self, now: Instant) {
        // What the run left in its process group goes with it (as with
        // systemd's KillMode=control-group): a crashed server's workers
        // would hold its port against the next start. Sent while COMMAND
        // is an unreaped zombie, so the group's ID cannot have been reused.
        if let Some(child) = self.child {
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
            if let Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) =
                waitid(Id::Pid(child), flags)
            {
                let _ = sys::killpg(child, libc::SIGKILL);
            }
        }
        loop {
            let end = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, End::Exited(code)),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, End::Signaled(signal as c_int)),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            if Some(end.0) == self.child {
                self.child = None;
                self.record.child = None;
                // Its last lines first, then what we say about its end.
                if let Some(capture) = self.capture.as_mut() {
                    capture.drain();
                }
                self.say_notes();
                self.handle(Event::Exited(end.1), now);
            }
        }
    }

    /// One event through the machine, and its effects carried out; a
    /// spawn that fails is fed back as the end of a run that never began.
    fn handle(&mut self, event: Event, now: Instant) {
        let mut next = Some(event);
        while let Some(event) = next.take() {
            tracing::debug!(?event, "event");
            for effect in self.machine.step(event, now) {
                match effect {
                    Effect::Spawn => {
                        if let Err(why) = self.spawn() {
                            self.say(&why);
                            next = Some(Event::Exited(End::NotStarted));
                        }
                    }
                    Effect::Signal(signal) => self.signal(signal),
                    Effect::ClearPid => {
                        if let Some(lock) = self.plan.pidfile()
                            && let Err(e) = lock.clear_pid()
                        {
                            self.say(&error::render(&e));
                        }
                    }
                    Effect::Say(text) => self.say(&text),
                    Effect::Exit => self.exit(),
                }
            }
        }
    }

    /// Starts COMMAND again; `Err` says why it could not be.
    fn spawn(&mut self) -> Result<(), String> {
        let why = |e: anyhow::Error| format!("cannot restart it: {}", error::render(&e));
        if let Some(ready) = self.plan.ready.as_mut() {
            ready.rearm().map_err(why)?;
        }
        self.plan.outputs.mark_start();
        let spawned = detach::spawn(&self.plan, detach::Fork::Child).map_err(why)?;
        let outcome = spawned.outcome.map_err(why)?;
        if let Some((stage, errno)) = outcome.failure {
            if let Some(pid) = outcome.pid {
                process::reap(pid);
            }
            let failure = report::describe(&self.plan, &outcome, stage, errno);
            return Err(format!(
                "cannot restart it: {}",
                error::render(&failure.error)
            ));
        }
        let pid = outcome
            .pid
            .ok_or_else(|| "cannot restart it: the child did not report its PID".to_owned())?;
        if let Some(ready) = self.plan.ready.as_mut() {
            ready.spawned();
        }
        self.child = Some(pid);
        self.last_child = Some(pid);
        if let Some(capture) = self.capture.as_mut() {
            capture.set_pid(pid.as_raw());
        }
        self.record.child = Some(pid.as_raw());
        self.record.child_since = Some(state::epoch_ms(SystemTime::now()));
        tracing::debug!(pid = pid.as_raw(), "restarted");
        if let Err(e) = launch::write_pid(&self.plan, pid) {
            self.say(&error::render(&e.error));
        }
        Ok(())
    }

    /// Signals COMMAND's process group (its workers too), or COMMAND alone
    /// if it left the group; SIGKILL goes to both.
    fn signal(&self, signal: c_int) {
        let Some(child) = self.child else {
            return;
        };
        // Our unreaped child: its PID, and so its group's ID, is its own.
        let grouped = sys::killpg(child, signal).is_ok();
        if !grouped || signal == libc::SIGKILL {
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::try_from(signal).ok());
        }
    }

    /// Supervision is over: what COMMAND left goes too, then the pidfiles.
    fn exit(&mut self) -> ! {
        let killed = process::kill_leftovers();
        if killed > 0 {
            tracing::info!(killed, "stopped what COMMAND left running");
        }
        if let Some(capture) = self.capture.as_mut() {
            // Everything read, and (a full disk permitting) written.
            capture.flush(Instant::now() + FINAL_FLUSH);
        }
        self.say_notes();
        self.record.phase = Phase::Done;
        self.write_state();
        // Its drop removes the notification socket and its directory.
        drop(self.plan.ready.take());
        for lock in &self.plan.locks {
            lock.discard();
        }
        std::process::exit(0)
    }

    /// One line in the log: `TIME daemonize[PID]: COMMAND (pid N) TEXT`.
    fn say(&mut self, text: &str) {
        let child = self
            .last_child
            .map_or_else(String::new, |pid| format!(" (pid {pid})"));
        if let Some(capture) = self.capture.as_mut() {
            let body = format!("{}{child} {text}", self.command);
            capture.message(self.me.as_raw(), &body);
            self.record.message = Some(text.to_owned());
            return;
        }
        let line = format!(
            "{} daemonize[{}]: {}{child} {text}\n",
            clock::rfc3339(SystemTime::now()),
            self.me,
            self.command
        );
        match &self.syslog {
            // RFC 3164 as the local syslog daemon takes it: facility
            // daemon, severity notice; it adds the time and host.
            Some(socket) => {
                let message = format!("<29>daemonize[{}]: {}{child} {text}", self.me, self.command);
                let _ = socket.send(message.as_bytes());
            }
            // Standard error is unbuffered: one write(2) for the line.
            None => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
        self.record.message = Some(text.to_owned());
    }

    /// The record, for `--status`, in every lock file we hold.
    fn write_state(&mut self) {
        let machine = &self.machine;
        self.record.phase = match machine.state {
            State::Starting { .. } => Phase::Starting,
            State::Up { .. } => Phase::Up,
            State::Restarting { .. } => Phase::Restarting,
            State::Stopping { .. } => Phase::Stopping,
            State::Waiting { .. } => Phase::Waiting,
            State::Done => Phase::Done,
        };
        self.record.restarts = machine.restarts;
        self.record.last_end = machine.last_end.map(crate::machine::describe);
        self.record.next_restart = match machine.state {
            State::Waiting { until } => {
                let left = until.saturating_duration_since(Instant::now());
                Some(state::epoch_ms(SystemTime::now() + left))
            }
            _ => None,
        };
        self.record.seq += 1;
        let bytes = self.record.encode();
        for file in &self.state_files {
            if let Err(e) = file.write_all_at(&bytes, 0) {
                tracing::debug!(%e, "cannot write the state record");
            }
        }
    }
}

/// A datagram socket connected to the local syslog daemon, non-blocking
/// (a message is dropped rather than the loop blocked), if it listens.
fn syslog_socket() -> Option<UnixDatagram> {
    let socket = UnixDatagram::unbound().ok()?;
    socket.connect("/dev/log").ok()?;
    socket.set_nonblocking(true).ok()?;
    Some(socket)
}

/// What the loop's poll found.
struct Woke {
    signals: bool,
    notices: bool,
    /// For each of the capture's descriptors, in its order.
    pipes: Vec<bool>,
}

/// How long held output may wait for a full disk or syslog queue as the
/// supervisor exits, before what is left is given up.
const FINAL_FLUSH: std::time::Duration = std::time::Duration::from_secs(30);

/// The capture settings on the command line.
fn capture_settings(cli: &Cli, plan: &Plan) -> Settings {
    let tag = cli.syslog_tag.clone().unwrap_or_else(|| {
        let command = plan.command();
        Path::new(&*command)
            .file_name()
            .map_or_else(|| command.to_string(), |n| n.to_string_lossy().into_owned())
    });
    Settings {
        max_size: cli.log_max_size,
        keep: cli.log_keep.unwrap_or(5),
        timestamps: cli.log_timestamps,
        syslog: cli.syslog.map(|facility| SyslogSettings {
            facility,
            tag,
            socket: cli
                .syslog_socket
                .clone()
                .unwrap_or_else(|| PathBuf::from("/dev/log")),
        }),
    }
}

/// The supervision settings on the command line.
fn config(cli: &Cli) -> Config {
    Config {
        policy: cli.restart.unwrap_or(Policy::Never),
        delay: cli
            .restart_delay
            .unwrap_or(std::time::Duration::from_millis(100)),
        max_delay: cli
            .restart_max_delay
            .unwrap_or(std::time::Duration::from_secs(30)),
        max_restarts: cli.max_restarts.unwrap_or(0),
        readiness: cli.waits_for_readiness(),
        ready_timeout: Some(cli.ready_timeout()).filter(|t| !t.is_zero()),
        watchdog: cli.watchdog,
        stop_timeout: cli.timeout(),
    }
}

/// Makes the caller's relative paths absolute, so that the supervisor can
/// leave the caller's working directory.
fn absolutize(cli: &mut Cli) -> anyhow::Result<()> {
    let paths = [
        &mut cli.pidfile,
        &mut cli.lockfile,
        &mut cli.supervisor_pidfile,
        &mut cli.chdir,
        &mut cli.stdout,
        &mut cli.stderr,
        &mut cli.syslog_socket,
    ];
    for path in paths.into_iter().flatten() {
        if path.is_relative() {
            *path = std::path::absolute(&*path)
                .map_err(|e| anyhow!(e))
                .with_context(|| format!("cannot resolve '{}'", path.display()))?;
        }
    }
    Ok(())
}
