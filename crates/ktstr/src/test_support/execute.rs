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

use ktstr_sidecar::{Outcome, SidecarResult};
use ktstr_vmm::Topology;

use super::entry::TestEntry;
use super::names::TestId;
use super::spec::{TestCtx, TestSpec, Variant};
use crate::engine::{self, EngineKind};
use crate::kernel::ResolvedKernel;
use crate::runner::{self, evaluate, RunOutcome, RunRequest};

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
                    None,
                    Early::Fail(format!("bad topology: {e}")),
                    started,
                );
            }
        },
    };
    let ctx = TestCtx::new(entry.name, variant, topology, entry.attrs);

    let spec = match catch_unwind(AssertUnwindSafe(|| (entry.func)(&ctx))) {
        Ok(Ok(spec)) => spec,
        Ok(Err(why)) => return finish_early(id, &ctx.spec(), None, Early::Fail(why), started),
        Err(panic) => {
            let why = format!("the test function panicked: {}", panic_text(&*panic));
            return finish_early(id, &ctx.spec(), None, Early::Fail(why), started);
        }
    };
    if let Err(e) = spec.validate() {
        return finish_early(id, &spec, None, Early::Fail(e.to_string()), started);
    }

    let engine = match engine::choose(None) {
        Ok(e) => e,
        Err(e) => return finish_early(id, &spec, None, Early::Skip(e.to_string()), started),
    };
    if let Some(why) =
        engine_skip_reason(engine, &spec.topology, spec.memory_mib, host_memory_mib())
    {
        return finish_early(id, &spec, None, Early::Skip(why), started);
    }
    let kernel = match crate::kernel::resolve(kernel_spec) {
        Ok(k) => k,
        Err(e) => {
            let why = format!("kernel unavailable: {e}");
            return finish_early(id, &spec, None, Early::Skip(why), started);
        }
    };
    if let Err(e) = runner::guest_binary() {
        return finish_early(
            id,
            &spec,
            Some(&kernel),
            Early::Fail(format!("{e:#}")),
            started,
        );
    }

    let req = run_request(&spec, kernel.clone(), engine);
    let out = match runner::run(&req) {
        Ok(out) => out,
        Err(e) => {
            let why = format!("the run could not complete: {e:#}");
            return finish_early(id, &spec, Some(&kernel), Early::Fail(why), started);
        }
    };
    finish_run(id, &spec, out, started)
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
        assert: spec.assert.clone(),
        stream_output: false,
        console_on_terminal: false,
        write_sidecar: true,
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

/// A sidecar for a run that never booted: the spec's identity (the variant a real run
/// would record, so both land in the same file), the kernel when known.
fn early_sidecar(spec: &TestSpec, kernel: Option<&ResolvedKernel>) -> SidecarResult {
    let mut s = SidecarResult::new_run(
        spec.name.clone(),
        spec.topology.to_string(),
        spec.scheduler.name(),
    );
    s.vcpus = spec.topology.vcpus();
    s.payload = spec.payloads.first().map(|p| p.name.clone());
    // As the runner records them: the test's, then the scheduler's.
    s.sysctls = [spec.sysctls.clone(), spec.scheduler.sysctl_strings()].concat();
    s.kargs = [spec.kargs.as_slice(), spec.scheduler.kargs()].concat();
    s.work_type = evaluate::work_type_name(&spec.guest);
    s.periodic_target = spec.guest.num_snapshots;
    s.perf_delta_assertions = spec.perf_delta_assertions.clone();
    if let Some(k) = kernel {
        s.set_kernel(
            Some(k.release.clone()),
            k.source_tree.as_deref().or(Some(k.image.as_path())),
        );
    }
    s
}

fn finish_early(
    id: &TestId,
    spec: &TestSpec,
    kernel: Option<&ResolvedKernel>,
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
    let mut sidecar = early_sidecar(spec, kernel);
    // Not `finalize`: expect_err is about the scheduler's behaviour, and nothing ran.
    sidecar.set_outcome(outcome);
    sidecar.stats.verdict_details.push(reason.clone());
    let mut reasons = vec![reason];
    let sidecar_path = match sidecar.write() {
        Ok(p) => Some(p),
        Err(e) => {
            reasons.push(format!("cannot write the sidecar: {e}"));
            None
        }
    };
    let outcome = if sidecar_path.is_none() {
        Outcome::Fail
    } else {
        outcome
    };
    record(VariantResult {
        id: id.to_string(),
        topology: spec.topology,
        outcome,
        expected_failure: false,
        reasons,
        sidecar_path,
        console_log: None,
        wall_ms: started.elapsed().as_millis() as u64,
    })
}

fn finish_run(
    id: &TestId,
    spec: &TestSpec,
    mut out: RunOutcome,
    started: Instant,
) -> VariantResult {
    // The verdict's reasons plus the expect_err note, as the sidecar records them.
    let mut reasons = out.sidecar.stats.verdict_details.clone();
    // What the runner does not know about the test.
    out.sidecar.perf_delta_assertions = spec.perf_delta_assertions.clone();
    let mut write_error = rewrite(&mut out).err();

    // Checks run on every passing verdict, an expected failure included: there they
    // check that the run failed for the right reason.
    if write_error.is_none() && out.sidecar.is_pass() {
        let failures: Vec<String> = spec
            .checks()
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
            .collect();
        if !failures.is_empty() {
            out.sidecar.set_outcome(Outcome::Fail);
            // A failed check is no expected failure, whatever the run did.
            out.sidecar.expected_failure = false;
            out.sidecar
                .stats
                .verdict_details
                .extend(failures.iter().cloned());
            reasons.extend(failures);
            write_error = rewrite(&mut out).err();
        }
    }
    let mut outcome = out.sidecar.outcome();
    if let Some(e) = write_error {
        reasons.push(format!("cannot write the sidecar: {e}"));
        outcome = Outcome::Fail;
    }
    // The runner keeps the console log of every run that did not pass.
    record(VariantResult {
        id: id.to_string(),
        topology: spec.topology,
        outcome,
        expected_failure: out.sidecar.expected_failure,
        reasons,
        sidecar_path: out.sidecar_path.clone(),
        console_log: out.console_log.clone(),
        wall_ms: started.elapsed().as_millis() as u64,
    })
}

/// Write the (amended) sidecar over the runner's file.
fn rewrite(out: &mut RunOutcome) -> Result<(), String> {
    let dir = match out.sidecar_path.as_deref().and_then(Path::parent) {
        Some(d) => d.to_path_buf(),
        None => ktstr_sidecar::paths::run_dir_for(&out.sidecar),
    };
    let path = out.sidecar.write_to_dir(&dir).map_err(|e| e.to_string())?;
    out.sidecar_path = Some(path);
    Ok(())
}

/// Append this variant to the run manifest, when `cargo ktstr test` asked for one.
fn record(result: VariantResult) -> VariantResult {
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
        let spec = spec(TestAttrs {
            scheduler: "/opt/scx/bin/scx_lavd",
            sysctls: &["vm.swappiness=0"],
            kargs: &["quiet"],
            ..TestAttrs::DEFAULT
        })
        .with_scheduler(|s| {
            s.sysctl("kernel.sched_autogroup_enabled", "0")
                .karg("nosmt")
        });
        let s = early_sidecar(&spec, None);
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
    }

    /// A finished run of `t` whose raw verdict was `raw`, its sidecar in `dir`.
    fn finished(dir: &Path, raw: Outcome, expect_err: bool) -> RunOutcome {
        let mut sidecar = SidecarResult::new_run("t", "1n1l2c1t", "eevdf");
        sidecar.finalize(raw, expect_err);
        let path = sidecar.write_to_dir(dir).unwrap();
        RunOutcome {
            sidecar,
            sidecar_path: Some(path),
            console_log: None,
            collected: Default::default(),
            engine: crate::engine::EngineReport {
                exit: crate::engine::GuestExit::Reset,
                vcpus: 2,
                cpu_budget: 2,
                host_cpus: vec![0, 1],
                kvm_stats: None,
            },
            reasons: Vec::new(),
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
        let ok = spec(TestAttrs::DEFAULT).check(move |out| {
            seen2.set(Some(out.sidecar.expected_failure));
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
