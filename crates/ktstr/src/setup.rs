//! Set-up on demand: what a fresh machine lacks before `cargo ktstr test` can run its
//! suite, found by cheap checks, and installed by the ktstr checkout's own scripts
//! (`scripts/setup-host`: host packages; `scripts/build-schedulers`: the BPF toolchain
//! and the schedulers the tests run) and `cargo install cargo-nextest`. The kernel is
//! fetched by `cargo ktstr test` itself. A machine that has everything does nothing
//! and says so in one line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::scheduler::autobuild::BuildRecipe;
use crate::scheduler::resolve::scheduler_cache_dir;

/// Set (non-empty) to skip set-up entirely.
pub const NO_SETUP_ENV: &str = "KTSTR_NO_SETUP";

/// Commands the host packages provide (what `scripts/setup-host` installs).
const HOST_COMMANDS: &[&str] = &[
    "qemu-system-x86_64",
    "cpio",
    "bc",
    "dpkg-deb",
    "stress-ng",
    "hackbench",
    "cyclictest",
    "chromium",
    "flex",
    "bison",
];
/// Header files of host packages (`libelf-dev`, `libssl-dev`: kernel builds).
const HOST_FILES: &[&str] = &[
    "/usr/share/keyrings/debian-archive-keyring.gpg",
    "/usr/include/gelf.h",
    "/usr/include/openssl/opensslv.h",
];

/// One piece of set-up and what it lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What it sets up, for the progress line.
    pub what: &'static str,
    /// What is missing (empty: nothing to do).
    pub missing: Vec<String>,
    /// How to do it.
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A script of the ktstr checkout, by its path under `scripts/`.
    Script(&'static str),
    /// `cargo install cargo-nextest --locked`.
    InstallNextest,
}

/// Why set-up could not finish.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "set-up needs the ktstr checkout's scripts ({0} is gone): run scripts/setup-host and scripts/build-schedulers of a ktstr checkout by hand, or set {NO_SETUP_ENV}=1"
    )]
    NoScripts(PathBuf),
    #[error("{what}: `{command}` failed ({status}); run it by hand to see why, or set {NO_SETUP_ENV}=1 to skip set-up")]
    Failed {
        what: &'static str,
        command: String,
        status: String,
    },
    #[error("{what}: cannot start `{command}`: {source}")]
    Spawn {
        what: &'static str,
        command: String,
        #[source]
        source: std::io::Error,
    },
}

/// The `scripts/` directory of the checkout this ktstr was built from.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts")
}

fn on_path(cmd: &str) -> bool {
    crate::which::which(cmd).is_some()
}

/// What this machine lacks, per step (a step with nothing missing is kept, so the
/// caller can say what was checked).
pub fn plan() -> Vec<Step> {
    let mut host: Vec<String> = HOST_COMMANDS
        .iter()
        .filter(|c| !on_path(c))
        .map(|c| c.to_string())
        .collect();
    host.extend(
        HOST_FILES
            .iter()
            .filter(|f| !Path::new(f).exists())
            .map(|f| f.to_string()),
    );
    let cache = scheduler_cache_dir();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let schedulers: Vec<String> = [
        BuildRecipe::crates_io("scx_bpfland", "1.1.4", &cache),
        BuildRecipe::local("ktstr-stall", &root.join("schedulers/ktstr-stall"), &cache),
    ]
    .iter()
    .filter(|r| r.cached_binary().is_none())
    .map(|r| r.name.clone())
    .collect();
    let nextest_ok = Command::new(crate::test_support::suite::cargo_bin())
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    vec![
        Step {
            what: "host packages",
            missing: host,
            action: Action::Script("setup-host"),
        },
        Step {
            what: "BPF toolchain and schedulers",
            missing: schedulers,
            action: Action::Script("build-schedulers"),
        },
        Step {
            what: "cargo-nextest",
            missing: if nextest_ok {
                Vec::new()
            } else {
                vec!["cargo-nextest".into()]
            },
            action: Action::InstallNextest,
        },
    ]
}

/// Does what `plan` found missing, printing a line per step (with its elapsed time);
/// one line when there is nothing to do.
pub fn run(plan: &[Step]) -> Result<(), SetupError> {
    let todo: Vec<&Step> = plan.iter().filter(|s| !s.missing.is_empty()).collect();
    if todo.is_empty() {
        let checked: Vec<&str> = plan.iter().map(|s| s.what).collect();
        eprintln!(
            "ktstr: set-up: nothing to do ({} present)",
            checked.join(", ")
        );
        return Ok(());
    }
    for step in todo {
        let started = Instant::now();
        eprintln!(
            "ktstr: set-up: {} (missing: {}) ...",
            step.what,
            step.missing.join(", ")
        );
        let mut cmd = match &step.action {
            Action::Script(name) => {
                let path = scripts_dir().join(name);
                if !path.is_file() {
                    return Err(SetupError::NoScripts(path));
                }
                Command::new(path)
            }
            Action::InstallNextest => {
                let mut c = Command::new(crate::test_support::suite::cargo_bin());
                c.args(["install", "cargo-nextest", "--locked"]);
                c
            }
        };
        let command = format!("{cmd:?}");
        let status = cmd.status().map_err(|source| SetupError::Spawn {
            what: step.what,
            command: command.clone(),
            source,
        })?;
        if !status.success() {
            return Err(SetupError::Failed {
                what: step.what,
                command,
                status: status.to_string(),
            });
        }
        eprintln!(
            "ktstr: set-up: {} done in {:.0} s",
            step.what,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Whether set-up is turned off (`KTSTR_NO_SETUP`).
pub fn disabled() -> bool {
    std::env::var_os(NO_SETUP_ENV).is_some_and(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_it_runs_exist_in_this_checkout() {
        for step in plan() {
            if let Action::Script(name) = step.action {
                assert!(scripts_dir().join(name).is_file(), "scripts/{name}");
            }
        }
    }

    #[test]
    fn nothing_missing_is_one_line_and_runs_nothing() {
        let plan = vec![Step {
            what: "x",
            missing: vec![],
            // A script that does not exist: it must not be looked at.
            action: Action::Script("no-such-script"),
        }];
        run(&plan).unwrap();
    }

    #[test]
    fn a_failing_step_names_its_command() {
        let plan = vec![Step {
            what: "a step",
            missing: vec!["y".into()],
            action: Action::Script("no-such-script"),
        }];
        let e = run(&plan).unwrap_err().to_string();
        assert!(e.contains("no-such-script"), "{e}");
    }
}
