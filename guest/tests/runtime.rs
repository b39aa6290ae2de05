//! Runs the guest runtime binary outside a VM (not PID 1: no mounts, no reboot) against a
//! file-backed region, and reads what it reports through the real ring.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};

use ktstr_wire::msg::GuestMsg;
use ktstr_wire::spec::{ExecSpec, GuestSpec, WorkKind, WorkerSpec};
use ktstr_wire::{
    decode_msg, init_header, Frame, Kind, OutputStream, Reader, SharedMem, StopReason,
};

const REGION: u64 = 4096 + (1 << 20);

struct Region {
    _dir: tempfile::TempDir,
    shm_file: std::path::PathBuf,
    spec_file: std::path::PathBuf,
    reader: Reader,
}

fn region(spec: &GuestSpec) -> Region {
    let dir = tempfile::tempdir().unwrap();
    let shm_file = dir.path().join("shm");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&shm_file)
        .unwrap();
    f.set_len(REGION).unwrap();
    // SAFETY: a fresh shared mapping of our own file, kept for the whole test process.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            REGION as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(ptr, libc::MAP_FAILED);
    // SAFETY: the mapping is never unmapped.
    let shm = unsafe { SharedMem::from_raw(ptr.cast(), REGION as usize) }.unwrap();
    let layout = init_header(&shm).unwrap();
    let spec_file = dir.path().join("spec.json");
    std::fs::write(&spec_file, spec.to_json()).unwrap();
    Region {
        _dir: dir,
        shm_file,
        spec_file,
        reader: Reader::new(&shm, layout),
    }
}

fn guest(r: &Region) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ktstr-guest"));
    c.env("KTSTR_GUEST_SHM_FILE", &r.shm_file)
        .env("KTSTR_GUEST_SPEC", &r.spec_file)
        .stdin(Stdio::null());
    c
}

fn drain(reader: &mut Reader) -> Vec<Frame> {
    let mut v = Vec::new();
    while let Some(f) = reader.next_frame().unwrap() {
        v.push(f);
    }
    v
}

fn msgs(frames: &[Frame]) -> Vec<GuestMsg> {
    frames
        .iter()
        .filter(|f| f.kind == Kind::MSG)
        .map(|f| decode_msg(f).unwrap())
        .collect()
}

fn spin_spec(duration_ms: u64, count: u32) -> GuestSpec {
    let mut s = GuestSpec::new("spin_test", duration_ms);
    s.workers.push(WorkerSpec {
        group: "spinners".into(),
        count,
        work: WorkKind::Spin,
    });
    // As the host sends it: one scenario.
    s.materialize();
    s
}

#[test]
fn workers_report_through_the_ring() {
    let mut r = region(&spin_spec(300, 2));
    let out = guest(&r).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = msgs(&drain(&mut r.reader));

    let GuestMsg::Ready {
        topology,
        kernel_release,
        ..
    } = &m[0]
    else {
        panic!("first message is not Ready: {m:?}");
    };
    assert!(topology.cpu_count >= 1);
    assert!(!kernel_release.is_empty());
    assert!(m
        .iter()
        .any(|x| matches!(x, GuestMsg::Phase { name, .. } if name == "scenario")));
    let reports: Vec<_> = m
        .iter()
        .filter_map(|x| match x {
            GuestMsg::WorkerReport(w) => Some(w),
            _ => None,
        })
        .collect();
    assert_eq!(reports.len(), 2);
    for (i, w) in reports.iter().enumerate() {
        assert_eq!((w.group.as_str(), w.index), ("spinners", i as u32));
        assert!(w.work_units > 0);
        assert!(w.cpu_time_ns > 0);
        assert!(w.wall_time_ns > 0);
        assert!(!w.cpus_used.is_empty());
        assert!(w.run_count > 0, "schedstat read");
        assert!(w.max_gap_ns > 0);
    }
    assert!(matches!(
        m.last(),
        Some(GuestMsg::Done { exit_code: 0, .. })
    ));
}

#[test]
fn exec_output_is_streamed_and_its_status_reported() {
    let mut spec = GuestSpec::new("exec_test", 0);
    spec.exec = Some(ExecSpec {
        argv: vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo out; echo \"$GREETING\" >&2; exit 3".into(),
        ],
        env: vec![("GREETING".into(), "hello err".into())],
    });
    let mut r = region(&spec);
    let out = guest(&r).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let frames = drain(&mut r.reader);
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    for f in frames.iter().filter(|f| f.kind == Kind::OUTPUT) {
        match f.output().unwrap() {
            (OutputStream::Stdout, b) => stdout.extend_from_slice(b),
            (OutputStream::Stderr, b) => stderr.extend_from_slice(b),
            other => panic!("unexpected stream {other:?}"),
        }
    }
    assert_eq!(stdout, b"out\n");
    assert_eq!(stderr, b"hello err\n");
    let m = msgs(&frames);
    assert!(m.contains(&GuestMsg::ExecExit { status: 3 }));
    assert!(matches!(
        m.last(),
        Some(GuestMsg::Done { exit_code: 3, .. })
    ));
}

#[test]
fn host_stop_request_ends_a_long_run() {
    // An hour-long run that only ends because the host asks.
    let mut r = region(&spin_spec(3_600_000, 1));
    let mut child = guest(&r).stderr(Stdio::null()).spawn().unwrap();
    let mut m = Vec::new();
    loop {
        match r.reader.next_frame().unwrap() {
            Some(f) if f.kind == Kind::MSG => {
                let msg = decode_msg(&f).unwrap();
                if matches!(&msg, GuestMsg::Stimulus(_)) {
                    r.reader.request_stop(StopReason::User);
                }
                let done = matches!(msg, GuestMsg::Done { .. });
                m.push(msg);
                if done {
                    break;
                }
            }
            Some(_) => {}
            None => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(
        m.iter()
            .filter(|x| matches!(x, GuestMsg::WorkerReport(_)))
            .count(),
        1
    );
}

#[test]
fn a_bad_spec_is_reported_as_an_error() {
    let mut r = region(&spin_spec(1, 1));
    std::fs::write(&r.spec_file, br#"{"version":99}"#).unwrap();
    let out = guest(&r).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let m = msgs(&drain(&mut r.reader));
    assert!(
        m.iter()
            .any(|x| matches!(x, GuestMsg::Log { text, .. } if text.contains("spec"))),
        "{m:?}"
    );
    assert!(matches!(
        m.last(),
        Some(GuestMsg::Done { exit_code: 1, .. })
    ));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ktstr-guest: error:"));
    assert!(Path::new(&r.shm_file).exists());
}

#[test]
fn a_scenario_reports_steps_samples_snapshots_and_every_worker() {
    use ktstr_wire::msg::StepPhase;
    use ktstr_wire::scenario::{CgroupDef, Hold, Op, Scenario, Step, WorkType};

    let mut spec = GuestSpec::new("scenario_test", 600);
    spec.scenario = Some(
        Scenario::new()
            .cgroup(CgroupDef::new("spin"))
            .cgroup(CgroupDef::new("pipe").workers(2).work(WorkType::PipeIo))
            .cgroup(CgroupDef::new("timer").work(WorkType::TimerLatency { interval_us: 500 }))
            .step(Step::new("first", Hold::Fraction(0.5)))
            .step(Step::new("more", Hold::Fraction(0.5)).op(Op::SpawnWorkers {
                cgroup: "spin".into(),
                count: 1,
                work: WorkType::YieldHeavy.into(),
            })),
    );
    spec.monitor.interval_ms = 50;
    spec.num_snapshots = 2;
    let mut r = region(&spec);
    let out = guest(&r).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = msgs(&drain(&mut r.reader));

    let stimuli: Vec<_> = m
        .iter()
        .filter_map(|x| match x {
            GuestMsg::Stimulus(s) => Some(s),
            _ => None,
        })
        .collect();
    let shape: Vec<_> = stimuli.iter().map(|s| (s.step_index, s.phase)).collect();
    assert_eq!(
        shape,
        [
            (1, StepPhase::Start),
            (1, StepPhase::End),
            (2, StepPhase::Start),
            (2, StepPhase::End)
        ]
    );
    assert_eq!(stimuli[2].op_kinds, ["spawn_workers"]);
    assert_eq!(stimuli[1].workers, 4);
    assert_eq!(stimuli[3].workers, 5);
    assert!(stimuli[3].iterations_so_far >= stimuli[1].iterations_so_far);
    assert!(stimuli
        .windows(2)
        .all(|w| w[0].elapsed_ms <= w[1].elapsed_ms));
    assert!(stimuli[3].cgroup_iterations["pipe"] > 0);

    let samples = m
        .iter()
        .filter(|x| matches!(x, GuestMsg::MonitorSample(_)))
        .count();
    assert!(samples >= 1);
    let snaps: Vec<_> = m
        .iter()
        .filter_map(|x| match x {
            GuestMsg::Snapshot(s) => Some((s.index, s.target)),
            _ => None,
        })
        .collect();
    assert_eq!(snaps, [(0, 2), (1, 2)]);

    let reports: Vec<_> = m
        .iter()
        .filter_map(|x| match x {
            GuestMsg::WorkerReport(w) => Some(w),
            _ => None,
        })
        .collect();
    assert_eq!(reports.len(), 5);
    for w in &reports {
        assert!(w.work_units > 0, "{w:?}");
        assert!(w.errors.is_empty(), "{w:?}");
        match w.group.as_str() {
            "pipe" => assert!(w.wake_samples_total > 0 && !w.wake_latency_ns.is_empty()),
            "timer" => assert!(w.timer_samples_total > 0),
            _ => {}
        }
    }
    assert!(reports
        .iter()
        .any(|w| w.group == "spin" && w.index == 1 && w.work_type == "YieldHeavy"));
    let end = m
        .iter()
        .find_map(|x| match x {
            GuestMsg::ScenarioEnd(e) => Some(e),
            _ => None,
        })
        .expect("a ScenarioEnd");
    assert_eq!(
        (
            end.steps_completed,
            end.workers_started,
            end.workers_reported
        ),
        (2, 5, 5)
    );
    assert_eq!(end.snapshots_taken, 2);
    assert_eq!(end.monitor_samples, samples as u64);
    assert!(end.monitor_cpu_us > 0, "the sampler's own cost is measured");
    assert!(end.aborted.is_none());
}

#[test]
fn payloads_run_as_ops_and_report_each_invocation_in_order() {
    use ktstr_wire::msg::PayloadResult;
    use ktstr_wire::scenario::{Hold, Op, Scenario, Step};
    use ktstr_wire::spec::PayloadRun;

    let sh = |name: &str, script: &str| PayloadRun {
        name: name.into(),
        guest_path: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        cgroup: None,
    };
    let mut spec = GuestSpec::new("payloads", 2000);
    spec.payloads = vec![
        sh("bg", "sleep 0.3; echo '{\"ops\": 12}'"),
        sh("fg", "echo 'Time: 0.25'; echo oops >&2; exit 4"),
        // 600 KB of output: more than a result carries.
        sh(
            "loud",
            "head -c 600000 /dev/zero | tr '\\0' a; echo; echo END",
        ),
        sh("forever", "sleep 1000"),
    ];
    let op = |f: fn(String) -> Op, n: &str| f(n.to_string());
    spec.scenario = Some(
        Scenario::new()
            .step(
                Step::new("load", Hold::Millis(50))
                    .op(op(|name| Op::StartPayload { name }, "bg"))
                    .op(op(|name| Op::RunPayload { name }, "fg"))
                    .op(op(|name| Op::StartPayload { name }, "forever")),
            )
            .step(
                Step::new("collect", Hold::Millis(50))
                    .op(op(|name| Op::WaitPayload { name }, "bg"))
                    .op(op(|name| Op::RunPayload { name }, "loud"))
                    .op(op(|name| Op::KillPayload { name }, "forever")),
            ),
    );
    let mut r = region(&spec);
    let out = guest(&r).output().unwrap();
    let console = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{console}");
    let results: Vec<PayloadResult> = msgs(&drain(&mut r.reader))
        .into_iter()
        .filter_map(|m| match m {
            GuestMsg::PayloadResult(p) => Some(p),
            _ => None,
        })
        .collect();
    let order: Vec<(&str, u32, i32)> = results
        .iter()
        .map(|p| (p.name.as_str(), p.invocation, p.exit_code))
        .collect();
    // Reported as they ended; numbered as they started.
    assert_eq!(
        order,
        [
            ("fg", 1, 4),
            ("bg", 0, 0),
            ("loud", 3, 0),
            ("forever", 2, -9)
        ],
        "{console}"
    );
    let fg = &results[0];
    assert_eq!(fg.stdout, "Time: 0.25\n");
    assert_eq!(fg.stderr, "oops\n");
    assert!(!fg.stdout_truncated);
    assert_eq!(results[1].stdout, "{\"ops\": 12}\n");
    assert!(results[1].wall_ms >= 300, "{}", results[1].wall_ms);
    let loud = &results[2];
    assert_eq!(loud.stdout_bytes, 600_005);
    assert!(loud.stdout_truncated);
    assert!(loud.stdout.starts_with("aaaa"));
    assert!(
        loud.stdout.ends_with("a\nEND\n"),
        "{}",
        &loud.stdout[loud.stdout.len() - 20..]
    );
    assert!(loud.stdout.contains("bytes cut]"));
    assert_eq!(
        results[3].note.as_deref(),
        Some("killed by KillPayload"),
        "{console}"
    );
}
