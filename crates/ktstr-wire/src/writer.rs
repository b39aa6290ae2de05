//! Guest side: appends frames to the ring and publishes them with a release store of
//! `write_pos`; waits (never drops) when the host has not drained enough room. One writer
//! per region.

use crate::frame::{frame_bytes, frame_crc, header_prefix, FRAME_HEADER_SIZE};
use crate::layout::{offsets, Layout, StopReason};
use crate::{Kind, SharedMem, WireError};

/// Why [`Writer::try_write`] did not write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryWriteError {
    /// Not enough free ring space now; retry after the host drains.
    #[error("ring full: the frame needs {needed} bytes, {free} are free")]
    Full { needed: u64, free: u64 },
    /// The payload can never fit in one frame.
    #[error("payload of {len} bytes exceeds the {max}-byte frame limit")]
    TooLarge { len: u64, max: u64 },
}

/// The guest's ring writer.
#[derive(Debug)]
pub struct Writer {
    shm: SharedMem,
    layout: Layout,
    write_pos: u64,
    seq: u32,
    waits: u64,
}

impl Writer {
    /// Validates the host-written header and continues from the committed `write_pos`
    /// (0 on a fresh region).
    pub fn attach(shm: &SharedMem) -> Result<Self, WireError> {
        let layout = Layout::read(shm)?;
        let write_pos = shm.load_u64(offsets::WRITE_POS);
        if !write_pos.is_multiple_of(8) {
            return Err(WireError::WritePosMisaligned { write_pos });
        }
        Ok(Self {
            shm: shm.clone(),
            layout,
            write_pos,
            // The seq field is 32 bits; it wraps with the frame count.
            seq: shm.load_u64(offsets::FRAMES_WRITTEN) as u32,
            waits: shm.load_u64(offsets::BACKPRESSURE_WAITS),
        })
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Largest payload one frame may carry.
    pub fn max_payload(&self) -> u64 {
        self.layout.max_payload()
    }

    /// Free ring bytes right now.
    fn free(&self) -> u64 {
        let read_pos = self.shm.load_u64(offsets::READ_POS);
        // A host read_pos beyond ours would be a host bug: treat the ring as full.
        let used = self.write_pos.wrapping_sub(read_pos);
        self.layout.ring_size.saturating_sub(used)
    }

    /// Writes one frame if it fits now.
    pub fn try_write(&mut self, kind: Kind, payload: &[u8]) -> Result<(), TryWriteError> {
        let len = payload.len() as u64;
        let max = self.layout.max_payload();
        if len > max {
            return Err(TryWriteError::TooLarge { len, max });
        }
        let needed = frame_bytes(len);
        let free = self.free();
        if needed > free {
            return Err(TryWriteError::Full { needed, free });
        }
        // `len <= max_payload <= 1 MiB`, so it fits in u32.
        let prefix = header_prefix(kind, len as u32, self.seq);
        let crc = frame_crc(&prefix, payload);
        let mut header = [0u8; FRAME_HEADER_SIZE as usize];
        header[..12].copy_from_slice(&prefix);
        header[12..].copy_from_slice(&crc.to_le_bytes());
        let pos = self.write_pos;
        self.layout.ring_write(&self.shm, pos, &header);
        self.layout
            .ring_write(&self.shm, pos + FRAME_HEADER_SIZE, payload);
        let pad = (needed - FRAME_HEADER_SIZE - len) as usize;
        self.layout
            .ring_write(&self.shm, pos + FRAME_HEADER_SIZE + len, &[0u8; 8][..pad]);
        self.write_pos = pos + needed;
        self.seq = self.seq.wrapping_add(1);
        let frames = self.shm.load_u64(offsets::FRAMES_WRITTEN);
        self.shm
            .store_u64(offsets::FRAMES_WRITTEN, frames.wrapping_add(1));
        // Publish: the release store orders all frame bytes before it.
        self.shm.store_u64(offsets::WRITE_POS, self.write_pos);
        Ok(())
    }

    /// Writes one frame, calling `wait` between retries while the ring is full. Each call
    /// that had to wait counts one back-pressure wait (also published in the header).
    pub fn write(
        &mut self,
        kind: Kind,
        payload: &[u8],
        mut wait: impl FnMut(),
    ) -> Result<(), TryWriteError> {
        let mut waited = false;
        loop {
            match self.try_write(kind, payload) {
                Err(TryWriteError::Full { .. }) => {
                    if !waited {
                        waited = true;
                        self.waits += 1;
                        self.shm.store_u64(offsets::BACKPRESSURE_WAITS, self.waits);
                    }
                    wait();
                }
                other => return other,
            }
        }
    }

    /// Back-pressure waits so far.
    pub fn backpressure_waits(&self) -> u64 {
        self.waits
    }

    /// Frames written so far (the next frame's seq, modulo 2^32).
    pub fn next_seq(&self) -> u32 {
        self.seq
    }

    /// True once the host asked the guest to wind down.
    pub fn stop_requested(&self) -> bool {
        stop_requested(&self.shm)
    }

    /// The host's stop reason, if it asked to stop.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop_requested()
            .then(|| StopReason::from_code(self.shm.load_u32(offsets::STOP_REASON)))
    }

    /// The region this writer writes to (for clones, e.g. a stop-flag poller).
    pub fn shared_mem(&self) -> &SharedMem {
        &self.shm
    }
}

/// True once the host asked the guest to wind down (usable without a writer, e.g. in a
/// forked worker that inherited the mapping).
pub fn stop_requested(shm: &SharedMem) -> bool {
    shm.load_u32(offsets::STOP_REQUEST) != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{init_header, Reader};

    #[test]
    fn attach_requires_a_host_header() {
        let shm = SharedMem::new_owned(8192);
        assert!(matches!(
            Writer::attach(&shm),
            Err(WireError::BadMagic { .. })
        ));
        init_header(&shm).unwrap();
        assert!(Writer::attach(&shm).is_ok());
    }

    #[test]
    fn too_large_payload_is_refused_not_retried() {
        let shm = SharedMem::new_owned(8192);
        init_header(&shm).unwrap();
        let mut w = Writer::attach(&shm).unwrap();
        let big = vec![0u8; 2049];
        let mut waits = 0;
        assert_eq!(
            w.write(Kind::MSG, &big, || waits += 1),
            Err(TryWriteError::TooLarge {
                len: 2049,
                max: 2048
            })
        );
        assert_eq!(waits, 0);
        assert!(w.try_write(Kind::MSG, &big[..2048]).is_ok());
    }

    #[test]
    fn backpressure_waits_until_the_host_drains() {
        let shm = SharedMem::new_owned(8192);
        let layout = init_header(&shm).unwrap();
        let mut reader = Reader::new(&shm, layout);
        let mut w = Writer::attach(&shm).unwrap();
        // 4096-byte ring: three 1000-byte payloads (1016-byte frames) fit, a fifth does not.
        let payload = |i: u8| vec![i; 1000];
        for i in 0..4 {
            w.try_write(Kind::MSG, &payload(i)).unwrap();
        }
        assert!(matches!(
            w.try_write(Kind::MSG, &payload(4)),
            Err(TryWriteError::Full {
                needed: 1016,
                free: 32
            })
        ));
        // The "wait" is the host draining one frame.
        let mut drained = Vec::new();
        w.write(Kind::MSG, &payload(4), || {
            drained.push(reader.next_frame().unwrap().unwrap())
        })
        .unwrap();
        assert_eq!(drained.len(), 1);
        assert_eq!(w.backpressure_waits(), 1);
        assert_eq!(reader.stats().backpressure_waits, 1);
        // A write that fits does not count a wait.
        assert_eq!(w.write(Kind::MSG, &[], || panic!("no wait needed")), Ok(()));
        let mut rest = Vec::new();
        while let Some(f) = reader.next_frame().unwrap() {
            rest.push(f);
        }
        let all: Vec<_> = drained.iter().chain(&rest).collect();
        assert_eq!(all.len(), 6);
        for (i, f) in all.iter().take(5).enumerate() {
            assert_eq!(f.payload, payload(i as u8));
            assert_eq!(f.seq, i as u32);
        }
        assert!(all[5].payload.is_empty());
        assert_eq!(w.backpressure_waits(), 1);
    }

    #[test]
    fn stop_request_is_seen_by_the_guest() {
        let shm = SharedMem::new_owned(8192);
        let layout = init_header(&shm).unwrap();
        let reader = Reader::new(&shm, layout);
        let w = Writer::attach(&shm).unwrap();
        assert!(!w.stop_requested());
        assert_eq!(w.stop_reason(), None);
        reader.request_stop(StopReason::Watchdog);
        assert!(w.stop_requested());
        assert!(stop_requested(&shm));
        assert_eq!(w.stop_reason(), Some(StopReason::Watchdog));
    }

    #[test]
    fn reattach_continues_positions_and_seq() {
        let shm = SharedMem::new_owned(8192);
        let layout = init_header(&shm).unwrap();
        let mut reader = Reader::new(&shm, layout);
        let mut w = Writer::attach(&shm).unwrap();
        w.try_write(Kind::MSG, b"one").unwrap();
        drop(w);
        let mut w = Writer::attach(&shm).unwrap();
        w.try_write(Kind::MSG, b"two").unwrap();
        assert_eq!(reader.next_frame().unwrap().unwrap().payload, b"one");
        let f = reader.next_frame().unwrap().unwrap();
        assert_eq!((f.seq, &f.payload[..]), (1, &b"two"[..]));
    }
}
