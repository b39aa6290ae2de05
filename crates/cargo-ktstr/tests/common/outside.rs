//! A crate outside this workspace, as a scheduler developer's would be, and
//! `cargo ktstr` run on it with a clean environment. Shared by the tests that run the
//! whole `cargo ktstr test` path (`outside_crate.rs`, `partitions.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Writes the crate `name` into `dir/name`: it depends on `ktstr` by path, has `tests`
/// as `tests/{test_file}`, and this workspace's Cargo.lock and toolchain (so it builds
/// offline with the same dependencies). Returns its directory.
pub fn write_crate(dir: &Path, name: &str, test_file: &str, tests: &str) -> PathBuf {
    let ws = workspace_root();
    let krate = dir.join(name);
    write(
        &krate.join("Cargo.toml"),
        &format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n\
             [dev-dependencies]\nktstr = {{ path = {:?} }}\n\n[workspace]\n",
            ws.join("crates/ktstr")
        ),
    );
    write(&krate.join("src/lib.rs"), "");
    write(&krate.join("tests").join(test_file), tests);
    std::fs::copy(ws.join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    std::fs::copy(
        ws.join("rust-toolchain.toml"),
        krate.join("rust-toolchain.toml"),
    )
    .unwrap();
    krate
}

/// `cargo-ktstr` run in `krate` with nothing of this test process's cargo, nextest or
/// ktstr context (the caches excepted), this workspace's target dir (sharing compiled
/// dependencies), offline, and `runs` as the runs root.
pub fn cargo_ktstr(krate: &Path, runs: &Path) -> Command {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cargo-ktstr"));
    cmd.current_dir(krate);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("NEXTEST")
            || k.starts_with("CARGO_")
            || (k.starts_with("KTSTR_") && k != "KTSTR_CACHE_DIR" && k != "KTSTR_TMPDIR")
        {
            cmd.env_remove(&*k);
        }
    }
    cmd.env("CARGO_TARGET_DIR", &target)
        .env("CARGO_NET_OFFLINE", "true")
        .env("KTSTR_RUNS_ROOT", runs);
    cmd
}
