//! ktstr's VMM: boots a kernel (or the bare-metal self-test guest) on KVM with a declared
//! CPU topology, pins vCPUs to a CPU budget, exposes the shared-memory region and reads
//! KVM stats. See DESIGN.md section 4.

pub mod topology;

pub use topology::{Topology, TopologyError};
