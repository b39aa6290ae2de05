//! The declared CPU topology `{n}n{l}l{c}c{t}t`: NUMA nodes, LLCs in total, cores per LLC,
//! threads per core. Shared by the VMM, both engines, the wire, the guest and test
//! authors; CPU numbering is thread-fastest, then core, then LLC, and LLCs are spread
//! evenly over NUMA nodes. [`TopoSize`] is the part of a topology a scenario is checked
//! against (also what a guest sees). Pure code; host CPU affinity is in [`host`] behind
//! the `host` feature.
//!
//! ```
//! use ktstr_topology::{TopoSize, Topology};
//!
//! let t: Topology = "2n4l2c2t".parse().unwrap();
//! assert_eq!(t.vcpus(), 16);
//! assert_eq!(t.size(), TopoSize::new(16, 4, 2));
//! assert_eq!(t.to_string(), "2n4l2c2t");
//! ```

use std::fmt;
use std::str::FromStr;

#[cfg(feature = "host")]
pub mod host;

/// A VM's CPU topology. Always valid once constructed (see [`Topology::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Topology {
    numa_nodes: u32,
    llcs: u32,
    cores_per_llc: u32,
    threads_per_core: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    #[error("topology dimension `{0}` must be at least 1")]
    Zero(&'static str),
    #[error("{llcs} LLCs cannot be spread evenly over {nodes} NUMA nodes (llcs must be a multiple of numa_nodes)")]
    UnevenLlcs { llcs: u32, nodes: u32 },
    #[error("topology has {0} vCPUs; at most {MAX_VCPUS} are supported")]
    TooManyCpus(u64),
    #[error("cannot parse topology `{0}`: expected `{{n}}n{{l}}l{{c}}c{{t}}t` (e.g. 1n2l4c1t) or `N,L,C,T` (e.g. 1,2,4,1)")]
    Syntax(String),
}

/// Upper bound on vCPUs (x2APIC ids and ACPI tables are sized for it).
pub const MAX_VCPUS: u64 = 1024;

impl Topology {
    pub fn new(
        numa_nodes: u32,
        llcs: u32,
        cores_per_llc: u32,
        threads_per_core: u32,
    ) -> Result<Self, TopologyError> {
        for (name, v) in [
            ("numa_nodes", numa_nodes),
            ("llcs", llcs),
            ("cores", cores_per_llc),
            ("threads", threads_per_core),
        ] {
            if v == 0 {
                return Err(TopologyError::Zero(name));
            }
        }
        if !llcs.is_multiple_of(numa_nodes) {
            return Err(TopologyError::UnevenLlcs {
                llcs,
                nodes: numa_nodes,
            });
        }
        let total = u64::from(llcs) * u64::from(cores_per_llc) * u64::from(threads_per_core);
        if total > MAX_VCPUS {
            return Err(TopologyError::TooManyCpus(total));
        }
        Ok(Self {
            numa_nodes,
            llcs,
            cores_per_llc,
            threads_per_core,
        })
    }

    pub fn numa_nodes(&self) -> u32 {
        self.numa_nodes
    }
    pub fn llcs(&self) -> u32 {
        self.llcs
    }
    pub fn cores_per_llc(&self) -> u32 {
        self.cores_per_llc
    }
    pub fn threads_per_core(&self) -> u32 {
        self.threads_per_core
    }
    pub fn llcs_per_node(&self) -> u32 {
        self.llcs / self.numa_nodes
    }
    /// Total vCPUs.
    pub fn vcpus(&self) -> u32 {
        self.llcs * self.cores_per_llc * self.threads_per_core
    }
    /// Total cores (all LLCs).
    pub fn cores(&self) -> u32 {
        self.llcs * self.cores_per_llc
    }

    /// Where CPU `cpu` sits: (node, llc, core within LLC, thread within core).
    pub fn place(&self, cpu: u32) -> CpuPlace {
        let thread = cpu % self.threads_per_core;
        let core = (cpu / self.threads_per_core) % self.cores_per_llc;
        let llc = cpu / (self.threads_per_core * self.cores_per_llc);
        CpuPlace {
            node: llc / self.llcs_per_node(),
            llc,
            core,
            thread,
        }
    }

    /// The CPUs of one NUMA node, in order.
    pub fn node_cpus(&self, node: u32) -> std::ops::Range<u32> {
        let per_node = self.vcpus() / self.numa_nodes;
        node * per_node..(node + 1) * per_node
    }

    /// Bits of the x2APIC id used for the thread within a core: `ceil(log2(threads))`.
    pub fn thread_bits(&self) -> u32 {
        ceil_log2(self.threads_per_core)
    }
    /// Bits of the x2APIC id used for the core within an LLC: `ceil(log2(cores_per_llc))`.
    pub fn core_bits(&self) -> u32 {
        ceil_log2(self.cores_per_llc)
    }
    /// Bits of the x2APIC id used for the LLC: `ceil(log2(llcs))`.
    pub fn llc_bits(&self) -> u32 {
        ceil_log2(self.llcs)
    }
    /// Shift of the LLC field (= bits below it): threads and cores of one LLC share
    /// `apic >> llc_shift`.
    pub fn llc_shift(&self) -> u32 {
        self.thread_bits() + self.core_bits()
    }
    /// Width of the whole x2APIC id: the VM is one package.
    pub fn package_shift(&self) -> u32 {
        self.llc_shift() + self.llc_bits()
    }
    /// x2APIC id of CPU `cpu`, packed `llc << (core_bits + thread_bits) | core << thread_bits
    /// | thread`.
    pub fn apic_id(&self, cpu: u32) -> u32 {
        let p = self.place(cpu);
        (p.llc << self.llc_shift()) | (p.core << self.thread_bits()) | p.thread
    }
    /// Highest x2APIC id of any CPU.
    pub fn max_apic_id(&self) -> u32 {
        self.apic_id(self.vcpus() - 1)
    }
    /// ACPI SLIT distance between two NUMA nodes: 10 local, 20 remote.
    pub fn distance(&self, from: u32, to: u32) -> u8 {
        if from == to {
            10
        } else {
            20
        }
    }

    /// The CPUs of one LLC, in order.
    pub fn llc_cpus(&self, llc: u32) -> std::ops::Range<u32> {
        let per_llc = self.cores_per_llc * self.threads_per_core;
        llc * per_llc..(llc + 1) * per_llc
    }

    /// The topology's size: what a scenario is checked against.
    pub fn size(&self) -> TopoSize {
        TopoSize::new(self.vcpus(), self.llcs, self.numa_nodes)
    }
}

/// The size of a topology, as numbers: enough to check a scenario without booting. A
/// declared [`Topology`] has one ([`Topology::size`]); so has the topology a guest sees,
/// which need not be uniform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopoSize {
    /// Online CPUs (vCPUs).
    pub vcpus: u32,
    /// Last-level caches.
    pub llcs: u32,
    /// NUMA nodes.
    pub nodes: u32,
}

impl TopoSize {
    pub fn new(vcpus: u32, llcs: u32, nodes: u32) -> Self {
        Self { vcpus, llcs, nodes }
    }

    /// CPUs in one LLC, assuming LLCs of equal size (what `ktstr` topologies declare).
    pub fn cpus_per_llc(&self) -> u32 {
        self.vcpus / self.llcs.max(1)
    }

    /// CPUs in one NUMA node, assuming nodes of equal size.
    pub fn cpus_per_node(&self) -> u32 {
        self.vcpus / self.nodes.max(1)
    }
}

impl From<Topology> for TopoSize {
    fn from(t: Topology) -> Self {
        t.size()
    }
}

/// `ceil(log2(n))` for n >= 1.
pub fn ceil_log2(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// Position of one CPU in the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuPlace {
    pub node: u32,
    pub llc: u32,
    pub core: u32,
    pub thread: u32,
}

impl fmt::Display for Topology {
    /// The label used in sidecars and test names, e.g. `1n2l4c1t`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}n{}l{}c{}t",
            self.numa_nodes, self.llcs, self.cores_per_llc, self.threads_per_core
        )
    }
}

impl FromStr for Topology {
    type Err = TopologyError;

    /// Accepts the label form `1n2l4c1t` and the CLI form `1,2,4,1`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || TopologyError::Syntax(s.to_string());
        let s = s.trim();
        let nums: Vec<u32> = if s.contains(',') {
            s.split(',')
                .map(|p| p.trim().parse::<u32>().map_err(|_| syntax()))
                .collect::<Result<_, _>>()?
        } else {
            let mut out = Vec::with_capacity(4);
            let mut rest = s;
            for suffix in ['n', 'l', 'c', 't'] {
                let idx = rest.find(suffix).ok_or_else(syntax)?;
                out.push(rest[..idx].parse::<u32>().map_err(|_| syntax())?);
                rest = &rest[idx + 1..];
            }
            if !rest.is_empty() {
                return Err(syntax());
            }
            out
        };
        match nums.as_slice() {
            [n, l, c, t] => Topology::new(*n, *l, *c, *t),
            _ => Err(syntax()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms_and_round_trips_the_label() {
        let a: Topology = "2n4l2c2t".parse().unwrap();
        let b: Topology = "2,4,2,2".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "2n4l2c2t");
        assert_eq!(a.vcpus(), 16);
        assert_eq!(a.llcs_per_node(), 2);
    }

    #[test]
    fn size_counts_cpus_llcs_and_nodes() {
        let t: Topology = "2n4l2c2t".parse().unwrap();
        let s = t.size();
        assert_eq!(s, TopoSize::new(16, 4, 2));
        assert_eq!((s.cpus_per_llc(), s.cpus_per_node()), (4, 8));
        assert_eq!(TopoSize::from(t), s);
        assert_eq!(TopoSize::new(0, 0, 0).cpus_per_llc(), 0);
    }

    #[test]
    fn rejects_bad_shapes() {
        assert_eq!(
            "1n0l1c1t".parse::<Topology>(),
            Err(TopologyError::Zero("llcs"))
        );
        assert!(matches!(
            "2n3l1c1t".parse::<Topology>(),
            Err(TopologyError::UnevenLlcs { .. })
        ));
        assert!(matches!(
            "1n2l".parse::<Topology>(),
            Err(TopologyError::Syntax(_))
        ));
        assert!(matches!(
            "1n2l4c1tx".parse::<Topology>(),
            Err(TopologyError::Syntax(_))
        ));
        assert!(matches!(
            "1,64,32,2".parse::<Topology>(),
            Err(TopologyError::TooManyCpus(4096))
        ));
    }

    #[test]
    fn places_cpus_thread_fastest() {
        let t: Topology = "2n4l2c2t".parse().unwrap();
        assert_eq!(
            t.place(0),
            CpuPlace {
                node: 0,
                llc: 0,
                core: 0,
                thread: 0
            }
        );
        assert_eq!(
            t.place(5),
            CpuPlace {
                node: 0,
                llc: 1,
                core: 0,
                thread: 1
            }
        );
        assert_eq!(
            t.place(15),
            CpuPlace {
                node: 1,
                llc: 3,
                core: 1,
                thread: 1
            }
        );
        assert_eq!(t.node_cpus(1), 8..16);
        assert_eq!(t.llc_cpus(2), 8..12);
    }

    #[test]
    fn packs_apic_ids_with_ceil_log2_fields() {
        assert_eq!(ceil_log2(1), 0);
        assert_eq!(ceil_log2(2), 1);
        assert_eq!(ceil_log2(3), 2);
        assert_eq!(ceil_log2(7), 3);
        assert_eq!(ceil_log2(8), 3);
        let t: Topology = "1n2l3c1t".parse().unwrap();
        let ids: Vec<u32> = (0..t.vcpus()).map(|c| t.apic_id(c)).collect();
        assert_eq!(ids, vec![0, 1, 2, 4, 5, 6]);
        let t: Topology = "1n7l2c1t".parse().unwrap();
        assert_eq!((t.thread_bits(), t.core_bits(), t.llc_bits()), (0, 1, 3));
        assert_eq!(t.apic_id(13), 13);
        assert_eq!(t.package_shift(), 4);
        let t: Topology = "2n4l2c2t".parse().unwrap();
        assert_eq!(t.apic_id(5), 0b0101);
        assert_eq!(t.max_apic_id(), 15);
        assert_eq!(t.distance(0, 1), 20);
        assert_eq!(t.distance(1, 1), 10);
    }
}
