//! Guest RAM: anonymous, lazily populated mappings registered as KVM memory slots, the
//! host's view of the SHM region, and reads through the guest's page tables (for failure
//! reports).

use std::ops::Deref;
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
    Alloc { bytes: u64, source: std::io::Error },
    #[error("guest memory region at {gpa:#x} ({len:#x} bytes): {detail}")]
    Region { gpa: u64, len: u64, detail: String },
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

/// The size of a transparent huge page (a PMD) on x86-64.
const HUGE_PAGE: usize = 2 << 20;

/// One anonymous private mapping of a RAM slot, starting on a 2 MiB boundary and marked
/// `MADV_HUGEPAGE`. KVM maps guest memory with 2 MiB EPT/NPT entries only where the
/// host page is huge and host and guest addresses agree modulo 2 MiB; without that every
/// 4 KiB guest page costs its own fault and nested-paging entry (qemu and Firecracker
/// align and advise the same way).
struct AnonMapping {
    addr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain process memory, owned by this handle until drop; nothing
// about it is tied to the thread that created it.
unsafe impl Send for AnonMapping {}
// SAFETY: as above; the handle itself is never written after creation.
unsafe impl Sync for AnonMapping {}

const RAM_PROT: i32 = libc::PROT_READ | libc::PROT_WRITE;
const RAM_FLAGS: i32 = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;

impl AnonMapping {
    fn new(len: usize) -> std::io::Result<Self> {
        // Map one huge page more than needed, then cut the unaligned head and the tail.
        let total = len + HUGE_PAGE;
        // SAFETY: a fresh anonymous mapping at an address the kernel picks.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), total, RAM_PROT, RAM_FLAGS, -1, 0) };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let start = p as usize;
        let aligned = (start + HUGE_PAGE - 1) & !(HUGE_PAGE - 1);
        let head = aligned - start;
        let tail = total - head - len;
        // SAFETY: both ranges lie inside the mapping just made and are not used after.
        unsafe {
            if head > 0 {
                libc::munmap(p, head);
            }
            if tail > 0 {
                libc::munmap((aligned + len) as *mut libc::c_void, tail);
            }
            // Advice only: a kernel without THP (or with it off) says EINVAL, and the
            // guest then runs on 4 KiB pages as before.
            libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
        Ok(Self {
            addr: aligned as *mut u8,
            len,
        })
    }
}

impl Drop for AnonMapping {
    fn drop(&mut self) {
        // SAFETY: the range is this handle's own mapping; the regions built on it borrow
        // it without owning it and are dropped first (`RamMapping`'s field order).
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
    }
}

/// Guest memory as vm-memory sees it, over mappings this module owns (vm-memory's own
/// mmap cannot place them on a 2 MiB boundary). Derefs to the `GuestMemoryMmap`.
pub struct RamMapping {
    // Declared first: dropped before the mappings it points into.
    mem: GuestMemoryMmap,
    _backing: Vec<AnonMapping>,
}

impl Deref for RamMapping {
    type Target = GuestMemoryMmap;
    fn deref(&self) -> &GuestMemoryMmap {
        &self.mem
    }
}

/// Guest RAM and its layout. Cloning shares the mapping.
#[derive(Clone)]
pub struct GuestRam {
    pub mem: Arc<RamMapping>,
    pub layout: RamLayout,
}

impl GuestRam {
    /// Maps the slots of `layout` (anonymous, `MAP_NORESERVE`: pages are populated on
    /// touch; 2 MiB-aligned and advised for huge pages).
    pub fn new(layout: RamLayout) -> Result<Self, MemoryError> {
        let mut backing = Vec::new();
        let mut regions = Vec::new();
        for (gpa, len) in layout.slots() {
            let map = AnonMapping::new(len as usize).map_err(|source| MemoryError::Alloc {
                bytes: layout.total(),
                source,
            })?;
            let region_err = |detail: String| MemoryError::Region { gpa, len, detail };
            // SAFETY: `map` is a live mapping of exactly `len` bytes with these protections
            // and flags, kept alive by `backing` for as long as the region exists.
            let region =
                unsafe { vm_memory::MmapRegion::build_raw(map.addr, map.len, RAM_PROT, RAM_FLAGS) }
                    .map_err(|e| region_err(e.to_string()))?;
            let region = vm_memory::GuestRegionMmap::new(region, GuestAddress(gpa))
                .ok_or_else(|| region_err("guest address overflows".into()))?;
            regions.push(region);
            backing.push(map);
        }
        let mem = GuestMemoryMmap::from_regions(regions).map_err(|e| MemoryError::Region {
            gpa: 0,
            len: layout.total(),
            detail: e.to_string(),
        })?;
        Ok(Self {
            mem: Arc::new(RamMapping {
                mem,
                _backing: backing,
            }),
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
    _mem: Arc<RamMapping>,
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

    /// The smaps block of the mapping that starts at `addr`.
    fn smaps_of(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let head = format!("{addr:x}-");
        let mut block = String::new();
        let mut inside = false;
        for line in smaps.lines() {
            let is_header = line.split_whitespace().next().is_some_and(|w| {
                w.contains('-') && w.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
            });
            if is_header {
                inside = line.starts_with(&head);
            }
            if inside {
                block.push_str(line);
                block.push('\n');
            }
        }
        block
    }

    #[test]
    fn ram_slots_start_on_2m_boundaries_and_are_advised_huge() {
        // 3.5 GiB + 1 GiB: a low slot that ends in the PCI hole and a high slot.
        let layout = RamLayout::new(4608 << 20, 1 << 20).unwrap();
        let ram = GuestRam::new(layout).unwrap();
        assert_eq!(ram.mem.num_regions(), 2);
        // A kernel built without THP refuses the advice; the mapping still works.
        let thp_built = std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists();
        for region in ram.mem.iter() {
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .unwrap() as usize;
            assert_eq!(host % HUGE_PAGE, 0, "host address {host:#x}");
            assert_eq!(region.start_addr().0 % HUGE_PAGE as u64, 0);
            let block = smaps_of(host);
            assert!(!block.is_empty(), "no mapping at {host:#x} in smaps");
            if thp_built {
                let flags = block.lines().find_map(|l| l.strip_prefix("VmFlags:"));
                let advised = flags.is_some_and(|f| f.split_whitespace().any(|w| w == "hg"));
                assert!(advised, "not advised MADV_HUGEPAGE:\n{block}");
            }
        }
        // Touching memory works across the whole slot, last byte included.
        let last = ram.layout.offset_to_gpa(ram.layout.total() - 1);
        ram.mem.write_obj(0x5au8, GuestAddress(last)).unwrap();
        assert_eq!(ram.mem.read_obj::<u8>(GuestAddress(last)).unwrap(), 0x5a);
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
