//! Engines run a guest: our own KVM VMM (`kvm`) on hosts with hardware virtualisation,
//! or `qemu-system-x86_64` under TCG (`qemu-tcg`) where KVM cannot run a Linux kernel.
//! Both take the same [`BootSpec`] and hand back the same shared-memory view and exit.

pub mod kvm;
pub mod qemu;
pub mod qmp;
pub mod snapshot;
pub mod warm;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use ktstr_sidecar::GuestStart;
use ktstr_sidecar::KvmBacking;
use ktstr_topology::Topology;

/// Which engine runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Kvm,
    QemuTcg,
}

impl EngineKind {
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Kvm => "kvm",
            EngineKind::QemuTcg => "qemu-tcg",
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why no engine could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum EngineChoiceError {
    #[error(
        "unknown engine `{0}`: expected `auto`, `kvm` or `qemu-tcg` (KTSTR_ENGINE / --engine)"
    )]
    Unknown(String),
    #[error("no engine can run a Linux guest here: /dev/kvm is {kvm} and `qemu-system-x86_64` is not installed; install it (Debian: `apt-get install qemu-system-x86`) or run on a host with hardware KVM")]
    NoneAvailable { kvm: &'static str },
    #[error("engine `qemu-tcg` requested but `qemu-system-x86_64` is not on PATH; install it (Debian: `apt-get install qemu-system-x86`)")]
    QemuMissing,
}

/// Pick the engine: an explicit request (`--engine` / `KTSTR_ENGINE`) or `auto`, which
/// takes `kvm` on hardware KVM, else `qemu-tcg` when qemu is installed.
pub fn choose(request: Option<&str>) -> Result<EngineKind, EngineChoiceError> {
    let env = std::env::var("KTSTR_ENGINE").ok();
    let request = request
        .or(env.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or("auto");
    let qemu = qemu::find_binary();
    match request {
        "kvm" => Ok(EngineKind::Kvm),
        "qemu-tcg" | "qemu" | "tcg" => qemu
            .map(|_| EngineKind::QemuTcg)
            .ok_or(EngineChoiceError::QemuMissing),
        "auto" => match (KvmBacking::detect(), qemu) {
            (KvmBacking::Hardware | KvmBacking::Nested, _) => Ok(EngineKind::Kvm),
            (_, Some(_)) => Ok(EngineKind::QemuTcg),
            (kvm, None) => Err(EngineChoiceError::NoneAvailable {
                kvm: match kvm {
                    KvmBacking::Pvm => "KVM-PVM (cannot run an unmodified kernel at useful speed)",
                    KvmBacking::Unknown => "of unknown kind (no vmx/svm flag)",
                    _ => "absent",
                },
            }),
        },
        other => Err(EngineChoiceError::Unknown(other.to_string())),
    }
}

/// Everything an engine needs to boot one guest.
#[derive(Debug, Clone)]
pub struct BootSpec {
    pub topology: Topology,
    pub memory_mib: u64,
    /// Host CPUs the vCPU threads are pinned to (`None`: min(vcpus, host CPUs)).
    pub cpu_budget: Option<u32>,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Test kargs appended after the base command line.
    pub kargs: Vec<String>,
    /// Size of the shared-memory region in bytes (multiple of 2 MiB).
    pub shm_size: u64,
    /// Where the serial console goes (`None`: the terminal, for interactive shells).
    pub serial_log: Option<PathBuf>,
    /// Wall-clock budget for the whole run; past it the engine kills the guest.
    pub deadline: Duration,
    /// Start from a snapshot when the engine can (qemu-tcg, `KTSTR_SNAPSHOT` not off);
    /// `initrd` stays the cold boot's.
    pub warm: Option<WarmStart>,
}

/// How a run can start warm: the snapshot boots `base_initrd`; the rest of the test's
/// initramfs arrives after the restore.
#[derive(Clone)]
pub struct WarmStart {
    /// The guest runtime and the kernel config: what every test of this kernel shares.
    pub base_initrd: PathBuf,
    pub base_sha256: String,
    /// newc archives of everything else (binaries, their libraries, the spec).
    pub archive: Arc<Vec<u8>>,
}

impl fmt::Debug for WarmStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WarmStart")
            .field("base_initrd", &self.base_initrd)
            .field("base_sha256", &self.base_sha256)
            .field("archive_bytes", &self.archive.len())
            .finish()
    }
}

/// Kernel arguments every guest starts from: quiet, fast to boot, reboot = exit.
pub const BASE_KARGS: &[&str] = &[
    "console=ttyS0",
    "loglevel=4",
    "panic=-1",
    "reboot=k",
    "nomodules",
    "lockdown=none",
    "nokaslr",
    "tsc=reliable",
    "no_timer_check",
    "noreplace-smp",
    "cryptomgr.notests",
    "rcupdate.rcu_expedited=1",
    "pci=off",
    // Per-task and per-CPU schedstats (run delay, wake-up counts) for the monitor.
    "schedstats=enable",
];

/// qemu's machine has a real i8042: probe it briefly (no PnP scan, no mouse or mux).
/// The kvm engine's guest has none, and its ACPI tables say so, which skips the driver:
/// there these would force a probe of the missing controller instead.
pub const QEMU_I8042_KARGS: &[&str] =
    &["i8042.noaux", "i8042.nomux", "i8042.nopnp", "i8042.dumbkbd"];

/// How the guest's run ended, as the engine saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestExit {
    /// The guest rebooted (i8042 reset / qemu exit 0 with `-no-reboot`).
    Reset,
    /// The kvm engine saw a triple fault (`KVM_EXIT_SHUTDOWN`): where, and the bytes at
    /// RIP. After the guest reported done it is a reboot like any other; before, it is how
    /// a guest kernel dies when it cannot even print (the run fails with this).
    TripleFault(String),
    /// The engine died on its own: qemu crashed, or a KVM error.
    EngineFailed(String),
    /// The host killed the guest (watchdog or user).
    Killed(String),
}

impl std::fmt::Display for GuestExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GuestExit::Reset => write!(f, "the guest reset itself (a reboot)"),
            GuestExit::TripleFault(how) => write!(f, "a triple fault: {how}"),
            GuestExit::EngineFailed(why) => write!(f, "the engine failed: {why}"),
            GuestExit::Killed(why) => write!(f, "killed: {why}"),
        }
    }
}

/// What an engine reports after teardown.
#[derive(Debug, Clone)]
pub struct EngineReport {
    pub exit: GuestExit,
    pub vcpus: u32,
    pub cpu_budget: u32,
    /// The host CPUs the vCPU threads were pinned to.
    pub host_cpus: Vec<usize>,
    /// Per-vCPU KVM counters (`kvm` engine only).
    pub kvm_stats: Option<Vec<std::collections::BTreeMap<String, u64>>>,
    /// Booted, or restored from a snapshot.
    pub start: GuestStart,
    /// The snapshot directory a warm start restored.
    pub snapshot: Option<PathBuf>,
}

/// A guest an engine has started: the runner drains its region and watches it end.
pub trait RunningGuest {
    /// Host address and length of the shared-memory region.
    fn shm(&self) -> (*mut u8, usize);
    /// Has the guest (or the engine) ended? Non-blocking.
    fn has_exited(&mut self) -> anyhow::Result<bool>;
    /// Stop the guest now, remembering why.
    fn kill(&mut self, why: String);
    /// Wait for the end, free everything, say how the run ended.
    fn teardown(self: Box<Self>) -> EngineReport;
}

/// Boot `spec` on `engine`; `prepare` writes the region before any guest code runs.
pub fn start(
    engine: EngineKind,
    spec: &BootSpec,
    mut prepare: impl FnMut(*mut u8, usize) -> anyhow::Result<()>,
) -> anyhow::Result<Box<dyn RunningGuest>> {
    Ok(match engine {
        EngineKind::Kvm => Box::new(kvm::KvmGuest::start(spec, prepare)?),
        EngineKind::QemuTcg => Box::new(qemu::QemuGuest::start(spec, |m| {
            prepare(m.as_ptr(), m.len())
        })?),
    })
}

/// Host CPUs this process may run on.
pub fn available_host_cpus() -> Vec<usize> {
    ktstr_topology::host::affinity(0).unwrap_or_else(|_| {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        (0..n).collect()
    })
}

/// The host CPUs a guest with `vcpus` vCPUs and an optional budget is pinned to.
pub fn budget_cpus(vcpus: u32, budget: Option<u32>) -> Vec<usize> {
    let avail = available_host_cpus();
    let want = budget.unwrap_or(vcpus).max(1) as usize;
    let n = want.min(avail.len()).max(1);
    avail.into_iter().take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_never_exceeds_available_cpus_and_is_at_least_one() {
        let avail = available_host_cpus().len();
        assert_eq!(budget_cpus(16, None).len(), avail.min(16));
        assert_eq!(budget_cpus(16, Some(1)).len(), 1);
        assert_eq!(budget_cpus(1, Some(0)).len(), 1);
    }
}
