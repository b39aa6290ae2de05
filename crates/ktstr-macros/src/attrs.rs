//! Parsing and checking `#[ktstr_test(...)]` arguments. Every impossible value is an
//! error spanned on the key or value at fault, so the compiler points at it.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Ident, Lit, Token, UnOp};

/// Every accepted key, in the order the docs list them.
pub const KEYS: &[&str] = &[
    "numa_nodes",
    "llcs",
    "cores",
    "threads",
    "memory_mib",
    "cpu_budget",
    "scheduler",
    "sysctls",
    "kargs",
    "includes",
    "duration_s",
    "num_snapshots",
    "expect_err",
    "perf_delta_assertions",
    "gauntlet",
    "ignore",
    "host_only",
    "min_numa_nodes",
    "max_numa_nodes",
    "min_llcs",
    "max_llcs",
    "min_cpus",
    "max_cpus",
    "requires_smt",
];

/// Constraint keys: they only filter gauntlet presets.
const CONSTRAINT_KEYS: &[&str] = &[
    "min_numa_nodes",
    "max_numa_nodes",
    "min_llcs",
    "max_llcs",
    "min_cpus",
    "max_cpus",
    "requires_smt",
];

/// Smallest `memory_mib` a guest boots with.
pub const MIN_MEMORY_MIB: u64 = 256;
/// Largest vCPU count (the VMM's limit).
pub const MAX_VCPUS: u64 = 1024;

/// `key` or `key = value`.
pub struct Arg {
    pub key: Ident,
    pub value: Option<Expr>,
}

impl Parse for Arg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let key: Ident = input.parse()?;
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            Some(input.parse()?)
        } else {
            None
        };
        Ok(Arg { key, value })
    }
}

/// The argument list.
pub struct Args(pub Punctuated<Arg, Token![,]>);

impl Parse for Args {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        Ok(Args(Punctuated::parse_terminated(input)?))
    }
}

/// A value with the span to blame.
#[derive(Debug, Clone, Copy)]
pub struct At<T> {
    pub value: T,
    pub span: Span,
}

/// A `perf_delta_assertions` element.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    pub metric: String,
    /// `higher_better`, `lower_better`, `informational` or `unknown`.
    pub direction: Option<String>,
    pub max_regression_pct: Option<f64>,
    pub min_abs: Option<f64>,
    pub phase: Option<u16>,
}

/// The checked attributes: `None` (or an empty list of bounds) for every key the user
/// left out. Defaults are not known here: the expansion fills the keys left out from
/// `TestAttrs::DEFAULT` (in `ktstr`), the one place they are defined.
#[derive(Debug, Clone, Default)]
pub struct Attrs {
    pub numa_nodes: Option<At<u32>>,
    pub llcs: Option<At<u32>>,
    pub cores: Option<At<u32>>,
    pub threads: Option<At<u32>>,
    pub memory_mib: Option<u64>,
    pub cpu_budget: Option<u32>,
    pub scheduler: Option<String>,
    pub sysctls: Option<Vec<String>>,
    pub kargs: Option<Vec<String>>,
    pub includes: Option<Vec<String>>,
    pub duration_s: Option<u64>,
    pub num_snapshots: Option<u32>,
    pub expect_err: Option<bool>,
    pub perf_delta_assertions: Option<Vec<Gate>>,
    pub gauntlet: Option<bool>,
    pub ignore: Option<bool>,
    pub host_only: Option<bool>,
    /// Preset constraints given (`min_llcs`, ...), with their values.
    pub constraints: Vec<(&'static str, u32)>,
    pub requires_smt: Option<bool>,
}

/// Collects errors so one compile shows all of them.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }
    fn at(&mut self, span: Span, msg: impl std::fmt::Display) {
        self.push(syn::Error::new(span, msg));
    }
    fn finish<T>(self, ok: T) -> syn::Result<T> {
        match self.0 {
            Some(e) => Err(e),
            None => Ok(ok),
        }
    }
}

impl Attrs {
    /// Parse and check the arguments.
    pub fn from_args(args: Args) -> syn::Result<Attrs> {
        let mut a = Attrs::default();
        let mut errs = Errors::default();
        let mut seen: Vec<Ident> = Vec::new();
        let mut bounds: Vec<(&'static str, At<u32>)> = Vec::new();
        let mut constraint_keys: Vec<Ident> = Vec::new();

        for arg in args.0 {
            let key = arg.key.to_string();
            if let Some(prev) = seen.iter().find(|k| **k == arg.key) {
                let mut e = syn::Error::new(arg.key.span(), format!("duplicate attribute `{key}`"));
                e.combine(syn::Error::new(
                    prev.span(),
                    format!("`{key}` first set here"),
                ));
                errs.push(e);
                continue;
            }
            seen.push(arg.key.clone());
            if CONSTRAINT_KEYS.contains(&key.as_str()) {
                constraint_keys.push(arg.key.clone());
            }
            if let Err(e) = set_key(&mut a, &arg, &key, &mut bounds) {
                errs.push(e);
            }
        }
        check_constraints(&mut a, &bounds, &constraint_keys, &mut errs);
        check_topology(&a, &mut errs);
        errs.finish(a)
    }
}

/// Reads one attribute into `a` (constraint bounds into `bounds`), checking its value.
fn set_key(
    a: &mut Attrs,
    arg: &Arg,
    key: &str,
    bounds: &mut Vec<(&'static str, At<u32>)>,
) -> syn::Result<()> {
    match key {
        "numa_nodes" | "llcs" | "cores" | "threads" => {
            let v = u32_value(arg)?;
            if v.value == 0 {
                return Err(syn::Error::new(
                    v.span,
                    format!("`{key}` must be at least 1: a topology has no empty dimension"),
                ));
            }
            *match key {
                "numa_nodes" => &mut a.numa_nodes,
                "llcs" => &mut a.llcs,
                "cores" => &mut a.cores,
                _ => &mut a.threads,
            } = Some(v);
        }
        "memory_mib" => {
            let v = int_value::<u64>(arg)?;
            if v.value < MIN_MEMORY_MIB {
                return Err(syn::Error::new(
                    v.span,
                    format!(
                        "`memory_mib = {}` is below the {MIN_MEMORY_MIB} MiB a guest needs",
                        v.value
                    ),
                ));
            }
            a.memory_mib = Some(v.value);
        }
        "cpu_budget" => {
            let v = u32_value(arg)?;
            if v.value == 0 {
                return Err(syn::Error::new(
                    v.span,
                    "`cpu_budget` must be at least 1 host CPU",
                ));
            }
            a.cpu_budget = Some(v.value);
        }
        "scheduler" => {
            let v = str_value(arg)?;
            if v.value.trim().is_empty() {
                return Err(syn::Error::new(
                        v.span,
                        "`scheduler` is empty; leave it out (or write \"eevdf\") for the kernel's own scheduler",
                    ));
            }
            a.scheduler = Some(v.value);
        }
        "sysctls" | "kargs" | "includes" => set_list_key(a, arg, key)?,
        "duration_s" => {
            let v = int_value::<u64>(arg)?;
            if v.value == 0 {
                return Err(syn::Error::new(v.span, "`duration_s` must be at least 1"));
            }
            a.duration_s = Some(v.value);
        }
        "num_snapshots" => a.num_snapshots = Some(u32_value(arg)?.value),
        "expect_err" => a.expect_err = Some(bool_value(arg)?),
        "gauntlet" => a.gauntlet = Some(bool_value(arg)?),
        "ignore" => a.ignore = Some(bool_value(arg)?),
        "host_only" => a.host_only = Some(bool_value(arg)?),
        "requires_smt" => a.requires_smt = Some(bool_value(arg)?),
        "perf_delta_assertions" => a.perf_delta_assertions = Some(gates(arg)?),
        "min_numa_nodes" | "max_numa_nodes" | "min_llcs" | "max_llcs" | "min_cpus" | "max_cpus" => {
            let v = u32_value(arg)?;
            if v.value == 0 {
                return Err(syn::Error::new(
                    v.span,
                    format!("`{key}` must be at least 1"),
                ));
            }
            let name = CONSTRAINT_KEYS
                .iter()
                .find(|k| **k == key)
                .expect("listed above");
            bounds.push((name, v));
        }
        _ => return Err(unknown_key(&arg.key)),
    }
    Ok(())
}

/// The list attributes: sysctls, kargs and includes, each element checked.
fn set_list_key(a: &mut Attrs, arg: &Arg, key: &str) -> syn::Result<()> {
    match key {
        "sysctls" => {
            let sysctls = a.sysctls.insert(Vec::new());
            for s in str_list(arg)? {
                let kv = s.value.strip_prefix("sysctl.").unwrap_or(&s.value);
                if kv.split_once('=').is_none_or(|(k, _)| k.trim().is_empty()) {
                    return Err(syn::Error::new(
                            s.span,
                            format!("sysctl `{}` is not `key=value` (e.g. \"kernel.sched_autogroup_enabled=0\")", s.value),
                        ));
                }
                sysctls.push(s.value);
            }
        }
        "kargs" => {
            let kargs = a.kargs.insert(Vec::new());
            for s in str_list(arg)? {
                if s.value.is_empty() || s.value.contains(char::is_whitespace) {
                    return Err(syn::Error::new(
                            s.span,
                            "each karg is one non-empty argument without spaces: write [\"a=1\", \"b\"]",
                        ));
                }
                kargs.push(s.value);
            }
        }
        "includes" => {
            let includes = a.includes.insert(Vec::new());
            for s in str_list(arg)? {
                if s.value.is_empty() {
                    return Err(syn::Error::new(
                        s.span,
                        "an include is a host path, not an empty string",
                    ));
                }
                includes.push(s.value);
            }
        }
        _ => unreachable!("only list keys come here"),
    }
    Ok(())
}

/// Gauntlet constraints: min <= max per dimension, and only with `gauntlet`.
fn check_constraints(
    a: &mut Attrs,
    bounds: &[(&'static str, At<u32>)],
    constraint_keys: &[Ident],
    errs: &mut Errors,
) {
    a.constraints = bounds.iter().map(|(name, v)| (*name, v.value)).collect();
    for dim in ["numa_nodes", "llcs", "cpus"] {
        let find = |k: String| bounds.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        if let (Some(lo), Some(hi)) = (find(format!("min_{dim}")), find(format!("max_{dim}"))) {
            if lo.value > hi.value {
                errs.at(
                    lo.span,
                    format!(
                        "`min_{dim} = {}` is larger than `max_{dim} = {}`: no preset can fit",
                        lo.value, hi.value
                    ),
                );
            }
        }
    }
    // A flag left out is off.
    if a.gauntlet != Some(true) {
        for k in constraint_keys {
            errs.at(
                k.span(),
                format!("`{k}` only narrows gauntlet presets; add `gauntlet` or remove it"),
            );
        }
    }
}

/// Cross-field topology checks, when every dimension involved was given; with a
/// dimension left out the expansion checks the same against `TestAttrs::DEFAULT`
/// (see `codegen::topology_checks`).
fn check_topology(a: &Attrs, errs: &mut Errors) {
    if let (Some(n), Some(l)) = (a.numa_nodes, a.llcs) {
        if !l.value.is_multiple_of(n.value) {
            errs.at(
                l.span,
                uneven_llcs(
                    &format!("`llcs = {}`", l.value),
                    &format!("`numa_nodes = {}`", n.value),
                ),
            );
        }
    }
    if let (Some(l), Some(c), Some(t)) = (a.llcs, a.cores, a.threads) {
        let vcpus = u64::from(l.value) * u64::from(c.value) * u64::from(t.value);
        if vcpus > MAX_VCPUS {
            errs.at(
                l.span,
                format!(
                    "llcs * cores * threads = {vcpus} vCPUs; at most {MAX_VCPUS} are supported"
                ),
            );
        }
    }
}

/// The error for llcs not a multiple of numa_nodes; each is "`key = N`" or "the default
/// `key`".
pub fn uneven_llcs(llcs: &str, numa_nodes: &str) -> String {
    format!(
        "{llcs} cannot be spread evenly over {numa_nodes}: llcs must be a multiple of numa_nodes"
    )
}

fn unknown_key(key: &Ident) -> syn::Error {
    let k = key.to_string();
    let near = KEYS
        .iter()
        .map(|c| (edit_distance(&k, c), *c))
        .filter(|(d, _)| *d <= 2)
        .min();
    let hint = match near {
        Some((_, c)) => format!("did you mean `{c}`? "),
        None => String::new(),
    };
    syn::Error::new(
        key.span(),
        format!(
            "unknown attribute `{k}`; {hint}#[ktstr_test] accepts: {}",
            KEYS.join(", ")
        ),
    )
}

/// Levenshtein distance (for "did you mean").
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(cur)
            };
            prev = cur;
        }
    }
    row[b.len()]
}

fn need_value(arg: &Arg, what: &str) -> syn::Result<Expr> {
    arg.value.clone().ok_or_else(|| {
        syn::Error::new(
            arg.key.span(),
            format!("`{}` needs a value: `{} = {what}`", arg.key, arg.key),
        )
    })
}

fn int_value<T>(arg: &Arg) -> syn::Result<At<T>>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let e = need_value(arg, "N")?;
    match &e {
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => Ok(At {
            value: i.base10_parse::<T>()?,
            span: i.span(),
        }),
        Expr::Unary(u) if matches!(u.op, UnOp::Neg(_)) => Err(syn::Error::new(
            e.span(),
            format!("`{}` cannot be negative", arg.key),
        )),
        _ => Err(syn::Error::new(
            e.span(),
            format!("`{}` takes an integer literal", arg.key),
        )),
    }
}

fn u32_value(arg: &Arg) -> syn::Result<At<u32>> {
    int_value::<u32>(arg)
}

fn str_of(e: &Expr, what: &str) -> syn::Result<At<String>> {
    match e {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(At {
            value: s.value(),
            span: s.span(),
        }),
        _ => Err(syn::Error::new(
            e.span(),
            format!("{what} must be a string literal"),
        )),
    }
}

fn str_value(arg: &Arg) -> syn::Result<At<String>> {
    let e = need_value(arg, "\"...\"")?;
    str_of(&e, &format!("`{}`", arg.key))
}

fn str_list(arg: &Arg) -> syn::Result<Vec<At<String>>> {
    let e = need_value(arg, "[\"...\", ...]")?;
    match &e {
        Expr::Array(arr) => arr
            .elems
            .iter()
            .map(|el| str_of(el, &format!("each element of `{}`", arg.key)))
            .collect(),
        _ => Err(syn::Error::new(
            e.span(),
            format!(
                "`{}` takes a list of strings: `{} = [\"...\", ...]`",
                arg.key, arg.key
            ),
        )),
    }
}

fn bool_value(arg: &Arg) -> syn::Result<bool> {
    match &arg.value {
        None => Ok(true),
        Some(Expr::Lit(ExprLit {
            lit: Lit::Bool(b), ..
        })) => Ok(b.value),
        Some(e) => Err(syn::Error::new(
            e.span(),
            format!(
                "`{}` is a flag: write `{}` or `{} = false`",
                arg.key, arg.key, arg.key
            ),
        )),
    }
}

fn f64_of(e: &Expr, what: &str) -> syn::Result<f64> {
    let bad = || syn::Error::new(e.span(), format!("`{what}` takes a non-negative number"));
    match e {
        Expr::Lit(ExprLit {
            lit: Lit::Float(f), ..
        }) => f.base10_parse::<f64>(),
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => i.base10_parse::<f64>(),
        _ => Err(bad()),
    }
}

const DIRECTIONS: &[&str] = &["higher_better", "lower_better", "informational", "unknown"];

fn gates(arg: &Arg) -> syn::Result<Vec<Gate>> {
    let e = need_value(
        arg,
        "[\"metric\", (metric = \"...\", max_regression_pct = 10.0), ...]",
    )?;
    let Expr::Array(arr) = &e else {
        return Err(syn::Error::new(
            e.span(),
            "`perf_delta_assertions` takes a list: [\"metric\", (metric = \"...\", max_regression_pct = 10.0)]",
        ));
    };
    arr.elems.iter().map(gate).collect()
}

fn gate(e: &Expr) -> syn::Result<Gate> {
    let fields: Vec<&Expr> = match e {
        Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => {
            return if s.value().trim().is_empty() {
                Err(syn::Error::new(s.span(), "a gate's metric name cannot be empty"))
            } else {
                Ok(Gate {
                    metric: s.value(),
                    direction: None,
                    max_regression_pct: None,
                    min_abs: None,
                    phase: None,
                })
            };
        }
        Expr::Paren(p) => vec![&*p.expr],
        Expr::Tuple(t) => t.elems.iter().collect(),
        _ => {
            return Err(syn::Error::new(
                e.span(),
                "a gate is \"metric\" or (metric = \"...\", direction = \"lower_better\", max_regression_pct = 10.0, min_abs = 1.0, phase = 1)",
            ))
        }
    };
    let mut g = Gate {
        metric: String::new(),
        direction: None,
        max_regression_pct: None,
        min_abs: None,
        phase: None,
    };
    let mut metric_seen = false;
    for f in fields {
        let Expr::Assign(asg) = f else {
            return Err(syn::Error::new(f.span(), "expected `field = value`"));
        };
        let key = match &*asg.left {
            Expr::Path(p) if p.path.get_ident().is_some() => {
                p.path.get_ident().expect("checked").to_string()
            }
            other => return Err(syn::Error::new(other.span(), "expected a field name")),
        };
        let v = &*asg.right;
        match key.as_str() {
            "metric" => {
                let s = str_of(v, "`metric`")?;
                if s.value.trim().is_empty() {
                    return Err(syn::Error::new(s.span, "a gate's metric name cannot be empty"));
                }
                g.metric = s.value;
                metric_seen = true;
            }
            "direction" => {
                let s = str_of(v, "`direction`")?;
                if !DIRECTIONS.contains(&s.value.as_str()) {
                    return Err(syn::Error::new(
                        s.span,
                        format!("unknown direction `{}`; expected one of: {}", s.value, DIRECTIONS.join(", ")),
                    ));
                }
                g.direction = Some(s.value);
            }
            "max_regression_pct" => g.max_regression_pct = Some(f64_of(v, "max_regression_pct")?),
            "min_abs" => g.min_abs = Some(f64_of(v, "min_abs")?),
            "phase" => {
                let Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) = v else {
                    return Err(syn::Error::new(v.span(), "`phase` takes an integer (0 = baseline, k = step k)"));
                };
                g.phase = Some(i.base10_parse::<u16>()?);
            }
            other => {
                return Err(syn::Error::new(
                    asg.left.span(),
                    format!("unknown gate field `{other}`; expected metric, direction, max_regression_pct, min_abs, phase"),
                ))
            }
        }
    }
    if !metric_seen {
        return Err(syn::Error::new(e.span(), "a gate needs `metric = \"...\"`"));
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cargo ktstr describe` (in `ktstr`, which this crate cannot link) describes every
    /// key this parser accepts, and no other.
    #[test]
    fn describe_lists_every_key() {
        let src = include_str!("../../ktstr/src/describe.rs");
        let body = src
            .split("fn attributes() -> Vec<Item> {")
            .nth(1)
            .and_then(|b| b.split("#[cfg(test)]").next())
            .expect("ktstr's describe.rs has fn attributes()");
        for key in KEYS {
            assert!(
                body.contains(&format!("\"{key}\",")),
                "`{key}` is not described in ktstr/src/describe.rs"
            );
        }
        let described = body.matches("        a(").count();
        assert_eq!(
            described,
            KEYS.len(),
            "describe lists a key the macro refuses"
        );
    }

    fn parse(src: &str) -> syn::Result<Attrs> {
        Attrs::from_args(syn::parse_str::<Args>(src)?)
    }

    fn err(src: &str) -> String {
        match parse(src) {
            Ok(_) => panic!("`{src}` parsed"),
            Err(e) => e
                .into_iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(" | "),
        }
    }

    fn dims(a: &Attrs) -> [Option<u32>; 4] {
        [a.numa_nodes, a.llcs, a.cores, a.threads].map(|d| d.map(|d| d.value))
    }

    #[test]
    fn keys_left_out_stay_unset() {
        // The expansion fills them from `TestAttrs::DEFAULT`.
        let a = parse("").unwrap();
        assert_eq!(dims(&a), [None; 4]);
        assert!(a.scheduler.is_none() && a.duration_s.is_none() && a.sysctls.is_none());
        assert!(a.gauntlet.is_none() && a.expect_err.is_none() && a.ignore.is_none());
        assert!(a.constraints.is_empty() && a.requires_smt.is_none());
        let a = parse("cores = 4, gauntlet, max_llcs = 2").unwrap();
        assert_eq!(dims(&a), [None, None, Some(4), None]);
        assert_eq!(a.gauntlet, Some(true));
        assert_eq!(a.constraints, [("max_llcs", 2)]);
    }

    #[test]
    fn every_key_parses() {
        let a = parse(
            r#"numa_nodes = 2, llcs = 4, cores = 2, threads = 2, memory_mib = 2048, cpu_budget = 2,
               scheduler = "scx_bpfland", sysctls = ["kernel.x=1"], kargs = ["nosmt"],
               includes = ["/bin/true"], duration_s = 3, num_snapshots = 2, expect_err,
               perf_delta_assertions = ["worst_gap_ms", (metric = "total_iterations", direction = "higher_better", max_regression_pct = 5, min_abs = 0.5, phase = 1)],
               gauntlet, ignore = false, min_numa_nodes = 1, max_numa_nodes = 2, min_llcs = 1,
               max_llcs = 8, min_cpus = 2, max_cpus = 32, requires_smt"#,
        )
        .unwrap();
        assert_eq!(dims(&a), [Some(2), Some(4), Some(2), Some(2)]);
        assert_eq!(a.memory_mib, Some(2048));
        assert_eq!(a.cpu_budget, Some(2));
        assert_eq!(a.sysctls.as_deref(), Some(&["kernel.x=1".to_string()][..]));
        assert_eq!(
            (a.expect_err, a.gauntlet, a.ignore, a.requires_smt),
            (Some(true), Some(true), Some(false), Some(true))
        );
        let gates = a.perf_delta_assertions.as_deref().unwrap();
        assert_eq!(gates.len(), 2);
        let g = &gates[1];
        assert_eq!(g.metric, "total_iterations");
        assert_eq!(g.direction.as_deref(), Some("higher_better"));
        assert_eq!(g.max_regression_pct, Some(5.0));
        assert_eq!(g.min_abs, Some(0.5));
        assert_eq!(g.phase, Some(1));
        assert_eq!(
            a.constraints,
            [
                ("min_numa_nodes", 1),
                ("max_numa_nodes", 2),
                ("min_llcs", 1),
                ("max_llcs", 8),
                ("min_cpus", 2),
                ("max_cpus", 32)
            ]
        );
    }

    #[test]
    fn impossible_topologies_are_errors() {
        assert!(err("llcs = 0").contains("`llcs` must be at least 1"));
        assert!(err("threads = 0").contains("`threads` must be at least 1"));
        assert!(err("numa_nodes = 2, llcs = 3")
            .contains("`llcs = 3` cannot be spread evenly over `numa_nodes = 2`"));
        // With a dimension left out, the expansion checks against the defaults
        // (tests/compile_fail/uneven_llcs.rs).
        assert!(parse("numa_nodes = 2").is_ok());
        assert!(err("llcs = 32, cores = 32, threads = 2").contains("2048 vCPUs"));
        assert!(err("cores = -1").contains("cannot be negative"));
        assert!(err("cores = 4294967296").contains("number too large"));
    }

    #[test]
    fn bad_keys_and_values_are_errors() {
        let e = err("core = 2");
        assert!(
            e.contains("unknown attribute `core`; did you mean `cores`?"),
            "{e}"
        );
        assert!(err("frobnicate").contains("#[ktstr_test] accepts: numa_nodes"));
        assert!(err("llcs = 2, llcs = 4").contains("duplicate attribute `llcs`"));
        assert!(err("memory_mib = 128").contains("below the 256 MiB"));
        assert!(err("cpu_budget = 0").contains("at least 1 host CPU"));
        assert!(err("duration_s = 0").contains("`duration_s` must be at least 1"));
        assert!(err("scheduler = \"\"").contains("`scheduler` is empty"));
        assert!(err("scheduler = 3").contains("must be a string literal"));
        assert!(err("sysctls = [\"novalue\"]").contains("is not `key=value`"));
        assert!(err("sysctls = \"a=1\"").contains("takes a list of strings"));
        assert!(err("kargs = [\"two words\"]").contains("one non-empty argument"));
        assert!(err("gauntlet = 1").contains("is a flag"));
        assert!(err("llcs").contains("`llcs` needs a value"));
        assert!(err("perf_delta_assertions = [(direction = \"up\")]")
            .contains("unknown direction `up`"));
        assert!(
            err("perf_delta_assertions = [(max_regression_pct = 1.0)]").contains("needs `metric")
        );
        assert!(err("perf_delta_assertions = [(metric = \"m\", bogus = 1)]")
            .contains("unknown gate field `bogus`"));
    }

    #[test]
    fn constraints_need_gauntlet_and_sane_bounds() {
        assert!(err("max_cpus = 8").contains("only narrows gauntlet presets"));
        assert!(err("gauntlet, min_llcs = 4, max_llcs = 2")
            .contains("`min_llcs = 4` is larger than `max_llcs = 2`"));
        assert!(err("gauntlet, max_cpus = 0").contains("`max_cpus` must be at least 1"));
        assert!(parse("gauntlet, min_cpus = 4, max_cpus = 4").is_ok());
    }

    #[test]
    fn several_errors_are_reported_together() {
        let e = err("llcs = 0, cores = 0, bogus = 1");
        assert_eq!(e.matches(" | ").count(), 2, "{e}");
    }

    #[test]
    fn edit_distance_is_levenshtein() {
        assert_eq!(edit_distance("core", "cores"), 1);
        assert_eq!(edit_distance("lcs", "llcs"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
