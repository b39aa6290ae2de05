use ktstr::prelude::*;

#[ktstr_test(llcs = 2, core = 4)]
fn typo(ctx: &TestCtx) -> TestSpec {
    ctx.spec()
}

#[ktstr_test(turbo = true)]
fn nonsense(ctx: &TestCtx) -> TestSpec {
    ctx.spec()
}

fn main() {}
