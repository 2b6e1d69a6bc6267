//! The log-capture benchmark (`--capture`): how fast `daemonize` writes a
//! daemon's output through its supervisor, against `cat > FILE` and the
//! loggers of s6, daemontools and runit, measured side by side in one run
//! (the log-capture issue, "Speed and footprint").
//!
//! The producer is shared/bench's `producer.c`, built `cc -O2 -static` into
//! the work directory: `producer 200000000 100 MODE` writes 200 MB of
//! 100-byte numbered lines, 64 KiB at a time (`block`, a block-buffered
//! program) or one `write` per line (`line`). Each row is one logger and
//! one mode:
//!
//! - `cat > FILE`, the floor, and the peers `s6-log`, `multilog` and
//!   `svlogd` when they are in PATH, run as `producer ... | LOGGER`: timed
//!   from spawning the producer until both processes have been reaped;
//! - `daemonize` plain capture (`--restart=on-failure`), with
//!   `--log-timestamps`, and with `--log-max-size 1M`: timed from spawning
//!   `daemonize` until its detached supervisor has exited, which it does
//!   once the producer has ended (with status 0, so not restarted) and all
//!   its output is written.
//!
//! The benchmark is a child subreaper, so the detached supervisor becomes
//! its child and is reaped with `wait4`, whose `ru_maxrss` is the
//! supervisor's peak RSS (the largest of it and of the children it reaped,
//! the producer, which is smaller). A logger's peak RSS is its `ru_maxrss`
//! too, which counts the memory a process had before its exec: a logger
//! forked by the benchmark would count a copy of the benchmark's, so it is
//! started through the `handoff` binary, which forks it from its own small
//! memory and exits; the logger reparents to us. What is left of that
//! start is printed: the peak RSS of the static producer started that way,
//! writing nothing.
//!
//! Rows alternate within each round (cat, daemonize, peers; block, then
//! line), and each row's figure is the median of its rounds, in MB/s (10^6
//! bytes per second) and as a multiple of cat's median in the same mode.
//! `sync` runs before each timed run, outside the timing. After each run
//! the output is checked: every producer line, exactly once and in order,
//! 200,000,000 bytes of them (lines holding ` daemonize[`, the supervisor's
//! own messages, aside; a timestamp prefix checked and stripped). With
//! rotation only the newest files are kept, so there the kept files must
//! join into a run of lines that ends with the last one, none split, and
//! none larger than 1 MiB. A row whose run fails (daemonize refused the
//! options, a process failed, the output is wrong) is reported with the
//! reason and not run again.
//!
//! Last, the fsync probe: what an fsync of a freshly written 1 MiB file
//! costs here (the issue asks whether rotation can afford one).
//!
//! Run it from the repository root:
//!
//!     cargo build --release --workspace && cargo run --release -p daemonize-bench -- --capture
//!
//! Options: `--runs N` rounds (default 3), `--only NAME` for the rows whose
//! logger name contains NAME (cat always runs), `--bytes N` to produce N
//! bytes instead of 200,000,000 (a multiple of 100; for quick checks),
//! `--daemonize PATH` and `--probes DIR` as for `--supervisor`.
//!
//! The benchmark installs nothing. Every process it starts is its child or
//! becomes one; a run that outlives its deadline, or SIGINT/SIGTERM, has
//! each of them killed through a pidfd.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::procs::{Proc, Signals, Wake, children_by_ppid, read_pid, wait_readable};

pub struct Options {
    /// Rounds: each row runs once per round.
    pub runs: usize,
    /// Only the rows whose logger name contains this (and cat).
    pub only: Option<String>,
    /// Bytes the producer writes.
    pub bytes: u64,
    pub daemonize: PathBuf,
    /// The `handoff` binary, which starts each logger.
    pub handoff: PathBuf,
    /// Where `producer.c` is.
    pub probes: PathBuf,
}

/// The producer's line length, newline included.
const LINE: u64 = 100;
/// `--log-max-size 1M` and the default `--log-keep`.
const MAX_SIZE: u64 = 1 << 20;
const KEEP: usize = 5;
/// The anchors, used when the peer is not installed (MB/s,
/// block-buffered producer).
const ANCHOR_S6_T: f64 = 78.0;
const ANCHOR_S6_ROTATION: f64 = 106.0;
/// Goals (the log-capture issue).
const PLAIN_GOAL: f64 = 0.8;
const LINE_GOAL: f64 = 0.9;
const TIMESTAMPS_GOAL: f64 = 5.0;
const ROTATION_GOAL: f64 = 3.0;
const RSS_GOAL_KIB: i64 = 1536;
/// fsyncs timed by the probe, of each kind.
const FSYNCS: usize = 50;
/// What a daemonize row's messages contain.
const MESSAGE: &[u8] = b" daemonize[";

type R<T> = Result<T, String>;

/// Runs the benchmark and returns the exit status: 1 if a row failed.
pub fn main(options: Options) -> i32 {
    if options.bytes == 0 || !options.bytes.is_multiple_of(LINE) {
        eprintln!("--bytes takes a positive multiple of {LINE}");
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
    // The detached supervisor reparents to us: its end is a wait4 of ours,
    // with its rusage.
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        eprintln!(
            "PR_SET_CHILD_SUBREAPER: {}; the supervisor cannot be timed",
            std::io::Error::last_os_error()
        );
        return 1;
    }
    // Absolute, because the daemon runs in /.
    let work = std::env::temp_dir().join(format!("daemonize-bench-cap-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&work) {
        eprintln!("cannot create {}: {e}", work.display());
        return 1;
    }
    let mut bench = Bench {
        signals,
        out: work.join("out"),
        sup_pidfile: work.join("supervisor.pid"),
        work,
        bytes: options.bytes,
        daemonize: options.daemonize.clone(),
        handoff: options.handoff.clone(),
        producer: PathBuf::new(),
    };
    let result = bench.run(&options);
    kill_children();
    reap_all();
    match result {
        Ok(failed) => {
            let _ = std::fs::remove_dir_all(&bench.work);
            i32::from(failed)
        }
        Err(e) => {
            eprintln!(
                "daemonize-bench --capture: {e} (files kept in {})",
                bench.work.display()
            );
            1
        }
    }
}

struct Bench {
    signals: Signals,
    work: PathBuf,
    /// The directory each run writes into, made anew for each run.
    out: PathBuf,
    /// daemonize's -P file.
    sup_pidfile: PathBuf,
    bytes: u64,
    daemonize: PathBuf,
    handoff: PathBuf,
    /// The built producer, in the work directory.
    producer: PathBuf,
}

/// Why a run did not give a sample.
enum Failure {
    /// The row's: it is reported and not run again.
    Row(String),
    /// The benchmark's own (interrupted, cannot write its files): it ends.
    Bench(String),
}

/// One child reaped by `Bench::reap_children`.
struct Reaped {
    pid: i32,
    status: i32,
    usage: libc::rusage,
    at: Instant,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Block,
    Line,
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Mode::Block => "block",
            Mode::Line => "line",
        }
    }
}

/// What daemonize is asked to do with the output.
#[derive(Clone, Copy, PartialEq)]
enum Capture {
    Plain,
    Timestamps,
    Rotation,
}

/// A logger, with what its output looks like.
enum Logger {
    /// `cat > FILE`.
    Cat(PathBuf),
    Daemonize(Capture),
    /// A peer reading the pipe, writing a log directory.
    Peer {
        argv: Vec<OsString>,
        prefix: Prefix,
        /// Rotates: only the newest lines are kept.
        rotates: bool,
    },
}

struct Row {
    name: &'static str,
    mode: Mode,
    logger: Logger,
    /// The command line, as printed.
    command: String,
    samples: Vec<Sample>,
    failed: Option<String>,
    /// Said once about the row's runs (what rotation kept...).
    notes: Vec<String>,
}

struct Sample {
    elapsed: Duration,
    /// The logger's (or the supervisor's) ru_maxrss.
    max_rss_kib: i64,
}

impl Row {
    fn new(name: &'static str, mode: Mode, command: String, logger: Logger) -> Row {
        Row {
            name,
            mode,
            logger,
            command,
            samples: Vec::new(),
            failed: None,
            notes: Vec::new(),
        }
    }

    fn median_rate(&self, bytes: u64) -> Option<f64> {
        if self.failed.is_some() || self.samples.is_empty() {
            return None;
        }
        let mut rates: Vec<f64> = self
            .samples
            .iter()
            .map(|s| bytes as f64 / s.elapsed.as_secs_f64() / 1e6)
            .collect();
        Some(crate::median(&mut rates))
    }

    fn peak_rss(&self) -> Option<i64> {
        self.samples.iter().map(|s| s.max_rss_kib).max()
    }

    fn note(&mut self, note: String) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }
}

impl Bench {
    /// The benchmark; true if a row failed.
    fn run(&mut self, options: &Options) -> R<bool> {
        let cc = crate::which("cc")
            .or_else(|| crate::which("gcc"))
            .ok_or("no C compiler (cc or gcc) in PATH")?;
        self.producer = crate::build_probe(&cc, &options.probes, "producer", &self.work)?;
        println!("daemonize log-capture benchmark");
        println!("machine: {}", crate::machine());
        println!("daemonize: {}", self.daemonize.display());
        println!(
            "producer: {}/producer.c, built `{} -O2 -static`; {} bytes of {LINE}-byte lines per run",
            options.probes.display(),
            cc.display(),
            self.bytes
        );
        println!(
            "files in {} ({}); {} alternating rounds, medians; `sync` before each run, outside the timing",
            self.work.display(),
            filesystem(&self.work),
            options.runs
        );
        let missing: Vec<&str> = ["s6-log", "multilog", "svlogd"]
            .into_iter()
            .filter(|name| crate::which(name).is_none())
            .collect();
        if !missing.is_empty() {
            println!("not installed, not measured: {}", missing.join(", "));
        }

        let mut rows = self.rows(options.only.as_deref())?;
        println!("\nRows and their commands:");
        for row in &rows {
            println!("  {:<5} {:<28} {}", row.mode.arg(), row.name, row.command);
        }
        println!();
        let floor = self.fork_floor()?;

        // One discarded run, for the page cache and the producer's pages.
        match self.run_row(&rows[0]) {
            Ok(_) => {}
            Err(Failure::Row(e)) => return Err(format!("the warm-up run of cat failed: {e}")),
            Err(Failure::Bench(e)) => return Err(e),
        }
        for round in 0..options.runs {
            let started = Instant::now();
            for row in rows.iter_mut().filter(|r| r.failed.is_none()) {
                match self.run_row(row) {
                    Ok((sample, note)) => {
                        row.samples.push(sample);
                        if let Some(note) = note {
                            row.note(note);
                        }
                    }
                    Err(Failure::Row(e)) => {
                        println!(
                            "  {} ({}): failed, not run again: {e}",
                            row.name,
                            row.mode.arg()
                        );
                        row.failed = Some(e);
                    }
                    Err(Failure::Bench(e)) => return Err(e),
                }
            }
            eprintln!(
                "round {}/{} done in {:.1} s",
                round + 1,
                options.runs,
                started.elapsed().as_secs_f64()
            );
        }
        self.report(&rows, floor);
        self.fsync_probe(&rows)?;
        Ok(rows.iter().any(|r| r.failed.is_some()))
    }

    /// The rows, in the order each round runs them.
    fn rows(&self, only: Option<&str>) -> R<Vec<Row>> {
        let cat = crate::which("cat").ok_or("no cat in PATH")?;
        let producer = |mode: Mode| show(&self.producer_argv(mode));
        let file = self.out.join("capture.log");
        let dir = self.out.join("logdir");
        let mut rows = Vec::new();
        for mode in [Mode::Block, Mode::Line] {
            rows.push(Row::new(
                "cat > FILE",
                mode,
                format!(
                    "{} | {} > {}",
                    producer(mode),
                    cat.display(),
                    file.display()
                ),
                Logger::Cat(cat.clone()),
            ));
            let captures: &[(&'static str, Capture)] = match mode {
                Mode::Block => &[
                    ("daemonize (plain)", Capture::Plain),
                    ("daemonize --log-timestamps", Capture::Timestamps),
                    ("daemonize --log-max-size 1M", Capture::Rotation),
                ],
                Mode::Line => &[("daemonize (plain)", Capture::Plain)],
            };
            for &(name, capture) in captures {
                let argv = self.daemonize_argv(capture, mode);
                rows.push(Row::new(
                    name,
                    mode,
                    show(&argv),
                    Logger::Daemonize(capture),
                ));
            }
            // (row, program, options before DIR, line prefix, rotates)
            type Peer = (
                &'static str,
                &'static str,
                &'static [&'static str],
                Prefix,
                bool,
            );
            let peers: &[Peer] = match mode {
                Mode::Block => &[
                    (
                        "s6-log",
                        "s6-log",
                        &["n20", "s268435455"],
                        Prefix::None,
                        false,
                    ),
                    (
                        "s6-log T",
                        "s6-log",
                        &["T", "n20", "s268435455"],
                        Prefix::S6,
                        false,
                    ),
                    (
                        "s6-log s1000000",
                        "s6-log",
                        &["n20", "s1000000"],
                        Prefix::None,
                        true,
                    ),
                    (
                        "multilog",
                        "multilog",
                        &["s16777215", "n20"],
                        Prefix::None,
                        false,
                    ),
                    ("svlogd (config s0)", "svlogd", &[], Prefix::None, false),
                ],
                Mode::Line => &[
                    (
                        "s6-log",
                        "s6-log",
                        &["n20", "s268435455"],
                        Prefix::None,
                        false,
                    ),
                    (
                        "multilog",
                        "multilog",
                        &["s16777215", "n20"],
                        Prefix::None,
                        false,
                    ),
                    ("svlogd (config s0)", "svlogd", &[], Prefix::None, false),
                ],
            };
            for &(name, program, options, prefix, rotates) in peers {
                let Some(path) = crate::which(program) else {
                    continue;
                };
                let mut argv: Vec<OsString> = vec![path.into()];
                argv.extend(options.iter().map(OsString::from));
                argv.push(dir.clone().into());
                rows.push(Row::new(
                    name,
                    mode,
                    format!("{} | {}", producer(mode), show(&argv)),
                    Logger::Peer {
                        argv,
                        prefix,
                        rotates,
                    },
                ));
            }
        }
        rows.retain(|r| {
            matches!(r.logger, Logger::Cat(_)) || only.is_none_or(|name| r.name.contains(name))
        });
        Ok(rows)
    }

    fn daemonize_argv(&self, capture: Capture, mode: Mode) -> Vec<OsString> {
        let mut argv: Vec<OsString> = vec![self.daemonize.clone().into()];
        let options: &[&str] = match capture {
            // With --restart, -o is captured; the producer exits 0, which
            // on-failure does not restart: the supervisor then ends.
            Capture::Plain => &["--restart=on-failure"],
            // Without --restart, the supervisor ends with COMMAND.
            Capture::Timestamps => &["--log-timestamps"],
            Capture::Rotation => &["--log-max-size", "1M"],
        };
        argv.extend(options.iter().map(OsString::from));
        argv.push("-o".into());
        argv.push(self.out.join("capture.log").into());
        argv.push("-P".into());
        argv.push(self.sup_pidfile.clone().into());
        argv.push("--".into());
        argv.extend(self.producer_argv(mode));
        argv
    }

    fn producer_argv(&self, mode: Mode) -> Vec<OsString> {
        vec![
            self.producer.clone().into(),
            self.bytes.to_string().into(),
            LINE.to_string().into(),
            mode.arg().into(),
        ]
    }

    /// How long a run may take before it is killed: generous, as only a
    /// hung run is to be caught.
    fn deadline(&self) -> Duration {
        Duration::from_secs(30) + Duration::from_secs(self.bytes / 5_000_000)
    }

    // ---- runs -----------------------------------------------------------

    /// One timed run of a row, with its output checked, and what the check
    /// has to say.
    fn run_row(&self, row: &Row) -> Result<(Sample, Option<String>), Failure> {
        let bench = |e: String| Failure::Bench(e);
        match std::fs::remove_dir_all(&self.out) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(bench(format!("cannot remove {}: {e}", self.out.display())));
            }
            _ => {}
        }
        let _ = std::fs::remove_file(&self.sup_pidfile);
        std::fs::create_dir_all(&self.out)
            .map_err(|e| bench(format!("cannot create {}: {e}", self.out.display())))?;
        if let Logger::Peer { .. } = row.logger {
            let dir = self.out.join("logdir");
            std::fs::create_dir(&dir)
                .map_err(|e| bench(format!("cannot create {}: {e}", dir.display())))?;
            // svlogd rotates at 1 MB by default; s0 turns that off (the
            // issue's setup). The others leave the file alone.
            std::fs::write(dir.join("config"), "s0\n")
                .map_err(|e| bench(format!("cannot write svlogd's config: {e}")))?;
        }
        // SAFETY: sync(2) takes no arguments and cannot fail.
        unsafe { libc::sync() };
        let sample = match &row.logger {
            Logger::Cat(cat) => {
                let file = self.out.join("capture.log");
                let out = File::create(&file)
                    .map_err(|e| bench(format!("cannot create {}: {e}", file.display())))?;
                self.pipeline(row.mode, &[cat.clone().into()], Some(out))?
            }
            Logger::Peer { argv, .. } => self.pipeline(row.mode, argv, None)?,
            Logger::Daemonize(capture) => self.daemonized(*capture, row.mode)?,
        };
        let note = self.check(row).map_err(Failure::Row)?;
        Ok((sample, note))
    }

    /// `producer | LOGGER`, LOGGER's standard output on `out` (else
    /// /dev/null), timed until both are reaped; the sample has LOGGER's
    /// peak RSS.
    fn pipeline(
        &self,
        mode: Mode,
        logger: &[OsString],
        out: Option<File>,
    ) -> Result<Sample, Failure> {
        let (read, write) = pipe().map_err(Failure::Bench)?;
        let errors = self.work.join("pipeline.err");
        let _ = std::fs::remove_file(&errors);
        let stderr = || {
            File::options()
                .create(true)
                .append(true)
                .open(&errors)
                .map_err(|e| Failure::Bench(format!("cannot open {}: {e}", errors.display())))
        };
        let argv = self.producer_argv(mode);
        let mut producer = Command::new(&argv[0]);
        producer
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(write)
            .stderr(stderr()?);
        let mut reader = Command::new(&self.handoff);
        reader
            .args(logger)
            .stdin(read)
            .stdout(out.map_or_else(Stdio::null, Stdio::from))
            .stderr(stderr()?);
        let start = Instant::now();
        // `spawn` consumes the commands, and the pipe's ends with them: the
        // logger sees the end of the producer's output.
        let producer = spawn(producer).map_err(Failure::Row)?;
        let handoff = match spawn(reader) {
            Ok(pid) => pid,
            Err(e) => {
                kill_children();
                reap_all();
                return Err(Failure::Row(e));
            }
        };
        let reaped = self.reap_children(|_| ())?;
        let end = reaped.last().map_or_else(Instant::now, |r| r.at);
        // The logger is the one child we did not start ourselves.
        let others: Vec<&Reaped> = reaped
            .iter()
            .filter(|r| r.pid != producer && r.pid != handoff)
            .collect();
        let [logger] = others[..] else {
            return Err(Failure::Row(format!(
                "{} processes besides the producer and handoff were reaped, not one (the logger)",
                others.len()
            )));
        };
        let processes = [
            (producer, "the producer"),
            (handoff, "handoff"),
            (logger.pid, "the logger"),
        ];
        for (pid, name) in processes {
            let Some(r) = reaped.iter().find(|r| r.pid == pid) else {
                return Err(Failure::Row(format!("{name} (pid {pid}) was never reaped")));
            };
            if r.status != 0 {
                let text = std::fs::read_to_string(&errors).unwrap_or_default();
                return Err(Failure::Row(format!(
                    "{name} ended with {}: {}",
                    describe(r.status),
                    text.trim()
                )));
            }
        }
        Ok(Sample {
            elapsed: end - start,
            max_rss_kib: logger.usage.ru_maxrss,
        })
    }

    /// A daemonize start, timed until its supervisor has exited; the
    /// sample has the supervisor's peak RSS.
    fn daemonized(&self, capture: Capture, mode: Mode) -> Result<Sample, Failure> {
        let argv = self.daemonize_argv(capture, mode);
        let errors = self.work.join("daemonize.err");
        let stderr = File::create(&errors)
            .map_err(|e| Failure::Bench(format!("cannot create {}: {e}", errors.display())))?;
        let mut launcher = Command::new(&argv[0]);
        launcher
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let start = Instant::now();
        let launcher = spawn(launcher).map_err(Failure::Row)?;
        let mut launched: Option<R<()>> = None;
        let mut supervisor = None;
        let reaped = self.reap_children(|r| {
            if r.pid != launcher {
                return;
            }
            if r.status != 0 {
                let text = std::fs::read_to_string(&errors).unwrap_or_default();
                launched = Some(Err(format!(
                    "daemonize exited with {}: {}",
                    describe(r.status),
                    text.trim()
                )));
                // It cleans up after itself; whatever it left goes now.
                kill_children();
                return;
            }
            // daemonize returns once COMMAND runs, and the supervisor wrote
            // -P before starting it. It removes the file as it ends, after
            // the producer's 200 MB: read it now.
            supervisor = read_pid(&self.sup_pidfile);
            launched = Some(Ok(()));
        })?;
        match launched {
            None => return Err(Failure::Row("daemonize was never reaped".into())),
            Some(Err(e)) => return Err(Failure::Row(e)),
            Some(Ok(())) => {}
        }
        let Some(supervisor) = supervisor else {
            return Err(Failure::Row(format!(
                "daemonize exited 0, but {} named no supervisor",
                self.sup_pidfile.display()
            )));
        };
        let Some(ended) = reaped.iter().find(|r| r.pid == supervisor) else {
            return Err(Failure::Row(format!(
                "the supervisor (pid {supervisor}, from -P) was never the benchmark's to reap"
            )));
        };
        if ended.status != 0 {
            return Err(Failure::Row(format!(
                "the supervisor exited with {}",
                describe(ended.status)
            )));
        }
        Ok(Sample {
            elapsed: ended.at - start,
            max_rss_kib: ended.usage.ru_maxrss,
        })
    }

    /// Reaps children, with their rusage, until there are none left: the
    /// ones started, and whatever reparents to us (we are a subreaper)
    /// until then. `each` sees each one as it is reaped. A watchdog kills
    /// them all when the deadline passes or SIGINT or SIGTERM arrives.
    fn reap_children(&self, mut each: impl FnMut(&Reaped)) -> Result<Vec<Reaped>, Failure> {
        let (done_read, done_write) = pipe().map_err(Failure::Bench)?;
        let done = done_read.as_raw_fd();
        let deadline = self.deadline();
        let signals = &self.signals;
        std::thread::scope(|scope| {
            let watchdog = scope.spawn(move || {
                let why = match wait_readable(Some(done), Some(signals), deadline) {
                    Ok(Wake::Ready) => return None,
                    Ok(Wake::Timeout) => {
                        Failure::Row(format!("still running after {deadline:?}: killed"))
                    }
                    Err(e) => Failure::Bench(e),
                };
                // Until the reaping is over: what our children leave
                // reparents to us and is killed in turn.
                loop {
                    kill_children();
                    if let Ok(Wake::Ready) =
                        wait_readable(Some(done), None, Duration::from_millis(100))
                    {
                        return Some(why);
                    }
                }
            });
            let mut reaped = Vec::new();
            loop {
                let mut status = 0;
                // SAFETY: an all-zero rusage is a valid value for wait4 to
                // overwrite.
                let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
                // SAFETY: wait4 writes into the two locals above.
                let pid = unsafe { libc::wait4(-1, &mut status, 0, &mut usage) };
                if pid < 0 {
                    if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    // ECHILD: no child left.
                    break;
                }
                let child = Reaped {
                    pid,
                    status,
                    usage,
                    at: Instant::now(),
                };
                each(&child);
                reaped.push(child);
            }
            drop(done_write);
            match watchdog.join() {
                Ok(None) => Ok(reaped),
                Ok(Some(why)) => Err(why),
                Err(_) => Err(Failure::Bench("the watchdog thread panicked".into())),
            }
        })
    }

    // ---- checks ---------------------------------------------------------

    /// Checks the output of the run just made; a note on what it kept.
    fn check(&self, row: &Row) -> R<Option<String>> {
        let lines = self.bytes / LINE;
        let file = self.out.join("capture.log");
        match &row.logger {
            Logger::Cat(_) => {
                let mut checker = Checker::new(Prefix::None);
                checker.file(&file, None)?;
                checker.complete(lines)?;
                Ok(None)
            }
            Logger::Daemonize(capture @ (Capture::Plain | Capture::Timestamps)) => {
                let prefix = match capture {
                    Capture::Timestamps => Prefix::Rfc3339,
                    _ => Prefix::None,
                };
                let mut checker = Checker::new(prefix);
                checker.file(&file, None)?;
                checker.complete(lines)?;
                Ok(checker.messages_note())
            }
            Logger::Daemonize(Capture::Rotation) => {
                let numbered = |n: usize| {
                    let mut name = file.clone().into_os_string();
                    name.push(format!(".{n}"));
                    PathBuf::from(name)
                };
                if numbered(KEEP + 1).exists() {
                    return Err(format!(
                        "{} exists: more than --log-keep {KEEP} rotated files",
                        numbered(KEEP + 1).display()
                    ));
                }
                // Oldest first.
                let mut files: Vec<PathBuf> = (1..=KEEP)
                    .rev()
                    .map(numbered)
                    .filter(|p| p.exists())
                    .collect();
                files.push(file);
                let mut checker = Checker::new(Prefix::None);
                for path in &files {
                    checker.file(path, Some(MAX_SIZE))?;
                }
                checker.ends(lines)?;
                Ok(Some(format!(
                    "kept lines {}..{} ({} bytes) in FILE and {} rotated files, each ≤ {MAX_SIZE} bytes{}",
                    checker.first.unwrap_or(0),
                    lines - 1,
                    checker.lines * LINE,
                    files.len() - 1,
                    checker
                        .messages_note()
                        .map_or(String::new(), |m| format!("; {m}"))
                )))
            }
            Logger::Peer {
                prefix, rotates, ..
            } => {
                let dir = self.out.join("logdir");
                let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                    .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
                    .filter_map(|entry| {
                        let entry = entry.ok()?;
                        entry
                            .file_name()
                            .as_bytes()
                            .starts_with(b"@")
                            .then(|| entry.path())
                    })
                    .collect();
                // TAI64N names: in time order when sorted.
                files.sort();
                files.push(dir.join("current"));
                let mut checker = Checker::new(*prefix);
                for path in &files {
                    checker.file(path, None)?;
                }
                if *rotates {
                    checker.ends(lines)?;
                    Ok(Some(format!(
                        "kept lines {}..{} in current and {} rotated files",
                        checker.first.unwrap_or(0),
                        lines - 1,
                        files.len() - 1
                    )))
                } else {
                    checker.complete(lines)?;
                    Ok(None)
                }
            }
        }
    }

    // ---- report ---------------------------------------------------------

    fn report(&self, rows: &[Row], fork_floor: i64) {
        let rate = |name: &str, mode: Mode| {
            rows.iter()
                .find(|r| r.name == name && r.mode == mode)
                .and_then(|r| r.median_rate(self.bytes))
        };
        println!(
            "\nThroughput, median of each row's runs (× cat: its MB/s over cat's in the same mode; cat ÷: cat's over its, as the issue's table gives them):"
        );
        println!(
            "  {:<5} {:<28} {:>8} {:>7} {:>7} {:>10}",
            "mode", "logger", "MB/s", "× cat", "cat ÷", "peak RSS"
        );
        for row in rows {
            let cat = rate("cat > FILE", row.mode);
            match (row.median_rate(self.bytes), &row.failed) {
                (Some(r), _) => {
                    let vs = |f: fn(f64, f64) -> f64| {
                        cat.map_or_else(|| "-".into(), |c| format!("{:.2}", f(r, c)))
                    };
                    println!(
                        "  {:<5} {:<28} {:>8.0} {:>7} {:>7} {:>6} KiB",
                        row.mode.arg(),
                        row.name,
                        r,
                        vs(|r, c| r / c),
                        vs(|r, c| c / r),
                        row.peak_rss().unwrap_or(0)
                    );
                }
                (None, Some(e)) => {
                    println!("  {:<5} {:<28} failed: {e}", row.mode.arg(), row.name)
                }
                (None, None) => println!("  {:<5} {:<28} no runs", row.mode.arg(), row.name),
            }
            for note in &row.notes {
                println!("  {:<5} {:<28}   {note}", "", "");
            }
        }
        println!(
            "  peak RSS: ru_maxrss of the logger, or of daemonize's supervisor (which includes the producer it reaped); started the same way, the static producer writing nothing peaks at {fork_floor} KiB"
        );

        println!("\nGoals (block-buffered producer unless said):");
        let goal =
            |what: &str, ours: Option<f64>, floor: Option<f64>, factor: f64, of: String| match (
                ours, floor,
            ) {
                (Some(ours), Some(floor)) => println!(
                    "  {what:<38} ≥ {factor}× {of}: {:.2}× ({ours:.0} vs {floor:.0} MB/s): {}",
                    ours / floor,
                    verdict(ours >= factor * floor)
                ),
                (None, _) => println!("  {what:<38} ≥ {factor}× {of}: not measured"),
                (_, None) => println!("  {what:<38} ≥ {factor}× {of}: cat not measured"),
            };
        goal(
            "plain capture",
            rate("daemonize (plain)", Mode::Block),
            rate("cat > FILE", Mode::Block),
            PLAIN_GOAL,
            "cat".into(),
        );
        let peer = |name: &str, anchor: f64| match rate(name, Mode::Block) {
            Some(r) => (Some(r), format!("{name} (measured here)")),
            None => (
                Some(anchor),
                format!(
                    "{name} ({anchor} MB/s: the issue's anchor, as {name} was not measured here)"
                ),
            ),
        };
        let (s6_t, of) = peer("s6-log T", ANCHOR_S6_T);
        goal(
            "--log-timestamps",
            rate("daemonize --log-timestamps", Mode::Block),
            s6_t,
            TIMESTAMPS_GOAL,
            of,
        );
        let (s6_rotation, of) = peer("s6-log s1000000", ANCHOR_S6_ROTATION);
        goal(
            "--log-max-size 1M",
            rate("daemonize --log-max-size 1M", Mode::Block),
            s6_rotation,
            ROTATION_GOAL,
            of,
        );
        goal(
            "plain capture, line-buffered producer",
            rate("daemonize (plain)", Mode::Line),
            rate("cat > FILE", Mode::Line),
            LINE_GOAL,
            "cat (line)".into(),
        );
        let daemonized: Vec<&Row> = rows
            .iter()
            .filter(|r| matches!(r.logger, Logger::Daemonize(_)) && !r.samples.is_empty())
            .collect();
        match daemonized.iter().filter_map(|r| r.peak_rss()).max() {
            Some(peak) => println!(
                "  {:<38} ≤ {RSS_GOAL_KIB} KiB: {peak} KiB, the largest of {} rows: {}",
                "supervisor peak RSS",
                daemonized.len(),
                verdict(peak <= RSS_GOAL_KIB)
            ),
            None => println!(
                "  {:<38} ≤ {RSS_GOAL_KIB} KiB: not measured",
                "supervisor peak RSS"
            ),
        }
    }

    /// The peak RSS of the static producer writing nothing, started the way
    /// the loggers are: what the start leaves in a logger's figure.
    fn fork_floor(&self) -> R<i64> {
        let mut peak = 0;
        for _ in 0..5 {
            let mut command = Command::new(&self.handoff);
            command
                .arg(&self.producer)
                .args(["0", "100", "block"])
                .stdin(Stdio::null())
                .stdout(Stdio::null());
            let handoff = spawn(command)?;
            let reaped = self.reap_children(|_| ()).map_err(|e| match e {
                Failure::Row(e) | Failure::Bench(e) => e,
            })?;
            for r in reaped.iter().filter(|r| r.pid != handoff) {
                peak = peak.max(r.usage.ru_maxrss);
            }
        }
        Ok(peak)
    }

    // ---- fsync ----------------------------------------------------------

    /// Times fsync and fdatasync of a freshly written 1 MiB file, as a
    /// rotation that made its old file durable would.
    fn fsync_probe(&self, rows: &[Row]) -> R<()> {
        let path = self.work.join("fsync-probe");
        let data: Vec<u8> = (0..MAX_SIZE).map(|i| b'a' + (i % 26) as u8).collect();
        let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..FSYNCS {
            for (kind, times) in times.iter_mut().enumerate() {
                self.signals.sleep(Duration::ZERO)?;
                let _ = std::fs::remove_file(&path);
                std::fs::write(&path, &data)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                let file = File::open(&path)
                    .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
                let start = Instant::now();
                // SAFETY: fsync and fdatasync on a descriptor we own.
                let rc = unsafe {
                    if kind == 0 {
                        libc::fsync(file.as_raw_fd())
                    } else {
                        libc::fdatasync(file.as_raw_fd())
                    }
                };
                let elapsed = start.elapsed();
                if rc != 0 {
                    return Err(format!("fsync: {}", std::io::Error::last_os_error()));
                }
                times.push(elapsed);
            }
        }
        let _ = std::fs::remove_file(&path);
        println!(
            "\nfsync cost: a freshly written {MAX_SIZE}-byte file in {} ({}), {FSYNCS} of each, alternating:",
            self.work.display(),
            filesystem(&self.work)
        );
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
        let mut medians = [Duration::ZERO; 2];
        for (i, (name, times)) in ["fsync", "fdatasync"].iter().zip(&mut times).enumerate() {
            times.sort_unstable();
            medians[i] = times[times.len() / 2];
            println!(
                "  {name:<10} median {}, min {}, p90 {}, max {}",
                ms(medians[i]),
                ms(times[0]),
                ms(times[times.len() * 9 / 10]),
                ms(times[times.len() - 1])
            );
        }
        // What one fsync per rotation would do to the measured rotation rate.
        let rotation = rows
            .iter()
            .find(|r| r.name == "daemonize --log-max-size 1M" && r.mode == Mode::Block)
            .and_then(|r| r.median_rate(self.bytes));
        if let Some(rate) = rotation {
            let per_file = MAX_SIZE as f64 / 1e6 / rate;
            let with = MAX_SIZE as f64 / 1e6 / (per_file + medians[0].as_secs_f64());
            println!(
                "  one fsync per 1 MiB rotation: {} more per {:.2} ms of writing at the measured {rate:.0} MB/s, so {with:.0} MB/s ({:.0}% slower)",
                ms(medians[0]),
                per_file * 1e3,
                (1.0 - with / rate) * 100.0
            );
        }
        Ok(())
    }
}

/// A line prefix that the logger adds, checked and stripped.
#[derive(Clone, Copy)]
enum Prefix {
    None,
    /// daemonize's `--log-timestamps`: `2026-11-22T02:14:30.123456Z `.
    Rfc3339,
    /// s6-log's `T`: `2026-11-22 02:14:30.123456789  `.
    S6,
}

impl Prefix {
    /// Its shape: `d` for a digit, anything else for itself.
    fn pattern(self) -> &'static [u8] {
        match self {
            Prefix::None => b"",
            Prefix::Rfc3339 => b"dddd-dd-ddTdd:dd:dd.ddddddZ ",
            Prefix::S6 => b"dddd-dd-dd dd:dd:dd.ddddddddd  ",
        }
    }

    fn matches(self, text: &[u8]) -> bool {
        let pattern = self.pattern();
        text.len() == pattern.len()
            && pattern.iter().zip(text).all(|(&p, &c)| {
                if p == b'd' {
                    c.is_ascii_digit()
                } else {
                    p == c
                }
            })
    }
}

/// Reads a log, file after file (oldest first), and checks that its
/// producer lines follow each other.
struct Checker {
    prefix: Prefix,
    /// The first producer line's number.
    first: Option<u64>,
    /// The number the next producer line must have.
    next: Option<u64>,
    /// Producer lines seen.
    lines: u64,
    /// The supervisor's messages, set aside.
    messages: u64,
    /// The last prefix seen: timestamps must not go back.
    last_prefix: Vec<u8>,
}

impl Checker {
    fn new(prefix: Prefix) -> Checker {
        Checker {
            prefix,
            first: None,
            next: None,
            lines: 0,
            messages: 0,
            last_prefix: Vec::new(),
        }
    }

    /// One file: whole lines only (a rotation must not split one), and at
    /// most `max_size` bytes.
    fn file(&mut self, path: &Path, max_size: Option<u64>) -> R<()> {
        let name = path.display();
        let mut file = File::open(path).map_err(|e| format!("cannot open {name}: {e}"))?;
        if let Some(max) = max_size {
            let size = file
                .metadata()
                .map_err(|e| format!("cannot stat {name}: {e}"))?
                .len();
            if size > max {
                return Err(format!("{name} holds {size} bytes, more than {max}"));
            }
        }
        let mut buffer = vec![0u8; 1 << 20];
        let mut partial: Vec<u8> = Vec::new();
        loop {
            let n = match file.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("cannot read {name}: {e}")),
            };
            let mut data = &buffer[..n];
            if !partial.is_empty() {
                match data.iter().position(|&b| b == b'\n') {
                    Some(end) => {
                        partial.extend_from_slice(&data[..end]);
                        self.line(&partial).map_err(|e| format!("{name}: {e}"))?;
                        partial.clear();
                        data = &data[end + 1..];
                    }
                    None => {
                        partial.extend_from_slice(data);
                        continue;
                    }
                }
            }
            while let Some(end) = data.iter().position(|&b| b == b'\n') {
                self.line(&data[..end])
                    .map_err(|e| format!("{name}: {e}"))?;
                data = &data[end + 1..];
            }
            partial.extend_from_slice(data);
        }
        if !partial.is_empty() {
            return Err(format!(
                "{name} ends in the middle of a line: {:?}",
                excerpt(&partial)
            ));
        }
        Ok(())
    }

    fn line(&mut self, line: &[u8]) -> R<()> {
        let length = self.prefix.pattern().len();
        let number = (line.len() == length + LINE as usize - 1)
            .then(|| line.split_at(length))
            .filter(|(prefix, _)| self.prefix.matches(prefix))
            .and_then(|(_, body)| producer_line(body));
        let Some(number) = number else {
            if line.windows(MESSAGE.len()).any(|w| w == MESSAGE) {
                self.messages += 1;
                return Ok(());
            }
            return Err(format!(
                "not a producer line{}: {:?}",
                self.next
                    .map_or(String::new(), |n| format!(" where line {n} was expected")),
                excerpt(line)
            ));
        };
        match self.next {
            Some(next) if number != next => {
                return Err(format!("line {number} where line {next} was expected"));
            }
            Some(_) => {}
            None => self.first = Some(number),
        }
        if length > 0 {
            let prefix = &line[..length];
            if prefix < self.last_prefix.as_slice() {
                return Err(format!(
                    "line {number}'s timestamp {:?} is before the line's before it, {:?}",
                    excerpt(prefix),
                    excerpt(&self.last_prefix)
                ));
            }
            self.last_prefix.clear();
            self.last_prefix.extend_from_slice(prefix);
        }
        self.next = Some(number + 1);
        self.lines += 1;
        Ok(())
    }

    /// All `lines` producer lines were there, from the first.
    fn complete(&self, lines: u64) -> R<()> {
        if self.first == Some(0) && self.next == Some(lines) {
            return Ok(());
        }
        Err(format!(
            "{} bytes of producer lines{}, not {} (all {lines} lines)",
            self.lines * LINE,
            self.first.map_or(String::new(), |first| format!(
                " (lines {first}..{})",
                first + self.lines - 1
            )),
            lines * LINE
        ))
    }

    /// The lines kept end with the producer's last one.
    fn ends(&self, lines: u64) -> R<()> {
        match self.next {
            Some(next) if next == lines => Ok(()),
            Some(next) => Err(format!(
                "the newest kept line is {}, not the producer's last ({})",
                next - 1,
                lines - 1
            )),
            None => Err("no producer line kept".into()),
        }
    }

    fn messages_note(&self) -> Option<String> {
        (self.messages > 0).then(|| {
            format!(
                "{} supervisor message line(s) (` daemonize[`) set aside",
                self.messages
            )
        })
    }
}

/// The number of a producer line (without its newline): 12 digits, a
/// space and `x`s.
fn producer_line(body: &[u8]) -> Option<u64> {
    let (digits, rest) = body.split_at_checked(12)?;
    if !digits.iter().all(u8::is_ascii_digit)
        || rest.first() != Some(&b' ')
        || !rest[1..].iter().all(|&b| b == b'x')
    {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn excerpt(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).into_owned()
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// A wait status, in words.
fn describe(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status:#x}")
    }
}

/// An argv as a command line (the paths here need no quoting).
fn show(argv: &[OsString]) -> String {
    argv.iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> R<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the local array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: two new descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Starts `command` with a real fork (see the module's comment) and
/// returns its PID. It is reaped by `reap_children` (with wait4, for its
/// rusage), not through `Child`, hence the allowance.
#[allow(clippy::zombie_processes)]
fn spawn(mut command: Command) -> R<i32> {
    // SAFETY: an empty pre_exec closure does nothing in the child; it only
    // makes std fork instead of using posix_spawn.
    unsafe { command.pre_exec(|| Ok(())) };
    let child = command
        .spawn()
        .map_err(|e| format!("cannot run {:?}: {e}", command.get_program()))?;
    i32::try_from(child.id()).map_err(|_| "PID out of range".to_owned())
}

/// SIGKILL to each of our children, through a pidfd opened while it was
/// (still) our unreaped child, so never to a process that reused its PID.
fn kill_children() {
    for pid in children_by_ppid(std::process::id() as i32) {
        if let Ok(proc) = Proc::open("child", pid)
            && proc.child
        {
            let _ = proc.signal(libc::SIGKILL);
        }
    }
}

/// Reaps every child, blocking until none is left.
fn reap_all() {
    // SAFETY: waitpid with a null status pointer.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) } > 0 {}
}

/// The file system holding `path`, by name when it is a common one.
fn filesystem(path: &Path) -> String {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return "unknown file system".into();
    };
    // SAFETY: an all-zero statfs is a valid value for statfs to overwrite.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a local to write into.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut fs) } != 0 {
        return "unknown file system".into();
    }
    let name = match fs.f_type as u64 {
        0xEF53 => "ext2/3/4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x0102_1994 => "tmpfs",
        0x794C_7630 => "overlayfs",
        0x2FC1_2FC1 => "zfs",
        0xF2F5_2010 => "f2fs",
        other => return format!("file system type {other:#x}"),
    };
    name.into()
}
