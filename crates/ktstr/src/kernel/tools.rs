//! Private copies of Debian sid tools the host has too old (pahole for BTF, qemu for the
//! nested L1 guest): the package and its whole dependency closure, libc included, are
//! downloaded through `kernel fetch`'s private apt configuration and unpacked under
//! `<cache>/tools/<name>-<version>/root`; a wrapper script beside it runs the program with
//! the unpacked dynamic loader and libraries, so the host's libc and apt setup stay
//! untouched. Installed by rename: a killed fetch leaves nothing half there.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::fetch::Apt;
use super::{KernelCache, KernelError, Progress};

/// Where private tools live.
pub fn tools_dir(cache: &KernelCache) -> PathBuf {
    cache.root().join("tools")
}

/// A private tool installed under [`tools_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateTool {
    /// The wrapper script that runs it, in `<cache>/tools/<name>-<version>/`.
    pub wrapper: PathBuf,
    /// The sid package version, e.g. `1:11.1.3+ds-1`.
    pub version: String,
}

/// Private installs of `name` (directories `<name>-<version>` holding `wrapper_name`),
/// the newest first.
pub fn installed(cache: &KernelCache, name: &str, wrapper_name: &str) -> Vec<PrivateTool> {
    let prefix = format!("{name}-");
    let Ok(rd) = fs::read_dir(tools_dir(cache)) else {
        return Vec::new();
    };
    let mut found: Vec<PrivateTool> = rd
        .flatten()
        .filter_map(|e| {
            let file_name = e.file_name().to_string_lossy().into_owned();
            let version = file_name.strip_prefix(&prefix)?.to_string();
            // `qemu-` must not pick up a tool called `qemu-img-...`: versions start with a
            // digit (an epoch or the upstream version).
            if !version.starts_with(|c: char| c.is_ascii_digit()) {
                return None;
            }
            let wrapper = e.path().join(wrapper_name);
            wrapper
                .is_file()
                .then_some(PrivateTool { wrapper, version })
        })
        .collect();
    found.sort_by(|a, b| super::cache::natural_cmp(&b.version, &a.version));
    found
}

/// The shell script that runs `program` (a path inside `root`) with `root`'s own loader
/// and libraries. `env` lines (`NAME=value`, values single-quoted here) and `args` (put
/// before the caller's) may name `$R`, the root.
pub fn loader_wrapper(root: &Path, program: &str, env: &[(&str, &str)], args: &[&str]) -> String {
    let mut s = format!(
        "#!/bin/sh\n# Runs Debian sid's {program} with its own loader and libraries (ktstr).\nR='{}'\n",
        root.display()
    );
    for (k, v) in env {
        s.push_str(&format!("export {k}=\"{v}\"\n"));
    }
    s.push_str(
        "exec \"$R/usr/lib64/ld-linux-x86-64.so.2\" \
         --library-path \"$R/usr/lib/x86_64-linux-gnu:$R/lib/x86_64-linux-gnu\" ",
    );
    s.push_str(&format!("\"$R/{}\"", program.trim_start_matches('/')));
    for a in args {
        s.push_str(&format!(" \"{a}\""));
    }
    s.push_str(" \"$@\"\n");
    s
}

/// Downloads sid's `package` with its closure into `<cache>/tools/<name>-<version>/root`
/// and writes `wrapper_name` there from `wrapper(root)`. Returns the install (an
/// existing one of the same version when another process won the race).
pub fn install(
    cache: &KernelCache,
    name: &str,
    package: &str,
    wrapper_name: &str,
    wrapper: impl Fn(&Path) -> String,
    progress: &Progress,
) -> Result<(PrivateTool, Vec<String>), KernelError> {
    let apt = Apt::prepare(cache)?;
    let _lock = apt.lock()?;
    apt.update(progress, "")?;
    let version = apt
        .version_of(package)?
        .ok_or_else(|| KernelError::PackageUnavailable {
            package: package.into(),
        })?;
    let names = apt.closure(package)?;
    let stage = progress.stage(format!(
        "Downloading {package} {version} ({} packages)",
        names.len()
    ));
    let work = cache.stage()?;
    let root = work.path().join("root");
    apt.download_and_extract(&names, &work.path().join("debs"), &root)?;
    let _ = fs::remove_dir_all(work.path().join("debs"));
    stage.done("done");

    // The version goes into a directory name: keep it to characters that need no quoting.
    let safe_version: String = version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-' | '_' | '~') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let dest = tools_dir(cache).join(format!("{name}-{safe_version}"));
    let io = |what, path: &Path, source| KernelError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    let wrapper_path = work.path().join(wrapper_name);
    fs::write(&wrapper_path, wrapper(&dest.join("root")))
        .map_err(|e| io("writing", &wrapper_path, e))?;
    fs::set_permissions(&wrapper_path, fs::Permissions::from_mode(0o755))
        .map_err(|e| io("making executable", &wrapper_path, e))?;
    fs::create_dir_all(tools_dir(cache)).map_err(|e| io("creating", &tools_dir(cache), e))?;
    let staged = work.keep();
    if let Err(e) = fs::rename(&staged, &dest) {
        let _ = fs::remove_dir_all(&staged);
        if !dest.join(wrapper_name).is_file() {
            return Err(io("installing", &dest, e));
        }
    }
    Ok((
        PrivateTool {
            wrapper: dest.join(wrapper_name),
            version: safe_version,
        },
        names,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapper_runs_the_program_with_its_own_loader_env_and_args() {
        let w = loader_wrapper(
            Path::new("/c/tools/qemu-1_11.1.3+ds-1/root"),
            "/usr/bin/qemu-system-x86_64",
            &[("QEMU_MODULE_DIR", "$R/usr/lib/x86_64-linux-gnu/qemu")],
            &["-L", "$R/usr/share/qemu"],
        );
        assert!(w.starts_with("#!/bin/sh\n"), "{w}");
        assert!(w.contains("R='/c/tools/qemu-1_11.1.3+ds-1/root'"), "{w}");
        assert!(
            w.contains("export QEMU_MODULE_DIR=\"$R/usr/lib/x86_64-linux-gnu/qemu\"\n"),
            "{w}"
        );
        assert!(
            w.ends_with("\"$R/usr/bin/qemu-system-x86_64\" \"-L\" \"$R/usr/share/qemu\" \"$@\"\n"),
            "{w}"
        );
        assert!(
            w.contains("exec \"$R/usr/lib64/ld-linux-x86-64.so.2\""),
            "{w}"
        );
    }

    #[test]
    fn installed_lists_complete_installs_newest_first() {
        let d = tempfile::tempdir().unwrap();
        let cache = KernelCache::at(d.path().to_path_buf());
        assert!(installed(&cache, "qemu", "qemu-system-x86_64").is_empty());
        let tools = tools_dir(&cache);
        for (dir, complete) in [
            ("qemu-1_9.2.0-1", true),
            ("qemu-1_11.1.3+ds-1", true),
            ("qemu-1_12.0.0-1", false),
            ("qemu-img-1", true),
            ("pahole-1.30-1", true),
        ] {
            fs::create_dir_all(tools.join(dir)).unwrap();
            if complete {
                fs::write(tools.join(dir).join("qemu-system-x86_64"), "").unwrap();
            }
        }
        let got: Vec<String> = installed(&cache, "qemu", "qemu-system-x86_64")
            .into_iter()
            .map(|t| t.version)
            .collect();
        assert_eq!(got, ["1_11.1.3+ds-1", "1_9.2.0-1"]);
    }
}
