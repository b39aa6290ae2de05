//! The filesystems PID 1 mounts. A mount that fails (already mounted, not built into
//! this kernel, no mount point) is logged and skipped: a scheduler test may not need it.

use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

use crate::report::{log_info, log_warn};

/// (fstype, target) in mount order; parents come before their children.
pub const MOUNTS: &[(&str, &str)] = &[
    ("proc", "/proc"),
    ("sysfs", "/sys"),
    ("devtmpfs", "/dev"),
    ("cgroup2", "/sys/fs/cgroup"),
    ("bpf", "/sys/fs/bpf"),
    ("debugfs", "/sys/kernel/debug"),
    ("tmpfs", "/tmp"),
    ("tmpfs", "/run"),
];

/// What a mount failure means, in words.
pub fn explain(errno: Errno) -> &'static str {
    match errno {
        Errno::EBUSY => "already mounted",
        Errno::ENODEV => "filesystem type not supported by this kernel",
        Errno::ENOENT => "mount point missing",
        Errno::EPERM => "not permitted (not running as root?)",
        _ => "mount failed",
    }
}

pub fn mount_all() {
    for &(fstype, target) in MOUNTS {
        let path = Path::new(target);
        // sysfs/proc directories cannot be created; the rest live in the initramfs root.
        if !path.exists() && !target.starts_with("/sys/") {
            if let Err(e) = std::fs::create_dir_all(path) {
                log_warn!("mkdir {target}: {e}");
            }
        }
        let flags = match fstype {
            "proc" | "sysfs" | "cgroup2" | "bpf" | "debugfs" => {
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC
            }
            "tmpfs" => MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            _ => MsFlags::MS_NOSUID,
        };
        match mount(Some(fstype), path, Some(fstype), flags, None::<&str>) {
            Ok(()) => {}
            Err(Errno::EBUSY) => log_info!("{fstype} on {target}: already mounted"),
            Err(e) => log_warn!("{fstype} on {target}: {} ({e})", explain(e)),
        }
    }
}
