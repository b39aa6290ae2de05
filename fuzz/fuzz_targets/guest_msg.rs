//! Decoding one guest message (the JSON payload of a MSG frame). Whatever decodes must
//! encode and decode back to the same message: the host never keeps a value it could
//! not write into a sidecar.
#![no_main]

use ktstr_wire::{decode_msg, encode_msg, Frame, Kind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let frame = Frame {
        kind: Kind::MSG,
        seq: 0,
        payload: data.to_vec(),
    };
    let Ok(msg) = decode_msg(&frame) else {
        return;
    };
    let again = Frame {
        payload: encode_msg(&msg),
        ..frame
    };
    let back = decode_msg(&again).expect("a decoded message re-encodes to valid JSON");
    assert_eq!(back, msg, "message changed on a round trip");
});
