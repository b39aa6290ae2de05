//! `#[ktstr_test]`: declare a ktstr VM test.
//!
//! ```ignore
//! use ktstr::prelude::*;
//!
//! #[ktstr_test(llcs = 2, cores = 2, duration_s = 3, gauntlet, max_cpus = 16)]
//! fn spinners_spread(ctx: &TestCtx) -> TestSpec {
//!     ctx.spec().workers("spin", ctx.vcpus(), WorkKind::Spin)
//! }
//! ```
//!
//! Attributes (all optional). A key left out takes its value from
//! `ktstr::test_support::TestAttrs::DEFAULT`, the one definition of the defaults below:
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `numa_nodes`, `llcs`, `cores`, `threads` | 1, 1, 2, 1 | topology: NUMA nodes, LLCs in total, cores per LLC, threads per core |
//! | `memory_mib` | 64 per vCPU, at least 512 | guest memory (at least 256) |
//! | `cpu_budget` | min(vCPUs, host CPUs) | host CPUs the vCPUs are pinned to |
//! | `scheduler` | `"eevdf"` | sched_ext scheduler name or path |
//! | `sysctls` | `[]` | `"key=value"` strings |
//! | `kargs` | `[]` | extra kernel arguments, one per string |
//! | `includes` | `[]` | host files packed as `/bin/<name>` |
//! | `duration_s` | 10 | workload duration |
//! | `num_snapshots` | 0 | periodic snapshots requested |
//! | `expect_err` | off | the run is expected to fail (verdict inverted) |
//! | `perf_delta_assertions` | `[]` | `"metric"` or `(metric = "...", direction = "lower_better", max_regression_pct = 10.0, min_abs = 1.0, phase = 1)` |
//! | `gauntlet` | off | also run on every fitting topology preset (ignored variants) |
//! | `ignore` (or `#[ignore]`) | off | the base variant is ignored |
//! | `host_only` | off | no VM: the test's checks run on the host, and it leaves the same sidecar |
//! | `min_/max_numa_nodes`, `min_/max_llcs`, `min_/max_cpus`, `requires_smt` | any | which presets a gauntlet test accepts |
//!
//! Impossible values (a zero dimension, `llcs` not a multiple of `numa_nodes`, more than
//! 1024 vCPUs, unknown or duplicate keys, `min > max`, constraints without `gauntlet`) are
//! compile errors pointing at the offending key or value (checked against the defaults
//! when a dimension is left out).

mod attrs;
mod codegen;

use proc_macro::TokenStream;
use syn::parse_macro_input;

/// See the crate documentation.
#[proc_macro_attribute]
pub fn ktstr_test(args: TokenStream, item: TokenStream) -> TokenStream {
    let args = parse_macro_input!(args as attrs::Args);
    let mut f = parse_macro_input!(item as syn::ItemFn);
    // On an error the function is kept as it was, so the only diagnostics are ours.
    let keep = |e: syn::Error, f: &syn::ItemFn| {
        let err = e.to_compile_error();
        quote::quote!(#err #[allow(dead_code)] #f).into()
    };
    let mut attrs = match attrs::Attrs::from_args(args) {
        Ok(a) => a,
        Err(e) => return keep(e, &f),
    };
    let original = f.clone();
    if let Err(e) = codegen::check_fn(&mut f, &mut attrs) {
        return keep(e, &original);
    }
    codegen::expand(f, &attrs).into()
}
