//! Where the guest runtime (`ktstr-guest`, PID 1 of every test VM) comes from:
//! `KTSTR_GUEST`, else beside this executable (cargo's target dir), else — for a
//! `cargo-ktstr` installed with `cargo install --path` — built once from the ktstr
//! checkout this crate was compiled from, into ktstr's cache.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

/// The guest runtime binary.
pub fn guest_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("KTSTR_GUEST").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        anyhow::ensure!(p.is_file(), "KTSTR_GUEST={} is not a file", p.display());
        return Ok(p);
    }
    let exe = std::env::current_exe().context("cannot find the current executable")?;
    if let Some(found) = beside(&exe) {
        return Ok(found);
    }
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guest/Cargo.toml");
    if source.is_file() {
        return build_from_checkout(&source);
    }
    anyhow::bail!(
        "the guest runtime `ktstr-guest` was not found beside {}, and the ktstr checkout this was built from ({}) is gone: build it with `cargo build -p ktstr-guest` in a ktstr checkout and set KTSTR_GUEST=/path/to/ktstr-guest",
        exe.display(),
        source.display()
    )
}

/// `ktstr-guest` in the executable's directory or up to two above (cargo puts test
/// binaries in `target/<profile>/deps/`, binaries one level up).
fn beside(exe: &Path) -> Option<PathBuf> {
    exe.ancestors()
        .skip(1)
        .take(3)
        .map(|d| d.join("ktstr-guest"))
        .find(|c| c.is_file())
}

/// `cargo build --release -p ktstr-guest` from `manifest` into
/// `$XDG_CACHE_HOME/ktstr/guest` (or `~/.cache/ktstr/guest`); a no-op once built.
fn build_from_checkout(manifest: &Path) -> anyhow::Result<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .context("cannot place the guest runtime: neither XDG_CACHE_HOME nor HOME is set (or set KTSTR_GUEST)")?
        .join("ktstr/guest");
    let bin = cache.join("release/ktstr-guest");
    let cargo = crate::test_support::suite::cargo_bin();
    if !bin.is_file() {
        // The first run after `cargo install` compiles it: say why this run is slow.
        eprintln!(
            "ktstr: building the guest runtime from {} into {} (once per install)",
            manifest.parent().unwrap_or(manifest).display(),
            cache.display()
        );
    }
    let status = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "ktstr-guest",
            "--manifest-path",
        ])
        .arg(manifest)
        .arg("--target-dir")
        .arg(&cache)
        .status()
        .with_context(|| format!("cannot run `{cargo} build` for the guest runtime"))?;
    anyhow::ensure!(
        status.success() && bin.is_file(),
        "building the guest runtime from {} failed ({status}); build it yourself and set KTSTR_GUEST",
        manifest.display()
    );
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn found_beside_the_binary_or_up_to_two_levels_above() {
        let d = tempfile::tempdir().unwrap();
        let deps = d.path().join("debug/deps");
        std::fs::create_dir_all(&deps).unwrap();
        let exe = deps.join("test-bin");
        assert_eq!(beside(&exe), None);
        std::fs::write(d.path().join("debug/ktstr-guest"), b"").unwrap();
        assert_eq!(beside(&exe), Some(d.path().join("debug/ktstr-guest")));
    }
}
