//! Facts about the host the VMM runs on: which CPUs this process may use, thread affinity,
//! and whether `/dev/kvm` is KVM-PVM (software-assisted, emulates guest kernel code).

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

/// CPUs in the affinity mask of thread `tid` (0 = the calling thread).
pub fn affinity(tid: i32) -> std::io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size we pass.
    let r =
        unsafe { libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: `i` is below CPU_SETSIZE.
        .filter(|i| unsafe { libc::CPU_ISSET(*i, &set) })
        .collect())
}

/// Pins the calling thread to `cpus`.
pub fn set_affinity(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for c in cpus.iter().filter(|c| **c < libc::CPU_SETSIZE as usize) {
        // SAFETY: the index is checked against CPU_SETSIZE above.
        unsafe { libc::CPU_SET(*c, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size we pass.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
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
    fn reads_hw_virt_flags() {
        assert!(cpuinfo_has_hw_virt(
            "processor: 0\nflags\t\t: fpu vme svm sse\n"
        ));
        assert!(!cpuinfo_has_hw_virt("flags\t\t: fpu vme sse svm_lock\n"));
        assert!(!cpuinfo_has_hw_virt("model name: vmx svm\n"));
    }

    #[test]
    fn own_affinity_is_not_empty() {
        let cpus = affinity(0).unwrap();
        assert!(!cpus.is_empty());
    }
}
