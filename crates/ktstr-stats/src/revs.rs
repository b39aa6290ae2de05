//! Commits for `perf-delta`: resolve a revision (`main`, `HEAD~3`, `abc1234`) to the
//! commit whose runs a side takes, find which run directories may hold them, and
//! write a commit's tree into a fresh directory so its test suite can be run there.
//! All through gix; no `git` binary is needed.

use std::fs;
use std::path::{Path, PathBuf};

use ktstr_sidecar::provenance::SHORT_COMMIT_LEN;

/// Why a revision could not be resolved or checked out.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{}: not inside a git repository ({detail}); run perf-delta inside the project or pass --repo", dir.display())]
    NoRepo { dir: PathBuf, detail: String },
    #[error("cannot resolve revision `{rev}` in {}: {detail}; try a branch, tag or commit hash (`git log --oneline`)", dir.display())]
    Resolve {
        rev: String,
        dir: PathBuf,
        detail: String,
    },
    #[error("cannot read {what} of commit {commit}: {detail}")]
    Object {
        what: &'static str,
        commit: String,
        detail: String,
    },
    #[error("cannot write {} while checking out {commit}: {source}", path.display())]
    Write {
        path: PathBuf,
        commit: String,
        #[source]
        source: std::io::Error,
    },
}

/// A resolved revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rev {
    /// What the user wrote.
    pub spec: String,
    /// Full hex id of the commit.
    pub full: String,
    /// The first [`SHORT_COMMIT_LEN`] hex digits: what sidecars record.
    pub short: String,
}

impl Rev {
    /// Whether a sidecar's `project_commit` label (`abc1234`, `abc1234-dirty`) is this
    /// commit; dirty labels only when `dirty`.
    pub fn matches_label(&self, label: &str, dirty: bool) -> bool {
        let (hash, is_dirty) = match label.strip_suffix("-dirty") {
            Some(h) => (h, true),
            None => (label, false),
        };
        is_dirty == dirty && hash.len() >= 4 && self.full.starts_with(&hash.to_ascii_lowercase())
    }

    /// Whether a run directory's name (`{kernel}-{project_commit}`, or anything else
    /// with a `-`/`_`-separated token) mentions this commit: a token of at least seven
    /// hex digits that is a prefix of the commit.
    pub fn mentioned_by_dir(&self, name: &str) -> bool {
        name.split(['-', '_']).any(|t| {
            t.len() >= SHORT_COMMIT_LEN
                && t.chars().all(|c| c.is_ascii_hexdigit())
                && self.full.starts_with(&t.to_ascii_lowercase())
        })
    }
}

/// The repository around `dir` (searched upwards) and its work tree root.
pub fn repo_root(dir: &Path) -> Result<PathBuf, GitError> {
    let repo = discover(dir)?;
    Ok(repo
        .workdir()
        .map_or_else(|| repo.git_dir().to_path_buf(), Path::to_path_buf))
}

fn discover(dir: &Path) -> Result<gix::Repository, GitError> {
    gix::discover(dir).map_err(|e| GitError::NoRepo {
        dir: dir.to_path_buf(),
        detail: e.to_string(),
    })
}

/// Resolve `spec` in the repository around `dir` to a commit.
pub fn resolve(dir: &Path, spec: &str) -> Result<Rev, GitError> {
    let repo = discover(dir)?;
    let err = |detail: String| GitError::Resolve {
        rev: spec.to_string(),
        dir: dir.to_path_buf(),
        detail,
    };
    let id = repo
        .rev_parse_single(spec)
        .map_err(|e| err(e.to_string()))?;
    let commit = id
        .object()
        .map_err(|e| err(e.to_string()))?
        .peel_to_commit()
        .map_err(|e| err(format!("not a commit: {e}")))?;
    let full = commit.id.to_string();
    Ok(Rev {
        spec: spec.to_string(),
        short: full[..SHORT_COMMIT_LEN.min(full.len())].to_string(),
        full,
    })
}

/// What [`export_tree`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exported {
    pub files: usize,
    pub symlinks: usize,
    pub bytes: u64,
    /// Submodule entries, left as empty directories.
    pub submodules: usize,
}

/// Write the tree of commit `rev` (of the repository around `dir`) into `dest`, which
/// must be empty or absent: files with their executable bit, symlinks, directories.
/// Blobs are written as stored (no LFS or line-ending filters); submodules become empty
/// directories.
pub fn export_tree(dir: &Path, rev: &Rev, dest: &Path) -> Result<Exported, GitError> {
    let repo = discover(dir)?;
    let obj_err = |what: &'static str, e: String| GitError::Object {
        what,
        commit: rev.short.clone(),
        detail: e,
    };
    let write_err = |path: &Path, source: std::io::Error| GitError::Write {
        path: path.to_path_buf(),
        commit: rev.short.clone(),
        source,
    };
    let id = gix::ObjectId::from_hex(rev.full.as_bytes())
        .map_err(|e| obj_err("the id", e.to_string()))?;
    let commit = repo
        .find_object(id)
        .map_err(|e| obj_err("the object", e.to_string()))?
        .peel_to_commit()
        .map_err(|e| obj_err("the commit", e.to_string()))?;
    let tree = commit
        .tree()
        .map_err(|e| obj_err("the tree", e.to_string()))?;
    let entries = tree
        .traverse()
        .breadthfirst
        .files()
        .map_err(|e| obj_err("the file list", e.to_string()))?;
    fs::create_dir_all(dest).map_err(|e| write_err(dest, e))?;
    let mut out = Exported::default();
    for entry in entries {
        let rel = String::from_utf8_lossy(&entry.filepath).into_owned();
        if rel.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(obj_err(
                "a safe path",
                format!("entry `{rel}` escapes the tree"),
            ));
        }
        let path = dest.join(&rel);
        let mode = entry.mode;
        if mode.is_tree() || mode.is_commit() {
            fs::create_dir_all(&path).map_err(|e| write_err(&path, e))?;
            if mode.is_commit() {
                out.submodules += 1;
            }
            continue;
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| write_err(parent, e))?;
        }
        let blob = repo
            .find_object(entry.oid)
            .map_err(|e| obj_err("a blob", format!("{rel}: {e}")))?;
        if mode.is_link() {
            let target = String::from_utf8_lossy(&blob.data).into_owned();
            std::os::unix::fs::symlink(&target, &path).map_err(|e| write_err(&path, e))?;
            out.symlinks += 1;
            continue;
        }
        fs::write(&path, &blob.data).map_err(|e| write_err(&path, e))?;
        if mode.is_executable() {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                .map_err(|e| write_err(&path, e))?;
        }
        out.files += 1;
        out.bytes += blob.data.len() as u64;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_sidecar::testutil::git;

    #[test]
    fn resolve_and_export_a_commit() {
        let repo = tempfile::tempdir().expect("tempdir");
        let r = repo.path();
        git(r, &["init", "-q", "-b", "main"]);
        fs::write(r.join("speed.txt"), "100\n").expect("write");
        fs::create_dir_all(r.join("bin")).expect("mkdir");
        fs::write(r.join("bin/run.sh"), "#!/bin/sh\necho hi\n").expect("write");
        std::os::unix::fs::symlink("speed.txt", r.join("link")).expect("symlink");
        git(r, &["add", "-A"]);
        git(r, &["update-index", "--chmod=+x", "bin/run.sh"]);
        git(r, &["commit", "-q", "-m", "one"]);
        let first = git(r, &["rev-parse", "HEAD"]);
        fs::write(r.join("speed.txt"), "90\n").expect("write");
        git(r, &["commit", "-q", "-am", "two"]);
        git(r, &["tag", "v2"]);
        let second = git(r, &["rev-parse", "HEAD"]);

        let head = resolve(r, "HEAD").expect("HEAD");
        assert_eq!(head.full, second);
        assert_eq!(head.short, &second[..7]);
        assert_eq!(resolve(r, "v2").expect("tag").full, second);
        assert_eq!(resolve(r, "HEAD~1").expect("parent").full, first);
        assert_eq!(resolve(r, &first[..9]).expect("prefix").full, first);
        let bad = resolve(r, "no-such-branch").expect_err("unknown");
        assert!(bad.to_string().contains("no-such-branch"), "{bad}");
        let outside = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            resolve(outside.path(), "HEAD"),
            Err(GitError::NoRepo { .. })
        ));
        let root = repo_root(&r.join("bin")).expect("root");
        assert_eq!(
            root.canonicalize().expect("canon"),
            r.canonicalize().expect("canon")
        );

        let dest = tempfile::tempdir().expect("tempdir");
        let wt = dest.path().join("wt");
        let base = resolve(r, "HEAD~1").expect("base");
        let ex = export_tree(r, &base, &wt).expect("export");
        assert_eq!((ex.files, ex.symlinks, ex.submodules), (2, 1, 0));
        assert_eq!(
            fs::read_to_string(wt.join("speed.txt")).expect("read"),
            "100\n"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(wt.join("bin/run.sh"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "executable kept");
        assert_eq!(
            fs::read_link(wt.join("link")).expect("link"),
            Path::new("speed.txt")
        );
        assert!(!wt.join(".git").exists());
    }

    #[test]
    fn labels_and_dirs_name_a_commit() {
        let rev = Rev {
            spec: "main".into(),
            full: "abc1234def567890abc1234def567890abc12345".into(),
            short: "abc1234".into(),
        };
        assert!(rev.matches_label("abc1234", false));
        assert!(rev.matches_label("ABC1234D", false));
        assert!(!rev.matches_label("abc1234-dirty", false));
        assert!(rev.matches_label("abc1234-dirty", true));
        assert!(!rev.matches_label("abc1235", false));
        assert!(!rev.matches_label("abc", false));
        assert!(rev.mentioned_by_dir("7.2.13+deb14-cloud-amd64-abc1234"));
        assert!(rev.mentioned_by_dir("7.2.13-abc1234-dirty"));
        assert!(rev.mentioned_by_dir("perf-delta-abc1234-20260507T090800Z-0"));
        assert!(!rev.mentioned_by_dir("7.2.13-abc1235"));
        assert!(!rev.mentioned_by_dir("7.2.13-unknown"));
        assert!(!rev.mentioned_by_dir("abc12"), "too short to trust");
    }
}
