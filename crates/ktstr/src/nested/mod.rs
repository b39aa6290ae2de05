//! `cargo ktstr nested -- CMD`: hardware-style KVM on a host without it. qemu TCG emulates
//! AMD SVM with nested paging, so an L1 Linux guest under `-cpu max` loads `kvm_amd` and
//! has a real `/dev/kvm`; CMD runs in L1 with the host's root file system shared over
//! virtio-fs (read-only, with the working directory, the cargo and ktstr directories
//! writable at the same paths), so binaries, sidecars and logs are where a host run
//! would have them. The guest runtime is L1's PID 1 (`ktstr_wire::nested`).
//! `reference/nested-kvm.md` has the recipe and its measurements.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ktstr_wire::nested::{
    parse_exit_marker, NestedSpec, ERROR_MARKER, HOST_FS_TAG, NESTED_SPEC_PATH,
};

pub mod l1_qemu;

pub use l1_qemu::{L1Qemu, MIN_L1_QEMU, NESTED_QEMU_ENV};

use crate::initramfs::InitramfsBuilder;
use crate::kernel::{self, KernelCache, Progress};
use crate::scratch::ScratchDir;

/// L1's CPU model when none is given: qemu's `max` (all TCG emulates, SVM included).
pub const DEFAULT_L1_CPU_MODEL: &str = "max";
/// What L1 must lack whatever its model: the AVX family (XSAVE size mismatch in L2's FPU
/// set-up in this nesting), PKU and MPX.
const L1_CPU_WITHOUT: &str = "-avx,-avx2,-fma,-f16c,-vaes,-vpclmulqdq,-pku,-mpx";

/// qemu's `-cpu` value for L1 on CPU model `model` (`max`, or a named AMD model such as
/// `EPYC-Milan`: its family and model decide which branch Linux and our VMM take for LLC
/// ids, so CI boots L2 under more than one). Named models get SVM and nested paging
/// added; `max` has both.
/// Features may follow the model (`EPYC-Rome,+pcid`); the ones taken away come last, so
/// they win.
pub fn l1_cpu(spec: &str) -> Result<String> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let mut parts = spec.split(',');
    let model = parts.next().unwrap_or_default();
    let features: Vec<&str> = parts.collect();
    let features_ok = features.iter().all(|f| {
        f.strip_prefix(['+', '-'])
            .is_some_and(|n| name_ok(n) && !n.starts_with(['+', '-']))
    });
    if !name_ok(model) || model.starts_with('-') || !features_ok {
        bail!("--cpu {spec:?}: give a qemu CPU model name, optionally with +feature/-feature after commas (e.g. max, EPYC-Milan, EPYC-Rome,+pcid; `qemu-system-x86_64 -cpu help` lists them)");
    }
    let mut cpu = model.to_string();
    if model != DEFAULT_L1_CPU_MODEL {
        cpu.push_str(",+svm,+npt");
    }
    for f in features {
        cpu.push(',');
        cpu.push_str(f);
    }
    cpu.push(',');
    cpu.push_str(L1_CPU_WITHOUT);
    Ok(cpu)
}

/// Set to `1` in CMD's environment inside L1.
pub const INSIDE_ENV: &str = "KTSTR_NESTED";

/// Whether this process runs inside `cargo ktstr nested`'s L1.
pub fn inside() -> bool {
    std::env::var_os(INSIDE_ENV).is_some_and(|v| v == "1")
}

/// L1 kernel arguments: quiet, and no reboot loop.
const L1_KARGS: &str = "console=ttyS0 panic=-1 reboot=k quiet loglevel=3 nokaslr";

/// What to run and on what L1.
#[derive(Debug, Clone)]
pub struct NestedOptions {
    /// Program and arguments run in L1.
    pub argv: Vec<String>,
    /// L1 vCPUs (default: the host CPUs this process may use, at least 2).
    pub vcpus: Option<u32>,
    /// L1 memory in MiB.
    pub memory_mib: u64,
    /// L1 kernel: a kernel cache key or version (default: the default cached kernel).
    pub kernel: Option<String>,
    /// More host directories to share writable.
    pub share: Vec<PathBuf>,
    /// Print L1's boot console too (not only the command's output).
    pub verbose: bool,
    /// L1's qemu CPU model (default [`DEFAULT_L1_CPU_MODEL`]); an AMD one, since only
    /// SVM nests under TCG.
    pub cpu_model: Option<String>,
    /// The qemu that runs L1 (default: see [`l1_qemu::ensure`]).
    pub qemu: Option<PathBuf>,
}

/// What an L1 boot needs, found or fetched: the kernel, its KVM modules and the qemu.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub kernel: kernel::ResolvedKernel,
    pub modules: Vec<PathBuf>,
    pub qemu: L1Qemu,
}

/// Finds or fetches what L1 needs (`nested --prepare` stops here: CI fetches before it
/// starts timing L1 boots).
pub fn prepare(opts: &NestedOptions, progress: &Progress) -> Result<Prepared> {
    let k = kernel::resolve(opts.kernel.as_deref())?;
    if k.cache_key.is_none() {
        bail!(
            "the L1 kernel must come from the kernel cache (its KVM modules are kept beside it): {} is not a cache entry; use `--kernel <cache key>` or `cargo ktstr kernel fetch`",
            k.image.display()
        );
    }
    let entry_dir = k.image.parent().context("kernel image has no directory")?;
    let cache = KernelCache::from_env()?;
    let modules = kernel::fetch::fetch_kvm_modules(&cache, entry_dir, &k.release, progress)
        .context("the L1 guest needs the kernel's KVM modules (package linux-modules-<release>)")?;
    let qemu = l1_qemu::ensure(opts.qemu.as_deref(), progress)?;
    if qemu.version < Some(MIN_L1_QEMU) {
        progress.note(&format!(
            "ktstr: L1 runs on {}: older than {}.{}, whose nested SVM crashed L1 in about half of the boots measured (docs/reliability.md)",
            qemu.describe(),
            MIN_L1_QEMU.0,
            MIN_L1_QEMU.1
        ));
    }
    Ok(Prepared {
        kernel: k,
        modules,
        qemu,
    })
}

/// Set in L1's environment: how the emulator one level down runs L1's vCPUs
/// (`single`/`multi`), so runs in L1 know their "hardware" is TCG.
pub const OUTER_TCG_ENV: &str = "KTSTR_NESTED_TCG";

/// Inside `cargo ktstr nested`: the TCG threading of the emulator L1 runs on.
pub fn outer_tcg_threading() -> Option<crate::engine::qemu::TcgThreading> {
    use crate::engine::qemu::TcgThreading;
    match std::env::var(OUTER_TCG_ENV).as_deref() {
        Ok("multi") => Some(TcgThreading::Multi),
        Ok("single") => Some(TcgThreading::Single),
        _ => None,
    }
}

/// L1's TCG threading: `KTSTR_NESTED_TCG_THREAD=single|multi`, default multi. One thread
/// is immune to the stale-translation `Oops: int3` but far too slow here: L2 guests did
/// not reach ready within 90 s (measured), so multi it is, with the runner's narrow retry.
fn l1_threading() -> &'static str {
    match std::env::var("KTSTR_NESTED_TCG_THREAD").as_deref() {
        Ok("single") => "single",
        _ => "multi",
    }
}

/// Exit status of `nested` when the L1 kernel itself crashed (an oops or panic in L1, the
/// emulated machine, not in the command or its VMs).
pub const L1_CRASHED_EXIT: i32 = 3;

/// The messages of the kernel log records (`[ 12.3] message`) in a console line, found
/// anywhere in it: the kernel writes over whatever the command left unfinished, such as a
/// progress bar.
fn kernel_messages(line: &str) -> impl Iterator<Item = &str> {
    line.match_indices("] ").filter_map(move |(at, _)| {
        let (_, stamp) = line[..at].rsplit_once('[')?;
        is_kernel_stamp(stamp).then(|| &line[at + 2..])
    })
}

/// A console line that says the L1 kernel itself died: a kernel record of a panic or an
/// oops.
fn l1_crashed(line: &str) -> bool {
    kernel_messages(line).any(|m| m.starts_with("Kernel panic") || m.contains("Oops:"))
}

/// A console line where the kernel starts reporting a failure (the report the crash
/// message quotes: its first lines name the fault, its exception frames where it
/// recurred).
fn l1_report_starts(line: &str) -> bool {
    kernel_messages(line).any(|m| {
        [
            "BUG:",
            "Oops:",
            "Kernel panic",
            "general protection fault",
            "kernel BUG",
        ]
        .iter()
        .any(|k| m.starts_with(k))
    })
}

/// Lines of L1's crash report kept (its start and its end if longer).
const CRASH_REPORT_HEAD: usize = 120;
const CRASH_REPORT_TAIL: usize = 40;

/// How long L1 may go without a heartbeat byte (one every
/// [`ktstr_wire::nested::HEARTBEAT_INTERVAL_SECS`]) before `nested` counts its machine as
/// stopped. Seen: an L1 whose vCPUs never ran again, its qemu busy in the host's kernel.
const L1_SILENT_LIMIT: Duration = Duration::from_secs(120);

/// Default L1 memory: room for cargo, nextest and an L2 guest of a few GiB; qemu only
/// backs what L1 touches.
pub const DEFAULT_MEMORY_MIB: u64 = 6144;

/// The virtio-fs daemon: `KTSTR_VIRTIOFSD`, `virtiofsd` on PATH, or where Debian puts it
/// (`/usr/libexec/virtiofsd` from the virtiofsd package, `/usr/lib/qemu/virtiofsd` from
/// qemu-system-common up to qemu 7.2).
pub fn find_virtiofsd() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KTSTR_VIRTIOFSD").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    crate::which::which("virtiofsd").or_else(|| {
        ["/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    })
}

/// Directories the command needs to write, from the environment: the working directory,
/// the cargo target dir, cargo's and rustup's homes, ktstr's caches and run roots, and
/// `extra`. Nested ones are dropped (the outer share covers them); missing ones are
/// created on the host first.
pub fn writable_dirs(cwd: &Path, env: &[(String, String)], extra: &[PathBuf]) -> Vec<PathBuf> {
    let get = |k: &str| {
        env.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let home = get("HOME").map(PathBuf::from);
    let mut dirs: Vec<PathBuf> = vec![cwd.to_path_buf()];
    for var in [
        "CARGO_TARGET_DIR",
        "KTSTR_CACHE_DIR",
        "KTSTR_SCHEDULER_CACHE",
        "KTSTR_RUNS_ROOT",
        "KTSTR_SIDECAR_DIR",
    ] {
        dirs.extend(get(var).map(PathBuf::from));
    }
    let cargo_home = get("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".cargo")));
    let rustup_home = get("RUSTUP_HOME")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".rustup")));
    let ktstr_cache = get("XDG_CACHE_HOME")
        .map(|x| PathBuf::from(x).join("ktstr"))
        .or_else(|| home.as_ref().map(|h| h.join(".cache/ktstr")));
    dirs.extend(cargo_home);
    dirs.extend(rustup_home);
    dirs.extend(ktstr_cache);
    dirs.extend(extra.iter().cloned());
    let mut dirs: Vec<PathBuf> = dirs
        .into_iter()
        .filter(|d| d.is_absolute() && d != Path::new("/"))
        .collect();
    dirs.sort();
    dirs.dedup();
    let mut kept: Vec<PathBuf> = Vec::new();
    for d in dirs {
        if !kept.iter().any(|k| d.starts_with(k)) {
            kept.push(d);
        }
    }
    kept
}

/// Boot L1 and run `opts.argv` in it; returns the command's exit status.
pub fn run(opts: &NestedOptions, progress: &Progress) -> Result<i32> {
    let (prog, _) = opts
        .argv
        .split_first()
        .context("nothing to run: give a command after `--`")?;
    let cpu = l1_cpu(opts.cpu_model.as_deref().unwrap_or(DEFAULT_L1_CPU_MODEL))?;
    let virtiofsd = find_virtiofsd().context(
        "virtiofsd not found (KTSTR_VIRTIOFSD, PATH, /usr/libexec, /usr/lib/qemu): install it (Debian 12: qemu-system-common ships /usr/lib/qemu/virtiofsd; later: apt-get install virtiofsd)",
    )?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("`cargo ktstr nested` needs root: virtiofsd shares the host's root file system from a private mount namespace");
    }

    let Prepared {
        kernel: k,
        modules,
        qemu,
    } = prepare(opts, progress)?;
    let qemu = qemu.path;

    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| !matches!(k.as_str(), "TMPDIR" | "KTSTR_TMPDIR"))
        .collect();
    env.push(("TMPDIR".into(), "/tmp".into()));
    env.push((INSIDE_ENV.into(), "1".into()));
    env.retain(|(k, _)| k != OUTER_TCG_ENV);
    env.push((OUTER_TCG_ENV.into(), l1_threading().into()));
    // The same tree seen from L1: its commit probed here, where a git status is fast,
    // instead of by every process in L1 over virtio-fs.
    let commit_env = ktstr_sidecar::provenance::PROJECT_COMMIT_ENV;
    if let Some(c) = ktstr_sidecar::provenance::project_commit() {
        env.retain(|(k, _)| k != commit_env);
        env.push((commit_env.into(), c));
    }
    let writable = writable_dirs(&cwd, &env, &opts.share);
    for d in &writable {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }

    let work = ScratchDir::create(&std::env::temp_dir(), "ktstr-nested-")
        .context("cannot create a private directory for the L1 guest")?;
    let spec = NestedSpec {
        argv: opts.argv.clone(),
        cwd: cwd.display().to_string(),
        env,
        writable: writable.iter().map(|d| d.display().to_string()).collect(),
        modules: Vec::new(),
    };
    let initrd = work.path().join("l1-initramfs.cpio");
    build_initramfs(spec, &modules, &initrd)?;

    let socket = work.path().join("virtiofs.sock");
    let mut vfs = VirtiofsdGuard(Some(start_virtiofsd(&virtiofsd, &socket, work.path())?));
    wait_for_socket(&socket, vfs.0.as_mut().expect("just started"))?;

    let vcpus = opts
        .vcpus
        .unwrap_or_else(|| crate::engine::available_host_cpus().len().max(2) as u32);
    let heartbeat = work.path().join("heartbeat");
    let args = qemu_args(
        &k.image,
        &initrd,
        &socket,
        &heartbeat,
        &cpu,
        vcpus,
        opts.memory_mib,
    );
    let mut cmd = Command::new(&qemu);
    let (_stderr_path, stderr) = work.create_file("qemu.stderr")?;
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    crate::child::die_with_parent(&mut cmd, libc::SIGKILL);
    crate::interrupt::catch();
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", qemu.display()))?;
    let watchdog = Watchdog::start(child.id(), heartbeat, L1_SILENT_LIMIT);
    let outcome = relay_console(&mut child, opts.verbose);
    let stopped = watchdog.finish();
    let _ = child.kill();
    let status = child.wait().context("cannot wait for qemu")?;
    if let Some(c) = vfs.0.take() {
        stop(c);
    }
    let stderr = std::fs::read_to_string(work.path().join("qemu.stderr")).unwrap_or_default();
    match outcome {
        Relayed::Exit(code) => {
            eprintln!(
                "ktstr nested: `{prog}` exited with {code} in L1 after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            Ok(code)
        }
        Relayed::Error(why) => bail!("the L1 guest could not run `{prog}`: {why}"),
        Relayed::Ended {
            crash: Some(report),
            ..
        } => {
            eprintln!(
                "ktstr nested: the L1 kernel crashed before `{prog}` finished (exit {L1_CRASHED_EXIT}); its report:\n{report}"
            );
            Ok(L1_CRASHED_EXIT)
        }
        Relayed::Ended { tail, .. } if stopped => {
            eprintln!(
                "ktstr nested: the L1 machine stopped before `{prog}` finished (exit {L1_CRASHED_EXIT}): no heartbeat from its PID 1 for {} s, so nothing in L1 ran any more (the emulator wedged; docs/reliability.md); its console ended with:\n{tail}",
                L1_SILENT_LIMIT.as_secs()
            );
            Ok(L1_CRASHED_EXIT)
        }
        Relayed::Ended { tail, .. } => bail!(
            "the L1 guest ended ({status}) without running `{prog}` to its end{}{}",
            if tail.is_empty() {
                String::new()
            } else {
                format!("; its console ended with:\n{tail}")
            },
            if stderr.trim().is_empty() {
                String::new()
            } else {
                format!("\nqemu: {}", stderr.trim())
            }
        ),
    }
}

/// The L1 initramfs: the guest runtime as `/init` (with its libraries), the modules and
/// the spec.
fn build_initramfs(mut spec: NestedSpec, modules: &[PathBuf], out: &Path) -> Result<()> {
    let guest = crate::runner::guest_binary()?;
    let mut b = InitramfsBuilder::new();
    for d in [
        "/dev", "/proc", "/sys", "/tmp", "/run", "/modules", "/ktstr",
    ] {
        b.add_dir(d, 0o755)?;
    }
    b.add_char_dev("/dev/console", 5, 1, 0o600)?;
    b.add_char_dev("/dev/null", 1, 3, 0o666)?;
    b.add_elf_with_closure("/init", &guest)?;
    for (i, m) in modules.iter().enumerate() {
        let name = m.file_name().unwrap_or_default().to_string_lossy();
        let guest_path = format!("/modules/{i}-{name}");
        b.add_file(&guest_path, m, 0o644)?;
        // kvm-intel only loads on Intel, kvm-amd only on AMD: the guest skips the other.
        spec.modules.push(guest_path);
    }
    b.add_bytes(NESTED_SPEC_PATH, spec.to_json(), 0o644)?;
    let f = crate::scratch::create_new_file(out, 0o600)
        .with_context(|| format!("cannot create {}", out.display()))?;
    let mut w = std::io::BufWriter::new(f);
    w.write_all(&b.to_bytes())
        .and_then(|_| w.flush())
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

fn start_virtiofsd(bin: &Path, socket: &Path, work: &Path) -> Result<Child> {
    let log = crate::scratch::create_new_file(&work.join("virtiofsd.log"), 0o600)
        .context("cannot create the virtiofsd log")?;
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--socket-path={}", socket.display()))
        // chroot, not a pivot_root into the source: the source is / itself.
        .args(["-o", "source=/", "-o", "cache=auto", "-o", "sandbox=chroot"])
        .args(["-o", "announce_submounts"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    crate::child::die_with_parent(&mut cmd, libc::SIGKILL);
    cmd.spawn()
        .with_context(|| format!("cannot start {}", bin.display()))
}

fn wait_for_socket(socket: &Path, vfs: &mut Child) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        if let Some(st) = vfs.try_wait()? {
            let log =
                std::fs::read_to_string(socket.with_file_name("virtiofsd.log")).unwrap_or_default();
            bail!("virtiofsd exited ({st}) before it listened: {}", log.trim());
        }
        if Instant::now() > deadline {
            bail!(
                "virtiofsd did not create its socket {} within 10 s",
                socket.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

struct VirtiofsdGuard(Option<Child>);

impl Drop for VirtiofsdGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            stop(c);
        }
    }
}

fn stop(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

/// qemu's arguments for L1 (pure, tested).
pub fn qemu_args(
    kernel: &Path,
    initrd: &Path,
    socket: &Path,
    heartbeat: &Path,
    cpu: &str,
    vcpus: u32,
    memory_mib: u64,
) -> Vec<String> {
    let threading = l1_threading();
    vec![
        "-accel".into(),
        format!("tcg,thread={threading}"),
        "-cpu".into(),
        cpu.into(),
        "-smp".into(),
        vcpus.to_string(),
        "-m".into(),
        format!("{memory_mib}M"),
        // vhost-user needs guest RAM qemu can share with virtiofsd.
        "-object".into(),
        format!("memory-backend-memfd,id=mem,size={memory_mib}M,share=on"),
        "-M".into(),
        "q35,memory-backend=mem".into(),
        "-chardev".into(),
        format!("socket,id=vfs,path={}", socket.display()),
        "-device".into(),
        format!("vhost-user-fs-pci,queue-size=1024,chardev=vfs,tag={HOST_FS_TAG}"),
        "-display".into(),
        "none".into(),
        "-no-reboot".into(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-monitor".into(),
        "none".into(),
        "-serial".into(),
        "stdio".into(),
        // ttyS1: PID 1's heartbeat.
        "-serial".into(),
        format!("file:{}", heartbeat.display()),
        "-kernel".into(),
        kernel.display().to_string(),
        "-initrd".into(),
        initrd.display().to_string(),
        "-append".into(),
        l1_kargs(),
    ]
}

/// L1's kernel command line: [`L1_KARGS`] plus `KTSTR_NESTED_L1_KARGS` (for experiments
/// on L1's kernel, e.g. its mitigations).
fn l1_kargs() -> String {
    match std::env::var("KTSTR_NESTED_L1_KARGS") {
        Ok(extra) if !extra.trim().is_empty() => format!("{L1_KARGS} {}", extra.trim()),
        _ => L1_KARGS.to_string(),
    }
}

/// A kernel log line on the console: `[    1.234567] ...` (the command's output is
/// relayed; L1's kernel chatter only with `--verbose`).
fn is_kernel_line(line: &str) -> bool {
    let Some(rest) = line.strip_prefix('[') else {
        return false;
    };
    rest.split_once("] ")
        .is_some_and(|(stamp, _)| is_kernel_stamp(stamp))
}

/// The inside of a kernel record's `[    1.234567]`: seconds since boot.
fn is_kernel_stamp(stamp: &str) -> bool {
    let stamp = stamp.trim_start();
    !stamp.is_empty()
        && stamp.contains('.')
        && stamp.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// How L1's console ended.
enum Relayed {
    Exit(i32),
    Error(String),
    /// No marker: L1's crash report if its kernel died (from the first line of the
    /// report, which a panic's trace would push out of the tail), and the last console
    /// lines.
    Ended {
        crash: Option<String>,
        tail: String,
    },
}

/// Kills qemu when L1's heartbeat file stops growing for `limit` (armed by the first
/// byte: a guest runtime without the heartbeat is never judged).
struct Watchdog {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<bool>,
}

impl Watchdog {
    fn start(qemu_pid: u32, heartbeat: PathBuf, limit: Duration) -> Self {
        use std::sync::atomic::Ordering;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = done.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = 0u64;
            let mut since = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(500));
                let len = std::fs::metadata(&heartbeat).map_or(0, |m| m.len());
                if len != seen {
                    seen = len;
                    since = Instant::now();
                } else if seen > 0 && since.elapsed() >= limit {
                    // SAFETY: kill(2) on our own child's pid, not yet reaped (the relay
                    // loop waits for this thread before qemu is waited for).
                    unsafe { libc::kill(qemu_pid as libc::pid_t, libc::SIGKILL) };
                    return true;
                }
            }
            false
        });
        Watchdog { done, thread }
    }

    /// Stops the watchdog; whether it killed L1.
    fn finish(self) -> bool {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(false)
    }
}

/// L1's kernel failure report, from the line it starts on: the head whole, then the
/// last lines.
#[derive(Default)]
struct CrashReport {
    head: Vec<String>,
    tail: std::collections::VecDeque<String>,
    skipped: usize,
    crashed: bool,
}

impl CrashReport {
    fn push(&mut self, line: &str) {
        if self.head.is_empty() && !l1_report_starts(line) {
            return;
        }
        self.crashed |= l1_crashed(line);
        if self.head.len() < CRASH_REPORT_HEAD {
            self.head.push(line.to_string());
            return;
        }
        self.tail.push_back(line.to_string());
        if self.tail.len() > CRASH_REPORT_TAIL {
            self.tail.pop_front();
            self.skipped += 1;
        }
    }

    /// The report, if the kernel died (a BUG it survived is not a crash).
    fn finish(self) -> Option<String> {
        if !self.crashed {
            return None;
        }
        let mut lines = self.head;
        if self.skipped > 0 {
            lines.push(format!("[... {} lines ...]", self.skipped));
        }
        lines.extend(self.tail);
        Some(lines.join("\n"))
    }
}

/// Copy L1's console to our stdout (after the guest runtime starts the command; all of it
/// with `verbose`), watch for the exit and error markers, stop on SIGINT/SIGTERM.
fn relay_console(child: &mut Child, verbose: bool) -> Relayed {
    let Some(out) = child.stdout.take() else {
        return Relayed::Ended {
            crash: None,
            tail: String::new(),
        };
    };
    let mut report = CrashReport::default();
    let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut error = None;
    let stdout = std::io::stdout();
    for line in BufReader::new(out).split(b'\n') {
        if let Some(sig) = crate::interrupt::received() {
            let _ = child.kill();
            return Relayed::Error(format!("interrupted by {}", crate::interrupt::name(sig)));
        }
        let Ok(line) = line else { break };
        let text = String::from_utf8_lossy(&line);
        // A line redrawn with carriage returns: keep what it finally said.
        let text = text.trim_end_matches('\r');
        let text = text.rsplit('\r').next().unwrap_or(text);
        if let Some(code) = parse_exit_marker(text) {
            return match error.take() {
                Some(e) => Relayed::Error(e),
                None => Relayed::Exit(code),
            };
        }
        if let Some(e) = text.strip_prefix(ERROR_MARKER) {
            error = Some(e.trim().to_string());
            continue;
        }
        if verbose || !is_kernel_line(text) {
            let mut o = stdout.lock();
            let _ = o
                .write_all(text.as_bytes())
                .and_then(|_| o.write_all(b"\n"));
            let _ = o.flush();
        }
        report.push(text);
        tail.push_back(text.to_string());
        if tail.len() > 30 {
            tail.pop_front();
        }
    }
    match error {
        Some(e) => Relayed::Error(e),
        None => Relayed::Ended {
            crash: report.finish(),
            tail: tail.into_iter().collect::<Vec<_>>().join("\n"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn writable_dirs_cover_cwd_cargo_rustup_and_ktstr_without_nesting() {
        let dirs = writable_dirs(
            Path::new("/work/p"),
            &env(&[
                ("HOME", "/root"),
                ("CARGO_TARGET_DIR", "/work/p/target"),
                ("KTSTR_RUNS_ROOT", "/srv/runs"),
            ]),
            &[PathBuf::from("/data"), PathBuf::from("relative")],
        );
        let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        assert_eq!(
            dirs,
            [
                "/data",
                "/root/.cache/ktstr",
                "/root/.cargo",
                "/root/.rustup",
                "/srv/runs",
                "/work/p"
            ]
        );
    }

    #[test]
    fn an_l1_crash_is_a_kernel_record_anywhere_in_the_line() {
        assert!(l1_crashed(
            "[  536.575788] Kernel panic - not syncing: Fatal exception in interrupt"
        ));
        // Written over nextest's unfinished progress line.
        assert!(l1_crashed(
            "\x1b[2K     Running [ 00:03:31] 6/36: 1 running   [  377.762876] Kernel panic - not syncing: corrupted stack end"
        ));
        assert!(l1_crashed("[    9.1] Oops: int3: 0000 [#1] SMP"));
        assert!(!l1_crashed("test output: Kernel panic expected"));
        assert!(!l1_crashed("[x] Oops: a checklist"));
        assert!(!l1_crashed("[  1.0] kvm_amd: SVM enabled"));
    }

    #[test]
    fn the_crash_report_starts_at_the_first_failure_line() {
        let mut r = CrashReport::default();
        r.push("[  1.0] kvm_amd: SVM enabled");
        r.push("     PASS [ 20.1s] ktstr/boot_smoke");
        r.push("[536.55] BUG: TASK stack guard page was hit at ffa0000000aa7ff8");
        for i in 0..200 {
            r.push(&format!("[536.56] frame {i}"));
        }
        r.push("[536.57] Kernel panic - not syncing: Fatal exception in interrupt");
        let report = r.finish().expect("a panic is a crash");
        let lines: Vec<&str> = report.lines().collect();
        assert!(lines[0].contains("stack guard page"), "{report}");
        assert_eq!(lines.len(), CRASH_REPORT_HEAD + 1 + CRASH_REPORT_TAIL);
        assert!(
            lines[CRASH_REPORT_HEAD].contains("42 lines ..."),
            "{report}"
        );
        assert!(lines.last().unwrap().contains("Kernel panic"), "{report}");

        // A BUG the kernel survives, without a panic or oops: no crash.
        let mut r = CrashReport::default();
        r.push("[ 3.0] BUG: scheduling while atomic");
        r.push("[ 3.1] more");
        assert_eq!(r.finish(), None);
    }

    #[test]
    fn only_kernel_lines_are_held_back() {
        assert!(is_kernel_line(
            "[    9.163086] BUG: TASK stack guard page was hit"
        ));
        assert!(is_kernel_line("[12345.000001] kvm_amd: SVM enabled"));
        assert!(!is_kernel_line("[ 00:00:03] Listing 3/21 binaries"));
        assert!(!is_kernel_line("        PASS [   7.756s] ktstr/boot_smoke"));
        assert!(!is_kernel_line("[x] a checklist"));
        assert!(!is_kernel_line("0-3"));
    }

    #[test]
    fn named_l1_models_get_svm_and_lose_the_avx_family() {
        let rome = l1_cpu("EPYC-Rome").unwrap();
        assert!(rome.starts_with("EPYC-Rome,+svm,+npt,"), "{rome}");
        assert!(rome.ends_with(L1_CPU_WITHOUT), "{rome}");
        assert_eq!(l1_cpu("max").unwrap(), format!("max,{L1_CPU_WITHOUT}"));
        assert_eq!(
            l1_cpu("EPYC,+pcid,-sse4a").unwrap(),
            format!("EPYC,+svm,+npt,+pcid,-sse4a,{L1_CPU_WITHOUT}")
        );
        for bad in [
            "",
            "max,avx",
            "-max",
            "EPYC Rome",
            "host;reboot",
            "max,+",
            "max,,+x",
            "max,+-x",
        ] {
            let e = l1_cpu(bad).unwrap_err().to_string();
            assert!(e.contains("qemu CPU model name"), "{bad}: {e}");
        }
    }

    #[test]
    fn l1_has_svm_shared_memory_and_the_host_fs() {
        let a = qemu_args(
            Path::new("/k/bzImage"),
            Path::new("/w/i.cpio"),
            Path::new("/w/vfs.sock"),
            Path::new("/w/heartbeat"),
            &l1_cpu(DEFAULT_L1_CPU_MODEL).unwrap(),
            2,
            6144,
        )
        .join(" ");
        assert!(a.contains("-cpu max,-avx,"), "{a}");
        assert!(
            a.contains("memory-backend-memfd,id=mem,size=6144M,share=on"),
            "{a}"
        );
        assert!(a.contains("-M q35,memory-backend=mem"), "{a}");
        assert!(a.contains("tag=ktstr-host"), "{a}");
        assert!(a.contains("socket,id=vfs,path=/w/vfs.sock"), "{a}");
        assert!(a.contains("-serial stdio -serial file:/w/heartbeat"), "{a}");
    }
}
