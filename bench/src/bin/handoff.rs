//! Runs COMMAND in a process of its own, for the capture benchmark's
//! figures of peak RSS: forks, and exits at once; the child execvp's
//! COMMAND, which the benchmark (a subreaper) inherits and reaps. A
//! process's `ru_maxrss` counts the memory it had before its exec, and a
//! child forked by the benchmark has a copy of the benchmark's; this
//! child's is a copy of this small program's, in a fresh process whose
//! peak starts from nothing.
//!
//! Raw libc and no Rust runtime start-up, like `floor`. Usage: handoff
//! COMMAND [ARG]...; exit status 125 if it cannot fork, and the child's 127
//! if COMMAND cannot be executed.

#![no_main]

use core::ffi::{c_char, c_int};

#[unsafe(no_mangle)]
extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    if argc < 2 {
        return 125;
    }
    // SAFETY: plain libc calls on argv, which the C runtime guarantees
    // NULL-terminated; the child ends in execvp or _exit.
    unsafe {
        match libc::fork() {
            0 => {
                libc::execvp(*argv.add(1), argv.add(1));
                libc::_exit(127);
            }
            -1 => 125,
            _ => 0,
        }
    }
}
