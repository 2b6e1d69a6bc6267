//! Launch latency of `daemonize` against a floor program (issue 6).
//!
//! One run = from spawning the launcher until both the launcher has exited
//! and the daemon it started has written a byte to a FIFO we are reading:
//! "the daemon runs and the caller has control back". Launchers alternate
//! with the floor (A, B, A, B...), and the ratio reported is the median of
//! the pairwise ratios, which cancels slow drifts of the machine. Each set
//! runs at RLIMIT_NOFILE 1024 and at the hard limit.
//!
//! Run it from the repository root:
//!
//!     cargo build --release --workspace && cargo run --release -p daemonize-bench
//!
//! Options: `--runs N` pairs per launcher and limit (default 2000),
//! `--only NAME` to measure one launcher (`daemonize`, `setsid -f`...), and
//! `--daemonize PATH` to measure another build of daemonize.
//!
//! `--supervisor` measures `daemonize --restart` instead: restart latency
//! against a minimal C supervisor, idle cost and memory (see the
//! `supervisor` module):
//!
//!     cargo build --release --workspace && cargo run --release -p daemonize-bench -- --supervisor
//!
//! `--capture` measures log capture instead: the throughput of `daemonize
//! -o FILE` through its supervisor (plain, with `--log-timestamps`, with
//! `--log-max-size 1M`) against `cat > FILE` and the s6, daemontools and
//! runit loggers when installed, with 200 MB from shared/bench's
//! producer, and the supervisor's peak RSS (see the `capture` module):
//!
//!     cargo build --release --workspace && cargo run --release -p daemonize-bench -- --capture

use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod capture;
mod procs;
mod supervisor;

struct Launcher {
    name: &'static str,
    /// The command line up to the daemon's own argv.
    prefix: Vec<OsString>,
}

struct Sample {
    elapsed: Duration,
    max_rss_kib: i64,
}

fn main() {
    let Args {
        runs,
        only,
        daemonize,
        supervisor,
        capture,
        bytes,
        probes,
    } = parse_args();
    let dir = std::env::current_exe()
        .expect("current_exe")
        .parent()
        .expect("binary directory")
        .to_owned();
    let sibling = |name: &str| {
        let path = dir.join(name);
        if !path.exists() {
            eprintln!(
                "missing {}: build everything first with `cargo build --release --workspace`",
                path.display()
            );
            std::process::exit(2);
        }
        path
    };
    let daemonize = daemonize.unwrap_or_else(|| sibling("daemonize"));
    if supervisor {
        std::process::exit(supervisor::main(supervisor::Options {
            runs: runs.unwrap_or(2000),
            only,
            daemonize,
            probes,
        }));
    }
    if capture {
        std::process::exit(capture::main(capture::Options {
            runs: runs.unwrap_or(3).max(1),
            only,
            bytes,
            daemonize,
            handoff: sibling("handoff"),
            probes,
        }));
    }
    let runs = runs.unwrap_or(2000);
    let floor = sibling("floor");
    let ping = sibling("ping");

    // Daemons reparent to us, so we can reap them instead of leaving
    // thousands of zombies to a slow init.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };

    let work = std::env::temp_dir().join(format!("daemonize-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("create work dir");
    let fifo = work.join("ready.fifo");
    let c_fifo = CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: c_fifo is a valid C string.
    if unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) } != 0 {
        panic!(
            "mkfifo {}: {}",
            fifo.display(),
            std::io::Error::last_os_error()
        );
    }
    let reader = open_fifo(&fifo, libc::O_RDONLY);
    // A writer of our own keeps the FIFO from reporting hang-up between runs.
    let _writer = open_fifo(&fifo, libc::O_WRONLY);

    let mut launchers = vec![Launcher {
        name: "daemonize",
        prefix: vec![daemonize.clone().into(), "--".into()],
    }];
    if Path::new("/usr/bin/daemonize").exists() {
        launchers.push(Launcher {
            name: "bmc daemonize",
            prefix: vec!["/usr/bin/daemonize".into()],
        });
    }
    if let Some(setsid) = which("setsid") {
        launchers.push(Launcher {
            name: "setsid -f",
            prefix: vec![setsid.into(), "-f".into()],
        });
    }
    if let Some(ssd) = which("start-stop-daemon") {
        launchers.push(Launcher {
            name: "start-stop-daemon",
            prefix: vec![
                ssd.into(),
                "--start".into(),
                "--background".into(),
                "--exec".into(),
                ping.clone().into(),
                "--".into(),
            ],
        });
    }
    launchers.retain(|l| only.as_deref().is_none_or(|name| name == l.name));
    let floor = Launcher {
        name: "floor",
        prefix: vec![floor.into()],
    };
    let daemon_argv = |launcher: &Launcher| -> Vec<OsString> {
        let mut argv = launcher.prefix.clone();
        if launcher.name != "start-stop-daemon" {
            argv.push(ping.clone().into());
        }
        argv.push(fifo.clone().into());
        argv
    };

    let hard = nofile_limit().1;
    println!(
        "daemonize launch benchmark: {runs} alternating pairs per launcher and limit; times are medians"
    );
    println!("machine: {}", machine());
    for limit in [1024, hard] {
        set_nofile(limit, hard);
        println!("\nRLIMIT_NOFILE {limit}:");
        println!(
            "  {:<20} {:>10} {:>10} {:>8}",
            "launcher", "median", "floor", "ratio"
        );
        for launcher in &launchers {
            let (a, b) = (daemon_argv(&floor), daemon_argv(launcher));
            for _ in 0..50 {
                run_once(&a, &reader);
                run_once(&b, &reader);
            }
            let mut floor_times = Vec::with_capacity(runs);
            let mut times = Vec::with_capacity(runs);
            let mut ratios = Vec::with_capacity(runs);
            for _ in 0..runs {
                let f = run_once(&a, &reader);
                let s = run_once(&b, &reader);
                ratios.push(s.elapsed.as_secs_f64() / f.elapsed.as_secs_f64());
                floor_times.push(f.elapsed);
                times.push(s.elapsed);
            }
            println!(
                "  {:<20} {:>8.0}µs {:>8.0}µs {:>7.3}x",
                launcher.name,
                median(&mut times).as_secs_f64() * 1e6,
                median(&mut floor_times).as_secs_f64() * 1e6,
                median(&mut ratios),
            );
            if launcher.name == "daemonize" {
                // Peak RSS from separate, forked runs (see `Spawn::Fork`).
                let mut rss: Vec<i64> = (0..200)
                    .map(|_| run(&b, &reader, Spawn::Fork).max_rss_kib)
                    .collect();
                let mut floor_rss: Vec<i64> = (0..200)
                    .map(|_| run(&a, &reader, Spawn::Fork).max_rss_kib)
                    .collect();
                let peak = *rss.iter().max().unwrap();
                println!(
                    "  {:<20} peak RSS {peak} KiB (median {} KiB; floor {} KiB)",
                    "",
                    median(&mut rss),
                    median(&mut floor_rss),
                );
            }
        }
    }
    reap_all();
    let _ = std::fs::remove_dir_all(&work);
}

struct Args {
    /// Pairs per launcher and limit (restarts with --supervisor, rounds
    /// with --capture); each mode has its default.
    runs: Option<usize>,
    /// Measure only this launcher besides the floor (`daemonize`...).
    only: Option<String>,
    /// Another daemonize build to measure instead of the sibling binary.
    daemonize: Option<PathBuf>,
    /// Measure the supervisor (`--restart`) instead of the launch.
    supervisor: bool,
    /// Measure log capture instead of the launch.
    capture: bool,
    /// Bytes the capture benchmark's producer writes.
    bytes: u64,
    /// Where the C probes of the supervisor and capture benchmarks are.
    probes: PathBuf,
}

fn parse_args() -> Args {
    let mut parsed = Args {
        runs: None,
        only: None,
        daemonize: None,
        supervisor: false,
        capture: false,
        bytes: 200_000_000,
        probes: PathBuf::from("/work/shared/bench"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--supervisor" || arg == "--capture" {
            parsed.supervisor |= arg == "--supervisor";
            parsed.capture |= arg == "--capture";
            continue;
        }
        match (arg.as_str(), args.next()) {
            ("--runs", Some(n)) => parsed.runs = Some(n.parse().expect("--runs N")),
            ("--bytes", Some(n)) => parsed.bytes = n.parse().expect("--bytes N"),
            ("--only", Some(name)) => parsed.only = Some(name),
            ("--daemonize", Some(path)) => parsed.daemonize = Some(path.into()),
            ("--probes", Some(dir)) => parsed.probes = dir.into(),
            _ => usage(),
        }
    }
    if parsed.supervisor && parsed.capture {
        usage();
    }
    parsed
}

fn usage() -> ! {
    eprintln!(
        "usage: daemonize-bench [--runs N] [--only LAUNCHER] [--daemonize PATH]\n       daemonize-bench --supervisor [--runs N] [--only restart|idle] [--daemonize PATH] [--probes DIR]\n       daemonize-bench --capture [--runs N] [--only LOGGER] [--bytes N] [--daemonize PATH] [--probes DIR]"
    );
    std::process::exit(2);
}

fn open_fifo(path: &Path, mode: libc::c_int) -> File {
    std::fs::OpenOptions::new()
        .read(mode == libc::O_RDONLY)
        .write(mode == libc::O_WRONLY)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

use std::os::unix::fs::OpenOptionsExt;

/// Spawns one launcher and returns once it has exited and its daemon has
/// written its byte.
fn run_once(argv: &[OsString], fifo: &File) -> Sample {
    run(argv, fifo, Spawn::Vfork)
}

/// How the launcher is started.
#[derive(Clone, Copy, PartialEq)]
enum Spawn {
    /// std's default (posix_spawn, a vfork): fastest, the same for all.
    Vfork,
    /// A real fork. The kernel counts the memory a process had before its
    /// exec in its peak RSS, and a vfork child "has" ours; a forked child
    /// starts with only a copy of our small anonymous memory, so its
    /// `ru_maxrss` is the launcher's own.
    Fork,
}

/// The launcher is reaped with wait4 (for its rusage), not `Child::wait`,
/// hence the allowance.
#[allow(clippy::zombie_processes)]
fn run(argv: &[OsString], fifo: &File, spawn: Spawn) -> Sample {
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if spawn == Spawn::Fork {
        // SAFETY: an empty pre_exec closure does nothing in the child; it
        // only makes std fork instead of using posix_spawn.
        unsafe { command.pre_exec(|| Ok(())) };
    }
    let start = Instant::now();
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", argv[0]));
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 writes into the two locals above.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{:?} failed with status {status:#x}",
        argv[0]
    );
    let mut pfd = libc::pollfd {
        fd: fifo.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(&mut pfd, 1, 10_000) };
    assert_eq!(ready, 1, "the daemon never wrote to the FIFO");
    let elapsed = start.elapsed();
    let mut byte = [0u8; 16];
    // SAFETY: reads into a local buffer of the given length.
    unsafe { libc::read(fifo.as_raw_fd(), byte.as_mut_ptr().cast(), byte.len()) };
    // Outside the timed part: wait for the daemon (reparented to us) to
    // exit, so the next run never meets it (start-stop-daemon would refuse
    // to start a second copy).
    reap_all();
    Sample {
        elapsed,
        max_rss_kib: usage.ru_maxrss,
    }
}

fn reap_all() {
    // SAFETY: waitpid with a null status pointer.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) } > 0 {}
}

fn nofile_limit() -> (u64, u64) {
    // SAFETY: getrlimit writes into a local.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (lim.rlim_cur, lim.rlim_max)
}

fn set_nofile(soft: u64, hard: u64) {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads a local.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    assert_eq!(rc, 0, "setrlimit NOFILE {soft}");
}

fn median<T: PartialOrd + Copy>(values: &mut [T]) -> T {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.exists())
}

/// Builds `DIR/NAME.c` with `CC -O2 -static` into `OUT/NAME`, the way the
/// probes in shared/bench are meant to be built.
fn build_probe(cc: &Path, dir: &Path, name: &str, out: &Path) -> Result<PathBuf, String> {
    let source = dir.join(format!("{name}.c"));
    let out = out.join(name);
    let built = Command::new(cc)
        .args(["-O2", "-static", "-o"])
        .arg(&out)
        .arg(&source)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", cc.display()))?;
    if !built.status.success() {
        return Err(format!(
            "building {} failed: {}",
            source.display(),
            String::from_utf8_lossy(&built.stderr).trim()
        ));
    }
    Ok(out)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpu}, {} CPUs, Linux {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel.trim()
    )
}
