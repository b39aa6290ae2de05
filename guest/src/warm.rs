//! Warm start, guest side. When the kernel command line names an inbox
//! (`ktstr.inbox=<base>,<size>`, see `ktstr_wire::inbox`), this guest was booted to be
//! saved as a snapshot: it parks before it touches the ring, the host saves the VM, and a
//! later run restores it and delivers its test. The guest then unpacks the test's files
//! over its root, re-seeds the kernel's random pool and steps its clock to the host's, so
//! that nothing of the snapshot's age or randomness shows in the run.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ktstr_wire::inbox::{self, Delivery};
use ktstr_wire::newc::{self, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};
use ktstr_wire::SharedMem;

use crate::report::log_info;
use crate::{cmdline, devmem};

/// How often a parked guest looks at the inbox (cheap: one load and a sleep).
const POLL: Duration = Duration::from_millis(1);

/// When the command line names an inbox: say so to the host, wait until it delivers
/// (after a restore), and return the inbox. `None`: an ordinary (cold) boot.
pub fn park_if_asked() -> Result<Option<SharedMem>> {
    let cmdline = fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?;
    let Some(loc) = cmdline::parse_region(&cmdline, cmdline::INBOX_OPTION)? else {
        return Ok(None);
    };
    let shm = devmem::map(Path::new("/dev/mem"), loc.base, loc.size)
        .context("mapping the warm-start inbox from /dev/mem")?;
    inbox::mark_parked(&shm);
    while !inbox::is_ready(&shm) {
        std::thread::sleep(POLL);
    }
    Ok(Some(shm))
}

/// Take the host's delivery: re-seed, step the clock, unpack the archive over `/`.
pub fn take_delivery(shm: &SharedMem) -> Result<()> {
    let t0 = std::time::Instant::now();
    let d: Delivery = inbox::receive(shm).context("reading the warm-start inbox")?;
    let t1 = t0.elapsed().as_millis();
    reseed(&d.seed).context("re-seeding the kernel's random pool")?;
    step_clock(d.realtime_ns).context("stepping CLOCK_REALTIME to the host's")?;
    let t2 = t0.elapsed().as_millis();
    unpack(&d.archive, Path::new("/")).context("unpacking the test's files")?;
    log_info!(
        "warm start: {} bytes received in {t1} ms, reseeded by {t2} ms, unpacked by {} ms",
        d.archive.len(),
        t0.elapsed().as_millis()
    );
    Ok(())
}

/// `RNDADDENTROPY` = `_IOW('R', 0x03, int[2])`; `RNDRESEEDCRNG` = `_IO('R', 0x07)`.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

/// Mix the host's seed into the input pool (credited) and reseed the CRNG from it now:
/// every restore of the same snapshot would otherwise draw the same random numbers.
fn reseed(seed: &[u8; inbox::SEED_LEN]) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f = fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")
        .context("opening /dev/urandom")?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info = Vec::with_capacity(8 + seed.len());
    info.extend_from_slice(&((seed.len() * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(seed.len() as i32).to_ne_bytes());
    info.extend_from_slice(seed);
    // SAFETY: the buffer is a complete rand_pool_info of buf_size bytes; the kernel only
    // reads it.
    if unsafe { libc::ioctl(f.as_raw_fd(), RNDADDENTROPY as _, info.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error()).context("RNDADDENTROPY");
    }
    // SAFETY: an argument-less ioctl on an open /dev/urandom.
    if unsafe { libc::ioctl(f.as_raw_fd(), RNDRESEEDCRNG as _) } != 0 {
        return Err(std::io::Error::last_os_error()).context("RNDRESEEDCRNG");
    }
    Ok(())
}

/// The monotonic clocks carry on from the snapshot (nothing in the guest saw time pass);
/// wall time jumps to the host's.
fn step_clock(realtime_ns: u64) -> Result<()> {
    let ts = libc::timespec {
        tv_sec: (realtime_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (realtime_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: a valid timespec; PID 1 holds CAP_SYS_TIME.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// Write every record of `archive` under `root`, as the kernel unpacks an initramfs:
/// directories (existing ones kept), files and links (replacing what is there; a running
/// binary's inode lives on), character devices.
pub fn unpack(archive: &[u8], root: &Path) -> Result<()> {
    for e in newc::parse(archive).context("the delivery is not a newc archive")? {
        let path = guest_path(root, &e.name)?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("mkdir {}", parent.display()))?;
        }
        let perms = fs::Permissions::from_mode(e.mode & 0o7777);
        let io = |what: &str| format!("{what} {}", path.display());
        match e.mode & S_IFMT {
            S_IFDIR => {
                if !path.is_dir() {
                    fs::create_dir(&path).with_context(|| io("mkdir"))?;
                }
                fs::set_permissions(&path, perms).with_context(|| io("chmod"))?;
            }
            S_IFREG => {
                remove_if_present(&path)?;
                fs::write(&path, &e.data).with_context(|| io("write"))?;
                fs::set_permissions(&path, perms).with_context(|| io("chmod"))?;
            }
            S_IFLNK => {
                remove_if_present(&path)?;
                let target = String::from_utf8(e.data).with_context(|| io("link target of"))?;
                symlink(target, &path).with_context(|| io("symlink"))?;
            }
            S_IFCHR => {
                if fs::symlink_metadata(&path).is_err() {
                    let dev = libc::makedev(e.rdev_major, e.rdev_minor);
                    nix::sys::stat::mknod(
                        &path,
                        nix::sys::stat::SFlag::S_IFCHR,
                        nix::sys::stat::Mode::from_bits_truncate(e.mode & 0o7777),
                        dev,
                    )
                    .with_context(|| io("mknod"))?;
                }
            }
            other => bail!("{}: unsupported file type {other:#o}", e.name),
        }
    }
    Ok(())
}

/// `name` under `root`; only plain relative components (the kernel's own unpacker
/// refuses nothing, but nothing of ours needs more).
fn guest_path(root: &Path, name: &str) -> Result<PathBuf> {
    let rel = Path::new(name.trim_start_matches('/'));
    if rel.as_os_str().is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        bail!("archive entry `{name}` is not a plain path");
    }
    Ok(root.join(rel))
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("replacing {}", path.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A newc archive by hand (the writer is the host's).
    fn record(out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]) {
        let fields = [
            1,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        out.extend_from_slice(newc::MAGIC);
        for f in fields {
            out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.resize(out.len() + newc::pad4(newc::HEADER_LEN + name.len() + 1), 0);
        out.extend_from_slice(data);
        out.resize(out.len() + newc::pad4(data.len()), 0);
    }

    #[test]
    fn unpacks_dirs_files_links_over_what_is_there() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("bin")).unwrap();
        fs::write(root.path().join("bin/old"), b"previous").unwrap();
        let mut a = Vec::new();
        record(&mut a, "bin", S_IFDIR | 0o755, b"");
        record(&mut a, "bin/old", S_IFREG | 0o755, b"new contents");
        record(&mut a, "ktstr/spec.json", S_IFREG | 0o644, b"{}");
        record(&mut a, "lib64/ld.so", S_IFLNK | 0o777, b"/lib/x");
        record(&mut a, newc::TRAILER, 0, b"");
        unpack(&a, root.path()).unwrap();
        assert_eq!(
            fs::read(root.path().join("bin/old")).unwrap(),
            b"new contents"
        );
        let mode = fs::metadata(root.path().join("bin/old"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            fs::read(root.path().join("ktstr/spec.json")).unwrap(),
            b"{}"
        );
        assert_eq!(
            fs::read_link(root.path().join("lib64/ld.so")).unwrap(),
            Path::new("/lib/x")
        );
    }

    #[test]
    fn escaping_names_and_garbage_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let mut a = Vec::new();
        record(&mut a, "../escape", S_IFREG | 0o644, b"x");
        record(&mut a, newc::TRAILER, 0, b"");
        assert!(unpack(&a, root.path()).is_err());
        assert!(unpack(b"not an archive", root.path()).is_err());
    }
}
