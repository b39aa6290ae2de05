//! What the host tells the guest runtime when it boots as PID 1 of a nested L1 guest
//! (`cargo ktstr nested`): load the KVM modules, mount the host's root over virtio-fs
//! read-only with some directories writable, run one command at the host's working
//! directory, and print its exit status on the console.

use serde::{Deserialize, Serialize};

/// Where the spec sits in the L1 initramfs; its presence selects the nested mode.
pub const NESTED_SPEC_PATH: &str = "/ktstr/nested.json";
/// virtio-fs tag of the host's root file system.
pub const HOST_FS_TAG: &str = "ktstr-host";
/// The console line that carries the command's exit status: `KTSTR-NESTED-EXIT <code>`.
pub const EXIT_MARKER: &str = "KTSTR-NESTED-EXIT";
/// The console line that carries why the nested runtime could not run the command.
pub const ERROR_MARKER: &str = "KTSTR-NESTED-ERROR";

/// L1's second serial port: PID 1 writes a byte to it every [`HEARTBEAT_INTERVAL_SECS`]
/// while the command runs, so the host can tell a busy L1 from one whose emulated machine
/// stopped (nothing in it runs any more, the console included).
pub const HEARTBEAT_TTY: &str = "/dev/ttyS1";
/// Seconds between heartbeat bytes.
pub const HEARTBEAT_INTERVAL_SECS: u64 = 5;

/// The command to run in L1 and the environment it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NestedSpec {
    /// Program and arguments (the program is looked up on the host's PATH in `env`).
    pub argv: Vec<String>,
    /// Absolute working directory (the host's).
    pub cwd: String,
    /// The whole environment of the command.
    pub env: Vec<(String, String)>,
    /// Absolute host directories mounted writable at the same path; the rest of the
    /// host's root is read-only.
    pub writable: Vec<String>,
    /// Kernel modules in the initramfs, loaded in this order (e.g. irqbypass, kvm, kvm-amd).
    pub modules: Vec<String>,
}

impl NestedSpec {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a NestedSpec always encodes")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The exit status in a console line, if it is the marker line.
pub fn parse_exit_marker(line: &str) -> Option<i32> {
    let rest = line.trim().strip_prefix(EXIT_MARKER)?;
    rest.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips_and_marker_parses() {
        let s = NestedSpec {
            argv: vec!["cargo".into(), "ktstr".into(), "test".into()],
            cwd: "/work/p".into(),
            env: vec![("PATH".into(), "/usr/bin".into())],
            writable: vec!["/work/p".into()],
            modules: vec!["/modules/0-irqbypass.ko".into()],
        };
        assert_eq!(NestedSpec::from_json(&s.to_json()).unwrap(), s);
        assert_eq!(parse_exit_marker("KTSTR-NESTED-EXIT 3\r"), Some(3));
        assert_eq!(parse_exit_marker("  KTSTR-NESTED-EXIT -1"), Some(-1));
        assert_eq!(parse_exit_marker("KTSTR-NESTED-EXIT x"), None);
        assert_eq!(parse_exit_marker("cargo said KTSTR-NESTED-EXIT 0"), None);
    }
}
