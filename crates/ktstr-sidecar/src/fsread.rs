//! Reading pool files as untrusted input: only regular files, never more than a cap, and
//! every directory visited once however many links lead to it. A FIFO, a device or a
//! runaway file named `*.ktstr.json` is an error for that file, not a hang or an
//! out-of-memory.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// The largest sidecar a reader accepts. Real ones are tens of KiB (an hour-long run with
/// every monitor field stays under a few MiB).
pub const MAX_SIDECAR_BYTES: u64 = 64 << 20;

/// Read a whole regular file of at most `cap` bytes. Opening never blocks (a FIFO is
/// opened non-blocking and then refused), and a file that grows while being read is cut
/// off at `cap` + 1 bytes and refused.
pub fn read_regular(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a FIFO, device or directory named like a sidecar)",
        ));
    }
    if meta.len() > cap {
        return Err(too_big(cap));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    (&mut f as &mut File).take(cap + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > cap {
        return Err(too_big(cap));
    }
    Ok(buf)
}

fn too_big(cap: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("larger than {} MiB, not a sidecar", cap >> 20),
    )
}

/// Directories already walked, by device and inode: a symlink (or bind mount) to a
/// directory seen before is not walked again, and a link back up the tree ends.
#[derive(Debug, Default)]
pub struct Visited(HashSet<(u64, u64)>);

impl Visited {
    /// True the first time `dir` (followed through links) is seen.
    pub fn first_visit(&mut self, dir: &Path) -> bool {
        match std::fs::metadata(dir) {
            Ok(m) => self.0.insert((m.dev(), m.ino())),
            // Unreadable: let the caller's read_dir report it.
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.ktstr.json");
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_regular(&p, MAX_SIDECAR_BYTES).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn a_link_to_a_device_or_a_big_file_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("zero.ktstr.json");
        std::os::unix::fs::symlink("/dev/zero", &p).unwrap();
        assert!(read_regular(&p, MAX_SIDECAR_BYTES).is_err());
        let big = d.path().join("big.ktstr.json");
        std::fs::write(&big, vec![b' '; 2048]).unwrap();
        let e = read_regular(&big, 1024).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
        assert_eq!(read_regular(&big, 4096).unwrap().len(), 2048);
    }

    #[test]
    fn a_directory_is_visited_once_through_any_number_of_links() {
        let d = tempfile::tempdir().unwrap();
        let run = d.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::os::unix::fs::symlink(&run, d.path().join("again")).unwrap();
        let mut v = Visited::default();
        assert!(v.first_visit(&run));
        assert!(!v.first_visit(&d.path().join("again")));
        assert!(!v.first_visit(&run));
    }
}
