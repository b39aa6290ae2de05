use ktstr::prelude::*;

#[ktstr_test(memory_mib = 64, cpu_budget = 0, duration_s = 0)]
fn tiny(ctx: &TestCtx) -> TestSpec {
    ctx.spec()
}

#[ktstr_test(sysctls = ["kernel.sched_autogroup_enabled"], kargs = ["two words"])]
fn malformed(ctx: &TestCtx) -> TestSpec {
    ctx.spec()
}

#[ktstr_test(llcs = 32, cores = 32, threads = 2)]
fn too_many_cpus(ctx: &TestCtx) -> TestSpec {
    ctx.spec()
}

#[ktstr_test(perf_delta_assertions = [(metric = "worst_gap_ms", direction = "sideways")])]
fn bad_gate(ctx: &TestCtx) -> TestSpec {
    ctx.spec()
}

fn main() {}
