//! Boots the bare-metal self-test guest on /dev/kvm for the three topologies CI requires
//! and checks that every check passes (topology seen by the guest, reset exit, pinning,
//! KVM stats). Skipped, with the reason printed, only when /dev/kvm is absent.

use std::path::Path;
use std::time::Duration;

use ktstr_topology::Topology;
use ktstr_vmm::selftest::{self, SelftestOptions};

fn run(label: &str, budget: Option<usize>) {
    if !Path::new("/dev/kvm").exists() {
        eprintln!("SKIP selftest {label}: /dev/kvm is absent on this host");
        return;
    }
    let topology: Topology = label.parse().unwrap();
    let dir =
        std::env::temp_dir().join(format!("ktstr-vmm-selftest-{label}-{}", std::process::id()));
    let r = selftest::run(&SelftestOptions {
        topology,
        cpu_budget: budget,
        work_dir: dir.clone(),
        deadline: Duration::from_secs(120),
    })
    .unwrap_or_else(|e| panic!("{label}: self-test could not run: {e}"));
    for c in &r.checks {
        eprintln!(
            "{label}: [{}] {}: {}",
            if c.pass { "PASS" } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    eprintln!(
        "{label}: setup {:.1} ms, run {:.1} ms, cleanup {:.1} ms, exits {}",
        r.vm.setup_ms,
        r.vm.run_ms,
        r.vm.cleanup_ms,
        r.kvm_totals.get("exits").copied().unwrap_or(0)
    );
    assert!(
        r.passed,
        "{label}: self-test failed; console:\n{}",
        r.vm.console_tail
    );
    assert_eq!(r.observed.as_ref().map(|o| o.label.as_str()), Some(label));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn one_cpu() {
    run("1n1l1c1t", None);
}

#[test]
fn two_nodes_smt_overcommitted_on_two_host_cpus() {
    let host_cpus = ktstr_topology::host::affinity(0)
        .map(|c| c.len())
        .unwrap_or(1);
    let budget = host_cpus.min(2);
    run("2n4l2c2t", Some(budget));
}

#[test]
fn seven_llcs() {
    run("1n7l2c1t", None);
}
