//! Work types about scheduling classes and priorities: RT hogs (`SCHED_FIFO`,
//! `SCHED_RR`), background classes (`SCHED_IDLE`, `SCHED_BATCH`), mixed nice levels and
//! an rt-app-like periodic task with deadlines.

use std::time::{Duration, Instant};

use super::{mono_ns, sleep_until_ns, spin, Meter, SPIN_ITERS};

/// Nice values `MixedNice` workers take, by worker index.
pub const MIXED_NICE: [i32; 5] = [-5, 0, 5, 10, 19];

/// Switches this process to `policy` at `priority` (0 for the non-RT classes).
pub fn set_policy(policy: i32, priority: u32) -> std::io::Result<()> {
    let p = libc::sched_param {
        sched_priority: priority as i32,
    };
    // SAFETY: changes this process's own policy with a valid sched_param.
    if unsafe { libc::sched_setscheduler(0, policy, &p) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Spins under `policy`, one unit per spin unit. A policy that cannot be set is an
/// error and the worker spins under its old one (so its numbers still mean something).
pub fn policy_hog(m: &mut Meter, name: &str, policy: i32, priority: u32) {
    if let Err(e) = set_policy(policy, priority) {
        m.error(format!(
            "{name}: sched_setscheduler(priority {priority}): {e}"
        ));
    }
    let mut x = u64::from(std::process::id()) | 1;
    loop {
        x = spin(x, SPIN_ITERS);
        m.checkpoint();
        if m.should_stop() {
            break;
        }
    }
    std::hint::black_box(x);
}

/// `PeriodicDuty`: every `period_us` (absolute periods from the start) spin `run_us`.
/// Each period's start lateness is a timer latency; a run that ends past its period's
/// end is a deadline miss, and periods that overrun ones swallowed count as missed too.
pub fn periodic_duty(m: &mut Meter, run_us: u32, period_us: u32) {
    let period = u64::from(period_us) * 1000;
    let run = Duration::from_micros(u64::from(run_us));
    let mut release = mono_ns();
    let mut x = 1u64;
    loop {
        let began = Instant::now();
        while Instant::now().saturating_duration_since(began) < run {
            x = spin(x, 64);
        }
        let deadline = release.saturating_add(period);
        let now = mono_ns();
        if now > deadline {
            // This run ended late; the periods it ran into are skipped and missed.
            let behind = (now - deadline) / period;
            m.deadline_missed(1 + behind);
            release = deadline.saturating_add(behind.saturating_mul(period));
        }
        m.checkpoint();
        if m.should_stop() {
            break;
        }
        release = release.saturating_add(period);
        if !sleep_until_ns(m, release) {
            break;
        }
    }
    std::hint::black_box(x);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_periodic_task_runs_once_per_period_and_counts_misses() {
        let now = Instant::now();
        let mut m = Meter::new(None, now, now + Duration::from_millis(60));
        periodic_duty(&mut m, 1000, 10_000);
        let r = m.into_report("t", 0, "PeriodicDuty");
        // About six periods in 60 ms, each with its start lateness.
        assert!((3..=8).contains(&r.work_units), "{r:?}");
        assert!(r.timer_samples_total >= r.work_units - 1, "{r:?}");

        // A run longer than the period misses every deadline.
        let now = Instant::now();
        let mut m = Meter::new(None, now, now + Duration::from_millis(20));
        periodic_duty(&mut m, 3000, 1000);
        let r = m.into_report("t", 0, "PeriodicDuty");
        assert!(r.deadline_misses >= r.work_units, "{r:?}");
    }

    #[test]
    fn background_classes_can_be_set_without_privilege() {
        // SCHED_BATCH needs no privilege; the hog records no error.
        let now = Instant::now();
        let mut m = Meter::new(None, now, now + Duration::from_millis(20));
        std::thread::scope(|s| {
            s.spawn(|| policy_hog(&mut m, "BatchBackground", libc::SCHED_BATCH, 0));
        });
        let r = m.into_report("t", 0, "BatchBackground");
        assert!(r.work_units > 0 && r.errors.is_empty(), "{r:?}");
    }
}
