//! One frame of the ring: a 16-byte header (magic, kind, length, seq, CRC) and its payload,
//! padded to 8 bytes. The CRC covers the first 12 header bytes and the payload, so a flipped
//! kind, length or seq is caught like a flipped payload byte.

use crate::WireError;

/// Frame magic, the bytes `KF` read as a little-endian u16.
pub const FRAME_MAGIC: u16 = u16::from_le_bytes(*b"KF");
/// Size of a frame header.
pub const FRAME_HEADER_SIZE: u64 = 16;

/// What a frame's payload is. Unknown kinds are skipped (and counted) by the host, so a
/// newer guest can add kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kind(pub u16);

impl Kind {
    /// A JSON [`crate::GuestMsg`].
    pub const MSG: Kind = Kind(1);
    /// Raw program output: first byte an [`OutputStream`], then the bytes.
    pub const OUTPUT: Kind = Kind(2);
    /// JSON from the bare-metal self-test guest of `ktstr-vmm` (its own schema).
    pub const SELF_TEST: Kind = Kind(3);

    /// Kinds this build hands to its caller.
    pub fn is_known(self) -> bool {
        matches!(self, Self::MSG | Self::OUTPUT | Self::SELF_TEST)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::MSG => f.write_str("msg"),
            Self::OUTPUT => f.write_str("output"),
            Self::SELF_TEST => f.write_str("self_test"),
            Kind(k) => write!(f, "kind {k}"),
        }
    }
}

/// A validated frame as read by the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub seq: u32,
    pub payload: Vec<u8>,
}

/// Ring bytes a frame with `payload_len` bytes of payload occupies.
pub(crate) fn frame_bytes(payload_len: u64) -> u64 {
    FRAME_HEADER_SIZE + payload_len.div_ceil(8) * 8
}

/// The first 12 header bytes: magic, kind, payload_len, seq.
pub(crate) fn header_prefix(kind: Kind, payload_len: u32, seq: u32) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0..2].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
    h[2..4].copy_from_slice(&kind.0.to_le_bytes());
    h[4..8].copy_from_slice(&payload_len.to_le_bytes());
    h[8..12].copy_from_slice(&seq.to_le_bytes());
    h
}

/// CRC-32 (IEEE) of the header prefix followed by the payload.
pub(crate) fn frame_crc(prefix: &[u8; 12], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(prefix);
    h.update(payload);
    h.finalize()
}

/// The fields of a raw 16-byte header, unvalidated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawHeader {
    pub prefix: [u8; 12],
    pub magic: u16,
    pub kind: Kind,
    pub payload_len: u32,
    pub seq: u32,
    pub crc: u32,
}

impl RawHeader {
    pub fn parse(b: &[u8; 16]) -> Self {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut prefix = [0u8; 12];
        prefix.copy_from_slice(&b[..12]);
        Self {
            prefix,
            magic: u16_at(0),
            kind: Kind(u16_at(2)),
            payload_len: u32_at(4),
            seq: u32_at(8),
            crc: u32_at(12),
        }
    }
}

/// Stream of an [`Kind::OUTPUT`] frame (its first payload byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
    SchedulerLog,
    Other(u8),
}

impl OutputStream {
    pub fn code(self) -> u8 {
        match self {
            Self::Stdout => 1,
            Self::Stderr => 2,
            Self::SchedulerLog => 3,
            Self::Other(c) => c,
        }
    }

    pub fn from_code(c: u8) -> Self {
        match c {
            1 => Self::Stdout,
            2 => Self::Stderr,
            3 => Self::SchedulerLog,
            c => Self::Other(c),
        }
    }

    /// Payload of an output frame carrying `bytes` on this stream.
    pub fn encode(self, bytes: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(bytes.len() + 1);
        v.push(self.code());
        v.extend_from_slice(bytes);
        v
    }
}

impl Frame {
    /// Splits an [`Kind::OUTPUT`] frame into its stream and bytes.
    pub fn output(&self) -> Result<(OutputStream, &[u8]), WireError> {
        if self.kind != Kind::OUTPUT {
            return Err(WireError::WrongKind {
                expected: Kind::OUTPUT.0,
                found: self.kind.0,
            });
        }
        match self.payload.split_first() {
            Some((&s, rest)) => Ok((OutputStream::from_code(s), rest)),
            None => Err(WireError::Decode {
                what: "output frame",
                reason: "empty payload, no stream byte".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_sizes_round_up_to_eight() {
        assert_eq!(frame_bytes(0), 16);
        assert_eq!(frame_bytes(1), 24);
        assert_eq!(frame_bytes(8), 24);
        assert_eq!(frame_bytes(9), 32);
    }

    #[test]
    fn header_layout_matches_the_doc() {
        let p = header_prefix(Kind(0x0203), 0x0a0b0c0d, 7);
        assert_eq!(&p[0..2], b"KF");
        assert_eq!(p[2..4], [0x03, 0x02]);
        assert_eq!(p[4..8], [0x0d, 0x0c, 0x0b, 0x0a]);
        assert_eq!(p[8..12], [7, 0, 0, 0]);
        let mut full = [0u8; 16];
        full[..12].copy_from_slice(&p);
        full[12..].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        let h = RawHeader::parse(&full);
        assert_eq!(
            (h.magic, h.kind, h.payload_len, h.seq, h.crc),
            (FRAME_MAGIC, Kind(0x0203), 0x0a0b0c0d, 7, 0xdead_beef)
        );
    }

    #[test]
    fn crc_is_zlib_crc32_over_prefix_and_payload() {
        let p = header_prefix(Kind::MSG, 3, 0);
        let mut all = p.to_vec();
        all.extend_from_slice(b"abc");
        assert_eq!(frame_crc(&p, b"abc"), crc32fast::hash(&all));
        // Known zlib value, so a C writer can check itself against this.
        assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn output_frames_split() {
        let f = Frame {
            kind: Kind::OUTPUT,
            seq: 0,
            payload: OutputStream::Stderr.encode(b"oops"),
        };
        assert_eq!(f.output().unwrap(), (OutputStream::Stderr, &b"oops"[..]));
        let empty = Frame {
            payload: vec![],
            ..f.clone()
        };
        assert!(empty.output().is_err());
        let msg = Frame {
            kind: Kind::MSG,
            ..f
        };
        assert!(matches!(msg.output(), Err(WireError::WrongKind { .. })));
    }
}
