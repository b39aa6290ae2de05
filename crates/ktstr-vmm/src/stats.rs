//! KVM binary statistics (`KVM_GET_STATS_FD`): every single-u64 counter of a vCPU or VM,
//! read once after exit into a `name -> value` map. The fd layout is KVM's documented
//! binary format: a header, descriptors (16 bytes + name), then the data block.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;

/// `_IO(KVMIO, 0xce)`.
const KVM_GET_STATS_FD: libc::c_ulong = 0xae << 8 | 0xce;
const HEADER_LEN: usize = 24;
const DESC_FIXED_LEN: usize = 16;
/// Upper bound on the descriptor block we accept (the kernel's are a few KiB).
const MAX_DESC_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("KVM_GET_STATS_FD on {what}: {source} (needs KVM_CAP_BINARY_STATS_FD, Linux >= 5.14)")]
    Open {
        what: String,
        source: std::io::Error,
    },
    #[error("reading KVM stats of {what}: {source}")]
    Read {
        what: String,
        source: std::io::Error,
    },
    #[error("malformed KVM stats header/descriptors of {what}: {detail}")]
    Malformed { what: String, detail: String },
}

/// One descriptor we keep: a single-u64 statistic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatDesc {
    pub name: String,
    /// Byte offset in the data block.
    pub offset: u32,
    pub flags: u32,
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}

/// Parsed header: (name_size, num_desc, desc_offset, data_offset).
pub fn parse_header(b: &[u8]) -> Option<(usize, usize, usize, usize)> {
    Some((
        u32_at(b, 4)? as usize,
        u32_at(b, 8)? as usize,
        u32_at(b, 16)? as usize,
        u32_at(b, 20)? as usize,
    ))
}

/// Parses `num_desc` descriptors of `16 + name_size` bytes from `b` and keeps those whose
/// `size` is 1 (one u64); histograms and arrays are skipped.
pub fn parse_descriptors(b: &[u8], name_size: usize, num_desc: usize) -> Option<Vec<StatDesc>> {
    let stride = DESC_FIXED_LEN + name_size;
    let mut out = Vec::new();
    for i in 0..num_desc {
        let o = i * stride;
        let d = b.get(o..o + stride)?;
        let flags = u32_at(d, 0)?;
        let size = u16_at(d, 6)?;
        let offset = u32_at(d, 8)?;
        if size != 1 {
            continue;
        }
        let raw = &d[DESC_FIXED_LEN..];
        let end = raw.iter().position(|c| *c == 0).unwrap_or(raw.len());
        let name = String::from_utf8_lossy(&raw[..end]).into_owned();
        out.push(StatDesc {
            name,
            offset,
            flags,
        });
    }
    Some(out)
}

/// An open stats fd with its descriptors.
pub struct StatsFd {
    file: File,
    what: String,
    descs: Vec<StatDesc>,
    data_offset: u64,
}

impl StatsFd {
    /// `KVM_GET_STATS_FD` on a VM or vCPU fd; `what` names it in errors ("vCPU 3").
    pub fn open(fd: &impl AsRawFd, what: &str) -> Result<Self, StatsError> {
        // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new fd or -1.
        let raw = unsafe { libc::ioctl(fd.as_raw_fd(), KVM_GET_STATS_FD as _) };
        if raw < 0 {
            return Err(StatsError::Open {
                what: what.into(),
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: `raw` is a fresh fd we own.
        let file = unsafe { File::from_raw_fd(raw) };
        let rd = |e| StatsError::Read {
            what: what.into(),
            source: e,
        };
        let bad = |detail: &str| StatsError::Malformed {
            what: what.into(),
            detail: detail.into(),
        };
        let mut hdr = [0u8; HEADER_LEN];
        file.read_exact_at(&mut hdr, 0).map_err(rd)?;
        let (name_size, num_desc, desc_offset, data_offset) =
            parse_header(&hdr).ok_or_else(|| bad("short header"))?;
        let desc_bytes = num_desc
            .checked_mul(DESC_FIXED_LEN + name_size)
            .filter(|n| *n <= MAX_DESC_BYTES)
            .ok_or_else(|| bad("descriptor block too large"))?;
        let mut descs = vec![0u8; desc_bytes];
        file.read_exact_at(&mut descs, desc_offset as u64)
            .map_err(rd)?;
        let descs = parse_descriptors(&descs, name_size, num_desc)
            .ok_or_else(|| bad("truncated descriptor"))?;
        Ok(Self {
            file,
            what: what.into(),
            descs,
            data_offset: data_offset as u64,
        })
    }

    /// Reads every kept statistic now.
    pub fn read(&self) -> Result<BTreeMap<String, u64>, StatsError> {
        let mut out = BTreeMap::new();
        for d in &self.descs {
            let mut v = [0u8; 8];
            self.file
                .read_exact_at(&mut v, self.data_offset + u64::from(d.offset))
                .map_err(|e| StatsError::Read {
                    what: self.what.clone(),
                    source: e,
                })?;
            out.insert(d.name.clone(), u64::from_le_bytes(v));
        }
        Ok(out)
    }
}

/// Sum of one statistic over all vCPUs (absent entries count as 0).
pub fn total(per_vcpu: &[BTreeMap<String, u64>], name: &str) -> u64 {
    per_vcpu.iter().filter_map(|m| m.get(name)).sum()
}

/// Sums of every statistic over all vCPUs.
pub fn totals(per_vcpu: &[BTreeMap<String, u64>]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for m in per_vcpu {
        for (k, v) in m {
            *out.entry(k.clone()).or_insert(0u64) += v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(flags: u32, size: u16, offset: u32, name: &str, name_size: usize) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&flags.to_le_bytes());
        d.extend_from_slice(&0i16.to_le_bytes());
        d.extend_from_slice(&size.to_le_bytes());
        d.extend_from_slice(&offset.to_le_bytes());
        d.extend_from_slice(&0u32.to_le_bytes());
        let mut n = name.as_bytes().to_vec();
        n.resize(name_size, 0);
        d.extend_from_slice(&n);
        d
    }

    #[test]
    fn keeps_single_u64_stats_and_skips_histograms() {
        let ns = 48;
        let mut b = desc(0, 1, 0, "exits", ns);
        b.extend(desc(4, 32, 8, "halt_poll_success_hist", ns));
        b.extend(desc(2, 1, 264, "max_mmu_page_hash_collisions", ns));
        let d = parse_descriptors(&b, ns, 3).unwrap();
        assert_eq!(
            d,
            vec![
                StatDesc {
                    name: "exits".into(),
                    offset: 0,
                    flags: 0
                },
                StatDesc {
                    name: "max_mmu_page_hash_collisions".into(),
                    offset: 264,
                    flags: 2
                }
            ]
        );
        assert!(parse_descriptors(&b, ns, 4).is_none(), "truncated");
    }

    #[test]
    fn header_fields() {
        let mut h = vec![0u8; 24];
        h[4..8].copy_from_slice(&48u32.to_le_bytes());
        h[8..12].copy_from_slice(&47u32.to_le_bytes());
        h[16..20].copy_from_slice(&0x40u32.to_le_bytes());
        h[20..24].copy_from_slice(&0x1000u32.to_le_bytes());
        assert_eq!(parse_header(&h), Some((48, 47, 0x40, 0x1000)));
        assert_eq!(parse_header(&h[..10]), None);
    }

    #[test]
    fn totals_sum_per_vcpu_maps() {
        let a: BTreeMap<String, u64> =
            [("exits".to_string(), 3), ("halt_exits".to_string(), 1)].into();
        let b: BTreeMap<String, u64> = [("exits".to_string(), 4)].into();
        assert_eq!(total(&[a.clone(), b.clone()], "exits"), 7);
        assert_eq!(totals(&[a, b])["halt_exits"], 1);
    }
}
