//! Kernel addresses as `function+0xoffset/0xsize`, from the kernel's `System.map` (for
//! faults a console cannot report, such as a triple fault's RIP). Guests boot with
//! `nokaslr`, so the map's addresses are the running kernel's. Kernels built from source
//! have a real map; Debian's packages ship a one-line placeholder, which names nothing.

use std::path::Path;

/// `addr` as `symbol+0xoff/0xsize`, if a text symbol of the map covers it.
pub fn symbolize(system_map: &Path, addr: u64) -> Option<String> {
    let text = std::fs::read_to_string(system_map).ok()?;
    symbolize_in(&text, addr)
}

fn symbolize_in(map: &str, addr: u64) -> Option<String> {
    // Text symbols in address order (System.map is sorted; sorted again to be sure).
    let mut syms: Vec<(u64, &str)> = map
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let a = u64::from_str_radix(w.next()?, 16).ok()?;
            let kind = w.next()?;
            let name = w.next()?;
            matches!(kind, "T" | "t" | "W" | "w").then_some((a, name))
        })
        .collect();
    syms.sort_unstable_by_key(|s| s.0);
    let i = syms.partition_point(|s| s.0 <= addr).checked_sub(1)?;
    let (start, name) = syms[i];
    // The next symbol bounds this one; an address past the last one is not placed.
    let end = syms[i + 1..].iter().map(|s| s.0).find(|&a| a > start)?;
    Some(format!("{name}+{:#x}/{:#x}", addr - start, end - start))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = "\
ffffffff81000000 T _stext
ffffffff81000000 T startup_64
ffffffff81001000 t early_idt_handler_common
ffffffff81001100 D some_data
ffffffff81002000 T __schedule
ffffffff81002400 T schedule
ffffffff82000000 D _edata
";

    #[test]
    fn an_address_is_named_by_the_text_symbol_below_it() {
        assert_eq!(
            symbolize_in(MAP, 0xffff_ffff_8100_2123).as_deref(),
            Some("__schedule+0x123/0x400")
        );
        // Data symbols neither name nor bound text.
        assert_eq!(
            symbolize_in(MAP, 0xffff_ffff_8100_1180).as_deref(),
            Some("early_idt_handler_common+0x180/0x1000")
        );
        assert_eq!(symbolize_in(MAP, 0xffff_ffff_8000_0000), None);
        // Past the last text symbol there is no bound: not placed.
        assert_eq!(symbolize_in(MAP, 0xffff_ffff_8100_2500), None);
        assert_eq!(symbolize_in("garbage\n\n", 0x1000), None);
        // Debian's placeholder map.
        let placeholder =
            "ffffffffffffffff B The real System.map is in the linux-image-7.2-dbg package\n";
        assert_eq!(symbolize_in(placeholder, 0xffff_ffff_8100_2123), None);
    }
}
