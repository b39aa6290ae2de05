//! PID 1 of a nested L1 guest (`cargo ktstr nested`): loads the KVM modules so L1 has a
//! `/dev/kvm`, mounts the host's root over virtio-fs read-only (the directories the spec
//! names writable at the same paths), changes root into it and runs the command there,
//! then prints its exit status on the console for the host and powers off.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use ktstr_wire::nested::{
    NestedSpec, ERROR_MARKER, EXIT_MARKER, HEARTBEAT_INTERVAL_SECS, HEARTBEAT_TTY, HOST_FS_TAG,
};
use nix::mount::{mount, MsFlags};

/// Run the spec; never returns (the VM powers off).
pub fn run(spec_path: &Path) -> ! {
    crate::mounts::mount_all();
    let code = match std::fs::read(spec_path)
        .context("reading the nested spec")
        .and_then(|b| NestedSpec::from_json(&b).context("decoding the nested spec"))
        .and_then(|spec| run_spec(&spec))
    {
        Ok(code) => code,
        Err(e) => {
            // One line the host quotes as the reason.
            println!("\n{ERROR_MARKER} {}", format!("{e:#}").replace('\n', " | "));
            125
        }
    };
    println!("\n{EXIT_MARKER} {code}");
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    std::process::exit(code)
}

fn run_spec(spec: &NestedSpec) -> Result<i32> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let (svm, vmx) = (flags.contains(&"svm"), flags.contains(&"vmx"));
    if !svm && !vmx {
        bail!("the L1 CPU offers no SVM or VMX, so KVM cannot load: qemu's -cpu must include svm (e.g. `max`)");
    }
    for m in &spec.modules {
        // Only the vendor module this CPU can run.
        if (m.ends_with("kvm-amd.ko") && !svm) || (m.ends_with("kvm-intel.ko") && !vmx) {
            continue;
        }
        load_module(Path::new(m))?;
    }
    if !Path::new("/dev/kvm").exists() {
        bail!(
            "the KVM modules loaded but /dev/kvm did not appear; kernel: {}",
            kernel_tail("kvm")
        );
    }
    mount_host(spec)?;
    start_heartbeat();
    std::os::unix::fs::chroot("/newroot").context("chroot into the host's root")?;
    std::env::set_current_dir(&spec.cwd)
        .with_context(|| format!("cd {} in the host's root", spec.cwd))?;
    let (prog, args) = spec
        .argv
        .split_first()
        .context("the nested spec has no command")?;
    let mut cmd = Command::new(prog);
    cmd.args(args).env_clear().stdin(Stdio::null());
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    let status = cmd.status().with_context(|| {
        format!("cannot start `{prog}` in L1 (is it on the PATH of the environment?)")
    })?;
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// A byte on L1's second serial port every few seconds, for as long as L1 runs anything
/// (the host's watchdog). Opened before the chroot; without the port the host's watchdog
/// never arms, so it is optional.
fn start_heartbeat() {
    use std::io::Write;
    let Ok(mut tty) = std::fs::OpenOptions::new().write(true).open(HEARTBEAT_TTY) else {
        return;
    };
    std::thread::spawn(move || loop {
        if tty.write_all(b".").is_err() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_secs(HEARTBEAT_INTERVAL_SECS));
    });
}

/// `finit_module(fd, "", 0)`; a module already loaded is fine.
fn load_module(path: &Path) -> Result<()> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let params = CString::default();
    // SAFETY: finit_module with an open descriptor, an empty NUL-terminated parameter
    // string and no flags.
    let r = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), params.as_ptr(), 0) };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EEXIST) {
        return Ok(());
    }
    let name = path.file_stem().unwrap_or_default().to_string_lossy();
    let topic = name
        .split_once('-')
        .map_or(&*name, |(_, n)| n)
        .replace('_', "-");
    bail!(
        "cannot load the kernel module {} ({e}); kernel: {}",
        path.display(),
        kernel_tail(topic.trim_end_matches(".ko"))
    )
}

/// The last kernel log lines that mention `topic` (what the L1 kernel said about it).
fn kernel_tail(topic: &str) -> String {
    let text = read_kmsg();
    let topic_alt = topic.replace('-', "_");
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.split_once(';').map_or(l, |(_, m)| m))
        .filter(|l| l.contains(topic) || l.contains(&topic_alt))
        .collect();
    if lines.is_empty() {
        return "(nothing logged about it)".into();
    }
    lines[lines.len().saturating_sub(3)..].join(" / ")
}

/// Everything in the kernel log buffer, without blocking.
fn read_kmsg() -> String {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
    else {
        return String::new();
    };
    let mut out = String::new();
    let mut buf = vec![0u8; 8192];
    // /dev/kmsg returns one record per read, EAGAIN at the end.
    while let Ok(n) = f.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    out
}

/// /newroot: the host's root read-only, the writable directories bound over it, and fresh
/// proc, sys, dev, tmp, dev/shm and run.
fn mount_host(spec: &NestedSpec) -> Result<()> {
    for d in ["/host", "/newroot"] {
        std::fs::create_dir_all(d).with_context(|| format!("mkdir {d}"))?;
    }
    mount(
        Some(HOST_FS_TAG),
        "/host",
        Some("virtiofs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| format!("mounting the host's root (virtio-fs tag {HOST_FS_TAG})"))?;
    bind("/host", "/newroot")?;
    mount(
        None::<&str>,
        "/newroot",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .context("making the host's root read-only")?;
    let fresh: [(&str, &str, MsFlags); 5] = [
        (
            "proc",
            "/newroot/proc",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        ),
        (
            "sysfs",
            "/newroot/sys",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        ),
        ("devtmpfs", "/newroot/dev", MsFlags::MS_NOSUID),
        (
            "tmpfs",
            "/newroot/tmp",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        ),
        (
            "tmpfs",
            "/newroot/run",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        ),
    ];
    for (fstype, target, flags) in fresh {
        mount(Some(fstype), target, Some(fstype), flags, None::<&str>)
            .with_context(|| format!("mounting {fstype} on {target}"))?;
    }
    // tracefs, for the kvm engine's record of shutdown exits (where a triple-faulting L2
    // stood, which KVM under SVM forgets); L1 works without it.
    let _ = mount(
        Some("tracefs"),
        "/newroot/sys/kernel/tracing",
        Some("tracefs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    );
    std::fs::create_dir_all("/newroot/dev/shm").context("mkdir /dev/shm")?;
    mount(
        Some("tmpfs"),
        "/newroot/dev/shm",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .context("mounting tmpfs on /dev/shm")?;
    std::fs::set_permissions(
        "/newroot/tmp",
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .context("chmod /tmp")?;
    // The writable directories last, so a fresh /tmp or /run does not hide one that lives
    // there (a checkout in /tmp): their mount points are made in the fresh file systems.
    for w in &spec.writable {
        let rel = w.trim_start_matches('/');
        let target = format!("/newroot/{rel}");
        if !Path::new(&target).is_dir() {
            std::fs::create_dir_all(&target)
                .with_context(|| format!("making the mount point {w} in L1"))?;
        }
        bind(&format!("/host/{rel}"), &target).with_context(|| format!("sharing {w} writable"))?;
    }
    Ok(())
}

fn bind(from: &str, to: &str) -> Result<()> {
    mount(Some(from), to, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .with_context(|| format!("bind-mounting {from} on {to}"))
}
