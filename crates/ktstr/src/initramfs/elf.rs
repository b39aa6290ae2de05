//! The shared-library closure of an ELF binary, found the way the dynamic loader finds it
//! (no `ldd`, nothing executed): `PT_INTERP`, then `DT_NEEDED` of every object, searched
//! in `DT_RPATH` (only when the object has no `DT_RUNPATH`) or `DT_RUNPATH` (with
//! `$ORIGIN`, `$LIB` and `$PLATFORM` expanded), then the `/etc/ld.so.conf` directories,
//! then the standard directories. A candidate of the wrong ELF class or machine is skipped,
//! as the loader does.
//!
//! Where the files go in the guest: the interpreter at exactly its `PT_INTERP` path; a
//! library found in a standard directory at that path; a library found anywhere else
//! (RUNPATH, ld.so.conf) in the directory of the interpreter's real file, which the
//! loader searches by default, since the guest has no `ld.so.cache`. Symlinks are
//! resolved on the host: the real file's bytes are packed under the requested name.

use std::collections::{HashSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};

use goblin::elf::Elf;

use super::InitramfsError;

/// Standard library directories of an x86_64 loader, in its search order.
pub const STANDARD_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// Where to look for libraries.
#[derive(Debug, Clone)]
pub struct LibrarySearch {
    /// Directories from `/etc/ld.so.conf` (and its includes), in file order.
    pub conf_dirs: Vec<PathBuf>,
    /// The loader's default directories, searched last.
    pub standard_dirs: Vec<PathBuf>,
}

impl LibrarySearch {
    /// This host's configuration: `/etc/ld.so.conf` and [`STANDARD_DIRS`].
    pub fn host() -> LibrarySearch {
        let mut conf_dirs = Vec::new();
        read_ld_so_conf(Path::new("/etc/ld.so.conf"), &mut conf_dirs, 0);
        LibrarySearch {
            conf_dirs,
            standard_dirs: STANDARD_DIRS.iter().map(PathBuf::from).collect(),
        }
    }
}

/// One file of a closure.
#[derive(Debug, Clone)]
pub struct ClosureFile {
    /// Where it goes in the guest.
    pub guest_path: String,
    /// Where it was found on the host (possibly a symlink).
    pub host_path: PathBuf,
    /// Its bytes (of the symlink's target).
    pub data: Vec<u8>,
}

/// A binary and everything the loader needs to run it.
#[derive(Debug, Clone)]
pub struct ElfClosure {
    pub binary: Vec<u8>,
    /// `PT_INTERP`, absent for static binaries.
    pub interpreter: Option<ClosureFile>,
    /// Libraries in discovery order.
    pub libraries: Vec<ClosureFile>,
}

/// The dynamic-linking facts of one ELF object.
#[derive(Debug, Clone, Default)]
struct DynInfo {
    interpreter: Option<String>,
    needed: Vec<String>,
    rpath: Vec<String>,
    runpath: Vec<String>,
    is_64: bool,
    little_endian: bool,
    machine: u16,
}

fn parse_dyn(path: &Path, bytes: &[u8]) -> Result<DynInfo, InitramfsError> {
    let elf = Elf::parse(bytes).map_err(|e| InitramfsError::NotElf {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let split = |v: &[&str]| -> Vec<String> {
        v.iter()
            .flat_map(|s| s.split(':'))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    Ok(DynInfo {
        interpreter: elf.interpreter.map(str::to_string),
        needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
        rpath: split(&elf.rpaths),
        runpath: split(&elf.runpaths),
        is_64: elf.is_64,
        little_endian: elf.little_endian,
        machine: elf.header.e_machine,
    })
}

/// Whether the file at `path` starts with the ELF magic.
pub fn is_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && &magic == b"\x7fELF"
}

/// Reads the first bytes of a candidate library and checks class, byte order, machine.
fn compatible(path: &Path, want: &DynInfo) -> bool {
    let mut h = [0u8; 20];
    let ok = fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut h))
        .is_ok();
    if !ok || &h[..4] != b"\x7fELF" {
        return false;
    }
    let is_64 = h[4] == 2;
    let le = h[5] == 1;
    let machine = if le {
        u16::from_le_bytes([h[18], h[19]])
    } else {
        u16::from_be_bytes([h[18], h[19]])
    };
    is_64 == want.is_64 && le == want.little_endian && machine == want.machine
}

fn read(path: &Path) -> Result<Vec<u8>, InitramfsError> {
    fs::read(path).map_err(|source| InitramfsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Resolves the closure of `binary`.
pub fn closure(binary: &Path, search: &LibrarySearch) -> Result<ElfClosure, InitramfsError> {
    let bin_bytes = read(binary)?;
    let main = parse_dyn(binary, &bin_bytes)?;
    let main_origin = fs::canonicalize(binary)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| binary.parent().unwrap_or(Path::new("/")).to_path_buf());

    let interpreter = match &main.interpreter {
        Some(interp) => {
            let p = PathBuf::from(interp);
            if !p.is_file() {
                return Err(InitramfsError::MissingInterpreter {
                    binary: binary.to_path_buf(),
                    interpreter: interp.clone(),
                });
            }
            Some(ClosureFile {
                guest_path: interp.clone(),
                host_path: p.clone(),
                data: read(&p)?,
            })
        }
        None => None,
    };
    // Libraries from non-standard places go where the guest's loader looks by default.
    let default_home = interpreter
        .as_ref()
        .and_then(|i| fs::canonicalize(&i.host_path).ok())
        .and_then(|p| p.parent().map(|d| d.to_string_lossy().into_owned()))
        .unwrap_or_else(|| STANDARD_DIRS[0].to_string());

    // The executable's RPATH also applies to its libraries (unless it has a RUNPATH).
    let inherited_rpath: Vec<PathBuf> = if main.runpath.is_empty() {
        expand_all(&main.rpath, &main_origin)
    } else {
        Vec::new()
    };

    let mut libraries = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut queue: VecDeque<(PathBuf, DynInfo, PathBuf)> = VecDeque::new();
    queue.push_back((binary.to_path_buf(), main, main_origin));
    while let Some((obj_path, info, origin)) = queue.pop_front() {
        for name in &info.needed {
            if !seen.insert(name.clone()) {
                continue;
            }
            let (found, searched) = find_library(name, &info, &origin, &inherited_rpath, search);
            let Some((dir, host_path)) = found else {
                return Err(InitramfsError::MissingLibrary {
                    library: name.clone(),
                    needed_by: obj_path.clone(),
                    searched,
                });
            };
            let data = read(&host_path)?;
            let lib_info = parse_dyn(&host_path, &data)?;
            let file_name = Path::new(name)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| name.clone());
            let guest_dir = if search.standard_dirs.contains(&dir) {
                dir.to_string_lossy().into_owned()
            } else {
                default_home.clone()
            };
            libraries.push(ClosureFile {
                guest_path: format!("{}/{}", guest_dir.trim_end_matches('/'), file_name),
                host_path: host_path.clone(),
                data,
            });
            queue.push_back((host_path, lib_info, dir));
        }
    }
    Ok(ElfClosure {
        binary: bin_bytes,
        interpreter,
        libraries,
    })
}

/// Finds `name` for the object described by `info`; returns (directory searched, file)
/// or the list of directories tried.
fn find_library(
    name: &str,
    info: &DynInfo,
    origin: &Path,
    inherited_rpath: &[PathBuf],
    search: &LibrarySearch,
) -> (Option<(PathBuf, PathBuf)>, Vec<PathBuf>) {
    if name.contains('/') {
        let p = PathBuf::from(name);
        let dir = p.parent().unwrap_or(Path::new("/")).to_path_buf();
        return if compatible(&p, info) {
            (Some((dir, p)), Vec::new())
        } else {
            (None, vec![p])
        };
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if info.runpath.is_empty() {
        dirs.extend(expand_all(&info.rpath, origin));
        dirs.extend(inherited_rpath.iter().cloned());
    } else {
        dirs.extend(expand_all(&info.runpath, origin));
    }
    dirs.extend(search.conf_dirs.iter().cloned());
    dirs.extend(search.standard_dirs.iter().cloned());
    let mut tried = Vec::new();
    for d in dirs {
        if tried.contains(&d) {
            continue;
        }
        let candidate = d.join(name);
        if compatible(&candidate, info) {
            return (Some((d, candidate)), tried);
        }
        tried.push(d);
    }
    (None, tried)
}

fn expand_all(entries: &[String], origin: &Path) -> Vec<PathBuf> {
    entries.iter().flat_map(|e| expand(e, origin)).collect()
}

/// Expands the loader's dynamic string tokens in one search path entry.
fn expand(entry: &str, origin: &Path) -> Vec<PathBuf> {
    let origin = origin.to_string_lossy();
    let base = entry
        .replace("${ORIGIN}", &origin)
        .replace("$ORIGIN", &origin)
        .replace("${PLATFORM}", "x86_64")
        .replace("$PLATFORM", "x86_64");
    let libs: &[&str] = if base.contains("$LIB") || base.contains("${LIB}") {
        &["lib/x86_64-linux-gnu", "lib64"]
    } else {
        &[""]
    };
    libs.iter()
        .map(|l| {
            let p = base.replace("${LIB}", l).replace("$LIB", l);
            PathBuf::from(normalize(&p))
        })
        .collect()
}

/// Collapses `.`, `..` and repeated slashes lexically (`$ORIGIN/../lib`).
fn normalize(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Appends the directories named by an ld.so.conf file (following `include`).
fn read_ld_so_conf(path: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    if depth > 8 {
        return;
    }
    let Ok(text) = fs::read_to_string(path) else {
        return;
    };
    let base = path.parent().unwrap_or(Path::new("/"));
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with("hwcap ") {
            continue;
        }
        if let Some(pattern) = line.strip_prefix("include") {
            for pat in pattern.split_whitespace() {
                let pat = if pat.starts_with('/') {
                    PathBuf::from(pat)
                } else {
                    base.join(pat)
                };
                for f in glob(&pat) {
                    read_ld_so_conf(&f, out, depth + 1);
                }
            }
            continue;
        }
        for d in line.split(|c: char| c.is_whitespace() || c == ':' || c == ',') {
            if d.starts_with('/') {
                let d = PathBuf::from(d);
                if !out.contains(&d) {
                    out.push(d);
                }
            }
        }
    }
}

/// Matches `*` and `?` in the last component of `pattern`; sorted.
fn glob(pattern: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (pattern.parent(), pattern.file_name()) else {
        return Vec::new();
    };
    let name = name.to_string_lossy();
    if !name.contains(['*', '?']) {
        return vec![pattern.to_path_buf()];
    }
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| wildcard(&name, &e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

fn wildcard(pat: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pat.chars().collect(), s.chars().collect());
    // Classic two-pointer match with backtracking on the last `*`.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < s.len() {
        if i < p.len() && (p[i] == '?' || p[i] == s[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(st) = star {
            i = st + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    while i < p.len() && p[i] == '*' {
        i += 1;
    }
    i == p.len()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn closure_of_ls_has_libc_and_interpreter() {
        let c = closure(Path::new("/bin/ls"), &LibrarySearch::host()).unwrap();
        let interp = c.interpreter.as_ref().expect("/bin/ls is dynamic");
        assert_eq!(interp.guest_path, "/lib64/ld-linux-x86-64.so.2");
        assert!(interp.data.starts_with(b"\x7fELF"));
        let names: Vec<&str> = c.libraries.iter().map(|l| l.guest_path.as_str()).collect();
        assert!(names.iter().any(|n| n.ends_with("/libc.so.6")), "{names:?}");
        // Everything lands in a directory the guest's loader searches.
        for l in &c.libraries {
            let dir = Path::new(&l.guest_path).parent().unwrap();
            assert!(
                STANDARD_DIRS.iter().any(|d| Path::new(d) == dir),
                "{}",
                l.guest_path
            );
            assert!(l.data.starts_with(b"\x7fELF"));
        }
        // No duplicates.
        let mut dedup = names.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), names.len());
    }

    #[test]
    fn static_elf_has_no_closure_and_text_is_not_elf() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("s.sh");
        fs::write(&script, "#!/bin/sh\n").unwrap();
        let e = closure(&script, &LibrarySearch::host()).unwrap_err();
        assert!(matches!(e, InitramfsError::NotElf { .. }), "{e}");
        assert!(!is_elf(&script));
        assert!(is_elf(Path::new("/bin/ls")));
    }

    /// Compiles `main.c` calling a function from `lib<name>.so`, with extra link args.
    pub(crate) fn build_pair(dir: &Path, lib: &str, lib_dir: &Path, extra: &[&str]) -> PathBuf {
        fs::create_dir_all(lib_dir).unwrap();
        fs::write(dir.join("lib.c"), "int ktstr_probe(void) { return 7; }\n").unwrap();
        fs::write(
            dir.join("main.c"),
            "int ktstr_probe(void);\nint main(void) { return ktstr_probe() - 7; }\n",
        )
        .unwrap();
        let so = lib_dir.join(format!("lib{lib}.so"));
        let st = Command::new("cc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(&so)
            .arg(dir.join("lib.c"))
            .status()
            .expect("a C compiler (cc) is needed for this test");
        assert!(st.success());
        let bin = dir.join("main");
        let st = Command::new("cc")
            .arg("-o")
            .arg(&bin)
            .arg(dir.join("main.c"))
            .arg("-L")
            .arg(lib_dir)
            .arg(format!("-l{lib}"))
            .args(extra)
            .status()
            .unwrap();
        assert!(st.success());
        bin
    }

    #[test]
    fn missing_library_names_library_and_binary() {
        let dir = tempfile::tempdir().unwrap();
        let libdir = dir.path().join("gone");
        let bin = build_pair(dir.path(), "ktstrgone", &libdir, &[]);
        fs::remove_file(libdir.join("libktstrgone.so")).unwrap();
        let e = closure(&bin, &LibrarySearch::host()).unwrap_err();
        match &e {
            InitramfsError::MissingLibrary {
                library, needed_by, ..
            } => {
                assert_eq!(library, "libktstrgone.so");
                assert_eq!(needed_by, &bin);
            }
            other => panic!("wrong error: {other}"),
        }
        let msg = e.to_string();
        assert!(msg.contains("libktstrgone.so") && msg.contains(&*bin.to_string_lossy()));
        assert!(msg.contains("/usr/lib/x86_64-linux-gnu"), "{msg}");
    }

    #[test]
    fn origin_runpath_is_followed_and_relocated() {
        let dir = tempfile::tempdir().unwrap();
        let libdir = dir.path().join("lib");
        let bin = build_pair(
            dir.path(),
            "ktstrorigin",
            &libdir,
            &["-Wl,-rpath,$ORIGIN/lib", "-Wl,--enable-new-dtags"],
        );
        let c = closure(&bin, &LibrarySearch::host()).unwrap();
        let lib = c
            .libraries
            .iter()
            .find(|l| l.guest_path.ends_with("/libktstrorigin.so"))
            .expect("found through $ORIGIN/lib");
        assert_eq!(lib.host_path, libdir.join("libktstrorigin.so"));
        // Relocated into the interpreter's directory, which the guest loader searches.
        let interp_dir = fs::canonicalize("/lib64/ld-linux-x86-64.so.2")
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf();
        assert_eq!(Path::new(&lib.guest_path).parent().unwrap(), interp_dir);
        assert!(c
            .libraries
            .iter()
            .any(|l| l.guest_path.ends_with("/libc.so.6")));
    }

    #[test]
    fn search_path_tokens() {
        let o = Path::new("/opt/app/bin");
        assert_eq!(expand("$ORIGIN/../lib", o), [PathBuf::from("/opt/app/lib")]);
        assert_eq!(expand("${ORIGIN}", o), [PathBuf::from("/opt/app/bin")]);
        assert_eq!(
            expand("/usr/$LIB", o),
            [
                PathBuf::from("/usr/lib/x86_64-linux-gnu"),
                PathBuf::from("/usr/lib64")
            ]
        );
    }

    #[test]
    fn ld_so_conf_with_includes() {
        let d = tempfile::tempdir().unwrap();
        let conf_d = d.path().join("ld.so.conf.d");
        fs::create_dir_all(&conf_d).unwrap();
        fs::write(conf_d.join("b.conf"), "/opt/b\n# c\n/opt/b2:/opt/b3\n").unwrap();
        fs::write(conf_d.join("a.conf"), "/opt/a # trailing\n").unwrap();
        fs::write(conf_d.join("skip.txt"), "/opt/nope\n").unwrap();
        let main = d.path().join("ld.so.conf");
        fs::write(&main, "include ld.so.conf.d/*.conf\n/opt/last\n").unwrap();
        let mut out = Vec::new();
        read_ld_so_conf(&main, &mut out, 0);
        let want: Vec<PathBuf> = ["/opt/a", "/opt/b", "/opt/b2", "/opt/b3", "/opt/last"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(out, want);
    }

    #[test]
    fn wildcards() {
        assert!(wildcard("*.conf", "x86_64-linux-gnu.conf"));
        assert!(!wildcard("*.conf", "a.conf.bak"));
        assert!(wildcard("a?c*", "abcdef"));
        assert!(!wildcard("a?c", "ac"));
    }
}
