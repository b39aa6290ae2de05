//! The test's cgroups under cgroup v2: one directory per scenario cgroup below
//! `<cgroupfs>/ktstr`, with the cpu and cpuset controllers enabled down the tree (and
//! memory, io and pids where the kernel has them, for the ops that set their knobs), and
//! readers for what snapshots report (`cpu.stat`, `cgroup.events`, ...).
//!
//! Outside a VM on a host without a writable cgroup v2 (development runs of the
//! runtime), a [`CgroupTree::detached`] tree accepts every change and holds nothing:
//! workers then run where the runtime runs.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ktstr_wire::msg::CgroupSnapshot;
use ktstr_wire::scenario::{render_cpulist, CpuMax};
use nix::unistd::Pid;

use crate::report::log_warn;

/// Directory of the test's cgroups, relative to the cgroupfs root.
pub const TEST_ROOT: &str = "ktstr";
/// Controllers the scenario needs in every non-leaf cgroup.
const CONTROLLERS: [&str; 2] = ["cpuset", "cpu"];
/// Controllers enabled when the kernel has them: only the ops that write their knobs
/// need them, and those say so when the knob is missing.
const OPTIONAL_CONTROLLERS: [&str; 3] = ["memory", "io", "pids"];

/// The test's cgroup tree.
#[derive(Debug, Clone)]
pub struct CgroupTree {
    /// `<cgroupfs>/ktstr`; None for a detached tree.
    root: Option<PathBuf>,
}

/// Writes `value` to a cgroup file in one `write(2)` (cgroupfs wants whole values).
fn write_file(path: &Path, value: &str) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.write_all(value.as_bytes())
        .with_context(|| format!("writing `{}` to {}", value.trim(), path.display()))
}

/// Enables the controllers for the children of `dir`, one at a time so one missing
/// controller does not hide the other.
fn enable_controllers(dir: &Path) -> Result<()> {
    let path = dir.join("cgroup.subtree_control");
    let available = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let mut missing = Vec::new();
    for c in CONTROLLERS {
        if !available.split_ascii_whitespace().any(|x| x == c) {
            missing.push(c);
            continue;
        }
        write_file(&path, &format!("+{c}"))?;
    }
    for c in OPTIONAL_CONTROLLERS {
        if available.split_ascii_whitespace().any(|x| x == c) {
            write_file(&path, &format!("+{c}"))?;
        }
    }
    if !missing.is_empty() {
        log_warn!(
            "{}: controllers {} are not available (cgroup.controllers: `{}`)",
            dir.display(),
            missing.join(", "),
            available.trim()
        );
    }
    Ok(())
}

impl CgroupTree {
    /// Creates `<cgroupfs>/ktstr` and enables the controllers on the way.
    pub fn setup(cgroupfs: &Path) -> Result<Self> {
        anyhow::ensure!(
            cgroupfs.join("cgroup.procs").exists(),
            "{} is not a cgroup v2 mount",
            cgroupfs.display()
        );
        enable_controllers(cgroupfs).context("enabling controllers at the cgroup root")?;
        let root = cgroupfs.join(TEST_ROOT);
        if !root.exists() {
            fs::create_dir(&root).with_context(|| format!("creating {}", root.display()))?;
        }
        enable_controllers(&root)?;
        Ok(Self { root: Some(root) })
    }

    /// A tree that is not backed by cgroupfs: changes succeed, nothing is in it.
    pub fn detached() -> Self {
        Self { root: None }
    }

    /// Directory of the cgroup at `name` (`outer/heavy`); None when detached.
    pub fn dir(&self, name: &str) -> Option<PathBuf> {
        self.root.as_ref().map(|r| r.join(name))
    }

    /// The file `file` of cgroup `name`; None when detached.
    fn file(&self, name: &str, file: &str) -> Option<PathBuf> {
        self.dir(name).map(|d| d.join(file))
    }

    /// Writes a cgroup file (a detached tree accepts and drops the write).
    fn write(&self, name: &str, file: &str, value: &str) -> Result<()> {
        match self.file(name, file) {
            Some(p) => write_file(&p, value),
            None => Ok(()),
        }
    }

    /// Creates the cgroup at `name`; its parent must exist. `parent_of_children`
    /// enables the controllers below it.
    pub fn create(&self, name: &str, parent_of_children: bool) -> Result<()> {
        let Some(dir) = self.dir(name) else {
            return Ok(());
        };
        fs::create_dir(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
        if parent_of_children {
            enable_controllers(&dir)?;
        }
        Ok(())
    }

    /// Sets `cpuset.cpus` (None: inherit the parent's CPUs).
    pub fn set_cpus(&self, name: &str, cpus: Option<&[u32]>) -> Result<()> {
        let v = cpus.map(render_cpulist).unwrap_or_default();
        self.write(name, "cpuset.cpus", &format!("{v}\n"))
    }

    pub fn set_weight(&self, name: &str, weight: u32) -> Result<()> {
        self.write(name, "cpu.weight", &format!("{weight}\n"))
    }

    pub fn set_max(&self, name: &str, m: CpuMax) -> Result<()> {
        self.write(
            name,
            "cpu.max",
            &format!("{} {}\n", m.quota_us, m.period_us),
        )
    }

    /// `cpu.max` (None: `max`, no limit).
    pub fn set_max_opt(&self, name: &str, m: Option<CpuMax>) -> Result<()> {
        match m {
            Some(m) => self.set_max(name, m),
            None => self.knob(name, "cpu.max", "max"),
        }
    }

    /// Writes a controller's knob (`memory.max`); a missing file means its controller
    /// is not enabled here, and the error says so.
    pub fn knob(&self, name: &str, file: &str, value: &str) -> Result<()> {
        let Some(p) = self.file(name, file) else {
            return Ok(());
        };
        if !p.exists() {
            let controller = file.split('.').next().unwrap_or(file);
            anyhow::bail!(
                "{} does not exist: the {controller} controller is not enabled for cgroup `{name}` (is it in the kernel? cgroup.controllers lists what is)",
                p.display()
            );
        }
        write_file(&p, &format!("{value}\n"))
    }

    pub fn set_frozen(&self, name: &str, frozen: bool) -> Result<()> {
        self.write(name, "cgroup.freeze", if frozen { "1\n" } else { "0\n" })
    }

    /// Moves a process into the cgroup.
    pub fn add_proc(&self, name: &str, pid: Pid) -> Result<()> {
        self.write(name, "cgroup.procs", &format!("{pid}\n"))
    }

    /// Processes in the cgroup itself (not its descendants).
    pub fn procs(&self, name: &str) -> Result<Vec<Pid>> {
        let Some(p) = self.file(name, "cgroup.procs") else {
            return Ok(Vec::new());
        };
        let s = fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        Ok(parse_procs(&s))
    }

    /// Removes an empty cgroup directory.
    pub fn remove(&self, name: &str) -> Result<()> {
        let Some(dir) = self.dir(name) else {
            return Ok(());
        };
        fs::remove_dir(&dir).with_context(|| format!("removing cgroup {}", dir.display()))
    }

    /// What a snapshot records of the cgroup; unreadable files leave their fields None.
    pub fn snapshot(&self, name: &str) -> CgroupSnapshot {
        let read = |f: &str| self.file(name, f).and_then(|p| fs::read_to_string(p).ok());
        let stat = read("cpu.stat")
            .map(|s| parse_keyed(&s))
            .unwrap_or_default();
        let events = read("cgroup.events")
            .map(|s| parse_keyed(&s))
            .unwrap_or_default();
        let get = |m: &std::collections::BTreeMap<String, u64>, k: &str| m.get(k).copied();
        CgroupSnapshot {
            name: name.to_string(),
            usage_usec: get(&stat, "usage_usec"),
            user_usec: get(&stat, "user_usec"),
            system_usec: get(&stat, "system_usec"),
            nr_periods: get(&stat, "nr_periods"),
            nr_throttled: get(&stat, "nr_throttled"),
            throttled_usec: get(&stat, "throttled_usec"),
            populated: get(&events, "populated").map(|v| v != 0),
            frozen: get(&events, "frozen").map(|v| v != 0),
            cpus_effective: read("cpuset.cpus.effective").map(|s| s.trim().to_string()),
            nr_procs: read("cgroup.procs").map(|s| parse_procs(&s).len() as u32),
        }
    }
}

/// `key value` lines (`cpu.stat`, `cgroup.events`); lines that do not parse are skipped.
pub fn parse_keyed(s: &str) -> std::collections::BTreeMap<String, u64> {
    s.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// `cgroup.procs`: one pid per line.
pub fn parse_procs(s: &str) -> Vec<Pid> {
    s.lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
        .map(Pid::from_raw)
        .collect()
}

/// The cgroup of this process (`/proc/self/cgroup`, v2 line `0::/ktstr/cg0`) relative
/// to the test root (`cg0`); None outside it.
pub fn relative_to_test_root(proc_self_cgroup: &str) -> Option<String> {
    let path = proc_self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))?
        .trim();
    let rest = path.strip_prefix('/')?.strip_prefix(TEST_ROOT)?;
    match rest.strip_prefix('/') {
        Some(r) if !r.is_empty() => Some(r.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_files() {
        let m = parse_keyed(
            "usage_usec 1200\nuser_usec 1000\nsystem_usec 200\nnr_periods 0\ncore_sched.force_idle_usec 0\nbad line here\n",
        );
        assert_eq!(m["usage_usec"], 1200);
        assert_eq!(m["core_sched.force_idle_usec"], 0);
        assert_eq!(m.len(), 5);
        let e = parse_keyed("populated 1\nfrozen 0\n");
        assert_eq!(e["populated"], 1);
    }

    #[test]
    fn procs_and_self_cgroup() {
        assert_eq!(
            parse_procs("12\n13\n\nx\n"),
            [Pid::from_raw(12), Pid::from_raw(13)]
        );
        assert_eq!(
            relative_to_test_root("0::/ktstr/outer/heavy\n").as_deref(),
            Some("outer/heavy")
        );
        assert_eq!(relative_to_test_root("0::/\n"), None);
        assert_eq!(relative_to_test_root("0::/ktstr\n"), None);
        assert_eq!(relative_to_test_root("0::/ktstrx/a\n"), None);
        assert_eq!(relative_to_test_root("1:cpu:/a\n"), None);
    }

    /// A plain directory stands in for cgroupfs: the writes land in regular files.
    #[test]
    fn writes_land_in_the_right_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("cgroup.procs"), "").unwrap();
        std::fs::write(d.path().join("cgroup.controllers"), "cpuset cpu io\n").unwrap();
        std::fs::write(d.path().join("cgroup.subtree_control"), "").unwrap();
        std::fs::create_dir(d.path().join(TEST_ROOT)).unwrap();
        std::fs::write(
            d.path().join(TEST_ROOT).join("cgroup.controllers"),
            "cpuset cpu\n",
        )
        .unwrap();
        std::fs::write(d.path().join(TEST_ROOT).join("cgroup.subtree_control"), "").unwrap();
        let t = CgroupTree::setup(d.path()).unwrap();
        // The last controller written is what a plain file keeps: io is optional and
        // the root has it; the test root has none of the optional ones.
        assert_eq!(
            std::fs::read_to_string(d.path().join("cgroup.subtree_control")).unwrap(),
            "+io"
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join(TEST_ROOT).join("cgroup.subtree_control"))
                .unwrap(),
            "+cpu"
        );
        t.create("cg0", false).unwrap();
        let dir = t.dir("cg0").unwrap();
        for f in ["cpuset.cpus", "cpu.weight", "cpu.max", "cgroup.freeze"] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        t.set_cpus("cg0", Some(&[3, 0, 1])).unwrap();
        t.set_weight("cg0", 200).unwrap();
        t.set_max(
            "cg0",
            CpuMax {
                quota_us: 5000,
                period_us: 10000,
            },
        )
        .unwrap();
        t.set_frozen("cg0", true).unwrap();
        let rd = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(rd("cpuset.cpus"), "0-1,3\n");
        assert_eq!(rd("cpu.weight"), "200\n");
        assert_eq!(rd("cpu.max"), "5000 10000\n");
        assert_eq!(rd("cgroup.freeze"), "1\n");
        t.set_cpus("cg0", None).unwrap();
        assert_eq!(rd("cpuset.cpus"), "\n");
        t.set_max_opt("cg0", None).unwrap();
        assert_eq!(rd("cpu.max"), "max\n");
        // A knob whose controller is not enabled is named with the controller.
        let e = t
            .knob("cg0", "memory.max", "1048576")
            .unwrap_err()
            .to_string();
        assert!(e.contains("memory controller is not enabled"), "{e}");
        std::fs::write(dir.join("pids.max"), "").unwrap();
        t.knob("cg0", "pids.max", "64").unwrap();
        assert_eq!(rd("pids.max"), "64\n");
        std::fs::write(dir.join("cpu.stat"), "usage_usec 10\nnr_throttled 2\n").unwrap();
        std::fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
        let s = t.snapshot("cg0");
        assert_eq!(s.usage_usec, Some(10));
        assert_eq!(s.nr_throttled, Some(2));
        assert_eq!(s.throttled_usec, None);
        assert_eq!(s.populated, Some(true));
        assert_eq!(s.frozen, Some(true));
        assert_eq!(s.cpus_effective, None);
        assert!(CgroupTree::setup(&d.path().join("nope")).is_err());
    }

    #[test]
    fn a_detached_tree_accepts_everything_and_holds_nothing() {
        let t = CgroupTree::detached();
        t.create("a", true).unwrap();
        t.set_cpus("a", Some(&[0])).unwrap();
        t.add_proc("a", Pid::from_raw(1)).unwrap();
        assert!(t.procs("a").unwrap().is_empty());
        assert_eq!(t.snapshot("a").usage_usec, None);
        t.remove("a").unwrap();
    }
}
