//! The `kvm` engine: ktstr's own VMM (`ktstr-vmm`) booting the Linux guest directly on
//! `/dev/kvm`, with the region excluded from the guest's e820 map.

use std::time::Duration;

use ktstr_vmm::{ExitReason, RunningVm, ShmRegion, Vm, VmConfig};

use super::{BootSpec, EngineReport, GuestExit, RunningGuest, BASE_KARGS};

/// A Linux guest running on our VMM.
pub struct KvmGuest {
    vm: Option<RunningVm>,
    shm: ShmRegion,
    /// The kernel's `System.map` (beside a cached bzImage), to name a fault's RIP.
    system_map: Option<std::path::PathBuf>,
}

impl KvmGuest {
    /// Set the VM up, let `prepare` write the region (the wire header) before any vCPU
    /// runs, then start the vCPUs.
    pub fn start(
        spec: &BootSpec,
        prepare: impl FnOnce(*mut u8, usize) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        let serial = match &spec.serial_log {
            Some(log) => {
                // A fresh file for this run: a previous run's log (or a planted link) at
                // that name is unlinked, never followed or quoted as this run's.
                crate::scratch::replace_file(log, 0o644).map_err(|e| {
                    anyhow::anyhow!("cannot create the console log {}: {e}", log.display())
                })?;
                log.clone()
            }
            None => std::path::PathBuf::from("/dev/stdout"),
        };
        // The ELF decompressed once into the kernel cache (the same one qemu-tcg enters):
        // no decompression per boot.
        let (kernel, note) = crate::kernel::vmlinux::kvm_boot_image(&spec.kernel);
        if let Some(why) = note {
            eprintln!("ktstr: the VMM decompresses the bzImage for this boot: {why}");
        }
        let mut cfg = VmConfig::linux(spec.topology, kernel, serial);
        cfg.memory_mib = spec.memory_mib;
        cfg.cpu_budget = spec.cpu_budget.map(|b| b as usize);
        cfg.initrd = Some(spec.initrd.clone());
        cfg.shm_size = spec.shm_size;
        cfg.deadline = Some(spec.deadline);
        let mut kargs: Vec<String> = BASE_KARGS.iter().map(|s| s.to_string()).collect();
        kargs.extend(cfg.memory_kargs()?);
        kargs.extend(spec.kargs.iter().cloned());
        cfg.cmdline = kargs.join(" ");
        let vm = Vm::create(cfg)?;
        tracing::debug!("kvm: VM set up: {:?}", vm.timings());
        let shm = vm.shm_region()?;
        prepare(shm.host_ptr(), shm.len())?;
        let vm = vm.start()?;
        tracing::debug!("kvm: vCPUs started");
        let system_map = Some(spec.kernel.with_file_name("System.map")).filter(|p| p.is_file());
        Ok(Self {
            vm: Some(vm),
            shm,
            system_map,
        })
    }
}

impl RunningGuest for KvmGuest {
    fn shm(&self) -> (*mut u8, usize) {
        (self.shm.host_ptr(), self.shm.len())
    }

    fn has_exited(&mut self) -> anyhow::Result<bool> {
        Ok(self
            .vm
            .as_ref()
            .is_none_or(|vm| vm.wait_timeout(Duration::ZERO)))
    }

    fn kill(&mut self, why: String) {
        if let Some(vm) = &self.vm {
            vm.kick(&why);
        }
    }

    fn teardown(mut self: Box<Self>) -> EngineReport {
        let Some(vm) = self.vm.take() else {
            return EngineReport {
                exit: GuestExit::EngineFailed("the VM was already torn down".into()),
                vcpus: 0,
                cpu_budget: 0,
                host_cpus: Vec::new(),
                kvm_stats: None,
                start: super::GuestStart::Cold,
                snapshot: None,
            };
        };
        let report = vm.wait();
        let exit = match &report.exit {
            ExitReason::TripleFault(f) => {
                let symbol = f
                    .rip
                    .zip(self.system_map.as_deref())
                    .and_then(|(rip, map)| {
                        crate::kernel::symbols::symbolize(map, rip).map(|s| (rip, s))
                    });
                GuestExit::TripleFault(match symbol {
                    Some((rip, s)) => format!("{f}; RIP {rip:#x} is {s}"),
                    None => f.to_string(),
                })
            }
            e if e.is_guest_reset() => GuestExit::Reset,
            ExitReason::Watchdog { after_ms } => GuestExit::Killed(format!(
                "watchdog: the VM ran {after_ms} ms past its deadline"
            )),
            ExitReason::Kicked { why } => GuestExit::Killed(why.clone()),
            other => GuestExit::EngineFailed(format!("{other}")),
        };
        // A vCPU the host kernel kept is the environment failing, whatever the guest did.
        let exit = if report.stuck_vcpus.is_empty() {
            exit
        } else {
            let stuck: Vec<String> = report.stuck_vcpus.iter().map(|s| s.to_string()).collect();
            GuestExit::EngineFailed(format!(
                "the run ended ({}), then {}",
                report.exit,
                stuck.join("; ")
            ))
        };
        EngineReport {
            exit,
            vcpus: report.vcpus,
            cpu_budget: report.cpu_budget as u32,
            host_cpus: report.host_cpus.clone(),
            kvm_stats: Some(report.per_vcpu_stats),
            start: super::GuestStart::Cold,
            snapshot: None,
        }
    }
}
