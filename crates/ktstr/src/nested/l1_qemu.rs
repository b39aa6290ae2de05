//! The qemu that runs L1. Debian 12's qemu 7.2 emulates nested SVM badly enough that L1's
//! kernel crashed in about half of the boots that ran the VM suite (a kernel stack
//! overflow in our VMM's vCPU thread inside KVM_RUN, or a stale translation in
//! `__schedule`; docs/reliability.md), while Debian sid's qemu 11.1.3 passed where 7.2
//! crashed every time. So unless told which qemu to use, `nested` takes one of at least
//! [`MIN_L1_QEMU`]: the host's when it is new enough, else a private copy of sid's
//! `qemu-system-x86`, fetched once into `<cache>/tools/qemu-<version>/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::kernel::{tools, KernelCache, Progress};

/// Names the qemu that runs L1 (taken as it is, whatever its version).
pub const NESTED_QEMU_ENV: &str = "KTSTR_NESTED_QEMU";

/// The oldest qemu `nested` takes without being told: 11.x is the first measured to run
/// L1 without the 7.2 crashes (nothing in between was measured).
pub const MIN_L1_QEMU: (u32, u32) = (11, 0);

/// The sid package and the program in it.
const PACKAGE: &str = "qemu-system-x86";
const PROGRAM: &str = "qemu-system-x86_64";

/// The qemu chosen for L1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L1Qemu {
    pub path: PathBuf,
    /// `major.minor`, when `--version` said.
    pub version: Option<(u32, u32)>,
    /// Where it came from: `--qemu`, `host`, `debian sid qemu-system-x86 <ver> (private)`.
    pub origin: String,
}

impl L1Qemu {
    /// For the progress line: `qemu 11.1 (/path, origin)`.
    pub fn describe(&self) -> String {
        let v = self
            .version
            .map_or("(version unknown)".to_string(), |(a, b)| format!("{a}.{b}"));
        format!("qemu {v} ({}, {})", self.path.display(), self.origin)
    }
}

/// `QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u12)` → (7, 2).
pub fn parse_version(out: &str) -> Option<(u32, u32)> {
    let rest = out.lines().next()?.split("version ").nth(1)?;
    let mut parts = rest.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn version_of(path: &Path) -> Option<(u32, u32)> {
    let out = Command::new(path).arg("--version").output().ok()?;
    out.status.success().then_some(())?;
    parse_version(&String::from_utf8_lossy(&out.stdout))
}

/// The wrapper for an unpacked sid qemu: its loader and libraries, its own modules (never
/// the host's, built for another version) and its firmware (`-L`).
fn wrapper(root: &Path) -> String {
    tools::loader_wrapper(
        root,
        "usr/bin/qemu-system-x86_64",
        &[("QEMU_MODULE_DIR", "$R/usr/lib/x86_64-linux-gnu/qemu")],
        &["-L", "$R/usr/share/qemu", "-L", "$R/usr/share/seabios"],
    )
}

/// The private sid qemu installed earlier, if one runs and is new enough.
fn private(cache: &KernelCache) -> Option<L1Qemu> {
    tools::installed(cache, "qemu", PROGRAM)
        .into_iter()
        .find_map(|t| {
            let v = version_of(&t.wrapper).filter(|v| *v >= MIN_L1_QEMU)?;
            Some(L1Qemu {
                path: t.wrapper,
                version: Some(v),
                origin: format!("debian sid {PACKAGE} {} (private)", t.version),
            })
        })
}

/// The qemu for L1: `explicit` (`--qemu`, else [`NESTED_QEMU_ENV`]) as it is; else the
/// host's (`KTSTR_QEMU` or PATH) when it is at least [`MIN_L1_QEMU`]; else a private sid
/// qemu, fetched now when missing. When that fetch fails the host's old qemu is used
/// (it does run L1, only less reliably; [`super::prepare`] warns about its age).
pub fn ensure(explicit: Option<&Path>, progress: &Progress) -> Result<L1Qemu> {
    let explicit = explicit.map(Path::to_path_buf).or_else(|| {
        std::env::var_os(NESTED_QEMU_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    if let Some(path) = explicit {
        anyhow::ensure!(
            path.is_file(),
            "the qemu named for L1 ({}) does not exist (--qemu / {NESTED_QEMU_ENV})",
            path.display()
        );
        return Ok(L1Qemu {
            version: version_of(&path),
            path,
            origin: format!("--qemu / {NESTED_QEMU_ENV}"),
        });
    }
    let host = crate::engine::qemu::find_binary().map(|p| L1Qemu {
        version: version_of(&p),
        path: p,
        origin: "host".into(),
    });
    if let Some(h) = host.as_ref().filter(|h| h.version >= Some(MIN_L1_QEMU)) {
        return Ok(h.clone());
    }
    let cache = KernelCache::from_env()?;
    if let Some(p) = private(&cache) {
        return Ok(p);
    }
    let host_says = match &host {
        Some(h) => format!("the host's {}", h.describe()),
        None => "the host has no qemu-system-x86_64".into(),
    };
    progress.note(&format!(
        "ktstr: {host_says}; nested SVM needs qemu >= {}.{} to run L1 reliably: fetching Debian sid's {PACKAGE} privately (once)",
        MIN_L1_QEMU.0, MIN_L1_QEMU.1
    ));
    match fetch(&cache, progress) {
        Ok(q) => Ok(q),
        Err(e) => match host {
            Some(h) => {
                progress.note(&format!(
                    "ktstr: warning: no private qemu ({e:#}); falling back to the host's"
                ));
                Ok(h)
            }
            None => Err(e.context(
                "no qemu for L1: install qemu-system-x86 (>= 11 runs L1 reliably) or name one with --qemu",
            )),
        },
    }
}

fn fetch(cache: &KernelCache, progress: &Progress) -> Result<L1Qemu> {
    let (tool, names) = tools::install(cache, "qemu", PACKAGE, PROGRAM, wrapper, progress)?;
    let v = version_of(&tool.wrapper).with_context(|| {
        format!(
            "the private qemu {} does not run (packages: {})",
            tool.wrapper.display(),
            names.join(" ")
        )
    })?;
    anyhow::ensure!(
        v >= MIN_L1_QEMU,
        "Debian sid's {PACKAGE} is {}.{}, older than {}.{}",
        v.0,
        v.1,
        MIN_L1_QEMU.0,
        MIN_L1_QEMU.1
    );
    Ok(L1Qemu {
        path: tool.wrapper,
        version: Some(v),
        origin: format!("debian sid {PACKAGE} {} (private)", tool.version),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_qemu_banners() {
        assert_eq!(
            parse_version("QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u12)\nCopyright"),
            Some((7, 2))
        );
        assert_eq!(
            parse_version("QEMU emulator version 11.1.3 (Debian 1:11.1.3+ds-1)"),
            Some((11, 1))
        );
        assert_eq!(parse_version("qemu-system-x86_64: unknown option"), None);
        assert!(Some((7, 2)) < Some(MIN_L1_QEMU));
        assert!(Some((11, 1)) >= Some(MIN_L1_QEMU));
        // An unknown version never passes for new enough.
        assert!(None < Some(MIN_L1_QEMU));
    }

    #[test]
    fn the_wrapper_keeps_qemu_on_its_own_modules_and_firmware() {
        let w = wrapper(Path::new("/c/tools/qemu-1_11.1.3+ds-1/root"));
        assert!(w.contains("export QEMU_MODULE_DIR=\"$R/usr/lib/x86_64-linux-gnu/qemu\""));
        assert!(w.contains("\"-L\" \"$R/usr/share/qemu\" \"-L\" \"$R/usr/share/seabios\""));
        assert!(w.contains("\"$R/usr/bin/qemu-system-x86_64\""));
    }

    #[test]
    fn an_explicit_qemu_that_does_not_exist_is_refused() {
        let e = ensure(Some(Path::new("/nonexistent/qemu")), &Progress::quiet())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/nonexistent/qemu") && e.contains("--qemu"),
            "{e}"
        );
    }
}
