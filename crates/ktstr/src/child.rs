//! Child processes (qemu, virtiofsd, apt-get) that must not outlive the ktstr process
//! that started them, however it ends (kill -9 included).

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Have the kernel send `signal` to the child when this process dies.
pub fn die_with_parent(cmd: &mut Command, signal: i32) -> &mut Command {
    // SAFETY: only prctl between fork and exec, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn the_child_is_killed_when_its_parent_goes() {
        // The death signal follows the thread that forked: spawn from a thread that ends.
        let mut child = std::thread::spawn(|| {
            die_with_parent(Command::new("sleep").arg("30"), libc::SIGKILL)
                .spawn()
                .unwrap()
        })
        .join()
        .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    }
}
