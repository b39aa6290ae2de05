//! Topology presets for gauntlet tests. A test declared with `gauntlet` gets one extra
//! variant, `gauntlet/{name}/{preset}`, for every preset its constraints admit (except
//! the preset equal to its own topology, which the base variant already covers).
//! Gauntlet variants are ignored by default: run them with
//! `cargo ktstr test -- --run-ignored all` (or `only`), and narrow with `-E`.
//!
//! | preset       | vCPUs | what it exercises |
//! |--------------|------:|-------------------|
//! | `1n1l2c1t`   |     2 | the smallest useful machine |
//! | `1n1l3c1t`   |     3 | an odd CPU count: halves do not split evenly |
//! | `1n1l4c1t`   |     4 | one LLC, a few cores |
//! | `1n1l2c2t`   |     4 | SMT siblings on one LLC |
//! | `1n2l2c1t`   |     4 | two LLCs (cross-LLC migration) |
//! | `2n2l2c1t`   |     4 | two NUMA nodes, one LLC each |
//! | `1n3l2c1t`   |     6 | an odd LLC count |
//! | `3n3l2c1t`   |     6 | three NUMA nodes: no power-of-two node split |
//! | `1n1l8c1t`   |     8 | one wide LLC |
//! | `1n2l4c1t`   |     8 | two LLCs of four |
//! | `1n4l2c1t`   |     8 | many small LLCs (CCX-like) |
//! | `1n2l2c2t`   |     8 | two LLCs with SMT |
//! | `1n1l4c2t`   |     8 | four SMT pairs sharing one LLC |
//! | `2n2l4c1t`   |     8 | NUMA, one LLC per node |
//! | `4n4l2c1t`   |     8 | four NUMA nodes, the smallest |
//! | `1n4l4c1t`   |    16 | four LLCs of four |
//! | `1n8l2c1t`   |    16 | eight two-core LLCs: LLC-aware placement at its busiest |
//! | `1n1l16c1t`  |    16 | one LLC of sixteen cores: the widest single LLC qemu-tcg runs |
//! | `2n4l2c2t`   |    16 | NUMA, two LLCs per node, SMT |
//! | `4n4l2c2t`   |    16 | four NUMA nodes with SMT: the widest NUMA shape qemu-tcg runs |
//! | `1n2l8c2t`   |    32 | two wide LLCs with SMT |
//! | `2n4l4c2t`   |    32 | NUMA, SMT, several LLCs per node |
//! | `2n8l4c1t`   |    32 | NUMA with many LLCs per node |
//! | `4n8l4c1t`   |    32 | four NUMA nodes, two LLCs each |
//! | `2n8l8c1t`   |    64 | a large two-socket server without SMT |
//! | `2n8l8c2t`   |   128 | a large two-socket server with SMT |
//! | `4n8l8c2t`   |   128 | a four-socket server with SMT |
//! | `4n16l6c2t`  |   192 | four nodes of four six-core SMT LLCs (EPYC-like CCDs) |
//! | `4n4l63c1t`  |   252 | the widest preset: four nodes of one 63-core LLC (highest APIC id 254, still xAPIC) |
//!
//! Under qemu TCG every vCPU is a host thread emulating a CPU, so on a small host the big
//! presets take minutes to boot; that is why gauntlet variants are opt-in. Presets of more
//! than 16 vCPUs run only on the kvm engine: under qemu-tcg they are skipped with the reason
//! (`execute::engine_skip_reason`).

use ktstr_topology::Topology;

use super::entry::Constraints;

/// One preset: a topology and why it is in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// The label, `{n}n{l}l{c}c{t}t`; also the preset's name in test names.
    pub label: &'static str,
    pub numa_nodes: u32,
    pub llcs: u32,
    pub cores: u32,
    pub threads: u32,
    pub about: &'static str,
}

macro_rules! preset {
    ($n:literal, $l:literal, $c:literal, $t:literal, $about:literal) => {
        Preset {
            label: concat!($n, "n", $l, "l", $c, "c", $t, "t"),
            numa_nodes: $n,
            llcs: $l,
            cores: $c,
            threads: $t,
            about: $about,
        }
    };
}

/// The presets, smallest first (the table in this module's docs).
pub const PRESETS: &[Preset] = &[
    preset!(1, 1, 2, 1, "the smallest useful machine"),
    preset!(1, 1, 3, 1, "an odd CPU count: halves do not split evenly"),
    preset!(1, 1, 4, 1, "one LLC, a few cores"),
    preset!(1, 1, 2, 2, "SMT siblings on one LLC"),
    preset!(1, 2, 2, 1, "two LLCs (cross-LLC migration)"),
    preset!(2, 2, 2, 1, "two NUMA nodes, one LLC each"),
    preset!(1, 3, 2, 1, "an odd LLC count"),
    preset!(3, 3, 2, 1, "three NUMA nodes: no power-of-two node split"),
    preset!(1, 1, 8, 1, "one wide LLC"),
    preset!(1, 2, 4, 1, "two LLCs of four"),
    preset!(1, 4, 2, 1, "many small LLCs (CCX-like)"),
    preset!(1, 2, 2, 2, "two LLCs with SMT"),
    preset!(1, 1, 4, 2, "four SMT pairs sharing one LLC"),
    preset!(2, 2, 4, 1, "NUMA, one LLC per node"),
    preset!(4, 4, 2, 1, "four NUMA nodes, the smallest"),
    preset!(1, 4, 4, 1, "four LLCs of four"),
    preset!(
        1,
        8,
        2,
        1,
        "eight two-core LLCs: LLC-aware placement at its busiest"
    ),
    preset!(
        1,
        1,
        16,
        1,
        "one LLC of sixteen cores: the widest single LLC qemu-tcg runs"
    ),
    preset!(2, 4, 2, 2, "NUMA, two LLCs per node, SMT"),
    preset!(
        4,
        4,
        2,
        2,
        "four NUMA nodes with SMT: the widest NUMA shape qemu-tcg runs"
    ),
    preset!(1, 2, 8, 2, "two wide LLCs with SMT"),
    preset!(2, 4, 4, 2, "NUMA, SMT, several LLCs per node"),
    preset!(2, 8, 4, 1, "NUMA with many LLCs per node"),
    preset!(4, 8, 4, 1, "four NUMA nodes, two LLCs each"),
    preset!(2, 8, 8, 1, "a large two-socket server without SMT"),
    preset!(2, 8, 8, 2, "a large two-socket server with SMT"),
    preset!(4, 8, 8, 2, "a four-socket server with SMT"),
    preset!(
        4,
        16,
        6,
        2,
        "four nodes of four six-core SMT LLCs (EPYC-like CCDs)"
    ),
    preset!(
        4,
        4,
        63,
        1,
        "the widest preset: four nodes of one 63-core LLC (highest APIC id 254, still xAPIC)"
    ),
];

impl Preset {
    pub fn topology(&self) -> Topology {
        Topology::new(self.numa_nodes, self.llcs, self.cores, self.threads)
            .expect("every preset is a valid topology (checked by a unit test)")
    }
}

/// The preset with this label.
pub fn find(label: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.label == label)
}

/// The presets a gauntlet test with `constraints` and base topology `base` runs on.
pub fn fitting(constraints: &Constraints, base: Option<&Topology>) -> Vec<&'static Preset> {
    PRESETS
        .iter()
        .filter(|p| {
            let t = p.topology();
            constraints.admits(&t) && Some(&t) != base
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_unique_sorted_and_span_the_range() {
        assert!(PRESETS.len() >= 12);
        let mut seen = std::collections::BTreeSet::new();
        let mut last = 0;
        for p in PRESETS {
            let t = p.topology();
            assert_eq!(t.to_string(), p.label, "label matches the shape");
            assert!(seen.insert(p.label), "duplicate preset {}", p.label);
            assert!(t.vcpus() >= last, "{} out of order", p.label);
            last = t.vcpus();
        }
        assert_eq!(PRESETS.first().unwrap().label, "1n1l2c1t");
        assert_eq!(PRESETS.last().unwrap().label, "4n4l63c1t");
        assert!(PRESETS.len() >= 25);
        assert!(PRESETS
            .iter()
            .all(|p| p.numa_nodes <= 4 && p.topology().vcpus() <= 252));
        assert!(PRESETS.iter().any(|p| p.threads > 1));
        assert!(PRESETS.iter().any(|p| p.numa_nodes > 1));
    }

    #[test]
    fn presets_wider_than_qemu_tcg_skip_there_with_the_reason_and_run_on_kvm() {
        use crate::engine::EngineKind;
        use crate::test_support::execute::{engine_skip_reason, QEMU_TCG_MAX_VCPUS};
        for p in PRESETS {
            let t = p.topology();
            let tcg = engine_skip_reason(EngineKind::QemuTcg, &t, 512, None);
            assert_eq!(tcg.is_some(), t.vcpus() > QEMU_TCG_MAX_VCPUS, "{}", p.label);
            if let Some(why) = tcg {
                assert!(why.contains(p.label) && why.contains("KVM"), "{why}");
            }
            assert_eq!(engine_skip_reason(EngineKind::Kvm, &t, 512, None), None);
        }
        assert!(PRESETS
            .iter()
            .any(|p| p.topology().vcpus() > QEMU_TCG_MAX_VCPUS));
    }

    #[test]
    fn the_docs_table_lists_every_preset() {
        let src = include_str!("presets.rs");
        for p in PRESETS {
            let row = format!("//! | `{}`", p.label);
            assert!(
                src.contains(&row),
                "preset {} missing from the table",
                p.label
            );
        }
    }

    #[test]
    fn fitting_applies_constraints_and_drops_the_base() {
        let base: Topology = "1n1l2c1t".parse().unwrap();
        let all = fitting(&Constraints::ANY, Some(&base));
        assert_eq!(all.len(), PRESETS.len() - 1);
        assert!(all.iter().all(|p| p.label != "1n1l2c1t"));

        let small = Constraints {
            max_cpus: 8,
            max_numa_nodes: 1,
            requires_smt: true,
            ..Constraints::ANY
        };
        let labels: Vec<&str> = fitting(&small, None).iter().map(|p| p.label).collect();
        assert_eq!(labels, ["1n1l2c2t", "1n2l2c2t", "1n1l4c2t"]);
        assert_eq!(find("2n8l8c2t").unwrap().topology().vcpus(), 128);
        assert!(find("9n9l9c9t").is_none());
    }
}
