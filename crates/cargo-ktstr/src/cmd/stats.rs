//! `cargo ktstr stats`: list, show and explain sidecars.

use clap::Args;

#[derive(Args, Debug)]
pub struct StatsArgs {}

pub fn run(_args: StatsArgs) -> anyhow::Result<i32> {
    anyhow::bail!("stats: not built yet")
}
