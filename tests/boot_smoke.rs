//! First light: boot the default Debian sched_ext kernel with topology 1n1l2c1t, spin two
//! workers for 2 s, and check that the sidecar holds what the run measured.
//!
//! Needs a kernel (`cargo ktstr kernel fetch`, or KTSTR_KERNEL) and an engine (qemu here,
//! hardware KVM elsewhere). Without them the test skips with the reason, or fails when
//! KTSTR_NO_SKIP is set (CI sets it).

use std::time::Duration;

use ktstr::engine;
use ktstr::runner::{self, RunRequest};
use ktstr_sidecar::read_sidecar;
use ktstr_wire::spec::{GuestSpec, WorkKind, WorkerSpec};

fn prerequisites() -> Option<(ktstr::kernel::ResolvedKernel, engine::EngineKind)> {
    let skip_ok = std::env::var_os("KTSTR_NO_SKIP").is_none_or(|v| v.is_empty());
    let kernel = ktstr::kernel::resolve(None);
    let engine = engine::choose(None);
    match (kernel, engine) {
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

#[test]
fn boots_debian_kernel_and_writes_a_measured_sidecar() {
    let Some((kernel, engine)) = prerequisites() else {
        return;
    };
    let sidecar_dir = tempfile::tempdir().unwrap();
    // SAFETY-free: this test binary runs one test; nothing else reads the env concurrently.
    unsafe { std::env::set_var("KTSTR_SIDECAR_DIR", sidecar_dir.path()) };

    let mut spec = GuestSpec::new("boot_smoke", 2000);
    spec.workers.push(WorkerSpec {
        group: "spin".into(),
        count: 2,
        work: WorkKind::Spin,
    });
    let req = RunRequest {
        test_name: "boot_smoke".into(),
        topology: "1n1l2c1t".parse().unwrap(),
        memory_mib: 1024,
        cpu_budget: None,
        kernel: kernel.clone(),
        engine,
        spec,
        scheduler: "eevdf".into(),
        sysctls: Vec::new(),
        kargs: Vec::new(),
        includes: Vec::new(),
        expect_err: false,
        assert: Default::default(),
        stream_output: false,
        console_on_terminal: false,
        write_sidecar: true,
    };
    let out = runner::run(&req).expect("run");
    assert!(
        out.sidecar.is_pass(),
        "run did not pass: {:#?}\nconsole: {:?}",
        out.reasons,
        out.console_log
    );
    let path = out.sidecar_path.expect("a sidecar was written");
    let back = read_sidecar(&path).expect("the sidecar reads back");
    assert_eq!(back.test_name, "boot_smoke");
    assert_eq!(back.topology, "1n1l2c1t");
    assert_eq!(
        back.kernel_version.as_deref(),
        Some(kernel.release.as_str())
    );
    assert_eq!(back.vcpus, 2);
    assert!(back.cpu_budget >= 1 && back.cpu_budget <= 2);
    assert!(back.stats.total_iterations > 0);
    assert_eq!(back.stats.total_workers, 2);
    assert!(back.cleanup_duration_ms.is_some());
    assert!(back.host.is_some());
    assert!(back.timestamp.ends_with('Z'), "{}", back.timestamp);
    assert!(!back.run_id.is_empty());
    assert!(back.passed && !back.skipped && !back.inconclusive && !back.expected_failure);
    // The ready message arrived during the run, so boot-to-ready was measured.
    let ready_ms = out.boot_to_ready_ms.expect("boot to ready measured");
    assert!(Duration::from_millis(ready_ms) < req.deadline());
}
