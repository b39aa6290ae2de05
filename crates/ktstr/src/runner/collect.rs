//! Turns the guest's frames into a record of the run: what it saw, what it measured, how
//! it ended. Everything here is untrusted input; bad frames become failure reasons.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use ktstr_wire::msg::{
    LogLevel, MonitorSample, PayloadResult, ScenarioEnd, SeenTopology, Snapshot, Stimulus,
    WorkerReport,
};
use ktstr_wire::{decode_msg, Frame, GuestMsg, Kind, OutputStream};

/// Caps on what one run may accumulate, so a misbehaving guest cannot exhaust the host:
/// counts per kind here, and bytes per kind and in total in [`Budget`] (docs/protocol.md,
/// "Byte budgets").
const MAX_PHASES: usize = 4096;
const MAX_WORKER_REPORTS: usize = 65_536;
const MAX_LOG_LINES: usize = 10_000;
const MAX_OUTPUT_BYTES: usize = 64 << 20;
/// Two stimulus events per step, every step of the largest scenario.
const MAX_STIMULI: usize = 2 * ktstr_wire::scenario::MAX_STEPS + 16;
/// An hour of 100 ms samples.
const MAX_MONITOR_SAMPLES: usize = 36_000;
const MAX_SCHED_EVENTS: usize = 1024;
const MAX_BPF_PROGS: usize = 4096;
const MAX_SNAPSHOTS: usize = ktstr_wire::spec::MAX_SNAPSHOTS as usize;
/// Payload invocations one run may report.
const MAX_PAYLOAD_RESULTS: usize = 4096;

/// Where live program output goes (`cargo ktstr shell --exec` streams it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// Keep it in memory only.
    Capture,
    /// Also copy it to this process's stdout/stderr as it arrives.
    Stream,
}

/// Everything the guest reported.
#[derive(Debug, Default)]
pub struct Collected {
    pub ready: Option<Ready>,
    pub phases: Vec<(String, u64)>,
    pub logs: Vec<(LogLevel, String)>,
    pub workers: Vec<WorkerReport>,
    /// Step boundaries, in the order they arrived.
    pub stimuli: Vec<Stimulus>,
    pub monitor_samples: Vec<MonitorSample>,
    pub snapshots: Vec<Snapshot>,
    pub scenario_end: Option<ScenarioEnd>,
    pub exec_status: Option<i32>,
    pub panic: Option<String>,
    pub done: Option<Done>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub scheduler_log: Vec<u8>,
    /// What the guest's scheduler supervisor reported, in order.
    pub scheduler_events: Vec<ktstr_wire::sched::SchedEvent>,
    /// The scheduler's BPF programs after attach (the last report wins).
    pub verifier_stats: Vec<ktstr_wire::sched::ProgInsns>,
    /// Payload invocations, in the order they ended.
    pub payload_results: Vec<PayloadResult>,
    /// Protocol problems: a corrupt ring ends collection with one of these.
    pub protocol_errors: Vec<String>,
    pub dropped: u64,
    /// What the byte budgets refused, per kind.
    pub budget: Budget,
    /// Host time when `Done` arrived (start of teardown).
    pub done_at: Option<Instant>,
    pub self_test: Vec<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct Ready {
    pub kernel_release: String,
    pub uptime_ms: u64,
    pub topology: SeenTopology,
    /// Host wall time from start to the ready message.
    pub host_ms: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Done {
    pub exit_code: i32,
    pub elapsed_ms: u64,
}

/// Feeds frames into [`Collected`].
pub struct Collector {
    pub data: Collected,
    output: OutputMode,
    started: Instant,
}

impl Collector {
    pub fn new(output: OutputMode, started: Instant) -> Self {
        Self {
            data: Collected::default(),
            output,
            started,
        }
    }

    pub fn protocol_error(&mut self, what: String) {
        if self.data.protocol_errors.len() < 16 {
            self.data.protocol_errors.push(what);
        }
    }

    pub fn frame(&mut self, frame: Frame) {
        let len = frame.payload.len() as u64;
        match frame.kind {
            Kind::MSG => match decode_msg(&frame) {
                Ok(msg) => {
                    if self.data.budget.admit(msg_kind(&msg), len) {
                        self.message(msg)
                    }
                }
                Err(e) => self.protocol_error(format!("frame {}: {e}", frame.seq)),
            },
            Kind::OUTPUT => match frame.output() {
                Ok((stream, bytes)) => {
                    let kind = match stream {
                        OutputStream::Stdout => "stdout",
                        OutputStream::Stderr => "stderr",
                        _ => "scheduler_log",
                    };
                    if self.data.budget.admit(kind, len) {
                        self.output(stream, bytes)
                    }
                }
                Err(e) => self.protocol_error(format!("frame {}: {e}", frame.seq)),
            },
            Kind::SELF_TEST => {
                if self.data.budget.admit("self_test", len) && self.data.self_test.len() < 1024 {
                    self.data.self_test.push(frame.payload);
                }
            }
            _ => self.data.dropped += 1,
        }
    }

    fn output(&mut self, stream: OutputStream, bytes: &[u8]) {
        let buf = match stream {
            OutputStream::Stdout => &mut self.data.stdout,
            OutputStream::Stderr => &mut self.data.stderr,
            _ => &mut self.data.scheduler_log,
        };
        if buf.len() + bytes.len() <= MAX_OUTPUT_BYTES {
            buf.extend_from_slice(bytes);
        } else {
            self.data.dropped += 1;
        }
        if self.output == OutputMode::Stream {
            // Best effort: a closed terminal must not end the run.
            let _ = match stream {
                OutputStream::Stdout => {
                    let mut o = std::io::stdout().lock();
                    o.write_all(bytes).and_then(|_| o.flush())
                }
                OutputStream::Stderr => {
                    let mut e = std::io::stderr().lock();
                    e.write_all(bytes).and_then(|_| e.flush())
                }
                _ => Ok(()),
            };
        }
    }

    fn message(&mut self, msg: GuestMsg) {
        let d = &mut self.data;
        match msg {
            GuestMsg::Ready {
                kernel_release,
                uptime_ms,
                topology,
            } => {
                d.ready = Some(Ready {
                    kernel_release,
                    uptime_ms,
                    topology,
                    host_ms: self.started.elapsed().as_millis() as u64,
                })
            }
            GuestMsg::Phase { name, elapsed_ms } => push_capped(
                &mut d.phases,
                (name, elapsed_ms),
                MAX_PHASES,
                &mut d.dropped,
            ),
            GuestMsg::Log { level, text } => {
                if d.logs.len() < MAX_LOG_LINES {
                    d.logs.push((level, text));
                }
            }
            GuestMsg::WorkerReport(r) => {
                if d.workers.len() < MAX_WORKER_REPORTS {
                    d.workers.push(r);
                } else {
                    d.dropped += 1;
                }
            }
            GuestMsg::Stimulus(x) => push_capped(&mut d.stimuli, x, MAX_STIMULI, &mut d.dropped),
            GuestMsg::MonitorSample(x) => push_capped(
                &mut d.monitor_samples,
                x,
                MAX_MONITOR_SAMPLES,
                &mut d.dropped,
            ),
            GuestMsg::Snapshot(x) => {
                push_capped(&mut d.snapshots, x, MAX_SNAPSHOTS, &mut d.dropped)
            }
            GuestMsg::ScenarioEnd(x) => d.scenario_end = Some(x),
            GuestMsg::ExecExit { status } => d.exec_status = Some(status),
            GuestMsg::Panic { message } => d.panic = Some(message),
            GuestMsg::Scheduler(e) => {
                push_capped(&mut d.scheduler_events, e, MAX_SCHED_EVENTS, &mut d.dropped)
            }
            GuestMsg::PayloadResult(r) => push_capped(
                &mut d.payload_results,
                r,
                MAX_PAYLOAD_RESULTS,
                &mut d.dropped,
            ),
            GuestMsg::VerifierStats { mut progs } => {
                progs.truncate(MAX_BPF_PROGS);
                d.verifier_stats = progs;
            }
            GuestMsg::Done {
                exit_code,
                elapsed_ms,
            } => {
                d.done = Some(Done {
                    exit_code,
                    elapsed_ms,
                });
                d.done_at = Some(Instant::now());
            }
        }
    }
}

/// Budget name of a message kind (the wire's `type`, snake case).
fn msg_kind(m: &GuestMsg) -> &'static str {
    match m {
        GuestMsg::Ready { .. } => "ready",
        GuestMsg::Phase { .. } => "phase",
        GuestMsg::Log { .. } => "log",
        GuestMsg::WorkerReport(_) => "worker_report",
        GuestMsg::Stimulus(_) => "stimulus",
        GuestMsg::MonitorSample(_) => "monitor_sample",
        GuestMsg::Snapshot(_) => "snapshot",
        GuestMsg::ScenarioEnd(_) => "scenario_end",
        GuestMsg::ExecExit { .. } => "exec_exit",
        GuestMsg::Panic { .. } => "panic",
        GuestMsg::Scheduler(_) => "scheduler",
        GuestMsg::VerifierStats { .. } => "verifier_stats",
        GuestMsg::PayloadResult(_) => "payload_result",
        GuestMsg::Done { .. } => "done",
    }
}

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// Bytes of encoded payload one run may deliver per kind: far above what our guest
/// sends in an hour-long run, far below what would hurt the host (decoded data is at
/// most a few times its JSON). docs/protocol.md lists the same table.
pub const BYTE_BUDGETS: &[(&str, u64)] = &[
    ("ready", MIB),
    ("phase", MIB),
    ("log", 8 * MIB),
    ("worker_report", 64 * MIB),
    ("stimulus", 4 * MIB),
    ("monitor_sample", 64 * MIB),
    ("snapshot", 64 * MIB),
    ("scenario_end", MIB),
    ("exec_exit", 64 * KIB),
    ("panic", MIB),
    ("scheduler", 4 * MIB),
    ("verifier_stats", 4 * MIB),
    ("payload_result", 32 * MIB),
    ("done", 64 * KIB),
    ("stdout", 64 * MIB),
    ("stderr", 64 * MIB),
    ("scheduler_log", 64 * MIB),
    ("self_test", 4 * MIB),
];
/// All kinds together.
pub const TOTAL_BYTE_BUDGET: u64 = 192 * MIB;

/// Bytes admitted per kind, and what was refused once a budget ran out.
#[derive(Debug, Default, Clone)]
pub struct Budget {
    used: std::collections::BTreeMap<&'static str, u64>,
    total: u64,
    /// Kind -> (frames refused, bytes refused).
    pub refused: std::collections::BTreeMap<&'static str, (u64, u64)>,
}

impl Budget {
    /// Count `len` bytes of `kind`; false (and counted as refused) when that would pass
    /// the kind's budget or the total.
    pub fn admit(&mut self, kind: &'static str, len: u64) -> bool {
        let cap = BYTE_BUDGETS
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(MIB, |(_, c)| *c);
        let used = self.used.entry(kind).or_default();
        if *used + len > cap || self.total + len > TOTAL_BYTE_BUDGET {
            let r = self.refused.entry(kind).or_default();
            r.0 += 1;
            r.1 += len;
            return false;
        }
        *used += len;
        self.total += len;
        true
    }

    /// One sentence per kind that ran over, for the verdict.
    pub fn overruns(&self) -> Vec<String> {
        self.refused
            .iter()
            .map(|(kind, (frames, bytes))| {
                let cap = BYTE_BUDGETS
                    .iter()
                    .find(|(k, _)| k == kind)
                    .map_or(MIB, |(_, c)| *c);
                format!(
                    "the guest sent more `{kind}` data than a run may deliver ({} MiB for the kind, {} MiB in all): {frames} frame(s), {bytes} bytes refused",
                    cap / MIB,
                    TOTAL_BYTE_BUDGET / MIB
                )
            })
            .collect()
    }
}

/// Keeps at most `cap` items; the rest are counted as dropped.
fn push_capped<T>(v: &mut Vec<T>, x: T, cap: usize, dropped: &mut u64) {
    if v.len() < cap {
        v.push(x);
    } else {
        *dropped += 1;
    }
}

/// A console line where the guest kernel reports its own death: a panic, a BUG, an oops.
pub fn is_kernel_failure(line: &str) -> bool {
    ["Kernel panic", "BUG:", "Oops"]
        .iter()
        .any(|m| line.contains(m))
}

/// The last lines of the console log that explain a dead guest (panic, oops).
pub fn console_excerpt(console_log: &Path) -> Option<String> {
    let text = std::fs::read(console_log).ok()?;
    excerpt_of(&String::from_utf8_lossy(&text))
}

/// [`console_excerpt`] of console text already read.
pub fn excerpt_of(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return None;
    }
    let panic_at = lines.iter().position(|l| is_kernel_failure(l));
    let from = match panic_at {
        Some(i) => i,
        None => lines.len().saturating_sub(6),
    };
    Some(lines[from..lines.len().min(from + 12)].join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_wire::{encode_msg, init_header, Reader, SharedMem, Writer};

    fn roundtrip(msgs: &[GuestMsg], raw: &[(Kind, Vec<u8>)]) -> Collected {
        roundtrip_with_stats(msgs, raw).0
    }

    fn roundtrip_with_stats(
        msgs: &[GuestMsg],
        raw: &[(Kind, Vec<u8>)],
    ) -> (Collected, ktstr_wire::ReaderStats) {
        let shm = SharedMem::new_owned(64 * 1024);
        let layout = init_header(&shm).unwrap();
        let mut reader = Reader::new(&shm, layout);
        let mut writer = Writer::attach(&shm).unwrap();
        for m in msgs {
            writer.try_write(Kind::MSG, &encode_msg(m)).unwrap();
        }
        for (k, p) in raw {
            writer.try_write(*k, p).unwrap();
        }
        let mut c = Collector::new(OutputMode::Capture, Instant::now());
        while let Some(f) = reader.next_frame().unwrap() {
            c.frame(f);
        }
        (c.data, reader.stats())
    }

    #[test]
    fn collects_messages_and_output() {
        let d = roundtrip(
            &[
                GuestMsg::Phase {
                    name: "workers".into(),
                    elapsed_ms: 5,
                },
                GuestMsg::ExecExit { status: 3 },
                GuestMsg::Done {
                    exit_code: 0,
                    elapsed_ms: 9,
                },
            ],
            &[(Kind::OUTPUT, OutputStream::Stdout.encode(b"0-3\n"))],
        );
        assert_eq!(d.phases, vec![("workers".to_string(), 5)]);
        assert_eq!(d.exec_status, Some(3));
        assert_eq!(d.done.map(|x| x.exit_code), Some(0));
        assert!(d.done_at.is_some());
        assert_eq!(d.stdout, b"0-3\n");
    }

    #[test]
    fn payload_results_are_kept_in_arrival_order() {
        let r = |name: &str, invocation| {
            GuestMsg::PayloadResult(PayloadResult {
                name: name.into(),
                invocation,
                exit_code: -9,
                stdout: "Time: 1.5\n".into(),
                ..Default::default()
            })
        };
        let d = roundtrip(&[r("fg", 1), r("bg", 0)], &[]);
        let got: Vec<(&str, u32, i32)> = d
            .payload_results
            .iter()
            .map(|p| (p.name.as_str(), p.invocation, p.exit_code))
            .collect();
        assert_eq!(got, [("fg", 1, -9), ("bg", 0, -9)]);
        assert_eq!(d.payload_results[0].stdout, "Time: 1.5\n");
    }

    #[test]
    fn bad_json_and_unknown_kinds_are_recorded_not_fatal() {
        let (d, stats) = roundtrip_with_stats(
            &[],
            &[
                (Kind::MSG, b"{\"type\":\"nonsense\"}".to_vec()),
                (Kind(999), b"x".to_vec()),
            ],
        );
        assert_eq!(d.protocol_errors.len(), 1, "{:?}", d.protocol_errors);
        assert!(
            d.protocol_errors[0].contains("frame 0"),
            "{:?}",
            d.protocol_errors
        );
        // The reader skips kinds it does not know and counts them.
        assert_eq!(stats.skipped_unknown, 1);
    }

    #[test]
    fn a_flood_of_any_kind_is_refused_past_its_byte_budget() {
        let mut c = Collector::new(OutputMode::Capture, Instant::now());
        // 3000 phase messages of ~1 MiB each (what took a host to 3 GB before).
        let name = "x".repeat((MIB - 64) as usize);
        let payload = encode_msg(&GuestMsg::Phase {
            name,
            elapsed_ms: 1,
        });
        for seq in 0..3000u32 {
            c.frame(Frame {
                kind: Kind::MSG,
                seq,
                payload: payload.clone(),
            });
        }
        let d = c.data;
        // The 1 MiB phase budget admits none of these frames (each is just under it, so
        // at most one fits).
        assert!(d.phases.len() <= 1, "{}", d.phases.len());
        let (frames, bytes) = d.budget.refused["phase"];
        assert!(
            frames >= 2999 && bytes >= 2999 * (MIB - 64),
            "{frames} {bytes}"
        );
        let why = d.budget.overruns();
        assert_eq!(why.len(), 1);
        assert!(why[0].contains("`phase`"), "{why:?}");

        // Every kind has a budget, and the total caps them together.
        let mut b = Budget::default();
        for (kind, cap) in BYTE_BUDGETS {
            assert!(b.admit(kind, (*cap).min(MIB)), "{kind}");
            assert!(!b.admit(kind, *cap), "{kind} admitted past its budget");
        }
        let mut b = Budget::default();
        let mut admitted = 0;
        for kind in [
            "worker_report",
            "monitor_sample",
            "snapshot",
            "stdout",
            "stderr",
        ] {
            while b.admit(kind, MIB) {
                admitted += MIB;
            }
        }
        assert_eq!(admitted, TOTAL_BYTE_BUDGET);
    }
}
