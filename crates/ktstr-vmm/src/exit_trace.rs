//! Where a guest stood when it triple-faulted, on AMD hosts. KVM under SVM reinitialises
//! a vCPU on a shutdown intercept (the VMCB is undefined after one), so by the time
//! `KVM_RUN` returns the registers are the reset state. The host kernel's `kvm:kvm_exit`
//! tracepoint fires before that, with the guest RIP and the exit information the VMCB
//! held. So each VM records its shutdown exits (and nothing else: the event is filtered
//! in the kernel) in a tracefs instance of its own, read when a vCPU shuts down.
//!
//! Needs tracefs mounted and writable (root) and the kvm events; without them there is
//! no trace and the report says the RIP is lost, as before.

use std::path::{Path, PathBuf};

/// Where tracefs may be mounted.
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
/// Instance names: this prefix, the owning pid, a sequence number.
const INSTANCE_PREFIX: &str = "ktstr-vmm-";
/// Per-CPU ring buffer of an instance, in KiB. Set before the event is enabled, which
/// would otherwise grow it to the default (1.4 MiB per CPU, for each VM).
const BUFFER_KB: &str = "8";
/// `KVM_ISA_SVM` in the tracepoint's `isa` field; `SVM_EXIT_SHUTDOWN`.
const SHUTDOWN_FILTER: &str = "isa == 2 && exit_reason == 127";

/// A tracefs instance recording this VM's shutdown exits; removed on drop.
#[derive(Debug)]
pub struct ExitTrace {
    dir: PathBuf,
}

impl ExitTrace {
    /// Starts recording, or `None` where the host cannot (no tracefs, not root, no kvm
    /// events, a kernel whose `kvm_exit` lacks the fields).
    pub fn start() -> Option<Self> {
        let root = TRACEFS
            .iter()
            .map(Path::new)
            .find(|r| r.join("instances").is_dir())?;
        Self::start_in(root)
    }

    /// [`ExitTrace::start`] on the tracefs mounted at `root`.
    pub fn start_in(root: &Path) -> Option<Self> {
        remove_stale(&root.join("instances"));
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = root
            .join("instances")
            .join(format!("{INSTANCE_PREFIX}{}-{seq}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        let trace = ExitTrace { dir };
        let event = trace.dir.join("events/kvm/kvm_exit");
        let format = std::fs::read_to_string(event.join("format")).ok()?;
        if !(format.contains(" isa;") && format.contains(" exit_reason;")) {
            return None;
        }
        std::fs::write(trace.dir.join("buffer_size_kb"), BUFFER_KB).ok()?;
        std::fs::write(event.join("filter"), SHUTDOWN_FILTER).ok()?;
        std::fs::write(event.join("enable"), "1").ok()?;
        Some(trace)
    }

    /// The last shutdown exit recorded for vCPU thread `tid`: the tracepoint's own text
    /// (`vcpu 0 reason shutdown rip 0x... info1 0x... ...`) and the RIP in it.
    pub fn shutdown_of(&self, tid: i32) -> Option<TracedShutdown> {
        let text = std::fs::read_to_string(self.dir.join("trace")).ok()?;
        text.lines().rev().find_map(|l| parse_record(l, tid))
    }
}

impl Drop for ExitTrace {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("events/kvm/kvm_exit/enable"), "0");
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// One shutdown exit from the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracedShutdown {
    pub rip: u64,
    /// The record after `kvm_exit: `.
    pub record: String,
}

/// A `kvm_exit` record of thread `tid` in the trace's text format
/// (`   vcpu0-1234    [001] d..1.  12.345678: kvm_exit: vcpu 0 reason shutdown rip 0x...`).
fn parse_record(line: &str, tid: i32) -> Option<TracedShutdown> {
    let (head, record) = line.split_once(" kvm_exit: ")?;
    let task = head.split(" [").next()?.trim();
    let (_, pid) = task.rsplit_once('-')?;
    if pid.parse::<i32>().ok()? != tid {
        return None;
    }
    let mut words = record.split_whitespace();
    words.find(|w| *w == "rip")?;
    let rip = u64::from_str_radix(words.next()?.trim_start_matches("0x"), 16).ok()?;
    Some(TracedShutdown {
        rip,
        record: record.trim().to_string(),
    })
}

/// Instances left by processes that died before removing theirs (killed runs).
fn remove_stale(instances: &Path) {
    let Ok(entries) = std::fs::read_dir(instances) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(INSTANCE_PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shutdown_record_of_our_thread_gives_its_rip() {
        let line = "           vcpu1-48213   [001] d..1.  4523.118208: kvm_exit: vcpu 1 reason shutdown rip 0xffffffff81a0c3d2 info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000 requests 0x0000000000000000";
        let t = parse_record(line, 48213).expect("our thread's record");
        assert_eq!(t.rip, 0xffff_ffff_81a0_c3d2);
        assert!(
            t.record.starts_with("vcpu 1 reason shutdown rip"),
            "{}",
            t.record
        );
        // Another VM's vCPU thread, a comment line, another event.
        assert_eq!(parse_record(line, 48214), None);
        assert_eq!(parse_record("# tracer: nop", 48213), None);
        assert_eq!(
            parse_record(
                "  vcpu1-48213 [001] d..1. 1.0: kvm_entry: vcpu 1, rip 0x10",
                48213
            ),
            None
        );
        // A thread name with dashes.
        let named = line.replace("vcpu1-48213", "my-vmm-thread-7");
        assert_eq!(parse_record(&named, 7).map(|t| t.rip), Some(t.rip));
    }

    /// A tracefs of our own (tracefs mounts anywhere, all views of one): the instance is
    /// made with the shutdown filter, found empty, and removed on drop, as is one a
    /// killed process left. Needs root and the kvm module; skips without, unless
    /// `KTSTR_NO_SKIP` is set (CI runs as root).
    #[test]
    fn the_instance_is_filtered_and_removed() {
        let skip = |why: &str| {
            assert!(
                std::env::var_os("KTSTR_NO_SKIP").is_none_or(|v| v.is_empty()),
                "{why}"
            );
            eprintln!("SKIP: {why}");
        };
        let root = std::env::temp_dir().join(format!("ktstr-tracefs-{}", std::process::id()));
        std::fs::create_dir(&root).unwrap();
        let c = |s: &str| std::ffi::CString::new(s).unwrap();
        let target = c(root.to_str().unwrap());
        // SAFETY: mount(2) with NUL-terminated strings and no data.
        let r = unsafe {
            libc::mount(
                c("nodev").as_ptr(),
                target.as_ptr(),
                c("tracefs").as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if r != 0 {
            let _ = std::fs::remove_dir(&root);
            return skip(&format!(
                "cannot mount tracefs: {}",
                std::io::Error::last_os_error()
            ));
        }
        struct Unmount(std::ffi::CString, PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                // SAFETY: umount2(2) of the mount made above.
                unsafe { libc::umount2(self.0.as_ptr(), libc::MNT_DETACH) };
                let _ = std::fs::remove_dir(&self.1);
            }
        }
        let _unmount = Unmount(target, root.clone());
        if !root.join("events/kvm/kvm_exit").is_dir() {
            return skip("no kvm events (kvm not loaded)");
        }
        // What a killed run leaves: an instance named for a pid that is gone.
        let stale = root.join(format!("instances/{INSTANCE_PREFIX}{}-0", i32::MAX));
        std::fs::create_dir(&stale).unwrap();
        let trace = ExitTrace::start_in(&root).expect("an instance on a root-owned tracefs");
        assert!(!stale.exists(), "a dead process's instance stays");
        let inst = trace.dir.clone();
        let filter = std::fs::read_to_string(inst.join("events/kvm/kvm_exit/filter")).unwrap();
        assert!(filter.contains("exit_reason == 127"), "{filter}");
        let enabled = std::fs::read_to_string(inst.join("events/kvm/kvm_exit/enable")).unwrap();
        assert_eq!(enabled.trim(), "1");
        let kb = std::fs::read_to_string(inst.join("buffer_size_kb")).unwrap();
        assert!(
            kb.trim().parse::<u64>().is_ok_and(|k| k <= 64),
            "buffer_size_kb {kb}"
        );
        assert_eq!(trace.shutdown_of(crate::host::gettid()), None);
        drop(trace);
        assert!(!inst.exists(), "{} left behind", inst.display());
    }
}
