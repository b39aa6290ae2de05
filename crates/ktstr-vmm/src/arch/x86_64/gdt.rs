//! The boot GDT (null, 64-bit code, data, TSS) and the KVM segment descriptors that match
//! it, for entering a guest directly in long mode.

use kvm_bindings::kvm_segment;

/// GDT entries, Firecracker-style flag words: 0xa09b = present, ring 0, code, 64-bit (L);
/// 0xc093 = present, ring 0, data, 32-bit default size; 0x808b = present busy 64-bit TSS.
pub const BOOT_GDT: [u64; 4] = [
    gdt_entry(0, 0, 0),
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];
pub const CODE_SELECTOR: u16 = 0x08;
pub const DATA_SELECTOR: u16 = 0x10;
pub const TSS_SELECTOR: u16 = 0x18;

/// Packs one 8-byte descriptor from a 16-bit flag word (access byte in bits 0-7, flags
/// nibble in bits 12-15), a base and a 20-bit limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The KVM view of descriptor `entry` loaded through `selector`.
pub fn segment(entry: u64, selector: u16) -> kvm_segment {
    let base = ((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
    let g = ((entry >> 55) & 1) as u8;
    let limit = if g == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    kvm_segment {
        base,
        limit,
        selector,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from((entry >> 47) & 1 == 0),
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_segment_is_64_bit_ring0() {
        assert_eq!(BOOT_GDT[1], 0x00af_9b00_0000_ffff);
        assert_eq!(BOOT_GDT[2], 0x00cf_9300_0000_ffff);
        let cs = segment(BOOT_GDT[1], CODE_SELECTOR);
        assert_eq!(
            (cs.l, cs.db, cs.dpl, cs.present, cs.s, cs.type_),
            (1, 0, 0, 1, 1, 0xb)
        );
        assert_eq!(cs.limit, 0xffff_ffff);
        let ds = segment(BOOT_GDT[2], DATA_SELECTOR);
        assert_eq!((ds.l, ds.db, ds.type_, ds.unusable), (0, 1, 3, 0));
        let tss = segment(BOOT_GDT[3], TSS_SELECTOR);
        assert_eq!((tss.s, tss.type_), (0, 0xb));
        assert_eq!(segment(BOOT_GDT[0], 0).unusable, 1);
    }
}
