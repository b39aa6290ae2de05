//! Running the kernel's `make`: its output goes to a log file beside the tree; a
//! progress line shows the stage, the elapsed time and the last file built; on failure
//! the error carries the log's last lines (the compiler's message is there).

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::BuildError;
use crate::kernel::Progress;

/// How `make` is invoked in one tree.
#[derive(Debug, Clone)]
pub struct Make {
    pub tree: PathBuf,
    pub pahole: Option<PathBuf>,
    pub jobs: usize,
    /// The whole build log of this tree's last `make` (overwritten each run).
    pub log: PathBuf,
}

impl Make {
    fn command(&self, target: &str) -> Command {
        let mut c = Command::new("make");
        c.arg("-C")
            .arg(&self.tree)
            .arg(format!("-j{}", self.jobs.max(1)))
            .arg("ARCH=x86_64")
            .arg(target);
        // Kconfig reads pahole's version too (PAHOLE_VERSION gates DEBUG_INFO_BTF), so
        // every make, config targets included, gets the same pahole.
        if let Some(p) = &self.pahole {
            c.arg(format!("PAHOLE={}", p.display()));
        }
        c.env("LC_ALL", "C").stdin(Stdio::null());
        c
    }

    /// Runs `make <target>` quietly (config targets: seconds).
    pub fn quick(&self, target: &str) -> Result<(), BuildError> {
        self.run(target, None)
    }

    /// Runs `make <target>` showing progress as `stage`.
    pub fn with_progress(
        &self,
        target: &str,
        stage: String,
        progress: &Progress,
    ) -> Result<(), BuildError> {
        self.run(target, Some((stage, progress)))
    }

    fn run(&self, target: &str, show: Option<(String, &Progress)>) -> Result<(), BuildError> {
        let log = fs::File::create(&self.log).map_err(|e| io("creating", &self.log, e))?;
        let log2 = log.try_clone().map_err(|e| io("opening", &self.log, e))?;
        let mut cmd = self.command(target);
        cmd.stdout(log).stderr(log2);
        // A killed build must not leave a dozen compilers running on their own.
        crate::child::die_with_parent(&mut cmd, libc::SIGTERM);
        let mut child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                BuildError::ToolMissing {
                    tool: "make".into(),
                }
            } else {
                io("starting make in", &self.tree, e)
            }
        })?;
        let started = Instant::now();
        let stage = show.as_ref().map(|(s, p)| p.stage(s.clone()));
        let mut tail = LogTail::new(&self.log);
        let mut last_line_print = Instant::now();
        let status = loop {
            if let Some(status) = child
                .try_wait()
                .map_err(|e| io("waiting for make in", &self.tree, e))?
            {
                break status;
            }
            std::thread::sleep(Duration::from_millis(250));
            if let (Some(stage), Some((msg, progress))) = (&stage, &show) {
                if let Some(line) = tail.last_step() {
                    stage.update(&format!("{msg}: {line}"));
                    // No terminal: a line every 30 s says it is alive.
                    if !progress.is_interactive() && last_line_print.elapsed().as_secs() >= 30 {
                        progress.note(&format!(
                            "  {} elapsed, {} steps, at {line}",
                            elapsed(started),
                            tail.steps
                        ));
                        last_line_print = Instant::now();
                    }
                }
            }
        };
        tail.last_step();
        if !status.success() {
            return Err(BuildError::MakeFailed {
                target: target.to_string(),
                tree: self.tree.clone(),
                status: status.to_string(),
                log: self.log.clone(),
                tail: last_lines(&self.log, 25),
            });
        }
        if let Some(stage) = stage {
            stage.done(&format!("{} ({} steps)", elapsed(started), tail.steps));
        }
        Ok(())
    }

    /// `make kernelrelease`: the release the tree builds (`7.2.13`).
    pub fn kernelrelease(&self) -> Result<String, BuildError> {
        let out = self
            .command("kernelrelease")
            .arg("-s")
            .output()
            .map_err(|e| io("running make kernelrelease in", &self.tree, e))?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || text.is_empty() {
            return Err(BuildError::MakeFailed {
                target: "kernelrelease".into(),
                tree: self.tree.clone(),
                status: out.status.to_string(),
                log: self.log.clone(),
                tail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(text.lines().last().unwrap_or_default().to_string())
    }
}

/// `4m12s`.
pub fn elapsed(since: Instant) -> String {
    let s = since.elapsed().as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Follows the growing log: counts build steps (`  CC      kernel/fork.o`) and keeps the
/// latest one.
struct LogTail {
    file: Option<fs::File>,
    pos: u64,
    partial: String,
    last: Option<String>,
    steps: u64,
}

impl LogTail {
    fn new(path: &Path) -> LogTail {
        LogTail {
            file: fs::File::open(path).ok(),
            pos: 0,
            partial: String::new(),
            last: None,
            steps: 0,
        }
    }

    fn last_step(&mut self) -> Option<String> {
        if let Some(f) = self.file.as_mut() {
            let mut buf = Vec::new();
            if f.seek(SeekFrom::Start(self.pos)).is_ok() && f.read_to_end(&mut buf).is_ok() {
                self.pos += buf.len() as u64;
                self.partial.push_str(&String::from_utf8_lossy(&buf));
                while let Some(nl) = self.partial.find('\n') {
                    let line: String = self.partial.drain(..=nl).collect();
                    if let Some(step) = build_step(&line) {
                        self.steps += 1;
                        self.last = Some(step);
                    }
                }
            }
        }
        self.last.clone()
    }
}

/// A kbuild quiet-mode step line (`  CC      mm/slub.o`), normalised to `CC mm/slub.o`.
fn build_step(line: &str) -> Option<String> {
    if !line.starts_with("  ") {
        return None;
    }
    let mut words = line.split_whitespace();
    let verb = words.next()?;
    let what = words.next()?;
    let is_verb = verb.len() <= 12
        && verb
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-' || c == '_');
    is_verb.then(|| format!("{verb} {what}"))
}

/// The last `n` non-empty lines of the log.
pub fn last_lines(path: &Path, n: usize) -> String {
    let text = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn io(what: &'static str, path: &Path, source: std::io::Error) -> BuildError {
    crate::kernel::KernelError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_steps_are_recognised() {
        assert_eq!(
            build_step("  CC      mm/slub.o\n").as_deref(),
            Some("CC mm/slub.o")
        );
        assert_eq!(
            build_step("  BTF     .btf.vmlinux.bin.o").as_deref(),
            Some("BTF .btf.vmlinux.bin.o")
        );
        assert_eq!(build_step("mm/slub.c:12: error: x"), None);
        assert_eq!(build_step("  In file included from x"), None);
    }

    #[test]
    fn a_failing_make_names_the_target_and_keeps_the_log_tail() {
        let d = tempfile::tempdir().unwrap();
        fs::write(
            d.path().join("Makefile"),
            "bzImage:\n\t@echo '  CC      a.o'\n\t@echo 'a.c:1: error: nope' >&2\n\t@false\n",
        )
        .unwrap();
        let m = Make {
            tree: d.path().to_path_buf(),
            pahole: None,
            jobs: 1,
            log: d.path().join("build.log"),
        };
        let e = m.quick("bzImage").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("`make bzImage`"), "{msg}");
        assert!(msg.contains("a.c:1: error: nope"), "{msg}");
        assert!(msg.contains("build.log"), "{msg}");
    }
}
