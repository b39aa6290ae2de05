//! Test names as nextest sees them, and the kernel list that multiplies them.
//!
//! ```text
//! ktstr/{name}                       the base variant
//! gauntlet/{name}/{preset}           one per fitting preset (ignored by default)
//! ktstr/{name}/{kernel}              with several kernels (KTSTR_KERNEL_LIST),
//! gauntlet/{name}/{preset}/{kernel}  the kernel label is the last segment
//! ```
//!
//! `KTSTR_KERNEL_LIST` (set by `cargo ktstr test` for two or more `--kernel`s) holds one
//! `label=spec` line per kernel; `spec` is what [`crate::kernel::resolve`] accepts (a
//! cache key or an absolute path).

use std::fmt;

use super::presets::{self, Preset};

/// Prefix of base variants.
pub const BASE_PREFIX: &str = "ktstr";
/// Prefix of gauntlet variants.
pub const GAUNTLET_PREFIX: &str = "gauntlet";
/// Environment variable listing the kernels of a multi-kernel run.
pub const KERNEL_LIST_ENV: &str = "KTSTR_KERNEL_LIST";

/// One runnable test as nextest names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestId {
    pub name: String,
    pub preset: Option<&'static Preset>,
    pub kernel: Option<String>,
}

impl fmt::Display for TestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.preset {
            None => write!(f, "{BASE_PREFIX}/{}", self.name)?,
            Some(p) => write!(f, "{GAUNTLET_PREFIX}/{}/{}", self.name, p.label)?,
        }
        if let Some(k) = &self.kernel {
            write!(f, "/{k}")?;
        }
        Ok(())
    }
}

/// Why a name is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("`{0}` is not a ktstr test name (expected `ktstr/NAME[/KERNEL]` or `gauntlet/NAME/PRESET[/KERNEL]`)")]
    Shape(String),
    #[error("`{name}`: no topology preset is called `{preset}` (presets: {})", presets::PRESETS.iter().map(|p| p.label).collect::<Vec<_>>().join(", "))]
    UnknownPreset { name: String, preset: String },
}

impl TestId {
    /// Whether `s` uses one of our prefixes (so libtest must not see it).
    pub fn is_ours(s: &str) -> bool {
        s.starts_with(&format!("{BASE_PREFIX}/")) || s.starts_with(&format!("{GAUNTLET_PREFIX}/"))
    }

    pub fn parse(s: &str) -> Result<TestId, NameError> {
        let shape = || NameError::Shape(s.to_string());
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(shape());
        }
        match parts.as_slice() {
            [BASE_PREFIX, name, rest @ ..] if rest.len() <= 1 => Ok(TestId {
                name: name.to_string(),
                preset: None,
                kernel: rest.first().map(|k| k.to_string()),
            }),
            [GAUNTLET_PREFIX, name, preset, rest @ ..] if rest.len() <= 1 => {
                let p = presets::find(preset).ok_or_else(|| NameError::UnknownPreset {
                    name: s.to_string(),
                    preset: preset.to_string(),
                })?;
                Ok(TestId {
                    name: name.to_string(),
                    preset: Some(p),
                    kernel: rest.first().map(|k| k.to_string()),
                })
            }
            _ => Err(shape()),
        }
    }
}

/// One kernel of a multi-kernel run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelEntry {
    /// The name segment (`7.2.13+deb14-cloud-amd64`).
    pub label: String,
    /// What to resolve (cache key or absolute path).
    pub spec: String,
}

/// A `KTSTR_KERNEL_LIST` value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{KERNEL_LIST_ENV}: line `{line}` is not `label=kernel` with a label of letters, digits and `._+-`; `cargo ktstr test --kernel A --kernel B` writes this variable, so unset it or fix it")]
pub struct KernelListError {
    pub line: String,
}

/// Parse `KTSTR_KERNEL_LIST` (one `label=spec` per line; blank lines ignored).
pub fn parse_kernel_list(text: &str) -> Result<Vec<KernelEntry>, KernelListError> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|line| {
            let bad = || KernelListError {
                line: line.to_string(),
            };
            let (label, spec) = line.split_once('=').ok_or_else(bad)?;
            if !is_label(label) || spec.trim().is_empty() {
                return Err(bad());
            }
            Ok(KernelEntry {
                label: label.to_string(),
                spec: spec.trim().to_string(),
            })
        })
        .collect()
}

/// Render a kernel list for `KTSTR_KERNEL_LIST`.
pub fn format_kernel_list(entries: &[KernelEntry]) -> String {
    entries
        .iter()
        .map(|e| format!("{}={}", e.label, e.spec))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The kernels named by `KTSTR_KERNEL_LIST`; empty when unset. A list of one kernel does
/// not change test names.
pub fn kernel_list_from_env() -> Result<Vec<KernelEntry>, KernelListError> {
    match std::env::var(KERNEL_LIST_ENV) {
        Ok(v) => parse_kernel_list(&v),
        Err(_) => Ok(Vec::new()),
    }
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'))
}

/// A label from a kernel release: characters outside `[A-Za-z0-9._+-]` become `_`;
/// a label already in `taken` gets `-2`, `-3`, ...
pub fn kernel_label(release: &str, taken: &[String]) -> String {
    let mut base: String = release
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if base.is_empty() {
        base = "kernel".into();
    }
    let mut label = base.clone();
    let mut n = 2;
    while taken.contains(&label) {
        label = format!("{base}-{n}");
        n += 1;
    }
    label
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in [
            "ktstr/steady",
            "ktstr/steady/7.2.13+deb14-cloud-amd64",
            "gauntlet/steady/2n4l4c2t",
            "gauntlet/steady/1n1l2c1t/6.14.0",
        ] {
            let id = TestId::parse(s).unwrap();
            assert_eq!(id.to_string(), s);
            assert!(TestId::is_ours(s));
        }
        let id = TestId::parse("gauntlet/steady/2n4l4c2t").unwrap();
        assert_eq!(id.name, "steady");
        assert_eq!(id.preset.unwrap().label, "2n4l4c2t");
        assert_eq!(id.kernel, None);
    }

    #[test]
    fn bad_names_are_rejected() {
        for s in [
            "ktstr",
            "ktstr/",
            "ktstr/a/b/c",
            "gauntlet/a",
            "host/a",
            "ktstr//x",
        ] {
            assert!(matches!(TestId::parse(s), Err(NameError::Shape(_))), "{s}");
        }
        assert!(matches!(
            TestId::parse("gauntlet/a/3n3l3c3t"),
            Err(NameError::UnknownPreset { .. })
        ));
        assert!(!TestId::is_ours("steady"));
        assert!(!TestId::is_ours("tests::ktstr"));
    }

    #[test]
    fn kernel_list_round_trips_and_rejects_junk() {
        let list = vec![
            KernelEntry {
                label: "7.2.13+deb14-cloud-amd64".into(),
                spec: "debian-7.2.13+deb14-cloud-amd64".into(),
            },
            KernelEntry {
                label: "6.14.0".into(),
                spec: "/src/linux".into(),
            },
        ];
        assert_eq!(parse_kernel_list(&format_kernel_list(&list)).unwrap(), list);
        assert_eq!(parse_kernel_list("\n").unwrap(), vec![]);
        assert!(parse_kernel_list("no-equals").is_err());
        assert!(parse_kernel_list("bad/label=/x").is_err());
        assert!(parse_kernel_list("label=").is_err());
    }

    #[test]
    fn labels_are_safe_and_unique() {
        assert_eq!(
            kernel_label("7.2.13+deb14-cloud-amd64", &[]),
            "7.2.13+deb14-cloud-amd64"
        );
        assert_eq!(kernel_label("6.14 (mine)", &[]), "6.14__mine_");
        let taken = vec!["6.14.0".to_string(), "6.14.0-2".to_string()];
        assert_eq!(kernel_label("6.14.0", &taken), "6.14.0-3");
        assert_eq!(kernel_label("", &[]), "kernel");
    }
}
