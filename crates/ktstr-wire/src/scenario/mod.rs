//! The scenario model: what the guest runs in a test. Cgroups with their workers, then
//! steps (operations, then a hold) over the run. Plain serde data: the host builds it,
//! checks it with [`Scenario::validate`] before any VM boots, and packs it in the
//! [`GuestSpec`](crate::spec::GuestSpec); the guest runtime executes it.
//!
//! Cgroup names are paths relative to the test's cgroup: a top-level cgroup is `cg0`, a
//! cgroup nested in it is `cg0/inner`. Operations name cgroups by that path.
//!
//! The data is in `model`, the checks in `validate`, the ready-made scenarios in
//! `canned`; everything is re-exported here.
//!
//! ```
//! use ktstr_wire::scenario::{Scenario, TopoSize};
//!
//! let topo = TopoSize::new(4, 2, 1);
//! let s = Scenario::cpuset_change(topo);
//! s.validate(topo, 3000).unwrap();
//! assert_eq!(s.steps.len(), 3);
//! assert_eq!(s.hold_plan_ms(3000), [1000, 1000, 1000]);
//! ```

mod canned;
mod model;
mod validate;

pub use canned::{Canned, CANNED};
pub use ktstr_topology::TopoSize;
pub use model::*;
pub use validate::*;
