//! First light: boot the default Debian sched_ext kernel with topology 1n1l2c1t, spin two
//! workers for 2 s, and check that the sidecar holds what the run measured.
//!
//! Needs a kernel (`cargo ktstr kernel fetch`, or KTSTR_KERNEL) and an engine (qemu here,
//! hardware KVM elsewhere). Without them the test skips with the reason, or fails when
//! KTSTR_NO_SKIP is set (CI sets it). nextest lists it as `ktstr/boot_smoke`, and its
//! gauntlet variants (every preset up to 8 vCPUs) as `gauntlet/boot_smoke/{preset}`,
//! ignored unless asked for (`cargo ktstr test -- --run-ignored only -E 'test(/gauntlet/)'`).

use ktstr::prelude::*;
use ktstr::runner::BOOT_BUDGET;

#[ktstr_test(
    llcs = 1,
    cores = 2,
    memory_mib = 1024,
    duration_s = 2,
    gauntlet,
    max_cpus = 8
)]
fn boot_smoke(ctx: &TestCtx) -> TestSpec {
    let topology = ctx.topology();
    ctx.spec()
        .workers("spin", 2, WorkKind::Spin)
        .check(move |out: &RunOutcome| {
            let back = out.sidecar_as_written().expect("the sidecar reads back");
            let ready = out
                .collected
                .ready
                .as_ref()
                .expect("the guest reported ready");
            assert_eq!(back.test_name, "boot_smoke");
            assert_eq!(back.topology, topology.to_string());
            // The guest's uname is the kernel the host resolved.
            assert_eq!(
                back.kernel_version.as_deref(),
                Some(ready.kernel_release.as_str())
            );
            assert_eq!(back.vcpus, topology.vcpus());
            assert!(back.cpu_budget >= 1 && back.cpu_budget <= topology.vcpus());
            assert!(back.stats.total_iterations > 0);
            assert_eq!(back.stats.total_workers, 2);
            assert!(back.cleanup_duration_ms.is_some());
            assert!(back.host.is_some());
            assert!(back.timestamp.ends_with('Z'), "{}", back.timestamp);
            assert!(!back.run_id.is_empty());
            assert!(back.passed && !back.skipped && !back.inconclusive && !back.expected_failure);
            // The ready message arrived during the run, so boot-to-ready was measured.
            let ready_ms = out.boot_to_ready_ms.expect("boot to ready measured");
            assert!(Duration::from_millis(ready_ms) < BOOT_BUDGET);
            Ok(())
        })
}
