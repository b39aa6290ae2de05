//! The `qemu-tcg` engine: `qemu-system-x86_64 -accel tcg -M q35` with the declared
//! topology (LLCs as sockets, NUMA nodes as `-numa` nodes), guest RAM in shared files on
//! tmpfs so the host can reach the shared-memory region, the serial console in a log,
//! and qemu pinned to the CPU budget.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use super::{
    budget_cpus, BootSpec, EngineReport, GuestExit, RunningGuest, BASE_KARGS, QEMU_I8042_KARGS,
};
use crate::scratch::{self, ScratchDir};
use ktstr_sidecar::GuestStart;
use ktstr_wire::Mapping;

/// Errors of the qemu engine.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("`qemu-system-x86_64` not found on PATH (or KTSTR_QEMU); install it (Debian: `apt-get install qemu-system-x86`)")]
    NotFound,
    #[error("guest memory of {memory_mib} MiB is too small: the qemu-tcg engine needs at least {min} MiB for {nodes} NUMA node(s) and a {shm_mib} MiB shared-memory region")]
    MemoryTooSmall {
        memory_mib: u64,
        min: u64,
        nodes: u32,
        shm_mib: u64,
    },
    #[error("cannot create guest memory file {path}: {source} (set KTSTR_TMPDIR to a tmpfs with room, e.g. /dev/shm)")]
    MemoryFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{root} has {free_mib} MiB free but the guest needs {need_mib} MiB of RAM there: free some space, or set KTSTR_TMPDIR to a tmpfs with room (guest RAM lives in files there)")]
    NoRoom {
        root: PathBuf,
        free_mib: u64,
        need_mib: u64,
    },
    #[error("cannot map the shared-memory region of {path}: {source}")]
    Map {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot wait for qemu: {0}")]
    Wait(std::io::Error),
}

/// The qemu binary: `KTSTR_QEMU`, else `qemu-system-x86_64` on PATH.
pub fn find_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KTSTR_QEMU").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    crate::which::which("qemu-system-x86_64")
}

const MIB: u64 = 1 << 20;
const SHM_ALIGN: u64 = 2 * MIB;

/// Where guest RAM and the shared-memory region sit.
///
/// qemu's firmware and its initrd loader use the top of RAM, so the region goes into the
/// middle of the last NUMA node, away from both; the kernel is told to keep off it with
/// `memmap=SIZE$BASE` and the guest finds it with `ktstr.shm=BASE,SIZE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPlan {
    pub nodes: u32,
    pub node_bytes: u64,
    pub shm_base: u64,
    pub shm_size: u64,
    /// A warm start's inbox, right after the region; the last node grows by its size, so
    /// the guest's usable RAM is the same with or without one.
    pub inbox_size: u64,
}

impl MemoryPlan {
    pub fn new(memory_mib: u64, nodes: u32, shm_size: u64) -> Result<Self, QemuError> {
        let shm_size = shm_size.div_ceil(SHM_ALIGN) * SHM_ALIGN;
        let nodes = nodes.max(1);
        // Each node gets whole MiBs; the last node needs room for the kernel's own use
        // below the region and for the initrd above it.
        let node_mib = memory_mib / u64::from(nodes);
        let min_node_mib = 2 * (shm_size / MIB) + 128;
        if node_mib < min_node_mib {
            return Err(QemuError::MemoryTooSmall {
                memory_mib,
                min: min_node_mib * u64::from(nodes),
                nodes,
                shm_mib: shm_size / MIB,
            });
        }
        let node_bytes = node_mib * MIB;
        let last_start = node_bytes * u64::from(nodes - 1);
        let shm_base = last_start + (node_bytes / 2) / SHM_ALIGN * SHM_ALIGN;
        Ok(Self {
            nodes,
            node_bytes,
            shm_base,
            shm_size,
            inbox_size: 0,
        })
    }

    /// The same plan with an inbox of `size` bytes (rounded up to the region alignment).
    pub fn with_inbox(mut self, size: u64) -> Self {
        self.inbox_size = size.div_ceil(SHM_ALIGN) * SHM_ALIGN;
        self
    }

    /// Size of node `n`'s memory (the last one holds the inbox too).
    pub fn node_size(&self, n: u32) -> u64 {
        if n + 1 == self.nodes {
            self.node_bytes + self.inbox_size
        } else {
            self.node_bytes
        }
    }

    pub fn total_mib(&self) -> u64 {
        (self.node_bytes * u64::from(self.nodes) + self.inbox_size) / MIB
    }

    /// Guest-physical base of the inbox (right after the region).
    pub fn inbox_base(&self) -> u64 {
        self.shm_base + self.shm_size
    }

    /// The node file holding the region and the region's offset in it.
    pub fn shm_file_offset(&self) -> (u32, u64) {
        let node = (self.shm_base / self.node_bytes) as u32;
        (node, self.shm_base - u64::from(node) * self.node_bytes)
    }

    /// Kernel arguments that reserve the region (and the inbox) and tell the guest where
    /// they are.
    pub fn kargs(&self) -> Vec<String> {
        let reserved = self.shm_size + self.inbox_size;
        let mut k = vec![
            format!("memmap={}K${:#x}", reserved / 1024, self.shm_base),
            format!("ktstr.shm={:#x},{:#x}", self.shm_base, self.shm_size),
        ];
        if self.inbox_size > 0 {
            k.push(format!(
                "ktstr.inbox={:#x},{:#x}",
                self.inbox_base(),
                self.inbox_size
            ));
        }
        k
    }
}

/// TCG threading: `KTSTR_QEMU_TCG_THREAD=single|multi`, default single.
///
/// Multi-threaded TCG (qemu 7.2, Debian 12) sometimes runs a stale translation of kernel
/// text that another vCPU has just patched (static keys flip when a sched_ext scheduler
/// attaches): the guest dies on `Oops: int3`, ~2 % of VM tests on a busy host. One TCG
/// thread serialises the vCPUs, so a patch is never raced (docs/reliability.md has the
/// numbers).
pub fn tcg_threading() -> TcgThreading {
    match std::env::var("KTSTR_QEMU_TCG_THREAD").as_deref() {
        Ok("multi") => TcgThreading::Multi,
        _ => TcgThreading::Single,
    }
}

/// How qemu runs the guest's vCPUs under TCG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcgThreading {
    /// One host thread runs every vCPU in turn.
    Single,
    /// One host thread per vCPU (MTTCG).
    Multi,
}

impl TcgThreading {
    pub fn name(self) -> &'static str {
        match self {
            TcgThreading::Single => "single",
            TcgThreading::Multi => "multi",
        }
    }
}

/// Refuse to start when the file system for guest RAM cannot hold it: qemu would
/// otherwise die of SIGBUS the first time the guest touches a page past the end.
fn check_room(root: &Path, need_mib: u64) -> Result<(), QemuError> {
    let Some(free_mib) = free_mib(root) else {
        return Ok(());
    };
    if free_mib < need_mib {
        return Err(QemuError::NoRoom {
            root: root.to_path_buf(),
            free_mib,
            need_mib,
        });
    }
    Ok(())
}

/// Free space of the file system holding `path`, in MiB (None when unknown).
fn free_mib(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: a NUL-terminated path and a buffer of the right type for statvfs to fill.
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the buffer.
    let st = unsafe { st.assume_init() };
    Some(st.f_bavail * st.f_frsize / MIB)
}

/// The full qemu argument list for a spec (pure, so it can be tested).
pub fn qemu_args(spec: &BootSpec, plan: &MemoryPlan, mem_files: &[PathBuf]) -> Vec<OsString> {
    let topo = spec.topology;
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |s: String| a.push(OsString::from(s));
    push("-accel".into());
    push(format!("tcg,thread={}", tcg_threading().name()));
    push("-cpu".into());
    push("max".into());
    push("-m".into());
    push(format!("{}M", plan.total_mib()));
    push("-smp".into());
    push(format!(
        "{},sockets={},cores={},threads={}",
        topo.vcpus(),
        topo.llcs(),
        topo.cores_per_llc(),
        topo.threads_per_core()
    ));
    for (i, f) in mem_files.iter().enumerate() {
        push("-object".into());
        push(format!(
            "memory-backend-file,id=m{i},size={}M,mem-path={},share=on",
            plan.node_size(i as u32) / MIB,
            f.display()
        ));
    }
    if plan.nodes > 1 {
        push("-M".into());
        push("q35".into());
        for n in 0..plan.nodes {
            let cpus = topo.node_cpus(n);
            push("-numa".into());
            push(format!(
                "node,nodeid={n},cpus={}-{},memdev=m{n}",
                cpus.start,
                cpus.end - 1
            ));
        }
        for a_node in 0..plan.nodes {
            for b_node in 0..plan.nodes {
                if a_node < b_node {
                    push("-numa".into());
                    push(format!("dist,src={a_node},dst={b_node},val=20"));
                }
            }
        }
    } else {
        push("-M".into());
        push("q35,memory-backend=m0".into());
    }
    for s in [
        "-display",
        "none",
        "-no-reboot",
        "-nodefaults",
        "-no-user-config",
        "-monitor",
        "none",
    ] {
        push(s.into());
    }
    // The console is qemu's stdout: the terminal for a shell, else a log file the
    // runner opened for this run.
    push("-serial".into());
    push("stdio".into());
    push("-kernel".into());
    a.push(spec.kernel.clone().into_os_string());
    a.push("-initrd".into());
    a.push(spec.initrd.clone().into_os_string());
    a.push("-append".into());
    a.push(cmdline(spec, plan).into());
    a
}

/// The guest kernel command line: base and i8042, region, then the test's own kargs.
pub fn cmdline(spec: &BootSpec, plan: &MemoryPlan) -> String {
    let mut parts: Vec<String> = BASE_KARGS
        .iter()
        .chain(QEMU_I8042_KARGS)
        .map(|s| s.to_string())
        .collect();
    parts.extend(plan.kargs());
    parts.extend(spec.kargs.iter().cloned());
    parts.join(" ")
}

/// A running qemu guest.
pub struct QemuGuest {
    pub(crate) child: Child,
    /// Guest RAM, qemu's stderr; removed at teardown (dropped after qemu is gone).
    pub(crate) mem_dir: Option<ScratchDir>,
    pub(crate) shm: Mapping,
    pub(crate) host_cpus: Vec<usize>,
    pub(crate) vcpus: u32,
    pub(crate) killed: Option<String>,
    pub(crate) stderr_path: PathBuf,
    pub plan: MemoryPlan,
    pub(crate) start: GuestStart,
    /// The snapshot a warm start restored.
    pub(crate) snapshot: Option<PathBuf>,
}

/// Guest RAM of one qemu process: its files in a private directory, with the region (and
/// the inbox, if the plan has one) mapped.
pub(crate) struct Ram {
    pub dir: ScratchDir,
    pub files: Vec<PathBuf>,
    pub shm: Mapping,
    pub inbox: Option<Mapping>,
}

impl Ram {
    pub fn create(plan: &MemoryPlan) -> Result<Self, QemuError> {
        let root = scratch::ram_root();
        check_room(&root, plan.total_mib())?;
        // A private directory (0700, unguessable name, swept if this process is killed):
        // nobody else can read guest memory or plant a link where qemu writes.
        let dir = ScratchDir::create(&root, "ktstr-ram-").map_err(mem_err(&root))?;
        let mut files = Vec::new();
        for n in 0..plan.nodes {
            let (path, f) = dir
                .create_file(&format!("node{n}.ram"))
                .map_err(mem_err(dir.path()))?;
            f.set_len(plan.node_size(n)).map_err(mem_err(&path))?;
            files.push((path, f));
        }
        let map = |offset: u64, len: u64| {
            let (path, file) = &files[plan.nodes as usize - 1];
            Mapping::map_file(file, offset, len).map_err(|source| QemuError::Map {
                path: path.clone(),
                source,
            })
        };
        let (node, offset) = plan.shm_file_offset();
        debug_assert_eq!(node + 1, plan.nodes, "the region is in the last node");
        let shm = map(offset, plan.shm_size)?;
        let inbox = if plan.inbox_size > 0 {
            Some(map(offset + plan.shm_size, plan.inbox_size)?)
        } else {
            None
        };
        Ok(Ram {
            dir,
            files: files.into_iter().map(|(p, _)| p).collect(),
            shm,
            inbox,
        })
    }
}

fn mem_err(path: &Path) -> impl FnOnce(std::io::Error) -> QemuError {
    let path = path.to_path_buf();
    move |source| QemuError::MemoryFile { path, source }
}

/// Start qemu with `args`, pinned to `host_cpus`, its stderr in `ram`'s directory, the
/// console in `console` (a fresh file, starting with `preamble`) or on the terminal.
pub(crate) fn spawn(
    binary: &Path,
    args: &[OsString],
    ram: &Ram,
    console: Option<&Path>,
    preamble: &str,
    host_cpus: &[usize],
) -> Result<(Child, PathBuf), QemuError> {
    let (stderr_path, stderr) = ram
        .dir
        .create_file("qemu.stderr")
        .map_err(mem_err(ram.dir.path()))?;
    let mut cmd = Command::new(binary);
    cmd.args(args).stderr(stderr);
    if let Some(log) = console {
        // The console goes to qemu's stdout, a file this run created afresh: qemu
        // never opens (or follows a link at) the log's path itself, and a previous
        // run's log is never mistaken for this one's.
        let mut file = scratch::replace_file(log, 0o644).map_err(mem_err(log))?;
        std::io::Write::write_all(&mut file, preamble.as_bytes()).map_err(mem_err(log))?;
        cmd.stdin(Stdio::null()).stdout(file);
    }
    let pin = host_cpus.to_vec();
    // SAFETY: between fork and exec the closure only makes async-signal-safe calls
    // (sched_setaffinity over a captured slice; no allocation): it pins qemu, and so
    // every vCPU thread it creates, to the budget.
    unsafe {
        cmd.pre_exec(move || ktstr_topology::host::set_affinity(&pin));
    }
    // Die with the test process rather than linger.
    crate::child::die_with_parent(&mut cmd, libc::SIGKILL);
    let child = cmd.spawn().map_err(|source| QemuError::Spawn {
        binary: binary.to_path_buf(),
        source,
    })?;
    Ok((child, stderr_path))
}

impl QemuGuest {
    /// Start the guest: restored from a warm-start snapshot when the spec asks for one
    /// and snapshots are on (see [`super::warm`]), else booted cold. `prepare` writes
    /// into the region (the wire header) before any guest code runs on it.
    pub fn start(
        spec: &BootSpec,
        mut prepare: impl FnMut(&Mapping) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        if let Some(warm) = spec.warm.as_ref().filter(|_| super::snapshot::enabled()) {
            match super::warm::start(spec, warm, &mut prepare) {
                Ok(guest) => return Ok(guest),
                Err(why) => eprintln!("ktstr: starting cold: {why}"),
            }
        }
        Self::cold(spec, &mut prepare)
    }

    /// Create guest memory, map the region and let `prepare` write into it (the wire
    /// header) before any guest code runs, then boot the kernel.
    pub fn cold(
        spec: &BootSpec,
        prepare: &mut dyn FnMut(&Mapping) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        let binary = find_binary().ok_or(QemuError::NotFound)?;
        let plan = MemoryPlan::new(spec.memory_mib, spec.topology.numa_nodes(), spec.shm_size)?;
        let ram = Ram::create(&plan)?;
        prepare(&ram.shm)?;
        let host_cpus = budget_cpus(spec.topology.vcpus(), spec.cpu_budget);
        let spec = &BootSpec {
            kernel: boot_image(&spec.kernel),
            ..spec.clone()
        };
        let args = qemu_args(spec, &plan, &ram.files);
        let (child, stderr_path) = spawn(
            &binary,
            &args,
            &ram,
            spec.serial_log.as_deref(),
            "",
            &host_cpus,
        )?;
        Ok(Self {
            child,
            shm: ram.shm,
            mem_dir: Some(ram.dir),
            host_cpus,
            vcpus: spec.topology.vcpus(),
            killed: None,
            stderr_path,
            plan,
            start: GuestStart::Cold,
            snapshot: None,
        })
    }

    /// Has qemu exited? Non-blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, QemuError> {
        self.child.try_wait().map_err(QemuError::Wait)
    }
}

impl RunningGuest for QemuGuest {
    fn shm(&self) -> (*mut u8, usize) {
        (self.shm.as_ptr(), self.shm.len())
    }

    fn has_exited(&mut self) -> anyhow::Result<bool> {
        Ok(self.try_wait()?.is_some())
    }

    fn kill(&mut self, why: String) {
        if self.killed.is_none() {
            self.killed = Some(why);
        }
        let _ = self.child.kill();
    }

    /// Wait for qemu to end, remove guest memory, and say how the run ended.
    fn teardown(mut self: Box<Self>) -> EngineReport {
        let status = self.child.wait();
        let stderr = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let exit = match (&self.killed, status) {
            (Some(why), _) => GuestExit::Killed(why.clone()),
            (None, Ok(s)) if s.success() => GuestExit::Reset,
            (None, Ok(s)) if s.signal() == Some(libc::SIGBUS) => {
                GuestExit::EngineFailed(format!(
                    "qemu died of SIGBUS: the file system holding guest RAM ({}) ran out of space while the guest ran ({} MiB free now, the guest has {} MiB); set KTSTR_TMPDIR to a tmpfs with room",
                    scratch::ram_root().display(),
                    free_mib(&scratch::ram_root()).map_or("?".into(), |f| f.to_string()),
                    self.plan.total_mib()
                ))
            }
            (None, Ok(s)) => {
                GuestExit::EngineFailed(format!("qemu exited with {s}{}", last_lines(&stderr)))
            }
            (None, Err(e)) => GuestExit::EngineFailed(format!("cannot wait for qemu: {e}")),
        };
        self.mem_dir = None;
        EngineReport {
            exit,
            vcpus: self.vcpus,
            cpu_budget: self.host_cpus.len() as u32,
            host_cpus: self.host_cpus.clone(),
            kvm_stats: None,
            start: self.start,
            snapshot: self.snapshot.clone(),
        }
    }
}

/// What qemu boots for `kernel`: direct entry into the cached ELF when the kernel has a
/// PVH entry (the guest skips its own decompressor, emulated, the slowest part of a boot
/// under TCG), else the bzImage.
pub(crate) fn boot_image(kernel: &Path) -> PathBuf {
    let (image, pvh_note) = crate::kernel::vmlinux::qemu_boot_image(kernel);
    if let Some(why) = pvh_note {
        eprintln!("ktstr: booting the bzImage without direct (PVH) entry: {why}");
    }
    image
}

pub(crate) fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail = &lines[lines.len().saturating_sub(5)..];
    format!(": {}", tail.join(" | "))
}

impl Drop for QemuGuest {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn spec(topo: &str, mib: u64) -> BootSpec {
        BootSpec {
            topology: topo.parse().unwrap(),
            memory_mib: mib,
            cpu_budget: None,
            kernel: "/k/bzImage".into(),
            initrd: "/k/initrd.cpio".into(),
            kargs: vec!["sysctl.kernel.foo=1".into()],
            shm_size: 8 * MIB,
            serial_log: Some("/tmp/serial.log".into()),
            deadline: Duration::from_secs(60),
            warm: None,
        }
    }

    #[test]
    fn region_sits_mid_node_aligned_and_inside_the_last_node() {
        let p = MemoryPlan::new(1024, 1, 8 * MIB).unwrap();
        assert_eq!(p.shm_base, 512 * MIB);
        assert_eq!(p.shm_file_offset(), (0, 512 * MIB));
        let p = MemoryPlan::new(1024, 2, 8 * MIB).unwrap();
        assert_eq!(p.shm_base, 768 * MIB);
        assert_eq!(p.shm_file_offset(), (1, 256 * MIB));
        assert_eq!(
            p.kargs(),
            ["memmap=8192K$0x30000000", "ktstr.shm=0x30000000,0x800000"]
        );
        // Odd sizes round up to the alignment.
        assert_eq!(MemoryPlan::new(1024, 1, 3 * MIB).unwrap().shm_size, 4 * MIB);
    }

    #[test]
    fn an_inbox_follows_the_region_in_a_grown_last_node() {
        let p = MemoryPlan::new(1024, 2, 8 * MIB)
            .unwrap()
            .with_inbox(100 * MIB);
        assert_eq!(p.inbox_size, 100 * MIB);
        assert_eq!((p.node_size(0), p.node_size(1)), (512 * MIB, 612 * MIB));
        assert_eq!(p.total_mib(), 1124);
        assert_eq!(p.inbox_base(), 0x3080_0000);
        assert_eq!(
            p.kargs(),
            [
                "memmap=110592K$0x30000000",
                "ktstr.shm=0x30000000,0x800000",
                "ktstr.inbox=0x30800000,0x6400000"
            ]
        );
        // The region and the inbox end inside the last node.
        assert!(p.inbox_base() + p.inbox_size <= p.node_bytes + p.node_size(1));
        let files = vec![PathBuf::from("/a"), "/b".into()];
        let joined: Vec<String> = qemu_args(&spec("2n2l1c1t", 1024), &p, &files)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let joined = joined.join(" ");
        assert!(joined.contains("id=m0,size=512M,"), "{joined}");
        assert!(joined.contains("id=m1,size=612M,"), "{joined}");
        assert!(joined.contains("-m 1124M"), "{joined}");
    }

    #[test]
    fn too_little_memory_is_a_clear_error() {
        let e = MemoryPlan::new(256, 2, 8 * MIB).unwrap_err();
        assert!(e.to_string().contains("at least 288 MiB"), "{e}");
    }

    #[test]
    fn args_carry_topology_numa_and_cmdline() {
        let s = spec("2n4l2c2t", 1024);
        let plan = MemoryPlan::new(1024, 2, 8 * MIB).unwrap();
        let files = vec![
            PathBuf::from("/dev/shm/x/node0.ram"),
            "/dev/shm/x/node1.ram".into(),
        ];
        let args: Vec<String> = qemu_args(&s, &plan, &files)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let joined = args.join(" ");
        assert!(
            joined.contains("-smp 16,sockets=4,cores=2,threads=2"),
            "{joined}"
        );
        assert!(joined.contains("-numa node,nodeid=0,cpus=0-7,memdev=m0"));
        assert!(joined.contains("-numa node,nodeid=1,cpus=8-15,memdev=m1"));
        assert!(joined.contains("-numa dist,src=0,dst=1,val=20"));
        assert!(joined.contains("mem-path=/dev/shm/x/node1.ram,share=on"));
        assert!(joined.contains("-serial stdio"));
        let append = &args[args.iter().position(|a| a == "-append").unwrap() + 1];
        assert!(append.starts_with("console=ttyS0 "));
        assert!(append.contains("ktstr.shm=0x30000000,0x800000"));
        assert!(append.ends_with("sysctl.kernel.foo=1"));
    }

    #[test]
    fn single_node_uses_machine_memory_backend() {
        let s = spec("1n1l2c1t", 1024);
        let plan = MemoryPlan::new(1024, 1, 8 * MIB).unwrap();
        let args: Vec<String> = qemu_args(&s, &plan, &["/f".into()])
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let joined = args.join(" ");
        assert!(joined.contains("-M q35,memory-backend=m0"));
        assert!(!joined.contains("-numa"));
        assert!(joined.contains("-serial stdio"));
    }

    #[test]
    fn a_previous_runs_console_log_is_never_quoted() {
        if find_binary().is_none() {
            eprintln!("skipped: qemu-system-x86_64 is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("t-0123456789abcdef.console.log");
        // Run 1 left a panic at the path run 2 uses; run 2 fails in qemu before any boot.
        std::fs::write(&log, "[ 1.0] Kernel panic - not syncing: run 1\n").unwrap();
        let mut s = spec("1n1l1c1t", 512);
        s.kernel = dir.path().join("no-such-bzImage");
        s.serial_log = Some(log.clone());
        let guest = QemuGuest::start(&s, |_| Ok(())).unwrap();
        let report = Box::new(guest).teardown();
        let GuestExit::EngineFailed(why) = &report.exit else {
            panic!("qemu without a kernel should fail: {:?}", report.exit);
        };
        assert!(!why.contains("run 1"), "{why}");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "");
        assert_eq!(crate::runner::collect::console_excerpt(&log), None);
    }

    #[test]
    fn guest_ram_is_private_and_gone_after_teardown() {
        if find_binary().is_none() {
            eprintln!("skipped: qemu-system-x86_64 is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec("1n1l1c1t", 512);
        s.kernel = dir.path().join("no-such-bzImage");
        s.serial_log = Some(dir.path().join("c.log"));
        let guest = QemuGuest::start(&s, |_| Ok(())).unwrap();
        let mem_dir = guest.mem_dir.as_ref().unwrap().path().to_path_buf();
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&mem_dir), 0o700);
        assert_eq!(mode(&mem_dir.join("node0.ram")), 0o600);
        drop(Box::new(guest).teardown());
        assert!(!mem_dir.exists());
    }
}
