//! The floor: the smallest program that daemonizes correctly and confirms
//! the exec. fork, setsid, fork; the grandchild puts stdio on /dev/null,
//! closes every other descriptor with close_range, and execvp's; the original
//! process reaps the intermediate and returns once a close-on-exec pipe
//! reports EOF (exec succeeded) or an errno (it failed).
//!
//! No Rust runtime start-up (`no_main`: std's `lang_start` never runs), raw libc only, so it costs what a C program
//! would. Usage: floor COMMAND [ARG]...

#![no_main]

use core::ffi::{c_char, c_int};

#[unsafe(no_mangle)]
extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    if argc < 2 {
        return 125;
    }
    // SAFETY: plain libc calls on our own descriptors and on argv, which
    // the C runtime guarantees NULL-terminated; each child ends in execvp
    // or _exit.
    unsafe {
        let mut pipe = [0 as c_int; 2];
        if libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return 125;
        }
        let child = libc::fork();
        if child == 0 {
            libc::setsid();
            if libc::fork() != 0 {
                libc::_exit(0);
            }
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            // Everything above 2 except the report pipe's write end.
            let w = pipe[1] as libc::c_uint;
            libc::syscall(libc::SYS_close_range, 3 as libc::c_uint, w - 1, 0);
            libc::syscall(libc::SYS_close_range, w + 1, libc::c_uint::MAX, 0);
            libc::execvp(*argv.add(1), argv.add(1));
            let errno = *libc::__errno_location();
            libc::write(pipe[1], (&errno as *const c_int).cast(), 4);
            libc::_exit(127);
        }
        libc::close(pipe[1]);
        let mut status = 0;
        libc::waitpid(child, &mut status, 0);
        let mut errno: c_int = 0;
        let n = libc::read(pipe[0], (&mut errno as *mut c_int).cast(), 4);
        if n == 4 { 127 } else { 0 }
    }
}
