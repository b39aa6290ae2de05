//! Test authoring: what `#[ktstr_test]` registers and how a test binary runs it.
//!
//! - [`entry`]: the registration record ([`TestEntry`], [`TestAttrs`]) and the
//!   distributed slice [`KTSTR_TESTS`] the macro adds to.
//! - [`spec`]: [`TestCtx`] (given to the test function) and [`TestSpec`] (returned by it).
//! - [`presets`]: the topology presets gauntlet variants run on.
//! - [`names`]: `ktstr/{name}`, `gauntlet/{name}/{preset}`, the kernel list.
//! - [`protocol`]: `--list` / `--exact` for nextest and libtest, and the `#[test]` wrapper.
//! - [`execute`]: one variant end to end, skips and sidecars included.
//! - [`suite`]: what `cargo ktstr test` does around `cargo nextest run`.
//! - [`soak`]: `cargo ktstr test --repeat N`, flake rates and failure signatures.

pub mod entry;
pub mod execute;
pub mod names;
pub mod presets;
pub mod protocol;
pub mod soak;
pub mod spec;
pub mod suite;

pub use entry::{Constraints, PerfDeltaGate, TestAttrs, TestEntry, KTSTR_TESTS};
pub use execute::{VariantResult, MANIFEST_ENV, NO_SKIP_ENV};
pub use names::{TestId, KERNEL_LIST_ENV};
pub use presets::{Preset, PRESETS};
pub use spec::{Check, IntoTestSpec, TestCtx, TestSpec, TestSpecError, Variant};

/// What `#[ktstr_test]` expansions name. Not a public API: it changes with the macro.
#[doc(hidden)]
pub mod private {
    pub use super::entry::{Constraints, PerfDeltaGate, TestAttrs, TestEntry, KTSTR_TESTS};
    pub use super::protocol::{early_dispatch, run_libtest};
    pub use super::spec::{IntoTestSpec, TestCtx, TestSpec};
    pub use ktstr_sidecar::Polarity;
    pub use linkme;
}
