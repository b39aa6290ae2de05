//! Memory shared by the runtime and every worker it forks: one slot per worker (its live
//! work-unit counter, read by stimulus events, and its stop flag, set by the runtime) and
//! one slot per worker pair (the futex word and hand-over timestamp of `FutexPingPong`).
//!
//! It is one anonymous shared mapping made before the first fork and never unmapped, so
//! every process sees the same slots at the same address.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use anyhow::{Context, Result};
use ktstr_wire::scenario::MAX_WORKERS;

/// A worker's live state.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct WorkerSlot {
    /// Work units completed so far (written by the worker, read by the runtime).
    pub units: AtomicU64,
    /// Non-zero: the runtime asks the worker to stop and report.
    pub stop: AtomicU32,
}

impl WorkerSlot {
    pub fn request_stop(&self) {
        self.stop.store(1, Ordering::Release);
    }

    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire) != 0
    }

    pub fn units(&self) -> u64 {
        self.units.load(Ordering::Relaxed)
    }
}

/// State shared by the two workers of a pair.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct PairSlot {
    /// Whose turn it is (0 or 1): the futex word.
    pub turn: AtomicU32,
    /// CLOCK_MONOTONIC ns at which the last hand-over (the wake call) happened.
    pub handed_at_ns: AtomicU64,
    /// The two workers' pids, each written by its worker (`SignalPingPong`).
    pub pids: [AtomicU32; 2],
}

/// Worker and pair slots in shared memory, handed out in order.
pub struct Arena {
    workers: &'static [WorkerSlot],
    pairs: &'static [PairSlot],
    next_worker: usize,
    next_pair: usize,
}

impl Arena {
    /// Maps room for [`MAX_WORKERS`] workers and half as many pairs.
    pub fn create() -> Result<Self> {
        let nw = MAX_WORKERS as usize;
        let np = nw / 2;
        let bytes = nw * size_of::<WorkerSlot>() + np * size_of::<PairSlot>();
        let len = std::num::NonZeroUsize::new(bytes).context("empty arena")?;
        // SAFETY: a fresh anonymous mapping; nothing else refers to it. It is never
        // unmapped, so the 'static slices below stay valid in this process and, being
        // MAP_SHARED, in every child forked after this point.
        let ptr = unsafe {
            nix::sys::mman::mmap_anonymous(
                None,
                len,
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                nix::sys::mman::MapFlags::MAP_SHARED,
            )
        }
        .context("mapping the shared worker arena")?;
        let base = ptr.as_ptr().cast::<u8>();
        // SAFETY: the mapping is page aligned (so 64-byte aligned), zero-filled (a valid
        // all-zero atomic), `bytes` long and lives forever; the two slices do not overlap.
        let (workers, pairs) = unsafe {
            let w = std::slice::from_raw_parts(base.cast::<WorkerSlot>(), nw);
            let p = std::slice::from_raw_parts(
                base.add(nw * size_of::<WorkerSlot>()).cast::<PairSlot>(),
                np,
            );
            (w, p)
        };
        Ok(Self {
            workers,
            pairs,
            next_worker: 0,
            next_pair: 0,
        })
    }

    /// The next free worker slot and its number.
    pub fn worker(&mut self) -> Result<(usize, &'static WorkerSlot)> {
        let i = self.next_worker;
        let slot = self
            .workers
            .get(i)
            .with_context(|| format!("more than {MAX_WORKERS} workers in one run"))?;
        self.next_worker += 1;
        Ok((i, slot))
    }

    /// The next free pair slot.
    pub fn pair(&mut self) -> Result<&'static PairSlot> {
        let slot = self
            .pairs
            .get(self.next_pair)
            .context("more worker pairs than the arena holds")?;
        self.next_pair += 1;
        Ok(slot)
    }

    /// Work units of every worker started so far.
    #[cfg(test)]
    pub fn total_units(&self) -> u64 {
        self.workers[..self.next_worker]
            .iter()
            .map(WorkerSlot::units)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_shared_with_a_forked_child() {
        let mut a = Arena::create().unwrap();
        let (i, slot) = a.worker().unwrap();
        assert_eq!(i, 0);
        assert!(!slot.stop_requested());
        // SAFETY: the test child only touches the shared slot and `_exit`s.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                slot.units.store(42, Ordering::Relaxed);
                // SAFETY: ends the child without running the test harness's handlers.
                unsafe { libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).unwrap();
            }
        }
        assert_eq!(a.total_units(), 42);
        let (j, _) = a.worker().unwrap();
        assert_eq!(j, 1);
        assert_eq!(std::mem::align_of::<WorkerSlot>(), 64);
    }

    #[test]
    fn the_arena_runs_out_with_an_error() {
        let mut a = Arena::create().unwrap();
        for _ in 0..MAX_WORKERS {
            a.worker().unwrap();
        }
        assert!(a.worker().is_err());
        for _ in 0..MAX_WORKERS / 2 {
            a.pair().unwrap();
        }
        assert!(a.pair().is_err());
    }
}
