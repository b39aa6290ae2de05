//! One vCPU: its boot state (CPUID, MSRs, registers, LAPIC, MP state), the thread loop
//! around `KVM_RUN` with port I/O dispatch, the kick (immediate_exit + a signal), and the
//! failure report (RIP and instruction bytes) when the guest dies.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use kvm_bindings::{kvm_mp_state, CpuId, KVM_MP_STATE_RUNNABLE};
use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::arch::x86_64::{msr, regs};
use crate::devices::i8042::{self, I8042Event};
use crate::devices::serial::{SerialConsole, COM1_BASE};
use crate::host::PVM_NOTE;
use crate::memory::GuestRam;

#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("KVM_CREATE_VCPU {vcpu} (APIC id {apic}): {source}")]
    Create {
        vcpu: u32,
        apic: u32,
        source: kvm_ioctls::Error,
    },
    #[error("building the CPUID of vCPU {vcpu}: {source}")]
    Cpuid {
        vcpu: u32,
        source: crate::arch::x86_64::cpuid::CpuidError,
    },
    #[error("{ioctl} on vCPU {vcpu}: {source}")]
    Ioctl {
        ioctl: &'static str,
        vcpu: u32,
        source: kvm_ioctls::Error,
    },
    #[error(transparent)]
    Msr(#[from] msr::MsrError),
}

/// Where a vCPU starts.
#[derive(Debug, Clone, Copy)]
pub struct EntryState {
    pub rip: u64,
    pub rsp: u64,
    pub rdi: u64,
    pub rsi: u64,
}

/// Programs a freshly created vCPU: CPUID, boot MSRs, LAPIC LINT wiring, and, when `entry`
/// is given, long-mode registers at that entry and a runnable MP state.
pub fn configure(
    fd: &VcpuFd,
    index: u32,
    cpuid: &CpuId,
    entry: Option<EntryState>,
) -> Result<(), VcpuError> {
    let io = |ioctl| {
        move |source| VcpuError::Ioctl {
            ioctl,
            vcpu: index,
            source,
        }
    };
    fd.set_cpuid2(cpuid).map_err(io("KVM_SET_CPUID2"))?;
    msr::set_boot_msrs(fd, index)?;
    let lapic = fd.get_lapic().map_err(io("KVM_GET_LAPIC"))?;
    fd.set_lapic(&regs::wire_lints(lapic))
        .map_err(io("KVM_SET_LAPIC"))?;
    if let Some(e) = entry {
        let sregs = fd.get_sregs().map_err(io("KVM_GET_SREGS"))?;
        fd.set_sregs(&regs::long_mode_sregs(sregs))
            .map_err(io("KVM_SET_SREGS"))?;
        fd.set_regs(&regs::entry_regs(e.rip, e.rsp, e.rdi, e.rsi))
            .map_err(io("KVM_SET_REGS"))?;
        fd.set_fpu(&regs::boot_fpu()).map_err(io("KVM_SET_FPU"))?;
        fd.set_mp_state(kvm_mp_state {
            mp_state: KVM_MP_STATE_RUNNABLE,
        })
        .map_err(io("KVM_SET_MP_STATE"))?;
    }
    Ok(())
}

/// Why a vCPU stopped the VM on its own.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VcpuFault {
    pub vcpu: u32,
    /// The exit, e.g. `KVM_EXIT_INTERNAL_ERROR suberror 1 (emulation failure)`.
    pub what: String,
    pub rip: Option<u64>,
    /// Up to 16 bytes at RIP, read through the guest's page tables.
    pub insn: Option<Vec<u8>>,
    /// Set on a KVM-PVM host: what that means and what to do instead.
    pub host_note: Option<String>,
    /// KVM reset the vCPU before its registers could be read (a shutdown under AMD SVM):
    /// `rip` and `insn` are not the fault's and are left out.
    pub rip_lost_on_reset: bool,
    /// The host's `kvm_exit` record of that shutdown, when the host let us trace it
    /// ([`crate::exit_trace`]); `rip` is then the one it carries.
    pub traced_shutdown: Option<String>,
}

impl fmt::Display for VcpuFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vCPU {}: {}", self.vcpu, self.what)?;
        match (self.rip, &self.insn) {
            (Some(rip), _) if self.rip_lost_on_reset && self.traced_shutdown.is_some() => write!(
                f,
                " at RIP {rip:#x} (from the host's kvm_exit trace: {}; KVM reset the vCPU on the shutdown, so its instruction bytes are not readable)",
                self.traced_shutdown.as_deref().unwrap_or_default()
            )?,
            _ if self.rip_lost_on_reset => write!(
                f,
                "; KVM reset the vCPU on the shutdown (as it does under AMD SVM), so the faulting RIP is lost"
            )?,
            (Some(rip), Some(b)) => {
                let hex: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
                write!(f, " at RIP {rip:#x}, instruction bytes: {}", hex.join(" "))?
            }
            (Some(rip), None) => write!(f, " at RIP {rip:#x}, instruction bytes unreadable")?,
            (None, _) => write!(f, " (RIP unreadable)")?,
        }
        if let Some(n) = &self.host_note {
            write!(f, "; {n}")?;
        }
        Ok(())
    }
}

/// How the run ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExitReason {
    /// The guest pulsed the i8042 reset line (Linux `reboot=k`, the self-test's exit).
    Reset { vcpu: u32 },
    /// `KVM_EXIT_SHUTDOWN`: a triple fault (Linux `reboot=t`, or a crash).
    TripleFault(VcpuFault),
    /// `KVM_EXIT_SYSTEM_EVENT` (reset or shutdown requested through KVM).
    SystemEvent { vcpu: u32, event: u32 },
    /// The guest failed: internal error, failed entry, unexpected exit or ioctl error.
    Failure(VcpuFault),
    /// The wall deadline passed; the vCPUs were kicked out of `KVM_RUN`.
    Watchdog { after_ms: u64 },
    /// The host asked the VM to stop.
    Kicked { why: String },
}

impl ExitReason {
    /// A guest-initiated reset or triple fault: the normal ends of a run.
    pub fn is_guest_reset(&self) -> bool {
        matches!(
            self,
            ExitReason::Reset { .. } | ExitReason::TripleFault(_) | ExitReason::SystemEvent { .. }
        )
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Reset { vcpu } => write!(f, "i8042 reset from vCPU {vcpu}"),
            ExitReason::TripleFault(x) => write!(f, "triple fault (KVM_EXIT_SHUTDOWN) on {x}"),
            ExitReason::SystemEvent { vcpu, event } => {
                write!(f, "KVM system event {event} from vCPU {vcpu}")
            }
            ExitReason::Failure(x) => write!(f, "guest failure: {x}"),
            ExitReason::Watchdog { after_ms } => {
                write!(
                    f,
                    "watchdog: deadline passed after {after_ms} ms; vCPUs kicked"
                )
            }
            ExitReason::Kicked { why } => write!(f, "stopped by the host: {why}"),
        }
    }
}

/// State shared by the vCPU threads and the VM owner: the first exit wins.
pub struct RunState {
    pub exit: Mutex<Option<(ExitReason, Instant)>>,
    pub cv: Condvar,
    pub stop: AtomicBool,
}

impl RunState {
    pub fn new() -> Self {
        Self {
            exit: Mutex::new(None),
            cv: Condvar::new(),
            stop: AtomicBool::new(false),
        }
    }

    /// Records `reason` unless an exit is already recorded, and wakes the owner.
    pub fn finish(&self, reason: ExitReason) {
        self.stop.store(true, Ordering::SeqCst);
        let mut g = match self.exit.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if g.is_none() {
            *g = Some((reason, Instant::now()));
        }
        self.cv.notify_all();
    }
}

impl Default for RunState {
    fn default() -> Self {
        Self::new()
    }
}

/// Lets another thread force a vCPU out of `KVM_RUN`: sets `kvm_run.immediate_exit` (so a
/// `KVM_RUN` about to start returns at once) and signals the thread (so one in progress
/// returns `EINTR`). The vCPU thread withdraws the pointer before it drops its fd.
pub struct Kicker {
    /// Address of `kvm_run.immediate_exit` and the thread to signal; `None` once the
    /// thread has left its loop.
    target: Mutex<Option<(usize, libc::pthread_t)>>,
}

/// The real-time signal used for kicks.
pub fn kick_signal() -> i32 {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (empty) kick signal handler once per process.
pub fn install_kick_handler() -> std::io::Result<()> {
    static ONCE: std::sync::OnceLock<Result<(), i32>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick).map_err(|e| e.errno())
    })
    .map_err(std::io::Error::from_raw_os_error)
}

impl Kicker {
    pub fn new() -> Self {
        Self {
            target: Mutex::new(None),
        }
    }

    fn arm(&self, immediate_exit: *mut u8) {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        if let Ok(mut t) = self.target.lock() {
            *t = Some((immediate_exit as usize, me));
        }
    }

    fn disarm(&self) {
        let mut t = match self.target.lock() {
            Ok(t) => t,
            Err(p) => p.into_inner(),
        };
        *t = None;
    }

    /// Kicks the vCPU if its thread is still in its loop.
    pub fn kick(&self) {
        let t = match self.target.lock() {
            Ok(t) => t,
            Err(p) => p.into_inner(),
        };
        if let Some((ptr, thread)) = *t {
            // SAFETY: while armed, `ptr` points into the vCPU's live kvm_run mapping (the
            // thread disarms under this lock before dropping its fd).
            unsafe { std::ptr::write_volatile(ptr as *mut u8, 1) };
            // SAFETY: the thread is alive while armed (it disarms before returning).
            unsafe { libc::pthread_kill(thread, kick_signal()) };
        }
    }
}

impl Default for Kicker {
    fn default() -> Self {
        Self::new()
    }
}

/// Everything a vCPU thread needs.
pub struct VcpuContext {
    pub index: u32,
    pub ram: GuestRam,
    pub serial: Arc<Mutex<SerialConsole>>,
    pub state: Arc<RunState>,
    pub kicker: Arc<Kicker>,
    pub host_is_pvm: bool,
    /// This VM's record of shutdown exits, where the host allows one.
    pub exit_trace: Option<Arc<crate::exit_trace::ExitTrace>>,
}

/// Reads RIP and the instruction bytes there for a failure report.
fn fault(fd: &VcpuFd, ctx: &VcpuContext, what: String) -> VcpuFault {
    let regs = fd.get_regs().ok();
    let sregs = fd.get_sregs().ok();
    let rip = regs.map(|r| r.rip);
    let insn = match (rip, sregs) {
        (Some(rip), Some(s)) if s.cr0 & regs::CR0_PG != 0 => ctx.ram.read_virt(s.cr3, rip, 16),
        (Some(rip), Some(s)) => {
            let pa = s.cs.base.wrapping_add(rip);
            let mut b = vec![0u8; 16];
            vm_memory::Bytes::read_slice(&**ctx.ram.mem, &mut b, vm_memory::GuestAddress(pa))
                .ok()
                .map(|_| b)
        }
        _ => None,
    };
    VcpuFault {
        vcpu: ctx.index,
        what,
        rip,
        insn,
        host_note: ctx.host_is_pvm.then(|| PVM_NOTE.to_string()),
        rip_lost_on_reset: false,
        traced_shutdown: None,
    }
}

/// The reset vector's offset in CS: where a vCPU stands after KVM reset it.
const RESET_RIP: u64 = 0xfff0;

/// KVM under AMD SVM reinitialises a vCPU on a shutdown intercept (the VMCB is undefined
/// after one), so the registers read afterwards are the reset state, not the fault's:
/// say so instead of reporting the reset vector as the faulting RIP.
/// Where the host traced the shutdown, its RIP is put back.
fn shutdown_fault(
    mut f: VcpuFault,
    traced: Option<crate::exit_trace::TracedShutdown>,
) -> VcpuFault {
    if f.rip == Some(RESET_RIP) {
        f.rip = None;
        f.insn = None;
        f.rip_lost_on_reset = true;
        if let Some(t) = traced {
            f.rip = Some(t.rip);
            f.traced_shutdown = Some(t.record);
        }
    }
    f
}

fn internal_error_name(sub: u32) -> &'static str {
    match sub {
        1 => "emulation failure",
        2 => "simultaneous exception",
        3 => "delivery event",
        4 => "unexpected exit reason",
        _ => "unknown suberror",
    }
}

/// The vCPU thread: runs until the guest exits or the VM is stopped.
pub fn run_loop(mut fd: VcpuFd, ctx: VcpuContext) {
    let imm: *mut u8 = &mut fd.get_kvm_run().immediate_exit;
    ctx.kicker.arm(imm);
    loop {
        if ctx.state.stop.load(Ordering::SeqCst) {
            break;
        }
        let outcome: Option<ExitReason> = match fd.run() {
            Ok(VcpuExit::IoOut(port, data)) => io_out(&ctx, port, data),
            Ok(VcpuExit::IoIn(port, data)) => {
                io_in(&ctx, port, data);
                None
            }
            Ok(VcpuExit::MmioRead(_, data)) => {
                data.fill(0xff);
                None
            }
            Ok(VcpuExit::MmioWrite(..)) | Ok(VcpuExit::Intr) | Ok(VcpuExit::IrqWindowOpen) => None,
            Ok(VcpuExit::Hlt) => {
                // Only without an in-kernel irqchip; yield rather than spin.
                std::thread::yield_now();
                None
            }
            Ok(VcpuExit::Shutdown) => {
                let traced = ctx
                    .exit_trace
                    .as_ref()
                    .and_then(|t| t.shutdown_of(crate::host::gettid()));
                Some(ExitReason::TripleFault(shutdown_fault(
                    fault(&fd, &ctx, "KVM_EXIT_SHUTDOWN (triple fault)".into()),
                    traced,
                )))
            }
            Ok(VcpuExit::SystemEvent(event, _)) => Some(ExitReason::SystemEvent {
                vcpu: ctx.index,
                event,
            }),
            Ok(VcpuExit::InternalError) => {
                // SAFETY: the exit reason says the `internal` union member is valid.
                let (sub, ndata, data) = unsafe {
                    let i = fd.get_kvm_run().__bindgen_anon_1.internal;
                    (i.suberror, i.ndata, i.data)
                };
                let n = (ndata as usize).min(data.len());
                let extra: Vec<String> = data[..n].iter().map(|d| format!("{d:#x}")).collect();
                Some(ExitReason::Failure(fault(
                    &fd,
                    &ctx,
                    format!(
                        "KVM_EXIT_INTERNAL_ERROR suberror {sub} ({}), data [{}]",
                        internal_error_name(sub),
                        extra.join(", ")
                    ),
                )))
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => Some(ExitReason::Failure(fault(
                &fd,
                &ctx,
                format!(
                    "KVM_EXIT_FAIL_ENTRY hardware_entry_failure_reason {reason:#x} on host CPU {cpu}"
                ),
            ))),
            Ok(other) => {
                let what = format!("unexpected exit {other:?}");
                Some(ExitReason::Failure(fault(&fd, &ctx, what)))
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                fd.set_kvm_immediate_exit(0);
                None
            }
            Err(e) => Some(ExitReason::Failure(fault(
                &fd,
                &ctx,
                format!("KVM_RUN failed: {e}"),
            ))),
        };
        if let Some(r) = outcome {
            ctx.state.finish(r);
            break;
        }
    }
    ctx.kicker.disarm();
}

fn io_out(ctx: &VcpuContext, port: u16, data: &[u8]) -> Option<ExitReason> {
    let value = data.first().copied().unwrap_or(0);
    match port {
        p if (COM1_BASE..COM1_BASE + 8).contains(&p) => {
            if let Ok(mut s) = ctx.serial.lock() {
                s.write((p - COM1_BASE) as u8, value);
            }
            None
        }
        i8042::DATA_PORT | i8042::COMMAND_PORT => match i8042::write(port, value) {
            I8042Event::Reset => Some(ExitReason::Reset { vcpu: ctx.index }),
            I8042Event::None => None,
        },
        _ => None,
    }
}

fn io_in(ctx: &VcpuContext, port: u16, data: &mut [u8]) {
    match port {
        p if (COM1_BASE..COM1_BASE + 8).contains(&p) => {
            let v = ctx
                .serial
                .lock()
                .map(|mut s| s.read((p - COM1_BASE) as u8))
                .unwrap_or(0xff);
            data.fill(0);
            if let Some(b) = data.first_mut() {
                *b = v;
            }
        }
        i8042::DATA_PORT | i8042::COMMAND_PORT => data.fill(i8042::read(port)),
        // Absent devices float high on a PC bus.
        _ => data.fill(0xff),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_report_names_vcpu_rip_bytes_and_pvm() {
        let f = VcpuFault {
            vcpu: 3,
            what: "KVM_EXIT_INTERNAL_ERROR suberror 1 (emulation failure), data []".into(),
            rip: Some(0xffff_ffff_8100_0000),
            insn: Some(vec![0xc4, 0x42, 0x69, 0xf7]),
            host_note: Some(PVM_NOTE.into()),
            rip_lost_on_reset: false,
            traced_shutdown: None,
        };
        let s = f.to_string();
        assert!(s.starts_with("vCPU 3: KVM_EXIT_INTERNAL_ERROR suberror 1 (emulation failure)"));
        assert!(s.contains("at RIP 0xffffffff81000000"));
        assert!(s.contains("instruction bytes: c4 42 69 f7"));
        assert!(s.contains("use --engine qemu-tcg"));
    }

    #[test]
    fn a_shutdown_seen_at_the_reset_vector_says_the_rip_is_lost() {
        let at = |rip| VcpuFault {
            vcpu: 0,
            what: "KVM_EXIT_SHUTDOWN (triple fault)".into(),
            rip: Some(rip),
            insn: None,
            host_note: None,
            rip_lost_on_reset: false,
            traced_shutdown: None,
        };
        let reset = shutdown_fault(at(RESET_RIP), None).to_string();
        assert!(reset.contains("the faulting RIP is lost"), "{reset}");
        assert!(!reset.contains("0xfff0"), "{reset}");
        assert!(!reset.contains("unreadable"), "{reset}");
        let real = shutdown_fault(at(0xffff_ffff_8100_1234), None).to_string();
        assert!(real.contains("at RIP 0xffffffff81001234"), "{real}");
        assert!(!real.contains("lost"), "{real}");
        // Reset by KVM, but the host traced the exit: its RIP, and where it came from.
        let traced = crate::exit_trace::TracedShutdown {
            rip: 0xffff_ffff_81a0_c3d2,
            record: "vcpu 0 reason shutdown rip 0xffffffff81a0c3d2 info1 0x0".into(),
        };
        let t = shutdown_fault(at(RESET_RIP), Some(traced)).to_string();
        assert!(
            t.contains(
                "at RIP 0xffffffff81a0c3d2 (from the host's kvm_exit trace: vcpu 0 reason shutdown"
            ),
            "{t}"
        );
        assert!(!t.contains("lost"), "{t}");
    }

    #[test]
    fn first_exit_wins() {
        let s = RunState::new();
        s.finish(ExitReason::Reset { vcpu: 1 });
        s.finish(ExitReason::Watchdog { after_ms: 5 });
        let g = s.exit.lock().unwrap();
        assert_eq!(g.as_ref().unwrap().0, ExitReason::Reset { vcpu: 1 });
        assert!(s.stop.load(Ordering::SeqCst));
    }
}
