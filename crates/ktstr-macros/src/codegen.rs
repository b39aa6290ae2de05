//! What `#[ktstr_test]` expands to, for `fn NAME(ctx: &TestCtx) -> R`:
//!
//! ```text
//! fn __ktstr_fn_NAME(ctx: &TestCtx) -> R { body }          the user's function, renamed
//! fn __ktstr_spec_NAME(ctx) -> Result<TestSpec, String>   R normalised (IntoTestSpec)
//! const __KTSTR_ATTRS_NAME: TestAttrs                     the keys given, ..TestAttrs::DEFAULT
//! const _: () = assert!(..)                               topology checks against DEFAULT
//! static __KTSTR_ENTRY_NAME: TestEntry                    in the KTSTR_TESTS slice
//! static __KTSTR_CTOR_NAME (.init_array)                  calls early_dispatch()
//! #[test] fn NAME()                                       base variant under libtest
//! ```

use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, ReturnType, Type};

use crate::attrs::{uneven_llcs, At, Attrs, Gate, MAX_VCPUS};

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
            attrs.ignore = Some(true);
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

    let attrs_const = format_ident!("__KTSTR_ATTRS_{}", name);
    let fields = attr_fields(a, &p);
    let checks = topology_checks(a, &attrs_const);
    let ignore_attr = if a.ignore == Some(true) {
        quote!(#[ignore])
    } else {
        quote!()
    };
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

        // Only the keys the user wrote; the rest are the defaults.
        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        const #attrs_const: #p::TestAttrs = #p::TestAttrs {
            #(#fields,)*
            ..#p::TestAttrs::DEFAULT
        };

        #(#checks)*

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
            attrs: #attrs_const,
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

/// `field: value` for every key given, in `TestAttrs` field order.
fn attr_fields(a: &Attrs, p: &TokenStream) -> Vec<TokenStream> {
    let mut out = Vec::new();
    let mut field = |name: &str, value: TokenStream| {
        let name = format_ident!("{}", name);
        out.push(quote!(#name: #value));
    };
    let dims = [
        ("numa_nodes", a.numa_nodes),
        ("llcs", a.llcs),
        ("cores", a.cores),
        ("threads", a.threads),
    ];
    for (name, v) in dims {
        if let Some(v) = v {
            let v = v.value;
            field(name, quote!(#v));
        }
    }
    if let Some(v) = a.memory_mib {
        field("memory_mib", quote!(::core::option::Option::Some(#v)));
    }
    if let Some(v) = a.cpu_budget {
        field("cpu_budget", quote!(::core::option::Option::Some(#v)));
    }
    if let Some(v) = &a.scheduler {
        field("scheduler", quote!(#v));
    }
    for (name, list) in [
        ("sysctls", &a.sysctls),
        ("kargs", &a.kargs),
        ("includes", &a.includes),
    ] {
        if let Some(list) = list {
            field(name, quote!(&[#(#list),*]));
        }
    }
    if let Some(v) = a.duration_s {
        field("duration_s", quote!(#v));
    }
    if let Some(v) = a.num_snapshots {
        field("num_snapshots", quote!(#v));
    }
    if let Some(v) = a.expect_err {
        field("expect_err", quote!(#v));
    }
    if let Some(gates) = &a.perf_delta_assertions {
        let gates = gates.iter().map(|g| gate(g, p));
        field("perf_delta_assertions", quote!(&[#(#gates),*]));
    }
    if let Some(v) = a.gauntlet {
        field("gauntlet", quote!(#v));
    }
    if let Some(v) = a.ignore {
        field("ignore", quote!(#v));
    }
    if let Some(v) = a.host_only {
        field("host_only", quote!(#v));
    }
    let mut bounds: Vec<TokenStream> = a
        .constraints
        .iter()
        .map(|(name, v)| {
            let name = format_ident!("{}", name);
            quote!(#name: #v)
        })
        .collect();
    if let Some(v) = a.requires_smt {
        bounds.push(quote!(requires_smt: #v));
    }
    if !bounds.is_empty() {
        field(
            "constraints",
            quote!(#p::Constraints {
                #(#bounds,)*
                ..#p::TestAttrs::DEFAULT.constraints
            }),
        );
    }
    out
}

/// The cross-field topology checks the macro cannot do itself because a dimension was
/// left out (its default lives in `TestAttrs::DEFAULT`): const assertions on the merged
/// attributes, spanned on a dimension the user gave so the error points there. With
/// every dimension given the macro has already checked; with none given the defaults
/// are known good (a `ktstr` unit test checks them).
fn topology_checks(a: &Attrs, attrs: &syn::Ident) -> Vec<TokenStream> {
    let mut out = Vec::new();
    let given = |key: &str, d: At<u32>| format!("`{key} = {}`", d.value);
    let (msg, at) = match (a.numa_nodes, a.llcs) {
        (Some(n), None) => (
            uneven_llcs("the default `llcs`", &given("numa_nodes", n)),
            Some(n),
        ),
        (None, Some(l)) => (
            uneven_llcs(&given("llcs", l), "the default `numa_nodes`"),
            Some(l),
        ),
        _ => (String::new(), None),
    };
    if let Some(at) = at {
        out.push(quote_spanned! {at.span=>
            const _: () = ::core::assert!(#attrs.llcs.is_multiple_of(#attrs.numa_nodes), #msg);
        });
    }
    let dims = [a.llcs, a.cores, a.threads];
    let n_given = dims.iter().flatten().count();
    if n_given > 0 && n_given < dims.len() {
        let at = dims.iter().flatten().next().copied().expect("one is given");
        let msg = format!(
            "llcs * cores * threads (with the defaults of the dimensions left out) is more than {MAX_VCPUS} vCPUs, the most supported"
        );
        out.push(quote_spanned! {at.span=>
            const _: () = ::core::assert!(
                (#attrs.llcs as u64) * (#attrs.cores as u64) * (#attrs.threads as u64)
                    <= #MAX_VCPUS,
                #msg
            );
        });
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(src: &str) -> Attrs {
        Attrs::from_args(syn::parse_str(src).unwrap()).unwrap()
    }

    fn fields(src: &str) -> Vec<String> {
        attr_fields(&attrs(src), &quote!(p))
            .iter()
            .map(|t| t.to_string())
            .collect()
    }

    #[test]
    fn only_given_keys_are_written() {
        // Everything else comes from `..TestAttrs::DEFAULT`.
        assert!(fields("").is_empty());
        assert_eq!(
            fields("cores = 4, expect_err"),
            ["cores : 4u32", "expect_err : true"]
        );
        let f = fields("gauntlet, max_cpus = 8");
        assert_eq!(f[0], "gauntlet : true");
        assert!(f[1].contains("max_cpus : 8u32 , .. p :: TestAttrs :: DEFAULT . constraints"));
    }

    #[test]
    fn topology_is_checked_against_the_defaults_only_when_a_dimension_is_left_out() {
        let n = |src: &str| topology_checks(&attrs(src), &format_ident!("A")).len();
        assert_eq!(n(""), 0);
        assert_eq!(n("numa_nodes = 1, llcs = 2, cores = 2, threads = 1"), 0);
        assert_eq!(n("numa_nodes = 2"), 1);
        assert_eq!(n("cores = 4"), 1);
        assert_eq!(n("llcs = 2, numa_nodes = 2"), 1);
        assert_eq!(n("llcs = 2"), 2);
    }
}
