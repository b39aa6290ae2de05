//! The CPU topology as the guest kernel shows it in sysfs, turned into a
//! [`SeenTopology`] for the Ready message.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ktstr_wire::msg::{SeenCpu, SeenTopology};

/// Upper bound on CPUs in a list, so a garbled range cannot allocate without limit.
const MAX_CPUS: u32 = 1 << 16;

/// Parses a kernel CPU list such as `0-3,5,7-8` (an empty list is valid).
pub fn parse_cpulist(s: &str) -> Result<Vec<u32>> {
    let s = s.trim();
    let mut cpus = Vec::new();
    if s.is_empty() {
        return Ok(cpus);
    }
    for part in s.split(',') {
        let num = |x: &str| {
            x.trim()
                .parse::<u32>()
                .with_context(|| format!("cpu list `{s}`: `{x}` is not a CPU number"))
        };
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let n = num(part)?;
                (n, n)
            }
        };
        if lo > hi || hi >= MAX_CPUS {
            bail!("cpu list `{s}`: bad range `{part}`");
        }
        cpus.extend(lo..=hi);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

fn read_trimmed(path: &Path) -> Result<String> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .with_context(|| format!("reading {}", path.display()))
}

fn read_u32(path: &Path) -> Result<u32> {
    let s = read_trimmed(path)?;
    s.parse()
        .with_context(|| format!("{}: `{s}` is not a number", path.display()))
}

/// First CPU of the level-3 cache this CPU shares, if sysfs describes one.
fn l3_first_cpu(cpu_dir: &Path) -> Result<Option<u32>> {
    let cache = cpu_dir.join("cache");
    let Ok(entries) = fs::read_dir(&cache) else {
        return Ok(None);
    };
    let mut indices: Vec<_> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("index"))
        })
        .collect();
    indices.sort();
    for idx in indices {
        if read_u32(&idx.join("level")).ok() == Some(3) {
            let list = parse_cpulist(&read_trimmed(&idx.join("shared_cpu_list"))?)?;
            return Ok(list.first().copied());
        }
    }
    Ok(None)
}

/// cpu -> NUMA node from `<sys>/devices/system/node/node*/cpulist` (empty without NUMA).
fn cpu_nodes(sys: &Path) -> Result<BTreeMap<u32, u32>> {
    let mut map = BTreeMap::new();
    let Ok(entries) = fs::read_dir(sys.join("devices/system/node")) else {
        return Ok(map);
    };
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name();
        let Some(node) = name
            .to_str()
            .and_then(|n| n.strip_prefix("node"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        for cpu in parse_cpulist(&read_trimmed(&e.path().join("cpulist"))?)? {
            map.insert(cpu, node);
        }
    }
    Ok(map)
}

/// Reads the topology under `sys` (`/sys` in the guest, a fake tree in tests).
pub fn read_topology(sys: &Path) -> Result<SeenTopology> {
    let cpu_root = sys.join("devices/system/cpu");
    let online = read_trimmed(&cpu_root.join("online"))?;
    let nodes = cpu_nodes(sys)?;
    let mut raw = Vec::new();
    for cpu in parse_cpulist(&online)? {
        let dir = cpu_root.join(format!("cpu{cpu}"));
        let core_id = read_u32(&dir.join("topology/core_id"))?;
        let package_id = read_u32(&dir.join("topology/physical_package_id"))?;
        let l3 = l3_first_cpu(&dir)?;
        raw.push((cpu, core_id, package_id, l3));
    }
    // Without an L3, the package is the LLC: name it by its first online CPU.
    let mut package_first: BTreeMap<u32, u32> = BTreeMap::new();
    for &(cpu, _, pkg, _) in &raw {
        let first = package_first.entry(pkg).or_insert(cpu);
        *first = (*first).min(cpu);
    }
    let cpus = raw
        .into_iter()
        .map(|(cpu, core_id, package_id, l3)| SeenCpu {
            cpu,
            core_id,
            package_id,
            llc_id: l3.unwrap_or(package_first[&package_id]),
            node: nodes.get(&cpu).copied().unwrap_or(0),
        })
        .collect();
    Ok(SeenTopology::derive(online, cpus))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpulists() {
        assert_eq!(parse_cpulist("0-3,5,7-8\n").unwrap(), [0, 1, 2, 3, 5, 7, 8]);
        assert_eq!(parse_cpulist("0").unwrap(), [0]);
        assert_eq!(parse_cpulist("").unwrap(), Vec::<u32>::new());
        assert_eq!(parse_cpulist("3,1-2,2").unwrap(), [1, 2, 3]);
        for bad in ["a", "3-1", "1-", "0-4294967295", "1,,2"] {
            assert!(parse_cpulist(bad).is_err(), "{bad}");
        }
    }

    /// Writes a fake sysfs: `cpus` = (cpu, core_id, package, l3 list or None).
    fn fake_sys(
        online: &str,
        cpus: &[(u32, u32, u32, Option<&str>)],
        nodes: &[&str],
    ) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let w = |rel: String, s: &str| {
            let p = d.path().join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, format!("{s}\n")).unwrap();
        };
        w("devices/system/cpu/online".into(), online);
        for &(cpu, core, pkg, l3) in cpus {
            let c = format!("devices/system/cpu/cpu{cpu}");
            w(format!("{c}/topology/core_id"), &core.to_string());
            w(
                format!("{c}/topology/physical_package_id"),
                &pkg.to_string(),
            );
            w(format!("{c}/cache/index0/level"), "1");
            w(
                format!("{c}/cache/index0/shared_cpu_list"),
                &cpu.to_string(),
            );
            if let Some(l3) = l3 {
                w(format!("{c}/cache/index3/level"), "3");
                w(format!("{c}/cache/index3/shared_cpu_list"), l3);
            }
        }
        for (i, n) in nodes.iter().enumerate() {
            w(format!("devices/system/node/node{i}/cpulist"), n);
        }
        d
    }

    #[test]
    fn two_sockets_with_l3_and_smt() {
        let cpus: Vec<_> = (0..8)
            .map(|c| {
                (
                    c,
                    (c % 4) / 2,
                    c / 4,
                    Some(if c < 4 { "0-3" } else { "4-7" }),
                )
            })
            .collect();
        let d = fake_sys("0-7", &cpus, &["0-7"]);
        let t = read_topology(d.path()).unwrap();
        assert_eq!(t.label(), "1n2l2c2t");
        assert_eq!(t.cpus[5].llc_id, 4);
        assert!(t.uniform);
    }

    #[test]
    fn numa_nodes_from_node_dirs() {
        let cpus: Vec<_> = (0..4)
            .map(|c| (c, c % 2, c / 2, Some(if c < 2 { "0-1" } else { "2-3" })))
            .collect();
        let d = fake_sys("0-3", &cpus, &["0-1", "2-3"]);
        let t = read_topology(d.path()).unwrap();
        assert_eq!(t.label(), "2n2l2c1t");
        assert_eq!(t.cpus[3].node, 1);
    }

    #[test]
    fn no_l3_means_package_is_the_llc_and_no_node_dir_means_node_0() {
        let d = fake_sys(
            "0-3",
            &[
                (0, 0, 0, None),
                (1, 1, 0, None),
                (2, 0, 1, None),
                (3, 1, 1, None),
            ],
            &[],
        );
        let t = read_topology(d.path()).unwrap();
        assert_eq!(
            t.cpus.iter().map(|c| c.llc_id).collect::<Vec<_>>(),
            [0, 0, 2, 2]
        );
        assert_eq!(t.label(), "1n2l2c1t");
    }

    #[test]
    fn offline_cpus_are_left_out() {
        let d = fake_sys(
            "0,2",
            &[(0, 0, 0, Some("0-3")), (2, 2, 0, Some("0-3"))],
            &[],
        );
        let t = read_topology(d.path()).unwrap();
        assert_eq!(t.cpu_count, 2);
        assert_eq!(t.online, "0,2");
    }

    #[test]
    fn missing_topology_files_are_errors() {
        let d = fake_sys("0-1", &[(0, 0, 0, None)], &[]);
        let e = read_topology(d.path()).unwrap_err();
        assert!(format!("{e:#}").contains("cpu1"), "{e:#}");
    }
}
