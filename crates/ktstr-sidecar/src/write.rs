//! Writing sidecars atomically: a reader (or a crash) sees the old file or the new one,
//! never a part of one.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Result, SidecarError};
use crate::sidecar::SidecarResult;

/// Replace `path` with `bytes` atomically: write a temporary file in the same directory
/// (`{name}.tmp.{pid}.{n}`), fsync it, rename it over `path`, fsync the directory.
/// The directory must exist. On error the temporary file is removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| {
            SidecarError::io(
                "write",
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name"),
            )
        })?
        .to_string_lossy();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{name}.tmp.{}.{n}", std::process::id()));

    let result = write_then_rename(&tmp, path, bytes);
    if result.is_err() {
        // Best effort: the error that matters is the one returned.
        let _ = fs::remove_file(&tmp);
        return result;
    }
    sync_dir(dir)
}

fn write_then_rename(tmp: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(|e| SidecarError::io("create temporary file", tmp, e))?;
    f.write_all(bytes)
        .map_err(|e| SidecarError::io("write", tmp, e))?;
    f.sync_all()
        .map_err(|e| SidecarError::io("fsync", tmp, e))?;
    drop(f);
    fs::rename(tmp, path).map_err(|e| SidecarError::io("rename into place", path, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SidecarError::io("fsync directory", dir, e))
}

impl SidecarResult {
    /// Write this sidecar as pretty JSON to `dir/`[`file_name`](Self::file_name),
    /// creating `dir` if needed. Returns the file's path.
    pub fn write_to_dir(&self, dir: &Path) -> Result<PathBuf> {
        fs::create_dir_all(dir).map_err(|e| SidecarError::io("create directory", dir, e))?;
        let path = dir.join(self.file_name());
        let mut json = self.to_json_pretty()?;
        json.push('\n');
        write_atomic(&path, json.as_bytes())?;
        Ok(path)
    }

    /// Write this sidecar into its run directory ([`crate::paths::run_dir_for`]).
    pub fn write(&self) -> Result<PathBuf> {
        self.write_to_dir(&crate::paths::run_dir_for(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::read_sidecar;

    #[test]
    fn write_then_read_and_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = SidecarResult::new("t", "1n1l1c1t", "eevdf");
        let path = s.write_to_dir(&dir.path().join("run")).expect("write");
        assert_eq!(
            path.file_name().and_then(|n| n.to_str()),
            Some(s.file_name().as_str())
        );
        assert_eq!(read_sidecar(&path).expect("read"), s);
        s.vcpus = 4;
        assert_eq!(
            s.write_to_dir(&dir.path().join("run")).expect("write"),
            path
        );
        assert_eq!(read_sidecar(&path).expect("read").vcpus, 4);
        // Only the sidecar is left: no temporary files.
        let names: Vec<_> = fs::read_dir(dir.path().join("run"))
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn failed_write_names_the_path_and_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Renaming a file over a directory fails.
        let target = dir.path().join("occupied");
        fs::create_dir(&target).expect("mkdir");
        fs::write(target.join("keep"), "x").expect("write");
        let err = write_atomic(&target, b"data").expect_err("rename over a directory");
        assert!(err.to_string().contains("occupied"), "{err}");
        let left: Vec<_> = fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, ["occupied"]);
    }

    /// 8 writers replace the same file concurrently, many times; at every moment a
    /// reader sees one complete document, and at the end only the sidecar remains.
    #[test]
    fn concurrent_writers_leave_only_complete_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = dir.path().to_path_buf();
        let writers: Vec<_> = (0..8u32)
            .map(|w| {
                let run = run.clone();
                std::thread::spawn(move || {
                    for i in 0..25u32 {
                        // Same variant for every writer, so all target one file; the
                        // writer shows in fields outside the hash.
                        let mut s = SidecarResult::new("shared", "1n1l1c1t", "eevdf");
                        s.vcpus = w;
                        s.periodic_fired = i;
                        // A big body makes a torn write visible if it ever happens.
                        s.stats.verdict_details =
                            (0..200).map(|k| format!("line{k}={w}")).collect();
                        s.write_to_dir(&run).expect("concurrent write");
                    }
                })
            })
            .collect();
        let reader = {
            let run = run.clone();
            std::thread::spawn(move || {
                for _ in 0..200 {
                    for e in fs::read_dir(&run).expect("ls").flatten() {
                        let name = e.file_name().to_string_lossy().into_owned();
                        if crate::paths::is_sidecar_file_name(&name) {
                            let s = read_sidecar(&e.path()).expect("complete sidecar");
                            let tag = format!("={}", s.vcpus);
                            assert_eq!(s.stats.verdict_details.len(), 200);
                            assert!(s.stats.verdict_details.iter().all(|l| l.ends_with(&tag)));
                        }
                    }
                }
            })
        };
        for w in writers {
            w.join().expect("writer thread");
        }
        reader.join().expect("reader thread");
        let names: Vec<String> = fs::read_dir(&run)
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 1, "one file, no temporaries: {names:?}");
        let s = read_sidecar(&run.join(&names[0])).expect("complete");
        assert_eq!(names[0], s.file_name());
        assert_eq!(s.periodic_fired, 24, "the last write of some writer");
        assert!(s.vcpus < 8);
    }
}
