//! `host`: the machine that ran the VM, captured from `/proc` and `/sys`, so results from
//! different hosts can be told apart (it stays out of the variant hash).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Sidecar key `host`: the reference's `HostContext` (same keys, same order), then
/// ktstr's extra keys `kvm`, `engine` and `start`. Every field is null (an empty map for
/// `cpufreq_governor`) when its source was unreadable; every key is optional on read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostContext {
    /// `model name` of the first CPU in `/proc/cpuinfo` ("AMD EPYC 9654").
    pub cpu_model: Option<String>,
    /// `vendor_id` in `/proc/cpuinfo` ("AuthenticAMD", "GenuineIntel").
    pub cpu_vendor: Option<String>,
    /// `MemTotal` of `/proc/meminfo`, KiB.
    pub total_memory_kib: Option<u64>,
    /// `HugePages_Total` of `/proc/meminfo`.
    pub hugepages_total: Option<u64>,
    /// `HugePages_Free` of `/proc/meminfo`.
    pub hugepages_free: Option<u64>,
    /// `Hugepagesize` of `/proc/meminfo`, KiB.
    pub hugepages_size_kib: Option<u64>,
    /// Selected mode of `/sys/kernel/mm/transparent_hugepage/enabled` ("madvise").
    pub thp_enabled: Option<String>,
    /// Selected mode of `/sys/kernel/mm/transparent_hugepage/defrag`.
    pub thp_defrag: Option<String>,
    /// Host scheduler knobs: every readable `/proc/sys/kernel/sched_*` file.
    pub sched_tunables: Option<BTreeMap<String, String>>,
    /// CPUs online on the host (`/sys/devices/system/cpu/online`).
    pub online_cpus: Option<usize>,
    /// NUMA nodes online on the host (`/sys/devices/system/node/online`).
    pub numa_nodes: Option<usize>,
    /// cpufreq governor per host CPU (`{"0": "performance"}`); empty without cpufreq.
    pub cpufreq_governor: BTreeMap<usize, String>,
    /// Host kernel name (`/proc/sys/kernel/ostype`: "Linux").
    pub kernel_name: Option<String>,
    /// Host kernel release (`/proc/sys/kernel/osrelease`).
    pub kernel_release: Option<String>,
    /// Architecture the harness was built for ("x86_64").
    pub arch: Option<String>,
    /// Host kernel command line (`/proc/cmdline`).
    pub kernel_cmdline: Option<String>,
    /// Per-task delay accounting (`/proc/sys/kernel/task_delayacct`).
    pub task_delayacct: Option<DelayacctState>,
    /// `CONFIG_TASK_XACCT` of the host kernel (from `/boot/config-<release>`).
    pub config_task_xacct: Option<XacctState>,
    /// Allocator statistics of the harness process; null (ktstr uses the system
    /// allocator, which publishes none).
    pub heap_state: Option<HostHeapState>,
    /// Extra key (ktstr): what backs `/dev/kvm`.
    pub kvm: Option<KvmBacking>,
    /// Extra key (ktstr): which engine ran the guest; set by the runner, not by
    /// [`HostContext::capture`].
    pub engine: Option<Engine>,
    /// Extra key (ktstr): whether the guest booted (`cold`) or was restored from a
    /// snapshot of a booted guest (`warm`); set by the runner.
    pub start: Option<GuestStart>,
}

/// How the guest of a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestStart {
    /// The kernel booted for this run.
    Cold,
    /// Restored from a snapshot of a guest booted earlier up to its runtime's start; the
    /// test's files arrived after the restore.
    Warm,
}

/// Per-task delay accounting on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DelayacctState {
    /// The kernel was built without `CONFIG_TASK_DELAY_ACCT`.
    ConfigOff,
    /// Built in, but `kernel.task_delayacct` is 0.
    RuntimeOff,
    /// Collecting.
    On,
}

/// `CONFIG_TASK_XACCT` of the host kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XacctState {
    On,
    Off,
    /// The kernel configuration could not be read.
    Unknown,
}

/// Allocator statistics of a process (the reference reports jemalloc's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostHeapState {
    pub active_bytes: Option<u64>,
    pub allocated_bytes: Option<u64>,
    pub resident_bytes: Option<u64>,
    pub mapped_bytes: Option<u64>,
    pub narenas: Option<usize>,
}

/// What serves `/dev/kvm` on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvmBacking {
    /// Hardware virtualisation: `vmx`/`svm` in the CPU flags or `kvm_intel`/`kvm_amd` loaded.
    Hardware,
    /// Hardware-style KVM (SVM/VMX) inside a virtual machine (the CPU flags say
    /// `hypervisor`): `cargo ktstr nested`'s L1, or a cloud VM with nested virtualisation.
    /// Our VMM runs as on hardware, but every exit goes through the outer hypervisor, so
    /// timings are not those of bare metal.
    Nested,
    /// KVM-PVM (module `kvm_pvm`): the API works but guest kernel code is emulated, slowly.
    Pvm,
    /// `/dev/kvm` exists but neither of the above could be established.
    Unknown,
    /// No `/dev/kvm`.
    Absent,
}

/// The engine that ran the guest (DESIGN section 4b).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    /// ktstr's own VMM on `/dev/kvm`.
    Kvm,
    /// `qemu-system-x86_64 -accel tcg`.
    QemuTcg,
}

impl HostContext {
    /// Capture the context of this host. Never fails: unreadable pieces stay None.
    pub fn capture() -> HostContext {
        Self::capture_from(Path::new("/"))
    }

    /// Capture from a file-system root holding `proc/`, `sys/` and `dev/` (tests use a
    /// fake tree).
    pub fn capture_from(root: &Path) -> HostContext {
        let read = |rel: &str| fs::read_to_string(root.join(rel)).ok();
        let cpuinfo = read("proc/cpuinfo");
        let meminfo = read("proc/meminfo");
        let cpu_field = |key: &str| cpuinfo.as_deref().and_then(|c| first_field(c, key));
        let mem_field = |key: &str| meminfo.as_deref().and_then(|m| meminfo_number(m, key));

        let release = read("proc/sys/kernel/osrelease").map(|s| s.trim().to_string());
        HostContext {
            cpu_model: cpu_field("model name"),
            cpu_vendor: cpu_field("vendor_id"),
            total_memory_kib: mem_field("MemTotal"),
            hugepages_total: mem_field("HugePages_Total"),
            hugepages_free: mem_field("HugePages_Free"),
            hugepages_size_kib: mem_field("Hugepagesize"),
            thp_enabled: read("sys/kernel/mm/transparent_hugepage/enabled")
                .and_then(|s| selected_mode(&s)),
            thp_defrag: read("sys/kernel/mm/transparent_hugepage/defrag")
                .and_then(|s| selected_mode(&s)),
            sched_tunables: sched_tunables(&root.join("proc/sys/kernel")),
            online_cpus: read("sys/devices/system/cpu/online").and_then(|s| cpulist_count(&s)),
            numa_nodes: read("sys/devices/system/node/online").and_then(|s| cpulist_count(&s)),
            cpufreq_governor: cpufreq_governors(&root.join("sys/devices/system/cpu")),
            kernel_name: read("proc/sys/kernel/ostype").map(|s| s.trim().to_string()),
            config_task_xacct: release
                .as_deref()
                .map(|r| task_xacct(read(&format!("boot/config-{r}")).as_deref())),
            kernel_release: release,
            arch: Some(std::env::consts::ARCH.to_string()),
            kernel_cmdline: read("proc/cmdline").map(|s| s.trim().to_string()),
            task_delayacct: delayacct(&root.join("proc/sys/kernel")),
            heap_state: None,
            kvm: Some(kvm_backing(root, cpuinfo.as_deref())),
            engine: None,
            start: None,
        }
    }
}

/// `scaling_governor` of every `cpuN` below `cpu_dir` that has cpufreq.
fn cpufreq_governors(cpu_dir: &Path) -> BTreeMap<usize, String> {
    let Ok(entries) = fs::read_dir(cpu_dir) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let cpu: usize = name.to_str()?.strip_prefix("cpu")?.parse().ok()?;
            let gov = fs::read_to_string(e.path().join("cpufreq/scaling_governor")).ok()?;
            Some((cpu, gov.trim().to_string()))
        })
        .collect()
}

/// `kernel.task_delayacct`: the knob exists only when the kernel has delay accounting.
/// None when `/proc/sys/kernel` itself is unreadable.
fn delayacct(sys_kernel: &Path) -> Option<DelayacctState> {
    if !sys_kernel.is_dir() {
        return None;
    }
    match fs::read_to_string(sys_kernel.join("task_delayacct")) {
        Ok(v) if v.trim() == "0" => Some(DelayacctState::RuntimeOff),
        Ok(_) => Some(DelayacctState::On),
        Err(_) => Some(DelayacctState::ConfigOff),
    }
}

/// `CONFIG_TASK_XACCT` from a kernel configuration file's text.
fn task_xacct(config: Option<&str>) -> XacctState {
    let Some(config) = config else {
        return XacctState::Unknown;
    };
    for line in config.lines() {
        if line.trim() == "CONFIG_TASK_XACCT=y" {
            return XacctState::On;
        }
        if line.trim() == "# CONFIG_TASK_XACCT is not set" {
            return XacctState::Off;
        }
    }
    XacctState::Off
}

/// Value of the first `key : value` line of a `/proc/cpuinfo`-style file.
fn first_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

/// Number of a `/proc/meminfo` line (`MemTotal:  16384 kB` -> 16384).
fn meminfo_number(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        if k.trim() != key {
            return None;
        }
        v.split_whitespace().next()?.parse().ok()
    })
}

/// The bracketed choice of a sysfs mode file (`always [madvise] never` -> `madvise`).
fn selected_mode(text: &str) -> Option<String> {
    let start = text.find('[')? + 1;
    let len = text[start..].find(']')?;
    Some(text[start..start + len].to_string())
}

/// Count of a kernel cpu/node list (`0-3,8,10-11` -> 7); None if malformed.
pub(crate) fn cpulist_count(text: &str) -> Option<usize> {
    let text = text.trim();
    if text.is_empty() {
        return Some(0);
    }
    let mut n: usize = 0;
    for part in text.split(',') {
        let count = match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                b.checked_sub(a)?.checked_add(1)?
            }
            None => {
                part.trim().parse::<usize>().ok()?;
                1
            }
        };
        n = n.checked_add(count)?;
    }
    Some(n)
}

fn sched_tunables(dir: &Path) -> Option<BTreeMap<String, String>> {
    let entries = fs::read_dir(dir).ok()?;
    let mut out = BTreeMap::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("sched_") {
            continue;
        }
        // Write-only or permission-denied knobs are skipped, not fatal.
        if let Ok(value) = fs::read_to_string(entry.path()) {
            out.insert(name, value.trim().to_string());
        }
    }
    Some(out)
}

impl KvmBacking {
    /// What serves this host's `/dev/kvm`.
    pub fn detect() -> KvmBacking {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").ok();
        kvm_backing(Path::new("/"), cpuinfo.as_deref())
    }
}

/// Decide what serves `/dev/kvm`. PVM is checked first: its module replaces the vendor
/// module, so its presence wins even if the CPU advertises vmx/svm.
fn kvm_backing(root: &Path, cpuinfo: Option<&str>) -> KvmBacking {
    if !root.join("dev/kvm").exists() {
        return KvmBacking::Absent;
    }
    let modules = fs::read_to_string(root.join("proc/modules")).unwrap_or_default();
    let loaded = |name: &str| {
        modules
            .lines()
            .any(|l| l.split_whitespace().next() == Some(name))
            || root.join("sys/module").join(name).is_dir()
    };
    if loaded("kvm_pvm") {
        return KvmBacking::Pvm;
    }
    let flags = cpuinfo.and_then(|c| first_field(c, "flags"));
    let has_flag = |names: &[&str]| {
        flags
            .as_deref()
            .is_some_and(|f| f.split_whitespace().any(|x| names.contains(&x)))
    };
    if has_flag(&["vmx", "svm"]) || loaded("kvm_intel") || loaded("kvm_amd") {
        return if has_flag(&["hypervisor"]) {
            KvmBacking::Nested
        } else {
            KvmBacking::Hardware
        };
    }
    KvmBacking::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().expect("test paths have parents")).expect("mkdir");
        fs::write(p, text).expect("write");
    }

    fn fake_host(root: &Path) {
        write(
            root,
            "proc/cpuinfo",
            "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9654\nflags\t\t: fpu svm lm\n\nprocessor\t: 1\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9654\n",
        );
        write(
            root,
            "proc/meminfo",
            "MemTotal:       24576000 kB\nHugePages_Total:      16\nHugePages_Free:        4\nHugepagesize:       2048 kB\n",
        );
        write(
            root,
            "sys/kernel/mm/transparent_hugepage/enabled",
            "always [madvise] never\n",
        );
        write(
            root,
            "sys/kernel/mm/transparent_hugepage/defrag",
            "[always] defer madvise never\n",
        );
        write(root, "proc/sys/kernel/osrelease", "6.18.44\n");
        write(root, "proc/cmdline", "console=ttyS0 quiet\n");
        write(root, "proc/sys/kernel/sched_rr_timeslice_ms", "100\n");
        write(root, "proc/sys/kernel/sched_autogroup_enabled", "1\n");
        write(root, "proc/sys/kernel/hostname", "not-a-sched-knob\n");
        write(root, "sys/devices/system/cpu/online", "0-3,8,10-11\n");
        write(root, "sys/devices/system/node/online", "0-1\n");
        write(root, "proc/sys/kernel/ostype", "Linux\n");
        write(root, "proc/sys/kernel/task_delayacct", "0\n");
        write(
            root,
            "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
            "performance\n",
        );
        write(
            root,
            "sys/devices/system/cpu/cpu10/cpufreq/scaling_governor",
            "schedutil\n",
        );
        write(root, "sys/devices/system/cpu/cpu1/online", "1\n");
        write(
            root,
            "boot/config-6.18.44",
            "CONFIG_X=y\n# CONFIG_TASK_XACCT is not set\n",
        );
    }

    #[test]
    fn capture_reads_every_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fake_host(root);
        write(root, "dev/kvm", "");
        let h = HostContext::capture_from(root);
        assert_eq!(h.cpu_model.as_deref(), Some("AMD EPYC 9654"));
        assert_eq!(h.cpu_vendor.as_deref(), Some("AuthenticAMD"));
        assert_eq!(h.total_memory_kib, Some(24_576_000));
        assert_eq!(h.hugepages_total, Some(16));
        assert_eq!(h.hugepages_free, Some(4));
        assert_eq!(h.hugepages_size_kib, Some(2048));
        assert_eq!(h.thp_enabled.as_deref(), Some("madvise"));
        assert_eq!(h.thp_defrag.as_deref(), Some("always"));
        assert_eq!(h.kernel_release.as_deref(), Some("6.18.44"));
        assert_eq!(h.kernel_cmdline.as_deref(), Some("console=ttyS0 quiet"));
        let knobs = h.sched_tunables.expect("tunables");
        assert_eq!(
            knobs.keys().map(String::as_str).collect::<Vec<_>>(),
            ["sched_autogroup_enabled", "sched_rr_timeslice_ms"]
        );
        assert_eq!(knobs["sched_rr_timeslice_ms"], "100");
        assert_eq!(h.online_cpus, Some(7));
        assert_eq!(h.numa_nodes, Some(2));
        assert_eq!(h.kvm, Some(KvmBacking::Hardware));
        assert_eq!(h.engine, None);
        assert_eq!(h.kernel_name.as_deref(), Some("Linux"));
        assert_eq!(h.task_delayacct, Some(DelayacctState::RuntimeOff));
        assert_eq!(h.config_task_xacct, Some(XacctState::Off));
        assert_eq!(
            h.cpufreq_governor,
            BTreeMap::from([(0, "performance".into()), (10, "schedutil".into())])
        );
        assert_eq!(h.heap_state, None);
    }

    #[test]
    fn delay_and_extended_accounting_states() {
        let dir = tempfile::tempdir().expect("tempdir");
        let k = dir.path().join("proc/sys/kernel");
        assert_eq!(delayacct(&k), None, "no /proc/sys/kernel: unknown");
        fs::create_dir_all(&k).expect("mkdir");
        assert_eq!(delayacct(&k), Some(DelayacctState::ConfigOff));
        fs::write(k.join("task_delayacct"), "1\n").expect("write");
        assert_eq!(delayacct(&k), Some(DelayacctState::On));
        assert_eq!(task_xacct(None), XacctState::Unknown);
        assert_eq!(task_xacct(Some("CONFIG_TASK_XACCT=y\n")), XacctState::On);
        assert_eq!(task_xacct(Some("CONFIG_OTHER=y\n")), XacctState::Off);
        let json =
            serde_json::to_string(&(DelayacctState::ConfigOff, XacctState::Unknown)).expect("ser");
        assert_eq!(json, r#"["config_off","unknown"]"#);
    }

    #[test]
    fn kvm_backing_pvm_wins_and_absent_without_dev_kvm() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fake_host(root);
        assert_eq!(
            HostContext::capture_from(root).kvm,
            Some(KvmBacking::Absent)
        );
        write(root, "dev/kvm", "");
        write(
            root,
            "proc/modules",
            "kvm_pvm 65536 0 - Live 0x0\nkvm 1 1 kvm_pvm, Live 0x0\n",
        );
        assert_eq!(HostContext::capture_from(root).kvm, Some(KvmBacking::Pvm));
        // Without /proc/modules, /sys/module/kvm_pvm tells the same (this workplace).
        fs::remove_file(root.join("proc/modules")).expect("rm");
        fs::create_dir_all(root.join("sys/module/kvm_pvm")).expect("mkdir");
        assert_eq!(HostContext::capture_from(root).kvm, Some(KvmBacking::Pvm));
    }

    #[test]
    fn kvm_backing_unknown_without_evidence_and_hardware_by_module() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write(root, "dev/kvm", "");
        write(root, "proc/cpuinfo", "flags\t: fpu lm\n");
        assert_eq!(
            HostContext::capture_from(root).kvm,
            Some(KvmBacking::Unknown)
        );
        write(root, "proc/modules", "kvm_amd 1 0 - Live 0x0\n");
        assert_eq!(
            HostContext::capture_from(root).kvm,
            Some(KvmBacking::Hardware)
        );
        // The same inside a VM (`cargo ktstr nested`'s L1): nested, said in the sidecar.
        write(root, "proc/cpuinfo", "flags\t: fpu svm hypervisor lm\n");
        let h = HostContext::capture_from(root);
        assert_eq!(h.kvm, Some(KvmBacking::Nested));
        let json = serde_json::to_value(&h).expect("ser");
        assert_eq!(json["kvm"], "nested");
    }

    #[test]
    fn empty_root_gives_nones_not_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = HostContext::capture_from(dir.path());
        assert_eq!(h.cpu_model, None);
        assert_eq!(h.total_memory_kib, None);
        assert_eq!(h.sched_tunables, None);
        assert_eq!(h.online_cpus, None);
        assert_eq!(h.kvm, Some(KvmBacking::Absent));
    }

    #[test]
    fn cpulist_count_cases() {
        assert_eq!(cpulist_count("0"), Some(1));
        assert_eq!(cpulist_count("0-1\n"), Some(2));
        assert_eq!(cpulist_count("0-3,8,10-11"), Some(7));
        assert_eq!(cpulist_count(""), Some(0));
        assert_eq!(cpulist_count("3-1"), None);
        assert_eq!(cpulist_count("x"), None);
    }

    #[test]
    fn capture_on_this_host_does_not_panic_and_knows_arch() {
        let h = HostContext::capture();
        assert_eq!(h.arch.as_deref(), Some(std::env::consts::ARCH));
    }
}
