//! A whole VM: configuration, setup (KVM VM, irqchip + PIT, memory, kernel, tables,
//! vCPUs), the run with vCPU threads pinned to a CPU budget, the watchdog deadline, and the
//! timed teardown that yields a [`VmReport`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_pit_config, CpuId, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress};

use crate::arch::x86_64::layout::{
    LayoutError, RamLayout, ACPI_END, ACPI_START, BOOT_STACK_ADDR, KVM_IDENTITY_MAP_ADDR,
    KVM_TSS_ADDR, ZERO_PAGE_ADDR,
};
use crate::arch::x86_64::{acpi, boot, cpuid, regs};
use crate::devices::serial::{ConsoleTail, SerialConsole, COM1_IRQ};
use crate::host;
use crate::memory::{GuestRam, ShmRegion};
use crate::stats::StatsFd;
use crate::vcpu::{self, EntryState, ExitReason, Kicker, RunState, VcpuContext};
use ktstr_topology::Topology;

/// What runs in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestKind {
    /// A Linux kernel: the boot CPU enters it, the others wait for INIT/SIPI.
    Linux,
    /// A bare-metal ELF (the self-test guest): every vCPU starts runnable at the entry,
    /// `rdi` = vCPU index, `rsi` = zero page, stacks its own business.
    BareMetal,
}

/// How a bzImage is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BzImageEntry {
    /// Load it as is; the guest's decompressor unpacks the kernel (slow under emulation).
    GuestDecompressor,
    /// Decompress the payload on the host and enter the ELF `vmlinux` directly.
    HostDecompressed,
}

/// Everything needed to start a VM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub topology: Topology,
    pub memory_mib: u64,
    /// Host CPUs the vCPU threads may use; `None` = min(vCPUs, CPUs available).
    pub cpu_budget: Option<usize>,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// Kernel command line; the caller adds [`VmConfig::memory_kargs`] for Linux guests;
    /// the self-test passes `ktstr.shm=<base>,<size>` too.
    pub cmdline: String,
    /// Size of the SHM region at the top of low RAM (multiple of 4 KiB).
    pub shm_size: u64,
    /// Console log (COM1).
    pub serial_log: PathBuf,
    /// Wall budget from [`Vm::start`]; on expiry the vCPUs are kicked (watchdog).
    pub deadline: Option<Duration>,
    pub guest: GuestKind,
    pub bzimage_entry: BzImageEntry,
    /// CPUID bits hidden from the guest on top of the topology rewrite (e.g. CX16 or
    /// XSAVE, to keep a kernel off instructions KVM-PVM's emulator lacks).
    pub cpuid_clear: Vec<cpuid::CpuidClear>,
}

impl VmConfig {
    /// A Linux boot with the defaults: host-side decompression, no deadline.
    pub fn linux(topology: Topology, kernel: PathBuf, serial_log: PathBuf) -> Self {
        Self {
            topology,
            memory_mib: 1024,
            cpu_budget: None,
            kernel,
            initrd: None,
            cmdline: String::new(),
            shm_size: 8 << 20,
            serial_log,
            deadline: None,
            guest: GuestKind::Linux,
            bzimage_entry: BzImageEntry::HostDecompressed,
            cpuid_clear: Vec::new(),
        }
    }

    /// The kernel arguments that tell a Linux guest about its memory: where the SHM
    /// region is (`ktstr.shm=<base>,<size>`). Add them to [`VmConfig::cmdline`] once
    /// `memory_mib` and `shm_size` are set.
    pub fn memory_kargs(&self) -> Result<Vec<String>, LayoutError> {
        let layout = RamLayout::new(self.memory_mib << 20, self.shm_size)?;
        Ok(vec![Vm::shm_cmdline_arg(&layout)])
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("opening /dev/kvm: {0} (is KVM available and readable by this user?)")]
    OpenKvm(kvm_ioctls::Error),
    #[error("{what}: {source}")]
    Kvm {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("/dev/kvm lacks {0}; ktstr's VMM needs it")]
    MissingCap(&'static str),
    #[error("the topology has {want} vCPUs but KVM allows at most {max}; use a smaller topology")]
    TooManyVcpus { want: u32, max: usize },
    #[error("guest memory layout: {0}")]
    Layout(#[from] LayoutError),
    #[error("guest memory: {0}")]
    Memory(#[from] crate::memory::MemoryError),
    #[error("reading {what} {path}: {source}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kernel {path}: {source}")]
    Boot {
        path: PathBuf,
        source: boot::BootError,
    },
    #[error("a bare-metal guest must be an ELF; {0} is a bzImage")]
    BareMetalNotElf(PathBuf),
    #[error("ACPI tables: {0}")]
    Acpi(#[from] acpi::AcpiError),
    #[error("boot tables: {0}")]
    Regs(#[from] regs::RegsError),
    #[error("writing {what} at {addr:#x}: {source}")]
    Write {
        what: &'static str,
        addr: u64,
        source: vm_memory::GuestMemoryError,
    },
    #[error("serial console: {0}")]
    Serial(#[from] crate::devices::serial::SerialError),
    #[error("vCPU setup: {0}")]
    Vcpu(#[from] vcpu::VcpuError),
    #[error("KVM stats: {0}")]
    Stats(#[from] crate::stats::StatsError),
    #[error("cpu_budget {budget} is invalid: this process may use {available} host CPUs ({cpus:?}); use 1..={available}")]
    Budget {
        budget: usize,
        available: usize,
        cpus: Vec<usize>,
    },
    #[error("reading this process's CPU affinity: {0}")]
    Affinity(std::io::Error),
    #[error("installing the vCPU kick signal handler: {0}")]
    Signal(std::io::Error),
    #[error("spawning the thread of vCPU {vcpu}: {source}")]
    Spawn { vcpu: u32, source: std::io::Error },
}

/// Time spent in each setup step, in milliseconds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SetupTimings {
    pub kvm_vm_ms: f64,
    pub memory_ms: f64,
    /// Host-side decompression of a bzImage payload (only with `HostDecompressed`).
    pub decompress_ms: Option<f64>,
    pub kernel_load_ms: f64,
    pub initrd_ms: f64,
    pub tables_ms: f64,
    pub vcpus_ms: f64,
}

/// One vCPU thread as seen from the host.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VcpuThread {
    pub vcpu: u32,
    pub apic_id: u32,
    pub tid: i32,
    /// The thread's `sched_getaffinity` after pinning.
    pub affinity: Vec<usize>,
}

/// What a run produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VmReport {
    pub exit: ExitReason,
    /// Every single-u64 KVM statistic, per vCPU, read after exit.
    pub per_vcpu_stats: Vec<BTreeMap<String, u64>>,
    pub vm_stats: BTreeMap<String, u64>,
    pub vcpu_threads: Vec<VcpuThread>,
    /// The host CPUs the vCPU threads were pinned to (`cpu_budget` of them).
    pub host_cpus: Vec<usize>,
    pub cpu_budget: usize,
    pub vcpus: u32,
    /// vCPUs share host CPUs (`cpu_budget < vcpus`).
    pub overcommit: bool,
    pub setup_ms: f64,
    pub timings: SetupTimings,
    /// From [`Vm::start`] to the first exit.
    pub run_ms: f64,
    /// From the first exit to the end of teardown (vCPU threads joined, stats read).
    pub cleanup_ms: f64,
    pub console_bytes: u64,
    /// The last bytes of the console.
    pub console_tail: String,
    pub host_is_pvm: bool,
    pub kernel_entry: u64,
    /// vCPU threads that did not leave `KVM_RUN` within [`JOIN_LIMIT`] of the end of the
    /// run, with where the host kernel held them: left behind (detached) so teardown ends.
    pub stuck_vcpus: Vec<StuckVcpu>,
}

/// How long teardown waits for the kicked vCPU threads to return. A healthy thread leaves
/// `KVM_RUN` within microseconds of its kick (milliseconds under emulation); one still
/// inside after this is held by the host kernel, and waiting longer only hangs the run.
pub const JOIN_LIMIT: Duration = Duration::from_secs(10);

/// A vCPU thread the host kernel did not give back.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StuckVcpu {
    pub vcpu: u32,
    pub tid: i32,
    /// `/proc/self/task/<tid>/wchan` and `stack` (the latter needs root), as far as
    /// readable.
    pub host_kernel: String,
}

impl std::fmt::Display for StuckVcpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "vCPU {} (thread {}) did not leave KVM_RUN within {} s of its kick; host kernel: {}",
            self.vcpu,
            self.tid,
            JOIN_LIMIT.as_secs(),
            self.host_kernel
        )
    }
}

/// Where the host kernel holds thread `tid` of this process.
fn host_kernel_site(tid: i32) -> String {
    let read = |what: &str| {
        std::fs::read_to_string(format!("/proc/self/task/{tid}/{what}"))
            .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|e| format!("({what}: {e})"))
    };
    format!("wchan {}; stack {}", read("wchan"), read("stack"))
}

/// A VM that is set up but not running: write the SHM header now, then [`Vm::start`].
pub struct Vm {
    cfg: VmConfig,
    _kvm: Kvm,
    vm_fd: VmFd,
    ram: GuestRam,
    vcpus: Vec<VcpuFd>,
    stats: Vec<StatsFd>,
    vm_stats: Option<StatsFd>,
    serial: Arc<Mutex<SerialConsole>>,
    tail: ConsoleTail,
    host_is_pvm: bool,
    setup_ms: f64,
    timings: SetupTimings,
    kernel_entry: u64,
    created: Instant,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

impl Vm {
    /// Builds the VM: KVM VM, irqchip + PIT, memory, kernel/initrd/cmdline, ACPI, boot
    /// tables, COM1, and every vCPU programmed for the topology. Nothing runs yet.
    pub fn create(cfg: VmConfig) -> Result<Self, VmError> {
        let t0 = Instant::now();
        let mut timings = SetupTimings::default();
        let host_is_pvm = host::kvm_is_pvm();

        let t = Instant::now();
        let kvm = open_kvm(&cfg.topology)?;
        let vm_fd = create_vm_with_irqchip(&kvm)?;
        timings.kvm_vm_ms = ms(t);

        let t = Instant::now();
        let ram = GuestRam::new(RamLayout::new(cfg.memory_mib << 20, cfg.shm_size)?)?;
        ram.register(&vm_fd)?;
        timings.memory_ms = ms(t);

        let kernel = load_kernel(&cfg, &ram, &mut timings)?;

        let t = Instant::now();
        boot::write_cmdline(&ram.mem, &cfg.cmdline).map_err(boot_error(&cfg.kernel))?;
        let initrd = load_initrd(&cfg, &ram, &kernel)?;
        timings.initrd_ms = ms(t);

        let t = Instant::now();
        write_boot_tables(&cfg, &ram, &kernel, initrd)?;
        timings.tables_ms = ms(t);

        let serial = SerialConsole::new(&cfg.serial_log)?;
        vm_fd
            .register_irqfd(serial.irq_evt(), COM1_IRQ)
            .map_err(kvm_error("KVM_IRQFD (COM1)"))?;
        let tail = serial.tail_handle();

        let t = Instant::now();
        let (vcpus, stats) = create_vcpus(&kvm, &vm_fd, &cfg, kernel.entry)?;
        let vm_stats = StatsFd::open(&vm_fd, "VM").ok();
        timings.vcpus_ms = ms(t);

        Ok(Self {
            _kvm: kvm,
            vm_fd,
            ram,
            vcpus,
            stats,
            vm_stats,
            serial: Arc::new(Mutex::new(serial)),
            tail,
            host_is_pvm,
            setup_ms: ms(t0),
            timings,
            kernel_entry: kernel.entry,
            created: t0,
            cfg,
        })
    }

    /// The SHM region (host pointer, length, guest base): write its header before
    /// [`Vm::start`]; drain it while the VM runs.
    pub fn shm_region(&self) -> Result<ShmRegion, VmError> {
        Ok(self.ram.shm()?)
    }

    /// `ktstr.shm=<base>,<size>` for this VM's layout.
    pub fn shm_cmdline_arg(layout: &RamLayout) -> String {
        format!("ktstr.shm={:#x},{:#x}", layout.shm_base, layout.shm_size)
    }

    pub fn layout(&self) -> RamLayout {
        self.ram.layout
    }

    pub fn setup_ms(&self) -> f64 {
        self.setup_ms
    }

    pub fn timings(&self) -> &SetupTimings {
        &self.timings
    }

    /// Guest RAM, for the host to read guest state (monitoring, tests).
    pub fn ram(&self) -> &GuestRam {
        &self.ram
    }

    /// Spawns the vCPU threads, pinned to `cpu_budget` host CPUs, and starts the watchdog
    /// clock.
    pub fn start(self) -> Result<RunningVm, VmError> {
        vcpu::install_kick_handler().map_err(VmError::Signal)?;
        let allowed = ktstr_topology::host::affinity(0).map_err(VmError::Affinity)?;
        let nvcpus = self.vcpus.len();
        let budget = self.cfg.cpu_budget.unwrap_or(nvcpus.min(allowed.len()));
        if budget == 0 || budget > allowed.len() {
            return Err(VmError::Budget {
                budget,
                available: allowed.len(),
                cpus: allowed,
            });
        }
        let host_cpus: Vec<usize> = allowed[..budget].to_vec();
        // Only AMD's KVM loses a triple fault's registers; PVM has no SVM.
        let exit_trace = (!self.host_is_pvm && crate::host::cpu_is_amd())
            .then(crate::exit_trace::ExitTrace::start)
            .flatten()
            .map(Arc::new);
        let state = Arc::new(RunState::new());
        let started = Instant::now();
        let (tx, rx) = std::sync::mpsc::channel::<VcpuThread>();
        let mut threads = Vec::with_capacity(nvcpus);
        let mut kickers = Vec::with_capacity(nvcpus);
        for (i, fd) in self.vcpus.into_iter().enumerate() {
            let i = i as u32;
            // One CPU each when the budget covers every vCPU, else the shared pool.
            let pin: Vec<usize> = if budget >= nvcpus {
                vec![host_cpus[i as usize]]
            } else {
                host_cpus.clone()
            };
            let kicker = Arc::new(Kicker::new());
            kickers.push(kicker.clone());
            let ctx = VcpuContext {
                index: i,
                ram: self.ram.clone(),
                serial: self.serial.clone(),
                state: state.clone(),
                kicker,
                host_is_pvm: self.host_is_pvm,
                exit_trace: exit_trace.clone(),
            };
            let apic_id = self.cfg.topology.apic_id(i);
            let tx = tx.clone();
            let h = std::thread::Builder::new()
                .name(format!("vcpu{i}"))
                .spawn(move || {
                    // Pinning failure leaves the thread unpinned; the report shows it.
                    let _ = ktstr_topology::host::set_affinity(&pin);
                    let _ = tx.send(VcpuThread {
                        vcpu: i,
                        apic_id,
                        tid: host::gettid(),
                        affinity: ktstr_topology::host::affinity(0).unwrap_or_default(),
                    });
                    drop(tx);
                    vcpu::run_loop(fd, ctx);
                })
                .map_err(|source| VmError::Spawn { vcpu: i, source })?;
            threads.push(h);
        }
        drop(tx);
        let mut vcpu_threads: Vec<VcpuThread> = rx.iter().collect();
        vcpu_threads.sort_by_key(|t| t.vcpu);
        let kick = VmKicker {
            state: state.clone(),
            kickers: Arc::new(kickers),
        };
        Ok(RunningVm {
            deadline: self.cfg.deadline.map(|d| started + d),
            started,
            threads,
            kick,
            state,
            stats: self.stats,
            vm_stats: self.vm_stats,
            serial: self.serial,
            tail: self.tail,
            vcpu_threads,
            host_cpus,
            budget,
            vcpus: nvcpus as u32,
            setup_ms: self.setup_ms,
            timings: self.timings,
            host_is_pvm: self.host_is_pvm,
            kernel_entry: self.kernel_entry,
            _vm_fd: self.vm_fd,
            _ram: self.ram,
            _created: self.created,
        })
    }
}

/// Maps a failed KVM ioctl to [`VmError::Kvm`], naming it.
fn kvm_error(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

/// Maps a failure to load the kernel at `path` to [`VmError::Boot`].
fn boot_error(path: &Path) -> impl Fn(boot::BootError) -> VmError + '_ {
    move |source| VmError::Boot {
        path: path.to_path_buf(),
        source,
    }
}

/// Opens `/dev/kvm` and checks it has what the VMM needs: an in-kernel irqchip, PIT2,
/// immediate exit, and room for the topology's vCPUs.
fn open_kvm(topo: &Topology) -> Result<Kvm, VmError> {
    let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
    for (cap, name) in [
        (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
        (Cap::Pit2, "KVM_CAP_PIT2"),
        (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(VmError::MissingCap(name));
        }
    }
    let max = kvm.get_max_vcpus();
    if topo.vcpus() as usize > max {
        return Err(VmError::TooManyVcpus {
            want: topo.vcpus(),
            max,
        });
    }
    Ok(kvm)
}

/// Creates the KVM VM with its TSS and identity-map pages, the in-kernel irqchip and
/// the PIT.
fn create_vm_with_irqchip(kvm: &Kvm) -> Result<VmFd, VmError> {
    let vm_fd = kvm.create_vm().map_err(kvm_error("KVM_CREATE_VM"))?;
    vm_fd
        .set_tss_address(KVM_TSS_ADDR as usize)
        .map_err(kvm_error("KVM_SET_TSS_ADDR"))?;
    vm_fd
        .set_identity_map_address(KVM_IDENTITY_MAP_ADDR)
        .map_err(kvm_error("KVM_SET_IDENTITY_MAP_ADDR"))?;
    vm_fd
        .create_irq_chip()
        .map_err(kvm_error("KVM_CREATE_IRQCHIP"))?;
    vm_fd
        .create_pit2(kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        })
        .map_err(kvm_error("KVM_CREATE_PIT2"))?;
    Ok(vm_fd)
}

/// Reads the kernel (or bare-metal ELF), decompresses a bzImage on the host when asked,
/// and loads it into guest RAM; records `decompress_ms` and `kernel_load_ms`.
fn load_kernel(
    cfg: &VmConfig,
    ram: &GuestRam,
    timings: &mut SetupTimings,
) -> Result<boot::LoadedKernel, VmError> {
    let image = std::fs::read(&cfg.kernel).map_err(|source| VmError::ReadFile {
        what: "kernel",
        path: cfg.kernel.clone(),
        source,
    })?;
    let boot_err = boot_error(&cfg.kernel);
    let format = boot::detect(&image).map_err(&boot_err)?;
    if cfg.guest == GuestKind::BareMetal && format != boot::ImageFormat::Elf {
        return Err(VmError::BareMetalNotElf(cfg.kernel.clone()));
    }
    let image = if format == boot::ImageFormat::BzImage
        && cfg.bzimage_entry == BzImageEntry::HostDecompressed
    {
        let td = Instant::now();
        let elf = boot::extract_vmlinux(&image).map_err(&boot_err)?;
        timings.decompress_ms = Some(ms(td));
        elf
    } else {
        image
    };
    let tl = Instant::now();
    let kernel = boot::load_kernel(&ram.mem, &image).map_err(&boot_err)?;
    drop(image);
    timings.kernel_load_ms = ms(tl);
    Ok(kernel)
}

/// Copies the initrd, if any, into guest RAM where the kernel accepts it; returns its
/// address and size for the zero page.
fn load_initrd(
    cfg: &VmConfig,
    ram: &GuestRam,
    kernel: &boot::LoadedKernel,
) -> Result<Option<(u64, u64)>, VmError> {
    let Some(p) = &cfg.initrd else {
        return Ok(None);
    };
    let bytes = std::fs::read(p).map_err(|source| VmError::ReadFile {
        what: "initrd",
        path: p.clone(),
        source,
    })?;
    let max = kernel.setup_header.map(|h| u64::from(h.initrd_addr_max));
    let addr = boot::initrd_addr(&ram.layout, bytes.len() as u64, kernel.end, max)
        .map_err(boot_error(&cfg.kernel))?;
    ram.mem
        .write_slice(&bytes, GuestAddress(addr))
        .map_err(|source| VmError::Write {
            what: "initrd",
            addr,
            source,
        })?;
    Ok(Some((addr, bytes.len() as u64)))
}

/// Writes what the guest reads at boot: the ACPI tables (MADT, SRAT, SLIT for the
/// topology), the zero page, and the boot GDT and page tables.
fn write_boot_tables(
    cfg: &VmConfig,
    ram: &GuestRam,
    kernel: &boot::LoadedKernel,
    initrd: Option<(u64, u64)>,
) -> Result<(), VmError> {
    let topo = &cfg.topology;
    let tables = acpi::build(
        topo,
        &ram.layout.node_ranges(topo.numa_nodes()),
        ACPI_START,
        (ACPI_END - ACPI_START) as usize,
    )?;
    ram.mem
        .write_slice(&tables.bytes, GuestAddress(ACPI_START))
        .map_err(|source| VmError::Write {
            what: "ACPI tables",
            addr: ACPI_START,
            source,
        })?;
    let zp = boot::zero_page(
        kernel,
        &ram.layout,
        cfg.cmdline.len(),
        initrd,
        tables.rsdp_addr(),
    );
    boot::write_zero_page(&ram.mem, &zp).map_err(boot_error(&cfg.kernel))?;
    regs::write_boot_tables(&ram.mem)?;
    Ok(())
}

/// Creates every vCPU with its x2APIC id, its CPUID for the topology (minus the
/// configured clears) and its entry state, and opens its stats.
fn create_vcpus(
    kvm: &Kvm,
    vm_fd: &VmFd,
    cfg: &VmConfig,
    kernel_entry: u64,
) -> Result<(Vec<VcpuFd>, Vec<StatsFd>), VmError> {
    let topo = &cfg.topology;
    let supported = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_error("KVM_GET_SUPPORTED_CPUID"))?;
    let mut vcpus = Vec::with_capacity(topo.vcpus() as usize);
    let mut stats = Vec::with_capacity(topo.vcpus() as usize);
    for i in 0..topo.vcpus() {
        let apic = topo.apic_id(i);
        let fd = vm_fd
            .create_vcpu(u64::from(apic))
            .map_err(|source| vcpu::VcpuError::Create {
                vcpu: i,
                apic,
                source,
            })?;
        let mut entries = cpuid::for_vcpu(supported.as_slice(), topo, i)
            .map_err(|source| vcpu::VcpuError::Cpuid { vcpu: i, source })?;
        cpuid::apply_clears(&mut entries, &cfg.cpuid_clear);
        let cpuid = CpuId::from_entries(&entries).map_err(|_| vcpu::VcpuError::Cpuid {
            vcpu: i,
            source: cpuid::CpuidError::NoLeaf0,
        })?;
        vcpu::configure(&fd, i, &cpuid, entry_state(cfg.guest, i, kernel_entry))?;
        stats.push(StatsFd::open(&fd, &format!("vCPU {i}"))?);
        vcpus.push(fd);
    }
    Ok((vcpus, stats))
}

/// Where vCPU `i` starts: a Linux guest's boot CPU at the kernel entry (the others wait
/// for INIT/SIPI), every vCPU of a bare-metal guest at its entry with its index in `rdi`.
fn entry_state(guest: GuestKind, i: u32, kernel_entry: u64) -> Option<EntryState> {
    match guest {
        GuestKind::Linux if i == 0 => Some(EntryState {
            rip: kernel_entry,
            rsp: BOOT_STACK_ADDR,
            rdi: 0,
            rsi: ZERO_PAGE_ADDR,
        }),
        GuestKind::Linux => None,
        GuestKind::BareMetal => Some(EntryState {
            rip: kernel_entry,
            rsp: 0,
            rdi: u64::from(i),
            rsi: ZERO_PAGE_ADDR,
        }),
    }
}

/// A cloneable handle that stops a running VM from any thread.
#[derive(Clone)]
pub struct VmKicker {
    state: Arc<RunState>,
    kickers: Arc<Vec<Arc<Kicker>>>,
}

impl VmKicker {
    /// Records `reason` (unless the guest already exited) and kicks every vCPU out of
    /// `KVM_RUN`.
    pub fn stop(&self, reason: ExitReason) {
        self.state.finish(reason);
        self.kick_all();
    }

    fn kick_all(&self) {
        for k in self.kickers.iter() {
            k.kick();
        }
    }
}

/// A VM whose vCPUs are running.
pub struct RunningVm {
    deadline: Option<Instant>,
    started: Instant,
    threads: Vec<JoinHandle<()>>,
    kick: VmKicker,
    state: Arc<RunState>,
    stats: Vec<StatsFd>,
    vm_stats: Option<StatsFd>,
    serial: Arc<Mutex<SerialConsole>>,
    tail: ConsoleTail,
    vcpu_threads: Vec<VcpuThread>,
    host_cpus: Vec<usize>,
    budget: usize,
    vcpus: u32,
    setup_ms: f64,
    timings: SetupTimings,
    host_is_pvm: bool,
    kernel_entry: u64,
    _vm_fd: VmFd,
    _ram: GuestRam,
    _created: Instant,
}

impl RunningVm {
    /// A handle to stop the VM from another thread.
    pub fn kicker(&self) -> VmKicker {
        self.kick.clone()
    }

    /// Stops the VM now (host request).
    pub fn kick(&self, why: &str) {
        self.kick.stop(ExitReason::Kicked { why: why.into() });
    }

    /// vCPU threads with their pinned affinity.
    pub fn vcpu_threads(&self) -> &[VcpuThread] {
        &self.vcpu_threads
    }

    /// Whether the guest (or the host) has ended the run.
    pub fn exited(&self) -> bool {
        self.state.exit.lock().map(|g| g.is_some()).unwrap_or(true)
    }

    /// Blocks until the guest exits, the deadline passes (watchdog) or [`Self::kick`];
    /// waits at most `poll` per wake-up so callers can interleave work (draining the SHM
    /// ring) by calling it in a loop. Returns true once the run has ended.
    pub fn wait_timeout(&self, poll: Duration) -> bool {
        let now = Instant::now();
        if let Some(d) = self.deadline {
            if now >= d {
                self.kick.stop(ExitReason::Watchdog {
                    after_ms: self.started.elapsed().as_millis() as u64,
                });
                return true;
            }
        }
        let limit = match self.deadline {
            Some(d) => poll.min(d - now),
            None => poll,
        };
        let g = match self.state.exit.lock() {
            Ok(g) => g,
            Err(_) => return true,
        };
        if g.is_some() {
            return true;
        }
        match self.state.cv.wait_timeout(g, limit) {
            Ok((g, _)) => g.is_some(),
            Err(_) => true,
        }
    }

    /// Waits for the end of the run, then tears down (timed) and reports.
    pub fn wait(self) -> VmReport {
        while !self.wait_timeout(Duration::from_millis(100)) {}
        self.teardown()
    }

    fn teardown(self) -> VmReport {
        // Make sure every vCPU leaves KVM_RUN (the guest's exit only stops its own vCPU).
        self.kick.kick_all();
        let (exit, exit_at) = match self.state.exit.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
        .unwrap_or((
            ExitReason::Kicked {
                why: "no exit recorded".into(),
            },
            Instant::now(),
        ));
        let run_ms = (exit_at - self.started).as_secs_f64() * 1000.0;
        let stuck_vcpus =
            join_vcpu_threads(self.threads, &self.kick, &self.vcpu_threads, JOIN_LIMIT);
        let per_vcpu_stats: Vec<BTreeMap<String, u64>> = self
            .stats
            .iter()
            .map(|s| s.read().unwrap_or_default())
            .collect();
        let vm_stats = self
            .vm_stats
            .as_ref()
            .and_then(|s| s.read().ok())
            .unwrap_or_default();
        // A vCPU left behind may hold the console (stuck in its write): never wait on it.
        let console = if stuck_vcpus.is_empty() {
            self.serial.lock().ok()
        } else {
            self.serial.try_lock().ok()
        };
        let console_bytes = match console {
            Some(mut s) => {
                s.flush();
                s.bytes_written()
            }
            None => 0,
        };
        drop(self.stats);
        drop(self._vm_fd);
        drop(self._ram);
        let cleanup_ms = exit_at.elapsed().as_secs_f64() * 1000.0;
        VmReport {
            exit,
            per_vcpu_stats,
            vm_stats,
            vcpu_threads: self.vcpu_threads,
            overcommit: self.budget < self.vcpus as usize,
            host_cpus: self.host_cpus,
            cpu_budget: self.budget,
            vcpus: self.vcpus,
            setup_ms: self.setup_ms,
            timings: self.timings,
            run_ms,
            cleanup_ms,
            console_bytes,
            console_tail: self.tail.text(),
            host_is_pvm: self.host_is_pvm,
            kernel_entry: self.kernel_entry,
            stuck_vcpus,
        }
    }
}

/// Joins the vCPU threads, kicking again while any is still running, for at most
/// `limit`; the ones still running then are reported and left detached, so a vCPU the
/// host kernel never gives back fails the run instead of hanging it.
fn join_vcpu_threads(
    threads: Vec<JoinHandle<()>>,
    kick: &VmKicker,
    info: &[VcpuThread],
    limit: Duration,
) -> Vec<StuckVcpu> {
    let until = Instant::now() + limit;
    let mut pending: Vec<(usize, JoinHandle<()>)> = threads.into_iter().enumerate().collect();
    while !pending.is_empty() && Instant::now() < until {
        let (done, rest): (Vec<_>, Vec<_>) =
            pending.into_iter().partition(|(_, t)| t.is_finished());
        for (_, t) in done {
            // A panicking vCPU thread has already recorded nothing better to report.
            let _ = t.join();
        }
        pending = rest;
        if !pending.is_empty() {
            kick.kick_all();
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    pending
        .into_iter()
        .map(|(i, _detached)| {
            let vcpu = i as u32;
            let tid = info.iter().find(|t| t.vcpu == vcpu).map_or(0, |t| t.tid);
            StuckVcpu {
                vcpu,
                tid,
                host_kernel: host_kernel_site(tid),
            }
        })
        .collect()
}

#[cfg(test)]
mod join_tests {
    use super::*;

    #[test]
    fn a_vcpu_thread_that_never_returns_is_reported_not_waited_for() {
        let kick = VmKicker {
            state: Arc::new(RunState::new()),
            kickers: Arc::new(Vec::new()),
        };
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let quick = std::thread::spawn(|| {});
        let stuck = std::thread::spawn(move || {
            tid_tx.send(host::gettid()).unwrap();
            let _ = held.recv();
        });
        let tid = tid_rx.recv().unwrap();
        let info = [
            VcpuThread {
                vcpu: 0,
                apic_id: 0,
                tid: 0,
                affinity: Vec::new(),
            },
            VcpuThread {
                vcpu: 1,
                apic_id: 1,
                tid,
                affinity: Vec::new(),
            },
        ];
        let out = join_vcpu_threads(vec![quick, stuck], &kick, &info, Duration::from_millis(200));
        release.send(()).unwrap();
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!((out[0].vcpu, out[0].tid), (1, tid));
        assert!(
            out[0].host_kernel.starts_with("wchan "),
            "{}",
            out[0].host_kernel
        );
        assert!(out[0].to_string().contains("vCPU 1"), "{}", out[0]);
    }
}
