//! ktstr-stall: loads the embedded BPF scheduler (`src/bpf/stall.bpf.c`), attaches it,
//! and waits. With `--stall-after-s N` the BPF side stops dispatching N seconds after
//! attach, so the kernel's sched_ext watchdog ejects it after `--timeout-ms`.
//!
//! Exit codes: 0 after SIGINT/SIGTERM or `--seconds` (clean detach), 1 when it cannot
//! load or attach, 2 when the kernel ejected it (its exit reason is printed), 64 for bad
//! arguments.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use libbpf_rs::{MapCore, MapFlags, MapType, ObjectBuilder};

/// The BPF object, built by build.rs.
const BPF_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/stall.bpf.o"));

/// `struct sched_ext_ops` as declared in stall.bpf.c: three callbacks, `flags`,
/// `timeout_ms`, `name`.
const OPS_TIMEOUT_MS_OFFSET: usize = 32;
const OPS_NAME_OFFSET: usize = 36;
const OPS_NAME: &[u8] = b"ktstr_stall\0";
/// The kernel rejects a longer watchdog timeout (`SCX_WATCHDOG_MAX_TIMEOUT`).
const MAX_TIMEOUT_MS: u64 = 30_000;

/// `struct stall_state` in .bss: enqueued, dropped, exit_kind, exited, reason, msg.
const BSS_ENQUEUED: usize = 0;
const BSS_DROPPED: usize = 8;
const BSS_EXIT_KIND: usize = 16;
const BSS_EXITED: usize = 20;
const BSS_REASON: usize = 24;
const BSS_REASON_LEN: usize = 128;
const BSS_MSG: usize = BSS_REASON + BSS_REASON_LEN;
const BSS_MSG_LEN: usize = 1024;

const POLL: Duration = Duration::from_millis(100);
const STATE_PATH: &str = "/sys/kernel/sched_ext/state";
const OPS_PATH: &str = "/sys/kernel/sched_ext/root/ops";

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

const USAGE: &str = "\
usage: ktstr-stall [--stall-after-s N | --stall-after-ms N] [--timeout-ms N] [--seconds N]

  --stall-after-s N   stop dispatching N seconds after attach (watchdog ejects it)
  --stall-after-ms N  the same in milliseconds
  --timeout-ms N      sched_ext watchdog timeout, 1..=30000 (default: kernel's, 30 s)
  --seconds N         detach and exit 0 after N seconds (default: run until SIGINT)
  --version, --help";

#[derive(Debug, Default, PartialEq, Eq)]
struct Args {
    stall_after: Option<Duration>,
    timeout_ms: Option<u32>,
    run_for: Option<Duration>,
}

enum Cli {
    Run(Args),
    Print(String),
}

fn parse_args(argv: &[String]) -> Result<Cli, String> {
    let mut args = Args::default();
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let v = it.next().ok_or_else(|| format!("{name} needs a value"))?;
            v.parse::<u64>()
                .map_err(|_| format!("{name} {v}: not a non-negative integer"))
        };
        match a.as_str() {
            "--stall-after-s" => args.stall_after = Some(Duration::from_secs(value(a)?)),
            "--stall-after-ms" => args.stall_after = Some(Duration::from_millis(value(a)?)),
            "--timeout-ms" => {
                let ms = value(a)?;
                if ms == 0 || ms > MAX_TIMEOUT_MS {
                    return Err(format!(
                        "--timeout-ms {ms}: must be 1..={MAX_TIMEOUT_MS} (the kernel's limit)"
                    ));
                }
                args.timeout_ms = Some(ms as u32);
            }
            "--seconds" => args.run_for = Some(Duration::from_secs(value(a)?)),
            "--help" | "-h" => return Ok(Cli::Print(USAGE.into())),
            "--version" | "-V" => {
                return Ok(Cli::Print(format!(
                    "ktstr-stall {}",
                    env!("CARGO_PKG_VERSION")
                )))
            }
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    Ok(Cli::Run(args))
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(Cli::Run(a)) => a,
        Ok(Cli::Print(text)) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ktstr-stall: {e}");
            return ExitCode::from(64);
        }
    };
    match run(&args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("ktstr-stall: {e}");
            ExitCode::from(1)
        }
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn sysfs(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("<{e}>"))
}

fn run(args: &Args) -> Result<u8, String> {
    let mut builder = ObjectBuilder::default();
    let mut open = builder
        .open_memory(BPF_OBJECT)
        .map_err(|e| format!("opening the embedded BPF object: {e}"))?;

    for mut map in open.maps_mut() {
        if map.map_type() == MapType::StructOps {
            let data = map
                .initial_value_mut()
                .ok_or("the struct_ops map has no initial value")?;
            let name_ok = data
                .get(OPS_NAME_OFFSET..OPS_NAME_OFFSET + OPS_NAME.len())
                .is_some_and(|n| n == OPS_NAME);
            if !name_ok {
                return Err(
                    "struct sched_ext_ops in stall.bpf.c no longer matches the offsets in main.rs"
                        .into(),
                );
            }
            if let Some(ms) = args.timeout_ms {
                data[OPS_TIMEOUT_MS_OFFSET..OPS_TIMEOUT_MS_OFFSET + 4]
                    .copy_from_slice(&ms.to_ne_bytes());
            }
        }
    }

    let mut obj = open.load().map_err(|e| {
        format!(
            "loading the BPF scheduler: {e} (does this kernel have CONFIG_SCHED_CLASS_EXT and BTF?)"
        )
    })?;
    let mut links = Vec::new();
    for mut map in obj.maps_mut() {
        if map.map_type() == MapType::StructOps {
            let link = map
                .attach_struct_ops()
                .map_err(|e| format!("attaching the scheduler: {e}"))?;
            links.push(link);
        }
    }
    if links.is_empty() {
        return Err("the BPF object has no struct_ops map".into());
    }
    // The stall clock starts once attached, however long loading took.
    if let Some(after) = args.stall_after {
        let at = monotonic_ns() + after.as_nanos() as u64;
        let map = obj
            .maps()
            .find(|m| m.name().to_string_lossy().ends_with(".data.stall"))
            .ok_or("the BPF object has no .data.stall map")?;
        map.update(&0u32.to_ne_bytes(), &at.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| format!("setting the stall time: {e}"))?;
    }

    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    println!(
        "ktstr-stall: attached: state={} ops={} timeout_ms={} stall_after={}",
        sysfs(STATE_PATH),
        sysfs(OPS_PATH),
        args.timeout_ms
            .map_or_else(|| "kernel default".into(), |t| t.to_string()),
        args.stall_after
            .map_or_else(|| "never".into(), |d| format!("{} ms", d.as_millis()))
    );

    let started = Instant::now();
    let code = loop {
        std::thread::sleep(POLL);
        if STOP.load(Ordering::SeqCst) {
            break 0;
        }
        if args.run_for.is_some_and(|d| started.elapsed() >= d) {
            break 0;
        }
        let state = sysfs(STATE_PATH);
        if state != "enabled" {
            println!("ktstr-stall: no longer enabled (state={state})");
            break 2;
        }
    };
    drop(links);
    let bss = obj
        .maps()
        .find(|m| m.name().to_string_lossy().ends_with(".bss"))
        .and_then(|m| m.lookup(&0u32.to_ne_bytes(), MapFlags::ANY).ok().flatten());
    match bss {
        Some(b) => println!("ktstr-stall: {}", describe_state(&b)),
        None => println!("ktstr-stall: could not read the scheduler's state map"),
    }
    println!("ktstr-stall: detached: state={}", sysfs(STATE_PATH));
    Ok(code)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    b.get(off..off + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_ne_bytes)
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_ne_bytes)
}

fn cstr_at(b: &[u8], off: usize, len: usize) -> String {
    let s = b.get(off..(off + len).min(b.len())).unwrap_or(&[]);
    let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
    String::from_utf8_lossy(&s[..end]).into_owned()
}

/// The .bss record as one line: counters and, once the kernel called ops.exit, why.
fn describe_state(b: &[u8]) -> String {
    let counters = format!(
        "enqueued={} dropped={}",
        u64_at(b, BSS_ENQUEUED),
        u64_at(b, BSS_DROPPED)
    );
    if u32_at(b, BSS_EXITED) == 0 {
        return format!("{counters}; ops.exit not called yet");
    }
    format!(
        "{counters}; EXIT kind={} reason=\"{}\" msg=\"{}\"",
        u32_at(b, BSS_EXIT_KIND) as i32,
        cstr_at(b, BSS_REASON, BSS_REASON_LEN),
        cstr_at(b, BSS_MSG, BSS_MSG_LEN)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_the_flags() {
        let Ok(Cli::Run(a)) = parse_args(&argv(&[
            "--stall-after-s",
            "2",
            "--timeout-ms",
            "3000",
            "--seconds",
            "9",
        ])) else {
            panic!("expected run args");
        };
        assert_eq!(
            a,
            Args {
                stall_after: Some(Duration::from_secs(2)),
                timeout_ms: Some(3000),
                run_for: Some(Duration::from_secs(9)),
            }
        );
    }

    #[test]
    fn rejects_bad_values() {
        for bad in [
            &["--timeout-ms", "0"][..],
            &["--timeout-ms", "30001"],
            &["--stall-after-s"],
            &["--stall-after-s", "-1"],
            &["--frobnicate"],
        ] {
            assert!(parse_args(&argv(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn describes_the_exit_record() {
        let mut b = vec![0u8; BSS_MSG + BSS_MSG_LEN];
        b[BSS_ENQUEUED..BSS_ENQUEUED + 8].copy_from_slice(&5u64.to_ne_bytes());
        assert!(describe_state(&b).contains("not called yet"));
        b[BSS_EXIT_KIND..BSS_EXIT_KIND + 4].copy_from_slice(&1025u32.to_ne_bytes());
        b[BSS_EXITED..BSS_EXITED + 4].copy_from_slice(&1u32.to_ne_bytes());
        b[BSS_REASON..BSS_REASON + 19].copy_from_slice(b"runnable task stall");
        let d = describe_state(&b);
        assert!(d.contains("enqueued=5"), "{d}");
        assert!(d.contains("kind=1025"), "{d}");
        assert!(d.contains("reason=\"runnable task stall\""), "{d}");
    }
}
