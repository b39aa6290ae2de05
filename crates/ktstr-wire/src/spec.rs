//! What the guest runs: the [`GuestSpec`], written by the host as JSON into the initramfs
//! at [`SPEC_PATH`] and read by the guest runtime at boot.

use serde::{Deserialize, Serialize};

use crate::scenario::{
    CgroupDef, Hold, Op, Scenario, SpecError, SpecErrorKind, Step, TopoSize, WorkSpec, WorkType,
    WorkerCount,
};
use crate::WireError;

/// Where the spec lives in the initramfs.
pub const SPEC_PATH: &str = "/ktstr/spec.json";
/// Spec format version this build writes and accepts.
pub const SPEC_VERSION: u32 = 1;
/// Largest spec file the guest accepts.
pub const MAX_SPEC_BYTES: usize = 4 << 20;

/// Most periodic snapshots a run may ask for.
pub const MAX_SNAPSHOTS: u32 = 64;
/// Shortest monitor interval.
pub const MIN_MONITOR_INTERVAL_MS: u32 = 10;
/// Most payloads one spec declares.
pub const MAX_PAYLOADS: usize = 64;
/// Most arguments of one payload.
pub const MAX_PAYLOAD_ARGS: usize = 256;
/// Longest payload name.
pub const MAX_PAYLOAD_NAME_LEN: usize = 64;

/// The guest's whole assignment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestSpec {
    pub version: u32,
    pub test_name: String,
    /// How long the workload runs: step holds given as fractions are fractions of this,
    /// and the whole scenario fits in it (the host may stop earlier through
    /// `stop_request`).
    pub duration_ms: u64,
    /// Flat worker groups, a test author's shorthand on the host: [`GuestSpec::materialize`]
    /// turns them into `scenario` once, before the spec is sent, so the wire carries one
    /// form (never serialised). Ignored when `scenario` is set.
    #[serde(skip)]
    pub workers: Vec<WorkerSpec>,
    /// The scenario to run (cgroups, workers, steps).
    #[serde(default)]
    pub scenario: Option<Scenario>,
    /// The system sampler.
    #[serde(default)]
    pub monitor: MonitorSpec,
    /// Periodic snapshots spread evenly over the scenario (0: none).
    #[serde(default)]
    pub num_snapshots: u32,
    /// Run one program instead of (after) the workers: `cargo ktstr shell --exec`.
    #[serde(default)]
    pub exec: Option<ExecSpec>,
    /// Give the console to `/bin/sh` (`cargo ktstr shell`).
    #[serde(default)]
    pub interactive_shell: bool,
    /// The sched_ext scheduler to start before the workload; None runs under EEVDF.
    #[serde(default)]
    pub scheduler: Option<crate::sched::SchedulerSpec>,
    /// Schedulers a `ReplaceScheduler` op names, besides the run's own (the host
    /// resolves and packs them).
    #[serde(default)]
    pub replacement_schedulers: Vec<crate::sched::SchedulerSpec>,
    /// `(key, value)` sysctls written before the scheduler starts (and without one).
    #[serde(default)]
    pub sysctls: Vec<(String, String)>,
    /// Programs the scenario's payload ops run (`Op::RunPayload` and friends name them).
    /// Without a scenario, each runs once to completion (see
    /// [`GuestSpec::effective_scenario`]).
    #[serde(default)]
    pub payloads: Vec<PayloadRun>,
}

/// A payload as the guest needs it: what to run and where. How its output becomes
/// metrics and what they are checked against stays on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadRun {
    /// Letters, digits, `_`, `-` and `.`; unique in the spec. Ops name it.
    pub name: String,
    /// Absolute path in the guest (`/bin/hackbench`).
    pub guest_path: String,
    pub args: Vec<String>,
    /// Scenario cgroup to run in (a path such as `cg0` or `outer/inner`, alive and a
    /// leaf whenever the payload starts); None runs it in the root cgroup, beside the
    /// guest runtime.
    #[serde(default)]
    pub cgroup: Option<String>,
}

impl PayloadRun {
    pub fn new(name: impl Into<String>, guest_path: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            guest_path: guest_path.into(),
            args: Vec::new(),
            cgroup: None,
        }
    }

    /// Checks what can be checked without the scenario: name, path, arguments.
    fn check(&self, field: &str) -> Result<(), SpecError> {
        let bad = |f: &str, kind, problem: String| {
            Err(SpecError::new(format!("{field}.{f}"), kind, problem))
        };
        let n = &self.name;
        if n.is_empty()
            || n.len() > MAX_PAYLOAD_NAME_LEN
            || !n
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return bad(
                "name",
                SpecErrorKind::BadName,
                format!(
                    "payload name `{n}` must be 1..={MAX_PAYLOAD_NAME_LEN} letters, digits, `_`, `-` or `.`"
                ),
            );
        }
        if !self.guest_path.starts_with('/') || self.guest_path.contains('\0') {
            return bad(
                "guest_path",
                SpecErrorKind::BadName,
                format!(
                    "`{}` is not an absolute path in the guest",
                    self.guest_path.escape_debug()
                ),
            );
        }
        if self.args.len() > MAX_PAYLOAD_ARGS {
            return bad(
                "args",
                SpecErrorKind::TooBig,
                format!(
                    "{} arguments, more than {MAX_PAYLOAD_ARGS}",
                    self.args.len()
                ),
            );
        }
        if let Some(i) = self.args.iter().position(|a| a.contains('\0')) {
            return bad(
                &format!("args[{i}]"),
                SpecErrorKind::BadName,
                "an argument holds a NUL byte".into(),
            );
        }
        Ok(())
    }
}

/// The guest's system sampler: per-CPU run queues, schedstat, sched_ext state, PSI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorSpec {
    pub enabled: bool,
    pub interval_ms: u32,
}

impl Default for MonitorSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_ms: 100,
        }
    }
}

/// `count` identical workers in one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub group: String,
    pub count: u32,
    pub work: WorkKind,
}

/// What a worker does. Tagged by `type` like the messages, so variants with fields can
/// follow (`{"type":"spin"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkKind {
    /// Burn CPU in fixed-size work units.
    Spin,
}

/// A program to run in the guest, its stdout/stderr streamed as output frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: Vec<(String, String)>,
}

impl GuestSpec {
    /// A spec with no work (fill in the fields you need).
    pub fn new(test_name: impl Into<String>, duration_ms: u64) -> Self {
        Self {
            version: SPEC_VERSION,
            test_name: test_name.into(),
            duration_ms,
            workers: Vec::new(),
            scenario: None,
            monitor: MonitorSpec::default(),
            num_snapshots: 0,
            exec: None,
            interactive_shell: false,
            scheduler: None,
            replacement_schedulers: Vec::new(),
            sysctls: Vec::new(),
            payloads: Vec::new(),
        }
    }

    /// Build the scenario once, on the host: `scenario` becomes [`Self::effective_scenario`]
    /// and the flat `workers` are cleared, so what is sent (and what the guest and the
    /// host's judges read afterwards) is the one scenario.
    pub fn materialize(&mut self) {
        self.scenario = self.effective_scenario();
        self.workers.clear();
    }

    /// The scenario the guest runs: `scenario`, else the flat `workers` and `payloads` as
    /// one step, with one cgroup per worker group, whose ops run every payload once to
    /// completion in order; the step then holds for the whole duration when there are
    /// workers, else for 1 ms (the payloads are the work). None when there is none of
    /// these.
    pub fn effective_scenario(&self) -> Option<Scenario> {
        if let Some(s) = &self.scenario {
            return Some(s.clone());
        }
        if self.workers.is_empty() && self.payloads.is_empty() {
            return None;
        }
        let mut s = Scenario::new();
        for w in &self.workers {
            let work = match w.work {
                WorkKind::Spin => WorkType::SpinWait,
            };
            s = s.cgroup(CgroupDef {
                workers: WorkerCount::Count(w.count),
                work: WorkSpec::new(work),
                ..CgroupDef::new(w.group.clone())
            });
        }
        if self.payloads.is_empty() {
            return Some(s.step(Step::new("workers", Hold::Fraction(1.0))));
        }
        let hold = if self.workers.is_empty() {
            Hold::Millis(1)
        } else {
            Hold::Fraction(1.0)
        };
        let step = self
            .payloads
            .iter()
            .fold(Step::new("payloads", hold), |step, p| {
                step.op(Op::RunPayload {
                    name: p.name.clone(),
                })
            });
        Some(s.step(step))
    }

    /// The sidecar's `work_type`: the primary work type of the scenario, `Exec` for a
    /// program, `none` otherwise.
    pub fn work_type_name(&self) -> String {
        match self.effective_scenario() {
            Some(s) => s
                .primary_work_type()
                .map_or("none", WorkType::name)
                .to_string(),
            None if self.exec.is_some() => "Exec".to_string(),
            None => "none".to_string(),
        }
    }

    /// Checks the whole spec against a topology's size before any VM boots; the error
    /// names the field.
    pub fn validate(&self, topo: TopoSize) -> Result<(), SpecError> {
        if self.scenario.is_some() && !self.workers.is_empty() {
            return Err(SpecError::new(
                "workers",
                SpecErrorKind::Conflict,
                "both `workers` and `scenario` are set; put the workers in the scenario",
            ));
        }
        if self.monitor.enabled && self.monitor.interval_ms < MIN_MONITOR_INTERVAL_MS {
            return Err(SpecError::new(
                "monitor.interval_ms",
                SpecErrorKind::OutOfRange,
                format!(
                    "{} ms is shorter than the minimum of {MIN_MONITOR_INTERVAL_MS} ms",
                    self.monitor.interval_ms
                ),
            ));
        }
        if self.num_snapshots > MAX_SNAPSHOTS {
            return Err(SpecError::new(
                "num_snapshots",
                SpecErrorKind::TooBig,
                format!("{} is more than {MAX_SNAPSHOTS}", self.num_snapshots),
            ));
        }
        if self.payloads.len() > MAX_PAYLOADS {
            return Err(SpecError::new(
                "payloads",
                SpecErrorKind::TooBig,
                format!("{} payloads, more than {MAX_PAYLOADS}", self.payloads.len()),
            ));
        }
        for (i, p) in self.payloads.iter().enumerate() {
            p.check(&format!("payloads[{i}]"))?;
            if let Some(j) = self.payloads[..i].iter().position(|q| q.name == p.name) {
                return Err(SpecError::new(
                    format!("payloads[{i}].name"),
                    SpecErrorKind::Conflict,
                    format!(
                        "payload `{}` is declared twice (also payloads[{j}])",
                        p.name
                    ),
                ));
            }
        }
        match self.effective_scenario() {
            Some(s) => {
                if self.duration_ms == 0 {
                    return Err(SpecError::new(
                        "duration_ms",
                        SpecErrorKind::NoHold,
                        "a scenario needs a duration above 0 ms",
                    ));
                }
                s.validate_with_payloads(topo, self.duration_ms, &self.payloads)
                    .map_err(|mut e| {
                        if self.scenario.is_none() {
                            // Name the field the caller wrote.
                            e.field = e.field.replacen("scenario.cgroups", "workers", 1);
                        }
                        e
                    })
            }
            None if self.num_snapshots > 0 => Err(SpecError::new(
                "num_snapshots",
                SpecErrorKind::Conflict,
                "snapshots are taken while a scenario runs, and there is none",
            )),
            None => Ok(()),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Plain strings, integers and vectors: serialising cannot fail.
        serde_json::to_vec_pretty(self).expect("GuestSpec serialises to JSON")
    }

    /// Parses and checks a spec file's contents.
    pub fn from_json(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() > MAX_SPEC_BYTES {
            return Err(WireError::TooLarge {
                what: "guest spec",
                len: bytes.len(),
                max: MAX_SPEC_BYTES,
            });
        }
        let spec: Self = serde_json::from_slice(bytes).map_err(|e| WireError::Decode {
            what: "guest spec",
            reason: e.to_string(),
        })?;
        if spec.version != SPEC_VERSION {
            return Err(WireError::Decode {
                what: "guest spec",
                reason: format!(
                    "version {}, this guest runtime reads version {SPEC_VERSION}: host and guest come from different ktstr builds",
                    spec.version
                ),
            });
        }
        if let Some(exec) = &spec.exec {
            if exec.argv.is_empty() {
                return Err(WireError::Decode {
                    what: "guest spec",
                    reason: "exec.argv is empty".into(),
                });
            }
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut s = GuestSpec::new("sched_basic", 2000);
        s.workers.push(WorkerSpec {
            group: "spinners".into(),
            count: 4,
            work: WorkKind::Spin,
        });
        s.exec = Some(ExecSpec {
            argv: vec!["/bin/true".into()],
            env: vec![("RUST_LOG".into(), "debug".into())],
        });
        // Flat workers never travel: the host sends the scenario built from them.
        let sent = GuestSpec::from_json(&s.to_json()).unwrap();
        assert!(sent.workers.is_empty() && sent.scenario.is_none());
        let scenario = s.effective_scenario();
        s.materialize();
        assert!(s.workers.is_empty());
        assert_eq!(s.scenario, scenario);
        assert_eq!(s.scenario.as_ref().unwrap().cgroups[0].name, "spinners");
        assert_eq!(GuestSpec::from_json(&s.to_json()).unwrap(), s);
    }

    #[test]
    fn round_trip_with_every_canned_scenario() {
        let topo = TopoSize::new(4, 2, 1);
        for (name, sc) in Scenario::canned(topo) {
            let mut s = GuestSpec::new(name, 3000);
            s.scenario = Some(sc);
            s.num_snapshots = 3;
            s.validate(topo).unwrap();
            assert_eq!(GuestSpec::from_json(&s.to_json()).unwrap(), s, "{name}");
        }
    }

    #[test]
    fn flat_workers_are_a_one_step_scenario() {
        let mut s = GuestSpec::new("smoke", 2000);
        s.workers.push(WorkerSpec {
            group: "spin".into(),
            count: 2,
            work: WorkKind::Spin,
        });
        let sc = s.effective_scenario().unwrap();
        assert_eq!(sc.cgroups.len(), 1);
        assert_eq!(sc.cgroups[0].name, "spin");
        assert_eq!(sc.cgroups[0].workers, WorkerCount::Count(2));
        assert_eq!(sc.hold_plan_ms(2000), [2000]);
        assert_eq!(s.work_type_name(), "SpinWait");
        s.validate(TopoSize::new(2, 1, 1)).unwrap();

        s.workers[0].count = 0;
        let e = s.validate(TopoSize::new(2, 1, 1)).unwrap_err();
        assert_eq!(e.kind, SpecErrorKind::ZeroWorkers);
        assert_eq!(e.field, "workers[0].workers");
    }

    #[test]
    fn spec_level_checks_name_their_field() {
        let topo = TopoSize::new(2, 1, 1);
        let mut s = GuestSpec::new("t", 1000);
        s.scenario = Some(Scenario::steady(topo));
        s.num_snapshots = 65;
        assert_eq!(s.validate(topo).unwrap_err().field, "num_snapshots");
        s.num_snapshots = 2;
        s.monitor.interval_ms = 1;
        assert_eq!(s.validate(topo).unwrap_err().field, "monitor.interval_ms");
        s.monitor.interval_ms = 100;
        s.workers.push(WorkerSpec {
            group: "x".into(),
            count: 1,
            work: WorkKind::Spin,
        });
        assert_eq!(s.validate(topo).unwrap_err().kind, SpecErrorKind::Conflict);
        let mut e = GuestSpec::new("exec", 0);
        e.exec = Some(ExecSpec {
            argv: vec!["/bin/true".into()],
            env: vec![],
        });
        e.validate(topo).unwrap();
        assert_eq!(e.work_type_name(), "Exec");
    }

    fn with_payloads(names: &[&str]) -> GuestSpec {
        let mut s = GuestSpec::new("p", 2000);
        s.payloads = names
            .iter()
            .map(|n| PayloadRun::new(*n, format!("/bin/{n}")))
            .collect();
        s
    }

    #[test]
    fn payloads_without_a_scenario_run_once_each_in_order() {
        let topo = TopoSize::new(2, 1, 1);
        let s = with_payloads(&["hackbench", "cyclictest"]);
        s.validate(topo).unwrap();
        let sc = s.effective_scenario().unwrap();
        assert!(sc.cgroups.is_empty());
        assert_eq!(sc.steps.len(), 1);
        assert_eq!(sc.payload_invocations(), ["hackbench", "cyclictest"]);
        assert_eq!(sc.steps[0].ops[0].kind(), "run_payload");
        // The payloads are the work: no hold worth waiting for.
        assert_eq!(sc.hold_plan_ms(2000), [1]);
        assert_eq!(s.work_type_name(), "none");

        // With flat workers, they keep their whole duration.
        let mut w = s.clone();
        w.workers.push(WorkerSpec {
            group: "spin".into(),
            count: 1,
            work: WorkKind::Spin,
        });
        w.validate(topo).unwrap();
        let sc = w.effective_scenario().unwrap();
        assert_eq!(sc.hold_plan_ms(2000), [2000]);
        assert_eq!(sc.cgroups.len(), 1);
        w.materialize();
        assert_eq!(w.scenario.as_ref(), Some(&sc));
        assert_eq!(GuestSpec::from_json(&w.to_json()).unwrap(), w);
    }

    fn step(ops: Vec<Op>) -> Step {
        ops.into_iter()
            .fold(Step::new("s", Hold::Fraction(0.5)), Step::op)
    }

    fn run(n: &str) -> Op {
        Op::RunPayload { name: n.into() }
    }
    fn start(n: &str) -> Op {
        Op::StartPayload { name: n.into() }
    }
    fn wait(n: &str) -> Op {
        Op::WaitPayload { name: n.into() }
    }
    fn kill(n: &str) -> Op {
        Op::KillPayload { name: n.into() }
    }

    fn scenario_err(s: &GuestSpec, steps: Vec<Vec<Op>>) -> SpecError {
        let mut s = s.clone();
        s.scenario = Some(Scenario {
            steps: steps.into_iter().map(step).collect(),
            ..Scenario::default()
        });
        s.validate(TopoSize::new(2, 1, 1)).unwrap_err()
    }

    #[test]
    fn payload_ops_must_name_declared_payloads_in_a_sane_order() {
        let s = with_payloads(&["bg", "fg"]);
        let ok = |steps: Vec<Vec<Op>>| {
            let mut s = s.clone();
            s.scenario = Some(Scenario {
                steps: steps.into_iter().map(step).collect(),
                ..Scenario::default()
            });
            s.validate(TopoSize::new(2, 1, 1))
        };
        ok(vec![vec![start("bg"), run("fg")], vec![wait("bg")]]).unwrap();
        ok(vec![
            vec![start("bg"), run("fg")],
            vec![kill("bg"), start("bg"), kill("bg")],
        ])
        .unwrap();

        let e = scenario_err(&s, vec![vec![run("fg"), run("nope"), start("bg")]]);
        assert_eq!(e.kind, SpecErrorKind::UnknownPayload);
        assert_eq!(e.field, "scenario.steps[0].ops[1].name");
        assert!(e.to_string().contains("known: bg, fg"), "{e}");

        let e = scenario_err(&s, vec![vec![run("fg"), wait("bg")]]);
        assert_eq!(e.kind, SpecErrorKind::PayloadState);
        assert_eq!(e.field, "scenario.steps[0].ops[1].name");

        let e = scenario_err(&s, vec![vec![start("bg"), run("bg")], vec![run("fg")]]);
        assert_eq!(e.kind, SpecErrorKind::PayloadState);
        assert!(e.to_string().contains("already running"), "{e}");

        let e = scenario_err(&s, vec![vec![run("fg")]]);
        assert_eq!(e.kind, SpecErrorKind::PayloadState);
        assert_eq!(e.field, "payloads[0]");
        assert!(e.to_string().contains("never run"), "{e}");

        // Payload ops alone make a scenario: no worker needed.
        let none = GuestSpec::new("p", 2000);
        let e = scenario_err(&none, vec![vec![run("fg")]]);
        assert_eq!(e.kind, SpecErrorKind::UnknownPayload);
        assert!(e.to_string().contains("known: none"), "{e}");
    }

    #[test]
    fn payload_cgroups_must_be_live_leaves_and_may_hold_no_workers() {
        let topo = TopoSize::new(2, 1, 1);
        let mut s = with_payloads(&["bench"]);
        s.payloads[0].cgroup = Some("box".into());
        // `box` has no workers: fine, the payload runs in it.
        s.scenario = Some(
            Scenario::new()
                .cgroup(CgroupDef::new("box").workers(0))
                .cgroup(CgroupDef::new("load").workers(1))
                .step(step(vec![start("bench")]))
                .step(step(vec![wait("bench")])),
        );
        s.validate(topo).unwrap();
        // The worker-less cgroup does not name the work type; `load` does.
        assert_eq!(s.work_type_name(), "SpinWait");
        let mut alone = s.clone();
        if let Some(sc) = alone.scenario.as_mut() {
            sc.cgroups.truncate(1);
        }
        alone.validate(topo).unwrap();
        assert_eq!(alone.work_type_name(), "none");

        // Without a payload in it, an empty cgroup is still an error.
        let mut gone = s.clone();
        gone.payloads[0].cgroup = Some("nowhere".into());
        let e = gone.validate(topo).unwrap_err();
        assert_eq!(e.kind, SpecErrorKind::ZeroWorkers);
        assert_eq!(e.field, "scenario.cgroups[0].workers");
        // A payload cgroup that does not exist when it starts.
        if let Some(sc) = gone.scenario.as_mut() {
            sc.cgroups.remove(0);
        }
        let e = gone.validate(topo).unwrap_err();
        assert_eq!(e.field, "payloads[0].cgroup");
        assert_eq!(e.kind, SpecErrorKind::UnknownCgroup);
        assert!(e.to_string().contains("scenario.steps[0].ops[0]"), "{e}");

        let mut removed = s.clone();
        if let Some(sc) = removed.scenario.as_mut() {
            sc.steps[1].ops.insert(
                0,
                Op::RemoveCgroup {
                    cgroup: "box".into(),
                },
            );
        }
        let e = removed.validate(topo).unwrap_err();
        assert_eq!(e.kind, SpecErrorKind::PayloadState);
        assert_eq!(e.field, "scenario.steps[1].ops[0].cgroup");
    }

    #[test]
    fn payload_declarations_are_checked() {
        let topo = TopoSize::new(2, 1, 1);
        let mut s = with_payloads(&["a", "a"]);
        let e = s.validate(topo).unwrap_err();
        assert_eq!(e.field, "payloads[1].name");
        assert_eq!(e.kind, SpecErrorKind::Conflict);
        s.payloads[1].name = "b c".into();
        assert_eq!(s.validate(topo).unwrap_err().field, "payloads[1].name");
        s.payloads[1].name = "b".into();
        s.payloads[1].guest_path = "bin/b".into();
        assert_eq!(
            s.validate(topo).unwrap_err().field,
            "payloads[1].guest_path"
        );
        s.payloads[1].guest_path = "/bin/b".into();
        s.payloads[1].args = vec!["ok".into(), "bad\0".into()];
        assert_eq!(s.validate(topo).unwrap_err().field, "payloads[1].args[1]");
        s.payloads[1].args.pop();
        s.validate(topo).unwrap();
    }

    #[test]
    fn json_shape() {
        // A `workers` key (an old host's) is not part of the wire any more: ignored.
        let s = GuestSpec::from_json(
            br#"{"version":1,"test_name":"t","duration_ms":5,
                 "workers":[{"group":"a","count":2,"work":{"type":"spin"}}]}"#,
        )
        .unwrap();
        assert!(s.workers.is_empty());
        assert_eq!(s.exec, None);
        assert!(!s.interactive_shell);
    }

    #[test]
    fn bad_specs_are_errors() {
        for bad in [
            &br#"{"version":2,"test_name":"t","duration_ms":5}"#[..],
            br#"{"version":1,"test_name":"t"}"#,
            br#"{"version":1,"test_name":"t","duration_ms":5,"scenario":{"cgroups":[{"name":"a","work":{"work_type":{"type":"teleport"}}}],"steps":[]}}"#,
            br#"{"version":1,"test_name":"t","duration_ms":5,"exec":{"argv":[]}}"#,
            b"not json",
        ] {
            assert!(
                GuestSpec::from_json(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
