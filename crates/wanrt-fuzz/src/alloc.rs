//! A counting global allocator with a hard cap, for the harness's test binary.
//!
//! Each case runs with a cap of (bytes live before the case + the case's budget). An
//! allocation that would pass it fails: a fallible reservation (`try_reserve`) sees an error
//! and the reader reports it cleanly; an infallible one aborts the process, which is exactly
//! what the same input would do to `wanrt` under a memory limit of that size — a finding.
//! Before such an abort a fixed message is written with `write(2)` (no allocation is possible
//! at that point); the failing input is the harness's current case file, printed at start.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static CAP: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Install with `#[global_allocator] static A: Counting = Counting;` in the test binary.
pub struct Counting;

fn reserve(size: usize) -> bool {
    let now = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    if now > CAP.load(Ordering::Relaxed) {
        LIVE.fetch_sub(size, Ordering::Relaxed);
        over_cap();
        return false;
    }
    PEAK.fetch_max(now, Ordering::Relaxed);
    true
}

fn over_cap() {
    const MSG: &[u8] = b"\nwanrt-fuzz: an allocation passed the case's memory cap (if the process aborts now, \
the input is the current case file printed at start)\n";
    // SAFETY: writing a static buffer to fd 2.
    unsafe { libc::write(2, MSG.as_ptr().cast(), MSG.len()) };
}

// SAFETY: forwards to `System`, only counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !reserve(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = System.alloc(layout);
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !reserve(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = System.alloc_zeroed(layout);
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old && !reserve(new_size - old) {
            return std::ptr::null_mut();
        }
        let p = System.realloc(ptr, layout, new_size);
        if p.is_null() {
            if new_size > old {
                LIVE.fetch_sub(new_size - old, Ordering::Relaxed);
            }
        } else if new_size < old {
            LIVE.fetch_sub(old - new_size, Ordering::Relaxed);
        }
        p
    }
}

/// Starts a case: the cap becomes live bytes + `budget`; returns the live bytes now.
pub fn begin_case(budget: usize) -> usize {
    let live = LIVE.load(Ordering::Relaxed);
    PEAK.store(live, Ordering::Relaxed);
    CAP.store(live.saturating_add(budget), Ordering::Relaxed);
    live
}

/// Ends a case: lifts the cap; returns the case's peak above `base`.
pub fn end_case(base: usize) -> usize {
    CAP.store(usize::MAX, Ordering::Relaxed);
    PEAK.load(Ordering::Relaxed).saturating_sub(base)
}
