//! The kernel command line options the runtime reads: `ktstr.shm=<base>,<size>` (the
//! ring region) and `ktstr.inbox=<base>,<size>` (a warm start's inbox).

use anyhow::{bail, Context, Result};

/// Where the host put the shared-memory region (guest-physical).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmLocation {
    pub base: u64,
    pub size: u64,
}

pub const SHM_OPTION: &str = "ktstr.shm";
pub const INBOX_OPTION: &str = "ktstr.inbox";

/// Finds `ktstr.shm=` in `cmdline`; `Ok(None)` when absent.
pub fn parse_shm(cmdline: &str) -> Result<Option<ShmLocation>> {
    parse_region(cmdline, SHM_OPTION)
}

/// Finds `<option>=<base>,<size>` in `cmdline`; `Ok(None)` when absent. The last
/// occurrence wins, as the kernel does for its own options.
pub fn parse_region(cmdline: &str, option: &str) -> Result<Option<ShmLocation>> {
    let prefix = format!("{option}=");
    let Some(value) = cmdline
        .split_ascii_whitespace()
        .filter_map(|w| w.strip_prefix(prefix.as_str()))
        .next_back()
    else {
        return Ok(None);
    };
    let (base, size) = value
        .split_once(',')
        .with_context(|| format!("{option}={value}: expected <base>,<size>"))?;
    let base = parse_u64(base).with_context(|| format!("{option}={value}: bad base"))?;
    let size = parse_u64(size).with_context(|| format!("{option}={value}: bad size"))?;
    if size == 0 {
        bail!("{option}={value}: size is zero");
    }
    if base.checked_add(size).is_none() {
        bail!("{option}={value}: base + size overflows");
    }
    Ok(Some(ShmLocation { base, size }))
}

/// Hex with `0x`, or decimal.
fn parse_u64(s: &str) -> Result<u64> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.with_context(|| format!("`{s}` is not a number (hex needs a 0x prefix)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_region() {
        let c = "console=ttyS0 memmap=8M$0x3f800000 ktstr.shm=0x3f800000,0x800000 quiet\n";
        assert_eq!(
            parse_shm(c).unwrap(),
            Some(ShmLocation {
                base: 0x3f80_0000,
                size: 0x80_0000
            })
        );
    }

    #[test]
    fn decimal_and_last_wins() {
        let c = "ktstr.shm=0x1000,0x1000 ktstr.shm=8192,4096";
        assert_eq!(
            parse_shm(c).unwrap(),
            Some(ShmLocation {
                base: 8192,
                size: 4096
            })
        );
    }

    #[test]
    fn absent_is_none() {
        assert_eq!(parse_shm("console=ttyS0 xktstr.shm=1,2").unwrap(), None);
        assert_eq!(parse_shm("").unwrap(), None);
    }

    #[test]
    fn malformed_is_an_error() {
        for c in [
            "ktstr.shm=0x1000",
            "ktstr.shm=0x1000,",
            "ktstr.shm=zz,0x10",
            "ktstr.shm=0x1000,0",
            "ktstr.shm=0xffffffffffffffff,0x10",
            "ktstr.shm=",
        ] {
            assert!(parse_shm(c).is_err(), "{c}");
        }
    }
}
