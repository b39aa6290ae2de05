//! The user guide (`docs/guide`, an mdBook): every page is in the table of contents and
//! every page in it exists, at least 12 of them; every relative link resolves to a file
//! of the book; the environment page lists the same variables as the README. (`mdbook
//! build docs/guide` in `.ci/run` builds it; this keeps it honest without mdbook.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/guide/src")
}

fn pages(dir: &Path, out: &mut BTreeSet<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            pages(&p, out);
        } else if p.extension().is_some_and(|x| x == "md") {
            out.insert(p.strip_prefix(src()).unwrap().to_path_buf());
        }
    }
}

/// Targets of the markdown links `[text](target)` in `text` (code blocks skipped).
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_page_is_listed_and_every_link_resolves() {
    let src = src();
    let mut all = BTreeSet::new();
    pages(&src, &mut all);
    all.remove(Path::new("SUMMARY.md"));
    let summary = std::fs::read_to_string(src.join("SUMMARY.md")).unwrap();
    let listed: BTreeSet<PathBuf> = links(&summary).into_iter().map(PathBuf::from).collect();
    assert!(listed.len() >= 12, "only {} pages", listed.len());
    let missing: Vec<_> = listed.difference(&all).collect();
    assert!(missing.is_empty(), "listed but missing: {missing:?}");
    let unlisted: Vec<_> = all.difference(&listed).collect();
    assert!(unlisted.is_empty(), "pages not in SUMMARY.md: {unlisted:?}");
    let mut broken = Vec::new();
    for page in &all {
        let text = std::fs::read_to_string(src.join(page)).unwrap();
        for target in links(&text) {
            if target.starts_with("http://") || target.starts_with("https://") {
                continue;
            }
            let file = target.split('#').next().unwrap_or("");
            if file.is_empty() {
                continue;
            }
            let resolved = src.join(page).parent().unwrap().join(file);
            if !resolved.is_file() {
                broken.push(format!("{}: {target}", page.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links: {broken:#?}");
}

/// The `| variable | meaning |` table of a document.
fn env_table(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| !l.starts_with("| variable | meaning |"))
        .take_while(|l| l.starts_with('|'))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_environment_page_matches_the_readme() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let page = std::fs::read_to_string(src().join("reference/environment.md")).unwrap();
    let (a, b) = (env_table(&readme), env_table(&page));
    assert!(a.len() > 10, "README table: {a:#?}");
    assert_eq!(
        a, b,
        "docs/guide/src/reference/environment.md differs from the README's table"
    );
}
