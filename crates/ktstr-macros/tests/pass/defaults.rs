//! Keys left out are exactly `TestAttrs::DEFAULT`: the macro has no defaults of its own.

use ktstr::prelude::*;
use ktstr::test_support::entry::{registered, Constraints, TestAttrs};

#[ktstr_test]
fn bare(ctx: &TestCtx) -> TestSpec {
    ctx.spec()
}

#[ktstr_test(cores = 4, gauntlet, max_llcs = 2)]
fn some(ctx: &TestCtx) -> TestSpec {
    ctx.spec()
}

fn main() {
    let entries = registered();
    let attrs = |name: &str| entries.iter().find(|e| e.name == name).unwrap().attrs;
    assert_eq!(attrs("bare"), TestAttrs::DEFAULT);
    assert_eq!(
        attrs("some"),
        TestAttrs {
            cores: 4,
            gauntlet: true,
            constraints: Constraints {
                max_llcs: 2,
                ..TestAttrs::DEFAULT.constraints
            },
            ..TestAttrs::DEFAULT
        }
    );
}
