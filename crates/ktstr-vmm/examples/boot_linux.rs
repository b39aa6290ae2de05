//! Boots a Linux kernel on ktstr-vmm and prints the exit, times and the console tail.
//!
//! usage: boot_linux KERNEL TOPOLOGY DEADLINE_S [guest|host] [cpuid-clear=1.ecx:13 ...] [CMDLINE...]
//!   guest = let the bzImage decompress itself; host = decompress on the host, enter the ELF.

use std::time::Duration;

use ktstr_vmm::{BzImageEntry, Vm, VmConfig};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 4 {
        eprintln!("usage: boot_linux KERNEL TOPOLOGY DEADLINE_S [guest|host] [CMDLINE...]");
        std::process::exit(2);
    }
    let topo = a[2].parse().expect("topology");
    let log = std::env::temp_dir().join(format!("ktstr-boot-linux-{}.log", std::process::id()));
    let mut cfg = VmConfig::linux(topo, a[1].clone().into(), log.clone());
    cfg.deadline = Some(Duration::from_secs(a[3].parse().expect("deadline seconds")));
    cfg.bzimage_entry = match a.get(4).map(String::as_str) {
        Some("guest") => BzImageEntry::GuestDecompressor,
        _ => BzImageEntry::HostDecompressed,
    };
    // Kernel args; `cpuid-clear=1.ecx:13` style words are CPUID masks, not kernel args.
    let mut words = Vec::new();
    for w in a.get(5..).unwrap_or_default() {
        match w.strip_prefix("cpuid-clear=") {
            Some(m) => cfg.cpuid_clear.push(m.parse().expect("CPUID mask")),
            None => words.push(w.clone()),
        }
    }
    let mut cmdline = words.join(" ");
    for karg in cfg.memory_kargs().expect("layout") {
        cmdline.push(' ');
        cmdline.push_str(&karg);
    }
    cfg.cmdline = cmdline;
    let vm = match Vm::create(cfg) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("setup failed: {e}");
            std::process::exit(1);
        }
    };
    println!("setup {:.1} ms: {:?}", vm.setup_ms(), vm.timings());
    let report = vm.start().expect("start").wait();
    println!("exit: {}", report.exit);
    println!(
        "run {:.1} ms, cleanup {:.1} ms, console {} bytes, log {}",
        report.run_ms,
        report.cleanup_ms,
        report.console_bytes,
        log.display()
    );
    let t = ktstr_vmm::stats::totals(&report.per_vcpu_stats);
    println!(
        "exits {:?} io_exits {:?}",
        t.get("exits"),
        t.get("io_exits")
    );
    println!("--- console tail ---\n{}", report.console_tail);
}
