//! One module per subcommand; each exposes `XArgs` (clap) and `run(XArgs) -> Result<i32>`
//! returning the process exit code.

pub mod comparison;
pub mod describe;
pub mod kernel;
pub mod nested;
pub mod perf_delta;
pub mod selftest;
pub mod setup;
pub mod shell;
pub mod stats;
pub mod test;
