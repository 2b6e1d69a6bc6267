//! The daemon launched by the benchmark: writes one byte to the FIFO named
//! by its argument and exits, so the benchmark knows the daemon ran.
//! Raw libc and no Rust runtime start-up, so it costs the same under every launcher.

#![no_main]

use core::ffi::{c_char, c_int};

#[unsafe(no_mangle)]
extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    if argc < 2 {
        return 2;
    }
    // SAFETY: argv[1] is a NUL-terminated string from the C runtime.
    unsafe {
        let fd = libc::open(*argv.add(1), libc::O_WRONLY | libc::O_NONBLOCK);
        if fd < 0 || libc::write(fd, c"!".as_ptr().cast(), 1) != 1 {
            return 1;
        }
    }
    0
}
