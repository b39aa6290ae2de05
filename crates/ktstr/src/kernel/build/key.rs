//! What a source-built kernel is, for the cache: the tree's identity (git commit, and a
//! hash of the uncommitted changes when dirty) and the hash of the resulting config.
//!
//! Key: `src-<label>-<commit>[-dirty-<changes>]-<config>`; a tree without git is keyed
//! by its label and config alone and always goes through `make` (which decides what is
//! stale), since nothing cheaper tells whether it changed.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::kernel::cache::hex;

/// How a source tree identifies itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeIdentity {
    /// A git checkout: short HEAD, and when the index or worktree differ from it, a hash
    /// of the changed paths and their current contents.
    Git {
        commit: String,
        dirty: Option<String>,
    },
    /// A tree we unpacked ourselves (a Debian `linux-source` package) and never edit:
    /// its package version says what it is.
    Pristine { version: String },
    /// A tree without git that someone else owns: its contents are unknown.
    Untracked,
}

impl TreeIdentity {
    /// `kernel_commit` of kernels built from this tree (`abc1234`, `abc1234-dirty`).
    pub fn commit(&self) -> Option<String> {
        match self {
            TreeIdentity::Git { commit, dirty } => Some(match dirty {
                Some(_) => format!("{commit}-dirty"),
                None => commit.clone(),
            }),
            _ => None,
        }
    }

    /// True when an existing cache entry of this identity can be reused without asking
    /// `make`: only an untracked tree cannot say whether it changed.
    pub fn is_reusable(&self) -> bool {
        !matches!(self, TreeIdentity::Untracked)
    }
}

/// Reads the identity of the tree at `tree` (a git checkout at its top, else untracked).
pub fn identify(tree: &Path) -> TreeIdentity {
    let Ok(repo) = gix::open(tree) else {
        return TreeIdentity::Untracked;
    };
    let Ok(head) = repo.head_id() else {
        return TreeIdentity::Untracked;
    };
    let commit = head.to_hex_with_len(7).to_string();
    match changed_paths(&repo) {
        Some(paths) if paths.is_empty() => TreeIdentity::Git {
            commit,
            dirty: None,
        },
        Some(paths) => TreeIdentity::Git {
            commit,
            dirty: Some(changes_hash(tree, &paths)),
        },
        // Status failed: treat as dirty with a key nobody else has, so a stale entry is
        // never reused.
        None => TreeIdentity::Git {
            commit,
            dirty: Some(
                hex(&Sha256::digest(
                    crate::kernel::cache::now_rfc3339().as_bytes(),
                ))[..8]
                    .to_string(),
            ),
        },
    }
}

/// Paths that differ between HEAD, the index and the worktree (untracked files and
/// submodules left out, like `kernel_commit`'s `-dirty`).
fn changed_paths(repo: &gix::Repository) -> Option<Vec<String>> {
    let iter = ktstr_sidecar::provenance::changes(repo)?;
    let mut paths = Vec::new();
    for item in iter {
        paths.push(item.ok()?.location().to_string());
    }
    paths.sort();
    paths.dedup();
    Some(paths)
}

/// 8 hex digits over each changed path and its content now (a deleted file hashes as
/// absent), so two different edits of the same commit get two keys.
pub fn changes_hash(tree: &Path, paths: &[String]) -> String {
    let mut h = Sha256::new();
    for p in paths {
        h.update(p.as_bytes());
        h.update([0]);
        match std::fs::read(tree.join(p)) {
            Ok(bytes) => {
                h.update(b"present\0");
                h.update(&bytes);
            }
            Err(_) => h.update(b"absent\0"),
        }
        h.update([0]);
    }
    hex(&h.finalize())[..8].to_string()
}

/// 8 hex digits of the config text.
pub fn config_hash(config: &str) -> String {
    hex(&Sha256::digest(config.as_bytes()))[..8].to_string()
}

/// The cache key of a kernel built from a tree labelled `label` with `config`.
pub fn cache_key(label: &str, id: &TreeIdentity, config: &str) -> String {
    let label: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let label = label.trim_start_matches('.');
    let cfg = config_hash(config);
    match id {
        TreeIdentity::Git {
            commit,
            dirty: None,
        } => format!("src-{label}-{commit}-{cfg}"),
        TreeIdentity::Git {
            commit,
            dirty: Some(d),
        } => format!("src-{label}-{commit}-dirty-{d}-{cfg}"),
        TreeIdentity::Pristine { version } => format!("src-{label}-{version}-{cfg}"),
        TreeIdentity::Untracked => format!("src-{label}-{cfg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_sidecar::testutil::git;

    #[test]
    fn a_dirty_tree_gets_a_new_key_and_each_edit_its_own() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path();
        std::fs::write(tree.join("Makefile"), "all:\n").unwrap();
        git(tree, &["init", "-q"]);
        git(tree, &["add", "Makefile"]);
        git(tree, &["commit", "-q", "-m", "x"]);
        let config = "CONFIG_SCHED_CLASS_EXT=y\n";

        let clean = identify(tree);
        let TreeIdentity::Git { commit, dirty } = &clean else {
            panic!("{clean:?}")
        };
        assert!(dirty.is_none());
        assert_eq!(clean.commit().as_deref(), Some(commit.as_str()));
        let clean_key = cache_key("linux", &clean, config);
        assert_eq!(
            clean_key,
            format!("src-linux-{commit}-{}", config_hash(config))
        );
        // Same tree, same config: same key (reuse).
        assert_eq!(cache_key("linux", &identify(tree), config), clean_key);
        // Untracked files (build output) do not make it dirty.
        std::fs::write(tree.join("vmlinux.o"), "obj").unwrap();
        assert_eq!(identify(tree), clean);

        std::fs::write(tree.join("Makefile"), "all: x\n").unwrap();
        let dirty1 = identify(tree);
        assert_eq!(dirty1.commit(), Some(format!("{commit}-dirty")));
        let k1 = cache_key("linux", &dirty1, config);
        assert_ne!(k1, clean_key);
        assert!(k1.contains("-dirty-"), "{k1}");
        // Unchanged dirty tree: same key again.
        assert_eq!(cache_key("linux", &identify(tree), config), k1);
        // Another edit: another key.
        std::fs::write(tree.join("Makefile"), "all: y\n").unwrap();
        let k2 = cache_key("linux", &identify(tree), config);
        assert_ne!(k2, k1);
        // Another config: another key.
        assert_ne!(cache_key("linux", &identify(tree), "CONFIG_X=y\n"), k2);
    }

    #[test]
    fn trees_without_git() {
        let d = tempfile::tempdir().unwrap();
        let id = identify(d.path());
        assert_eq!(id, TreeIdentity::Untracked);
        assert!(!id.is_reusable());
        assert_eq!(id.commit(), None);
        let p = TreeIdentity::Pristine {
            version: "7.2.13-1".into(),
        };
        assert!(p.is_reusable());
        assert_eq!(
            cache_key("debian linux/7.2", &p, "c"),
            format!("src-debian_linux_7.2-7.2.13-1-{}", config_hash("c"))
        );
    }
}
