//! Everything that can be wrong with a region, a frame or a message. The host turns guest
//! garbage into one of these (a clear failure reason), never into a panic.

/// A protocol error. `pos` values are ring positions (total bytes since the start).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("shared-memory region at {addr:#x} is null or not 8-byte aligned")]
    Misaligned { addr: u64 },
    #[error("shared-memory region has {len} bytes; the protocol needs at least {min}")]
    RegionTooSmall { len: u64, min: u64 },
    #[error("shared-memory header magic is {found:#018x}, expected {expected:#018x} (\"KTSTRSHM\"): the region was not initialised by the host or is mapped at the wrong address (check ktstr.shm=)")]
    BadMagic { found: u64, expected: u64 },
    #[error("shared-memory protocol version {found}, this build speaks {expected}: host and guest binaries come from different ktstr builds")]
    BadVersion { found: u32, expected: u32 },
    #[error("shared-memory header is invalid: {0}")]
    BadHeader(String),
    #[error("guest write_pos {write_pos} is behind the host read_pos {read_pos}")]
    WritePosBehind { write_pos: u64, read_pos: u64 },
    #[error("guest write_pos {write_pos} is {ahead} bytes past read_pos {read_pos}, more than the ring holds ({ring_size})")]
    WritePosAhead {
        write_pos: u64,
        read_pos: u64,
        ahead: u64,
        ring_size: u64,
    },
    #[error("guest write_pos {write_pos} is not a multiple of 8 (frames are 8-byte aligned)")]
    WritePosMisaligned { write_pos: u64 },
    #[error(
        "frame at {pos}: only {committed} committed bytes, less than a {header}-byte frame header"
    )]
    TruncatedFrame {
        pos: u64,
        committed: u64,
        header: u64,
    },
    #[error("frame at {pos}: bad frame magic {found:#06x}, expected {expected:#06x}")]
    BadFrameMagic { pos: u64, found: u16, expected: u16 },
    #[error("frame at {pos}: payload length {len} exceeds the maximum {max}")]
    PayloadTooLarge { pos: u64, len: u64, max: u64 },
    #[error("frame at {pos}: {frame_bytes} bytes, but only {committed} are committed")]
    FrameBeyondCommitted {
        pos: u64,
        frame_bytes: u64,
        committed: u64,
    },
    #[error("frame at {pos} (seq {seq}): CRC {found:#010x} does not match the computed {computed:#010x}")]
    CrcMismatch {
        pos: u64,
        seq: u32,
        found: u32,
        computed: u32,
    },
    #[error("frame at {pos}: seq {found}, expected {expected} (a frame was lost or replayed)")]
    SeqGap { pos: u64, expected: u32, found: u32 },
    #[error("frame of kind {found} cannot be decoded as kind {expected}")]
    WrongKind { expected: u16, found: u16 },
    #[error("payload of {len} bytes exceeds the {max}-byte limit for {what}")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("cannot decode {what}: {reason}")]
    Decode { what: &'static str, reason: String },
}
