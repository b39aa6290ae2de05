//! Where everything lives in the region: the header field offsets, the ring's geometry
//! ([`Layout`]), the host's [`init_header`] and the validation both sides run on a header.

use crate::{SharedMem, WireError};

/// Header magic, the bytes `KTSTRSHM` read as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"KTSTRSHM");
/// Protocol version this build speaks.
pub const VERSION: u32 = 1;
/// Bytes reserved for the header; the ring starts right after.
pub const HEADER_SIZE: u64 = 4096;
/// Smallest ring the protocol allows.
pub const MIN_RING_SIZE: u64 = 4096;
/// Hard cap on one frame's payload, whatever the ring size.
pub const MAX_PAYLOAD_CAP: u64 = 1 << 20;

/// Byte offsets of the header fields (see `docs/protocol.md`).
pub mod offsets {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    pub const HEADER_SIZE: usize = 12;
    pub const REGION_SIZE: usize = 16;
    pub const RING_OFFSET: usize = 24;
    pub const RING_SIZE: usize = 32;
    /// Guest-written: total bytes committed to the ring.
    pub const WRITE_POS: usize = 64;
    /// Guest-written: frames committed.
    pub const FRAMES_WRITTEN: usize = 72;
    /// Guest-written: times the guest found the ring full and waited.
    pub const BACKPRESSURE_WAITS: usize = 80;
    /// Host-written: total bytes consumed.
    pub const READ_POS: usize = 128;
    /// Host-written: non-zero asks the guest to stop.
    pub const STOP_REQUEST: usize = 256;
    /// Host-written: why (a [`crate::StopReason`] code).
    pub const STOP_REASON: usize = 260;
    /// Host-written: number of frames the host has consumed (= the next expected seq).
    pub const HOST_ACK: usize = 264;
}

/// Geometry of a validated region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub region_size: u64,
    pub ring_offset: u64,
    pub ring_size: u64,
}

impl Layout {
    /// Largest payload one frame may carry: `min(1 MiB, ring_size / 2)`.
    pub fn max_payload(&self) -> u64 {
        MAX_PAYLOAD_CAP.min(self.ring_size / 2)
    }

    /// Reads and validates the header of `shm` (used by the guest's writer and by a host
    /// that attaches to a region it did not initialise).
    pub fn read(shm: &SharedMem) -> Result<Self, WireError> {
        let len = shm.len() as u64;
        let min = HEADER_SIZE + MIN_RING_SIZE;
        if len < min {
            return Err(WireError::RegionTooSmall { len, min });
        }
        let magic = shm.load_u64(offsets::MAGIC);
        if magic != MAGIC {
            return Err(WireError::BadMagic {
                found: magic,
                expected: MAGIC,
            });
        }
        let version = shm.load_u32(offsets::VERSION);
        if version != VERSION {
            return Err(WireError::BadVersion {
                found: version,
                expected: VERSION,
            });
        }
        let header_size = u64::from(shm.load_u32(offsets::HEADER_SIZE));
        if header_size != HEADER_SIZE {
            return Err(WireError::BadHeader(format!(
                "header_size is {header_size}, expected {HEADER_SIZE}"
            )));
        }
        let layout = Self {
            region_size: shm.load_u64(offsets::REGION_SIZE),
            ring_offset: shm.load_u64(offsets::RING_OFFSET),
            ring_size: shm.load_u64(offsets::RING_SIZE),
        };
        layout.validate(len)?;
        Ok(layout)
    }

    fn validate(&self, mapped: u64) -> Result<(), WireError> {
        if self.region_size > mapped {
            return Err(WireError::BadHeader(format!(
                "region_size {} is larger than the {mapped} bytes mapped (check ktstr.shm=)",
                self.region_size
            )));
        }
        if self.ring_offset != HEADER_SIZE {
            return Err(WireError::BadHeader(format!(
                "ring_offset is {}, expected {HEADER_SIZE}",
                self.ring_offset
            )));
        }
        if !self.ring_size.is_power_of_two() || self.ring_size < MIN_RING_SIZE {
            return Err(WireError::BadHeader(format!(
                "ring_size {} is not a power of two >= {MIN_RING_SIZE}",
                self.ring_size
            )));
        }
        match self.ring_offset.checked_add(self.ring_size) {
            Some(end) if end <= self.region_size => Ok(()),
            _ => Err(WireError::BadHeader(format!(
                "ring [{}, +{}) does not fit in the {}-byte region",
                self.ring_offset, self.ring_size, self.region_size
            ))),
        }
    }

    /// Region offset of ring position `pos`.
    pub(crate) fn ring_at(&self, pos: u64) -> usize {
        // Fits in usize: below region_size, which is at most the mapped length.
        (self.ring_offset + (pos & (self.ring_size - 1))) as usize
    }

    /// Volatile copy out of the ring starting at position `pos`, wrapping at the end.
    pub(crate) fn ring_read(&self, shm: &SharedMem, pos: u64, buf: &mut [u8]) {
        let start = pos & (self.ring_size - 1);
        let first = ((self.ring_size - start) as usize).min(buf.len());
        let (a, b) = buf.split_at_mut(first);
        shm.read_bytes(self.ring_at(pos), a);
        if !b.is_empty() {
            shm.read_bytes(self.ring_offset as usize, b);
        }
    }

    /// Volatile copy into the ring starting at position `pos`, wrapping at the end.
    pub(crate) fn ring_write(&self, shm: &SharedMem, pos: u64, data: &[u8]) {
        let start = pos & (self.ring_size - 1);
        let first = ((self.ring_size - start) as usize).min(data.len());
        let (a, b) = data.split_at(first);
        shm.write_bytes(self.ring_at(pos), a);
        if !b.is_empty() {
            shm.write_bytes(self.ring_offset as usize, b);
        }
    }
}

/// Host side: writes a fresh header over the whole of `shm` (ring = the largest power of
/// two that fits after the header), zeroes positions and control words, and returns the
/// layout. Call it before the guest starts.
pub fn init_header(shm: &SharedMem) -> Result<Layout, WireError> {
    let len = shm.len() as u64;
    let min = HEADER_SIZE + MIN_RING_SIZE;
    if len < min {
        return Err(WireError::RegionTooSmall { len, min });
    }
    let avail = len - HEADER_SIZE;
    // Largest power of two <= avail (avail >= MIN_RING_SIZE > 0).
    let ring_size = 1u64 << (63 - avail.leading_zeros());
    let layout = Layout {
        region_size: len,
        ring_offset: HEADER_SIZE,
        ring_size,
    };
    // Magic last: a reader never sees a valid magic over a half-written header.
    shm.store_u64(offsets::MAGIC, 0);
    shm.fill(8, HEADER_SIZE as usize - 8, 0);
    shm.store_u32(offsets::VERSION, VERSION);
    shm.store_u32(offsets::HEADER_SIZE, HEADER_SIZE as u32);
    shm.store_u64(offsets::REGION_SIZE, layout.region_size);
    shm.store_u64(offsets::RING_OFFSET, layout.ring_offset);
    shm.store_u64(offsets::RING_SIZE, layout.ring_size);
    shm.store_u64(offsets::MAGIC, MAGIC);
    Ok(layout)
}

/// Why the host asks the guest to stop (`control.stop_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The host's deadline expired.
    Watchdog,
    /// The user interrupted the run.
    User,
    /// A code this build does not know.
    Other(u32),
}

impl StopReason {
    pub fn code(self) -> u32 {
        match self {
            Self::Watchdog => 1,
            Self::User => 2,
            Self::Other(c) => c,
        }
    }

    pub fn from_code(code: u32) -> Self {
        match code {
            1 => Self::Watchdog,
            2 => Self::User,
            c => Self::Other(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_header_picks_largest_power_of_two_ring() {
        let shm = SharedMem::new_owned(4096 + 12_000);
        let l = init_header(&shm).unwrap();
        assert_eq!(l.ring_size, 8192);
        assert_eq!(l.ring_offset, 4096);
        assert_eq!(l.region_size, 16_096);
        assert_eq!(Layout::read(&shm).unwrap(), l);
        assert_eq!(l.max_payload(), 4096);
        let mut magic = [0u8; 8];
        shm.read_bytes(0, &mut magic);
        assert_eq!(&magic, b"KTSTRSHM");
    }

    #[test]
    fn max_payload_is_capped_at_one_mib() {
        let l = Layout {
            region_size: 4096 + (8 << 20),
            ring_offset: 4096,
            ring_size: 8 << 20,
        };
        assert_eq!(l.max_payload(), 1 << 20);
    }

    #[test]
    fn init_header_clears_old_positions() {
        let shm = SharedMem::new_owned(3 * 4096);
        shm.store_u64(offsets::WRITE_POS, 99);
        shm.store_u32(offsets::STOP_REQUEST, 1);
        init_header(&shm).unwrap();
        assert_eq!(shm.load_u64(offsets::WRITE_POS), 0);
        assert_eq!(shm.load_u32(offsets::STOP_REQUEST), 0);
    }

    #[test]
    fn small_regions_are_rejected() {
        let shm = SharedMem::new_owned(8191);
        assert!(matches!(
            init_header(&shm),
            Err(WireError::RegionTooSmall { len: 8191, .. })
        ));
        assert!(matches!(
            Layout::read(&shm),
            Err(WireError::RegionTooSmall { .. })
        ));
    }

    #[test]
    fn read_rejects_each_bad_field() {
        let shm = SharedMem::new_owned(4 * 4096);
        let fresh = || init_header(&shm).unwrap();
        let cases: [(&str, &dyn Fn()); 6] = [
            ("magic", &|| shm.store_u64(offsets::MAGIC, 1)),
            ("version", &|| shm.store_u32(offsets::VERSION, 2)),
            ("header_size", &|| shm.store_u32(offsets::HEADER_SIZE, 64)),
            ("region_size", &|| {
                shm.store_u64(offsets::REGION_SIZE, 1 << 40)
            }),
            ("ring_size", &|| shm.store_u64(offsets::RING_SIZE, 5000)),
            ("ring_offset", &|| shm.store_u64(offsets::RING_OFFSET, 8)),
        ];
        for (name, corrupt) in cases {
            fresh();
            corrupt();
            assert!(Layout::read(&shm).is_err(), "corrupt {name} accepted");
        }
        fresh();
        // A ring that runs past the region end.
        shm.store_u64(offsets::RING_SIZE, 4 * 4096);
        assert!(matches!(Layout::read(&shm), Err(WireError::BadHeader(_))));
    }

    #[test]
    fn stop_reason_codes_round_trip() {
        for r in [StopReason::Watchdog, StopReason::User, StopReason::Other(7)] {
            assert_eq!(StopReason::from_code(r.code()), r);
        }
    }
}
