//! What a test author can use, listed from the code itself (`cargo ktstr describe`): work
//! types, scenario ops, topology presets, canned scenarios, gates and `#[ktstr_test]`
//! attributes, each with a one-line description and its parameters.
//!
//! Nothing here is a hand-kept list of names. Work types come from [`WorkType::all`],
//! presets from [`PRESETS`], canned scenarios from [`CANNED`], gates from [`Gate::ALL`];
//! ops and attributes are described by exhaustive matches and destructurings, so a new
//! variant or field does not compile until it is described, and the unit tests below
//! check the lists against the serde names of every variant.

use std::fmt::Write as _;

use serde::Serialize;

use crate::assert::{Assert, Gate, MonitorThresholds};
use crate::engine::EngineKind;
use crate::scenario::{CgroupDef, CpuMax, CpusetSpec, Op, SchedPolicy, WorkSpec, WorkType, CANNED};
use crate::test_support::entry::{Constraints, PerfDeltaGate, TestAttrs};
use crate::test_support::execute::engine_skip_reason;
use crate::test_support::presets::PRESETS;

/// Everything `cargo ktstr describe` prints; its JSON is this type.
#[derive(Debug, Clone, Serialize)]
pub struct Catalog {
    pub work_types: Vec<Item>,
    pub ops: Vec<Item>,
    pub presets: Vec<Item>,
    pub scenarios: Vec<Item>,
    pub gates: Vec<Item>,
    pub attributes: Vec<Item>,
}

/// One thing a test can use.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// As a test writes it: `SpinWait`, `SetCpuset`, `1n2l4c1t`, `steady`, `max_gap`,
    /// `llcs`.
    pub name: String,
    pub description: String,
    pub params: Vec<Param>,
}

/// One parameter of an item.
#[derive(Debug, Clone, Serialize)]
pub struct Param {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    /// The default (or, for a preset, the value), as text; null when there is none.
    pub default: Option<String>,
}

fn param(name: &str, ty: &str, default: Option<String>) -> Param {
    Param {
        name: name.into(),
        ty: ty.into(),
        default,
    }
}

fn item(name: impl Into<String>, description: impl Into<String>, params: Vec<Param>) -> Item {
    Item {
        name: name.into(),
        description: description.into(),
        params,
    }
}

impl Catalog {
    /// The catalog of this build.
    pub fn new() -> Self {
        Self {
            work_types: work_types(),
            ops: ops(),
            presets: presets(),
            scenarios: scenarios(),
            gates: gates(),
            attributes: attributes(),
        }
    }

    /// The sections with their JSON keys, in print order.
    pub fn sections(&self) -> [(&'static str, &[Item]); 6] {
        [
            ("work_types", &self.work_types),
            ("ops", &self.ops),
            ("presets", &self.presets),
            ("scenarios", &self.scenarios),
            ("gates", &self.gates),
            ("attributes", &self.attributes),
        ]
    }

    /// A plain-text listing: one block per section, one line per item, its parameters
    /// indented below it.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for (i, (key, items)) in self.sections().into_iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let _ = writeln!(out, "{} ({})", key.replace('_', " "), items.len());
            let width = items.iter().map(|it| it.name.len()).max().unwrap_or(0);
            for it in items {
                let _ = writeln!(out, "  {:width$}  {}", it.name, it.description);
                for p in &it.params {
                    let dflt = p.default.as_deref().map(|d| format!(" = {d}"));
                    let _ = writeln!(
                        out,
                        "  {:width$}    {}: {}{}",
                        "",
                        p.name,
                        p.ty,
                        dflt.unwrap_or_default()
                    );
                }
            }
        }
        out
    }

    /// The catalog as the guide's reference page (`docs/guide/src/reference/catalog.md`):
    /// one table per section. A unit test keeps the checked-in page equal to this.
    pub fn render_markdown(&self) -> String {
        let cell = |s: &str| {
            s.replace('|', "\\|")
                .replace('\n', " ")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        };
        let mut out = String::from(
            "# Catalog\n\nGenerated from the code by `cargo ktstr describe` (do not edit: a unit test\ncompares this page with the code; `KTSTR_BLESS=1 cargo nextest run -p ktstr\nguide_catalog` rewrites it).\n",
        );
        for (key, items) in self.sections() {
            let _ = write!(
                out,
                "\n## {} ({})\n\n| name | description | parameters |\n|---|---|---|\n",
                key.replace('_', " "),
                items.len()
            );
            for it in items {
                let params: Vec<String> = it
                    .params
                    .iter()
                    .map(|p| match &p.default {
                        Some(d) => format!("`{}: {} = {}`", p.name, p.ty, d),
                        None => format!("`{}: {}`", p.name, p.ty),
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "| `{}` | {} | {} |",
                    it.name,
                    cell(&it.description),
                    params.join(", ").replace('|', "\\|")
                );
            }
        }
        out
    }
}

impl Default for Catalog {
    fn default() -> Self {
        Self::new()
    }
}

/// The JSON type of a value, for parameters read from serde.
fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(n) if n.is_f64() => "number",
        serde_json::Value::Number(_) => "integer",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "list",
        serde_json::Value::Object(_) => "object",
    }
}

/// Every work type of [`WorkType::all`]; its parameters are the serde fields of the
/// default instance, with their defaults.
fn work_types() -> Vec<Item> {
    WorkType::all()
        .iter()
        .map(|w| {
            let json = serde_json::to_value(w).expect("a work type serializes");
            let params = json
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| k.as_str() != "type")
                .map(|(k, v)| param(k, json_type(v), Some(v.to_string())))
                .collect();
            item(w.name(), w.describe(), params)
        })
        .collect()
}

/// One op of every kind, in declaration order.
pub fn op_examples() -> Vec<Op> {
    let cg = || "cg0".to_string();
    vec![
        Op::AddCgroup(CgroupDef::new("cg1")),
        Op::RemoveCgroup { cgroup: cg() },
        Op::SetCpuset {
            cgroup: cg(),
            cpuset: CpusetSpec::Llc(0),
        },
        Op::ClearCpuset { cgroup: cg() },
        Op::SwapCpusets {
            a: cg(),
            b: "cg1".into(),
        },
        Op::SetAffinity {
            cgroup: cg(),
            cpus: CpusetSpec::Node(0),
        },
        Op::MoveTasks {
            from: cg(),
            to: "cg1".into(),
        },
        Op::Freeze { cgroup: cg() },
        Op::Unfreeze { cgroup: cg() },
        Op::SpawnWorkers {
            cgroup: cg(),
            count: 1,
            work: WorkSpec::new(WorkType::SpinWait),
        },
        Op::RunPayload { name: "p".into() },
        Op::StartPayload { name: "p".into() },
        Op::WaitPayload { name: "p".into() },
        Op::KillPayload { name: "p".into() },
        Op::StopWorkers {
            cgroup: cg(),
            count: 1,
        },
        Op::OfflineCpus {
            cpus: CpusetSpec::Cpus(vec![1]),
        },
        Op::OnlineCpus {
            cpus: CpusetSpec::Cpus(vec![1]),
        },
        Op::DetachScheduler,
        Op::AttachScheduler,
        Op::RestartScheduler,
        Op::ReplaceScheduler {
            scheduler: Some("ktstr-stall".into()),
            args: Vec::new(),
        },
        Op::SetNice {
            cgroup: cg(),
            nice: 5,
        },
        Op::SetPolicy {
            cgroup: cg(),
            policy: SchedPolicy::Batch,
        },
        Op::SetCpuWeight {
            cgroup: cg(),
            weight: 200,
        },
        Op::SetCpuMax {
            cgroup: cg(),
            max: Some(CpuMax {
                quota_us: 50_000,
                period_us: 100_000,
            }),
        },
        Op::SetMemoryMax {
            cgroup: cg(),
            bytes: Some(256 << 20),
        },
        Op::SetIoWeight {
            cgroup: cg(),
            weight: 50,
        },
        Op::SetPidsMax {
            cgroup: cg(),
            max: Some(64),
        },
        Op::WriteSysctl {
            key: "kernel.sched_rt_runtime_us".into(),
            value: "950000".into(),
        },
        Op::DropCaches,
    ]
}

type ParamDoc = &'static [(&'static str, &'static str)];

/// What an op does and its fields (name, type). Exhaustive: a new op does not compile
/// until it is described here.
fn op_doc(op: &Op) -> (&'static str, ParamDoc) {
    const CGROUP: ParamDoc = &[("cgroup", "String")];
    const PAYLOAD: ParamDoc = &[("name", "String")];
    match op {
        Op::AddCgroup(_) => (
            "create a cgroup (nested when its name has a parent path) and start its workers",
            &[("def", "CgroupDef")],
        ),
        Op::RemoveCgroup { .. } => (
            "stop the cgroup's workers (their reports are kept) and remove it, nested ones too",
            CGROUP,
        ),
        Op::SetCpuset { .. } => (
            "write cpuset.cpus",
            &[("cgroup", "String"), ("cpuset", "CpusetSpec")],
        ),
        Op::ClearCpuset { .. } => ("empty cpuset.cpus: back to the parent's CPUs", CGROUP),
        Op::SwapCpusets { .. } => (
            "exchange the cpusets of two cgroups",
            &[("a", "String"), ("b", "String")],
        ),
        Op::SetAffinity { .. } => (
            "sched_setaffinity of every worker in the cgroup",
            &[("cgroup", "String"), ("cpus", "CpusetSpec")],
        ),
        Op::MoveTasks { .. } => (
            "move every worker of one cgroup into another",
            &[("from", "String"), ("to", "String")],
        ),
        Op::Freeze { .. } => ("cgroup.freeze = 1", CGROUP),
        Op::Unfreeze { .. } => ("cgroup.freeze = 0", CGROUP),
        Op::SpawnWorkers { .. } => (
            "start more workers in the cgroup",
            &[("cgroup", "String"), ("count", "u32"), ("work", "WorkSpec")],
        ),
        Op::RunPayload { .. } => ("run a declared payload and wait until it ends", PAYLOAD),
        Op::StartPayload { .. } => (
            "start a declared payload in the background (ended by WaitPayload, KillPayload or the scenario's end)",
            PAYLOAD,
        ),
        Op::WaitPayload { .. } => ("wait until a payload started in the background ends", PAYLOAD),
        Op::KillPayload { .. } => (
            "SIGKILL a background payload's process group and report it",
            PAYLOAD,
        ),
        Op::StopWorkers { .. } => (
            "stop the cgroup's newest workers; they report like at the end",
            &[("cgroup", "String"), ("count", "u32")],
        ),
        Op::OfflineCpus { .. } => (
            "CPU hotplug: take CPUs offline; the kernel's refusal fails the step with its reason",
            &[("cpus", "CpusetSpec")],
        ),
        Op::OnlineCpus { .. } => (
            "CPU hotplug: bring offline CPUs back (the scenario's end does it too)",
            &[("cpus", "CpusetSpec")],
        ),
        Op::DetachScheduler => (
            "detach the run's sched_ext scheduler; the workload goes on under EEVDF",
            &[],
        ),
        Op::AttachScheduler => (
            "start the run's scheduler again after a detach and wait for attach",
            &[],
        ),
        Op::RestartScheduler => (
            "detach and restart the run's scheduler; the gap is measured",
            &[],
        ),
        Op::ReplaceScheduler { .. } => (
            "detach the scheduler and attach another (or the same binary with other args); the gap is measured",
            &[("scheduler", "Option<String>"), ("args", "Vec<String>")],
        ),
        Op::SetNice { .. } => (
            "set the nice value of every thread in the cgroup",
            &[("cgroup", "String"), ("nice", "i32")],
        ),
        Op::SetPolicy { .. } => (
            "set the scheduling policy (other, batch, idle, fifo, rr) of every thread in the cgroup",
            &[("cgroup", "String"), ("policy", "SchedPolicy")],
        ),
        Op::SetCpuWeight { .. } => (
            "write cpu.weight",
            &[("cgroup", "String"), ("weight", "u32")],
        ),
        Op::SetCpuMax { .. } => (
            "write cpu.max (None: max)",
            &[("cgroup", "String"), ("max", "Option<CpuMax>")],
        ),
        Op::SetMemoryMax { .. } => (
            "write memory.max in bytes (None: max)",
            &[("cgroup", "String"), ("bytes", "Option<u64>")],
        ),
        Op::SetIoWeight { .. } => (
            "write io.weight",
            &[("cgroup", "String"), ("weight", "u32")],
        ),
        Op::SetPidsMax { .. } => (
            "write pids.max (None: max)",
            &[("cgroup", "String"), ("max", "Option<u64>")],
        ),
        Op::WriteSysctl { .. } => (
            "write a sysctl and read it back",
            &[("key", "String"), ("value", "String")],
        ),
        Op::DropCaches => ("sync, then drop the page cache, dentries and inodes", &[]),
    }
}

/// `set_cpuset` -> `SetCpuset`.
fn camel(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn ops() -> Vec<Item> {
    op_examples()
        .iter()
        .map(|op| {
            let (about, fields) = op_doc(op);
            let params = fields.iter().map(|(n, t)| param(n, t, None)).collect();
            item(camel(op.kind()), about, params)
        })
        .collect()
}

fn presets() -> Vec<Item> {
    PRESETS
        .iter()
        .map(|p| {
            let t = p.topology();
            let mut about = p.about.to_string();
            if engine_skip_reason(EngineKind::QemuTcg, &t, 0, None).is_some() {
                about.push_str(" (kvm engine only: too wide for qemu-tcg)");
            }
            let v = |n: u32| Some(n.to_string());
            let params = vec![
                param("numa_nodes", "u32", v(p.numa_nodes)),
                param("llcs", "u32", v(p.llcs)),
                param("cores", "u32", v(p.cores)),
                param("threads", "u32", v(p.threads)),
                param("vcpus", "u32", v(t.vcpus())),
            ];
            item(p.label, about, params)
        })
        .collect()
}

fn scenarios() -> Vec<Item> {
    CANNED
        .iter()
        .map(|c| {
            item(
                c.name,
                c.hunts,
                vec![param("topo", "TopoSize", Some("ctx.topo_size()".into()))],
            )
        })
        .collect()
}

fn opt<T: ToString>(v: Option<T>) -> Option<String> {
    Some(v.map_or_else(|| "off".to_string(), |v| v.to_string()))
}

/// The [`Assert`] fields (or the always-on rule) that set each gate, with their defaults.
/// Exhaustive over [`Gate`].
fn gate_params(g: Gate) -> Vec<Param> {
    let Assert {
        not_stuck,
        max_gap_ms,
        max_spread_pct,
        max_scenario_spread_pct,
        isolation,
        max_migration_ratio,
        min_work_rate,
        max_p99_wake_latency_us,
        monitor,
    } = Assert::default();
    let MonitorThresholds {
        max_imbalance_ratio,
        max_local_dsq_depth,
        fail_on_stuck,
        sustained_samples,
        enforce,
    } = monitor;
    let on = |b: bool| Some(b.to_string());
    match g {
        Gate::Run | Gate::Topology => vec![],
        Gate::NotStuck => vec![param("not_stuck", "bool", on(not_stuck))],
        Gate::MaxGap => vec![param("max_gap_ms", "Option<u64>", opt(max_gap_ms))],
        Gate::Spread => vec![param("max_spread_pct", "Option<f64>", opt(max_spread_pct))],
        Gate::ScenarioSpread => vec![param(
            "max_scenario_spread_pct",
            "Option<f64>",
            opt(max_scenario_spread_pct),
        )],
        Gate::Isolation => vec![param("isolation", "bool", on(isolation))],
        Gate::MigrationRatio => vec![param(
            "max_migration_ratio",
            "Option<f64>",
            opt(max_migration_ratio),
        )],
        Gate::WorkRate => vec![param("min_work_rate", "Option<f64>", opt(min_work_rate))],
        Gate::WakeLatency => vec![param(
            "max_p99_wake_latency_us",
            "Option<f64>",
            opt(max_p99_wake_latency_us),
        )],
        Gate::Monitor => vec![
            param(
                "monitor.max_imbalance_ratio",
                "Option<f64>",
                opt(max_imbalance_ratio),
            ),
            param(
                "monitor.max_local_dsq_depth",
                "Option<u32>",
                opt(max_local_dsq_depth),
            ),
            param("monitor.fail_on_stuck", "bool", on(fail_on_stuck)),
            param(
                "monitor.sustained_samples",
                "u32",
                Some(sustained_samples.to_string()),
            ),
            param("monitor.enforce", "bool", on(enforce)),
        ],
        Gate::Snapshots => vec![param("num_snapshots", "u32", Some("0".into()))],
        Gate::Payload => vec![param(
            "checks",
            "Vec<PayloadCheck>",
            Some("ExitCode(0)".into()),
        )],
    }
}

/// The perf-delta gate: one `perf_delta_assertions` element, judged by
/// `cargo ktstr perf-delta` against a baseline.
fn perf_delta_gate() -> Item {
    // Exhaustive: a new field of the gate does not compile until it is listed.
    let PerfDeltaGate {
        metric: _,
        direction: _,
        max_regression_pct: _,
        min_abs: _,
        phase: _,
    } = PerfDeltaGate {
        metric: "",
        direction: None,
        max_regression_pct: None,
        min_abs: None,
        phase: None,
    };
    item(
        "perf_delta",
        "a metric must not regress against the baseline commit (cargo ktstr perf-delta)",
        vec![
            param("metric", "String", None),
            param(
                "direction",
                "Option<Polarity>",
                Some("the metric's polarity".into()),
            ),
            param(
                "max_regression_pct",
                "Option<f64>",
                Some("perf-delta's default".into()),
            ),
            param(
                "min_abs",
                "Option<f64>",
                Some("perf-delta's default".into()),
            ),
            param("phase", "Option<u16>", Some("whole run".into())),
        ],
    )
}

fn gates() -> Vec<Item> {
    Gate::ALL
        .iter()
        .map(|&g| item(g.as_str(), g.about(), gate_params(g)))
        .chain([perf_delta_gate()])
        .collect()
}

/// Every `#[ktstr_test]` attribute with its default from [`TestAttrs::DEFAULT`].
/// Exhaustive: a new attribute field does not compile until it is described.
fn attributes() -> Vec<Item> {
    let TestAttrs {
        numa_nodes,
        llcs,
        cores,
        threads,
        memory_mib,
        cpu_budget,
        scheduler,
        sysctls,
        kargs,
        includes,
        duration_s,
        num_snapshots,
        expect_err,
        perf_delta_assertions,
        gauntlet,
        ignore,
        host_only,
        constraints,
    } = TestAttrs::DEFAULT;
    let Constraints {
        min_numa_nodes,
        max_numa_nodes,
        min_llcs,
        max_llcs,
        min_cpus,
        max_cpus,
        requires_smt,
    } = constraints;
    let a = |name: &str, ty: &str, default: String, about: &str| {
        item(name, about, vec![param("value", ty, Some(default))])
    };
    let list = |l: &[&str]| format!("{l:?}");
    let bound = |v: u32| {
        if v == u32::MAX {
            "any".to_string()
        } else {
            v.to_string()
        }
    };
    vec![
        a("numa_nodes", "u32", numa_nodes.to_string(), "NUMA nodes"),
        a("llcs", "u32", llcs.to_string(), "LLCs in total"),
        a("cores", "u32", cores.to_string(), "cores per LLC"),
        a("threads", "u32", threads.to_string(), "threads per core"),
        a(
            "memory_mib",
            "u64",
            memory_mib.map_or("64 per vCPU, at least 512".into(), |m| m.to_string()),
            "guest memory in MiB (at least 256)",
        ),
        a(
            "cpu_budget",
            "u32",
            cpu_budget.map_or("min(vCPUs, host CPUs)".into(), |c| c.to_string()),
            "host CPUs the vCPU threads are pinned to",
        ),
        a(
            "scheduler",
            "&str",
            format!("{scheduler:?}"),
            "sched_ext scheduler name or path, or eevdf",
        ),
        a("sysctls", "[&str]", list(sysctls), "\"key=value\" sysctls set before the scenario"),
        a("kargs", "[&str]", list(kargs), "extra kernel arguments"),
        a("includes", "[&str]", list(includes), "host files packed as /bin/<name>"),
        a("duration_s", "u64", duration_s.to_string(), "workload duration in seconds"),
        a(
            "num_snapshots",
            "u32",
            num_snapshots.to_string(),
            "periodic snapshots spread over the run",
        ),
        a(
            "expect_err",
            "bool",
            expect_err.to_string(),
            "the run must fail; the verdict is inverted",
        ),
        a(
            "perf_delta_assertions",
            "[\"metric\" | (metric = .., direction = .., max_regression_pct = .., min_abs = .., phase = ..)]",
            format!("{:?}", perf_delta_assertions.iter().map(|g| g.metric).collect::<Vec<_>>()),
            "regression gates recorded for cargo ktstr perf-delta",
        ),
        a(
            "gauntlet",
            "bool",
            gauntlet.to_string(),
            "one extra variant per fitting topology preset",
        ),
        a("ignore", "bool", ignore.to_string(), "the base variant is ignored"),
        a(
            "host_only",
            "bool",
            host_only.to_string(),
            "no VM: the checks run on the host; same sidecar",
        ),
        a("min_numa_nodes", "u32", bound(min_numa_nodes), "gauntlet: fewest NUMA nodes of a preset"),
        a("max_numa_nodes", "u32", bound(max_numa_nodes), "gauntlet: most NUMA nodes of a preset"),
        a("min_llcs", "u32", bound(min_llcs), "gauntlet: fewest LLCs of a preset"),
        a("max_llcs", "u32", bound(max_llcs), "gauntlet: most LLCs of a preset"),
        a("min_cpus", "u32", bound(min_cpus), "gauntlet: fewest vCPUs of a preset"),
        a("max_cpus", "u32", bound(max_cpus), "gauntlet: most vCPUs of a preset"),
        a(
            "requires_smt",
            "bool",
            requires_smt.to_string(),
            "gauntlet: only presets with SMT",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use ktstr_sidecar::PerfDeltaAssertionRecord;
    use serde::de::DeserializeOwned;

    use super::*;

    /// Every variant name serde knows for an internally tagged enum, read from the
    /// error it gives for an unknown tag ("expected one of `a`, `b`").
    fn serde_variants<T: DeserializeOwned + std::fmt::Debug>(tag: &str) -> BTreeSet<String> {
        let err = serde_json::from_value::<T>(serde_json::json!({ tag: "__no_such__" }))
            .expect_err("an unknown tag is refused")
            .to_string();
        let list = err
            .split("expected one of")
            .nth(1)
            .unwrap_or_else(|| panic!("unexpected serde error: {err}"));
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    fn names(items: &[Item]) -> BTreeSet<String> {
        items.iter().map(|i| i.name.clone()).collect()
    }

    #[test]
    fn every_work_type_is_listed() {
        let listed: BTreeSet<String> = WorkType::all()
            .iter()
            .map(|w| {
                serde_json::to_value(w).unwrap()["type"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            listed,
            serde_variants::<WorkType>("type"),
            "WorkType::all() misses a variant"
        );
        let c = Catalog::new();
        assert_eq!(c.work_types.len(), WorkType::all().len());
        assert_eq!(names(&c.work_types).len(), c.work_types.len());
        let bursty = c.work_types.iter().find(|w| w.name == "Bursty").unwrap();
        let p: Vec<&str> = bursty.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(p, ["burst_ms", "sleep_ms"]);
    }

    #[test]
    fn every_op_is_listed_with_its_fields() {
        let examples = op_examples();
        let kinds: BTreeSet<String> = examples.iter().map(|o| o.kind().to_string()).collect();
        assert_eq!(kinds.len(), examples.len(), "one example per kind");
        assert_eq!(
            kinds,
            serde_variants::<Op>("op"),
            "op_examples() misses a variant"
        );
        for op in &examples {
            let json = serde_json::to_value(op).unwrap();
            assert_eq!(json["op"], op.kind());
            if matches!(op, Op::AddCgroup(_)) {
                continue; // a newtype variant: its fields are the CgroupDef's
            }
            let fields: BTreeSet<&str> = json
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .filter(|k| *k != "op")
                .collect();
            let described: BTreeSet<&str> = op_doc(op).1.iter().map(|(n, _)| *n).collect();
            assert_eq!(fields, described, "{}", op.kind());
        }
        assert_eq!(camel("set_cpuset"), "SetCpuset");
        assert!(names(&Catalog::new().ops).contains("KillPayload"));
    }

    #[test]
    fn gates_cover_every_gate_and_the_perf_delta_record() {
        let c = Catalog::new();
        assert_eq!(c.gates.len(), Gate::ALL.len() + 1);
        assert_eq!(names(&c.gates).len(), c.gates.len());
        let record = serde_json::to_value(PerfDeltaAssertionRecord::default()).unwrap();
        let keys: BTreeSet<&str> = record
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let pd = c.gates.iter().find(|g| g.name == "perf_delta").unwrap();
        let params: BTreeSet<&str> = pd.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(keys, params);
        let gap = c.gates.iter().find(|g| g.name == "max_gap").unwrap();
        assert_eq!(gap.params[0].default.as_deref(), Some("2000"));
    }

    #[test]
    fn presets_scenarios_and_attributes_come_from_their_tables() {
        let c = Catalog::new();
        assert_eq!(c.presets.len(), PRESETS.len());
        assert_eq!(c.scenarios.len(), CANNED.len());
        assert_eq!(c.attributes.len(), 24);
        let wide = c.presets.iter().find(|p| p.name == "2n8l8c2t").unwrap();
        assert!(wide.description.contains("kvm engine only"), "{wide:?}");
        let small = c.presets.iter().find(|p| p.name == "1n1l2c1t").unwrap();
        assert!(!small.description.contains("kvm"));
        let llcs = c.attributes.iter().find(|a| a.name == "cores").unwrap();
        assert_eq!(llcs.params[0].default.as_deref(), Some("2"));
    }

    #[test]
    fn json_has_the_six_sections_of_named_described_items() {
        let j = serde_json::to_value(Catalog::new()).unwrap();
        for key in [
            "work_types",
            "ops",
            "presets",
            "scenarios",
            "gates",
            "attributes",
        ] {
            let list = j[key].as_array().unwrap_or_else(|| panic!("{key}"));
            assert!(!list.is_empty(), "{key}");
            for it in list {
                assert!(it["name"].is_string() && it["params"].is_array(), "{it}");
                assert!(!it["description"].as_str().unwrap().is_empty(), "{it}");
            }
        }
        let text = Catalog::new().render_text();
        assert!(text.contains("work types ("), "{text}");
        assert!(text.contains("burst_ms: integer = 10"), "{text}");
    }

    /// The names in the first column of the README table whose header starts with
    /// `| {header} |`.
    fn readme_table(readme: &str, header: &str) -> BTreeSet<String> {
        let start = format!("| {header} |");
        let mut lines = readme.lines().skip_while(|l| !l.starts_with(&start));
        assert!(lines.next().is_some(), "README has no `{start}` table");
        lines
            .skip(1) // the |---| row
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| {
                let first = l.split('|').nth(1)?.trim();
                let name = first.strip_prefix('`')?.strip_suffix('`')?;
                Some(name.to_string())
            })
            .collect()
    }

    /// The guide's catalog page is the catalog of this build.
    #[test]
    fn guide_catalog_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/guide/src/reference/catalog.md");
        let want = Catalog::new().render_markdown();
        if std::env::var_os("KTSTR_BLESS").is_some_and(|v| !v.is_empty()) {
            std::fs::write(&path, &want).unwrap();
        }
        let got = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            got == want,
            "{} is out of date: run `KTSTR_BLESS=1 cargo nextest run -p ktstr guide_catalog`",
            path.display()
        );
    }

    #[test]
    fn readme_tables_match_describe() {
        let readme = include_str!("../../../README.md");
        let c = Catalog::new();
        for (header, items) in [
            ("work type", &c.work_types),
            ("op", &c.ops),
            ("preset", &c.presets),
            ("canned scenario", &c.scenarios),
        ] {
            let in_readme = readme_table(readme, header);
            let described = names(items);
            let missing: Vec<_> = described.difference(&in_readme).collect();
            let extra: Vec<_> = in_readme.difference(&described).collect();
            assert!(
                missing.is_empty() && extra.is_empty(),
                "README `{header}` table: missing {missing:?}, not in `cargo ktstr describe` {extra:?}"
            );
        }
    }
}
