//! Small parsers for the /proc files the runtime reads.

use anyhow::{Context, Result};

/// `/proc/<pid>/schedstat`: time on CPU, time waiting on a runqueue, times run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SchedStat {
    pub exec_runtime_ns: u64,
    pub run_delay_ns: u64,
    pub run_count: u64,
}

pub fn parse_schedstat(s: &str) -> Result<SchedStat> {
    let mut it = s.split_ascii_whitespace().map(|f| {
        f.parse::<u64>()
            .with_context(|| format!("schedstat `{}`: `{f}` is not a number", s.trim()))
    });
    let mut next = |what: &str| {
        it.next()
            .with_context(|| format!("schedstat `{}`: missing {what}", s.trim()))?
    };
    Ok(SchedStat {
        exec_runtime_ns: next("exec runtime")?,
        run_delay_ns: next("run delay")?,
        run_count: next("run count")?,
    })
}

/// `/proc/uptime` first field (seconds, 2 decimals) in milliseconds.
pub fn parse_uptime_ms(s: &str) -> Result<u64> {
    let first = s
        .split_ascii_whitespace()
        .next()
        .with_context(|| format!("/proc/uptime `{}` is empty", s.trim()))?;
    let secs: f64 = first
        .parse()
        .with_context(|| format!("/proc/uptime: `{first}` is not a number"))?;
    anyhow::ensure!(
        secs.is_finite() && secs >= 0.0,
        "/proc/uptime: `{first}` is out of range"
    );
    Ok((secs * 1000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat() {
        assert_eq!(
            parse_schedstat("123456 789 42\n").unwrap(),
            SchedStat {
                exec_runtime_ns: 123456,
                run_delay_ns: 789,
                run_count: 42
            }
        );
        assert!(parse_schedstat("1 2").is_err());
        assert!(parse_schedstat("1 x 3").is_err());
        assert!(parse_schedstat("").is_err());
    }

    #[test]
    fn uptime() {
        assert_eq!(parse_uptime_ms("3.52 1.23\n").unwrap(), 3520);
        assert_eq!(parse_uptime_ms("0.00 0.00").unwrap(), 0);
        assert!(parse_uptime_ms("").is_err());
        assert!(parse_uptime_ms("-1 0").is_err());
        assert!(parse_uptime_ms("abc 0").is_err());
    }
}
