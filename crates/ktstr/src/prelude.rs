//! Everything a test file usually needs: `use ktstr::prelude::*;`.

pub use crate::assert::Assert;
pub use crate::ktstr_test;
pub use crate::payload::{Check as PayloadCheck, Payload};
pub use crate::runner::RunOutcome;
pub use crate::scheduler::Scheduler;
pub use crate::test_support::{TestCtx, TestSpec, Variant};
pub use ktstr_sidecar::{read_sidecar, Outcome, Polarity, SidecarResult};
pub use ktstr_topology::Topology;
pub use ktstr_wire::scenario::{
    CgroupDef, CpuMax, CpusetSpec, Hold, MemPolicy, Op, Scenario, SchedPolicy, Step, WorkSpec,
    WorkType, WorkerCount, EXIT_AT_ONCE_ARG,
};
pub use ktstr_wire::spec::{GuestSpec, WorkKind, WorkerSpec};
pub use std::time::Duration;
