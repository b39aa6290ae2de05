//! pahole, which turns the kernel's DWARF into BTF: at least 1.26, or the scx kfunc
//! prototypes in the BTF come out malformed and real schedulers refuse the kernel.
//!
//! Looked for in order: `KTSTR_PAHOLE`, `pahole` on PATH, a private copy under
//! `<cache>/tools/`. When none is new enough, Debian sid's `pahole` is downloaded through
//! the private apt configuration of `kernel fetch` with the libraries it needs (libc
//! included) and unpacked under `<cache>/tools/pahole-<version>/`; a wrapper script runs
//! it with its own dynamic loader, so the host's libc and apt setup stay untouched.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::BuildError;
use crate::kernel::{tools, KernelCache, Progress};

/// Names the pahole to use (must be >= [`MIN_VERSION`]).
pub const PAHOLE_ENV: &str = "KTSTR_PAHOLE";
/// The oldest pahole whose BTF schedulers accept.
pub const MIN_VERSION: (u32, u32) = (1, 26);

/// A pahole that is new enough.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pahole {
    /// What `make PAHOLE=` gets.
    pub path: PathBuf,
    /// `1.32`.
    pub version: String,
    /// `host`, `KTSTR_PAHOLE` or `debian sid pahole 1.32-1 (private)`.
    pub origin: String,
}

impl Pahole {
    /// For metadata: `1.32 (/path, origin)`.
    pub fn describe(&self) -> String {
        format!(
            "{} ({}, {})",
            self.version,
            self.path.display(),
            self.origin
        )
    }
}

/// `v1.32` / `1.26.1` → (1, 32) / (1, 26).
pub fn parse_version(out: &str) -> Option<(u32, u32)> {
    let v = out.trim().trim_start_matches('v');
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// `pahole --version` of `path`, if it runs.
fn version_of(path: &Path) -> Option<(u32, u32)> {
    let out = Command::new(path).arg("--version").output().ok()?;
    if !out.status.success() {
        return None;
    }
    parse_version(&String::from_utf8_lossy(&out.stdout))
}

fn found(path: PathBuf, v: (u32, u32), origin: &str) -> Pahole {
    Pahole {
        path,
        version: format!("{}.{}", v.0, v.1),
        origin: origin.to_string(),
    }
}

/// A pahole >= 1.26: the one named or found, else a private one fetched now.
pub fn ensure(cache: &KernelCache, progress: &Progress) -> Result<Pahole, BuildError> {
    if let Some(p) = std::env::var_os(PAHOLE_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(p);
        return match version_of(&path) {
            Some(v) if v >= MIN_VERSION => Ok(found(path, v, PAHOLE_ENV)),
            v => Err(BuildError::PaholeTooOld {
                found: format!(
                    "{PAHOLE_ENV}={} ({})",
                    path.display(),
                    v.map_or("does not run".into(), |v| format!("{}.{}", v.0, v.1))
                ),
                why: format!("unset {PAHOLE_ENV} to let ktstr fetch a private pahole"),
            }),
        };
    }
    let host = crate::which::which("pahole").map(|p| (version_of(&p), p));
    if let Some((Some(v), p)) = &host {
        if *v >= MIN_VERSION {
            return Ok(found(p.clone(), *v, "host"));
        }
    }
    if let Some(p) = private(cache) {
        return Ok(p);
    }
    let host_says = match &host {
        Some((Some(v), p)) => format!("the host's {} is {}.{}", p.display(), v.0, v.1),
        Some((None, p)) => format!("the host's {} does not run", p.display()),
        None => "the host has no pahole".into(),
    };
    progress.note(&format!(
        "ktstr: {host_says}; BTF needs pahole >= {}.{}: fetching Debian sid's pahole privately",
        MIN_VERSION.0, MIN_VERSION.1
    ));
    fetch(cache, progress).map_err(|e| BuildError::PaholeTooOld {
        found: host_says,
        why: format!(
            "fetching a private pahole failed: {e}; install pahole >= {}.{} (dwarves) and \
             put it on PATH or in {PAHOLE_ENV}",
            MIN_VERSION.0, MIN_VERSION.1
        ),
    })
}

/// A private pahole installed earlier, the newest that runs and is new enough.
fn private(cache: &KernelCache) -> Option<Pahole> {
    tools::installed(cache, "pahole", "pahole")
        .into_iter()
        .find_map(|t| {
            let v = version_of(&t.wrapper)?;
            (v >= MIN_VERSION).then(|| {
                found(
                    t.wrapper,
                    v,
                    &format!("debian sid pahole {} (private)", t.version),
                )
            })
        })
}

/// Downloads sid's pahole and its library closure into `<cache>/tools/pahole-<ver>/`.
fn fetch(cache: &KernelCache, progress: &Progress) -> Result<Pahole, crate::kernel::KernelError> {
    let (tool, names) = tools::install(cache, "pahole", "pahole", "pahole", wrapper, progress)?;
    match version_of(&tool.wrapper) {
        Some(v) if v >= MIN_VERSION => Ok(found(
            tool.wrapper,
            v,
            &format!("debian sid pahole {} (private)", tool.version),
        )),
        _ => Err(crate::kernel::KernelError::PackageLayout {
            packages: names,
            what: format!("a pahole >= {}.{} that runs", MIN_VERSION.0, MIN_VERSION.1),
        }),
    }
}

/// The script that runs the unpacked pahole with the unpacked loader and libraries.
fn wrapper(root: &Path) -> String {
    tools::loader_wrapper(root, "usr/bin/pahole", &[], &[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn versions() {
        assert_eq!(parse_version("v1.24\n"), Some((1, 24)));
        assert_eq!(parse_version("v1.32"), Some((1, 32)));
        assert_eq!(parse_version("1.26.1"), Some((1, 26)));
        assert_eq!(parse_version("pahole"), None);
        assert!(parse_version("v1.24").unwrap() < MIN_VERSION);
        assert!(parse_version("v1.30").unwrap() >= MIN_VERSION);
        assert!(parse_version("v2.0").unwrap() >= MIN_VERSION);
    }

    #[test]
    fn version_probe_and_wrapper() {
        let d = tempfile::tempdir().unwrap();
        let fake = d.path().join("pahole");
        std::fs::write(&fake, "#!/bin/sh\necho v1.24\n").unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(version_of(&fake), Some((1, 24)));
        let w = wrapper(Path::new("/c/tools/pahole-1.32-1/root"));
        assert!(w.contains("R='/c/tools/pahole-1.32-1/root'"));
        assert!(w.contains("\"$R/usr/bin/pahole\" \"$@\""));
    }
}
