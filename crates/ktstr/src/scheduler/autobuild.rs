//! Building schedulers on demand into the scheduler cache, statically (one file in the
//! initramfs, no libraries), with the recipe measured in `scx-schedulers.md`:
//!
//! ```text
//! BPF_CLANG=clang-19 RUSTFLAGS="-C target-feature=+crt-static" \
//!   cargo install --locked <name> --version <v> --target <host triple> \
//!   --root <cache>/<name>-<v> --target-dir <cache>/target
//! ```
//!
//! A repository project (`schedulers/ktstr-stall`) is built with `cargo build --release`
//! into the same target directory and copied to `<cache>/<name>-local/bin/`. Builds of
//! the same recipe from parallel test processes are serialised by a lock file; the
//! build's output goes to `<cache>/<name>-<v>.build.log`.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use super::resolve::host_triple;

/// What went wrong building a scheduler.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("no clang for the BPF side: install one (Debian bookworm: `apt-get install -t bookworm clang-19 libelf-dev zlib1g-dev pkg-config`) or set BPF_CLANG=/path/to/clang")]
    NoClang,
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}); full log: {}\n{tail}", log.display())]
    Failed {
        command: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("`{command}` succeeded but {} is not there", binary.display())]
    NoBinary { command: String, binary: PathBuf },
}

/// How one scheduler is built and where its binary lands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRecipe {
    pub name: String,
    pub kind: RecipeKind,
    /// `<cache>/<name>-<version or "local">`.
    pub root: PathBuf,
    /// Shared cargo target directory of static builds.
    pub target_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipeKind {
    CratesIo {
        version: String,
    },
    /// A cargo project on this machine.
    Local {
        project: PathBuf,
    },
}

impl BuildRecipe {
    pub fn crates_io(name: &str, version: &str, cache: &Path) -> Self {
        BuildRecipe {
            name: name.to_string(),
            kind: RecipeKind::CratesIo {
                version: version.to_string(),
            },
            root: cache.join(format!("{name}-{version}")),
            target_dir: cache.join("target"),
        }
    }

    pub fn local(name: &str, project: &Path, cache: &Path) -> Self {
        BuildRecipe {
            name: name.to_string(),
            kind: RecipeKind::Local {
                project: project.to_path_buf(),
            },
            root: cache.join(format!("{name}-local")),
            target_dir: cache.join("target"),
        }
    }

    /// Where the built binary lives.
    pub fn binary(&self) -> PathBuf {
        self.root.join("bin").join(&self.name)
    }

    /// The cached binary when it can be used as is: present, and for a local project
    /// newer than every source file.
    pub fn cached_binary(&self) -> Option<PathBuf> {
        let bin = self.binary();
        let built = bin.metadata().and_then(|m| m.modified()).ok()?;
        match &self.kind {
            RecipeKind::CratesIo { .. } => Some(bin),
            RecipeKind::Local { project } => {
                let newest = newest_mtime(project)?;
                (built >= newest).then_some(bin)
            }
        }
    }

    fn cargo_args(&self) -> Vec<String> {
        let triple = host_triple();
        let target_dir = self.target_dir.display().to_string();
        match &self.kind {
            RecipeKind::CratesIo { version } => vec![
                "install".into(),
                "--locked".into(),
                self.name.clone(),
                "--version".into(),
                version.clone(),
                "--target".into(),
                triple,
                "--root".into(),
                self.root.display().to_string(),
                "--target-dir".into(),
                target_dir,
            ],
            RecipeKind::Local { project } => vec![
                "build".into(),
                "--release".into(),
                "--locked".into(),
                "--manifest-path".into(),
                project.join("Cargo.toml").display().to_string(),
                "--target".into(),
                triple,
                "--target-dir".into(),
                target_dir,
            ],
        }
    }

    /// The command, as a person would type it.
    pub fn command_line(&self) -> String {
        format!(
            "BPF_CLANG=clang-19 RUSTFLAGS=\"-C target-feature=+crt-static\" cargo {}",
            self.cargo_args().join(" ")
        )
    }

    fn log_path(&self) -> PathBuf {
        let mut p = self.root.clone().into_os_string();
        p.push(".build.log");
        PathBuf::from(p)
    }
}

/// Newest modification time among a project's sources (`Cargo.toml`, `Cargo.lock`,
/// `build.rs`, everything under `src/`).
fn newest_mtime(project: &Path) -> Option<SystemTime> {
    fn walk(dir: &Path, newest: &mut SystemTime) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, newest);
            } else if let Ok(t) = e.metadata().and_then(|m| m.modified()) {
                *newest = (*newest).max(t);
            }
        }
    }
    let mut newest = SystemTime::UNIX_EPOCH;
    for f in ["Cargo.toml", "Cargo.lock", "build.rs"] {
        if let Ok(t) = project.join(f).metadata().and_then(|m| m.modified()) {
            newest = newest.max(t);
        }
    }
    walk(&project.join("src"), &mut newest);
    (newest > SystemTime::UNIX_EPOCH).then_some(newest)
}

/// `$BPF_CLANG`, else the newest `clang-NN` (NN >= 18, what scx needs) or `clang` on
/// `$PATH`.
pub fn find_bpf_clang() -> Option<String> {
    if let Some(c) = std::env::var_os("BPF_CLANG").filter(|c| !c.is_empty()) {
        return Some(c.to_string_lossy().into_owned());
    }
    (18..=24)
        .rev()
        .map(|v| format!("clang-{v}"))
        .chain(std::iter::once("clang".to_string()))
        .find(|c| crate::which::which(c).is_some())
}

/// An exclusive `flock` held until dropped.
struct BuildLock {
    _file: File,
}

impl BuildLock {
    fn take(path: &Path) -> Result<Self, BuildError> {
        let f = File::create(path).map_err(|source| BuildError::Io {
            what: "creating the build lock",
            path: path.to_path_buf(),
            source,
        })?;
        // SAFETY: flock on an fd we own; blocks until the other builder is done.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(BuildError::Io {
                what: "locking",
                path: path.to_path_buf(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(BuildLock { _file: f })
    }
}

/// Builds the recipe (or waits for a parallel build of it) and returns the binary.
pub fn build(recipe: &BuildRecipe) -> Result<PathBuf, BuildError> {
    let parent = recipe.root.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|source| BuildError::Io {
        what: "creating the scheduler cache",
        path: parent.to_path_buf(),
        source,
    })?;
    let mut lock_path = recipe.root.clone().into_os_string();
    lock_path.push(".lock");
    let _lock = BuildLock::take(Path::new(&lock_path))?;
    if let Some(bin) = recipe.cached_binary() {
        return Ok(bin);
    }
    let clang = find_bpf_clang().ok_or(BuildError::NoClang)?;
    let log = recipe.log_path();
    let log_file = File::create(&log).map_err(|source| BuildError::Io {
        what: "creating the build log",
        path: log.clone(),
        source,
    })?;
    let log_err = log_file.try_clone().map_err(|source| BuildError::Io {
        what: "duplicating the build log",
        path: log.clone(),
        source,
    })?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let args = recipe.cargo_args();
    tracing::info!(
        "building scheduler {} (log: {}): {}",
        recipe.name,
        log.display(),
        recipe.command_line()
    );
    eprintln!(
        "ktstr: building scheduler {} on demand (a cold scx build takes minutes); log: {}",
        recipe.name,
        log.display()
    );
    let mut cmd = Command::new(&cargo);
    cmd.args(&args)
        .env("BPF_CLANG", &clang)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        // Only RUSTFLAGS above may apply; these would override it.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err);
    if let RecipeKind::Local { project } = &recipe.kind {
        // Its .cargo/config.toml (static libelf search path) applies from there.
        cmd.current_dir(project);
        if std::env::var_os("LIBBPF_SYS_LIBRARY_PATH").is_none() {
            cmd.env(
                "LIBBPF_SYS_LIBRARY_PATH",
                format!("/usr/lib/{}-linux-gnu", std::env::consts::ARCH),
            );
        }
    }
    let status = cmd.status().map_err(|source| BuildError::Io {
        what: "running",
        path: PathBuf::from(&cargo),
        source,
    })?;
    if !status.success() {
        return Err(BuildError::Failed {
            command: recipe.command_line(),
            status: status.to_string(),
            tail: log_tail(&log, 15),
            log,
        });
    }
    if let RecipeKind::Local { .. } = &recipe.kind {
        install_local(recipe)?;
    }
    let bin = recipe.binary();
    if !bin.is_file() {
        return Err(BuildError::NoBinary {
            command: recipe.command_line(),
            binary: bin,
        });
    }
    Ok(bin)
}

/// Copies a local project's release binary into the recipe's `bin/`.
fn install_local(recipe: &BuildRecipe) -> Result<(), BuildError> {
    let built = recipe
        .target_dir
        .join(host_triple())
        .join("release")
        .join(&recipe.name);
    let dest = recipe.binary();
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| BuildError::Io { what, path, source }
    };
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let tmp = dest.with_extension("tmp");
    std::fs::copy(&built, &tmp).map_err(io("copying", &built))?;
    std::fs::rename(&tmp, &dest).map_err(io("installing", &dest))?;
    Ok(())
}

fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crates_io_recipe_is_the_measured_static_install() {
        let r = BuildRecipe::crates_io("scx_bpfland", "1.1.4", Path::new("/c"));
        assert_eq!(
            r.binary(),
            PathBuf::from("/c/scx_bpfland-1.1.4/bin/scx_bpfland")
        );
        let cmd = r.command_line();
        for needle in [
            "RUSTFLAGS=\"-C target-feature=+crt-static\"",
            "install --locked scx_bpfland --version 1.1.4",
            "--root /c/scx_bpfland-1.1.4",
            "--target-dir /c/target",
        ] {
            assert!(cmd.contains(needle), "{needle} in {cmd}");
        }
        assert!(
            cmd.contains(&format!("--target {}", host_triple())),
            "{cmd}"
        );
    }

    #[test]
    fn a_local_binary_older_than_its_sources_is_stale() {
        let t = tempfile::tempdir().unwrap();
        let project = t.path().join("proj");
        std::fs::create_dir_all(project.join("src")).unwrap();
        std::fs::write(project.join("Cargo.toml"), "").unwrap();
        let r = BuildRecipe::local("demo", &project, &t.path().join("cache"));
        assert_eq!(r.cached_binary(), None, "nothing built yet");
        std::fs::create_dir_all(r.binary().parent().unwrap()).unwrap();
        std::fs::write(r.binary(), b"bin").unwrap();
        let old = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        File::options()
            .write(true)
            .open(r.binary())
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(r.cached_binary(), None, "older than Cargo.toml");
        File::options()
            .write(true)
            .open(r.binary())
            .unwrap()
            .set_modified(SystemTime::now() + std::time::Duration::from_secs(60))
            .unwrap();
        assert_eq!(r.cached_binary(), Some(r.binary()));
    }
}
