//! What a supervisor and the control actions tell each other
//! (docs/design.md, "The supervisor's channels"). Plain code: encoding and
//! decoding, no system call.
//!
//! - **State, supervisor to control actions.** The supervisor writes a
//!   [`Record`] (its PID, its phase, the child, the restarts, the last end,
//!   the next restart, the daemon's `STATUS=`) into the lock file of its
//!   pidfile (`FILE.lock`, and that of `-P`): a file only its owner and root
//!   can open, which the supervisor holds locked for its whole life, so no
//!   other user can forge or read it. The record has a fixed size and is
//!   written in one `pwrite` at offset 0; its first and last lines carry the
//!   same sequence number, so a reader that meets a write halfway sees the
//!   mismatch and reads again. Nothing in it is trusted for a signal: a
//!   control action signals the supervisor the record names only once a
//!   pidfd pins it and `/proc` shows that it holds the lock.
//! - **Requests, control actions to supervisor.** A queued real-time signal
//!   ([`control_signal`]) whose value is a [`Request`], sent through a pidfd
//!   (`pidfd_send_signal` with `SI_QUEUE`), and read by the supervisor from
//!   its signalfd. Only a process that may signal the supervisor (its user,
//!   or root) can send one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The size of an encoded [`Record`]: always written whole, so a shorter
/// record never leaves the tail of a longer one behind.
pub const RECORD_LEN: usize = 1024;

/// The first word of a record, with the format's version.
const MAGIC: &str = "daemonize-supervisor 1";

/// The longest text kept for `STATUS=`, a message or an end.
const TEXT_MAX: usize = 200;

/// Where the supervisor stands, as `--status` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The child runs and has not declared itself ready yet.
    Starting,
    /// The child runs (and is ready, if it declares readiness).
    Up,
    /// A restart is pending: the child has ended.
    Waiting,
    /// The child has been told to stop, to be restarted (`--restart-now`,
    /// a missed deadline).
    Restarting,
    /// Supervision is ending: the child has been told to stop.
    Stopping,
    /// Supervision has ended.
    Done,
}

impl Phase {
    fn word(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Up => "up",
            Phase::Waiting => "waiting",
            Phase::Restarting => "restarting",
            Phase::Stopping => "stopping",
            Phase::Done => "done",
        }
    }

    fn from_word(word: &str) -> Option<Phase> {
        [
            Phase::Starting,
            Phase::Up,
            Phase::Waiting,
            Phase::Restarting,
            Phase::Stopping,
            Phase::Done,
        ]
        .into_iter()
        .find(|p| p.word() == word)
    }
}

/// The supervisor's state, as it writes it for the control actions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Bumped at each write; a torn read shows two different values.
    pub seq: u64,
    pub supervisor: i32,
    pub phase: Phase,
    /// The process running COMMAND, when there is one.
    pub child: Option<i32>,
    /// Restarts since the supervisor began.
    pub restarts: u64,
    /// How the last run ended: `exited with status 3`.
    pub last_end: Option<String>,
    /// When the pending restart is due (wall clock, ms since the epoch).
    pub next_restart: Option<u64>,
    /// When the current child started (wall clock, ms since the epoch).
    pub child_since: Option<u64>,
    /// The daemon's last `STATUS=` (sd_notify).
    pub status: Option<String>,
    /// The supervisor's last message (a restart, giving up).
    pub message: Option<String>,
    /// Whether it captures COMMAND's output (`--reopen-logs` needs it).
    pub captures: bool,
    /// How many times it has reopened its files (`--reopen-logs` waits
    /// for this to change).
    pub reopens: u64,
}

impl Record {
    pub fn new(supervisor: i32) -> Record {
        Record {
            seq: 0,
            supervisor,
            phase: Phase::Starting,
            child: None,
            restarts: 0,
            last_end: None,
            next_restart: None,
            child_since: None,
            status: None,
            message: None,
            captures: false,
            reopens: 0,
        }
    }

    /// The record as `RECORD_LEN` bytes: lines of `key value`, padded with
    /// newlines.
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut text = format!("{MAGIC}\nseq {}\n", self.seq);
        let mut line = |key: &str, value: &str| {
            text.push_str(key);
            text.push(' ');
            text.push_str(value);
            text.push('\n');
        };
        line("supervisor", &self.supervisor.to_string());
        line("phase", self.phase.word());
        if let Some(child) = self.child {
            line("child", &child.to_string());
        }
        line("restarts", &self.restarts.to_string());
        if self.captures {
            line("reopens", &self.reopens.to_string());
        }
        if let Some(at) = self.next_restart {
            line("next-restart-ms", &at.to_string());
        }
        if let Some(at) = self.child_since {
            line("child-since-ms", &at.to_string());
        }
        // The texts last: what is cut to fit is the least important.
        for (key, value) in [
            ("last-end", &self.last_end),
            ("status", &self.status),
            ("message", &self.message),
        ] {
            if let Some(value) = value {
                line(key, &one_line(value));
            }
        }
        let end = format!("end {}\n", self.seq);
        let mut out = [b'\n'; RECORD_LEN];
        let room = RECORD_LEN - end.len();
        let mut body = text.as_bytes();
        if body.len() > room {
            // Cut at a line's end, so every line kept is whole.
            let cut = body[..room]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            body = &body[..cut];
        }
        out[..body.len()].copy_from_slice(body);
        // The last bytes, so that any torn write shows two sequence numbers.
        out[room..].copy_from_slice(end.as_bytes());
        out
    }

    /// Parses what [`Record::encode`] wrote. `None` for anything else: an
    /// empty lock file (no supervisor ever wrote it), another format, or a
    /// write met halfway (the sequence numbers differ).
    pub fn decode(bytes: &[u8]) -> Option<Record> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.lines().filter(|l| !l.is_empty());
        if lines.next()? != MAGIC {
            return None;
        }
        let mut record = Record::new(0);
        let mut seq = None;
        let mut end = None;
        let mut supervisor = None;
        let mut phase = None;
        for line in lines {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "seq" => seq = value.parse().ok(),
                "end" => end = value.parse::<u64>().ok(),
                "supervisor" => supervisor = value.parse().ok().filter(|&p: &i32| p > 0),
                "phase" => phase = Phase::from_word(value),
                "child" => record.child = value.parse().ok().filter(|&p: &i32| p > 0),
                "restarts" => record.restarts = value.parse().ok()?,
                "reopens" => {
                    record.captures = true;
                    record.reopens = value.parse().ok()?;
                }
                "next-restart-ms" => record.next_restart = value.parse().ok(),
                "child-since-ms" => record.child_since = value.parse().ok(),
                "last-end" => record.last_end = Some(value.to_owned()),
                "status" => record.status = Some(value.to_owned()),
                "message" => record.message = Some(value.to_owned()),
                _ => {}
            }
        }
        let seq = seq?;
        if end != Some(seq) {
            return None;
        }
        record.seq = seq;
        record.supervisor = supervisor?;
        record.phase = phase?;
        Some(record)
    }
}

/// `text` on one line, without control characters, at most [`TEXT_MAX`]
/// bytes (cut at a character boundary).
fn one_line(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > TEXT_MAX {
            break;
        }
        out.push(c);
    }
    out
}

/// Milliseconds since the epoch, for a record.
pub fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The real-time signal that carries a [`Request`] to a supervisor:
/// SIGRTMIN+6 (glibc keeps 32 and 33 for itself; 34 is SIGRTMIN).
pub fn control_signal() -> i32 {
    nix::libc::SIGRTMIN() + 6
}

/// What a control action asks of a supervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// `--stop`: end supervision; `signal` goes to COMMAND, and SIGKILL
    /// after `timeout`.
    Stop { signal: i32, timeout: Duration },
    /// `--restart-now`.
    RestartNow,
    /// `--reopen-logs`.
    ReopenLogs,
}

const STOP: u64 = 1;
const RESTART_NOW: u64 = 2;
const REOPEN_LOGS: u64 = 3;

/// The longest timeout a request carries (the 48 bits left in the value).
const TIMEOUT_MAX_MS: u64 = (1 << 48) - 1;

impl Request {
    /// The signal's value: the request in the low byte, a signal number in
    /// the next, a timeout in milliseconds above them.
    pub fn encode(self) -> u64 {
        match self {
            Request::Stop { signal, timeout } => {
                let ms = u64::try_from(timeout.as_millis())
                    .unwrap_or(TIMEOUT_MAX_MS)
                    .min(TIMEOUT_MAX_MS);
                STOP | (u64::from(signal as u8) << 8) | (ms << 16)
            }
            Request::RestartNow => RESTART_NOW,
            Request::ReopenLogs => REOPEN_LOGS,
        }
    }

    /// `None` for a value no control action sends (a stray signal sent by
    /// hand, with no value or another one).
    pub fn decode(value: u64) -> Option<Request> {
        match value & 0xff {
            STOP => {
                let signal = ((value >> 8) & 0xff) as i32;
                (1..=64).contains(&signal).then(|| Request::Stop {
                    signal,
                    timeout: Duration::from_millis(value >> 16),
                })
            }
            RESTART_NOW if value == RESTART_NOW => Some(Request::RestartNow),
            REOPEN_LOGS if value == REOPEN_LOGS => Some(Request::ReopenLogs),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Record {
        Record {
            seq: 42,
            supervisor: 1200,
            phase: Phase::Waiting,
            child: None,
            restarts: 7,
            last_end: Some("killed by SIGSEGV".into()),
            next_restart: Some(1_764_000_000_123),
            child_since: Some(1_764_000_000_000),
            status: Some("Ready to accept\nconnections\x1b[31m".into()),
            message: Some("restarting".into()),
            captures: true,
            reopens: 3,
        }
    }

    #[test]
    fn records_round_trip_with_their_texts_on_one_line() {
        let record = full();
        let bytes = record.encode();
        assert_eq!(bytes.len(), RECORD_LEN);
        let back = Record::decode(&bytes).expect("decodes");
        assert_eq!(
            back.status.as_deref(),
            Some("Ready to accept connections [31m")
        );
        assert_eq!(
            back,
            Record {
                status: back.status.clone(),
                ..record
            }
        );
        let mut up = Record::new(5);
        up.phase = Phase::Up;
        up.child = Some(6);
        assert_eq!(Record::decode(&up.encode()), Some(up));
    }

    #[test]
    fn a_torn_or_foreign_record_is_no_record() {
        let a = full().encode();
        let mut b = full();
        b.seq = 43;
        b.phase = Phase::Up;
        let b = b.encode();
        // The first half of one write and the second half of another.
        let mut torn = a;
        torn[RECORD_LEN / 2..].copy_from_slice(&b[RECORD_LEN / 2..]);
        let end_a = String::from_utf8_lossy(&a).contains("end 42");
        assert!(end_a);
        assert_eq!(Record::decode(&torn), None);
        assert_eq!(Record::decode(b""), None);
        assert_eq!(Record::decode(b"\n\n\n"), None);
        assert_eq!(Record::decode(b"1234\n"), None);
        assert_eq!(Record::decode(&[0xff; 16]), None);
    }

    #[test]
    fn long_texts_are_cut_and_the_record_keeps_its_size() {
        let mut record = full();
        record.status = Some("é".repeat(500));
        record.message = Some("m".repeat(500));
        record.last_end = Some("x".repeat(500));
        let back = Record::decode(&record.encode()).expect("decodes");
        assert!(back.status.as_ref().unwrap().len() <= TEXT_MAX);
        assert_eq!(back.supervisor, 1200);
        assert_eq!(back.restarts, 7);
    }

    #[test]
    fn requests_round_trip_and_stray_values_mean_nothing() {
        for request in [
            Request::RestartNow,
            Request::ReopenLogs,
            Request::Stop {
                signal: 15,
                timeout: Duration::from_millis(10_000),
            },
            Request::Stop {
                signal: 2,
                timeout: Duration::ZERO,
            },
        ] {
            assert_eq!(Request::decode(request.encode()), Some(request));
        }
        for value in [
            0,
            4,
            0xff,
            REOPEN_LOGS | 0x100,
            RESTART_NOW | 0x100,
            STOP,
            STOP | (65 << 8),
        ] {
            assert_eq!(Request::decode(value), None, "{value:#x}");
        }
    }
}
