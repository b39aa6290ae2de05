//! The host's collector fed any sequence of frames (kinds, sequence numbers and payloads
//! from the input), as a guest that passed the ring checks could send. It must not panic
//! and must keep what it stores within the byte budgets.
#![no_main]

use std::time::Instant;

use ktstr::runner::collect::{Collector, OutputMode, TOTAL_BYTE_BUDGET};
use ktstr_wire::{Frame, Kind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut c = Collector::new(OutputMode::Capture, Instant::now());
    let mut rest = data;
    let mut seq = 0u32;
    let mut fed = 0u64;
    while rest.len() >= 3 {
        let kind = Kind(u16::from(rest[0] % 4));
        let len = usize::from(u16::from_le_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let payload = rest[3..3 + len].to_vec();
        fed += payload.len() as u64;
        c.frame(Frame { kind, seq, payload });
        seq = seq.wrapping_add(1);
        rest = &rest[3 + len..];
    }
    let d = &c.data;
    let kept = (d.stdout.len() + d.stderr.len() + d.scheduler_log.len()) as u64;
    assert!(
        kept <= fed.min(TOTAL_BYTE_BUDGET),
        "kept {kept} of {fed} bytes"
    );
});
