//! Warm start on the `qemu-tcg` engine: boot a guest once per snapshot key with the base
//! initramfs (the guest runtime) and an inbox, let its runtime park, and save it: qemu's
//! migration writes the device state to a file (`state`; with `x-ignore-shared`, guest
//! RAM stays out of the stream because it lives in shared files) and the RAM files are
//! copied beside it, sparse. For each run: copy the RAM back into fresh files (checking
//! every byte), start qemu paused with `-incoming` from the state file, write this run's
//! region header and its delivery (the rest of the initramfs, a seed, the host's clock)
//! into guest memory, and let it run. Loading the RAM through the migration stream
//! instead costs ~0.8 s per start under TCG; the copy ~0.1 s.
//!
//! Anything that goes wrong before the guest runs is the caller's cue to boot cold; a
//! snapshot that qemu cannot load or whose bytes do not match is removed and rebuilt.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use ktstr_wire::inbox::{self, Delivery};
use ktstr_wire::Mapping;
use serde_json::json;

use super::qemu::{self, last_lines, qemu_args, spawn, MemoryPlan, QemuGuest, Ram};
use super::qmp::Qmp;
use super::snapshot::{sparse_copy, FileId, Snapshot, SnapshotKey, Store, FORMAT};
use super::{budget_cpus, BootSpec, GuestStart, WarmStart};

/// Size of the inbox: room for a scheduler, payloads and their libraries. Guest RAM files
/// are sparse, so an unused inbox costs nothing; a test that brings more boots cold.
pub const INBOX_SIZE: u64 = 128 << 20;
/// Longest a snapshot's boot may take to reach the parked runtime.
const PARK_DEADLINE: Duration = Duration::from_secs(180);
/// Longest qemu may take to save or load a snapshot.
const MIGRATE_DEADLINE: Duration = Duration::from_secs(120);

/// Why a run cannot start warm (it boots cold instead, saying this).
#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    #[error("the test brings {mib} MiB of files, more than the warm-start inbox holds ({capacity_mib} MiB)")]
    TooBig { mib: usize, capacity_mib: usize },
    #[error(transparent)]
    Qemu(#[from] qemu::QemuError),
    #[error("cannot identify {} for the snapshot's key: {source}", path.display())]
    Identify {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] super::snapshot::SnapshotError),
    #[error("building this snapshot failed {minutes} min ago ({why}); it is tried again {} min after that, or now if you remove {}", RETRY_FAILED_BUILD.as_secs() / 60, marker.display())]
    FailedRecently {
        minutes: u64,
        why: String,
        marker: PathBuf,
    },
    #[error("cannot restore the snapshot: {0}")]
    Restore(String),
    #[error("the warm-start snapshot was unusable twice in a row ({0}); set KTSTR_SNAPSHOT=off and report it")]
    UnusableTwice(String),
}

/// Why a restore did not produce a running guest.
enum RestoreError {
    /// The snapshot is unusable: remove it and build it again.
    Damaged(String),
    /// Something else: boot cold.
    Failed(String),
}

/// Start `spec` from its snapshot, building the snapshot first when there is none.
/// `Err` says why the run should boot cold instead.
pub fn start(
    spec: &BootSpec,
    warm: &WarmStart,
    prepare: &mut dyn FnMut(&Mapping) -> anyhow::Result<()>,
) -> Result<QemuGuest, WarmError> {
    let capacity = inbox::capacity(INBOX_SIZE as usize);
    if warm.archive.len() > capacity {
        return Err(WarmError::TooBig {
            mib: warm.archive.len() >> 20,
            capacity_mib: capacity >> 20,
        });
    }
    let binary = qemu::find_binary().ok_or(qemu::QemuError::NotFound)?;
    let plan = MemoryPlan::new(spec.memory_mib, spec.topology.numa_nodes(), spec.shm_size)?
        .with_inbox(INBOX_SIZE);
    let boot = BootSpec {
        kernel: qemu::boot_image(&spec.kernel),
        initrd: warm.base_initrd.clone(),
        ..spec.clone()
    };
    let key = key_for(&binary, &boot, &plan, &warm.base_sha256)?;
    let store = Store::from_env()?;
    let failed = store.root().join(format!("{}.failed", key.id()));
    if let Some((minutes, why)) = recent_failure(&failed) {
        return Err(WarmError::FailedRecently {
            minutes,
            why: why.trim().to_string(),
            marker: failed,
        });
    }
    let mut unusable = String::new();
    for _ in 0..2 {
        let built = store.get_or_build(&key, |dir| {
            eprintln!(
                "ktstr: building the warm-start snapshot for {} with {} MiB (once per kernel, guest runtime and topology) ...",
                spec.topology, spec.memory_mib
            );
            let ms = build(&binary, &boot, &plan, dir)?;
            eprintln!("ktstr: snapshot saved in {:.1} s", ms as f64 / 1000.0);
            Ok(ms)
        });
        let (snap, removed) = match built {
            Ok(b) => b,
            Err(e) => {
                let _ = std::fs::create_dir_all(store.root());
                let _ = std::fs::write(&failed, format!("{e}\n"));
                return Err(e.into());
            }
        };
        let _ = std::fs::remove_file(&failed);
        if let Some(why) = removed {
            eprintln!("ktstr: removed a damaged warm-start snapshot ({why}) and built it again");
        }
        match restore(&binary, &boot, &plan, &snap, warm, prepare) {
            Ok(guest) => return Ok(guest),
            Err(RestoreError::Damaged(why)) => {
                eprintln!(
                    "ktstr: the warm-start snapshot {} is unusable ({why}); removing it",
                    snap.dir.display()
                );
                store.remove_unusable(&snap);
                unusable = why;
            }
            Err(RestoreError::Failed(why)) => return Err(WarmError::Restore(why)),
        }
    }
    // Twice in a row, once from a snapshot built just now: something systematic (qemu,
    // the host), not a damaged file. The next tests boot cold rather than rebuild.
    let _ = std::fs::write(&failed, format!("restoring failed twice: {unusable}\n"));
    Err(WarmError::UnusableTwice(unusable))
}

/// A failed build is not tried again by every test of the suite, only after this long.
const RETRY_FAILED_BUILD: Duration = Duration::from_secs(30 * 60);

/// The failure recorded at `path` (minutes ago, why), unless it is older than
/// [`RETRY_FAILED_BUILD`].
fn recent_failure(path: &Path) -> Option<(u64, String)> {
    let age = std::fs::metadata(path)
        .ok()?
        .modified()
        .ok()?
        .elapsed()
        .ok()?;
    if age > RETRY_FAILED_BUILD {
        return None;
    }
    Some((age.as_secs() / 60, std::fs::read_to_string(path).ok()?))
}

/// The key of the snapshot `boot` would make: qemu, kernel, base initramfs and the whole
/// command line (guest RAM paths replaced by placeholders).
fn key_for(
    binary: &Path,
    boot: &BootSpec,
    plan: &MemoryPlan,
    base_sha256: &str,
) -> Result<SnapshotKey, WarmError> {
    let placeholders: Vec<PathBuf> = (0..plan.nodes)
        .map(|n| PathBuf::from(format!("@node{n}")))
        .collect();
    let args = qemu_args(boot, plan, &placeholders)
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let id = |p: &Path| {
        FileId::of(p).map_err(|source| WarmError::Identify {
            path: p.to_path_buf(),
            source,
        })
    };
    Ok(SnapshotKey {
        format: FORMAT,
        engine: "qemu-tcg".into(),
        engine_binary: Some(id(binary)?),
        kernel: id(&boot.kernel)?,
        initrd_sha256: base_sha256.to_string(),
        args,
    })
}

/// `exec:` URIs run through `/bin/sh -c`.
fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

fn qmp_args(ram: &Ram) -> (PathBuf, [OsString; 2]) {
    let sock = ram.dir.path().join("qmp.sock");
    let arg = format!("unix:{},server=on,wait=off", sock.display());
    (sock, ["-qmp".into(), arg.into()])
}

/// Kill qemu and say what it printed.
fn abandon(child: &mut Child, stderr: &Path) -> String {
    let _ = child.kill();
    let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
    let text = std::fs::read_to_string(stderr).unwrap_or_default();
    format!("qemu {status}{}", last_lines(&text))
}

/// Boot `boot` to the parked runtime and save it as `dir/state`; the boot's console goes
/// to `dir/console.log`. Returns how long it took in ms.
fn build(binary: &Path, boot: &BootSpec, plan: &MemoryPlan, dir: &Path) -> Result<u64, String> {
    let t0 = Instant::now();
    let ram = Ram::create(plan).map_err(|e| e.to_string())?;
    let inbox = ram.inbox.as_ref().ok_or("the plan has no inbox")?;
    // SAFETY: the mapping lives in `ram` until the end of this function.
    let inbox = unsafe { ktstr_wire::SharedMem::from_raw(inbox.as_ptr(), inbox.len()) }
        .map_err(|e| e.to_string())?;
    let mut args = qemu_args(boot, plan, &ram.files);
    let (sock, qmp) = qmp_args(&ram);
    args.extend(qmp);
    let host_cpus = budget_cpus(boot.topology.vcpus(), boot.cpu_budget);
    let console = dir.join("console.log");
    let (mut child, stderr) =
        spawn(binary, &args, &ram, Some(&console), "", &host_cpus).map_err(|e| e.to_string())?;
    let until = t0 + PARK_DEADLINE;
    while !inbox::is_parked(&inbox) {
        if let Ok(Some(_)) = child.try_wait() {
            return Err(format!(
                "the snapshot's guest ended before its runtime parked: {}; console: {}",
                abandon(&mut child, &stderr),
                console.display()
            ));
        }
        if Instant::now() >= until {
            return Err(format!(
                "the snapshot's guest did not park within {} s: {}; console: {}",
                PARK_DEADLINE.as_secs(),
                abandon(&mut child, &stderr),
                console.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let saved = save(&sock, &dir.join("state"));
    let saved = saved.map_err(|e| format!("{e}: {}", abandon(&mut child, &stderr)));
    let _ = child.wait();
    saved?;
    for (n, ram_file) in ram.files.iter().enumerate() {
        let path = dir.join(ram_name(n));
        let copy = || -> std::io::Result<()> {
            let dst = std::fs::File::create(&path)?;
            dst.set_len(plan.node_size(n as u32))?;
            sparse_copy(ram_file, Some(&dst))?;
            Ok(())
        };
        copy().map_err(|e| format!("cannot save guest RAM to {}: {e}", path.display()))?;
    }
    Ok(t0.elapsed().as_millis() as u64)
}

/// Stop the guest, migrate it into `state`, quit qemu.
fn save(sock: &Path, state: &Path) -> Result<(), String> {
    let e = |e: super::qmp::QmpError| e.to_string();
    let mut qmp = Qmp::connect(sock, Duration::from_secs(10)).map_err(e)?;
    // The default migration bandwidth (32 MiB/s) is for networks, not a local file.
    qmp.execute(
        "migrate-set-parameters",
        Some(json!({ "max-bandwidth": 1u64 << 40 })),
    )
    .map_err(e)?;
    // Guest RAM is in shared files, saved by copying them: keep it out of the stream.
    ignore_shared(&mut qmp).map_err(e)?;
    qmp.execute("stop", None).map_err(e)?;
    let uri = format!("exec:cat > {}", shell_quote(state));
    qmp.execute("migrate", Some(json!({ "uri": uri })))
        .map_err(e)?;
    let until = Instant::now() + MIGRATE_DEADLINE;
    loop {
        let r = qmp.execute("query-migrate", None).map_err(e)?;
        match r.get("status").and_then(|s| s.as_str()) {
            Some("completed") => break,
            Some("failed" | "cancelled") => {
                let why = r
                    .get("error-desc")
                    .and_then(|s| s.as_str())
                    .unwrap_or("no reason given");
                return Err(format!("qemu could not save the snapshot: {why}"));
            }
            _ if Instant::now() >= until => {
                return Err(format!(
                    "saving the snapshot took more than {} s",
                    MIGRATE_DEADLINE.as_secs()
                ))
            }
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    // qemu exits; a lost reply to `quit` is fine.
    let _ = qmp.execute("quit", None);
    Ok(())
}

fn ram_name(node: usize) -> String {
    format!("node{node}.ram")
}

fn ignore_shared(qmp: &mut Qmp) -> Result<serde_json::Value, super::qmp::QmpError> {
    qmp.execute(
        "migrate-set-capabilities",
        Some(json!({ "capabilities": [{ "capability": "x-ignore-shared", "state": true }] })),
    )
}

/// Start qemu paused on `snap`, check it, deliver this run's work, resume.
fn restore(
    binary: &Path,
    boot: &BootSpec,
    plan: &MemoryPlan,
    snap: &Snapshot,
    warm: &WarmStart,
    prepare: &mut dyn FnMut(&Mapping) -> anyhow::Result<()>,
) -> Result<QemuGuest, RestoreError> {
    let failed = |e: String| RestoreError::Failed(e);
    let t0 = Instant::now();
    let ram = Ram::create(plan).map_err(|e| failed(e.to_string()))?;
    // Every byte of the saved RAM is checked as it is copied, the state file before qemu
    // reads it: the guest runs only if all of it is what was saved.
    for (n, path) in ram.files.iter().enumerate() {
        let name = ram_name(n);
        let copied = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|dst| sparse_copy(&snap.file(&name), Some(&dst)));
        let sum = copied.map_err(|e| {
            RestoreError::Damaged(format!("cannot copy {}: {e}", snap.file(&name).display()))
        })?;
        snap.check(&name, sum).map_err(RestoreError::Damaged)?;
    }
    snap.verify("state").map_err(RestoreError::Damaged)?;
    let copied_ms = t0.elapsed().as_millis();
    let mut args = qemu_args(boot, plan, &ram.files);
    let (sock, qmp) = qmp_args(&ram);
    args.extend(qmp);
    args.push("-S".into());
    // `defer`: the capability below must be set before the stream is read.
    args.push("-incoming".into());
    args.push("defer".into());
    let host_cpus = budget_cpus(boot.topology.vcpus(), boot.cpu_budget);
    let preamble = format!(
        "ktstr: warm start from the snapshot {} (its boot: {})\n",
        snap.dir.display(),
        snap.console().display()
    );
    let (mut child, stderr) = spawn(
        binary,
        &args,
        &ram,
        boot.serial_log.as_deref(),
        &preamble,
        &host_cpus,
    )
    .map_err(|e| failed(e.to_string()))?;
    let uri = format!("exec:cat {}", shell_quote(&snap.file("state")));
    let mut qmp = match wait_loaded(&sock, &uri) {
        Ok(qmp) => qmp,
        Err(why) => {
            let said = abandon(&mut child, &stderr);
            // qemu refusing a snapshot whose every byte is what was saved: a change of
            // qemu or machine the key missed, or a bug; either way not worth keeping.
            return Err(RestoreError::Damaged(format!("{why}: {said}")));
        }
    };
    tracing::debug!(
        "warm start: RAM copied after {copied_ms} ms, qemu loaded the state after {} ms",
        t0.elapsed().as_millis()
    );
    let delivered = (|| -> Result<(), String> {
        prepare(&ram.shm).map_err(|e| format!("{e:#}"))?;
        let inbox = ram.inbox.as_ref().ok_or("the plan has no inbox")?;
        // SAFETY: the inbox mapping lives in `ram`, which the guest object keeps.
        let inbox = unsafe { ktstr_wire::SharedMem::from_raw(inbox.as_ptr(), inbox.len()) }
            .map_err(|e| e.to_string())?;
        let delivery = Delivery {
            archive: warm.archive.to_vec(),
            seed: seed().map_err(|e| format!("cannot read /dev/urandom: {e}"))?,
            realtime_ns: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
        };
        inbox::deliver(&inbox, &delivery).map_err(|e| e.to_string())?;
        qmp.execute("cont", None).map_err(|e| e.to_string())?;
        Ok(())
    })();
    if let Err(why) = delivered {
        return Err(failed(format!("{why}: {}", abandon(&mut child, &stderr))));
    }
    tracing::debug!(
        "warm start: {} bytes delivered, guest resumed after {} ms",
        warm.archive.len(),
        t0.elapsed().as_millis()
    );
    Ok(QemuGuest {
        child,
        shm: ram.shm,
        mem_dir: Some(ram.dir),
        host_cpus,
        vcpus: boot.topology.vcpus(),
        killed: None,
        stderr_path: stderr,
        plan: *plan,
        start: GuestStart::Warm,
        snapshot: Some(snap.dir.clone()),
    })
}

/// Connect, have qemu read the state from `uri`, and wait until it has (paused, as
/// `-S` asks).
fn wait_loaded(sock: &Path, uri: &str) -> Result<Qmp, String> {
    let e = |e: super::qmp::QmpError| e.to_string();
    let mut qmp = Qmp::connect(sock, Duration::from_secs(10)).map_err(e)?;
    ignore_shared(&mut qmp).map_err(e)?;
    qmp.execute("migrate-incoming", Some(json!({ "uri": uri })))
        .map_err(e)?;
    let until = Instant::now() + MIGRATE_DEADLINE;
    loop {
        let status = qmp.status().map_err(e)?;
        match status.as_str() {
            "inmigrate" if Instant::now() < until => std::thread::sleep(Duration::from_millis(2)),
            "paused" | "prelaunch" => return Ok(qmp),
            other => return Err(format!("qemu did not load the snapshot (state `{other}`)")),
        }
    }
}

fn seed() -> std::io::Result<[u8; inbox::SEED_LEN]> {
    use std::io::Read;
    let mut s = [0u8; inbox::SEED_LEN];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut s)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_build_holds_warm_starts_off_for_a_while_only() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("k.failed");
        assert_eq!(recent_failure(&marker), None);
        std::fs::write(&marker, "qemu died\n").unwrap();
        assert_eq!(recent_failure(&marker), Some((0, "qemu died\n".into())));
        let old = std::time::SystemTime::now() - RETRY_FAILED_BUILD - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&marker)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(recent_failure(&marker), None);
    }

    #[test]
    fn paths_are_quoted_for_the_shell() {
        assert_eq!(shell_quote(Path::new("/a b/c")), "'/a b/c'");
        assert_eq!(shell_quote(Path::new("/it's")), r"'/it'\''s'");
    }
}
