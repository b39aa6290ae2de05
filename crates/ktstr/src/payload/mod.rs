//! Payloads: real programs (benchmarks, stress tools) a test runs in the guest. The host
//! declares them ([`Payload`]), checks them before boot, extracts metrics from their raw
//! output after the run ([`extract`]); [`crate::assert::payload`] judges its checks
//! ([`check`]) into the verdict.

pub mod check;
pub mod extract;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use ktstr_sidecar::Polarity;
use serde::{Deserialize, Serialize};

pub use check::Check;
pub use extract::{extract_metrics, ExtractError};

/// How a payload reports its results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutputKind {
    /// Only the exit code matters.
    ExitCode,
    /// A JSON document somewhere in stdout (stderr as fallback); numeric leaves become
    /// metrics named by their dotted path.
    Json,
    /// Lines matched by patterns; each pattern's first capture group is the value.
    Lines { patterns: Vec<LinePattern> },
}

/// A metric read from a line of output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinePattern {
    pub metric: String,
    /// A regular expression whose first capture group is a number.
    pub regex: String,
}

/// Unit and direction of a metric, by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricHint {
    pub name: String,
    pub unit: String,
    pub polarity: Polarity,
}

/// A program to run in the guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    pub name: String,
    /// Host path; packed with its shared-library closure.
    pub binary: PathBuf,
    pub args: Vec<String>,
    pub output: OutputKind,
    pub hints: Vec<MetricHint>,
    pub checks: Vec<Check>,
    /// Scenario cgroup it runs in (`cg0`, `outer/inner`); None: the root cgroup.
    #[serde(default)]
    pub cgroup: Option<String>,
}

impl Payload {
    /// A payload judged by its exit code only (0 expected).
    pub fn new(name: impl Into<String>, binary: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            binary: binary.into(),
            args: Vec::new(),
            output: OutputKind::ExitCode,
            hints: Vec::new(),
            checks: vec![Check::ExitCode(0)],
            cgroup: None,
        }
    }

    /// Run it in this scenario cgroup (a leaf, alive whenever the payload starts).
    pub fn cgroup(mut self, cgroup: impl Into<String>) -> Self {
        self.cgroup = Some(cgroup.into());
        self
    }

    /// What the guest needs to run it.
    pub fn to_run(&self) -> ktstr_wire::spec::PayloadRun {
        ktstr_wire::spec::PayloadRun {
            name: self.name.clone(),
            guest_path: self.guest_path(),
            args: self.args.clone(),
            cgroup: self.cgroup.clone(),
        }
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    pub fn json(mut self) -> Self {
        self.output = OutputKind::Json;
        self
    }

    /// Read `metric` from lines matching `regex` (first capture group).
    pub fn line(mut self, metric: impl Into<String>, regex: impl Into<String>) -> Self {
        let p = LinePattern {
            metric: metric.into(),
            regex: regex.into(),
        };
        match &mut self.output {
            OutputKind::Lines { patterns } => patterns.push(p),
            _ => self.output = OutputKind::Lines { patterns: vec![p] },
        }
        self
    }

    pub fn hint(
        mut self,
        name: impl Into<String>,
        unit: impl Into<String>,
        polarity: Polarity,
    ) -> Self {
        self.hints.push(MetricHint {
            name: name.into(),
            unit: unit.into(),
            polarity,
        });
        self
    }

    /// Adds a check; an `ExitCode` check replaces the exit code expected so far (0 by
    /// default), so `.check(Check::ExitCode(-9))` expects a kill.
    pub fn check(mut self, c: Check) -> Self {
        if matches!(c, Check::ExitCode(_)) {
            self.checks.retain(|k| !matches!(k, Check::ExitCode(_)));
        }
        self.checks.push(c);
        self
    }

    /// Where the payload lives in the guest.
    pub fn guest_path(&self) -> String {
        let file = self
            .binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.name.clone());
        format!("/bin/{file}")
    }

    /// Reject, before any VM boots, a payload that cannot run: missing or
    /// non-executable binary, unresolvable libraries, bad patterns.
    pub fn validate(&self) -> Result<(), PayloadError> {
        let meta = std::fs::metadata(&self.binary).map_err(|e| PayloadError::Binary {
            payload: self.name.clone(),
            path: self.binary.clone(),
            why: format!("{e} (install it or give the full host path)"),
        })?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(PayloadError::Binary {
                payload: self.name.clone(),
                path: self.binary.clone(),
                why: "not an executable file (chmod +x, or point at the real binary)".into(),
            });
        }
        if crate::initramfs::elf::is_elf(&self.binary) {
            let search = crate::initramfs::elf::LibrarySearch::host();
            crate::initramfs::elf::closure(&self.binary, &search).map_err(|e| {
                PayloadError::Binary {
                    payload: self.name.clone(),
                    path: self.binary.clone(),
                    why: format!("its shared libraries cannot be resolved: {e}"),
                }
            })?;
        }
        if let OutputKind::Lines { patterns } = &self.output {
            for p in patterns {
                let re = regex::Regex::new(&p.regex).map_err(|e| PayloadError::Pattern {
                    payload: self.name.clone(),
                    metric: p.metric.clone(),
                    why: e.to_string(),
                })?;
                if re.captures_len() < 2 {
                    return Err(PayloadError::Pattern {
                        payload: self.name.clone(),
                        metric: p.metric.clone(),
                        why: "the pattern needs a capture group around the number".into(),
                    });
                }
            }
        }
        Ok(())
    }

    fn hint_for(&self, metric: &str) -> Option<&MetricHint> {
        self.hints.iter().find(|h| h.name == metric)
    }
}

/// Checks every payload of a test ([`Payload::validate`]) and that no two of them
/// would land on the same guest path with different binaries.
pub fn validate_all(payloads: &[Payload]) -> Result<(), PayloadError> {
    for (i, p) in payloads.iter().enumerate() {
        p.validate()?;
        if let Some(q) = payloads[..i]
            .iter()
            .find(|q| q.guest_path() == p.guest_path() && q.binary != p.binary)
        {
            return Err(PayloadError::Binary {
                payload: p.name.clone(),
                path: p.binary.clone(),
                why: format!(
                    "payload `{}` packs {} as {} too: give one of them a copy with another file name",
                    q.name,
                    q.binary.display(),
                    p.guest_path()
                ),
            });
        }
    }
    Ok(())
}

/// A payload that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("payload `{payload}`: binary {path}: {why}")]
    Binary {
        payload: String,
        path: PathBuf,
        why: String,
    },
    #[error("payload `{payload}`: line pattern for `{metric}`: {why}")]
    Pattern {
        payload: String,
        metric: String,
        why: String,
    },
}

/// Host path of a program, for payloads named by program name.
pub use crate::which::which;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_code_check_replaces_the_expected_exit_code() {
        let p = Payload::new("p", "/bin/true")
            .check(Check::Exists { metric: "x".into() })
            .check(Check::ExitCode(-9));
        assert_eq!(
            p.checks,
            [Check::Exists { metric: "x".into() }, Check::ExitCode(-9)]
        );
    }

    #[test]
    fn validate_rejects_missing_and_non_executable_binaries() {
        let e = Payload::new("nope", "/nonexistent/bench")
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/bench"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("data.txt");
        std::fs::write(&f, "x").unwrap();
        let e = Payload::new("data", &f).validate().unwrap_err();
        assert!(e.to_string().contains("not an executable"), "{e}");
        Payload::new("true", "/bin/true").validate().unwrap();
    }

    #[test]
    fn validate_rejects_patterns_without_a_capture_group() {
        let e = Payload::new("t", "/bin/true")
            .line("time", r"Time: [0-9.]+")
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("capture group"), "{e}");
        let e = Payload::new("t", "/bin/true")
            .line("time", r"Time: ([0-9.]+")
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("`time`"), "{e}");
    }

    #[test]
    fn guest_path_is_under_bin() {
        assert_eq!(
            Payload::new("hb", "/usr/bin/hackbench").guest_path(),
            "/bin/hackbench"
        );
    }
}
