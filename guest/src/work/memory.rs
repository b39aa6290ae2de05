//! Work types that exercise memory: page-fault churn, stream-like copies and accesses
//! to another NUMA node's memory.

use std::hint::black_box;
use std::num::NonZeroUsize;
use std::ptr::NonNull;

use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};

use super::{worker_log, Meter, CACHE_LINE};

const PAGE: usize = 4096;

/// An anonymous private mapping, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> nix::Result<Self> {
        let n = NonZeroUsize::new(len).ok_or(nix::errno::Errno::EINVAL)?;
        // SAFETY: a fresh anonymous mapping that nothing else refers to.
        let p = unsafe {
            mmap_anonymous(
                None,
                n,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }?;
        Ok(Self { ptr: p.cast(), len })
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` bytes, readable and writable, and lives as long
        // as `self`; the borrow of `self` keeps it unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; no slice of it outlives self.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

/// `PageFault`: map `kib` KiB, write one byte per page (a fault each), unmap.
pub fn page_fault(m: &mut Meter, kib: u32) {
    let len = (kib as usize * 1024).next_multiple_of(PAGE);
    loop {
        match Mapping::new(len) {
            Ok(mut map) => {
                let b = map.bytes();
                for i in (0..len).step_by(PAGE) {
                    b[i] = black_box(1);
                }
            }
            Err(e) => {
                m.error(format!("PageFault: mmap of {kib} KiB: {e}"));
                break;
            }
        }
        m.checkpoint();
        if m.should_stop() {
            break;
        }
    }
}

/// `MemBandwidth`: copy a `kib` KiB buffer into another, whole, per unit.
pub fn mem_bandwidth(m: &mut Meter, kib: u32) {
    let len = kib as usize * 1024;
    let (mut src, mut dst) = (Vec::new(), Vec::new());
    if src.try_reserve_exact(len).is_err() || dst.try_reserve_exact(len).is_err() {
        m.error(format!("MemBandwidth: allocating 2 x {kib} KiB failed"));
        return;
    }
    src.resize(len, 1u8);
    dst.resize(len, 0u8);
    let mut i = 0u8;
    loop {
        src[0] = i;
        dst.copy_from_slice(&src);
        i = black_box(dst[len - 1]).wrapping_add(dst[0]);
        m.checkpoint();
        if m.should_stop() {
            break;
        }
    }
}

/// NUMA nodes online, from `/sys/devices/system/node/online` (`0-1`, `0,2`).
fn online_nodes() -> Vec<u32> {
    let s = std::fs::read_to_string("/sys/devices/system/node/online").unwrap_or_default();
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let mut ends = part.splitn(2, '-').map(|x| x.parse::<u32>());
        match (ends.next(), ends.next()) {
            (Some(Ok(a)), None) => out.push(a),
            (Some(Ok(a)), Some(Ok(b))) if a <= b && b < 1024 => out.extend(a..=b),
            _ => {}
        }
    }
    out
}

/// The node this thread runs on now.
fn current_node() -> Option<u32> {
    let (mut cpu, mut node) = (0u32, 0u32);
    // SAFETY: getcpu fills two u32s; the cache argument may be null.
    let r = unsafe {
        libc::syscall(
            libc::SYS_getcpu,
            &mut cpu as *mut u32,
            &mut node as *mut u32,
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    (r == 0).then_some(node)
}

/// The node after `here` among `nodes` (wrapping), if there is another one.
pub fn remote_node(nodes: &[u32], here: u32) -> Option<u32> {
    let i = nodes.iter().position(|&n| n == here)?;
    let other = nodes[(i + 1) % nodes.len()];
    (other != here).then_some(other)
}

/// `MPOL_BIND` of the mapping to `node`, before its pages are touched.
fn bind_to(map: &mut Mapping, node: u32) -> std::io::Result<()> {
    const MPOL_BIND: libc::c_long = 2;
    let mut mask = [0u64; 16];
    let word = (node / 64) as usize;
    if word >= mask.len() {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    mask[word] = 1 << (node % 64);
    // SAFETY: mbind over a live mapping of `len` bytes with a node mask of 1024 bits.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            map.ptr.as_ptr(),
            map.len,
            MPOL_BIND,
            mask.as_ptr(),
            (mask.len() * 64) as libc::c_ulong,
            0 as libc::c_uint,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `NumaRemote`: read-modify-write a `kib` KiB buffer bound to another node, one
/// cache line at a time, a whole pass per unit.
pub fn numa_remote(m: &mut Meter, kib: u32) {
    let len = (kib as usize * 1024).next_multiple_of(PAGE);
    let mut map = match Mapping::new(len) {
        Ok(map) => map,
        Err(e) => {
            m.error(format!("NumaRemote: mmap of {kib} KiB: {e}"));
            return;
        }
    };
    let nodes = online_nodes();
    match current_node().and_then(|here| remote_node(&nodes, here).map(|n| (here, n))) {
        Some((here, there)) => {
            if let Err(e) = bind_to(&mut map, there) {
                m.error(format!(
                    "NumaRemote: binding the buffer to node {there} (running on {here}): {e}"
                ));
            }
        }
        None => worker_log(&format!(
            "NumaRemote: {} NUMA node(s) online, so the buffer is local memory",
            nodes.len().max(1)
        )),
    }
    let b = map.bytes();
    loop {
        for i in (0..len).step_by(CACHE_LINE) {
            b[i] = black_box(b[i].wrapping_add(1));
        }
        m.checkpoint();
        if m.should_stop() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn the_remote_node_is_the_next_one() {
        assert_eq!(remote_node(&[0, 1], 0), Some(1));
        assert_eq!(remote_node(&[0, 1, 2], 2), Some(0));
        assert_eq!(remote_node(&[0], 0), None);
        assert_eq!(remote_node(&[1, 2], 0), None);
    }

    #[test]
    fn memory_work_types_make_progress() {
        for f in [page_fault, mem_bandwidth, numa_remote] {
            let now = Instant::now();
            let mut m = Meter::new(None, now, now + Duration::from_millis(30));
            f(&mut m, 256);
            let r = m.into_report("t", 0, "mem");
            assert!(r.work_units > 0, "{r:?}");
            // One node on most build hosts: NumaRemote falls back without an error.
            assert!(r.errors.is_empty(), "{:?}", r.errors);
        }
    }
}
