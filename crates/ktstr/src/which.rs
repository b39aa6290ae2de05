//! Finding host programs on `PATH` (qemu, apt tools, clang, payload binaries).

use std::path::PathBuf;

/// Host path of `program`: itself when it names a path (contains `/`), else the first
/// file of that name in a `PATH` directory.
pub fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_on_path_and_takes_paths_as_they_are() {
        assert!(which("sh").is_some_and(|p| p.is_absolute() && p.ends_with("sh")));
        assert_eq!(which("/bin/sh"), Some(PathBuf::from("/bin/sh")));
        assert_eq!(which("/nonexistent/tool"), None);
        assert_eq!(which("ktstr-no-such-program-anywhere"), None);
    }
}
