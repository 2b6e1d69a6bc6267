//! Log capture (docs/design.md, "Log capture"): the supervisor reads
//! COMMAND's standard output and error from pipes and writes them to the
//! output files (rotated, timestamped) and to syslog. No process of its
//! own: the supervisor's loop polls the pipes' read ends with everything
//! else, and the supervisor keeps their write ends, so the pipes outlive
//! any one run of COMMAND and nothing a run wrote is lost at a restart.
//!
//! Each pipe is a [`Stream`] with one buffer (64 KiB for a partial line,
//! 128 KiB for a read), allocated once. A read's complete lines are
//! written to the file in one `write` (straight from the buffer when there
//! is nothing to add, else formatted into one output buffer), then each is
//! sent to syslog as one datagram. When a target cannot take them (a full
//! disk, a syslog daemon that does not read), the stream stops being read,
//! so COMMAND blocks on the full pipe, and the supervisor tries again every
//! [`RETRY`]: backpressure, never loss, and no spinning. A line partly
//! written to a file owns that file until it is finished, so nothing can
//! split it.
//!
//! Rotation and reopening go through `detach::rotate_as`, with the daemon's
//! credentials: root renames and creates nothing in a directory that the
//! daemon's user controls. The decisions (where a line ends, whether it
//! fits) are `lines`'s.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::libc;
use nix::poll::{PollFd, PollFlags};

use crate::detach::{self, FileStep};
use crate::lines::{self, Facility, Line, STAMP_LEN, Stamp};
use crate::output::{OutputFile, Outputs, Pump};
use crate::user::Credentials;

/// How long held output waits before the next try (a full disk, a syslog
/// daemon that does not read).
pub const RETRY: Duration = Duration::from_secs(1);

/// The most one `read` takes from a pipe.
const READ_CHUNK: usize = 128 * 1024;

/// A stream's buffer: a partial line of up to [`lines::MAX_LINE`] bytes,
/// and room for a read after it.
const BUF_LEN: usize = lines::MAX_LINE + READ_CHUNK;

/// The formatting buffer: at least one longest line with its prefix.
const OUT_LEN: usize = 128 * 1024;

/// Reads from one pipe before the others get their turn.
const READS_PER_TURN: usize = 8;

/// The pipes' capacity: a read takes up to [`READ_CHUNK`] at once.
const PIPE_SIZE: usize = 256 * 1024;

/// Syslog severities (RFC 5424).
const INFO: u8 = 6;
const ERR: u8 = 3;
const NOTICE: u8 = 5;

/// What the command line asks of capture.
pub struct Settings {
    pub max_size: Option<u64>,
    pub keep: u32,
    pub timestamps: bool,
    pub syslog: Option<SyslogSettings>,
}

pub struct SyslogSettings {
    pub facility: Facility,
    pub tag: String,
    pub socket: PathBuf,
}

pub struct Capture {
    streams: Vec<Stream>,
    logs: Vec<Log>,
    syslog: Option<Syslog>,
    /// The descriptors COMMAND's fds 1 and 2 become (`Outputs::captured`).
    child_fds: [Option<RawFd>; 2],
    /// The log the supervisor's own messages go to.
    messages: Option<usize>,
    max_size: Option<u64>,
    keep: u32,
    timestamps: bool,
    /// The time prefix, formatted once per second; it never goes back.
    stamp: Stamp,
    out: Vec<u8>,
    creds: Option<Credentials>,
    retry_at: Option<Instant>,
    /// COMMAND's PID (the current run's, or the last), for syslog.
    pid: i32,
    /// What the supervisor should say (a failing write, a rotation).
    notes: Vec<String>,
}

/// One pipe from COMMAND.
struct Stream {
    read: OwnedFd,
    /// Kept open, so that the pipe outlives each run of COMMAND.
    write: OwnedFd,
    log: Option<usize>,
    severity: u8,
    buf: Box<[u8]>,
    /// Bytes held in `buf`.
    len: usize,
    /// `buf[..end]` is whole lines, to be delivered.
    end: usize,
    /// The last line before `end` is a final one without a newline.
    last: bool,
    /// How far the file has taken `buf[..end]`: whole lines up to
    /// `file_at`, and `file_partial` bytes (as written) of the next.
    file_at: usize,
    file_partial: usize,
    /// How far syslog has taken it.
    sys_at: usize,
    /// The arrival time of `buf[..end]`.
    stamp: [u8; STAMP_LEN],
    /// A target did not take everything: not read until the retry.
    held: bool,
    /// COMMAND's run has ended: once the pipe is empty, a partial line is
    /// complete (it gets a newline).
    terminate: bool,
}

/// One output file.
struct Log {
    path: PathBuf,
    c_path: CString,
    /// The flags of the first open (with `--truncate`'s `O_TRUNC`).
    flags: libc::c_int,
    fd: OwnedFd,
    size: u64,
    /// How many of FILE.1, FILE.2... exist, once a rotation has looked.
    rotated: Option<u32>,
    /// The stream whose line is partly written: only it may write here.
    owner: Option<usize>,
    /// `--reopen-logs` came while a line was partly written.
    reopen: bool,
    /// A rotation failed: the file grows on until this time.
    rotate_after: Option<Instant>,
    /// A failed write was reported (and its end will be).
    failing: bool,
}

struct Syslog {
    socket: UnixDatagram,
    path: PathBuf,
    facility: Facility,
    tag: String,
    /// One message: header and line.
    msg: Vec<u8>,
    /// The local time shown, formatted for `local_secs`.
    local_secs: u64,
    offset: i64,
    failing: bool,
    /// The last send found its queue full: poll for it to be writable.
    full: bool,
}

impl Capture {
    /// Opens the output files (with the daemon's credentials), connects to
    /// syslog and makes the pipes: everything before COMMAND's first run.
    pub fn open(
        outputs: &Outputs,
        creds: Option<&Credentials>,
        settings: Settings,
        as_user: &str,
    ) -> anyhow::Result<Capture> {
        let mut logs = Vec::new();
        let mut open_log = |file: &OutputFile| -> anyhow::Result<usize> {
            let flags = file.flags.bits();
            let fd = detach::open_as(creds, &file.c_path, flags).map_err(|errno| {
                let what = match errno {
                    Errno::ENXIO => "it is a FIFO that no process is reading".to_owned(),
                    errno => errno.desc().to_owned(),
                };
                anyhow!(
                    "cannot open log file '{}'{as_user}: {what}",
                    file.path.display()
                )
            })?;
            set_nonblocking(&fd)?;
            let size = file_size(&fd);
            logs.push(Log {
                path: file.path.clone(),
                c_path: file.c_path.clone(),
                flags,
                fd,
                size,
                rotated: None,
                owner: None,
                reopen: false,
                rotate_after: None,
                failing: false,
            });
            Ok(logs.len() - 1)
        };
        let out_log = outputs.stdout.as_ref().map(&mut open_log).transpose()?;
        let err_log = match &outputs.stderr {
            Some(file) => Some(open_log(file)?),
            // Standard error follows standard output into its file.
            None => out_log,
        };
        let syslog = settings.syslog.map(Syslog::connect).transpose()?;
        let mut streams = Vec::new();
        let child_fds = if syslog.is_none() && out_log == err_log {
            // One file for both (or syslog for neither): one pipe, as the
            // direct files share one description, so their order holds.
            streams.push(Stream::new(out_log, INFO)?);
            [Some(streams[0].write.as_raw_fd()), None]
        } else {
            let mut fds = [None, None];
            for (i, (log, severity)) in [(out_log, INFO), (err_log, ERR)].into_iter().enumerate() {
                if log.is_some() || syslog.is_some() {
                    streams.push(Stream::new(log, severity)?);
                    fds[i] = streams.last().map(|s| s.write.as_raw_fd());
                }
            }
            fds
        };
        Ok(Capture {
            streams,
            logs,
            syslog,
            child_fds,
            messages: err_log.or(out_log),
            max_size: settings.max_size,
            keep: settings.keep,
            timestamps: settings.timestamps,
            stamp: Stamp::default(),
            out: Vec::with_capacity(OUT_LEN),
            creds: creds.cloned(),
            retry_at: None,
            pid: 0,
            notes: Vec::new(),
        })
    }

    /// What COMMAND's fds 1 and 2 become (see `Outputs::captured`).
    pub fn child_fds(&self) -> [Option<RawFd>; 2] {
        self.child_fds
    }

    /// COMMAND's PID, for the syslog messages that follow.
    pub fn set_pid(&mut self, pid: i32) {
        self.pid = pid;
    }

    /// What the supervisor should say, since it last asked.
    pub fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    /// `--reopen-logs`: each file is closed and opened again by its path
    /// (once a line partly written to it is finished).
    pub fn reopen(&mut self) {
        for l in 0..self.logs.len() {
            match self.logs[l].owner {
                Some(_) => self.logs[l].reopen = true,
                None => self.reopen_log(l),
            }
        }
    }

    /// One line from the supervisor itself (`body` without a newline):
    /// into the messages' file, timestamped, unless a line of COMMAND's is
    /// partly written there; else to syslog, as `daemonize[me]`.
    pub fn message(&mut self, me: i32, body: &str) {
        if let Some(l) = self.messages {
            if self.logs[l].owner.is_some() {
                return;
            }
            self.stamp.advance(SystemTime::now());
            let mut line = Vec::with_capacity(STAMP_LEN + body.len() + 24);
            line.extend_from_slice(&self.stamp.text);
            line.extend_from_slice(format!("daemonize[{me}]: {body}\n").as_bytes());
            let len = line.len() as u64;
            if lines::must_rotate(self.logs[l].size, self.max_size, len) {
                self.rotate(l);
            }
            if let Ok(n) = nix::unistd::write(&self.logs[l].fd, &line) {
                self.logs[l].size += n as u64;
            }
        } else if let Some(syslog) = &mut self.syslog {
            syslog.send_line(NOTICE, "daemonize", me, body.as_bytes());
        }
    }

    /// Reads one stream until its pipe is empty (or it is held, or it has
    /// had its turn), delivering what it reads.
    fn pump_stream(&mut self, i: usize) {
        for _ in 0..READS_PER_TURN {
            let stream = &mut self.streams[i];
            if stream.held {
                return;
            }
            let room = (stream.len + READ_CHUNK).min(BUF_LEN);
            let n = match nix::unistd::read(&stream.read, &mut stream.buf[stream.len..room]) {
                Ok(0) => return,
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => {
                    if stream.terminate {
                        stream.terminate = false;
                        if stream.len > 0 {
                            // The run's last line, without its newline.
                            stream.end = stream.len;
                            stream.last = true;
                            self.take_batch(i);
                        }
                    }
                    return;
                }
                Err(errno) => {
                    tracing::debug!(%errno, "cannot read a capture pipe");
                    return;
                }
            };
            let full = stream.len + n == room;
            stream.len += n;
            stream.end = lines::complete(&stream.buf[..stream.len]);
            if stream.end > 0 {
                self.take_batch(i);
            }
            if !full && !self.streams[i].terminate {
                return;
            }
        }
    }

    /// Stamps `buf[..end]` with the time and delivers it.
    fn take_batch(&mut self, i: usize) {
        if self.timestamps {
            self.stamp.advance(SystemTime::now());
            self.streams[i].stamp = self.stamp.text;
        }
        self.deliver(i);
    }

    /// Hands `buf[..end]` to each target; once all have it, the partial
    /// line left moves to the front. Otherwise the stream is held.
    fn deliver(&mut self, i: usize) {
        let to_file = self.streams[i].log.is_some();
        if to_file && self.streams[i].file_at < self.streams[i].end {
            self.deliver_file(i);
        }
        if self.syslog.is_some() && self.streams[i].sys_at < self.streams[i].end {
            self.deliver_syslog(i);
        }
        let stream = &mut self.streams[i];
        let file_done = !to_file || stream.file_at == stream.end;
        let sys_done = self.syslog.is_none() || stream.sys_at == stream.end;
        if file_done && sys_done {
            stream.buf.copy_within(stream.end..stream.len, 0);
            stream.len -= stream.end;
            stream.end = 0;
            stream.file_at = 0;
            stream.sys_at = 0;
            stream.last = false;
        } else {
            stream.held = true;
            self.retry_at.get_or_insert_with(|| Instant::now() + RETRY);
        }
    }

    /// Writes stream `i`'s lines to its file, rotating before a line that
    /// would not fit. Stops at a write that does not take everything.
    fn deliver_file(&mut self, i: usize) {
        let Some(l) = self.streams[i].log else {
            return;
        };
        if self.logs[l].owner.is_some_and(|o| o != i) {
            return;
        }
        let prefix = if self.timestamps { STAMP_LEN } else { 0 };
        loop {
            let stream = &self.streams[i];
            let data = &stream.buf[stream.file_at..stream.end];
            if data.is_empty() {
                return;
            }
            let first = lines::next_line(data, stream.last).unwrap_or(Line {
                len: data.len(),
                add_newline: data.last() != Some(&b'\n'),
            });
            let mut room = self
                .max_size
                .map_or(u64::MAX, |max| max.saturating_sub(self.logs[l].size));
            if stream.file_partial == 0 {
                let need = first.output_len(prefix) as u64;
                if lines::must_rotate(self.logs[l].size, self.max_size, need) {
                    let due = self.logs[l]
                        .rotate_after
                        .is_none_or(|t| Instant::now() >= t);
                    if due {
                        self.rotate(l);
                    }
                    room = match lines::must_rotate(self.logs[l].size, self.max_size, need) {
                        // Could not rotate: the file grows past the limit.
                        true => u64::MAX,
                        false => self
                            .max_size
                            .map_or(u64::MAX, |max| max.saturating_sub(self.logs[l].size)),
                    };
                }
            }
            let stream = &self.streams[i];
            let data = &stream.buf[stream.file_at..stream.end];
            let plain = prefix == 0 && stream.file_partial == 0;
            let direct = match plain {
                true => {
                    Some(lines::fitting(data, room)).filter(|&k| k > 0 && lines::uncut(&data[..k]))
                }
                false => None,
            };
            let (written, wanted) = match direct {
                Some(k) => (nix::unistd::write(&self.logs[l].fd, &data[..k]), k),
                None => {
                    self.format(i, room);
                    (
                        nix::unistd::write(&self.logs[l].fd, &self.out),
                        self.out.len(),
                    )
                }
            };
            match written {
                Ok(n) if n == wanted => {
                    self.advance_file(i, l, n, direct.is_some());
                    if self.logs[l].failing {
                        self.logs[l].failing = false;
                        let path = self.logs[l].path.display().to_string();
                        self.notes
                            .push(format!("writing to log file '{path}' again"));
                    }
                }
                Ok(n) => {
                    // A full disk takes part of it, then refuses the rest.
                    self.advance_file(i, l, n, direct.is_some());
                    return;
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return,
                Err(errno) => {
                    if !self.logs[l].failing {
                        self.logs[l].failing = true;
                        let path = self.logs[l].path.display().to_string();
                        self.notes.push(format!(
                            "cannot write to log file '{path}': {}; holding the output \
                             and trying again every {} s",
                            errno.desc(),
                            RETRY.as_secs()
                        ));
                    }
                    return;
                }
            }
        }
    }

    /// Formats lines of stream `i` from its file position into `out`: the
    /// rest of a partly written line, then whole lines while they fit in
    /// `room` and the buffer (always at least one).
    fn format(&mut self, i: usize, room: u64) {
        let stream = &self.streams[i];
        let prefix: &[u8] = if self.timestamps { &stream.stamp } else { &[] };
        let data = &stream.buf[stream.file_at..stream.end];
        self.out.clear();
        let mut at = 0;
        let mut skip = stream.file_partial;
        while at < data.len() {
            let line = lines::next_line(&data[at..], stream.last).unwrap_or(Line {
                len: data.len() - at,
                add_newline: true,
            });
            let adds = line.output_len(prefix.len()) - skip;
            let total = self.out.len() + adds;
            if at > 0 && (total > OUT_LEN || total as u64 > room) {
                break;
            }
            let newline: &[u8] = if line.add_newline { b"\n" } else { &[] };
            let mut left = skip;
            for piece in [prefix, &data[at..at + line.len], newline] {
                let from = left.min(piece.len());
                left -= from;
                self.out.extend_from_slice(&piece[from..]);
            }
            skip = 0;
            at += line.len;
        }
    }

    /// Stream `i`'s file took `n` bytes (as written: raw when `direct`,
    /// else formatted) from its position: moves the position to the line
    /// they end in, and marks that line as owning the file if they end in
    /// the middle of it.
    fn advance_file(&mut self, i: usize, l: usize, n: usize, direct: bool) {
        self.logs[l].size += n as u64;
        let prefix = if self.timestamps { STAMP_LEN } else { 0 };
        let stream = &mut self.streams[i];
        let start = stream.file_at;
        if direct {
            // Raw bytes: whole lines up to the last newline written.
            let written = &stream.buf[start..start + n];
            let whole = memchr::memrchr(b'\n', written).map_or(0, |k| k + 1);
            stream.file_at = start + whole;
            stream.file_partial = n - whole;
        } else {
            let data = &stream.buf[start..stream.end];
            let mut left = n;
            let mut at = 0;
            let mut skip = stream.file_partial;
            while left > 0 && at < data.len() {
                let line = lines::next_line(&data[at..], stream.last).unwrap_or(Line {
                    len: data.len() - at,
                    add_newline: true,
                });
                let rest = line.output_len(prefix) - skip;
                if left < rest {
                    break;
                }
                left -= rest;
                at += line.len;
                skip = 0;
            }
            stream.file_at = start + at;
            stream.file_partial = if left > 0 { skip + left } else { skip };
        }
        let partial = stream.file_partial > 0;
        let log = &mut self.logs[l];
        if partial {
            log.owner = Some(i);
        } else if log.owner == Some(i) {
            log.owner = None;
            if log.reopen {
                log.reopen = false;
                self.reopen_log(l);
            }
        }
    }

    /// Sends stream `i`'s lines to syslog, one datagram each.
    fn deliver_syslog(&mut self, i: usize) {
        let Some(syslog) = &mut self.syslog else {
            return;
        };
        let stream = &mut self.streams[i];
        while stream.sys_at < stream.end {
            let data = &stream.buf[stream.sys_at..stream.end];
            let line = lines::next_line(data, stream.last).unwrap_or(Line {
                len: data.len(),
                add_newline: true,
            });
            let text = &data[..line.len - usize::from(!line.add_newline)];
            let tag = std::mem::take(&mut syslog.tag);
            let sent = syslog.send_line(stream.severity, &tag, self.pid, text);
            syslog.tag = tag;
            if !sent {
                if !syslog.failing {
                    syslog.failing = true;
                    self.notes.push(format!(
                        "syslog at '{}' does not take messages; holding the output and \
                         trying again every {} s",
                        syslog.path.display(),
                        RETRY.as_secs()
                    ));
                }
                return;
            }
            if syslog.failing {
                syslog.failing = false;
                self.notes.push("syslog takes messages again".to_owned());
            }
            stream.sys_at += line.len;
        }
    }

    /// Rotates log `l`: FILE.N-1 to FILE.N ... FILE to FILE.1, and a new
    /// FILE (with `--log-keep 0`, FILE is emptied instead).
    fn rotate(&mut self, l: usize) {
        let keep = self.keep;
        let base = self.logs[l].c_path.clone();
        let log = &mut self.logs[l];
        let numbered = |i: u32| {
            let mut bytes = base.as_bytes().to_vec();
            bytes.extend_from_slice(format!(".{i}").as_bytes());
            CString::new(bytes).unwrap_or_default()
        };
        let existing = *log.rotated.get_or_insert_with(|| {
            (1..=keep)
                .take_while(|&i| {
                    let path = PathBuf::from(std::ffi::OsStr::from_bytes(numbered(i).as_bytes()));
                    path.symlink_metadata().is_ok()
                })
                .count() as u32
        });
        let mut renames = Vec::new();
        let mut flags = (log.flags & !libc::O_TRUNC) | libc::O_CREAT;
        if keep == 0 {
            flags |= libc::O_TRUNC;
        } else {
            for i in (1..=existing.min(keep - 1)).rev() {
                renames.push((numbered(i), numbered(i + 1)));
            }
            renames.push((log.c_path.clone(), numbered(1)));
        }
        match detach::rotate_as(self.creds.as_ref(), &renames, &log.c_path, flags) {
            Ok(fd) => {
                let _ = set_nonblocking(&fd);
                log.size = file_size(&fd);
                log.fd = fd;
                log.rotated = Some((existing + 1).min(keep));
                log.rotate_after = None;
            }
            Err((step, errno)) => {
                // Some renames may have happened: look again next time.
                log.rotated = None;
                log.rotate_after = Some(Instant::now() + RETRY);
                let what = match step {
                    FileStep::Rename(k) => format!(
                        "renaming '{}' to '{}'",
                        renames[k].0.to_string_lossy(),
                        renames[k].1.to_string_lossy()
                    ),
                    FileStep::Open => format!("creating '{}'", log.path.display()),
                };
                self.notes.push(format!(
                    "cannot rotate log file '{}' ({what}): {}; it grows on past \
                     --log-max-size for now",
                    log.path.display(),
                    errno.desc()
                ));
            }
        }
    }

    fn reopen_log(&mut self, l: usize) {
        let log = &mut self.logs[l];
        let flags = (log.flags & !libc::O_TRUNC) | libc::O_CREAT;
        match detach::open_as(self.creds.as_ref(), &log.c_path, flags) {
            Ok(fd) => {
                let _ = set_nonblocking(&fd);
                log.size = file_size(&fd);
                log.fd = fd;
                log.rotated = None;
            }
            Err(errno) => self.notes.push(format!(
                "cannot reopen log file '{}': {}; writing on to the file it had open",
                log.path.display(),
                errno.desc()
            )),
        }
    }

    /// Whether output is held (waiting for a retry).
    pub fn holding(&self) -> bool {
        self.streams.iter().any(|s| s.held)
    }

    /// The supervisor is about to exit: everything read, and written
    /// where a target takes it before `until` (a full disk or syslog
    /// queue is waited for, in the same poll as ever; what is still held
    /// then is given up, and said so).
    pub fn flush(&mut self, until: Instant) {
        self.drain();
        while self.holding() && Instant::now() < until {
            let deadline = self.retry_at.map_or(until, |t| t.min(until));
            let mut fds = self.fds();
            let polled = crate::sys::poll_until(&mut fds, Some(deadline));
            let ready: Vec<bool> = fds.iter().map(|f| f.any().unwrap_or(false)).collect();
            drop(fds);
            if polled.is_err() {
                break;
            }
            self.pump(&ready);
            if self.retry_at.is_some_and(|t| Instant::now() >= t) {
                self.retry();
            }
            if !self.holding() {
                self.drain();
            }
        }
        if self.holding() {
            self.notes.push(
                "exiting with output still held (a full disk, or syslog not reading): \
                 it is lost"
                    .to_owned(),
            );
        }
    }
}

impl Pump for Capture {
    fn fds(&self) -> Vec<PollFd<'_>> {
        let mut fds: Vec<PollFd> = self
            .streams
            .iter()
            .filter(|s| !s.held)
            .map(|s| PollFd::new(s.read.as_fd(), PollFlags::POLLIN))
            .collect();
        // A syslog daemon's full queue: writable again when it has read.
        if let Some(syslog) = self.syslog.as_ref().filter(|s| s.full) {
            fds.push(PollFd::new(syslog.socket.as_fd(), PollFlags::POLLOUT));
        }
        fds
    }

    fn pump(&mut self, ready: &[bool]) {
        let polled: Vec<usize> = (0..self.streams.len())
            .filter(|&i| !self.streams[i].held)
            .collect();
        let syslog_ready = ready.get(polled.len()).copied().unwrap_or(false);
        for (i, _) in polled.into_iter().zip(ready).filter(|(_, r)| **r) {
            self.pump_stream(i);
        }
        if syslog_ready {
            self.retry();
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.retry_at
    }

    fn retry(&mut self) {
        self.retry_at = None;
        // Twice: a line that owns a file must finish before another
        // stream may write there.
        for _ in 0..2 {
            for i in 0..self.streams.len() {
                if self.streams[i].held {
                    self.streams[i].held = false;
                    self.deliver(i);
                }
            }
        }
        for i in 0..self.streams.len() {
            self.pump_stream(i);
        }
    }

    fn drain(&mut self) {
        for i in 0..self.streams.len() {
            self.streams[i].terminate = true;
            self.pump_stream(i);
        }
    }
}

impl Stream {
    fn new(log: Option<usize>, severity: u8) -> anyhow::Result<Stream> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("cannot create a pipe")?;
        set_nonblocking(&read)?;
        // Bigger reads; a kernel that refuses keeps 64 KiB.
        let _ = fcntl(&read, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE as libc::c_int));
        Ok(Stream {
            read,
            write,
            log,
            severity,
            // Zeroed memory comes fresh from the kernel: untouched pages
            // cost nothing until a read fills them.
            buf: vec![0; BUF_LEN].into_boxed_slice(),
            len: 0,
            end: 0,
            last: false,
            file_at: 0,
            file_partial: 0,
            sys_at: 0,
            stamp: [0; STAMP_LEN],
            held: false,
            terminate: false,
        })
    }
}

impl Syslog {
    fn connect(settings: SyslogSettings) -> anyhow::Result<Syslog> {
        let socket = connect_syslog(&settings.socket)?;
        Ok(Syslog {
            socket,
            path: settings.socket,
            facility: settings.facility,
            tag: settings.tag,
            msg: Vec::with_capacity(lines::MAX_LINE + 128),
            local_secs: u64::MAX,
            offset: 0,
            failing: false,
            full: false,
        })
    }

    /// One message; `false` if it was not taken (try again later).
    fn send_line(&mut self, severity: u8, tag: &str, pid: i32, text: &[u8]) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if now != self.local_secs {
            self.local_secs = now;
            self.offset = crate::sys::utc_offset(now as i64);
        }
        let local = now.saturating_add_signed(self.offset);
        lines::syslog_header(
            &mut self.msg,
            self.facility.priority(severity),
            local,
            tag,
            pid,
        );
        self.msg.extend_from_slice(text);
        self.full = false;
        for attempt in 0..2 {
            match self.socket.send(&self.msg) {
                Ok(_) => return true,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::ENOBUFS)) => {
                    self.full = true;
                    return false;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e)
                    if attempt == 0
                        && matches!(
                            e.raw_os_error(),
                            Some(libc::ECONNREFUSED | libc::ENOTCONN | libc::ENOENT)
                        ) =>
                {
                    // The syslog daemon was restarted: a new socket.
                    match connect_syslog(&self.path) {
                        Ok(socket) => self.socket = socket,
                        Err(_) => return false,
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }
}

/// A non-blocking datagram socket connected to the syslog socket at `path`.
fn connect_syslog(path: &Path) -> anyhow::Result<UnixDatagram> {
    let socket = UnixDatagram::unbound().context("cannot create a socket for syslog")?;
    socket.connect(path).with_context(|| {
        format!(
            "cannot connect to syslog at '{}' (--syslog-socket names another)",
            path.display()
        )
    })?;
    socket
        .set_nonblocking(true)
        .context("cannot make the syslog socket non-blocking")?;
    Ok(socket)
}

fn set_nonblocking(fd: &OwnedFd) -> anyhow::Result<()> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).context("cannot read descriptor flags")?;
    fcntl(
        fd,
        FcntlArg::F_SETFL(OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK),
    )
    .context("cannot set descriptor flags")?;
    Ok(())
}

fn file_size(fd: &OwnedFd) -> u64 {
    nix::sys::stat::fstat(fd).map_or(0, |st| st.st_size.max(0) as u64)
}
