//! Boot CPU state for direct 64-bit entry: identity page tables (the first 4 GiB in 2 MiB
//! pages), long-mode control registers and segments, general registers, FPU, and the local
//! APIC's LINT0/LINT1 wiring.

use kvm_bindings::{kvm_fpu, kvm_lapic_state, kvm_regs, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::gdt::{self, BOOT_GDT, CODE_SELECTOR, DATA_SELECTOR, TSS_SELECTOR};
use super::layout::{GDT_ADDR, IDT_ADDR, PDPT_ADDR, PD_ADDR, PD_COUNT, PML4_ADDR};

pub const CR0_PE: u64 = 1;
pub const CR0_MP: u64 = 1 << 1;
pub const CR0_ET: u64 = 1 << 4;
pub const CR0_NE: u64 = 1 << 5;
pub const CR0_WP: u64 = 1 << 16;
pub const CR0_AM: u64 = 1 << 18;
pub const CR0_PG: u64 = 1 << 31;
pub const CR4_PAE: u64 = 1 << 5;
pub const EFER_LME: u64 = 1 << 8;
pub const EFER_LMA: u64 = 1 << 10;

const PTE_PRESENT_RW: u64 = 0x3;
const PDE_2M: u64 = 0x80;

#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    #[error("writing the boot {what} at {addr:#x} into guest memory: {source}")]
    Write {
        what: &'static str,
        addr: u64,
        source: vm_memory::GuestMemoryError,
    },
    #[error("{ioctl} on vCPU {vcpu}: {source}")]
    Ioctl {
        ioctl: &'static str,
        vcpu: u32,
        source: kvm_ioctls::Error,
    },
}

/// The page-table words to write: `(guest address, value)`. PML4[0] -> PDPT,
/// PDPT[0..4] -> 4 page directories, each mapping 1 GiB identity with 2 MiB pages.
pub fn identity_page_tables() -> Vec<(u64, u64)> {
    let mut v = vec![(PML4_ADDR, PDPT_ADDR | PTE_PRESENT_RW)];
    for d in 0..PD_COUNT {
        let pd = PD_ADDR + d * 0x1000;
        v.push((PDPT_ADDR + d * 8, pd | PTE_PRESENT_RW));
        for i in 0..512u64 {
            let phys = (d << 30) | (i << 21);
            v.push((pd + i * 8, phys | PTE_PRESENT_RW | PDE_2M));
        }
    }
    v
}

/// Writes the GDT, an empty IDT and the identity page tables into guest memory.
pub fn write_boot_tables(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    let w = |what, addr: u64, val: u64| {
        mem.write_obj(val, GuestAddress(addr))
            .map_err(|source| RegsError::Write { what, addr, source })
    };
    for (i, e) in BOOT_GDT.iter().enumerate() {
        w("GDT", GDT_ADDR + 8 * i as u64, *e)?;
    }
    w("IDT", IDT_ADDR, 0)?;
    for (addr, val) in identity_page_tables() {
        w("page tables", addr, val)?;
    }
    Ok(())
}

/// Long-mode special registers on top of the vCPU's current ones.
pub fn long_mode_sregs(mut s: kvm_sregs) -> kvm_sregs {
    let code = gdt::segment(BOOT_GDT[1], CODE_SELECTOR);
    let data = gdt::segment(BOOT_GDT[2], DATA_SELECTOR);
    let tss = gdt::segment(BOOT_GDT[3], TSS_SELECTOR);
    s.gdt.base = GDT_ADDR;
    s.gdt.limit = (std::mem::size_of_val(&BOOT_GDT) - 1) as u16;
    s.idt.base = IDT_ADDR;
    s.idt.limit = 7;
    s.cs = code;
    s.ds = data;
    s.es = data;
    s.fs = data;
    s.gs = data;
    s.ss = data;
    s.tr = tss;
    s.cr3 = PML4_ADDR;
    s.cr4 |= CR4_PAE;
    s.cr0 |= CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_AM | CR0_PG;
    s.efer |= EFER_LME | EFER_LMA;
    s
}

/// General registers at entry: `rip`, `rsp`, and the first two argument registers (Linux's
/// 64-bit boot protocol wants `rsi` = boot_params; the self-test guest takes its CPU index
/// in `rdi`).
pub fn entry_regs(rip: u64, rsp: u64, rdi: u64, rsi: u64) -> kvm_regs {
    kvm_regs {
        rip,
        rsp,
        rbp: rsp,
        rdi,
        rsi,
        rflags: 0x2,
        ..Default::default()
    }
}

/// x87 and SSE control words as after a reset.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn lapic_reg(l: &kvm_lapic_state, off: usize) -> u32 {
    let b = &l.regs[off..off + 4];
    u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
}

fn set_lapic_reg(l: &mut kvm_lapic_state, off: usize, v: u32) {
    for (i, byte) in v.to_le_bytes().iter().enumerate() {
        l.regs[off + i] = *byte as _;
    }
}

/// LINT0 = ExtINT (the 8259 PIC), LINT1 = NMI, as firmware leaves them.
pub fn wire_lints(mut l: kvm_lapic_state) -> kvm_lapic_state {
    let lvt0 = lapic_reg(&l, APIC_LVT0);
    set_lapic_reg(&mut l, APIC_LVT0, (lvt0 & !0x700) | (APIC_MODE_EXTINT << 8));
    let lvt1 = lapic_reg(&l, APIC_LVT1);
    set_lapic_reg(&mut l, APIC_LVT1, (lvt1 & !0x700) | (APIC_MODE_NMI << 8));
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tables_map_4_gib_identity() {
        let pt = identity_page_tables();
        assert_eq!(pt.len(), 1 + 4 + 4 * 512);
        assert_eq!(pt[0], (PML4_ADDR, PDPT_ADDR | 3));
        assert!(pt.contains(&(PDPT_ADDR + 3 * 8, (PD_ADDR + 0x3000) | 3)));
        // The last 2 MiB page maps 0xffe0_0000.
        assert_eq!(*pt.last().unwrap(), (PD_ADDR + 0x3ff8, 0xffe0_0000 | 0x83));
    }

    #[test]
    fn sregs_enter_long_mode() {
        let s = long_mode_sregs(kvm_sregs::default());
        assert_eq!(s.cr0, 0x8005_0033);
        assert_eq!(s.cr4, 0x20);
        assert_eq!(s.efer, 0x500);
        assert_eq!(s.cs.selector, 8);
        assert_eq!(s.cs.l, 1);
        assert_eq!(s.gdt.limit, 31);
    }

    #[test]
    fn lints_are_extint_and_nmi() {
        let l = wire_lints(kvm_lapic_state::default());
        assert_eq!(lapic_reg(&l, APIC_LVT0), 0x700);
        assert_eq!(lapic_reg(&l, APIC_LVT1), 0x400);
    }
}
