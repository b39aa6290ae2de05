use ktstr::prelude::*;

#[ktstr_test(numa_nodes = 2, llcs = 3, cores = 2)]
fn uneven(ctx: &TestCtx) -> TestSpec {
    ctx.spec()
}

fn main() {}
