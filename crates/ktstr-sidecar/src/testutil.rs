//! Test helpers shared by this crate's tests, `ktstr-stats`' and `cargo-ktstr`'s:
//! building small git repositories with the git CLI (the code under test reads them with
//! `gix`), and a hostile pool for the readers.

use std::path::{Path, PathBuf};
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

/// Under `root`: one run directory `7.2.13-abc1234` holding a sidecar named `one` (the
/// caller writes it into the returned directory), six links to that directory, a link
/// from it back up to `root`, a FIFO and a link to `/dev/zero` named like sidecars. A
/// reader must list each file once, hang on none and not grow without bound.
pub fn plant_hostile_pool(root: &Path) -> PathBuf {
    let run = root.join("7.2.13-abc1234");
    std::fs::create_dir_all(&run).expect("run directory");
    for i in 0..6 {
        std::os::unix::fs::symlink(&run, root.join(format!("again{i}"))).expect("link");
    }
    std::os::unix::fs::symlink(root, run.join("loop")).expect("link");
    let fifo = std::ffi::CString::new(run.join("fifo.ktstr.json").to_str().unwrap().as_bytes())
        .expect("path without NUL");
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    std::os::unix::fs::symlink("/dev/zero", run.join("zero.ktstr.json")).expect("link");
    run
}
