//! ACPI tables describing the declared topology: RSDP -> XSDT -> FADT (hardware-reduced,
//! with an empty DSDT), MADT (local APIC or x2APIC entries + the IOAPIC), SRAT (CPU and
//! memory affinity per NUMA node) and SLIT (10 local / 20 remote). Pure functions that
//! return the bytes to copy at [`layout::ACPI_START`](super::layout::ACPI_START).

use ktstr_topology::Topology;

use super::layout::{IOAPIC_ADDR, LAPIC_ADDR};

pub const OEM_ID: &[u8; 6] = b"KTSTR ";
pub const OEM_TABLE_ID: &[u8; 8] = b"KTSTRVMM";
pub const CREATOR_ID: &[u8; 4] = b"KTST";
/// Size of a system description table header.
pub const HEADER_LEN: usize = 36;
pub const RSDP_LEN: usize = 36;

/// MADT entry types.
pub const MADT_LOCAL_APIC: u8 = 0;
pub const MADT_IOAPIC: u8 = 1;
pub const MADT_LOCAL_X2APIC: u8 = 9;
/// SRAT entry types.
pub const SRAT_LOCAL_APIC: u8 = 0;
pub const SRAT_MEMORY: u8 = 1;
pub const SRAT_LOCAL_X2APIC: u8 = 2;
/// FADT flag: hardware-reduced ACPI (no PM timer, SCI or legacy fixed hardware).
pub const FADT_HW_REDUCED_ACPI: u32 = 1 << 20;
/// FADT IAPC_BOOT_ARCH: what legacy PC hardware the guest must not probe for. Bit 1
/// (an 8042) stays clear too: that alone makes Linux skip its i8042 driver (our i8042
/// port only takes the reset command). Without these, Linux probes the keyboard
/// controller and the CMOS clock through hundreds of port reads that each exit to the
/// VMM, up to their timeouts: about 9 s of a 12 s boot under nested virtualization.
pub const IAPC_BOOT_ARCH: u16 = IAPC_NO_VGA | IAPC_NO_CMOS_RTC;
/// IAPC_BOOT_ARCH bit 2: VGA is not present (do not probe its ports or memory).
pub const IAPC_NO_VGA: u16 = 1 << 2;
/// IAPC_BOOT_ARCH bit 5: no CMOS real-time clock (wall time comes from kvmclock).
pub const IAPC_NO_CMOS_RTC: u16 = 1 << 5;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcpiError {
    #[error("ACPI tables need {need} bytes but only {room} fit at {base:#x}; the topology is too large for the legacy BIOS area")]
    TooLarge { need: usize, room: usize, base: u64 },
}

/// The tables, laid out for a given guest-physical base.
#[derive(Debug, Clone)]
pub struct AcpiTables {
    /// Bytes to copy at `base`; the RSDP is at offset 0.
    pub bytes: Vec<u8>,
    pub base: u64,
    /// Guest-physical address of each table, by signature (RSDP first).
    pub tables: Vec<([u8; 4], u64)>,
    /// Whether MADT/SRAT used x2APIC entries (some APIC id is above 254).
    pub x2apic: bool,
}

impl AcpiTables {
    pub fn rsdp_addr(&self) -> u64 {
        self.base
    }

    /// The bytes of one table by signature (`b"APIC"` for the MADT).
    pub fn table(&self, sig: &[u8; 4]) -> Option<&[u8]> {
        let (_, addr) = self.tables.iter().find(|(s, _)| s == sig)?;
        let off = usize::try_from(addr - self.base).ok()?;
        let len = u32::from_le_bytes(self.bytes.get(off + 4..off + 8)?.try_into().ok()?) as usize;
        self.bytes.get(off..off + len)
    }
}

/// Byte sum complement: the value that makes `data` sum to zero.
pub fn checksum(data: &[u8]) -> u8 {
    data.iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// A system description table under construction: header first, body appended.
struct Sdt {
    b: Vec<u8>,
}

impl Sdt {
    fn new(sig: &[u8; 4], revision: u8) -> Self {
        let mut b = Vec::with_capacity(256);
        b.extend_from_slice(sig);
        b.extend_from_slice(&0u32.to_le_bytes()); // length, patched in finish()
        b.push(revision);
        b.push(0); // checksum
        b.extend_from_slice(OEM_ID);
        b.extend_from_slice(OEM_TABLE_ID);
        b.extend_from_slice(&1u32.to_le_bytes()); // OEM revision
        b.extend_from_slice(CREATOR_ID);
        b.extend_from_slice(&1u32.to_le_bytes()); // creator revision
        Self { b }
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.b.push(v);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.b.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.b.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.b.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn zeros(&mut self, n: usize) -> &mut Self {
        self.b.resize(self.b.len() + n, 0);
        self
    }
    fn finish(mut self) -> Vec<u8> {
        let len = self.b.len() as u32;
        self.b[4..8].copy_from_slice(&len.to_le_bytes());
        self.b[9] = checksum(&self.b);
        self.b
    }
}

/// MADT: local APIC (xAPIC ids) or local x2APIC entries, one per vCPU, then the IOAPIC.
pub fn madt(topo: &Topology, x2apic: bool) -> Vec<u8> {
    let mut t = Sdt::new(b"APIC", 5);
    t.u32(LAPIC_ADDR).u32(1); // PCAT_COMPAT: the in-kernel irqchip has 8259 PICs
    for cpu in 0..topo.vcpus() {
        let apic = topo.apic_id(cpu);
        if x2apic {
            t.u8(MADT_LOCAL_X2APIC)
                .u8(16)
                .u16(0)
                .u32(apic)
                .u32(1)
                .u32(cpu);
        } else {
            t.u8(MADT_LOCAL_APIC)
                .u8(8)
                .u8(cpu as u8)
                .u8(apic as u8)
                .u32(1);
        }
    }
    // IOAPIC id: one above the largest xAPIC id in use (it shares the 8-bit space).
    let ioapic_id = if x2apic {
        0
    } else {
        (topo.max_apic_id() + 1) as u8
    };
    t.u8(MADT_IOAPIC)
        .u8(12)
        .u8(ioapic_id)
        .u8(0)
        .u32(IOAPIC_ADDR)
        .u32(0);
    t.finish()
}

/// SRAT: every vCPU in its node's proximity domain, and each node's memory ranges
/// (`(node, gpa, len)`, see [`RamLayout::node_ranges`](super::layout::RamLayout::node_ranges)).
pub fn srat(topo: &Topology, x2apic: bool, node_ranges: &[(u32, u64, u64)]) -> Vec<u8> {
    let mut t = Sdt::new(b"SRAT", 3);
    t.u32(1).u64(0); // reserved (1 for backward compatibility), reserved
    for cpu in 0..topo.vcpus() {
        let apic = topo.apic_id(cpu);
        let node = topo.place(cpu).node;
        if x2apic {
            t.u8(SRAT_LOCAL_X2APIC)
                .u8(24)
                .u16(0)
                .u32(node)
                .u32(apic)
                .u32(1)
                .u32(0)
                .u32(0);
        } else {
            t.u8(SRAT_LOCAL_APIC)
                .u8(16)
                .u8(node as u8)
                .u8(apic as u8)
                .u32(1)
                .u8(0)
                .u8((node >> 8) as u8)
                .u8((node >> 16) as u8)
                .u8((node >> 24) as u8)
                .u32(0);
        }
    }
    for &(node, base, len) in node_ranges {
        t.u8(SRAT_MEMORY)
            .u8(40)
            .u32(node)
            .u16(0)
            .u32(base as u32)
            .u32((base >> 32) as u32)
            .u32(len as u32)
            .u32((len >> 32) as u32)
            .u32(0)
            .u32(1) // enabled
            .u64(0);
    }
    t.finish()
}

/// SLIT: the node distance matrix.
pub fn slit(topo: &Topology) -> Vec<u8> {
    let n = topo.numa_nodes();
    let mut t = Sdt::new(b"SLIT", 1);
    t.u64(u64::from(n));
    for i in 0..n {
        for j in 0..n {
            t.u8(topo.distance(i, j));
        }
    }
    t.finish()
}

/// An empty DSDT (no AML): nothing to describe on a hardware-reduced platform.
pub fn dsdt() -> Vec<u8> {
    Sdt::new(b"DSDT", 2).finish()
}

/// FADT revision 6 (276 bytes), hardware-reduced, pointing at the DSDT.
pub fn fadt(dsdt_addr: u64) -> Vec<u8> {
    let mut t = Sdt::new(b"FACP", 6);
    t.u32(0); // 36 FIRMWARE_CTRL
    t.u32(dsdt_addr as u32); // 40 DSDT
    t.zeros(109 - 44); // 44.. reserved, profile, SCI, SMI, PM blocks (all unused)
    t.u16(IAPC_BOOT_ARCH); // 109 IAPC_BOOT_ARCH
    t.u8(0); // 111 reserved
    t.u32(FADT_HW_REDUCED_ACPI); // 112 flags
    t.zeros(131 - 116); // 116 RESET_REG (12), 128 RESET_VALUE, 129 ARM_BOOT_ARCH (2)
    t.u8(5); // 131 FADT minor version
    t.u64(0); // 132 X_FIRMWARE_CTRL
    t.u64(dsdt_addr); // 140 X_DSDT
    t.zeros(268 - 148); // extended PM blocks, sleep registers
    t.u64(u64::from_le_bytes(*b"KTSTRVMM")); // 268 hypervisor vendor identity
    t.finish()
}

/// RSDP revision 2 pointing at the XSDT.
pub fn rsdp(xsdt_addr: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(RSDP_LEN);
    b.extend_from_slice(b"RSD PTR ");
    b.push(0); // checksum over the first 20 bytes
    b.extend_from_slice(OEM_ID);
    b.push(2); // revision
    b.extend_from_slice(&0u32.to_le_bytes()); // RSDT address (none)
    b.extend_from_slice(&(RSDP_LEN as u32).to_le_bytes());
    b.extend_from_slice(&xsdt_addr.to_le_bytes());
    b.push(0); // extended checksum
    b.extend_from_slice(&[0; 3]);
    b[8] = checksum(&b[..20]);
    b[32] = checksum(&b);
    b
}

fn xsdt(entries: &[u64]) -> Vec<u8> {
    let mut t = Sdt::new(b"XSDT", 1);
    for e in entries {
        t.u64(*e);
    }
    t.finish()
}

fn align8(v: usize) -> usize {
    (v + 7) & !7
}

/// Builds every table for `topo` at guest-physical `base`, within `room` bytes.
pub fn build(
    topo: &Topology,
    node_ranges: &[(u32, u64, u64)],
    base: u64,
    room: usize,
) -> Result<AcpiTables, AcpiError> {
    let x2apic = topo.max_apic_id() > 254;
    // Fixed order after the RSDP: DSDT, FADT, MADT, SRAT, SLIT, XSDT.
    let mut blobs: Vec<([u8; 4], Vec<u8>)> = Vec::new();
    let mut off = align8(RSDP_LEN);
    let mut place = |len: usize| {
        let at = off;
        off = align8(off + len);
        base + at as u64
    };
    let dsdt_b = dsdt();
    let dsdt_addr = place(dsdt_b.len());
    let fadt_b = fadt(dsdt_addr);
    let fadt_addr = place(fadt_b.len());
    let madt_b = madt(topo, x2apic);
    let madt_addr = place(madt_b.len());
    let srat_b = srat(topo, x2apic, node_ranges);
    let srat_addr = place(srat_b.len());
    let slit_b = slit(topo);
    let slit_addr = place(slit_b.len());
    let xsdt_b = xsdt(&[fadt_addr, madt_addr, srat_addr, slit_addr]);
    let xsdt_addr = place(xsdt_b.len());
    let total = off;
    if total > room {
        return Err(AcpiError::TooLarge {
            need: total,
            room,
            base,
        });
    }
    blobs.push((*b"DSDT", dsdt_b));
    blobs.push((*b"FACP", fadt_b));
    blobs.push((*b"APIC", madt_b));
    blobs.push((*b"SRAT", srat_b));
    blobs.push((*b"SLIT", slit_b));
    blobs.push((*b"XSDT", xsdt_b));
    let addrs = [
        dsdt_addr, fadt_addr, madt_addr, srat_addr, slit_addr, xsdt_addr,
    ];

    let mut bytes = vec![0u8; total];
    bytes[..RSDP_LEN].copy_from_slice(&rsdp(xsdt_addr));
    let mut tables = vec![(*b"RSD ", base)];
    for ((sig, blob), addr) in blobs.into_iter().zip(addrs) {
        let at = (addr - base) as usize;
        bytes[at..at + blob.len()].copy_from_slice(&blob);
        tables.push((sig, addr));
    }
    Ok(AcpiTables {
        bytes,
        base,
        tables,
        x2apic,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::layout::RamLayout;

    const BASE: u64 = 0xe0000;

    fn build_for(label: &str, mem: u64) -> (Topology, AcpiTables, Vec<(u32, u64, u64)>) {
        let t: Topology = label.parse().unwrap();
        let l = RamLayout::new(mem, 1 << 20).unwrap();
        let ranges = l.node_ranges(t.numa_nodes());
        let a = build(&t, &ranges, BASE, 0x20000).unwrap();
        (t, a, ranges)
    }

    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }
    fn sums_to_zero(b: &[u8]) -> bool {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x)) == 0
    }

    /// Every table: checksum, declared length, XSDT lists FADT, MADT, SRAT, SLIT, FADT
    /// points at the DSDT.
    fn check_common(a: &AcpiTables) {
        let r = &a.bytes[..RSDP_LEN];
        assert_eq!(&r[..8], b"RSD PTR ");
        assert!(sums_to_zero(&r[..20]), "RSDP v1 checksum");
        assert!(sums_to_zero(r), "RSDP extended checksum");
        assert_eq!(r[15], 2);
        let xsdt_addr = u64_at(r, 24);
        let xsdt = a.table(b"XSDT").unwrap();
        assert_eq!(
            xsdt_addr,
            a.tables.iter().find(|t| &t.0 == b"XSDT").unwrap().1
        );
        assert_eq!(xsdt.len(), HEADER_LEN + 4 * 8);
        for sig in [b"XSDT", b"FACP", b"DSDT", b"APIC", b"SRAT", b"SLIT"] {
            let t = a.table(sig).unwrap();
            assert!(sums_to_zero(t), "{} checksum", String::from_utf8_lossy(sig));
            assert_eq!(&t[10..16], OEM_ID);
        }
        let listed: Vec<[u8; 4]> = (0..4)
            .map(|i| {
                let addr = u64_at(xsdt, HEADER_LEN + 8 * i);
                let off = (addr - BASE) as usize;
                a.bytes[off..off + 4].try_into().unwrap()
            })
            .collect();
        assert_eq!(listed, vec![*b"FACP", *b"APIC", *b"SRAT", *b"SLIT"]);
        let fadt = a.table(b"FACP").unwrap();
        assert_eq!(fadt.len(), 276);
        assert_eq!(u32_at(fadt, 112), FADT_HW_REDUCED_ACPI);
        // No 8042 (bit 1), no VGA, no CMOS clock: the devices the VMM does not have.
        let boot_arch = u16::from_le_bytes([fadt[109], fadt[110]]);
        assert_eq!(boot_arch, 0b10_0100, "IAPC_BOOT_ARCH {boot_arch:#06x}");
        let dsdt_addr = a.tables.iter().find(|t| &t.0 == b"DSDT").unwrap().1;
        assert_eq!(u64_at(fadt, 140), dsdt_addr);
        assert_eq!(u64::from(u32_at(fadt, 40)), dsdt_addr);
        assert_eq!(a.table(b"DSDT").unwrap().len(), HEADER_LEN);
    }

    /// (uid, apic id, flags) of the MADT's CPU entries and the IOAPIC id.
    fn madt_cpus(madt: &[u8]) -> (Vec<(u32, u32, u32)>, Vec<u8>) {
        let mut cpus = Vec::new();
        let mut ioapics = Vec::new();
        let mut o = HEADER_LEN + 8;
        while o < madt.len() {
            let (ty, len) = (madt[o], madt[o + 1] as usize);
            match ty {
                MADT_LOCAL_APIC => {
                    cpus.push((madt[o + 2] as u32, madt[o + 3] as u32, u32_at(madt, o + 4)))
                }
                MADT_LOCAL_X2APIC => cpus.push((
                    u32_at(madt, o + 12),
                    u32_at(madt, o + 4),
                    u32_at(madt, o + 8),
                )),
                MADT_IOAPIC => ioapics.push(madt[o + 2]),
                other => panic!("unexpected MADT entry {other}"),
            }
            o += len;
        }
        (cpus, ioapics)
    }

    /// (apic, domain) of the SRAT's CPU entries and (domain, base, len) of memory entries.
    #[allow(clippy::type_complexity)]
    fn srat_entries(srat: &[u8]) -> (Vec<(u32, u32)>, Vec<(u32, u64, u64)>) {
        let mut cpus = Vec::new();
        let mut mem = Vec::new();
        let mut o = HEADER_LEN + 12;
        while o < srat.len() {
            let (ty, len) = (srat[o], srat[o + 1] as usize);
            match ty {
                SRAT_LOCAL_APIC => {
                    let dom = srat[o + 2] as u32
                        | (srat[o + 9] as u32) << 8
                        | (srat[o + 10] as u32) << 16
                        | (srat[o + 11] as u32) << 24;
                    assert_eq!(u32_at(srat, o + 4), 1, "enabled");
                    cpus.push((srat[o + 3] as u32, dom));
                }
                SRAT_LOCAL_X2APIC => cpus.push((u32_at(srat, o + 8), u32_at(srat, o + 4))),
                SRAT_MEMORY => mem.push((
                    u32_at(srat, o + 2),
                    u64_at(srat, o + 8),
                    u64_at(srat, o + 16),
                )),
                other => panic!("unexpected SRAT entry {other}"),
            }
            o += len;
        }
        (cpus, mem)
    }

    #[test]
    fn one_cpu() {
        let (_, a, _) = build_for("1n1l1c1t", 256 << 20);
        check_common(&a);
        let madt = a.table(b"APIC").unwrap();
        // header + lapic addr/flags + 1 lapic (8) + ioapic (12)
        assert_eq!(madt.len(), 36 + 8 + 8 + 12);
        assert_eq!(u32_at(madt, 36), 0xfee0_0000);
        assert_eq!(madt_cpus(madt), (vec![(0, 0, 1)], vec![1]));
        let srat = a.table(b"SRAT").unwrap();
        assert_eq!(srat.len(), 36 + 12 + 16 + 40);
        assert_eq!(srat_entries(srat), (vec![(0, 0)], vec![(0, 0, 256 << 20)]));
        let slit = a.table(b"SLIT").unwrap();
        assert_eq!(slit.len(), 36 + 8 + 1);
        assert_eq!(&slit[36..], &[1, 0, 0, 0, 0, 0, 0, 0, 10]);
        assert!(!a.x2apic);
    }

    #[test]
    fn one_node_two_llcs_smt() {
        let (_, a, _) = build_for("1n2l4c2t", 1 << 30);
        check_common(&a);
        let madt = a.table(b"APIC").unwrap();
        assert_eq!(madt.len(), 36 + 8 + 16 * 8 + 12);
        let (cpus, io) = madt_cpus(madt);
        // 4 cores fill 2 bits exactly: ids 0..15 in CPU order.
        assert_eq!(cpus, (0..16).map(|i| (i, i, 1)).collect::<Vec<_>>());
        assert_eq!(io, vec![16]);
        let (scpus, mem) = srat_entries(a.table(b"SRAT").unwrap());
        assert_eq!(scpus, (0..16).map(|i| (i, 0)).collect::<Vec<_>>());
        assert_eq!(mem, vec![(0, 0, 1 << 30)]);
    }

    #[test]
    fn two_nodes() {
        let (_, a, _) = build_for("2n4l2c2t", 1 << 30);
        check_common(&a);
        let (cpus, _) = madt_cpus(a.table(b"APIC").unwrap());
        assert_eq!(cpus.len(), 16);
        let (scpus, mem) = srat_entries(a.table(b"SRAT").unwrap());
        // CPUs 0-7 (apic 0-7) in domain 0, 8-15 in domain 1.
        let want: Vec<(u32, u32)> = (0..16).map(|i| (i, i / 8)).collect();
        assert_eq!(scpus, want);
        assert_eq!(mem, vec![(0, 0, 512 << 20), (1, 512 << 20, 512 << 20)]);
        let slit = a.table(b"SLIT").unwrap();
        assert_eq!(slit.len(), 36 + 8 + 4);
        assert_eq!(u64_at(slit, 36), 2);
        assert_eq!(&slit[44..], &[10, 20, 20, 10]);
    }

    #[test]
    fn seven_llcs_two_cores() {
        let (_, a, _) = build_for("1n7l2c1t", 1 << 30);
        check_common(&a);
        let (cpus, io) = madt_cpus(a.table(b"APIC").unwrap());
        assert_eq!(cpus, (0..14).map(|i| (i, i, 1)).collect::<Vec<_>>());
        assert_eq!(io, vec![14]);
        assert_eq!(a.table(b"SRAT").unwrap().len(), 36 + 12 + 14 * 16 + 40);
    }

    #[test]
    fn sparse_ids_and_x2apic_entries() {
        // 3 cores per LLC leave a hole in the ids: 0,1,2,4,5,6.
        let (_, a, _) = build_for("1n2l3c1t", 1 << 30);
        let (cpus, _) = madt_cpus(a.table(b"APIC").unwrap());
        let ids: Vec<u32> = cpus.iter().map(|c| c.1).collect();
        assert_eq!(ids, vec![0, 1, 2, 4, 5, 6]);
        // 4 LLCs x 64 cores: max id 255 -> x2APIC entries everywhere.
        let (_, a, _) = build_for("2n4l64c1t", 1 << 30);
        check_common(&a);
        assert!(a.x2apic);
        let madt = a.table(b"APIC").unwrap();
        assert_eq!(madt.len(), 36 + 8 + 16 * 256 + 12);
        let (cpus, _) = madt_cpus(madt);
        assert_eq!(cpus[255], (255, 255, 1));
        let (scpus, _) = srat_entries(a.table(b"SRAT").unwrap());
        assert_eq!(scpus[255], (255, 1));
        assert_eq!(a.table(b"SRAT").unwrap().len(), 36 + 12 + 24 * 256 + 2 * 40);
    }

    #[test]
    fn too_large_is_an_error() {
        let t: Topology = "1n1l16c1t".parse().unwrap();
        assert!(matches!(
            build(&t, &[(0, 0, 1 << 30)], BASE, 128),
            Err(AcpiError::TooLarge { .. })
        ));
    }
}
