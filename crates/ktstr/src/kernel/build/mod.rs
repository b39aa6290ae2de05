//! `cargo ktstr kernel build`: a kernel from a source tree into the kernel cache.
//!
//! In order: lock the tree; find (or privately fetch) pahole >= 1.26; write the base
//! config (the tree's `.config`, `defconfig`, `allnoconfig` or a file) with
//! `kernels/ktstr.kconfig`, the user's fragments and `--extra-kconfig` lines appended;
//! `make olddefconfig`; check that every fragment line stuck ([`kconfig::check`]); key the
//! result by the tree's identity and the config's hash ([`key`]); reuse an entry with
//! that key, else `make bzImage` (incremental: the tree keeps its objects) and install
//! bzImage, config, System.map and metadata as one cache entry (staged, then renamed).
//!
//! - [`source`]: what a tree is; Debian's `linux-source` unpacked into the cache.
//! - [`pahole`]: pahole >= 1.26, from the host or fetched privately.
//! - [`kconfig`]: fragments, merging, the check and its reasons.
//! - [`key`]: tree identity (gix commit, dirty hash) and cache keys.
//! - [`make`]: running make with progress and a log.

pub mod kconfig;
pub mod key;
pub mod make;
pub mod pahole;
pub mod source;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::cache::{describe, CacheEntry, CONFIG_FILE, IMAGE_FILE, SYSTEM_MAP_FILE};
use super::{KernelCache, KernelError, Progress};
use kconfig::{Setting, Unmet};
pub use pahole::Pahole;
pub use source::SourceTree;

/// The fragment every ktstr kernel gets, compiled in.
pub const KTSTR_FRAGMENT: &str = include_str!("../../../../../kernels/ktstr.kconfig");
const KTSTR_FRAGMENT_NAME: &str = "kernels/ktstr.kconfig";
/// The build log, in the tree (kernel trees ignore dot files).
const LOG_FILE: &str = ".ktstr-build.log";
/// The base config of the last build, and the hash of the `.config` it wrote (see
/// [`base_config`]); dot files, so kernel trees' `.gitignore` ignores them.
const SAVED_BASE: &str = ".ktstr-base.config";
const WRITTEN_CONFIG_HASH: &str = ".ktstr-config.sha256";
/// Free space a first build needs in the tree's file system (objects + debug info).
const FIRST_BUILD_BYTES: u64 = 4_000_000_000;

/// Where the config starts from before the fragments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// The tree's own `.config`, or `defconfig` when it has none.
    Tree,
    Defconfig,
    /// Everything off: with `ktstr.kconfig` alone a small kernel that builds fast.
    Allnoconfig,
    File(PathBuf),
}

impl Base {
    /// `tree`, `defconfig`, `allnoconfig` or a config file's path.
    pub fn parse(s: &str) -> Base {
        match s {
            "tree" => Base::Tree,
            "defconfig" => Base::Defconfig,
            "allnoconfig" | "tinyconfig" => Base::Allnoconfig,
            p => Base::File(PathBuf::from(p)),
        }
    }

    fn describe(&self) -> String {
        match self {
            Base::Tree => "tree".into(),
            Base::Defconfig => "defconfig".into(),
            Base::Allnoconfig => "allnoconfig".into(),
            Base::File(p) => p.display().to_string(),
        }
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub tree: SourceTree,
    pub base: Base,
    /// Fragment files applied after `ktstr.kconfig`, in order.
    pub fragments: Vec<PathBuf>,
    /// `CONFIG_X=y` lines applied last.
    pub extra: Vec<String>,
    /// `make -j`; default: the CPUs this process may use.
    pub jobs: Option<usize>,
    /// Build and install even when an entry with the key exists.
    pub force: bool,
}

impl BuildRequest {
    /// The defaults used when a source tree is named as a kernel (`KTSTR_KERNEL`,
    /// `--kernel`): the tree's own config plus `ktstr.kconfig`.
    pub fn for_tree(tree: SourceTree) -> BuildRequest {
        BuildRequest {
            tree,
            base: Base::Tree,
            fragments: Vec::new(),
            extra: Vec::new(),
            jobs: None,
            force: false,
        }
    }
}

/// What [`build`] did.
#[derive(Debug, Clone)]
pub enum BuildOutcome {
    /// Built (or rebuilt incrementally) and installed now.
    Built(CacheEntry),
    /// An entry with the same key was in the cache; make did not run.
    Reused(CacheEntry),
}

impl BuildOutcome {
    pub fn entry(&self) -> &CacheEntry {
        match self {
            BuildOutcome::Built(e) | BuildOutcome::Reused(e) => e,
        }
    }
}

/// How a source-built cache entry was made (its `metadata.json` `build` object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRecord {
    /// The source tree.
    pub tree: PathBuf,
    /// Short git HEAD (`-dirty` when changed); None for a tree without git.
    pub commit: Option<String>,
    /// The Debian package version of an unpacked `linux-source`.
    #[serde(default)]
    pub source_version: Option<String>,
    /// `tree`, `defconfig`, `allnoconfig` or a file.
    pub base: String,
    /// Fragments in the order applied (`kernels/ktstr.kconfig` first).
    pub fragments: Vec<String>,
    /// `--extra-kconfig` lines.
    #[serde(default)]
    pub extra: Vec<String>,
    /// The pahole that made the BTF: version, path, where it came from.
    pub pahole: Option<String>,
    /// Wall time of `make bzImage`.
    pub build_seconds: u64,
}

/// Everything that can go wrong building a kernel.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(
        "{}: not a Linux source tree (needs Makefile, Kconfig, arch/x86/Kconfig and \
         scripts/kconfig); name the top of a kernel checkout, or use --debian-source",
        path.display()
    )]
    NotASourceTree { path: PathBuf },

    #[error("`{version}` names no kernel version: expected e.g. `7.2` or `7.2.13`")]
    BadSourceVersion { version: String },

    #[error(
        "{origin}: `{line}` is not a kconfig line (expected `CONFIG_X=y`, \
         `# CONFIG_X is not set`, a comment or a blank line)"
    )]
    BadFragment { origin: String, line: String },

    #[error(
        "{} option(s) of the fragments did not stick after `make olddefconfig` (see {}):\n  {}\n  \
         hint: add the missing dependencies to a fragment (--fragment FILE or \
         --extra-kconfig 'CONFIG_X=y'), or start from another base (--base defconfig)",
        unmet.len(),
        config.display(),
        unmet.iter().map(|u| u.to_string()).collect::<Vec<_>>().join("\n  ")
    )]
    Unmet { unmet: Vec<Unmet>, config: PathBuf },

    #[error(
        "refusing to build BTF with an old pahole: {found}; pahole < 1.26 writes scx kfunc \
         prototypes that schedulers reject (\"malformed scx kfunc prototype(s)\"); {why}"
    )]
    PaholeTooOld { found: String, why: String },

    #[error(
        "`make {target}` failed in {} ({status}); the last lines of {}:\n{tail}",
        tree.display(),
        log.display()
    )]
    MakeFailed {
        target: String,
        tree: PathBuf,
        status: String,
        log: PathBuf,
        tail: String,
    },

    #[error(
        "kernel build tools missing: {}; on Debian: `apt-get install build-essential flex \
         bison bc libelf-dev libssl-dev`",
        missing.join(", ")
    )]
    BuildToolsMissing { missing: Vec<String> },

    #[error("`{tool}` not found; on Debian: `apt-get install build-essential`")]
    ToolMissing { tool: String },

    #[error(
        "{}: only {} free, a first kernel build needs about {}; free some space (`cargo \
         ktstr kernel clean`) or build on another file system",
        path.display(),
        super::human_bytes(*free),
        super::human_bytes(*needed)
    )]
    DiskLow {
        path: PathBuf,
        free: u64,
        needed: u64,
    },

    #[error(transparent)]
    Kernel(#[from] KernelError),
}

/// Builds (or reuses) the kernel `req` describes into `cache`.
pub fn build(
    cache: &KernelCache,
    req: &BuildRequest,
    progress: &Progress,
) -> Result<BuildOutcome, BuildError> {
    check_tools()?;
    let pahole = pahole::ensure(cache, progress)?;
    build_with(cache, req, &pahole, progress)
}

/// [`build`] with the tools already found.
fn build_with(
    cache: &KernelCache,
    req: &BuildRequest,
    pahole: &Pahole,
    progress: &Progress,
) -> Result<BuildOutcome, BuildError> {
    let tree = &req.tree.path;
    let _lock = lock_tree(cache, tree, progress)?;
    let settings = settings(req)?;
    let make = make::Make {
        tree: tree.clone(),
        pahole: Some(pahole.path.clone()),
        jobs: req.jobs.unwrap_or_else(default_jobs),
        log: tree.join(LOG_FILE),
    };

    let stage = progress.stage(format!(
        "Configuring {} ({} + {})",
        tree.display(),
        req.base.describe(),
        fragment_names(req).join(" + ")
    ));
    let config_path = tree.join(".config");
    let base = base_config(req, &make)?;
    write(&config_path, &kconfig::merge(&base, &settings))?;
    make.quick("olddefconfig")?;
    let config = read(&config_path)?;
    let mut unmet = kconfig::check(&settings, &config);
    if !unmet.is_empty() {
        kconfig::explain(&mut unmet, tree, &config);
        return Err(BuildError::Unmet {
            unmet,
            config: config_path,
        });
    }
    write(&tree.join(WRITTEN_CONFIG_HASH), &key::config_hash(&config))?;
    let identity = req.tree.identity();
    let key = key::cache_key(&req.tree.label, &identity, &config);
    stage.done(&key);

    if identity.is_reusable() && !req.force {
        if let Some(e) = cache.get(&key)? {
            return Ok(BuildOutcome::Reused(e));
        }
    }
    if !tree.join("vmlinux").exists() {
        check_space(tree, FIRST_BUILD_BYTES)?;
    }
    let started = Instant::now();
    make.with_progress(
        "bzImage",
        format!("Building bzImage (-j{})", make.jobs),
        progress,
    )?;
    let build_seconds = started.elapsed().as_secs();

    let stage = progress.stage(format!("Installing {key}"));
    let record = BuildRecord {
        tree: tree.clone(),
        commit: identity.commit(),
        source_version: req.tree.pristine_version.clone(),
        base: req.base.describe(),
        fragments: fragment_names(req),
        extra: req.extra.clone(),
        pahole: Some(pahole.describe()),
        build_seconds,
    };
    let entry = install(cache, tree, &key, record)?;
    stage.done(&entry.dir.display().to_string());
    Ok(BuildOutcome::Built(entry))
}

/// The build tools kbuild needs before it can say so itself (halfway through).
fn check_tools() -> Result<(), BuildError> {
    let mut missing: Vec<String> = ["make", "gcc", "flex", "bison", "bc", "perl"]
        .into_iter()
        .filter(|t| crate::which::which(t).is_none())
        .map(String::from)
        .collect();
    // objtool and resolve_btfids include <gelf.h>.
    if !Path::new("/usr/include/gelf.h").exists() {
        missing.push("libelf headers (gelf.h)".into());
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(BuildError::BuildToolsMissing { missing })
    }
}

/// One build per tree at a time: a second waits, then finds the first one's entry.
fn lock_tree(
    cache: &KernelCache,
    tree: &Path,
    progress: &Progress,
) -> Result<fs::File, BuildError> {
    let locks = cache.root().join("locks");
    fs::create_dir_all(&locks).map_err(|e| io("creating", &locks, e))?;
    let id = key::config_hash(&tree.display().to_string());
    let path = locks.join(format!("build-{id}.lock"));
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io("opening", &path, e))?;
    if f.try_lock().is_err() {
        progress.note(&format!(
            "ktstr: waiting for another build of {} to finish",
            tree.display()
        ));
        f.lock().map_err(|e| io("locking", &path, e))?;
    }
    Ok(f)
}

/// `ktstr.kconfig`, then each fragment file, then the extra lines.
fn settings(req: &BuildRequest) -> Result<Vec<Setting>, BuildError> {
    let bad = |b: kconfig::BadLine| BuildError::BadFragment {
        origin: b.origin,
        line: b.line,
    };
    let mut out = kconfig::parse_fragment(KTSTR_FRAGMENT_NAME, KTSTR_FRAGMENT).map_err(bad)?;
    for f in &req.fragments {
        let text = read(f)?;
        out.extend(kconfig::parse_fragment(&f.display().to_string(), &text).map_err(bad)?);
    }
    for (i, line) in req.extra.iter().enumerate() {
        let origin = format!("--extra-kconfig #{}", i + 1);
        let parsed = kconfig::parse_fragment(&origin, line).map_err(bad)?;
        if parsed.is_empty() {
            return Err(BuildError::BadFragment {
                origin,
                line: line.clone(),
            });
        }
        out.extend(parsed.into_iter().map(|s| Setting {
            origin: origin.clone(),
            ..s
        }));
    }
    Ok(out)
}

fn fragment_names(req: &BuildRequest) -> Vec<String> {
    std::iter::once(KTSTR_FRAGMENT_NAME.to_string())
        .chain(req.fragments.iter().map(|f| f.display().to_string()))
        .collect()
}

/// The config text the fragments go on top of, saved as the tree's base for the next
/// `--base tree` build.
///
/// `.config` after a build is ours (base + fragments); taking it as the next base would
/// keep a fragment line forever after it was dropped. So the base a build started from
/// is kept in the tree (`.ktstr-base.config`) with the hash of the `.config` the build
/// wrote (`.ktstr-config.sha256`): while `.config` still has that hash, the next `tree`
/// build starts from the kept base again; once someone changed `.config` (menuconfig, a
/// copy), that becomes the base.
fn base_config(req: &BuildRequest, make: &make::Make) -> Result<String, BuildError> {
    let tree = &req.tree.path;
    let dot_config = tree.join(".config");
    let generated = |target: &str| -> Result<String, BuildError> {
        make.quick(target)?;
        read(&dot_config)
    };
    let base = match &req.base {
        Base::Tree if dot_config.is_file() => {
            let current = read(&dot_config)?;
            let ours = fs::read_to_string(tree.join(WRITTEN_CONFIG_HASH))
                .is_ok_and(|h| h.trim() == key::config_hash(&current));
            match fs::read_to_string(tree.join(SAVED_BASE)) {
                Ok(saved) if ours => saved,
                _ => current,
            }
        }
        Base::Tree | Base::Defconfig => generated("defconfig")?,
        Base::Allnoconfig => generated("allnoconfig")?,
        Base::File(p) => read(p)?,
    };
    write(&tree.join(SAVED_BASE), &base)?;
    Ok(base)
}

/// Copies the tree's results into a staged entry and installs it under `key`.
fn install(
    cache: &KernelCache,
    tree: &Path,
    key: &str,
    record: BuildRecord,
) -> Result<CacheEntry, BuildError> {
    let staged = cache.stage()?;
    let copy = |from: &str, to: &str| -> Result<Option<PathBuf>, BuildError> {
        let src = tree.join(from);
        if !src.is_file() {
            return Ok(None);
        }
        let dst = staged.path().join(to);
        fs::copy(&src, &dst).map_err(|e| io("copying into the cache", &src, e))?;
        Ok(Some(dst))
    };
    let image =
        copy("arch/x86/boot/bzImage", IMAGE_FILE)?.ok_or_else(|| BuildError::MakeFailed {
            target: "bzImage".into(),
            tree: tree.to_path_buf(),
            status: "no arch/x86/boot/bzImage afterwards".into(),
            log: tree.join(LOG_FILE),
            tail: make::last_lines(&tree.join(LOG_FILE), 10),
        })?;
    let config = copy(".config", CONFIG_FILE)?;
    let map = copy("System.map", SYSTEM_MAP_FILE)?;
    let source = match &record.commit {
        Some(c) => format!("build:{}@{c}", record.tree.display()),
        None => format!("build:{}", record.tree.display()),
    };
    let mut metadata = describe(
        &image,
        config.as_deref(),
        map.as_deref(),
        source,
        record.source_version.clone(),
    )?;
    metadata.build = Some(record);
    Ok(cache.install(staged, key, &metadata, true)?)
}

fn check_space(path: &Path, needed: u64) -> Result<(), BuildError> {
    let Ok(st) = nix::sys::statvfs::statvfs(path) else {
        return Ok(());
    };
    let free = st.blocks_available().saturating_mul(st.fragment_size());
    if free < needed {
        return Err(BuildError::DiskLow {
            path: path.to_path_buf(),
            free,
            needed,
        });
    }
    Ok(())
}

fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn read(path: &Path) -> Result<String, BuildError> {
    fs::read_to_string(path).map_err(|e| io("reading", path, e))
}

fn write(path: &Path, text: &str) -> Result<(), BuildError> {
    fs::write(path, text).map_err(|e| io("writing", path, e))
}

fn io(what: &'static str, path: &Path, source: std::io::Error) -> BuildError {
    KernelError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ktstr_fragment_parses_and_asks_for_sched_ext_and_btf() {
        let s = kconfig::parse_fragment(KTSTR_FRAGMENT_NAME, KTSTR_FRAGMENT).unwrap();
        let want = |sym: &str, v: &str| s.iter().any(|x| x.symbol == sym && x.value == v);
        for sym in [
            "SCHED_CLASS_EXT",
            "DEBUG_INFO_BTF",
            "IKCONFIG_PROC",
            "DEBUG_FS",
            "PSI",
            "SCHEDSTATS",
            "CGROUPS",
            "SERIAL_8250_CONSOLE",
            "PVH",
        ] {
            assert!(want(sym, "y"), "{sym}");
        }
        assert!(want("MODULES", "n"));
    }

    #[test]
    fn extra_lines_and_bad_fragments() {
        let d = tempfile::tempdir().unwrap();
        let frag = d.path().join("my.kconfig");
        fs::write(&frag, "CONFIG_FOO=y\n").unwrap();
        let tree = SourceTree {
            path: d.path().to_path_buf(),
            label: "t".into(),
            pristine_version: None,
        };
        let mut req = BuildRequest::for_tree(tree);
        req.fragments.push(frag.clone());
        req.extra.push("CONFIG_BAR=m".into());
        let s = settings(&req).unwrap();
        let n = s.len();
        assert_eq!(s[n - 2].symbol, "FOO");
        assert_eq!(s[n - 1].symbol, "BAR");
        assert_eq!(s[n - 1].origin, "--extra-kconfig #1");

        req.extra = vec!["FOO=y".into()];
        let e = settings(&req).unwrap_err().to_string();
        assert!(
            e.contains("--extra-kconfig #1") && e.contains("not a kconfig line"),
            "{e}"
        );
        req.extra = vec!["# just a comment".into()];
        assert!(settings(&req).is_err());
    }

    /// A git tree whose Makefile plays kbuild: `defconfig` writes a base, `olddefconfig`
    /// keeps each symbol's last line and drops `CONFIG_BLOCKED` (as Kconfig drops an option
    /// whose dependency is off), `bzImage` counts its runs and fails when `.config` asks.
    fn fake_tree() -> (tempfile::TempDir, SourceTree) {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("linux");
        for dir in ["scripts/kconfig", "arch/x86/boot"] {
            fs::create_dir_all(t.join(dir)).unwrap();
        }
        let makefile = [
            "defconfig:",
            "\t@printf 'CONFIG_BASE=y\\n' > .config",
            "olddefconfig:",
            // Like Kconfig: one line per symbol, its last assignment.
            "\t@awk '/CONFIG_/ { k=$$0; sub(/^# /,\"\",k); sub(/[= ].*/,\"\",k); v[k]=$$0 } \\",
            "\t  END { for (k in v) print v[k] }' .config | grep -v '^CONFIG_BLOCKED=' | sort > .config.new",
            "\tmv .config.new .config",
            "bzImage:",
            "\t@echo '  CC      init/main.o'",
            "\t@echo x >> builds",
            "\t@! grep -q '^CONFIG_FAIL=y' .config || { echo 'init/main.c:1: error: no' >&2; exit 1; }",
            "\t@cp fake-bzImage arch/x86/boot/bzImage",
        ];
        fs::write(t.join("Makefile"), makefile.join("\n") + "\n").unwrap();
        fs::write(
            t.join("Kconfig"),
            "config BLOCKED\n\tbool \"blocked\"\n\tdepends on MISSING\n",
        )
        .unwrap();
        fs::write(t.join("arch/x86/Kconfig"), "").unwrap();
        fs::write(
            t.join("fake-bzImage"),
            crate::kernel::image::fake_bzimage("7.2.0-src #1"),
        )
        .unwrap();
        for args in [
            &["init", "-q"][..],
            &[
                "add",
                "Makefile",
                "Kconfig",
                "arch/x86/Kconfig",
                "fake-bzImage",
            ],
            &["commit", "-q", "-m", "fake linux"],
        ] {
            ktstr_sidecar::testutil::git(&t, args);
        }
        // An existing vmlinux skips the first-build free-space check.
        fs::write(t.join("vmlinux"), "").unwrap();
        let tree = SourceTree::at(&t).unwrap();
        (d, tree)
    }

    fn fake_pahole(dir: &Path) -> Pahole {
        Pahole {
            path: dir.join("no-pahole"),
            version: "1.32".into(),
            origin: "test".into(),
        }
    }

    fn builds(tree: &SourceTree) -> usize {
        fs::read_to_string(tree.path.join("builds")).map_or(0, |s| s.lines().count())
    }

    #[test]
    fn built_once_then_reused_and_nothing_half_written_on_failure() {
        let (d, tree) = fake_tree();
        let cache = KernelCache::at(d.path().join("cache"));
        let pahole = fake_pahole(d.path());
        let q = Progress::quiet();
        let mut req = BuildRequest::for_tree(tree.clone());
        req.jobs = Some(1);

        let first = build_with(&cache, &req, &pahole, &q).unwrap();
        let BuildOutcome::Built(e) = &first else {
            panic!("{first:?}")
        };
        assert!(e.key.starts_with("src-linux-"), "{}", e.key);
        assert_eq!(e.metadata.release, "7.2.0-src");
        let rec = e.metadata.build.as_ref().unwrap();
        assert_eq!(rec.base, "tree");
        assert_eq!(rec.fragments, ["kernels/ktstr.kconfig"]);
        assert!(rec.pahole.as_deref().unwrap().starts_with("1.32 ("));
        assert!(e.config().is_some());
        assert_eq!(builds(&tree), 1);

        // Nothing changed: the entry is reused and make bzImage does not run.
        let again = build_with(&cache, &req, &pahole, &q).unwrap();
        assert!(matches!(again, BuildOutcome::Reused(_)), "{again:?}");
        assert_eq!(again.entry().key, e.key);
        assert_eq!(builds(&tree), 1);

        // An option that cannot stick: named, with its dependency; nothing installed.
        req.extra = vec!["CONFIG_BLOCKED=y".into()];
        let err = build_with(&cache, &req, &pahole, &q)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("CONFIG_BLOCKED=y (--extra-kconfig #1) ended up n"),
            "{err}"
        );
        assert!(err.contains("depends on `MISSING` (MISSING=n)"), "{err}");
        assert_eq!(builds(&tree), 1);

        // A failing build: the compiler's line in the error, no new entry, no staging left.
        req.extra = vec!["CONFIG_FAIL=y".into()];
        let err = build_with(&cache, &req, &pahole, &q)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`make bzImage` failed"), "{err}");
        assert!(err.contains("init/main.c:1: error: no"), "{err}");
        assert_eq!(cache.entries().unwrap().len(), 1);
        let leftovers: Vec<_> = fs::read_dir(cache.root())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".staging"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        // Dropping the line drops the option: the tree's base is the one kept, not the
        // `.config` that failing build wrote.
        req.extra.clear();
        let back = build_with(&cache, &req, &pahole, &q).unwrap();
        assert!(matches!(back, BuildOutcome::Reused(_)), "{back:?}");
        assert_eq!(back.entry().key, e.key);
        // A `.config` someone edited becomes the tree's base.
        let edited = read(&tree.path.join(".config")).unwrap() + "CONFIG_MINE=y\n";
        fs::write(tree.path.join(".config"), edited).unwrap();
        let mine = build_with(&cache, &req, &pahole, &q).unwrap();
        assert!(mine.entry().metadata.build.is_some());
        assert!(read(&mine.entry().config().unwrap())
            .unwrap()
            .contains("CONFIG_MINE=y"));
        // make ran for the first build, the failing one and this one.
        assert_eq!(builds(&tree), 3);
        fs::write(tree.path.join(".ktstr-config.sha256"), "").unwrap();
        fs::write(tree.path.join(".config"), "CONFIG_BASE=y\n").unwrap();
        fs::write(tree.path.join(".ktstr-base.config"), "CONFIG_BASE=y\n").unwrap();

        // Another config: another key, built.
        req.extra = vec!["CONFIG_OTHER=y".into()];
        let other = build_with(&cache, &req, &pahole, &q).unwrap();
        assert!(matches!(other, BuildOutcome::Built(_)));
        assert_ne!(other.entry().key, e.key);
        assert_eq!(cache.entries().unwrap().len(), 3);

        // An edited (dirty) tree: a new `-dirty-` key, built, its commit recorded as dirty.
        req.extra.clear();
        fs::write(tree.path.join("Kconfig"), "config BLOCKED\n\tbool \"b\"\n").unwrap();
        let dirty = build_with(&cache, &req, &pahole, &q).unwrap();
        assert!(matches!(dirty, BuildOutcome::Built(_)), "{dirty:?}");
        assert!(
            dirty.entry().key.contains("-dirty-"),
            "{}",
            dirty.entry().key
        );
        let commit = dirty
            .entry()
            .metadata
            .build
            .as_ref()
            .unwrap()
            .commit
            .clone();
        assert!(commit.unwrap().ends_with("-dirty"));
        assert_eq!(builds(&tree), 5);
    }

    #[test]
    fn bases() {
        assert_eq!(Base::parse("tree"), Base::Tree);
        assert_eq!(Base::parse("tinyconfig"), Base::Allnoconfig);
        assert_eq!(Base::parse("./my.config"), Base::File("./my.config".into()));
    }
}
