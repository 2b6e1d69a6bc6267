//! The binary's global allocator: a bump arena in `.bss`.
//!
//! `daemonize` lives for about a millisecond and allocates a few dozen
//! kilobytes, mostly while clap builds and parses its command line. glibc's
//! malloc costs more than that work itself here: arena set-up, `brk`, chunk
//! headers, and `free` walking every block again at exit (issue 6 measures
//! it). This allocator hands out memory by bumping an offset and never
//! frees, except that the newest block can grow or shrink in place; when the
//! arena is exhausted it falls back to the system allocator. The process is
//! single-threaded, but the offset is atomic so the type is honestly `Sync`.
//!
//! Not used after `fork()`: the children never allocate.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

const SIZE: usize = 256 * 1024;

pub struct Arena {
    memory: UnsafeCell<[u8; SIZE]>,
    /// Bytes handed out so far.
    used: AtomicUsize,
}

// SAFETY: blocks are carved out with an atomic compare-and-swap on `used`,
// so no two callers ever get overlapping memory.
unsafe impl Sync for Arena {}

impl Arena {
    pub const fn new() -> Arena {
        Arena {
            memory: UnsafeCell::new([0; SIZE]),
            used: AtomicUsize::new(0),
        }
    }

    fn base(&self) -> usize {
        self.memory.get() as usize
    }

    fn contains(&self, ptr: *mut u8) -> bool {
        (self.base()..self.base() + SIZE).contains(&(ptr as usize))
    }
}

// SAFETY: every block returned is inside the arena (or from System), aligned
// as asked, at least `layout.size()` long, and never handed out twice.
unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let start = (self.base() + used).next_multiple_of(layout.align()) - self.base();
            let end = start + layout.size();
            if end > SIZE {
                // SAFETY: forwarding the caller's valid layout.
                return unsafe { System.alloc(layout) };
            }
            match self
                .used
                .compare_exchange_weak(used, end, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return (self.base() + start) as *mut u8,
                Err(now) => used = now,
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !self.contains(ptr) {
            // SAFETY: not ours, so System allocated it with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if self.contains(ptr) {
            // The newest block grows or shrinks in place.
            let start = ptr as usize - self.base();
            let old_end = start + layout.size();
            let new_end = start + new_size;
            if new_end <= SIZE
                && self
                    .used
                    .compare_exchange(old_end, new_end, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                return ptr;
            }
        }
        // SAFETY: the caller guarantees `ptr`/`layout`; the default moves
        // the block through `alloc` and `dealloc` above.
        unsafe {
            let new = self.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}
