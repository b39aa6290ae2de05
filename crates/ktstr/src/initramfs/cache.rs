//! Initramfs parts cached by content hash: `<dir>/<sha256>.cpio`, written to a temporary
//! file and renamed, and checked against its name (re-hashed) every time it is reused. A
//! truncated or corrupted part is rebuilt, with a warning.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::InitramfsError;

/// What happened to a cached part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartStatus {
    /// The cached file was present and intact.
    Reused,
    /// There was no cached file; it was written.
    Built,
    /// The cached file did not match its hash; it was written again.
    Rebuilt { reason: String },
}

/// A part in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedPart {
    pub path: PathBuf,
    pub sha256: String,
    pub len: u64,
    pub status: PartStatus,
}

/// Returns the cached file holding exactly `bytes`, writing it if it is missing or damaged.
pub fn cached_part(dir: &Path, bytes: &[u8]) -> Result<CachedPart, InitramfsError> {
    let sha256 = hex(&Sha256::digest(bytes));
    let path = dir.join(format!("{sha256}.cpio"));
    let len = bytes.len() as u64;
    let status = match verify(&path, &sha256, len) {
        Ok(true) => {
            return Ok(CachedPart {
                path,
                sha256,
                len,
                status: PartStatus::Reused,
            })
        }
        Ok(false) => PartStatus::Built,
        Err(reason) => {
            tracing::warn!(
                "initramfs cache part {} is damaged ({reason}); rebuilding it",
                path.display()
            );
            PartStatus::Rebuilt { reason }
        }
    };
    remove_stale_temporaries(dir);
    write_atomic(&path, &[bytes])?;
    Ok(CachedPart {
        path,
        sha256,
        len,
        status,
    })
}

/// `Ok(true)` intact, `Ok(false)` absent, `Err(why)` present but wrong.
fn verify(path: &Path, sha256: &str, len: u64) -> Result<bool, String> {
    let mut f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(format!("cannot open: {e}")),
    };
    let actual_len = f.metadata().map_err(|e| e.to_string())?.len();
    if actual_len != len {
        return Err(format!("{actual_len} bytes, expected {len}"));
    }
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| format!("cannot read: {e}"))?;
    let actual = hex(&h.finalize());
    if actual != sha256 {
        return Err(format!("content hash {actual}"));
    }
    Ok(true)
}

/// Writes the concatenation of `chunks` to `path` through a temporary file in the same
/// directory and a rename: readers see the old file or the whole new one.
pub fn write_atomic(path: &Path, chunks: &[&[u8]]) -> Result<(), InitramfsError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let err = |source| InitramfsError::Write {
        path: path.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(err)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(err)?;
    for c in chunks {
        tmp.write_all(c).map_err(err)?;
    }
    tmp.as_file().sync_data().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// Removes `.tmp-*` files of writers killed mid-write (untouched for an hour).
fn remove_stale_temporaries(dir: &Path) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let stale = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() > 3600);
        if stale && e.file_name().to_string_lossy().starts_with(".tmp-") {
            let _ = fs::remove_file(e.path());
        }
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_then_reused_then_rebuilt_when_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let data = b"0707010000 some archive bytes".repeat(100);
        let a = cached_part(dir.path(), &data).unwrap();
        assert_eq!(a.status, PartStatus::Built);
        assert_eq!(fs::read(&a.path).unwrap(), data);
        let b = cached_part(dir.path(), &data).unwrap();
        assert_eq!(b.status, PartStatus::Reused);
        assert_eq!(a.path, b.path);

        // Truncated.
        fs::write(&a.path, &data[..data.len() / 2]).unwrap();
        let c = cached_part(dir.path(), &data).unwrap();
        assert!(
            matches!(c.status, PartStatus::Rebuilt { .. }),
            "{:?}",
            c.status
        );
        assert_eq!(fs::read(&c.path).unwrap(), data);

        // Same length, one byte flipped.
        let mut bad = data.clone();
        bad[17] ^= 0xff;
        fs::write(&a.path, &bad).unwrap();
        let d = cached_part(dir.path(), &data).unwrap();
        match d.status {
            PartStatus::Rebuilt { reason } => assert!(reason.contains("hash"), "{reason}"),
            s => panic!("{s:?}"),
        }
        assert_eq!(fs::read(&d.path).unwrap(), data);
        // No temporary files left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
