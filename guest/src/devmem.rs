//! Maps the host's shared-memory region. In the VM it is physical memory, reached through
//! `/dev/mem` (without `O_SYNC`: with it the kernel refuses the mapping with EAGAIN); for a
//! run outside a VM, a plain file.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ktstr_wire::SharedMem;

/// Maps `size` bytes of `path` at `offset`, shared, for the rest of the process.
pub fn map(path: &Path, offset: u64, size: u64) -> Result<SharedMem> {
    let page = 4096;
    if !offset.is_multiple_of(page) {
        bail!("shared-memory base {offset:#x} is not page aligned");
    }
    let len = usize::try_from(size).context("shared-memory size does not fit in usize")?;
    let off = libc::off_t::try_from(offset).context("shared-memory base too large")?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: a fresh shared mapping of a file we opened; no Rust object aliases it.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            off,
        )
    };
    if ptr == libc::MAP_FAILED {
        let e = std::io::Error::last_os_error();
        bail!(
            "mmap of {} at {offset:#x}+{size:#x}: {e} (for /dev/mem: the range must be \
             reserved from RAM and the kernel booted with lockdown=none)",
            path.display()
        );
    }
    // The mapping outlives the file descriptor and is never unmapped: PID 1 keeps it until
    // reboot.
    // SAFETY: `ptr..ptr+len` is mapped read/write for the rest of the process and is only
    // accessed through SharedMem.
    unsafe { SharedMem::from_raw(ptr.cast(), len) }
        .with_context(|| format!("wrapping the mapping of {}", path.display()))
}
