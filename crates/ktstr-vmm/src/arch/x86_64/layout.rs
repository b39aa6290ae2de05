//! Every fixed guest-physical address the VMM uses, in one place, plus the RAM map
//! (low RAM below the 32-bit PCI hole, high RAM above 4 GiB, the SHM region at the top of
//! low RAM).

/// Start of the 64-bit GDT (null, code, data, TSS).
pub const GDT_ADDR: u64 = 0x500;
/// Start of the (empty) IDT.
pub const IDT_ADDR: u64 = 0x520;
/// Linux's `boot_params` ("zero page").
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Initial stack pointer of the boot CPU for a Linux boot.
pub const BOOT_STACK_ADDR: u64 = 0x8ff0;
/// Identity page tables: one PML4, one PDPT, [`PD_COUNT`] page directories of 2 MiB pages.
pub const PML4_ADDR: u64 = 0x9000;
pub const PDPT_ADDR: u64 = 0xa000;
pub const PD_ADDR: u64 = 0xb000;
/// Page directories (each maps 1 GiB with 2 MiB pages): the first 4 GiB are identity-mapped.
pub const PD_COUNT: u64 = 4;
/// Kernel command line.
pub const CMDLINE_ADDR: u64 = 0x20000;
/// Largest command line we write (including the NUL).
pub const CMDLINE_MAX: usize = 4096;
/// The extended BIOS data area starts here; RAM below it is usable.
pub const EBDA_START: u64 = 0x9fc00;
/// ACPI tables live in the legacy BIOS area, where an OS scans for the RSDP.
pub const ACPI_START: u64 = 0xe0000;
pub const ACPI_END: u64 = 0x100000;
/// First byte above the legacy 1 MiB.
pub const HIMEM_START: u64 = 0x100000;
/// Where a bzImage's protected-mode kernel is loaded.
pub const BZIMAGE_LOAD_ADDR: u64 = 0x100000;
/// Start of the 32-bit PCI/MMIO hole; low RAM ends here at the latest.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// End of the hole; high RAM starts here.
pub const HIGH_RAM_START: u64 = 0x1_0000_0000;
/// Where KVM puts its real-mode TSS and identity page (three pages below the IOAPIC area).
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;
pub const KVM_IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
pub const LAPIC_ADDR: u32 = 0xfee0_0000;

/// Smallest guest we build: enough for page tables, ACPI, a kernel and an SHM region.
pub const MIN_MEMORY: u64 = 16 << 20;

const MIB: u64 = 1 << 20;

/// Guest RAM layout: the memory slots and the SHM region carved from the top of low RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamLayout {
    /// `[0, low_end)` is RAM (the SHM region included).
    pub low_end: u64,
    /// Bytes of RAM above 4 GiB, from [`HIGH_RAM_START`].
    pub high_size: u64,
    /// SHM region: guest-physical base and size, inside low RAM and kept out of e820.
    pub shm_base: u64,
    pub shm_size: u64,
}

/// Why a memory size / SHM size pair cannot be laid out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("guest memory of {0} bytes is below the minimum of {MIN_MEMORY} bytes (16 MiB)")]
    TooSmall(u64),
    #[error("guest memory of {0} bytes is not a multiple of 1 MiB")]
    Unaligned(u64),
    #[error("SHM size {0:#x} must be a non-zero multiple of 4 KiB")]
    ShmUnaligned(u64),
    #[error("SHM region of {shm:#x} bytes does not fit below {low_end:#x} while leaving 32 MiB of low RAM: lower shm_size or raise memory")]
    ShmTooBig { shm: u64, low_end: u64 },
}

impl RamLayout {
    /// Lays out `memory` bytes of RAM with an SHM region of `shm_size` at the top of low RAM.
    pub fn new(memory: u64, shm_size: u64) -> Result<Self, LayoutError> {
        if memory < MIN_MEMORY {
            return Err(LayoutError::TooSmall(memory));
        }
        if !memory.is_multiple_of(MIB) {
            return Err(LayoutError::Unaligned(memory));
        }
        if shm_size == 0 || !shm_size.is_multiple_of(4096) {
            return Err(LayoutError::ShmUnaligned(shm_size));
        }
        let low_end = memory.min(MMIO_HOLE_START);
        let high_size = memory - low_end;
        if shm_size.saturating_add(32 * MIB) > low_end {
            return Err(LayoutError::ShmTooBig {
                shm: shm_size,
                low_end,
            });
        }
        Ok(Self {
            low_end,
            high_size,
            shm_base: low_end - shm_size,
            shm_size,
        })
    }

    /// Total RAM bytes (SHM included).
    pub fn total(&self) -> u64 {
        self.low_end + self.high_size
    }

    /// The KVM memory slots: `(guest_phys, size)`.
    pub fn slots(&self) -> Vec<(u64, u64)> {
        let mut v = vec![(0, self.low_end)];
        if self.high_size > 0 {
            v.push((HIGH_RAM_START, self.high_size));
        }
        v
    }

    /// Translates a RAM offset (0 .. total) to a guest-physical address.
    pub fn offset_to_gpa(&self, off: u64) -> u64 {
        if off < self.low_end {
            off
        } else {
            HIGH_RAM_START + (off - self.low_end)
        }
    }

    /// The guest's e820 map: usable RAM, the legacy area and the SHM region reserved.
    pub fn e820(&self) -> Vec<E820Entry> {
        let mut v = vec![
            E820Entry {
                addr: 0,
                size: EBDA_START,
                kind: E820Kind::Ram,
            },
            E820Entry {
                addr: EBDA_START,
                size: HIMEM_START - EBDA_START,
                kind: E820Kind::Reserved,
            },
            E820Entry {
                addr: HIMEM_START,
                size: self.shm_base - HIMEM_START,
                kind: E820Kind::Ram,
            },
            E820Entry {
                addr: self.shm_base,
                size: self.shm_size,
                kind: E820Kind::Reserved,
            },
        ];
        if self.high_size > 0 {
            v.push(E820Entry {
                addr: HIGH_RAM_START,
                size: self.high_size,
                kind: E820Kind::Ram,
            });
        }
        v
    }

    /// Guest-physical memory ranges of each NUMA node: RAM is split evenly (2 MiB granules,
    /// the last node takes the rest); a node's share may straddle the PCI hole and then
    /// has two ranges. Returned as `(node, gpa, len)`.
    pub fn node_ranges(&self, nodes: u32) -> Vec<(u32, u64, u64)> {
        let total = self.total();
        let nodes = u64::from(nodes.max(1));
        let per = (total / nodes) & !(2 * MIB - 1);
        let mut out = Vec::new();
        for n in 0..nodes {
            let start = n * per;
            let end = if n + 1 == nodes { total } else { start + per };
            // Split [start, end) at the low/high boundary.
            if start < self.low_end {
                let e = end.min(self.low_end);
                out.push((n as u32, start, e - start));
            }
            if end > self.low_end {
                let s = start.max(self.low_end);
                out.push((n as u32, self.offset_to_gpa(s), end - s));
            }
        }
        out
    }
}

/// One e820 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: E820Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum E820Kind {
    Ram = 1,
    Reserved = 2,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_has_shm_at_top_and_reserved_in_e820() {
        let l = RamLayout::new(1 << 30, 8 << 20).unwrap();
        assert_eq!(l.low_end, 1 << 30);
        assert_eq!(l.high_size, 0);
        assert_eq!(l.shm_base, 0x3f80_0000);
        let e = l.e820();
        assert_eq!(e[2].addr, HIMEM_START);
        assert_eq!(e[2].addr + e[2].size, 0x3f80_0000);
        assert_eq!(e[3].kind, E820Kind::Reserved);
        assert_eq!(e[3].addr + e[3].size, 1 << 30);
        assert_eq!(l.slots(), vec![(0, 1 << 30)]);
    }

    #[test]
    fn big_guest_splits_around_the_pci_hole() {
        let l = RamLayout::new(4 << 30, 8 << 20).unwrap();
        assert_eq!(l.low_end, MMIO_HOLE_START);
        assert_eq!(l.high_size, 1 << 30);
        assert_eq!(l.shm_base, MMIO_HOLE_START - (8 << 20));
        assert_eq!(
            l.slots(),
            vec![(0, MMIO_HOLE_START), (HIGH_RAM_START, 1 << 30)]
        );
        // Two nodes of 2 GiB each: node 1 straddles the hole.
        let r = l.node_ranges(2);
        assert_eq!(
            r,
            vec![
                (0, 0, 2 << 30),
                (1, 2 << 30, 1 << 30),
                (1, HIGH_RAM_START, 1 << 30)
            ]
        );
    }

    #[test]
    fn rejects_bad_sizes() {
        assert!(matches!(
            RamLayout::new(8 << 20, 4096),
            Err(LayoutError::TooSmall(_))
        ));
        assert!(matches!(
            RamLayout::new(64 << 20, 100),
            Err(LayoutError::ShmUnaligned(100))
        ));
        assert!(matches!(
            RamLayout::new(64 << 20, 48 << 20),
            Err(LayoutError::ShmTooBig { .. })
        ));
    }
}
