//! The store of warm-start snapshots: a guest booted once (per kernel, guest runtime,
//! engine and everything on its command line) to the point where its runtime waits for
//! work, saved by the engine, restored for every later run with the same key.
//!
//! Layout: `{kernel cache}/snapshots/{id}/` with the engine's files (qemu: `state`, the
//! device state, and `node{n}.ram`, guest RAM as sparse files), `meta.json` (the full key,
//! each file's length and checksum) and `console.log` (the boot that made it). A snapshot
//! directory appears whole (built in a private directory, renamed into place under a
//! lock) and leaves whole (renamed away, then removed). Lookup checks the key and the
//! lengths; the restore checks every byte against the checksums before the guest runs
//! ([`sparse_copy`], [`Snapshot::verify`]). Anything that does not match is removed and
//! rebuilt, never booted into.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::kernel::KernelCache;
use crate::scratch::ScratchDir;

/// `off` (or `0`, `no`, `false`) turns warm starts off; `cargo ktstr --no-snapshot` sets it.
pub const ENV: &str = "KTSTR_SNAPSHOT";

/// Bump when anything about how a snapshot is made or restored changes.
pub const FORMAT: u32 = 3;

/// Are warm starts on (`KTSTR_SNAPSHOT`)?
pub fn enabled() -> bool {
    enabled_by(std::env::var(ENV).ok().as_deref())
}

fn enabled_by(value: Option<&str>) -> bool {
    !matches!(
        value.map(|v| v.trim().to_ascii_lowercase()).as_deref(),
        Some("off" | "0" | "no" | "false")
    )
}

/// Errors of the snapshot store.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("no cache directory for snapshots: {0}")]
    NoCacheDir(#[source] crate::kernel::KernelError),
    #[error("snapshot store {path}: {source} (set KTSTR_SNAPSHOT=off to boot cold)")]
    Io { path: PathBuf, source: io::Error },
    #[error("building the snapshot failed: {0}")]
    Build(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A file a snapshot depends on, by path, size and modification time (a changed qemu
/// binary or kernel image is a different snapshot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    pub path: PathBuf,
    pub len: u64,
    pub mtime_ns: i64,
}

impl FileId {
    pub fn of(path: &Path) -> io::Result<Self> {
        let m = fs::metadata(path)?;
        Ok(FileId {
            path: path.to_path_buf(),
            len: m.len(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        })
    }
}

/// Everything a snapshot depends on. Two runs with equal keys boot identical guests up to
/// the point the snapshot is taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotKey {
    pub format: u32,
    pub engine: String,
    /// The engine's binary (qemu), when it has one.
    pub engine_binary: Option<FileId>,
    /// The kernel image booted.
    pub kernel: FileId,
    /// Content hash of the initramfs booted (the guest runtime and the kernel config).
    pub initrd_sha256: String,
    /// The engine's whole command line with per-run paths replaced by placeholders:
    /// topology, memory, kernel arguments, threading.
    pub args: Vec<String>,
}

impl SnapshotKey {
    /// Directory name: a hash of the whole key.
    pub fn id(&self) -> String {
        let json = serde_json::to_vec(self).expect("a key serialises");
        let digest = Sha256::digest(&json);
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// What `meta.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub key: SnapshotKey,
    /// Every file the engine saved, by name: length and [`Checksum`].
    pub files: std::collections::BTreeMap<String, Checksum>,
    /// How long the boot and save took.
    pub build_ms: u64,
    /// Which build this is (process and time): tells it from a later one in its place.
    pub build: String,
}

/// A file's length and the CRC-32 of its data extents (offset, length, bytes), so that a
/// sparse file of guest RAM is checked without reading its holes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksum {
    pub len: u64,
    pub crc32: u32,
}

/// Files of a snapshot directory that are not the engine's.
const OWN_FILES: [&str; 3] = ["meta.json", "console.log", USED];
/// Touched at every use: the least recently used snapshots go first.
const USED: &str = "used";
/// Snapshots kept per cache (each holds the RAM a booted guest touched, ~100 MB); past
/// it, the least recently used are removed when a new one is built.
pub const MAX_SNAPSHOTS: usize = 12;

/// A snapshot found in the store.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub dir: PathBuf,
    pub meta: Meta,
}

impl Snapshot {
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn console(&self) -> PathBuf {
        self.dir.join("console.log")
    }

    /// Read the file `name` whole and check it against `meta.json`.
    pub fn verify(&self, name: &str) -> Result<(), String> {
        let path = self.file(name);
        let sum =
            sparse_copy(&path, None).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        self.check(name, sum)
    }

    /// Does `sum` match what `meta.json` says of `name`?
    pub fn check(&self, name: &str, sum: Checksum) -> Result<(), String> {
        let want = self.meta.files.get(name).copied();
        if want != Some(sum) {
            return Err(format!(
                "{} is damaged: {} bytes with CRC {:#010x}, meta.json says {}",
                self.file(name).display(),
                sum.len,
                sum.crc32,
                want.map_or("nothing of it".into(), |w| format!(
                    "{} bytes with CRC {:#010x}",
                    w.len, w.crc32
                ))
            ));
        }
        Ok(())
    }
}

/// The [`Checksum`] of `src`, copying its data extents into `dst` at the same offsets
/// when given (`dst` keeps its holes: a copy of guest RAM allocates only what the guest
/// touched).
pub fn sparse_copy(src: &Path, dst: Option<&File>) -> io::Result<Checksum> {
    use std::os::unix::fs::FileExt;
    let f = File::open(src)?;
    let len = f.metadata()?.len();
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < len {
        let Some(start) = seek(&f, pos, libc::SEEK_DATA)? else {
            break;
        };
        let end = seek(&f, start, libc::SEEK_HOLE)?.unwrap_or(len);
        h.update(&start.to_le_bytes());
        h.update(&(end - start).to_le_bytes());
        let mut at = start;
        while at < end {
            let n = ((end - at) as usize).min(buf.len());
            f.read_exact_at(&mut buf[..n], at)?;
            h.update(&buf[..n]);
            if let Some(d) = dst {
                d.write_all_at(&buf[..n], at)?;
            }
            at += n as u64;
        }
        pos = end;
    }
    Ok(Checksum {
        len,
        crc32: h.finalize(),
    })
}

/// `lseek(fd, pos, whence)`; None past the last data (ENXIO).
fn seek(f: &File, pos: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    // SAFETY: lseek on a descriptor we own; no memory is passed.
    let r = unsafe { libc::lseek(f.as_raw_fd(), pos as libc::off_t, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(r as u64))
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    Found(Box<Snapshot>),
    Missing,
    /// There was one, but it did not match its key or its files were damaged; it has
    /// been removed.
    Removed(String),
}

/// The snapshot directory of a kernel cache.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    pub fn from_env() -> Result<Self, SnapshotError> {
        let cache = KernelCache::from_env().map_err(SnapshotError::NoCacheDir)?;
        Ok(Self::new(cache.root().join("snapshots")))
    }

    pub fn new(root: PathBuf) -> Self {
        Store { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, key: &SnapshotKey) -> PathBuf {
        self.root.join(key.id())
    }

    /// The snapshot for `key`, checked against its key and its state's length (the CRC
    /// is checked by the restore, while the engine loads it).
    pub fn lookup(&self, key: &SnapshotKey) -> Lookup {
        let dir = self.dir(key);
        let meta_path = dir.join("meta.json");
        let text = match fs::read(&meta_path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !dir.exists() => {
                return Lookup::Missing
            }
            Err(e) => return self.remove(key, format!("{}: {e}", meta_path.display())),
        };
        let meta: Meta = match serde_json::from_slice(&text) {
            Ok(m) => m,
            Err(e) => return self.remove(key, format!("{}: {e}", meta_path.display())),
        };
        if meta.key != *key {
            return self.remove(key, "it was made for another key (stale)".into());
        }
        let snap = Snapshot { dir, meta };
        if snap.meta.files.is_empty() {
            return self.remove(key, "meta.json lists no files".into());
        }
        for (name, sum) in &snap.meta.files {
            match fs::metadata(snap.file(name)) {
                Ok(m) if m.len() == sum.len => {}
                Ok(m) => {
                    return self.remove(
                        key,
                        format!("{name} has {} bytes, meta.json says {}", m.len(), sum.len),
                    )
                }
                Err(e) => return self.remove(key, format!("{name}: {e}")),
            }
        }
        Lookup::Found(Box::new(snap))
    }

    /// Remove `snap` found unusable, unless another process has already replaced it with
    /// a new build (which is not this one's to judge).
    pub fn remove_unusable(&self, snap: &Snapshot) {
        let now: Option<Meta> = fs::read(snap.dir.join("meta.json"))
            .ok()
            .and_then(|t| serde_json::from_slice(&t).ok());
        if now.is_none_or(|m| m.build == snap.meta.build) {
            self.remove_dir(&snap.meta.key.id());
        }
    }

    /// Remove the snapshot of `key` (renamed away first, so nobody sees half of it).
    pub fn remove(&self, key: &SnapshotKey, why: String) -> Lookup {
        self.remove_dir(&key.id());
        Lookup::Removed(why)
    }

    /// The snapshot for `key`, built by `build` when there is none: one builder at a
    /// time per key (the others wait and then find it). `build` writes the engine's files
    /// (and `console.log`) into the directory it is given and returns how long it took in
    /// ms; every file but the console is then checksummed into `meta.json`.
    pub fn get_or_build(
        &self,
        key: &SnapshotKey,
        build: impl FnOnce(&Path) -> Result<u64, String>,
    ) -> Result<(Snapshot, Option<String>), SnapshotError> {
        let mut removed = None;
        match self.lookup(key) {
            Lookup::Found(s) => {
                let _ = fs::write(s.dir.join(USED), b"");
                return Ok((*s, None));
            }
            Lookup::Removed(why) => removed = Some(why),
            Lookup::Missing => {}
        }
        fs::create_dir_all(&self.root).map_err(io_err(&self.root))?;
        let _lock = self.lock(key)?;
        // Someone else may have built it while we waited.
        if let Lookup::Found(s) = self.lookup(key) {
            return Ok((*s, removed));
        }
        let work = ScratchDir::create(&self.root, ".build-").map_err(io_err(&self.root))?;
        let build_ms = build(work.path()).map_err(SnapshotError::Build)?;
        let mut files = std::collections::BTreeMap::new();
        for entry in fs::read_dir(work.path()).map_err(io_err(work.path()))? {
            let entry = entry.map_err(io_err(work.path()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if OWN_FILES.contains(&name.as_str()) || name.starts_with('.') {
                continue;
            }
            let sum = sparse_copy(&entry.path(), None).map_err(io_err(&entry.path()))?;
            files.insert(name, sum);
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let meta = Meta {
            key: key.clone(),
            files,
            build_ms,
            build: format!("{}-{nanos}", std::process::id()),
        };
        let meta_path = work.path().join("meta.json");
        let text = serde_json::to_vec_pretty(&meta).expect("meta serialises");
        fs::write(&meta_path, text).map_err(io_err(&meta_path))?;
        let dir = self.dir(key);
        let built = work.keep();
        fs::rename(&built, &dir).map_err(io_err(&dir))?;
        let _ = fs::write(dir.join(USED), b"");
        self.prune(MAX_SNAPSHOTS);
        Ok((Snapshot { dir, meta }, removed))
    }

    /// Keep the `keep` most recently used snapshots; remove the others, and whatever is
    /// not a current snapshot (another format, a garbled `meta.json`).
    pub fn prune(&self, keep: usize) {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return;
        };
        let mut live = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !e.path().is_dir() {
                continue;
            }
            let meta: Option<Meta> = fs::read(e.path().join("meta.json"))
                .ok()
                .and_then(|t| serde_json::from_slice(&t).ok());
            match meta {
                Some(m) if m.key.format == FORMAT && m.key.id() == name => {
                    let used = fs::metadata(e.path().join(USED))
                        .and_then(|m| m.modified())
                        .unwrap_or(std::time::UNIX_EPOCH);
                    live.push((used, m.key));
                }
                // Another format, or damaged: never restored; a build in progress lives
                // under a dot name.
                _ => self.remove_dir(&name),
            }
        }
        live.sort_by_key(|e| std::cmp::Reverse(e.0));
        for (_, key) in live.into_iter().skip(keep) {
            self.remove(&key, "least recently used".into());
            let _ = fs::remove_file(self.root.join(format!("{}.lock", key.id())));
        }
    }

    fn remove_dir(&self, name: &str) {
        let trash = self
            .root
            .join(format!(".trash-{name}-{}", std::process::id()));
        if fs::rename(self.root.join(name), &trash).is_ok() {
            let _ = fs::remove_dir_all(&trash);
        }
    }

    /// An exclusive lock per key, held while building.
    fn lock(&self, key: &SnapshotKey) -> Result<File, SnapshotError> {
        let path = self.root.join(format!("{}.lock", key.id()));
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        // SAFETY: flock on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_err(&path)(io::Error::last_os_error()));
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(arg: &str) -> SnapshotKey {
        SnapshotKey {
            format: FORMAT,
            engine: "qemu-tcg".into(),
            engine_binary: None,
            kernel: FileId {
                path: "/k/vmlinux.elf".into(),
                len: 1,
                mtime_ns: 2,
            },
            initrd_sha256: "ab".into(),
            args: vec!["-smp".into(), arg.into()],
        }
    }

    fn build_with(bytes: &'static [u8]) -> impl FnOnce(&Path) -> Result<u64, String> {
        move |dir| {
            fs::write(dir.join("state"), bytes).map_err(|e| e.to_string())?;
            fs::write(dir.join("console.log"), b"booted").map_err(|e| e.to_string())?;
            Ok(7)
        }
    }

    #[test]
    fn off_switch() {
        assert!(enabled_by(None));
        assert!(enabled_by(Some("on")));
        for v in ["off", "OFF", "0", "no", "false"] {
            assert!(!enabled_by(Some(v)), "{v}");
        }
    }

    #[test]
    fn the_id_covers_every_part_of_the_key() {
        let a = key("2");
        assert_eq!(a.id(), key("2").id());
        assert_eq!(a.id().len(), 32);
        assert_ne!(a.id(), key("4").id());
        let mut b = a.clone();
        b.initrd_sha256 = "cd".into();
        assert_ne!(a.id(), b.id());
        let mut c = a.clone();
        c.kernel.mtime_ns += 1;
        assert_ne!(a.id(), c.id());
        let mut d = a.clone();
        d.format += 1;
        assert_ne!(a.id(), d.id());
    }

    #[test]
    fn built_once_then_found_and_verified() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::new(root.path().join("snapshots"));
        let k = key("2");
        assert!(matches!(store.lookup(&k), Lookup::Missing));
        let (s, removed) = store.get_or_build(&k, build_with(b"saved vm")).unwrap();
        assert_eq!(removed, None);
        assert_eq!(s.meta.files["state"].len, 8);
        assert_eq!(s.meta.files.len(), 1, "console.log is not checksummed");
        s.verify("state").unwrap();
        let (again, _) = store
            .get_or_build(&k, |_| panic!("must not rebuild"))
            .unwrap();
        assert_eq!(again.meta, s.meta);
        // Nothing but the snapshot and its lock is left behind.
        let mut names: Vec<String> = fs::read_dir(store.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [k.id(), format!("{}.lock", k.id())]);
    }

    #[test]
    fn pruning_keeps_the_most_recently_used_and_drops_foreign_formats() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::new(root.path().to_path_buf());
        let keys: Vec<SnapshotKey> = ["1", "2", "3"].iter().map(|a| key(a)).collect();
        for k in &keys {
            store.get_or_build(k, build_with(b"vm")).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Using the oldest makes it the newest.
        store.get_or_build(&keys[0], |_| panic!("built")).unwrap();
        let mut old = keys[1].clone();
        old.format = FORMAT - 1;
        fs::create_dir(store.root().join(old.id())).unwrap();
        store.prune(2);
        assert!(matches!(store.lookup(&keys[0]), Lookup::Found(_)));
        assert!(matches!(store.lookup(&keys[1]), Lookup::Missing));
        assert!(matches!(store.lookup(&keys[2]), Lookup::Found(_)));
        assert!(!store.root().join(old.id()).exists());
    }

    #[test]
    fn a_damaged_state_fails_verification() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::new(root.path().to_path_buf());
        let (s, _) = store
            .get_or_build(&key("2"), build_with(b"saved vm"))
            .unwrap();
        fs::write(s.file("state"), b"saved VM").unwrap();
        let e = s.verify("state").unwrap_err();
        assert!(e.contains("damaged"), "{e}");
    }

    #[test]
    fn truncated_stale_or_garbled_snapshots_are_removed_and_rebuilt() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::new(root.path().to_path_buf());
        let k = key("2");
        type Damage = fn(&Snapshot, &SnapshotKey);
        let damages: [(&str, Damage); 4] = [
            ("truncated", |s, _| {
                fs::write(s.file("state"), b"saved").unwrap()
            }),
            ("no state", |s, _| fs::remove_file(s.file("state")).unwrap()),
            ("garbled meta", |s, _| {
                fs::write(s.dir.join("meta.json"), b"{not json").unwrap()
            }),
            ("stale key", |s, k| {
                let mut m = s.meta.clone();
                m.key = SnapshotKey {
                    initrd_sha256: "other".into(),
                    ..k.clone()
                };
                fs::write(s.dir.join("meta.json"), serde_json::to_vec(&m).unwrap()).unwrap()
            }),
        ];
        for (what, damage) in damages {
            let (s, _) = store.get_or_build(&k, build_with(b"saved vm")).unwrap();
            damage(&s, &k);
            assert!(matches!(store.lookup(&k), Lookup::Removed(_)), "{what}");
            assert!(!s.dir.exists(), "{what}: removed");
            let (s, removed) = store.get_or_build(&k, build_with(b"saved vm")).unwrap();
            assert_eq!(removed, None, "{what}: the lookup above removed it");
            s.verify("state").unwrap();
            store.remove(&k, "next case".into());
        }
        // A damaged one found by get_or_build itself is reported and rebuilt.
        let (s, _) = store.get_or_build(&k, build_with(b"saved vm")).unwrap();
        fs::write(s.file("state"), b"x").unwrap();
        let (s, removed) = store.get_or_build(&k, build_with(b"saved vm")).unwrap();
        assert!(removed.unwrap().contains("bytes"));
        s.verify("state").unwrap();
    }

    #[test]
    fn sparse_copies_keep_holes_and_checksums_see_every_byte() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("ram");
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&src)
            .unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"kernel", 1 << 20).unwrap();
        f.write_all_at(b"page cache", 40 << 20).unwrap();
        let dst = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("copy"))
            .unwrap();
        dst.set_len(64 << 20).unwrap();
        let sum = sparse_copy(&src, Some(&dst)).unwrap();
        assert_eq!(sum.len, 64 << 20);
        let mut back = [0u8; 10];
        dst.read_exact_at(&mut back, 40 << 20).unwrap();
        assert_eq!(&back, b"page cache");
        // Only what was written takes room in the copy.
        assert!(dst.metadata().unwrap().blocks() * 512 < 8 << 20);
        // One byte changed anywhere in the data changes the checksum.
        f.write_all_at(b"K", 1 << 20).unwrap();
        assert_ne!(sparse_copy(&src, None).unwrap(), sum);
    }

    #[test]
    fn only_the_build_found_unusable_is_removed() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::new(root.path().to_path_buf());
        let k = key("2");
        let (first, _) = store.get_or_build(&k, build_with(b"vm")).unwrap();
        // Another process found it damaged and built it again meanwhile.
        store.remove(&k, "damaged".into());
        let (second, _) = store.get_or_build(&k, build_with(b"vm")).unwrap();
        store.remove_unusable(&first);
        assert!(
            matches!(store.lookup(&k), Lookup::Found(_)),
            "the new build stays"
        );
        store.remove_unusable(&second);
        assert!(matches!(store.lookup(&k), Lookup::Missing));
    }

    #[test]
    fn a_failed_build_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::new(root.path().to_path_buf());
        let k = key("2");
        let e = store
            .get_or_build(&k, |_| Err("qemu exploded".into()))
            .unwrap_err();
        assert!(e.to_string().contains("qemu exploded"), "{e}");
        assert!(matches!(store.lookup(&k), Lookup::Missing));
    }
}
