//! Reading an x86 bzImage's real-mode setup header: the "HdrS" magic that tells a kernel
//! image from any other file, and the `kernel_version` banner that names its release.
//!
//! Layout (Documentation/arch/x86/boot.rst): the header starts at file offset 0x1F1;
//! `header` ("HdrS") is at 0x202, `version` (boot protocol) at 0x206, and `kernel_version`
//! at 0x20E is a pointer to a NUL-terminated string, located at that value + 0x200 in the
//! file. The string starts with the release, e.g.
//! `7.2.13+deb14-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP ...`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::KernelError;

const HDRS_OFFSET: usize = 0x202;
const HDRS_MAGIC: &[u8; 4] = b"HdrS";
const PROTOCOL_OFFSET: usize = 0x206;
const SETUP_SECTS_OFFSET: usize = 0x1F1;
const SYSSIZE_OFFSET: usize = 0x1F4;
const KERNEL_VERSION_PTR_OFFSET: usize = 0x20E;
/// The banner is short; anything longer than this is not a banner.
const MAX_BANNER: usize = 512;

/// What the setup header says about an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootHeader {
    /// Boot protocol version, e.g. 0x020f.
    pub protocol: u16,
    /// The whole `kernel_version` banner.
    pub banner: String,
}

impl BootHeader {
    /// The release (`uname -r`): the banner's first word.
    pub fn release(&self) -> &str {
        self.banner.split_whitespace().next().unwrap_or("")
    }
}

/// Reads and checks the setup header of the file at `path`.
pub fn read_boot_header(path: &Path) -> Result<BootHeader, KernelError> {
    let io_err = |source| KernelError::Io {
        what: "reading kernel image",
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(io_err)?;
    let mut head = vec![0u8; 0x400];
    let n = read_up_to(&mut f, &mut head).map_err(io_err)?;
    head.truncate(n);
    let not_kernel = || KernelError::NotKernelImage {
        path: path.to_path_buf(),
    };
    if head.get(HDRS_OFFSET..HDRS_OFFSET + 4) != Some(HDRS_MAGIC.as_slice()) {
        return Err(not_kernel());
    }
    let u16_at = |off: usize| {
        head.get(off..off + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let protocol = u16_at(PROTOCOL_OFFSET).ok_or_else(not_kernel)?;
    // The image must hold its setup sectors and the protected-mode part the header
    // announces (`setup_sects` at 0x1F1, `syssize` in 16-byte units at 0x1F4): a cut-off
    // download passes the magic check but never boots.
    let setup_sects = match head.get(SETUP_SECTS_OFFSET) {
        Some(0) => 4,
        Some(&n) => usize::from(n),
        None => return Err(not_kernel()),
    };
    let syssize = head
        .get(SYSSIZE_OFFSET..SYSSIZE_OFFSET + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(not_kernel)?;
    let expected = (setup_sects as u64 + 1) * 512 + u64::from(syssize) * 16;
    let actual = f.metadata().map_err(io_err)?.len();
    if actual < expected {
        return Err(KernelError::TruncatedImage {
            path: path.to_path_buf(),
            actual,
            expected,
        });
    }
    let ptr = u16_at(KERNEL_VERSION_PTR_OFFSET).ok_or_else(not_kernel)?;
    // kernel_version exists since protocol 2.00; a zero pointer means "not provided".
    if protocol < 0x200 || ptr == 0 {
        return Err(KernelError::NoKernelVersion {
            path: path.to_path_buf(),
        });
    }
    let mut banner = vec![0u8; MAX_BANNER];
    f.seek(SeekFrom::Start(u64::from(ptr) + 0x200))
        .map_err(io_err)?;
    let n = read_up_to(&mut f, &mut banner).map_err(io_err)?;
    banner.truncate(n);
    let end = banner
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| KernelError::NoKernelVersion {
            path: path.to_path_buf(),
        })?;
    let banner = String::from_utf8_lossy(&banner[..end]).trim().to_string();
    if banner.is_empty() {
        return Err(KernelError::NoKernelVersion {
            path: path.to_path_buf(),
        });
    }
    Ok(BootHeader { protocol, banner })
}

/// `read` until `buf` is full or the file ends; returns the bytes read.
fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Builds a minimal file that carries a valid setup header with `banner` (for tests here
/// and in the other kernel modules).
#[cfg(test)]
pub(crate) fn fake_bzimage(banner: &str) -> Vec<u8> {
    let mut img = vec![0u8; 0x1000];
    img[0x1FE] = 0x55;
    img[0x1FF] = 0xAA;
    img[HDRS_OFFSET..HDRS_OFFSET + 4].copy_from_slice(HDRS_MAGIC);
    img[PROTOCOL_OFFSET..PROTOCOL_OFFSET + 2].copy_from_slice(&0x020fu16.to_le_bytes());
    let ptr: u16 = 0x800 - 0x200;
    img[KERNEL_VERSION_PTR_OFFSET..KERNEL_VERSION_PTR_OFFSET + 2]
        .copy_from_slice(&ptr.to_le_bytes());
    img[0x800..0x800 + banner.len()].copy_from_slice(banner.as_bytes());
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_release_from_banner() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bzImage");
        std::fs::write(
            &p,
            fake_bzimage("7.2.13+deb14-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP"),
        )
        .unwrap();
        let h = read_boot_header(&p).unwrap();
        assert_eq!(h.protocol, 0x020f);
        assert_eq!(h.release(), "7.2.13+deb14-cloud-amd64");
        assert!(h.banner.ends_with("#1 SMP"));
    }

    #[test]
    fn a_cut_off_image_is_named_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bzImage");
        let mut img = fake_bzimage("7.2.13 #1");
        // The header promises 1 MiB of protected-mode code; the file has 4 KiB.
        img[SYSSIZE_OFFSET..SYSSIZE_OFFSET + 4].copy_from_slice(&(0x10000u32).to_le_bytes());
        std::fs::write(&p, &img).unwrap();
        let e = read_boot_header(&p).unwrap_err().to_string();
        assert!(e.contains("cut short (4096 bytes"), "{e}");
        // The same header on a file of the promised size reads.
        img.resize(5 * 512 + 0x10000 * 16, 0);
        std::fs::write(&p, &img).unwrap();
        assert_eq!(read_boot_header(&p).unwrap().release(), "7.2.13");
    }

    #[test]
    fn rejects_a_file_without_hdrs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notakernel");
        std::fs::write(&p, b"#!/bin/sh\necho hello\n").unwrap();
        let e = read_boot_header(&p).unwrap_err();
        assert!(matches!(e, KernelError::NotKernelImage { .. }), "{e}");
        assert!(e
            .to_string()
            .contains("not a Linux kernel image (no HdrS boot header)"));
    }

    #[test]
    fn rejects_missing_banner() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bz");
        let mut img = fake_bzimage("x");
        img[KERNEL_VERSION_PTR_OFFSET] = 0;
        img[KERNEL_VERSION_PTR_OFFSET + 1] = 0;
        std::fs::write(&p, img).unwrap();
        assert!(matches!(
            read_boot_header(&p),
            Err(KernelError::NoKernelVersion { .. })
        ));
    }

    #[test]
    fn missing_file_is_an_io_error_naming_the_path() {
        let e = read_boot_header(Path::new("/nonexistent/ktstr/bzImage")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ktstr/bzImage"), "{e}");
    }
}
