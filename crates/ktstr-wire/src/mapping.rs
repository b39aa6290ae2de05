//! Mapping the shared-memory region from a file (feature `mmap`): on the host, a range of
//! the file that backs guest RAM; in the guest, physical memory through `/dev/mem`
//! (opened without `O_SYNC`: with it the kernel refuses the mapping with EAGAIN).
//!
//! The rest of this crate is pure code; this one syscall wrapper lives here, behind a
//! feature, because both sides need exactly it and both already link this crate (the
//! guest links nothing else of ours). Fuzzing and other pure users leave it off.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use crate::{SharedMem, WireError};

/// A shared, readable and writable mapping of part of a file; unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this handle; all access goes
// through raw pointers (the wire crate's atomic/volatile accessors), never references.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only hands out the address and length.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `file` at `offset` (page aligned), shared and writable. The
    /// file must be open for reading and writing; the mapping outlives the descriptor.
    pub fn map_file(file: &File, offset: u64, len: u64) -> io::Result<Mapping> {
        let invalid = |what| io::Error::new(io::ErrorKind::InvalidInput, what);
        let len = usize::try_from(len).map_err(|_| invalid("region too large"))?;
        let off = libc::off_t::try_from(offset).map_err(|_| invalid("offset too large"))?;
        // SAFETY: a fresh shared mapping of an open file at an address the kernel picks,
        // so no existing memory is touched; the result is checked against MAP_FAILED.
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
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
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

    /// Keeps the mapping for the rest of the process (never unmapped) and wraps it.
    pub fn leak(self) -> Result<SharedMem, WireError> {
        let (ptr, len) = (self.ptr, self.len);
        std::mem::forget(self);
        // SAFETY: `ptr..ptr+len` is mapped read/write and, with the handle forgotten, is
        // never unmapped; only the returned SharedMem accesses it.
        unsafe { SharedMem::from_raw(ptr, len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map_file` mapped; no access outlives the handle
        // (callers keep the Mapping alive while they use its address).
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom};

    #[test]
    fn writes_reach_the_file() {
        let mut f = tempfile_rw();
        f.set_len(2 * 4096).unwrap();
        let m = Mapping::map_file(&f, 4096, 4096).unwrap();
        assert_eq!(m.len(), 4096);
        // SAFETY: inside the mapping, which lives until the end of the test.
        unsafe { m.as_ptr().add(3).write_volatile(0xAB) };
        drop(m);
        let mut buf = [0u8; 4];
        f.seek(SeekFrom::Start(4096)).unwrap();
        f.read_exact(&mut buf).unwrap();
        assert_eq!(buf, [0, 0, 0, 0xAB]);
    }

    #[test]
    fn leaked_mapping_is_shared_mem() {
        let f = tempfile_rw();
        f.set_len(4096).unwrap();
        let shm = Mapping::map_file(&f, 0, 4096).unwrap().leak().unwrap();
        assert_eq!(shm.len(), 4096);
    }

    #[test]
    fn unaligned_offset_is_an_error() {
        let f = tempfile_rw();
        f.set_len(8192).unwrap();
        assert!(Mapping::map_file(&f, 100, 4096).is_err());
    }

    fn tempfile_rw() -> File {
        tempfile::tempfile().unwrap()
    }
}
