//! ktstr's VMM: boots a kernel (or the bare-metal self-test guest) on KVM with a declared
//! CPU topology, pins vCPUs to a CPU budget, exposes the shared-memory region and reads
//! KVM stats. See DESIGN.md sections 4 and 4b.
//!
//! ```no_run
//! use ktstr_vmm::{GuestKind, Topology, Vm, VmConfig};
//!
//! let topo: Topology = "1n2l2c1t".parse().unwrap();
//! let mut cfg = VmConfig::linux(topo, "bzImage".into(), "console.log".into());
//! cfg.cmdline = "console=ttyS0 reboot=k panic=-1".into();
//! let vm = Vm::create(cfg).unwrap();
//! let shm = vm.shm_region().unwrap(); // write the SHM header here
//! let report = vm.start().unwrap().wait();
//! println!("{} after {:.0} ms", report.exit, report.run_ms);
//! # let _ = (shm, GuestKind::Linux);
//! ```

pub mod arch;
pub mod devices;
pub mod exit_trace;
pub mod host;
pub mod memory;
pub mod selftest;
pub mod stats;
pub mod vcpu;
pub mod vm;

pub use ktstr_topology::{Topology, TopologyError};
pub use memory::ShmRegion;
pub use vcpu::{ExitReason, VcpuFault};
pub use vm::{
    BzImageEntry, GuestKind, RunningVm, SetupTimings, VcpuThread, Vm, VmConfig, VmError, VmKicker,
    VmReport,
};
