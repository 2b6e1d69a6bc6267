//! Log capture's decisions, as plain code (docs/design.md, "Log capture"):
//! where a line ends (or is cut), whether it still fits in the file or the
//! file must be rotated first, the values of the capture options, and the
//! bytes of a timestamp prefix or a syslog header. No system call here;
//! `capture` reads the pipes and writes the files, and unit tests drive
//! this module with byte strings.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::clock;

/// The longest line kept whole: a longer one is cut into lines of this
/// many bytes (each given a newline), so a buffer of bounded size always
/// holds a whole line.
pub const MAX_LINE: usize = 64 * 1024;

/// One line at the start of some bytes: `len` bytes of input, and whether
/// a newline must be added after them (a cut line, or a final line that
/// has none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Line {
    pub len: usize,
    pub add_newline: bool,
}

impl Line {
    /// Its length in a file, with `prefix` bytes before it.
    pub fn output_len(self, prefix: usize) -> usize {
        prefix + self.len + usize::from(self.add_newline)
    }
}

/// The first line of `data`, which starts at a line start. `None` while it
/// is incomplete: no newline yet and no longer than [`MAX_LINE`], unless
/// `last` says nothing more will come (COMMAND ended), when it is taken as
/// it is.
pub fn next_line(data: &[u8], last: bool) -> Option<Line> {
    let window = &data[..data.len().min(MAX_LINE + 1)];
    match memchr::memchr(b'\n', window) {
        Some(i) => Some(Line {
            len: i + 1,
            add_newline: false,
        }),
        None if data.len() > MAX_LINE => Some(Line {
            len: MAX_LINE,
            add_newline: true,
        }),
        None if last && !data.is_empty() => Some(Line {
            len: data.len(),
            add_newline: true,
        }),
        None => None,
    }
}

/// How many bytes at the start of `data` are complete lines (after
/// cutting lines longer than [`MAX_LINE`]); the rest waits for more.
pub fn complete(data: &[u8]) -> usize {
    let mut end = memchr::memrchr(b'\n', data).map_or(0, |i| i + 1);
    while data.len() - end > MAX_LINE {
        end += MAX_LINE;
    }
    end
}

/// Whether `data` (whole lines) can be written as it is: no line in it
/// longer than [`MAX_LINE`]. Looks for a newline in each 32 KiB window,
/// which bounds every line by 64 KiB - 1 and costs one short `memchr` per
/// window; `false` may be wrong (a line of 33 to 64 KiB), and then the
/// careful path is taken, which is merely slower.
pub fn uncut(data: &[u8]) -> bool {
    const WINDOW: usize = MAX_LINE / 2;
    data.chunks(WINDOW)
        .all(|window| memchr::memchr(b'\n', window).is_some())
}

/// Whether the file must be rotated before `len` more bytes: it has a
/// limit, holds something already, and would exceed the limit. A line
/// bigger than the limit goes alone into a fresh file.
pub fn must_rotate(size: u64, max: Option<u64>, len: u64) -> bool {
    max.is_some_and(|max| size > 0 && size.saturating_add(len) > max)
}

/// How many bytes of whole lines at the start of `data` (none cut, no
/// prefix) fit in `room` bytes: up to the last newline within it.
pub fn fitting(data: &[u8], room: u64) -> usize {
    let limit = usize::try_from(room).unwrap_or(usize::MAX).min(data.len());
    memchr::memrchr(b'\n', &data[..limit]).map_or(0, |i| i + 1)
}

/// `--log-max-size`: bytes, or `K`, `M`, `G` (powers of 1024), more than
/// zero (a line bigger than the size goes alone into its own file).
pub fn parse_size(s: &str) -> Result<u64, String> {
    const FORM: &str = "expected a size in bytes, or with K, M or G, like 1048576, 512K, 10M or 1G";
    let s = s.trim();
    let (digits, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], Some(c.to_ascii_uppercase())),
        _ => (s, None),
    };
    let factor: u64 = match unit {
        None => 1,
        Some('K') => 1 << 10,
        Some('M') => 1 << 20,
        Some('G') => 1 << 30,
        Some(_) => return Err(FORM.into()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FORM.into());
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .filter(|&n| n > 0)
        .ok_or_else(|| FORM.into())
}

/// `--log-keep`: at most this many rotated files (each rotation renames
/// them all).
pub const MAX_KEEP: u32 = 10_000;

pub fn parse_keep(s: &str) -> Result<u32, String> {
    s.trim()
        .parse::<u32>()
        .ok()
        .filter(|&n| n <= MAX_KEEP)
        .ok_or_else(|| format!("expected a number of files from 0 to {MAX_KEEP}, like 5"))
}

/// A syslog facility (RFC 5424 numbering, as `<syslog.h>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facility(u8);

const FACILITIES: [(&str, u8); 20] = [
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

impl Facility {
    pub const DAEMON: Facility = Facility(3);

    /// The PRI value of a message at `severity` (6 info, 3 err, 5 notice).
    pub fn priority(self, severity: u8) -> u8 {
        self.0 * 8 + severity
    }
}

pub fn parse_facility(s: &str) -> Result<Facility, String> {
    let lower = s.to_ascii_lowercase();
    FACILITIES
        .iter()
        .find(|(name, _)| *name == lower)
        .map(|&(_, code)| Facility(code))
        .ok_or_else(|| {
            "expected a facility: kern, user, mail, daemon, auth, syslog, lpr, news, uucp, \
             cron, authpriv, ftp or local0 to local7, like --syslog=local3"
                .into()
        })
}

/// `--syslog-tag`: what syslog daemons take as a tag (RFC 3164's TAG, as
/// glibc's `openlog` ident): 1 to 48 printable bytes, none of them a
/// space, `:`, `[` or `]`.
pub fn parse_tag(s: &str) -> Result<String, String> {
    let valid = (1..=48).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"[]:".contains(&b));
    match valid {
        true => Ok(s.to_owned()),
        false => Err(
            "expected 1 to 48 printable characters without spaces, ':', '[' or ']', like myapp"
                .into(),
        ),
    }
}

/// The length of a timestamp prefix: `2026-11-22T02:14:30.123456Z `.
pub const STAMP_LEN: usize = 28;

/// A timestamp prefix, formatted once per second (only the microseconds
/// change within one), and never going back within one file.
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    /// The whole seconds and microseconds shown.
    at: (u64, u32),
    pub text: [u8; STAMP_LEN],
}

impl Default for Stamp {
    fn default() -> Stamp {
        let mut stamp = Stamp {
            at: (0, 0),
            text: [0; STAMP_LEN],
        };
        stamp.text.copy_from_slice(b"1970-01-01T00:00:00.000000Z ");
        stamp
    }
}

impl Stamp {
    /// Moves the stamp to `now`, or leaves it where it is if `now` is not
    /// later (the wall clock was set back): times increase within a file.
    pub fn advance(&mut self, now: SystemTime) {
        let since = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let at = (since.as_secs(), since.subsec_micros());
        if at <= self.at {
            return;
        }
        if at.0 != self.at.0 {
            self.text[..19].copy_from_slice(&clock::seconds_rfc3339(at.0));
        }
        let mut micros = at.1;
        for i in (20..26).rev() {
            self.text[i] = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        self.at = at;
    }
}

/// The header of one syslog message for the local socket, as glibc's
/// `syslog(3)` writes it: `<PRI>Mmm dd hh:mm:ss TAG[PID]: `, with the local
/// time (`local` is the wall clock moved by the UTC offset).
pub fn syslog_header(out: &mut Vec<u8>, priority: u8, local: u64, tag: &str, pid: i32) {
    use std::io::Write;
    out.clear();
    let _ = write!(out, "<{priority}>");
    out.extend_from_slice(&clock::rfc3164(local));
    let _ = write!(out, " {tag}[{pid}]: ");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(len: usize, add_newline: bool) -> Option<Line> {
        Some(Line { len, add_newline })
    }

    #[test]
    fn lines_end_at_a_newline_or_are_cut_at_64_kib() {
        assert_eq!(next_line(b"abc\ndef", false), line(4, false));
        assert_eq!(next_line(b"\n", false), line(1, false));
        assert_eq!(next_line(b"abc", false), None);
        assert_eq!(next_line(b"abc", true), line(3, true));
        assert_eq!(next_line(b"", true), None);
        let mut long = vec![b'x'; MAX_LINE];
        // Exactly 64 KiB: it may still end with the next byte.
        assert_eq!(next_line(&long, false), None);
        long.push(b'\n');
        assert_eq!(next_line(&long, false), line(MAX_LINE + 1, false));
        long.pop();
        long.push(b'y');
        assert_eq!(next_line(&long, false), line(MAX_LINE, true));
    }

    #[test]
    fn complete_lines_end_at_the_last_newline_or_a_cut() {
        assert_eq!(complete(b"a\nb\nc"), 4);
        assert_eq!(complete(b"abc"), 0);
        let mut data = b"a\n".to_vec();
        data.extend(vec![b'x'; 2 * MAX_LINE + 5]);
        assert_eq!(complete(&data), 2 + 2 * MAX_LINE);
        let exactly = vec![b'x'; MAX_LINE];
        assert_eq!(complete(&exactly), 0);
    }

    #[test]
    fn uncut_data_has_a_newline_in_every_window() {
        assert!(uncut(b"short\nlines\n"));
        let mut data = vec![b'x'; 40_000];
        data.push(b'\n');
        assert!(!uncut(&data));
        let mut fine = Vec::new();
        for _ in 0..10 {
            fine.extend(vec![b'x'; 30_000]);
            fine.push(b'\n');
        }
        assert!(uncut(&fine));
    }

    #[test]
    fn rotation_comes_before_a_line_that_would_not_fit() {
        assert!(!must_rotate(0, None, 10));
        assert!(!must_rotate(990, Some(1000), 10));
        assert!(must_rotate(991, Some(1000), 10));
        // An empty file takes a line bigger than the limit.
        assert!(!must_rotate(0, Some(1000), 5000));
        assert_eq!(fitting(b"aa\nbb\ncc\n", 7), 6);
        assert_eq!(fitting(b"aa\nbb\ncc\n", 100), 9);
        assert_eq!(fitting(b"aaaa\n", 3), 0);
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in ["", "abc", "1T", "M", "-1", "1.5M", "0", "99999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn facilities_and_tags() {
        assert_eq!(parse_facility("daemon"), Ok(Facility::DAEMON));
        assert_eq!(
            parse_facility("LOCAL3").map(|f| f.priority(6)),
            Ok(19 * 8 + 6)
        );
        assert!(parse_facility("local8").is_err());
        assert_eq!(Facility::DAEMON.priority(3), 27);
        assert!(parse_tag("my-app_2").is_ok());
        for bad in ["", "a b", "a:b", "a[1]", &"x".repeat(49), "tab\t"] {
            assert!(parse_tag(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stamps_show_microseconds_and_never_go_back() {
        let mut stamp = Stamp::default();
        let t = UNIX_EPOCH + Duration::new(1_763_777_670, 123_456_789);
        stamp.advance(t);
        assert_eq!(&stamp.text, b"2025-11-22T02:14:30.123456Z ");
        stamp.advance(t + Duration::from_micros(1));
        assert_eq!(&stamp.text, b"2025-11-22T02:14:30.123457Z ");
        stamp.advance(t + Duration::from_secs(1));
        assert_eq!(&stamp.text, b"2025-11-22T02:14:31.123456Z ");
        stamp.advance(t);
        assert_eq!(&stamp.text, b"2025-11-22T02:14:31.123456Z ");
    }

    #[test]
    fn syslog_headers_are_those_of_glibc() {
        let mut out = Vec::new();
        // 2025-12-03 08:31:32 (as local time).
        syslog_header(&mut out, 30, 1_764_750_692, "app", 42);
        assert_eq!(out, b"<30>Dec  3 08:31:32 app[42]: ");
    }
}
