//! Host-side mapping of the guest's shared-memory region (an mmap of a range of the
//! file that backs guest RAM).

use std::fs::File;
use std::os::fd::AsRawFd;

/// A shared, writable mapping of `len` bytes; unmapped on drop.
#[derive(Debug)]
pub struct ShmMapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; all access goes through the wire crate's
// atomic/volatile accessors, which do not rely on exclusive ownership.
unsafe impl Send for ShmMapping {}
unsafe impl Sync for ShmMapping {}

impl ShmMapping {
    /// Map `len` bytes of `file` at `offset` (both page aligned) shared and writable.
    pub fn map_file(file: &File, offset: u64, len: u64) -> std::io::Result<Self> {
        let len_usize = usize::try_from(len).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "region too large")
        })?;
        let off = libc::off_t::try_from(offset).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "offset too large")
        })?;
        // SAFETY: a fresh shared mapping of a file we opened read-write; the kernel picks
        // the address, and the result is checked against MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len_usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                off,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self {
            ptr: ptr.cast(),
            len: len_usize,
        })
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for ShmMapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what map_file mapped.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}
