//! Checks of the shared harness itself (tests/common), so that a daemon test
//! cannot pass because a /proc reader misread something.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{init, procfs, wait_until};

#[test]
fn stat_fields_are_taken_after_the_last_parenthesis() {
    let text = "4242 (a) (b c) S 17 4242 4242 34816 -1 4194560 100 0 0 0\n";
    let stat = procfs::parse_stat(text).unwrap();
    assert_eq!(stat.pid, 4242);
    assert_eq!(stat.comm, "a) (b c");
    assert_eq!(stat.state, 'S');
    assert_eq!(stat.ppid, 17);
    assert_eq!(stat.pgrp, 4242);
    assert_eq!(stat.session, 4242);
    assert_eq!(stat.tty_nr, 34816);
    assert_eq!(stat.tpgid, -1);
}

#[test]
fn status_fields_are_parsed_by_type() {
    let text = "Name:\tsleep\nUmask:\t0027\nState:\tS (sleeping)\nUid:\t0\t1\t2\t3\n\
                Gid:\t4\t5\t6\t7\nGroups:\t10 20 \nSigBlk:\t0000000000010000\n\
                SigIgn:\t0000000180001000\n";
    let status = procfs::parse_status(text);
    assert_eq!(status.umask(), 0o027);
    assert_eq!(status.state(), 'S');
    assert_eq!(status.uids(), [0, 1, 2, 3]);
    assert_eq!(status.gids(), [4, 5, 6, 7]);
    assert_eq!(status.groups(), [10, 20]);
    assert_eq!(status.sig_blk(), 1 << 16);
    assert_eq!(status.sig_ign(), (1 << 31) | (1 << 32) | (1 << 12));
    assert_eq!(
        procfs::parse_status("Groups:\t\n").groups(),
        Vec::<u32>::new()
    );
}

#[test]
fn stat_of_a_live_process_whose_name_has_spaces_and_parentheses() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("a) (b c");
    std::os::unix::fs::symlink("/bin/sleep", &program).unwrap();
    let mut child = Command::new(&program)
        .arg(common::unique_marker())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    // Until exec, the child still has the test binary's name.
    wait_until(common::TIMEOUT, "the child to exec", || {
        procfs::stat(pid).is_ok_and(|s| s.comm == "a) (b c")
    });
    let stat = procfs::stat(pid).unwrap();
    assert_eq!(stat.ppid, common::test_pid());
    assert!(procfs::is_alive(pid));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_zombie_is_not_alive() {
    init();
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id() as i32;
    wait_until(
        Duration::from_secs(20),
        "the child to become a zombie",
        || procfs::stat(pid).is_ok_and(|s| s.state == 'Z'),
    );
    assert!(!procfs::is_alive(pid));
    assert!(procfs::stat(pid).is_ok(), "the zombie is still listed");
    child.wait().unwrap();
    assert!(!procfs::is_alive(pid));
}

#[test]
fn fds_and_cmdline_of_this_process() {
    let fds = procfs::fds(common::test_pid()).unwrap();
    assert!(fds.contains_key(&0) && fds.contains_key(&1) && fds.contains_key(&2));
    let argv = procfs::cmdline(common::test_pid()).unwrap();
    let own: Vec<_> = std::env::args_os().collect();
    assert_eq!(argv, own);
}
