//! Which runs a side takes ([`Filter`]), and which variant dimensions the two sides
//! contrast ([`Contrast`]).

use ktstr_sidecar::sidecar::SidecarResult;
use serde::Serialize;

use crate::metrics;

/// Which sidecars a side takes. Every dimension holds alternatives (empty = any); a
/// sidecar must match one alternative of every non-empty dimension.
///
/// Matching: `kernel` equals the kernel release or is a prefix of it ending at a
/// `.`, `-`, `+` or `~` (`7.2` takes `7.2.13+deb14-cloud-amd64`, not `7.20`); commits
/// match by hex prefix in either direction, `-dirty` only when asked for
/// (`abc1234-dirty`), and a `*` pattern globs the whole label; `test` globs the test
/// name; the rest compare exactly. `unknown` matches a sidecar without the value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Filter {
    pub test: Vec<String>,
    pub kernel: Vec<String>,
    pub scheduler: Vec<String>,
    pub topology: Vec<String>,
    pub work_type: Vec<String>,
    pub project_commit: Vec<String>,
    pub kernel_commit: Vec<String>,
    pub run_source: Vec<String>,
}

impl Filter {
    /// Whether `s` is selected.
    pub fn matches(&self, s: &SidecarResult) -> bool {
        let any = |alts: &[String], m: &dyn Fn(&str) -> bool| {
            alts.is_empty() || alts.iter().any(|a| m(a))
        };
        let opt = |v: Option<&str>, a: &str, m: &dyn Fn(&str, &str) -> bool| match v {
            Some(v) => m(a, v),
            None => a == ktstr_sidecar::paths::UNKNOWN,
        };
        any(&self.test, &|a| metrics::glob(a, &s.test_name))
            && any(&self.kernel, &|a| {
                opt(s.kernel_version.as_deref(), a, &kernel_matches)
            })
            && any(&self.scheduler, &|a| a == s.scheduler)
            && any(&self.topology, &|a| a == s.topology)
            && any(&self.work_type, &|a| a == s.work_type)
            && any(&self.project_commit, &|a| {
                opt(s.project_commit.as_deref(), a, &commit_matches)
            })
            && any(&self.kernel_commit, &|a| {
                opt(s.kernel_commit.as_deref(), a, &commit_matches)
            })
            && any(&self.run_source, &|a| {
                opt(s.run_source.map(|r| r.as_str()), a, &|a, v| a == v)
            })
    }

    /// This filter refined by a side's own: every dimension the side sets replaces
    /// this one's.
    pub fn with_side(&self, side: &Filter) -> Filter {
        let pick = |shared: &Vec<String>, own: &Vec<String>| {
            if own.is_empty() {
                shared.clone()
            } else {
                own.clone()
            }
        };
        Filter {
            test: pick(&self.test, &side.test),
            kernel: pick(&self.kernel, &side.kernel),
            scheduler: pick(&self.scheduler, &side.scheduler),
            topology: pick(&self.topology, &side.topology),
            work_type: pick(&self.work_type, &side.work_type),
            project_commit: pick(&self.project_commit, &side.project_commit),
            kernel_commit: pick(&self.kernel_commit, &side.kernel_commit),
            run_source: pick(&self.run_source, &side.run_source),
        }
    }

    fn dims(&self) -> [(&'static str, &Vec<String>); 8] {
        [
            ("test", &self.test),
            ("kernel", &self.kernel),
            ("scheduler", &self.scheduler),
            ("topology", &self.topology),
            ("work_type", &self.work_type),
            ("project_commit", &self.project_commit),
            ("kernel_commit", &self.kernel_commit),
            ("run_source", &self.run_source),
        ]
    }

    /// `kernel=7.2 project_commit=abc1234`, or `all runs`.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .dims()
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}={}", v.join("|")))
            .collect();
        if parts.is_empty() {
            "all runs".into()
        } else {
            parts.join(" ")
        }
    }
}

/// `7.2` matches `7.2`, `7.2.13`, `7.2-rc1`, `7.2+deb`, not `7.20`.
pub fn kernel_matches(pattern: &str, release: &str) -> bool {
    if pattern.contains('*') {
        return metrics::glob(pattern, release);
    }
    match release.strip_prefix(pattern) {
        Some("") => true,
        Some(rest) => rest.starts_with(['.', '-', '+', '~']),
        None => false,
    }
}

/// Commit labels (`abc1234`, `abc1234-dirty`): hex prefix in either direction (at least
/// 4 digits), `-dirty` must agree; a pattern with `*` globs the label.
pub fn commit_matches(pattern: &str, label: &str) -> bool {
    if pattern.contains('*') {
        return metrics::glob(pattern, label);
    }
    let split = |s: &str| match s.strip_suffix("-dirty") {
        Some(h) => (h.to_ascii_lowercase(), true),
        None => (s.to_ascii_lowercase(), false),
    };
    let (ph, pd) = split(pattern);
    let (lh, ld) = split(label);
    pd == ld && ph.len().min(lh.len()) >= 4 && (ph.starts_with(&lh) || lh.starts_with(&ph))
}

/// Which variant dimensions the two sides were chosen to differ in. Those are left out
/// of the pairing key, so `--a-scheduler x --b-scheduler y` pairs each test's run under
/// x with its run under y. A contrasted scheduler takes its sysctls and kargs along.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Contrast {
    pub scheduler: bool,
    pub topology: bool,
    pub work_type: bool,
}

impl Contrast {
    pub fn of(a: &Filter, b: &Filter) -> Contrast {
        Contrast {
            scheduler: a.scheduler != b.scheduler,
            topology: a.topology != b.topology,
            work_type: a.work_type != b.work_type,
        }
    }
}
