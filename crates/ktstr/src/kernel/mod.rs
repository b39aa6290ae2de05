//! Kernel images: the cache, `KTSTR_KERNEL` resolution, fetching the pinned Debian kernel.
//!
//! - [`cache`]: where kernels live on disk (`KTSTR_CACHE_DIR`, else
//!   `$XDG_CACHE_HOME/ktstr/kernels`, else `~/.cache/ktstr/kernels`), one directory per
//!   entry with `bzImage`, `config`, `System.map` and `metadata.json`, installed by rename.
//! - [`resolve()`]: turns `KTSTR_KERNEL` (or an explicit spec) into a bootable image.
//! - [`fetch`]: `cargo ktstr kernel fetch`, the Debian sid kernel through a private apt
//!   configuration.
//! - [`image`]: the bzImage setup header (is this a kernel, which release).
//! - [`build`]: `cargo ktstr kernel build`, a kernel from a source tree into the cache.

pub mod build;
pub mod cache;
pub mod fetch;
pub mod image;
mod progress;
pub mod resolve;
pub mod symbols;
pub mod tools;
pub mod vmlinux;

use std::path::PathBuf;

pub use build::{build, BuildError, BuildOutcome, BuildRequest};
pub use cache::{CacheEntry, CacheScan, KernelCache, KernelMetadata};
pub use fetch::{fetch, DebianKernel, FetchOutcome};
pub use image::{read_boot_header, BootHeader};
pub use progress::{human_bytes, Progress};
pub use resolve::{resolve, resolve_in, KernelOrigin, ResolvedKernel};

/// The environment variable naming the kernel to boot.
pub const KERNEL_ENV: &str = "KTSTR_KERNEL";
/// The environment variable overriding the kernel cache directory.
pub const CACHE_DIR_ENV: &str = "KTSTR_CACHE_DIR";

/// Everything that can go wrong finding, reading, caching or fetching a kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{}: not a Linux kernel image (no HdrS boot header); \
         KTSTR_KERNEL must name a bzImage (e.g. arch/x86/boot/bzImage, not vmlinux), \
         a kernel source tree, a version or a cache key",
        path.display()
    )]
    NotKernelImage { path: PathBuf },

    #[error(
        "{}: the boot header has no kernel_version string, so its release is unknown; \
         use a bzImage built with boot protocol 2.00 or later",
        path.display()
    )]
    NoKernelVersion { path: PathBuf },

    #[error(
        "cannot locate the kernel cache: neither {CACHE_DIR_ENV}, XDG_CACHE_HOME nor HOME \
         is set; set {CACHE_DIR_ENV}=/some/dir"
    )]
    NoCacheDir,

    #[error(
        "no kernel: run `cargo ktstr kernel fetch` (or set {KERNEL_ENV}=<bzImage, source \
         tree, version or cache key>); the kernel cache {} has no entries",
        cache_dir.display()
    )]
    NoKernel { cache_dir: PathBuf },

    #[error(
        "kernel `{spec}` not found: it is not an existing path, and no entry of the kernel \
         cache {} has that key or release (cached: {}); fetch it with `cargo ktstr kernel \
         fetch debian:<version>` or point {KERNEL_ENV} at a bzImage",
        cache_dir.display(),
        if cached.is_empty() { "none".to_string() } else { cached.join(", ") }
    )]
    NotFound {
        spec: String,
        cache_dir: PathBuf,
        cached: Vec<String>,
    },

    #[error(
        "{}: no such file or directory; {KERNEL_ENV} (or --kernel) must name an existing \
         bzImage or kernel source tree",
        path.display()
    )]
    PathMissing { path: PathBuf },

    #[error(
        "{}: looks like a kernel source tree but has no arch/x86/boot/bzImage; build it \
         first (`make -j$(nproc) bzImage`)",
        tree.display()
    )]
    SourceTreeNotBuilt { tree: PathBuf },

    #[error(
        "{}: the kernel image is cut short ({actual} bytes, its boot header announces {expected}): a broken download or copy; fetch or build it again",
        path.display()
    )]
    TruncatedImage {
        path: PathBuf,
        actual: u64,
        expected: u64,
    },

    #[error(
        "{}: not a kernel image but a {kind}: KTSTR_KERNEL / --kernel takes a bzImage, a kernel source tree, a cache key or a version",
        path.display()
    )]
    NotAFileOrDir { path: PathBuf, kind: &'static str },

    #[error(
        "{}: directory is neither a kernel source tree (no arch/x86/boot/bzImage, no \
         Makefile+Kconfig) nor a kernel cache entry (no metadata.json)",
        path.display()
    )]
    NotAKernelDir { path: PathBuf },

    #[error(
        "{}: corrupt kernel cache entry ({reason}); refetch it with `cargo ktstr kernel \
         fetch --force` or delete the directory",
        dir.display()
    )]
    BrokenEntry { dir: PathBuf, reason: String },

    #[error("invalid cache key `{key}`: {reason}")]
    BadKey { key: String, reason: &'static str },

    #[error(
        "invalid kernel fetch spec `{spec}`: expected `debian`, `debian:latest` or \
         `debian:<version>` (e.g. `debian:7.2.13+deb14`)"
    )]
    BadFetchSpec { spec: String },

    #[error(
        "`{tool}` not found: fetching Debian kernels needs apt-get, apt-cache and dpkg-deb \
         (a Debian or Ubuntu host); or build a kernel yourself and set {KERNEL_ENV}"
    )]
    ToolMissing { tool: String },

    #[error(
        "`{command}` failed ({status}){}{}",
        stderr_tail(output),
        hint_line(hint)
    )]
    ToolFailed {
        command: String,
        status: String,
        output: String,
        hint: String,
    },

    #[error(
        "no Debian mirror found in /etc/apt/sources.list.d/*.sources or \
         /etc/apt/sources.list; set KTSTR_DEBIAN_MIRROR=<url of a Debian archive>"
    )]
    NoMirror,

    #[error(
        "{}: Debian archive keyring missing; install it (`apt-get install \
         debian-archive-keyring`)",
        path.display()
    )]
    NoKeyring { path: PathBuf },

    #[error(
        "package `{package}` is not in Debian sid (sid keeps only its newest kernels); \
         fetch `debian:latest`, or bump the pin in kernels/debian.pin"
    )]
    PackageUnavailable { package: String },

    #[error(
        "`linux-image-cloud-amd64` in Debian sid names no `linux-image-<release>` \
         dependency (apt-cache said: {output}); fetch a version explicitly with \
         `debian:<version>`"
    )]
    NoLatest { output: String },

    #[error(
        "the Debian packages {packages:?} contain no {what} (looked under usr/lib/modules/<release>/ \
         and boot/); the package layout changed: report it"
    )]
    PackageLayout { packages: Vec<String>, what: String },

    /// Building a kernel from a source tree failed (boxed: a build error can itself hold
    /// a kernel error).
    #[error(transparent)]
    Build(Box<BuildError>),

    #[error(
        "the fetched image reports release `{found}` but package `{package}` promised \
         `{expected}`"
    )]
    ReleaseMismatch {
        package: String,
        expected: String,
        found: String,
    },
}

impl From<BuildError> for KernelError {
    fn from(e: BuildError) -> KernelError {
        match e {
            BuildError::Kernel(k) => k,
            other => KernelError::Build(Box::new(other)),
        }
    }
}

fn stderr_tail(output: &str) -> String {
    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    let start = lines.len().saturating_sub(8);
    format!(":\n  {}", lines[start..].join("\n  "))
}

fn hint_line(hint: &str) -> String {
    if hint.is_empty() {
        String::new()
    } else {
        format!("\n  hint: {hint}")
    }
}
