//! What the guest runs: the [`GuestSpec`], written by the host as JSON into the initramfs
//! at [`SPEC_PATH`] and read by the guest runtime at boot.

use serde::{Deserialize, Serialize};

use crate::scenario::{
    CgroupDef, Hold, Scenario, SpecError, SpecErrorKind, Step, TopoSize, WorkSpec, WorkType,
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

/// The guest's whole assignment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestSpec {
    pub version: u32,
    pub test_name: String,
    /// How long the workload runs: step holds given as fractions are fractions of this,
    /// and the whole scenario fits in it (the host may stop earlier through
    /// `stop_request`).
    pub duration_ms: u64,
    /// Flat worker groups (the first-light form): run as a one-step scenario with one
    /// cgroup per group. Ignored when `scenario` is set.
    #[serde(default)]
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
    /// `(key, value)` sysctls written before the scheduler starts (and without one).
    #[serde(default)]
    pub sysctls: Vec<(String, String)>,
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
            sysctls: Vec::new(),
        }
    }

    /// The scenario the guest runs: `scenario`, else the flat `workers` as one step
    /// holding for the whole duration with one cgroup per group; None when neither.
    pub fn effective_scenario(&self) -> Option<Scenario> {
        if let Some(s) = &self.scenario {
            return Some(s.clone());
        }
        if self.workers.is_empty() {
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
        Some(s.step(Step::new("workers", Hold::Fraction(1.0))))
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
        match self.effective_scenario() {
            Some(s) => {
                if self.duration_ms == 0 {
                    return Err(SpecError::new(
                        "duration_ms",
                        SpecErrorKind::NoHold,
                        "a scenario needs a duration above 0 ms",
                    ));
                }
                s.validate(topo, self.duration_ms).map_err(|mut e| {
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
        assert_eq!(GuestSpec::from_json(&s.to_json()).unwrap(), s);
    }

    #[test]
    fn round_trip_with_every_canned_scenario() {
        let topo = TopoSize::new(4, 2, 1);
        for (name, sc) in Scenario::canned(topo, 3000) {
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
        s.scenario = Some(Scenario::steady(topo, 1000));
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

    #[test]
    fn json_shape() {
        let s = GuestSpec::from_json(
            br#"{"version":1,"test_name":"t","duration_ms":5,
                 "workers":[{"group":"a","count":2,"work":{"type":"spin"}}]}"#,
        )
        .unwrap();
        assert_eq!(s.workers[0].work, WorkKind::Spin);
        assert_eq!(s.exec, None);
        assert!(!s.interactive_shell);
    }

    #[test]
    fn bad_specs_are_errors() {
        for bad in [
            &br#"{"version":2,"test_name":"t","duration_ms":5}"#[..],
            br#"{"version":1,"test_name":"t"}"#,
            br#"{"version":1,"test_name":"t","duration_ms":5,"workers":[{"group":"a","count":1,"work":{"type":"teleport"}}]}"#,
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
