//! SIGINT/SIGTERM while work that must be cleaned up runs (a sandboxed job, a microVM, a
//! reproduction's work directory): the handler only records the signal; whoever holds a
//! [`Guard`] sees it, kills what it started, cleans up and returns `Error::Interrupted`
//! (exit 130). While no guard is held the default action is kept. One handler and one
//! counter for the whole process, whichever backend runs.

use std::sync::Once;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

static ACTIVE: AtomicUsize = AtomicUsize::new(0);
static PENDING: AtomicI32 = AtomicI32::new(0);
static INSTALL: Once = Once::new();

extern "C" fn on_signal(sig: libc::c_int) {
    if ACTIVE.load(Ordering::SeqCst) == 0 {
        // SAFETY: async-signal-safe calls: restore the default and re-raise.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
        return;
    }
    PENDING.store(sig, Ordering::SeqCst);
}

/// Registers running work for the lifetime of the guard.
pub(crate) struct Guard;

impl Guard {
    pub(crate) fn new() -> Guard {
        INSTALL.call_once(|| {
            for sig in [libc::SIGINT, libc::SIGTERM] {
                // SAFETY: installing a handler that only touches atomics.
                unsafe {
                    let mut sa: libc::sigaction = std::mem::zeroed();
                    sa.sa_sigaction = on_signal as *const () as usize;
                    sa.sa_flags = libc::SA_RESTART;
                    libc::sigemptyset(&mut sa.sa_mask);
                    libc::sigaction(sig, &sa, std::ptr::null_mut());
                }
            }
        });
        ACTIVE.fetch_add(1, Ordering::SeqCst);
        Guard
    }

    /// The signal that arrived while a guard was held, if any.
    pub(crate) fn pending(&self) -> Option<i32> {
        match PENDING.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if ACTIVE.fetch_sub(1, Ordering::SeqCst) == 1 {
            PENDING.store(0, Ordering::SeqCst);
        }
    }
}
