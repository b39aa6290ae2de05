//! Test helpers shared by this crate's tests and `cargo-ktstr`'s: building small git
//! repositories with the git CLI (the code under test reads them with `gix`).

use std::path::Path;
use std::process::Command;

/// `git ARGS` in `dir` with a throw-away identity and no signing; panics when git is
/// missing or fails. Returns stdout, trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the git CLI is needed to build the test repository");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
