//! Host-only tests (`#[ktstr_test(host_only)]`): no VM boots, the checks run on the
//! host, and each leaves the same sidecar as a VM test. These check ktstr's own
//! catalog against what it promises scheduler authors (`cargo ktstr describe`).

use ktstr::describe::Catalog;
use ktstr::prelude::*;
use ktstr::test_support::execute::run_variant;
use ktstr::test_support::{TestAttrs, TestEntry, TestId};

#[ktstr_test(host_only)]
fn host_only_catalog_breadth(ctx: &TestCtx) -> TestSpec {
    ctx.spec().check(|out: &RunOutcome| {
        // No guest ran: nothing was collected and no engine was involved.
        if !out.collected.workers.is_empty() || out.boot_to_ready_ms.is_some() {
            return Err(format!("a host-only test booted something: {out:#?}"));
        }
        let c = Catalog::new();
        let names = |items: &[ktstr::describe::Item]| -> Vec<String> {
            items.iter().map(|i| i.name.clone()).collect()
        };
        let ops = names(&c.ops);
        for (what, n, at_least) in [
            ("work types", c.work_types.len(), 30),
            ("ops", c.ops.len(), 24),
            ("presets", c.presets.len(), 25),
            ("canned scenarios", c.scenarios.len(), 14),
        ] {
            if n < at_least {
                return Err(format!("{what}: {n}, fewer than {at_least}"));
            }
        }
        for op in ["OfflineCpus", "RestartScheduler", "ReplaceScheduler"] {
            if !ops.iter().any(|o| o == op) {
                return Err(format!("no {op} in {ops:?}"));
            }
        }
        Ok(())
    })
}

// A host-only test whose check fails is a failed test with a failed sidecar. A plain
// `#[test]` on an entry written by hand (left out of the registry), through the same
// `run_variant` a `#[ktstr_test]` takes: a registered one could only fail.

static FAILING: TestEntry = TestEntry {
    name: "host_only_failing_check",
    module_path: module_path!(),
    file: file!(),
    line: line!(),
    func: |ctx| {
        Ok(ctx
            .spec()
            .check(|_: &RunOutcome| Err("this check always fails".into())))
    },
    attrs: TestAttrs {
        host_only: true,
        // A kernel nobody has: a host-only test never looks for one.
        scheduler: "eevdf",
        ..TestAttrs::DEFAULT
    },
};

#[test]
fn a_failing_host_only_check_fails_with_a_sidecar_and_no_vm() {
    let dir = tempfile::tempdir().unwrap();
    // SAFETY: this test binary's tests share no environment variable but this one, and
    // only this test reads the sidecar directory.
    unsafe { std::env::set_var("KTSTR_SIDECAR_DIR", dir.path()) };
    // As under `cargo ktstr test`: a run manifest. An entry run by hand stays out of it
    // (its sidecar is gone with the temporary directory).
    let manifest = dir.path().join("manifest");
    // SAFETY: as above.
    unsafe { std::env::set_var(ktstr::test_support::MANIFEST_ENV, &manifest) };
    let id = TestId {
        name: FAILING.name.to_string(),
        preset: None,
        kernel: None,
    };
    let r = run_variant(&FAILING, &id, Some("/no/such/kernel"));
    println!("{}", r.render());
    assert_eq!(r.outcome, Outcome::Fail, "{}", r.render());
    assert!(r.console_log.is_none(), "{}", r.render());
    let s = read_sidecar(r.sidecar_path.as_ref().expect("a sidecar")).unwrap();
    assert!(s.is_fail(), "{:#?}", s.stats.verdict_details);
    assert!(
        s.stats
            .verdict_details
            .iter()
            .any(|d| d.contains("this check always fails")),
        "{:#?}",
        s.stats.verdict_details
    );
    assert_eq!(s.kernel_version, None);
    assert_eq!(s.cleanup_duration_ms, None);
    assert!(
        !manifest.exists(),
        "a hand-run entry was recorded in the run manifest"
    );
}
