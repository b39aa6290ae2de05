//! Builds the bare-metal self-test guest (selftest-guest/: C + assembly) into a static ELF
//! linked at 2 MiB, with no SSE/AVX/XSAVE so KVM's instruction emulator can run it. The
//! crate embeds it (`SELFTEST_GUEST_ELF`).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
            .join("selftest-guest");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("selftest-guest.elf");
    for f in ["guest.c", "start.S", "guest.ld"] {
        println!("cargo:rerun-if-changed={}", dir.join(f).display());
    }
    let cc = std::env::var("KTSTR_GUEST_CC").unwrap_or_else(|_| "gcc".into());
    println!("cargo:rerun-if-env-changed=KTSTR_GUEST_CC");
    let status = Command::new(&cc)
        .args([
            "-O2",
            "-std=gnu11",
            "-Wall",
            "-Werror",
            "-ffreestanding",
            "-fno-builtin",
            "-nostdlib",
            "-nostartfiles",
            "-static",
            "-fno-pic",
            "-no-pie",
            "-mcmodel=small",
            "-mno-red-zone",
            "-mno-sse",
            "-mno-sse2",
            "-mno-mmx",
            "-mno-avx",
            "-mgeneral-regs-only",
            "-fno-stack-protector",
            "-fno-asynchronous-unwind-tables",
            "-fno-tree-vectorize",
            "-fcf-protection=none",
            "-Wl,--build-id=none",
            "-Wl,-z,max-page-size=4096",
            "-Wl,-z,noexecstack",
        ])
        .arg("-T")
        .arg(dir.join("guest.ld"))
        .arg(dir.join("start.S"))
        .arg(dir.join("guest.c"))
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("running `{cc}` to build the self-test guest: {e}; install gcc or set KTSTR_GUEST_CC"));
    assert!(
        status.success(),
        "building the self-test guest with `{cc}` failed ({status})"
    );
}
