//! The registration record of one `#[ktstr_test]` function and the distributed slice
//! that collects them. The macro writes a `static TestEntry` into [`KTSTR_TESTS`]; the
//! linker gathers every entry of the test binary into one array, so no harness file or
//! runtime registration is needed (the slice is readable even before `main`).

use std::path::Path;

use ktstr_sidecar::{PerfDeltaAssertionRecord, Polarity};
use ktstr_topology::Topology;

use super::spec::{TestCtx, TestSpec};

/// Every `#[ktstr_test]` of this binary.
#[linkme::distributed_slice]
pub static KTSTR_TESTS: [TestEntry];

/// One registered test. Built by `#[ktstr_test]`; the fields mirror its attributes.
#[derive(Debug)]
pub struct TestEntry {
    /// The function's name: the test's name in sidecars and in `ktstr/{name}`.
    pub name: &'static str,
    /// `module_path!()` where the function is declared.
    pub module_path: &'static str,
    /// Source file and line of the function, for error messages.
    pub file: &'static str,
    pub line: u32,
    /// Builds the test's spec (the annotated function, its result normalised).
    pub func: fn(&TestCtx) -> Result<TestSpec, String>,
    pub attrs: TestAttrs,
}

/// The attributes of `#[ktstr_test(...)]`, already checked by the macro. The macro writes
/// only the keys given and takes the rest from [`TestAttrs::DEFAULT`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestAttrs {
    pub numa_nodes: u32,
    pub llcs: u32,
    /// Cores per LLC.
    pub cores: u32,
    /// Threads per core.
    pub threads: u32,
    /// Guest memory; `None`: [`default_memory_mib`] of the topology.
    pub memory_mib: Option<u64>,
    /// Host CPUs for the vCPUs; `None`: min(vCPUs, host CPUs).
    pub cpu_budget: Option<u32>,
    /// `eevdf` or a sched_ext scheduler's name or path.
    pub scheduler: &'static str,
    /// `key=value` (or `sysctl.key=value`).
    pub sysctls: &'static [&'static str],
    pub kargs: &'static [&'static str],
    /// Host files packed into the guest under `/bin/<name>`.
    pub includes: &'static [&'static str],
    pub duration_s: u64,
    pub num_snapshots: u32,
    pub expect_err: bool,
    pub perf_delta_assertions: &'static [PerfDeltaGate],
    /// Also register one `gauntlet/{name}/{preset}` variant per fitting preset.
    pub gauntlet: bool,
    /// The base variant is ignored (run with `--run-ignored`).
    pub ignore: bool,
    /// No VM: the test's checks run on the host (kernel and engine are not needed).
    pub host_only: bool,
    /// Which presets a gauntlet test accepts.
    pub constraints: Constraints,
}

/// Attribute defaults (what `#[ktstr_test]` with no arguments means).
impl Default for TestAttrs {
    fn default() -> Self {
        TestAttrs::DEFAULT
    }
}

impl TestAttrs {
    /// The defaults: 1 NUMA node, 1 LLC, 2 cores, 1 thread, EEVDF, 10 s. The only place
    /// they are defined: `#[ktstr_test]` fills every key left out from here.
    pub const DEFAULT: TestAttrs = TestAttrs {
        numa_nodes: 1,
        llcs: 1,
        cores: 2,
        threads: 1,
        memory_mib: None,
        cpu_budget: None,
        scheduler: "eevdf",
        sysctls: &[],
        kargs: &[],
        includes: &[],
        duration_s: 10,
        num_snapshots: 0,
        expect_err: false,
        perf_delta_assertions: &[],
        gauntlet: false,
        ignore: false,
        host_only: false,
        constraints: Constraints::ANY,
    };

    /// The declared (base) topology. The macro rejects impossible shapes at compile time,
    /// so this only fails for an entry written by hand.
    pub fn topology(&self) -> Result<Topology, ktstr_topology::TopologyError> {
        Topology::new(self.numa_nodes, self.llcs, self.cores, self.threads)
    }
}

/// Guest memory when a test does not set `memory_mib`: 64 MiB per vCPU, at least 512.
pub fn default_memory_mib(topology: &Topology) -> u64 {
    (64 * u64::from(topology.vcpus())).max(512)
}

/// Which topology presets a gauntlet test runs on. Bounds are inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Constraints {
    pub min_numa_nodes: u32,
    pub max_numa_nodes: u32,
    pub min_llcs: u32,
    pub max_llcs: u32,
    pub min_cpus: u32,
    pub max_cpus: u32,
    /// Only presets with more than one thread per core.
    pub requires_smt: bool,
}

impl Constraints {
    /// No constraint: every preset fits.
    pub const ANY: Constraints = Constraints {
        min_numa_nodes: 1,
        max_numa_nodes: u32::MAX,
        min_llcs: 1,
        max_llcs: u32::MAX,
        min_cpus: 1,
        max_cpus: u32::MAX,
        requires_smt: false,
    };

    /// Whether `t` satisfies every bound.
    pub fn admits(&self, t: &Topology) -> bool {
        let within = |v: u32, lo: u32, hi: u32| lo <= v && v <= hi;
        within(t.numa_nodes(), self.min_numa_nodes, self.max_numa_nodes)
            && within(t.llcs(), self.min_llcs, self.max_llcs)
            && within(t.vcpus(), self.min_cpus, self.max_cpus)
            && (!self.requires_smt || t.threads_per_core() > 1)
    }
}

/// A `perf_delta_assertions` element, in static form.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerfDeltaGate {
    pub metric: &'static str,
    pub direction: Option<Polarity>,
    pub max_regression_pct: Option<f64>,
    pub min_abs: Option<f64>,
    pub phase: Option<u16>,
}

impl PerfDeltaGate {
    /// The record written into the sidecar.
    pub fn record(&self) -> PerfDeltaAssertionRecord {
        PerfDeltaAssertionRecord {
            metric: self.metric.to_string(),
            direction: self.direction,
            max_regression_pct: self.max_regression_pct,
            min_abs: self.min_abs,
            phase: self.phase,
        }
    }
}

impl TestEntry {
    /// The name libtest gives the `#[test]` wrapper the macro emits beside the entry:
    /// the module path without the crate name, then the function name.
    pub fn libtest_name(&self) -> String {
        match self.module_path.split_once("::") {
            Some((_, rest)) => format!("{rest}::{}", self.name),
            None => self.name.to_string(),
        }
    }

    /// `file:line` of the declaration.
    pub fn location(&self) -> String {
        let file = Path::new(self.file);
        format!("{}:{}", file.display(), self.line)
    }
}

/// All registered tests, sorted by name.
pub fn registered() -> Vec<&'static TestEntry> {
    let mut v: Vec<&'static TestEntry> = KTSTR_TESTS.iter().collect();
    v.sort_by(|a, b| a.name.cmp(b.name).then(a.module_path.cmp(b.module_path)));
    v
}

/// Two functions of one binary registered under the same name (in different modules).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "two #[ktstr_test] functions are named `{name}` ({first} and {second}); test names \
     must be unique within a test binary because they name the sidecar: rename one"
)]
pub struct DuplicateName {
    pub name: String,
    pub first: String,
    pub second: String,
}

/// Checks that names are unique; `entries` sorted by name.
pub fn check_unique(entries: &[&TestEntry]) -> Result<(), DuplicateName> {
    for pair in entries.windows(2) {
        if pair[0].name == pair[1].name {
            return Err(DuplicateName {
                name: pair[0].name.to_string(),
                first: pair[0].location(),
                second: pair[1].location(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &'static str, module_path: &'static str) -> TestEntry {
        TestEntry {
            name,
            module_path,
            file: "tests/x.rs",
            line: 3,
            func: |ctx| Ok(ctx.spec()),
            attrs: TestAttrs::DEFAULT,
        }
    }

    #[test]
    fn libtest_name_drops_the_crate() {
        assert_eq!(entry("steady", "vm").libtest_name(), "steady");
        assert_eq!(
            entry("steady", "vm::sched::more").libtest_name(),
            "sched::more::steady"
        );
    }

    #[test]
    fn duplicate_names_are_reported_with_both_places() {
        let a = entry("steady", "vm");
        let mut b = entry("steady", "vm::other");
        b.line = 9;
        let c = entry("zeta", "vm");
        let err = check_unique(&[&a, &b, &c]).unwrap_err();
        assert_eq!(err.name, "steady");
        assert_eq!(err.first, "tests/x.rs:3");
        assert_eq!(err.second, "tests/x.rs:9");
        assert!(check_unique(&[&a, &c]).is_ok());
    }

    #[test]
    fn constraints_bound_every_dimension() {
        let t: Topology = "2n4l2c2t".parse().unwrap();
        assert!(Constraints::ANY.admits(&t));
        let c = |f: fn(&mut Constraints)| {
            let mut c = Constraints::ANY;
            f(&mut c);
            c.admits(&t)
        };
        assert!(!c(|c| c.max_numa_nodes = 1));
        assert!(!c(|c| c.min_llcs = 5));
        assert!(!c(|c| c.max_llcs = 3));
        assert!(!c(|c| c.max_cpus = 15));
        assert!(c(|c| c.max_cpus = 16));
        assert!(!c(|c| c.min_cpus = 17));
        assert!(c(|c| c.requires_smt = true));
        let no_smt: Topology = "1n2l2c1t".parse().unwrap();
        let mut smt = Constraints::ANY;
        smt.requires_smt = true;
        assert!(!smt.admits(&no_smt));
    }

    #[test]
    fn defaults_are_a_valid_test() {
        // `#[ktstr_test]` without arguments relies on these passing its own checks.
        let d = TestAttrs::DEFAULT;
        assert_eq!(d.topology().unwrap().to_string(), "1n1l2c1t");
        assert_eq!(d.constraints, Constraints::ANY);
        assert!(!d.gauntlet && !d.ignore && !d.expect_err);
        assert!(d.duration_s >= 1 && !d.scheduler.trim().is_empty());
        assert_eq!(TestAttrs::default(), d);
    }

    #[test]
    fn default_memory_scales_with_vcpus() {
        assert_eq!(default_memory_mib(&"1n1l2c1t".parse().unwrap()), 512);
        assert_eq!(default_memory_mib(&"2n8l8c2t".parse().unwrap()), 128 * 64);
    }

    #[test]
    fn perf_delta_gate_becomes_a_record() {
        let g = PerfDeltaGate {
            metric: "worst_gap_ms",
            direction: Some(Polarity::LowerBetter),
            max_regression_pct: Some(10.0),
            min_abs: None,
            phase: Some(1),
        };
        let r = g.record();
        assert_eq!(r.metric, "worst_gap_ms");
        assert_eq!(r.direction, Some(Polarity::LowerBetter));
        assert_eq!(r.max_regression_pct, Some(10.0));
        assert_eq!(r.phase, Some(1));
    }
}
