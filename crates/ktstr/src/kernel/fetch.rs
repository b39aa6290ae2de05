//! `cargo ktstr kernel fetch`: downloads a Debian sid sched_ext kernel into the cache
//! through a private apt configuration, never touching the system's apt setup.
//!
//! The private configuration lives in `<cache>/apt/`: a `sources.list` with one line
//! `deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] <mirror> sid main`
//! (the mirror taken from the machine's own apt sources), its own lists and archive
//! directories, empty source/preference part directories, and no locking of the
//! system's apt. Then `apt-get update`, `apt-get download`, `dpkg-deb -x`, and the
//! image, config and System.map are installed as one cache entry.
//!
//! Debian 7.x kernels are split: `linux-binary-<release>` carries only
//! `usr/lib/modules/<release>/vmlinuz`, `linux-base-<release>` carries `config` and
//! `System.map` (a placeholder; the real map is in `-dbg`). Older kernels ship all three
//! in `linux-image-<release>` under `boot/`; both layouts are handled.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::cache::{describe, natural_cmp, CacheEntry, KernelCache};
use super::progress::human_bytes;
use super::{KernelError, Progress};

/// The pin file, compiled in.
const PIN_FILE: &str = include_str!("../../../../kernels/debian.pin");
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Overrides the mirror found in the machine's apt sources.
pub const MIRROR_ENV: &str = "KTSTR_DEBIAN_MIRROR";
const FLAVOUR: &str = "-cloud-amd64";
const META_PACKAGE: &str = "linux-image-cloud-amd64";

/// Which Debian kernel to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DebianKernel {
    /// The package named in `kernels/debian.pin`.
    Pinned,
    /// What `linux-image-cloud-amd64` depends on in sid today.
    Latest,
    /// A release, e.g. `7.2.13+deb14-cloud-amd64` (the flavour suffix is added to a bare
    /// `7.2.13+deb14`).
    Release(String),
}

impl DebianKernel {
    /// Parses `debian`, `debian:latest`, `debian:<version>`; `None` is the pin.
    pub fn parse(spec: Option<&str>) -> Result<DebianKernel, KernelError> {
        let Some(spec) = spec.map(str::trim) else {
            return Ok(DebianKernel::Pinned);
        };
        let bad = || KernelError::BadFetchSpec {
            spec: spec.to_string(),
        };
        let rest = match spec.split_once(':') {
            None if spec == "debian" => return Ok(DebianKernel::Pinned),
            Some(("debian", rest)) => rest.trim(),
            _ => return Err(bad()),
        };
        if rest.is_empty() || rest.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(bad());
        }
        if rest == "latest" {
            return Ok(DebianKernel::Latest);
        }
        if !rest.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(bad());
        }
        let release = if rest.ends_with("-amd64") {
            rest.to_string()
        } else {
            format!("{rest}{FLAVOUR}")
        };
        Ok(DebianKernel::Release(release))
    }
}

/// The package name in the pin file.
pub fn pinned_package() -> &'static str {
    parse_pin(PIN_FILE).expect("kernels/debian.pin names a linux-binary-<release> package")
}

/// The release of the pinned package, e.g. `7.2.13+deb14-cloud-amd64`.
pub fn pinned_release() -> &'static str {
    release_of_package(pinned_package()).expect("pin is linux-binary-<release>")
}

/// The cache key of a Debian kernel release.
pub fn cache_key(release: &str) -> String {
    format!("debian-{release}")
}

fn parse_pin(text: &str) -> Option<&str> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|p| release_of_package(p).is_some())
}

fn release_of_package(pkg: &str) -> Option<&str> {
    pkg.strip_prefix("linux-binary-")
        .or_else(|| pkg.strip_prefix("linux-image-"))
        .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
}

/// What [`fetch`] did.
#[derive(Debug, Clone)]
pub enum FetchOutcome {
    /// Downloaded and installed now.
    Fetched(CacheEntry),
    /// The entry was already in the cache; nothing was downloaded.
    AlreadyCached(CacheEntry),
}

impl FetchOutcome {
    pub fn entry(&self) -> &CacheEntry {
        match self {
            FetchOutcome::Fetched(e) | FetchOutcome::AlreadyCached(e) => e,
        }
    }
}

/// Fetches `which` into `cache`. With `force` an existing entry is downloaded again and
/// replaced; without, an existing entry is a no-op.
pub fn fetch(
    cache: &KernelCache,
    which: &DebianKernel,
    force: bool,
    progress: &Progress,
) -> Result<FetchOutcome, KernelError> {
    let known_release = match which {
        DebianKernel::Pinned => Some(pinned_release().to_string()),
        DebianKernel::Release(r) => Some(r.clone()),
        DebianKernel::Latest => None,
    };
    if let (Some(r), false) = (&known_release, force) {
        if let Some(e) = cache.get(&cache_key(r))? {
            return Ok(FetchOutcome::AlreadyCached(e));
        }
    }

    let apt = Apt::prepare(cache)?;
    let _lock = apt.lock()?;
    let total_stages = 4;
    apt.update(progress, &format!("[1/{total_stages}] "))?;

    let release = match known_release {
        Some(r) => r,
        None => {
            let r = apt.latest_release()?;
            if !force {
                if let Some(e) = cache.get(&cache_key(&r))? {
                    progress.note(&format!("debian:latest is {r}"));
                    return Ok(FetchOutcome::AlreadyCached(e));
                }
            }
            r
        }
    };
    let key = cache_key(&release);
    let packages = apt.packages_for(&release, which)?;
    let names: Vec<String> = packages.iter().map(|p| p.name.clone()).collect();
    let total: u64 = packages.iter().map(|p| p.size).sum();

    let work = cache.stage()?;
    let debs = work.path().join("debs");
    let root = work.path().join("root");
    mkdir(&debs)?;
    mkdir(&root)?;
    let stage = progress.stage(format!(
        "[2/{total_stages}] Downloading {} ({})",
        names.join(" "),
        human_bytes(total)
    ));
    let mut args = vec!["download"];
    args.extend(names.iter().map(String::as_str));
    run_tool(
        apt.command("apt-get", &args).current_dir(&debs),
        "apt-get",
        "check network access to the mirror",
    )?;
    stage.done(&human_bytes(dir_bytes(&debs)));

    let stage = progress.stage(format!("[3/{total_stages}] Extracting"));
    for deb in fs::read_dir(&debs)
        .map_err(|source| io("reading", &debs, source))?
        .flatten()
    {
        let deb = deb.path();
        if deb.extension().is_some_and(|e| e == "deb") {
            run_tool(
                Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
                "dpkg-deb",
                "",
            )?;
        }
    }
    stage.done("done");

    let stage = progress.stage(format!("[4/{total_stages}] Installing {key}"));
    let found = locate(&root, &release).map_err(|what| KernelError::PackageLayout {
        packages: names.clone(),
        what: what.to_string(),
    })?;
    let entry_dir = cache.stage()?;
    let image = entry_dir.path().join(super::cache::IMAGE_FILE);
    rename(&found.image, &image)?;
    let config = match &found.config {
        Some(c) => {
            let dst = entry_dir.path().join(super::cache::CONFIG_FILE);
            rename(c, &dst)?;
            Some(dst)
        }
        None => None,
    };
    let system_map = match &found.system_map {
        Some(m) => {
            let dst = entry_dir.path().join(super::cache::SYSTEM_MAP_FILE);
            rename(m, &dst)?;
            Some(dst)
        }
        None => None,
    };
    let main = &packages[0];
    let metadata = describe(
        &image,
        config.as_deref(),
        system_map.as_deref(),
        format!("debian:{}", main.name),
        Some(main.version.clone()),
    )?;
    if metadata.release != release {
        return Err(KernelError::ReleaseMismatch {
            package: main.name.clone(),
            expected: release,
            found: metadata.release,
        });
    }
    let entry = cache.install(entry_dir, &key, &metadata, force)?;
    drop(work);
    stage.done(&format!(
        "{} (sched_ext: {})",
        entry.dir.display(),
        if entry.metadata.sched_ext {
            "yes"
        } else {
            "no"
        }
    ));
    Ok(FetchOutcome::Fetched(entry))
}

/// The KVM modules `cargo ktstr nested` loads in its L1 guest, in load order (each
/// after its dependencies), by their path under `kernel/` in the modules package.
pub const KVM_MODULES: &[&str] = &[
    "virt/lib/irqbypass",
    "arch/x86/kvm/kvm",
    "arch/x86/kvm/kvm-amd",
    "arch/x86/kvm/kvm-intel",
];

/// Where a cache entry keeps the KVM modules (decompressed, `<name>.ko`).
pub fn modules_dir(entry_dir: &Path) -> PathBuf {
    entry_dir.join("modules")
}

/// Fetch `linux-modules-<release>` and keep the KVM modules of it ([`KVM_MODULES`]) in
/// the entry's `modules/` directory, decompressed. A no-op when they are there. Returns
/// the module files in load order.
pub fn fetch_kvm_modules(
    cache: &KernelCache,
    entry_dir: &Path,
    release: &str,
    progress: &Progress,
) -> Result<Vec<PathBuf>, KernelError> {
    let dir = modules_dir(entry_dir);
    let wanted: Vec<PathBuf> = KVM_MODULES
        .iter()
        .map(|m| dir.join(format!("{}.ko", m.rsplit('/').next().unwrap_or(m))))
        .collect();
    if wanted.iter().all(|p| p.is_file()) {
        return Ok(wanted);
    }
    let apt = Apt::prepare(cache)?;
    let _lock = apt.lock()?;
    let package = format!("linux-modules-{release}");
    apt.update(progress, "")?;
    let pkg = apt
        .show(&package)?
        .ok_or_else(|| KernelError::PackageUnavailable {
            package: package.clone(),
        })?;
    let work = cache.stage()?;
    let debs = work.path().join("debs");
    let root = work.path().join("root");
    mkdir(&debs)?;
    mkdir(&root)?;
    let stage = progress.stage(format!("Downloading {package} ({})", human_bytes(pkg.size)));
    run_tool(
        apt.command("apt-get", &["download", &package])
            .current_dir(&debs),
        "apt-get",
        "check network access to the mirror",
    )?;
    stage.done(&human_bytes(dir_bytes(&debs)));
    let stage = progress.stage("Extracting the KVM modules".to_string());
    for deb in fs::read_dir(&debs)
        .map_err(|source| io("reading", &debs, source))?
        .flatten()
    {
        run_tool(
            Command::new("dpkg-deb")
                .arg("-x")
                .arg(deb.path())
                .arg(&root),
            "dpkg-deb",
            "",
        )?;
    }
    let staged = work.path().join("modules");
    mkdir(&staged)?;
    for (m, dst) in KVM_MODULES.iter().zip(&wanted) {
        let base = ["usr/lib/modules", "lib/modules"]
            .iter()
            .map(|d| root.join(d).join(release).join("kernel").join(m))
            .find(|b| b.with_extension("ko.xz").is_file() || b.with_extension("ko").is_file())
            .ok_or_else(|| KernelError::PackageLayout {
                packages: vec![package.clone()],
                what: format!("{m}.ko(.xz)"),
            })?;
        let out = staged.join(dst.file_name().unwrap_or_default());
        let xz = base.with_extension("ko.xz");
        if xz.is_file() {
            let f = fs::File::create(&out).map_err(|source| io("creating", &out, source))?;
            run_tool(
                Command::new("xz").arg("-dc").arg(&xz).stdout(f),
                "xz",
                "install xz-utils",
            )?;
        } else {
            fs::copy(base.with_extension("ko"), &out)
                .map_err(|source| io("copying", &out, source))?;
        }
    }
    // Into place in one step: a killed fetch leaves the entry without modules, never with
    // some of them.
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|source| io("removing", &dir, source))?;
    }
    rename(&staged, &dir)?;
    stage.done(&dir.display().to_string());
    Ok(wanted)
}

/// A package to download.
#[derive(Debug, Clone)]
struct Package {
    name: String,
    version: String,
    size: u64,
}

/// The private apt configuration (shared with `kernel build`'s source and pahole fetches).
pub(crate) struct Apt {
    dir: PathBuf,
    pub(crate) mirror: String,
}

impl Apt {
    pub(crate) fn prepare(cache: &KernelCache) -> Result<Apt, KernelError> {
        for tool in ["apt-get", "apt-cache", "dpkg-deb"] {
            if !on_path(tool) {
                return Err(KernelError::ToolMissing { tool: tool.into() });
            }
        }
        if !Path::new(KEYRING).is_file() {
            return Err(KernelError::NoKeyring {
                path: KEYRING.into(),
            });
        }
        let mirror = match std::env::var(MIRROR_ENV)
            .ok()
            .filter(|m| !m.trim().is_empty())
        {
            Some(m) => m.trim().to_string(),
            None => system_mirror().ok_or(KernelError::NoMirror)?,
        };
        let dir = cache.apt_dir();
        for sub in [
            "lists/partial",
            "cache/archives/partial",
            "sources.list.d",
            "preferences.d",
        ] {
            mkdir(&dir.join(sub))?;
        }
        let list = dir.join("sources.list");
        let line = format!("deb [signed-by={KEYRING}] {mirror} sid main\n");
        if fs::read_to_string(&list).ok().as_deref() != Some(line.as_str()) {
            fs::write(&list, line).map_err(|source| io("writing", &list, source))?;
        }
        Ok(Apt { dir, mirror })
    }

    /// Serialises fetches of this cache: two processes must not update the same lists.
    pub(crate) fn lock(&self) -> Result<fs::File, KernelError> {
        let path = self.dir.join("lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| io("opening", &path, source))?;
        f.lock().map_err(|source| io("locking", &path, source))?;
        Ok(f)
    }

    fn options(&self) -> Vec<String> {
        let d = self.dir.display();
        let mut o = vec![
            format!("Dir::Etc::SourceList={d}/sources.list"),
            format!("Dir::Etc::SourceParts={d}/sources.list.d"),
            format!("Dir::Etc::Preferences={d}/preferences"),
            format!("Dir::Etc::PreferencesParts={d}/preferences.d"),
            format!("Dir::State::Lists={d}/lists"),
            format!("Dir::Cache={d}/cache"),
            "Debug::NoLocking=1".into(),
            "APT::Architecture=amd64".into(),
            "APT::Architectures=amd64".into(),
            // Only the Packages index: no translations, no AppStream metadata.
            "Acquire::Languages=none".into(),
        ];
        for t in [
            "DEP-11",
            "DEP-11-icons",
            "DEP-11-icons-small",
            "DEP-11-icons-hidpi",
            "CNF",
        ] {
            o.push(format!(
                "Acquire::IndexTargets::deb::{t}::DefaultEnabled=false"
            ));
        }
        if running_as_root() {
            // Our private directories are root's; the `_apt` sandbox user cannot write
            // them, and apt would warn on every download.
            o.push("APT::Sandbox::User=root".into());
        }
        o
    }

    pub(crate) fn command(&self, tool: &str, args: &[&str]) -> Command {
        let mut c = Command::new(tool);
        for o in self.options() {
            c.arg("-o").arg(o);
        }
        c.args(args);
        c.env("LC_ALL", "C").stdin(Stdio::null());
        c
    }

    /// `apt-get update` against the private sources, shown as one progress stage
    /// (`step`: a `[1/4] ` style prefix, or empty).
    pub(crate) fn update(&self, progress: &Progress, step: &str) -> Result<(), KernelError> {
        let stage = progress.stage(format!(
            "{step}Updating Debian sid package lists ({})",
            self.mirror
        ));
        self.run(&["update"], "apt-get", "check network access to the mirror")?;
        stage.done("done");
        Ok(())
    }

    pub(crate) fn run(&self, args: &[&str], tool: &str, hint: &str) -> Result<String, KernelError> {
        run_tool(&mut self.command(tool, args), tool, hint)
    }

    /// The release `linux-image-cloud-amd64` depends on (never an `-rt` flavour).
    fn latest_release(&self) -> Result<String, KernelError> {
        let out = self.run(&["depends", META_PACKAGE], "apt-cache", "")?;
        latest_from_depends(&out).ok_or(KernelError::NoLatest { output: out })
    }

    /// The packages that make up `release`, the image package first.
    fn packages_for(
        &self,
        release: &str,
        which: &DebianKernel,
    ) -> Result<Vec<Package>, KernelError> {
        let binary = self.show(&format!("linux-binary-{release}"))?;
        let pkgs = match binary {
            Some(b) => {
                let mut v = vec![b];
                v.extend(self.show(&format!("linux-base-{release}"))?);
                v
            }
            // Older packaging: one linux-image package with everything under boot/.
            None => self
                .show(&format!("linux-image-{release}"))?
                .into_iter()
                .collect(),
        };
        if pkgs.is_empty() {
            let package = match which {
                DebianKernel::Pinned => pinned_package().to_string(),
                _ => format!("linux-binary-{release}"),
            };
            return Err(KernelError::PackageUnavailable { package });
        }
        Ok(pkgs)
    }

    /// The candidate version of `name` in sid, if sid has it.
    pub(crate) fn version_of(&self, name: &str) -> Result<Option<String>, KernelError> {
        Ok(self.show(name)?.map(|p| p.version))
    }

    /// `name` and every package it depends on (recursively, no recommends), real
    /// packages only.
    pub(crate) fn closure(&self, name: &str) -> Result<Vec<String>, KernelError> {
        let out = self.run(
            &[
                "depends",
                "--recurse",
                "--no-recommends",
                "--no-suggests",
                "--no-conflicts",
                "--no-breaks",
                "--no-replaces",
                "--no-enhances",
                name,
            ],
            "apt-cache",
            "",
        )?;
        let mut names: Vec<String> = out
            .lines()
            .filter(|l| !l.starts_with(char::is_whitespace) && !l.starts_with('<'))
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Downloads `names` into `dir` and extracts every one into `root`.
    pub(crate) fn download_and_extract(
        &self,
        names: &[String],
        dir: &Path,
        root: &Path,
    ) -> Result<(), KernelError> {
        mkdir(dir)?;
        mkdir(root)?;
        let mut args = vec!["download"];
        args.extend(names.iter().map(String::as_str));
        run_tool(
            self.command("apt-get", &args).current_dir(dir),
            "apt-get",
            "check network access to the mirror",
        )?;
        for deb in fs::read_dir(dir)
            .map_err(|source| io("reading", dir, source))?
            .flatten()
        {
            let deb = deb.path();
            if deb.extension().is_some_and(|e| e == "deb") {
                run_tool(
                    Command::new("dpkg-deb").arg("-x").arg(&deb).arg(root),
                    "dpkg-deb",
                    "",
                )?;
            }
        }
        Ok(())
    }

    fn show(&self, name: &str) -> Result<Option<Package>, KernelError> {
        let out = self
            .command("apt-cache", &["show", "--no-all-versions", name])
            .output()
            .map_err(|e| spawn_error("apt-cache", e, "apt-cache show"))?;
        if !out.status.success() {
            // "E: No packages found" / "Unable to locate package": absent in sid.
            return Ok(None);
        }
        Ok(parse_show(name, &String::from_utf8_lossy(&out.stdout)))
    }
}

fn parse_show(name: &str, text: &str) -> Option<Package> {
    let field = |f: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(f).map(|v| v.trim().to_string()))
    };
    let version = field("Version:")?;
    let size = field("Size:").and_then(|s| s.parse().ok()).unwrap_or(0);
    Some(Package {
        name: name.to_string(),
        version,
        size,
    })
}

/// From `apt-cache depends linux-image-cloud-amd64`, the highest
/// `linux-image-<release>-cloud-amd64` release.
fn latest_from_depends(out: &str) -> Option<String> {
    out.lines()
        .filter_map(|l| l.trim().trim_start_matches('|').strip_prefix("Depends:"))
        .filter_map(|d| d.trim().strip_prefix("linux-image-"))
        .filter(|r| {
            r.ends_with(FLAVOUR)
                && !r.contains("-rt-")
                && r.starts_with(|c: char| c.is_ascii_digit())
        })
        .max_by(|a, b| natural_cmp(a, b))
        .map(str::to_string)
}

/// Files of an extracted kernel package.
#[derive(Debug)]
struct Located {
    image: PathBuf,
    config: Option<PathBuf>,
    system_map: Option<PathBuf>,
}

/// Finds vmlinuz/config/System.map of `release` under an extraction root.
fn locate(root: &Path, release: &str) -> Result<Located, &'static str> {
    let modules = root.join("usr/lib/modules").join(release);
    let legacy_modules = root.join("lib/modules").join(release);
    let boot = root.join("boot");
    let pick = |plain: &str| {
        [
            modules.join(plain),
            legacy_modules.join(plain),
            boot.join(format!("{plain}-{release}")),
        ]
        .into_iter()
        .find(|p| p.is_file())
    };
    Ok(Located {
        image: pick("vmlinuz").ok_or("vmlinuz")?,
        config: pick("config"),
        system_map: pick("System.map"),
    })
}

/// The first Debian archive URI of the machine's apt sources (not a security archive).
fn system_mirror() -> Option<String> {
    let mut deb822 = Vec::new();
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            if p.extension().is_some_and(|e| e == "sources") {
                deb822.extend(fs::read_to_string(&p).ok());
            }
        }
    }
    let mut lists: Vec<String> = fs::read_to_string("/etc/apt/sources.list")
        .into_iter()
        .collect();
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            if p.extension().is_some_and(|e| e == "list") {
                lists.extend(fs::read_to_string(&p).ok());
            }
        }
    }
    pick_mirror(&deb822, &lists)
}

/// Chooses a mirror: URIs from deb822 `.sources` (`URIs:`, only `Types: deb` stanzas)
/// and one-line `deb URI suite ...` lists, preferring one whose path ends in `/debian`;
/// security archives are skipped.
fn pick_mirror(deb822: &[String], lists: &[String]) -> Option<String> {
    let mut uris = Vec::new();
    for text in deb822 {
        for stanza in text.split("\n\n") {
            let field = |f: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.trim().strip_prefix(f).map(str::trim))
            };
            if field("Enabled:").is_some_and(|v| v.eq_ignore_ascii_case("no")) {
                continue;
            }
            if !field("Types:").is_some_and(|t| t.split_whitespace().any(|t| t == "deb")) {
                continue;
            }
            if let Some(u) = field("URIs:") {
                uris.extend(u.split_whitespace().map(str::to_string));
            }
        }
    }
    for text in lists {
        for line in text.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("deb") {
                continue;
            }
            let mut w = words.next();
            if w.is_some_and(|x| x.starts_with('[')) {
                // Options: skip to the word after the closing `]`.
                while w.is_some_and(|x| !x.ends_with(']')) {
                    w = words.next();
                }
                w = words.next();
            }
            uris.extend(w.map(str::to_string));
        }
    }
    let usable: Vec<String> = uris
        .into_iter()
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        .filter(|u| !u.contains("security"))
        .map(|u| u.trim_end_matches('/').to_string())
        .collect();
    usable
        .iter()
        .find(|u| u.ends_with("/debian"))
        .or_else(|| usable.iter().find(|u| u.contains("debian")))
        .cloned()
}

pub(crate) fn run_tool(cmd: &mut Command, tool: &str, hint: &str) -> Result<String, KernelError> {
    let command = describe_command(cmd);
    // A killed fetch must not leave apt-get or dpkg-deb running on its own.
    crate::child::die_with_parent(cmd, libc::SIGTERM);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error(tool, e, &command))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(KernelError::ToolFailed {
            command,
            status: out.status.to_string(),
            output: text,
            hint: hint.to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A short form of the command for messages: the program and its non-option arguments.
fn describe_command(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    let mut skip_next = false;
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if skip_next {
            skip_next = false;
            continue;
        }
        if a == "-o" {
            skip_next = true;
            continue;
        }
        parts.push(a.into_owned());
    }
    parts.join(" ")
}

fn spawn_error(tool: &str, e: std::io::Error, command: &str) -> KernelError {
    if e.kind() == std::io::ErrorKind::NotFound {
        KernelError::ToolMissing { tool: tool.into() }
    } else {
        KernelError::ToolFailed {
            command: command.into(),
            status: "could not start".into(),
            output: e.to_string(),
            hint: String::new(),
        }
    }
}

fn on_path(tool: &str) -> bool {
    crate::which::which(tool).is_some()
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self is owned by the effective user.
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

fn mkdir(p: &Path) -> Result<(), KernelError> {
    fs::create_dir_all(p).map_err(|source| io("creating directory", p, source))
}

fn rename(from: &Path, to: &Path) -> Result<(), KernelError> {
    fs::rename(from, to).map_err(|source| io("moving into the cache entry", from, source))
}

fn io(what: &'static str, path: &Path, source: std::io::Error) -> KernelError {
    KernelError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_is_the_documented_package() {
        assert_eq!(pinned_package(), "linux-binary-7.2.13+deb14-cloud-amd64");
        assert_eq!(pinned_release(), "7.2.13+deb14-cloud-amd64");
        assert_eq!(
            cache_key(pinned_release()),
            "debian-7.2.13+deb14-cloud-amd64"
        );
    }

    #[test]
    fn fetch_specs() {
        assert_eq!(DebianKernel::parse(None).unwrap(), DebianKernel::Pinned);
        assert_eq!(
            DebianKernel::parse(Some("debian")).unwrap(),
            DebianKernel::Pinned
        );
        assert_eq!(
            DebianKernel::parse(Some("debian:latest")).unwrap(),
            DebianKernel::Latest
        );
        assert_eq!(
            DebianKernel::parse(Some("debian:7.2.13+deb14")).unwrap(),
            DebianKernel::Release("7.2.13+deb14-cloud-amd64".into())
        );
        assert_eq!(
            DebianKernel::parse(Some("debian:7.2.13+deb14-cloud-amd64")).unwrap(),
            DebianKernel::Release("7.2.13+deb14-cloud-amd64".into())
        );
        for bad in [
            "fedora",
            "debian:",
            "debian:../x",
            "debian:foo",
            "ubuntu:7.2",
        ] {
            let e = DebianKernel::parse(Some(bad)).unwrap_err();
            assert!(
                e.to_string().contains("invalid kernel fetch spec"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn latest_skips_rt_and_other_flavours() {
        let out = "linux-image-cloud-amd64\n  Depends: linux-base-cloud-amd64\n  \
                   Depends: linux-image-7.2.13+deb14-cloud-amd64\n  \
                   Depends: linux-image-7.2.13+deb14-rt-cloud-amd64\n  \
                   Depends: linux-image-7.3.1+deb14-rt-amd64\n";
        assert_eq!(
            latest_from_depends(out).as_deref(),
            Some("7.2.13+deb14-cloud-amd64")
        );
        assert_eq!(latest_from_depends("linux-image-cloud-amd64\n"), None);
    }

    #[test]
    fn show_fields() {
        let text = "Package: linux-binary-7.2.13+deb14-cloud-amd64\nVersion: 7.2.13-1\n\
                    Size: 13717736\nSHA256: 03e4\n";
        let p = parse_show("linux-binary-7.2.13+deb14-cloud-amd64", text).unwrap();
        assert_eq!(p.version, "7.2.13-1");
        assert_eq!(p.size, 13_717_736);
        assert!(parse_show("x", "Package: x\n").is_none());
    }

    #[test]
    fn mirror_from_deb822_and_one_line_lists() {
        let deb822 = "Types: deb\n# comment\nURIs: http://deb.debian.org/debian\n\
                      Suites: bookworm\nComponents: main\n\n\
                      Types: deb\nURIs: http://deb.debian.org/debian-security\n\
                      Suites: bookworm-security\n";
        assert_eq!(
            pick_mirror(&[deb822.into()], &[]).as_deref(),
            Some("http://deb.debian.org/debian")
        );
        let security_first = "Types: deb\nURIs: http://security.debian.org/debian-security\n\n\
                              Types: deb-src\nURIs: http://src.example/debian\n\n\
                              Types: deb\nURIs: https://mirror.example/debian/\n";
        assert_eq!(
            pick_mirror(&[security_first.into()], &[]).as_deref(),
            Some("https://mirror.example/debian")
        );
        let list =
            "# x\ndeb [arch=amd64 signed-by=/k.gpg] http://ftp.example/debian bookworm main\n\
                    deb http://security.debian.org/ bookworm-security main\n";
        assert_eq!(
            pick_mirror(&[], &[list.into()]).as_deref(),
            Some("http://ftp.example/debian")
        );
        assert_eq!(
            pick_mirror(
                &[],
                &["deb http://archive.ubuntu.com/ubuntu noble main".into()]
            ),
            None
        );
    }

    #[test]
    fn locate_both_layouts() {
        let d = tempfile::tempdir().unwrap();
        let r = "7.2.13+deb14-cloud-amd64";
        let m = d.path().join("usr/lib/modules").join(r);
        fs::create_dir_all(&m).unwrap();
        assert_eq!(locate(d.path(), r).unwrap_err(), "vmlinuz");
        fs::write(m.join("vmlinuz"), b"k").unwrap();
        fs::write(m.join("config"), b"c").unwrap();
        let l = locate(d.path(), r).unwrap();
        assert_eq!(l.image, m.join("vmlinuz"));
        assert_eq!(l.config, Some(m.join("config")));
        assert!(l.system_map.is_none());

        let d = tempfile::tempdir().unwrap();
        let b = d.path().join("boot");
        fs::create_dir_all(&b).unwrap();
        fs::write(b.join(format!("vmlinuz-{r}")), b"k").unwrap();
        fs::write(b.join(format!("System.map-{r}")), b"m").unwrap();
        let l = locate(d.path(), r).unwrap();
        assert_eq!(l.image, b.join(format!("vmlinuz-{r}")));
        assert!(l.config.is_none());
        assert_eq!(l.system_map, Some(b.join(format!("System.map-{r}"))));
    }

    #[test]
    fn cached_entry_makes_fetch_a_no_op_without_network() {
        let dir = tempfile::tempdir().unwrap();
        let cache = KernelCache::at(dir.path());
        let key = cache_key(pinned_release());
        crate::kernel::cache::tests::install_fake(&cache, &key, pinned_release(), None);
        let out = fetch(&cache, &DebianKernel::Pinned, false, &Progress::quiet()).unwrap();
        assert!(matches!(out, FetchOutcome::AlreadyCached(_)));
        assert_eq!(out.entry().key, key);
        // No apt state was created: nothing was run.
        assert!(!cache.apt_dir().exists());
    }
}
