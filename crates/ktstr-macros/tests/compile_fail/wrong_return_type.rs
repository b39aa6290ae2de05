use ktstr::prelude::*;

#[ktstr_test]
fn returns_a_number(ctx: &TestCtx) -> u32 {
    ctx.vcpus()
}

fn main() {}
