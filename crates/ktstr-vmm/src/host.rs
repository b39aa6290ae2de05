//! Facts about the host the VMM runs on: whether `/dev/kvm` is KVM-PVM (software-assisted,
//! emulates guest kernel code) and thread ids. CPU affinity lives in
//! [`ktstr_topology::host`], shared with the engines.

use std::path::Path;

/// The advice attached to failures on a KVM-PVM host.
pub const PVM_NOTE: &str = "host /dev/kvm is KVM-PVM (kvm_pvm loaded, no vmx/svm): it emulates guest kernel code and fails on some instructions; use --engine qemu-tcg";

/// Whether `/dev/kvm` is served by KVM-PVM: the `kvm_pvm` module is loaded and the CPU
/// flags show no hardware virtualisation.
pub fn kvm_is_pvm() -> bool {
    let pvm = Path::new("/sys/module/kvm_pvm").exists();
    pvm && !cpuinfo_has_hw_virt(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default())
}

/// Whether any `flags` line of `/proc/cpuinfo` text lists `vmx` or `svm`.
pub fn cpuinfo_has_hw_virt(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

/// Whether the host CPU is AMD's (CPUID vendor `AuthenticAMD`): its KVM runs guests on
/// SVM.
pub fn cpu_is_amd() -> bool {
    let r = std::arch::x86_64::__cpuid(0);
    let mut vendor = [0u8; 12];
    vendor[..4].copy_from_slice(&r.ebx.to_le_bytes());
    vendor[4..8].copy_from_slice(&r.edx.to_le_bytes());
    vendor[8..].copy_from_slice(&r.ecx.to_le_bytes());
    &vendor == b"AuthenticAMD"
}

/// The calling thread's kernel thread id.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_vendor_matches_cpuinfo() {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
        assert_eq!(cpu_is_amd(), cpuinfo.contains("AuthenticAMD"));
    }

    #[test]
    fn reads_hw_virt_flags() {
        assert!(cpuinfo_has_hw_virt(
            "processor: 0\nflags\t\t: fpu vme svm sse\n"
        ));
        assert!(!cpuinfo_has_hw_virt("flags\t\t: fpu vme sse svm_lock\n"));
        assert!(!cpuinfo_has_hw_virt("model name: vmx svm\n"));
    }
}
