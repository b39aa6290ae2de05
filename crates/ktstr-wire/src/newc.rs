//! Reading the "newc" cpio format (magic `070701`), the one the kernel unpacks into its
//! rootfs. The host writes it (`ktstr::initramfs::newc`); the guest reads it to unpack a
//! warm start's delivery ([`crate::inbox`]), and tests read it back.
//!
//! Each record is a 110-byte ASCII header (magic and thirteen 8-digit hex fields: ino,
//! mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor,
//! namesize including the NUL, check), the NUL-terminated name padded so that header +
//! name is a multiple of 4, then the data padded to a multiple of 4. An archive ends with
//! a record named `TRAILER!!!`; several archives may follow each other.

pub const MAGIC: &[u8; 6] = b"070701";
pub const TRAILER: &str = "TRAILER!!!";
pub const HEADER_LEN: usize = 110;

pub const S_IFMT: u32 = 0o170000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFCHR: u32 = 0o020000;

/// Padding after `n` bytes to the next multiple of 4.
pub fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewcEntry {
    pub name: String,
    pub ino: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    pub data: Vec<u8>,
}

/// Why bytes are not a valid (sequence of) newc archive(s).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NewcParseError {
    #[error("offset {offset}: bad magic (expected 070701)")]
    BadMagic { offset: usize },
    #[error("offset {offset}: header field {field} is not 8 hex digits")]
    BadField { offset: usize, field: usize },
    #[error("offset {offset}: record runs past the end of the archive")]
    Truncated { offset: usize },
    #[error("offset {offset}: name is not NUL-terminated UTF-8")]
    BadName { offset: usize },
    #[error("offset {offset}: next archive starts at an unaligned offset")]
    Unaligned { offset: usize },
    #[error("archive has no TRAILER!!! record")]
    NoTrailer,
}

/// Reads every record of `bytes`, following concatenated archives the way the kernel
/// does (NULs between archives skipped, each archive 4-byte aligned). Trailers are not
/// returned. Fails on anything the kernel would reject or misread.
pub fn parse(bytes: &[u8]) -> Result<Vec<NewcEntry>, NewcParseError> {
    let mut entries = Vec::new();
    let mut off = 0;
    let mut saw_trailer = false;
    loop {
        while off < bytes.len() && bytes[off] == 0 {
            off += 1;
        }
        if off >= bytes.len() {
            break;
        }
        if off % 4 != 0 {
            return Err(NewcParseError::Unaligned { offset: off });
        }
        let (entry, next) = parse_record(bytes, off)?;
        off = next;
        if entry.name == TRAILER {
            saw_trailer = true;
            continue;
        }
        saw_trailer = false;
        entries.push(entry);
    }
    if !saw_trailer {
        return Err(NewcParseError::NoTrailer);
    }
    Ok(entries)
}

fn parse_record(bytes: &[u8], off: usize) -> Result<(NewcEntry, usize), NewcParseError> {
    let header = bytes
        .get(off..off + HEADER_LEN)
        .ok_or(NewcParseError::Truncated { offset: off })?;
    if &header[..6] != MAGIC {
        return Err(NewcParseError::BadMagic { offset: off });
    }
    let mut f = [0u32; 13];
    for (i, v) in f.iter_mut().enumerate() {
        let s = std::str::from_utf8(&header[6 + 8 * i..14 + 8 * i]).map_err(|_| {
            NewcParseError::BadField {
                offset: off,
                field: i,
            }
        })?;
        *v = u32::from_str_radix(s, 16).map_err(|_| NewcParseError::BadField {
            offset: off,
            field: i,
        })?;
    }
    let namesize = f[11] as usize;
    let filesize = f[6] as usize;
    let name_start = off + HEADER_LEN;
    let name_bytes = bytes
        .get(name_start..name_start + namesize)
        .ok_or(NewcParseError::Truncated { offset: off })?;
    let name = match name_bytes.split_last() {
        Some((0, n)) => std::str::from_utf8(n)
            .map_err(|_| NewcParseError::BadName { offset: off })?
            .to_string(),
        _ => return Err(NewcParseError::BadName { offset: off }),
    };
    let data_start = name_start + namesize + pad4(HEADER_LEN + namesize);
    let data = bytes
        .get(data_start..data_start + filesize)
        .ok_or(NewcParseError::Truncated { offset: off })?
        .to_vec();
    let next = data_start + filesize + pad4(filesize);
    if next > bytes.len() {
        return Err(NewcParseError::Truncated { offset: off });
    }
    Ok((
        NewcEntry {
            name,
            ino: f[0],
            mode: f[1],
            uid: f[2],
            gid: f[3],
            nlink: f[4],
            mtime: f[5],
            rdev_major: f[9],
            rdev_minor: f[10],
            data,
        },
        next,
    ))
}
