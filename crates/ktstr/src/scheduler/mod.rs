//! The scheduler under test, on the host: what a test asks for ([`Scheduler`]: EEVDF, a
//! path, or a name to discover, with arguments, sysctls, kargs and a watchdog timeout),
//! how it is found ([`resolve`]: `KTSTR_SCHEDULER`, `$PATH`, beside the test binary,
//! `target/{debug,release}`, or built on demand by [`autobuild`]), what the guest is told
//! ([`Prepared::guest`]). How the guest's reports about it are judged is
//! [`crate::assert::scheduler`].
//!
//! ```
//! use std::time::Duration;
//! use ktstr::scheduler::Scheduler;
//!
//! let s = Scheduler::named("ktstr-stall")
//!     .arg("--stall-after-s")
//!     .arg("2")
//!     .watchdog_timeout(Duration::from_secs(3))
//!     .sysctl("kernel.sched_autogroup_enabled", "0");
//! assert_eq!(s.name(), "ktstr-stall");
//! assert_eq!(Scheduler::from("eevdf"), Scheduler::eevdf());
//! assert_eq!(Scheduler::from("target/release/scx_x").name(), "scx_x");
//! ```

pub mod autobuild;
pub mod resolve;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ktstr_sidecar::{ProgVerifierStats, ResolveSource};
use ktstr_wire::sched::{ProgInsns, SchedulerSpec, BPF_PROG_TYPE_STRUCT_OPS};

pub use resolve::{Missing, Probe};

/// The name EEVDF (no sched_ext scheduler) goes by.
pub const EEVDF: &str = "eevdf";

/// Where the scheduler binary comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// No sched_ext scheduler: the kernel's EEVDF.
    Eevdf,
    /// This file.
    Path(PathBuf),
    /// Discover a binary of this name (see [`resolve`]).
    Named(String),
}

/// The scheduler a test runs under, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduler {
    source: Source,
    args: Vec<String>,
    sysctls: Vec<(String, String)>,
    kargs: Vec<String>,
    watchdog_timeout: Option<Duration>,
    watchdog_arg: Option<String>,
    crate_version: Option<String>,
    skip_if_missing: bool,
    attach_timeout: Option<Duration>,
}

impl Default for Scheduler {
    fn default() -> Self {
        Scheduler::eevdf()
    }
}

impl Scheduler {
    fn with_source(source: Source) -> Self {
        Scheduler {
            source,
            args: Vec::new(),
            sysctls: Vec::new(),
            kargs: Vec::new(),
            watchdog_timeout: None,
            watchdog_arg: None,
            crate_version: None,
            skip_if_missing: false,
            attach_timeout: None,
        }
    }

    /// The kernel's own scheduler: nothing is started in the guest.
    pub fn eevdf() -> Self {
        Self::with_source(Source::Eevdf)
    }

    /// A scheduler found by name (`scx_bpfland`, `ktstr-stall`): see [`resolve`].
    pub fn named(name: impl Into<String>) -> Self {
        Self::with_source(Source::Named(name.into()))
    }

    /// This binary.
    pub fn path(path: impl Into<PathBuf>) -> Self {
        Self::with_source(Source::Path(path.into()))
    }

    /// One more command-line argument.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    /// More command-line arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// A sysctl written in the guest before the scheduler starts (`kernel.foo`, `1`).
    pub fn sysctl(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.sysctls.push((key.into(), value.into()));
        self
    }

    /// A kernel command-line argument the scheduler needs.
    pub fn karg(mut self, karg: impl Into<String>) -> Self {
        self.kargs.push(karg.into());
        self
    }

    /// The sched_ext watchdog timeout for this run. The kernel takes it from the
    /// scheduler's `sched_ext_ops.timeout_ms` (at most 30 s; there is no sysfs or module
    /// knob for it), so it reaches the scheduler as an argument: see
    /// [`Scheduler::watchdog_arg`].
    pub fn watchdog_timeout(mut self, timeout: Duration) -> Self {
        self.watchdog_timeout = Some(timeout);
        self
    }

    /// The option that sets the scheduler's watchdog timeout in milliseconds
    /// (`--timeout-ms` for ktstr-stall, which is known; other schedulers need this to
    /// use [`Scheduler::watchdog_timeout`]).
    pub fn watchdog_arg(mut self, flag: impl Into<String>) -> Self {
        self.watchdog_arg = Some(flag.into());
        self
    }

    /// The crates.io version to build when the scheduler must be built on demand
    /// (known schedulers have a pinned default).
    pub fn crate_version(mut self, version: impl Into<String>) -> Self {
        self.crate_version = Some(version.into());
        self
    }

    /// Skip the test instead of failing it when the scheduler cannot be found.
    pub fn skip_if_missing(mut self) -> Self {
        self.skip_if_missing = true;
        self
    }

    /// How long the guest waits for the scheduler to attach (default 30 s).
    pub fn attach_timeout(mut self, timeout: Duration) -> Self {
        self.attach_timeout = Some(timeout);
        self
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The command-line arguments given so far (without the watchdog option, which
    /// [`Scheduler::prepare`] appends).
    pub fn arg_list(&self) -> &[String] {
        &self.args
    }

    /// The watchdog timeout asked for, if any.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog_timeout
    }

    pub fn is_eevdf(&self) -> bool {
        self.source == Source::Eevdf
    }

    /// The sidecar's `scheduler`: `eevdf`, the name, or a path's file name.
    pub fn name(&self) -> String {
        match &self.source {
            Source::Eevdf => EEVDF.to_string(),
            Source::Named(n) => n.clone(),
            Source::Path(p) => p
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.display().to_string()),
        }
    }

    /// The sysctls as the sidecar records them: `sysctl.<key>=<value>`.
    pub fn sysctl_strings(&self) -> Vec<String> {
        self.sysctls
            .iter()
            .map(|(k, v)| format!("sysctl.{k}={v}"))
            .collect()
    }

    pub fn kargs(&self) -> &[String] {
        &self.kargs
    }

    /// Finds the binary and builds what the guest needs; [`Missing`] says why not and
    /// how to provide it.
    pub fn prepare(&self) -> Result<Prepared, Missing> {
        self.prepare_with(&Probe::from_env())
    }

    /// [`Scheduler::prepare`] with an explicit view of the environment.
    pub fn prepare_with(&self, probe: &Probe) -> Result<Prepared, Missing> {
        let name = self.name();
        let mut prepared = Prepared {
            name: name.clone(),
            resolve_source: None,
            binary: None,
            guest: None,
            sysctls: self.sysctl_strings(),
            kargs: self.kargs.clone(),
        };
        if self.is_eevdf() {
            if !self.args.is_empty() || self.watchdog_timeout.is_some() {
                return Err(Missing {
                    name,
                    message: "EEVDF takes no scheduler arguments or watchdog timeout: name a \
                              sched_ext scheduler, or drop them"
                        .into(),
                    skip: false,
                });
            }
            return Ok(prepared);
        }
        let (binary, source) = resolve::find(self, probe)?;
        let mut args = self.args.clone();
        if let Some(t) = self.watchdog_timeout {
            let known = resolve::known(&name).and_then(|k| k.watchdog_arg);
            let Some(flag) = self.watchdog_arg.as_deref().or(known) else {
                return Err(Missing {
                    name: name.clone(),
                    message: format!(
                        "a watchdog timeout was asked for, but ktstr does not know how to pass \
                         one to `{name}`: the kernel takes it from the scheduler's \
                         sched_ext_ops.timeout_ms, so give the option that sets it with \
                         .watchdog_arg(\"--its-flag\"), or drop .watchdog_timeout()"
                    ),
                    skip: false,
                });
            };
            args.push(flag.to_string());
            args.push(t.as_millis().to_string());
        }
        let file = binary
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| name.clone());
        let mut spec = SchedulerSpec::new(name, format!("/bin/{file}"));
        spec.args = args;
        spec.watchdog_timeout_ms = self.watchdog_timeout.map(|t| t.as_millis() as u64);
        spec.sysctls = self.sysctls.clone();
        if let Some(t) = self.attach_timeout {
            spec.attach_timeout_ms = t.as_millis() as u64;
        }
        prepared.resolve_source = Some(source);
        prepared.binary = Some(binary);
        prepared.guest = Some(spec);
        Ok(prepared)
    }

    /// Whether a missing scheduler skips the test rather than failing it.
    pub fn skips_if_missing(&self) -> bool {
        self.skip_if_missing
    }
}

/// `eevdf` (or empty) is EEVDF, anything with a `/` a path, the rest a name.
impl From<&str> for Scheduler {
    fn from(s: &str) -> Self {
        let s = s.trim();
        if s.is_empty() || s == EEVDF {
            Scheduler::eevdf()
        } else if s.contains('/') {
            Scheduler::path(s)
        } else {
            Scheduler::named(s)
        }
    }
}

impl From<String> for Scheduler {
    fn from(s: String) -> Self {
        Scheduler::from(s.as_str())
    }
}

impl From<&Path> for Scheduler {
    fn from(p: &Path) -> Self {
        Scheduler::path(p)
    }
}

/// A scheduler ready to pack: its binary, how it was found, and the guest's part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The sidecar's `scheduler`.
    pub name: String,
    /// None for EEVDF.
    pub resolve_source: Option<ResolveSource>,
    /// The host binary to pack (as `/bin/<file name>`); None for EEVDF.
    pub binary: Option<PathBuf>,
    /// What the guest starts; None for EEVDF.
    pub guest: Option<SchedulerSpec>,
    /// The scheduler's sysctls, `sysctl.<key>=<value>` (the guest gets them in `guest`).
    pub sysctls: Vec<String>,
    /// Kernel command-line arguments for the scheduler.
    pub kargs: Vec<String>,
}

/// `sysctl.<key>=<value>` (or `<key>=<value>`) as a `(key, value)` pair.
pub fn parse_sysctl(s: &str) -> Result<(String, String), String> {
    let body = s.strip_prefix("sysctl.").unwrap_or(s);
    match body.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!(
            "sysctl `{s}` is not `sysctl.<key>=<value>` (e.g. sysctl.kernel.sched_autogroup_enabled=0)"
        )),
    }
}

/// The sidecar's `verifier_stats`: the struct_ops programs the guest listed.
pub fn verifier_stats(progs: &[ProgInsns]) -> Vec<ProgVerifierStats> {
    progs
        .iter()
        .filter(|p| p.prog_type == BPF_PROG_TYPE_STRUCT_OPS)
        .map(|p| ProgVerifierStats {
            name: p.name.clone(),
            // The kernel reads a u32 and caps it at 1 M; saturate anything else.
            verified_insns: u32::try_from(p.verified_insns).unwrap_or(u32::MAX),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_with(dir: &Path) -> Probe {
        Probe {
            env_override: None,
            path_var: Some(dir.as_os_str().to_owned()),
            exe_dir: None,
            target_dir: None,
            cache_dir: dir.join("cache"),
            source_root: None,
            auto_build: false,
        }
    }

    fn exe(dir: &Path, name: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn strings_map_to_sources() {
        assert!(Scheduler::from("").is_eevdf());
        assert!(Scheduler::from(" eevdf ").is_eevdf());
        assert_eq!(
            Scheduler::from("scx_bpfland").source(),
            &Source::Named("scx_bpfland".into())
        );
        let p = Scheduler::from("./target/release/scx_lavd");
        assert_eq!(
            p.source(),
            &Source::Path("./target/release/scx_lavd".into())
        );
        assert_eq!(p.name(), "scx_lavd");
    }

    #[test]
    fn eevdf_prepares_to_nothing_but_keeps_sysctls_and_kargs() {
        let dir = tempfile::tempdir().unwrap();
        let p = Scheduler::eevdf()
            .sysctl("kernel.sched_autogroup_enabled", "0")
            .karg("nosmt")
            .prepare_with(&probe_with(dir.path()))
            .unwrap();
        assert_eq!(p.name, "eevdf");
        assert_eq!(p.resolve_source, None);
        assert_eq!(p.guest, None);
        assert_eq!(p.sysctls, vec!["sysctl.kernel.sched_autogroup_enabled=0"]);
        assert_eq!(p.kargs, vec!["nosmt"]);
        assert!(Scheduler::eevdf()
            .arg("-v")
            .prepare_with(&probe_with(dir.path()))
            .is_err());
    }

    #[test]
    fn a_found_scheduler_becomes_a_guest_spec() {
        let dir = tempfile::tempdir().unwrap();
        exe(dir.path(), "ktstr-stall");
        let p = Scheduler::named("ktstr-stall")
            .args(["--stall-after-s", "2"])
            .watchdog_timeout(Duration::from_millis(3000))
            .sysctl("kernel.x", "1")
            .attach_timeout(Duration::from_secs(9))
            .prepare_with(&probe_with(dir.path()))
            .unwrap();
        assert_eq!(p.resolve_source, Some(ResolveSource::PathLookup));
        let g = p.guest.unwrap();
        assert_eq!(g.binary_guest_path, "/bin/ktstr-stall");
        assert_eq!(
            g.args,
            vec!["--stall-after-s", "2", "--timeout-ms", "3000"],
            "the known watchdog option is appended"
        );
        assert_eq!(g.watchdog_timeout_ms, Some(3000));
        assert_eq!(g.sysctls, vec![("kernel.x".to_string(), "1".to_string())]);
        assert_eq!(g.attach_timeout_ms, 9000);
    }

    #[test]
    fn a_watchdog_timeout_needs_a_way_in() {
        let dir = tempfile::tempdir().unwrap();
        exe(dir.path(), "scx_mine");
        let s = Scheduler::named("scx_mine").watchdog_timeout(Duration::from_secs(5));
        let e = s.prepare_with(&probe_with(dir.path())).unwrap_err();
        assert!(e.message.contains("watchdog_arg"), "{}", e.message);
        let ok = s
            .watchdog_arg("--wd-ms")
            .prepare_with(&probe_with(dir.path()))
            .unwrap();
        assert_eq!(ok.guest.unwrap().args, vec!["--wd-ms", "5000"]);
    }

    #[test]
    fn sysctl_strings_parse() {
        assert_eq!(
            parse_sysctl("sysctl.kernel.sched_autogroup_enabled=0").unwrap(),
            ("kernel.sched_autogroup_enabled".into(), "0".into())
        );
        assert_eq!(
            parse_sysctl("vm.swappiness = 10").unwrap(),
            ("vm.swappiness".into(), "10".into())
        );
        assert!(parse_sysctl("sysctl.novalue").is_err());
        assert!(parse_sysctl("=1").is_err());
    }

    #[test]
    fn verifier_stats_keep_struct_ops_only() {
        let progs = [
            ProgInsns {
                id: 1,
                prog_type: BPF_PROG_TYPE_STRUCT_OPS,
                name: "bpfland_enqueue".into(),
                verified_insns: 1234,
            },
            ProgInsns {
                id: 2,
                prog_type: 26,
                name: "tracing".into(),
                verified_insns: 9,
            },
        ];
        assert_eq!(
            verifier_stats(&progs),
            vec![ProgVerifierStats {
                name: "bpfland_enqueue".into(),
                verified_insns: 1234
            }]
        );
    }
}
