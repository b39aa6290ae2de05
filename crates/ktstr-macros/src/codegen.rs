//! What `#[ktstr_test]` expands to, for `fn NAME(ctx: &TestCtx) -> R`:
//!
//! ```text
//! fn __ktstr_fn_NAME(ctx: &TestCtx) -> R { body }          the user's function, renamed
//! fn __ktstr_spec_NAME(ctx) -> Result<TestSpec, String>   R normalised (IntoTestSpec)
//! static __KTSTR_ENTRY_NAME: TestEntry                    in the KTSTR_TESTS slice
//! static __KTSTR_CTOR_NAME (.init_array)                  calls early_dispatch()
//! #[test] fn NAME()                                       base variant under libtest
//! ```

use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, ReturnType, Type};

use crate::attrs::{Attrs, Gate};

/// Check the function's shape and pull a bare `#[ignore]` off it.
pub fn check_fn(f: &mut ItemFn, attrs: &mut Attrs) -> syn::Result<()> {
    let sig = &f.sig;
    if let Some(a) = &sig.asyncness {
        return Err(syn::Error::new(
            a.span(),
            "a #[ktstr_test] function cannot be async",
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "a #[ktstr_test] function cannot be generic",
        ));
    }
    if sig.inputs.len() != 1 {
        return Err(syn::Error::new(
            if sig.inputs.is_empty() {
                sig.ident.span()
            } else {
                sig.inputs.span()
            },
            "a #[ktstr_test] function takes exactly one argument: `ctx: &TestCtx`",
        ));
    }
    match &sig.inputs[0] {
        FnArg::Receiver(r) => {
            return Err(syn::Error::new(
                r.span(),
                "a #[ktstr_test] function cannot take `self`",
            ))
        }
        FnArg::Typed(t) => {
            if let Type::Reference(r) = &*t.ty {
                if let Some(m) = &r.mutability {
                    return Err(syn::Error::new(
                        m.span(),
                        "take the context by shared reference: `ctx: &TestCtx`",
                    ));
                }
            }
        }
    }
    if let ReturnType::Default = sig.output {
        return Err(syn::Error::new(
            sig.ident.span(),
            "a #[ktstr_test] function returns its spec: `-> TestSpec` (build it from `ctx.spec()`), or `-> anyhow::Result<TestSpec>`",
        ));
    }
    let mut kept = Vec::with_capacity(f.attrs.len());
    for a in f.attrs.drain(..) {
        if a.path().is_ident("test") {
            return Err(syn::Error::new(
                a.span(),
                "remove `#[test]`: #[ktstr_test] already registers the function as a test",
            ));
        }
        if a.path().is_ident("ignore") {
            attrs.ignore = true;
        } else {
            kept.push(a);
        }
    }
    f.attrs = kept;
    Ok(())
}

/// The expansion.
pub fn expand(mut f: ItemFn, a: &Attrs) -> TokenStream {
    let name = f.sig.ident.clone();
    let name_str = name.to_string();
    let user_fn = format_ident!("__ktstr_fn_{}", name);
    let spec_fn = format_ident!("__ktstr_spec_{}", name);
    let entry = format_ident!("__KTSTR_ENTRY_{}", name);
    let ctor = format_ident!("__KTSTR_CTOR_{}", name);
    f.sig.ident = user_fn.clone();
    let p = quote!(::ktstr::__private);

    let (numa, llcs, cores, threads) = (a.numa_nodes, a.llcs, a.cores, a.threads);
    let memory = opt(a.memory_mib.map(|v| quote!(#v)));
    let budget = opt(a.cpu_budget.map(|v| quote!(#v)));
    let scheduler = &a.scheduler;
    let sysctls = &a.sysctls;
    let kargs = &a.kargs;
    let includes = &a.includes;
    let duration = a.duration_s;
    let snapshots = a.num_snapshots;
    let expect_err = a.expect_err;
    let gauntlet = a.gauntlet;
    let ignore = a.ignore;
    let gates = a.perf_delta_assertions.iter().map(|g| gate(g, &p));
    let (min_n, max_n, min_l, max_l, min_c, max_c, smt) = (
        a.min_numa_nodes,
        a.max_numa_nodes,
        a.min_llcs,
        a.max_llcs,
        a.min_cpus,
        a.max_cpus,
        a.requires_smt,
    );
    let ignore_attr = if ignore { quote!(#[ignore]) } else { quote!() };
    let ret_span = match &f.sig.output {
        ReturnType::Type(_, t) => t.span(),
        ReturnType::Default => name.span(),
    };
    // Spanned on the return type, so a wrong type is reported there.
    let into_spec = quote_spanned! {ret_span=>
        #p::IntoTestSpec::into_test_spec(#user_fn(ctx))
    };

    quote! {
        #f

        #[doc(hidden)]
        fn #spec_fn(ctx: &#p::TestCtx) -> ::core::result::Result<#p::TestSpec, ::std::string::String> {
            #into_spec
        }

        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        #[#p::linkme::distributed_slice(#p::KTSTR_TESTS)]
        #[linkme(crate = #p::linkme)]
        static #entry: #p::TestEntry = #p::TestEntry {
            name: #name_str,
            module_path: ::core::module_path!(),
            file: ::core::file!(),
            line: ::core::line!(),
            func: #spec_fn,
            attrs: #p::TestAttrs {
                numa_nodes: #numa,
                llcs: #llcs,
                cores: #cores,
                threads: #threads,
                memory_mib: #memory,
                cpu_budget: #budget,
                scheduler: #scheduler,
                sysctls: &[#(#sysctls),*],
                kargs: &[#(#kargs),*],
                includes: &[#(#includes),*],
                duration_s: #duration,
                num_snapshots: #snapshots,
                expect_err: #expect_err,
                perf_delta_assertions: &[#(#gates),*],
                gauntlet: #gauntlet,
                ignore: #ignore,
                constraints: #p::Constraints {
                    min_numa_nodes: #min_n,
                    max_numa_nodes: #max_n,
                    min_llcs: #min_l,
                    max_llcs: #max_l,
                    min_cpus: #min_c,
                    max_cpus: #max_c,
                    requires_smt: #smt,
                },
            },
        };

        // Runs before main: answers nextest's `--list` / `--exact ktstr/...`.
        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        #[used]
        #[unsafe(link_section = ".init_array")]
        static #ctor: extern "C" fn() = {
            extern "C" fn ktstr_ctor() {
                #p::early_dispatch()
            }
            ktstr_ctor
        };

        #[test]
        #ignore_attr
        fn #name() {
            #p::run_libtest(&#entry)
        }
    }
}

fn opt(v: Option<TokenStream>) -> TokenStream {
    match v {
        Some(v) => quote!(::core::option::Option::Some(#v)),
        None => quote!(::core::option::Option::None),
    }
}

fn gate(g: &Gate, p: &TokenStream) -> TokenStream {
    let metric = &g.metric;
    let direction = opt(g.direction.as_deref().map(|d| match d {
        "higher_better" => quote!(#p::Polarity::HigherBetter),
        "lower_better" => quote!(#p::Polarity::LowerBetter),
        "informational" => quote!(#p::Polarity::Informational),
        _ => quote!(#p::Polarity::Unknown),
    }));
    let f = |v: Option<f64>| opt(v.map(|x| Literal::f64_suffixed(x).into_token_stream()));
    let pct = f(g.max_regression_pct);
    let min_abs = f(g.min_abs);
    let phase = opt(g.phase.map(|v| quote!(#v)));
    quote! {
        #p::PerfDeltaGate {
            metric: #metric,
            direction: #direction,
            max_regression_pct: #pct,
            min_abs: #min_abs,
            phase: #phase,
        }
    }
}
