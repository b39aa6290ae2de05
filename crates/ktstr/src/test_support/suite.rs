//! What `cargo ktstr test` does around `cargo nextest run`: pick the kernels (fetching
//! the default one when the cache is empty), find and build the guest runtime for the
//! project under test, write the nextest tool config that keeps VM tests from
//! oversubscribing the host, restrict the CPUs, and summarise the run from the sidecars
//! its tests wrote (listed in the run manifest, see [`MANIFEST_ENV`](super::MANIFEST_ENV)).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use ktstr_sidecar::{read_sidecar, Outcome, SidecarResult};

use super::names::{kernel_label, KernelEntry};
use crate::kernel::{
    self, fetch::DebianKernel, KernelCache, KernelError, Progress, ResolvedKernel,
};

/// nextest test group VM tests run in. Tool config files may only define groups named
/// `@tool:<tool>:<name>`.
pub const VM_TEST_GROUP: &str = "@tool:ktstr:vm";
/// The filterset of ktstr's VM tests.
pub const VM_TEST_FILTER: &str = r"test(/^(ktstr|gauntlet)\//)";

/// Everything that can go wrong around the nextest run.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("cannot run `{command}`: {source}; is cargo on PATH?")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`cargo metadata` printed something that is not its JSON: {0}")]
    Metadata(String),
    #[error(
        "cannot find the sources of the guest runtime `ktstr-guest`: the project does not \
         depend on a `ktstr` that lives in a ktstr checkout ({0}); build `ktstr-guest` from \
         the same ktstr version and set KTSTR_GUEST=/path/to/ktstr-guest"
    )]
    NoGuestSource(String),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--cpu-cap {cap}: {reason}")]
    CpuCap { cap: usize, reason: String },
}

// ---- kernels ----------------------------------------------------------------------------

/// A kernel the suite runs against.
#[derive(Debug, Clone)]
pub struct SuiteKernel {
    pub kernel: ResolvedKernel,
    /// What test processes resolve (`KTSTR_KERNEL`): the cache key, else the image path.
    pub spec: String,
    /// Name segment in test names when there are several kernels.
    pub label: String,
}

/// Resolve each `--kernel` (none: `KTSTR_KERNEL`, else the default cached kernel).
/// `debian`, `debian:latest` and `debian:<version>` are fetched into the cache when
/// missing; with nothing named and an empty cache the pinned kernel is fetched.
pub fn prepare_kernels(
    specs: &[String],
    progress: &Progress,
) -> Result<Vec<SuiteKernel>, SuiteError> {
    let mut resolved = Vec::new();
    if specs.is_empty() {
        let k = match kernel::resolve(None) {
            Err(KernelError::NoKernel { .. }) => {
                progress.note("ktstr: no kernel cached; fetching the default (pinned) Debian sched_ext kernel");
                fetch(&DebianKernel::Pinned, progress)?
            }
            other => other?,
        };
        resolved.push(k);
    }
    for spec in specs {
        let k = match DebianKernel::parse(Some(spec)) {
            Ok(which) => fetch(&which, progress)?,
            Err(_) => kernel::resolve(Some(spec))?,
        };
        resolved.push(k);
    }
    let mut out: Vec<SuiteKernel> = Vec::new();
    for k in resolved {
        let taken: Vec<String> = out.iter().map(|s| s.label.clone()).collect();
        let spec = match &k.cache_key {
            Some(key) => key.clone(),
            None => std::path::absolute(&k.image)
                .unwrap_or_else(|_| k.image.clone())
                .display()
                .to_string(),
        };
        out.push(SuiteKernel {
            label: kernel_label(&k.release, &taken),
            spec,
            kernel: k,
        });
    }
    Ok(out)
}

fn fetch(which: &DebianKernel, progress: &Progress) -> Result<ResolvedKernel, SuiteError> {
    let cache = KernelCache::from_env()?;
    let outcome = kernel::fetch(&cache, which, false, progress)?;
    Ok(kernel::resolve_in(&cache, Some(&outcome.entry().key))?)
}

/// The kernel list for `KTSTR_KERNEL_LIST`.
pub fn kernel_entries(kernels: &[SuiteKernel]) -> Vec<KernelEntry> {
    kernels
        .iter()
        .map(|k| KernelEntry {
            label: k.label.clone(),
            spec: k.spec.clone(),
        })
        .collect()
}

// ---- the project under test --------------------------------------------------------------

/// What `cargo metadata` says about the project `cargo ktstr test` runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub target_dir: PathBuf,
    /// `Cargo.toml` of the `ktstr-guest` package matching the project's `ktstr`.
    pub guest_manifest: Result<PathBuf, String>,
}

/// Ask cargo about the project in `cwd`. `cargo metadata --no-deps` is enough (and needs
/// neither the network nor a resolve) when ktstr is a workspace member or a path
/// dependency; otherwise the full metadata is read.
pub fn project(cwd: &Path) -> Result<Project, SuiteError> {
    let quick = parse_metadata(&metadata(cwd, true)?)?;
    if quick.guest_manifest.is_ok() {
        return Ok(quick);
    }
    parse_metadata(&metadata(cwd, false)?)
}

fn metadata(cwd: &Path, no_deps: bool) -> Result<Vec<u8>, SuiteError> {
    let mut args = vec!["metadata", "--format-version", "1"];
    if no_deps {
        args.push("--no-deps");
    }
    cargo_stdout(&args, Some(cwd), "")
}

/// The stdout of `cargo ARGS` (in `cwd` when given); on failure its stderr, trimmed,
/// followed by `hint`.
fn cargo_stdout(args: &[&str], cwd: Option<&Path>, hint: &str) -> Result<Vec<u8>, SuiteError> {
    let cargo = cargo_bin();
    let command = format!("{cargo} {}", args.join(" "));
    let mut cmd = Command::new(&cargo);
    cmd.args(args);
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    let out = cmd.output().map_err(|source| SuiteError::Spawn {
        command: command.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(SuiteError::Command {
            command,
            status: out.status.to_string(),
            stderr: format!("{}{hint}", String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    Ok(out.stdout)
}

/// The cargo to run: `$CARGO` (set when we run as `cargo ktstr`), else `cargo`.
pub fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// Read what we need from `cargo metadata --format-version 1 [--no-deps]` output: the
/// target dir, and the guest's manifest, found as a package of the metadata
/// (`ktstr-guest` itself, or `ktstr` with the guest beside it in its checkout) or as a
/// path dependency on `ktstr`.
pub fn parse_metadata(json: &[u8]) -> Result<Project, SuiteError> {
    let v: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| SuiteError::Metadata(e.to_string()))?;
    let target_dir = v["target_directory"]
        .as_str()
        .ok_or_else(|| SuiteError::Metadata("no target_directory".into()))?;
    let packages = v["packages"].as_array().cloned().unwrap_or_default();
    let manifest_of = |name: &str| {
        packages
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["manifest_path"].as_str())
            .map(PathBuf::from)
    };
    let ktstr_path_dep = packages
        .iter()
        .flat_map(|p| p["dependencies"].as_array().cloned().unwrap_or_default())
        .find(|d| d["name"] == "ktstr" && d["path"].is_string())
        .and_then(|d| d["path"].as_str().map(|p| Path::new(p).join("Cargo.toml")));
    let guest_manifest = match (
        manifest_of("ktstr-guest"),
        manifest_of("ktstr").or(ktstr_path_dep),
    ) {
        (Some(g), _) => Ok(g),
        (None, Some(k)) => guest_beside(&k).ok_or_else(|| {
            format!(
                "`ktstr` comes from {}, with no guest/Cargo.toml of `ktstr-guest` above it",
                k.display()
            )
        }),
        (None, None) => Err("the project does not depend on `ktstr`".to_string()),
    };
    Ok(Project {
        target_dir: PathBuf::from(target_dir),
        guest_manifest,
    })
}

/// `guest/Cargo.toml` of the ktstr checkout that `ktstr_manifest` (`.../crates/ktstr/
/// Cargo.toml`) belongs to.
fn guest_beside(ktstr_manifest: &Path) -> Option<PathBuf> {
    ktstr_manifest.ancestors().skip(1).take(4).find_map(|d| {
        let m = d.join("guest").join("Cargo.toml");
        let text = std::fs::read_to_string(&m).ok()?;
        text.lines()
            .any(|l| l.replace(' ', "") == "name=\"ktstr-guest\"")
            .then_some(m)
    })
}

/// Build `ktstr-guest` from `guest_manifest` into `target_dir` (debug profile) and return
/// the binary. Cargo makes this a no-op when it is fresh.
pub fn build_guest(guest_manifest: &Path, target_dir: &Path) -> Result<PathBuf, SuiteError> {
    let cargo = cargo_bin();
    let mut cmd = Command::new(&cargo);
    cmd.arg("build")
        .args(["-p", "ktstr-guest", "--manifest-path"])
        .arg(guest_manifest)
        .arg("--target-dir")
        .arg(target_dir);
    let command = format!(
        "{cargo} build -p ktstr-guest --manifest-path {} --target-dir {}",
        guest_manifest.display(),
        target_dir.display()
    );
    let status = cmd.status().map_err(|source| SuiteError::Spawn {
        command: command.clone(),
        source,
    })?;
    if !status.success() {
        return Err(SuiteError::Command {
            command,
            status: status.to_string(),
            stderr: "see the cargo output above".into(),
        });
    }
    Ok(target_dir.join("debug").join("ktstr-guest"))
}

// ---- nextest ------------------------------------------------------------------------------

/// Check that `cargo nextest` runs; returns its version line.
pub fn nextest_version() -> Result<String, SuiteError> {
    let out = cargo_stdout(
        &["nextest", "--version"],
        None,
        "; install it with `cargo install cargo-nextest --locked`",
    )?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or("")
        .to_string())
}

/// How many VM tests may run at once on `cpus` host CPUs: one per two CPUs (a test's
/// smallest guest has two vCPUs, each a busy host thread under TCG), at least one.
pub fn vm_slots(cpus: usize) -> usize {
    (cpus / 2).max(1)
}

/// How long nextest lets one VM test run before it terminates it: periods of
/// `(seconds, count)`. On a host, 20 minutes leaves room for big gauntlet presets under
/// TCG. Inside `cargo ktstr nested`, 5 minutes: the harness bounds each guest itself
/// (boot budget, duration, grace), so this is a backstop for an L2 the emulation leaves
/// hanging (one of the ways about one VM test run in 15 fails there), and it keeps such a test from eating
/// the rest of the suite's time; nextest then prints the test's own output.
pub fn vm_test_timeout(nested: bool) -> (u32, u32) {
    if nested {
        (60, 5)
    } else {
        (120, 10)
    }
}

/// The nextest tool config: VM tests in one group of `slots` threads, each terminated
/// after [`vm_test_timeout`].
pub fn nextest_tool_config(slots: usize, nested: bool) -> String {
    let (period, count) = vm_test_timeout(nested);
    format!(
        r#"# Written by `cargo ktstr test`; passed as --tool-config-file ktstr:<this file>.
# Your own .config/nextest.toml still applies and wins where both set a value.

[test-groups]
"{VM_TEST_GROUP}" = {{ max-threads = {slots} }}

[[profile.default.overrides]]
filter = '{VM_TEST_FILTER}'
test-group = "{VM_TEST_GROUP}"
slow-timeout = {{ period = "{period}s", terminate-after = {count} }}
"#
    )
}

/// Where a run keeps its files under the cargo target dir: the nextest tool config
/// (`ktstr/nextest-tool.toml`) and a fresh run manifest
/// (`ktstr/.manifests/{stamp}-{pid}.tsv`; the dot keeps it out of sidecar pools).
pub fn run_files(target_dir: &Path) -> (PathBuf, PathBuf) {
    let work = target_dir.join("ktstr");
    let stamp = ktstr_sidecar::provenance::compact_stamp(time::OffsetDateTime::now_utc());
    (
        work.join("nextest-tool.toml"),
        work.join(".manifests")
            .join(format!("{stamp}-{}.tsv", std::process::id())),
    )
}

/// Write `text` to `path`, creating the directory.
pub fn write_file(path: &Path, text: &str) -> Result<(), SuiteError> {
    let io = |what, source| SuiteError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io("cannot create the directory of", e))?;
    }
    std::fs::write(path, text).map_err(|e| io("cannot write", e))
}

/// Restrict this process (and so everything it starts) to the first `cap` CPUs it may
/// run on; returns them.
pub fn restrict_cpus(cap: usize) -> Result<Vec<usize>, SuiteError> {
    let avail = crate::engine::available_host_cpus();
    if cap == 0 {
        return Err(SuiteError::CpuCap {
            cap,
            reason: "must be at least 1".into(),
        });
    }
    let cpus: Vec<usize> = avail.into_iter().take(cap).collect();
    // SAFETY: cpu_set_t is plain data; CPU_SET writes bits of the local set, and
    // sched_setaffinity(0) changes only this process's mask.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in &cpus {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(SuiteError::CpuCap {
            cap,
            reason: format!(
                "sched_setaffinity failed: {}",
                std::io::Error::last_os_error()
            ),
        });
    }
    Ok(cpus)
}

// ---- the summary ---------------------------------------------------------------------------

/// One test of the run, as its sidecar tells it.
#[derive(Debug, Clone)]
pub struct Ran {
    pub wall_ms: u64,
    pub path: PathBuf,
    pub sidecar: SidecarResult,
}

/// The sidecars of one run.
#[derive(Debug, Default)]
pub struct Summary {
    pub ran: Vec<Ran>,
    /// Manifest lines whose sidecar could not be read.
    pub unreadable: Vec<String>,
}

/// Read a run manifest (`{wall_ms}\t{sidecar path}` per line). A missing file is an
/// empty run.
pub fn read_manifest(path: &Path) -> Summary {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut s = Summary::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Some((ms, p)) = line.split_once('\t') else {
            s.unreadable
                .push(format!("malformed manifest line `{line}`"));
            continue;
        };
        let path = PathBuf::from(p);
        match read_sidecar(&path) {
            Ok(sidecar) => s.ran.push(Ran {
                wall_ms: ms.parse().unwrap_or(0),
                path,
                sidecar,
            }),
            Err(e) => s.unreadable.push(e.to_string()),
        }
    }
    s
}

impl Summary {
    pub fn count(&self, o: Outcome) -> usize {
        self.ran.iter().filter(|r| r.sidecar.outcome() == o).count()
    }

    /// Directories holding this run's sidecars.
    pub fn dirs(&self) -> BTreeSet<PathBuf> {
        self.ran
            .iter()
            .filter_map(|r| r.path.parent().map(Path::to_path_buf))
            .collect()
    }

    /// One screen: counts, the slowest tests, what failed or skipped and why, where the
    /// sidecars are.
    pub fn render(&self) -> String {
        const SHOWN: usize = 5;
        let mut out = String::new();
        let line = |out: &mut String, s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        if self.ran.is_empty() {
            line(
                &mut out,
                "ktstr: no ktstr test ran (none selected, or none in this project)".into(),
            );
        }
        let expected = self
            .ran
            .iter()
            .filter(|r| r.sidecar.expected_failure)
            .count();
        if !self.ran.is_empty() {
            line(
                &mut out,
                format!(
                    "ktstr: {} tests: {} passed, {} failed, {} skipped, {} inconclusive{}",
                    self.ran.len(),
                    self.count(Outcome::Pass),
                    self.count(Outcome::Fail),
                    self.count(Outcome::Skip),
                    self.count(Outcome::Inconclusive),
                    if expected > 0 {
                        format!(" ({expected} passed as expected failures)")
                    } else {
                        String::new()
                    }
                ),
            );
            let mut slow: Vec<&Ran> = self.ran.iter().collect();
            slow.sort_by_key(|r| std::cmp::Reverse(r.wall_ms));
            line(&mut out, "slowest:".into());
            for r in slow.iter().take(SHOWN) {
                line(
                    &mut out,
                    format!("  {:>7.1} s  {}", r.wall_ms as f64 / 1000.0, describe(r)),
                );
            }
        }
        for (title, o) in [
            ("failed", Outcome::Fail),
            ("inconclusive", Outcome::Inconclusive),
            ("skipped", Outcome::Skip),
        ] {
            let hits: Vec<&Ran> = self
                .ran
                .iter()
                .filter(|r| r.sidecar.outcome() == o)
                .collect();
            if hits.is_empty() {
                continue;
            }
            line(&mut out, format!("{title}:"));
            for r in hits.iter().take(SHOWN) {
                let why = r
                    .sidecar
                    .stats
                    .verdict_details
                    .first()
                    .map(|s| first_line(s, 100))
                    .unwrap_or_else(|| "(no reason recorded)".into());
                line(&mut out, format!("  {}: {why}", describe(r)));
            }
            if hits.len() > SHOWN {
                line(&mut out, format!("  ... and {} more", hits.len() - SHOWN));
            }
        }
        for u in self.unreadable.iter().take(SHOWN) {
            line(
                &mut out,
                format!("unreadable sidecar: {}", first_line(u, 160)),
            );
        }
        let dirs = self.dirs();
        if !dirs.is_empty() {
            line(&mut out, "sidecars:".into());
            for d in &dirs {
                line(&mut out, format!("  {}", d.display()));
            }
            let first = dirs.iter().next().expect("not empty");
            line(
                &mut out,
                format!("details: cargo ktstr stats show {}", first.display()),
            );
        }
        out
    }
}

fn describe(r: &Ran) -> String {
    let s = &r.sidecar;
    format!(
        "{:<5} {} [{}] {}",
        s.outcome().as_str(),
        s.test_name,
        s.topology,
        s.kernel_version.as_deref().unwrap_or("unknown kernel")
    )
}

fn first_line(s: &str, max: usize) -> String {
    let l = s.lines().next().unwrap_or("");
    if l.chars().count() > max {
        format!("{}...", l.chars().take(max).collect::<String>())
    } else {
        l.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_half_the_cpus_and_at_least_one() {
        assert_eq!(vm_slots(1), 1);
        assert_eq!(vm_slots(2), 1);
        assert_eq!(vm_slots(8), 4);
        assert_eq!(vm_slots(9), 4);
    }

    #[test]
    fn tool_config_defines_the_group_and_the_override() {
        let t = nextest_tool_config(3, false);
        assert!(
            t.contains("\"@tool:ktstr:vm\" = { max-threads = 3 }"),
            "{t}"
        );
        assert!(
            t.contains(r#"slow-timeout = { period = "120s", terminate-after = 10 }"#),
            "{t}"
        );
        let nested = nextest_tool_config(1, true);
        assert!(
            nested.contains(r#"slow-timeout = { period = "60s", terminate-after = 5 }"#),
            "{nested}"
        );
        assert!(t.contains("test-group = \"@tool:ktstr:vm\""), "{t}");
        assert!(t.contains(r"filter = 'test(/^(ktstr|gauntlet)\//)'"), "{t}");
    }

    fn meta(packages: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "target_directory": "/p/target",
            "packages": packages,
        }))
        .unwrap()
    }

    #[test]
    fn metadata_finds_the_guest_in_the_workspace_or_beside_ktstr() {
        let p = parse_metadata(&meta(serde_json::json!([
            {"name": "ktstr-guest", "manifest_path": "/k/guest/Cargo.toml"},
            {"name": "ktstr", "manifest_path": "/k/crates/ktstr/Cargo.toml"},
        ])))
        .unwrap();
        assert_eq!(p.target_dir, Path::new("/p/target"));
        assert_eq!(p.guest_manifest.unwrap(), Path::new("/k/guest/Cargo.toml"));

        // A project outside the workspace: the guest sits in ktstr's checkout.
        let ws = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(ws.path().join("crates/ktstr")).unwrap();
        std::fs::create_dir_all(ws.path().join("guest")).unwrap();
        std::fs::write(
            ws.path().join("guest/Cargo.toml"),
            "[package]\nname = \"ktstr-guest\"\n",
        )
        .unwrap();
        let ktstr = ws.path().join("crates/ktstr/Cargo.toml");
        let p = parse_metadata(&meta(serde_json::json!([
            {"name": "mine", "manifest_path": "/p/Cargo.toml"},
            {"name": "ktstr", "manifest_path": ktstr},
        ])))
        .unwrap();
        assert_eq!(
            p.guest_manifest.unwrap(),
            ws.path().join("guest/Cargo.toml")
        );

        // `--no-deps`: only the project's packages, ktstr as a path dependency.
        let p = parse_metadata(&meta(serde_json::json!([
            {"name": "mine", "manifest_path": "/p/Cargo.toml", "dependencies": [
                {"name": "serde", "source": "registry+https://github.com/rust-lang/crates.io-index"},
                {"name": "ktstr", "path": ws.path().join("crates/ktstr")},
            ]},
        ])))
        .unwrap();
        assert_eq!(
            p.guest_manifest.unwrap(),
            ws.path().join("guest/Cargo.toml")
        );

        let p = parse_metadata(&meta(serde_json::json!([
            {"name": "mine", "manifest_path": "/p/Cargo.toml"},
        ])))
        .unwrap();
        assert!(p
            .guest_manifest
            .unwrap_err()
            .contains("does not depend on `ktstr`"));
        assert!(parse_metadata(b"not json").is_err());
    }

    fn sidecar_in(dir: &Path, name: &str, outcome: Outcome, why: &str) -> PathBuf {
        let mut s = SidecarResult::new(name, "1n1l2c1t", "eevdf");
        s.kernel_version = Some("7.2.13".into());
        s.set_outcome(outcome);
        if !why.is_empty() {
            s.stats.verdict_details.push(why.into());
        }
        s.write_to_dir(dir).unwrap()
    }

    #[test]
    fn summary_counts_ranks_and_explains() {
        let dir = tempfile::tempdir().unwrap();
        let a = sidecar_in(dir.path(), "fast_pass", Outcome::Pass, "");
        let b = sidecar_in(
            dir.path(),
            "slow_fail",
            Outcome::Fail,
            "worker spin[0] made no progress\nmore",
        );
        let c = sidecar_in(
            dir.path(),
            "skipped",
            Outcome::Skip,
            "kernel unavailable: no kernel",
        );
        let manifest = dir.path().join("m.tsv");
        std::fs::write(
            &manifest,
            format!(
                "1200\t{}\n30000\t{}\n5\t{}\n7\t{}\n",
                a.display(),
                b.display(),
                c.display(),
                dir.path().join("gone.ktstr.json").display()
            ),
        )
        .unwrap();
        let s = read_manifest(&manifest);
        assert_eq!(s.ran.len(), 3);
        assert_eq!(s.unreadable.len(), 1);
        assert_eq!(
            (
                s.count(Outcome::Pass),
                s.count(Outcome::Fail),
                s.count(Outcome::Skip)
            ),
            (1, 1, 1)
        );
        let text = s.render();
        assert!(
            text.starts_with("ktstr: 3 tests: 1 passed, 1 failed, 1 skipped, 0 inconclusive\n"),
            "{text}"
        );
        let slowest = text.split("slowest:\n").nth(1).unwrap();
        assert!(
            slowest.starts_with("     30.0 s  fail  slow_fail [1n1l2c1t] 7.2.13\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "failed:\n  fail  slow_fail [1n1l2c1t] 7.2.13: worker spin[0] made no progress\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "skipped:\n  skip  skipped [1n1l2c1t] 7.2.13: kernel unavailable: no kernel\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(&format!("sidecars:\n  {}\n", dir.path().display())),
            "{text}"
        );
        assert!(text.lines().count() < 25, "one screen:\n{text}");
    }

    #[test]
    fn an_empty_run_says_so() {
        let s = read_manifest(Path::new("/nonexistent/ktstr/manifest"));
        assert!(s.render().starts_with("ktstr: no ktstr test ran"));
    }
}
