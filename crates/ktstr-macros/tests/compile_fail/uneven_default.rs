use ktstr::prelude::*;

// The default llcs (1) cannot be spread over two nodes: checked against TestAttrs::DEFAULT.
#[ktstr_test(numa_nodes = 2)]
fn uneven_default(ctx: &TestCtx) -> TestSpec {
    ctx.spec()
}

// 1 LLC * 1024 cores * 2 threads (defaults for the rest).
#[ktstr_test(cores = 1024, threads = 2)]
fn too_many(ctx: &TestCtx) -> TestSpec {
    ctx.spec()
}

fn main() {}
