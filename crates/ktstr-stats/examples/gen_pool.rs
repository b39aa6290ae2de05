//! Write a synthetic pool of sidecars for benchmarks and demos (`scripts/bench-stats`).
//!
//! ```text
//! cargo run --release -p ktstr-stats --example gen_pool -- DIR COUNT [--runs R] [--regress PCT] [--noise PCT]
//! ```
//!
//! COUNT sidecars, fully populated (like `example::fully_populated`), split over two
//! project commits (`aaaaaaa` = base, `bbbbbbb` = head) and R runs per commit
//! (default 5): `DIR/7.2.13-{commit}/run{r}/{test}-{hash}.ktstr.json`. Tests vary in
//! topology and scheduler; every tenth test of the head commit is PCT percent slower
//! (default 10), and values scatter by `--noise` percent (default 1).

use std::path::PathBuf;
use std::process::ExitCode;

use ktstr_sidecar::example::fully_populated;
use ktstr_sidecar::stats::WORST_P99_WAKE_LATENCY_US;
use ktstr_sidecar::{Outcome, SidecarResult};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

fn scale(s: &mut SidecarResult, work: f64, latency: f64) {
    let st = &mut s.stats;
    st.total_iterations = (st.total_iterations as f64 * work) as u64;
    for cg in &mut st.cgroups {
        cg.total_iterations = (cg.total_iterations as f64 * work) as u64;
        cg.p99_wake_latency_us *= latency;
        cg.median_wake_latency_us *= latency;
    }
    for cg in st.phases.iter_mut().flat_map(|p| p.per_cgroup.values_mut()) {
        cg.total_iterations = (cg.total_iterations as f64 * work) as u64;
    }
    if let Some(v) = st.ext_metrics.get_mut(WORST_P99_WAKE_LATENCY_US) {
        *v *= latency;
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut pos = Vec::new();
    let (mut runs, mut regress, mut noise) = (5usize, 10.0f64, 1.0f64);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| -> Option<f64> {
            let v = it.next().and_then(|v| v.parse().ok());
            if v.is_none() {
                eprintln!("{name} needs a number");
            }
            v
        };
        match a.as_str() {
            "--runs" => match val("--runs") {
                Some(v) if v >= 1.0 => runs = v as usize,
                _ => return ExitCode::FAILURE,
            },
            "--regress" => match val("--regress") {
                Some(v) => regress = v,
                None => return ExitCode::FAILURE,
            },
            "--noise" => match val("--noise") {
                Some(v) => noise = v,
                None => return ExitCode::FAILURE,
            },
            _ => pos.push(a.clone()),
        }
    }
    let (Some(dir), Some(count)) = (
        pos.first(),
        pos.get(1).and_then(|c| c.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: gen_pool DIR COUNT [--runs R] [--regress PCT] [--noise PCT]");
        return ExitCode::FAILURE;
    };
    let dir = PathBuf::from(dir);
    let commits = ["aaaaaaa", "bbbbbbb"];
    let tests = count.div_ceil(commits.len() * runs).max(1);
    let topologies = ["1n1l2c1t", "1n2l4c1t", "2n2l2c2t", "1n4l4c2t"];
    let schedulers = ["eevdf", "scx_lavd", "scx_rusty"];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let template = fully_populated();
    let mut written = 0usize;
    'all: for (ci, commit) in commits.iter().enumerate() {
        for r in 0..runs {
            let run_dir = dir.join(format!("7.2.13-{commit}")).join(format!("run{r}"));
            for t in 0..tests {
                if written == count {
                    break 'all;
                }
                let mut s = template.clone();
                s.test_name = format!("test_{t:05}");
                s.topology = topologies[t % topologies.len()].into();
                s.scheduler = schedulers[(t / topologies.len()) % schedulers.len()].into();
                s.project_commit = Some((*commit).into());
                s.kernel_version = Some("7.2.13".into());
                s.run_id = format!("20260507T0{ci}{r:04}Z-{t}");
                s.timestamp = format!("2026-05-07T0{ci}:{:02}:{:02}Z", r % 60, t % 60);
                let slow = ci == 1 && t % 10 == 0;
                let work = (1.0 - if slow { regress / 100.0 } else { 0.0 })
                    * (1.0 + noise / 100.0 * rng.unit());
                let lat = 1.0 + noise / 100.0 * rng.unit();
                scale(&mut s, work, lat);
                if t % 97 == 3 {
                    s.set_outcome(Outcome::Fail);
                }
                if let Err(e) = s.write_to_dir(&run_dir) {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
                written += 1;
            }
        }
    }
    println!(
        "wrote {written} sidecars ({tests} tests x {} commits x {runs} runs) under {}",
        commits.len(),
        dir.display()
    );
    ExitCode::SUCCESS
}
