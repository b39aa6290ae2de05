//! Property tests of the ring: byte-exact delivery across wrap-around, detection of
//! corrupted bytes, and no panics on garbage regions.

use proptest::prelude::*;

use crate::frame::frame_bytes;
use crate::layout::{offsets, Layout};
use crate::{init_header, Kind, Reader, SharedMem, TryWriteError, WireError, Writer};

/// Deterministic payload for frame `seq` of `len` bytes (differs between frames).
fn payload(seq: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seq.wrapping_mul(31).wrapping_add(i as u32 * 7) >> 1) as u8)
        .collect()
}

fn region(ring_exp: u32) -> (SharedMem, Layout) {
    let shm = SharedMem::new_owned(4096 + (1usize << ring_exp));
    let layout = init_header(&shm).unwrap();
    assert_eq!(layout.ring_size, 1 << ring_exp);
    (shm, layout)
}

/// Picks a payload length: 0, the maximum, or anything in between.
fn pick_len(sel: u8, x: u32, max: u64) -> usize {
    match sel {
        0 => 0,
        1 => max as usize,
        _ => (u64::from(x) % (max + 1)) as usize,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn interleaved_frames_survive_wrap_around(
        ring_exp in 12u32..=15,
        ops in prop::collection::vec((0u8..6, any::<u32>(), 0usize..4, any::<u16>()), 1..150),
    ) {
        let (shm, layout) = region(ring_exp);
        let mut reader = Reader::new(&shm, layout);
        let mut writer = Writer::attach(&shm).unwrap();
        let max = layout.max_payload();
        let mut expected = std::collections::VecDeque::new();
        let mut seq = 0u32;
        let check = |f: crate::Frame, expected: &mut std::collections::VecDeque<(Kind, Vec<u8>)>| {
            let (kind, p) = expected.pop_front().expect("reader returned an extra frame");
            assert_eq!(f.kind, kind);
            assert_eq!(f.payload, p);
        };
        for (sel, x, drain, kind_bits) in ops {
            let len = pick_len(sel, x, max);
            let p = payload(seq, len);
            // Kinds 1..=3 are delivered; others skipped.
            let kind = Kind(1 + kind_bits % 3);
            loop {
                match writer.try_write(kind, &p) {
                    Ok(()) => break,
                    Err(TryWriteError::Full { .. }) => {
                        let f = reader.next_frame().unwrap().expect("ring full but reader sees nothing");
                        check(f, &mut expected);
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            expected.push_back((kind, p));
            seq += 1;
            for _ in 0..drain {
                match reader.next_frame().unwrap() {
                    Some(f) => check(f, &mut expected),
                    None => break,
                }
            }
        }
        while let Some(f) = reader.next_frame().unwrap() {
            check(f, &mut expected);
        }
        prop_assert!(expected.is_empty());
        prop_assert_eq!(reader.stats().frames_read, u64::from(seq));
        prop_assert_eq!(reader.read_pos(), shm.load_u64(offsets::WRITE_POS));
    }

    #[test]
    fn a_corrupted_byte_is_detected_or_harmless(
        ring_exp in 12u32..=13,
        advance in prop::collection::vec(0usize..600, 0..12),
        lens in prop::collection::vec((0u8..6, any::<u32>()), 1..12),
        target in any::<prop::sample::Index>(),
        in_write_pos in prop::bool::weighted(0.2),
        flip in 1u8..=255,
    ) {
        let (shm, layout) = region(ring_exp);
        let mut reader = Reader::new(&shm, layout);
        let mut writer = Writer::attach(&shm).unwrap();
        // Move the positions so that later frames wrap around the ring end.
        for (i, len) in advance.iter().enumerate() {
            writer.try_write(Kind::MSG, &payload(i as u32, *len)).unwrap();
            reader.next_frame().unwrap().unwrap();
        }
        let start = reader.read_pos();
        // Frames committed but not read: (payload, first byte, end of payload, end of frame).
        let mut frames = Vec::new();
        let mut pos = start;
        for (i, (sel, x)) in lens.into_iter().enumerate() {
            let len = pick_len(sel, x, 300.min(layout.max_payload()));
            let p = payload(1000 + i as u32, len);
            if writer.try_write(Kind::MSG, &p).is_err() {
                break;
            }
            let size = frame_bytes(len as u64);
            frames.push((p, pos, pos + 16 + len as u64, pos + size));
            pos += size;
        }
        let committed = pos - start;
        prop_assume!(committed > 0);

        // The index of the first frame whose non-padding bytes changed, if any.
        let mut must_fail_at = None;
        if in_write_pos {
            let byte = target.index(8);
            let off = offsets::WRITE_POS + byte;
            let mut b = [0u8];
            shm.read_bytes(off, &mut b);
            shm.write_bytes(off, &[b[0] ^ flip]);
        } else {
            let p = start + target.index(committed as usize) as u64;
            let off = layout.ring_at(p);
            let mut b = [0u8];
            shm.read_bytes(off, &mut b);
            shm.write_bytes(off, &[b[0] ^ flip]);
            let i = frames.iter().position(|f| p < f.3).unwrap();
            if p < frames[i].2 {
                must_fail_at = Some(i);
            }
        }

        let mut got = Vec::new();
        let end = loop {
            match reader.next_frame() {
                Ok(Some(f)) => got.push(f),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        prop_assert!(got.len() <= frames.len());
        for (g, f) in got.iter().zip(&frames) {
            prop_assert_eq!(&g.payload, &f.0, "a returned frame differs from what was written");
        }
        match must_fail_at {
            Some(i) => {
                prop_assert!(end.is_err(), "corruption in frame {} went unnoticed", i);
                prop_assert_eq!(got.len(), i);
            }
            None if !in_write_pos => {
                prop_assert_eq!(end, Ok(()));
                prop_assert_eq!(got.len(), frames.len());
            }
            None => {}
        }
    }

    #[test]
    fn oversized_lengths_are_rejected(ring_exp in 12u32..=16, extra in 1u64..=u64::from(u32::MAX)) {
        let (shm, layout) = region(ring_exp);
        let len = (layout.max_payload() + extra).min(u64::from(u32::MAX)) as u32;
        let mut h = [0u8; 16];
        h[..2].copy_from_slice(b"KF");
        h[2..4].copy_from_slice(&1u16.to_le_bytes());
        h[4..8].copy_from_slice(&len.to_le_bytes());
        layout.ring_write(&shm, 0, &h);
        shm.store_u64(offsets::WRITE_POS, layout.ring_size);
        let mut reader = Reader::new(&shm, layout);
        let rejected = matches!(reader.next_frame(), Err(WireError::PayloadTooLarge { .. }));
        prop_assert!(rejected);
    }

    #[test]
    fn garbage_regions_are_rejected(bytes in prop::collection::vec(any::<u8>(), 0..10_000)) {
        let shm = SharedMem::new_owned(bytes.len());
        shm.write_bytes(0, &bytes);
        prop_assert!(Writer::attach(&shm).is_err());
        prop_assert!(Reader::attach(&shm).is_err());
    }

    #[test]
    fn garbage_rings_never_yield_frames(
        ring_exp in 12u32..=13,
        write_pos in prop_oneof![any::<u64>(), (0u64..1024).prop_map(|x| x * 8)],
        seed in any::<u64>(),
    ) {
        let (shm, layout) = region(ring_exp);
        let mut state = seed | 1;
        let garbage: Vec<u8> = (0..layout.ring_size)
            .map(|_| {
                // xorshift64: cheap deterministic noise.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        shm.write_bytes(layout.ring_offset as usize, &garbage);
        shm.store_u64(offsets::WRITE_POS, write_pos);
        let mut reader = Reader::new(&shm, layout);
        let r = reader.next_frame();
        prop_assert!(matches!(r, Err(_) | Ok(None)), "garbage accepted: {:?}", r);
        prop_assert_eq!(r.is_ok(), write_pos == 0);
    }
}

#[test]
fn threaded_writer_and_reader_agree() {
    let (shm, layout) = region(12);
    let mut reader = Reader::new(&shm, layout);
    let writer_shm = shm.clone();
    const N: u32 = 5000;
    let t = std::thread::spawn(move || {
        let mut w = Writer::attach(&writer_shm).unwrap();
        for seq in 0..N {
            let p = payload(seq, (seq as usize * 37) % 700);
            w.write(Kind::OUTPUT, &p, std::thread::yield_now).unwrap();
        }
        w.backpressure_waits()
    });
    let mut seq = 0;
    while seq < N {
        match reader.next_frame().unwrap() {
            Some(f) => {
                assert_eq!(f.seq, seq);
                assert_eq!(f.payload, payload(seq, (seq as usize * 37) % 700));
                seq += 1;
            }
            None => std::thread::yield_now(),
        }
    }
    let waits = t.join().unwrap();
    assert_eq!(reader.stats().backpressure_waits, waits);
    assert_eq!(reader.next_frame(), Ok(None));
}
