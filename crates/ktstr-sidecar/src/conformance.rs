//! Conformance with the reference's sidecar schema: would the reference project's own
//! reader (ktstr 0.29.0's `SidecarResult`, nested types included; 0.23.0-0.33.0 share
//! them) accept a sidecar, and does it look the way the reference writes it?
//!
//! The schema is a checked-in table of the reference's types
//! (`reference/ktstr-0.29.0-sidecar-schema.json`: every struct's keys in declaration
//! order with their Rust types and serde attributes, and the enums' spellings). [`check`]
//! walks a document against it the way serde would read it into those types:
//!
//! - [`Severity::Rejected`]: the reference's reader fails on the file (a required key
//!   missing, `null` in a plain number, a float in an integer field, an integer out of
//!   range, an unknown enum spelling, a histogram that is not 4864 buckets long).
//! - [`Severity::Differs`]: it reads, but the bytes differ from the reference's (key
//!   order, an extra key, `null` written where the reference omits the key, ...).
//!
//! ktstr's own writer may differ only in the ways [`Finding::is_allowed_difference`]
//! lists: our documented [`EXTRA_KEYS`] (after the reference's keys), and every
//! optional key written (`null`, `{}`) where the reference omits it — DESIGN section 5:
//! "the writer always emits every key", which the reference reads the same.

use std::fmt;
use std::sync::OnceLock;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// The reference release the schema was taken from.
pub const REFERENCE_VERSION: &str = "ktstr 0.29.0";

const SCHEMA_JSON: &str = include_str!("../reference/ktstr-0.29.0-sidecar-schema.json");

/// A key ktstr writes that the reference's types lack (the reference ignores unknown
/// keys). Each comes after its struct's reference keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtraKey {
    /// The reference struct it extends.
    pub owner: &'static str,
    pub key: &'static str,
    /// Where it sits in a sidecar (`[]` for every element of a list).
    pub path: &'static str,
    /// What it holds.
    pub what: &'static str,
}

/// Every extra key ktstr writes.
pub const EXTRA_KEYS: &[ExtraKey] = &[
    ExtraKey {
        owner: "ScenarioStats",
        key: "verdict_details",
        path: "stats.verdict_details",
        what: "why the verdict is what it is: one line per check that failed, was inconclusive or skipped",
    },
    ExtraKey {
        owner: "PayloadMetrics",
        key: "payload",
        path: "metrics[].payload",
        what: "the name of the payload that invocation ran",
    },
    ExtraKey {
        owner: "MonitorSummary",
        key: "psi_cpu_some_avg10",
        path: "monitor.psi_cpu_some_avg10",
        what: "CPU pressure (some, avg10) at the end of the run",
    },
    ExtraKey {
        owner: "MonitorSummary",
        key: "violations",
        path: "monitor.violations",
        what: "the monitor's sustained threshold violations, enforced or report-only",
    },
    ExtraKey {
        owner: "HostContext",
        key: "kvm",
        path: "host.kvm",
        what: "what backs /dev/kvm: hardware, nested (hardware-style KVM inside a VM), pvm, unknown or absent",
    },
    ExtraKey {
        owner: "HostContext",
        key: "engine",
        path: "host.engine",
        what: "the engine that ran the guest: kvm or qemu-tcg",
    },
    ExtraKey {
        owner: "HostContext",
        key: "start",
        path: "host.start",
        what: "how the guest started: cold (booted for this run) or warm (restored from a snapshot of a booted guest)",
    },
];

/// A JSON document with object keys in document order and integers told from floats,
/// as serde sees them (`serde_json::Value` sorts keys and cannot say which order a
/// file had).
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// A number written without fraction or exponent.
    Int(i128),
    /// A number with a fraction or exponent.
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// Parse JSON text, keeping key order.
    pub fn parse(text: &str) -> Result<Json, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The value at `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(kv) => kv.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn short(&self) -> String {
        let s = match self {
            Json::Null => "null".to_string(),
            Json::Bool(b) => b.to_string(),
            Json::Int(i) => i.to_string(),
            Json::Float(f) => format!("{f:?}"),
            Json::Str(s) => format!("{s:?}"),
            Json::Array(a) => format!("a list of {}", a.len()),
            Json::Object(_) => "an object".to_string(),
        };
        s.chars().take(40).collect()
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Json, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Json;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_none<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Json, E> {
                Ok(Json::Bool(b))
            }
            fn visit_i64<E>(self, i: i64) -> Result<Json, E> {
                Ok(Json::Int(i.into()))
            }
            fn visit_u64<E>(self, u: u64) -> Result<Json, E> {
                Ok(Json::Int(u.into()))
            }
            fn visit_f64<E>(self, f: f64) -> Result<Json, E> {
                Ok(Json::Float(f))
            }
            fn visit_str<E>(self, s: &str) -> Result<Json, E> {
                Ok(Json::Str(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<Json, E> {
                Ok(Json::Str(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element()? {
                    out.push(v);
                }
                Ok(Json::Array(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut out: Vec<(String, Json)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Json>()? {
                    if out.iter().any(|(seen, _)| *seen == k) {
                        return Err(de::Error::custom(format!("duplicate key `{k}`")));
                    }
                    out.push((k, v));
                }
                Ok(Json::Object(out))
            }
        }
        de.deserialize_any(V)
    }
}

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The reference's reader rejects the file.
    Rejected,
    /// The reference reads it, but would have written it differently.
    Differs,
}

/// What kind of difference a [`Severity::Differs`] finding is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// Not a difference: the file is rejected.
    None,
    /// A key the reference's struct lacks.
    ExtraKey { owner: &'static str, key: String },
    /// The keys are not in the reference's declaration order (or an extra key comes
    /// before a reference key).
    KeyOrder,
    /// An `Option` written as `null` where the reference omits the key.
    NullNotOmitted,
    /// An empty map written where the reference omits the key.
    EmptyNotOmitted,
    /// An `Option` key left out where the reference writes `null`.
    OptionMissing,
    /// A key with a default left out where the reference always writes it.
    DefaultMissing,
    /// A set or sorted map not in ascending order.
    Unsorted,
}

/// One finding at one path of the document.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// `$.stats.cgroups[0].cgroup_name`.
    pub path: String,
    pub severity: Severity,
    pub difference: Difference,
    pub detail: String,
}

impl Finding {
    /// A difference ktstr's writer is allowed: a documented extra key, or an optional
    /// key written (as `null` or `{}`) where the reference leaves it out.
    pub fn is_allowed_difference(&self) -> bool {
        match &self.difference {
            Difference::ExtraKey { owner, key } => {
                EXTRA_KEYS.iter().any(|x| x.owner == *owner && x.key == key)
            }
            Difference::NullNotOmitted | Difference::EmptyNotOmitted => true,
            _ => false,
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.severity {
            Severity::Rejected => "REJECTED",
            Severity::Differs => "differs",
        };
        write!(f, "{tag} {}: {}", self.path, self.detail)
    }
}

/// Everything [`check`] found in one document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    /// The reference's reader accepts the document.
    pub fn accepted(&self) -> bool {
        self.rejections().next().is_none()
    }

    /// Findings that make the reference reject the document.
    pub fn rejections(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Rejected)
    }

    /// Differences beyond those ktstr's writer is allowed
    /// ([`Finding::is_allowed_difference`]), rejections included.
    pub fn unexpected(&self) -> Vec<&Finding> {
        self.findings
            .iter()
            .filter(|f| !f.is_allowed_difference())
            .collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for x in &self.findings {
            writeln!(f, "{x}")?;
        }
        Ok(())
    }
}

/// Check JSON text against the reference's `SidecarResult`.
pub fn check_text(text: &str) -> Result<Report, serde_json::Error> {
    Ok(check(&Json::parse(text)?))
}

/// Check a document against the reference's `SidecarResult`.
pub fn check(doc: &Json) -> Report {
    let mut c = Checker::default();
    c.strukt(doc, "SidecarResult", "$");
    Report {
        findings: c.findings,
    }
}

/// Check any serialisable value (a [`crate::SidecarResult`], usually) as ktstr writes it.
pub fn check_value<T: serde::Serialize>(value: &T) -> Report {
    let text = serde_json::to_string(value).unwrap_or_default();
    check_text(&text).unwrap_or_else(|e| Report {
        findings: vec![Finding {
            path: "$".into(),
            severity: Severity::Rejected,
            difference: Difference::None,
            detail: format!("not JSON: {e}"),
        }],
    })
}

#[derive(Debug, Deserialize)]
struct Schema {
    structs: std::collections::BTreeMap<String, Vec<Field>>,
    enums: std::collections::BTreeMap<String, EnumDef>,
}

#[derive(Debug, Deserialize)]
struct Field {
    key: String,
    #[serde(rename = "type")]
    ty: String,
    serde: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct EnumDef {
    rename_all: Option<String>,
    variants: Vec<(String, Option<String>)>,
}

fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        serde_json::from_str(SCHEMA_JSON).expect("the checked-in reference schema is valid JSON")
    })
}

/// `ConfigOff` -> `config_off`.
fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `Option<Vec<X>>` -> (`Option`, [`Vec<X>`]); `f64` -> (`f64`, []).
fn split_generic(ty: &str) -> (&str, Vec<&str>) {
    let Some(open) = ty.find('<') else {
        return (ty, Vec::new());
    };
    let inner = &ty[open + 1..ty.len() - 1];
    let mut args = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => depth -= 1,
            ',' if depth == 0 => {
                args.push(inner[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    args.push(inner[start..].trim());
    (&ty[..open], args)
}

fn int_range(ty: &str) -> Option<(i128, i128)> {
    Some(match ty {
        "u16" => (0, u16::MAX.into()),
        "u32" => (0, u32::MAX.into()),
        "u64" | "usize" => (0, u64::MAX.into()),
        "i32" => (i32::MIN.into(), i32::MAX.into()),
        "i64" => (i64::MIN.into(), i64::MAX.into()),
        _ => return None,
    })
}

#[derive(Default)]
struct Checker {
    findings: Vec<Finding>,
}

impl Checker {
    fn reject(&mut self, path: &str, detail: String) {
        self.findings.push(Finding {
            path: path.to_string(),
            severity: Severity::Rejected,
            difference: Difference::None,
            detail,
        });
    }

    fn differs(&mut self, path: &str, difference: Difference, detail: String) {
        self.findings.push(Finding {
            path: path.to_string(),
            severity: Severity::Differs,
            difference,
            detail,
        });
    }

    fn value(&mut self, v: &Json, ty: &str, path: &str) {
        if let Some(len) = ty
            .strip_prefix("[u32; ")
            .and_then(|r| r.strip_suffix(']'))
            .and_then(|n| n.parse::<usize>().ok())
        {
            let ok = matches!(v, Json::Array(a) if a.len() == len
                && a.iter().all(|x| matches!(x, Json::Int(i) if (0..=i128::from(u32::MAX)).contains(i))));
            if !ok {
                self.reject(
                    path,
                    format!("want a list of exactly {len} u32, got {}", v.short()),
                );
            }
            return;
        }
        let (outer, args) = split_generic(ty);
        match (outer, args.as_slice()) {
            ("Option", [inner]) => {
                if *v != Json::Null {
                    self.value(v, inner, path);
                }
            }
            ("Vec" | "BTreeSet", [inner]) => {
                let Json::Array(items) = v else {
                    return self.reject(path, format!("want a list, got {}", v.short()));
                };
                if outer == "BTreeSet" {
                    let ints: Vec<i128> = items
                        .iter()
                        .filter_map(|x| match x {
                            Json::Int(i) => Some(*i),
                            _ => None,
                        })
                        .collect();
                    if ints.windows(2).any(|w| w[0] >= w[1]) {
                        self.differs(
                            path,
                            Difference::Unsorted,
                            "set not ascending and unique".into(),
                        );
                    }
                }
                for (i, x) in items.iter().enumerate() {
                    self.value(x, inner, &format!("{path}[{i}]"));
                }
            }
            ("BTreeMap" | "HashMap", [key, val]) => {
                let Json::Object(entries) = v else {
                    return self.reject(path, format!("want an object, got {}", v.short()));
                };
                if *key == "usize" {
                    let mut nums = Vec::new();
                    for (k, _) in entries {
                        match k.parse::<u64>() {
                            Ok(n) if !k.starts_with('+') => nums.push(n),
                            _ => self.reject(path, format!("map key {k:?} is not an integer")),
                        }
                    }
                    if outer == "BTreeMap" && nums.windows(2).any(|w| w[0] >= w[1]) {
                        self.differs(
                            path,
                            Difference::Unsorted,
                            "keys not in numeric order".into(),
                        );
                    }
                } else if outer == "BTreeMap" && entries.windows(2).any(|w| w[0].0 >= w[1].0) {
                    self.differs(path, Difference::Unsorted, "keys not sorted".into());
                }
                for (k, x) in entries {
                    self.value(x, val, &format!("{path}.{k}"));
                }
            }
            (_, []) => self.scalar_or_named(v, ty, path),
            _ => self.reject(path, format!("the checker does not know the type {ty}")),
        }
    }

    fn scalar_or_named(&mut self, v: &Json, ty: &str, path: &str) {
        if let Some((lo, hi)) = int_range(ty) {
            match v {
                Json::Int(i) if (lo..=hi).contains(i) => {}
                Json::Int(i) => self.reject(path, format!("{i} is out of range for {ty}")),
                other => self.reject(
                    path,
                    format!("want an integer ({ty}), got {}", other.short()),
                ),
            }
            return;
        }
        match ty {
            "f64" => {
                if !matches!(v, Json::Int(_) | Json::Float(_)) {
                    self.reject(path, format!("want a number (f64), got {}", v.short()));
                }
            }
            "bool" => {
                if !matches!(v, Json::Bool(_)) {
                    self.reject(path, format!("want a bool, got {}", v.short()));
                }
            }
            "String" => {
                if !matches!(v, Json::Str(_)) {
                    self.reject(path, format!("want a string, got {}", v.short()));
                }
            }
            _ if schema().structs.contains_key(ty) => self.strukt(v, ty, path),
            _ if schema().enums.contains_key(ty) => self.enumeration(v, ty, path),
            _ => self.reject(path, format!("the checker does not know the type {ty}")),
        }
    }

    fn strukt(&mut self, v: &Json, name: &str, path: &str) {
        let Json::Object(entries) = v else {
            return self.reject(path, format!("want an object ({name}), got {}", v.short()));
        };
        let Some((owner, fields)) = schema().structs.get_key_value(name) else {
            return self.reject(path, format!("the checker does not know the struct {name}"));
        };
        let owner: &'static str = owner.as_str();
        let known = |k: &str| fields.iter().any(|f| f.key == k);
        for (k, _) in entries.iter().filter(|(k, _)| !known(k)) {
            self.differs(
                &format!("{path}.{k}"),
                Difference::ExtraKey {
                    owner,
                    key: k.clone(),
                },
                format!("a key the reference's {name} lacks (ignored on read)"),
            );
        }
        // Reference keys in declaration order, and every extra key after them.
        let doc_order: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        let want: Vec<&str> = fields
            .iter()
            .map(|f| f.key.as_str())
            .filter(|k| doc_order.contains(k))
            .collect();
        let got: Vec<&str> = doc_order.iter().copied().filter(|k| known(k)).collect();
        let last_known = doc_order.iter().rposition(|k| known(k));
        let first_extra = doc_order.iter().position(|k| !known(k));
        if got != want || matches!((first_extra, last_known), (Some(e), Some(l)) if e < l) {
            self.differs(
                path,
                Difference::KeyOrder,
                format!("key order {doc_order:?}, the reference writes {want:?} (then extra keys)"),
            );
        }
        for f in fields {
            let attrs = f.serde.join(" ");
            let optional = f.ty.starts_with("Option<");
            let omits = attrs.contains("skip_serializing_if");
            let defaulted = attrs
                .split(|c: char| !c.is_alphanumeric() && c != '_')
                .any(|w| w == "default");
            let fpath = format!("{path}.{}", f.key);
            let Some((_, value)) = entries.iter().find(|(k, _)| *k == f.key) else {
                if omits {
                    continue;
                }
                if optional {
                    self.differs(
                        &fpath,
                        Difference::OptionMissing,
                        "missing (reads as None; the reference writes null)".into(),
                    );
                } else if defaulted {
                    self.differs(
                        &fpath,
                        Difference::DefaultMissing,
                        "missing (reads as the default; the reference always writes it)".into(),
                    );
                } else {
                    self.reject(&fpath, "required key missing".into());
                }
                continue;
            };
            if omits && optional && *value == Json::Null {
                self.differs(
                    &fpath,
                    Difference::NullNotOmitted,
                    "null (reads as None; the reference omits the key)".into(),
                );
            }
            if attrs.contains("BTreeMap::is_empty") && *value == Json::Object(Vec::new()) {
                self.differs(
                    &fpath,
                    Difference::EmptyNotOmitted,
                    "an empty map (the reference omits the key)".into(),
                );
            }
            self.value(value, &f.ty, &fpath);
        }
    }

    fn enumeration(&mut self, v: &Json, name: &str, path: &str) {
        let def = &schema().enums[name];
        let spell = |variant: &str| match def.rename_all.as_deref() {
            Some("snake_case") => snake(variant),
            _ => variant.to_string(),
        };
        for (variant, payload) in &def.variants {
            let tag = spell(variant);
            match (payload, v) {
                (None, Json::Str(s)) if *s == tag => return,
                (Some(p), Json::Object(kv)) if kv.len() == 1 && kv[0].0 == tag => {
                    return self.value(&kv[0].1, p, &format!("{path}.{tag}"));
                }
                _ => {}
            }
        }
        let allowed: Vec<String> = def
            .variants
            .iter()
            .map(|(a, p)| match p {
                None => format!("\"{}\"", spell(a)),
                Some(p) => format!("{{\"{}\": {p}}}", spell(a)),
            })
            .collect();
        self.reject(
            path,
            format!(
                "{} is not a {name}; the reference spells {}",
                v.short(),
                allowed.join(", ")
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = include_str!("../tests/data/reference-full.ktstr.json");
    const MINIMAL: &str = include_str!("../tests/data/reference-minimal.ktstr.json");

    #[test]
    fn the_golden_files_are_exactly_what_the_reference_writes() {
        for text in [FULL, MINIMAL] {
            let r = check_text(text).expect("json");
            assert!(r.findings.is_empty(), "{r}");
        }
    }

    #[test]
    fn every_kind_of_rejection_is_found() {
        let doc = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut v: serde_json::Value = serde_json::from_str(FULL).unwrap();
            edit(&mut v);
            check_text(&v.to_string()).unwrap()
        };
        let rejected = |r: &Report, path: &str| {
            assert!(!r.accepted(), "{path}");
            assert!(
                r.rejections().any(|f| f.path == path),
                "{path} not among {r}"
            );
        };
        rejected(
            &doc(&|v| {
                v["stats"]["cgroups"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("wake_measured");
            }),
            "$.stats.cgroups[0].wake_measured",
        );
        rejected(
            &doc(&|v| v["stats"]["worst_spread"] = serde_json::Value::Null),
            "$.stats.worst_spread",
        );
        rejected(
            &doc(&|v| v["stats"]["worst_gap_ms"] = serde_json::json!(2.0)),
            "$.stats.worst_gap_ms",
        );
        rejected(&doc(&|v| v["vcpus"] = serde_json::json!(-1)), "$.vcpus");
        rejected(
            &doc(&|v| v["metrics"][0]["metrics"][0]["polarity"] = "lower_better".into()),
            "$.metrics[0].metrics[0].polarity",
        );
        rejected(
            &doc(&|v| {
                v["metrics"][0]["metrics"][2]["polarity"] = serde_json::json!({"TargetValue": "x"})
            }),
            "$.metrics[0].metrics[2].polarity.TargetValue",
        );
        rejected(
            &doc(&|v| {
                v["stats"]["phases"][0]["per_cgroup"]["cg0"]["schbench"]["rps"]["plat"] =
                    serde_json::json!([1, 2, 3]);
            }),
            "$.stats.phases[0].per_cgroup.cg0.schbench.rps.plat",
        );
        rejected(
            &doc(&|v| v["host"]["task_delayacct"] = "On".into()),
            "$.host.task_delayacct",
        );
        rejected(
            &doc(&|v| v["host"]["cpufreq_governor"] = serde_json::json!({"cpu0": "x"})),
            "$.host.cpufreq_governor",
        );
        // Optional, defaulted and omitted-when-None keys may be missing.
        let r = doc(&|v| {
            let o = v.as_object_mut().unwrap();
            o.remove("host");
            o.remove("kernel_commit");
            v["stats"].as_object_mut().unwrap().remove("phases");
            v["monitor"].as_object_mut().unwrap().remove("event_deltas");
        });
        assert!(r.accepted(), "{r}");
        assert!(r
            .findings
            .iter()
            .any(|f| f.difference == Difference::OptionMissing));
        assert!(r
            .findings
            .iter()
            .any(|f| f.difference == Difference::DefaultMissing));
    }

    #[test]
    fn differences_are_classified_and_only_documented_ones_allowed() {
        let mut v: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
        v["stats"]["verdict_details"] = serde_json::json!([]);
        v["stats"]["mystery"] = serde_json::json!(1);
        let r = check_text(&v.to_string()).unwrap();
        // serde_json::Value sorts keys: order findings too.
        assert!(r.accepted(), "{r}");
        let unexpected = r.unexpected();
        assert!(
            unexpected.iter().any(|f| f.path == "$.stats.mystery"),
            "{r}"
        );
        assert!(
            !unexpected
                .iter()
                .any(|f| f.path == "$.stats.verdict_details"),
            "{r}"
        );
        assert!(unexpected
            .iter()
            .any(|f| f.difference == Difference::KeyOrder));

        // An extra key before a reference key is out of order even if the rest is not.
        let text = MINIMAL.replacen("\"test_name\"", "\"early\": 1,\n  \"test_name\"", 1);
        let r = check_text(&text).unwrap();
        assert!(
            r.findings
                .iter()
                .any(|f| f.difference == Difference::KeyOrder && f.path == "$"),
            "{r}"
        );

        // null where the reference omits: allowed for ktstr's writer.
        let text = FULL.replacen("\"kernel_name\": \"Linux\"", "\"kernel_name\": null", 1);
        let r = check_text(&text).unwrap();
        assert_eq!(r.findings.len(), 1, "{r}");
        assert_eq!(r.findings[0].difference, Difference::NullNotOmitted);
        assert!(r.unexpected().is_empty());
    }

    #[test]
    fn ordered_parse_keeps_order_and_number_kinds() {
        let j = Json::parse(r#"{"b": 1, "a": [2.0, null, true, "x"], "c": {}}"#).unwrap();
        let Json::Object(kv) = &j else { panic!() };
        assert_eq!(
            kv.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["b", "a", "c"]
        );
        assert_eq!(j.get("b"), Some(&Json::Int(1)));
        assert_eq!(
            j.get("a"),
            Some(&Json::Array(vec![
                Json::Float(2.0),
                Json::Null,
                Json::Bool(true),
                Json::Str("x".into())
            ]))
        );
        assert!(Json::parse(r#"{"a": 1, "a": 2}"#).is_err());
        assert_eq!(snake("ConfigOff"), "config_off");
        assert_eq!(
            split_generic("Option<BTreeMap<String, f64>>"),
            ("Option", vec!["BTreeMap<String, f64>"])
        );
    }
}
