//! The kernel cache: one directory per kernel under the cache root, each holding
//! `bzImage`, `config`, `System.map` and `metadata.json`.
//!
//! Root: `KTSTR_CACHE_DIR`, else `$XDG_CACHE_HOME/ktstr/kernels`, else
//! `~/.cache/ktstr/kernels`. Entries are assembled in a staging directory under the root
//! and renamed into place, so a killed fetch leaves no half entry (only a `.staging-*`
//! directory that the next scan ignores and removes). Besides entries the root holds
//! `apt/` (the private apt configuration of [`super::fetch`]) and `initramfs/` (cached
//! initramfs parts); an entry is a directory with a `metadata.json`.

use std::cmp::Ordering;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{read_boot_header, KernelError, CACHE_DIR_ENV};

pub const IMAGE_FILE: &str = "bzImage";
pub const CONFIG_FILE: &str = "config";
pub const SYSTEM_MAP_FILE: &str = "System.map";
pub const METADATA_FILE: &str = "metadata.json";
const STAGING_PREFIX: &str = ".staging-";
const OLD_PREFIX: &str = ".old-";

/// What `metadata.json` records about a cached kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelMetadata {
    /// `uname -r` of the kernel, e.g. `7.2.13+deb14-cloud-amd64`.
    pub release: String,
    /// The image's whole `kernel_version` banner.
    #[serde(default)]
    pub banner: String,
    /// Where it came from, e.g. `debian:linux-binary-7.2.13+deb14-cloud-amd64`.
    pub source: String,
    /// The distribution package version, e.g. `7.2.13-1`, when known.
    #[serde(default)]
    pub package_version: Option<String>,
    /// `x86_64`.
    pub arch: String,
    /// RFC 3339 UTC time the entry was written.
    pub fetched_at: String,
    /// sha256 of `bzImage`.
    #[serde(default)]
    pub image_sha256: Option<String>,
    /// sha256 of `config`, if the entry has one.
    #[serde(default)]
    pub config_sha256: Option<String>,
    /// `CONFIG_SCHED_CLASS_EXT=y` in the config (false when there is no config).
    #[serde(default)]
    pub sched_ext: bool,
    /// `CONFIG_DEBUG_INFO_BTF=y` in the config.
    #[serde(default)]
    pub btf: bool,
    /// False when `System.map` is absent or a distribution placeholder without symbols.
    #[serde(default)]
    pub system_map_has_symbols: bool,
    /// How a source-built kernel was made (tree, commit, fragments, pahole); absent for
    /// fetched kernels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<super::build::BuildRecord>,
}

/// One valid cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    pub key: String,
    pub dir: PathBuf,
    pub metadata: KernelMetadata,
}

impl CacheEntry {
    pub fn image(&self) -> PathBuf {
        self.dir.join(IMAGE_FILE)
    }

    pub fn config(&self) -> Option<PathBuf> {
        Some(self.dir.join(CONFIG_FILE)).filter(|p| p.is_file())
    }

    pub fn system_map(&self) -> Option<PathBuf> {
        Some(self.dir.join(SYSTEM_MAP_FILE)).filter(|p| p.is_file())
    }

    /// Bytes used by the entry's files.
    pub fn size_bytes(&self) -> u64 {
        fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    }

    /// Reads an entry directory; `Err` says why it is not a valid entry.
    pub fn load(dir: &Path) -> Result<CacheEntry, KernelError> {
        let broken = |reason: String| KernelError::BrokenEntry {
            dir: dir.to_path_buf(),
            reason,
        };
        let key = dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| broken("directory name is not UTF-8".into()))?
            .to_string();
        let meta_path = dir.join(METADATA_FILE);
        let text = fs::read_to_string(&meta_path)
            .map_err(|e| broken(format!("reading {METADATA_FILE}: {e}")))?;
        let metadata: KernelMetadata = serde_json::from_str(&text)
            .map_err(|e| broken(format!("parsing {METADATA_FILE}: {e}")))?;
        if !dir.join(IMAGE_FILE).is_file() {
            return Err(broken(format!("{IMAGE_FILE} is missing")));
        }
        Ok(CacheEntry {
            key,
            dir: dir.to_path_buf(),
            metadata,
        })
    }
}

/// The result of scanning the cache root.
#[derive(Debug, Default)]
pub struct CacheScan {
    /// Valid entries, the default (newest release) first.
    pub entries: Vec<CacheEntry>,
    /// Directories that look like entries but are not valid, with the reason.
    pub broken: Vec<KernelError>,
}

/// The kernel cache root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelCache {
    root: PathBuf,
}

impl KernelCache {
    /// The cache named by the environment (see the module docs).
    pub fn from_env() -> Result<KernelCache, KernelError> {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let root = if let Some(d) = var(CACHE_DIR_ENV) {
            PathBuf::from(d)
        } else if let Some(x) = var("XDG_CACHE_HOME") {
            PathBuf::from(x).join("ktstr").join("kernels")
        } else if let Some(h) = var("HOME") {
            PathBuf::from(h)
                .join(".cache")
                .join("ktstr")
                .join("kernels")
        } else {
            return Err(KernelError::NoCacheDir);
        };
        Ok(KernelCache { root })
    }

    /// A cache rooted at `root` (tests, tools).
    pub fn at(root: impl Into<PathBuf>) -> KernelCache {
        KernelCache { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The private apt configuration and state used by `kernel fetch`.
    pub fn apt_dir(&self) -> PathBuf {
        self.root.join("apt")
    }

    /// Cached initramfs parts.
    pub fn initramfs_dir(&self) -> PathBuf {
        self.root.join("initramfs")
    }

    /// ELF vmlinux images decompressed from cached bzImages, by content hash
    /// ([`super::vmlinux`]).
    pub fn vmlinux_dir(&self) -> PathBuf {
        self.root.join("vmlinux")
    }

    /// Creates the root if needed.
    pub fn ensure_root(&self) -> Result<(), KernelError> {
        fs::create_dir_all(&self.root).map_err(|source| KernelError::Io {
            what: "creating kernel cache directory",
            path: self.root.clone(),
            source,
        })
    }

    /// All entries, the default first; leftover staging directories are removed.
    pub fn scan(&self) -> Result<CacheScan, KernelError> {
        let mut scan = CacheScan::default();
        let rd = match fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(scan),
            Err(source) => {
                return Err(KernelError::Io {
                    what: "reading kernel cache directory",
                    path: self.root.clone(),
                    source,
                })
            }
        };
        for dent in rd.flatten() {
            let path = dent.path();
            let name = dent.file_name().to_string_lossy().into_owned();
            if !path.is_dir() {
                continue;
            }
            if name.starts_with(STAGING_PREFIX) || name.starts_with(OLD_PREFIX) {
                // Left by a killed fetch; a live fetch holds it only briefly, and removing
                // a live one makes that fetch fail cleanly, never install half an entry.
                if is_stale(&path) {
                    let _ = fs::remove_dir_all(&path);
                }
                continue;
            }
            if name.starts_with('.') || !path.join(METADATA_FILE).exists() {
                continue;
            }
            match CacheEntry::load(&path) {
                Ok(e) => scan.entries.push(e),
                Err(e) => scan.broken.push(e),
            }
        }
        scan.entries.sort_by(newest_first);
        Ok(scan)
    }

    /// Valid entries, the default first.
    pub fn entries(&self) -> Result<Vec<CacheEntry>, KernelError> {
        Ok(self.scan()?.entries)
    }

    /// The entry used when no kernel is named: the highest release, then the latest fetch
    /// (a source-built kernel only when nothing was fetched).
    pub fn default_entry(&self) -> Result<Option<CacheEntry>, KernelError> {
        Ok(self.entries()?.into_iter().next())
    }

    /// The entry with this key, if present and valid.
    pub fn get(&self, key: &str) -> Result<Option<CacheEntry>, KernelError> {
        validate_key(key)?;
        let dir = self.root.join(key);
        if !dir.join(METADATA_FILE).exists() {
            return Ok(None);
        }
        CacheEntry::load(&dir).map(Some)
    }

    /// A fresh staging directory under the root; put the entry's files in it and pass it
    /// to [`KernelCache::install`]. Dropped unused, it is removed.
    pub fn stage(&self) -> Result<tempfile::TempDir, KernelError> {
        self.ensure_root()?;
        tempfile::Builder::new()
            .prefix(STAGING_PREFIX)
            .tempdir_in(&self.root)
            .map_err(|source| KernelError::Io {
                what: "creating staging directory in",
                path: self.root.clone(),
                source,
            })
    }

    /// Writes `metadata` into the staged directory (which must hold `bzImage`, and may
    /// hold `config` and `System.map`; anything else in it is removed first by the caller)
    /// and renames it to `<root>/<key>`. With `replace`, an existing entry is swapped out;
    /// without, an existing entry wins and is returned.
    pub fn install(
        &self,
        staged: tempfile::TempDir,
        key: &str,
        metadata: &KernelMetadata,
        replace: bool,
    ) -> Result<CacheEntry, KernelError> {
        validate_key(key)?;
        let src = staged.path().to_path_buf();
        let json = serde_json::to_string_pretty(metadata).expect("metadata serializes");
        let meta_path = src.join(METADATA_FILE);
        fs::write(&meta_path, json + "\n").map_err(|source| KernelError::Io {
            what: "writing",
            path: meta_path.clone(),
            source,
        })?;
        // Entries are read-only for everyone but their owner; make the staging dir
        // (created 0700 by tempfile) readable like any cache directory.
        set_mode(&src, 0o755);
        let dest = self.root.join(key);
        let rename_err = |source| KernelError::Io {
            what: "installing cache entry",
            path: dest.clone(),
            source,
        };
        let staged_path = staged.keep();
        if dest.exists() {
            if !replace {
                let _ = fs::remove_dir_all(&staged_path);
                return CacheEntry::load(&dest);
            }
            let old = self.root.join(format!(
                "{OLD_PREFIX}{key}-{}-{}",
                std::process::id(),
                unique_suffix()
            ));
            fs::rename(&dest, &old).map_err(rename_err)?;
            if let Err(e) = fs::rename(&staged_path, &dest) {
                let _ = fs::rename(&old, &dest);
                let _ = fs::remove_dir_all(&staged_path);
                return Err(rename_err(e));
            }
            let _ = fs::remove_dir_all(&old);
        } else if let Err(e) = fs::rename(&staged_path, &dest) {
            let _ = fs::remove_dir_all(&staged_path);
            // Someone else installed the same key meanwhile: theirs is as good as ours.
            if dest.join(METADATA_FILE).exists() {
                return CacheEntry::load(&dest);
            }
            return Err(rename_err(e));
        }
        CacheEntry::load(&dest)
    }
}

impl KernelCache {
    /// Removes the entry `key`: renamed aside first, so a concurrent reader sees the whole
    /// entry or none. False when there is no such entry.
    pub fn remove(&self, key: &str) -> Result<bool, KernelError> {
        validate_key(key)?;
        let dir = self.root.join(key);
        if !dir.join(METADATA_FILE).exists() {
            return Ok(false);
        }
        let aside = self.root.join(format!(
            "{OLD_PREFIX}{key}-{}-{}",
            std::process::id(),
            unique_suffix()
        ));
        fs::rename(&dir, &aside).map_err(|source| KernelError::Io {
            what: "removing cache entry",
            path: dir.clone(),
            source,
        })?;
        fs::remove_dir_all(&aside).map_err(|source| KernelError::Io {
            what: "removing cache entry",
            path: aside,
            source,
        })?;
        Ok(true)
    }

    /// The entries `kernel clean --keep N` removes: all but the `keep` most recently
    /// written.
    pub fn beyond_newest(&self, keep: usize) -> Result<Vec<CacheEntry>, KernelError> {
        let mut entries = self.entries()?;
        entries.sort_by(|a, b| b.metadata.fetched_at.cmp(&a.metadata.fetched_at));
        Ok(entries.into_iter().skip(keep).collect())
    }
}

/// Builds metadata for an image (and optional config/System.map) about to be cached.
pub fn describe(
    image: &Path,
    config: Option<&Path>,
    system_map: Option<&Path>,
    source: String,
    package_version: Option<String>,
) -> Result<KernelMetadata, KernelError> {
    let header = read_boot_header(image)?;
    let image_sha256 = Some(sha256_file(image)?);
    let (config_sha256, sched_ext, btf) = match config {
        Some(c) => {
            let text = fs::read(c).map_err(|source| KernelError::Io {
                what: "reading kernel config",
                path: c.to_path_buf(),
                source,
            })?;
            let text = String::from_utf8_lossy(&text);
            (
                Some(hex(&Sha256::digest(text.as_bytes()))),
                config_has(&text, "CONFIG_SCHED_CLASS_EXT"),
                config_has(&text, "CONFIG_DEBUG_INFO_BTF"),
            )
        }
        None => (None, false, false),
    };
    let system_map_has_symbols = system_map.is_some_and(map_has_symbols);
    Ok(KernelMetadata {
        release: header.release().to_string(),
        banner: header.banner.clone(),
        source,
        package_version,
        arch: "x86_64".into(),
        fetched_at: now_rfc3339(),
        image_sha256,
        config_sha256,
        sched_ext,
        btf,
        system_map_has_symbols,
        build: None,
    })
}

/// True when the kconfig text sets `option=y`.
pub fn config_has(config: &str, option: &str) -> bool {
    config
        .lines()
        .any(|l| l.trim() == format!("{option}=y").as_str())
}

/// A real System.map has thousands of symbol lines; Debian's placeholder has one.
fn map_has_symbols(path: &Path) -> bool {
    fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count() > 100)
        .unwrap_or(false)
}

pub(crate) fn sha256_file(path: &Path) -> Result<String, KernelError> {
    let mut f = fs::File::open(path).map_err(|source| KernelError::Io {
        what: "reading",
        path: path.to_path_buf(),
        source,
    })?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|source| KernelError::Io {
        what: "reading",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(hex(&h.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

/// A cache key is one directory name: non-empty, no `/`, not starting with `.`.
pub fn validate_key(key: &str) -> Result<(), KernelError> {
    let bad = |reason| KernelError::BadKey {
        key: key.to_string(),
        reason,
    };
    if key.is_empty() {
        return Err(bad("empty"));
    }
    if key.starts_with('.') {
        return Err(bad("starts with `.`"));
    }
    if key.contains('/') || key.contains('\0') {
        return Err(bad("contains `/` or NUL"));
    }
    if key == "apt" || key == "initramfs" || key == "vmlinux" {
        return Err(bad("reserved for the cache's own state"));
    }
    Ok(())
}

/// Orders entries so that the default comes first: higher release (natural order of
/// digit runs), then later `fetched_at`, then key.
/// Fetched kernels before source-built ones (a build of some branch must not silently
/// become every test's kernel: it boots when named), each highest release first.
fn newest_first(a: &CacheEntry, b: &CacheEntry) -> Ordering {
    (a.metadata.build.is_some())
        .cmp(&b.metadata.build.is_some())
        .then_with(|| natural_cmp(&b.metadata.release, &a.metadata.release))
        .then_with(|| b.metadata.fetched_at.cmp(&a.metadata.fetched_at))
        .then_with(|| a.key.cmp(&b.key))
}

/// Compares strings treating runs of digits as numbers: `6.9` < `6.10` < `7.2.13`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let na = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let nb = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (da, db) = (trim_zeros(&a[..na]), trim_zeros(&b[..nb]));
                let ord = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[na..];
                b = &b[nb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let z = d.iter().take_while(|&&c| c == b'0').count();
    &d[z.min(d.len().saturating_sub(1))..]
}

fn is_stale(path: &Path) -> bool {
    // A staging directory untouched for an hour belongs to a process that is gone.
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age.as_secs() > 3600)
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode));
}

fn unique_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kernel::image::fake_bzimage;

    /// Installs a fake entry whose image carries `release` in its banner.
    pub(crate) fn install_fake(
        cache: &KernelCache,
        key: &str,
        release: &str,
        config: Option<&str>,
    ) -> CacheEntry {
        let staged = cache.stage().unwrap();
        let img = staged.path().join(IMAGE_FILE);
        fs::write(
            &img,
            fake_bzimage(&format!("{release} (test@example) #1 SMP")),
        )
        .unwrap();
        let cfg = config.map(|c| {
            let p = staged.path().join(CONFIG_FILE);
            fs::write(&p, c).unwrap();
            p
        });
        let meta = describe(&img, cfg.as_deref(), None, format!("test:{key}"), None).unwrap();
        cache.install(staged, key, &meta, false).unwrap()
    }

    #[test]
    fn a_source_built_kernel_is_never_the_implicit_default() {
        let d = tempfile::tempdir().unwrap();
        let cache = KernelCache::at(d.path());
        install_fake(&cache, "debian-7.2.13", "7.2.13+deb14-cloud-amd64", None);
        let built = install_fake(&cache, "src-linux-abc1234-0011aabb", "7.3.0-rc1", None);
        let mut m = built.metadata.clone();
        m.build = Some(crate::kernel::build::BuildRecord {
            tree: "/src/linux".into(),
            commit: Some("abc1234".into()),
            source_version: None,
            base: "tree".into(),
            fragments: vec!["kernels/ktstr.kconfig".into()],
            extra: vec![],
            pahole: Some("1.32".into()),
            build_seconds: 1,
        });
        fs::write(
            built.dir.join(METADATA_FILE),
            serde_json::to_string(&m).unwrap(),
        )
        .unwrap();
        assert_eq!(cache.default_entry().unwrap().unwrap().key, "debian-7.2.13");
        let reread = cache.get("src-linux-abc1234-0011aabb").unwrap().unwrap();
        assert_eq!(reread.metadata.build, m.build);
        // Only built kernels cached: the newest built one is the default.
        assert!(cache.remove("debian-7.2.13").unwrap());
        assert_eq!(
            cache.default_entry().unwrap().unwrap().key,
            "src-linux-abc1234-0011aabb"
        );
    }

    #[test]
    fn clean_removes_named_entries_and_keeps_the_newest() {
        let d = tempfile::tempdir().unwrap();
        let cache = KernelCache::at(d.path());
        for (i, key) in ["a", "b", "c"].iter().enumerate() {
            let e = install_fake(&cache, key, &format!("7.2.{i}"), None);
            // Distinct write times, oldest first.
            let mut m = e.metadata.clone();
            m.fetched_at = format!("2026-01-0{}T00:00:00Z", i + 1);
            fs::write(
                e.dir.join(METADATA_FILE),
                serde_json::to_string(&m).unwrap(),
            )
            .unwrap();
        }
        let old: Vec<String> = cache
            .beyond_newest(1)
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(old, ["b", "a"]);
        assert!(cache.remove("a").unwrap());
        assert!(!cache.remove("a").unwrap());
        assert!(cache.remove("../x").is_err());
        let left: Vec<String> = cache
            .entries()
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(left.len(), 2);
        assert!(!left.contains(&"a".to_string()));
    }

    #[test]
    fn natural_order_of_releases() {
        assert_eq!(natural_cmp("6.9", "6.10"), Ordering::Less);
        assert_eq!(
            natural_cmp("7.2.13+deb14", "7.2.9+deb14"),
            Ordering::Greater
        );
        assert_eq!(natural_cmp("7.2.13", "7.2.13"), Ordering::Equal);
        assert_eq!(natural_cmp("7.2", "7.2.1"), Ordering::Less);
        assert_eq!(natural_cmp("007", "7"), Ordering::Equal);
    }

    #[test]
    fn install_scan_and_default() {
        let dir = tempfile::tempdir().unwrap();
        let cache = KernelCache::at(dir.path().join("kernels"));
        assert!(cache.default_entry().unwrap().is_none());
        install_fake(&cache, "a", "6.10.1-x", Some("CONFIG_SCHED_CLASS_EXT=y\n"));
        install_fake(&cache, "b", "6.9.20-x", None);
        // Cache state and leftovers of a killed fetch are not entries.
        fs::create_dir_all(cache.apt_dir()).unwrap();
        fs::create_dir_all(cache.root().join(".staging-dead")).unwrap();
        let scan = cache.scan().unwrap();
        assert!(scan.broken.is_empty());
        let keys: Vec<_> = scan.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["a", "b"]);
        let a = &scan.entries[0];
        assert_eq!(a.metadata.release, "6.10.1-x");
        assert!(a.metadata.sched_ext);
        assert!(a.config().is_some());
        assert!(a.metadata.config_sha256.is_some());
        assert!(!scan.entries[1].metadata.sched_ext);
        assert!(scan.entries[1].config().is_none());
        assert!(a.size_bytes() > 4096);
    }

    #[test]
    fn install_without_replace_keeps_existing_and_with_replace_swaps() {
        let dir = tempfile::tempdir().unwrap();
        let cache = KernelCache::at(dir.path());
        let first = install_fake(&cache, "k", "1.0.0", None);
        let staged = cache.stage().unwrap();
        let img = staged.path().join(IMAGE_FILE);
        fs::write(&img, fake_bzimage("2.0.0 #2")).unwrap();
        let meta = describe(&img, None, None, "test:new".into(), None).unwrap();
        let kept = cache.install(staged, "k", &meta, false).unwrap();
        assert_eq!(kept.metadata, first.metadata);

        let staged = cache.stage().unwrap();
        let img = staged.path().join(IMAGE_FILE);
        fs::write(&img, fake_bzimage("2.0.0 #2")).unwrap();
        let swapped = cache.install(staged, "k", &meta, true).unwrap();
        assert_eq!(swapped.metadata.release, "2.0.0");
        // Nothing but the entry remains in the root.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["k"]);
    }

    #[test]
    fn broken_entry_is_reported_not_returned() {
        let dir = tempfile::tempdir().unwrap();
        let cache = KernelCache::at(dir.path());
        install_fake(&cache, "good", "1.0.0", None);
        let bad = dir.path().join("bad");
        fs::create_dir_all(&bad).unwrap();
        fs::write(bad.join(METADATA_FILE), "{ not json").unwrap();
        let scan = cache.scan().unwrap();
        assert_eq!(scan.entries.len(), 1);
        assert_eq!(scan.broken.len(), 1);
        assert!(scan.broken[0]
            .to_string()
            .contains("corrupt kernel cache entry"));
    }

    #[test]
    fn keys_are_single_directory_names() {
        assert!(validate_key("debian-7.2.13+deb14-cloud-amd64").is_ok());
        for k in ["", ".x", "a/b", "apt", "initramfs", "vmlinux"] {
            assert!(validate_key(k).is_err(), "{k}");
        }
    }

    #[test]
    fn config_option_detection_is_exact() {
        let c = "CONFIG_SCHED_CLASS_EXT=y\n# CONFIG_IKCONFIG is not set\nCONFIG_BPF=m\n";
        assert!(config_has(c, "CONFIG_SCHED_CLASS_EXT"));
        assert!(!config_has(c, "CONFIG_IKCONFIG"));
        assert!(!config_has(c, "CONFIG_BPF"));
        assert!(!config_has(c, "CONFIG_SCHED_CLASS"));
    }
}
