//! The supervisor benchmark (`--supervisor`): what `daemonize --restart`
//! costs, against floors measured in the same run.
//!
//! 1. Restart latency: the time from a child's `_exit` to the next child's
//!    first instruction, with `--restart-delay 0` (and `--restart-max-delay
//!    0`). The probe is `rchild.c`, which appends `S <CLOCK_MONOTONIC ns>
//!    <pid>` as its first action and `E <ns> <pid>` just before `_exit` to
//!    `$RC_OUT`; a latency is S(k+1) − E(k). The floor is `minisup.c`, a bare
//!    fork/execv/waitpid loop running the same probe. Both C files are
//!    built `cc -O2 -static` into the work directory at bench time. The two
//!    supervisors alternate in rounds (after one discarded warm-up round of
//!    each); daemonize is given `--max-restarts N`, so that, like `minisup
//!    N`, it ends by itself after N restarts of the looping probe. The
//!    probe runs with `RC_LIFE_MS=0` and `RC_CODE=0` on both sides: a
//!    command that exits non-zero while `daemonize` is still confirming
//!    the first start fails the start (exit 125), which with a 0 ms probe
//!    is a race that `daemonize` loses about one time in six; an exit 0
//!    there counts as a run that ended, and `--restart` (always) restarts
//!    it by the same path as any other end.
//! 2. Idle cost: `daemonize --restart -- sleep 1000`, once its supervisor is
//!    blocked in poll: its context switches (`/proc/PID/status`, summed
//!    over its threads) over 10 s, then, if `strace` is installed, its
//!    system calls over another 10 s (`strace -c -f -p PID`, ended with
//!    SIGINT). The windows are apart because attaching strace is itself a
//!    few context switches.
//! 3. Memory: that idle supervisor's VmRSS and VmHWM, with where the
//!    resident pages are (from `/proc/PID/smaps`); `minisup 1 sleep 1000`
//!    as the C floor; and the anchors measured elsewhere for reference.
//!
//! Run it from the repository root:
//!
//!     cargo build --release --workspace && cargo run --release -p daemonize-bench -- --supervisor
//!
//! Options: `--runs N` restarts per supervisor (default 2000), `--only
//! restart` or `--only idle` (idle cost and memory) for one part,
//! `--daemonize PATH` to measure another build, `--probes DIR` for the
//! directory holding `minisup.c` and `rchild.c` (default
//! `/work/shared/bench`).
//!
//! Every process it starts is tracked by a pidfd, and the benchmark is a
//! child subreaper, so daemonized supervisors and whatever they leave are
//! its children: at the end (also after a failure, or SIGINT/SIGTERM) each
//! one still running is killed through its pidfd and reaped. Nothing is
//! ever looked up or killed by name.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::procs::{Proc, Signals, Wake, children_by_ppid, read_pid, wait_readable};

pub struct Options {
    /// Restarts measured per supervisor.
    pub runs: usize,
    /// `restart` or `idle`: one part only.
    pub only: Option<String>,
    pub daemonize: PathBuf,
    /// Where `minisup.c` and `rchild.c` are.
    pub probes: PathBuf,
}

/// Alternating rounds the restarts are split into, and the warm-up
/// round's size.
const ROUNDS: usize = 10;
const WARM_UP: usize = 50;
/// The idle measurement window.
const IDLE_WINDOW: Duration = Duration::from_secs(10);
/// Goals (the supervision issue).
const LATENCY_GOAL: f64 = 2.0;
const RSS_GOAL_KIB: u64 = 1024;

type R<T> = Result<T, String>;

/// Runs the benchmark and returns the exit status.
pub fn main(options: Options) -> i32 {
    let part = options.only.as_deref();
    if part.is_some_and(|p| p != "restart" && p != "idle") {
        eprintln!("--supervisor --only takes `restart` or `idle`");
        return 2;
    }
    if !options.daemonize.is_absolute() {
        eprintln!("--daemonize needs an absolute path (the daemon runs in /)");
        return 2;
    }
    let signals = match Signals::catch() {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("cannot catch SIGINT and SIGTERM: {e}");
            return 1;
        }
    };
    // Daemonized supervisors, and whatever they leave, reparent to us, so
    // they are our children: reapable, and safe to kill by PID.
    // SAFETY: prctl with integer arguments only.
    let subreaper = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } == 0;
    let work = std::env::temp_dir().join(format!("daemonize-bench-sup-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&work) {
        eprintln!("cannot create {}: {e}", work.display());
        return 1;
    }
    let mut bench = Bench {
        signals,
        work,
        procs: Vec::new(),
        subreaper,
        daemonize: options.daemonize.clone(),
    };
    let result = bench.run(&options);
    bench.cleanup();
    match result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&bench.work);
            0
        }
        Err(e) => {
            eprintln!(
                "daemonize-bench --supervisor: {e} (files kept in {})",
                bench.work.display()
            );
            1
        }
    }
}

struct Bench {
    signals: Signals,
    work: PathBuf,
    /// Every process started or found, for the cleanup.
    procs: Vec<Proc>,
    subreaper: bool,
    daemonize: PathBuf,
}

impl Bench {
    fn run(&mut self, options: &Options) -> R<()> {
        println!("daemonize supervisor benchmark (daemonize --restart)");
        println!("machine: {}", crate::machine());
        println!("daemonize: {}", self.daemonize.display());
        if !self.subreaper {
            println!(
                "warning: PR_SET_CHILD_SUBREAPER failed; supervisors are tracked by pidfd only"
            );
        }
        let part = options.only.as_deref();
        let cc = crate::which("cc")
            .or_else(|| crate::which("gcc"))
            .ok_or("no C compiler (cc or gcc) in PATH")?;
        let minisup = self.build_probe(&cc, &options.probes, "minisup")?;
        if part != Some("idle") {
            let rchild = self.build_probe(&cc, &options.probes, "rchild")?;
            println!(
                "probes: {}/{{minisup,rchild}}.c, built `{} -O2 -static`",
                options.probes.display(),
                cc.display()
            );
            self.restart_latency(&minisup, &rchild, options.runs.max(ROUNDS))?;
        }
        if part != Some("restart") {
            self.idle(&minisup)?;
        }
        Ok(())
    }

    fn build_probe(&self, cc: &Path, probes: &Path, name: &str) -> R<PathBuf> {
        crate::build_probe(cc, probes, name, &self.work)
    }

    // ---- restart latency ------------------------------------------------

    fn restart_latency(&mut self, minisup: &Path, rchild: &Path, runs: usize) -> R<()> {
        let per_round = runs.div_ceil(ROUNDS);
        println!(
            "\nRestart latency: rchild's E (just before _exit) to the next rchild's S (its first instruction); RC_LIFE_MS=0 RC_CODE=0"
        );
        println!(
            "  {} restarts per supervisor in {ROUNDS} alternating rounds of {per_round}, after a discarded warm-up round of {WARM_UP}",
            per_round * ROUNDS
        );
        self.floor_round(minisup, rchild, WARM_UP)?;
        self.daemonize_round(rchild, WARM_UP)?;
        let (mut floor, mut ours) = (Vec::new(), Vec::new());
        let mut round_ratios = Vec::new();
        for _ in 0..ROUNDS {
            let mut f = self.floor_round(minisup, rchild, per_round)?;
            let mut d = self.daemonize_round(rchild, per_round)?;
            floor.extend_from_slice(&f);
            ours.extend_from_slice(&d);
            round_ratios.push(crate::median(&mut d) as f64 / crate::median(&mut f) as f64);
        }
        floor.sort_unstable();
        ours.sort_unstable();
        let us = |v: &[u64], p: f64| format!("{:.0}µs", percentile(v, p) as f64 / 1e3);
        println!(
            "  {:<44} {:>8} {:>9} {:>9} {:>9} {:>9}",
            "supervisor", "restarts", "min", "median", "p90", "p99"
        );
        for (name, v) in [
            ("floor: minisup (fork, execv, waitpid)", &floor),
            ("daemonize --restart --restart-delay 0", &ours),
        ] {
            println!(
                "  {:<44} {:>8} {:>9} {:>9} {:>9} {:>9}",
                name,
                v.len(),
                us(v, 0.0),
                us(v, 0.5),
                us(v, 0.9),
                us(v, 0.99)
            );
        }
        let ratio = |p: f64| percentile(&ours, p) as f64 / percentile(&floor, p) as f64;
        let median_ratio = ratio(0.5);
        println!(
            "  {:<44} {:>8} {:>9} {:>8.2}x {:>8.2}x {:>8.2}x",
            "ratio daemonize / floor",
            "",
            format!("{:.2}x", ratio(0.0)),
            median_ratio,
            ratio(0.9),
            ratio(0.99)
        );
        let diff = |p: f64| {
            let d = percentile(&ours, p) as f64 - percentile(&floor, p) as f64;
            format!("{:+.0}µs", d / 1e3)
        };
        println!(
            "  {:<44} {:>8} {:>9} {:>9} {:>9} {:>9}",
            "difference daemonize − floor",
            "",
            diff(0.0),
            diff(0.5),
            diff(0.9),
            diff(0.99)
        );
        let mut sorted_ratios = round_ratios.clone();
        println!(
            "  per-round median ratios (their median {:.2}x): {}",
            crate::median(&mut sorted_ratios),
            round_ratios
                .iter()
                .map(|r| format!("{r:.2}x"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        println!(
            "  goal: median ≤ {LATENCY_GOAL}x the floor: {}",
            verdict(median_ratio <= LATENCY_GOAL)
        );
        Ok(())
    }

    /// `minisup n+1 rchild`: n restarts.
    fn floor_round(&mut self, minisup: &Path, rchild: &Path, n: usize) -> R<Vec<u64>> {
        let log = self.fresh("floor.log")?;
        let mut command = Command::new(minisup);
        command
            .arg((n + 1).to_string())
            .arg(rchild)
            .env("RC_OUT", &log)
            .env("RC_LIFE_MS", "0")
            .env("RC_CODE", "0")
            .env_remove("RC_NOTIFY_FD");
        let proc = self.spawn("minisup", &mut command, None)?;
        let status = self.finish(&proc, round_timeout(n))?;
        if status != Some(0) {
            return Err(format!("minisup ended with wait status {status:?}"));
        }
        let (latencies, runs) = parse_probe_log(&log)?;
        if runs != n + 1 {
            return Err(format!("minisup ran rchild {runs} times, not {}", n + 1));
        }
        Ok(latencies)
    }

    /// daemonize supervising rchild in a crash loop, giving up after n
    /// restarts.
    fn daemonize_round(&mut self, rchild: &Path, n: usize) -> R<Vec<u64>> {
        let log = self.fresh("daemonize.log")?;
        let pidfile = self.fresh("restart.pid")?;
        let sup_pidfile = self.fresh("restart-sup.pid")?;
        let mut rc_out = OsString::from("RC_OUT=");
        rc_out.push(&log);
        let mut command = Command::new(&self.daemonize);
        command
            .args([
                "--restart",
                "--restart-delay",
                "0",
                "--restart-max-delay",
                "0",
            ])
            .args(["--max-restarts", &n.to_string()])
            .arg("-p")
            .arg(&pidfile)
            .arg("-P")
            .arg(&sup_pidfile)
            .arg("-E")
            .arg(rc_out)
            .args(["-E", "RC_LIFE_MS=0", "-E", "RC_CODE=0", "--"])
            .arg(rchild)
            .env_remove("RC_NOTIFY_FD");
        let supervisor = self.start_supervisor(&mut command, &sup_pidfile, "restart")?;
        let status = match self.finish(&supervisor, round_timeout(n)) {
            Ok(status) => status,
            Err(e) => {
                self.stop_supervisor(&supervisor, &sup_pidfile, &pidfile);
                return Err(format!(
                    "{e} (daemonize --max-restarts {n} did not end by itself)"
                ));
            }
        };
        if self.subreaper && status != Some(0) {
            return Err(format!(
                "the daemonize supervisor ended with wait status {status:?}"
            ));
        }
        let (latencies, runs) = parse_probe_log(&log)?;
        if runs != n + 1 {
            println!(
                "  note: daemonize --max-restarts {n} ran rchild {runs} times, not {}",
                n + 1
            );
        }
        if latencies.is_empty() {
            return Err("daemonize never restarted rchild".into());
        }
        Ok(latencies)
    }

    // ---- idle cost and memory -------------------------------------------

    fn idle(&mut self, minisup: &Path) -> R<()> {
        let sleep = crate::which("sleep").ok_or("no sleep in PATH")?;
        let pidfile = self.fresh("idle.pid")?;
        let sup_pidfile = self.fresh("idle-sup.pid")?;
        let mut command = Command::new(&self.daemonize);
        command
            .arg("--restart")
            .arg("-p")
            .arg(&pidfile)
            .arg("-P")
            .arg(&sup_pidfile)
            .arg("--")
            .arg(&sleep)
            .arg("1000");
        let supervisor = self.start_supervisor(&mut command, &sup_pidfile, "idle")?;
        let result = self.measure_idle(&supervisor, &pidfile, &sleep, minisup);
        self.stop_supervisor(&supervisor, &sup_pidfile, &pidfile);
        result
    }

    fn measure_idle(&mut self, sup: &Proc, pidfile: &Path, sleep: &Path, minisup: &Path) -> R<()> {
        let pid = sup.pid;
        let child = self.until(
            "the pidfile to name the child",
            Duration::from_secs(5),
            || read_pid(pidfile),
        )?;
        // Up: the child is `sleep` (exec'd), and the supervisor is asleep in
        // its poll.
        let blocked = self.until(
            "the supervisor to block in poll",
            Duration::from_secs(5),
            || {
                let exe = std::fs::read_link(format!("/proc/{child}/exe")).ok()?;
                (exe == sleep).then_some(())?;
                blocked_in(pid)
            },
        )?;
        let threads = status_field(pid, "Threads").unwrap_or(0);
        println!(
            "\nIdle supervisor: daemonize --restart -- sleep 1000 (supervisor pid {pid}, {threads} thread(s), blocked in {blocked}; child pid {child})"
        );
        let before = ctxt_switches(pid).ok_or("cannot read the supervisor's context switches")?;
        self.signals.sleep(IDLE_WINDOW)?;
        let after = ctxt_switches(pid).ok_or("the supervisor went away during the window")?;
        let (voluntary, involuntary) = (after.0 - before.0, after.1 - before.1);
        println!(
            "  {:<40} {voluntary} voluntary, {involuntary} involuntary   goal 0: {}",
            format!("context switches in {} s", IDLE_WINDOW.as_secs()),
            verdict(voluntary + involuntary == 0)
        );
        let memory = Memory::of(pid).ok_or("cannot read the supervisor's memory")?;
        match crate::which("strace") {
            Some(strace) => self.strace_window(&strace, pid)?,
            None => println!("  system calls: strace is not installed, not measured"),
        }
        if read_pid(pidfile) != Some(child) {
            println!("  note: the child changed during the idle windows (it was restarted)");
        }

        let floor = self.minisup_memory(minisup, sleep)?;
        println!("\nMemory of the idle supervisor (KiB, /proc/PID/status):");
        println!("  {:<40} {:>9} {:>9}", "process", "VmRSS", "VmHWM");
        println!(
            "  {:<40} {:>9} {:>9}   goal VmRSS ≤ {RSS_GOAL_KIB}: {}",
            "daemonize --restart (supervisor)",
            memory.rss,
            memory.hwm,
            verdict(memory.rss <= RSS_GOAL_KIB)
        );
        println!(
            "  {:<40} RssAnon {}, RssFile {}, RssShmem {}",
            "", memory.anon, memory.file, memory.shmem
        );
        println!("  {:<40} by mapping: {}", "", memory.mappings);
        println!(
            "  {:<40} {:>9} {:>9}",
            "floor: minisup 1 sleep 1000 (C, static)", floor.rss, floor.hwm
        );
        println!("  anchors, measured elsewhere (VmRSS):");
        for (name, kib) in [
            ("s6-supervise", "1600–1716"),
            ("runsv", "1380"),
            ("supervise (daemontools)", "1280–1376"),
            ("daemon (libslack)", "1700"),
        ] {
            println!("  {name:<40} {kib:>9}");
        }
        Ok(())
    }

    /// `strace -c -f -p PID` for one window, ended with SIGINT.
    fn strace_window(&mut self, strace: &Path, pid: i32) -> R<()> {
        let out = self.fresh("strace.txt")?;
        let err = self.fresh("strace.err")?;
        let mut command = Command::new(strace);
        command
            .args(["-c", "-f", "-o"])
            .arg(&out)
            .args(["-p", &pid.to_string()]);
        let tracer = self.spawn("strace", &mut command, Some(&err))?;
        let attached = self.until("strace to attach", Duration::from_secs(5), || {
            if tracer.exited() {
                return Some(false);
            }
            (status_field(pid, "TracerPid") == Some(u64::try_from(tracer.pid).ok()?))
                .then_some(true)
        })?;
        if !attached {
            let _ = self.finish(&tracer, Duration::from_secs(5));
            let why = std::fs::read_to_string(&err).unwrap_or_default();
            println!("  system calls: strace could not attach: {}", why.trim());
            return Ok(());
        }
        let before = ctxt_switches(pid).unwrap_or_default();
        let slept = self.signals.sleep(IDLE_WINDOW);
        let after = ctxt_switches(pid).unwrap_or_default();
        // Detached cleanly even when interrupted: SIGINT, not interruptible.
        tracer
            .signal(libc::SIGINT)
            .map_err(|e| format!("cannot interrupt strace: {e}"))?;
        if !tracer.wait(Duration::from_secs(10)) {
            let _ = tracer.signal(libc::SIGKILL);
            return Err("strace did not end within 10 s of SIGINT".into());
        }
        tracer.reap();
        slept?;
        let report = std::fs::read_to_string(&out).unwrap_or_default();
        let calls = parse_strace(&report);
        let total: u64 = calls.iter().map(|(_, n)| n).sum();
        let listed = calls
            .iter()
            .map(|(name, n)| format!("{name} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "  {:<40} {total}{}   goal 0: {}",
            format!("system calls in {} s (strace -c -f)", IDLE_WINDOW.as_secs()),
            if listed.is_empty() {
                String::new()
            } else {
                format!(" ({listed})")
            },
            verdict(total == 0)
        );
        println!(
            "  {:<40} {} voluntary, {} involuntary (between attach and SIGINT)",
            "context switches under strace",
            after.0.saturating_sub(before.0),
            after.1.saturating_sub(before.1)
        );
        Ok(())
    }

    /// The C floor's memory: `minisup 1 sleep 1000`, waiting for sleep.
    fn minisup_memory(&mut self, minisup: &Path, sleep: &Path) -> R<Memory> {
        let mut command = Command::new(minisup);
        command.arg("1").arg(sleep).arg("1000");
        let floor = self.spawn("minisup (memory)", &mut command, None)?;
        let child = self.until("minisup's sleep", Duration::from_secs(5), || {
            let child = children(floor.pid).into_iter().next()?;
            let exe = std::fs::read_link(format!("/proc/{child}/exe")).ok()?;
            (exe == sleep).then_some(child)
        })?;
        let measured = self.until("minisup to wait", Duration::from_secs(5), || {
            blocked_in(floor.pid)?;
            Memory::of(floor.pid)
        });
        // minisup's unreaped child: its PID is its own.
        let sleeper = Proc::open("minisup's sleep", child);
        if let Ok(sleeper) = &sleeper {
            let _ = sleeper.signal(libc::SIGKILL);
        }
        let _ = self.finish(&floor, Duration::from_secs(5));
        measured
    }

    // ---- processes --------------------------------------------------------

    /// Spawns `command` with stdin and stdout on /dev/null and stderr on
    /// `stderr` (else /dev/null), tracked by a pidfd. It is reaped with
    /// waitpid (`finish`), not through `Child`, hence the allowance.
    #[allow(clippy::zombie_processes)]
    fn spawn(&mut self, name: &str, command: &mut Command, stderr: Option<&Path>) -> R<Proc> {
        let stderr = match stderr {
            Some(path) => File::create(path)
                .map(Stdio::from)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?,
            None => Stdio::null(),
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot run {name} ({:?}): {e}", command.get_program()))?;
        let pid = i32::try_from(child.id()).map_err(|_| "PID out of range".to_owned())?;
        // Our unreaped child: the pidfd is for this very process.
        let proc = Proc::open(name, pid)?;
        self.track(&proc);
        Ok(proc)
    }

    /// Runs a daemonize start to its end and returns its supervisor, found
    /// in the -P file.
    fn start_supervisor(
        &mut self,
        command: &mut Command,
        sup_pidfile: &Path,
        tag: &str,
    ) -> R<Proc> {
        let err = self.fresh(&format!("{tag}-start.err"))?;
        let start = self.spawn("daemonize", command, Some(&err))?;
        let status = self.finish(&start, Duration::from_secs(10))?;
        if status != Some(0) {
            let why = std::fs::read_to_string(&err).unwrap_or_default();
            return Err(format!(
                "daemonize --restart failed (wait status {status:?}): {}",
                why.trim()
            ));
        }
        let pid = self.until("the supervisor pidfile", Duration::from_secs(5), || {
            read_pid(sup_pidfile)
        })?;
        let supervisor = Proc::open("daemonize supervisor", pid)?;
        self.track(&supervisor);
        Ok(supervisor)
    }

    /// `daemonize --stop`, then SIGTERM and SIGKILL through the pidfd if
    /// the supervisor is still there.
    fn stop_supervisor(&mut self, supervisor: &Proc, sup_pidfile: &Path, pidfile: &Path) {
        if !supervisor.exited() {
            let mut command = Command::new(&self.daemonize);
            command
                .arg("--stop")
                .arg("-P")
                .arg(sup_pidfile)
                .arg("-p")
                .arg(pidfile)
                .args(["--timeout", "5"]);
            // Not interruptible: this is the way out.
            match self.spawn("daemonize --stop", &mut command, None) {
                Ok(stop) => {
                    if !stop.wait(Duration::from_secs(15)) {
                        eprintln!(
                            "daemonize --stop (pid {}) still running after 15 s",
                            stop.pid
                        );
                    }
                    stop.reap();
                }
                Err(e) => eprintln!("{e}"),
            }
        }
        for signal in [libc::SIGTERM, libc::SIGKILL] {
            if supervisor.wait(Duration::from_secs(5)) {
                break;
            }
            eprintln!(
                "the supervisor (pid {}) is still running: signal {signal}",
                supervisor.pid
            );
            let _ = supervisor.signal(signal);
        }
        supervisor.reap();
    }

    /// Waits for `proc` to end (interruptibly) and reaps it.
    fn finish(&self, proc: &Proc, timeout: Duration) -> R<Option<i32>> {
        match wait_readable(Some(proc.fd.as_raw_fd()), Some(&self.signals), timeout)? {
            Wake::Ready => Ok(proc.reap()),
            Wake::Timeout => Err(format!(
                "{} (pid {}) still running after {timeout:?}",
                proc.name, proc.pid
            )),
        }
    }

    /// Polls `probe` every 2 ms until it answers, for at most `timeout`.
    fn until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut() -> Option<T>,
    ) -> R<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = probe() {
                return Ok(value);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("timed out after {timeout:?} waiting for {what}"));
            }
            self.signals.sleep(left.min(Duration::from_millis(2)))?;
        }
    }

    fn track(&mut self, proc: &Proc) {
        if let Ok(fd) = proc.fd.try_clone() {
            self.procs.push(Proc {
                name: proc.name.clone(),
                pid: proc.pid,
                fd,
                child: proc.child,
            });
        }
    }

    /// A path in the work directory, with nothing there.
    fn fresh(&self, name: &str) -> R<PathBuf> {
        let path = self.work.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(path),
            Err(e) => Err(format!("cannot remove {}: {e}", path.display())),
        }
    }

    /// Kills whatever is left, through pidfds: every tracked process that
    /// still runs, then every child we have (daemons and their leftovers
    /// reparent to us), until there are none. Never interruptible.
    fn cleanup(&mut self) {
        for proc in std::mem::take(&mut self.procs) {
            if !proc.exited() {
                eprintln!("cleanup: killing {} (pid {})", proc.name, proc.pid);
                let _ = proc.signal(libc::SIGKILL);
                proc.wait(Duration::from_secs(5));
            }
            proc.reap();
        }
        let me = std::process::id() as i32;
        for _ in 0..20 {
            // SAFETY: waitpid with a null status pointer.
            while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
            let left = children_by_ppid(me);
            if left.is_empty() {
                return;
            }
            for pid in left {
                // Our unreaped child: its PID is its own.
                if let Ok(proc) = Proc::open("leftover", pid) {
                    eprintln!("cleanup: killing leftover child pid {pid}");
                    let _ = proc.signal(libc::SIGKILL);
                    proc.wait(Duration::from_secs(5));
                    proc.reap();
                }
            }
        }
    }
}

fn round_timeout(n: usize) -> Duration {
    Duration::from_secs(30) + Duration::from_millis(20) * u32::try_from(n).unwrap_or(u32::MAX)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i]
}

/// The probe's log: the restart latencies S(k+1) − E(k), in ns, and the
/// number of runs (S lines).
fn parse_probe_log(log: &Path) -> R<(Vec<u64>, usize)> {
    let text =
        std::fs::read_to_string(log).map_err(|e| format!("cannot read {}: {e}", log.display()))?;
    let mut latencies = Vec::new();
    let mut runs = 0;
    let mut last_end: Option<(u64, &str)> = None;
    for line in text.lines() {
        let mut fields = line.split(' ');
        let (Some(kind), Some(ns), Some(pid)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(format!("bad line in {}: {line:?}", log.display()));
        };
        let ns: u64 = ns
            .parse()
            .map_err(|_| format!("bad time in {}: {line:?}", log.display()))?;
        match kind {
            "S" => {
                runs += 1;
                if let Some((end, ended)) = last_end.take()
                    && ended != pid
                {
                    latencies.push(ns.saturating_sub(end));
                }
            }
            "E" => last_end = Some((ns, pid)),
            _ => return Err(format!("bad line in {}: {line:?}", log.display())),
        }
    }
    Ok((latencies, runs))
}

/// `strace -c` summary rows: (syscall, calls), without the total.
fn parse_strace(report: &str) -> Vec<(String, u64)> {
    report
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let name = *fields.last()?;
            if fields.len() < 5 || name == "total" || fields[0].parse::<f64>().is_err() {
                return None;
            }
            Some((name.to_owned(), fields[3].parse().ok()?))
        })
        .collect()
}

/// A numeric field of /proc/PID/status (the number before any unit).
fn status_field(pid: i32, name: &str) -> Option<u64> {
    status_field_in(
        &std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        name,
    )
}

fn status_field_in(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Voluntary and involuntary context switches, summed over the threads.
fn ctxt_switches(pid: i32) -> Option<(u64, u64)> {
    let mut total = (0, 0);
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let status = std::fs::read_to_string(task.ok()?.path().join("status")).ok()?;
        total.0 += status_field_in(&status, "voluntary_ctxt_switches")?;
        total.1 += status_field_in(&status, "nonvoluntary_ctxt_switches")?;
    }
    Some(total)
}

/// The blocking system call `pid` sleeps in, if it sleeps in one.
fn blocked_in(pid: i32) -> Option<&'static str> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let state = status.lines().find_map(|l| l.strip_prefix("State:"))?;
    if !state.trim_start().starts_with('S') {
        return None;
    }
    let syscall = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    match syscall.split_whitespace().next()?.parse::<i64>().ok()? {
        libc::SYS_poll => Some("poll"),
        libc::SYS_ppoll => Some("ppoll"),
        libc::SYS_wait4 => Some("wait4"),
        libc::SYS_waitid => Some("waitid"),
        libc::SYS_epoll_wait => Some("epoll_wait"),
        libc::SYS_epoll_pwait => Some("epoll_pwait"),
        _ => None,
    }
}

/// The children of `pid` (its main thread's).
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

struct Memory {
    rss: u64,
    hwm: u64,
    anon: u64,
    file: u64,
    shmem: u64,
    /// Resident KiB by mapping, as text.
    mappings: String,
}

impl Memory {
    fn of(pid: i32) -> Option<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name| status_field_in(&status, name);
        Some(Memory {
            rss: field("VmRSS")?,
            hwm: field("VmHWM")?,
            anon: field("RssAnon").unwrap_or(0),
            file: field("RssFile").unwrap_or(0),
            shmem: field("RssShmem").unwrap_or(0),
            mappings: mappings(pid).unwrap_or_else(|| "unavailable".into()),
        })
    }
}

/// Resident KiB of the executable's text, read-only data and data, and of
/// the anonymous mappings, heap, stack and the rest, from smaps.
fn mappings(pid: i32) -> Option<String> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let exe = exe.to_str()?;
    let names = [
        "text", "rodata", "data", "anon/bss", "heap", "stack", "other",
    ];
    let mut kib = [0u64; 7];
    let mut current = 6;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let header = fields.first().is_some_and(|f| {
            f.contains('-') && f.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        });
        if header {
            let perms = fields.get(1).copied().unwrap_or("");
            let path = fields.get(5..).map(|p| p.join(" ")).unwrap_or_default();
            current = match path.as_str() {
                p if p == exe => match perms {
                    p if p.starts_with("r-x") => 0,
                    p if p.starts_with("rw") => 2,
                    _ => 1,
                },
                "" => 3,
                "[heap]" => 4,
                "[stack]" => 5,
                _ => 6,
            };
        } else if fields.first() == Some(&"Rss:") {
            kib[current] += fields.get(1)?.parse::<u64>().ok()?;
        }
    }
    Some(
        names
            .iter()
            .zip(kib)
            .filter(|(_, k)| *k > 0)
            .map(|(name, k)| format!("{name} {k}"))
            .collect::<Vec<_>>()
            .join(", "),
    )
}
