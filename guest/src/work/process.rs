//! Work types that run other programs or touch files: fork+exec churn, a user-supplied
//! command in a loop and tmpfs file churn with `fsync`.

use std::ffi::CString;
use std::io::Write;

use ktstr_wire::scenario::EXIT_AT_ONCE_ARG;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

use super::Meter;

/// What `ForkExec` execs: the runtime itself, which exits at once with this argument.
const SELF_EXE: &str = "/proc/self/exe";

/// A program and its argv, ready to exec in a forked child (allocated before the fork).
pub struct Program {
    path: CString,
    argv: Vec<CString>,
}

impl Program {
    pub fn new(path: &str, args: &[String]) -> Result<Self, String> {
        let c = |s: &str| CString::new(s).map_err(|_| format!("`{s}` holds a NUL byte"));
        let mut argv = vec![c(path)?];
        for a in args {
            argv.push(c(a)?);
        }
        Ok(Self {
            path: c(path)?,
            argv,
        })
    }

    /// Runs it once, output to /dev/null, and waits: its exit status.
    fn run_once(&self) -> Result<i32, String> {
        let mut ptrs: Vec<*const libc::c_char> = self.argv.iter().map(|a| a.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        let null = c"/dev/null";
        // SAFETY: the worker is single-threaded here; the child only calls
        // async-signal-safe functions (open, dup2, execv, _exit) on memory prepared
        // before the fork.
        match unsafe { fork() } {
            // SAFETY: in the child: plain syscalls on memory prepared before the fork,
            // ending in exec or `_exit`.
            Ok(ForkResult::Child) => unsafe {
                let fd = libc::open(null.as_ptr(), libc::O_RDWR);
                if fd >= 0 {
                    libc::dup2(fd, 0);
                    libc::dup2(fd, 1);
                    libc::dup2(fd, 2);
                }
                libc::execv(self.path.as_ptr(), ptrs.as_ptr());
                libc::_exit(127)
            },
            Ok(ForkResult::Parent { child }) => match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => Ok(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => Err(format!("killed by {sig}")),
                Ok(other) => Err(format!("ended as {other:?}")),
                Err(e) => Err(format!("waitpid: {e}")),
            },
            Err(e) => Err(format!("fork: {e}")),
        }
    }
}

/// Runs `program` over and over; a unit per run that exits 0. A run that cannot
/// start (exit 127: exec failed) ends the loop; other failures are reported and the
/// loop goes on.
fn run_loop(m: &mut Meter, what: &str, program: &Program) {
    loop {
        match program.run_once() {
            Ok(0) => m.checkpoint(),
            Ok(127) => {
                m.error(format!(
                    "{what}: {} could not be executed (exit 127)",
                    program.path.to_string_lossy()
                ));
                break;
            }
            Ok(code) => m.error(format!("{what}: exited with status {code}")),
            Err(e) => {
                m.error(format!("{what}: {e}"));
                break;
            }
        }
        if m.should_stop() {
            break;
        }
    }
}

/// `ForkExec`: fork, exec the runtime (which exits at once), reap.
pub fn fork_exec(m: &mut Meter) {
    match Program::new(SELF_EXE, &[EXIT_AT_ONCE_ARG.to_string()]) {
        Ok(p) => run_loop(m, "ForkExec", &p),
        Err(e) => m.error(format!("ForkExec: {e}")),
    }
}

/// `Command`: run `path args...` over and over.
pub fn command(m: &mut Meter, path: &str, args: &[String]) {
    match Program::new(path, args) {
        Ok(p) => run_loop(m, "Command", &p),
        Err(e) => m.error(format!("Command: {e}")),
    }
}

/// `TmpfsFsync`: create a file under /tmp, write `kib` KiB, fsync, close, unlink.
pub fn tmpfs_fsync(m: &mut Meter, kib: u32) {
    let data = vec![0x5au8; kib as usize * 1024];
    let pid = std::process::id();
    for i in 0u64.. {
        let path = format!("/tmp/ktstr-fsync-{pid}-{}", i % 4);
        let r = std::fs::File::create(&path).and_then(|mut f| {
            f.write_all(&data)?;
            f.sync_all()
        });
        let r = r.and_then(|()| std::fs::remove_file(&path));
        if let Err(e) = r {
            m.error(format!("TmpfsFsync: {path}: {e}"));
            let _ = std::fs::remove_file(&path);
            break;
        }
        m.checkpoint();
        if m.should_stop() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn meter() -> Meter {
        let now = Instant::now();
        Meter::new(None, now, now + Duration::from_millis(40))
    }

    #[test]
    fn commands_count_clean_runs_and_report_failures() {
        let mut m = meter();
        command(&mut m, "/bin/true", &[]);
        let r = m.into_report("t", 0, "Command");
        assert!(r.work_units > 0 && r.errors.is_empty(), "{r:?}");

        let mut m = meter();
        command(&mut m, "/nonexistent/ktstr", &[]);
        let r = m.into_report("t", 0, "Command");
        assert_eq!(r.work_units, 0);
        assert!(r.errors[0].contains("could not be executed"), "{r:?}");

        let mut m = meter();
        command(&mut m, "/bin/sh", &["-c".into(), "exit 3".into()]);
        let r = m.into_report("t", 0, "Command");
        assert_eq!(r.work_units, 0);
        assert!(r.errors[0].contains("status 3"), "{r:?}");
    }

    #[test]
    fn tmpfs_files_are_written_synced_and_removed() {
        let mut m = meter();
        tmpfs_fsync(&mut m, 16);
        let r = m.into_report("t", 0, "TmpfsFsync");
        assert!(r.work_units > 0 && r.errors.is_empty(), "{r:?}");
        let pid = std::process::id();
        assert!(
            (0..4).all(|i| !std::path::Path::new(&format!("/tmp/ktstr-fsync-{pid}-{i}")).exists())
        );
    }
}
