//! Provenance: which code ran (project and kernel commits), where (run source), and when
//! (run id, timestamp).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

use crate::sidecar::RunSource;

/// Set non-empty to use its value verbatim as `project_commit` (checkouts without `.git`,
/// or perf-delta runs of an exact commit).
pub const PROJECT_COMMIT_ENV: &str = "KTSTR_PROJECT_COMMIT";
/// Set non-empty on CI runners: `run_source` becomes `ci`.
pub const CI_ENV: &str = "KTSTR_CI";
/// Alternative name of [`CI_ENV`], accepted too.
pub const CI_ENV_ALT: &str = "KTSTR_CI_ENV";

/// Hex digits of a short commit id.
pub const SHORT_COMMIT_LEN: usize = 7;

const STAMP_FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");
const ISO_FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

/// `project_commit` of this process: `KTSTR_PROJECT_COMMIT` if set non-empty, else the
/// short HEAD of the git repository around the current directory (`-dirty` when the
/// index or worktree differ from HEAD). None outside a repository or on any probe error.
///
/// A found commit is remembered for the rest of the process; a failure is retried.
pub fn project_commit() -> Option<String> {
    if let Some(v) = override_commit(env_var) {
        return Some(v);
    }
    static MEMO: Mutex<Option<String>> = Mutex::new(None);
    let mut memo = MEMO.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(c) = memo.as_ref() {
        return Some(c.clone());
    }
    let found = project_commit_at(&std::env::current_dir().ok()?)?;
    *memo = Some(found.clone());
    Some(found)
}

/// Short HEAD (`-dirty` suffix) of the repository containing `dir` (searched upwards).
/// No environment override, no memo.
pub fn project_commit_at(dir: &Path) -> Option<String> {
    let repo = gix::discover(dir).ok()?;
    commit_of(&repo)
}

/// `kernel_commit`: short HEAD (`-dirty` suffix) of the kernel source tree `tree`, which
/// must itself be the top of a git checkout: unlike [`project_commit_at`], this never
/// climbs to a parent directory, so a tree inside the project repo does not report the
/// project's commit. None when `tree` is not a git checkout.
pub fn kernel_commit(tree: &Path) -> Option<String> {
    let repo = gix::open(tree).ok()?;
    commit_of(&repo)
}

/// The source tree of a kernel named by a path: the directory itself, or for an image
/// built inside a tree (`<tree>/arch/<arch>/boot/bzImage`) that tree. None for anything
/// else (a cached or packaged image has no tree).
pub fn kernel_source_tree(kernel: &Path) -> Option<PathBuf> {
    if kernel.is_dir() {
        return Some(kernel.to_path_buf());
    }
    let boot = kernel.parent()?;
    let arch_dir = boot.parent()?;
    let arch_root = arch_dir.parent()?;
    let tree = arch_root.parent()?;
    let is_in_tree = boot.file_name()? == "boot" && arch_root.file_name()? == "arch";
    is_in_tree.then(|| tree.to_path_buf())
}

fn commit_of(repo: &gix::Repository) -> Option<String> {
    let head = repo.head_id().ok()?;
    let short = head.to_hex_with_len(SHORT_COMMIT_LEN).to_string();
    let dirty = is_dirty(repo)?;
    Some(if dirty {
        format!("{short}-dirty")
    } else {
        short
    })
}

/// HEAD tree vs index, or index vs worktree, differ. Untracked files do not count and
/// submodules are ignored. None when the status could not be computed.
fn is_dirty(repo: &gix::Repository) -> Option<bool> {
    match changes(repo)?.next() {
        None => Some(false),
        Some(Ok(_)) => Some(true),
        Some(Err(_)) => None,
    }
}

/// The changes that make a tree `-dirty`: HEAD tree vs index and index vs worktree,
/// untracked files and submodules left out. None when the status cannot be computed.
/// Kernel builds key dirty trees by the same changes.
pub fn changes(repo: &gix::Repository) -> Option<gix::status::Iter> {
    repo.status(gix::utils::progress::Discard)
        .ok()?
        .untracked_files(gix::status::UntrackedFiles::None)
        .index_worktree_submodules(None)
        .index_worktree_rewrites(None)
        .tree_index_track_renames(gix::status::tree_index::TrackRenames::Disabled)
        .index_worktree_options_mut(|opts| opts.dirwalk_options = None)
        .into_iter(Vec::new())
        .ok()
}

/// `run_source` of this process: `ci` when `KTSTR_CI` or `KTSTR_CI_ENV` is set non-empty,
/// else `local`. (`archive` is applied by readers, never written.)
pub fn run_source() -> RunSource {
    run_source_from(env_var)
}

/// The environment as a lookup function, so the rules below are testable without
/// mutating the process environment.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn override_commit(env: impl Fn(&str) -> Option<String>) -> Option<String> {
    env(PROJECT_COMMIT_ENV).filter(|v| !v.is_empty())
}

fn run_source_from(env: impl Fn(&str) -> Option<String>) -> RunSource {
    let set = |name| env(name).is_some_and(|v: String| !v.is_empty());
    if set(CI_ENV) || set(CI_ENV_ALT) {
        RunSource::Ci
    } else {
        RunSource::Local
    }
}

fn process_start() -> OffsetDateTime {
    static START: OnceLock<OffsetDateTime> = OnceLock::new();
    *START.get_or_init(OffsetDateTime::now_utc)
}

/// A new `run_id`: `{YYYYMMDDTHHMMSSZ}-{n}`, the process start time in UTC plus a
/// counter that starts at 0 and grows with every call in this process.
pub fn next_run_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}-{n}", compact_stamp(process_start()))
}

/// `YYYYMMDDTHHMMSSZ` of a UTC time.
pub fn compact_stamp(t: OffsetDateTime) -> String {
    let utc = t.to_offset(time::UtcOffset::UTC);
    // Formatting a fixed, valid description of a UTC time cannot fail; fall back to a
    // recognisable placeholder rather than panic.
    utc.format(STAMP_FORMAT)
        .unwrap_or_else(|_| "00000000T000000Z".into())
}

/// ISO 8601 UTC (`YYYY-MM-DDTHH:MM:SSZ`) of a time.
pub fn iso_timestamp(t: OffsetDateTime) -> String {
    let utc = t.to_offset(time::UtcOffset::UTC);
    utc.format(ISO_FORMAT)
        .unwrap_or_else(|_| "0000-00-00T00:00:00Z".into())
}

/// ISO 8601 UTC timestamp of now.
pub fn now_timestamp() -> String {
    iso_timestamp(OffsetDateTime::now_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::git;

    fn git_head(dir: &Path) -> String {
        git(dir, &["rev-parse", "--short=7", "HEAD"])
    }

    fn new_repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        git(dir.path(), &["init", "-q"]);
        std::fs::write(dir.path().join("a.txt"), "one\n").expect("write");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("sub/b.txt"), "two\n").expect("write");
        git(dir.path(), &["add", "."]);
        git(dir.path(), &["commit", "-q", "-m", "first"]);
        dir
    }

    #[test]
    fn clean_repo_gives_short_head() {
        let repo = new_repo();
        let head = git_head(repo.path());
        assert_eq!(head.len(), 7);
        assert_eq!(
            project_commit_at(repo.path()).as_deref(),
            Some(head.as_str())
        );
        // discover climbs from a subdirectory; open does not.
        assert_eq!(
            project_commit_at(&repo.path().join("sub")).as_deref(),
            Some(head.as_str())
        );
        assert_eq!(kernel_commit(repo.path()).as_deref(), Some(head.as_str()));
        assert_eq!(kernel_commit(&repo.path().join("sub")), None);
    }

    #[test]
    fn worktree_change_is_dirty_and_untracked_is_not() {
        let repo = new_repo();
        let head = git_head(repo.path());
        std::fs::write(repo.path().join("untracked.txt"), "x").expect("write");
        assert_eq!(project_commit_at(repo.path()), Some(head.clone()));

        std::fs::write(repo.path().join("a.txt"), "changed\n").expect("write");
        assert_eq!(
            project_commit_at(repo.path()),
            Some(format!("{head}-dirty"))
        );
        assert_eq!(kernel_commit(repo.path()), Some(format!("{head}-dirty")));
    }

    #[test]
    fn staged_change_is_dirty_and_commit_cleans() {
        let repo = new_repo();
        std::fs::write(repo.path().join("new.txt"), "new\n").expect("write");
        git(repo.path(), &["add", "new.txt"]);
        let head = git_head(repo.path());
        assert_eq!(
            project_commit_at(repo.path()),
            Some(format!("{head}-dirty"))
        );

        git(repo.path(), &["commit", "-q", "-m", "second"]);
        let head2 = git_head(repo.path());
        assert_ne!(head, head2);
        assert_eq!(project_commit_at(repo.path()), Some(head2));
    }

    #[test]
    fn not_a_repo_and_unborn_head_give_none() {
        let plain = tempfile::tempdir().expect("tempdir");
        assert_eq!(kernel_commit(plain.path()), None);
        let empty = tempfile::tempdir().expect("tempdir");
        git(empty.path(), &["init", "-q"]);
        assert_eq!(project_commit_at(empty.path()), None);
    }

    #[test]
    fn kernel_source_tree_from_image_path() {
        let t = tempfile::tempdir().expect("tempdir");
        let img = t.path().join("linux/arch/x86/boot/bzImage");
        std::fs::create_dir_all(img.parent().expect("parent")).expect("mkdir");
        std::fs::write(&img, b"MZ").expect("write");
        assert_eq!(kernel_source_tree(&img), Some(t.path().join("linux")));
        assert_eq!(
            kernel_source_tree(&t.path().join("linux")),
            Some(t.path().join("linux"))
        );
        let cached = t.path().join("cache/entry/bzImage");
        std::fs::create_dir_all(cached.parent().expect("parent")).expect("mkdir");
        std::fs::write(&cached, b"MZ").expect("write");
        assert_eq!(kernel_source_tree(&cached), None);
    }

    #[test]
    fn env_rules() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(run_source_from(env(&[])), RunSource::Local);
        assert_eq!(run_source_from(env(&[("KTSTR_CI", "")])), RunSource::Local);
        assert_eq!(run_source_from(env(&[("KTSTR_CI", "1")])), RunSource::Ci);
        assert_eq!(
            run_source_from(env(&[("KTSTR_CI_ENV", "gh")])),
            RunSource::Ci
        );
        assert_eq!(override_commit(env(&[])), None);
        assert_eq!(override_commit(env(&[("KTSTR_PROJECT_COMMIT", "")])), None);
        assert_eq!(
            override_commit(env(&[("KTSTR_PROJECT_COMMIT", "abc1234")])).as_deref(),
            Some("abc1234")
        );
    }

    #[test]
    fn stamps_have_the_documented_shape() {
        let t = time::macros::datetime!(2026-05-07 09:08:07 UTC);
        assert_eq!(compact_stamp(t), "20260507T090807Z");
        assert_eq!(iso_timestamp(t), "2026-05-07T09:08:07Z");
        let local = time::macros::datetime!(2026-05-07 11:08:07 +02:00);
        assert_eq!(iso_timestamp(local), "2026-05-07T09:08:07Z");

        let a = next_run_id();
        let b = next_run_id();
        let (stamp_a, n_a) = a.rsplit_once('-').expect("dash");
        let (stamp_b, n_b) = b.rsplit_once('-').expect("dash");
        assert_eq!(stamp_a, stamp_b, "same process, same stamp");
        assert_eq!(stamp_a.len(), 16);
        assert!(stamp_a.ends_with('Z') && stamp_a.as_bytes()[8] == b'T');
        let (n_a, n_b): (u64, u64) = (n_a.parse().expect("n"), n_b.parse().expect("n"));
        assert!(n_b > n_a);
        assert_eq!(now_timestamp().len(), 20);
    }
}
