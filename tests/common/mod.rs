//! Shared by the scenario VM tests: find a kernel and an engine (or skip), build a run
//! request for a scenario, and run VMs one at a time (each test binary boots its VMs in
//! turn, so parallel test threads do not fight over the host's few CPUs).

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use ktstr::assert::Assert;
use ktstr::engine::{self, EngineKind};
use ktstr::kernel::ResolvedKernel;
use ktstr::runner::{self, RunOutcome, RunRequest};
use ktstr::scenario::Scenario;
use ktstr_sidecar::{read_sidecar, SidecarResult};
use ktstr_wire::spec::GuestSpec;

static ONE_VM_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The kernel and engine to boot with; None (after printing why) when this host cannot
/// boot one. Fails instead when `KTSTR_NO_SKIP` is set (CI sets it).
pub fn prerequisites() -> Option<(ResolvedKernel, EngineKind)> {
    let skip_ok = std::env::var_os("KTSTR_NO_SKIP").is_none_or(|v| v.is_empty());
    match (ktstr::kernel::resolve(None), engine::choose(None)) {
        (Ok(k), Ok(e)) => Some((k, e)),
        (k, e) => {
            let why = format!(
                "kernel: {:?}; engine: {:?}",
                k.err().map(|e| e.to_string()),
                e.err().map(|e| e.to_string())
            );
            assert!(skip_ok, "cannot boot: {why}");
            eprintln!("SKIP: {why}");
            None
        }
    }
}

/// A request to run `scenario` for `duration_ms` on `topology` under EEVDF, judged by
/// the default thresholds, without snapshots (set `spec.num_snapshots`, `assert` after).
pub fn request(
    name: &str,
    topology: &str,
    scenario: Scenario,
    duration_ms: u64,
    (kernel, engine): (ResolvedKernel, EngineKind),
) -> RunRequest {
    let mut spec = GuestSpec::new(name, duration_ms);
    spec.scenario = Some(scenario);
    RunRequest {
        test_name: name.into(),
        topology: topology.parse().expect("a valid topology"),
        memory_mib: 1024,
        cpu_budget: None,
        kernel,
        engine,
        spec,
        scheduler: "eevdf".into(),
        sysctls: Vec::new(),
        kargs: Vec::new(),
        includes: Vec::new(),
        payloads: Vec::new(),
        expect_err: false,
        perf_delta_assertions: Vec::new(),
        assert: Assert::default(),
        stream_output: false,
        console_on_terminal: false,
        write_sidecar: true,
        deadline_override: None,
    }
}

/// A finished run and its sidecar as read back from disk.
pub struct Ran {
    pub out: RunOutcome,
    pub sidecar: SidecarResult,
    pub path: PathBuf,
}

/// Boot `req` (one VM at a time in this process) with its sidecar (and, when it did not
/// pass, its console log) in a fresh `{CARGO_TARGET_TMPDIR}/ktstr-vm-tests/{test}`, kept
/// for inspection, and read the sidecar back.
pub fn run(req: &RunRequest) -> Ran {
    let guard: MutexGuard<'_, ()> = ONE_VM_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("ktstr-vm-tests")
        .join(&req.test_name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a sidecar directory");
    // SAFETY: every run in this process happens under ONE_VM_AT_A_TIME, and only runs
    // read this variable, so nothing reads the environment while it changes.
    unsafe { std::env::set_var("KTSTR_SIDECAR_DIR", &dir) };
    let out =
        runner::run(req).unwrap_or_else(|e| panic!("{}: the run failed: {e:#}", req.test_name));
    drop(guard);
    let path = out.sidecar_path.clone().expect("a sidecar was written");
    let sidecar = read_sidecar(&path).expect("the sidecar reads back");
    let text = std::fs::read_to_string(&path).expect("the sidecar");
    let report = ktstr_sidecar::conformance::check_text(&text).expect("json");
    assert!(
        report.unexpected().is_empty(),
        "{}: the reference's reader would not read it as written:\n{report}",
        path.display()
    );
    eprintln!(
        "{}: {} in {} ms (ready after {:?} ms); {} checks",
        req.test_name,
        sidecar.outcome(),
        out.wall_ms,
        out.boot_to_ready_ms,
        out.checks.list.len()
    );
    for c in &out.checks.list {
        eprintln!("  {}", c.line());
    }
    Ran { out, sidecar, path }
}

/// Why a run did not pass, with where its console log is.
pub fn explain(r: &Ran) -> String {
    format!(
        "reasons: {:#?}\nconsole: {:?}\nguest logs: {:#?}",
        r.out.reasons(),
        r.out.console_log,
        r.out.collected.logs
    )
}
