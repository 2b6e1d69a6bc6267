//! The C entry point. Everything else lives in the library (`daemonize::main`).
//!
//! `no_main`: std's `lang_start` would read `/proc/self/maps`, set up a
//! stack-overflow handler with its own alternate stack, and poll fds 0-2,
//! about a dozen system calls and 100 KiB of resident memory that a launcher
//! which exists for a millisecond does not need (issue 6 measures this).
//! std itself still works: on linux-gnu it learns argc/argv from glibc's
//! `.init_array`, and `daemonize` occupies fds 0-2 itself (docs/design.md,
//! detach step 1).
//! The Rust runtime would also ignore SIGPIPE; without it, a closed stderr
//! ends us with SIGPIPE rather than an EPIPE nobody could report anyway.

#![no_main]

use std::ffi::{c_char, c_int};

// `no_mangle` exports the C `main` that crt1 calls; it is "unsafe" only in
// that a duplicate symbol would clash at link time, and there is exactly one.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    c_int::from(daemonize::main())
}
