//! Per-worker settings a [`WorkSpec`] asks for, applied by the worker itself before it
//! works: nice, scheduling policy, CPU affinity, NUMA memory policy, thread name, and
//! last the user and group (the others need root). A setting that fails is a worker
//! error and the worker runs on without it, so its numbers still mean something.

use ktstr_wire::scenario::{MemPolicy, SchedPolicy, WorkSpec};

const MPOL_PREFERRED: libc::c_int = 1;
const MPOL_BIND: libc::c_int = 2;
const MPOL_INTERLEAVE: libc::c_int = 3;

fn check(r: libc::c_long) -> std::io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Applies the settings of `work` to this process (`affinity`: resolved CPUs) before
/// its meter starts (an affinity change migrates it); returns what failed.
pub fn apply(work: &WorkSpec, affinity: Option<&[u32]>) -> Vec<String> {
    let mut errors = Vec::new();
    let mut m = Errors(&mut errors);
    let m = &mut m;
    if let Some(n) = work.nice {
        if let Err(e) = super::set_nice(n) {
            m.error(format!("setpriority({n}): {e}"));
        }
    }
    if let Some(p) = work.policy {
        let (raw, prio) = p.raw();
        if let Err(e) = super::policy::set_policy(raw, prio) {
            m.error(format!("sched_setscheduler({}): {e}", p.label()));
        }
    }
    if let Some(cpus) = affinity {
        if let Err(e) = set_affinity(cpus) {
            m.error(format!("sched_setaffinity({cpus:?}): {e}"));
        }
    }
    if let Some(mp) = &work.mem_policy {
        if let Err(e) = set_mempolicy(mp) {
            m.error(format!("set_mempolicy({mp:?}): {e}"));
        }
    }
    if let Some(name) = &work.comm {
        if let Err(e) = set_comm(name) {
            m.error(format!("prctl(PR_SET_NAME, {name}): {e}"));
        }
    }
    if let (Some(uid), Some(gid)) = (work.uid, work.gid) {
        if let Err(e) = set_user(uid, gid) {
            m.error(format!("switching to uid {uid} gid {gid}: {e}"));
        }
    }
    errors
}

/// Collects error lines the way a meter would.
struct Errors<'a>(&'a mut Vec<String>);

impl Errors<'_> {
    fn error(&mut self, e: String) {
        self.0.push(e);
    }
}

fn set_affinity(cpus: &[u32]) -> std::io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        if c as usize >= libc::CPU_SETSIZE as usize {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: `c` is below CPU_SETSIZE, so the bit is inside `set`.
        unsafe { libc::CPU_SET(c as usize, &mut set) };
    }
    // SAFETY: passes a valid cpu_set_t of its own size for this process.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    check(r.into())
}

/// The `set_mempolicy` mode and node mask of a policy.
pub fn mempolicy_args(mp: &MemPolicy) -> (libc::c_int, [u64; 16]) {
    let mode = match mp {
        MemPolicy::Bind(_) => MPOL_BIND,
        MemPolicy::Interleave(_) => MPOL_INTERLEAVE,
        MemPolicy::Preferred(_) => MPOL_PREFERRED,
    };
    let mut mask = [0u64; 16];
    for n in mp.nodes() {
        if let Some(word) = mask.get_mut(n as usize / 64) {
            *word |= 1 << (n % 64);
        }
    }
    (mode, mask)
}

fn set_mempolicy(mp: &MemPolicy) -> std::io::Result<()> {
    let (mode, mask) = mempolicy_args(mp);
    // The kernel reads maxnode - 1 bits of the mask.
    let maxnode = (mask.len() * 64 + 1) as libc::c_ulong;
    // SAFETY: set_mempolicy reads `maxnode - 1` bits from `mask`, which holds them.
    let r = unsafe { libc::syscall(libc::SYS_set_mempolicy, mode, mask.as_ptr(), maxnode) };
    check(r)
}

fn set_comm(name: &str) -> std::io::Result<()> {
    let c = std::ffi::CString::new(name).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: PR_SET_NAME reads at most 16 bytes of a NUL-terminated string.
    let r = unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) };
    check(r.into())
}

fn set_user(uid: u32, gid: u32) -> std::io::Result<()> {
    // Supplementary groups first (root's would stay otherwise), then gid, then uid:
    // after setuid nothing else may change.
    // SAFETY: an empty group list.
    check(unsafe { libc::setgroups(0, std::ptr::null()) }.into())?;
    // SAFETY: plain id changes of this process.
    check(unsafe { libc::setgid(gid) }.into())?;
    // SAFETY: as above.
    check(unsafe { libc::setuid(uid) }.into())
}

/// This process's scheduling policy as a worker report names it (`fifo:10`); `ext` for
/// `SCHED_EXT`, the number for others.
pub fn current_policy() -> String {
    // SAFETY: queries this process's own policy.
    let raw = unsafe { libc::sched_getscheduler(0) };
    let mut p = libc::sched_param { sched_priority: 0 };
    // SAFETY: fills a valid sched_param for this process.
    unsafe { libc::sched_getparam(0, &mut p) };
    match SchedPolicy::from_raw(raw, p.sched_priority.max(0) as u32) {
        Some(pol) => pol.label(),
        None if raw == 7 => "ext".into(),
        None => format!("policy {raw}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mempolicy_modes_and_masks() {
        let (mode, mask) = mempolicy_args(&MemPolicy::Bind(vec![0, 2]));
        assert_eq!(mode, MPOL_BIND);
        assert_eq!(mask[0], 0b101);
        let (mode, mask) = mempolicy_args(&MemPolicy::Interleave(vec![1, 65]));
        assert_eq!(mode, MPOL_INTERLEAVE);
        assert_eq!((mask[0], mask[1]), (0b10, 0b10));
        let (mode, mask) = mempolicy_args(&MemPolicy::Preferred(3));
        assert_eq!(mode, MPOL_PREFERRED);
        assert_eq!(mask[0], 0b1000);
    }

    #[test]
    fn this_process_reports_its_policy() {
        // Test processes run under SCHED_OTHER (or SCHED_EXT on a sched_ext host).
        let p = current_policy();
        assert!(p == "other" || p == "ext" || p == "batch", "{p}");
    }
}
