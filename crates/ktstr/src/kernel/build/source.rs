//! Kernel source trees: checking that a directory is one, and unpacking Debian's
//! `linux-source-<major.minor>` into `<cache>/sources/` through the private apt
//! configuration of `kernel fetch`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::key::TreeIdentity;
use super::{io, BuildError};
use crate::kernel::cache::natural_cmp;
use crate::kernel::fetch::{pinned_release, run_tool, Apt};
use crate::kernel::{KernelCache, KernelError, Progress};

/// A tree to build in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceTree {
    pub path: PathBuf,
    /// Names it in cache keys: the directory name, or `debian-linux-7.2`.
    pub label: String,
    /// Set for trees we unpacked (their version is known and they are never edited);
    /// other trees are identified when built.
    pub pristine_version: Option<String>,
}

impl SourceTree {
    /// A user's tree: must look like a Linux source tree with x86 support.
    pub fn at(path: &Path) -> Result<SourceTree, BuildError> {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        if !is_kernel_tree(&path) {
            return Err(BuildError::NotASourceTree { path });
        }
        let label = path
            .file_name()
            .map_or("linux".into(), |n| n.to_string_lossy().into_owned());
        Ok(SourceTree {
            path,
            label,
            pristine_version: None,
        })
    }

    /// The tree at `path`, recognised as one we unpacked when it lies in the cache's
    /// `sources/` (so naming it as a kernel finds the entry `--debian-source` built).
    pub fn in_cache(cache: &KernelCache, path: &Path) -> Result<SourceTree, BuildError> {
        let mut tree = SourceTree::at(path)?;
        let sources =
            std::path::absolute(sources_dir(cache)).unwrap_or_else(|_| sources_dir(cache));
        if tree.path.parent() == Some(sources.as_path()) {
            if let Some((package, version)) = tree.label.clone().split_once('_') {
                if let Some(mm) = package.strip_prefix("linux-source-") {
                    tree.label = debian_label(mm);
                    tree.pristine_version = Some(version.to_string());
                }
            }
        }
        Ok(tree)
    }

    pub fn identity(&self) -> TreeIdentity {
        match &self.pristine_version {
            Some(v) => TreeIdentity::Pristine { version: v.clone() },
            None => super::key::identify(&self.path),
        }
    }
}

/// Makefile, Kconfig and arch/x86/Kconfig: a Linux tree that can build x86.
pub fn is_kernel_tree(path: &Path) -> bool {
    ["Makefile", "Kconfig", "arch/x86/Kconfig", "scripts/kconfig"]
        .iter()
        .all(|p| path.join(p).exists())
}

/// `7.2.13+deb14-cloud-amd64`, `7.2.13`, `7.2` → `7.2`.
pub fn major_minor(version: &str) -> Option<String> {
    let mut parts = version.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next()?.parse().ok()?;
    Some(format!("{major}.{minor}"))
}

fn sources_dir(cache: &KernelCache) -> PathBuf {
    cache.root().join("sources")
}

/// Debian's `linux-source-<major.minor>` of `version` (default: the pinned kernel's),
/// unpacked once under `<cache>/sources/linux-source-<mm>_<package version>/` and reused.
pub fn debian_source(
    cache: &KernelCache,
    version: Option<&str>,
    progress: &Progress,
) -> Result<SourceTree, BuildError> {
    let wanted = version.unwrap_or(pinned_release());
    let mm = major_minor(wanted).ok_or_else(|| BuildError::BadSourceVersion {
        version: wanted.to_string(),
    })?;
    let package = format!("linux-source-{mm}");
    let tree = |path: PathBuf, pkg_version: String| SourceTree {
        path,
        label: debian_label(&mm),
        pristine_version: Some(pkg_version),
    };
    if let Some((path, v)) = unpacked(cache, &package) {
        return Ok(tree(path, v));
    }

    let apt = Apt::prepare(cache)?;
    let _lock = apt.lock()?;
    apt.update(progress, "")?;
    let pkg_version = apt
        .version_of(&package)?
        .ok_or_else(|| KernelError::PackageUnavailable {
            package: package.clone(),
        })?;
    let stage = progress.stage(format!("Downloading {package} {pkg_version}"));
    let work = cache.stage()?;
    let root = work.path().join("root");
    apt.download_and_extract(
        std::slice::from_ref(&package),
        &work.path().join("debs"),
        &root,
    )?;
    let _ = fs::remove_dir_all(work.path().join("debs"));
    stage.done("done");

    let tarball = root.join("usr/src").join(format!("{package}.tar.xz"));
    if !tarball.is_file() {
        return Err(KernelError::PackageLayout {
            packages: vec![package],
            what: format!("usr/src/linux-source-{mm}.tar.xz"),
        }
        .into());
    }
    let stage = progress.stage(format!("Unpacking {}", tarball.display()));
    let out = work.path().join("tree");
    fs::create_dir_all(&out).map_err(|e| io("creating", &out, e))?;
    run_tool(
        Command::new("tar")
            .arg("-xf")
            .arg(&tarball)
            .arg("-C")
            .arg(&out),
        "tar",
        "is the disk full? (`df -h`)",
    )?;
    let unpacked_tree = out.join(&package);
    if !is_kernel_tree(&unpacked_tree) {
        return Err(KernelError::PackageLayout {
            what: format!("{package}/ holding a kernel tree"),
            packages: vec![package],
        }
        .into());
    }
    stage.done("done");
    let dest = sources_dir(cache).join(format!("{package}_{pkg_version}"));
    fs::create_dir_all(sources_dir(cache)).map_err(|e| io("creating", &sources_dir(cache), e))?;
    // One rename: a tree under sources/ is always whole.
    fs::rename(&unpacked_tree, &dest).map_err(|e| io("installing source tree", &dest, e))?;
    Ok(tree(dest, pkg_version))
}

fn debian_label(major_minor: &str) -> String {
    format!("debian-linux-{major_minor}")
}

/// An unpacked `package` (highest version first), if any.
fn unpacked(cache: &KernelCache, package: &str) -> Option<(PathBuf, String)> {
    let prefix = format!("{package}_");
    let mut found: Vec<(PathBuf, String)> = fs::read_dir(sources_dir(cache))
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let v = name.strip_prefix(&prefix)?.to_string();
            is_kernel_tree(&e.path()).then(|| (e.path(), v))
        })
        .collect();
    found.sort_by(|a, b| natural_cmp(&b.1, &a.1));
    found.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_to_packages() {
        assert_eq!(
            major_minor("7.2.13+deb14-cloud-amd64").as_deref(),
            Some("7.2")
        );
        assert_eq!(major_minor("6.12").as_deref(), Some("6.12"));
        assert_eq!(major_minor("7"), None);
        assert_eq!(major_minor("latest"), None);
    }

    #[test]
    fn a_directory_that_is_not_a_kernel_tree_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let e = SourceTree::at(d.path()).unwrap_err();
        assert!(e.to_string().contains("not a Linux source tree"), "{e}");
        for p in ["scripts/kconfig", "arch/x86"] {
            fs::create_dir_all(d.path().join(p)).unwrap();
        }
        for f in ["Makefile", "Kconfig", "arch/x86/Kconfig"] {
            fs::write(d.path().join(f), "").unwrap();
        }
        let t = SourceTree::at(d.path()).unwrap();
        assert!(t.pristine_version.is_none());
    }

    #[test]
    fn unpacked_sources_are_found_highest_first() {
        let d = tempfile::tempdir().unwrap();
        let cache = KernelCache::at(d.path());
        for v in ["7.2.9-1", "7.2.13-1"] {
            let t = sources_dir(&cache).join(format!("linux-source-7.2_{v}"));
            for p in ["scripts/kconfig", "arch/x86"] {
                fs::create_dir_all(t.join(p)).unwrap();
            }
            for f in ["Makefile", "Kconfig", "arch/x86/Kconfig"] {
                fs::write(t.join(f), "").unwrap();
            }
        }
        let (path, v) = unpacked(&cache, "linux-source-7.2").unwrap();
        assert_eq!(v, "7.2.13-1");
        // Named as a kernel, the unpacked tree keeps the identity `--debian-source` gave it.
        let t = SourceTree::in_cache(&cache, &path).unwrap();
        assert_eq!(t.label, "debian-linux-7.2");
        assert_eq!(t.pristine_version.as_deref(), Some("7.2.13-1"));
        assert!(unpacked(&cache, "linux-source-7.3").is_none());
    }
}
