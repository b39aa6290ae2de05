use ktstr::prelude::*;

#[ktstr_test(
    numa_nodes = 2,
    llcs = 4,
    cores = 2,
    threads = 2,
    memory_mib = 2048,
    cpu_budget = 2,
    scheduler = "scx_bpfland",
    sysctls = ["kernel.sched_autogroup_enabled=0"],
    kargs = ["nosmt=force"],
    includes = ["/bin/true"],
    duration_s = 3,
    num_snapshots = 2,
    expect_err,
    perf_delta_assertions = ["worst_gap_ms", (metric = "total_iterations", direction = "higher_better", max_regression_pct = 5.0, min_abs = 1, phase = 1)],
    gauntlet,
    host_only = false,
    min_numa_nodes = 1,
    max_numa_nodes = 2,
    min_llcs = 2,
    max_llcs = 8,
    min_cpus = 4,
    max_cpus = 32,
    requires_smt
)]
/// Doc comments stay on the function.
fn everything(ctx: &TestCtx) -> TestSpec {
    ctx.spec().workers("spin", ctx.vcpus(), WorkKind::Spin)
}

#[ktstr_test]
#[ignore]
fn fallible(_ctx: &TestCtx) -> Result<TestSpec, String> {
    Err("not today".into())
}

fn main() {
    let entries: Vec<_> = ktstr::test_support::entry::registered();
    assert_eq!(entries.len(), 2);
    let e = entries.iter().find(|e| e.name == "everything").unwrap();
    assert_eq!(e.attrs.topology().unwrap().to_string(), "2n4l2c2t");
    assert_eq!(e.attrs.memory_mib, Some(2048));
    assert_eq!(e.attrs.scheduler, "scx_bpfland");
    assert!(e.attrs.expect_err && e.attrs.gauntlet && e.attrs.constraints.requires_smt);
    assert_eq!(e.attrs.constraints.max_cpus, 32);
    assert_eq!(e.attrs.perf_delta_assertions[1].min_abs, Some(1.0));
    let f = entries.iter().find(|e| e.name == "fallible").unwrap();
    assert!(f.attrs.ignore, "#[ignore] is picked up");
}
