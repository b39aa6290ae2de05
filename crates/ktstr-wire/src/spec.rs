//! What the guest runs: the [`GuestSpec`], written by the host as JSON into the initramfs
//! at [`SPEC_PATH`] and read by the guest runtime at boot.

use serde::{Deserialize, Serialize};

use crate::WireError;

/// Where the spec lives in the initramfs.
pub const SPEC_PATH: &str = "/ktstr/spec.json";
/// Spec format version this build writes and accepts.
pub const SPEC_VERSION: u32 = 1;
/// Largest spec file the guest accepts.
pub const MAX_SPEC_BYTES: usize = 4 << 20;

/// The guest's whole assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestSpec {
    pub version: u32,
    pub test_name: String,
    /// How long workers run (the host may stop earlier through `stop_request`).
    pub duration_ms: u64,
    #[serde(default)]
    pub workers: Vec<WorkerSpec>,
    /// Run one program instead of (after) the workers: `cargo ktstr shell --exec`.
    #[serde(default)]
    pub exec: Option<ExecSpec>,
    /// Give the console to `/bin/sh` (`cargo ktstr shell`).
    #[serde(default)]
    pub interactive_shell: bool,
}

/// `count` identical workers in one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub group: String,
    pub count: u32,
    pub work: WorkKind,
}

/// What a worker does. Tagged by `type` like the messages, so variants with fields can
/// follow (`{"type":"spin"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkKind {
    /// Burn CPU in fixed-size work units.
    Spin,
}

/// A program to run in the guest, its stdout/stderr streamed as output frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: Vec<(String, String)>,
}

impl GuestSpec {
    /// A spec with no work (fill in the fields you need).
    pub fn new(test_name: impl Into<String>, duration_ms: u64) -> Self {
        Self {
            version: SPEC_VERSION,
            test_name: test_name.into(),
            duration_ms,
            workers: Vec::new(),
            exec: None,
            interactive_shell: false,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Plain strings, integers and vectors: serialising cannot fail.
        serde_json::to_vec_pretty(self).expect("GuestSpec serialises to JSON")
    }

    /// Parses and checks a spec file's contents.
    pub fn from_json(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() > MAX_SPEC_BYTES {
            return Err(WireError::TooLarge {
                what: "guest spec",
                len: bytes.len(),
                max: MAX_SPEC_BYTES,
            });
        }
        let spec: Self = serde_json::from_slice(bytes).map_err(|e| WireError::Decode {
            what: "guest spec",
            reason: e.to_string(),
        })?;
        if spec.version != SPEC_VERSION {
            return Err(WireError::Decode {
                what: "guest spec",
                reason: format!(
                    "version {}, this guest runtime reads version {SPEC_VERSION}: host and guest come from different ktstr builds",
                    spec.version
                ),
            });
        }
        if let Some(exec) = &spec.exec {
            if exec.argv.is_empty() {
                return Err(WireError::Decode {
                    what: "guest spec",
                    reason: "exec.argv is empty".into(),
                });
            }
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut s = GuestSpec::new("sched_basic", 2000);
        s.workers.push(WorkerSpec {
            group: "spinners".into(),
            count: 4,
            work: WorkKind::Spin,
        });
        s.exec = Some(ExecSpec {
            argv: vec!["/bin/true".into()],
            env: vec![("RUST_LOG".into(), "debug".into())],
        });
        assert_eq!(GuestSpec::from_json(&s.to_json()).unwrap(), s);
    }

    #[test]
    fn json_shape() {
        let s = GuestSpec::from_json(
            br#"{"version":1,"test_name":"t","duration_ms":5,
                 "workers":[{"group":"a","count":2,"work":{"type":"spin"}}]}"#,
        )
        .unwrap();
        assert_eq!(s.workers[0].work, WorkKind::Spin);
        assert_eq!(s.exec, None);
        assert!(!s.interactive_shell);
    }

    #[test]
    fn bad_specs_are_errors() {
        for bad in [
            &br#"{"version":2,"test_name":"t","duration_ms":5}"#[..],
            br#"{"version":1,"test_name":"t"}"#,
            br#"{"version":1,"test_name":"t","duration_ms":5,"workers":[{"group":"a","count":1,"work":{"type":"teleport"}}]}"#,
            br#"{"version":1,"test_name":"t","duration_ms":5,"exec":{"argv":[]}}"#,
            b"not json",
        ] {
            assert!(
                GuestSpec::from_json(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
