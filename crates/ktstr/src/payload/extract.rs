//! Metrics from a payload's raw output: the JSON document in mixed output (stdout first,
//! stderr as fallback) flattened to dotted names, or numbers matched by line patterns.

use ktstr_sidecar::{Metric, MetricStream, PayloadMetrics, Polarity};
use serde_json::Value;

use super::{OutputKind, Payload};

/// Output promised something it did not deliver.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExtractError {
    #[error("payload `{payload}` promised JSON but printed none; its output began:\n{head}")]
    NoJson { payload: String, head: String },
    #[error("payload `{payload}`: no line matched the pattern for `{metric}`; its output began:\n{head}")]
    NoMatch {
        payload: String,
        metric: String,
        head: String,
    },
}

/// Most metrics kept from one invocation (a huge JSON document must not explode the sidecar).
const MAX_METRICS: usize = 4096;

/// The first lines of output, for error messages.
fn head(stdout: &str, stderr: &str) -> String {
    let text = if stdout.trim().is_empty() {
        stderr
    } else {
        stdout
    };
    let lines: Vec<&str> = text.lines().take(8).collect();
    if lines.is_empty() {
        "(no output)".to_string()
    } else {
        lines.join("\n")
    }
}

/// Find the largest JSON object or array embedded in `text` (other output may surround it).
pub fn find_json(text: &str) -> Option<Value> {
    let mut best: Option<(usize, Value)> = None;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'{' || bytes[i] == b'[' {
            let mut stream = serde_json::Deserializer::from_str(&text[i..]).into_iter::<Value>();
            if let Some(Ok(v)) = stream.next() {
                let used = stream.byte_offset();
                if v.is_object() || (v.is_array() && used > 2) {
                    if best.as_ref().is_none_or(|(len, _)| used > *len) {
                        best = Some((used, v));
                    }
                    i += used;
                    continue;
                }
            }
        }
        i += 1;
    }
    best.map(|(_, v)| v)
}

/// Numeric leaves of `v` as (dotted path, value); booleans count as 0/1.
pub fn flatten(v: &Value) -> Vec<(String, f64)> {
    fn walk(v: &Value, path: &mut String, out: &mut Vec<(String, f64)>) {
        if out.len() >= MAX_METRICS {
            return;
        }
        match v {
            Value::Number(n) => {
                if let Some(x) = n.as_f64() {
                    out.push((path.clone(), x));
                }
            }
            Value::Bool(b) => out.push((path.clone(), if *b { 1.0 } else { 0.0 })),
            Value::Object(map) => {
                for (k, child) in map {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                    walk(child, path, out);
                    path.truncate(len);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(&i.to_string());
                    walk(child, path, out);
                    path.truncate(len);
                }
            }
            Value::Null | Value::String(_) => {}
        }
    }
    let mut out = Vec::new();
    walk(v, &mut String::new(), &mut out);
    out
}

/// Turn one invocation's output into its `PayloadMetrics`. Extraction failures are
/// returned beside the (possibly empty) metrics so a check can fail with them.
pub fn extract_metrics(
    payload: &Payload,
    index: u32,
    exit_code: i32,
    stdout: &str,
    stderr: &str,
) -> (PayloadMetrics, Vec<ExtractError>) {
    let mut metrics = Vec::new();
    let mut errors = Vec::new();
    let mut push = |name: String, value: f64, stream: MetricStream| {
        let (unit, polarity) = payload
            .hint_for(&name)
            .map(|h| (h.unit.clone(), h.polarity))
            .unwrap_or((String::new(), Polarity::Unknown));
        metrics.push(Metric {
            name,
            value,
            polarity,
            unit,
            stream,
        });
    };
    match &payload.output {
        OutputKind::ExitCode => {}
        OutputKind::Json => {
            let found = find_json(stdout)
                .map(|v| (v, MetricStream::Stdout))
                .or_else(|| find_json(stderr).map(|v| (v, MetricStream::Stderr)));
            match found {
                Some((v, stream)) => {
                    for (name, value) in flatten(&v) {
                        push(name, value, stream);
                    }
                }
                None => errors.push(ExtractError::NoJson {
                    payload: payload.name.clone(),
                    head: head(stdout, stderr),
                }),
            }
        }
        OutputKind::Lines { patterns } => {
            for p in patterns {
                // Patterns were validated before boot; an invalid one here simply matches nothing.
                let Ok(re) = regex::Regex::new(&p.regex) else {
                    continue;
                };
                let hit = [
                    (stdout, MetricStream::Stdout),
                    (stderr, MetricStream::Stderr),
                ]
                .into_iter()
                .find_map(|(text, stream)| {
                    text.lines().find_map(|line| {
                        re.captures(line)
                            .and_then(|c| c.get(1))
                            .and_then(|m| m.as_str().trim().parse::<f64>().ok())
                            // "nan" and "inf" parse, but are no measurement.
                            .filter(|v| v.is_finite())
                            .map(|v| (v, stream))
                    })
                });
                match hit {
                    Some((v, stream)) => push(p.metric.clone(), v, stream),
                    None => errors.push(ExtractError::NoMatch {
                        payload: payload.name.clone(),
                        metric: p.metric.clone(),
                        head: head(stdout, stderr),
                    }),
                }
            }
        }
    }
    (
        PayloadMetrics {
            payload_index: index as usize,
            metrics,
            exit_code,
            payload: payload.name.clone(),
        },
        errors,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_json_inside_mixed_output() {
        let out = "starting run {not json}\n{\"jobs\":[{\"read\":{\"iops\":1200.5}}],\"ok\":true}\ndone\n";
        let v = find_json(out).unwrap();
        assert_eq!(
            flatten(&v),
            vec![
                ("jobs.0.read.iops".to_string(), 1200.5),
                ("ok".to_string(), 1.0)
            ]
        );
    }

    #[test]
    fn prefers_the_largest_document() {
        let out = "[1] {\"a\":1}\n{\"b\":{\"c\":2,\"d\":3}}";
        let v = find_json(out).unwrap();
        assert_eq!(flatten(&v).len(), 2);
    }

    #[test]
    fn json_from_stderr_when_stdout_has_none_and_hints_apply() {
        let p =
            Payload::new("bench", "/bin/true")
                .json()
                .hint("lat.p99", "us", Polarity::LowerBetter);
        let (m, errs) = extract_metrics(&p, 2, 0, "hello\n", "{\"lat\":{\"p99\":42}}");
        assert!(errs.is_empty());
        assert_eq!(m.payload_index, 2);
        let lat = m.metric("lat.p99").unwrap();
        assert_eq!(lat.value, 42.0);
        assert_eq!(lat.unit, "us");
        assert_eq!(lat.polarity, Polarity::LowerBetter);
        assert_eq!(lat.stream, MetricStream::Stderr);
    }

    #[test]
    fn missing_json_quotes_the_first_lines() {
        let p = Payload::new("bench", "/bin/true").json();
        let (m, errs) = extract_metrics(&p, 0, 0, "line one\nline two\n", "");
        assert!(m.metrics.is_empty());
        let msg = errs[0].to_string();
        assert!(
            msg.contains("promised JSON") && msg.contains("line one\nline two"),
            "{msg}"
        );
    }

    #[test]
    fn line_patterns_read_numbers_and_report_misses() {
        let p = Payload::new("hackbench", "/bin/true")
            .line("time_s", r"^Time:\s*([0-9.]+)")
            .line("missing", r"^Nope: ([0-9]+)");
        let (m, errs) = extract_metrics(&p, 0, 0, "Running in process mode\nTime: 0.731\n", "");
        assert_eq!(m.metric("time_s").unwrap().value, 0.731);
        assert_eq!(m.metric("time_s").unwrap().polarity, Polarity::Unknown);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].to_string().contains("`missing`"));
    }
}
