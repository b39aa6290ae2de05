//! The ELF `vmlinux` a bzImage carries, decompressed once on the host and cached by the
//! bzImage's content hash: qemu enters it directly through PVH, and the `kvm` engine
//! loads it instead of decompressing the bzImage on every boot. Under TCG the
//! kernel's own decompressor (zstd over ~60 MB, emulated) costs about 1.5 s per boot
//! (`shared/reference/boot-anchor.md`, measured again by `scripts/bench-boot`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::KernelCache;

/// `0` boots the bzImage as given (the kernel decompresses itself), for comparison.
pub const PVH_ENV: &str = "KTSTR_QEMU_PVH";

/// ELF note type of the 32-bit PVH entry point (Xen's `XEN_ELFNOTE_PHYS32_ENTRY`).
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// What qemu should boot for `kernel`: the cached PVH ELF when the kernel has a PVH entry,
/// else `kernel` itself (with the reason, for the run's log). Never fails a run: any
/// problem falls back to the bzImage, which boots, only slower.
pub fn qemu_boot_image(kernel: &Path) -> (PathBuf, Option<String>) {
    if std::env::var(PVH_ENV).is_ok_and(|v| v == "0") {
        return (kernel.to_path_buf(), None);
    }
    match cached_elf_from_env(kernel) {
        Ok(Some(elf)) if elf.pvh => (elf.path, None),
        Ok(_) => (kernel.to_path_buf(), None),
        Err(why) => (kernel.to_path_buf(), Some(why)),
    }
}

/// What the `kvm` engine loads for `kernel`: the cached ELF (entered at its 64-bit entry;
/// no PVH note needed), else `kernel` itself, which the VMM then decompresses per boot
/// (with the reason).
pub fn kvm_boot_image(kernel: &Path) -> (PathBuf, Option<String>) {
    match cached_elf_from_env(kernel) {
        Ok(Some(elf)) => (elf.path, None),
        Ok(None) => (kernel.to_path_buf(), None),
        Err(why) => (kernel.to_path_buf(), Some(why)),
    }
}

fn cached_elf_from_env(kernel: &Path) -> Result<Option<CachedElf>, String> {
    let cache = KernelCache::from_env().map_err(|e| format!("no kernel cache: {e}"))?;
    cached_elf(&cache.vmlinux_dir(), kernel)
}

/// A bzImage's ELF vmlinux in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedElf {
    pub path: PathBuf,
    /// It has a PVH entry note (qemu can enter it directly).
    pub pvh: bool,
}

/// The ELF for `kernel` under `dir` (`{sha256}.elf`), extracted on first use; a kernel
/// without a PVH entry also gets `{sha256}.no-pvh`, written before the ELF so that a
/// reader never takes an ELF for PVH-capable while the marker is on its way. None when
/// `kernel` is already an ELF.
pub fn cached_elf(dir: &Path, kernel: &Path) -> Result<Option<CachedElf>, String> {
    let image = fs::read(kernel).map_err(|e| format!("cannot read {}: {e}", kernel.display()))?;
    if image.starts_with(b"\x7fELF") {
        return Ok(None);
    }
    let hash = hex(&Sha256::digest(&image));
    let elf_path = dir.join(format!("{hash}.elf"));
    let no_pvh = dir.join(format!("{hash}.no-pvh"));
    if elf_path.is_file() {
        return Ok(Some(CachedElf {
            path: elf_path,
            pvh: !no_pvh.exists(),
        }));
    }
    let elf = ktstr_vmm::arch::x86_64::boot::extract_vmlinux(&image)
        .map_err(|e| format!("cannot decompress {}: {e}", kernel.display()))?;
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let pvh = has_pvh_entry(&elf);
    if !pvh {
        write_atomically(dir, &no_pvh, b"")?;
    }
    write_atomically(dir, &elf_path, &elf)?;
    Ok(Some(CachedElf {
        path: elf_path,
        pvh,
    }))
}

/// Does the ELF carry a PVH entry note (`Xen`, type 18)?
pub fn has_pvh_entry(elf: &[u8]) -> bool {
    let Ok(parsed) = goblin::elf::Elf::parse(elf) else {
        return false;
    };
    let Some(notes) = parsed.iter_note_headers(elf) else {
        return false;
    };
    notes
        .flatten()
        .any(|n| n.n_type == XEN_ELFNOTE_PHYS32_ENTRY && n.name == "Xen")
}

/// Concurrent runs may extract the same kernel: each writes its own temporary file and
/// renames it into place, so a reader sees a whole ELF or none.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), String> {
    let err = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut tmp = tempfile::Builder::new()
        .prefix(".vmlinux-")
        .tempfile_in(dir)
        .map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_that_is_not_a_kernel_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let bogus = dir.path().join("bzImage");
        fs::write(&bogus, b"not a kernel at all").unwrap();
        let err = cached_elf(&dir.path().join("cache"), &bogus).unwrap_err();
        assert!(err.contains("cannot decompress"), "{err}");
        assert!(!dir.path().join("cache").exists());
    }

    #[test]
    fn an_elf_is_booted_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let elf = dir.path().join("vmlinux");
        fs::write(&elf, b"\x7fELF\x02\x01\x01").unwrap();
        assert_eq!(cached_elf(dir.path(), &elf).unwrap(), None);
    }

    #[test]
    fn garbage_has_no_pvh_entry() {
        assert!(!has_pvh_entry(b""));
        assert!(!has_pvh_entry(b"\x7fELF garbage"));
    }

    /// With the cached default kernel: extracted once, then reused, with a PVH entry.
    #[test]
    fn the_cached_kernel_has_a_pvh_elf_that_is_reused() {
        let Ok(kernel) = crate::kernel::resolve(None) else {
            eprintln!("SKIP: no cached kernel");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let elf = cached_elf(dir.path(), &kernel.image).unwrap().unwrap();
        let bytes = fs::read(&elf.path).unwrap();
        assert!(bytes.starts_with(b"\x7fELF"));
        assert_eq!(has_pvh_entry(&bytes), elf.pvh);
        let modified = fs::metadata(&elf.path).unwrap().modified().unwrap();
        assert_eq!(
            cached_elf(dir.path(), &kernel.image).unwrap(),
            Some(elf.clone())
        );
        assert_eq!(
            fs::metadata(&elf.path).unwrap().modified().unwrap(),
            modified
        );
    }
}
