//! Private scratch space for one run: directories with unguessable names, mode 0700,
//! each holding a lock for as long as its owner lives, so that the next ktstr start can
//! sweep what a killed run (kill -9, a crash) left behind without touching a live one.
//! Files in them, and every file a run writes elsewhere, are opened without following
//! symlinks.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Name of the lock file inside every scratch directory.
const LOCK_NAME: &str = ".ktstr-owner.lock";

/// A private directory removed on drop (and swept by a later run if its owner died).
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    // Held open (and flocked) until drop: the kernel releases the lock when the process
    // dies, however it dies, which is what tells a sweeper the directory is orphaned.
    _lock: File,
    keep: bool,
}

impl ScratchDir {
    /// Create `{root}/{prefix}{random}` exclusively, 0700, and take its lock. Orphans of
    /// the same prefix under `root` are swept first.
    pub fn create(root: &Path, prefix: &str) -> io::Result<Self> {
        sweep(root, prefix);
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(root)?;
        let lock = create_new_file(&dir.path().join(LOCK_NAME), 0o600)?;
        flock(&lock, libc::LOCK_EX | libc::LOCK_NB)?;
        Ok(Self {
            path: dir.keep(),
            _lock: lock,
            keep: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new file `name` in this directory (0600, never an existing path).
    pub fn create_file(&self, name: &str) -> io::Result<(PathBuf, File)> {
        let p = self.path.join(name);
        let f = create_new_file(&p, 0o600)?;
        Ok((p, f))
    }

    /// Leave the directory in place for the user (a shell's console log): its lock file
    /// goes, so no sweep ever takes it.
    pub fn keep(mut self) -> PathBuf {
        self.keep = true;
        let _ = std::fs::remove_file(self.path.join(LOCK_NAME));
        self.path.clone()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Remove every `{root}/{prefix}*` directory of ours whose owner is gone: the directory
/// belongs to this user, is not a symlink, and nobody holds its lock. A directory without
/// a lock file is left alone (it may be in its first microseconds, or not ours).
/// Returns how many were removed.
pub fn sweep(root: &Path, prefix: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let mut removed = 0;
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        // symlink_metadata: a planted symlink is never followed or removed through.
        let Ok(meta) = e.path().symlink_metadata() else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != uid {
            continue;
        }
        let lock_path = e.path().join(LOCK_NAME);
        let Ok(lock) = open_nofollow(&lock_path) else {
            continue;
        };
        if flock(&lock, libc::LOCK_EX | libc::LOCK_NB).is_ok()
            && std::fs::remove_dir_all(e.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Create `path` as a new regular file with `mode`: a file already there is an error, and
/// so is a symlink (it is never followed).
pub fn create_new_file(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .read(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Create `path` afresh for this run: whatever was at that name (a previous run's log,
/// a planted symlink) is unlinked first — never followed — then a new file is created
/// exclusively. For files in directories the user owns (the run directory).
pub fn replace_file(path: &Path, mode: u32) -> io::Result<File> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} is a directory", path.display()),
            ))
        }
        Ok(_) => std::fs::remove_file(path)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    create_new_file(path, mode)
}

fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

fn flock(f: &File, how: libc::c_int) -> io::Result<()> {
    // SAFETY: flock on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(f.as_raw_fd(), how) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Root for large per-run scratch (guest RAM): `KTSTR_TMPDIR`, else `/dev/shm`, else
/// the temp dir.
pub fn ram_root() -> PathBuf {
    if let Some(d) = std::env::var_os("KTSTR_TMPDIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn scratch_is_private_and_removed_on_drop() {
        let root = tempfile::tempdir().unwrap();
        let d = ScratchDir::create(root.path(), "ktstr-t-").unwrap();
        let mode = std::fs::metadata(d.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let (p, _f) = d.create_file("node0.ram").unwrap();
        let fmode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(fmode, 0o600);
        // The same name twice is refused, not truncated.
        assert!(d.create_file("node0.ram").is_err());
        let path = d.path().to_path_buf();
        drop(d);
        assert!(!path.exists());
    }

    #[test]
    fn sweep_removes_orphans_and_spares_live_runs_and_strangers() {
        let root = tempfile::tempdir().unwrap();
        let live = ScratchDir::create(root.path(), "ktstr-t-").unwrap();
        // An orphan: a directory whose lock nobody holds (its owner was killed).
        let orphan = root.path().join("ktstr-t-dead");
        std::fs::create_dir(&orphan).unwrap();
        File::create(orphan.join(LOCK_NAME)).unwrap();
        std::fs::write(orphan.join("node0.ram"), b"guest ram").unwrap();
        // Not ours to judge: no lock file, another prefix, a symlink to a directory.
        let nolock = root.path().join("ktstr-t-nolock");
        std::fs::create_dir(&nolock).unwrap();
        let other = root.path().join("other-dead");
        std::fs::create_dir(&other).unwrap();
        File::create(other.join(LOCK_NAME)).unwrap();
        let victim = tempfile::tempdir().unwrap();
        File::create(victim.path().join(LOCK_NAME)).unwrap();
        std::os::unix::fs::symlink(victim.path(), root.path().join("ktstr-t-link")).unwrap();

        assert_eq!(sweep(root.path(), "ktstr-t-"), 1);
        assert!(!orphan.exists());
        assert!(live.path().exists());
        assert!(nolock.exists() && other.exists());
        assert!(victim.path().join(LOCK_NAME).exists());
    }

    #[test]
    fn a_planted_symlink_is_replaced_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let log = dir.path().join("run.console.log");
        std::os::unix::fs::symlink(&victim, &log).unwrap();
        // create_new_file refuses it ...
        assert!(create_new_file(&log, 0o644).is_err());
        // ... replace_file unlinks the link and makes a new file.
        use std::io::Write;
        replace_file(&log, 0o644)
            .unwrap()
            .write_all(b"console")
            .unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(&log).unwrap(), b"console");
        assert!(!std::fs::symlink_metadata(&log).unwrap().is_symlink());
    }

    #[test]
    fn replace_file_starts_from_empty() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.console.log");
        std::fs::write(&log, b"a previous run's panic").unwrap();
        drop(replace_file(&log, 0o644).unwrap());
        assert_eq!(std::fs::read(&log).unwrap(), b"");
    }
}
