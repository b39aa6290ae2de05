//! `cargo ktstr kernel`: fetch, list and locate the kernels tests boot. The work is done
//! by `ktstr::kernel`; this module parses arguments and prints.

use anyhow::Context;
use clap::{Args, Subcommand};
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
