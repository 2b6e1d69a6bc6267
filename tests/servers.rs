//! Real Debian servers through daemonize, on 127.0.0.1 and spare ports, for
//! the whole cycle: start with `-p` and `-o` (and the readiness option the
//! server supports), speak a little of its protocol to see that it really
//! serves, `--status`, a second start that is refused, `--reload` where the
//! server reloads on SIGHUP, and `--stop`, after which no process of the
//! server may remain (docs/design.md, "Files" and "A start that does not stay
//! up").
//!
//! Each server is started the way its package's service runs it, in the
//! foreground where it can be kept there, with every file (configuration,
//! keys, logs, pidfiles, data) in a temporary directory of its own:
//!
//! - sshd and dnsmasq close every inherited descriptor at start-up, so they
//!   drop daemonize's lock: they are found by identity instead.
//! - unbound drops to its own user before it sends `READY=1`.
//! - nginx reloads its workers on SIGHUP; without `daemon off;` it forks
//!   into the background, and daemonize follows it.
//! - redis sends `READY=1` with `--supervised systemd`.
//!
//! Every process a test sees is owned by it ([`Server`]) and killed on drop,
//! also when the test panics: the test's own children (daemons reparented to
//! this subreaper) by a [`Daemon`] guard, anyone else's (nginx workers,
//! sshd's connection children) through a pidfd opened while the process was
//! still the one seen. Nothing is ever killed by name, and nothing waits a
//! fixed time.
//!
//! Needs root and the Debian packages openssh-server, dnsmasq-base, unbound,
//! nginx and redis-server (`.ci/run` installs them). A test whose server is
//! not installed says `skipped: SERVER is not installed` on stderr and passes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{Pid, User};
use tempfile::TempDir;

use common::{Daemon, Output, TIMEOUT, daemonize, init, processes_with_marker, read_pid, test_pid};

const SSHD: &str = "/usr/sbin/sshd";
const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";
const DNSMASQ: &str = "/usr/sbin/dnsmasq";
const UNBOUND: &str = "/usr/sbin/unbound";
const NGINX: &str = "/usr/sbin/nginx";
const REDIS: &str = "/usr/bin/redis-server";

// ---------------------------------------------------------------------------
// Skipping
// ---------------------------------------------------------------------------

/// Whether the test can run: as root (the servers bind, drop privileges and
/// write where only root may), with every one of `binaries` installed.
/// Otherwise says why on stderr, and the test returns (passes).
fn available(server: &str, binaries: &[&str]) -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: {server} needs root");
        return false;
    }
    if binaries.iter().any(|binary| !Path::new(binary).exists()) {
        eprintln!("skipped: {server} is not installed");
        return false;
    }
    true
}

// ---------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------

/// A port on 127.0.0.1 that is free for both TCP and UDP right now (the DNS
/// servers take both). Ports are taken in turn from 20000-31999, below the
/// kernel's ephemeral range (32768 up), so no client socket gets one by
/// chance; each test process starts at its own offset, and a port that is
/// busy is passed over.
fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = std::process::id() % 1200 * 10;
    for _ in 0..12000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(20000 + (offset + n) % 12000).expect("port fits in u16");
        let free = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
            && UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok();
        if free {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 in 20000-31999");
}

// ---------------------------------------------------------------------------
// A test's files
// ---------------------------------------------------------------------------

/// A test's own directory, readable by everyone (unbound and nginx's
/// workers read from it after dropping root), holding the server's
/// configuration, its data, `server.pid` and `server.log`. Its path is
/// also the marker by which the test finds its server's processes: every
/// server here has it in its command line.
struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("cannot create a temporary directory");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        Fixture { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `path(name)` as a string, for configuration files and arguments.
    fn at(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn marker(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn pidfile(&self) -> PathBuf {
        self.path("server.pid")
    }

    /// The server's standard output and error (`-o`).
    fn log(&self) -> PathBuf {
        self.path("server.log")
    }

    /// Writes a file readable by everyone and returns its path.
    fn write(&self, name: &str, content: &str) -> String {
        let path = self.path(name);
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        path.display().to_string()
    }

    /// Every `*.log` file of the test, for failure messages.
    fn logs(&self) -> String {
        let mut names: Vec<PathBuf> = fs::read_dir(self.dir.path())
            .map(|entries| entries.filter_map(|e| Some(e.ok()?.path())).collect())
            .unwrap_or_default();
        names.retain(|path| path.extension().is_some_and(|ext| ext == "log"));
        names.sort();
        let mut text = String::new();
        for path in names {
            let content = fs::read_to_string(&path).unwrap_or_else(|e| format!("({e})\n"));
            text.push_str(&format!("--- {} ---\n{content}", path.display()));
        }
        text
    }

    /// `daemonize -p PIDFILE -o LOG OPTIONS -- ARGV`.
    fn daemonize(&self, options: &[&str], argv: &[String]) -> Output {
        daemonize()
            .arg("-p")
            .arg(self.pidfile())
            .arg("-o")
            .arg(self.log())
            .args(options)
            .arg("--")
            .args(argv)
            .run()
    }

    /// Starts the server with [`Fixture::daemonize`] and takes over every
    /// process it left: the one the pidfile names and every one carrying
    /// the marker, with their descendants. Whatever the outcome, so that a
    /// failing test leaves nothing behind.
    fn launch(&self, options: &[&str], argv: &[String]) -> (Output, Server) {
        let output = self.daemonize(options, argv);
        let mut server = Server::new(self);
        if let Some(pid) = read_pid(&self.pidfile()).filter(|&pid| proc_stat(pid).is_some()) {
            server.set_daemon(pid);
        }
        server.refresh();
        (output, server)
    }

    /// Asserts that daemonize started the server: exit 0.
    #[track_caller]
    fn assert_started(&self, output: &Output) {
        assert_eq!(
            output.code,
            Some(0),
            "daemonize did not start the server: {output:?}\n{}",
            self.logs()
        );
    }

    /// `daemonize -p PIDFILE ACTION...`.
    fn control(&self, action: &[&str]) -> Output {
        daemonize().arg("-p").arg(self.pidfile()).args(action).run()
    }

    /// `--status` exits 0 and names `pid`.
    #[track_caller]
    fn assert_running(&self, pid: i32) {
        let output = self.control(&["--status"]);
        assert_eq!(
            (output.code, pid_after(&output.stdout, "pid ")),
            (Some(0), Some(pid)),
            "--status should say that pid {pid} runs: {output:?}\n{}",
            self.logs()
        );
    }

    /// A second, identical start is refused: exit 1, naming the running
    /// daemon. Anything it started anyway is taken over by `server` first.
    #[track_caller]
    fn assert_second_start_refused(
        &self,
        server: &mut Server,
        pid: i32,
        options: &[&str],
        argv: &[String],
    ) {
        let output = self.daemonize(options, argv);
        server.refresh();
        if let Some(other) = read_pid(&self.pidfile()).filter(|&other| other != pid) {
            server.adopt(other);
        }
        output.assert_failed(1, &["already running", &pid.to_string()]);
        assert_eq!(read_pid(&self.pidfile()), Some(pid), "the pidfile changed");
    }

    /// `--reload` exits 0, and the daemon is still the same process.
    #[track_caller]
    fn reload(&self, pid: i32) {
        let output = self.control(&["--reload"]);
        assert_eq!(
            output.code,
            Some(0),
            "--reload failed: {output:?}\n{}",
            self.logs()
        );
        assert!(common::procfs::is_alive(pid), "--reload ended pid {pid}");
    }

    /// `--stop` exits 0; afterwards the pidfile is gone and `--status` says
    /// "not running" (3). `server.assert_all_gone` checks the processes.
    #[track_caller]
    fn stop(&self) {
        let output = self.control(&["--stop"]);
        assert_eq!(
            output.code,
            Some(0),
            "--stop failed: {output:?}\n{}",
            self.logs()
        );
        assert!(
            !self.pidfile().exists(),
            "--stop left the pidfile, holding {:?}",
            fs::read_to_string(self.pidfile())
        );
        self.control(&["--status"]).assert_code(3);
    }
}

/// The number right after the first `prefix` in `text`.
fn pid_after(text: &str, prefix: &str) -> Option<i32> {
    let rest = &text[text.find(prefix)? + prefix.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// What the tests need from `/proc/PID/stat`: the parent and the start time
/// (field 22, in clock ticks since boot), which tells a process from a
/// later one that reuses its PID.
#[derive(Clone, Copy, Debug)]
struct ProcStat {
    ppid: i32,
    start: u64,
}

fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold anything: fields count from the last ')'.
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    Some(ProcStat {
        ppid: fields.get(1)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// `/proc/PID/cmdline` with its NULs shown as spaces, for messages and for
/// servers that rewrite their title (`nginx: master process ...`).
fn cmdline_text(pid: i32) -> String {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let text = String::from_utf8_lossy(&raw).replace('\0', " ");
    text.trim_end().to_owned()
}

/// Every process whose chain of parents reaches `root` (not `root` itself).
fn descendants(root: i32) -> Vec<i32> {
    let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for pid in common::procfs::pids() {
        if let Some(stat) = proc_stat(pid) {
            children.entry(stat.ppid).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(parent) = queue.pop() {
        for &child in children.get(&parent).into_iter().flatten() {
            if !found.contains(&child) {
                found.push(child);
                queue.push(child);
            }
        }
    }
    found
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a PID and flags, touches no memory of
    // ours, and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).expect("a descriptor fits in int");
    // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A pidfd is readable once its process has exited (zombie or reaped).
fn pidfd_exited(pidfd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

fn pidfd_signal(pidfd: &OwnedFd, signal: Signal) {
    // SAFETY: pidfd_send_signal(2) with a valid pidfd, a signal number, no
    // siginfo (a null pointer is allowed) and no flags.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
}

/// How a [`Server`] holds one process.
enum Hold {
    /// This test process's own child (a daemon is reparented to this
    /// subreaper): its PID cannot be reused before it is reaped here.
    Child(Daemon),
    /// Anyone else's child, through a pidfd opened while the process still
    /// had the start time seen, so it can never reach a later process.
    Pidfd(OwnedFd),
}

struct Owned {
    pid: i32,
    start: u64,
    /// Its command line when it was taken over, for messages.
    cmdline: String,
    hold: Hold,
}

impl Owned {
    fn signal(&self, signal: Signal) {
        match &self.hold {
            // Our unreaped child: its PID is still its own.
            Hold::Child(daemon) => {
                let _ = kill(Pid::from_raw(daemon.pid()), signal);
            }
            Hold::Pidfd(pidfd) => pidfd_signal(pidfd, signal),
        }
    }

    /// Exited: a zombie counts, it has stopped running.
    fn is_dead(&self) -> bool {
        match &self.hold {
            Hold::Child(daemon) => !daemon.is_alive(),
            Hold::Pidfd(pidfd) => pidfd_exited(pidfd),
        }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if let Hold::Pidfd(pidfd) = &self.hold {
            pidfd_signal(pidfd, Signal::SIGKILL);
            // Reparented to this subreaper since: reap it, which is sound
            // because nobody else can reap a child of ours.
            let ours = proc_stat(self.pid)
                .is_some_and(|stat| stat.ppid == test_pid() && stat.start == self.start);
            if ours {
                while let Err(Errno::EINTR) = waitpid(Pid::from_raw(self.pid), None) {}
            }
        }
        // Hold::Child: the Daemon guard kills and reaps it.
    }
}

/// Every process of one test's server that the test has seen, each killed
/// on drop, also when the test panics.
struct Server {
    marker: String,
    /// The daemon, once known: its descendants are the server's too.
    pid: Option<i32>,
    owned: Vec<Owned>,
}

impl Server {
    fn new(fx: &Fixture) -> Server {
        Server {
            marker: fx.marker(),
            pid: None,
            owned: Vec::new(),
        }
    }

    /// The daemon is `pid`: takes it over and watches its descendants.
    fn set_daemon(&mut self, pid: i32) {
        self.pid = Some(pid);
        self.adopt(pid);
    }

    /// The daemon, which must be known by now.
    #[track_caller]
    fn daemon(&self) -> i32 {
        self.pid
            .expect("the pidfile names no process: the daemon is not known")
    }

    /// Takes `pid` over, unless it is owned already or gone.
    fn adopt(&mut self, pid: i32) {
        if pid <= 1 || pid == test_pid() {
            return;
        }
        let Some(stat) = proc_stat(pid) else { return };
        if self
            .owned
            .iter()
            .any(|o| o.pid == pid && o.start == stat.start)
        {
            return;
        }
        let cmdline = cmdline_text(pid);
        let hold = if stat.ppid == test_pid() {
            Hold::Child(Daemon::new(pid))
        } else {
            let Ok(pidfd) = pidfd_open(pid) else { return };
            if proc_stat(pid).map(|s| s.start) != Some(stat.start) {
                return; // gone, and the PID reused, while the pidfd was opened
            }
            Hold::Pidfd(pidfd)
        };
        self.owned.push(Owned {
            pid,
            start: stat.start,
            cmdline,
            hold,
        });
    }

    /// Takes over every process now under the daemon, and every live
    /// process that carries the marker, with its descendants. Returns how
    /// many it took over.
    fn refresh(&mut self) -> usize {
        let before = self.owned.len();
        let mut roots: Vec<i32> = processes_with_marker(&self.marker)
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        roots.extend(self.pid);
        for root in roots {
            self.adopt(root);
            for pid in descendants(root) {
                self.adopt(pid);
            }
        }
        self.owned.len() - before
    }

    /// Polls `probe` until it gives a value, checking each time that the
    /// daemon is still alive; panics with the logs otherwise.
    #[track_caller]
    fn poll<T>(&self, fx: &Fixture, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        let mut died = None;
        let found = common::wait_for_optional(TIMEOUT, || {
            if let Some(pid) = self.pid.filter(|&pid| !common::procfs::is_alive(pid)) {
                died = Some(pid);
                return Some(None);
            }
            probe().map(Some)
        });
        match (found, died) {
            (Some(Some(value)), _) => value,
            (_, Some(pid)) => panic!(
                "the server (pid {pid}) died while waiting for {what}\n{}",
                fx.logs()
            ),
            _ => panic!(
                "timed out after {TIMEOUT:?} waiting for {what}\n{}",
                fx.logs()
            ),
        }
    }

    /// After `--stop`: every process seen so far has exited (zombies count)
    /// and no live process carries the marker.
    #[track_caller]
    fn assert_all_gone(&self, fx: &Fixture) {
        let alive: Vec<String> = self
            .owned
            .iter()
            .filter(|o| !o.is_dead())
            .map(|o| format!("{} ({})", o.pid, o.cmdline))
            .collect();
        let marked = processes_with_marker(&self.marker);
        assert!(
            alive.is_empty() && marked.is_empty(),
            "processes of the server remain after --stop: {alive:?}, with the marker: {marked:?}\n{}",
            fx.logs()
        );
    }

    /// The PIDs seen so far, for messages and comparisons.
    fn seen(&self) -> BTreeSet<i32> {
        self.owned.iter().map(|o| o.pid).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Stop every process first, so that none can start another (an
        // nginx master replaces a worker that dies): until a look finds
        // nothing new, take over what appeared and stop it.
        for _ in 0..100 {
            self.refresh();
            for owned in &self.owned {
                owned.signal(Signal::SIGSTOP);
            }
            if self.refresh() == 0 {
                break;
            }
        }
        for owned in &self.owned {
            owned.signal(Signal::SIGKILL);
        }
        // Reap our own children first (Daemon guards), so that theirs are
        // reparented here, then the others, parents before their children
        // (the order they were found in), each reaped once it is ours.
        let (children, others): (Vec<Owned>, Vec<Owned>) = self
            .owned
            .drain(..)
            .partition(|o| matches!(o.hold, Hold::Child(_)));
        drop(children);
        drop(others);
    }
}

// ---------------------------------------------------------------------------
// Protocols
// ---------------------------------------------------------------------------

const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn connect(port: u16) -> io::Result<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// Reads up to and including the first `\n` (or 1 KiB).
fn read_line(stream: &mut TcpStream) -> io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 1024 && !line.ends_with(b"\n") {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// The identification line an SSH server sends first (RFC 4253, 4.2).
fn ssh_banner(port: u16) -> io::Result<String> {
    read_line(&mut connect(port)?)
}

/// `GET PATH` over HTTP/1.0: the status line and the body.
fn http_get(port: u16, path: &str) -> io::Result<(String, String)> {
    let mut stream = connect(port)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other(format!("no end of headers in {response:?}")))?;
    let status = head.lines().next().unwrap_or_default().to_owned();
    Ok((status, body.to_owned()))
}

/// Redis's inline `PING` command and the reply line.
fn redis_ping(port: u16) -> io::Result<String> {
    let mut stream = connect(port)?;
    stream.write_all(b"PING\r\n")?;
    read_line(&mut stream)
}

/// Asks 127.0.0.1:`port` over UDP for the A record of `name`, with a query
/// written by hand (RFC 1035, 4.1): the header, then the question.
fn resolve(port: u16, name: &str) -> io::Result<Ipv4Addr> {
    static ID: AtomicU16 = AtomicU16::new(1);
    let id = ID.fetch_add(1, Ordering::Relaxed);
    let mut query = Vec::new();
    query.extend(id.to_be_bytes());
    query.extend([0x01, 0x00]); // a standard query, recursion desired
    query.extend([0, 1, 0, 0, 0, 0, 0, 0]); // one question, no records
    for label in name.split('.') {
        query.push(u8::try_from(label.len()).expect("a short label"));
        query.extend(label.as_bytes());
    }
    query.push(0);
    query.extend([0, 1, 0, 1]); // type A, class IN
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    socket.connect((Ipv4Addr::LOCALHOST, port))?;
    socket.set_read_timeout(Some(Duration::from_millis(500)))?;
    socket.send(&query)?;
    let mut buf = [0u8; 512];
    let len = socket.recv(&mut buf)?;
    a_record(id, &buf[..len]).map_err(io::Error::other)
}

/// The address in the last answer record of a response to query `id`,
/// which must be an IN A record with its owner name compressed to a
/// pointer (name 2, type 2, class 2, TTL 4, length 2, address 4 bytes).
fn a_record(id: u16, response: &[u8]) -> Result<Ipv4Addr, String> {
    if response.len() < 12 + 16 {
        return Err(format!("a short response: {response:02x?}"));
    }
    if response[..2] != id.to_be_bytes() || response[2] & 0x80 == 0 {
        return Err(format!("not a response to query {id}: {response:02x?}"));
    }
    let rcode = response[3] & 0x0f;
    let answers = u16::from_be_bytes([response[6], response[7]]);
    if rcode != 0 || answers == 0 {
        return Err(format!("rcode {rcode}, {answers} answers: {response:02x?}"));
    }
    let record = &response[response.len() - 16..];
    if record[2..6] != [0, 1, 0, 1] || record[10..12] != [0, 4] {
        return Err(format!("the last record is not IN A: {response:02x?}"));
    }
    Ok(Ipv4Addr::new(
        record[12], record[13], record[14], record[15],
    ))
}

fn addr(text: &str) -> Ipv4Addr {
    text.parse().expect("an IPv4 address")
}

// ---------------------------------------------------------------------------
// sshd
// ---------------------------------------------------------------------------

/// sshd in the foreground (`-D`, logging to standard error with `-e`), with
/// a host key of its own. It closes every inherited descriptor at start-up
/// (and again when SIGHUP makes it re-exec itself), so it drops daemonize's
/// lock: `--status`, a second start, `--reload` and `--stop` find it by
/// identity (it started before the pidfile was written).
#[test]
fn sshd_in_the_foreground_is_found_without_its_lock_reloads_and_stops() {
    init();
    if !available("sshd", &[SSHD, SSH_KEYGEN]) {
        return;
    }
    let fx = Fixture::new();
    let port = free_port();
    // Privilege separation: sshd refuses to start without this directory
    // (the package's service creates it, with systemd's RuntimeDirectory).
    match fs::DirBuilder::new().mode(0o755).create("/run/sshd") {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => panic!("mkdir /run/sshd: {e}"),
        _ => {}
    }
    let key = fx.at("host_key");
    let keygen = Command::new(SSH_KEYGEN)
        .args(["-q", "-t", "ed25519", "-N", "", "-f", &key])
        .output()
        .expect("run ssh-keygen");
    assert!(keygen.status.success(), "ssh-keygen: {keygen:?}");
    let config = fx.write(
        "sshd_config",
        &format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {key}\nPidFile none\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        ),
    );
    // An absolute path: sshd re-executes itself, at each connection and on
    // SIGHUP, and refuses to run otherwise.
    let argv = [SSHD, "-D", "-e", "-f", &config].map(String::from);

    let (output, mut server) = fx.launch(&[], &argv);
    fx.assert_started(&output);
    let pid = server.daemon();
    let banner = server.poll(&fx, "sshd's banner", || ssh_banner(port).ok());
    assert!(banner.starts_with("SSH-2.0-OpenSSH"), "banner {banner:?}");

    fx.assert_running(pid);
    fx.assert_second_start_refused(&mut server, pid, &[], &argv);

    fx.reload(pid);
    server.poll(&fx, "sshd to restart on SIGHUP", || {
        let log = fs::read_to_string(fx.log()).unwrap_or_default();
        let restarted = log.contains("Received SIGHUP; restarting.")
            && log.matches("Server listening on 127.0.0.1").count() == 2;
        restarted.then_some(())
    });
    let banner = server.poll(&fx, "sshd's banner after SIGHUP", || ssh_banner(port).ok());
    assert!(banner.starts_with("SSH-2.0-OpenSSH"), "banner {banner:?}");
    fx.assert_running(pid);

    // sshd's connection children deliberately outlive the listener (a
    // session survives a restart): wait for the probes' to end first.
    server.poll(&fx, "sshd's probe connections to end", || {
        descendants(pid).is_empty().then_some(())
    });
    server.refresh();
    fx.stop();
    server.assert_all_gone(&fx);
}

// ---------------------------------------------------------------------------
// dnsmasq
// ---------------------------------------------------------------------------

/// dnsmasq kept in the foreground (`-k`), logging to standard error, as
/// `nobody`. It closes every inherited descriptor at start-up, so it is
/// found by identity. SIGHUP re-reads its `--addn-hosts` file.
#[test]
fn dnsmasq_in_the_foreground_answers_reloads_its_hosts_and_stops() {
    init();
    if !available("dnsmasq", &[DNSMASQ]) {
        return;
    }
    let fx = Fixture::new();
    let port = free_port();
    let hosts = fx.write("hosts", "127.0.0.10 reload.test.example\n");
    let argv = [
        DNSMASQ.to_owned(),
        "-k".into(),
        "--conf-file=/dev/null".into(), // not /etc/dnsmasq.conf
        "--no-resolv".into(),
        "--no-hosts".into(),
        format!("--addn-hosts={hosts}"),
        format!("--port={port}"),
        "--listen-address=127.0.0.1".into(),
        "--bind-interfaces".into(),
        "--pid-file=".into(), // none
        "--address=/test.example/127.0.0.9".into(),
        "--user=nobody".into(),
        "--group=nogroup".into(),
        "--log-facility=-".into(), // standard error
    ];

    let (output, mut server) = fx.launch(&[], &argv);
    fx.assert_started(&output);
    let pid = server.daemon();
    let answer = server.poll(&fx, "dnsmasq to answer", || {
        resolve(port, "test.example").ok()
    });
    assert_eq!(answer, addr("127.0.0.9"));
    assert_eq!(
        resolve(port, "reload.test.example").unwrap(),
        addr("127.0.0.10")
    );

    fx.assert_running(pid);
    fx.assert_second_start_refused(&mut server, pid, &[], &argv);

    fx.write("hosts", "127.0.0.11 reload.test.example\n");
    fx.reload(pid);
    server.poll(&fx, "dnsmasq to read its hosts file again", || {
        let answer = resolve(port, "reload.test.example").ok()?;
        (answer == addr("127.0.0.11")).then_some(())
    });
    assert_eq!(resolve(port, "test.example").unwrap(), addr("127.0.0.9"));
    fx.assert_running(pid);

    server.refresh();
    fx.stop();
    server.assert_all_gone(&fx);
}

// ---------------------------------------------------------------------------
// unbound
// ---------------------------------------------------------------------------

fn unbound_conf(fx: &Fixture, port: u16, reload_address: &str) -> String {
    format!(
        "server:\n\
         \x20   interface: 127.0.0.1\n\
         \x20   port: {port}\n\
         \x20   do-ip6: no\n\
         \x20   do-daemonize: no\n\
         \x20   username: \"unbound\"\n\
         \x20   chroot: \"\"\n\
         \x20   pidfile: \"\"\n\
         \x20   use-syslog: no\n\
         \x20   logfile: \"\"\n\
         \x20   verbosity: 1\n\
         \x20   directory: \"{dir}\"\n\
         \x20   module-config: \"iterator\"\n\
         \x20   local-zone: \"test.example.\" static\n\
         \x20   local-data: \"test.example. IN A 127.0.0.9\"\n\
         \x20   local-data: \"reload.test.example. IN A {reload_address}\"\n\
         remote-control:\n\
         \x20   control-enable: no\n",
        dir = fx.marker(),
    )
}

/// unbound in the foreground (`-d`) drops to its user `unbound` by itself
/// and only then sends `READY=1` (Debian builds it with systemd support):
/// the notification socket must be reachable after the drop, and the
/// server answers as soon as daemonize returns. SIGHUP re-reads the
/// configuration (as `unbound`, so the directory is world-readable).
#[test]
fn unbound_dropping_to_its_user_is_ready_when_wait_ready_returns() {
    init();
    if !available("unbound", &[UNBOUND]) {
        return;
    }
    let unbound = User::from_name("unbound")
        .expect("read the user database")
        .expect("the unbound package creates the user unbound");
    let fx = Fixture::new();
    let port = free_port();
    let config = fx.write("unbound.conf", &unbound_conf(&fx, port, "127.0.0.10"));
    // -p: no pidfile of its own.
    let argv = [UNBOUND, "-d", "-p", "-c", &config].map(String::from);
    let options = ["--wait-ready", "--ready-timeout", "15"];

    let (output, mut server) = fx.launch(&options, &argv);
    fx.assert_started(&output);
    let pid = server.daemon();
    // Ready means answering: one query, no polling.
    assert_eq!(
        resolve(port, "test.example").unwrap_or_else(|e| panic!("no answer: {e}\n{}", fx.logs())),
        addr("127.0.0.9")
    );
    let uid = unbound.uid.as_raw();
    assert_eq!(
        common::procfs::status(pid).unwrap().uids(),
        [uid, uid, uid, uid],
        "unbound did not drop to its user"
    );

    fx.assert_running(pid);
    fx.assert_second_start_refused(&mut server, pid, &options, &argv);

    // No --reload here: unbound notifies on a reload too (READY=1 again)
    // and exits when that fails, and once daemonize has returned nothing
    // receives on NOTIFY_SOCKET (README, "Waiting until the daemon is
    // ready"; a supervisor that keeps the socket is issue 10's).

    server.refresh();
    fx.stop();
    server.assert_all_gone(&fx);
}

// ---------------------------------------------------------------------------
// nginx
// ---------------------------------------------------------------------------

const NGINX_WORKERS: usize = 2;

/// nginx serving `html/` on 127.0.0.1:`port`, with workers as `nobody` and
/// every path in the test's directory. `/generation` tells which
/// configuration is in force.
fn nginx_conf(fx: &Fixture, port: u16, daemon_off: bool, generation: u32) -> String {
    let at = |name| fx.at(name);
    format!(
        "{daemon}user nobody nogroup;\n\
         worker_processes {NGINX_WORKERS};\n\
         pid {pid};\n\
         error_log {error_log} info;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n\
         \x20   access_log {access_log};\n\
         \x20   client_body_temp_path {client_body};\n\
         \x20   proxy_temp_path {proxy};\n\
         \x20   fastcgi_temp_path {fastcgi};\n\
         \x20   uwsgi_temp_path {uwsgi};\n\
         \x20   scgi_temp_path {scgi};\n\
         \x20   server {{\n\
         \x20       listen 127.0.0.1:{port};\n\
         \x20       root {root};\n\
         \x20       location = /generation {{ return 200 \"generation {generation}\\n\"; }}\n\
         \x20   }}\n\
         }}\n",
        daemon = if daemon_off { "daemon off;\n" } else { "" },
        pid = at("nginx.pid"),
        error_log = at("error.log"),
        access_log = at("access.log"),
        client_body = at("client_body"),
        proxy = at("proxy"),
        fastcgi = at("fastcgi"),
        uwsgi = at("uwsgi"),
        scgi = at("scgi"),
        root = at("html"),
    )
}

/// The page nginx serves, written into `html/`.
const PAGE: &str = "served by nginx under daemonize\n";

/// Writes the page and the configuration; returns nginx's command line
/// (`-p` prefix and `-e` error log in the test's directory too, so nothing
/// is written under /var/log/nginx).
fn nginx_setup(fx: &Fixture, port: u16, daemon_off: bool) -> Vec<String> {
    fs::DirBuilder::new()
        .mode(0o755)
        .create(fx.path("html"))
        .unwrap();
    fx.write("html/index.html", PAGE);
    let config = fx.write("nginx.conf", &nginx_conf(fx, port, daemon_off, 1));
    let prefix = format!("{}/", fx.marker());
    [
        NGINX,
        "-p",
        &prefix,
        "-c",
        &config,
        "-e",
        &fx.at("error.log"),
    ]
    .map(String::from)
    .to_vec()
}

#[track_caller]
fn assert_serves(fx: &Fixture, server: &Server, port: u16) {
    let (status, body) = server.poll(fx, "nginx to serve the page", || http_get(port, "/").ok());
    assert!(status.contains(" 200 "), "status {status:?}");
    assert_eq!(body, PAGE);
}

/// Whether `pid` is the nginx master of this test.
fn is_nginx_master(fx: &Fixture, pid: i32) -> bool {
    let cmdline = cmdline_text(pid);
    common::procfs::is_alive(pid)
        && cmdline.starts_with("nginx: master process")
        && cmdline.contains(&fx.at("nginx.conf"))
}

/// Waits until the master has exactly its workers, none of them in `old`.
fn nginx_workers(fx: &Fixture, server: &Server, master: i32, old: &[i32]) -> Vec<i32> {
    server.poll(fx, "nginx's workers", || {
        let workers = descendants(master);
        let fresh = workers.len() == NGINX_WORKERS
            && workers.iter().all(|pid| {
                !old.contains(pid) && cmdline_text(*pid).starts_with("nginx: worker process")
            });
        fresh.then_some(workers)
    })
}

/// nginx with `daemon off;`: the master is the daemon, its workers hold the
/// lock they inherited. SIGHUP starts new workers with the new
/// configuration; the master stays. `--stop` leaves no worker.
#[test]
fn nginx_with_daemon_off_serves_reloads_its_configuration_and_stops_with_its_workers() {
    init();
    if !available("nginx", &[NGINX]) {
        return;
    }
    let fx = Fixture::new();
    let port = free_port();
    let argv = nginx_setup(&fx, port, true);

    let (output, mut server) = fx.launch(&[], &argv);
    fx.assert_started(&output);
    let master = server.daemon();
    assert_serves(&fx, &server, port);
    assert!(is_nginx_master(&fx, master), "{}", cmdline_text(master));
    let workers = nginx_workers(&fx, &server, master, &[]);
    server.refresh();
    assert_eq!(http_get(port, "/generation").unwrap().1, "generation 1\n");

    fx.assert_running(master);
    fx.assert_second_start_refused(&mut server, master, &[], &argv);

    fx.write("nginx.conf", &nginx_conf(&fx, port, true, 2));
    fx.reload(master);
    server.poll(&fx, "nginx to serve the new configuration", || {
        let (_, body) = http_get(port, "/generation").ok()?;
        (body == "generation 2\n").then_some(())
    });
    nginx_workers(&fx, &server, master, &workers);
    assert_serves(&fx, &server, port);
    fx.assert_running(master);

    server.refresh();
    let seen = server.seen();
    assert!(seen.len() > NGINX_WORKERS, "seen only {seen:?}");
    fx.stop();
    server.assert_all_gone(&fx);
}

/// nginx without `daemon off;` forks into the background, and the process
/// daemonize started exits 0. daemonize follows it: whatever the timing,
/// `--status` comes to name the master (which keeps the lock, as do its
/// workers), a second start is refused, and `--stop` ends them all.
#[test]
fn nginx_forking_into_the_background_is_followed() {
    init();
    if !available("nginx", &[NGINX]) {
        return;
    }
    let fx = Fixture::new();
    let port = free_port();
    let argv = nginx_setup(&fx, port, false);

    let (output, mut server) = fx.launch(&[], &argv);
    fx.assert_started(&output);
    // Until --status names it, the master is found by its command line.
    let mut last = None;
    let named = common::wait_for_optional(TIMEOUT, || {
        server.refresh();
        let output = fx.control(&["--status"]);
        let pid = pid_after(&output.stdout, "pid ").filter(|&pid| is_nginx_master(&fx, pid));
        let found = (output.code == Some(0)).then_some(pid).flatten();
        last = Some(output);
        found
    });
    let Some(master) = named else {
        panic!(
            "--status never named the nginx master (running: {:?}); last --status: {last:?}\n{}",
            processes_with_marker(&fx.marker()),
            fx.logs()
        );
    };
    server.set_daemon(master);
    // Named by daemonize if it saw the first process exit, else pointed at
    // the master by the --status that found it.
    assert_eq!(read_pid(&fx.pidfile()), Some(master), "the pidfile");
    assert_serves(&fx, &server, port);
    nginx_workers(&fx, &server, master, &[]);
    server.refresh();

    fx.assert_second_start_refused(&mut server, master, &[], &argv);
    fx.assert_running(master);

    server.refresh();
    fx.stop();
    server.assert_all_gone(&fx);
}

// ---------------------------------------------------------------------------
// redis
// ---------------------------------------------------------------------------

/// redis in the foreground on 127.0.0.1:`port`, announcing readiness with
/// `READY=1` (`--supervised systemd`), its files in the fixture's
/// directory, and no persistence.
fn redis_argv(fx: &Fixture, port: u16) -> [String; 15] {
    [
        REDIS.to_owned(),
        "--port".into(),
        port.to_string(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--daemonize".into(),
        "no".into(),
        "--supervised".into(),
        "systemd".into(),
        "--dir".into(),
        fx.marker(),
        "--save".into(),
        String::new(),
        "--appendonly".into(),
        "no".into(),
    ]
}

/// redis with `--supervised systemd` sends `READY=1` once it accepts
/// connections: `PING` answers as soon as daemonize returns. (No reload:
/// redis ignores SIGHUP.)
#[test]
fn redis_supervised_by_systemd_protocol_answers_when_wait_ready_returns() {
    init();
    if !available("redis", &[REDIS]) {
        return;
    }
    let fx = Fixture::new();
    let port = free_port();
    let argv = redis_argv(&fx, port);
    let options = ["--wait-ready", "--ready-timeout", "15"];

    let (output, mut server) = fx.launch(&options, &argv);
    fx.assert_started(&output);
    let pid = server.daemon();
    // Ready means answering: one command, no polling.
    let reply = redis_ping(port).unwrap_or_else(|e| panic!("no reply: {e}\n{}", fx.logs()));
    assert_eq!(reply, "+PONG\r\n");

    fx.assert_running(pid);
    fx.assert_second_start_refused(&mut server, pid, &options, &argv);
    assert_eq!(redis_ping(port).unwrap(), "+PONG\r\n");

    server.refresh();
    fx.stop();
    server.assert_all_gone(&fx);
}

// ---------------------------------------------------------------------------
// Supervised servers (`--restart`)
// ---------------------------------------------------------------------------

/// The supervisor of a supervised server, from its `-P` file, taken over
/// by `server` (it is the test's child: it was reparented here).
fn adopt_supervisor(fx: &Fixture, server: &mut Server) -> i32 {
    let supervisor = read_pid(&fx.path("sup.pid")).expect("the -P file names the supervisor");
    server.adopt(supervisor);
    supervisor
}

/// Waits until the pidfile names a new live process that `is_it`, other
/// than `old`, and makes it the server's daemon.
fn new_daemon(fx: &Fixture, server: &mut Server, old: i32, is_it: impl Fn(i32) -> bool) -> i32 {
    let pid = common::wait_for(TIMEOUT, "the supervisor to start the server again", || {
        read_pid(&fx.pidfile()).filter(|&pid| pid != old && is_it(pid))
    });
    server.set_daemon(pid);
    server.refresh();
    pid
}

/// `--status` of a supervised server names its child, its supervisor and
/// the restart.
#[track_caller]
fn assert_supervised(fx: &Fixture, pid: i32, supervisor: i32, end: &str) {
    let output = fx.control(&["--status"]);
    let expected =
        format!("running (pid {pid}; supervisor pid {supervisor}; 1 restart; last end: {end}");
    assert!(
        output.code == Some(0) && output.stdout.contains(&expected),
        "--status should say {expected:?}: {output:?}\n{}",
        fx.logs()
    );
}

/// nginx under `--restart`: a master killed by SIGKILL leaves workers that
/// hold the port; they go with it, and a new master serves.
#[test]
fn nginx_supervised_serves_again_after_its_master_is_killed() {
    init();
    if !available("nginx", &[NGINX]) {
        return;
    }
    let fx = Fixture::new();
    let port = free_port();
    let argv = nginx_setup(&fx, port, true);
    let sup = fx.at("sup.pid");
    let options = ["-r", "--restart-delay", "0", "-P", &sup];

    let (output, mut server) = fx.launch(&options, &argv);
    fx.assert_started(&output);
    let supervisor = adopt_supervisor(&fx, &mut server);
    let master = server.daemon();
    assert_serves(&fx, &server, port);
    let workers = nginx_workers(&fx, &server, master, &[]);
    server.refresh();

    kill(Pid::from_raw(master), Signal::SIGKILL).unwrap();
    let master = new_daemon(&fx, &mut server, master, |pid| is_nginx_master(&fx, pid));
    for worker in workers {
        server.poll(&fx, "the dead master's workers to go", || {
            (!common::procfs::is_alive(worker)).then_some(())
        });
    }
    nginx_workers(&fx, &server, master, &[]);
    assert_serves(&fx, &server, port);
    assert_supervised(&fx, master, supervisor, "was killed by SIGKILL");

    server.refresh();
    fx.stop();
    assert!(!fx.path("sup.pid").exists(), "--stop left the -P file");
    server.assert_all_gone(&fx);
}

/// redis under `--restart --wait-ready`: each restart waits for its
/// `READY=1` again; it answers after a crash, and `--stop` ends it all.
#[test]
fn redis_supervised_is_ready_again_after_a_crash() {
    init();
    if !available("redis", &[REDIS]) {
        return;
    }
    let fx = Fixture::new();
    let port = free_port();
    let argv = redis_argv(&fx, port);
    let sup = fx.at("sup.pid");
    let options = [
        "-r",
        "--restart-delay",
        "0",
        "--wait-ready",
        "--ready-timeout",
        "15",
        "-P",
        &sup,
    ];

    let (output, mut server) = fx.launch(&options, &argv);
    fx.assert_started(&output);
    let supervisor = adopt_supervisor(&fx, &mut server);
    let pid = server.daemon();
    assert_eq!(redis_ping(port).unwrap(), "+PONG\r\n");

    kill(Pid::from_raw(pid), Signal::SIGSEGV).unwrap();
    let pid = new_daemon(&fx, &mut server, pid, |pid| {
        common::procfs::is_alive(pid) && cmdline_text(pid).contains("redis-server")
    });
    server.poll(&fx, "redis to answer again", || {
        redis_ping(port).ok().filter(|r| r == "+PONG\r\n")
    });
    assert_supervised(&fx, pid, supervisor, "was killed by SIGSEGV");

    server.refresh();
    fx.stop();
    server.assert_all_gone(&fx);
}
