//! Compiles the BPF half (`src/bpf/stall.bpf.c`) with clang into `$OUT_DIR/stall.bpf.o`,
//! which `src/main.rs` embeds. The compiler is `$BPF_CLANG` when set, else the first of
//! `clang`, `clang-22` ... `clang-14` found on `$PATH`.

use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCE: &str = "src/bpf/stall.bpf.c";

fn main() {
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-env-changed=BPF_CLANG");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let obj = out.join("stall.bpf.o");
    let clang = find_clang();
    let status = Command::new(&clang)
        .args([
            "-g", "-O2", "-Wall", "-Werror", "-target", "bpf", "-mcpu=v3", "-c",
        ])
        .arg(SOURCE)
        .arg("-o")
        .arg(&obj)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {clang}: {e}"));
    if !status.success() {
        panic!("{clang} failed to compile {SOURCE} ({status})");
    }
}

fn find_clang() -> String {
    if let Some(c) = std::env::var_os("BPF_CLANG").filter(|c| !c.is_empty()) {
        return c.to_string_lossy().into_owned();
    }
    let candidates =
        std::iter::once("clang".to_string()).chain((14..=22).rev().map(|v| format!("clang-{v}")));
    let path = std::env::var_os("PATH").unwrap_or_default();
    for c in candidates {
        if std::env::split_paths(&path).any(|d| is_executable(&d.join(&c))) {
            return c;
        }
    }
    panic!(
        "no clang found for the BPF half: install one (Debian: apt-get install -t bookworm \
         clang-19) or set BPF_CLANG=/path/to/clang"
    );
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
