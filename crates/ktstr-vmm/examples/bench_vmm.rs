//! Benchmark: ktstr-vmm beside `qemu-system-x86_64 -accel kvm` on the same host, same run.
//!
//! 1. Setup: VM + memory + kernel load + ACPI/boot tables + vCPUs for a 4-vCPU, 1 GiB
//!    guest (the self-test ELF; also a Linux bzImage when KTSTR_BENCH_KERNEL is set), in
//!    process and as a fresh process up to "ready"; qemu: spawn to its QMP greeting with the
//!    same ELF (`-S`, machine built, kernel loaded, nothing run).
//! 2. Boot to reset: the self-test guest entered on 1 vCPU without SHM (prints, resets) —
//!    ktstr-vmm process spawn to exit, vs qemu microvm booting the same ELF through its PVH
//!    note to the triple-fault exit. Plus the full self-test (4 vCPUs, every check).
//!
//! Prints medians and ratios (ktstr-vmm / qemu); no pass/fail thresholds.
//! usage: bench_vmm [RUNS]   (env KTSTR_BENCH_KERNEL=bzImage to add the Linux setup rows)

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ktstr_vmm::selftest::{self, SelftestOptions, SELFTEST_GUEST_ELF};
use ktstr_vmm::{BzImageEntry, GuestKind, Topology, Vm, VmConfig};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn cfg(
    dir: &Path,
    kernel: &Path,
    topo: &str,
    mem: u64,
    cmdline: &str,
    entry: BzImageEntry,
    guest: GuestKind,
) -> VmConfig {
    VmConfig {
        topology: topo.parse().unwrap(),
        memory_mib: mem,
        cpu_budget: None,
        kernel: kernel.to_path_buf(),
        initrd: None,
        cmdline: cmdline.into(),
        shm_size: 8 << 20,
        serial_log: dir.join("console.log"),
        deadline: Some(Duration::from_secs(60)),
        guest,
        bzimage_entry: entry,
        cpuid_clear: Vec::new(),
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::env::temp_dir().join(format!("ktstr-bench-vmm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let elf = dir.join("selftest.elf");
    std::fs::write(&elf, SELFTEST_GUEST_ELF).unwrap();

    // Child modes (spawned by the parent so process start-up is counted like qemu's).
    match args.get(1).map(String::as_str) {
        Some("--child-setup") => {
            let vm = Vm::create(cfg(
                &dir,
                &elf,
                "1n1l4c1t",
                1024,
                "",
                BzImageEntry::HostDecompressed,
                GuestKind::BareMetal,
            ))
            .unwrap();
            println!("ready");
            std::io::stdout().flush().unwrap();
            drop(vm);
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
        Some("--child-boot") => {
            let vm = Vm::create(cfg(
                &dir,
                &elf,
                "1n1l1c1t",
                128,
                "",
                BzImageEntry::HostDecompressed,
                GuestKind::BareMetal,
            ))
            .unwrap();
            let r = vm.start().unwrap().wait();
            let _ = std::fs::remove_dir_all(&dir);
            std::process::exit(if r.exit.is_guest_reset() { 0 } else { 1 });
        }
        _ => {}
    }
    let runs: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let me = std::env::current_exe().unwrap();
    let qemu = "qemu-system-x86_64";
    let qemu_base = |smp: &str, mem: &str| {
        let mut c = Command::new(qemu);
        c.args([
            "-accel",
            "kvm",
            "-cpu",
            "host,-arch-capabilities",
            "-M",
            "microvm",
            "-m",
            mem,
            "-smp",
            smp,
        ])
        .args([
            "-display",
            "none",
            "-nodefaults",
            "-no-user-config",
            "-no-reboot",
            "-serial",
            "null",
        ])
        .arg("-kernel")
        .arg(&elf)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        c
    };
    let have_qemu = Command::new(qemu)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);

    println!(
        "bench-vmm: {runs} runs per row, medians in ms; ratio = ktstr-vmm / qemu (lower is faster)"
    );

    // 1a. In-process setup, 4 vCPUs, 1 GiB, self-test ELF.
    let mut setup = Vec::new();
    let mut parts = Vec::new();
    for _ in 0..runs {
        let vm = Vm::create(cfg(
            &dir,
            &elf,
            "1n1l4c1t",
            1024,
            "",
            BzImageEntry::HostDecompressed,
            GuestKind::BareMetal,
        ))
        .unwrap();
        setup.push(vm.setup_ms());
        parts.push(vm.timings().clone());
        drop(vm);
    }
    let m = |f: &dyn Fn(&ktstr_vmm::SetupTimings) -> f64| median(parts.iter().map(f).collect());
    println!(
        "setup in-process (4 vCPUs, 1 GiB, ELF)   {:8.2}   [vm {:.2}, memory {:.2}, kernel {:.2}, tables {:.2}, vcpus {:.2}]",
        median(setup.clone()),
        m(&|t| t.kvm_vm_ms),
        m(&|t| t.memory_ms),
        m(&|t| t.kernel_load_ms),
        m(&|t| t.tables_ms),
        m(&|t| t.vcpus_ms)
    );

    // 1b. Process spawn to ready.
    let mut ours = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let mut ch = Command::new(&me)
            .arg("--child-setup")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(ch.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        ours.push(ms(t));
        ch.wait().unwrap();
    }
    let ours_setup = median(ours);
    let mut q = Vec::new();
    if have_qemu {
        for _ in 0..runs {
            let t = Instant::now();
            let mut ch = qemu_base("4", "1024")
                .args(["-S", "-qmp", "stdio"])
                .spawn()
                .unwrap();
            let mut out = BufReader::new(ch.stdout.take().unwrap());
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            q.push(ms(t));
            let mut stdin = ch.stdin.take().unwrap();
            let _ =
                stdin.write_all(b"{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"quit\"}\n");
            drop(stdin);
            let _ = ch.wait();
        }
    }
    let qemu_setup = median(q);
    println!(
        "setup spawn->ready (4 vCPUs, 1 GiB, ELF)  ktstr-vmm {:8.2}   qemu -S to QMP greeting {:8.2}   ratio {:.3}",
        ours_setup,
        qemu_setup,
        ours_setup / qemu_setup
    );

    // 1c. Linux bzImage setup (optional).
    if let Ok(k) = std::env::var("KTSTR_BENCH_KERNEL") {
        let k = PathBuf::from(k);
        for (name, entry) in [
            (
                "bzImage as is (guest decompresses)",
                BzImageEntry::GuestDecompressor,
            ),
            (
                "bzImage decompressed on host (ELF)",
                BzImageEntry::HostDecompressed,
            ),
        ] {
            let mut v = Vec::new();
            let mut dec = Vec::new();
            for _ in 0..runs.min(5) {
                let vm = Vm::create(cfg(
                    &dir,
                    &k,
                    "1n1l4c1t",
                    1024,
                    "console=ttyS0",
                    entry,
                    GuestKind::Linux,
                ))
                .unwrap();
                v.push(vm.setup_ms());
                dec.push(vm.timings().decompress_ms.unwrap_or(0.0));
            }
            println!(
                "setup in-process Linux, {name:38} {:8.2}   [decompress {:.2}]",
                median(v),
                median(dec)
            );
        }
    }

    // 2a. Boot to reset, 1 vCPU, same guest path on both.
    let mut ours = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let st = Command::new(&me).arg("--child-boot").status().unwrap();
        assert!(
            st.success(),
            "ktstr-vmm child did not end with a guest reset"
        );
        ours.push(ms(t));
    }
    let ours_boot = median(ours);
    let mut q = Vec::new();
    if have_qemu {
        for _ in 0..runs {
            let t = Instant::now();
            let st = qemu_base("1", "128")
                .stdout(Stdio::null())
                .status()
                .unwrap();
            if st.success() {
                q.push(ms(t));
            }
        }
    }
    let qemu_boot = median(q);
    println!(
        "boot->reset spawn->exit (1 vCPU, ELF)     ktstr-vmm {:8.2}   qemu microvm PVH        {:8.2}   ratio {:.3}",
        ours_boot,
        qemu_boot,
        ours_boot / qemu_boot
    );

    // 2b. Full self-test, 4 vCPUs.
    let mut run = Vec::new();
    let mut cleanup = Vec::new();
    for i in 0..runs {
        let r = selftest::run(&SelftestOptions {
            topology: "1n1l4c1t".parse::<Topology>().unwrap(),
            cpu_budget: None,
            work_dir: dir.join(format!("st{i}")),
            deadline: Duration::from_secs(60),
        })
        .unwrap();
        assert!(r.passed, "self-test failed");
        run.push(r.vm.run_ms);
        cleanup.push(r.vm.cleanup_ms);
    }
    println!(
        "self-test 1n1l4c1t (all checks pass)      run {:8.2}   cleanup {:6.2}",
        median(run),
        median(cleanup)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
