//! The test spec as the guest reads it (JSON), then the validator the host runs before
//! boot: whatever parses must validate or be refused without a panic, and must survive a
//! JSON round trip unchanged.
#![no_main]

use ktstr_wire::scenario::TopoSize;
use ktstr_wire::spec::GuestSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = GuestSpec::from_json(data) else {
        return;
    };
    for topo in [
        TopoSize::new(1, 1, 1),
        TopoSize::new(4, 2, 1),
        TopoSize::new(16, 4, 2),
    ] {
        if spec.validate(topo).is_ok() {
            if let Some(s) = spec.effective_scenario() {
                let _ = s.planned_ms(spec.duration_ms);
            }
        }
    }
    let _ = spec.work_type_name();
    let back = GuestSpec::from_json(&spec.to_json()).expect("a parsed spec re-encodes");
    assert_eq!(back, spec, "spec changed on a round trip");
});
