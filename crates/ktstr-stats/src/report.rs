//! Showing a [`Comparison`] to a person: an aligned text table (coloured on a
//! terminal) and a self-contained HTML report with one plot per regressed metric that
//! shows every run of both sides. No scripts, no external files.

use std::fmt::Write as _;

use crate::compare::{Comparison, MetricRow, PairStatus, Verdict};
use crate::format::{num, table, RESET};
use crate::noise::Summary;
use ktstr_sidecar::payload::Polarity;

/// Which rows a rendering shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenderOptions {
    /// Every row, unchanged and informational ones included.
    pub all: bool,
    /// ANSI colours.
    pub color: bool,
}

/// Whether a row is shown without `--all` (see [`crate::compare::is_notable`]).
pub fn is_notable(r: &MetricRow) -> bool {
    crate::compare::is_notable(r.verdict, r.judgement.as_ref())
}

fn side_cell(s: &Option<Summary>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s.n == 1 => format!("{} (1)", num(s.mean)),
        Some(s) => format!("{} ±{} ({})", num(s.mean), num(s.sd), s.n),
    }
}

fn delta_cell(r: &MetricRow) -> String {
    match r.judgement {
        None => "-".into(),
        Some(j) => match j.delta_pct {
            Some(p) => format!("{p:+.1}%"),
            None => format!("{:+}", num(j.delta)),
        },
    }
}

fn sig_cell(r: &MetricRow) -> String {
    let Some(j) = r.judgement else {
        return "-".into();
    };
    match j.separation {
        crate::noise::Separation::Noisy => "n<2".into(),
        crate::noise::Separation::Separated { p, disjoint } => match (p, disjoint) {
            (Some(p), true) => format!("{} disj", pval(p)),
            (None, _) => "disj".into(),
            (Some(p), false) => pval(p),
        },
        crate::noise::Separation::Overlapping { p } => p.map_or("-".into(), pval),
    }
}

fn pval(p: f64) -> String {
    if p < 0.001 {
        "p<.001".into()
    } else {
        format!("p={p:.3}")
    }
}

fn polarity_word(p: Polarity) -> String {
    match p {
        Polarity::HigherBetter => "higher better".into(),
        Polarity::LowerBetter => "lower better".into(),
        Polarity::TargetValue(t) => format!("target {}", num(t)),
        Polarity::Unknown => "rise is worse".into(),
        Polarity::Informational => "informational".into(),
    }
}

const RED: &str = "\x1b[1;31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const DIM: &str = "\x1b[2m";

fn verdict_color(v: Verdict) -> Option<&'static str> {
    match v {
        Verdict::Regression => Some(RED),
        Verdict::Improvement => Some(GREEN),
        Verdict::Noisy => Some(YELLOW),
        Verdict::Unchanged | Verdict::Informational | Verdict::Missing => Some(DIM),
    }
}

/// The comparison as text: sides, the table of notable (or all) rows, pairs that could
/// not be compared, counts and notes.
pub fn render_text(cmp: &Comparison, opts: RenderOptions) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "A (baseline):  {}", cmp.a_label);
    let _ = writeln!(out, "B (candidate): {}", cmp.b_label);
    out.push('\n');
    let shown: Vec<&MetricRow> = cmp
        .rows
        .iter()
        .filter(|r| opts.all || is_notable(r))
        .collect();
    if shown.is_empty() {
        out.push_str(if cmp.rows.is_empty() {
            "no metrics to compare\n"
        } else {
            "no notable differences (--all shows every metric)\n"
        });
    } else {
        let header = [
            "TEST",
            "METRIC",
            "UNIT",
            "A",
            "B",
            "DELTA",
            "SIGNIFICANCE",
            "VERDICT",
        ];
        let rows: Vec<Vec<String>> = shown
            .iter()
            .map(|r| {
                let mut verdict = r.verdict.as_str().to_string();
                if r.threshold.source == crate::compare::ThresholdSource::Assertion {
                    verdict.push_str(" (assertion)");
                }
                vec![
                    r.test_name.clone(),
                    r.label(),
                    r.unit.clone(),
                    side_cell(&r.a),
                    side_cell(&r.b),
                    delta_cell(r),
                    sig_cell(r),
                    verdict,
                ]
            })
            .collect();
        let colors: Vec<Option<&str>> = shown
            .iter()
            .map(|r| {
                if opts.color {
                    verdict_color(r.verdict)
                } else {
                    None
                }
            })
            .collect();
        out.push_str(&table(&header, &rows, &colors));
    }

    let mut status_lines = Vec::new();
    let mut only_a = Vec::new();
    let mut only_b = Vec::new();
    for p in &cmp.pairs {
        match p.status {
            PairStatus::Compared => {}
            PairStatus::OnlyA => only_a.push(p.test_name.as_str()),
            PairStatus::OnlyB => only_b.push(p.test_name.as_str()),
            PairStatus::NoUsableA => status_lines.push(format!(
                "{}: no usable run in A ({})",
                p.test_name,
                p.a.excluded.describe()
            )),
            PairStatus::NoUsable => status_lines.push(format!(
                "{}: no usable run on either side (A: {}; B: {})",
                p.test_name,
                p.a.excluded.describe(),
                p.b.excluded.describe()
            )),
            PairStatus::NoUsableB => status_lines.push(format!(
                "{}: no usable run in B ({}){}",
                p.test_name,
                p.b.excluded.describe(),
                if p.a.runs > 0 { ", A passed" } else { "" }
            )),
        }
    }
    only_a.dedup();
    only_b.dedup();
    if !status_lines.is_empty() || !only_a.is_empty() || !only_b.is_empty() {
        out.push('\n');
    }
    for l in status_lines {
        let l = if opts.color {
            format!("{RED}{l}{RESET}")
        } else {
            l
        };
        let _ = writeln!(out, "{l}");
    }
    for (side, names) in [("A", &only_a), ("B", &only_b)] {
        if !names.is_empty() {
            let _ = writeln!(
                out,
                "only in {side} ({}): {}",
                names.len(),
                abbreviate(names, 8)
            );
        }
    }

    let c = &cmp.counts;
    out.push('\n');
    let _ = writeln!(
        out,
        "{} regression(s), {} improvement(s), {} noisy ({} material), {} unchanged, {} informational",
        c.regressions, c.improvements, c.noisy, c.noisy_material, c.unchanged, c.informational
    );
    let _ = writeln!(
        out,
        "{} pair(s) compared, {} on one side only, {} without usable runs",
        c.pairs_compared, c.pairs_one_sided, c.pairs_unusable
    );
    for (side, e) in [("A", &c.excluded_a), ("B", &c.excluded_b)] {
        if e.total() > 0 {
            let _ = writeln!(out, "left out of {side}: {}", e.describe());
        }
    }
    for n in &cmp.notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}

fn abbreviate(names: &[&str], max: usize) -> String {
    let mut s = names
        .iter()
        .take(max)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > max {
        let _ = write!(s, ", ... ({} more)", names.len() - max);
    }
    s
}

/// `s` escaped for HTML text and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A self-contained HTML report: the sides, the counts, the table of notable (or all)
/// rows, and an SVG plot of both sides' runs for every regression.
pub fn render_html(cmp: &Comparison, opts: RenderOptions, title: &str) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\n\
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}\n\
table{{border-collapse:collapse;font-size:90%}}td,th{{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}}\n\
td.n{{text-align:right;font-variant-numeric:tabular-nums}}\n\
.regression{{color:#b00;font-weight:bold}}.improvement{{color:#070}}.noisy{{color:#a60}}.dim{{color:#888}}\n\
figure{{display:inline-block;margin:1em 1em 1em 0;vertical-align:top}}figcaption{{font-size:85%;max-width:480px}}\n\
</style></head><body>\n<h1>{}</h1>\n",
        esc(title),
        esc(title)
    );
    let _ = writeln!(
        h,
        "<p><b>A (baseline)</b>: {}<br><b>B (candidate)</b>: {}</p>",
        esc(&cmp.a_label),
        esc(&cmp.b_label)
    );
    let c = &cmp.counts;
    let _ = writeln!(
        h,
        "<p>{} regression(s), {} improvement(s), {} noisy ({} material), {} unchanged, {} informational; \
         {} pair(s) compared, {} on one side only, {} without usable runs.</p>",
        c.regressions,
        c.improvements,
        c.noisy,
        c.noisy_material,
        c.unchanged,
        c.informational,
        c.pairs_compared,
        c.pairs_one_sided,
        c.pairs_unusable
    );
    for n in &cmp.notes {
        let _ = writeln!(h, "<p class=\"noisy\">note: {}</p>", esc(n));
    }
    for p in &cmp.pairs {
        if p.status == PairStatus::NoUsableB {
            let _ = writeln!(
                h,
                "<p class=\"regression\">{}: no usable run in B ({})</p>",
                esc(&p.test_name),
                esc(&p.b.excluded.describe())
            );
        }
    }

    let shown: Vec<&MetricRow> = cmp
        .rows
        .iter()
        .filter(|r| opts.all || is_notable(r))
        .collect();
    if !shown.is_empty() {
        h.push_str("<table>\n<tr><th>test</th><th>metric</th><th>unit</th><th>A</th><th>B</th><th>delta</th><th>significance</th><th>verdict</th></tr>\n");
        for r in &shown {
            let class = match r.verdict {
                Verdict::Regression => "regression",
                Verdict::Improvement => "improvement",
                Verdict::Noisy => "noisy",
                _ => "dim",
            };
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"{class}\">{}</td></tr>",
                esc(&r.test_name),
                esc(&r.label()),
                esc(&r.unit),
                esc(&side_cell(&r.a)),
                esc(&side_cell(&r.b)),
                esc(&delta_cell(r)),
                esc(&sig_cell(r)),
                r.verdict.as_str()
            );
        }
        h.push_str("</table>\n");
    }

    let plotted: Vec<&MetricRow> = cmp
        .rows
        .iter()
        .filter(|r| r.verdict == Verdict::Regression)
        .collect();
    if plotted.is_empty() {
        h.push_str("<p>No regressions: nothing to plot.</p>\n");
    } else {
        h.push_str("<h2>Regressions</h2>\n");
        for r in plotted {
            h.push_str(&plot(r));
        }
    }
    h.push_str("</body></html>\n");
    h
}

/// One figure: the runs of A and B as dots in two columns, each side's mean as a bar,
/// min..max as a line; y axis labelled with the range.
pub fn plot(r: &MetricRow) -> String {
    const W: f64 = 480.0;
    const H: f64 = 220.0;
    const LEFT: f64 = 70.0;
    const TOP: f64 = 20.0;
    const BOTTOM: f64 = 30.0;
    let all: Vec<f64> = r
        .a_values
        .iter()
        .chain(&r.b_values)
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    let (mut lo, mut hi) = all
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = if hi > lo {
        (hi - lo) * 0.1
    } else {
        lo.abs().max(1.0) * 0.05
    };
    lo -= pad;
    hi += pad;
    let y = |v: f64| TOP + (hi - v) / (hi - lo) * (H - TOP - BOTTOM);
    let col_w = (W - LEFT - 20.0) / 2.0;
    let mut s = String::new();
    let caption = format!(
        "{} · {} ({}{}): {} → {}, {} {}",
        r.test_name,
        r.label(),
        if r.unit.is_empty() { "" } else { &r.unit },
        if r.unit.is_empty() {
            polarity_word(r.threshold.polarity)
        } else {
            format!(", {}", polarity_word(r.threshold.polarity))
        },
        side_cell(&r.a),
        side_cell(&r.b),
        delta_cell(r),
        sig_cell(r)
    );
    let _ = writeln!(
        s,
        "<figure><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">",
        esc(&caption)
    );
    // Axis and range labels.
    let _ = writeln!(
        s,
        "<line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{}\" stroke=\"#888\"/>",
        H - BOTTOM
    );
    for v in [hi - pad, (hi + lo) / 2.0, lo + pad] {
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#555\">{}</text><line x1=\"{}\" y1=\"{:.1}\" x2=\"{}\" y2=\"{:.1}\" stroke=\"#eee\"/>",
            LEFT - 4.0,
            y(v) + 4.0,
            esc(&num(v)),
            LEFT,
            y(v),
            W - 10.0,
            y(v)
        );
    }
    for (i, (name, values, color)) in [("A", &r.a_values, "#1f6fb4"), ("B", &r.b_values, "#c8371a")]
        .into_iter()
        .enumerate()
    {
        let x0 = LEFT + 10.0 + i as f64 * col_w;
        let mid = x0 + col_w / 2.0;
        let _ = writeln!(
            s,
            "<text x=\"{mid:.1}\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\">{name} ({} run{})</text>",
            H - 10.0,
            values.len(),
            if values.len() == 1 { "" } else { "s" }
        );
        if let Some(sum) = Summary::of(values) {
            let _ = writeln!(
                s,
                "<line x1=\"{mid:.1}\" y1=\"{:.1}\" x2=\"{mid:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-opacity=\"0.4\" stroke-width=\"2\"/>",
                y(sum.max),
                y(sum.min)
            );
            let _ = writeln!(
                s,
                "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-width=\"3\"><title>mean {}</title></line>",
                mid - col_w * 0.3,
                y(sum.mean),
                mid + col_w * 0.3,
                y(sum.mean),
                esc(&num(sum.mean))
            );
        }
        let n = values.len().max(1) as f64;
        for (k, v) in values.iter().enumerate() {
            if !v.is_finite() {
                continue;
            }
            // Spread the dots across the middle half of the column, in run order.
            let x = mid - col_w * 0.25 + col_w * 0.5 * (k as f64 + 0.5) / n;
            let _ = writeln!(
                s,
                "<circle cx=\"{x:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{color}\" fill-opacity=\"0.75\"><title>{name} run {}: {}</title></circle>",
                y(*v),
                k + 1,
                esc(&num(*v))
            );
        }
    }
    let _ = writeln!(
        s,
        "</svg><figcaption>{}</figcaption></figure>",
        esc(&caption)
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::{Counts, Judgement, PairReport, SideInfo, Threshold, ThresholdSource};
    use crate::noise::Separation;

    fn row(verdict: Verdict, a: &[f64], b: &[f64]) -> MetricRow {
        let (sa, sb) = (Summary::of(a), Summary::of(b));
        MetricRow {
            test_name: "steady".into(),
            variant: "00000000000000ab".into(),
            metric: "work_rate".into(),
            phase: None,
            unit: "units/s".into(),
            threshold: Threshold {
                polarity: Polarity::HigherBetter,
                min_abs: 0.0,
                min_rel: 0.05,
                source: ThresholdSource::Registry,
            },
            a: sa,
            b: sb,
            a_values: a.to_vec(),
            b_values: b.to_vec(),
            judgement: Some(Judgement {
                delta: -10.0,
                delta_pct: Some(-10.0),
                worse_by: 10.0,
                separation: Separation::Separated {
                    p: Some(0.0001),
                    disjoint: true,
                },
                material: true,
                verdict,
            }),
            verdict,
        }
    }

    fn cmp(rows: Vec<MetricRow>) -> Comparison {
        let side = SideInfo {
            runs: 0,
            excluded: Default::default(),
            kernels: vec![],
            commits: vec![],
            schedulers: vec![],
            topologies: vec![],
            variant_hashes: vec![],
            run_ids: vec![],
        };
        Comparison {
            a_label: "project_commit=aaaaaaa".into(),
            b_label: "project_commit=bbbbbbb <b>".into(),
            pairs: vec![PairReport {
                test_name: "broken".into(),
                variant: "1".into(),
                work_type: "SpinWait".into(),
                payload: None,
                status: PairStatus::NoUsableB,
                a: SideInfo {
                    runs: 2,
                    ..side.clone()
                },
                b: SideInfo {
                    excluded: crate::compare::Excluded {
                        fail: 2,
                        ..Default::default()
                    },
                    ..side
                },
            }],
            counts: Counts {
                regressions: 1,
                unchanged: 1,
                ..Counts::default()
            },
            rows,
            notes: vec!["a note".into()],
        }
    }

    /// Character column of `needle` in `line`.
    fn col(line: &str, needle: &str) -> Option<usize> {
        line.find(needle).map(|i| line[..i].chars().count())
    }

    #[test]
    fn text_table_is_aligned_and_coloured_only_when_asked() {
        let mut unchanged = row(Verdict::Unchanged, &[1.0, 1.0], &[1.0, 1.0]);
        unchanged.metric = "worst_gap_ms".into();
        let c = cmp(vec![
            row(
                Verdict::Regression,
                &[100.0, 101.0, 99.0],
                &[90.0, 91.0, 89.0],
            ),
            unchanged,
        ]);
        let plain = render_text(&c, RenderOptions::default());
        assert!(!plain.contains('\x1b'));
        let header = plain
            .lines()
            .find(|l| l.starts_with("TEST"))
            .expect("header");
        let data = plain
            .lines()
            .find(|l| l.starts_with("steady"))
            .expect("row");
        // Columns line up: VERDICT starts where REGRESSION starts (in characters).
        assert_eq!(col(header, "VERDICT"), col(data, "REGRESSION"), "{plain}");
        assert!(
            data.contains("100 ±1 (3)") && data.contains("-10.0%") && data.contains("p<.001 disj")
        );
        assert!(
            !plain.contains("worst_gap_ms"),
            "unchanged rows hidden by default"
        );
        assert!(plain.contains("broken: no usable run in B (2 fail), A passed"));
        assert!(plain.contains("1 regression(s)") && plain.contains("note: a note"));
        assert!(plain.lines().all(|l| !l.ends_with(' ')));

        let all = render_text(
            &c,
            RenderOptions {
                all: true,
                color: true,
            },
        );
        assert!(all.contains("worst_gap_ms"));
        assert!(all.contains(&format!("{RED}REGRESSION{RESET}")));
        // Colour codes do not shift columns.
        let header = all.lines().find(|l| l.starts_with("TEST")).expect("header");
        let data = all
            .lines()
            .find(|l| l.starts_with("steady  work_rate"))
            .expect("row");
        assert_eq!(col(header, "VERDICT"), col(data, RED));
    }

    #[test]
    fn html_has_a_plot_per_regression_with_every_run() {
        let reg = row(
            Verdict::Regression,
            &[100.0, 101.0, 99.0],
            &[90.0, 91.0, 89.0, 90.5],
        );
        let c = cmp(vec![
            reg,
            row(Verdict::Improvement, &[1.0, 1.1], &[2.0, 2.1]),
        ]);
        let html = render_html(&c, RenderOptions::default(), "perf-delta <x>");
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<title>perf-delta &lt;x&gt;</title>"));
        assert!(html.contains("project_commit=bbbbbbb &lt;b&gt;"), "escaped");
        assert!(!html.contains("<script"));
        assert_eq!(html.matches("<svg").count(), 1, "one plot: one regression");
        assert_eq!(html.matches("<circle").count(), 7, "3 runs of A + 4 of B");
        assert!(html.contains("A (3 runs)") && html.contains("B (4 runs)"));
        assert!(html.contains("class=\"regression\">REGRESSION"));
        assert!(html.contains("broken: no usable run in B"));
        let svg = &html[html.find("<svg").expect("svg")..html.find("</svg>").expect("end")];
        // Every dot lies inside the plot.
        for cy in svg.split("cy=\"").skip(1) {
            let v: f64 = cy[..cy.find('"').expect("quote")].parse().expect("number");
            assert!((20.0..=190.0).contains(&v), "{v}");
        }

        let none = render_html(&cmp(vec![]), RenderOptions::default(), "t");
        assert!(none.contains("nothing to plot"));
    }
}
