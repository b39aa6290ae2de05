//! Maps the host's shared-memory region. In the VM it is physical memory, reached through
//! `/dev/mem`; for a run outside a VM, a plain file. The mmap itself is
//! `ktstr_wire::Mapping`, shared with the host.

use std::fs::OpenOptions;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ktstr_wire::{Mapping, SharedMem};

/// Maps `size` bytes of `path` at `offset`, shared, for the rest of the process.
pub fn map(path: &Path, offset: u64, size: u64) -> Result<SharedMem> {
    let page = 4096;
    if !offset.is_multiple_of(page) {
        bail!("shared-memory base {offset:#x} is not page aligned");
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mapping = Mapping::map_file(&file, offset, size).with_context(|| {
        format!(
            "mmap of {} at {offset:#x}+{size:#x} (for /dev/mem: the range must be \
             reserved from RAM and the kernel booted with lockdown=none)",
            path.display()
        )
    })?;
    // PID 1 keeps the mapping until reboot.
    mapping
        .leak()
        .with_context(|| format!("wrapping the mapping of {}", path.display()))
}
