//! The initramfs: newc cpio of the guest runtime, the spec, the kernel config and extra
//! binaries with their shared-library closure, cached by content hash.
//!
//! An initramfs here is two archives back to back (the kernel unpacks each in turn):
//! - the **base part**, the same for every test with the same runtime, kernel and extra
//!   binaries: `/init` (the guest runtime) and its libraries, `/dev/console`, mount
//!   points, `/boot/config-<release>`, extra binaries under `/bin`. Cached as
//!   `<kernel cache>/initramfs/<sha256>.cpio` and verified on reuse;
//! - the **test part**, a few hundred bytes: the spec at [`SPEC_GUEST_PATH`].
//!
//! [`InitramfsBuilder`] is the general tool; [`build_initramfs`] is what the runner calls.

pub mod cache;
pub mod elf;
pub mod newc;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use cache::{CachedPart, PartStatus};
pub use elf::{ElfClosure, LibrarySearch};

use crate::kernel::{KernelCache, ResolvedKernel};
use newc::{NewcWriter, S_IFCHR, S_IFDIR, S_IFLNK, S_IFREG};

/// Where the test's spec lands in the guest.
pub const SPEC_GUEST_PATH: &str = "/ktstr/spec.json";
/// Inode numbers of the test part start here, clear of the base part's.
const TEST_PART_FIRST_INO: u32 = 0x4000_0000;

/// Everything that can go wrong assembling an initramfs.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{}: not an ELF binary ({reason}); only ELF files get their libraries packed, \
         add other files with add_file",
        path.display()
    )]
    NotElf { path: PathBuf, reason: String },

    #[error(
        "library `{library}` needed by {} not found (searched {}); install the package \
         that provides it, or add its directory to /etc/ld.so.conf.d or to the binary's \
         RUNPATH",
        needed_by.display(),
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    MissingLibrary {
        library: String,
        needed_by: PathBuf,
        searched: Vec<PathBuf>,
    },

    #[error(
        "{}: its program interpreter {interpreter} does not exist on this host; build the \
         binary for this host or link it statically",
        binary.display()
    )]
    MissingInterpreter {
        binary: PathBuf,
        interpreter: String,
    },

    #[error("guest path `{path}`: {reason}")]
    BadGuestPath { path: String, reason: &'static str },

    #[error("guest path `{path}` is already {existing}; cannot also add {new} there")]
    Conflict {
        path: String,
        existing: String,
        new: String,
    },

    #[error("no cache directory for initramfs parts: {0}")]
    NoCacheDir(#[source] crate::kernel::KernelError),
}

/// One node of the archive.
#[derive(Clone, PartialEq, Eq)]
enum Node {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
    CharDev { mode: u32, major: u32, minor: u32 },
}

impl Node {
    fn describe(&self) -> String {
        match self {
            Node::Dir { .. } => "a directory".into(),
            Node::File { data, .. } => format!("a file of {} bytes", data.len()),
            Node::Symlink { target } => format!("a symlink to {target}"),
            Node::CharDev { major, minor, .. } => format!("char device {major}:{minor}"),
        }
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Collects files, directories, symlinks and device nodes, then writes them as one newc
/// archive. Parent directories are added automatically (0755). Entries are written in
/// path order, so every directory precedes its contents. Adding the same path twice is
/// fine when both are the same node (or both directories); anything else is a conflict.
#[derive(Debug, Clone, Default)]
pub struct InitramfsBuilder {
    nodes: BTreeMap<String, Node>,
    search: Option<LibrarySearch>,
}

impl InitramfsBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A directory.
    pub fn add_dir(&mut self, guest: &str, mode: u32) -> Result<&mut Self, InitramfsError> {
        self.insert(
            guest,
            Node::Dir {
                mode: mode & 0o7777,
            },
        )?;
        Ok(self)
    }

    /// A file with the contents of `host` (symlinks followed).
    pub fn add_file(
        &mut self,
        guest: &str,
        host: &Path,
        mode: u32,
    ) -> Result<&mut Self, InitramfsError> {
        let data = std::fs::read(host).map_err(|source| InitramfsError::Read {
            path: host.to_path_buf(),
            source,
        })?;
        self.add_bytes(guest, data, mode)
    }

    /// A file with the given contents.
    pub fn add_bytes(
        &mut self,
        guest: &str,
        data: impl Into<Vec<u8>>,
        mode: u32,
    ) -> Result<&mut Self, InitramfsError> {
        self.insert(
            guest,
            Node::File {
                mode: mode & 0o7777,
                data: data.into(),
            },
        )?;
        Ok(self)
    }

    /// A symbolic link at `guest` pointing to `target` (stored verbatim).
    pub fn add_symlink(&mut self, guest: &str, target: &str) -> Result<&mut Self, InitramfsError> {
        self.insert(
            guest,
            Node::Symlink {
                target: target.to_string(),
            },
        )?;
        Ok(self)
    }

    /// A character device node, e.g. `/dev/console` 5:1.
    pub fn add_char_dev(
        &mut self,
        guest: &str,
        major: u32,
        minor: u32,
        mode: u32,
    ) -> Result<&mut Self, InitramfsError> {
        self.insert(
            guest,
            Node::CharDev {
                mode: mode & 0o7777,
                major,
                minor,
            },
        )?;
        Ok(self)
    }

    /// An ELF binary at `guest` (mode 0755) plus its interpreter and every shared library
    /// it needs, found as the loader would (see [`elf`]).
    pub fn add_elf_with_closure(
        &mut self,
        guest: &str,
        host: &Path,
    ) -> Result<&mut Self, InitramfsError> {
        let search = self.search.get_or_insert_with(LibrarySearch::host).clone();
        let closure = elf::closure(host, &search)?;
        self.add_bytes(guest, closure.binary, 0o755)?;
        if let Some(i) = closure.interpreter {
            self.add_bytes(&i.guest_path, i.data, 0o755)?;
        }
        for lib in closure.libraries {
            self.add_bytes(&lib.guest_path, lib.data, 0o755)?;
        }
        Ok(self)
    }

    /// Guest paths in archive order (with a leading `/`).
    pub fn paths(&self) -> impl Iterator<Item = String> + '_ {
        self.nodes.keys().map(|k| format!("/{k}"))
    }

    /// The archive, trailer included.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_bytes_from_ino(1)
    }

    fn to_bytes_from_ino(&self, first_ino: u32) -> Vec<u8> {
        let mut w = NewcWriter::new(Vec::new(), first_ino);
        for (name, node) in &self.nodes {
            // Writing to a Vec cannot fail; sizes over 4 GiB cannot be read into memory
            // by add_file either.
            let r = match node {
                Node::Dir { mode } => w.write_entry(name, S_IFDIR | mode, (0, 0), &[]),
                Node::File { mode, data } => w.write_entry(name, S_IFREG | mode, (0, 0), data),
                Node::Symlink { target } => {
                    w.write_entry(name, S_IFLNK | 0o777, (0, 0), target.as_bytes())
                }
                Node::CharDev { mode, major, minor } => {
                    w.write_entry(name, S_IFCHR | mode, (*major, *minor), &[])
                }
            };
            r.expect("writing a cpio record to memory");
        }
        w.finish().expect("writing a cpio trailer to memory")
    }

    fn insert(&mut self, guest: &str, node: Node) -> Result<(), InitramfsError> {
        let name = normalize_guest(guest)?;
        // Parents first.
        let mut parent = String::new();
        let components: Vec<&str> = name.split('/').collect();
        for c in &components[..components.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(c);
            match self.nodes.get(&parent) {
                None => {
                    self.nodes.insert(parent.clone(), Node::Dir { mode: 0o755 });
                }
                Some(Node::Dir { .. }) => {}
                Some(other) => {
                    return Err(InitramfsError::Conflict {
                        path: format!("/{parent}"),
                        existing: other.describe(),
                        new: "a directory (parent of another entry)".into(),
                    })
                }
            }
        }
        match self.nodes.get(&name) {
            None => {
                self.nodes.insert(name, node);
            }
            Some(Node::Dir { .. }) if matches!(node, Node::Dir { .. }) => {
                // An explicit mode wins over an implicit parent's 0755.
                self.nodes.insert(name, node);
            }
            Some(existing) if *existing == node => {}
            Some(existing) => {
                return Err(InitramfsError::Conflict {
                    path: format!("/{name}"),
                    existing: existing.describe(),
                    new: node.describe(),
                })
            }
        }
        Ok(())
    }
}

/// `/a//b/` → `a/b`; rejects relative paths, `.`/`..` components and the root itself.
fn normalize_guest(guest: &str) -> Result<String, InitramfsError> {
    let bad = |reason| InitramfsError::BadGuestPath {
        path: guest.to_string(),
        reason,
    };
    if !guest.starts_with('/') {
        return Err(bad("must be absolute"));
    }
    if guest.contains('\0') {
        return Err(bad("contains NUL"));
    }
    let parts: Vec<&str> = guest.split('/').filter(|c| !c.is_empty()).collect();
    if parts.is_empty() {
        return Err(bad("is the root directory"));
    }
    if parts.iter().any(|c| *c == "." || *c == "..") {
        return Err(bad("contains `.` or `..`"));
    }
    Ok(parts.join("/"))
}

/// What goes into the base part (the same for every test of a run).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseParts {
    /// The guest runtime, packed as `/init` with its shared-library closure.
    pub guest: PathBuf,
    /// The kernel config, packed as `/boot/config-<kernel_release>` (libbpf reads it on
    /// kernels without IKCONFIG).
    pub kernel_config: Option<PathBuf>,
    /// `uname -r` of the kernel that will boot.
    pub kernel_release: String,
    /// Extra host files (`--include`), packed as `/bin/<file name>`; ELF files come with
    /// their shared-library closure, others (scripts) keep their host mode.
    pub includes: Vec<PathBuf>,
}

impl BaseParts {
    pub fn new(guest: impl Into<PathBuf>) -> Self {
        BaseParts {
            guest: guest.into(),
            ..Default::default()
        }
    }

    /// Packs the kernel's config (when it has one) as `/boot/config-<release>`.
    pub fn kernel(mut self, kernel: &ResolvedKernel) -> Self {
        self.kernel_config = kernel.config.clone();
        self.kernel_release = kernel.release.clone();
        self
    }

    /// Packs a host file as `/bin/<file name>`.
    pub fn include(mut self, host: impl Into<PathBuf>) -> Self {
        self.includes.push(host.into());
        self
    }

    /// The base part's contents.
    pub fn builder(&self) -> Result<InitramfsBuilder, InitramfsError> {
        let mut b = InitramfsBuilder::new();
        for d in [
            "/bin", "/dev", "/proc", "/sys", "/tmp", "/run", "/etc", "/root",
        ] {
            b.add_dir(d, 0o755)?;
        }
        b.add_dir("/tmp", 0o1777)?;
        b.add_char_dev("/dev/console", 5, 1, 0o600)?;
        b.add_char_dev("/dev/null", 1, 3, 0o666)?;
        b.add_elf_with_closure("/init", &self.guest)?;
        if let Some(c) = &self.kernel_config {
            if self.kernel_release.is_empty() {
                return Err(InitramfsError::BadGuestPath {
                    path: "/boot/config-".into(),
                    reason: "kernel_config is set but kernel_release is empty",
                });
            }
            b.add_file(&format!("/boot/config-{}", self.kernel_release), c, 0o644)?;
        }
        self.add_includes(&mut b)?;
        Ok(b)
    }

    /// Only the includes (with their libraries): what a warm start delivers to a guest
    /// that booted [`BaseParts::runtime_only`].
    pub fn includes_builder(&self) -> Result<InitramfsBuilder, InitramfsError> {
        let mut b = InitramfsBuilder::new();
        self.add_includes(&mut b)?;
        Ok(b)
    }

    /// The same parts without the includes: the guest runtime and the kernel config.
    pub fn runtime_only(&self) -> BaseParts {
        BaseParts {
            includes: Vec::new(),
            ..self.clone()
        }
    }

    fn add_includes(&self, b: &mut InitramfsBuilder) -> Result<(), InitramfsError> {
        for host in &self.includes {
            let name = host
                .file_name()
                .ok_or_else(|| InitramfsError::BadGuestPath {
                    path: host.display().to_string(),
                    reason: "include path has no file name",
                })?;
            let guest = format!("/bin/{}", name.to_string_lossy());
            if elf::is_elf(host) {
                b.add_elf_with_closure(&guest, host)?;
            } else {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(host)
                    .map(|m| m.permissions().mode())
                    .map_err(|source| InitramfsError::Read {
                        path: host.clone(),
                        source,
                    })?;
                b.add_file(&guest, host, mode)?;
            }
        }
        Ok(())
    }

    /// The base part in `dir`, built or reused.
    pub fn cached_in(&self, dir: &Path) -> Result<CachedPart, InitramfsError> {
        cache::cached_part(dir, &self.builder()?.to_bytes())
    }
}

/// The per-test part: the spec at [`SPEC_GUEST_PATH`].
pub fn test_part(spec_json: &[u8]) -> Vec<u8> {
    let mut b = InitramfsBuilder::new();
    b.add_bytes(SPEC_GUEST_PATH, spec_json.to_vec(), 0o644)
        .expect("SPEC_GUEST_PATH is a valid guest path");
    b.to_bytes_from_ino(TEST_PART_FIRST_INO)
}

/// A finished initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltInitramfs {
    /// The file to hand to the kernel: base part followed by test part.
    pub path: PathBuf,
    /// The cached base part.
    pub base: CachedPart,
    pub test_part_len: u64,
}

/// Builds the initramfs for one test at `out`, with the base part cached in the kernel
/// cache's `initramfs/` directory.
pub fn build_initramfs(
    base: &BaseParts,
    spec_json: &[u8],
    out: &Path,
) -> Result<BuiltInitramfs, InitramfsError> {
    let cache = KernelCache::from_env().map_err(InitramfsError::NoCacheDir)?;
    build_initramfs_in(&cache.initramfs_dir(), base, spec_json, out)
}

/// [`build_initramfs`] with an explicit cache directory for the base part.
pub fn build_initramfs_in(
    cache_dir: &Path,
    base: &BaseParts,
    spec_json: &[u8],
    out: &Path,
) -> Result<BuiltInitramfs, InitramfsError> {
    let part = base.cached_in(cache_dir)?;
    let base_bytes = std::fs::read(&part.path).map_err(|source| InitramfsError::Read {
        path: part.path.clone(),
        source,
    })?;
    let tail = test_part(spec_json);
    cache::write_atomic(out, &[&base_bytes, &tail])?;
    Ok(BuiltInitramfs {
        path: out.to_path_buf(),
        base: part,
        test_part_len: tail.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::newc::{parse, NewcEntry};
    use super::*;
    use std::fs;

    fn find<'a>(entries: &'a [NewcEntry], name: &str) -> &'a NewcEntry {
        entries
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("{name} not in archive"))
    }

    #[test]
    fn builder_writes_what_was_added_parents_first() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("h");
        fs::write(&host, b"host file").unwrap();
        let mut b = InitramfsBuilder::new();
        b.add_file("/etc/deep/h", &host, 0o640)
            .unwrap()
            .add_bytes("/etc/motd", b"hi".to_vec(), 0o644)
            .unwrap()
            .add_symlink("/bin/sh", "busybox")
            .unwrap()
            .add_char_dev("/dev/console", 5, 1, 0o600)
            .unwrap()
            .add_dir("/tmp", 0o1777)
            .unwrap();
        let e = parse(&b.to_bytes()).unwrap();
        let names: Vec<&str> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/sh",
                "dev",
                "dev/console",
                "etc",
                "etc/deep",
                "etc/deep/h",
                "etc/motd",
                "tmp"
            ]
        );
        assert_eq!(find(&e, "etc/deep/h").data, b"host file");
        assert_eq!(find(&e, "etc/deep/h").mode, S_IFREG | 0o640);
        assert_eq!(find(&e, "etc/deep").mode, S_IFDIR | 0o755);
        assert_eq!(find(&e, "bin/sh").mode, S_IFLNK | 0o777);
        assert_eq!(find(&e, "bin/sh").data, b"busybox");
        assert_eq!(find(&e, "tmp").mode, S_IFDIR | 0o1777);
        let c = find(&e, "dev/console");
        assert_eq!(
            (c.mode, c.rdev_major, c.rdev_minor),
            (S_IFCHR | 0o600, 5, 1)
        );
    }

    #[test]
    fn duplicates_and_bad_paths() {
        let mut b = InitramfsBuilder::new();
        b.add_bytes("/a/f", b"x".to_vec(), 0o644).unwrap();
        // The same file again is fine; different content is not.
        b.add_bytes("//a//f", b"x".to_vec(), 0o644).unwrap();
        let e = b.add_bytes("/a/f", b"y".to_vec(), 0o644).unwrap_err();
        assert!(matches!(e, InitramfsError::Conflict { .. }), "{e}");
        // A file cannot become a parent directory.
        let e = b.add_bytes("/a/f/g", b"z".to_vec(), 0o644).unwrap_err();
        assert!(e.to_string().contains("/a/f"), "{e}");
        for bad in ["rel/path", "/", "/a/../etc/passwd", "/a/./b"] {
            assert!(
                matches!(
                    b.add_dir(bad, 0o755),
                    Err(InitramfsError::BadGuestPath { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn elf_with_closure_packs_ls_and_its_libraries() {
        let mut b = InitramfsBuilder::new();
        b.add_elf_with_closure("/bin/ls", Path::new("/bin/ls"))
            .unwrap();
        let e = parse(&b.to_bytes()).unwrap();
        let ls = find(&e, "bin/ls");
        assert_eq!(ls.mode, S_IFREG | 0o755);
        assert_eq!(ls.data, fs::read("/bin/ls").unwrap());
        let interp = find(&e, "lib64/ld-linux-x86-64.so.2");
        // The real file, not a symlink, under the requested name.
        assert_eq!(interp.mode & newc::S_IFMT, S_IFREG);
        assert_eq!(
            interp.data,
            fs::read("/lib64/ld-linux-x86-64.so.2").unwrap()
        );
        assert!(e.iter().any(|x| x.name.ends_with("/libc.so.6")));
    }

    #[test]
    fn missing_library_error_from_the_builder() {
        let dir = tempfile::tempdir().unwrap();
        let libdir = dir.path().join("l");
        let bin = elf::tests::build_pair(dir.path(), "ktstrmissing", &libdir, &[]);
        fs::remove_dir_all(&libdir).unwrap();
        let e = BaseParts::new(&bin).builder().unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("library `libktstrmissing.so` needed by"),
            "{msg}"
        );
        assert!(msg.contains(&*bin.to_string_lossy()), "{msg}");
    }

    fn fixture() -> (tempfile::TempDir, BaseParts) {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        fs::write(&config, "CONFIG_SCHED_CLASS_EXT=y\n").unwrap();
        let script = dir.path().join("hello.sh");
        fs::write(&script, "#!/bin/sh\necho hello\n").unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let kernel = ResolvedKernel {
            image: "/k/bzImage".into(),
            release: "7.2.13+deb14-cloud-amd64".into(),
            config: Some(config),
            system_map: None,
            source_tree: None,
            cache_key: None,
            metadata: None,
            origin: crate::kernel::KernelOrigin::Explicit,
        };
        let base = BaseParts::new("/bin/true")
            .kernel(&kernel)
            .include("/bin/cat")
            .include(&script)
            .include("/bin/ls");
        (dir, base)
    }

    #[test]
    fn full_initramfs_is_base_then_spec_and_base_is_cached() {
        let (dir, base) = fixture();
        let cache_dir = dir.path().join("cache");
        let out = dir.path().join("out/initramfs.cpio");
        let spec = br#"{"test":"smoke","workers":2}"#;
        let built = build_initramfs_in(&cache_dir, &base, spec, &out).unwrap();
        assert_eq!(built.base.status, PartStatus::Built);
        assert!(built.base.path.starts_with(&cache_dir));
        let bytes = fs::read(&out).unwrap();
        assert_eq!(bytes.len() as u64, built.base.len + built.test_part_len);
        assert!(built.test_part_len < 512, "{}", built.test_part_len);

        let e = parse(&bytes).unwrap();
        assert_eq!(find(&e, "init").data, fs::read("/bin/true").unwrap());
        assert_eq!(find(&e, "init").mode, S_IFREG | 0o755);
        let console = find(&e, "dev/console");
        assert_eq!((console.rdev_major, console.rdev_minor), (5, 1));
        assert_eq!(
            find(&e, "boot/config-7.2.13+deb14-cloud-amd64").data,
            b"CONFIG_SCHED_CLASS_EXT=y\n"
        );
        assert_eq!(find(&e, "bin/cat").data, fs::read("/bin/cat").unwrap());
        assert_eq!(find(&e, "bin/hello.sh").mode, S_IFREG | 0o755);
        assert_eq!(find(&e, "bin/ls").data, fs::read("/bin/ls").unwrap());
        assert!(e.iter().any(|x| x.name.ends_with("/libc.so.6")));
        assert_eq!(find(&e, "ktstr/spec.json").data, spec);
        // Inode numbers are unique across the two parts.
        let mut inos: Vec<u32> = e.iter().map(|x| x.ino).collect();
        inos.sort();
        inos.dedup();
        assert_eq!(inos.len(), e.len());

        // Second test, other spec: the base part is reused as is.
        let out2 = dir.path().join("out/second.cpio");
        let again = build_initramfs_in(&cache_dir, &base, b"{}", &out2).unwrap();
        assert_eq!(again.base.status, PartStatus::Reused);
        assert_eq!(again.base.path, built.base.path);
        assert_eq!(
            find(
                &parse(&fs::read(&out2).unwrap()).unwrap(),
                "ktstr/spec.json"
            )
            .data,
            b"{}"
        );
    }

    #[test]
    fn corrupted_cached_base_is_detected_and_rebuilt() {
        let (dir, base) = fixture();
        let cache_dir = dir.path().join("cache");
        let out = dir.path().join("i.cpio");
        let first = build_initramfs_in(&cache_dir, &base, b"{}", &out).unwrap();
        let good = fs::read(&out).unwrap();
        // Truncate the cached part, as a full disk or a killed copy would.
        let cached = fs::read(&first.base.path).unwrap();
        fs::write(&first.base.path, &cached[..cached.len() / 3]).unwrap();
        let second = build_initramfs_in(&cache_dir, &base, b"{}", &out).unwrap();
        assert!(
            matches!(second.base.status, PartStatus::Rebuilt { .. }),
            "{:?}",
            second.base.status
        );
        assert_eq!(fs::read(&out).unwrap(), good);
        assert_eq!(fs::read(&first.base.path).unwrap(), cached);
    }

    #[test]
    fn cpio_tool_lists_a_real_base_part() {
        if std::process::Command::new("cpio")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("cpio not installed; skipped the cross-check");
            return;
        }
        let (dir, base) = fixture();
        let part = base.cached_in(&dir.path().join("c")).unwrap();
        let out = std::process::Command::new("cpio")
            .args(["-it", "--quiet", "-F"])
            .arg(&part.path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = String::from_utf8_lossy(&out.stdout);
        for want in [
            "init",
            "dev/console",
            "bin/cat",
            "lib64/ld-linux-x86-64.so.2",
        ] {
            assert!(
                listing.lines().any(|l| l == want),
                "{want} missing:\n{listing}"
            );
        }
    }
}
