//! ktstr's guest runtime, PID 1 of the test VM: mounts the system filesystems, maps the
//! host's shared-memory region (`ktstr.shm=` on the kernel command line), reports Ready with
//! the topology it sees, runs `/ktstr/spec.json` (a scenario of cgroups and workers, a
//! program, or a shell), reports Done and reboots — `reboot=k` / `panic=-1` turn that into
//! the VM's exit.
//!
//! Run outside a VM (not PID 1) for development: it skips the mounts, maps the file named
//! by `KTSTR_GUEST_SHM_FILE` instead of `/dev/mem`, reads the spec from `KTSTR_GUEST_SPEC`
//! if set, and exits instead of rebooting.

mod arena;
mod cgroup;
mod cmdline;
mod devmem;
mod exec;
mod monitor;
mod mounts;
mod nested;
mod payload;
mod procfs;
mod report;
mod scenario;
mod scheduler;
mod sysstat;
mod topology;
mod warm;
mod work;
mod workers;

use std::ffi::CStr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ktstr_wire::msg::{GuestMsg, SeenTopology};
use ktstr_wire::spec::{GuestSpec, SPEC_PATH};

use report::{log_error, log_info, log_warn};

fn main() {
    // `ForkExec` workers exec the runtime with this argument: it exits at once.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == ktstr_wire::scenario::EXIT_AT_ONCE_ARG)
    {
        std::process::exit(0);
    }
    let nested = Path::new(ktstr_wire::nested::NESTED_SPEC_PATH);
    if is_pid1() && nested.exists() {
        nested::run(nested);
    }
    report::mark_start();
    install_panic_hook();
    let code = match run() {
        Ok(code) => code,
        Err(e) => {
            log_error!("{e:#}");
            1
        }
    };
    report::send(&GuestMsg::Done {
        exit_code: code,
        elapsed_ms: report::elapsed_ms(),
    });
    finish(code)
}

pub(crate) fn is_pid1() -> bool {
    std::process::id() == 1
}

/// Ends the runtime: as PID 1 by rebooting (the VM exits), otherwise by exiting.
fn finish(code: i32) -> ! {
    if is_pid1() {
        nix::unistd::sync();
        let e = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
        // Exiting PID 1 panics the kernel, which `panic=-1` also turns into a reboot.
        eprintln!("ktstr-guest: reboot failed ({e:?}); exiting PID 1 instead");
    }
    std::process::exit(code)
}

fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = info.to_string();
        if report::in_worker() {
            work::worker_log(&format!("panicked: {message}"));
            // SAFETY: ends the forked worker at once, as its normal path does.
            unsafe { libc::_exit(101) };
        }
        eprintln!("ktstr-guest: PANIC: {message}");
        eprintln!("{}", std::backtrace::Backtrace::force_capture());
        report::send_from_panic(&GuestMsg::Panic { message });
        finish(101);
    }));
}

fn run() -> Result<i32> {
    if is_pid1() {
        mounts::mount_all();
    }
    // A warm-start snapshot is taken while this waits; the ring is attached only after
    // the restore, to the header the host wrote for that run.
    let inbox = if is_pid1() {
        warm::park_if_asked()?
    } else {
        None
    };
    attach_ring()?;
    if let Some(inbox) = &inbox {
        warm::take_delivery(inbox).context("taking the warm start's delivery")?;
    }
    let topo = topology::read_topology(Path::new("/sys")).context("reading the CPU topology")?;
    report::send(&GuestMsg::Ready {
        kernel_release: kernel_release(),
        uptime_ms: uptime_ms(),
        topology: topo.clone(),
    });
    let spec_path = dev_override("KTSTR_GUEST_SPEC").unwrap_or_else(|| SPEC_PATH.into());
    let bytes = std::fs::read(&spec_path)
        .with_context(|| format!("reading the run spec {}", spec_path.display()))?;
    let spec =
        GuestSpec::from_json(&bytes).with_context(|| format!("in {}", spec_path.display()))?;
    log_info!("running `{}`", spec.test_name);
    // Sysctls and the scheduler come first; without an attached scheduler the workload
    // would measure the wrong thing, so it does not run.
    let sched = scheduler::start(&spec);
    let code = if sched.ready() {
        run_spec(&spec, &topo)
    } else {
        Ok(1)
    };
    sched.stop();
    code
}

/// Runs the spec's parts in order: the scenario, then the program, then the shell.
fn run_spec(spec: &GuestSpec, topo: &SeenTopology) -> Result<i32> {
    let mut code = 0;
    // The host built the scenario (flat workers never travel).
    if let Some(sc) = &spec.scenario {
        phase("scenario");
        code = code.max(scenario::run(spec, sc, topo));
    }
    if let Some(exec) = &spec.exec {
        phase("exec");
        let status = exec::run(exec)?;
        report::send(&GuestMsg::ExecExit { status });
        code = status;
    }
    if spec.interactive_shell {
        phase("shell");
        exec::shell()?;
    }
    Ok(code)
}

/// Tells the host a lifecycle phase started.
pub(crate) fn phase(name: &str) {
    report::send(&GuestMsg::Phase {
        name: name.into(),
        elapsed_ms: report::elapsed_ms(),
    });
}

/// A development override, honoured only outside a VM.
fn dev_override(var: &str) -> Option<PathBuf> {
    if is_pid1() {
        return None;
    }
    std::env::var_os(var).map(PathBuf::from)
}

fn attach_ring() -> Result<()> {
    let shm = if let Some(file) = dev_override("KTSTR_GUEST_SHM_FILE") {
        let size = std::fs::metadata(&file)
            .with_context(|| format!("KTSTR_GUEST_SHM_FILE={}", file.display()))?
            .len();
        devmem::map(&file, 0, size)?
    } else {
        let cmdline = std::fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?;
        let Some(loc) = cmdline::parse_shm(&cmdline)? else {
            log_warn!("no ktstr.shm= on the kernel command line: reporting on the console only");
            return Ok(());
        };
        devmem::map(Path::new("/dev/mem"), loc.base, loc.size)
            .context("mapping the shared-memory region from /dev/mem")?
    };
    report::attach(&shm).context("attaching to the shared-memory ring")?;
    Ok(())
}

fn kernel_release() -> String {
    // SAFETY: utsname is plain data; uname fills it with NUL-terminated strings.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        log_warn!("uname: {}", std::io::Error::last_os_error());
        return "unknown".into();
    }
    // SAFETY: uname NUL-terminates `release` within the array.
    unsafe { CStr::from_ptr(u.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn uptime_ms() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .map_err(anyhow::Error::from)
        .and_then(|s| procfs::parse_uptime_ms(&s))
        .unwrap_or_else(|e| {
            log_warn!("/proc/uptime: {e:#}");
            0
        })
}
