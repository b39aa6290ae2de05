//! `KTSTR_KERNEL` resolution: from a path, a version, a cache key or nothing at all to one
//! bootable image with its release, config and provenance.
//!
//! A spec is tried, in order, as:
//! 1. a path, when it contains `/` or starts with `.` or `~`: a bzImage file, a kernel
//!    source tree (built, or its cached build reused, by [`super::build`]: the tree's own
//!    config plus `kernels/ktstr.kconfig`), a directory that only holds a built
//!    `arch/x86/boot/bzImage` (used as is), or a cache entry directory;
//! 2. a cache key (`debian-7.2.13+deb14-cloud-amd64`);
//! 3. a release or release prefix of a cached entry (`7.2.13+deb14-cloud-amd64`,
//!    `7.2.13`, `7.2`), the highest match winning;
//! 4. an existing relative path without a slash (`bzImage` in the current directory).
//!
//! Nothing named: the cache's default entry (the highest release).

use std::path::{Path, PathBuf};

use super::build::{self, BuildOutcome, BuildRequest, SourceTree};
use super::cache::{natural_cmp, CacheEntry, KernelCache, KernelMetadata, METADATA_FILE};
use super::{read_boot_header, KernelError, KERNEL_ENV};

/// How the kernel was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelOrigin {
    /// Named by the caller (`--kernel`).
    Explicit,
    /// Named by `KTSTR_KERNEL`.
    EnvVar,
    /// Nothing named: the cache's default entry.
    CacheDefault,
}

/// A kernel ready to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedKernel {
    /// The bzImage.
    pub image: PathBuf,
    /// `uname -r` of the kernel, e.g. `7.2.13+deb14-cloud-amd64`.
    pub release: String,
    /// The kernel config, packed into the initramfs as `/boot/config-<release>`.
    pub config: Option<PathBuf>,
    pub system_map: Option<PathBuf>,
    /// The source tree the image was built in (for `kernel_commit`).
    pub source_tree: Option<PathBuf>,
    /// The cache key, when the kernel comes from the cache.
    pub cache_key: Option<String>,
    /// The cache entry's metadata, when it comes from the cache.
    pub metadata: Option<KernelMetadata>,
    pub origin: KernelOrigin,
}

#[cfg(test)]
impl ResolvedKernel {
    /// A kernel that is never booted: for tests of what happens before or without a boot.
    pub(crate) fn unbootable(release: &str) -> Self {
        ResolvedKernel {
            image: "/nonexistent/bzImage".into(),
            release: release.into(),
            config: None,
            system_map: None,
            source_tree: None,
            cache_key: None,
            metadata: None,
            origin: KernelOrigin::Explicit,
        }
    }
}

/// Resolves `spec`, else `KTSTR_KERNEL`, else the default cached kernel, in the cache the
/// environment names.
pub fn resolve(spec: Option<&str>) -> Result<ResolvedKernel, KernelError> {
    let env = std::env::var(KERNEL_ENV)
        .ok()
        .filter(|s| !s.trim().is_empty());
    let (spec, origin) = match (spec, env.as_deref()) {
        (Some(s), _) => (Some(s), KernelOrigin::Explicit),
        (None, Some(s)) => (Some(s), KernelOrigin::EnvVar),
        (None, None) => (None, KernelOrigin::CacheDefault),
    };
    // A path needs no cache, so a missing HOME must not break `KTSTR_KERNEL=/path`.
    if let Some(s) = spec {
        if looks_like_path(s) {
            return resolve_path(&expand_tilde(s), None).map(|k| with_origin(k, origin));
        }
    }
    let cache = KernelCache::from_env()?;
    resolve_in(&cache, spec).map(|k| with_origin(k, origin))
}

/// Resolves `spec` (or, with `None`, the default entry) against `cache`, ignoring the
/// environment. The origin is `Explicit` for a spec, `CacheDefault` otherwise.
pub fn resolve_in(cache: &KernelCache, spec: Option<&str>) -> Result<ResolvedKernel, KernelError> {
    let Some(spec) = spec.map(str::trim) else {
        let entry = cache
            .default_entry()?
            .ok_or_else(|| KernelError::NoKernel {
                cache_dir: cache.root().to_path_buf(),
            })?;
        return from_entry(&entry, KernelOrigin::CacheDefault);
    };
    if looks_like_path(spec) {
        return resolve_path(&expand_tilde(spec), Some(cache));
    }
    let entries = cache.entries()?;
    if let Some(e) = entries.iter().find(|e| e.key == spec) {
        return from_entry(e, KernelOrigin::Explicit);
    }
    // Entries come sorted highest release first, so the first match is the newest.
    if let Some(e) = entries
        .iter()
        .find(|e| release_matches(&e.metadata.release, spec))
    {
        return from_entry(e, KernelOrigin::Explicit);
    }
    let p = Path::new(spec);
    if p.exists() {
        return resolve_path(p, Some(cache));
    }
    let mut cached: Vec<String> = entries.iter().map(|e| e.key.clone()).collect();
    cached.sort_by(|a, b| natural_cmp(a, b));
    Err(KernelError::NotFound {
        spec: spec.to_string(),
        cache_dir: cache.root().to_path_buf(),
        cached,
    })
}

/// `spec` is the release, or a prefix of it that ends at a component boundary
/// (`7.2` matches `7.2.13+deb14-cloud-amd64`; `7.2.1` does not match `7.2.13`).
fn release_matches(release: &str, spec: &str) -> bool {
    match release.strip_prefix(spec) {
        Some("") => true,
        Some(rest) => {
            let next = rest.as_bytes()[0];
            !next.is_ascii_alphanumeric() && !spec.ends_with(|c: char| !c.is_ascii_alphanumeric())
        }
        None => false,
    }
}

fn looks_like_path(s: &str) -> bool {
    s.contains('/') || s.starts_with('.') || s.starts_with('~')
}

fn expand_tilde(s: &str) -> PathBuf {
    match (s.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(s),
    }
}

fn with_origin(mut k: ResolvedKernel, origin: KernelOrigin) -> ResolvedKernel {
    k.origin = origin;
    k
}

fn from_entry(entry: &CacheEntry, origin: KernelOrigin) -> Result<ResolvedKernel, KernelError> {
    let image = entry.image();
    // A cached image is checked on every use: a damaged entry fails here, with its name.
    read_boot_header(&image).map_err(|e| KernelError::BrokenEntry {
        dir: entry.dir.clone(),
        reason: e.to_string(),
    })?;
    Ok(ResolvedKernel {
        image,
        release: entry.metadata.release.clone(),
        config: entry.config(),
        system_map: entry.system_map(),
        source_tree: None,
        cache_key: Some(entry.key.clone()),
        metadata: Some(entry.metadata.clone()),
        origin,
    })
}

/// `cache` is where a source tree's build goes (the environment's cache when None).
fn resolve_path(path: &Path, cache: Option<&KernelCache>) -> Result<ResolvedKernel, KernelError> {
    if !path.exists() {
        return Err(KernelError::PathMissing {
            path: path.to_path_buf(),
        });
    }
    let meta = std::fs::metadata(path).map_err(|source| KernelError::Io {
        what: "reading",
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() && !meta.is_dir() {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        let kind = if t.is_char_device() {
            "character device"
        } else if t.is_block_device() {
            "block device"
        } else if t.is_fifo() {
            "FIFO"
        } else {
            "special file"
        };
        return Err(KernelError::NotAFileOrDir {
            path: path.to_path_buf(),
            kind,
        });
    }
    if path.is_file() {
        let header = read_boot_header(path)?;
        return Ok(ResolvedKernel {
            image: path.to_path_buf(),
            release: header.release().to_string(),
            config: None,
            system_map: None,
            source_tree: None,
            cache_key: None,
            metadata: None,
            origin: KernelOrigin::Explicit,
        });
    }
    if path.join(METADATA_FILE).is_file() {
        let entry = CacheEntry::load(path)?;
        return from_entry(&entry, KernelOrigin::Explicit);
    }
    if build::source::is_kernel_tree(path) {
        return build_tree(path, cache);
    }
    let image = path.join("arch/x86/boot/bzImage");
    if image.is_file() {
        let header = read_boot_header(&image)?;
        let beside = |name: &str| Some(path.join(name)).filter(|p| p.is_file());
        return Ok(ResolvedKernel {
            image,
            release: header.release().to_string(),
            config: beside(".config"),
            system_map: beside("System.map"),
            source_tree: Some(path.to_path_buf()),
            cache_key: None,
            metadata: None,
            origin: KernelOrigin::Explicit,
        });
    }
    if path.join("Makefile").is_file() && path.join("Kconfig").is_file() {
        return Err(KernelError::SourceTreeNotBuilt {
            tree: path.to_path_buf(),
        });
    }
    Err(KernelError::NotAKernelDir {
        path: path.to_path_buf(),
    })
}

/// A source tree named as a kernel: build it (or reuse its cached build) and boot that.
fn build_tree(path: &Path, cache: Option<&KernelCache>) -> Result<ResolvedKernel, KernelError> {
    let owned;
    let cache = match cache {
        Some(c) => c,
        None => {
            owned = KernelCache::from_env()?;
            &owned
        }
    };
    let tree = SourceTree::in_cache(cache, path)?;
    let progress = super::Progress::auto();
    let outcome = build::build(cache, &BuildRequest::for_tree(tree), &progress)?;
    if let BuildOutcome::Reused(e) = &outcome {
        progress.note(&format!(
            "ktstr: {} unchanged since its cached build {}",
            path.display(),
            e.key
        ));
    }
    from_entry(outcome.entry(), KernelOrigin::Explicit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::cache::tests::install_fake;
    use crate::kernel::image::fake_bzimage;
    use std::fs;

    fn two_kernel_cache() -> (tempfile::TempDir, KernelCache) {
        let dir = tempfile::tempdir().unwrap();
        let cache = KernelCache::at(dir.path().join("kernels"));
        install_fake(
            &cache,
            "debian-7.2.13+deb14-cloud-amd64",
            "7.2.13+deb14-cloud-amd64",
            Some("CONFIG_SCHED_CLASS_EXT=y\n"),
        );
        install_fake(
            &cache,
            "debian-7.2.9+deb14-cloud-amd64",
            "7.2.9+deb14-cloud-amd64",
            None,
        );
        (dir, cache)
    }

    #[test]
    fn nothing_named_and_empty_cache_says_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let cache = KernelCache::at(dir.path());
        let e = resolve_in(&cache, None).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("no kernel: run `cargo ktstr kernel fetch` (or set KTSTR_KERNEL="));
    }

    #[test]
    fn nothing_named_picks_highest_release() {
        let (_d, cache) = two_kernel_cache();
        let k = resolve_in(&cache, None).unwrap();
        assert_eq!(k.release, "7.2.13+deb14-cloud-amd64");
        assert_eq!(k.origin, KernelOrigin::CacheDefault);
        assert_eq!(
            k.cache_key.as_deref(),
            Some("debian-7.2.13+deb14-cloud-amd64")
        );
        assert!(k.config.is_some());
        assert!(k.metadata.unwrap().sched_ext);
    }

    #[test]
    fn key_release_and_prefix() {
        let (_d, cache) = two_kernel_cache();
        let by_key = resolve_in(&cache, Some("debian-7.2.9+deb14-cloud-amd64")).unwrap();
        assert_eq!(by_key.release, "7.2.9+deb14-cloud-amd64");
        let by_release = resolve_in(&cache, Some("7.2.9+deb14-cloud-amd64")).unwrap();
        assert_eq!(by_release.cache_key, by_key.cache_key);
        assert_eq!(
            resolve_in(&cache, Some("7.2")).unwrap().release,
            "7.2.13+deb14-cloud-amd64"
        );
        assert_eq!(
            resolve_in(&cache, Some("7.2.9")).unwrap().release,
            "7.2.9+deb14-cloud-amd64"
        );
        // 7.2.1 is not a prefix of 7.2.13 at a component boundary.
        let e = resolve_in(&cache, Some("7.2.1")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("kernel `7.2.1` not found"), "{msg}");
        assert!(msg.contains("debian-7.2.13+deb14-cloud-amd64"), "{msg}");
    }

    #[test]
    fn bzimage_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bzImage");
        fs::write(&p, fake_bzimage("6.12.0-custom #3 SMP")).unwrap();
        let cache = KernelCache::at(dir.path().join("cache"));
        let k = resolve_in(&cache, Some(p.to_str().unwrap())).unwrap();
        assert_eq!(k.image, p);
        assert_eq!(k.release, "6.12.0-custom");
        assert!(k.cache_key.is_none() && k.source_tree.is_none());
    }

    #[test]
    fn non_kernel_path_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vmlinux");
        fs::write(&p, b"\x7fELF not a bzImage").unwrap();
        let cache = KernelCache::at(dir.path());
        let e = resolve_in(&cache, Some(p.to_str().unwrap())).unwrap_err();
        assert!(e
            .to_string()
            .contains("not a Linux kernel image (no HdrS boot header"));
        let e = resolve_in(&cache, Some("/no/such/bzImage")).unwrap_err();
        assert!(matches!(e, KernelError::PathMissing { .. }), "{e}");
    }

    #[test]
    fn source_tree_built_and_unbuilt() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("linux");
        fs::create_dir_all(tree.join("arch/x86/boot")).unwrap();
        fs::write(tree.join("Makefile"), "").unwrap();
        fs::write(tree.join("Kconfig"), "").unwrap();
        let cache = KernelCache::at(dir.path().join("cache"));
        let spec = tree.to_str().unwrap();
        assert!(matches!(
            resolve_in(&cache, Some(spec)),
            Err(KernelError::SourceTreeNotBuilt { .. })
        ));
        fs::write(
            tree.join("arch/x86/boot/bzImage"),
            fake_bzimage("7.3.0-rc1+ #1"),
        )
        .unwrap();
        fs::write(tree.join(".config"), "CONFIG_SCHED_CLASS_EXT=y\n").unwrap();
        let k = resolve_in(&cache, Some(spec)).unwrap();
        assert_eq!(k.release, "7.3.0-rc1+");
        assert_eq!(k.source_tree.as_deref(), Some(tree.as_path()));
        assert_eq!(k.config, Some(tree.join(".config")));
        assert!(k.system_map.is_none());
    }

    #[test]
    fn cache_entry_directory_as_path() {
        let (_d, cache) = two_kernel_cache();
        let dir = cache.root().join("debian-7.2.9+deb14-cloud-amd64");
        let k = resolve_in(&cache, Some(dir.to_str().unwrap())).unwrap();
        assert_eq!(
            k.cache_key.as_deref(),
            Some("debian-7.2.9+deb14-cloud-amd64")
        );
    }

    #[test]
    fn damaged_cached_image_names_the_entry() {
        let (_d, cache) = two_kernel_cache();
        let entry = cache.default_entry().unwrap().unwrap();
        fs::write(entry.image(), b"truncated").unwrap();
        let e = resolve_in(&cache, None).unwrap_err();
        assert!(matches!(e, KernelError::BrokenEntry { .. }), "{e}");
        assert!(e.to_string().contains("--force"), "{e}");
    }

    #[test]
    fn release_prefix_rules() {
        assert!(release_matches("7.2.13+deb14-cloud-amd64", "7.2.13"));
        assert!(release_matches("7.2.13+deb14-cloud-amd64", "7.2"));
        assert!(release_matches("7.2.13+deb14-cloud-amd64", "7.2.13+deb14"));
        assert!(!release_matches("7.2.13+deb14-cloud-amd64", "7.2.1"));
        assert!(!release_matches("7.2.13+deb14-cloud-amd64", "7.2."));
        assert!(!release_matches("7.2.13", "8"));
        assert!(!release_matches("7.2.13+deb14-cloud-amd64", "7.2.13+de"));
    }

    #[test]
    fn a_device_as_kernel_says_what_it_is() {
        let e = resolve_path(Path::new("/dev/null"), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not a kernel image but a character device"),
            "{e}"
        );
    }
}
