use ktstr::prelude::*;

#[ktstr_test(max_cpus = 8)]
fn no_gauntlet(ctx: &TestCtx) -> TestSpec {
    ctx.spec()
}

#[ktstr_test(gauntlet, min_llcs = 4, max_llcs = 2)]
fn empty_range(ctx: &TestCtx) -> TestSpec {
    ctx.spec()
}

fn main() {}
