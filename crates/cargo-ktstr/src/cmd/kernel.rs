//! `cargo ktstr kernel`: fetch, build, list, clean and locate the kernels tests boot. The
//! work is done by `ktstr::kernel`; this module parses arguments and prints.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use ktstr::kernel::build::{source, Base, BuildOutcome, BuildRequest, SourceTree};
use ktstr::kernel::{self, fetch::DebianKernel, FetchOutcome, KernelCache, Progress};

#[derive(Args, Debug)]
pub struct KernelArgs {
    #[command(subcommand)]
    command: KernelCommand,
}

#[derive(Subcommand, Debug)]
enum KernelCommand {
    /// Download a Debian sid sched_ext kernel into the kernel cache (through a private apt
    /// configuration; the system's apt sources are not touched).
    Fetch {
        /// `debian` (the pinned kernel, the default), `debian:latest`, or
        /// `debian:<version>` such as `debian:7.2.13+deb14`.
        spec: Option<String>,
        /// Download again and replace the cached entry.
        #[arg(long)]
        force: bool,
        /// Also fetch the kernel's modules package and keep its KVM modules (kvm,
        /// kvm-amd, kvm-intel, irqbypass) beside the kernel: `cargo ktstr nested` loads
        /// them in its L1 guest.
        #[arg(long)]
        modules: bool,
    },
    /// Build a kernel from a source tree into the kernel cache: base config +
    /// kernels/ktstr.kconfig + fragments, checked after olddefconfig, `make bzImage`
    /// (incremental), keyed by the tree's commit and the config's hash.
    Build {
        /// The kernel source tree (default: the current directory, if it is one).
        #[arg(long, value_name = "DIR", conflicts_with = "debian_source")]
        source: Option<PathBuf>,
        /// Build Debian's `linux-source-<major.minor>` (fetched through the private apt
        /// configuration and unpacked into the cache); VERSION like `7.2` (default: the
        /// pinned kernel's).
        #[arg(long, value_name = "VERSION", num_args = 0..=1, default_missing_value = "")]
        debian_source: Option<String>,
        /// Where the config starts: `tree` (the tree's .config, else defconfig),
        /// `defconfig`, `allnoconfig` (small and fast with ktstr.kconfig) or a file.
        #[arg(long, default_value = "tree")]
        base: String,
        /// A kconfig fragment applied after kernels/ktstr.kconfig (repeatable).
        #[arg(long = "fragment", value_name = "FILE")]
        fragments: Vec<PathBuf>,
        /// One `CONFIG_X=y` (or `# CONFIG_X is not set`) applied last (repeatable).
        #[arg(long = "extra-kconfig", value_name = "LINE")]
        extra: Vec<String>,
        /// make -j (default: the CPUs available).
        #[arg(long)]
        jobs: Option<usize>,
        /// Run make and install even when the cache has this key.
        #[arg(long)]
        force: bool,
    },
    /// Remove cached kernels: the KEYs named, or all but the --keep N most recent.
    Clean {
        /// Keep the N most recently fetched or built kernels, remove the rest.
        #[arg(long, value_name = "N")]
        keep: Option<usize>,
        /// Cache keys to remove (see `cargo ktstr kernel list`).
        keys: Vec<String>,
    },
    /// List cached kernels; `*` marks the one tests boot when KTSTR_KERNEL is unset.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the path of the bzImage a test would boot (for scripts).
    Path {
        /// A bzImage path, source tree, cache key or version (default: KTSTR_KERNEL, else
        /// the newest cached kernel).
        id: Option<String>,
    },
}

pub fn run(args: KernelArgs) -> anyhow::Result<i32> {
    match args.command {
        KernelCommand::Fetch {
            spec,
            force,
            modules,
        } => fetch(spec.as_deref(), force, modules),
        KernelCommand::Build {
            source,
            debian_source,
            base,
            fragments,
            extra,
            jobs,
            force,
        } => build(source, debian_source, &base, fragments, extra, jobs, force),
        KernelCommand::Clean { keep, keys } => clean(keep, &keys),
        KernelCommand::List { json } => list(json),
        KernelCommand::Path { id } => {
            let k = kernel::resolve(id.as_deref())?;
            println!("{}", k.image.display());
            Ok(0)
        }
    }
}

fn fetch(spec: Option<&str>, force: bool, modules: bool) -> anyhow::Result<i32> {
    let which = DebianKernel::parse(spec)?;
    let cache = KernelCache::from_env()?;
    let progress = Progress::auto();
    let outcome = kernel::fetch(&cache, &which, force, &progress)?;
    let e = outcome.entry();
    match &outcome {
        FetchOutcome::Fetched(_) => println!(
            "fetched {} (release {}, sched_ext: {}) into {}",
            e.key,
            e.metadata.release,
            yes_no(e.metadata.sched_ext),
            e.dir.display()
        ),
        FetchOutcome::AlreadyCached(_) => println!(
            "{} is already cached in {}; nothing to do (--force fetches it again)",
            e.key,
            e.dir.display()
        ),
    }
    if modules {
        let files =
            kernel::fetch::fetch_kvm_modules(&cache, &e.dir, &e.metadata.release, &progress)?;
        println!(
            "KVM modules of {}: {}",
            e.key,
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Ok(0)
}

fn build(
    source: Option<PathBuf>,
    debian_source: Option<String>,
    base: &str,
    fragments: Vec<PathBuf>,
    extra: Vec<String>,
    jobs: Option<usize>,
    force: bool,
) -> anyhow::Result<i32> {
    let cache = KernelCache::from_env()?;
    let progress = Progress::auto();
    let started = Instant::now();
    let tree = match (source, debian_source) {
        (Some(dir), _) => SourceTree::at(&dir)?,
        (None, Some(v)) => {
            let v = Some(v.trim()).filter(|v| !v.is_empty());
            source::debian_source(&cache, v, &progress)?
        }
        (None, None) => SourceTree::at(&std::env::current_dir()?)
            .context("name a tree with --source DIR, or use --debian-source")?,
    };
    let req = BuildRequest {
        tree,
        base: Base::parse(base),
        fragments,
        extra,
        jobs,
        force,
    };
    let outcome = kernel::build(&cache, &req, &progress)?;
    let e = outcome.entry();
    let pahole = e
        .metadata
        .build
        .as_ref()
        .and_then(|b| b.pahole.clone())
        .unwrap_or_else(|| "-".into());
    match &outcome {
        BuildOutcome::Built(_) => println!(
            "built {} (release {}, sched_ext: {}, BTF: {}, pahole {pahole}) in {}s into {}",
            e.key,
            e.metadata.release,
            yes_no(e.metadata.sched_ext),
            yes_no(e.metadata.btf),
            started.elapsed().as_secs(),
            e.dir.display()
        ),
        BuildOutcome::Reused(_) => println!(
            "{} is already built in {}; make did not run (--force builds again)",
            e.key,
            e.dir.display()
        ),
    }
    println!("boot it: KTSTR_KERNEL={} cargo ktstr test", e.key);
    Ok(0)
}

fn clean(keep: Option<usize>, keys: &[String]) -> anyhow::Result<i32> {
    let cache = KernelCache::from_env()?;
    let mut doomed: Vec<String> = keys.to_vec();
    if let Some(n) = keep {
        doomed.extend(cache.beyond_newest(n)?.into_iter().map(|e| e.key));
    } else if keys.is_empty() {
        anyhow::bail!(
            "name what to remove: cache keys (`cargo ktstr kernel list`), or --keep N to \
             keep only the N most recent kernels"
        );
    }
    doomed.sort();
    doomed.dedup();
    let mut missing = 0;
    for key in &doomed {
        if cache.remove(key)? {
            println!("removed {key}");
        } else {
            eprintln!("no cached kernel `{key}`");
            missing += 1;
        }
    }
    if doomed.is_empty() {
        println!("nothing to remove");
    }
    Ok(if missing > 0 { 1 } else { 0 })
}

fn list(json: bool) -> anyhow::Result<i32> {
    let cache = KernelCache::from_env()?;
    let scan = cache
        .scan()
        .with_context(|| format!("cannot read the kernel cache {}", cache.root().display()))?;
    let default_key = scan.entries.first().map(|e| e.key.clone());
    if json {
        let kernels: Vec<serde_json::Value> = scan
            .entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "key": e.key,
                    "release": e.metadata.release,
                    "source": e.metadata.source,
                    "package_version": e.metadata.package_version,
                    "arch": e.metadata.arch,
                    "fetched_at": e.metadata.fetched_at,
                    "size_bytes": e.size_bytes(),
                    "sched_ext": e.metadata.sched_ext,
                    "btf": e.metadata.btf,
                    "default": Some(&e.key) == default_key.as_ref(),
                    "image": e.image(),
                    "config": e.config(),
                    "build": e.metadata.build,
                })
            })
            .collect();
        let broken: Vec<String> = scan.broken.iter().map(|b| b.to_string()).collect();
        let doc = serde_json::json!({
            "cache_dir": cache.root(),
            "kernels": kernels,
            "broken": broken,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(0);
    }
    if scan.entries.is_empty() {
        println!(
            "no kernels in {}; run `cargo ktstr kernel fetch`",
            cache.root().display()
        );
    } else {
        let rows: Vec<[String; 7]> = scan
            .entries
            .iter()
            .map(|e| {
                [
                    if Some(&e.key) == default_key.as_ref() {
                        "*"
                    } else {
                        ""
                    }
                    .to_string(),
                    e.key.clone(),
                    e.metadata.release.clone(),
                    e.metadata.source.clone(),
                    kernel::human_bytes(e.size_bytes()),
                    e.metadata.fetched_at.clone(),
                    yes_no(e.metadata.sched_ext).to_string(),
                ]
            })
            .collect();
        let header = [
            "",
            "KEY",
            "RELEASE",
            "SOURCE",
            "SIZE",
            "FETCHED",
            "SCHED_EXT",
        ]
        .map(String::from);
        print_table(&header, &rows);
        println!("cache: {}", cache.root().display());
    }
    for b in &scan.broken {
        println!("broken: {b}");
    }
    if let Ok(k) = std::env::var(kernel::KERNEL_ENV) {
        if !k.trim().is_empty() {
            println!(
                "note: {}={k} is set; tests boot that kernel",
                kernel::KERNEL_ENV
            );
        }
    }
    Ok(0)
}

fn print_table(header: &[String; 7], rows: &[[String; 7]]) {
    let mut widths = header.clone().map(|h| h.chars().count());
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in std::iter::once(header).chain(rows) {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
