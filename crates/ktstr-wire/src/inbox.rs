//! The inbox: a host-to-guest area beside the ring region, used by warm starts. A guest
//! restored from a snapshot was booted before its test was known; everything the test
//! brings (spec, scheduler and payload binaries, included files) reaches it here, as a
//! newc archive the guest unpacks over its root, with a random seed and the host's clock.
//!
//! The guest learns the area from `ktstr.inbox=<base>,<size>` on the kernel command line.
//! Layout (little-endian):
//!
//! | offset | type | field | written by |
//! |---|---|---|---|
//! | 0 | u64 | magic `KTSTRINB` | host |
//! | 8 | u32 | version = 1 | host |
//! | 12 | u32 | CRC-32 (IEEE) of the archive | host |
//! | 16 | u64 | archive length | host |
//! | 24 | u64 | host `CLOCK_REALTIME` in ns when written | host |
//! | 32 | 32 bytes | random seed | host |
//! | 64 | u32 | ready: non-zero once all of the above is written (release) | host |
//! | 128 | u32 | parked: non-zero once the guest waits for its work | guest |
//! | 4096 | | the archive | host |
//!
//! The host reads only `parked`; the guest checks magic, version, length and CRC before
//! it unpacks anything.

use crate::SharedMem;

pub const MAGIC: u64 = u64::from_le_bytes(*b"KTSTRINB");
pub const VERSION: u32 = 1;
/// Where the archive starts; the header page before it.
pub const ARCHIVE_OFFSET: usize = 4096;
pub const SEED_LEN: usize = 32;

/// Field offsets.
pub mod offsets {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    pub const CRC: usize = 12;
    pub const LEN: usize = 16;
    pub const REALTIME_NS: usize = 24;
    pub const SEED: usize = 32;
    pub const READY: usize = 64;
    pub const PARKED: usize = 128;
}

/// What the host delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// newc archive(s) to unpack over the guest's root.
    pub archive: Vec<u8>,
    pub seed: [u8; SEED_LEN],
    /// Host `CLOCK_REALTIME` in ns; the guest steps its clock to it.
    pub realtime_ns: u64,
}

/// Why a delivery cannot be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboxError {
    #[error("the inbox of {size} bytes holds at most {capacity} bytes of archive; this test brings {len} (it runs cold)")]
    TooBig {
        len: usize,
        capacity: usize,
        size: usize,
    },
    #[error("inbox magic {0:#x} is not KTSTRINB")]
    BadMagic(u64),
    #[error("inbox version {0}, this runtime reads version {VERSION}")]
    BadVersion(u32),
    #[error("inbox archive length {len} exceeds the area's capacity {capacity}")]
    BadLength { len: u64, capacity: usize },
    #[error("inbox archive CRC {actual:#010x} does not match the header's {expected:#010x}")]
    BadCrc { expected: u32, actual: u32 },
}

/// Bytes of archive an inbox of `size` bytes holds.
pub fn capacity(size: usize) -> usize {
    size.saturating_sub(ARCHIVE_OFFSET)
}

/// Host: write `d` into the inbox, `ready` last.
pub fn deliver(shm: &SharedMem, d: &Delivery) -> Result<(), InboxError> {
    let cap = capacity(shm.len());
    if d.archive.len() > cap {
        return Err(InboxError::TooBig {
            len: d.archive.len(),
            capacity: cap,
            size: shm.len(),
        });
    }
    shm.store_u32(offsets::READY, 0);
    shm.write_unpublished(ARCHIVE_OFFSET, &d.archive);
    shm.store_u32(offsets::VERSION, VERSION);
    shm.store_u32(offsets::CRC, crc32fast::hash(&d.archive));
    shm.store_u64(offsets::LEN, d.archive.len() as u64);
    shm.store_u64(offsets::REALTIME_NS, d.realtime_ns);
    shm.write_bytes(offsets::SEED, &d.seed);
    shm.store_u64(offsets::MAGIC, MAGIC);
    shm.store_u32(offsets::READY, 1);
    Ok(())
}

/// Host: has the guest parked, waiting for its work?
pub fn is_parked(shm: &SharedMem) -> bool {
    shm.load_u32(offsets::PARKED) != 0
}

/// Guest: say it waits for its work.
pub fn mark_parked(shm: &SharedMem) {
    shm.store_u32(offsets::PARKED, 1);
}

/// Guest: has the host delivered?
pub fn is_ready(shm: &SharedMem) -> bool {
    shm.load_u32(offsets::READY) != 0
}

/// Guest: read and check a delivery (after [`is_ready`]).
pub fn receive(shm: &SharedMem) -> Result<Delivery, InboxError> {
    let magic = shm.load_u64(offsets::MAGIC);
    if magic != MAGIC {
        return Err(InboxError::BadMagic(magic));
    }
    let version = shm.load_u32(offsets::VERSION);
    if version != VERSION {
        return Err(InboxError::BadVersion(version));
    }
    let capacity = capacity(shm.len());
    let len = shm.load_u64(offsets::LEN);
    if len > capacity as u64 {
        return Err(InboxError::BadLength { len, capacity });
    }
    let mut archive = vec![0u8; len as usize];
    shm.read_published(ARCHIVE_OFFSET, &mut archive);
    let expected = shm.load_u32(offsets::CRC);
    let actual = crc32fast::hash(&archive);
    if actual != expected {
        return Err(InboxError::BadCrc { expected, actual });
    }
    let mut seed = [0u8; SEED_LEN];
    shm.read_bytes(offsets::SEED, &mut seed);
    Ok(Delivery {
        archive,
        seed,
        realtime_ns: shm.load_u64(offsets::REALTIME_NS),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(n: usize) -> Delivery {
        Delivery {
            archive: (0..n).map(|i| i as u8).collect(),
            seed: [7; SEED_LEN],
            realtime_ns: 1_700_000_000_000_000_000,
        }
    }

    #[test]
    fn round_trip_after_park() {
        let shm = SharedMem::new_owned(64 * 1024);
        assert!(!is_parked(&shm));
        mark_parked(&shm);
        assert!(is_parked(&shm));
        assert!(!is_ready(&shm));
        let d = delivery(10_000);
        deliver(&shm, &d).unwrap();
        assert!(is_ready(&shm));
        assert_eq!(receive(&shm).unwrap(), d);
    }

    #[test]
    fn too_big_is_refused_before_anything_is_written() {
        let shm = SharedMem::new_owned(8192);
        let e = deliver(&shm, &delivery(4097)).unwrap_err();
        assert!(
            matches!(e, InboxError::TooBig { capacity: 4096, .. }),
            "{e}"
        );
        assert!(!is_ready(&shm));
        deliver(&shm, &delivery(4096)).unwrap();
    }

    #[test]
    fn corruption_is_detected() {
        let shm = SharedMem::new_owned(64 * 1024);
        deliver(&shm, &delivery(100)).unwrap();
        shm.write_bytes(ARCHIVE_OFFSET + 5, &[0xff]);
        assert!(matches!(receive(&shm), Err(InboxError::BadCrc { .. })));
        shm.store_u64(offsets::LEN, 1 << 40);
        assert!(matches!(receive(&shm), Err(InboxError::BadLength { .. })));
        shm.store_u32(offsets::VERSION, 9);
        assert!(matches!(receive(&shm), Err(InboxError::BadVersion(9))));
        shm.store_u64(offsets::MAGIC, 1);
        assert!(matches!(receive(&shm), Err(InboxError::BadMagic(1))));
    }
}
