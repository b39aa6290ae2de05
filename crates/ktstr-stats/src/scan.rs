//! Reading big pools fast: list every sidecar file under some roots once, then parse
//! them on all CPUs and fold each into a small per-thread accumulator, so tens of
//! thousands of sidecars never sit in memory at the same time.
//!
//! Same rules as [`ktstr_sidecar::load_pool`]: a root is a sidecar file, a run directory or a
//! runs root; directories are searched two levels deep; names starting with `.` are
//! skipped; a bad file costs one error, never the rest. A file reached through two
//! roots is read once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use crate::summary::RunSummary;
use ktstr_sidecar::error::{Result, SidecarError};
use ktstr_sidecar::paths::is_sidecar_file_name;
use ktstr_sidecar::read::parse_sidecar;
use ktstr_sidecar::sidecar::{RunSource, SidecarResult};
use ktstr_sidecar::verdict::Outcome;

/// How deep below a root run directories are looked for (as in [`ktstr_sidecar::load_pool`]).
const MAX_DEPTH: usize = 2;
/// Files handed to a thread at a time.
const CHUNK: usize = 128;

/// One root to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub root: PathBuf,
    /// Named explicitly (`--dir`): `run_source` of its sidecars reads as `archive`.
    pub archive: bool,
    /// Caller's bits, OR-ed into every file found under this root (e.g. which side of a
    /// comparison the root feeds).
    pub mask: u8,
    /// Search only the directories directly below this root that `list`'s child
    /// filter accepts (for a runs root whose run directories are named by commit).
    pub prune: bool,
}

/// One sidecar file to read (its path: [`Listing::path`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarFile {
    /// Index into [`Listing::run_dirs`].
    pub run_dir: usize,
    /// OR of the masks of the sources it was found under.
    pub mask: u8,
    /// Found under an archive source.
    pub archive: bool,
    /// The file name: `Listing::names[name.0..name.1]`.
    name: (usize, usize),
}

/// Every sidecar file under some roots, grouped by run directory.
///
/// File names live in one buffer rather than one allocation each: a pool of tens of
/// thousands of files would otherwise leave that many small long-lived allocations
/// between the parser's short-lived ones, and the allocator's cost per file grows with
/// the pool.
#[derive(Debug, Default)]
pub struct Listing {
    /// Directories holding sidecar files, sorted by path.
    pub run_dirs: Vec<PathBuf>,
    /// Sorted by run directory, then file name.
    pub files: Vec<SidecarFile>,
    /// Roots or directories that could not be listed.
    pub errors: Vec<SidecarError>,
    names: Vec<u8>,
}

impl Listing {
    /// The files ordered by file name, then run directory: every run of one test
    /// variant (`{test}-{hash}.ktstr.json`) next to each other, in run-directory order.
    pub fn files_by_name(&self) -> Vec<SidecarFile> {
        let mut files = self.files.clone();
        files.sort_by(|a, b| {
            self.names[a.name.0..a.name.1]
                .cmp(&self.names[b.name.0..b.name.1])
                .then(a.run_dir.cmp(&b.run_dir))
        });
        files
    }

    /// The file name of `f`.
    pub fn file_name(&self, f: &SidecarFile) -> &OsStr {
        OsStr::from_bytes(&self.names[f.name.0..f.name.1])
    }

    /// The path of `f`.
    pub fn path(&self, f: &SidecarFile) -> PathBuf {
        self.run_dirs[f.run_dir].join(self.file_name(f))
    }
}

/// Decides whether a directory directly below a root is searched (given its name).
pub type DirFilter<'a> = &'a (dyn Fn(&str) -> bool + Sync);

/// A file found by the walk: its directory (index into the walk's directories).
struct Found {
    dir: usize,
    name: OsString,
    mask: u8,
    archive: bool,
}

/// List the sidecar files under `sources`. With `child_filter`, directories directly
/// below a root marked `prune` are searched only when it accepts their name (roots and
/// sidecar files directly in a root are always taken).
pub fn list(sources: &[Source], child_filter: Option<DirFilter<'_>>) -> Listing {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut found: Vec<Found> = Vec::new();
    let mut errors = Vec::new();
    for src in sources {
        // Per source: two sources may name the same directory (their masks merge below).
        let mut visited = ktstr_sidecar::fsread::Visited::default();
        if src.root.is_file() {
            let dir = src.root.parent().unwrap_or(Path::new(".")).to_path_buf();
            dirs.push(dir);
            found.push(Found {
                dir: dirs.len() - 1,
                name: src.root.file_name().unwrap_or_default().to_os_string(),
                mask: src.mask,
                archive: src.archive,
            });
        } else {
            walk(
                &src.root,
                0,
                src,
                child_filter,
                &mut Walk {
                    dirs: &mut dirs,
                    found: &mut found,
                    errors: &mut errors,
                    visited: &mut visited,
                },
            );
        }
    }
    // One entry per file: merge masks of files reached through several roots (the
    // same directory may have been walked twice under two spellings).
    if sources.len() > 1 {
        let mut by_key: HashMap<PathBuf, usize> = HashMap::new();
        let mut unique: Vec<Found> = Vec::with_capacity(found.len());
        for f in found {
            let path = dirs[f.dir].join(&f.name);
            let key = fs::canonicalize(&path).unwrap_or(path);
            match by_key.get(&key) {
                Some(&i) => {
                    unique[i].mask |= f.mask;
                    unique[i].archive |= f.archive;
                }
                None => {
                    by_key.insert(key, unique.len());
                    unique.push(f);
                }
            }
        }
        found = unique;
    }
    found.sort_by(|a, b| {
        dirs[a.dir]
            .cmp(&dirs[b.dir])
            .then_with(|| a.name.cmp(&b.name))
    });
    let mut listing = Listing {
        errors,
        names: Vec::with_capacity(found.iter().map(|f| f.name.len()).sum()),
        files: Vec::with_capacity(found.len()),
        ..Listing::default()
    };
    for f in &found {
        if listing.run_dirs.last() != Some(&dirs[f.dir]) {
            listing.run_dirs.push(dirs[f.dir].clone());
        }
        let start = listing.names.len();
        listing.names.extend_from_slice(f.name.as_bytes());
        listing.files.push(SidecarFile {
            run_dir: listing.run_dirs.len() - 1,
            mask: f.mask,
            archive: f.archive,
            name: (start, listing.names.len()),
        });
    }
    listing
}

/// What a walk fills in.
struct Walk<'a> {
    dirs: &'a mut Vec<PathBuf>,
    found: &'a mut Vec<Found>,
    errors: &'a mut Vec<SidecarError>,
    visited: &'a mut ktstr_sidecar::fsread::Visited,
}

fn walk(
    dir: &Path,
    depth: usize,
    src: &Source,
    child_filter: Option<DirFilter<'_>>,
    w: &mut Walk<'_>,
) {
    if !w.visited.first_visit(dir) {
        return;
    }
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            w.errors.push(SidecarError::io("list directory", dir, e));
            return;
        }
    };
    w.dirs.push(dir.to_path_buf());
    let here = w.dirs.len() - 1;
    let mut subdirs = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let text = name.to_string_lossy();
        // The entry's own type needs no extra system call; a symlink is followed (as
        // load_pool does).
        let is_dir = match entry.file_type() {
            Ok(t) if t.is_symlink() => entry.path().is_dir(),
            Ok(t) => t.is_dir(),
            Err(_) => entry.path().is_dir(),
        };
        if is_dir {
            let wanted = depth > 0 || !src.prune || child_filter.is_none_or(|f| f(&text));
            if !text.starts_with('.') && wanted {
                subdirs.push(entry.path());
            }
        } else if is_sidecar_file_name(&text) {
            w.found.push(Found {
                dir: here,
                name,
                mask: src.mask,
                archive: src.archive,
            });
        }
    }
    if depth < MAX_DEPTH {
        subdirs.sort();
        for d in subdirs {
            walk(&d, depth + 1, src, child_filter, w);
        }
    }
}

/// Read every file of `listing` and fold it into accumulators, on up to `threads`
/// threads (0 = all CPUs). `fold` gets each file with its path and parse result
/// (archive sources already rewritten to `run_source: archive`). Files are handed out in chunks
/// of consecutive files; the accumulators come back in file order, one per chunk, so a
/// caller that merges them in order sees files in listing order.
pub fn fold<A, I, F>(listing: &Listing, threads: usize, init: I, fold: F) -> Vec<A>
where
    A: Send,
    I: Fn() -> A + Sync,
    F: Fn(&mut A, &SidecarFile, &Path, Result<SidecarResult>) + Sync,
{
    let mut out = Vec::new();
    fold_merge(listing, threads, init, fold, |a| out.push(a));
    out
}

/// [`fold`], handing each chunk's accumulator to `merge` on the calling thread as soon
/// as it and every chunk before it are done, in file order: only the chunks in flight
/// are in memory, never one accumulator per chunk of the whole pool.
pub fn fold_merge<A, I, F, M>(listing: &Listing, threads: usize, init: I, fold: F, merge: M)
where
    A: Send,
    I: Fn() -> A + Sync,
    F: Fn(&mut A, &SidecarFile, &Path, Result<SidecarResult>) + Sync,
    M: FnMut(A),
{
    fold_merge_files(listing, &listing.files, threads, init, fold, merge)
}

/// [`fold_merge`] over `files` (files of `listing`, in the order wanted).
pub fn fold_merge_files<A, I, F, M>(
    listing: &Listing,
    files: &[SidecarFile],
    threads: usize,
    init: I,
    fold: F,
    mut merge: M,
) where
    A: Send,
    I: Fn() -> A + Sync,
    F: Fn(&mut A, &SidecarFile, &Path, Result<SidecarResult>) + Sync,
    M: FnMut(A),
{
    let chunks: Vec<&[SidecarFile]> = files.chunks(CHUNK).collect();
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    }
    .clamp(1, chunks.len().max(1));
    let one_chunk = |chunk: &[SidecarFile]| {
        let mut acc = init();
        for f in chunk {
            let path = listing.path(f);
            let parsed = read_fast(&path).map(|mut s| {
                if f.archive {
                    s.run_source = Some(RunSource::Archive);
                }
                s
            });
            fold(&mut acc, f, &path, parsed);
        }
        acc
    };
    if threads == 1 {
        for chunk in &chunks {
            merge(one_chunk(chunk));
        }
        return;
    }
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<(usize, A)>();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let tx = tx.clone();
            let (next, chunks, one_chunk) = (&next, &chunks, &one_chunk);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(chunk) = chunks.get(i) else { break };
                if tx.send((i, one_chunk(chunk))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        // Merge in chunk order; park chunks that finish early.
        let mut parked: BTreeMap<usize, A> = BTreeMap::new();
        let mut want = 0;
        for (i, acc) in rx {
            parked.insert(i, acc);
            while let Some(acc) = parked.remove(&want) {
                merge(acc);
                want += 1;
            }
        }
    });
}

/// Read and parse one sidecar: the plain serde path first (fast), and for a file that
/// fails it (or has contradicting verdict bits) the reader's own [`parse_sidecar`],
/// whose errors name the key and the fix.
pub fn read_fast(path: &Path) -> Result<SidecarResult> {
    let bytes = ktstr_sidecar::fsread::read_regular(path, ktstr_sidecar::fsread::MAX_SIDECAR_BYTES)
        .map_err(|e| SidecarError::io("read", path, e))?;
    match serde_json::from_slice::<SidecarResult>(&bytes) {
        Ok(s) if s.bits().outcome().is_some() => Ok(s),
        _ => parse_sidecar(&bytes, path),
    }
}

/// `stats list` over a big pool: one [`RunSummary`] per run directory (same numbers
/// and order as [`crate::summary::summarize_runs`]) and the errors of the files that
/// could not be read, without keeping any sidecar in memory.
pub fn summarize_runs(listing: &Listing, threads: usize) -> (Vec<RunSummary>, Vec<SidecarError>) {
    #[derive(Default)]
    struct Acc {
        runs: BTreeMap<usize, RunAcc>,
        errors: Vec<SidecarError>,
    }
    #[derive(Default)]
    struct RunAcc {
        count: usize,
        bad: usize,
        date: Option<String>,
        kernels: BTreeSet<String>,
        commits: BTreeSet<String>,
        by_outcome: [usize; 4],
    }
    let idx = |o: Outcome| match o {
        Outcome::Pass => 0,
        Outcome::Fail => 1,
        Outcome::Skip => 2,
        Outcome::Inconclusive => 3,
    };
    let parts = fold(listing, threads, Acc::default, |acc: &mut Acc, f, _, r| {
        let run = acc.runs.entry(f.run_dir).or_default();
        match r {
            Ok(s) => {
                run.count += 1;
                run.by_outcome[idx(s.outcome())] += 1;
                if !s.timestamp.is_empty() && run.date.as_ref().is_none_or(|d| s.timestamp < *d) {
                    run.date = Some(s.timestamp);
                }
                run.kernels.extend(s.kernel_version);
                run.commits.extend(s.project_commit);
            }
            Err(e) => {
                run.bad += 1;
                acc.errors.push(e);
            }
        }
    });
    let mut runs: BTreeMap<usize, RunAcc> = BTreeMap::new();
    let mut errors = Vec::new();
    for part in parts {
        errors.extend(part.errors);
        for (i, r) in part.runs {
            let m = runs.entry(i).or_default();
            m.count += r.count;
            m.bad += r.bad;
            if let Some(d) = r.date {
                if m.date.as_ref().is_none_or(|md| d < *md) {
                    m.date = Some(d);
                }
            }
            m.kernels.extend(r.kernels);
            m.commits.extend(r.commits);
            for k in 0..4 {
                m.by_outcome[k] += r.by_outcome[k];
            }
        }
    }
    let joined = |set: BTreeSet<String>| {
        (!set.is_empty()).then(|| set.into_iter().collect::<Vec<_>>().join(","))
    };
    let mut rows: Vec<RunSummary> = runs
        .into_iter()
        .map(|(i, r)| RunSummary {
            dir: listing.run_dirs[i].clone(),
            count: r.count,
            bad_files: r.bad,
            date: r.date,
            kernel: joined(r.kernels),
            project_commit: joined(r.commits),
            pass: r.by_outcome[0],
            fail: r.by_outcome[1],
            skip: r.by_outcome[2],
            inconclusive: r.by_outcome[3],
        })
        .collect();
    crate::summary::sort_runs(&mut rows);
    (rows, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, o: Outcome) -> PathBuf {
        let mut s = SidecarResult::new(name, "1n1l1c1t", "eevdf");
        s.set_outcome(o);
        s.run_source = Some(RunSource::Local);
        s.write_to_dir(dir).expect("write")
    }

    #[test]
    fn lists_like_load_pool_and_reads_each_file_once() {
        let root = tempfile::tempdir().expect("tempdir");
        let a = root.path().join("7.2-aaaaaaa");
        let b = root.path().join("7.2-bbbbbbb");
        write(&a, "one", Outcome::Pass);
        write(&a, "two", Outcome::Fail);
        write(&b.join("sub"), "three", Outcome::Skip);
        write(&root.path().join(".hidden"), "four", Outcome::Pass);
        fs::write(b.join("bad.ktstr.json"), "{").expect("write");
        fs::write(a.join("notes.txt"), "x").expect("write");

        let sources = [
            Source {
                root: root.path().to_path_buf(),
                archive: false,
                mask: 1,
                prune: false,
            },
            // The same run again, through another root: read once, both masks.
            Source {
                root: a.clone(),
                archive: true,
                mask: 2,
                prune: false,
            },
        ];
        let l = list(&sources, None);
        assert!(l.errors.is_empty());
        assert_eq!(l.run_dirs, [a.clone(), b.clone(), b.join("sub")]);
        assert_eq!(l.files.len(), 4);
        assert!(l.files[..2].iter().all(|f| f.mask == 3 && f.archive));
        assert_eq!(l.files[2].mask, 1);
        assert_eq!(l.path(&l.files[2]), b.join("bad.ktstr.json"));
        assert_eq!(l.file_name(&l.files[2]), "bad.ktstr.json");
        let by_name: Vec<&OsStr> = l.files_by_name().iter().map(|f| l.file_name(f)).collect();
        assert!(by_name.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(by_name.len(), l.files.len());

        // Fold: count outcomes and errors; results in file order.
        let accs = fold(&l, 2, Vec::new, |acc: &mut Vec<String>, f, _, r| {
            acc.push(match r {
                Ok(s) => format!("{}:{}:{:?}", s.test_name, s.outcome(), s.run_source),
                Err(_) => format!("bad:{}", f.run_dir),
            })
        });
        let all: Vec<String> = accs.into_iter().flatten().collect();
        assert_eq!(
            all,
            [
                "one:pass:Some(Archive)",
                "two:fail:Some(Archive)",
                "bad:1",
                "three:skip:Some(Local)"
            ]
        );

        // A child filter prunes run directories directly below a root.
        let only_b = |name: &str| name.ends_with("bbbbbbb");
        let l = list(&sources[..1], Some(&only_b));
        assert_eq!(
            l.run_dirs.len(),
            3,
            "the filter applies to pruned roots only"
        );
        let pruned = Source {
            prune: true,
            ..sources[0].clone()
        };
        let l = list(std::slice::from_ref(&pruned), Some(&only_b));
        assert_eq!(l.run_dirs, [b.clone(), b.join("sub")]);
        // A pruned and an unpruned root together: each by its own rule.
        let l = list(&[pruned, sources[1].clone()], Some(&only_b));
        assert_eq!(l.run_dirs, [a.clone(), b.clone(), b.join("sub")]);

        let missing = list(
            &[Source {
                root: root.path().join("nope"),
                archive: false,
                mask: 1,
                prune: false,
            }],
            None,
        );
        assert_eq!(missing.errors.len(), 1);
        assert!(missing.files.is_empty());
    }

    #[test]
    fn hostile_pools_are_listed_once_without_hanging_or_growing() {
        let root = tempfile::tempdir().expect("tempdir");
        let run = ktstr_sidecar::testutil::plant_hostile_pool(root.path());
        write(&run, "one", Outcome::Pass);

        let listing = list(
            &[Source {
                root: root.path().to_path_buf(),
                archive: false,
                mask: 1,
                prune: false,
            }],
            None,
        );
        // one.ktstr.json, fifo.ktstr.json and zero.ktstr.json, each once.
        assert_eq!(listing.files.len(), 3);
        let (runs, errors) = summarize_runs(&listing, 1);
        assert_eq!(runs.iter().map(|r| r.count).sum::<usize>(), 1);
        assert_eq!(errors.len(), 2);
    }

    #[test]
    fn run_summaries_match_the_in_memory_ones() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut n = 0;
        for (dir, kernel, commit) in [
            ("r1", "7.2", "aaaaaaa"),
            ("r2", "7.1", "bbbbbbb"),
            ("r3", "7.1", "ccccccc"),
        ] {
            for (i, o) in [
                Outcome::Pass,
                Outcome::Fail,
                Outcome::Skip,
                Outcome::Inconclusive,
                Outcome::Pass,
            ]
            .into_iter()
            .enumerate()
            {
                n += 1;
                let mut s = SidecarResult::new(format!("t{n}"), "1n1l1c1t", "eevdf");
                s.set_outcome(o);
                s.timestamp = format!("2026-0{}-1{i}T00:00:00Z", 4 - dir.len() % 3);
                s.kernel_version = (i != 2).then(|| kernel.to_string());
                s.project_commit = Some(commit.into());
                s.write_to_dir(&root.path().join(dir)).expect("write");
            }
        }
        fs::write(root.path().join("r2/bad.ktstr.json"), "nope").expect("write");
        fs::create_dir_all(root.path().join("r4")).expect("mkdir");
        fs::write(root.path().join("r4/only-bad.ktstr.json"), "{").expect("write");
        let roots = [root.path().to_path_buf()];
        let pool = ktstr_sidecar::load_pool(&roots, false);
        let want = crate::summary::summarize_runs(&pool);
        let l = list(
            &[Source {
                root: root.path().to_path_buf(),
                archive: false,
                mask: 1,
                prune: false,
            }],
            None,
        );
        for threads in [1, 2] {
            let (got, errors) = summarize_runs(&l, threads);
            assert_eq!(got, want);
            assert_eq!(errors.len(), 2);
        }
    }

    #[test]
    fn the_fast_reader_agrees_with_the_reader() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = ktstr_sidecar::example::fully_populated()
            .write_to_dir(dir.path())
            .expect("write");
        assert_eq!(
            read_fast(&good).expect("good"),
            ktstr_sidecar::read_sidecar(&good).expect("good")
        );
        let mut v = serde_json::to_value(ktstr_sidecar::example::fully_populated()).expect("value");
        v["passed"] = serde_json::json!(true);
        v["skipped"] = serde_json::json!(true);
        let cases = [
            ("two-bits.ktstr.json", v.to_string()),
            ("cut.ktstr.json", "{\"test_name\": \"x\"".to_string()),
            ("type.ktstr.json", "{\"test_name\": 5}".to_string()),
            (
                "trailing.ktstr.json",
                format!("{} x", serde_json::json!({})),
            ),
        ];
        for (name, body) in cases {
            let p = dir.path().join(name);
            fs::write(&p, body).expect("write");
            let fast = read_fast(&p).expect_err(name).to_string();
            let slow = ktstr_sidecar::read_sidecar(&p).expect_err(name).to_string();
            assert_eq!(fast, slow, "{name}");
        }
        assert!(read_fast(&dir.path().join("missing.ktstr.json")).is_err());
    }

    #[test]
    fn many_files_over_many_chunks_keep_order() {
        let root = tempfile::tempdir().expect("tempdir");
        for i in 0..(CHUNK * 3 + 5) {
            write(root.path(), &format!("t{i:05}"), Outcome::Pass);
        }
        let l = list(
            &[Source {
                root: root.path().to_path_buf(),
                archive: false,
                mask: 1,
                prune: false,
            }],
            None,
        );
        for threads in [1, 3, 0] {
            let names: Vec<String> =
                fold(&l, threads, Vec::new, |acc: &mut Vec<String>, _, _, r| {
                    acc.push(r.expect("good").test_name)
                })
                .into_iter()
                .flatten()
                .collect();
            assert_eq!(names.len(), CHUNK * 3 + 5);
            assert!(names.windows(2).all(|w| w[0] < w[1]), "order kept");
        }
    }
}
