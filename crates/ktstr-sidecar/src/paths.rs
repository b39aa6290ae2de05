//! Where sidecars live: the runs root, one directory per kernel and project commit, one
//! file per test variant.
//!
//! ```text
//! {runs_root}/                       KTSTR_RUNS_ROOT, else {cargo target dir}/ktstr
//!   {kernel}-{project_commit}/       "unknown" for a piece that is not known
//!     {test_name}-{hash:016x}.ktstr.json
//! ```
//!
//! `KTSTR_SIDECAR_DIR`, when set, is the run directory verbatim.

use std::path::{Path, PathBuf};

use crate::sidecar::SidecarResult;

/// Run directory override, used verbatim.
pub const SIDECAR_DIR_ENV: &str = "KTSTR_SIDECAR_DIR";
/// Runs root override.
pub const RUNS_ROOT_ENV: &str = "KTSTR_RUNS_ROOT";
/// Cargo's target directory override (read, never set, by ktstr).
pub const CARGO_TARGET_DIR_ENV: &str = "CARGO_TARGET_DIR";
/// Suffix of every sidecar file.
pub const SIDECAR_SUFFIX: &str = ".ktstr.json";
/// Stands in for an unknown kernel or commit in a run directory name.
pub const UNKNOWN: &str = "unknown";

/// `{test_name}-{hash:016x}.ktstr.json`; `/` and NUL in the name become `_`.
pub fn sidecar_file_name(test_name: &str, variant_hash: u64) -> String {
    format!(
        "{}-{}{SIDECAR_SUFFIX}",
        path_safe(test_name),
        crate::hash::format_hash(variant_hash)
    )
}

/// Whether a file name is a sidecar's (temporary files of the writer are not).
pub fn is_sidecar_file_name(name: &str) -> bool {
    name.ends_with(SIDECAR_SUFFIX) && name.len() > SIDECAR_SUFFIX.len()
}

/// `{kernel}-{project_commit}`, with `unknown` for a missing piece.
pub fn run_dir_name(kernel_version: Option<&str>, project_commit: Option<&str>) -> String {
    let piece = |p: Option<&str>| match p {
        Some(s) if !s.is_empty() => path_safe(s),
        _ => UNKNOWN.to_string(),
    };
    format!("{}-{}", piece(kernel_version), piece(project_commit))
}

/// The runs root: `KTSTR_RUNS_ROOT`, else `{cargo target dir}/ktstr` with the target dir
/// found from the current directory (see [`cargo_target_dir`]), else `target/ktstr`.
pub fn runs_root() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    runs_root_from(env_var, &cwd)
}

/// The run directory a sidecar is written to: `KTSTR_SIDECAR_DIR` verbatim, else
/// `{runs_root}/{kernel}-{project_commit}`.
pub fn run_dir_for(sidecar: &SidecarResult) -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    run_dir_from(env_var, &cwd, sidecar)
}

/// Cargo's target directory for work in `cwd`: `CARGO_TARGET_DIR` (relative to `cwd`),
/// else the `target/` next to the nearest `Cargo.toml` at or above `cwd` that has one,
/// else the `target/` that cargo would create beside the outermost workspace root
/// (`Cargo.toml` with a `[workspace]` table) or, failing that, the nearest `Cargo.toml`.
/// None when there is no `Cargo.toml` above `cwd`.
pub fn cargo_target_dir(cwd: &Path) -> Option<PathBuf> {
    cargo_target_dir_from(env_var, cwd)
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn cargo_target_dir_from(env: impl Fn(&str) -> Option<String>, cwd: &Path) -> Option<PathBuf> {
    if let Some(dir) = env(CARGO_TARGET_DIR_ENV) {
        return Some(cwd.join(dir));
    }
    let manifests: Vec<&Path> = cwd
        .ancestors()
        .filter(|d| d.join("Cargo.toml").is_file())
        .collect();
    if let Some(d) = manifests.iter().find(|d| d.join("target").is_dir()) {
        return Some(d.join("target"));
    }
    // No build yet: where cargo will put it.
    let workspace_root = manifests.iter().rev().find(|d| {
        std::fs::read_to_string(d.join("Cargo.toml"))
            .is_ok_and(|t| t.lines().any(|l| l.trim() == "[workspace]"))
    });
    workspace_root
        .or(manifests.first())
        .map(|d| d.join("target"))
}

fn runs_root_from(env: impl Fn(&str) -> Option<String>, cwd: &Path) -> PathBuf {
    if let Some(root) = env(RUNS_ROOT_ENV) {
        return cwd.join(root);
    }
    cargo_target_dir_from(&env, cwd)
        .unwrap_or_else(|| cwd.join("target"))
        .join("ktstr")
}

fn run_dir_from(
    env: impl Fn(&str) -> Option<String>,
    cwd: &Path,
    sidecar: &SidecarResult,
) -> PathBuf {
    if let Some(dir) = env(SIDECAR_DIR_ENV) {
        return cwd.join(dir);
    }
    runs_root_from(&env, cwd).join(run_dir_name(
        sidecar.kernel_version.as_deref(),
        sidecar.project_commit.as_deref(),
    ))
}

/// Replace characters that cannot be in one path component.
fn path_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of<'a>(
        pairs: &'a [(&'static str, &'static str)],
    ) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn file_and_dir_names() {
        assert_eq!(
            sidecar_file_name("steady", 0xabc),
            "steady-0000000000000abc.ktstr.json"
        );
        assert_eq!(
            sidecar_file_name("mod/steady", 1),
            "mod_steady-0000000000000001.ktstr.json"
        );
        assert!(is_sidecar_file_name("a-0000000000000001.ktstr.json"));
        assert!(!is_sidecar_file_name("a.ktstr.json.tmp.12.0"));
        assert!(!is_sidecar_file_name(".ktstr.json"));
        assert_eq!(
            run_dir_name(Some("7.2.13"), Some("abc1234-dirty")),
            "7.2.13-abc1234-dirty"
        );
        assert_eq!(run_dir_name(None, Some("")), "unknown-unknown");
    }

    #[test]
    fn target_dir_discovery() {
        let t = tempfile::tempdir().expect("tempdir");
        let ws = t.path().join("ws");
        let member = ws.join("crates/a");
        std::fs::create_dir_all(member.join("src")).expect("mkdir");
        std::fs::write(
            ws.join("Cargo.toml"),
            "[workspace]\nmembers = [\"crates/*\"]\n",
        )
        .expect("write");
        std::fs::write(member.join("Cargo.toml"), "[package]\nname = \"a\"\n").expect("write");
        let none = env_of(&[]);

        // Before any build: the workspace root's target/.
        assert_eq!(
            cargo_target_dir_from(&none, &member.join("src")),
            Some(ws.join("target"))
        );
        // After a build: the existing target/.
        std::fs::create_dir(ws.join("target")).expect("mkdir");
        assert_eq!(
            cargo_target_dir_from(&none, &member),
            Some(ws.join("target"))
        );
        // CARGO_TARGET_DIR wins, relative to cwd.
        let env = env_of(&[("CARGO_TARGET_DIR", "/tmp/tgt")]);
        assert_eq!(
            cargo_target_dir_from(&env, &member),
            Some(PathBuf::from("/tmp/tgt"))
        );
        // Outside any package.
        assert_eq!(cargo_target_dir_from(&none, t.path()), None);
        assert_eq!(
            runs_root_from(&none, t.path()),
            t.path().join("target/ktstr")
        );
        assert_eq!(runs_root_from(&none, &member), ws.join("target/ktstr"));
    }

    #[test]
    fn run_dir_rules() {
        let t = tempfile::tempdir().expect("tempdir");
        let mut s = SidecarResult::new("t", "1n1l1c1t", "eevdf");
        s.kernel_version = Some("7.2.13".into());
        s.project_commit = Some("abc1234".into());
        let env = env_of(&[("KTSTR_RUNS_ROOT", "/runs")]);
        assert_eq!(
            run_dir_from(&env, t.path(), &s),
            PathBuf::from("/runs/7.2.13-abc1234")
        );
        let env = env_of(&[
            ("KTSTR_RUNS_ROOT", "/runs"),
            ("KTSTR_SIDECAR_DIR", "/exact"),
        ]);
        assert_eq!(run_dir_from(&env, t.path(), &s), PathBuf::from("/exact"));
        s.kernel_version = None;
        let env = env_of(&[("KTSTR_RUNS_ROOT", "rel")]);
        assert_eq!(
            run_dir_from(&env, t.path(), &s),
            t.path().join("rel/unknown-abc1234")
        );
    }
}
