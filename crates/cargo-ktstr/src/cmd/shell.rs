//! `cargo ktstr shell`: boot a VM of a given shape and run one command in it (or give an
//! interactive console when a shell is packed).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use ktstr::engine;
use ktstr::runner::{self, RunRequest};
use ktstr_topology::Topology;
use ktstr_wire::spec::{ExecSpec, GuestSpec};

#[derive(Args, Debug)]
pub struct ShellArgs {
    /// CPU topology as `N,L,C,T` (NUMA nodes, LLCs, cores per LLC, threads per core) or `1n2l2c1t`.
    #[arg(long, default_value = "1,1,2,1")]
    topology: Topology,
    /// Kernel: a bzImage path, a source tree, a version or a cache key (default: KTSTR_KERNEL, else the newest cached kernel).
    #[arg(long)]
    kernel: Option<String>,
    /// Host binary to pack (with its shared libraries) as /bin/<name>; repeatable.
    #[arg(long = "include", value_name = "PATH")]
    includes: Vec<PathBuf>,
    /// Command to run in the guest, split like a shell would (no shell needed in the guest).
    #[arg(long, value_name = "'CMD ARGS'")]
    exec: Option<String>,
    /// Engine: auto, kvm or qemu-tcg (default: KTSTR_ENGINE, else auto).
    #[arg(long)]
    engine: Option<String>,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 1024)]
    memory_mib: u64,
    /// Host CPUs for the vCPUs (default: min(vCPUs, host CPUs)).
    #[arg(long)]
    cpu_budget: Option<u32>,
    /// Give up after this many seconds: the guest is killed when the whole run (boot
    /// included) takes longer.
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
    /// Extra kernel command-line argument; repeatable.
    #[arg(long = "karg")]
    kargs: Vec<String>,
    /// Boot cold instead of restoring a snapshot of a booted guest (as KTSTR_SNAPSHOT=off).
    #[arg(long)]
    no_snapshot: bool,
}

pub fn run(args: ShellArgs) -> anyhow::Result<i32> {
    if args.no_snapshot {
        // Read by the runner in this process; set before any thread starts.
        std::env::set_var(engine::snapshot::ENV, "off");
    }
    let kernel = ktstr::kernel::resolve(args.kernel.as_deref())?;
    let engine = engine::choose(args.engine.as_deref())?;
    for inc in &args.includes {
        anyhow::ensure!(
            inc.is_file(),
            "--include {}: no such file (give a host path, e.g. /bin/cat)",
            inc.display()
        );
    }
    let mut spec = GuestSpec::new("shell", args.timeout_s * 1000);
    match &args.exec {
        Some(line) if line.trim().is_empty() => {
            anyhow::bail!(
                "--exec needs a command, e.g. --exec 'cat /proc/cpuinfo' (with --include /bin/cat)"
            )
        }
        Some(line) => {
            let argv = shlex::split(line)
                .filter(|v| !v.is_empty())
                .with_context(|| {
                    format!("--exec {line:?}: cannot split into arguments (unbalanced quotes?)")
                })?;
            spec.exec = Some(ExecSpec {
                argv,
                env: Vec::new(),
            });
        }
        None => {
            let has_shell = args.includes.iter().any(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| matches!(n, "sh" | "bash" | "busybox" | "ash" | "dash"))
            });
            anyhow::ensure!(
                has_shell,
                "no --exec given and no shell packed: pass --exec 'CMD ARGS', or --include a static shell (e.g. --include /bin/busybox) for an interactive console"
            );
            spec.interactive_shell = true;
        }
    }
    let interactive = spec.interactive_shell;
    let req = RunRequest {
        test_name: "shell".into(),
        topology: args.topology,
        memory_mib: args.memory_mib,
        cpu_budget: args.cpu_budget,
        kernel,
        engine,
        spec,
        scheduler: "eevdf".into(),
        sysctls: Vec::new(),
        kargs: args.kargs,
        includes: args.includes,
        payloads: Vec::new(),
        expect_err: false,
        perf_delta_assertions: Vec::new(),
        assert: Default::default(),
        stream_output: true,
        console_on_terminal: interactive,
        write_sidecar: false,
        deadline_override: Some(std::time::Duration::from_secs(args.timeout_s)),
    };
    let widest = ktstr::test_support::execute::QEMU_TCG_MAX_VCPUS;
    if req.engine == ktstr::engine::EngineKind::QemuTcg && req.topology.vcpus() > widest {
        anyhow::bail!(
            "{} has {} vCPUs; the qemu-tcg engine runs at most {widest} (wider Debian guests oops while the kernel patches its text, or never reach /init): pick a smaller topology, or run on hardware KVM / inside `cargo ktstr nested` with --engine kvm",
            req.topology,
            req.topology.vcpus()
        );
    }
    eprintln!(
        "ktstr: booting {} ({} vCPUs) on {} with kernel {}",
        req.topology,
        req.topology.vcpus(),
        req.engine,
        req.kernel.release
    );
    let out = runner::run(&req)?;
    eprintln!(
        "ktstr: guest ready after {} ms (guest uptime {} ms), whole run {} ms",
        out.boot_to_ready_ms
            .map_or_else(|| "-".to_string(), |v| v.to_string()),
        out.collected
            .ready
            .as_ref()
            .map_or_else(|| "-".to_string(), |r| r.uptime_ms.to_string()),
        out.wall_ms
    );
    if let Some(status) = out.collected.exec_status {
        return Ok(status);
    }
    for r in &out.reasons() {
        eprintln!("ktstr: {r}");
    }
    if let Some(log) = &out.console_log {
        eprintln!("ktstr: console log: {}", log.display());
    }
    Ok(if out.reasons().is_empty() { 0 } else { 1 })
}
