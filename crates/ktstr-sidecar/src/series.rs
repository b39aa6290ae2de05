//! `{stem}.monitor.json` beside a sidecar: the monitor's samples as a time series, for
//! reports that plot a run (`cargo ktstr stats show --html`). The sidecar itself keeps
//! the reference's summary ([`crate::MonitorSummary`]); this file is ours, optional,
//! and written atomically like the sidecar.
//!
//! Counters are per interval (the difference from the previous sample), so a point
//! reads as "during the last interval".

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Format version of [`MonitorSeries`].
pub const SERIES_VERSION: u32 = 1;
/// Largest series file read back.
pub const MAX_SERIES_BYTES: u64 = 32 << 20;

/// The monitor's samples of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MonitorSeries {
    pub version: u32,
    /// Milliseconds between samples the guest was asked for.
    pub interval_ms: u64,
    pub points: Vec<SeriesPoint>,
}

/// One sample.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// Milliseconds since the scenario started (the stimulus events' clock).
    pub elapsed_ms: u64,
    /// CPUs the sample could read (online ones).
    pub cpus: u32,
    /// Runnable tasks over all run queues; None when sched debugfs is not visible.
    pub nr_running: Option<u32>,
    /// Run-queue wait over all CPUs during the interval, microseconds (schedstat).
    pub run_delay_us: Option<f64>,
    /// `/proc/pressure/cpu` `some avg10`, percent.
    pub psi_cpu_some: Option<f64>,
    /// sched_ext state (`enabled`, `disabled`, ...); None without sched_ext.
    pub scx_state: Option<String>,
    /// `SCX_EV_*` counts during the interval (events that moved only).
    pub scx_events: BTreeMap<String, u64>,
}

impl MonitorSeries {
    /// Where the series of the sidecar at `sidecar` lives (`x.ktstr.json` ->
    /// `x.monitor.json`).
    pub fn path_for(sidecar: &Path) -> PathBuf {
        let name = sidecar
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = name.strip_suffix(".ktstr.json").unwrap_or(&name);
        sidecar.with_file_name(format!("{stem}.monitor.json"))
    }

    /// Reads the series beside `sidecar`; None when there is none (or it is unreadable:
    /// a report then goes without the plots).
    pub fn read_beside(sidecar: &Path) -> Option<Self> {
        let bytes = crate::fsread::read_regular(&Self::path_for(sidecar), MAX_SERIES_BYTES).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Writes it atomically to `path`.
    pub fn write(&self, path: &Path) -> crate::error::Result<()> {
        let bytes =
            serde_json::to_vec(self).map_err(|e| crate::error::SidecarError::Serialize {
                test_name: format!("(monitor series {})", path.display()),
                source: e,
            })?;
        crate::write::write_atomic(path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lives_beside_the_sidecar_and_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let sidecar = d.path().join("steady-00000000000000aa.ktstr.json");
        let path = MonitorSeries::path_for(&sidecar);
        assert_eq!(
            path.file_name().unwrap(),
            "steady-00000000000000aa.monitor.json"
        );
        assert_eq!(MonitorSeries::read_beside(&sidecar), None);
        let s = MonitorSeries {
            version: SERIES_VERSION,
            interval_ms: 100,
            points: vec![SeriesPoint {
                elapsed_ms: 100,
                cpus: 4,
                nr_running: Some(3),
                run_delay_us: Some(12.5),
                psi_cpu_some: Some(1.0),
                scx_state: Some("enabled".into()),
                scx_events: BTreeMap::from([("SCX_EV_DISPATCH_KEEP_LAST".into(), 7)]),
            }],
        };
        s.write(&path).unwrap();
        assert_eq!(MonitorSeries::read_beside(&sidecar), Some(s));
        // Garbage is no series, not an error.
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(MonitorSeries::read_beside(&sidecar), None);
    }
}
