//! The scheduler's system-wide state as the guest kernel publishes it: per-CPU
//! `/proc/schedstat`, run-queue length and clock from sched debugfs, sched_ext state and
//! event counters, PSI. Pure parsers plus readers that return None for what this kernel
//! does not have; the monitor and snapshots are built from these.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ktstr_wire::msg::{CpuSample, CpuSchedstat, Psi, PsiLine, ScxSample};

/// Per-CPU lines of `/proc/schedstat` (version 15 and later):
/// `cpuN yld_count legacy sched_count sched_goidle ttwu_count ttwu_local rq_cpu_time
/// run_delay pcount`. Domain lines and the header are skipped.
pub fn parse_proc_schedstat(s: &str) -> Result<BTreeMap<u32, CpuSchedstat>> {
    let mut out = BTreeMap::new();
    for line in s.lines() {
        let mut f = line.split_ascii_whitespace();
        let Some(cpu) = f
            .next()
            .and_then(|h| h.strip_prefix("cpu"))
            .filter(|n| !n.is_empty())
        else {
            continue;
        };
        let cpu: u32 = cpu
            .parse()
            .with_context(|| format!("/proc/schedstat: bad cpu line `{line}`"))?;
        let nums: Vec<u64> = f
            .map(|x| x.parse::<u64>())
            .collect::<Result<_, _>>()
            .with_context(|| format!("/proc/schedstat: bad number in `{line}`"))?;
        if nums.len() < 9 {
            bail!(
                "/proc/schedstat: cpu line `{line}` has {} fields, expected 9",
                nums.len()
            );
        }
        out.insert(
            cpu,
            CpuSchedstat {
                yld_count: nums[0],
                sched_count: nums[2],
                sched_goidle: nums[3],
                ttwu_count: nums[4],
                ttwu_local: nums[5],
                rq_cpu_time_ns: nums[6],
                run_delay_ns: nums[7],
                pcount: nums[8],
            },
        );
    }
    Ok(out)
}

/// What sched debugfs says about one CPU's run queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RqDebug {
    pub nr_running: Option<u32>,
    pub clock_ns: Option<u64>,
}

/// `/sys/kernel/debug/sched/debug` (or `/proc/sched_debug`): the run-queue fields that
/// follow each `cpu#N` header, up to its first sub-section (`cfs_rq[...]`, after a blank
/// line), whose own `.nr_running` lines are not the run queue's.
///
/// Written with `str::find` (optimised code even in a debug build of the runtime): the
/// monitor parses this ~20 KB file ten times a second while the workload runs, and a
/// line-by-line loop cost milliseconds of guest CPU per sample under qemu TCG.
pub fn parse_sched_debug(s: &str) -> BTreeMap<u32, RqDebug> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    loop {
        let start = if rest.starts_with("cpu#") {
            4
        } else if let Some(p) = rest.find("\ncpu#") {
            p + 5
        } else {
            break;
        };
        let after = &rest[start..];
        let digits = after
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after.len());
        let end = [after.find("\n\n"), after.find("\ncfs_rq[")]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(after.len());
        if let Ok(cpu) = after[..digits].parse::<u32>() {
            let block = &after[..end];
            out.insert(
                cpu,
                RqDebug {
                    nr_running: field(block, "\n  .nr_running ").and_then(|v| v.parse().ok()),
                    clock_ns: field(block, "\n  .clock ").and_then(parse_ms_to_ns),
                },
            );
        }
        rest = &after[end..];
    }
    out
}

/// The value after `key` and its `:` on the same line, trimmed.
fn field<'a>(block: &'a str, key: &str) -> Option<&'a str> {
    let at = block.find(key)? + key.len();
    let line = &block[at..];
    let line = &line[..line.find('\n').unwrap_or(line.len())];
    let (_, v) = line.split_once(':')?;
    Some(v.trim())
}

/// `12345.678901` (milliseconds, as sched debugfs prints clocks) in nanoseconds.
fn parse_ms_to_ns(s: &str) -> Option<u64> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let ms: u64 = whole.parse().ok()?;
    let mut frac: String = frac.chars().take(6).collect();
    if !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    while frac.len() < 6 {
        frac.push('0');
    }
    let sub: u64 = frac.parse().ok()?;
    ms.checked_mul(1_000_000)?.checked_add(sub)
}

/// A `/proc/pressure/*` file: `some avg10=0.12 avg60=... avg300=... total=123` and
/// optionally a `full` line.
pub fn parse_psi(s: &str) -> Result<Psi> {
    let mut some = None;
    let mut full = None;
    for line in s.lines() {
        let mut f = line.split_ascii_whitespace();
        let which = f.next();
        let mut l = PsiLine::default();
        for kv in f {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("PSI: `{kv}` is not key=value"))?;
            let avg = || -> Result<f64> {
                let x: f64 = v.parse().with_context(|| format!("PSI: bad {k} `{v}`"))?;
                anyhow::ensure!(x.is_finite() && x >= 0.0, "PSI: {k} `{v}` out of range");
                Ok(x)
            };
            match k {
                "avg10" => l.avg10 = avg()?,
                "avg60" => l.avg60 = avg()?,
                "avg300" => l.avg300 = avg()?,
                "total" => {
                    l.total_us = v.parse().with_context(|| format!("PSI: bad total `{v}`"))?
                }
                _ => {}
            }
        }
        match which {
            Some("some") => some = Some(l),
            Some("full") => full = Some(l),
            _ => {}
        }
    }
    Ok(Psi {
        some: some.context("PSI: no `some` line")?,
        full,
    })
}

/// `/sys/kernel/sched_ext/root/events`: `SCX_EV_NAME count` per line. Lines that do not
/// parse are skipped (the format may grow).
pub fn parse_scx_events(s: &str) -> BTreeMap<String, u64> {
    s.lines()
        .filter_map(|l| {
            let mut f = l.split_ascii_whitespace();
            let name = f.next()?;
            let v = f.next()?.parse().ok()?;
            Some((name.to_string(), v))
        })
        .collect()
}

/// Where sched debugfs lives on this kernel, if anywhere.
fn sched_debug_text() -> Option<String> {
    ["/sys/kernel/debug/sched/debug", "/proc/sched_debug"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
}

/// One entry per CPU in `cpus`: run queue from sched debugfs and `/proc/schedstat`
/// counters, each None when unavailable.
pub fn read_cpus(cpus: &[u32]) -> Vec<CpuSample> {
    let rq = sched_debug_text()
        .map(|s| parse_sched_debug(&s))
        .unwrap_or_default();
    let ss = std::fs::read_to_string("/proc/schedstat")
        .ok()
        .and_then(|s| parse_proc_schedstat(&s).ok())
        .unwrap_or_default();
    cpus.iter()
        .map(|&cpu| {
            let r = rq.get(&cpu).copied().unwrap_or_default();
            CpuSample {
                cpu,
                nr_running: r.nr_running,
                rq_clock_ns: r.clock_ns,
                schedstat: ss.get(&cpu).copied(),
            }
        })
        .collect()
}

/// `/sys/kernel/sched_ext`; None when the kernel has no sched_ext.
pub fn read_scx(root: &Path) -> Option<ScxSample> {
    let state = std::fs::read_to_string(root.join("state")).ok()?;
    let ops = std::fs::read_to_string(root.join("root/ops"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let events = std::fs::read_to_string(root.join("root/events"))
        .map(|s| parse_scx_events(&s))
        .unwrap_or_default();
    Some(ScxSample {
        state: state.trim().to_string(),
        ops,
        events,
    })
}

/// A PSI file; None when missing (PSI off) or garbled.
pub fn read_psi(path: &Path) -> Option<Psi> {
    parse_psi(&std::fs::read_to_string(path).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEDSTAT: &str = "version 17
timestamp 4295123
cpu0 3 0 1000 400 500 200 9000000 123456 700
domain0 MC 00000003 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45
cpu1 0 0 20 10 5 1 50 60 7
";

    #[test]
    fn proc_schedstat_cpu_lines() {
        let m = parse_proc_schedstat(SCHEDSTAT).unwrap();
        assert_eq!(m.len(), 2);
        let c0 = m[&0];
        assert_eq!(c0.yld_count, 3);
        assert_eq!(c0.sched_count, 1000);
        assert_eq!(c0.sched_goidle, 400);
        assert_eq!(c0.ttwu_count, 500);
        assert_eq!(c0.ttwu_local, 200);
        assert_eq!(c0.rq_cpu_time_ns, 9_000_000);
        assert_eq!(c0.run_delay_ns, 123_456);
        assert_eq!(c0.pcount, 700);
        assert_eq!(m[&1].pcount, 7);
        assert!(parse_proc_schedstat("cpu0 1 2 3\n").is_err());
        assert!(parse_proc_schedstat("cpu0 1 2 3 x 5 6 7 8 9\n").is_err());
        assert!(parse_proc_schedstat("cpux 1 2 3 4 5 6 7 8 9\n").is_err());
        assert!(parse_proc_schedstat("version 15\n").unwrap().is_empty());
    }

    const SCHED_DEBUG: &str = "Sched Debug Version: v0.11, 6.12.0 #1
ktime                                   : 5123.456789
jiffies                                 : 4294892
sysctl_sched
  .sysctl_sched_base_slice                 : 3.000000

cpu#0, 2495.998 MHz
  .nr_running                    : 2
  .nr_switches                   : 1234
  .nr_uninterruptible            : 0
  .next_balance                  : 4294.892000
  .curr->pid                     : 77
  .clock                         : 5123.401234
  .clock_task                    : 5100.000000
  .avg_idle                      : 1000000

cfs_rq[0]:/
  .nr_running                    : 9
  .h_nr_running                  : 9

runnable tasks:
 S            task   PID         tree-key  switches  prio     wait-time             sum-exec        sum-sleep
-------------------------------------------------------------------------------------------------------------
>R     ktstr-guest    77       100.000000       100   120         0.000000        10.000000         0.000000 0 0 /

cpu#1, 2495.998 MHz
  .nr_running                    : 0
  .clock                         : 5123.5
";

    #[test]
    fn sched_debug_takes_the_run_queue_block_only() {
        let m = parse_sched_debug(SCHED_DEBUG);
        assert_eq!(m.len(), 2);
        assert_eq!(m[&0].nr_running, Some(2), "not the cfs_rq's 9");
        assert_eq!(m[&0].clock_ns, Some(5_123_401_234));
        assert_eq!(m[&1].nr_running, Some(0));
        assert_eq!(m[&1].clock_ns, Some(5_123_500_000));
        assert!(parse_sched_debug("garbage\n.nr_running : 3\n").is_empty());
    }

    #[test]
    fn ms_clock_to_ns() {
        assert_eq!(parse_ms_to_ns("1.5"), Some(1_500_000));
        assert_eq!(parse_ms_to_ns("7"), Some(7_000_000));
        assert_eq!(parse_ms_to_ns("0.0000019"), Some(1));
        assert_eq!(parse_ms_to_ns("-1.0"), None);
        assert_eq!(parse_ms_to_ns("1.x"), None);
        assert_eq!(parse_ms_to_ns("99999999999999999.0"), None);
    }

    #[test]
    fn psi_lines() {
        let p = parse_psi(
            "some avg10=1.25 avg60=0.50 avg300=0.00 total=123456\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=7\n",
        )
        .unwrap();
        assert_eq!(p.some.avg10, 1.25);
        assert_eq!(p.some.avg60, 0.5);
        assert_eq!(p.some.total_us, 123_456);
        assert_eq!(p.full.unwrap().total_us, 7);
        let only_some = parse_psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=0").unwrap();
        assert!(only_some.full.is_none());
        for bad in [
            "",
            "full avg10=0.00 avg60=0.00 avg300=0.00 total=0",
            "some avg10=x",
            "some avg10=NaN",
            "some avg10",
            "some total=-3",
        ] {
            assert!(parse_psi(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scx_events() {
        let m = parse_scx_events(
            "SCX_EV_SELECT_CPU_FALLBACK 12\nSCX_EV_DISPATCH_KEEP_LAST 0\nbroken\nSCX_EV_X y\n",
        );
        assert_eq!(m.len(), 2);
        assert_eq!(m["SCX_EV_SELECT_CPU_FALLBACK"], 12);
    }

    #[test]
    fn scx_reader_on_a_fake_tree() {
        let d = tempfile::tempdir().unwrap();
        assert!(read_scx(d.path()).is_none());
        std::fs::write(d.path().join("state"), "enabled\n").unwrap();
        std::fs::create_dir(d.path().join("root")).unwrap();
        std::fs::write(d.path().join("root/ops"), "simple\n").unwrap();
        std::fs::write(
            d.path().join("root/events"),
            "SCX_EV_SELECT_CPU_FALLBACK 3\n",
        )
        .unwrap();
        let s = read_scx(d.path()).unwrap();
        assert_eq!(s.state, "enabled");
        assert_eq!(s.ops.as_deref(), Some("simple"));
        assert_eq!(s.events["SCX_EV_SELECT_CPU_FALLBACK"], 3);
    }
}
