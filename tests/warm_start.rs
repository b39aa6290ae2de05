//! Warm starts on a real kernel (qemu-tcg): a damaged or stale snapshot is detected,
//! removed and rebuilt, never booted into; and a restored guest notices nothing of the
//! snapshot: two restores of the same snapshot draw different random numbers and read
//! the host's wall clock.
//!
//! Skips (saying why) on another engine or with snapshots off (`KTSTR_SNAPSHOT=off`, the
//! cold pass of CI).

mod common;

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use ktstr::assert::Assert;
use ktstr::engine::snapshot::{self, Meta};
use ktstr::engine::{EngineKind, GuestStart};
use ktstr::kernel::ResolvedKernel;
use ktstr::runner::RunRequest;
use ktstr::scenario::{CgroupDef, Scenario, Step};
use ktstr_wire::spec::ExecSpec;

fn warm_prerequisites() -> Option<(ResolvedKernel, EngineKind)> {
    let (kernel, engine) = common::prerequisites()?;
    if engine != EngineKind::QemuTcg || !snapshot::enabled() {
        eprintln!(
            "SKIP: warm starts need the qemu-tcg engine and snapshots on ({engine}, {}={:?})",
            snapshot::ENV,
            std::env::var(snapshot::ENV).ok()
        );
        return None;
    }
    Some((kernel, engine))
}

fn spin(name: &str, pre: (ResolvedKernel, EngineKind)) -> RunRequest {
    let scenario = Scenario::new()
        .cgroup(CgroupDef::new("a").workers(2))
        .step(Step::new("spin", ktstr::scenario::Hold::Fraction(1.0)));
    let mut req = common::request(name, "1n1l2c1t", scenario, 1000, pre);
    // These tests judge the snapshot, not the scheduler: one second of two spinners
    // under TCG is too short for the fairness gate (a CI run saw 25.4 pp against its
    // 25). The workers must still all progress, so a restored guest that does not run
    // fails.
    req.assert = Assert {
        max_spread_pct: None,
        ..Assert::default()
    };
    req
}

/// Run `req`, which must pass warm; the snapshot it restored.
fn run_warm(req: &RunRequest) -> PathBuf {
    let r = common::run(req);
    assert!(r.sidecar.passed, "{}", common::explain(&r));
    let start = r.sidecar.host.as_ref().and_then(|h| h.start);
    assert_eq!(start, Some(GuestStart::Warm), "{}", common::explain(&r));
    r.out
        .engine
        .snapshot
        .clone()
        .expect("a warm start names its snapshot")
}

fn meta_inode(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("meta.json")).unwrap().ino()
}

#[test]
fn a_damaged_or_stale_snapshot_is_rebuilt_never_booted_into() {
    let Some(pre) = warm_prerequisites() else {
        return;
    };
    let req = spin("warm_damaged_snapshot", pre);
    let dir = run_warm(&req);
    let made = meta_inode(&dir);

    // One byte of saved guest RAM changed (the kernel's text starts at 16 MiB).
    let ram = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("node0.ram"))
        .unwrap();
    let mut byte = [0u8; 1];
    std::fs::File::open(dir.join("node0.ram"))
        .unwrap()
        .read_exact_at(&mut byte, 16 << 20)
        .unwrap();
    ram.write_all_at(&[byte[0] ^ 0xff], 16 << 20).unwrap();
    drop(ram);
    let again = run_warm(&req);
    assert_eq!(again, dir, "same key, same directory");
    let rebuilt = meta_inode(&dir);
    assert_ne!(rebuilt, made, "the damaged snapshot was rebuilt");

    // A snapshot whose meta.json names another key (stale) is not restored either.
    let meta_path = dir.join("meta.json");
    let mut meta: Meta = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    meta.key.initrd_sha256 = "0".repeat(64);
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
    run_warm(&req);
    assert_ne!(meta_inode(&dir), rebuilt, "the stale snapshot was rebuilt");

    // Truncated state: caught by the length check at lookup.
    std::fs::write(dir.join("state"), b"QEVM").unwrap();
    run_warm(&req);
    let back: Meta = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    assert!(back.files["state"].len > 4);
}

#[test]
fn restored_guests_draw_fresh_randomness_and_read_the_hosts_clock() {
    let Some(pre) = warm_prerequisites() else {
        return;
    };
    let mut req = spin("warm_fresh_guest", pre);
    req.spec.scenario = None;
    req.includes = vec!["/bin/sh".into(), "/bin/cat".into(), "/bin/date".into()];
    req.spec.exec = Some(ExecSpec {
        argv: [
            "/bin/sh",
            "-c",
            "/bin/cat /proc/sys/kernel/random/uuid; /bin/date +%s",
        ]
        .map(String::from)
        .to_vec(),
        env: Vec::new(),
    });
    let mut seen = Vec::new();
    for _ in 0..2 {
        let r = common::run(&req);
        assert!(r.sidecar.passed, "{}", common::explain(&r));
        assert_eq!(
            r.sidecar.host.as_ref().and_then(|h| h.start),
            Some(GuestStart::Warm)
        );
        let out = String::from_utf8_lossy(&r.out.collected.stdout).into_owned();
        let mut lines = out.lines();
        let uuid = lines.next().unwrap_or_default().to_string();
        let guest_now: i64 = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0);
        let host_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert_eq!(uuid.len(), 36, "a uuid: {out:?}");
        assert!(
            (host_now - guest_now).abs() < 30,
            "the guest's clock ({guest_now}) is the host's ({host_now})"
        );
        seen.push(uuid);
    }
    assert_ne!(
        seen[0], seen[1],
        "two restores of one snapshot drew the same random uuid"
    );
}
