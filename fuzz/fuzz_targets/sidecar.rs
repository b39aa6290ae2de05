//! The sidecar reader (`cargo ktstr stats` and perf-delta read whatever is in a pool,
//! old shapes included). Whatever it accepts must write back as a sidecar that reads
//! back equal and that the reference's schema accepts.
#![no_main]

use std::path::Path;

use ktstr_sidecar::{conformance, read::parse_sidecar};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.ktstr.json");
    let Ok(sidecar) = parse_sidecar(data, path) else {
        return;
    };
    let text = sidecar
        .to_json_pretty()
        .expect("an accepted sidecar serialises");
    let back = parse_sidecar(text.as_bytes(), path).expect("a written sidecar reads back");
    assert_eq!(back, sidecar, "sidecar changed on a round trip");
    let report = conformance::check_value(&sidecar);
    assert!(
        report.accepted(),
        "the reference would reject what we write:\n{report}"
    );
});
