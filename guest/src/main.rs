//! ktstr's guest runtime, PID 1 of the test VM: mounts the system filesystems, maps the
//! host's shared-memory region (`ktstr.shm=` on the kernel command line), reports Ready with
//! the topology it sees, runs `/ktstr/spec.json` (workers, a program, or a shell), reports
//! Done and reboots — `reboot=k` / `panic=-1` turn that into the VM's exit.
//!
//! Run outside a VM (not PID 1) for development: it skips the mounts, maps the file named
//! by `KTSTR_GUEST_SHM_FILE` instead of `/dev/mem`, reads the spec from `KTSTR_GUEST_SPEC`
//! if set, and exits instead of rebooting.

mod cmdline;
mod devmem;
mod exec;
mod mounts;
mod procfs;
mod report;
mod topology;
mod workers;

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ktstr_wire::msg::GuestMsg;
use ktstr_wire::spec::{GuestSpec, SPEC_PATH};

use report::{log_error, log_info, log_warn};

/// Extra time workers get past the deadline to write their reports before being killed.
const WORKER_GRACE: Duration = Duration::from_secs(10);

fn main() {
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

fn is_pid1() -> bool {
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
            eprintln!("ktstr-guest: worker panicked: {message}");
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
    attach_ring()?;
    report::send(&GuestMsg::Ready {
        kernel_release: kernel_release(),
        uptime_ms: uptime_ms(),
        topology: topology::read_topology(Path::new("/sys")).context("reading the CPU topology")?,
    });
    let spec_path = dev_override("KTSTR_GUEST_SPEC").unwrap_or_else(|| SPEC_PATH.into());
    let bytes = std::fs::read(&spec_path)
        .with_context(|| format!("reading the run spec {}", spec_path.display()))?;
    let spec =
        GuestSpec::from_json(&bytes).with_context(|| format!("in {}", spec_path.display()))?;
    log_info!("running `{}`", spec.test_name);
    run_spec(&spec)
}

/// Runs the spec's parts in order: workers, then the program, then the shell.
fn run_spec(spec: &GuestSpec) -> Result<i32> {
    let mut code = 0;
    if !spec.workers.is_empty() {
        code = code.max(run_workers(spec));
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

/// Runs the workers for `duration_ms` and forwards their reports; 1 if any is missing.
fn run_workers(spec: &GuestSpec) -> i32 {
    phase("workers");
    let deadline = Instant::now() + Duration::from_millis(spec.duration_ms);
    let (started, spawned) = workers::spawn_all(&spec.workers, deadline);
    let mut code = 0;
    if let Err(e) = spawned {
        log_error!(
            "{e:#}; stopping the {} workers already started",
            started.len()
        );
        code = 1;
    }
    let give_up = if code == 0 {
        deadline + WORKER_GRACE
    } else {
        Instant::now()
    };
    let collected = workers::collect(started, give_up);
    phase("collect");
    for (w, r) in collected {
        match r {
            Ok(report) => report::send(&GuestMsg::WorkerReport(report)),
            Err(e) => {
                log_error!("worker {}/{} (pid {}): {e:#}", w.group, w.index, w.pid);
                code = 1;
            }
        }
    }
    code
}

fn phase(name: &str) {
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
