//! Shared by the integration tests that boot VMs.

/// Whether a VM can boot here; otherwise skip (or fail under KTSTR_NO_SKIP).
pub fn can_boot() -> bool {
    let why = match (ktstr::kernel::resolve(None), ktstr::engine::choose(None)) {
        (Ok(_), Ok(_)) => return true,
        (Err(e), _) => e.to_string(),
        (_, Err(e)) => e.to_string(),
    };
    let no_skip = std::env::var_os("KTSTR_NO_SKIP").is_some_and(|v| !v.is_empty());
    assert!(!no_skip, "cannot boot a VM: {why}");
    eprintln!("SKIP: cannot boot a VM: {why}");
    false
}
