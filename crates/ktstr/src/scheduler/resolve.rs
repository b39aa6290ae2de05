//! Finding a scheduler binary by name, in order (the first hit wins, and names the
//! sidecar's `resolve_source`):
//!
//! 1. `KTSTR_SCHEDULER` (`env_var`): `name=/path` entries separated by `,`; a bare
//!    `/path` applies to every named scheduler. A set but wrong entry is an error, not a
//!    fall-through.
//! 2. `$PATH` (`path_lookup`).
//! 3. Next to the test binary (`sibling_dir`): its directory, and the profile directory
//!    above it when it sits in `deps/`.
//! 4. `target/debug` then `target/release` of the cargo target directory
//!    (`target_debug`, `target_release`), also under `target/<host triple>/`.
//! 5. Built on demand (`auto_built`): a known crates.io scheduler (or one given a
//!    [`Scheduler::crate_version`]) is `cargo install`ed statically into the scheduler
//!    cache; `ktstr-stall` is built from `schedulers/ktstr-stall`. Reuses the cache when
//!    the binary is already there. `KTSTR_NO_AUTO_BUILD=1` turns building off.
//!
//! Nothing found gives a [`Missing`] whose message says where ktstr looked and how to
//! provide the binary.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use ktstr_sidecar::ResolveSource;

use super::autobuild::{self, BuildRecipe};
use super::{Scheduler, Source};

/// Binary override(s) for named schedulers.
pub const SCHEDULER_ENV: &str = "KTSTR_SCHEDULER";
/// Where built schedulers are cached (default `~/.cache/ktstr/schedulers`).
pub const SCHEDULER_CACHE_ENV: &str = "KTSTR_SCHEDULER_CACHE";
/// Set non-empty to never build a scheduler on demand.
pub const NO_AUTO_BUILD_ENV: &str = "KTSTR_NO_AUTO_BUILD";

/// A scheduler ktstr knows how to build, and how it takes a watchdog timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    pub name: &'static str,
    pub recipe: KnownRecipe,
    /// Option that sets its sched_ext watchdog timeout in ms, if it has one.
    pub watchdog_arg: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownRecipe {
    /// `cargo install <name> --version <v>` from crates.io.
    CratesIo { version: &'static str },
    /// A project of this repository, relative to its root.
    Local { dir: &'static str },
}

/// Schedulers built on demand without further configuration. scx_bpfland 1.1.4 is the
/// verified one (static, attaches on the Debian 7.2 kernel); the other scx 1.1.4 crates
/// build with the same recipe (scx_rustland also needs libseccomp-dev).
pub const KNOWN: &[Known] = &[
    Known {
        name: "scx_bpfland",
        recipe: KnownRecipe::CratesIo { version: "1.1.4" },
        watchdog_arg: None,
    },
    Known {
        name: "scx_lavd",
        recipe: KnownRecipe::CratesIo { version: "1.1.4" },
        watchdog_arg: None,
    },
    Known {
        name: "scx_beerland",
        recipe: KnownRecipe::CratesIo { version: "1.1.4" },
        watchdog_arg: None,
    },
    Known {
        name: "scx_rustland",
        recipe: KnownRecipe::CratesIo { version: "1.1.4" },
        watchdog_arg: None,
    },
    Known {
        name: "ktstr-stall",
        recipe: KnownRecipe::Local {
            dir: "schedulers/ktstr-stall",
        },
        watchdog_arg: Some("--timeout-ms"),
    },
];

/// The [`KNOWN`] entry of a name.
pub fn known(name: &str) -> Option<&'static Known> {
    KNOWN.iter().find(|k| k.name == name)
}

/// Why a scheduler cannot be used, and how to fix that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The sidecar's `scheduler`.
    pub name: String,
    pub message: String,
    /// The test asked to be skipped rather than failed.
    pub skip: bool,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Missing {}

/// What resolution looks at, taken from the process environment by
/// [`Probe::from_env`] (tests build their own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// `KTSTR_SCHEDULER`.
    pub env_override: Option<String>,
    /// `$PATH`.
    pub path_var: Option<OsString>,
    /// Directory of the running test binary.
    pub exe_dir: Option<PathBuf>,
    /// The cargo target directory.
    pub target_dir: Option<PathBuf>,
    /// Where built schedulers are cached.
    pub cache_dir: PathBuf,
    /// Root of the ktstr source tree (for `Local` recipes); None when not available.
    pub source_root: Option<PathBuf>,
    /// Building on demand is allowed.
    pub auto_build: bool,
}

impl Probe {
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        Probe {
            env_override: var(SCHEDULER_ENV),
            path_var: std::env::var_os("PATH"),
            exe_dir: std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(Path::to_path_buf)),
            target_dir: ktstr_sidecar::paths::cargo_target_dir(&cwd),
            cache_dir: scheduler_cache_dir(),
            source_root: source_root(),
            auto_build: var(NO_AUTO_BUILD_ENV).is_none(),
        }
    }
}

/// `KTSTR_SCHEDULER_CACHE`, else `$XDG_CACHE_HOME/ktstr/schedulers`, else
/// `~/.cache/ktstr/schedulers`.
pub fn scheduler_cache_dir() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = var(SCHEDULER_CACHE_ENV) {
        return PathBuf::from(d);
    }
    let base = var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("ktstr").join("schedulers")
}

/// The ktstr repository this crate was built from, when it is still there.
fn source_root() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.join("schedulers").is_dir().then_some(root)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The `KTSTR_SCHEDULER` entry for `name`: its own `name=path` entry, else a bare path.
pub fn env_entry(value: &str, name: &str) -> Option<PathBuf> {
    let mut bare = None;
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match entry.split_once('=') {
            Some((n, p)) if n.trim() == name => return Some(PathBuf::from(p.trim())),
            Some(_) => {}
            None => bare = bare.or(Some(PathBuf::from(entry))),
        }
    }
    bare
}

/// Host target triple for static builds.
pub fn host_triple() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

/// Finds the binary of a non-EEVDF scheduler.
pub fn find(sched: &Scheduler, probe: &Probe) -> Result<(PathBuf, ResolveSource), Missing> {
    let name = sched.name();
    let missing = |message: String| Missing {
        name: name.clone(),
        message,
        skip: sched.skips_if_missing(),
    };
    let wanted = match sched.source() {
        Source::Eevdf => return Err(missing("EEVDF has no binary; nothing to resolve".into())),
        Source::Path(p) => {
            return if is_executable(p) {
                Ok((p.clone(), ResolveSource::Path))
            } else {
                Err(missing(format!(
                    "scheduler `{}` not found: {} is not an executable file; build it, or fix \
                     the path given to the test",
                    name,
                    p.display()
                )))
            };
        }
        Source::Named(n) => n.as_str(),
    };

    let mut looked = Vec::new();
    match probe.env_override.as_deref() {
        Some(v) => match env_entry(v, wanted) {
            Some(p) if is_executable(&p) => return Ok((p, ResolveSource::EnvVar)),
            Some(p) => {
                return Err(missing(format!(
                    "scheduler `{wanted}` not found: {SCHEDULER_ENV}={v} names {}, which is \
                     not an executable file; fix or unset {SCHEDULER_ENV}",
                    p.display()
                )))
            }
            None => looked.push(format!("{SCHEDULER_ENV} (no entry for {wanted})")),
        },
        None => looked.push(format!("{SCHEDULER_ENV} (unset)")),
    }

    if let Some(path) = &probe.path_var {
        for dir in std::env::split_paths(path) {
            let c = dir.join(wanted);
            if is_executable(&c) {
                return Ok((c, ResolveSource::PathLookup));
            }
        }
        looked.push("$PATH".into());
    }

    if let Some(exe_dir) = &probe.exe_dir {
        let mut dirs = vec![exe_dir.clone()];
        if exe_dir.file_name().is_some_and(|n| n == "deps") {
            if let Some(parent) = exe_dir.parent() {
                dirs.push(parent.to_path_buf());
            }
        }
        for d in &dirs {
            let c = d.join(wanted);
            if is_executable(&c) {
                return Ok((c, ResolveSource::SiblingDir));
            }
        }
        looked.extend(dirs.iter().map(|d| d.display().to_string()));
    }

    if let Some(target) = &probe.target_dir {
        let triple = host_triple();
        for (profile, source) in [
            ("debug", ResolveSource::TargetDebug),
            ("release", ResolveSource::TargetRelease),
        ] {
            for d in [target.join(profile), target.join(&triple).join(profile)] {
                let c = d.join(wanted);
                if is_executable(&c) {
                    return Ok((c, source));
                }
            }
            looked.push(target.join(profile).display().to_string());
        }
    }

    let recipe = build_recipe(sched, wanted, probe);
    if let Some(recipe) = &recipe {
        if let Some(bin) = recipe.cached_binary() {
            return Ok((bin, ResolveSource::AutoBuilt));
        }
        if probe.auto_build {
            return match autobuild::build(recipe) {
                Ok(bin) => Ok((bin, ResolveSource::AutoBuilt)),
                Err(e) => Err(missing(format!(
                    "scheduler `{wanted}` not found (looked in {}), and building it failed: {e}",
                    looked.join(", ")
                ))),
            };
        }
    }

    let mut seen = std::collections::BTreeSet::new();
    looked.retain(|l| seen.insert(l.clone()));
    let build_hint = match &recipe {
        Some(r) if !probe.auto_build => format!(
            "; building it on demand is off ({NO_AUTO_BUILD_ENV} is set): unset it, or build \
             it yourself with `{}`",
            r.command_line()
        ),
        Some(_) => String::new(),
        None => format!(
            "; ktstr does not know how to build `{wanted}`: give the test its crates.io \
             version with .crate_version(\"x.y.z\")"
        ),
    };
    Err(missing(format!(
        "scheduler `{wanted}` not found: looked in {}{build_hint}. Provide it: put it on \
         $PATH, set {SCHEDULER_ENV}={wanted}=/path/to/{wanted}, build it into target/release \
         (cargo build --release), or give the test a path",
        looked.join(", ")
    )))
}

/// How `wanted` would be built on demand, if ktstr can build it.
fn build_recipe(sched: &Scheduler, wanted: &str, probe: &Probe) -> Option<BuildRecipe> {
    if let Some(v) = &sched.crate_version {
        return Some(BuildRecipe::crates_io(wanted, v, &probe.cache_dir));
    }
    match known(wanted)?.recipe {
        KnownRecipe::CratesIo { version } => {
            Some(BuildRecipe::crates_io(wanted, version, &probe.cache_dir))
        }
        KnownRecipe::Local { dir } => {
            let root = probe.source_root.as_ref()?;
            Some(BuildRecipe::local(
                wanted,
                &root.join(dir),
                &probe.cache_dir,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exe(dir: &Path, name: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn empty_probe(root: &Path) -> Probe {
        Probe {
            env_override: None,
            path_var: Some(root.join("path").into_os_string()),
            exe_dir: Some(root.join("target/debug/deps")),
            target_dir: Some(root.join("target")),
            cache_dir: root.join("cache"),
            source_root: None,
            auto_build: false,
        }
    }

    fn found(probe: &Probe, name: &str) -> Result<(PathBuf, ResolveSource), Missing> {
        find(&Scheduler::named(name), probe)
    }

    #[test]
    fn env_entries_by_name_or_bare() {
        assert_eq!(
            env_entry("scx_a=/a, scx_b=/b", "scx_b"),
            Some(PathBuf::from("/b"))
        );
        assert_eq!(env_entry("/any,scx_a=/a", "scx_c"), Some("/any".into()));
        assert_eq!(env_entry("/any,scx_a=/a", "scx_a"), Some("/a".into()));
        assert_eq!(env_entry("scx_a=/a", "scx_b"), None);
    }

    #[test]
    fn each_place_reports_its_source_in_order() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let mut probe = empty_probe(root);
        let name = "scx_demo";

        let rel = exe(&root.join("target/release"), name);
        assert_eq!(
            found(&probe, name).unwrap(),
            (rel, ResolveSource::TargetRelease)
        );
        let dbg = exe(&root.join("target/debug"), name);
        // target/debug is also the test binary's profile directory (deps/..).
        assert_eq!(
            found(&probe, name).unwrap(),
            (dbg.clone(), ResolveSource::SiblingDir)
        );
        probe.exe_dir = Some(root.join("elsewhere"));
        assert_eq!(
            found(&probe, name).unwrap(),
            (dbg, ResolveSource::TargetDebug)
        );
        let sib = exe(&root.join("elsewhere"), name);
        assert_eq!(
            found(&probe, name).unwrap(),
            (sib, ResolveSource::SiblingDir)
        );
        let on_path = exe(&root.join("path"), name);
        assert_eq!(
            found(&probe, name).unwrap(),
            (on_path, ResolveSource::PathLookup)
        );
        let env = exe(&root.join("env"), name);
        probe.env_override = Some(format!("{name}={}", env.display()));
        assert_eq!(found(&probe, name).unwrap(), (env, ResolveSource::EnvVar));
    }

    #[test]
    fn a_wrong_env_override_is_an_error_not_a_fallback() {
        let t = tempfile::tempdir().unwrap();
        let mut probe = empty_probe(t.path());
        exe(&t.path().join("path"), "scx_demo");
        probe.env_override = Some("scx_demo=/nonexistent/scx_demo".into());
        let e = found(&probe, "scx_demo").unwrap_err();
        assert!(e.message.contains("KTSTR_SCHEDULER"), "{}", e.message);
    }

    #[test]
    fn triple_directories_count_as_target_profiles() {
        let t = tempfile::tempdir().unwrap();
        let mut probe = empty_probe(t.path());
        probe.exe_dir = None;
        let p = exe(
            &t.path().join("target").join(host_triple()).join("release"),
            "scx_x",
        );
        assert_eq!(
            found(&probe, "scx_x").unwrap(),
            (p, ResolveSource::TargetRelease)
        );
    }

    #[test]
    fn explicit_paths_must_exist() {
        let t = tempfile::tempdir().unwrap();
        let probe = empty_probe(t.path());
        let p = exe(t.path(), "mine");
        assert_eq!(
            find(&Scheduler::path(&p), &probe).unwrap(),
            (p, ResolveSource::Path)
        );
        let e = find(&Scheduler::path(t.path().join("nope")), &probe).unwrap_err();
        assert!(
            e.message.contains("not an executable file"),
            "{}",
            e.message
        );
    }

    #[test]
    fn not_found_says_where_it_looked_and_how_to_provide_it() {
        let t = tempfile::tempdir().unwrap();
        let probe = empty_probe(t.path());
        let e = find(
            &Scheduler::named("scx_nonexistent").skip_if_missing(),
            &probe,
        )
        .unwrap_err();
        assert!(e.skip);
        assert_eq!(e.name, "scx_nonexistent");
        for needle in [
            "KTSTR_SCHEDULER (unset)",
            "$PATH",
            "target/release",
            "crate_version",
            "KTSTR_SCHEDULER=scx_nonexistent=/path/to/scx_nonexistent",
        ] {
            assert!(e.message.contains(needle), "{needle} in: {}", e.message);
        }
    }

    #[test]
    fn a_known_scheduler_in_the_cache_is_auto_built_without_building() {
        let t = tempfile::tempdir().unwrap();
        let probe = empty_probe(t.path());
        let bin = exe(&t.path().join("cache/scx_bpfland-1.1.4/bin"), "scx_bpfland");
        assert_eq!(
            found(&probe, "scx_bpfland").unwrap(),
            (bin, ResolveSource::AutoBuilt)
        );
        // Not cached and building is off: the message names the build command.
        let e = found(&probe, "scx_lavd").unwrap_err();
        assert!(e.message.contains("cargo install"), "{}", e.message);
        assert!(e.message.contains(NO_AUTO_BUILD_ENV), "{}", e.message);
    }
}
