//! Host side: drains the ring frame by frame, validating every guest-written byte it
//! uses (write_pos bounds, frame magic, length, CRC, seq) before trusting it. The first
//! error poisons the reader: the stream cannot be resynchronised, so every later call
//! returns the same error.

use crate::frame::{frame_bytes, frame_crc, RawHeader, FRAME_HEADER_SIZE};
use crate::layout::{offsets, Layout, StopReason};
use crate::{Frame, SharedMem, WireError, FRAME_MAGIC};

/// What the reader has consumed so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// Valid frames consumed, including skipped unknown kinds.
    pub frames_read: u64,
    /// Ring bytes consumed (headers, payloads, padding).
    pub bytes_read: u64,
    /// Valid frames of a kind this build does not know, skipped.
    pub skipped_unknown: u64,
    /// The guest's own count of back-pressure waits (guest-written, informational).
    pub backpressure_waits: u64,
}

/// The host's ring reader.
#[derive(Debug)]
pub struct Reader {
    shm: SharedMem,
    layout: Layout,
    read_pos: u64,
    next_seq: u32,
    stats: ReaderStats,
    poisoned: Option<WireError>,
}

impl Reader {
    /// A reader for a region the host just initialised with [`crate::init_header`].
    pub fn new(shm: &SharedMem, layout: Layout) -> Self {
        Self {
            shm: shm.clone(),
            layout,
            read_pos: 0,
            next_seq: 0,
            stats: ReaderStats::default(),
            poisoned: None,
        }
    }

    /// A reader for an already initialised region (validates its header and resumes at
    /// the host's `read_pos` / `host_ack`).
    pub fn attach(shm: &SharedMem) -> Result<Self, WireError> {
        let layout = Layout::read(shm)?;
        let read_pos = shm.load_u64(offsets::READ_POS);
        if !read_pos.is_multiple_of(8) {
            return Err(WireError::BadHeader(format!(
                "read_pos {read_pos} is not a multiple of 8"
            )));
        }
        let mut r = Self::new(shm, layout);
        r.read_pos = read_pos;
        r.next_seq = shm.load_u64(offsets::HOST_ACK) as u32;
        Ok(r)
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Total bytes consumed so far (the host's `read_pos`).
    pub fn read_pos(&self) -> u64 {
        self.read_pos
    }

    pub fn stats(&self) -> ReaderStats {
        ReaderStats {
            backpressure_waits: self.shm.load_u64(offsets::BACKPRESSURE_WAITS),
            ..self.stats
        }
    }

    /// Asks the guest to wind down (it polls `stop_request`).
    pub fn request_stop(&self, reason: StopReason) {
        self.shm.store_u32(offsets::STOP_REASON, reason.code());
        self.shm.store_u32(offsets::STOP_REQUEST, 1);
    }

    /// The next frame of a known kind, `Ok(None)` when nothing more is committed yet.
    /// Unknown kinds are validated, skipped and counted.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        if let Some(e) = &self.poisoned {
            return Err(e.clone());
        }
        loop {
            match self.read_one() {
                Ok(Some(f)) if !f.kind.is_known() => self.stats.skipped_unknown += 1,
                Ok(f) => return Ok(f),
                Err(e) => {
                    self.poisoned = Some(e.clone());
                    return Err(e);
                }
            }
        }
    }

    /// Reads and validates one frame of any kind, then releases its ring space.
    fn read_one(&mut self) -> Result<Option<Frame>, WireError> {
        let pos = self.read_pos;
        let write_pos = self.shm.load_u64(offsets::WRITE_POS);
        if write_pos < pos {
            return Err(WireError::WritePosBehind {
                write_pos,
                read_pos: pos,
            });
        }
        let committed = write_pos - pos;
        if committed > self.layout.ring_size {
            return Err(WireError::WritePosAhead {
                write_pos,
                read_pos: pos,
                ahead: committed,
                ring_size: self.layout.ring_size,
            });
        }
        if !write_pos.is_multiple_of(8) {
            return Err(WireError::WritePosMisaligned { write_pos });
        }
        if committed == 0 {
            return Ok(None);
        }
        if committed < FRAME_HEADER_SIZE {
            return Err(WireError::TruncatedFrame {
                pos,
                committed,
                header: FRAME_HEADER_SIZE,
            });
        }
        let mut raw = [0u8; FRAME_HEADER_SIZE as usize];
        self.layout.ring_read(&self.shm, pos, &mut raw);
        let h = RawHeader::parse(&raw);
        if h.magic != FRAME_MAGIC {
            return Err(WireError::BadFrameMagic {
                pos,
                found: h.magic,
                expected: FRAME_MAGIC,
            });
        }
        let len = u64::from(h.payload_len);
        let max = self.layout.max_payload();
        if len > max {
            return Err(WireError::PayloadTooLarge { pos, len, max });
        }
        let size = frame_bytes(len);
        if size > committed {
            return Err(WireError::FrameBeyondCommitted {
                pos,
                frame_bytes: size,
                committed,
            });
        }
        // Bounded by max_payload (<= 1 MiB) and by bytes the guest committed.
        let mut payload = vec![0u8; len as usize];
        self.layout
            .ring_read(&self.shm, pos + FRAME_HEADER_SIZE, &mut payload);
        let computed = frame_crc(&h.prefix, &payload);
        if computed != h.crc {
            return Err(WireError::CrcMismatch {
                pos,
                seq: h.seq,
                found: h.crc,
                computed,
            });
        }
        if h.seq != self.next_seq {
            return Err(WireError::SeqGap {
                pos,
                expected: self.next_seq,
                found: h.seq,
            });
        }
        self.read_pos = pos + size;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.stats.frames_read += 1;
        self.stats.bytes_read += size;
        self.shm
            .store_u64(offsets::HOST_ACK, u64::from(self.next_seq));
        // Release the space last: the guest may overwrite it as soon as it sees this.
        self.shm.store_u64(offsets::READ_POS, self.read_pos);
        Ok(Some(Frame {
            kind: h.kind,
            seq: h.seq,
            payload,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::header_prefix;
    use crate::{init_header, Kind, Writer};

    fn setup(len: usize) -> (SharedMem, Reader, Writer) {
        let shm = SharedMem::new_owned(len);
        let layout = init_header(&shm).unwrap();
        let r = Reader::new(&shm, layout);
        let w = Writer::attach(&shm).unwrap();
        (shm, r, w)
    }

    /// Writes a raw frame header at ring position `pos` (for forging bad frames).
    fn forge(shm: &SharedMem, pos: u64, kind: Kind, len: u32, seq: u32, payload: &[u8]) {
        let l = Layout::read(shm).unwrap();
        let p = header_prefix(kind, len, seq);
        let crc = frame_crc(&p, payload);
        let mut h = p.to_vec();
        h.extend_from_slice(&crc.to_le_bytes());
        h.extend_from_slice(payload);
        l.ring_write(shm, pos, &h);
    }

    #[test]
    fn empty_ring_reads_none() {
        let (_shm, mut r, _w) = setup(8192);
        assert_eq!(r.next_frame(), Ok(None));
        assert_eq!(r.stats(), ReaderStats::default());
    }

    #[test]
    fn unknown_kinds_are_skipped_and_counted() {
        let (_shm, mut r, mut w) = setup(8192);
        w.try_write(Kind(77), b"future").unwrap();
        w.try_write(Kind::OUTPUT, b"\x01x").unwrap();
        let f = r.next_frame().unwrap().unwrap();
        assert_eq!((f.kind, f.seq), (Kind::OUTPUT, 1));
        let s = r.stats();
        assert_eq!((s.frames_read, s.skipped_unknown), (2, 1));
        assert_eq!(s.bytes_read, 24 + 24);
    }

    #[test]
    fn oversized_length_is_rejected() {
        let (shm, mut r, _w) = setup(8192);
        forge(&shm, 0, Kind::MSG, 2049, 0, &[]);
        shm.store_u64(offsets::WRITE_POS, 4096);
        assert_eq!(
            r.next_frame(),
            Err(WireError::PayloadTooLarge {
                pos: 0,
                len: 2049,
                max: 2048
            })
        );
        forge(&shm, 0, Kind::MSG, u32::MAX, 0, &[]);
        let mut r = Reader::attach(&shm).unwrap();
        assert!(matches!(
            r.next_frame(),
            Err(WireError::PayloadTooLarge { .. })
        ));
    }

    #[test]
    fn frame_beyond_write_pos_is_rejected() {
        let (shm, mut r, mut w) = setup(8192);
        w.try_write(Kind::MSG, &[1; 100]).unwrap();
        shm.store_u64(offsets::WRITE_POS, 64);
        assert!(matches!(
            r.next_frame(),
            Err(WireError::FrameBeyondCommitted {
                frame_bytes: 120,
                committed: 64,
                ..
            })
        ));
    }

    #[test]
    fn write_pos_out_of_range_is_rejected() {
        let (shm, mut r, _w) = setup(8192);
        shm.store_u64(offsets::WRITE_POS, 4096 + 8);
        assert!(matches!(
            r.next_frame(),
            Err(WireError::WritePosAhead { .. })
        ));
        let (shm, mut r, _w) = setup(8192);
        shm.store_u64(offsets::WRITE_POS, 12);
        assert!(matches!(
            r.next_frame(),
            Err(WireError::WritePosMisaligned { .. })
        ));
        let (shm, mut r, _w) = setup(8192);
        shm.store_u64(offsets::WRITE_POS, 8);
        assert!(matches!(
            r.next_frame(),
            Err(WireError::TruncatedFrame { .. })
        ));
    }

    #[test]
    fn write_pos_going_backwards_is_rejected() {
        let (shm, mut r, mut w) = setup(8192);
        w.try_write(Kind::MSG, b"a").unwrap();
        r.next_frame().unwrap().unwrap();
        shm.store_u64(offsets::WRITE_POS, 0);
        assert_eq!(
            r.next_frame(),
            Err(WireError::WritePosBehind {
                write_pos: 0,
                read_pos: 24
            })
        );
    }

    #[test]
    fn seq_gap_is_rejected() {
        let (shm, mut r, _w) = setup(8192);
        forge(&shm, 0, Kind::MSG, 0, 5, &[]);
        shm.store_u64(offsets::WRITE_POS, 16);
        assert_eq!(
            r.next_frame(),
            Err(WireError::SeqGap {
                pos: 0,
                expected: 0,
                found: 5
            })
        );
    }

    #[test]
    fn errors_poison_the_reader() {
        let (shm, mut r, mut w) = setup(8192);
        shm.store_u64(offsets::WRITE_POS, 16);
        let e = r.next_frame().unwrap_err();
        // Even once the guest writes a good frame, the stream stays broken.
        shm.store_u64(offsets::WRITE_POS, 0);
        w.try_write(Kind::MSG, b"ok").unwrap();
        assert_eq!(r.next_frame(), Err(e));
    }

    #[test]
    fn attach_resumes_where_the_host_left_off() {
        let (shm, mut r, mut w) = setup(8192);
        w.try_write(Kind::MSG, b"1").unwrap();
        w.try_write(Kind::MSG, b"2").unwrap();
        assert_eq!(r.next_frame().unwrap().unwrap().payload, b"1");
        let mut r2 = Reader::attach(&shm).unwrap();
        let f = r2.next_frame().unwrap().unwrap();
        assert_eq!((f.seq, &f.payload[..]), (1, &b"2"[..]));
    }
}
