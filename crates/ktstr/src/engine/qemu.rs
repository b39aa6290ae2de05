//! The `qemu-tcg` engine: `qemu-system-x86_64 -accel tcg -M q35` with the declared
//! topology (LLCs as sockets, NUMA nodes as `-numa` nodes), guest RAM in shared files on
//! tmpfs so the host can reach the shared-memory region, the serial console in a log,
//! and qemu pinned to the CPU budget.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{budget_cpus, BootSpec, EngineReport, GuestExit, RunningGuest, BASE_KARGS};
use crate::shm::ShmMapping;

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
        })
    }

    pub fn total_mib(&self) -> u64 {
        self.node_bytes * u64::from(self.nodes) / MIB
    }

    /// The node file holding the region and the region's offset in it.
    pub fn shm_file_offset(&self) -> (u32, u64) {
        let node = (self.shm_base / self.node_bytes) as u32;
        (node, self.shm_base - u64::from(node) * self.node_bytes)
    }

    /// Kernel arguments that reserve the region and tell the guest where it is.
    pub fn kargs(&self) -> [String; 2] {
        [
            format!("memmap={}K${:#x}", self.shm_size / 1024, self.shm_base),
            format!("ktstr.shm={:#x},{:#x}", self.shm_base, self.shm_size),
        ]
    }
}

/// TCG threading: `KTSTR_QEMU_TCG_THREAD=single|multi` (default multi).
fn tcg_threading() -> &'static str {
    match std::env::var("KTSTR_QEMU_TCG_THREAD").as_deref() {
        Ok("single") => "single",
        _ => "multi",
    }
}

/// The full qemu argument list for a spec (pure, so it can be tested).
pub fn qemu_args(
    spec: &BootSpec,
    plan: &MemoryPlan,
    mem_files: &[PathBuf],
    serial: Option<&Path>,
) -> Vec<OsString> {
    let topo = spec.topology;
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |s: String| a.push(OsString::from(s));
    push("-accel".into());
    push(format!("tcg,thread={}", tcg_threading()));
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
    let node_mib = plan.node_bytes / MIB;
    for (i, f) in mem_files.iter().enumerate() {
        push("-object".into());
        push(format!(
            "memory-backend-file,id=m{i},size={node_mib}M,mem-path={},share=on",
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
    push("-serial".into());
    push(match serial {
        Some(p) => format!("file:{}", p.display()),
        None => "stdio".into(),
    });
    push("-kernel".into());
    a.push(spec.kernel.clone().into_os_string());
    a.push("-initrd".into());
    a.push(spec.initrd.clone().into_os_string());
    a.push("-append".into());
    a.push(cmdline(spec, plan).into());
    a
}

/// The guest kernel command line: base, region, then the test's own kargs.
pub fn cmdline(spec: &BootSpec, plan: &MemoryPlan) -> String {
    let mut parts: Vec<String> = BASE_KARGS.iter().map(|s| s.to_string()).collect();
    parts.extend(plan.kargs());
    parts.extend(spec.kargs.iter().cloned());
    parts.join(" ")
}

/// A running qemu guest.
pub struct QemuGuest {
    child: Child,
    mem_dir: PathBuf,
    shm: ShmMapping,
    host_cpus: Vec<usize>,
    vcpus: u32,
    killed: Option<String>,
    stderr_path: PathBuf,
    pub plan: MemoryPlan,
}

static INSTANCE: AtomicU64 = AtomicU64::new(0);

fn tmp_root() -> PathBuf {
    if let Some(d) = std::env::var_os("KTSTR_TMPDIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

impl QemuGuest {
    /// Create guest memory, map the region and let `prepare` write into it (the wire
    /// header) before any guest code runs, then start qemu.
    pub fn start(
        spec: &BootSpec,
        prepare: impl FnOnce(&ShmMapping) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        let binary = find_binary().ok_or(QemuError::NotFound)?;
        let plan = MemoryPlan::new(spec.memory_mib, spec.topology.numa_nodes(), spec.shm_size)?;
        let mem_dir = tmp_root().join(format!(
            "ktstr-{}-{}",
            std::process::id(),
            INSTANCE.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&mem_dir).map_err(|source| QemuError::MemoryFile {
            path: mem_dir.clone(),
            source,
        })?;
        let guard = DirGuard(Some(mem_dir.clone()));
        let mut files = Vec::new();
        for n in 0..plan.nodes {
            let path = mem_dir.join(format!("node{n}.ram"));
            let f = File::create(&path).map_err(|source| QemuError::MemoryFile {
                path: path.clone(),
                source,
            })?;
            f.set_len(plan.node_bytes)
                .map_err(|source| QemuError::MemoryFile {
                    path: path.clone(),
                    source,
                })?;
            files.push(path);
        }
        let (node, offset) = plan.shm_file_offset();
        let shm_file = &files[node as usize];
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(shm_file)
            .map_err(|source| QemuError::Map {
                path: shm_file.clone(),
                source,
            })?;
        let shm =
            ShmMapping::map_file(&f, offset, plan.shm_size).map_err(|source| QemuError::Map {
                path: shm_file.clone(),
                source,
            })?;
        prepare(&shm)?;

        let host_cpus = budget_cpus(spec.topology.vcpus(), spec.cpu_budget);
        let args = qemu_args(spec, &plan, &files, spec.serial_log.as_deref());
        let stderr_path = mem_dir.join("qemu.stderr");
        let stderr = File::create(&stderr_path).map_err(|source| QemuError::MemoryFile {
            path: stderr_path.clone(),
            source,
        })?;
        let mut cmd = Command::new(&binary);
        cmd.args(&args).stderr(stderr);
        if spec.serial_log.is_some() {
            cmd.stdin(Stdio::null()).stdout(Stdio::null());
        }
        let pin = host_cpus.clone();
        // SAFETY: between fork and exec the closure only makes async-signal-safe calls
        // (sched_setaffinity over a captured slice, prctl; no allocation): it pins qemu,
        // and so every vCPU thread it creates, to the budget.
        unsafe {
            cmd.pre_exec(move || {
                ktstr_vmm::host::set_affinity(&pin)?;
                // Die with the test process rather than linger.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| QemuError::Spawn {
            binary: binary.clone(),
            source,
        })?;
        let mut guard = guard;
        guard.0 = None;
        Ok(Self {
            child,
            mem_dir,
            shm,
            host_cpus,
            vcpus: spec.topology.vcpus(),
            killed: None,
            stderr_path,
            plan,
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
            (None, Ok(s)) => {
                GuestExit::EngineFailed(format!("qemu exited with {s}{}", last_lines(&stderr)))
            }
            (None, Err(e)) => GuestExit::EngineFailed(format!("cannot wait for qemu: {e}")),
        };
        let _ = std::fs::remove_dir_all(&self.mem_dir);
        EngineReport {
            exit,
            vcpus: self.vcpus,
            cpu_budget: self.host_cpus.len() as u32,
            host_cpus: self.host_cpus.clone(),
            kvm_stats: None,
        }
    }
}

fn last_lines(text: &str) -> String {
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
        let _ = std::fs::remove_dir_all(&self.mem_dir);
    }
}

/// Removes the guest memory directory if start-up fails half way.
struct DirGuard(Option<PathBuf>);

impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            let _ = std::fs::remove_dir_all(d);
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
            [
                "memmap=8192K$0x30000000".to_string(),
                "ktstr.shm=0x30000000,0x800000".to_string()
            ]
        );
        // Odd sizes round up to the alignment.
        assert_eq!(MemoryPlan::new(1024, 1, 3 * MIB).unwrap().shm_size, 4 * MIB);
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
        let args: Vec<String> = qemu_args(&s, &plan, &files, Some(Path::new("/tmp/s.log")))
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
        assert!(joined.contains("-serial file:/tmp/s.log"));
        let append = &args[args.iter().position(|a| a == "-append").unwrap() + 1];
        assert!(append.starts_with("console=ttyS0 "));
        assert!(append.contains("ktstr.shm=0x30000000,0x800000"));
        assert!(append.ends_with("sysctl.kernel.foo=1"));
    }

    #[test]
    fn single_node_uses_machine_memory_backend() {
        let s = spec("1n1l2c1t", 1024);
        let plan = MemoryPlan::new(1024, 1, 8 * MIB).unwrap();
        let args: Vec<String> = qemu_args(&s, &plan, &["/f".into()], None)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let joined = args.join(" ");
        assert!(joined.contains("-M q35,memory-backend=m0"));
        assert!(!joined.contains("-numa"));
        assert!(joined.contains("-serial stdio"));
    }
}
