//! SIGINT, SIGTERM and SIGHUP during a run: the handler only records the signal; the
//! runner sees it, tears the VM down and writes a sidecar that says the run was
//! interrupted (never a pass). `cargo ktstr test` installs the same handler so that it
//! outlives nextest and prints the summary.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Once;

static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn record(sig: libc::c_int) {
    // Keep the first one: it is why the run stopped.
    let _ = SIGNAL.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
}

/// Install the recording handler (once per process). Children get the default action
/// back when they exec.
pub fn catch() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: `record` is async-signal-safe (one atomic compare-exchange).
            unsafe {
                libc::signal(sig, record as *const () as libc::sighandler_t);
            }
        }
    });
}

/// The first signal received since [`catch`], if any.
pub fn received() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// `SIGTERM`-style name of a signal number.
pub fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// What a run stopped by `sig` says in its verdict.
pub fn reason(sig: i32) -> String {
    format!(
        "interrupted by {} before the run finished: no verdict on the scheduler (the VM was torn down, this sidecar keeps what was measured)",
        name(sig)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_is_recorded_not_fatal_and_the_first_one_wins() {
        catch();
        assert_eq!(received(), None);
        // SAFETY: raising a signal this process now handles.
        unsafe { libc::raise(libc::SIGHUP) };
        // SAFETY: as above; the handler records it and returns.
        unsafe { libc::raise(libc::SIGTERM) };
        assert_eq!(received(), Some(libc::SIGHUP));
        assert!(reason(libc::SIGHUP).contains("interrupted by SIGHUP"));
    }
}
