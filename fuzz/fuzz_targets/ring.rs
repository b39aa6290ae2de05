//! The host's ring reader against a region the guest controls: positions, frame headers,
//! CRCs and payload bytes are all the guest's to choose. The reader must never panic,
//! never return a frame larger than the ring allows, and stay failed once it failed.
#![no_main]

use ktstr_wire::{decode_msg, init_header, offsets, Kind, Reader, SharedMem, Writer, HEADER_SIZE};
use libfuzzer_sys::fuzz_target;

/// A small ring, so that wrap-around and "full" are reached with short inputs.
const RING: usize = 8192;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let shm = SharedMem::new_owned(HEADER_SIZE as usize + RING);
    let reader = match mode % 3 {
        0 => guest_positions_and_bytes(&shm, rest),
        1 => guest_header_too(&shm, rest),
        _ => valid_frames_then_flips(&shm, rest),
    };
    let Some(mut reader) = reader else {
        return;
    };
    drain(&mut reader);
});

/// A header the host wrote; the guest wrote the ring bytes and its write position.
fn guest_positions_and_bytes(shm: &SharedMem, rest: &[u8]) -> Option<Reader> {
    let layout = init_header(shm).expect("region is large enough");
    let (pos, ring) = rest.split_at(rest.len().min(2));
    let mut p = [0u8; 2];
    p[..pos.len()].copy_from_slice(pos);
    shm.write_bytes(HEADER_SIZE as usize, &ring[..ring.len().min(RING)]);
    shm.store_u64(offsets::WRITE_POS, u64::from(u16::from_le_bytes(p)));
    Some(Reader::new(shm, layout))
}

/// Every byte from the guest, the header included (a host attaching to a region it did
/// not initialise must refuse a bad header, not trust it).
fn guest_header_too(shm: &SharedMem, rest: &[u8]) -> Option<Reader> {
    shm.write_bytes(0, &rest[..rest.len().min(shm.len())]);
    Reader::attach(shm).ok()
}

/// Well-formed frames from the real writer (kind, length and payload from the input),
/// then bit flips at input-chosen offsets: gets past the CRC to the decoders, and tests
/// that a flip anywhere is caught.
fn valid_frames_then_flips(shm: &SharedMem, rest: &[u8]) -> Option<Reader> {
    let layout = init_header(shm).expect("region is large enough");
    let reader = Reader::new(shm, layout);
    let mut writer = Writer::attach(shm).ok()?;
    let (flips, mut frames) = rest.split_at(rest.len().min(8));
    while frames.len() >= 3 {
        let kind = Kind(u16::from(frames[0] % 4));
        let len = usize::from(u16::from_le_bytes([frames[1], frames[2]])).min(frames.len() - 3);
        if writer.try_write(kind, &frames[3..3 + len]).is_err() {
            break;
        }
        frames = &frames[3 + len..];
    }
    // A pair flips one bit when its second byte has the top bit set (so a seed of
    // zeroes flips nothing).
    for pair in flips.chunks_exact(2).filter(|p| p[1] & 0x80 != 0) {
        let at = HEADER_SIZE as usize + usize::from(pair[0]) * (RING / 256);
        let mut b = [0u8];
        shm.read_bytes(at, &mut b);
        shm.write_bytes(at, &[b[0] ^ (1 << (pair[1] & 7))]);
    }
    Some(reader)
}

fn drain(reader: &mut Reader) {
    let max = reader.layout().max_payload();
    for _ in 0..4096 {
        match reader.next_frame() {
            Ok(Some(frame)) => {
                assert!(frame.payload.len() as u64 <= max, "frame over the limit");
                if frame.kind == Kind::MSG {
                    let _ = decode_msg(&frame);
                } else if frame.kind == Kind::OUTPUT {
                    let _ = frame.output();
                }
            }
            Ok(None) => return,
            Err(_) => {
                assert!(reader.next_frame().is_err(), "a failed reader recovered");
                return;
            }
        }
    }
}
