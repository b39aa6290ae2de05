//! One run as a self-contained HTML page (`cargo ktstr stats show --html`): the verdict
//! and its reasons first, then the stimulus timeline with the monitor's samples under
//! it on the same time axis (work rate per step, run-queue depth, run-queue wait, CPU
//! pressure, sched_ext events), then per-cgroup work rates and latency percentiles,
//! the phases, and the run's identity. Inline SVG and CSS only: no script and no
//! network access, so the file opens anywhere (and archives as one file).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ktstr_sidecar::series::MonitorSeries;
use ktstr_sidecar::{LoadedSidecar, SidecarResult};

use crate::report::esc;

/// Plot size, SVG user units.
const W: f64 = 900.0;
const H: f64 = 150.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 22.0;

/// A number for a label: 3 significant digits, no exponent for everyday magnitudes.
fn num(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let a = v.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The run's verdict word and CSS class.
fn verdict(s: &SidecarResult) -> (&'static str, &'static str) {
    if s.skipped {
        ("SKIP", "skip")
    } else if s.inconclusive {
        ("INCONCLUSIVE", "skip")
    } else if s.passed && s.expected_failure {
        ("PASS (expected failure)", "pass")
    } else if s.passed {
        ("PASS", "pass")
    } else {
        ("FAIL", "fail")
    }
}

/// One line of a plot: its name, colour and (ms, value) points.
type Line<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// A time axis shared by every plot of the page.
#[derive(Clone, Copy)]
struct Axis {
    end_ms: f64,
}

impl Axis {
    fn x(self, ms: f64) -> f64 {
        LEFT + ms / self.end_ms.max(1.0) * (W - LEFT - RIGHT)
    }
}

/// One line plot over the time axis: `points` are (ms, value); the step boundaries are
/// drawn as vertical lines so each plot reads against the stimulus timeline.
fn line_plot(
    title: &str,
    unit: &str,
    axis: Axis,
    steps: &[(u64, String)],
    series: &[Line<'_>],
) -> String {
    let values: Vec<f64> = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|&(_, v)| v))
        .filter(|v| v.is_finite())
        .collect();
    let hi = values.iter().copied().fold(0.0_f64, f64::max).max(1e-9) * 1.1;
    let y = |v: f64| TOP + (1.0 - v / hi) * (H - TOP - BOTTOM);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<figure><figcaption>{}{}</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">",
        esc(title),
        if unit.is_empty() {
            String::new()
        } else {
            format!(" ({})", esc(unit))
        },
        esc(title)
    );
    let _ = writeln!(
        s,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{}\" height=\"{}\" fill=\"#fafafa\" stroke=\"#ccc\"/>",
        W - LEFT - RIGHT,
        H - TOP - BOTTOM
    );
    for v in [hi / 1.1, hi / 2.2, 0.0] {
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\" fill=\"#555\">{}</text>",
            LEFT - 4.0,
            y(v) + 3.0,
            esc(&num(v))
        );
    }
    for (ms, label) in steps {
        let x = axis.x(*ms as f64);
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#bbb\" stroke-dasharray=\"3,3\"><title>{}</title></line>",
            H - BOTTOM,
            esc(label)
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\" fill=\"#555\">{} ms</text>",
        W - RIGHT,
        H - 6.0,
        num(axis.end_ms)
    );
    for (name, color, pts) in series {
        if pts.is_empty() {
            continue;
        }
        let path: Vec<String> = pts
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|&(t, v)| format!("{:.1},{:.1}", axis.x(t), y(v)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"><title>{}</title></polyline>",
            path.join(" "),
            esc(name)
        );
    }
    if series.len() > 1 {
        let mut x = LEFT + 8.0;
        for (name, color, _) in series {
            let _ = writeln!(
                s,
                "<text x=\"{x:.1}\" y=\"{}\" font-size=\"10\" fill=\"{color}\">{}</text>",
                TOP + 12.0,
                esc(name)
            );
            x += 8.0 + 6.5 * name.len() as f64;
        }
    }
    s.push_str("</svg></figure>\n");
    s
}

/// Horizontal bars, one per (label, value).
fn bar_chart(title: &str, unit: &str, bars: &[(String, f64)]) -> String {
    const ROW: f64 = 20.0;
    let hi = bars
        .iter()
        .map(|(_, v)| *v)
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max)
        .max(1e-9);
    let h = TOP + ROW * bars.len() as f64 + 8.0;
    let label_w = 180.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<figure><figcaption>{} ({})</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{h}\" viewBox=\"0 0 {W} {h}\" role=\"img\" aria-label=\"{}\">",
        esc(title),
        esc(unit),
        esc(title)
    );
    for (i, (label, v)) in bars.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        let w = if v.is_finite() {
            v / hi * (W - label_w - 120.0)
        } else {
            0.0
        };
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text><rect x=\"{label_w}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{}\" fill=\"#4a7ab5\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{}</text>",
            label_w - 6.0,
            y + 13.0,
            esc(label),
            y + 3.0,
            ROW - 6.0,
            label_w + w + 6.0,
            y + 13.0,
            esc(&num(*v))
        );
    }
    s.push_str("</svg></figure>\n");
    s
}

/// The page for the sidecar `s`, with the monitor `series` beside it when there is one.
pub fn render_run_html(s: &SidecarResult, series: Option<&MonitorSeries>) -> String {
    let (word, class) = verdict(s);
    let title = format!("{} [{}] on {}", s.test_name, s.topology, s.scheduler);
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\n\
body{{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:960px}}\n\
table{{border-collapse:collapse;font-size:90%;margin:0.5em 0 1em}}td,th{{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}}\n\
td.n{{text-align:right;font-variant-numeric:tabular-nums}}\n\
.verdict{{font-size:140%;font-weight:bold;padding:4px 10px;border-radius:4px;display:inline-block}}\n\
.pass{{background:#dfd;color:#060}}.fail{{background:#fdd;color:#900}}.skip{{background:#eee;color:#555}}\n\
figure{{margin:0.5em 0}}figcaption{{font-size:90%;color:#333}}ul.reasons li{{white-space:pre-wrap;font-family:monospace;font-size:85%}}\n\
</style></head><body>\n<h1>{}</h1>\n<p><span class=\"verdict {class}\">{word}</span></p>\n",
        esc(&title),
        esc(&title)
    );
    let reasons = &s.stats.verdict_details;
    if !reasons.is_empty() {
        h.push_str("<ul class=\"reasons\">\n");
        for r in reasons {
            let _ = writeln!(h, "<li>{}</li>", esc(r));
        }
        h.push_str("</ul>\n");
    }

    // The timeline: step boundaries, and the work done per step as a rate.
    let events = &s.stimulus_events;
    let end_ms = events
        .iter()
        .map(|e| e.elapsed_ms)
        .chain(
            series
                .iter()
                .flat_map(|m| m.points.iter().map(|p| p.elapsed_ms)),
        )
        .max()
        .unwrap_or(0) as f64;
    let axis = Axis { end_ms };
    let steps: Vec<(u64, String)> = events
        .iter()
        .filter(|e| !e.is_step_end)
        .map(|e| (e.elapsed_ms, e.label.clone()))
        .collect();
    h.push_str("<h2>Timeline</h2>\n");
    if events.is_empty() {
        h.push_str("<p>No stimulus events: the scenario never started.</p>\n");
    } else {
        h.push_str("<table><tr><th>ms</th><th>event</th><th>ops</th><th>detail</th><th>work units so far</th></tr>\n");
        for e in events {
            let _ = writeln!(
                h,
                "<tr><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td></tr>",
                e.elapsed_ms,
                esc(&e.label),
                esc(e.op_kind.as_deref().unwrap_or("")),
                esc(e.detail.as_deref().unwrap_or("")),
                e.total_iterations.map(|n| n.to_string()).unwrap_or_default()
            );
        }
        h.push_str("</table>\n");
        // Work units per second between consecutive events that carry a count.
        let counted: Vec<(f64, f64)> = events
            .iter()
            .filter_map(|e| e.total_iterations.map(|n| (e.elapsed_ms as f64, n as f64)))
            .collect();
        let mut rate = Vec::new();
        for w in counted.windows(2) {
            let (t0, n0) = w[0];
            let (t1, n1) = w[1];
            // A step's end and the next one's start are a few ms apart: no rate there.
            if t1 - t0 >= 50.0 && n1 >= n0 {
                let r = (n1 - n0) / ((t1 - t0) / 1000.0);
                rate.push((t0, r));
                rate.push((t1, r));
            }
        }
        h.push_str(&line_plot(
            "Work rate of all workers, per step",
            "units/s",
            axis,
            &steps,
            &[("work rate", "#4a7ab5", rate)],
        ));
    }
    match series {
        Some(m) if !m.points.is_empty() => {
            let pts = |f: &dyn Fn(&ktstr_sidecar::series::SeriesPoint) -> Option<f64>| -> Vec<(f64, f64)> {
                m.points
                    .iter()
                    .filter_map(|p| f(p).map(|v| (p.elapsed_ms as f64, v)))
                    .collect()
            };
            h.push_str(&line_plot(
                "Run-queue depth (runnable tasks, all CPUs) and online CPUs",
                "tasks",
                axis,
                &steps,
                &[
                    ("runnable", "#b5574a", pts(&|p| p.nr_running.map(f64::from))),
                    ("online CPUs", "#888", pts(&|p| Some(f64::from(p.cpus)))),
                ],
            ));
            h.push_str(&line_plot(
                "Run-queue wait during each interval (schedstat, all CPUs)",
                "µs",
                axis,
                &steps,
                &[("run delay", "#8a5ab5", pts(&|p| p.run_delay_us))],
            ));
            h.push_str(&line_plot(
                "CPU pressure (PSI cpu some, avg10)",
                "%",
                axis,
                &steps,
                &[("psi cpu some", "#b5954a", pts(&|p| p.psi_cpu_some))],
            ));
            // The sched_ext events that moved most over the run, one line each.
            let mut totals: std::collections::BTreeMap<&str, u64> = Default::default();
            for p in &m.points {
                for (k, v) in &p.scx_events {
                    *totals.entry(k.as_str()).or_default() += v;
                }
            }
            let mut top: Vec<(&str, u64)> = totals.into_iter().collect();
            top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            top.truncate(4);
            if !top.is_empty() {
                let colors = ["#2a8a5a", "#b55a8a", "#5a8ab5", "#8a8a2a"];
                let lines: Vec<Line<'_>> = top
                    .iter()
                    .zip(colors)
                    .map(|((name, _), color)| {
                        let name = *name;
                        (
                            name.strip_prefix("SCX_EV_").unwrap_or(name),
                            color,
                            m.points
                                .iter()
                                .map(|p| {
                                    (
                                        p.elapsed_ms as f64,
                                        p.scx_events.get(name).copied().unwrap_or(0) as f64,
                                    )
                                })
                                .collect(),
                        )
                    })
                    .collect();
                h.push_str(&line_plot(
                    "sched_ext events per interval (the four that moved most)",
                    "events",
                    axis,
                    &steps,
                    &lines,
                ));
            }
        }
        _ => h.push_str(
            "<p>No monitor samples beside this sidecar (<code>*.monitor.json</code>): the monitor was off, or the run predates them.</p>\n",
        ),
    }

    // Per cgroup.
    let cgs = &s.stats.cgroups;
    h.push_str("<h2>Cgroups</h2>\n");
    if cgs.is_empty() {
        h.push_str("<p>No worker measurements.</p>\n");
    } else {
        h.push_str("<table><tr><th>cgroup</th><th>workers</th><th>CPUs</th><th>work units</th><th>work rate (units/CPU-s)</th><th>off-CPU %</th><th>max gap ms</th><th>wake p50 / p99 µs</th><th>timer p99 µs</th><th>run delay mean µs</th></tr>\n");
        for c in cgs {
            let wake = if c.wake_measured {
                format!(
                    "{} / {}",
                    num(c.median_wake_latency_us),
                    num(c.p99_wake_latency_us)
                )
            } else {
                "-".into()
            };
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&c.cgroup_name),
                c.num_workers,
                c.num_cpus,
                c.total_iterations,
                c.ext_metrics.get("work_rate").map_or("-".into(), |v| num(*v)),
                c.avg_off_cpu_pct.map_or("-".into(), num),
                c.max_gap_ms,
                wake,
                if c.timer_measured {
                    num(c.p99_timer_latency_us)
                } else {
                    "-".into()
                },
                if c.run_delay_measured {
                    num(c.mean_run_delay_us)
                } else {
                    "-".into()
                }
            );
        }
        h.push_str("</table>\n");
        let rates: Vec<(String, f64)> = cgs
            .iter()
            .filter_map(|c| {
                c.ext_metrics
                    .get("work_rate")
                    .map(|v| (c.cgroup_name.clone(), *v))
            })
            .collect();
        if !rates.is_empty() {
            h.push_str(&bar_chart(
                "Work rate per cgroup",
                "units per CPU-second",
                &rates,
            ));
        }
        let lat: Vec<(String, f64)> = cgs
            .iter()
            .filter(|c| c.wake_measured)
            .flat_map(|c| {
                [
                    (format!("{} p50", c.cgroup_name), c.median_wake_latency_us),
                    (format!("{} p99", c.cgroup_name), c.p99_wake_latency_us),
                ]
            })
            .collect();
        if !lat.is_empty() {
            h.push_str(&bar_chart("Wake-up latency per cgroup", "µs", &lat));
        }
    }

    // Phases and run-level metrics.
    if !s.stats.phases.is_empty() {
        h.push_str("<h2>Phases</h2>\n<table><tr><th>step</th><th>label</th><th>from ms</th><th>to ms</th><th>samples</th></tr>\n");
        for p in &s.stats.phases {
            let _ = writeln!(
                h,
                "<tr><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                p.step_index,
                esc(&p.label),
                p.start_ms,
                p.end_ms,
                p.sample_count
            );
        }
        h.push_str("</table>\n");
    }
    if !s.stats.ext_metrics.is_empty() {
        h.push_str("<h2>Run metrics</h2>\n<table>\n");
        for (k, v) in &s.stats.ext_metrics {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td class=\"n\">{}</td></tr>",
                esc(k),
                num(*v)
            );
        }
        h.push_str("</table>\n");
    }

    // Identity.
    h.push_str("<h2>Run</h2>\n<table>\n");
    for (k, v) in [
        ("kernel", s.kernel_version.clone().unwrap_or_default()),
        ("scheduler", s.scheduler.clone()),
        ("topology", s.topology.clone()),
        (
            "vCPUs / host CPUs",
            format!("{} / {}", s.vcpus, s.cpu_budget),
        ),
        ("work type", s.work_type.clone()),
        (
            "project commit",
            s.project_commit.clone().unwrap_or_default(),
        ),
        ("run id", s.run_id.clone()),
        ("timestamp", s.timestamp.clone()),
        (
            "teardown",
            s.cleanup_duration_ms
                .map(|ms| format!("{ms} ms"))
                .unwrap_or_default(),
        ),
    ] {
        let _ = writeln!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    }
    h.push_str("</table>\n</body></html>\n");
    h
}

/// Writes the pages of `runs`: into the directory `out` (created) when `as_dir`, one
/// `{stem}.html` each plus an `index.html` listing them with their verdicts; else the
/// one run's page to the file `out`. Files are written atomically. Returns the pages
/// written.
pub fn write_pages(
    runs: &[&LoadedSidecar],
    out: &Path,
    as_dir: bool,
) -> std::io::Result<Vec<PathBuf>> {
    let page = |l: &LoadedSidecar| {
        render_run_html(&l.sidecar, MonitorSeries::read_beside(&l.path).as_ref())
    };
    let write = |path: &Path, text: &str| {
        ktstr_sidecar::write::write_atomic(path, text.as_bytes())
            .map_err(|e| std::io::Error::other(e.to_string()))
    };
    if !as_dir {
        if let [one] = runs {
            write(out, &page(one))?;
            return Ok(vec![out.to_path_buf()]);
        }
    }
    std::fs::create_dir_all(out)?;
    let mut written = Vec::new();
    let mut index = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>ktstr runs</title>\n<style>body{font-family:system-ui,sans-serif;margin:2em}td,th{padding:2px 8px;text-align:left}.pass{color:#060}.fail{color:#900}.skip{color:#555}</style></head><body>\n<h1>ktstr runs</h1>\n<table><tr><th>test</th><th>topology</th><th>scheduler</th><th>verdict</th></tr>\n",
    );
    for l in runs {
        let name = l
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = name.strip_suffix(".ktstr.json").unwrap_or(&name);
        let file = format!("{stem}.html");
        let path = out.join(&file);
        write(&path, &page(l))?;
        let (word, class) = verdict(&l.sidecar);
        let _ = writeln!(
            index,
            "<tr><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td class=\"{class}\">{word}</td></tr>",
            esc(&file),
            esc(&l.sidecar.test_name),
            esc(&l.sidecar.topology),
            esc(&l.sidecar.scheduler)
        );
        written.push(path);
    }
    index.push_str("</table></body></html>\n");
    let index_path = out.join("index.html");
    write(&index_path, &index)?;
    written.push(index_path);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_sidecar::series::{SeriesPoint, SERIES_VERSION};

    fn series() -> MonitorSeries {
        MonitorSeries {
            version: SERIES_VERSION,
            interval_ms: 100,
            points: (0..20)
                .map(|i| SeriesPoint {
                    elapsed_ms: i * 100,
                    cpus: 4,
                    nr_running: Some(3 + (i % 3) as u32),
                    run_delay_us: Some(10.0 * i as f64),
                    psi_cpu_some: Some(1.5),
                    scx_state: Some("enabled".into()),
                    scx_events: [("SCX_EV_DISPATCH_KEEP_LAST".to_string(), i)]
                        .into_iter()
                        .collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn the_page_has_the_verdict_first_and_a_plot_per_series() {
        let mut s = ktstr_sidecar::example::fully_populated();
        s.passed = false;
        s.stats.verdict_details = vec!["fail [run] <worker> stuck for 3 s".into()];
        let page = render_run_html(&s, Some(&series()));
        let verdict_at = page.find("class=\"verdict fail\"").expect("verdict");
        let timeline_at = page.find("<h2>Timeline</h2>").expect("timeline");
        assert!(verdict_at < timeline_at);
        // Escaped reasons, and no script anywhere.
        assert!(page.contains("&lt;worker&gt; stuck"), "{page}");
        assert!(!page.contains("<script"));
        for title in [
            "Run-queue depth",
            "Run-queue wait",
            "CPU pressure",
            "sched_ext events",
        ] {
            assert!(page.contains(title), "{title}");
        }
        assert!(page.contains("DISPATCH_KEEP_LAST"));
        assert!(page.matches("<svg").count() >= 5, "{page}");
        // Without a series the page says why instead of plotting nothing.
        let bare = render_run_html(&s, None);
        assert!(bare.contains("No monitor samples beside this sidecar"));
    }
}
