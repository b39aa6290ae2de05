//! The VM's exits other than a clean reset, on /dev/kvm with the self-test guest in its
//! failure modes: a triple fault reported with RIP and instruction bytes, the watchdog
//! deadline kicking halted vCPUs out of KVM_RUN, and a host kick from another thread.
//! Skipped, with the reason printed, only when /dev/kvm is absent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ktstr_vmm::arch::x86_64::layout::RamLayout;
use ktstr_vmm::selftest::SELFTEST_GUEST_ELF;
use ktstr_vmm::{BzImageEntry, ExitReason, GuestKind, Vm, VmConfig};

const SHM: u64 = 2 << 20;

fn config(
    name: &str,
    topo: &str,
    mode: &str,
    deadline: Option<Duration>,
) -> Option<(VmConfig, PathBuf)> {
    if !Path::new("/dev/kvm").exists() {
        eprintln!("SKIP {name}: /dev/kvm is absent on this host");
        return None;
    }
    let dir = std::env::temp_dir().join(format!("ktstr-vmm-exits-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let elf = dir.join("guest.elf");
    std::fs::write(&elf, SELFTEST_GUEST_ELF).unwrap();
    let layout = RamLayout::new(64 << 20, SHM).unwrap();
    let cfg = VmConfig {
        topology: topo.parse().unwrap(),
        memory_mib: 64,
        cpu_budget: None,
        kernel: elf,
        initrd: None,
        cmdline: format!("{} ktstr.selftest={mode}", Vm::shm_cmdline_arg(&layout)),
        shm_size: SHM,
        serial_log: dir.join("console.log"),
        deadline,
        guest: GuestKind::BareMetal,
        bzimage_entry: BzImageEntry::HostDecompressed,
        cpuid_clear: Vec::new(),
    };
    Some((cfg, dir))
}

/// The guest refuses to run without an SHM header; write one like the runner does.
fn start(cfg: VmConfig) -> ktstr_vmm::RunningVm {
    let vm = Vm::create(cfg).unwrap();
    let r = vm.shm_region().unwrap();
    // SAFETY: `r` keeps the region mapped for the life of `shm`.
    let shm = unsafe { ktstr_wire::SharedMem::from_raw(r.host_ptr(), r.len()) }.unwrap();
    ktstr_wire::init_header(&shm).unwrap();
    vm.start().unwrap()
}

#[test]
fn triple_fault_reports_rip_and_instruction_bytes() {
    let Some((cfg, dir)) = config("ud2", "1n1l1c1t", "ud2", Some(Duration::from_secs(60))) else {
        return;
    };
    let report = start(cfg).wait();
    eprintln!("exit: {}", report.exit);
    match &report.exit {
        ExitReason::TripleFault(f) => {
            assert_eq!(f.vcpu, 0);
            let rip = f.rip.expect("RIP read after the shutdown");
            assert!(
                (0x20_0000..0x30_0000).contains(&rip),
                "RIP {rip:#x} inside the guest image"
            );
            assert_eq!(
                f.insn.as_deref().map(|b| &b[..2]),
                Some(&[0x0f, 0x0b][..]),
                "ud2 at RIP"
            );
        }
        other => panic!("expected a triple fault, got {other}"),
    }
    assert!(report.console_tail.contains("executing ud2"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn watchdog_kicks_halted_vcpus() {
    let Some((cfg, dir)) = config("hang", "1n2l2c1t", "hang", Some(Duration::from_secs(3))) else {
        return;
    };
    let report = start(cfg).wait();
    eprintln!("exit: {}; cleanup {:.1} ms", report.exit, report.cleanup_ms);
    assert!(
        matches!(report.exit, ExitReason::Watchdog { .. }),
        "{}",
        report.exit
    );
    assert!(report.console_tail.contains("halting forever"));
    // Every vCPU left KVM_RUN through the kick (signal or immediate_exit) and was joined.
    assert_eq!(report.per_vcpu_stats.len(), 4);
    assert!(ktstr_vmm::stats::total(&report.per_vcpu_stats, "signal_exits") >= 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn host_kick_from_another_thread() {
    let Some((cfg, dir)) = config("kick", "1n1l2c1t", "hang", None) else {
        return;
    };
    let running = start(cfg);
    let kicker = running.kicker();
    let log = dir.join("console.log");
    let t = std::thread::spawn(move || {
        // Kick once the guest has said it is halting (no deadline is set).
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("halting forever")
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        kicker.stop(ExitReason::Kicked { why: "test".into() });
    });
    let report = running.wait();
    t.join().unwrap();
    assert_eq!(report.exit, ExitReason::Kicked { why: "test".into() });
    let _ = std::fs::remove_dir_all(dir);
}
