//! Guest RAM: anonymous, lazily populated mappings registered as KVM memory slots, the
//! host's view of the SHM region, and reads through the guest's page tables (for failure
//! reports).

use std::sync::Arc;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::arch::x86_64::layout::RamLayout;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error(
        "allocating {bytes} bytes of guest memory (anonymous mmap): {source}; lower memory_mib"
    )]
    Alloc {
        bytes: u64,
        source: vm_memory::mmap::FromRangesError,
    },
    #[error("KVM_SET_USER_MEMORY_REGION slot {slot} at {gpa:#x} ({len:#x} bytes): {source}")]
    Register {
        slot: u32,
        gpa: u64,
        len: u64,
        source: kvm_ioctls::Error,
    },
    #[error("the SHM region {base:#x}+{len:#x} is not backed by one guest memory region")]
    ShmNotMapped { base: u64, len: u64 },
}

/// Guest RAM and its layout. Cloning shares the mapping.
#[derive(Clone)]
pub struct GuestRam {
    pub mem: Arc<GuestMemoryMmap>,
    pub layout: RamLayout,
}

impl GuestRam {
    /// Maps the slots of `layout` (anonymous, `MAP_NORESERVE`: pages are populated on touch).
    pub fn new(layout: RamLayout) -> Result<Self, MemoryError> {
        let ranges: Vec<(GuestAddress, usize)> = layout
            .slots()
            .into_iter()
            .map(|(gpa, len)| (GuestAddress(gpa), len as usize))
            .collect();
        let mem = GuestMemoryMmap::from_ranges(&ranges).map_err(|source| MemoryError::Alloc {
            bytes: layout.total(),
            source,
        })?;
        Ok(Self {
            mem: Arc::new(mem),
            layout,
        })
    }

    /// Registers every region with KVM as a memory slot.
    pub fn register(&self, vm: &VmFd) -> Result<(), MemoryError> {
        for (slot, region) in self.mem.iter().enumerate() {
            let gpa = region.start_addr().0;
            let len = region.len();
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .map_err(|_| MemoryError::ShmNotMapped { base: gpa, len })?;
            let r = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: gpa,
                memory_size: len,
                userspace_addr: host as u64,
            };
            // SAFETY: the region is a live mapping of `len` bytes owned by `self.mem`, which
            // outlives the VM (the VM keeps a clone of the Arc until its fd is closed).
            unsafe { vm.set_user_memory_region(r) }.map_err(|source| MemoryError::Register {
                slot: slot as u32,
                gpa,
                len,
                source,
            })?;
        }
        Ok(())
    }

    /// The host's handle on the SHM region.
    pub fn shm(&self) -> Result<ShmRegion, MemoryError> {
        let (base, len) = (self.layout.shm_base, self.layout.shm_size);
        let err = || MemoryError::ShmNotMapped { base, len };
        let region = self.mem.find_region(GuestAddress(base)).ok_or_else(err)?;
        let start = region.start_addr().0;
        if base + len > start + region.len() {
            return Err(err());
        }
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(base - start))
            .map_err(|_| err())?;
        Ok(ShmRegion {
            _mem: self.mem.clone(),
            host,
            len: len as usize,
            guest_base: base,
        })
    }

    /// Reads `len` bytes at guest-virtual `va` through the 4-level page tables rooted at
    /// `cr3` (4 KiB, 2 MiB and 1 GiB pages). `None` when a level is not present or the
    /// physical page is outside RAM.
    pub fn read_virt(&self, cr3: u64, va: u64, len: usize) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(len);
        let mut addr = va;
        while out.len() < len {
            let pa = translate(cr3, addr, |pa| {
                self.mem.read_obj::<u64>(GuestAddress(pa)).ok()
            })?;
            let page_left = 0x1000 - (addr & 0xfff) as usize;
            let n = page_left.min(len - out.len());
            let mut buf = vec![0u8; n];
            self.mem.read_slice(&mut buf, GuestAddress(pa)).ok()?;
            out.extend_from_slice(&buf);
            addr += n as u64;
        }
        Some(out)
    }
}

/// Walks x86-64 4-level paging: `read(pa)` returns the 8-byte entry at `pa`.
pub fn translate(cr3: u64, va: u64, read: impl Fn(u64) -> Option<u64>) -> Option<u64> {
    const ADDR: u64 = 0x000f_ffff_ffff_f000;
    let mut table = cr3 & ADDR;
    for level in (0..4).rev() {
        let idx = (va >> (12 + 9 * level)) & 0x1ff;
        let e = read(table + idx * 8)?;
        if e & 1 == 0 {
            return None;
        }
        let huge = e & 0x80 != 0;
        if level == 0 || (huge && (level == 1 || level == 2)) {
            let page_bits = 12 + 9 * level;
            let mask = (1u64 << page_bits) - 1;
            return Some((e & ADDR & !mask) | (va & mask));
        }
        table = e & ADDR;
    }
    None
}

/// The SHM region as the host sees it: a pointer into guest RAM, valid while this handle
/// lives (it keeps the mapping alive). The guest writes it concurrently: access it with
/// volatile or atomic operations only (`ktstr_wire::SharedMem::from_raw` does).
#[derive(Clone)]
pub struct ShmRegion {
    _mem: Arc<GuestMemoryMmap>,
    host: *mut u8,
    len: usize,
    guest_base: u64,
}

// SAFETY: the pointer targets a shared anonymous mapping owned by the Arc held alongside;
// the handle carries no thread-affine state, and all access goes through raw pointers.
unsafe impl Send for ShmRegion {}
// SAFETY: as above; concurrent access is the caller's protocol (atomics/volatile).
unsafe impl Sync for ShmRegion {}

impl ShmRegion {
    pub fn host_ptr(&self) -> *mut u8 {
        self.host
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn guest_base(&self) -> u64 {
        self.guest_base
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::regs::identity_page_tables;
    use std::collections::HashMap;

    #[test]
    fn walks_identity_2m_pages() {
        let pt: HashMap<u64, u64> = identity_page_tables().into_iter().collect();
        let read = |pa| pt.get(&pa).copied();
        assert_eq!(translate(0x9000, 0x12_3456, read), Some(0x12_3456));
        assert_eq!(translate(0x9000, 0xfee0_0010, read), Some(0xfee0_0010));
        assert_eq!(translate(0x9000, 0x1_0000_0000, read), None, "above 4 GiB");
    }

    #[test]
    fn walks_4k_and_1g_pages() {
        // PML4 at 0x1000 -> PDPT 0x2000; PDPT[1] is a 1 GiB page at 0x8000_0000;
        // PDPT[0] -> PD 0x3000 -> PT 0x4000 whose entry 5 maps 0x5000 -> 0x7_7000.
        let pt: HashMap<u64, u64> = [
            (0x1000, 0x2003),
            (0x2000, 0x3003),
            (0x2008, 0x8000_0083),
            (0x3000, 0x4003),
            (0x4000 + 5 * 8, 0x7_7003),
        ]
        .into_iter()
        .collect();
        let read = |pa| pt.get(&pa).copied();
        assert_eq!(translate(0x1000, 0x5123, read), Some(0x7_7123));
        assert_eq!(translate(0x1000, 0x4000_1234, read), Some(0x8000_1234));
        assert_eq!(translate(0x1000, 0x6000, read), None);
    }

    #[test]
    fn shm_handle_points_into_guest_ram() {
        let layout = RamLayout::new(64 << 20, 1 << 20).unwrap();
        let ram = GuestRam::new(layout).unwrap();
        let shm = ram.shm().unwrap();
        assert_eq!(shm.guest_base(), (64 << 20) - (1 << 20));
        assert_eq!(shm.len(), 1 << 20);
        ram.mem
            .write_obj(0xabcdu32, GuestAddress(shm.guest_base() + 8))
            .unwrap();
        // SAFETY: offset 8 is inside the 1 MiB region, which `shm` keeps mapped.
        let v = unsafe { std::ptr::read_volatile(shm.host_ptr().add(8) as *const u32) };
        assert_eq!(v, 0xabcd);
    }
}
