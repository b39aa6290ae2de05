//! The guest's messages ([`Kind::MSG`] frames): one JSON object per frame, tagged by
//! `type` (`{"type":"ready", ...}`). To add a message, add a variant (and its struct if it
//! has many fields); an unknown `type` from a newer guest decodes to an error, not a panic.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{Frame, Kind, WireError};

/// Largest message payload [`decode_msg`] accepts (the frame limit is at most this).
pub const MAX_MSG_BYTES: usize = 1 << 20;

/// Everything the guest runtime reports to the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GuestMsg {
    /// PID 1 is up and attached to the ring.
    Ready {
        kernel_release: String,
        uptime_ms: u64,
        topology: SeenTopology,
    },
    /// A lifecycle phase started (`mounts`, `workers`, `collect`, ...).
    Phase { name: String, elapsed_ms: u64 },
    /// A log line of the guest runtime.
    Log { level: LogLevel, text: String },
    /// One worker's measurements, taken by the worker itself.
    WorkerReport(WorkerReport),
    /// A scenario step started (before its ops) or ended (after its hold).
    Stimulus(Stimulus),
    /// One system sample, taken every `MonitorSpec::interval_ms` while the scenario runs.
    MonitorSample(MonitorSample),
    /// One of the `num_snapshots` periodic captures.
    Snapshot(Snapshot),
    /// The scenario finished (workers collected, cgroups removed): what the guest sent.
    ScenarioEnd(ScenarioEnd),
    /// The `exec` program ended: its exit code, or 128 + signal number if it was killed.
    ExecExit { status: i32 },
    /// The guest runtime panicked.
    Panic { message: String },
    /// The scheduler supervisor saw something (started, attached, ejected, ...).
    Scheduler(crate::sched::SchedEvent),
    /// The scheduler's struct_ops programs with their verifier cost, after attach.
    VerifierStats { progs: Vec<crate::sched::ProgInsns> },
    /// One payload invocation ended: its exit status and (bounded) output.
    PayloadResult(PayloadResult),
    /// The guest runtime finished; it reboots next.
    Done { exit_code: i32, elapsed_ms: u64 },
}

/// Most stdout bytes a [`PayloadResult`] carries (head and tail of longer output).
pub const MAX_PAYLOAD_STDOUT: usize = 256 * 1024;
/// Most stderr bytes a [`PayloadResult`] carries.
pub const MAX_PAYLOAD_STDERR: usize = 64 * 1024;

/// One payload invocation, reported when it ended. Output is cut to
/// [`MAX_PAYLOAD_STDOUT`] / [`MAX_PAYLOAD_STDERR`] bytes, and further if its JSON
/// encoding would not fit one message ([`PayloadResult::fit`]), keeping the head and
/// the tail with a marker line between them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadResult {
    /// The payload's name (`GuestSpec::payloads[i].name`).
    pub name: String,
    /// Position among the run's invocations in the order they started (0, 1, ...): the
    /// `n`-th `RunPayload`/`StartPayload` op the scenario executed.
    pub invocation: u32,
    /// Its exit code; negative when a signal killed it (-9 for SIGKILL); 127 when it
    /// could not start (`note` says why).
    pub exit_code: i32,
    /// Standard output (invalid UTF-8 replaced), possibly cut.
    pub stdout: String,
    /// Bytes it wrote to stdout in all.
    pub stdout_bytes: u64,
    /// `stdout` is not all of it.
    pub stdout_truncated: bool,
    pub stderr: String,
    pub stderr_bytes: u64,
    pub stderr_truncated: bool,
    /// Wall time from start to exit.
    pub wall_ms: u64,
    /// Why it ended the way it did when the guest ended it or could not start it
    /// (`killed by KillPayload`, `killed at the end of the scenario`, ...).
    #[serde(default)]
    pub note: Option<String>,
}

/// `text` cut to at most `max` bytes (on character boundaries): its first quarter and
/// its last three quarters around a marker line naming how much was cut. None when it
/// already fits.
pub fn cut_middle(text: &str, max: usize) -> Option<String> {
    if text.len() <= max {
        return None;
    }
    let marker_room = 64.min(max);
    let keep = max - marker_room;
    let mut head = keep / 4;
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = text.len() - (keep - head);
    while !text.is_char_boundary(tail) {
        tail += 1;
    }
    let cut = tail - head;
    let marker = format!("\n[ktstr: {cut} bytes cut]\n");
    let marker = if marker.len() <= marker_room {
        marker
    } else {
        String::new()
    };
    Some(format!("{}{marker}{}", &text[..head], &text[tail..]))
}

impl PayloadResult {
    /// Cuts `stdout` and `stderr` (the longer first) until the message encodes in at
    /// most `max_bytes` (escaping can make JSON several times longer than the text).
    pub fn fit(&mut self, max_bytes: usize) {
        for _ in 0..64 {
            let len = encode_msg(&GuestMsg::PayloadResult(self.clone())).len();
            if len <= max_bytes {
                return;
            }
            let (text, flag) = if self.stdout.len() >= self.stderr.len() {
                (&mut self.stdout, &mut self.stdout_truncated)
            } else {
                (&mut self.stderr, &mut self.stderr_truncated)
            };
            if text.is_empty() {
                return;
            }
            // Shrink the text in proportion to what its encoding may take; always by
            // at least an eighth, so this ends.
            let encoded = serde_json::to_string(text.as_str()).map_or(len, |e| e.len());
            let room = max_bytes.saturating_sub(len - encoded.min(len));
            let target = (text.len() as u128 * room as u128 / encoded.max(1) as u128) as usize;
            let target = target.min(text.len() - text.len().div_ceil(8));
            *text = cut_middle(text, target).unwrap_or_default();
            *flag = true;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

/// A worker's report, measured by the worker itself. Times are nanoseconds; `*_at_ms`
/// stamps are milliseconds since the scenario started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Cgroup it was started in (path relative to the test's cgroup, `outer/heavy`).
    pub group: String,
    /// Index among the workers started in that cgroup, from 0 (spawned ones continue
    /// the count).
    pub index: u32,
    pub pid: i32,
    /// Cgroup it was in when it ended (differs from `group` after `MoveTasks`); empty
    /// when `/proc/self/cgroup` could not be read.
    #[serde(default)]
    pub cgroup: String,
    /// Work type name (`SpinWait`).
    #[serde(default)]
    pub work_type: String,
    /// Work units completed (what a unit is depends on the work type).
    pub work_units: u64,
    /// User + system CPU time (getrusage).
    pub cpu_time_ns: u64,
    /// Wall time from the worker's start to its end.
    pub wall_time_ns: u64,
    /// `wall_time_ns - cpu_time_ns`: time runnable-but-waiting, sleeping or blocked.
    #[serde(default)]
    pub off_cpu_ns: u64,
    /// Time spent runnable but waiting for a CPU (`/proc/self/schedstat` field 2).
    pub run_delay_ns: u64,
    /// Times it was scheduled in (`/proc/self/schedstat` field 3).
    pub run_count: u64,
    /// Time on CPU as the scheduler counts it (`/proc/self/schedstat` field 1).
    #[serde(default)]
    pub schedstat_cpu_ns: u64,
    /// Times it was seen on a different CPU than at the previous check.
    pub migrations: u64,
    /// CPUs it was seen on, ascending.
    pub cpus_used: Vec<u32>,
    /// CPUs it was allowed on at the end (`sched_getaffinity`: cpuset and affinity).
    #[serde(default)]
    pub allowed_cpus: Vec<u32>,
    /// Largest wall gap between two consecutive progress checkpoints.
    pub max_gap_ns: u64,
    /// CPU it was on when that gap ended.
    #[serde(default)]
    pub max_gap_cpu: Option<u32>,
    /// When that gap ended.
    #[serde(default)]
    pub max_gap_at_ms: u64,
    /// Nice value at the end.
    #[serde(default)]
    pub nice: i32,
    /// When it started working (after its cgroup placement) and when it stopped.
    #[serde(default)]
    pub started_at_ms: u64,
    #[serde(default)]
    pub ended_at_ms: u64,
    /// Wake-up latencies: from the waker's wake call to this worker running. A uniform
    /// sample of at most [`MAX_LATENCY_SAMPLES`] of the `wake_samples_total` measured.
    #[serde(default)]
    pub wake_latency_ns: Vec<u64>,
    #[serde(default)]
    pub wake_samples_total: u64,
    /// Timer latencies: how much later than requested a sleep ended. Sampled like wake
    /// latencies.
    #[serde(default)]
    pub timer_latency_ns: Vec<u64>,
    #[serde(default)]
    pub timer_samples_total: u64,
    /// Periods whose run ended after the period's end (`PeriodicDuty`; 0 for work
    /// types without deadlines).
    #[serde(default)]
    pub deadline_misses: u64,
    /// Scheduling policy at the end (`other`, `fifo:10`, `ext`); None from a runtime
    /// that does not report it.
    #[serde(default)]
    pub policy: Option<String>,
    /// What went wrong inside the worker without stopping it (a failed `setaffinity`),
    /// at most a few lines.
    #[serde(default)]
    pub errors: Vec<String>,
}

/// Most latency samples one worker keeps per kind (a uniform reservoir sample).
pub const MAX_LATENCY_SAMPLES: usize = 512;

/// Whether a stimulus opens or closes a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepPhase {
    /// Before the step's ops.
    Start,
    /// After the step's hold.
    End,
}

/// A step boundary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stimulus {
    /// Milliseconds since the scenario started (cgroups created, workers released).
    pub elapsed_ms: u64,
    /// Step number, from 1 (0 is the settle/baseline phase before step 1).
    pub step_index: u16,
    pub phase: StepPhase,
    /// The step's label.
    pub label: String,
    /// Ops of the step.
    pub op_count: u32,
    /// Their kinds in order (`set_cpuset`, ...).
    pub op_kinds: Vec<String>,
    /// Cgroups and running workers at this moment.
    pub cgroups: u32,
    pub workers: u32,
    /// Work units completed by all workers so far (live counters of every worker ever
    /// started).
    pub iterations_so_far: u64,
    /// The same per cgroup the workers were started in.
    pub cgroup_iterations: BTreeMap<String, u64>,
    /// Ops that failed (on `end`): what and why.
    #[serde(default)]
    pub op_errors: Vec<String>,
}

/// The guest's view of the scheduler, sampled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitorSample {
    /// Milliseconds since the scenario started.
    pub elapsed_ms: u64,
    /// One entry per online CPU.
    pub cpus: Vec<CpuSample>,
    /// sched_ext state; None when the kernel has no `/sys/kernel/sched_ext`.
    pub scx: Option<ScxSample>,
    /// `/proc/pressure/cpu`; None without PSI.
    pub psi_cpu: Option<Psi>,
    /// `/proc/pressure/irq`; None without IRQ PSI.
    pub psi_irq: Option<Psi>,
}

/// One CPU in a sample. Counters are cumulative since boot; the host takes deltas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuSample {
    pub cpu: u32,
    /// Runnable tasks on its run queue (sched debugfs); None when not visible.
    pub nr_running: Option<u32>,
    /// Run-queue clock (sched debugfs `.clock`); a clock that stops while tasks are
    /// runnable is a stall.
    pub rq_clock_ns: Option<u64>,
    /// `/proc/schedstat` counters; None when schedstats are off.
    pub schedstat: Option<CpuSchedstat>,
}

/// The per-CPU line of `/proc/schedstat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuSchedstat {
    pub yld_count: u64,
    pub sched_count: u64,
    pub sched_goidle: u64,
    pub ttwu_count: u64,
    pub ttwu_local: u64,
    /// Time tasks ran on this CPU, ns.
    pub rq_cpu_time_ns: u64,
    /// Time tasks waited on this run queue, ns.
    pub run_delay_ns: u64,
    /// Tasks run (timeslices).
    pub pcount: u64,
}

/// `/sys/kernel/sched_ext`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScxSample {
    /// `state`: `enabled`, `disabled`, `enabling`, ...
    pub state: String,
    /// `root/ops`: the attached scheduler's name (None when none is attached).
    pub ops: Option<String>,
    /// `root/events` (kernels 6.16+): `SCX_EV_*` name -> cumulative count.
    pub events: BTreeMap<String, u64>,
}

/// A `/proc/pressure/*` file.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Psi {
    pub some: PsiLine,
    /// The `full` line (absent for CPU on old kernels).
    pub full: Option<PsiLine>,
}

/// One line of a PSI file: averages in percent, total stall time in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PsiLine {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    pub total_us: u64,
}

/// A periodic capture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// 0-based; `target` is `num_snapshots`.
    pub index: u32,
    pub target: u32,
    /// Milliseconds since the scenario started.
    pub elapsed_ms: u64,
    pub cgroups: Vec<CgroupSnapshot>,
    pub cpus: Vec<CpuSample>,
    pub scx: Option<ScxSample>,
}

/// A cgroup's counters at a snapshot (cumulative since its creation). Fields are None
/// when the file was missing or unreadable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupSnapshot {
    pub name: String,
    /// `cpu.stat`.
    pub usage_usec: Option<u64>,
    pub user_usec: Option<u64>,
    pub system_usec: Option<u64>,
    pub nr_periods: Option<u64>,
    pub nr_throttled: Option<u64>,
    pub throttled_usec: Option<u64>,
    /// `cgroup.events`.
    pub populated: Option<bool>,
    pub frozen: Option<bool>,
    /// `cpuset.cpus.effective`.
    pub cpus_effective: Option<String>,
    /// Processes in `cgroup.procs`.
    pub nr_procs: Option<u32>,
}

/// What the scenario run did, sent once at its end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScenarioEnd {
    /// Milliseconds since the scenario started.
    pub elapsed_ms: u64,
    /// Steps whose hold completed.
    pub steps_completed: u32,
    pub workers_started: u32,
    /// Worker reports sent (the rest are named in Log errors).
    pub workers_reported: u32,
    pub monitor_samples: u64,
    pub snapshots_taken: u32,
    /// CPU time the sampler thread used for samples and snapshots, in microseconds:
    /// what measuring cost the workload.
    #[serde(default)]
    pub monitor_cpu_us: u64,
    /// Why it ended early (stop request, setup failure); None when it ran to the end.
    pub aborted: Option<String>,
}

/// What the guest kernel shows of the CPU topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenTopology {
    /// `/sys/devices/system/cpu/online`, e.g. `0-3`.
    pub online: String,
    /// Number of CPUs in `cpus`.
    pub cpu_count: u32,
    pub cpus: Vec<SeenCpu>,
    pub numa_nodes: u32,
    pub llcs: u32,
    /// Most cores found in one LLC.
    pub cores_per_llc: u32,
    /// Most threads found in one core.
    pub threads_per_core: u32,
    /// Every LLC has the same number of cores and every core the same number of threads,
    /// and the counts multiply to `cpu_count`.
    pub uniform: bool,
}

/// One online CPU as sysfs describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenCpu {
    pub cpu: u32,
    /// `topology/core_id` (unique within a package).
    pub core_id: u32,
    /// `topology/physical_package_id`.
    pub package_id: u32,
    /// First CPU of `cache/index3/shared_cpu_list`, or of the package when there is no L3.
    pub llc_id: u32,
    /// NUMA node whose `cpulist` holds this CPU (0 without NUMA).
    pub node: u32,
}

impl SeenTopology {
    /// Derives the counts from the per-CPU table. The host can re-derive them from the
    /// same table rather than trust the guest's numbers.
    pub fn derive(online: String, mut cpus: Vec<SeenCpu>) -> Self {
        cpus.sort_by_key(|c| c.cpu);
        let nodes: BTreeSet<u32> = cpus.iter().map(|c| c.node).collect();
        // llc -> core (package, core_id) -> threads
        let mut llcs: BTreeMap<u32, BTreeMap<(u32, u32), u32>> = BTreeMap::new();
        for c in &cpus {
            *llcs
                .entry(c.llc_id)
                .or_default()
                .entry((c.package_id, c.core_id))
                .or_default() += 1;
        }
        let core_counts: BTreeSet<usize> = llcs.values().map(BTreeMap::len).collect();
        let thread_counts: BTreeSet<u32> =
            llcs.values().flat_map(|c| c.values()).copied().collect();
        let cores_per_llc = core_counts.last().copied().unwrap_or(0) as u32;
        let threads_per_core = thread_counts.last().copied().unwrap_or(0);
        let cpu_count = cpus.len() as u32;
        let uniform = core_counts.len() <= 1
            && thread_counts.len() <= 1
            && u64::from(cpu_count)
                == llcs.len() as u64 * u64::from(cores_per_llc) * u64::from(threads_per_core);
        Self {
            online,
            cpu_count,
            cpus,
            numa_nodes: nodes.len() as u32,
            llcs: llcs.len() as u32,
            cores_per_llc,
            threads_per_core,
            uniform,
        }
    }

    /// The size a scenario is checked against in the guest: CPUs, LLCs and nodes seen.
    pub fn size(&self) -> ktstr_topology::TopoSize {
        ktstr_topology::TopoSize::new(self.cpu_count, self.llcs, self.numa_nodes)
    }

    /// `{n}n{l}l{c}c{t}t`, e.g. `1n2l2c1t`, comparable with a declared topology's label.
    pub fn label(&self) -> String {
        format!(
            "{}n{}l{}c{}t",
            self.numa_nodes, self.llcs, self.cores_per_llc, self.threads_per_core
        )
    }
}

/// JSON payload of a [`Kind::MSG`] frame.
pub fn encode_msg(msg: &GuestMsg) -> Vec<u8> {
    // Serialising these types cannot fail: string keys, no non-finite floats.
    serde_json::to_vec(msg).expect("GuestMsg serialises to JSON")
}

/// Decodes a [`Kind::MSG`] frame, capping its size.
pub fn decode_msg(frame: &Frame) -> Result<GuestMsg, WireError> {
    if frame.kind != Kind::MSG {
        return Err(WireError::WrongKind {
            expected: Kind::MSG.0,
            found: frame.kind.0,
        });
    }
    if frame.payload.len() > MAX_MSG_BYTES {
        return Err(WireError::TooLarge {
            what: "guest message",
            len: frame.payload.len(),
            max: MAX_MSG_BYTES,
        });
    }
    serde_json::from_slice(&frame.payload).map_err(|e| WireError::Decode {
        what: "guest message",
        reason: format!("{e} (frame seq {})", frame.seq),
    })
}

/// One message of every kind with realistic values: for tests, fuzz seeds and docs.
pub fn examples() -> Vec<GuestMsg> {
    let cpu = |cpu: u32, core_id: u32, llc_id: u32| SeenCpu {
        cpu,
        core_id,
        package_id: 0,
        llc_id,
        node: 0,
    };
    let topo = SeenTopology::derive("0-1".into(), vec![cpu(0, 0, 0), cpu(1, 1, 0)]);
    vec![
        GuestMsg::Ready {
            kernel_release: "7.2.13".into(),
            uptime_ms: 2400,
            topology: topo,
        },
        GuestMsg::Phase {
            name: "workers".into(),
            elapsed_ms: 5,
        },
        GuestMsg::Log {
            level: LogLevel::Warn,
            text: "no bpffs".into(),
        },
        GuestMsg::WorkerReport(WorkerReport {
            group: "g".into(),
            index: 1,
            pid: 42,
            cgroup: "g".into(),
            work_type: "PipeIo".into(),
            work_units: 1000,
            cpu_time_ns: 1,
            wall_time_ns: 2,
            off_cpu_ns: 1,
            run_delay_ns: 3,
            run_count: 4,
            migrations: 5,
            cpus_used: vec![0, 3],
            allowed_cpus: vec![0, 1, 2, 3],
            max_gap_ns: 6,
            max_gap_cpu: Some(3),
            wake_latency_ns: vec![1500, 2500],
            wake_samples_total: 9,
            ..Default::default()
        }),
        GuestMsg::Stimulus(Stimulus {
            elapsed_ms: 10,
            step_index: 1,
            phase: StepPhase::End,
            label: "swap".into(),
            op_count: 1,
            op_kinds: vec!["swap_cpusets".into()],
            cgroups: 2,
            workers: 4,
            iterations_so_far: 77,
            cgroup_iterations: [("cg0".to_string(), 70u64), ("cg1".to_string(), 7)]
                .into_iter()
                .collect(),
            op_errors: vec![],
        }),
        GuestMsg::MonitorSample(MonitorSample {
            elapsed_ms: 100,
            cpus: vec![CpuSample {
                cpu: 0,
                nr_running: Some(2),
                rq_clock_ns: Some(5_000_000),
                schedstat: Some(CpuSchedstat {
                    run_delay_ns: 9,
                    pcount: 3,
                    ..Default::default()
                }),
            }],
            scx: Some(ScxSample {
                state: "enabled".into(),
                ops: Some("simple".into()),
                events: [("SCX_EV_SELECT_CPU_FALLBACK".to_string(), 4u64)]
                    .into_iter()
                    .collect(),
            }),
            psi_cpu: Some(Psi {
                some: PsiLine {
                    avg10: 1.25,
                    avg60: 0.5,
                    avg300: 0.0,
                    total_us: 12345,
                },
                full: None,
            }),
            psi_irq: None,
        }),
        GuestMsg::Snapshot(Snapshot {
            index: 0,
            target: 2,
            elapsed_ms: 700,
            cgroups: vec![CgroupSnapshot {
                name: "cg0".into(),
                usage_usec: Some(1000),
                user_usec: Some(900),
                system_usec: Some(100),
                nr_periods: Some(0),
                nr_throttled: Some(0),
                throttled_usec: Some(0),
                populated: Some(true),
                frozen: Some(false),
                cpus_effective: Some("0-1".into()),
                nr_procs: Some(2),
            }],
            cpus: vec![],
            scx: None,
        }),
        GuestMsg::ScenarioEnd(ScenarioEnd {
            elapsed_ms: 2000,
            steps_completed: 1,
            workers_started: 4,
            workers_reported: 4,
            monitor_samples: 20,
            snapshots_taken: 2,
            monitor_cpu_us: 4000,
            aborted: None,
        }),
        GuestMsg::ExecExit { status: 137 },
        GuestMsg::Panic {
            message: "boom".into(),
        },
        GuestMsg::Scheduler(crate::sched::SchedEvent::Ejected {
            state: "disabled".into(),
            kernel_reason: Some("runnable task stall".into()),
            watchdog_timeout_ms: Some(3000),
            elapsed_ms: 7,
        }),
        GuestMsg::VerifierStats {
            progs: vec![crate::sched::ProgInsns {
                id: 9,
                prog_type: crate::sched::BPF_PROG_TYPE_STRUCT_OPS,
                name: "stall_enqueue".into(),
                verified_insns: 42,
            }],
        },
        GuestMsg::PayloadResult(PayloadResult {
            name: "hackbench".into(),
            invocation: 2,
            exit_code: -9,
            stdout: "Time: 0.731\n".into(),
            stdout_bytes: 12,
            stderr: String::new(),
            wall_ms: 800,
            note: Some("killed by KillPayload".into()),
            ..Default::default()
        }),
        GuestMsg::Done {
            exit_code: 0,
            elapsed_ms: 1000,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(cpu: u32, core_id: u32, package_id: u32, llc_id: u32, node: u32) -> SeenCpu {
        SeenCpu {
            cpu,
            core_id,
            package_id,
            llc_id,
            node,
        }
    }

    fn frame(payload: &[u8]) -> Frame {
        Frame {
            kind: Kind::MSG,
            seq: 3,
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn topology_two_llcs_two_cores() {
        let t = SeenTopology::derive(
            "0-3".into(),
            vec![
                cpu(2, 0, 1, 2, 0),
                cpu(0, 0, 0, 0, 0),
                cpu(1, 1, 0, 0, 0),
                cpu(3, 1, 1, 2, 0),
            ],
        );
        assert_eq!(t.label(), "1n2l2c1t");
        assert_eq!(t.cpu_count, 4);
        assert!(t.uniform);
        assert_eq!(t.cpus[0].cpu, 0, "sorted by cpu");
    }

    #[test]
    fn topology_smt_and_numa() {
        // 2 nodes, 1 LLC each, 2 cores per LLC, 2 threads per core.
        let mut cpus = Vec::new();
        for c in 0..8u32 {
            let pkg = c / 4;
            cpus.push(cpu(c, (c % 4) / 2, pkg, pkg * 4, pkg));
        }
        let t = SeenTopology::derive("0-7".into(), cpus);
        assert_eq!(t.label(), "2n2l2c2t");
        assert!(t.uniform);
    }

    #[test]
    fn topology_non_uniform_is_flagged() {
        let t = SeenTopology::derive(
            "0-2".into(),
            vec![cpu(0, 0, 0, 0, 0), cpu(1, 1, 0, 0, 0), cpu(2, 0, 1, 2, 0)],
        );
        assert_eq!(t.label(), "1n2l2c1t");
        assert!(!t.uniform);
    }

    #[test]
    fn topology_empty_does_not_panic() {
        let t = SeenTopology::derive(String::new(), vec![]);
        assert_eq!(t.label(), "0n0l0c0t");
        assert!(t.uniform);
    }

    #[test]
    fn every_variant_round_trips() {
        for m in examples() {
            let back = decode_msg(&frame(&encode_msg(&m))).unwrap();
            assert_eq!(back, m);
        }
    }

    #[test]
    fn wire_form_is_internally_tagged() {
        let v: serde_json::Value =
            serde_json::from_slice(&encode_msg(&GuestMsg::ExecExit { status: 1 })).unwrap();
        assert_eq!(v, serde_json::json!({"type": "exec_exit", "status": 1}));
        let w: serde_json::Value =
            serde_json::from_slice(&encode_msg(&GuestMsg::WorkerReport(WorkerReport {
                group: "g".into(),
                ..Default::default()
            })))
            .unwrap();
        assert_eq!(w["type"], "worker_report");
        assert_eq!(w["group"], "g");
    }

    #[test]
    fn unknown_type_and_garbage_are_errors() {
        for bad in [
            &br#"{"type":"stimulus_event","step":1}"#[..],
            br#"{"type":"stimulus","step":1}"#,
            br#"{"status":1}"#,
            b"\xff\xfe",
            b"",
            br#"{"type":"done","exit_code":"x","elapsed_ms":1}"#,
        ] {
            let e = decode_msg(&frame(bad)).unwrap_err();
            assert!(matches!(e, WireError::Decode { .. }), "{e}");
        }
    }

    #[test]
    fn cut_middle_keeps_head_and_tail_within_the_limit() {
        assert_eq!(cut_middle("short", 10), None);
        let text: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        let cut = cut_middle(&text, 400).unwrap();
        assert!(cut.len() <= 400, "{}", cut.len());
        assert!(cut.starts_with("line 0\nline 1\n"), "{cut}");
        assert!(cut.ends_with("line 999\n"), "{cut}");
        assert!(cut.contains("bytes cut]"), "{cut}");
        // Multi-byte characters are never split; tiny limits still hold.
        let wide = "é".repeat(500);
        for max in [0, 1, 3, 63, 64, 65, 101, 999] {
            let c = cut_middle(&wide, max).unwrap();
            assert!(c.len() <= max, "{max}: {}", c.len());
        }
    }

    #[test]
    fn payload_results_fit_one_message_even_when_escaping_inflates_them() {
        // Control bytes encode as \u00XX: six JSON bytes per byte of output.
        let mut r = PayloadResult {
            name: "noisy".into(),
            stdout: "\u{1}".repeat(MAX_PAYLOAD_STDOUT),
            stdout_bytes: MAX_PAYLOAD_STDOUT as u64,
            stderr: "x".repeat(MAX_PAYLOAD_STDERR),
            stderr_bytes: MAX_PAYLOAD_STDERR as u64,
            ..Default::default()
        };
        assert!(encode_msg(&GuestMsg::PayloadResult(r.clone())).len() > MAX_MSG_BYTES);
        r.fit(MAX_MSG_BYTES);
        let len = encode_msg(&GuestMsg::PayloadResult(r.clone())).len();
        assert!(len <= MAX_MSG_BYTES, "{len}");
        assert!(r.stdout_truncated);
        assert!(!r.stderr_truncated, "stderr was short enough to keep");
        assert!(
            r.stdout.len() > MAX_MSG_BYTES / 8,
            "cut too much: {}",
            r.stdout.len()
        );
        // A result that fits is left alone.
        let mut small = PayloadResult {
            stdout: "ok".into(),
            ..Default::default()
        };
        small.fit(MAX_MSG_BYTES);
        assert_eq!(small.stdout, "ok");
        assert!(!small.stdout_truncated);
    }

    #[test]
    fn wrong_kind_and_oversize_are_errors() {
        let mut f = frame(b"{}");
        f.kind = Kind::OUTPUT;
        assert!(matches!(decode_msg(&f), Err(WireError::WrongKind { .. })));
        let big = frame(&vec![b' '; MAX_MSG_BYTES + 1]);
        assert!(matches!(decode_msg(&big), Err(WireError::TooLarge { .. })));
    }
}
