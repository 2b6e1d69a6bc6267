//! Readers for `/proc/PID/...`: what the kernel says about a process, which
//! is what the tests assert on (never what the process says about itself).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

fn proc_path(pid: i32, entry: &str) -> PathBuf {
    Path::new("/proc").join(pid.to_string()).join(entry)
}

/// The fields of `/proc/PID/stat` the tests use (see proc_pid_stat(5)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    /// 0 when the process has no controlling terminal.
    pub tty_nr: i32,
    /// -1 when the process has no controlling terminal.
    pub tpgid: i32,
}

/// Parses the text of `/proc/PID/stat`. `comm` may contain spaces and
/// parentheses, so the fields after it are taken after the *last* `)`.
pub fn parse_stat(text: &str) -> Result<Stat, String> {
    let bad = |why: &str| format!("malformed stat ({why}): {text:?}");
    let open = text.find(" (").ok_or_else(|| bad("no '('"))?;
    let close = text.rfind(')').ok_or_else(|| bad("no ')'"))?;
    if close < open {
        return Err(bad("')' before '('"));
    }
    let pid = text[..open].trim().parse().map_err(|_| bad("pid"))?;
    let comm = text[open + 2..close].to_owned();
    // Field 3 (state) onwards.
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |n: usize| -> Result<&str, String> {
        rest.get(n - 3)
            .copied()
            .ok_or_else(|| bad("too few fields"))
    };
    let int = |n: usize| -> Result<i32, String> { field(n)?.parse().map_err(|_| bad("number")) };
    let state = field(3)?.chars().next().ok_or_else(|| bad("state"))?;
    Ok(Stat {
        pid,
        comm,
        state,
        ppid: int(4)?,
        pgrp: int(5)?,
        session: int(6)?,
        tty_nr: int(7)?,
        tpgid: int(8)?,
    })
}

pub fn stat(pid: i32) -> io::Result<Stat> {
    let text = std::fs::read_to_string(proc_path(pid, "stat"))?;
    parse_stat(&text).map_err(io::Error::other)
}

/// `/proc/PID/status` as `Name: value` pairs, with typed accessors.
#[derive(Clone, Debug, Default)]
pub struct Status {
    fields: BTreeMap<String, String>,
}

impl Status {
    /// The raw value of a field, trimmed; panics if the kernel has no such field.
    pub fn field(&self, name: &str) -> &str {
        self.fields
            .get(name)
            .unwrap_or_else(|| panic!("no field {name:?} in status: {:?}", self.fields))
    }

    /// The one-letter state (`S`, `R`, `Z`...).
    pub fn state(&self) -> char {
        self.field("State").chars().next().unwrap_or('?')
    }

    /// `Umask:` as a number (the kernel prints it in octal).
    pub fn umask(&self) -> u32 {
        u32::from_str_radix(self.field("Umask"), 8).expect("octal Umask")
    }

    fn hex_mask(&self, name: &str) -> u64 {
        u64::from_str_radix(self.field(name), 16)
            .unwrap_or_else(|_| panic!("{name} is not a hex mask: {:?}", self.field(name)))
    }

    /// Ignored signals, bit `n - 1` for signal `n`.
    pub fn sig_ign(&self) -> u64 {
        self.hex_mask("SigIgn")
    }

    /// Blocked signals, bit `n - 1` for signal `n`.
    pub fn sig_blk(&self) -> u64 {
        self.hex_mask("SigBlk")
    }

    fn ids(&self, name: &str) -> Vec<u32> {
        self.field(name)
            .split_whitespace()
            .map(|id| id.parse().expect("numeric id"))
            .collect()
    }

    /// Real, effective, saved and filesystem UID.
    pub fn uids(&self) -> Vec<u32> {
        self.ids("Uid")
    }

    /// Real, effective, saved and filesystem GID.
    pub fn gids(&self) -> Vec<u32> {
        self.ids("Gid")
    }

    /// Supplementary groups.
    pub fn groups(&self) -> Vec<u32> {
        self.ids("Groups")
    }
}

pub fn parse_status(text: &str) -> Status {
    let fields = text
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    Status { fields }
}

pub fn status(pid: i32) -> io::Result<Status> {
    Ok(parse_status(&std::fs::read_to_string(proc_path(
        pid, "status",
    ))?))
}

/// Open descriptors and what each points at (`readlink /proc/PID/fd/N`).
pub fn fds(pid: i32) -> io::Result<BTreeMap<i32, PathBuf>> {
    let dir = proc_path(pid, "fd");
    let mut fds = BTreeMap::new();
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        fds.insert(fd, std::fs::read_link(entry.path())?);
    }
    Ok(fds)
}

/// Just the descriptor numbers, ascending.
pub fn fd_numbers(pid: i32) -> io::Result<Vec<i32>> {
    Ok(fds(pid)?.into_keys().collect())
}

pub fn cwd(pid: i32) -> io::Result<PathBuf> {
    std::fs::read_link(proc_path(pid, "cwd"))
}

fn nul_separated(bytes: Vec<u8>) -> Vec<OsString> {
    let mut items: Vec<OsString> = bytes
        .split(|&b| b == 0)
        .map(|item| OsString::from_vec(item.to_vec()))
        .collect();
    // The list is NUL-terminated, which leaves one empty item at the end.
    if items.last().is_some_and(|last| last.is_empty()) {
        items.pop();
    }
    items
}

/// The argument vector, as bytes.
pub fn cmdline(pid: i32) -> io::Result<Vec<OsString>> {
    Ok(nul_separated(std::fs::read(proc_path(pid, "cmdline"))?))
}

/// The environment the process was exec'd with, `NAME=VALUE` each.
pub fn environ(pid: i32) -> io::Result<Vec<OsString>> {
    Ok(nul_separated(std::fs::read(proc_path(pid, "environ"))?))
}

/// Every process (thread group) visible in `/proc`.
pub fn pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .expect("cannot list /proc")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The process exists and is not a zombie (a zombie has finished running).
pub fn is_alive(pid: i32) -> bool {
    match stat(pid) {
        Ok(stat) => stat.state != 'Z' && stat.state != 'X',
        Err(_) => false,
    }
}
