//! Runs the spec's program (`cargo ktstr shell --exec`) or an interactive shell on the
//! console.

use std::ffi::CString;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ktstr_wire::spec::ExecSpec;
use ktstr_wire::OutputStream;

use crate::report;

const READ_CHUNK: usize = 16 * 1024;
const POLL: Duration = Duration::from_millis(10);
const SHELL: &str = "/bin/sh";
const PATH: &str = "/bin:/sbin:/usr/bin:/usr/sbin";

/// Exit code of a finished process: its code, or 128 + the signal that killed it.
pub fn status_code(s: ExitStatus) -> i32 {
    match (s.code(), s.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 255,
    }
}

/// Runs the program, streams its stdout/stderr as output frames, kills it if the host
/// asks to stop. Returns its exit code.
pub fn run(spec: &ExecSpec) -> Result<i32> {
    let Some((prog, args)) = spec.argv.split_first() else {
        bail!("exec: empty argv");
    };
    let mut child = Command::new(prog)
        .args(args)
        .env("PATH", PATH)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!("starting `{prog}` (is it in the initramfs, with its libraries?)")
        })?;
    let pipes = [
        child
            .stdout
            .take()
            .map(|p| (Box::new(p) as Box<dyn Read + Send>, OutputStream::Stdout)),
        child
            .stderr
            .take()
            .map(|p| (Box::new(p) as Box<dyn Read + Send>, OutputStream::Stderr)),
    ];
    let pumps: Vec<_> = pipes
        .into_iter()
        .flatten()
        .map(|(mut pipe, stream)| {
            std::thread::spawn(move || {
                let mut buf = vec![0u8; READ_CHUNK];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => report::send_output(stream, &buf[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            report::log_warn!("exec: reading {stream:?}: {e}");
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    let mut killed = false;
    let status = loop {
        if let Some(s) = child.try_wait().context("waiting for the exec program")? {
            break s;
        }
        if !killed && report::stop_requested() {
            report::log_warn!("host asked to stop: killing `{prog}`");
            let _ = child.kill();
            killed = true;
        }
        std::thread::sleep(POLL);
    };
    for p in pumps {
        if p.join().is_err() {
            report::log_error!("exec: an output thread panicked");
        }
    }
    Ok(status_code(status))
}

/// The console's real tty (`/dev/ttyS0`), which can become a controlling terminal where
/// `/dev/console` cannot.
fn console_tty() -> Option<CString> {
    let active = std::fs::read_to_string("/sys/class/tty/console/active").ok()?;
    // The last listed console is the one /dev/console writes to.
    let name = active.split_ascii_whitespace().last()?;
    CString::new(format!("/dev/{name}")).ok()
}

/// Gives the console to `/bin/sh` and waits for it to exit.
pub fn shell() -> Result<i32> {
    if !Path::new(SHELL).exists() {
        bail!(
            "an interactive shell was requested but the initramfs has no {SHELL}: \
             `--include` a static busybox (it provides /bin/sh)"
        );
    }
    let tty = console_tty();
    let mut cmd = Command::new(SHELL);
    cmd.env("PATH", PATH)
        .env("HOME", "/")
        .env("TERM", "linux")
        .env("PS1", "ktstr# ");
    // SAFETY: the closure only calls async-signal-safe functions (setsid, open, ioctl,
    // dup2, close) on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            if let Some(tty) = &tty {
                let fd = libc::open(tty.as_ptr(), libc::O_RDWR);
                if fd >= 0 {
                    libc::ioctl(fd, libc::TIOCSCTTY, 1);
                    for target in 0..3 {
                        libc::dup2(fd, target);
                    }
                    if fd > 2 {
                        libc::close(fd);
                    }
                }
            }
            Ok(())
        });
    }
    let status = cmd.status().with_context(|| format!("running {SHELL}"))?;
    Ok(status_code(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes() {
        assert_eq!(status_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(status_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(status_code(ExitStatus::from_raw(9)), 137);
    }

    #[test]
    fn exec_reports_the_exit_code() {
        let spec = ExecSpec {
            argv: vec!["/bin/sh".into(), "-c".into(), "echo hi; exit 7".into()],
            env: vec![],
        };
        // Without a ring the output goes to our own stdout.
        assert_eq!(run(&spec).unwrap(), 7);
    }

    #[test]
    fn missing_program_is_an_error_naming_it() {
        let spec = ExecSpec {
            argv: vec!["/nonexistent/prog".into()],
            env: vec![],
        };
        let e = run(&spec).unwrap_err();
        assert!(format!("{e:#}").contains("/nonexistent/prog"));
    }
}
