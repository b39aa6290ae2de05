//! The scheduler on the wire: what the host asks the guest to run
//! ([`SchedulerSpec`], part of the guest spec) and what the guest's supervisor reports
//! about it ([`SchedEvent`] and [`ProgInsns`], carried by `GuestMsg::Scheduler` and
//! `GuestMsg::VerifierStats`).

use serde::{Deserialize, Serialize};

/// Default time the guest waits for a scheduler to attach.
pub const DEFAULT_ATTACH_TIMEOUT_MS: u64 = 30_000;
/// Default time a scheduler gets to exit after SIGINT before it is killed.
pub const DEFAULT_STOP_TIMEOUT_MS: u64 = 10_000;
/// `BPF_PROG_TYPE_STRUCT_OPS`: sched_ext callbacks are programs of this type.
pub const BPF_PROG_TYPE_STRUCT_OPS: u32 = 27;

/// A sched_ext scheduler for the guest to start before the workload and stop after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulerSpec {
    /// Name for reports (`scx_bpfland`).
    pub name: String,
    /// The binary inside the initramfs (`/bin/scx_bpfland`).
    pub binary_guest_path: String,
    /// Its command-line arguments (the watchdog option already among them when the
    /// host knows how to pass one).
    #[serde(default)]
    pub args: Vec<String>,
    /// The sched_ext watchdog timeout the test asked for; the guest reports it with
    /// ejections.
    #[serde(default)]
    pub watchdog_timeout_ms: Option<u64>,
    /// `(key, value)` written to `/proc/sys/<key with . as />` before the scheduler
    /// starts.
    #[serde(default)]
    pub sysctls: Vec<(String, String)>,
    /// How long the guest waits for `state = enabled` before giving up.
    #[serde(default = "default_attach_timeout_ms")]
    pub attach_timeout_ms: u64,
    /// How long the scheduler gets to exit after SIGINT at the end.
    #[serde(default = "default_stop_timeout_ms")]
    pub stop_timeout_ms: u64,
}

fn default_attach_timeout_ms() -> u64 {
    DEFAULT_ATTACH_TIMEOUT_MS
}

fn default_stop_timeout_ms() -> u64 {
    DEFAULT_STOP_TIMEOUT_MS
}

impl SchedulerSpec {
    /// A spec with default timeouts and no arguments.
    pub fn new(name: impl Into<String>, binary_guest_path: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            binary_guest_path: binary_guest_path.into(),
            args: Vec::new(),
            watchdog_timeout_ms: None,
            sysctls: Vec::new(),
            attach_timeout_ms: DEFAULT_ATTACH_TIMEOUT_MS,
            stop_timeout_ms: DEFAULT_STOP_TIMEOUT_MS,
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcExit {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal number, when a signal killed it.
    pub signal: Option<i32>,
}

impl std::fmt::Display for ProcExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit code {c}"),
            (None, Some(s)) => write!(f, "killed by signal {s}"),
            (None, None) => f.write_str("unknown exit status"),
        }
    }
}

/// What the guest's scheduler supervisor saw. Times are milliseconds since the guest
/// runtime started. `kernel_reason` is what the kernel said about the scheduler's exit
/// (its `sched_ext:` log lines since the scheduler started: `BPF scheduler "x" disabled
/// (runnable task stall)` and the detail line), `output_tail` the scheduler's last lines
/// of output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SchedEvent {
    /// A sysctl was written before the scheduler started (`error` when it failed).
    Sysctl {
        key: String,
        value: String,
        error: Option<String>,
    },
    /// The process started.
    Started { pid: i32, elapsed_ms: u64 },
    /// The process could not be started at all.
    SpawnFailed { error: String, elapsed_ms: u64 },
    /// sched_ext reports it enabled: `root/ops` names it and `state` is `enabled`.
    Attached {
        ops: String,
        /// From start to attach.
        attach_ms: u64,
        elapsed_ms: u64,
    },
    /// The process ended before it attached (a verifier rejection, a bad argument).
    DiedBeforeAttach {
        exit: ProcExit,
        kernel_reason: Option<String>,
        output_tail: String,
        elapsed_ms: u64,
    },
    /// It was still running but not attached when the attach timeout ran out; it was
    /// killed.
    AttachTimeout {
        waited_ms: u64,
        state: String,
        ops: String,
        kernel_reason: Option<String>,
        output_tail: String,
        elapsed_ms: u64,
    },
    /// sched_ext left `enabled` while the workload ran: the kernel ejected it (watchdog
    /// stall, a BPF error) or it unregistered itself.
    Ejected {
        state: String,
        kernel_reason: Option<String>,
        watchdog_timeout_ms: Option<u64>,
        elapsed_ms: u64,
    },
    /// The process ended while the workload ran.
    Died {
        exit: ProcExit,
        kernel_reason: Option<String>,
        output_tail: String,
        elapsed_ms: u64,
    },
    /// The end of the run: SIGINT, exit, and sched_ext back to `disabled`. `clean` when
    /// the process exited on its own after SIGINT and the state went back to disabled.
    Detached {
        clean: bool,
        exit: Option<ProcExit>,
        state_after: String,
        detail: Option<String>,
        elapsed_ms: u64,
    },
    /// A scenario op detached, attached, restarted or replaced the scheduler, and it
    /// worked; or (op `hotplug_restart`) the kernel exited the scheduler for a CPU
    /// hotplug and it attached again by itself. `detach_ms`: from the op to sched_ext `disabled`; `attach_ms`: from the
    /// new process's start to `enabled`; `gap_ms`: from the op to the end of the
    /// transition, the time the workload ran without the scheduler in charge.
    Transition {
        /// The op's kind (`restart_scheduler`).
        op: String,
        /// The scheduler attached afterwards (None after a detach).
        scheduler: Option<String>,
        detach_ms: Option<u64>,
        attach_ms: Option<u64>,
        gap_ms: u64,
        elapsed_ms: u64,
    },
}

impl SchedEvent {
    /// Short name of the event (`attached`), for logs.
    pub fn name(&self) -> &'static str {
        match self {
            SchedEvent::Sysctl { .. } => "sysctl",
            SchedEvent::Started { .. } => "started",
            SchedEvent::SpawnFailed { .. } => "spawn_failed",
            SchedEvent::Attached { .. } => "attached",
            SchedEvent::DiedBeforeAttach { .. } => "died_before_attach",
            SchedEvent::AttachTimeout { .. } => "attach_timeout",
            SchedEvent::Ejected { .. } => "ejected",
            SchedEvent::Died { .. } => "died",
            SchedEvent::Detached { .. } => "detached",
            SchedEvent::Transition { .. } => "transition",
        }
    }
}

/// One loaded BPF program as `BPF_OBJ_GET_INFO_BY_FD` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgInsns {
    /// Kernel program id.
    pub id: u32,
    /// `bpf_prog_info.type` (27 = struct_ops).
    pub prog_type: u32,
    /// `bpf_prog_info.name`: at most 15 characters (`BPF_OBJ_NAME_LEN`).
    pub name: String,
    /// `bpf_prog_info.verified_insns`: instructions the verifier processed.
    pub verified_insns: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_defaults_fill_missing_timeouts() {
        let s: SchedulerSpec =
            serde_json::from_str(r#"{"name":"x","binary_guest_path":"/bin/x"}"#).unwrap();
        assert_eq!(s, SchedulerSpec::new("x", "/bin/x"));
        assert_eq!(s.attach_timeout_ms, DEFAULT_ATTACH_TIMEOUT_MS);
    }

    #[test]
    fn events_are_tagged_by_event() {
        let e = SchedEvent::Attached {
            ops: "bpfland_1.1.4".into(),
            attach_ms: 1100,
            elapsed_ms: 4000,
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event"], "attached");
        assert_eq!(v["ops"], "bpfland_1.1.4");
        assert_eq!(serde_json::from_value::<SchedEvent>(v).unwrap(), e);
    }

    #[test]
    fn proc_exit_reads_like_a_shell() {
        let code = ProcExit {
            code: Some(2),
            signal: None,
        };
        let sig = ProcExit {
            code: None,
            signal: Some(9),
        };
        assert_eq!(code.to_string(), "exit code 2");
        assert_eq!(sig.to_string(), "killed by signal 9");
    }
}
