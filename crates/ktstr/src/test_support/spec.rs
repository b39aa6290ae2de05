//! What a `#[ktstr_test]` function works with: the [`TestCtx`] it is given (which test,
//! which variant, which topology) and the [`TestSpec`] it returns (the guest's work plus
//! the VM and test attributes, pre-filled from the macro's attributes).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use ktstr_sidecar::PerfDeltaAssertionRecord;
use ktstr_topology::Topology;
use ktstr_wire::scenario::{Scenario, TopoSize};
use ktstr_wire::spec::{GuestSpec, WorkKind, WorkerSpec};

use super::entry::{default_memory_mib, TestAttrs};
use super::presets::Preset;
use crate::assert::Assert;
use crate::engine::EngineKind;
use crate::kernel::ResolvedKernel;
use crate::payload::Payload;
use crate::runner::finalize::Identity;
use crate::runner::RunOutcome;
use crate::scheduler::Scheduler;

/// Which variant of a test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The topology declared in the attributes (`ktstr/{name}`).
    Base,
    /// A gauntlet preset (`gauntlet/{name}/{preset}`).
    Gauntlet(&'static Preset),
}

/// Handed to the test function.
#[derive(Debug, Clone)]
pub struct TestCtx {
    name: &'static str,
    variant: Variant,
    topology: Topology,
    attrs: TestAttrs,
}

impl TestCtx {
    pub fn new(name: &'static str, variant: Variant, topology: Topology, attrs: TestAttrs) -> Self {
        TestCtx {
            name,
            variant,
            topology,
            attrs,
        }
    }

    /// The test's name (the function's name).
    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// The topology this variant boots.
    pub fn topology(&self) -> Topology {
        self.topology
    }

    /// vCPUs of this variant's topology (size workloads with it).
    pub fn vcpus(&self) -> u32 {
        self.topology.vcpus()
    }

    /// The topology's size, as the canned scenarios take it
    /// (`Scenario::steady(ctx.topo_size())`).
    pub fn topo_size(&self) -> TopoSize {
        self.topology.size()
    }

    /// The scheduler the `scheduler` attribute names (EEVDF by default), to configure
    /// and hand to [`TestSpec::scheduler`]; [`TestCtx::spec`] starts from it.
    pub fn scheduler(&self) -> Scheduler {
        Scheduler::from(self.attrs.scheduler)
    }

    /// A spec filled from the attributes, for this variant's topology, with no work yet.
    pub fn spec(&self) -> TestSpec {
        let a = &self.attrs;
        let mut spec = TestSpec {
            name: self.name.to_string(),
            topology: self.topology,
            memory_mib: a
                .memory_mib
                .unwrap_or_else(|| default_memory_mib(&self.topology)),
            cpu_budget: a.cpu_budget,
            scheduler: self.scheduler(),
            sysctls: Vec::new(),
            kargs: a.kargs.iter().map(|s| s.to_string()).collect(),
            includes: a.includes.iter().map(PathBuf::from).collect(),
            expect_err: a.expect_err,
            perf_delta_assertions: a.perf_delta_assertions.iter().map(|g| g.record()).collect(),
            assert: Assert::default(),
            guest: GuestSpec::new(self.name, a.duration_s * 1000),
            payloads: Vec::new(),
            checks: Vec::new(),
        };
        spec.guest.num_snapshots = a.num_snapshots;
        for s in a.sysctls {
            spec = spec.sysctl(s);
        }
        spec
    }
}

/// A host-side check run on a passing run's result; an `Err` (or a panic) fails it.
pub type Check = Box<dyn Fn(&RunOutcome) -> Result<(), String>>;

/// Everything one run needs: the guest's work and the VM/test attributes.
pub struct TestSpec {
    /// Test name (sidecar `test_name`).
    pub name: String,
    pub topology: Topology,
    pub memory_mib: u64,
    pub cpu_budget: Option<u32>,
    /// EEVDF, or a sched_ext scheduler (name or path) with its arguments, watchdog
    /// timeout, sysctls and kargs; its [`Scheduler::name`] is the sidecar's `scheduler`.
    pub scheduler: Scheduler,
    /// `sysctl.<key>=<value>`, as the sidecar records them.
    pub sysctls: Vec<String>,
    pub kargs: Vec<String>,
    /// Host files packed as `/bin/<name>` with their shared libraries.
    pub includes: Vec<PathBuf>,
    /// The test expects the run to fail; the verdict is inverted.
    pub expect_err: bool,
    pub perf_delta_assertions: Vec<PerfDeltaAssertionRecord>,
    /// The thresholds the run is judged by (the documented defaults unless changed).
    pub assert: Assert,
    /// What the guest runs: `duration_ms` is the workload's duration, `num_snapshots`
    /// the periodic snapshots requested.
    pub guest: GuestSpec,
    /// Programs the scenario's payload ops run (without a scenario, each once in
    /// order); the first is the sidecar's `payload`.
    pub payloads: Vec<Payload>,
    checks: Vec<Check>,
}

impl fmt::Debug for TestSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestSpec")
            .field("name", &self.name)
            .field("topology", &self.topology.to_string())
            .field("memory_mib", &self.memory_mib)
            .field("cpu_budget", &self.cpu_budget)
            .field("scheduler", &self.scheduler)
            .field("sysctls", &self.sysctls)
            .field("kargs", &self.kargs)
            .field("includes", &self.includes)
            .field("expect_err", &self.expect_err)
            .field("perf_delta_assertions", &self.perf_delta_assertions)
            .field("assert", &self.assert)
            .field("guest", &self.guest)
            .field("payloads", &self.payloads)
            .field("checks", &self.checks.len())
            .finish()
    }
}

impl TestSpec {
    /// What defines a run of this spec, with the kernel and engine when they are known
    /// (a run refused before either was found records the same variant).
    pub fn identity<'a>(
        &'a self,
        kernel: Option<&'a ResolvedKernel>,
        engine: Option<EngineKind>,
    ) -> Identity<'a> {
        Identity {
            test_name: &self.name,
            topology: self.topology,
            scheduler: &self.scheduler,
            sysctls: &self.sysctls,
            kargs: &self.kargs,
            payloads: &self.payloads,
            guest: &self.guest,
            perf_delta_assertions: &self.perf_delta_assertions,
            kernel,
            engine,
        }
    }

    /// Add `count` workers doing `work` in group `group`.
    pub fn workers(mut self, group: impl Into<String>, count: u32, work: WorkKind) -> Self {
        self.guest.workers.push(WorkerSpec {
            group: group.into(),
            count,
            work,
        });
        self
    }

    /// Run this scenario (cgroups, workers, steps) instead of flat worker groups.
    pub fn scenario(mut self, scenario: Scenario) -> Self {
        self.guest.scenario = Some(scenario);
        self
    }

    /// Judge the run by these thresholds.
    pub fn assert(mut self, assert: Assert) -> Self {
        self.assert = assert;
        self
    }

    /// Set the workload's duration.
    pub fn duration(mut self, d: Duration) -> Self {
        self.guest.duration_ms = d.as_millis() as u64;
        self
    }

    /// The workload's duration.
    pub fn workload_duration(&self) -> Duration {
        Duration::from_millis(self.guest.duration_ms)
    }

    /// Run under this scheduler instead (`"scx_lavd"`, a path, or a configured
    /// [`Scheduler`]).
    pub fn scheduler(mut self, scheduler: impl Into<Scheduler>) -> Self {
        self.scheduler = scheduler.into();
        self
    }

    /// Configure the scheduler in place:
    /// `.with_scheduler(|s| s.sysctl("kernel.sched_autogroup_enabled", "0"))`.
    pub fn with_scheduler(mut self, f: impl FnOnce(Scheduler) -> Scheduler) -> Self {
        self.scheduler = f(self.scheduler);
        self
    }

    /// Add command-line arguments for the scheduler.
    pub fn scheduler_args<I: IntoIterator<Item = S>, S: Into<String>>(self, args: I) -> Self {
        self.with_scheduler(|s| s.args(args))
    }

    /// The sched_ext watchdog timeout, passed to the scheduler as an argument (see
    /// [`Scheduler::watchdog_timeout`]; schedulers ktstr does not know need
    /// [`TestSpec::watchdog_arg`] too).
    pub fn watchdog_timeout(self, timeout: Duration) -> Self {
        self.with_scheduler(|s| s.watchdog_timeout(timeout))
    }

    /// The scheduler's option that takes the watchdog timeout in milliseconds.
    pub fn watchdog_arg(self, flag: impl Into<String>) -> Self {
        self.with_scheduler(|s| s.watchdog_arg(flag))
    }

    /// Skip the test, rather than fail it, when the scheduler cannot be found.
    pub fn skip_if_scheduler_missing(self) -> Self {
        self.with_scheduler(Scheduler::skip_if_missing)
    }

    /// Add a sysctl, `key=value` or `sysctl.key=value`.
    pub fn sysctl(mut self, s: &str) -> Self {
        let s = s.trim();
        self.sysctls.push(if s.starts_with("sysctl.") {
            s.to_string()
        } else {
            format!("sysctl.{s}")
        });
        self
    }

    /// Add a kernel command-line argument.
    pub fn karg(mut self, s: impl Into<String>) -> Self {
        self.kargs.push(s.into());
        self
    }

    /// Add a payload: a real program the scenario runs with `Op::RunPayload` (and
    /// friends), or, without a scenario, once to completion after the ones before it.
    /// Its binary is packed with its libraries; its checks join the verdict.
    pub fn payload(mut self, payload: Payload) -> Self {
        self.payloads.push(payload);
        self
    }

    /// Pack a host file into the guest as `/bin/<name>`.
    pub fn include(mut self, path: impl Into<PathBuf>) -> Self {
        self.includes.push(path.into());
        self
    }

    /// Add a host-side check, run after a passing run with its result (sidecar already
    /// written). Returning `Err` or panicking (e.g. `assert!`) fails the test and records
    /// the message in the sidecar's `stats.verdict_details`. With `expect_err` the checks
    /// run on the expected failure (`out.checks` and `out.reasons()` hold the raw verdict),
    /// so they can check that the run failed for the right reason.
    pub fn check(mut self, f: impl Fn(&RunOutcome) -> Result<(), String> + 'static) -> Self {
        self.checks.push(Box::new(f));
        self
    }

    pub fn checks(&self) -> &[Check] {
        &self.checks
    }

    /// Reject a spec no VM can run, naming the field.
    pub fn validate(&self) -> Result<(), TestSpecError> {
        let bad = |field: &'static str, problem: String| TestSpecError {
            test: self.name.clone(),
            field,
            problem,
        };
        if self.memory_mib < MIN_MEMORY_MIB {
            return Err(bad(
                "memory_mib",
                format!(
                    "{} MiB is below the {MIN_MEMORY_MIB} MiB a guest needs",
                    self.memory_mib
                ),
            ));
        }
        if self.cpu_budget == Some(0) {
            return Err(bad("cpu_budget", "must be at least 1 host CPU".into()));
        }
        if self.guest.duration_ms == 0 {
            return Err(bad("duration", "must be longer than 0 ms".into()));
        }
        if self.scheduler.name().trim().is_empty() {
            return Err(bad(
                "scheduler",
                "is empty; use \"eevdf\" for the kernel's own".into(),
            ));
        }
        if self.scheduler.is_eevdf()
            && (!self.scheduler.arg_list().is_empty() || self.scheduler.watchdog().is_some())
        {
            return Err(bad(
                "scheduler",
                "is EEVDF, which takes no arguments or watchdog timeout: name a sched_ext \
                 scheduler (attribute `scheduler` or `.scheduler(..)`), or drop them"
                    .into(),
            ));
        }
        for s in &self.sysctls {
            let kv = s.strip_prefix("sysctl.").unwrap_or(s);
            if kv.split_once('=').is_none_or(|(k, _)| k.trim().is_empty()) {
                return Err(bad("sysctls", format!("`{s}` is not `key=value`")));
            }
        }
        for k in &self.kargs {
            if k.is_empty() || k.contains(char::is_whitespace) {
                return Err(bad(
                    "kargs",
                    format!("`{k}` must be one non-empty argument without spaces"),
                ));
            }
        }
        if let Err(e) = crate::payload::validate_all(&self.payloads) {
            return Err(bad("payloads", e.to_string()));
        }
        let t = &self.topology;
        let mut guest = self.guest.clone();
        if guest.payloads.is_empty() {
            guest.payloads = self.payloads.iter().map(Payload::to_run).collect();
        }
        if let Err(e) = guest.validate(t.size()) {
            return Err(bad("guest", e.to_string()));
        }
        for p in &self.includes {
            if !p.is_file() {
                return Err(bad(
                    "includes",
                    format!("{} is not a file on this host", p.display()),
                ));
            }
        }
        Ok(())
    }
}

/// Smallest guest memory a test may ask for.
pub const MIN_MEMORY_MIB: u64 = 256;

/// A [`TestSpec`] that cannot run (host-side checks of the test as a whole). Not
/// `ktstr_wire::scenario::SpecError`, which names a bad field of the guest's scenario.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("test `{test}`: invalid spec: {field} {problem}")]
pub struct TestSpecError {
    pub test: String,
    pub field: &'static str,
    pub problem: String,
}

/// What a `#[ktstr_test]` function may return: a [`TestSpec`], or a `Result` of one
/// whose error is displayed as the failure reason.
#[diagnostic::on_unimplemented(
    message = "a #[ktstr_test] function must return `TestSpec` or `Result<TestSpec, E>`, not `{Self}`",
    label = "build the spec from `ctx.spec()` and return it"
)]
pub trait IntoTestSpec {
    fn into_test_spec(self) -> Result<TestSpec, String>;
}

impl IntoTestSpec for TestSpec {
    fn into_test_spec(self) -> Result<TestSpec, String> {
        Ok(self)
    }
}

impl<E: fmt::Display> IntoTestSpec for Result<TestSpec, E> {
    fn into_test_spec(self) -> Result<TestSpec, String> {
        self.map_err(|e| format!("the test function returned an error: {e:#}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::entry::PerfDeltaGate;

    fn ctx(attrs: TestAttrs) -> TestCtx {
        let t = attrs.topology().unwrap();
        TestCtx::new("steady", Variant::Base, t, attrs)
    }

    #[test]
    fn spec_is_filled_from_the_attributes() {
        static GATES: [PerfDeltaGate; 1] = [PerfDeltaGate {
            metric: "worst_gap_ms",
            direction: None,
            max_regression_pct: Some(5.0),
            min_abs: None,
            phase: None,
        }];
        let attrs = TestAttrs {
            llcs: 2,
            cores: 4,
            memory_mib: Some(2048),
            cpu_budget: Some(2),
            scheduler: "scx_bpfland",
            sysctls: &["kernel.sched_rt_runtime_us=-1", "sysctl.vm.swappiness=0"],
            kargs: &["nosmt"],
            duration_s: 3,
            num_snapshots: 2,
            expect_err: true,
            perf_delta_assertions: &GATES,
            ..TestAttrs::DEFAULT
        };
        let s = ctx(attrs).spec();
        assert_eq!(s.name, "steady");
        assert_eq!(s.topology.to_string(), "1n2l4c1t");
        assert_eq!(s.memory_mib, 2048);
        assert_eq!(s.cpu_budget, Some(2));
        assert_eq!(s.scheduler, Scheduler::named("scx_bpfland"));
        assert_eq!(
            s.sysctls,
            [
                "sysctl.kernel.sched_rt_runtime_us=-1",
                "sysctl.vm.swappiness=0"
            ]
        );
        assert_eq!(s.kargs, ["nosmt"]);
        assert_eq!(s.guest.duration_ms, 3000);
        assert_eq!(s.guest.test_name, "steady");
        assert_eq!(s.guest.num_snapshots, 2);
        assert!(s.expect_err);
        assert_eq!(s.perf_delta_assertions[0].metric, "worst_gap_ms");
        // Snapshots are taken while a scenario runs: this spec has none yet.
        assert_eq!(s.validate().unwrap_err().field, "guest");
        let s = s.workers("spin", 2, WorkKind::Spin);
        s.validate().unwrap();
    }

    #[test]
    fn default_memory_follows_the_variant_topology() {
        let attrs = TestAttrs::DEFAULT;
        let big: Topology = "2n8l8c1t".parse().unwrap();
        let preset = crate::test_support::presets::find("2n8l8c1t").unwrap();
        let s = TestCtx::new("t", Variant::Gauntlet(preset), big, attrs).spec();
        assert_eq!(s.memory_mib, 64 * 64);
        assert_eq!(s.topology, big);
    }

    #[test]
    fn builder_adds_work_and_checks() {
        let s = ctx(TestAttrs::DEFAULT)
            .spec()
            .workers("spin", 2, WorkKind::Spin)
            .duration(Duration::from_millis(1500))
            .karg("quiet")
            .check(|_| Ok(()));
        assert_eq!(s.guest.workers.len(), 1);
        assert_eq!(s.guest.workers[0].count, 2);
        assert_eq!(s.workload_duration(), Duration::from_millis(1500));
        assert_eq!(s.kargs, ["quiet"]);
        assert_eq!(s.checks().len(), 1);
    }

    #[test]
    fn the_scheduler_is_configured_through_the_spec() {
        let c = ctx(TestAttrs {
            scheduler: "ktstr-stall",
            ..TestAttrs::DEFAULT
        });
        assert_eq!(c.scheduler(), Scheduler::named("ktstr-stall"));
        let s = c
            .spec()
            .scheduler_args(["--stall-after-s", "2"])
            .watchdog_timeout(Duration::from_secs(3))
            .watchdog_arg("--timeout-ms")
            .with_scheduler(|s| s.sysctl("kernel.sched_autogroup_enabled", "0"))
            .skip_if_scheduler_missing();
        assert_eq!(
            s.scheduler,
            Scheduler::named("ktstr-stall")
                .args(["--stall-after-s", "2"])
                .watchdog_timeout(Duration::from_secs(3))
                .watchdog_arg("--timeout-ms")
                .sysctl("kernel.sched_autogroup_enabled", "0")
                .skip_if_missing()
        );
        assert!(s.scheduler.skips_if_missing());
        // A path is named by its file, as the sidecar records it.
        assert_eq!(
            c.spec().scheduler("/opt/scx/scx_lavd").scheduler.name(),
            "scx_lavd"
        );
        assert!(c.spec().scheduler("eevdf").scheduler.is_eevdf());
        assert!(ctx(TestAttrs::DEFAULT).spec().scheduler.is_eevdf());
    }

    #[test]
    fn validate_names_the_bad_field() {
        let field = |f: fn(TestSpec) -> TestSpec| {
            f(ctx(TestAttrs::DEFAULT).spec())
                .validate()
                .unwrap_err()
                .field
        };
        assert_eq!(
            field(|mut s| {
                s.memory_mib = 64;
                s
            }),
            "memory_mib"
        );
        assert_eq!(
            field(|mut s| {
                s.cpu_budget = Some(0);
                s
            }),
            "cpu_budget"
        );
        assert_eq!(field(|s| s.duration(Duration::ZERO)), "duration");
        assert_eq!(field(|s| s.scheduler(Scheduler::named(""))), "scheduler");
        // EEVDF (the default) takes no arguments.
        assert_eq!(field(|s| s.scheduler_args(["-v"])), "scheduler");
        assert_eq!(
            field(|s| s.watchdog_timeout(Duration::from_secs(5))),
            "scheduler"
        );
        assert_eq!(field(|s| s.sysctl("novalue")), "sysctls");
        assert_eq!(field(|s| s.karg("two words")), "kargs");
        assert_eq!(field(|s| s.workers("w", 0, WorkKind::Spin)), "guest");
        assert_eq!(field(|s| s.include("/nonexistent/ktstr-file")), "includes");
        assert_eq!(
            field(|s| s.payload(Payload::new("gone", "/nonexistent/bench"))),
            "payloads"
        );
        // A scenario op naming a payload the test does not declare.
        assert_eq!(
            field(|s| {
                s.scenario(Scenario::new().step(
                    ktstr_wire::scenario::Step::new("x", ktstr_wire::scenario::Hold::Millis(5)).op(
                        ktstr_wire::scenario::Op::RunPayload {
                            name: "nope".into(),
                        },
                    ),
                ))
            }),
            "guest"
        );
        // Payloads alone are work enough.
        ctx(TestAttrs::DEFAULT)
            .spec()
            .payload(Payload::new("true", "/bin/true"))
            .validate()
            .unwrap();
        let e = ctx(TestAttrs::DEFAULT)
            .spec()
            .sysctl("=1")
            .validate()
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("test `steady`: invalid spec: sysctls"),
            "{e}"
        );
    }

    #[test]
    fn results_convert_with_their_error_text() {
        let ok: Result<TestSpec, String> = Ok(ctx(TestAttrs::DEFAULT).spec());
        assert!(ok.into_test_spec().is_ok());
        let err: Result<TestSpec, std::io::Error> = Err(std::io::Error::other("no such workload"));
        assert_eq!(
            err.into_test_spec().unwrap_err(),
            "the test function returned an error: no such workload"
        );
    }
}
