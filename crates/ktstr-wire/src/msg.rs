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
    /// The `exec` program ended: its exit code, or 128 + signal number if it was killed.
    ExecExit { status: i32 },
    /// The guest runtime panicked.
    Panic { message: String },
    /// The guest runtime finished; it reboots next.
    Done { exit_code: i32, elapsed_ms: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

/// A worker's report. Times are nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerReport {
    /// `WorkerSpec::group` it belongs to.
    pub group: String,
    /// Index within the group, `0..count`.
    pub index: u32,
    pub pid: i32,
    /// Work units completed (for `spin`: fixed-size loops).
    pub work_units: u64,
    /// User + system CPU time (getrusage).
    pub cpu_time_ns: u64,
    /// Wall time from the worker's start to its end.
    pub wall_time_ns: u64,
    /// Time spent runnable but waiting for a CPU (`/proc/self/schedstat` field 2).
    pub run_delay_ns: u64,
    /// Times it was scheduled in (`/proc/self/schedstat` field 3).
    pub run_count: u64,
    /// Times it was seen on a different CPU than at the previous check.
    pub migrations: u64,
    /// CPUs it was seen on, ascending.
    pub cpus_used: Vec<u32>,
    /// Largest wall gap between two consecutive progress checkpoints.
    pub max_gap_ns: u64,
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
        let topo = SeenTopology::derive("0".into(), vec![cpu(0, 0, 0, 0, 0)]);
        let msgs = vec![
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
                work_units: 1000,
                cpu_time_ns: 1,
                wall_time_ns: 2,
                run_delay_ns: 3,
                run_count: 4,
                migrations: 5,
                cpus_used: vec![0, 3],
                max_gap_ns: 6,
            }),
            GuestMsg::ExecExit { status: 137 },
            GuestMsg::Panic {
                message: "boom".into(),
            },
            GuestMsg::Done {
                exit_code: 0,
                elapsed_ms: 1000,
            },
        ];
        for m in msgs {
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
                index: 0,
                pid: 1,
                work_units: 0,
                cpu_time_ns: 0,
                wall_time_ns: 0,
                run_delay_ns: 0,
                run_count: 0,
                migrations: 0,
                cpus_used: vec![],
                max_gap_ns: 0,
            })))
            .unwrap();
        assert_eq!(w["type"], "worker_report");
        assert_eq!(w["group"], "g");
    }

    #[test]
    fn unknown_type_and_garbage_are_errors() {
        for bad in [
            &br#"{"type":"stimulus_event","step":1}"#[..],
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
    fn wrong_kind_and_oversize_are_errors() {
        let mut f = frame(b"{}");
        f.kind = Kind::OUTPUT;
        assert!(matches!(decode_msg(&f), Err(WireError::WrongKind { .. })));
        let big = frame(&vec![b' '; MAX_MSG_BYTES + 1]);
        assert!(matches!(decode_msg(&big), Err(WireError::TooLarge { .. })));
    }
}
