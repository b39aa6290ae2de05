//! Writes the seed corpus of every fuzz target from the real encoders, so that the
//! fuzzers start from well-formed input: `make-seeds <corpus dir> <sidecar examples dir>`
//! (scripts/fuzz --seeds runs it). Every seed is checked to decode before it is written.

use std::fs;
use std::path::{Path, PathBuf};

use ktstr_wire::scenario::{Scenario, TopoSize};
use ktstr_wire::spec::{ExecSpec, GuestSpec, WorkKind, WorkerSpec};
use ktstr_wire::{
    decode_msg, encode_msg, init_header, Frame, Kind, OutputStream, SharedMem, Writer, HEADER_SIZE,
};

/// Ring size the ring target uses (keep in step with fuzz_targets/ring.rs).
const RING: usize = 8192;

fn main() {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(corpus), Some(sidecars)) = (args.next(), args.next()) else {
        eprintln!("usage: make-seeds <corpus dir> <sidecar examples dir>");
        std::process::exit(2);
    };
    let msgs = ktstr_wire::msg::examples();
    let encoded: Vec<Vec<u8>> = msgs.iter().map(encode_msg).collect();
    for (i, m) in encoded.iter().enumerate() {
        let f = Frame {
            kind: Kind::MSG,
            seq: 0,
            payload: m.clone(),
        };
        decode_msg(&f).expect("seed message decodes");
        put(&corpus, "guest_msg", &format!("msg-{i:02}"), m);
    }

    // Frames as the collector and the ring targets read them: kind, u16 length, payload.
    let mut frames: Vec<(Kind, Vec<u8>)> = encoded.iter().map(|m| (Kind::MSG, m.clone())).collect();
    frames.insert(1, (Kind::OUTPUT, OutputStream::Stdout.encode(b"0-3\n")));
    frames.insert(2, (Kind::OUTPUT, OutputStream::Stderr.encode(b"warning\n")));
    let mut stream = Vec::new();
    for (kind, payload) in &frames {
        stream.push(kind.0 as u8);
        stream.extend_from_slice(&(payload.len() as u16).to_le_bytes());
        stream.extend_from_slice(payload);
    }
    put(&corpus, "collector", "all-kinds", &stream);

    // Ring, mode 2: no flips, then the frames for the writer.
    let mut ring2 = vec![2u8];
    ring2.extend_from_slice(&[0; 8]);
    ring2.extend_from_slice(&stream);
    put(&corpus, "ring", "writer-frames", &ring2);
    // Modes 0 and 1: a region the real writer filled (ring wrapped once).
    let region = written_region(&frames);
    let write_pos = {
        let shm = &region;
        u64::from_le_bytes(shm[64..72].try_into().unwrap())
    };
    let mut ring0 = vec![0u8];
    ring0.extend_from_slice(&(write_pos as u16).to_le_bytes());
    ring0.extend_from_slice(&region[HEADER_SIZE as usize..]);
    put(&corpus, "ring", "host-header", &ring0);
    let mut ring1 = vec![1u8];
    ring1.extend_from_slice(&region);
    put(&corpus, "ring", "whole-region", &ring1);

    for (name, spec) in specs() {
        let json = spec.to_json();
        GuestSpec::from_json(&json).expect("seed spec parses");
        put(&corpus, "spec", &name, &json);
    }

    // Sidecars with every array of objects cut to two elements: all keys stay, and a seed fits the
    // fuzzer's input size limit (256 KiB for this target).
    let mut n = 0;
    let full = ktstr_sidecar::example::fully_populated()
        .to_json_pretty()
        .expect("example serialises");
    let mut docs = vec![("fully-populated.ktstr.json".to_string(), full.into_bytes())];
    for entry in fs::read_dir(&sidecars).expect("sidecar examples dir") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            docs.push((name, fs::read(&path).expect("sidecar example")));
        }
    }
    for (name, bytes) in docs {
        let mut doc: serde_json::Value = serde_json::from_slice(&bytes).expect("sidecar JSON");
        cut_arrays(&mut doc);
        let seed = serde_json::to_vec(&doc).expect("JSON");
        assert!(
            seed.len() <= 256 << 10,
            "{name}: seed of {} bytes",
            seed.len()
        );
        if let Err(e) = ktstr_sidecar::parse_sidecar(&seed, Path::new(&name)) {
            eprintln!("note: seed {name} is not a valid sidecar once cut: {e}");
        }
        put(&corpus, "sidecar", &name, &seed);
        n += 1;
    }
    eprintln!(
        "seeds: {} messages, {} specs, {} sidecars, 3 rings, 1 frame stream",
        encoded.len(),
        specs().len(),
        n
    );
}

fn put(corpus: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = corpus.join(target);
    fs::create_dir_all(&dir).expect("corpus dir");
    fs::write(dir.join(name), bytes).expect("write seed");
}

/// The ring target's region (header + RING bytes) after the writer wrote `frames` twice
/// over, the host reading as it goes, so the positions have wrapped.
fn written_region(frames: &[(Kind, Vec<u8>)]) -> Vec<u8> {
    let shm = SharedMem::new_owned(HEADER_SIZE as usize + RING);
    let layout = init_header(&shm).expect("header");
    let mut reader = ktstr_wire::Reader::new(&shm, layout);
    let mut writer = Writer::attach(&shm).expect("writer");
    for (kind, payload) in frames.iter().chain(frames) {
        if payload.len() as u64 > layout.max_payload() {
            continue;
        }
        while writer.try_write(*kind, payload).is_err() {
            reader
                .next_frame()
                .expect("reader")
                .expect("a frame to make room");
        }
    }
    let mut out = vec![0u8; shm.len()];
    shm.read_bytes(0, &mut out);
    out
}

fn specs() -> Vec<(String, GuestSpec)> {
    let topo = TopoSize::new(4, 2, 1);
    let mut out = Vec::new();
    for (name, scenario) in Scenario::canned(topo) {
        let mut spec = GuestSpec::new(format!("canned_{name}"), 3000);
        spec.scenario = Some(scenario);
        spec.num_snapshots = 2;
        out.push((format!("canned-{name}.json"), spec));
    }
    let mut flat = GuestSpec::new("flat_workers", 2000);
    flat.workers.push(WorkerSpec {
        group: "spin".into(),
        count: 2,
        work: WorkKind::Spin,
    });
    flat.materialize();
    out.push(("flat-workers.json".into(), flat));
    let mut exec = GuestSpec::new("shell", 0);
    exec.exec = Some(ExecSpec {
        argv: vec!["cat".into(), "/proc/cpuinfo".into()],
        env: vec![("LANG".into(), "C".into())],
    });
    out.push(("exec.json".into(), exec));
    out
}

fn cut_arrays(v: &mut serde_json::Value) {
    match v {
        // Arrays of numbers stay whole: some are fixed-size histograms.
        serde_json::Value::Array(a) if a.iter().all(serde_json::Value::is_number) => {}
        serde_json::Value::Array(a) => {
            a.truncate(2);
            a.iter_mut().for_each(cut_arrays);
        }
        serde_json::Value::Object(o) => o.values_mut().for_each(cut_arrays),
        _ => {}
    }
}
