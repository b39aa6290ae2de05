//! A model of how Linux (6.10 and later, 7.x included) turns the CPUID of each CPU into its
//! topology: package/die/core ids, the LLC id, and the sibling and LLC masks built from
//! them. The CPUID builder's tests evaluate it on the tables we give each vCPU, and the
//! self-test evaluates it on the CPUID values the guest itself read, so "the guest sees the
//! declared topology" means what Linux will conclude, not what the leaves say on paper.
//!
//! Followed from the kernel sources (torvalds/linux, arch/x86/kernel/):
//! - cpu/topology_common.c: `parse_topology()`, `parse_legacy()`, `topo_set_ids()`;
//!   cpu/topology.h: `topo_shift_apicid()`, `topology_set_dom()` (shifts propagate upwards)
//! - cpu/topology_ext.c: `cpu_parse_topology_ext()` (0x1F, then 0x8000_0026, then 0xB),
//!   `topo_subleaf()`, `parse_topology_leaf()`
//! - cpu/topology_amd.c: `cpu_parse_topology_amd()`, `parse_8000_0008()`,
//!   `parse_8000_001e()`, `parse_fam10h_node_id()`, `legacy_set_llc()`,
//!   `cpu_topology_fixup_amd()`
//! - cpu/cacheinfo.c: `cacheinfo_amd_init_llc_id()` (family < 0x17: node id; family 0x17
//!   model <= 0x1F: APIC id >> 3; otherwise APIC id >> order(0x8000_001D L3 sharing)),
//!   `cacheinfo_hygon_init_llc_id()` (APIC id >> 3), `intel_cacheinfo_0x4()` (leaf 4)
//! - smpboot.c: `set_cpu_sibling_map()`, `match_smt()`, `match_llc()`, `topology_sane()`
//!   (siblings in different NUMA nodes are never linked)
//!
//! Only what decides the topology is modelled; MSR reads that KVM does not emulate (the
//! family 10h node-id MSR) are taken as 0, as the guest's faulting `rdmsr` returns.

use std::collections::{BTreeMap, BTreeSet};

use ktstr_topology::ceil_log2;

/// Topology domains, in the kernel's order (`enum x86_topology_domains`).
const SMT: usize = 0;
const CORE: usize = 1;
const MODULE: usize = 2;
const TILE: usize = 3;
const DIE: usize = 4;
const DIEGRP: usize = 5;
const PKG: usize = 6;
const DOMAINS: usize = 7;

/// Leaf 0x8000_0001 ECX bits.
const TOPOEXT: u32 = 1 << 22;
const NODEID_MSR: u32 = 1 << 19;
/// Leaf 0x1 EDX bit 28 (HTT) and ECX bit 31 (hypervisor).
const HT: u32 = 1 << 28;
const HYPERVISOR: u32 = 1 << 31;

/// The vendors whose topology Linux parses from CPUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinuxVendor {
    Intel,
    Amd,
    Hygon,
}

/// What Linux derives for one CPU (`struct cpuinfo_topology` plus what decides matching).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinuxCpu {
    pub vendor: LinuxVendor,
    pub family: u32,
    pub model: u32,
    pub apic: u32,
    pub pkg_id: u32,
    pub die_id: u32,
    pub core_id: u32,
    pub amd_node_id: u32,
    pub amd_nodes_per_pkg: u32,
    /// Compute unit (AMD family 0x15 only).
    pub cu_id: Option<u32>,
    /// `None` is BAD_APICID: no LLC sharing is derived at all.
    pub llc_id: Option<u32>,
    /// X86_FEATURE_TOPOEXT, which selects the AMD flavour of `match_smt()`.
    pub topoext: bool,
    /// Shift of the SMT domain (APIC id bits of the thread within its core).
    pub smt_shift: u32,
}

/// Family and model as Linux computes them from leaf 0x1 EAX (`x86_family()`,
/// `x86_model()`).
pub fn family_model(eax: u32) -> (u32, u32) {
    let mut family = (eax >> 8) & 0xf;
    if family == 0xf {
        family += (eax >> 20) & 0xff;
    }
    let mut model = (eax >> 4) & 0xf;
    if family >= 6 {
        model += ((eax >> 16) & 0xf) << 4;
    }
    (family, model)
}

/// CPUID as a guest sees it: leaves above the maximum (basic or extended) read as zeros,
/// as do absent ones (KVM on AMD; Linux checks the maximum before using Intel leaves).
struct Cpuid<'a> {
    f: &'a dyn Fn(u32, u32) -> [u32; 4],
    max_basic: u32,
    max_ext: u32,
}

impl Cpuid<'_> {
    fn get(&self, leaf: u32, sub: u32) -> [u32; 4] {
        let in_range = if leaf >= 0x8000_0000 {
            leaf <= self.max_ext
        } else {
            leaf <= self.max_basic
        };
        if in_range {
            (self.f)(leaf, sub)
        } else {
            [0; 4]
        }
    }
}

/// `struct topo_scan` and the per-CPU fields the parsers fill in.
struct Scan {
    shifts: [u32; DOMAINS],
    ncpus: [u32; DOMAINS],
    initial_apicid: u32,
    amd_nodes_per_pkg: u32,
    amd_node_id: u32,
    cu_id: Option<u32>,
    llc_id: Option<u32>,
}

impl Scan {
    /// `topology_update_dom()`: no propagation.
    fn update(&mut self, dom: usize, shift: u32, ncpus: u32) {
        if dom < DOMAINS {
            self.shifts[dom] = shift;
            self.ncpus[dom] = ncpus;
        }
    }

    /// `topology_set_dom()`: the upper domains inherit this one.
    fn set(&mut self, dom: usize, shift: u32, ncpus: u32) {
        self.update(dom, shift, ncpus);
        for d in dom + 1..DOMAINS {
            self.shifts[d] = self.shifts[d - 1];
            self.ncpus[d] = self.ncpus[d - 1];
        }
    }
}

/// `get_count_order()`.
fn order(n: u32) -> u32 {
    ceil_log2(n.max(1))
}

/// `topo_subleaf()` looped by `parse_topology_leaf()`.
fn parse_topology_leaf(q: &Cpuid, s: &mut Scan, leaf: u32) -> bool {
    // Type -> domain maps of topology_ext.c; types at or above `max` are unknown.
    let (max, map): (u32, &[usize]) = match leaf {
        0xb => (3, &[0, SMT, CORE]),
        0x1f => (7, &[0, SMT, CORE, MODULE, TILE, DIE, DIEGRP]),
        0x8000_0026 => (5, &[0, SMT, CORE, TILE, DIE]),
        _ => return false,
    };
    let mut last = 0usize;
    let mut sub = 0u32;
    while sub < 64 {
        let r = q.get(leaf, sub);
        let nproc = r[1] & 0xffff;
        let ty = (r[2] >> 8) & 0xff;
        if nproc == 0 || ty == 0 {
            break;
        }
        let dom = if ty >= max {
            last + 1
        } else {
            last = map[ty as usize];
            last
        };
        if dom == SMT {
            s.initial_apicid = r[3];
        }
        s.set(dom, r[0] & 0x1f, nproc);
        sub += 1;
    }
    if sub == 0 {
        return false;
    }
    if s.shifts[SMT] == 0 && s.ncpus[SMT] > 1 {
        let n = s.ncpus[SMT];
        s.update(SMT, order(n), n);
    }
    true
}

/// `cpu_parse_topology_ext()`.
fn parse_ext(q: &Cpuid, s: &mut Scan) -> bool {
    (q.max_basic >= 0x1f && parse_topology_leaf(q, s, 0x1f))
        || (q.max_ext >= 0x8000_0026 && parse_topology_leaf(q, s, 0x8000_0026))
        || (q.max_basic >= 0xb && parse_topology_leaf(q, s, 0xb))
}

/// `parse_legacy()`: leaf 0x1 EBX[23:16] and leaf 0x4 EAX[31:26].
fn parse_legacy(q: &Cpuid, s: &mut Scan) {
    let l4 = q.get(4, 0)[0];
    let cores = if q.max_basic < 4 || l4 & 0x1f == 0 {
        1
    } else {
        (l4 >> 26) + 1
    };
    let mut core_shift = order(cores);
    let mut cores = cores;
    let mut smt_shift = 0;
    let l1 = q.get(1, 0);
    if l1[3] & HT != 0 {
        let nproc_shift = order((l1[1] >> 16) & 0xff);
        if nproc_shift >= core_shift {
            smt_shift = nproc_shift - core_shift;
        }
        core_shift += smt_shift;
        cores <<= smt_shift;
    }
    s.set(SMT, smt_shift, 1 << smt_shift);
    s.set(CORE, core_shift, cores);
}

/// `cacheinfo_amd_init_llc_id()`.
fn amd_llc(q: &Cpuid, family: u32, model: u32, apic: u32, node_id: u32) -> Option<u32> {
    if q.get(0x8000_0006, 0)[3] == 0 {
        return None; // no L3
    }
    if family < 0x17 {
        return Some(node_id);
    }
    if family == 0x17 && model <= 0x1f {
        return Some(apic >> 3);
    }
    // Newer families: the last 0x8000_001D cache leaf and its sharing count.
    let leaves = (0..64)
        .take_while(|&i| q.get(0x8000_001d, i)[0] & 0x1f != 0)
        .count() as u32;
    if leaves == 0 {
        return None;
    }
    let eax = q.get(0x8000_001d, leaves - 1)[0];
    Some(apic >> order(((eax >> 14) & 0xfff) + 1))
}

/// `cpu_parse_topology_amd()` (AMD and Hygon), with `legacy_set_llc()`.
fn parse_amd(q: &Cpuid, s: &mut Scan, vendor: LinuxVendor, family: u32, model: u32, apic: u32) {
    s.amd_nodes_per_pkg = 1;
    let e1 = q.get(0x8000_0001, 0)[2];
    let topoext = e1 & TOPOEXT != 0;
    let has_topoext = topoext && parse_ext(q, s);
    // parse_topology_amd()
    let parsed = has_topoext || parse_8000_0008(q, s);
    if parsed {
        if topoext {
            // parse_8000_001e()
            let r = q.get(0x8000_001e, 0);
            s.initial_apicid = r[0];
            if !has_topoext {
                let n = ((r[1] >> 8) & 0xff) + 1;
                s.update(SMT, order(n), n);
            }
            let node_id = r[2] & 0xff;
            s.amd_nodes_per_pkg = ((r[2] >> 8) & 7) + 1;
            s.amd_node_id = node_id;
            if vendor == LinuxVendor::Amd {
                if family == 0x15 {
                    s.cu_id = Some(r[1] & 0xff);
                }
                s.llc_id = amd_llc(q, family, model, apic, node_id);
            } else {
                let hypervisor = q.get(1, 0)[2] & HYPERVISOR != 0;
                if !hypervisor && model <= 3 {
                    let n = s.ncpus[CORE];
                    s.set(CORE, 6, n);
                }
                if q.get(0x8000_0006, 0)[3] != 0 {
                    s.llc_id = Some(apic >> 3);
                }
            }
        } else if e1 & NODEID_MSR != 0 {
            // parse_fam10h_node_id(): MSR_FAM10H_NODE_ID reads 0 under KVM.
            s.amd_node_id = 0;
            s.llc_id = Some(0);
        }
    }
    if s.llc_id.is_none() {
        s.llc_id = Some(s.initial_apicid >> s.shifts[CORE]);
    }
}

/// `parse_8000_0008()`.
fn parse_8000_0008(q: &Cpuid, s: &mut Scan) -> bool {
    if q.max_ext < 0x8000_0008 {
        return false;
    }
    let ecx = q.get(0x8000_0008, 0)[2];
    let mut sft = (ecx >> 12) & 0xf;
    if sft == 0 {
        sft = order((ecx & 0xff) + 1);
    }
    s.update(SMT, 0, 1);
    s.set(CORE, sft, (ecx & 0xff) + 1);
    true
}

/// `intel_cacheinfo_0x4()` and `intel_cacheinfo_done()`: the L3 (else L2) id from leaf 4,
/// else the package id.
fn intel_llc(q: &Cpuid, apic: u32) -> Option<u32> {
    if q.max_basic < 4 {
        return None;
    }
    let (mut l2, mut l3) = (None, None);
    for i in 0..64 {
        let eax = q.get(4, i)[0];
        if eax & 0x1f == 0 {
            break;
        }
        let msb = order(((eax >> 14) & 0xfff) + 1);
        let id = apic & !((1u32 << msb) - 1);
        match (eax >> 5) & 7 {
            2 => l2 = Some(id),
            3 => l3 = Some(id),
            _ => {}
        }
    }
    l3.or(l2)
}

/// Linux's topology of the CPU whose CPUID is `cpuid` (absent leaves read as zeros) and
/// whose local APIC id is `apic` (`read_apic_id()`, the KVM vCPU id).
pub fn derive(cpuid: &dyn Fn(u32, u32) -> [u32; 4], apic: u32) -> Result<LinuxCpu, String> {
    let l0 = cpuid(0, 0);
    let vendor = match (l0[1], l0[3], l0[2]) {
        (0x756e_6547, 0x4965_6e69, 0x6c65_746e) => LinuxVendor::Intel,
        (0x6874_7541, 0x6974_6e65, 0x444d_4163) => LinuxVendor::Amd,
        (0x6f67_7948, 0x6e65_476e, 0x656e_6975) => LinuxVendor::Hygon,
        _ => {
            return Err(format!(
                "vendor {:#x?} is not Intel, AMD or Hygon",
                &l0[1..]
            ))
        }
    };
    let ext = cpuid(0x8000_0000, 0)[0];
    let q = Cpuid {
        f: cpuid,
        max_basic: l0[0],
        max_ext: if ext >= 0x8000_0000 { ext } else { 0 },
    };
    if q.max_basic < 1 {
        return Err("max basic leaf is 0: Linux fakes a one-CPU topology".into());
    }
    let l1 = q.get(1, 0);
    let (family, model) = family_model(l1[0]);
    let mut s = Scan {
        shifts: [0; DOMAINS],
        ncpus: [0; DOMAINS],
        initial_apicid: l1[1] >> 24,
        amd_nodes_per_pkg: 1,
        amd_node_id: 0,
        cu_id: None,
        llc_id: None,
    };
    // fake_topology() presets.
    s.set(SMT, 0, 1);
    s.set(CORE, 0, 1);
    match vendor {
        LinuxVendor::Intel => {
            if !parse_ext(&q, &mut s) {
                parse_legacy(&q, &mut s);
            }
        }
        LinuxVendor::Amd | LinuxVendor::Hygon => {
            parse_amd(&q, &mut s, vendor, family, model, apic);
        }
    }
    // topo_set_ids()
    let pkg_id = apic >> s.shifts[PKG - 1];
    let die_id = apic >> s.shifts[DIE - 1];
    let pkg_mask = 1u32.checked_shl(s.shifts[PKG]).map_or(u32::MAX, |v| v - 1);
    let mut core_id = (apic & pkg_mask) >> s.shifts[SMT];
    if vendor == LinuxVendor::Amd && family < 0x17 && s.amd_nodes_per_pkg > 1 {
        let per_node = s.ncpus[CORE] / s.amd_nodes_per_pkg;
        if per_node > 0 {
            core_id %= per_node;
        }
    }
    let llc_id = match vendor {
        // intel_cacheinfo_done(): no leaf-4 LLC means the package.
        LinuxVendor::Intel => intel_llc(&q, apic).or(Some(pkg_id)),
        _ => s.llc_id,
    };
    Ok(LinuxCpu {
        vendor,
        family,
        model,
        apic,
        pkg_id,
        die_id,
        core_id,
        amd_node_id: s.amd_node_id,
        amd_nodes_per_pkg: s.amd_nodes_per_pkg,
        cu_id: s.cu_id,
        llc_id,
        topoext: q.get(0x8000_0001, 0)[2] & TOPOEXT != 0,
        smt_shift: s.shifts[SMT],
    })
}

/// The sibling structure Linux builds over all CPUs (`set_cpu_sibling_map()`): for each
/// CPU, the index of its core (SMT sibling group) and of its LLC (`cpu_llc_shared_mask`,
/// which is the sysfs L3 `shared_cpu_map` on AMD and the scheduler's MC domain
/// everywhere), both numbered in order of first appearance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Siblings {
    pub core_of: Vec<usize>,
    pub llc_of: Vec<usize>,
}

impl Siblings {
    /// (LLCs, the most cores in one LLC, the most threads in one core), as a reader of
    /// sysfs would count them.
    pub fn counts(&self) -> (u32, u32, u32) {
        let mut cores_in_llc: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
        let mut threads: BTreeMap<usize, u32> = BTreeMap::new();
        for (&core, &llc) in self.core_of.iter().zip(&self.llc_of) {
            cores_in_llc.entry(llc).or_default().insert(core);
            *threads.entry(core).or_default() += 1;
        }
        let c = cores_in_llc.values().map(|s| s.len()).max().unwrap_or(0);
        let t = threads.values().copied().max().unwrap_or(0);
        (cores_in_llc.len() as u32, c as u32, t)
    }

    /// `{n}n{l}l{c}c{t}t`, with `nodes[i]` the NUMA node of CPU i.
    pub fn label(&self, nodes: &[u32]) -> String {
        let n = nodes.iter().collect::<BTreeSet<_>>().len();
        let (l, c, t) = self.counts();
        format!("{n}n{l}l{c}c{t}t")
    }
}

/// Runs `match_smt()` and `match_llc()` over every pair of CPUs. `nodes[i]` is CPU i's
/// NUMA node (from SRAT): `topology_sane()` refuses to link CPUs of different nodes.
pub fn siblings(cpus: &[LinuxCpu], nodes: &[u32]) -> Siblings {
    let n = cpus.len();
    // topology_init_possible_cpus(): __max_threads_per_core from the APIC ids.
    let smt_units = |c: &LinuxCpu| c.apic >> c.smt_shift;
    let cores: BTreeSet<u32> = cpus.iter().map(smt_units).collect();
    let has_smt = !cores.is_empty() && n.div_ceil(cores.len()) > 1;
    let has_mp = has_smt || cores.len() > 1;
    let same_node = |a: usize, b: usize| nodes.get(a) == nodes.get(b);
    let match_smt = |a: usize, b: usize| {
        let (c, o) = (&cpus[a], &cpus[b]);
        let linked = if c.topoext {
            c.pkg_id == o.pkg_id
                && c.die_id == o.die_id
                && c.amd_node_id == o.amd_node_id
                && c.llc_id == o.llc_id
                && (c.core_id == o.core_id || (c.cu_id.is_some() && c.cu_id == o.cu_id))
        } else {
            c.pkg_id == o.pkg_id && c.die_id == o.die_id && c.core_id == o.core_id
        };
        linked && same_node(a, b)
    };
    let match_llc = |a: usize, b: usize| {
        cpus[a].llc_id.is_some() && cpus[a].llc_id == cpus[b].llc_id && same_node(a, b)
    };
    let group = |linked: &dyn Fn(usize, usize) -> bool| -> Vec<usize> {
        let mut of = vec![usize::MAX; n];
        let mut next = 0;
        for a in 0..n {
            if of[a] != usize::MAX {
                continue;
            }
            of[a] = next;
            for (b, g) in of.iter_mut().enumerate().skip(a + 1) {
                if *g == usize::MAX && linked(a, b) {
                    *g = next;
                }
            }
            next += 1;
        }
        of
    };
    Siblings {
        core_of: group(&|a, b| has_smt && match_smt(a, b)),
        llc_of: group(&|a, b| has_mp && match_llc(a, b)),
    }
}
