//! `cargo ktstr selftest-vm`: boots ktstr-vmm's bare-metal self-test guest with a topology
//! and reports what the guest saw, a pass/fail per check, KVM stats totals, vCPU thread
//! affinities and setup/teardown times. Exit 0 only when every check passes.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use ktstr_topology::Topology;
use ktstr_vmm::selftest::{self, SelftestOptions, SelftestReport};

#[derive(Args, Debug)]
pub struct SelftestVmArgs {
    /// Engine; only `kvm` (ktstr's own VMM) runs the self-test.
    #[arg(long, default_value = "kvm")]
    engine: String,
    /// CPU topology as `N,L,C,T` (NUMA nodes, LLCs, cores per LLC, threads per core) or `1n2l2c1t`.
    #[arg(long, default_value = "1,1,1,1")]
    topology: Topology,
    /// Host CPUs for the vCPU threads (default: min(vCPUs, host CPUs available)).
    #[arg(long)]
    cpu_budget: Option<usize>,
    /// Print the whole report as JSON.
    #[arg(long)]
    json: bool,
    /// Watchdog deadline in seconds.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
    /// Keep the guest ELF and console log here (default: a temporary directory, removed).
    #[arg(long)]
    work_dir: Option<std::path::PathBuf>,
}

pub fn run(a: SelftestVmArgs) -> anyhow::Result<i32> {
    if a.engine != "kvm" {
        bail!(
            "selftest-vm runs only on the kvm engine (got `{}`): it tests ktstr's own VMM",
            a.engine
        );
    }
    let (work_dir, remove) = match &a.work_dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("ktstr-selftest-vm-{}", std::process::id())),
            true,
        ),
    };
    let report = selftest::run(&SelftestOptions {
        topology: a.topology,
        cpu_budget: a.cpu_budget,
        work_dir: work_dir.clone(),
        deadline: Duration::from_secs(a.timeout_s),
    })
    .with_context(|| format!("self-test VM for {}", a.topology))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    if remove && report.passed {
        let _ = std::fs::remove_dir_all(&work_dir);
    } else if !a.json {
        println!("console log: {}", report.console_log.display());
    }
    Ok(if report.passed { 0 } else { 1 })
}

fn print_text(r: &SelftestReport) {
    let vm = &r.vm;
    println!(
        "topology   declared {}  observed {}  ({})",
        r.topology,
        r.observed.as_ref().map(|o| o.label.as_str()).unwrap_or("-"),
        r.vendor
    );
    if let Some(o) = &r.observed {
        println!("x2APIC ids {:?}", o.apic_ids);
    }
    println!("checks");
    for c in &r.checks {
        println!(
            "  [{}] {}: {}",
            if c.pass { "PASS" } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    println!("exit       {}", vm.exit);
    println!(
        "vCPUs      {} on host CPUs {:?} (cpu_budget {}{})",
        vm.vcpus,
        vm.host_cpus,
        vm.cpu_budget,
        if vm.overcommit { ", overcommitted" } else { "" }
    );
    for t in &vm.vcpu_threads {
        println!(
            "  vCPU {:>3} apic {:>3} tid {:>7} affinity {:?}",
            t.vcpu, t.apic_id, t.tid, t.affinity
        );
    }
    let k = &r.kvm_totals;
    let g = |n: &str| k.get(n).copied().unwrap_or(0);
    println!(
        "KVM stats  exits {}  io_exits {}  halt_exits {}  signal_exits {}  halt_wait_ns {}  preemption_reported {}  ({} counters per vCPU)",
        g("exits"),
        g("io_exits"),
        g("halt_exits"),
        g("signal_exits"),
        g("halt_wait_ns"),
        g("preemption_reported"),
        vm.per_vcpu_stats.first().map(|m| m.len()).unwrap_or(0)
    );
    let t = &vm.timings;
    println!(
        "times      setup {:.1} ms (vm {:.1}, memory {:.1}, kernel {:.1}, tables {:.1}, vcpus {:.1})  run {:.1} ms  teardown {:.1} ms",
        vm.setup_ms, t.kvm_vm_ms, t.memory_ms, t.kernel_load_ms, t.tables_ms, t.vcpus_ms, vm.run_ms, vm.cleanup_ms
    );
    println!(
        "ring       {} frames, {} backpressure waits{}",
        r.frames,
        r.backpressure_waits,
        r.wire_error
            .as_deref()
            .map(|e| format!(", error: {e}"))
            .unwrap_or_default()
    );
    println!("result     {}", if r.passed { "PASS" } else { "FAIL" });
}
