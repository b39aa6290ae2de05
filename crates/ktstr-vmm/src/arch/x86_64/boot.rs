//! Loading what the guest boots: an ELF (a Linux `vmlinux`, or our self-test guest) or a
//! bzImage, optionally decompressing the bzImage's payload on the host to enter the ELF
//! directly; then the command line, the initrd and the zero page (`boot_params`, e820).

use std::io::Cursor;

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::{BzImage, Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{
    RamLayout, BZIMAGE_LOAD_ADDR, CMDLINE_ADDR, CMDLINE_MAX, HIMEM_START, ZERO_PAGE_ADDR,
};

/// Offset of `startup_64` in a bzImage's protected-mode part.
pub const STARTUP64_OFFSET: u64 = 0x200;
const HDRS_MAGIC: u32 = 0x5372_6448; // "HdrS"
const BOOT_FLAG: u16 = 0xaa55;
const LOADER_UNDEFINED: u8 = 0xff;
/// Offsets in a bzImage file (setup header fields).
const OFF_SETUP_SECTS: usize = 0x1f1;
const OFF_HEADER: usize = 0x202;
const OFF_PAYLOAD_OFFSET: usize = 0x248;
const OFF_PAYLOAD_LENGTH: usize = 0x24c;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error(
        "the kernel image is neither an ELF nor a bzImage (no `\\x7fELF`, no `HdrS` at 0x202)"
    )]
    UnknownFormat,
    #[error("loading the {format} kernel: {source}")]
    Load {
        format: &'static str,
        source: linux_loader::loader::Error,
    },
    #[error("bzImage payload at {offset:#x}+{len:#x} lies outside the {file_len}-byte file")]
    PayloadBounds {
        offset: usize,
        len: usize,
        file_len: usize,
    },
    #[error("bzImage payload is {0} compressed; only zstd payloads are decompressed on the host (boot it with the guest decompressor instead)")]
    UnsupportedCompression(&'static str),
    #[error("decompressing the bzImage's zstd payload: {0}")]
    Zstd(String),
    #[error("the decompressed payload is not an ELF vmlinux")]
    PayloadNotElf,
    #[error("command line is {len} bytes; at most {max} fit")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("initrd of {size} bytes does not fit between the kernel end {kernel_end:#x} and {limit:#x}; raise memory_mib")]
    InitrdTooBig {
        size: u64,
        kernel_end: u64,
        limit: u64,
    },
    #[error("writing the {what} to guest memory at {addr:#x}: {source}")]
    Write {
        what: &'static str,
        addr: u64,
        source: vm_memory::GuestMemoryError,
    },
}

/// What kind of image a kernel file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Elf,
    BzImage,
}

/// Identifies an image by its magic numbers.
pub fn detect(image: &[u8]) -> Result<ImageFormat, BootError> {
    if image.starts_with(b"\x7fELF") {
        return Ok(ImageFormat::Elf);
    }
    match image.get(OFF_HEADER..OFF_HEADER + 4) {
        Some(m) if m == HDRS_MAGIC.to_le_bytes() => Ok(ImageFormat::BzImage),
        _ => Err(BootError::UnknownFormat),
    }
}

/// Compression of a bzImage payload, by magic.
pub fn payload_compression(p: &[u8]) -> &'static str {
    match p {
        [0x28, 0xb5, 0x2f, 0xfd, ..] => "zstd",
        [0x1f, 0x8b, ..] => "gzip",
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => "xz",
        [0x02, 0x21, 0x4c, 0x18, ..] => "lz4",
        [0x5d, 0, ..] => "lzma",
        [b'B', b'Z', b'h', ..] => "bzip2",
        [0x89, b'L', b'Z', b'O', ..] => "lzo",
        [0x7f, b'E', b'L', b'F', ..] => "none",
        _ => "unknown",
    }
}

/// The compressed payload of a bzImage, located through the setup header's
/// `payload_offset`/`payload_length` (relative to the protected-mode part).
pub fn bzimage_payload(image: &[u8]) -> Result<&[u8], BootError> {
    let u32_at = |o: usize| {
        image
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let setup_sects = match image.get(OFF_SETUP_SECTS) {
        Some(0) => 4,
        Some(n) => *n as usize,
        None => return Err(BootError::UnknownFormat),
    };
    let pm_start = (setup_sects + 1) * 512;
    let off = u32_at(OFF_PAYLOAD_OFFSET).ok_or(BootError::UnknownFormat)?;
    let len = u32_at(OFF_PAYLOAD_LENGTH).ok_or(BootError::UnknownFormat)?;
    let start = pm_start + off;
    image
        .get(start..start.saturating_add(len))
        .ok_or(BootError::PayloadBounds {
            offset: start,
            len,
            file_len: image.len(),
        })
}

/// Decompresses a bzImage's payload into the ELF `vmlinux` it carries (zstd only; the
/// kernel appends the uncompressed size as 4 bytes after the zstd frame).
pub fn extract_vmlinux(bzimage: &[u8]) -> Result<Vec<u8>, BootError> {
    let payload = bzimage_payload(bzimage)?;
    match payload_compression(payload) {
        "zstd" => {}
        "none" => return Ok(payload.to_vec()),
        other => return Err(BootError::UnsupportedCompression(other)),
    }
    let (frame, size_hint) = if payload.len() >= 4 {
        let n = payload.len();
        let hint = u32::from_le_bytes([
            payload[n - 4],
            payload[n - 3],
            payload[n - 2],
            payload[n - 1],
        ]);
        (&payload[..n - 4], hint as usize)
    } else {
        (payload, 0)
    };
    let mut out = Vec::with_capacity(size_hint.min(1 << 30));
    let mut dec = ruzstd::decoding::StreamingDecoder::new(frame)
        .map_err(|e| BootError::Zstd(e.to_string()))?;
    std::io::copy(&mut dec, &mut out).map_err(|e| BootError::Zstd(e.to_string()))?;
    if !out.starts_with(b"\x7fELF") {
        return Err(BootError::PayloadNotElf);
    }
    Ok(out)
}

/// A kernel placed in guest memory.
#[derive(Debug, Clone)]
pub struct LoadedKernel {
    pub format: ImageFormat,
    /// Where the vCPUs start (64-bit entry).
    pub entry: u64,
    /// First byte after the kernel's memory image (bss and, for a bzImage, `init_size`).
    pub end: u64,
    /// The bzImage setup header, copied into the zero page.
    pub setup_header: Option<setup_header>,
}

/// Loads an ELF at its physical addresses, or a bzImage's protected-mode part at 1 MiB.
pub fn load_kernel(mem: &GuestMemoryMmap, image: &[u8]) -> Result<LoadedKernel, BootError> {
    let format = detect(image)?;
    let mut cursor = Cursor::new(image);
    match format {
        ImageFormat::Elf => {
            let r = Elf::load(mem, None, &mut cursor, Some(GuestAddress(HIMEM_START))).map_err(
                |source| BootError::Load {
                    format: "ELF",
                    source,
                },
            )?;
            Ok(LoadedKernel {
                format,
                entry: r.kernel_load.0,
                end: r.kernel_end,
                setup_header: None,
            })
        }
        ImageFormat::BzImage => {
            let r = BzImage::load(
                mem,
                Some(GuestAddress(BZIMAGE_LOAD_ADDR)),
                &mut cursor,
                Some(GuestAddress(HIMEM_START)),
            )
            .map_err(|source| BootError::Load {
                format: "bzImage",
                source,
            })?;
            let init_size = r.setup_header.map(|h| h.init_size).unwrap_or(0);
            Ok(LoadedKernel {
                format,
                entry: r.kernel_load.0 + STARTUP64_OFFSET,
                end: r.kernel_end.max(r.kernel_load.0 + u64::from(init_size)),
                setup_header: r.setup_header,
            })
        }
    }
}

/// Writes the NUL-terminated command line at [`CMDLINE_ADDR`].
pub fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<(), BootError> {
    if cmdline.len() + 1 > CMDLINE_MAX {
        return Err(BootError::CmdlineTooLong {
            len: cmdline.len(),
            max: CMDLINE_MAX - 1,
        });
    }
    let mut b = cmdline.as_bytes().to_vec();
    b.push(0);
    mem.write_slice(&b, GuestAddress(CMDLINE_ADDR))
        .map_err(|source| BootError::Write {
            what: "command line",
            addr: CMDLINE_ADDR,
            source,
        })
}

/// Where an initrd of `size` bytes goes: page-aligned, as high as possible below the SHM
/// region and `addr_max` (the kernel's `initrd_addr_max`), above the kernel.
pub fn initrd_addr(
    layout: &RamLayout,
    size: u64,
    kernel_end: u64,
    addr_max: Option<u64>,
) -> Result<u64, BootError> {
    let mut limit = layout.shm_base;
    if let Some(m) = addr_max.filter(|m| *m > 0) {
        limit = limit.min(m.saturating_add(1));
    }
    let err = BootError::InitrdTooBig {
        size,
        kernel_end,
        limit,
    };
    let addr = limit.checked_sub(size).ok_or(err)? & !0xfff;
    if addr < kernel_end.max(HIMEM_START) {
        return Err(BootError::InitrdTooBig {
            size,
            kernel_end,
            limit,
        });
    }
    Ok(addr)
}

/// Builds `boot_params`: the bzImage's setup header (or a minimal one for an ELF), loader
/// type, command line, initrd, RSDP and the e820 map.
pub fn zero_page(
    kernel: &LoadedKernel,
    layout: &RamLayout,
    cmdline_len: usize,
    initrd: Option<(u64, u64)>,
    rsdp: u64,
) -> boot_params {
    let mut p = boot_params::default();
    if let Some(h) = kernel.setup_header {
        p.hdr = h;
    } else {
        p.hdr.boot_flag = BOOT_FLAG;
        p.hdr.header = HDRS_MAGIC;
        p.hdr.version = 0x020f;
        p.hdr.kernel_alignment = 0x100_0000;
    }
    p.hdr.type_of_loader = LOADER_UNDEFINED;
    p.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    p.hdr.cmdline_size = cmdline_len as u32;
    if let Some((addr, size)) = initrd {
        p.hdr.ramdisk_image = addr as u32;
        p.hdr.ramdisk_size = size as u32;
        p.ext_ramdisk_image = (addr >> 32) as u32;
        p.ext_ramdisk_size = (size >> 32) as u32;
    }
    p.acpi_rsdp_addr = rsdp;
    let e820 = layout.e820();
    for (i, e) in e820.iter().enumerate().take(p.e820_table.len()) {
        p.e820_table[i] = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind as u32,
        };
    }
    p.e820_entries = e820.len().min(p.e820_table.len()) as u8;
    p
}

/// Writes `boot_params` at [`ZERO_PAGE_ADDR`].
pub fn write_zero_page(mem: &GuestMemoryMmap, p: &boot_params) -> Result<(), BootError> {
    mem.write_obj(*p, GuestAddress(ZERO_PAGE_ADDR))
        .map_err(|source| BootError::Write {
            what: "zero page",
            addr: ZERO_PAGE_ADDR,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake bzImage: 1 setup sector + boot sector, `HdrS`, payload at offset 0x10 of the
    /// protected-mode part.
    fn fake_bzimage(payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 1024 + 0x10];
        b[OFF_SETUP_SECTS] = 1;
        b[OFF_HEADER..OFF_HEADER + 4].copy_from_slice(b"HdrS");
        b[OFF_PAYLOAD_OFFSET..OFF_PAYLOAD_OFFSET + 4].copy_from_slice(&0x10u32.to_le_bytes());
        b[OFF_PAYLOAD_LENGTH..OFF_PAYLOAD_LENGTH + 4]
            .copy_from_slice(&(payload.len() as u32).to_le_bytes());
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn detects_formats_and_payload_compression() {
        assert_eq!(detect(b"\x7fELF\x02\x01").unwrap(), ImageFormat::Elf);
        let bz = fake_bzimage(&[0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3]);
        assert_eq!(detect(&bz).unwrap(), ImageFormat::BzImage);
        assert!(matches!(detect(&[0u8; 16]), Err(BootError::UnknownFormat)));
        assert_eq!(
            bzimage_payload(&bz).unwrap(),
            &[0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3]
        );
        assert_eq!(
            payload_compression(&[0xfd, b'7', b'z', b'X', b'Z', 0]),
            "xz"
        );
        assert_eq!(payload_compression(&[0x1f, 0x8b, 8]), "gzip");
        let gz = fake_bzimage(&[0x1f, 0x8b, 8, 0]);
        assert!(matches!(
            extract_vmlinux(&gz),
            Err(BootError::UnsupportedCompression("gzip"))
        ));
    }

    #[test]
    fn payload_out_of_bounds_is_an_error() {
        let mut bz = fake_bzimage(&[1, 2, 3]);
        bz[OFF_PAYLOAD_LENGTH..OFF_PAYLOAD_LENGTH + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            bzimage_payload(&bz),
            Err(BootError::PayloadBounds { .. })
        ));
    }

    #[test]
    fn initrd_goes_below_shm_page_aligned() {
        let l = RamLayout::new(256 << 20, 4 << 20).unwrap();
        let a = initrd_addr(&l, 1000, 0x200_0000, None).unwrap();
        assert_eq!(a, ((252 << 20) - 1000) & !0xfff);
        let a = initrd_addr(&l, 4096, 0x200_0000, Some(0x7fff_ffff)).unwrap();
        assert_eq!(a, (252 << 20) - 4096);
        assert!(matches!(
            initrd_addr(&l, 250 << 20, 0x200_0000, None),
            Err(BootError::InitrdTooBig { .. })
        ));
    }

    #[test]
    fn zero_page_for_an_elf() {
        let l = RamLayout::new(1 << 30, 8 << 20).unwrap();
        let k = LoadedKernel {
            format: ImageFormat::Elf,
            entry: 0x100_0000,
            end: 0x300_0000,
            setup_header: None,
        };
        let p = zero_page(&k, &l, 42, Some((0x3000_0000, 0x1234)), 0xe0000);
        let (flag, magic, loader) = (p.hdr.boot_flag, p.hdr.header, p.hdr.type_of_loader);
        assert_eq!((flag, magic, loader), (0xaa55, HDRS_MAGIC, 0xff));
        let (cl, cs) = (p.hdr.cmd_line_ptr, p.hdr.cmdline_size);
        assert_eq!((cl, cs), (0x20000, 42));
        let (ri, rs) = (p.hdr.ramdisk_image, p.hdr.ramdisk_size);
        assert_eq!((ri, rs), (0x3000_0000, 0x1234));
        let rsdp = p.acpi_rsdp_addr;
        assert_eq!(rsdp, 0xe0000);
        assert_eq!(p.e820_entries, 4);
        let e3 = p.e820_table[3];
        let (a, s, t) = (e3.addr, e3.size, e3.r#type);
        assert_eq!((a, s, t), (0x3f80_0000, 8 << 20, 2), "SHM reserved");
    }
}
