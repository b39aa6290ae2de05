//! Runs one variant of a registered test: build its spec, check that this host can run
//! it (engine, topology, memory, kernel), boot it through the runner, apply the test's
//! own checks, and leave exactly one sidecar behind whatever happened — a skip and a
//! failure before boot get one too, so a suite's pool always accounts for every test.
//!
//! A host that cannot run a test (no engine, no kernel, a topology or memory the engine
//! cannot give) is a *skip* with a one-line reason, unless `KTSTR_NO_SKIP` is set, which
//! turns every skip into a failure (CI sets it).

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

use ktstr_sidecar::Outcome;
use ktstr_topology::Topology;

use super::entry::TestEntry;
use super::names::TestId;
use super::spec::{TestCtx, TestSpec, Variant};
use crate::engine::{self, EngineKind};
use crate::kernel::ResolvedKernel;
use crate::runner::{self, finalize, RunOutcome, RunRequest};

/// Set (non-empty): a test that cannot run fails instead of skipping.
pub const NO_SKIP_ENV: &str = "KTSTR_NO_SKIP";
/// Set by `cargo ktstr test`: every test process appends `{wall_ms}\t{sidecar path}` to
/// this file, so the run's summary reads exactly the sidecars of this run.
pub const MANIFEST_ENV: &str = "KTSTR_RUN_MANIFEST";

/// Widest guest the qemu-tcg engine runs. Measured here: a 32-vCPU Debian guest under
/// multi-threaded TCG oopses on an int3 while the kernel patches its own code
/// (`update_sd_lb_stats`), and a 128-vCPU one never reaches `/init` within 90 s. (qemu
/// also refuses APIC ids of 255 and up without KVM's irqchip; 16 vCPUs stay far below.)
pub const QEMU_TCG_MAX_VCPUS: u32 = 16;

/// How one variant ended.
#[derive(Debug, Clone)]
pub struct VariantResult {
    /// The nextest name, e.g. `ktstr/steady`.
    pub id: String,
    pub topology: Topology,
    pub outcome: Outcome,
    /// The run passed only because `expect_err` inverted a failure.
    pub expected_failure: bool,
    pub reasons: Vec<String>,
    pub sidecar_path: Option<PathBuf>,
    pub console_log: Option<PathBuf>,
    pub wall_ms: u64,
}

impl VariantResult {
    /// 0 pass or skip, 1 fail, 2 inconclusive.
    pub fn exit_code(&self) -> i32 {
        self.outcome.exit_code()
    }

    /// One line for the test's output, then one line per reason.
    pub fn render(&self) -> String {
        let mut s = format!(
            "ktstr: {} [{}]: {}{} in {:.1} s",
            self.id,
            self.topology,
            self.outcome.as_str().to_uppercase(),
            if self.expected_failure {
                " (expected failure)"
            } else {
                ""
            },
            self.wall_ms as f64 / 1000.0
        );
        for r in &self.reasons {
            s.push_str("\n  - ");
            s.push_str(&r.replace('\n', "\n    "));
        }
        if let Some(p) = &self.sidecar_path {
            s.push_str(&format!("\n  sidecar: {}", p.display()));
        }
        if let Some(p) = &self.console_log {
            s.push_str(&format!("\n  console: {}", p.display()));
        }
        s
    }
}

/// Why a variant could not get as far as booting.
enum Early {
    Skip(String),
    Fail(String),
}

/// Run `id` (a variant of `entry`) against `kernel_spec` (`None`: `KTSTR_KERNEL`, else the
/// default cached kernel). Never panics on a test's behalf: panics in the test function
/// or its checks become failures.
pub fn run_variant(
    entry: &'static TestEntry,
    id: &TestId,
    kernel_spec: Option<&str>,
) -> VariantResult {
    let started = Instant::now();
    let (variant, topology) = match id.preset {
        Some(p) => (Variant::Gauntlet(p), p.topology()),
        None => match entry.attrs.topology() {
            Ok(t) => (Variant::Base, t),
            Err(e) => {
                // Only reachable for an entry not written by the macro.
                let t = Topology::new(1, 1, 1, 1).expect("1n1l1c1t is valid");
                let ctx = TestCtx::new(entry.name, Variant::Base, t, entry.attrs);
                return finish_early(
                    id,
                    &ctx.spec(),
                    (None, None),
                    Early::Fail(format!("bad topology: {e}")),
                    started,
                );
            }
        },
    };
    let ctx = TestCtx::new(entry.name, variant, topology, entry.attrs);

    let spec = match catch_unwind(AssertUnwindSafe(|| (entry.func)(&ctx))) {
        Ok(Ok(spec)) => spec,
        Ok(Err(why)) => {
            return finish_early(id, &ctx.spec(), (None, None), Early::Fail(why), started)
        }
        Err(panic) => {
            let why = format!("the test function panicked: {}", panic_text(&*panic));
            return finish_early(id, &ctx.spec(), (None, None), Early::Fail(why), started);
        }
    };
    if let Err(e) = spec.validate() {
        let why = Early::Fail(e.to_string());
        return finish_early(id, &spec, (None, None), why, started);
    }
    if entry.attrs.host_only {
        return run_host_only(id, &spec, started);
    }

    let engine = match engine::choose(None) {
        Ok(e) => e,
        Err(e) => {
            let why = Early::Skip(e.to_string());
            return finish_early(id, &spec, (None, None), why, started);
        }
    };
    if let Some(why) =
        engine_skip_reason(engine, &spec.topology, spec.memory_mib, host_memory_mib())
    {
        return finish_early(id, &spec, (None, Some(engine)), Early::Skip(why), started);
    }
    let kernel = match crate::kernel::resolve(kernel_spec) {
        Ok(k) => k,
        Err(e) => {
            let why = Early::Skip(format!("kernel unavailable: {e}"));
            return finish_early(id, &spec, (None, Some(engine)), why, started);
        }
    };
    let known = (Some(&kernel), Some(engine));
    if let Err(e) = runner::guest_binary() {
        return finish_early(id, &spec, known, Early::Fail(format!("{e:#}")), started);
    }

    let req = run_request(&spec, kernel.clone(), engine);
    let out = match runner::run_to_verdict(&req) {
        Ok(out) => out,
        Err(e) => {
            let why = Early::Fail(format!("the run could not complete: {e:#}"));
            return finish_early(id, &spec, known, why, started);
        }
    };
    finish_run(id, &spec, out, started)
}

/// A `host_only` test: no engine, kernel or guest; its checks run on the host against
/// an outcome with nothing collected, and it leaves the same sidecar as a VM test (no
/// kernel, no engine, `host.engine` null).
fn run_host_only(id: &TestId, spec: &TestSpec, started: Instant) -> VariantResult {
    let sidecar = finalize::identity(&spec.identity(None, None));
    let dir = ktstr_sidecar::paths::run_dir_for(&sidecar);
    let out = finalize::not_booted(
        sidecar,
        Outcome::Pass,
        Vec::new(),
        Default::default(),
        Some(dir),
        started,
    );
    finish_run(id, spec, out, started)
}

/// The runner's request for a spec.
pub fn run_request(spec: &TestSpec, kernel: ResolvedKernel, engine: EngineKind) -> RunRequest {
    RunRequest {
        test_name: spec.name.clone(),
        topology: spec.topology,
        memory_mib: spec.memory_mib,
        cpu_budget: spec.cpu_budget,
        kernel,
        engine,
        spec: spec.guest.clone(),
        scheduler: spec.scheduler.clone(),
        sysctls: spec.sysctls.clone(),
        kargs: spec.kargs.clone(),
        includes: spec.includes.clone(),
        payloads: spec.payloads.clone(),
        expect_err: spec.expect_err,
        perf_delta_assertions: spec.perf_delta_assertions.clone(),
        assert: spec.assert.clone(),
        stream_output: false,
        console_on_terminal: false,
        write_sidecar: true,
        deadline_override: None,
    }
}

/// Why `engine` cannot run this shape here, if it cannot.
pub fn engine_skip_reason(
    engine: EngineKind,
    topology: &Topology,
    memory_mib: u64,
    host_memory_mib: Option<u64>,
) -> Option<String> {
    if engine == EngineKind::QemuTcg && topology.vcpus() > QEMU_TCG_MAX_VCPUS {
        return Some(format!(
            "topology {topology} has {} vCPUs; the qemu-tcg engine runs at most {QEMU_TCG_MAX_VCPUS} (wider guests crash or stall under emulation); run it on a host with hardware KVM",
            topology.vcpus()
        ));
    }
    if let Some(host) = host_memory_mib {
        if memory_mib > host {
            return Some(format!(
                "the guest needs {memory_mib} MiB of memory but this host has {host} MiB; lower memory_mib or use a bigger host"
            ));
        }
    }
    None
}

/// `MemTotal` of this host in MiB.
pub fn host_memory_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_total_mib(&text)
}

fn parse_mem_total_mib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

fn no_skip() -> bool {
    std::env::var_os(NO_SKIP_ENV).is_some_and(|v| !v.is_empty())
}

fn finish_early(
    id: &TestId,
    spec: &TestSpec,
    (kernel, engine): (Option<&ResolvedKernel>, Option<EngineKind>),
    early: Early,
    started: Instant,
) -> VariantResult {
    let (outcome, reason) = match early {
        Early::Skip(why) if no_skip() => (
            Outcome::Fail,
            format!("{why} ({NO_SKIP_ENV} is set, so a test that cannot run fails)"),
        ),
        Early::Skip(why) => (Outcome::Skip, why),
        Early::Fail(why) => (Outcome::Fail, why),
    };
    // The variant a real run would record, so both land in the same file.
    let sidecar = finalize::identity(&spec.identity(kernel, engine));
    let dir = ktstr_sidecar::paths::run_dir_for(&sidecar);
    let out = finalize::not_booted(
        sidecar,
        outcome,
        vec![reason],
        Default::default(),
        Some(dir),
        started,
    );
    finish(id, spec, out, Vec::new())
}

/// A run that reached its verdict: the test's own checks, then [`finalize::finalize`].
fn finish_run(id: &TestId, spec: &TestSpec, out: RunOutcome, started: Instant) -> VariantResult {
    // Checks run on every passing verdict, an expected failure included: there they
    // check that the run failed for the right reason. They see the sidecar before it is
    // written (`RunOutcome::sidecar_as_written`).
    let failures: Vec<String> = if out.sidecar.is_pass() {
        spec.checks()
            .iter()
            .enumerate()
            .filter_map(
                |(i, check)| match catch_unwind(AssertUnwindSafe(|| check(&out))) {
                    Ok(Ok(())) => None,
                    Ok(Err(why)) => Some(format!("check {} failed: {why}", i + 1)),
                    Err(panic) => {
                        Some(format!("check {} panicked: {}", i + 1, panic_text(&*panic)))
                    }
                },
            )
            .collect()
    } else {
        Vec::new()
    };
    let mut out = out;
    out.wall_ms = started.elapsed().as_millis() as u64;
    finish(id, spec, out, failures)
}

/// Finalize `out` (settle, write once) and report the variant.
fn finish(
    id: &TestId,
    spec: &TestSpec,
    mut out: RunOutcome,
    failures: Vec<String>,
) -> VariantResult {
    let written = finalize::finalize(&mut out, failures);
    // The verdict's reasons plus the expect_err note and failed checks, as the sidecar
    // records them.
    let mut reasons = out.sidecar.stats.verdict_details.clone();
    let mut outcome = out.sidecar.outcome();
    if let Err(e) = written {
        reasons.push(format!("{e:#}"));
        outcome = Outcome::Fail;
    }
    VariantResult {
        id: id.to_string(),
        topology: spec.topology,
        outcome,
        expected_failure: out.sidecar.expected_failure,
        reasons,
        sidecar_path: out.sidecar_path.clone(),
        console_log: out.console_log.clone(),
        wall_ms: out.wall_ms,
    }
}

/// Append this variant to the run manifest, when `cargo ktstr test` asked for one. The
/// harness calls it for registered tests only: a test that runs an entry by hand (with
/// its sidecar in a temporary directory) stays out of the run's summary.
pub fn record(result: VariantResult) -> VariantResult {
    let Some(manifest) = std::env::var_os(MANIFEST_ENV).filter(|v| !v.is_empty()) else {
        return result;
    };
    if let Some(path) = &result.sidecar_path {
        let line = format!("{}\t{}\n", result.wall_ms, path.display());
        // One write of a short line to an O_APPEND file: lines of concurrent tests do not
        // interleave.
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&manifest)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            eprintln!(
                "ktstr: warning: cannot append to the run manifest {} ({MANIFEST_ENV}): {e}; the summary of `cargo ktstr test` will miss this test",
                Path::new(&manifest).display()
            );
        }
    }
    result
}

/// The message of a panic payload.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::entry::TestAttrs;
    use ktstr_wire::spec::WorkKind;

    fn spec(attrs: TestAttrs) -> TestSpec {
        let t = attrs.topology().unwrap();
        TestCtx::new("t", Variant::Base, t, attrs)
            .spec()
            .workers("spin", 2, WorkKind::Spin)
    }

    #[test]
    fn early_sidecars_name_the_scheduler_and_carry_its_sysctls_and_kargs() {
        let mut spec = spec(TestAttrs {
            scheduler: "/opt/scx/bin/scx_lavd",
            sysctls: &["vm.swappiness=0"],
            kargs: &["quiet"],
            ..TestAttrs::DEFAULT
        })
        .with_scheduler(|s| {
            s.sysctl("kernel.sched_autogroup_enabled", "0")
                .karg("nosmt")
        });
        spec.perf_delta_assertions = vec![ktstr_sidecar::PerfDeltaAssertionRecord {
            metric: "worst_gap_ms".into(),
            ..Default::default()
        }];
        let s = finalize::identity(&spec.identity(None, None));
        assert_eq!(s.scheduler, "scx_lavd");
        assert_eq!(
            s.sysctls,
            [
                "sysctl.vm.swappiness=0",
                "sysctl.kernel.sched_autogroup_enabled=0"
            ]
        );
        assert_eq!(s.kargs, ["quiet", "nosmt"]);
        assert_eq!(s.resolve_source, None);
        assert_eq!(s.perf_delta_assertions, spec.perf_delta_assertions);
        // The runner builds the same identity from its request.
        let kernel = crate::kernel::ResolvedKernel::unbootable("7.2.13");
        let req = run_request(&spec, kernel, EngineKind::QemuTcg);
        let r = finalize::identity(&req.identity());
        assert_eq!(r.file_name(), s.file_name());
        assert_eq!(
            (r.sysctls, r.kargs, r.perf_delta_assertions),
            (s.sysctls, s.kargs, s.perf_delta_assertions)
        );
    }

    #[test]
    fn an_early_exit_is_finalized_like_a_run() {
        let dir = tempfile::tempdir().unwrap();
        let id = TestId {
            name: "t".into(),
            preset: None,
            kernel: None,
        };
        let spec = spec(TestAttrs::DEFAULT);
        let out = finalize::not_booted(
            finalize::identity(&spec.identity(None, None)),
            Outcome::Skip,
            vec!["kernel unavailable: none cached".into()],
            Default::default(),
            Some(dir.path().to_path_buf()),
            Instant::now(),
        );
        let r = finish(&id, &spec, out, Vec::new());
        assert_eq!(r.outcome, Outcome::Skip);
        assert_eq!(r.reasons, ["kernel unavailable: none cached"]);
        let path = r.sidecar_path.expect("written");
        let text = std::fs::read_to_string(&path).unwrap();
        let report = ktstr_sidecar::conformance::check_text(&text).unwrap();
        assert!(report.unexpected().is_empty(), "{report}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// A finished run of `t` whose raw verdict was `raw`, to be written into `dir`.
    fn finished(dir: &Path, raw: Outcome, expect_err: bool) -> RunOutcome {
        let mut sidecar = ktstr_sidecar::SidecarResult::new_run("t", "1n1l2c1t", "eevdf");
        sidecar.finalize(raw, expect_err);
        RunOutcome {
            sidecar,
            sidecar_dir: Some(dir.to_path_buf()),
            sidecar_path: None,
            console_log: None,
            scheduler_log: None,
            collected: Default::default(),
            engine: crate::engine::EngineReport {
                exit: crate::engine::GuestExit::Reset,
                vcpus: 2,
                cpu_budget: 2,
                host_cpus: vec![0, 1],
                kvm_stats: None,
                start: crate::engine::GuestStart::Cold,
                snapshot: None,
            },
            notes: Vec::new(),
            checks: Default::default(),
            boot_to_ready_ms: Some(1),
            wall_ms: 1,
        }
    }

    #[test]
    fn checks_run_on_expected_failures_and_a_failed_one_fails_the_test() {
        let dir = tempfile::tempdir().unwrap();
        let id = TestId {
            name: "t".into(),
            preset: None,
            kernel: None,
        };
        let seen = std::rc::Rc::new(std::cell::Cell::new(None));
        let seen2 = seen.clone();
        let run_dir = dir.path().to_path_buf();
        let ok = spec(TestAttrs::DEFAULT).check(move |out| {
            seen2.set(Some(out.sidecar.expected_failure));
            // Checks run before the one write: no file yet, and what will be written
            // reads back.
            assert!(out.sidecar_path.is_none());
            assert_eq!(std::fs::read_dir(&run_dir).unwrap().count(), 0);
            let as_written = out.sidecar_as_written().map_err(|e| e.to_string())?;
            assert!(as_written.is_pass() && as_written.expected_failure);
            Ok(())
        });
        let r = finish_run(
            &id,
            &ok,
            finished(dir.path(), Outcome::Fail, true),
            Instant::now(),
        );
        assert_eq!(seen.get(), Some(true), "the check saw the expected failure");
        assert_eq!(r.outcome, Outcome::Pass);
        assert!(r.expected_failure);
        let back = ktstr_sidecar::read_sidecar(r.sidecar_path.as_ref().unwrap()).unwrap();
        assert!(back.is_pass() && back.expected_failure);

        let bad = spec(TestAttrs::DEFAULT).check(|_| Err("it failed for the wrong reason".into()));
        let r = finish_run(
            &id,
            &bad,
            finished(dir.path(), Outcome::Fail, true),
            Instant::now(),
        );
        assert_eq!(r.outcome, Outcome::Fail);
        assert!(!r.expected_failure);
        let back = ktstr_sidecar::read_sidecar(r.sidecar_path.as_ref().unwrap()).unwrap();
        assert!(back.is_fail() && !back.expected_failure);
        assert!(back
            .stats
            .verdict_details
            .iter()
            .any(|d| d == "check 1 failed: it failed for the wrong reason"));

        // A failed run (no expect_err) is not checked.
        let never = spec(TestAttrs::DEFAULT).check(|_| panic!("checked a failed run"));
        let r = finish_run(
            &id,
            &never,
            finished(dir.path(), Outcome::Fail, false),
            Instant::now(),
        );
        assert_eq!(r.outcome, Outcome::Fail);
        assert!(r
            .reasons
            .iter()
            .all(|x| !x.contains("checked a failed run")));
    }

    #[test]
    fn qemu_tcg_skips_guests_wider_than_16_vcpus() {
        let ok: Topology = "2n2l4c2t".parse().unwrap();
        assert_eq!(
            engine_skip_reason(EngineKind::QemuTcg, &ok, 8192, Some(24_000)),
            None
        );
        let big: Topology = "2n8l8c2t".parse().unwrap();
        let why = engine_skip_reason(EngineKind::QemuTcg, &big, 512, None).unwrap();
        assert!(why.contains("runs at most 16"), "{why}");
        assert!(why.contains("128 vCPUs"), "{why}");
        // The kvm engine presents any topology the VMM accepts.
        assert_eq!(engine_skip_reason(EngineKind::Kvm, &big, 512, None), None);
    }

    #[test]
    fn memory_beyond_the_host_is_a_skip() {
        let t: Topology = "1n1l2c1t".parse().unwrap();
        let why = engine_skip_reason(EngineKind::Kvm, &t, 4096, Some(2048)).unwrap();
        assert!(
            why.contains("4096 MiB") && why.contains("2048 MiB"),
            "{why}"
        );
        assert_eq!(
            engine_skip_reason(EngineKind::Kvm, &t, 2048, Some(2048)),
            None
        );
    }

    #[test]
    fn meminfo_total_in_mib() {
        let text = "MemTotal:       24684152 kB\nMemFree:        18950000 kB\n";
        assert_eq!(parse_mem_total_mib(text), Some(24105));
        assert_eq!(parse_mem_total_mib("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn render_lists_reasons_and_files() {
        let r = VariantResult {
            id: "ktstr/steady".into(),
            topology: "1n1l2c1t".parse().unwrap(),
            outcome: Outcome::Fail,
            expected_failure: false,
            reasons: vec!["worker spin[0] made no progress".into()],
            sidecar_path: Some("/r/steady-0.ktstr.json".into()),
            console_log: None,
            wall_ms: 12_345,
        };
        let text = r.render();
        assert!(
            text.starts_with("ktstr: ktstr/steady [1n1l2c1t]: FAIL in 12.3 s"),
            "{text}"
        );
        assert!(text.contains("\n  - worker spin[0] made no progress"));
        assert!(text.contains("\n  sidecar: /r/steady-0.ktstr.json"));
        assert_eq!(r.exit_code(), 1);
    }

    #[test]
    fn panic_text_reads_both_payload_kinds() {
        let p = catch_unwind(|| panic!("boom {}", 1)).unwrap_err();
        assert_eq!(panic_text(&*p), "boom 1");
        let p = catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(panic_text(&*p), "(a panic without a message)");
    }
}
