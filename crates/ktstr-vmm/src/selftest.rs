//! The VMM self-test: boots the bare-metal guest (selftest-guest/, embedded at build time)
//! on every vCPU, drains what it reports through the SHM ring, and checks the topology the
//! guest observed (CPUID on each vCPU, ACPI MADT/SRAT/SLIT) against the declared one, plus
//! the reset exit, vCPU pinning and KVM stats.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use ktstr_wire::{init_header, Kind, Reader, SharedMem};
use serde::Serialize;
use serde_json::Value;

use crate::arch::x86_64::cpuid;
use crate::arch::x86_64::layout::RamLayout;
use crate::stats;
use crate::vcpu::ExitReason;
use crate::vm::{BzImageEntry, GuestKind, Vm, VmConfig, VmError, VmReport};
use ktstr_topology::Topology;

/// The self-test guest ELF, built by build.rs.
pub const SELFTEST_GUEST_ELF: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/selftest-guest.elf"));

/// SHM region size for the self-test (ring of 1 MiB).
const SHM_SIZE: u64 = 2 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SelftestError {
    #[error("writing the self-test guest to {path}: {source}")]
    WriteGuest {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error("SHM region: {0}")]
    Wire(#[from] ktstr_wire::WireError),
}

/// How to run the self-test.
#[derive(Debug, Clone)]
pub struct SelftestOptions {
    pub topology: Topology,
    pub cpu_budget: Option<usize>,
    /// Where the guest ELF and the console log go.
    pub work_dir: PathBuf,
    /// Watchdog deadline for the whole run.
    pub deadline: Duration,
}

/// One pass/fail check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub pass: bool,
    pub detail: String,
}

/// The topology the guest saw, decoded the way Linux decodes it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Observed {
    pub label: String,
    pub numa_nodes: u32,
    pub llcs: u32,
    pub cores_per_llc: u32,
    pub threads_per_core: u32,
    /// x2APIC id per vCPU index (leaf 0xB EDX).
    pub apic_ids: Vec<u32>,
    /// Linux's LLC (`cpu_llc_shared_mask` group) per vCPU index, numbered from 0.
    pub llc_of: Vec<usize>,
    /// CPU family and model as Linux reads them from leaf 0x1 of vCPU 0.
    pub family: u32,
    pub model: u32,
}

/// Everything the self-test found.
#[derive(Debug, Clone, Serialize)]
pub struct SelftestReport {
    pub topology: String,
    pub observed: Option<Observed>,
    pub vendor: String,
    pub checks: Vec<Check>,
    pub passed: bool,
    pub frames: u64,
    pub backpressure_waits: u64,
    pub wire_error: Option<String>,
    pub kvm_totals: BTreeMap<String, u64>,
    pub console_log: PathBuf,
    pub vm: VmReport,
}

/// What the guest sent.
#[derive(Debug, Default)]
pub struct GuestData {
    /// CPUID per vCPU index: (leaf, subleaf) -> [eax, ebx, ecx, edx].
    pub cpus: BTreeMap<u32, BTreeMap<(u32, u32), [u32; 4]>>,
    pub acpi: Option<Value>,
    pub done: Option<Value>,
    pub bad_payloads: Vec<String>,
}

impl GuestData {
    /// Takes one kind-3 payload.
    pub fn add(&mut self, payload: &[u8]) {
        let v: Value = match serde_json::from_slice(payload) {
            Ok(v) => v,
            Err(e) => {
                self.bad_payloads.push(format!("not JSON: {e}"));
                return;
            }
        };
        match v.get("t").and_then(Value::as_str) {
            Some("cpu") => {
                let idx = v.get("i").and_then(Value::as_u64);
                let leaves = v.get("l").and_then(Value::as_array);
                let (Some(idx), Some(leaves)) = (idx, leaves) else {
                    self.bad_payloads.push("cpu frame without i/l".into());
                    return;
                };
                let mut m = BTreeMap::new();
                for l in leaves {
                    let n: Vec<u32> = l
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_u64())
                                .map(|x| x as u32)
                                .collect()
                        })
                        .unwrap_or_default();
                    if let [leaf, sub, a, b, c, d] = n[..] {
                        m.insert((leaf, sub), [a, b, c, d]);
                    }
                }
                self.cpus.insert(idx as u32, m);
            }
            Some("acpi") => self.acpi = Some(v),
            Some("done") => self.done = Some(v),
            other => self
                .bad_payloads
                .push(format!("unknown frame type {other:?}")),
        }
    }
}

fn nums(v: Option<&Value>) -> Vec<Vec<u64>> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| {
                    e.as_array()
                        .map(|x| x.iter().filter_map(Value::as_u64).collect())
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn check(checks: &mut Vec<Check>, name: &'static str, pass: bool, detail: String) {
    checks.push(Check { name, pass, detail });
}

/// Decodes the topology Linux will conclude from the CPUID values each vCPU read and the
/// SRAT, by running the model of Linux's derivation ([`cpuid::linux`]: vendor and
/// family/model branches, leaves 0xB/0x1F/0x4/0x8000_001D/0x8000_001E, sibling and LLC
/// matching). Each vCPU's APIC id is its leaf 0xB EDX (checked against the MADT elsewhere).
pub fn observe(data: &GuestData) -> Option<Observed> {
    let srat: BTreeMap<u64, u64> = nums(data.acpi.as_ref()?.get("srat_cpu"))
        .iter()
        .filter_map(|e| Some((*e.first()?, *e.get(1)?)))
        .collect();
    let mut cpus = Vec::new();
    let mut nodes = Vec::new();
    for leaves in data.cpus.values() {
        let apic = leaves.get(&(0xb, 0))?[3];
        let read = |leaf: u32, sub: u32| leaves.get(&(leaf, sub)).copied().unwrap_or([0; 4]);
        cpus.push(cpuid::linux::derive(&read, apic).ok()?);
        nodes.push(u32::try_from(*srat.get(&u64::from(apic))?).ok()?);
    }
    let first = cpus.first()?;
    let (family, model) = (first.family, first.model);
    let sib = cpuid::linux::siblings(&cpus, &nodes);
    let (llcs, cores, threads) = sib.counts();
    let numa_nodes = nodes.iter().collect::<BTreeSet<_>>().len() as u32;
    Some(Observed {
        label: sib.label(&nodes),
        numa_nodes,
        llcs,
        cores_per_llc: cores,
        threads_per_core: threads,
        apic_ids: cpus.iter().map(|c| c.apic).collect(),
        llc_of: sib.llc_of,
        family,
        model,
    })
}

/// Compares what the guest reported with the declared topology.
pub fn check_guest(
    topo: &Topology,
    data: &GuestData,
    memory: u64,
) -> (Vec<Check>, Option<Observed>, String) {
    let mut c = Vec::new();
    let n = topo.vcpus();
    let vendor_regs = data.cpus.get(&0).and_then(|l| l.get(&(0, 0))).copied();
    let amd = matches!(
        vendor_regs,
        Some([_, 0x6874_7541, 0x444d_4163, 0x6974_6e65])
    );
    let vendor = match vendor_regs {
        Some([_, b, cx, d]) => {
            let mut s = Vec::new();
            for r in [b, d, cx] {
                s.extend_from_slice(&r.to_le_bytes());
            }
            String::from_utf8_lossy(&s).into_owned()
        }
        None => "unknown".into(),
    };

    check_reports(&mut c, n, data);
    check_apic_ids(&mut c, topo, data, amd);
    check_leaf_b(&mut c, topo, data);
    if amd {
        check_amd_leaves(&mut c, topo, data);
    }
    let observed = check_linux_derivation(&mut c, topo, data);
    check_acpi(&mut c, topo, data, memory);
    (c, observed, vendor)
}

/// Every vCPU ran and reported, and what it sent decodes.
fn check_reports(c: &mut Vec<Check>, n: u32, data: &GuestData) {
    let done = data.done.as_ref();
    let arrived = done.and_then(|d| d.get("arrived")).and_then(Value::as_u64);
    let timed_out = done
        .and_then(|d| d.get("timed_out"))
        .and_then(Value::as_bool);
    let idx: Vec<u32> = data.cpus.keys().copied().collect();
    check(
        c,
        "every vCPU ran and reported",
        idx == (0..n).collect::<Vec<_>>()
            && arrived == Some(u64::from(n))
            && timed_out == Some(false),
        format!(
            "{} of {n} vCPUs reported (arrived {arrived:?}, timed_out {timed_out:?})",
            idx.len()
        ),
    );
    check(
        c,
        "guest payloads decode",
        data.bad_payloads.is_empty() && done.is_some(),
        if data.bad_payloads.is_empty() {
            format!(
                "done frame {}",
                if done.is_some() {
                    "received"
                } else {
                    "missing"
                }
            )
        } else {
            data.bad_payloads.join("; ")
        },
    );
}

/// The x2APIC id of every vCPU, as three CPUID leaves report it.
fn check_apic_ids(c: &mut Vec<Check>, topo: &Topology, data: &GuestData, amd: bool) {
    let mut bad = Vec::new();
    for (i, l) in &data.cpus {
        let want = topo.apic_id(*i);
        let b = l.get(&(0xb, 0)).map(|r| r[3]);
        let l1 = l.get(&(1, 0)).map(|r| r[1] >> 24);
        let e = l.get(&(0x8000_001e, 0)).map(|r| r[0]);
        if b != Some(want) || l1 != Some(want & 0xff) || (amd && e != Some(want)) {
            bad.push(format!(
                "vCPU {i}: want {want}, 0xB {b:?} 0x1 {l1:?} 0x8000001E {e:?}"
            ));
        }
    }
    check(
        c,
        "x2APIC ids (leaves 0x1, 0xB, 0x8000_001E)",
        bad.is_empty() && !data.cpus.is_empty(),
        if bad.is_empty() {
            format!(
                "{} ids packed llc<<{}|core<<{}|thread",
                data.cpus.len(),
                topo.llc_shift(),
                topo.thread_bits()
            )
        } else {
            bad.join("; ")
        },
    );
}

/// Leaf 0xB: the SMT and core levels.
fn check_leaf_b(c: &mut Vec<Check>, topo: &Topology, data: &GuestData) {
    let n = topo.vcpus();
    let mut bad = Vec::new();
    for (i, l) in &data.cpus {
        let s0 = l.get(&(0xb, 0)).copied().unwrap_or_default();
        let s1 = l.get(&(0xb, 1)).copied().unwrap_or_default();
        let ok = s0[0] & 0x1f == topo.thread_bits()
            && s0[1] & 0xffff == topo.threads_per_core()
            && (s0[2] >> 8) & 0xff == 1
            && s1[0] & 0x1f == topo.package_shift()
            && s1[1] & 0xffff == n
            && (s1[2] >> 8) & 0xff == 2;
        if !ok {
            bad.push(format!("vCPU {i}: 0xB.0 {s0:x?} 0xB.1 {s1:x?}"));
        }
    }
    check(
        c,
        "leaf 0xB SMT/core levels",
        bad.is_empty(),
        if bad.is_empty() {
            format!(
                "SMT shift {}, package shift {}, {n} CPUs",
                topo.thread_bits(),
                topo.package_shift()
            )
        } else {
            bad.join("; ")
        },
    );
}

/// AMD's topology leaves: TopoExt, 0x8000_001E, 0x8000_0008.
fn check_amd_leaves(c: &mut Vec<Check>, topo: &Topology, data: &GuestData) {
    let n = topo.vcpus();
    let mut bad = Vec::new();
    for (i, l) in &data.cpus {
        let p = topo.place(*i);
        let apic = topo.apic_id(*i);
        let e1 = l.get(&(0x8000_0001, 0)).map(|r| r[2] >> 22 & 1);
        let e = l.get(&(0x8000_001e, 0)).copied().unwrap_or_default();
        let e8 = l.get(&(0x8000_0008, 0)).map(|r| r[2]).unwrap_or_default();
        let ok = e1 == Some(1)
            && (e[1] >> 8) & 0xff == topo.threads_per_core() - 1
            && e[1] & 0xff == (apic >> topo.thread_bits()) & 0xff
            && e[2] & 0xff == p.node
            && e8 & 0xff == (n - 1).min(255)
            && (e8 >> 12) & 0xf == topo.package_shift();
        if !ok {
            bad.push(format!(
                "vCPU {i}: TopoExt {e1:?} 0x8000001E {e:x?} 0x80000008.ecx {e8:#x}"
            ));
        }
    }
    check(
        c,
        "AMD leaves (TopoExt, 0x8000_001E, 0x8000_0008)",
        bad.is_empty(),
        if bad.is_empty() {
            "consistent on every vCPU".into()
        } else {
            bad.join("; ")
        },
    );
}

/// The topology Linux derives from what the guest saw equals the declared one.
fn check_linux_derivation(
    c: &mut Vec<Check>,
    topo: &Topology,
    data: &GuestData,
) -> Option<Observed> {
    let n = topo.vcpus();
    let observed = observe(data);
    let want_label = topo.to_string();
    let want_llc: Vec<usize> = (0..n).map(|i| topo.place(i).llc as usize).collect();
    check(
        c,
        "topology Linux derives = declared",
        observed
            .as_ref()
            .is_some_and(|o| o.label == want_label && o.llc_of == want_llc),
        match &observed {
            Some(o) => format!(
                "declared {want_label}, Linux would see {} (family {:#x} model {:#x}), \
                 LLC per vCPU {:?}",
                o.label, o.family, o.model, o.llc_of
            ),
            None => format!("declared {want_label}, observed (undecodable)"),
        },
    );

    observed
}

/// The ACPI tables: present with valid checksums, MADT, SRAT (CPUs and memory), SLIT.
fn check_acpi(c: &mut Vec<Check>, topo: &Topology, data: &GuestData, memory: u64) {
    let n = topo.vcpus();
    let acpi = data.acpi.as_ref();
    let tables = acpi.and_then(|a| a.get("tables")).and_then(Value::as_array);
    let mut sigs = Vec::new();
    let mut bad_sum = Vec::new();
    for t in tables.into_iter().flatten() {
        let sig = t.get(0).and_then(Value::as_str).unwrap_or("?").to_string();
        if t.get(2).and_then(Value::as_bool) != Some(true) {
            bad_sum.push(sig.clone());
        }
        sigs.push(sig);
    }
    let rsdp_ok = acpi.and_then(|a| a.get("rsdp_ok")).and_then(Value::as_bool) == Some(true);
    let all_there = ["XSDT", "FACP", "DSDT", "APIC", "SRAT", "SLIT"]
        .iter()
        .all(|s| sigs.iter().any(|x| x == s));
    check(
        c,
        "ACPI tables found and checksums valid",
        rsdp_ok && all_there && bad_sum.is_empty(),
        format!("RSDP ok {rsdp_ok}, tables {sigs:?}, bad checksums {bad_sum:?}"),
    );

    let madt = nums(acpi.and_then(|a| a.get("madt")));
    let mut cpus: Vec<(u64, u64)> = madt
        .iter()
        .filter(|e| matches!(e.first(), Some(0) | Some(9)) && e.get(3).is_some_and(|f| f & 1 == 1))
        .map(|e| (e[1], e[2]))
        .collect();
    cpus.sort();
    let want: Vec<(u64, u64)> = (0..n)
        .map(|i| (u64::from(i), u64::from(topo.apic_id(i))))
        .collect();
    let ioapics = madt.iter().filter(|e| e.first() == Some(&1)).count();
    check(
        c,
        "MADT lists every vCPU with its APIC id",
        cpus == want && ioapics == 1,
        format!(
            "{} enabled CPU entries (want {n}), {ioapics} IOAPIC",
            cpus.len()
        ),
    );

    let srat_cpu = nums(acpi.and_then(|a| a.get("srat_cpu")));
    let got: BTreeMap<u64, u64> = srat_cpu
        .iter()
        .filter_map(|e| Some((*e.first()?, *e.get(1)?)))
        .collect();
    let want: BTreeMap<u64, u64> = (0..n)
        .map(|i| (u64::from(topo.apic_id(i)), u64::from(topo.place(i).node)))
        .collect();
    check(
        c,
        "SRAT puts every vCPU in its NUMA node",
        got == want,
        format!(
            "{} CPU affinity entries over {} domains",
            got.len(),
            got.values().collect::<BTreeSet<_>>().len()
        ),
    );

    let srat_mem = nums(acpi.and_then(|a| a.get("srat_mem")));
    let total: u64 = srat_mem.iter().filter_map(|e| e.get(2)).sum();
    let mem_nodes: BTreeSet<u64> = srat_mem.iter().filter_map(|e| e.first().copied()).collect();
    check(
        c,
        "SRAT memory covers RAM, one range set per node",
        total == memory && mem_nodes == (0..u64::from(topo.numa_nodes())).collect(),
        format!(
            "{} ranges, {total} bytes (RAM {memory}), nodes {mem_nodes:?}",
            srat_mem.len()
        ),
    );

    let slit: Vec<u64> = acpi
        .and_then(|a| a.get("slit"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let nn = topo.numa_nodes();
    let want: Vec<u64> = (0..nn)
        .flat_map(|i| (0..nn).map(move |j| (i, j)))
        .map(|(i, j)| u64::from(topo.distance(i, j)))
        .collect();
    check(c, "SLIT distances", slit == want, format!("{slit:?}"));
}

/// Runs the self-test once.
pub fn run(opts: &SelftestOptions) -> Result<SelftestReport, SelftestError> {
    std::fs::create_dir_all(&opts.work_dir).map_err(|source| SelftestError::WriteGuest {
        path: opts.work_dir.clone(),
        source,
    })?;
    let elf = opts.work_dir.join("selftest-guest.elf");
    std::fs::write(&elf, SELFTEST_GUEST_ELF).map_err(|source| SelftestError::WriteGuest {
        path: elf.clone(),
        source,
    })?;
    let console_log = opts.work_dir.join("console.log");
    let memory_mib = 128;
    let layout = RamLayout::new(memory_mib << 20, SHM_SIZE).map_err(VmError::from)?;
    let cfg = VmConfig {
        topology: opts.topology,
        memory_mib,
        cpu_budget: opts.cpu_budget,
        kernel: elf,
        initrd: None,
        cmdline: Vm::shm_cmdline_arg(&layout),
        shm_size: SHM_SIZE,
        serial_log: console_log.clone(),
        deadline: Some(opts.deadline),
        guest: GuestKind::BareMetal,
        bzimage_entry: BzImageEntry::HostDecompressed,
        cpuid_clear: Vec::new(),
    };
    let vm = Vm::create(cfg)?;
    let region = vm.shm_region()?;
    // SAFETY: the region stays mapped while `region` (which holds the guest memory) lives,
    // and both sides access it only with volatile/atomic operations.
    let shm = unsafe { SharedMem::from_raw(region.host_ptr(), region.len()) }?;
    let wire_layout = init_header(&shm)?;
    let mut reader = Reader::new(&shm, wire_layout);
    let running = vm.start()?;
    let mut data = GuestData::default();
    let mut frames = 0u64;
    let mut wire_error = None;
    let mut drain = |data: &mut GuestData, frames: &mut u64, wire_error: &mut Option<String>| {
        while wire_error.is_none() {
            match reader.next_frame() {
                Ok(Some(f)) => {
                    *frames += 1;
                    if f.kind == Kind::SELF_TEST {
                        data.add(&f.payload);
                    }
                }
                Ok(None) => break,
                Err(e) => *wire_error = Some(e.to_string()),
            }
        }
    };
    while !running.wait_timeout(Duration::from_millis(20)) {
        drain(&mut data, &mut frames, &mut wire_error);
    }
    let vm_report = running.wait();
    drain(&mut data, &mut frames, &mut wire_error);
    let backpressure_waits = reader.stats().backpressure_waits;
    drop(reader);
    drop(shm);
    drop(region);

    let (mut checks, observed, vendor) = check_guest(&opts.topology, &data, layout.total());
    check(
        &mut checks,
        "guest ended with the i8042 reset",
        matches!(vm_report.exit, ExitReason::Reset { vcpu: 0 }),
        vm_report.exit.to_string(),
    );
    check(
        &mut checks,
        "SHM ring frames valid",
        wire_error.is_none() && frames == u64::from(opts.topology.vcpus()) + 2,
        match &wire_error {
            Some(e) => e.clone(),
            None => format!("{frames} frames, {backpressure_waits} backpressure waits"),
        },
    );
    let pool: BTreeSet<usize> = vm_report.host_cpus.iter().copied().collect();
    let used: BTreeSet<usize> = vm_report
        .vcpu_threads
        .iter()
        .flat_map(|t| t.affinity.iter().copied())
        .collect();
    let pinned = vm_report.vcpu_threads.len() == vm_report.vcpus as usize
        && vm_report
            .vcpu_threads
            .iter()
            .all(|t| !t.affinity.is_empty() && t.affinity.iter().all(|c| pool.contains(c)))
        && used == pool
        && pool.len() == vm_report.cpu_budget;
    check(
        &mut checks,
        "vCPU threads pinned to the CPU budget",
        pinned,
        format!(
            "{} vCPUs on host CPUs {:?} (cpu_budget {}{})",
            vm_report.vcpus,
            vm_report.host_cpus,
            vm_report.cpu_budget,
            if vm_report.overcommit {
                ", overcommitted"
            } else {
                ""
            }
        ),
    );
    let stats_ok = vm_report.per_vcpu_stats.len() == vm_report.vcpus as usize
        && vm_report
            .per_vcpu_stats
            .iter()
            .all(|m| m.contains_key("exits"));
    let kvm_totals = stats::totals(&vm_report.per_vcpu_stats);
    check(
        &mut checks,
        "KVM stats read for every vCPU",
        stats_ok,
        format!(
            "{} vCPUs, {} counters each, exits total {}",
            vm_report.per_vcpu_stats.len(),
            vm_report
                .per_vcpu_stats
                .first()
                .map(|m| m.len())
                .unwrap_or(0),
            kvm_totals.get("exits").copied().unwrap_or(0)
        ),
    );
    let passed = checks.iter().all(|c| c.pass);
    Ok(SelftestReport {
        topology: opts.topology.to_string(),
        observed,
        vendor,
        checks,
        passed,
        frames,
        backpressure_waits,
        wire_error,
        kvm_totals,
        console_log,
        vm: vm_report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::{acpi, cpuid};
    use kvm_bindings::kvm_cpuid_entry2;

    /// Builds what a correct guest would report from our own CPUID and ACPI bytes, so the
    /// checker is tested without KVM.
    fn synthetic(topo: &Topology, memory: u64) -> GuestData {
        let base = vec![
            kvm_cpuid_entry2 {
                function: 0,
                eax: 0x10,
                ebx: 0x6874_7541,
                ecx: 0x444d_4163,
                edx: 0x6974_6e65,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 1,
                ..Default::default()
            },
        ];
        let mut d = GuestData::default();
        for i in 0..topo.vcpus() {
            let v = cpuid::for_vcpu(&base, topo, i).unwrap();
            let mut m = BTreeMap::new();
            for e in v {
                m.insert((e.function, e.index), [e.eax, e.ebx, e.ecx, e.edx]);
            }
            d.cpus.insert(i, m);
        }
        let layout = RamLayout::new(memory, SHM_SIZE).unwrap();
        let t = acpi::build(
            topo,
            &layout.node_ranges(topo.numa_nodes()),
            0xe0000,
            0x20000,
        )
        .unwrap();
        let madt: Vec<Vec<u64>> = (0..topo.vcpus())
            .map(|i| vec![0, u64::from(i), u64::from(topo.apic_id(i)), 1])
            .chain(std::iter::once(vec![1, 0, 0xfec0_0000, 0]))
            .collect();
        let srat_cpu: Vec<Vec<u64>> = (0..topo.vcpus())
            .map(|i| vec![u64::from(topo.apic_id(i)), u64::from(topo.place(i).node)])
            .collect();
        let srat_mem: Vec<Vec<u64>> = layout
            .node_ranges(topo.numa_nodes())
            .iter()
            .map(|r| vec![u64::from(r.0), r.1, r.2])
            .collect();
        let slit = t.table(b"SLIT").unwrap()[44..].to_vec();
        d.acpi = Some(serde_json::json!({
            "t": "acpi", "rsdp": 0xe0000, "rsdp_ok": true,
            "tables": [["XSDT", 68, true], ["FACP", 276, true], ["DSDT", 36, true],
                       ["APIC", 1, true], ["SRAT", 1, true], ["SLIT", 1, true]],
            "madt": madt, "srat_cpu": srat_cpu, "srat_mem": srat_mem, "slit": slit,
        }));
        d.done =
            Some(serde_json::json!({"t": "done", "arrived": topo.vcpus(), "timed_out": false}));
        d
    }

    #[test]
    fn a_correct_guest_passes_every_check() {
        for label in ["1n1l1c1t", "1n2l4c2t", "2n4l2c2t", "1n7l2c1t", "1n2l3c1t"] {
            let t: Topology = label.parse().unwrap();
            let d = synthetic(&t, 128 << 20);
            let (checks, observed, vendor) = check_guest(&t, &d, 128 << 20);
            assert_eq!(vendor, "AuthenticAMD");
            for c in &checks {
                assert!(c.pass, "{label}: {} failed: {}", c.name, c.detail);
            }
            assert_eq!(observed.unwrap().label, label);
        }
    }

    #[test]
    fn a_wrong_apic_id_or_missing_cpu_fails() {
        let t: Topology = "1n2l4c2t".parse().unwrap();
        let mut d = synthetic(&t, 128 << 20);
        d.cpus.get_mut(&3).unwrap().get_mut(&(0xb, 0)).unwrap()[3] = 99;
        let (checks, _, _) = check_guest(&t, &d, 128 << 20);
        let failed: Vec<&str> = checks.iter().filter(|c| !c.pass).map(|c| c.name).collect();
        assert!(
            failed.contains(&"x2APIC ids (leaves 0x1, 0xB, 0x8000_001E)"),
            "{failed:?}"
        );

        let mut d = synthetic(&t, 128 << 20);
        d.cpus.remove(&15);
        let (checks, _, _) = check_guest(&t, &d, 128 << 20);
        assert!(!checks[0].pass);
    }

    #[test]
    fn a_guest_whose_family_hides_the_llcs_fails() {
        // A pre-Zen AMD signature like that of qemu's TCG `-cpu max`, as the VMM used to pass it
        // through: Linux takes the node id as LLC id and merges the two LLCs.
        let t: Topology = "1n2l2c1t".parse().unwrap();
        let mut d = synthetic(&t, 128 << 20);
        for leaves in d.cpus.values_mut() {
            leaves.get_mut(&(1, 0)).unwrap()[0] = 0x0000_0663;
        }
        let (checks, observed, _) = check_guest(&t, &d, 128 << 20);
        let c = checks
            .iter()
            .find(|c| c.name == "topology Linux derives = declared")
            .unwrap();
        assert!(!c.pass, "{}", c.detail);
        let o = observed.unwrap();
        assert_eq!((o.label.as_str(), o.family, o.model), ("1n1l4c1t", 6, 6));
        assert_eq!(o.llc_of, [0, 0, 0, 0]);
    }

    #[test]
    fn decodes_guest_frames() {
        let mut d = GuestData::default();
        d.add(br#"{"t":"cpu","i":2,"l":[[11,0,1,2,256,5]]}"#);
        d.add(b"not json");
        d.add(br#"{"t":"done","arrived":1}"#);
        assert_eq!(d.cpus[&2][&(11, 0)], [1, 2, 256, 5]);
        assert_eq!(d.bad_payloads.len(), 1);
        assert!(d.done.is_some());
    }
}
