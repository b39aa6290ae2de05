use ktstr::prelude::*;

#[ktstr_test]
fn mutable(ctx: &mut TestCtx) -> TestSpec {
    ctx.spec()
}

#[ktstr_test]
fn no_return(ctx: &TestCtx) {
    let _ = ctx;
}

#[ktstr_test]
fn no_args() -> TestSpec {
    unimplemented!()
}

#[ktstr_test]
#[test]
fn doubly_registered(ctx: &TestCtx) -> TestSpec {
    ctx.spec()
}

fn main() {}
