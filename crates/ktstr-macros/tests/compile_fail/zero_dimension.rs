use ktstr::prelude::*;

#[ktstr_test(llcs = 2, cores = 0)]
fn no_cores(ctx: &TestCtx) -> TestSpec {
    ctx.spec()
}

#[ktstr_test(numa_nodes = 0)]
fn no_nodes(ctx: &TestCtx) -> TestSpec {
    ctx.spec()
}

fn main() {}
