use ktstr::prelude::*;

#[ktstr_test(llcs = 2, cores = 2, llcs = 4)]
fn twice(ctx: &TestCtx) -> TestSpec {
    ctx.spec()
}

fn main() {}
