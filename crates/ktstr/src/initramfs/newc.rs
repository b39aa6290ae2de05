//! The "newc" cpio format (magic `070701`), the one the kernel unpacks into its rootfs:
//! the writer (the reader, shared with the guest, is `ktstr_wire::newc`).
//!
//! Each record is a 110-byte ASCII header (magic and thirteen 8-digit hex fields: ino,
//! mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor,
//! namesize including the NUL, check), the NUL-terminated name padded so that header +
//! name is a multiple of 4, then the data padded to a multiple of 4. An archive ends with
//! a record named `TRAILER!!!`. The kernel accepts several archives back to back: after a
//! trailer it skips NUL bytes and expects the next header at a 4-byte aligned offset,
//! which holds here because every record is a multiple of 4 long.

use std::io::{self, Write};

// The reader lives in ktstr-wire: the guest unpacks a warm start's delivery with it.
use ktstr_wire::newc::pad4;
pub use ktstr_wire::newc::{
    parse, NewcEntry, NewcParseError, HEADER_LEN, MAGIC, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT,
    S_IFREG, TRAILER,
};

/// Writes one newc archive. Names are written without a leading `/`.
pub struct NewcWriter<W: Write> {
    out: W,
    next_ino: u32,
}

impl<W: Write> NewcWriter<W> {
    /// `first_ino` lets two archives that end up concatenated use distinct inode numbers.
    pub fn new(out: W, first_ino: u32) -> Self {
        NewcWriter {
            out,
            next_ino: first_ino,
        }
    }

    /// Writes one record. `mode` includes the file type bits; `rdev` is for device nodes.
    pub fn write_entry(
        &mut self,
        name: &str,
        mode: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> io::Result<()> {
        let nlink = if mode & S_IFMT == S_IFDIR { 2 } else { 1 };
        let ino = self.next_ino;
        self.next_ino = self.next_ino.wrapping_add(1);
        self.record(ino, name, mode, nlink, rdev, data)
    }

    /// Writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.record(0, TRAILER, 0, 1, (0, 0), &[])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn record(
        &mut self,
        ino: u32,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> io::Result<()> {
        let filesize = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file over 4 GiB"))?;
        let namesize = name.len() + 1;
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: fixed, so archives are reproducible
            filesize,
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            namesize as u32,
            0, // check
        ];
        let mut header = Vec::with_capacity(HEADER_LEN + namesize + 3);
        header.extend_from_slice(MAGIC);
        for f in fields {
            write!(header, "{f:08x}")?;
        }
        header.extend_from_slice(name.as_bytes());
        header.push(0);
        header.resize(header.len() + pad4(HEADER_LEN + namesize), 0);
        self.out.write_all(&header)?;
        self.out.write_all(data)?;
        self.out.write_all(&[0u8; 3][..pad4(data.len())])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, mode, rdev, data)
    type Rec<'a> = (&'a str, u32, (u32, u32), &'a [u8]);

    fn archive(entries: &[Rec<'_>], first_ino: u32) -> Vec<u8> {
        let mut w = NewcWriter::new(Vec::new(), first_ino);
        for (n, m, r, d) in entries {
            w.write_entry(n, *m, *r, d).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn round_trip_all_kinds() {
        let bytes = archive(
            &[
                ("dev", S_IFDIR | 0o755, (0, 0), b""),
                ("dev/console", S_IFCHR | 0o600, (5, 1), b""),
                ("init", S_IFREG | 0o755, (0, 0), b"#!/bin/sh\n"),
                ("bin/sh", S_IFLNK | 0o777, (0, 0), b"busybox"),
            ],
            1,
        );
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(&bytes[..6], b"070701");
        let e = parse(&bytes).unwrap();
        let names: Vec<_> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["dev", "dev/console", "init", "bin/sh"]);
        assert_eq!(e[0].nlink, 2);
        assert_eq!((e[1].rdev_major, e[1].rdev_minor), (5, 1));
        assert_eq!(e[1].mode, S_IFCHR | 0o600);
        assert_eq!(e[2].data, b"#!/bin/sh\n");
        assert_eq!(e[3].data, b"busybox");
        assert_eq!(e.iter().map(|e| e.ino).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert!(e.iter().all(|e| e.mtime == 0 && e.uid == 0));
    }

    #[test]
    fn padding_for_every_name_and_data_length() {
        for n in 1..9 {
            for d in 0..9 {
                let name = "x".repeat(n);
                let data = vec![0xabu8; d];
                let bytes = archive(&[(&name, S_IFREG | 0o644, (0, 0), &data)], 1);
                assert_eq!(bytes.len() % 4, 0);
                let e = parse(&bytes).unwrap();
                assert_eq!(e[0].name, name);
                assert_eq!(e[0].data, data);
            }
        }
    }

    #[test]
    fn concatenated_archives_with_and_without_nul_padding() {
        let a = archive(&[("a", S_IFREG | 0o644, (0, 0), b"1")], 1);
        let b = archive(&[("b", S_IFREG | 0o644, (0, 0), b"22")], 100);
        let mut cat = a.clone();
        cat.extend_from_slice(&b);
        let names: Vec<_> = parse(&cat).unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["a", "b"]);
        let mut padded = a.clone();
        padded.resize(512, 0);
        padded.extend_from_slice(&b);
        assert_eq!(parse(&padded).unwrap().len(), 2);
        let mut unaligned = a;
        unaligned.push(0);
        unaligned.push(b'0');
        assert!(matches!(
            parse(&unaligned),
            Err(NewcParseError::BadMagic { .. } | NewcParseError::Unaligned { .. })
        ));
    }

    #[test]
    fn truncation_and_garbage_are_errors() {
        let bytes = archive(&[("f", S_IFREG | 0o644, (0, 0), &[7u8; 100])], 1);
        for cut in [1, 50, 115, 150, bytes.len() - 4] {
            assert!(parse(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = bytes.clone();
        bad[10] = b'z';
        assert!(matches!(parse(&bad), Err(NewcParseError::BadField { .. })));
        assert_eq!(parse(b""), Err(NewcParseError::NoTrailer));
    }

    #[test]
    fn cpio_tool_reads_our_archive_when_installed() {
        let Ok(out) = std::process::Command::new("cpio").arg("--version").output() else {
            eprintln!("cpio not installed; skipped the cross-check");
            return;
        };
        assert!(out.status.success());
        let bytes = archive(
            &[
                ("etc", S_IFDIR | 0o755, (0, 0), b""),
                ("etc/hello", S_IFREG | 0o644, (0, 0), b"hi\n"),
                ("dev", S_IFDIR | 0o755, (0, 0), b""),
                ("dev/console", S_IFCHR | 0o600, (5, 1), b""),
            ],
            1,
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.cpio");
        std::fs::write(&path, &bytes).unwrap();
        let out = std::process::Command::new("cpio")
            .args(["-itv", "--quiet", "-F"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(listing.contains("etc/hello"), "{listing}");
        let console = listing
            .lines()
            .find(|l| l.ends_with("dev/console"))
            .unwrap();
        assert!(console.starts_with("crw-------"), "{console}");
        assert!(console.contains("5,"), "{console}");
    }
}
