//! ktstr: what test authors link. Kernels, initramfs, engines (our KVM VMM and qemu TCG),
//! the runner that boots a test and turns guest reports into a sidecar.

pub mod assert;
pub mod engine;
pub mod initramfs;
pub mod kernel;
pub mod runner;
pub mod scenario;
pub mod scheduler;
pub mod shm;
