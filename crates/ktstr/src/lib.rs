//! ktstr: what test authors link. Kernels, initramfs, engines (our KVM VMM and qemu TCG),
//! the runner that boots a test and turns guest reports into a sidecar.

pub mod assert;
pub mod child;
pub mod describe;
pub mod engine;
pub mod initramfs;
pub mod interrupt;
pub mod kernel;
pub mod logging;
pub mod nested;
pub mod payload;
pub mod prelude;
pub mod runner;
pub mod scenario;
pub mod scheduler;
pub mod scratch;
pub mod setup;
pub mod test_support;
pub mod which;

/// `#[ktstr_test(...)]`: declare a VM test (see [`test_support`] and the README's
/// "Writing tests").
pub use ktstr_macros::ktstr_test;
#[doc(hidden)]
pub use test_support::private as __private;
