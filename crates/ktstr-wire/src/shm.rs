//! A view over the shared-memory region: atomic u64/u32 accesses for the positions and
//! control words, volatile byte copies for frame data. The other side of the region runs
//! concurrently (another VM, another process), so no Rust reference to the bytes is ever
//! handed out.

use std::alloc::{self, Layout as AllocLayout};
use std::ptr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::WireError;

/// Alignment every region must have: positions are `u64`s at 8-byte offsets.
const REGION_ALIGN: usize = 8;
/// Alignment of regions allocated by [`SharedMem::new_owned`] (like an mmap).
const OWNED_ALIGN: usize = 4096;

/// A cheap, cloneable handle on the shared-memory region. Clones see the same bytes.
#[derive(Clone)]
pub struct SharedMem {
    inner: Arc<Inner>,
}

struct Inner {
    ptr: *mut u8,
    len: usize,
    /// Set when this handle allocated the memory and must free it.
    owned: Option<AllocLayout>,
}

// SAFETY: the region is only accessed through atomics and volatile copies, which are the
// accesses meant for memory shared with a concurrently running peer.
unsafe impl Send for Inner {}
// SAFETY: as above; no method hands out references into the region.
unsafe impl Sync for Inner {}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(layout) = self.owned {
            // SAFETY: `ptr` came from `alloc_zeroed(layout)` in `new_owned`.
            unsafe { alloc::dealloc(self.ptr, layout) };
        }
    }
}

impl std::fmt::Debug for SharedMem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMem")
            .field("ptr", &self.inner.ptr)
            .field("len", &self.inner.len)
            .field("owned", &self.inner.owned.is_some())
            .finish()
    }
}

impl SharedMem {
    /// Wraps `len` bytes at `ptr` (an mmap of `/dev/mem`, of a memory-backend file or of
    /// KVM guest memory).
    ///
    /// # Safety
    /// `ptr..ptr+len` must stay mapped, readable and writable for as long as any clone of
    /// the returned handle lives, and must not be accessed through Rust references
    /// elsewhere in this process.
    pub unsafe fn from_raw(ptr: *mut u8, len: usize) -> Result<Self, WireError> {
        if ptr.is_null() || !(ptr as usize).is_multiple_of(REGION_ALIGN) {
            return Err(WireError::Misaligned {
                addr: ptr as usize as u64,
            });
        }
        Ok(Self {
            inner: Arc::new(Inner {
                ptr,
                len,
                owned: None,
            }),
        })
    }

    /// Allocates a zeroed, page-aligned region of `len` bytes owned by the handle (for
    /// tests and host-side simulations).
    pub fn new_owned(len: usize) -> Self {
        let layout = AllocLayout::from_size_align(len.max(1), OWNED_ALIGN)
            .expect("region size overflows isize");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            alloc::handle_alloc_error(layout);
        }
        Self {
            inner: Arc::new(Inner {
                ptr,
                len,
                owned: Some(layout),
            }),
        }
    }

    /// Size of the region in bytes.
    pub fn len(&self) -> usize {
        self.inner.len
    }

    /// True for a zero-sized region.
    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// Panics unless `offset..offset+size` lies in the region and `offset` is aligned to
    /// `align`. Offsets come from constants or a validated [`crate::Layout`], never from
    /// unchecked guest data, so a failure here is a bug in this crate.
    fn check(&self, offset: usize, size: usize, align: usize) {
        let end = offset.checked_add(size);
        assert!(
            end.is_some_and(|e| e <= self.inner.len) && offset.is_multiple_of(align),
            "shared-memory access {offset:#x}+{size} (align {align}) outside region of {} bytes",
            self.inner.len
        );
    }

    fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        self.check(offset, 8, 8);
        // SAFETY: in bounds and 8-aligned (checked; the base is 8-aligned); the region
        // outlives `self` and is only accessed atomically at this offset.
        unsafe { AtomicU64::from_ptr(self.inner.ptr.add(offset).cast::<u64>()) }
    }

    fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        self.check(offset, 4, 4);
        // SAFETY: as in `atomic_u64`, for 4 bytes.
        unsafe { AtomicU32::from_ptr(self.inner.ptr.add(offset).cast::<u32>()) }
    }

    /// Acquire load of the little-endian u64 at `offset` (8-aligned).
    pub fn load_u64(&self, offset: usize) -> u64 {
        u64::from_le(self.atomic_u64(offset).load(Ordering::Acquire))
    }

    /// Release store of a little-endian u64 at `offset` (8-aligned).
    pub fn store_u64(&self, offset: usize, value: u64) {
        self.atomic_u64(offset)
            .store(value.to_le(), Ordering::Release);
    }

    /// Acquire load of the little-endian u32 at `offset` (4-aligned).
    pub fn load_u32(&self, offset: usize) -> u32 {
        u32::from_le(self.atomic_u32(offset).load(Ordering::Acquire))
    }

    /// Release store of a little-endian u32 at `offset` (4-aligned).
    pub fn store_u32(&self, offset: usize, value: u32) {
        self.atomic_u32(offset)
            .store(value.to_le(), Ordering::Release);
    }

    /// Volatile copy of `buf.len()` bytes starting at `offset` into `buf`.
    pub fn read_bytes(&self, offset: usize, buf: &mut [u8]) {
        self.check(offset, buf.len(), 1);
        // SAFETY: bounds checked above; word reads only at 8-aligned addresses.
        unsafe {
            let mut src = self.inner.ptr.add(offset).cast_const();
            let mut rest = &mut buf[..];
            while !rest.is_empty() && !(src as usize).is_multiple_of(8) {
                rest[0] = ptr::read_volatile(src);
                src = src.add(1);
                rest = &mut rest[1..];
            }
            let mut words = rest.chunks_exact_mut(8);
            for chunk in &mut words {
                let w = ptr::read_volatile(src.cast::<u64>());
                chunk.copy_from_slice(&w.to_ne_bytes());
                src = src.add(8);
            }
            for b in words.into_remainder() {
                *b = ptr::read_volatile(src);
                src = src.add(1);
            }
        }
    }

    /// Volatile copy of `data` into the region at `offset`.
    pub fn write_bytes(&self, offset: usize, data: &[u8]) {
        self.check(offset, data.len(), 1);
        // SAFETY: bounds checked above; word writes only at 8-aligned addresses.
        unsafe {
            let mut dst = self.inner.ptr.add(offset);
            let mut rest = data;
            while !rest.is_empty() && !(dst as usize).is_multiple_of(8) {
                ptr::write_volatile(dst, rest[0]);
                dst = dst.add(1);
                rest = &rest[1..];
            }
            let words = rest.chunks_exact(8);
            let tail = words.remainder();
            for chunk in words {
                let mut w = [0u8; 8];
                w.copy_from_slice(chunk);
                ptr::write_volatile(dst.cast::<u64>(), u64::from_ne_bytes(w));
                dst = dst.add(8);
            }
            for &b in tail {
                ptr::write_volatile(dst, b);
                dst = dst.add(1);
            }
        }
    }

    /// Plain copy out of the region, for bytes the peer published before an acquire load
    /// (a ready flag) and no longer writes: one memcpy instead of word-by-word volatile
    /// reads (a warm start's archive is megabytes).
    pub fn read_published(&self, offset: usize, buf: &mut [u8]) {
        self.check(offset, buf.len(), 1);
        // SAFETY: bounds checked above; the peer does not write these bytes any more.
        unsafe {
            ptr::copy_nonoverlapping(self.inner.ptr.add(offset), buf.as_mut_ptr(), buf.len())
        };
    }

    /// Plain copy into the region, for bytes the peer reads only after a later release
    /// store (a ready flag), or while it is stopped.
    pub fn write_unpublished(&self, offset: usize, data: &[u8]) {
        self.check(offset, data.len(), 1);
        // SAFETY: bounds checked above; the peer does not read these bytes yet.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), self.inner.ptr.add(offset), data.len()) };
    }

    /// Volatile fill of `len` bytes at `offset` with `value`.
    pub fn fill(&self, offset: usize, len: usize, value: u8) {
        self.check(offset, len, 1);
        for i in 0..len {
            // SAFETY: `offset + i < offset + len`, which is in bounds (checked above).
            unsafe { ptr::write_volatile(self.inner.ptr.add(offset + i), value) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_at_every_alignment() {
        let shm = SharedMem::new_owned(256);
        let data: Vec<u8> = (0..40u8).collect();
        for off in 0..16 {
            shm.fill(0, 256, 0);
            shm.write_bytes(off, &data);
            let mut back = vec![0u8; data.len()];
            shm.read_bytes(off, &mut back);
            assert_eq!(back, data, "offset {off}");
            let mut before = [0xffu8; 1];
            if off > 0 {
                shm.read_bytes(off - 1, &mut before);
                assert_eq!(before[0], 0, "byte before offset {off} untouched");
            }
        }
    }

    #[test]
    fn words_are_little_endian_in_memory() {
        let shm = SharedMem::new_owned(64);
        shm.store_u64(8, 0x0102_0304_0506_0708);
        shm.store_u32(16, 0xaabb_ccdd);
        let mut raw = [0u8; 12];
        shm.read_bytes(8, &mut raw);
        assert_eq!(raw, [8, 7, 6, 5, 4, 3, 2, 1, 0xdd, 0xcc, 0xbb, 0xaa]);
        assert_eq!(shm.load_u64(8), 0x0102_0304_0506_0708);
        assert_eq!(shm.load_u32(16), 0xaabb_ccdd);
    }

    #[test]
    fn clones_share_memory() {
        let a = SharedMem::new_owned(64);
        let b = a.clone();
        a.store_u64(0, 42);
        assert_eq!(b.load_u64(0), 42);
    }

    #[test]
    fn from_raw_rejects_misaligned_and_null() {
        let mut buf = [0u64; 4];
        let p = buf.as_mut_ptr().cast::<u8>();
        // SAFETY: `buf` outlives the handles, which are dropped at once.
        unsafe {
            assert!(SharedMem::from_raw(p, 32).is_ok());
            assert!(matches!(
                SharedMem::from_raw(p.add(1), 16),
                Err(WireError::Misaligned { .. })
            ));
            assert!(SharedMem::from_raw(std::ptr::null_mut(), 16).is_err());
        }
    }

    #[test]
    #[should_panic(expected = "outside region")]
    fn out_of_bounds_access_is_a_bug() {
        SharedMem::new_owned(64).load_u64(64);
    }
}
