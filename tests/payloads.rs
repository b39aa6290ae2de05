//! Real benchmark programs from Debian's packages as payloads, on the default kernel:
//!
//! - `cyclictest` (rt-tests 2.x) writes its results as JSON (`--json=/proc/self/fd/1`
//!   puts them on stdout, after its `-q` summary), so its metrics are the JSON's numeric
//!   leaves (`thread.0.avg`, ...);
//! - `stress-ng` (0.15) has no JSON, but `--yaml /proc/self/fd/1` prints `key: value`
//!   lines that line patterns read (`bogo-ops`, `bogo-ops-per-second-real-time`);
//! - `hackbench` prints `Time: 0.731`, read by a line pattern.
//!
//! One step starts stress-ng in the background in its own (worker-less) cgroup, runs
//! cyclictest and hackbench beside it, and waits for it. Under EEVDF and under
//! `scx_bpfland` the sidecar names the primary payload and carries every invocation's
//! extracted metrics; a check that cannot be met fails the run with the metric's value
//! in the reason (the test expects that failure); a payload the host cannot run is
//! rejected before anything boots.
//!
//! `scripts/setup-host` installs the packages (`apt-get install stress-ng rt-tests`).
//! Without them the tests skip, or fail under `KTSTR_NO_SKIP`.

mod common;

use std::path::{Path, PathBuf};

use ktstr::prelude::PayloadCheck as Check;
use ktstr::prelude::*;
use ktstr_sidecar::LoadedSidecar;
use ktstr_stats::detail::SidecarDetail;
use ktstr_wire::msg::PayloadResult;

/// The program's host path, or None (after saying why) when it is not installed.
fn program(name: &str) -> Option<PathBuf> {
    let found = ktstr::payload::which(name);
    if found.is_none() {
        let why = format!("`{name}` is not installed: run scripts/setup-host (Debian: apt-get install stress-ng rt-tests)");
        let skip_ok = std::env::var_os("KTSTR_NO_SKIP").is_none_or(|v| v.is_empty());
        assert!(skip_ok, "{why}");
        eprintln!("SKIP: {why}");
    }
    found
}

/// Latency of two timer threads: 500 wake-ups 2 ms apart (about 1 s), JSON on stdout.
fn cyclictest(bin: &Path) -> Payload {
    Payload::new("cyclictest", bin)
        .args([
            "-q",
            "-t",
            "2",
            "-i",
            "2000",
            "-l",
            "500",
            "--json=/proc/self/fd/1",
        ])
        .json()
        .hint("thread.0.avg", "us", Polarity::LowerBetter)
        .hint("thread.0.max", "us", Polarity::LowerBetter)
        .hint("thread.1.avg", "us", Polarity::LowerBetter)
        .hint("thread.1.max", "us", Polarity::LowerBetter)
        .check(Check::Min {
            metric: "thread.0.cycles".into(),
            min: 1.0,
        })
        .check(Check::Exists {
            metric: "thread.1.avg".into(),
        })
}

/// One CPU hog for 2 s, its metrics as YAML lines on stdout.
fn stress_ng(bin: &Path) -> Payload {
    Payload::new("stress-ng", bin)
        .args([
            "--cpu",
            "1",
            "--timeout",
            "2s",
            "--metrics-brief",
            "--yaml",
            "/proc/self/fd/1",
        ])
        .line("bogo_ops", r"^\s*bogo-ops:\s*([0-9.]+)")
        .line(
            "bogo_ops_per_s",
            r"^\s*bogo-ops-per-second-real-time:\s*([0-9.]+)",
        )
        .hint("bogo_ops", "ops", Polarity::HigherBetter)
        .hint("bogo_ops_per_s", "ops/s", Polarity::HigherBetter)
        .check(Check::Min {
            metric: "bogo_ops".into(),
            min: 1.0,
        })
        .cgroup("load")
}

/// Two groups of four senders and four receivers, 100 messages each.
fn hackbench(bin: &Path) -> Payload {
    Payload::new("hackbench", bin)
        .args(["-g", "2", "-f", "4", "-l", "100"])
        .line("time_s", r"^Time:\s*([0-9.]+)")
        .hint("time_s", "s", Polarity::LowerBetter)
        .check(Check::Exists {
            metric: "time_s".into(),
        })
}

fn op(f: fn(String) -> Op, name: &str) -> Op {
    f(name.to_string())
}

/// stress-ng in the background in cgroup `load`, cyclictest and hackbench beside it,
/// then the wait for stress-ng; `extra` runs after hackbench.
fn measure_under_load(extra: &[&str]) -> Scenario {
    let step = Step::new("measure under load", Hold::Millis(100))
        .op(op(|name| Op::StartPayload { name }, "stress-ng"))
        .op(op(|name| Op::RunPayload { name }, "cyclictest"))
        .op(op(|name| Op::RunPayload { name }, "hackbench"));
    let step = extra
        .iter()
        .fold(step, |s, name| {
            s.op(op(|name| Op::RunPayload { name }, name))
        })
        .op(op(|name| Op::WaitPayload { name }, "stress-ng"));
    // `load` holds no workers: the payload is its work.
    Scenario::new()
        .cgroup(CgroupDef::new("load").workers(0))
        .step(step)
}

/// The three payloads, or None when a program is missing.
fn payloads() -> Option<[Payload; 3]> {
    Some([
        cyclictest(&program("cyclictest")?),
        stress_ng(&program("stress-ng")?),
        hackbench(&program("hackbench")?),
    ])
}

/// What every passing payload run's sidecar must carry.
fn check_sidecar(out: &RunOutcome) -> Result<(), String> {
    let s = out.sidecar_as_written().map_err(|e| e.to_string())?;
    assert_eq!(s.payload.as_deref(), Some("cyclictest"));
    // The only cgroup hosts a payload, not workers.
    assert_eq!(s.work_type, "none");
    let order: Vec<(usize, &str, i32)> = s
        .metrics
        .iter()
        .map(|m| (m.payload_index, m.payload.as_str(), m.exit_code))
        .collect();
    assert_eq!(
        &order[..3],
        [
            (0, "stress-ng", 0),
            (1, "cyclictest", 0),
            (2, "hackbench", 0)
        ]
    );
    let value = |i: usize, name: &str| {
        s.metrics[i]
            .metric(name)
            .unwrap_or_else(|| panic!("{name} in {:#?}", s.metrics[i]))
            .clone()
    };
    let ops = value(0, "bogo_ops");
    assert!(ops.value >= 1.0, "{ops:?}");
    assert_eq!(
        (ops.unit.as_str(), ops.polarity),
        ("ops", Polarity::HigherBetter)
    );
    let rate = value(0, "bogo_ops_per_s");
    assert!(rate.value > 0.0, "{rate:?}");
    for t in 0..2 {
        let cycles = value(1, &format!("thread.{t}.cycles"));
        assert!(cycles.value >= 1.0, "{cycles:?}");
        let avg = value(1, &format!("thread.{t}.avg"));
        let max = value(1, &format!("thread.{t}.max"));
        assert!(avg.value > 0.0 && max.value >= avg.value, "{avg:?} {max:?}");
        assert_eq!(
            (avg.unit.as_str(), avg.polarity),
            ("us", Polarity::LowerBetter)
        );
    }
    let time = value(2, "time_s");
    assert!(time.value > 0.0, "{time:?}");
    eprintln!(
        "stress-ng {} bogo ops ({:.1}/s); cyclictest avg {} / {} us, max {} / {} us; hackbench {} s",
        ops.value,
        rate.value,
        value(1, "thread.0.avg").value,
        value(1, "thread.1.avg").value,
        value(1, "thread.0.max").value,
        value(1, "thread.1.max").value,
        time.value
    );

    // `cargo ktstr stats show FILE` renders this detail: the payload metrics are in it.
    let loaded = LoadedSidecar {
        path: s.file_name().into(),
        sidecar: s.clone(),
    };
    let shown = SidecarDetail::of(&loaded).render_text();
    for needle in [
        "payload[cyclictest].thread.0.avg",
        "payload[stress-ng].bogo_ops_per_s",
        "payload[hackbench].time_s",
    ] {
        assert!(shown.contains(needle), "{needle} in\n{shown}");
    }
    Ok(())
}

/// The result the guest reported for invocation `i`.
fn result(out: &RunOutcome, i: u32) -> Result<&PayloadResult, String> {
    out.collected
        .payload_results
        .iter()
        .find(|r| r.invocation == i)
        .ok_or_else(|| format!("no result for invocation {i}"))
}

#[ktstr_test(llcs = 1, cores = 2, memory_mib = 1024, duration_s = 8)]
fn payloads_eevdf(ctx: &TestCtx) -> Result<TestSpec, String> {
    let Some([cyc, stress, hb]) = payloads() else {
        // A spec with no work is refused before boot; say why instead.
        return Err("stress-ng or rt-tests is not installed (scripts/setup-host)".into());
    };
    // Where a payload runs: `cat /proc/self/cgroup` in the stress-ng cgroup.
    let cat = program("cat").ok_or("no cat")?;
    let whereami = Payload::new("whereami", cat)
        .args(["/proc/self/cgroup"])
        .cgroup("load");
    Ok(ctx
        .spec()
        .payload(cyc)
        .payload(stress)
        .payload(hb)
        .payload(whereami)
        .scenario(measure_under_load(&["whereami"]))
        .check(check_sidecar)
        .check(|out| {
            let r = result(out, 3)?;
            if r.name == "whereami" && r.stdout.trim() == "0::/ktstr/load" {
                Ok(())
            } else {
                Err(format!("whereami: {r:?}"))
            }
        }))
}

#[ktstr_test(
    llcs = 1,
    cores = 2,
    memory_mib = 1024,
    duration_s = 8,
    scheduler = "scx_bpfland"
)]
fn payloads_bpfland(ctx: &TestCtx) -> Result<TestSpec, String> {
    let Some([cyc, stress, hb]) = payloads() else {
        return Err("stress-ng or rt-tests is not installed (scripts/setup-host)".into());
    };
    Ok(ctx
        .spec()
        .payload(cyc)
        .payload(stress)
        .payload(hb)
        .scenario(measure_under_load(&[]))
        .check(check_sidecar)
        .check(|out| {
            let s = out.sidecar_as_written().map_err(|e| e.to_string())?;
            if s.scheduler == "scx_bpfland" && !s.verifier_stats.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "not under bpfland: {} {:?}",
                    s.scheduler, s.verifier_stats
                ))
            }
        }))
}

/// A check hackbench cannot meet (done in a microsecond), and hackbench declared as
/// printing JSON (it does not): the run fails, with the measured time and the first
/// lines of hackbench's output in the reasons, and passes as an expected failure.
#[test]
fn an_unmeetable_payload_check_fails_with_the_metric_value() {
    let Some(bin) = program("hackbench") else {
        return;
    };
    let Some(prereq) = common::prerequisites() else {
        return;
    };
    let args = ["-g", "1", "-f", "2", "-l", "50"];
    let fast = Payload::new("hackbench", &bin)
        .args(args)
        .line("time_s", r"^Time:\s*([0-9.]+)")
        .check(Check::Max {
            metric: "time_s".into(),
            max: 0.000001,
        });
    let json = Payload::new("hackbench_json", &bin).args(args).json();
    let mut req = common::request(
        "payload_unmeetable",
        "1n1l2c1t",
        Scenario::new(),
        5000,
        prereq,
    );
    // No scenario: the payloads run once each, in order.
    req.spec.scenario = None;
    req.payloads = vec![fast, json];
    req.expect_err = true;
    let r = common::run(&req);
    let s = &r.sidecar;
    assert!(s.is_pass() && s.expected_failure, "{}", common::explain(&r));
    assert_eq!(s.payload.as_deref(), Some("hackbench"));
    assert_eq!(s.metrics.len(), 2, "{:#?}", s.metrics);
    let time = s.metrics[0]
        .metric("time_s")
        .expect("time_s was read")
        .value;
    assert!(time > 0.000001);
    let details = &s.stats.verdict_details;
    let want = format!("payload hackbench #0: `time_s` = {time}, above the maximum 0.000001");
    assert!(
        details.iter().any(|d| d.contains(&want)),
        "{want} in {details:#?}"
    );
    let no_json = details
        .iter()
        .find(|d| d.contains("payload hackbench_json #1"))
        .expect("the JSON promise fails");
    assert!(
        no_json.contains("promised JSON but printed none"),
        "{no_json}"
    );
    assert!(no_json.contains("Running in process mode"), "{no_json}");
    // Both ran to completion: their exit codes are kept, and passed.
    assert!(s.metrics.iter().all(|m| m.exit_code == 0));
}

/// A payload the host cannot run never boots a VM.
#[test]
fn a_payload_that_cannot_run_is_rejected_before_boot() {
    let Some(prereq) = common::prerequisites() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let not_exec = dir.path().join("bench");
    std::fs::write(&not_exec, "#!/bin/sh\n").unwrap();
    for (payload, needle) in [
        (
            Payload::new("gone", "/nonexistent/bench"),
            "/nonexistent/bench",
        ),
        (Payload::new("bench", &not_exec), "not an executable"),
    ] {
        let mut req = common::request(
            "payload_rejected",
            "1n1l2c1t",
            Scenario::new(),
            1000,
            prereq.clone(),
        );
        req.spec.scenario = None;
        req.payloads = vec![payload];
        let e = ktstr::runner::run(&req).expect_err("rejected before boot");
        let e = format!("{e:#}");
        assert!(e.contains(needle), "{e}");
    }
}
