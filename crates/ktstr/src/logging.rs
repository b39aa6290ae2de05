//! Where ktstr's `tracing` events go: stderr, compact, no timestamps, filtered by
//! `KTSTR_LOG`, else `RUST_LOG`, else `warn`.
//!
//! One logging path: the library logs with `tracing` (levels, per-module filters) and each
//! host process ktstr runs in installs this subscriber at its entry — `cargo ktstr`'s
//! `main` and the test binary's `--exact`/`--list` dispatch and libtest wrapper — so a
//! warning such as "cannot keep the scheduler log" reaches the user instead of a missing
//! subscriber. Messages meant as a command's output stay `println!`/`eprintln!`. The
//! guest (PID 1 in the VM) has its own console path and does not use this.

use std::io::IsTerminal;
use std::sync::Once;

use tracing_subscriber::EnvFilter;

/// The environment variable with ktstr's log filter (`RUST_LOG` syntax).
pub const LOG_ENV: &str = "KTSTR_LOG";

/// Install the stderr subscriber, once. Keeps a subscriber the program already installed.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = EnvFilter::builder().parse_lossy(filter_spec(
            std::env::var(LOG_ENV).ok(),
            std::env::var("RUST_LOG").ok(),
        ));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .without_time()
            .compact()
            .try_init();
    });
}

/// The filter: `KTSTR_LOG`, else `RUST_LOG`, else `warn` (empty values count as unset).
fn filter_spec(ktstr_log: Option<String>, rust_log: Option<String>) -> String {
    [ktstr_log, rust_log]
        .into_iter()
        .flatten()
        .find(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "warn".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ktstr_log_then_rust_log_then_warn() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(filter_spec(s("debug"), s("info")), "debug");
        assert_eq!(filter_spec(None, s("info")), "info");
        assert_eq!(filter_spec(s(""), s("ktstr=trace")), "ktstr=trace");
        assert_eq!(filter_spec(None, None), "warn");
    }

    #[test]
    fn init_twice_is_harmless() {
        init();
        init();
        tracing::warn!("logging test: shown on stderr");
    }
}
