//! Errors of reading and writing sidecars. Every variant names the file, says what is
//! wrong with it, and how to get a good one.

use std::io;
use std::path::PathBuf;

/// Why a sidecar could not be read, written or located.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    /// A file-system operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What we tried to do ("read", "create directory", "rename into place", ...).
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The file is not JSON at all (or has trailing garbage).
    #[error(
        "{}: not a ktstr sidecar: not valid JSON ({detail}); delete it or re-run the test that wrote it",
        path.display()
    )]
    NotJson { path: PathBuf, detail: String },

    /// The JSON ends before the document does: an interrupted copy or a cut file.
    #[error(
        "{}: truncated sidecar: the JSON ends early ({detail}); the file was cut or copied partially, re-run the test",
        path.display()
    )]
    Truncated { path: PathBuf, detail: String },

    /// A required (non-Option) key is absent.
    #[error(
        "{}: missing required key `{key}`{}; the file was written by an incompatible ktstr or edited by hand, re-run the test",
        path.display(),
        within_suffix(within)
    )]
    MissingKey {
        path: PathBuf,
        key: String,
        /// Path of the object that lacks the key (`stats.cgroups[0]`), empty at the top level.
        within: String,
    },

    /// A key holds a value of the wrong type (or an unknown enum value).
    #[error(
        "{}: wrong value at key `{key}`: {detail}; the file was written by an incompatible ktstr or edited by hand",
        path.display()
    )]
    WrongType {
        path: PathBuf,
        key: String,
        detail: String,
    },

    /// The verdict bits contradict each other (more than one of passed/skipped/inconclusive).
    #[error("{}: invalid verdict: {detail}; at most one of passed, skipped, inconclusive may be true", path.display())]
    BadVerdict { path: PathBuf, detail: String },

    /// Serialising a sidecar failed (cannot happen for well-formed values; kept for honesty).
    #[error("cannot serialise the sidecar of test `{test_name}`: {source}")]
    Serialize {
        test_name: String,
        #[source]
        source: serde_json::Error,
    },
}

fn within_suffix(within: &str) -> String {
    if within.is_empty() {
        String::new()
    } else {
        format!(" in `{within}`")
    }
}

impl SidecarError {
    /// An I/O error while `action` (`reading`, `listing`, ...) `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        SidecarError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = SidecarError> = std::result::Result<T, E>;
