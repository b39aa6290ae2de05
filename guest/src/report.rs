//! The runtime's channel to the host: the ring writer (once the region is mapped) and the
//! console (stderr, prefixed `ktstr-guest:`). Without a ring, messages go to the console
//! as JSON lines so a manual boot still shows them.
//!
//! Only the runtime process writes frames: forked workers mark themselves with
//! [`enter_worker`] and fall back to the console.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ktstr_wire::msg::{GuestMsg, LogLevel};
use ktstr_wire::{encode_msg, Kind, OutputStream, SharedMem, TryWriteError, Writer};

static RING: Mutex<Option<Writer>> = Mutex::new(None);
/// The mapped region, for lock-free stop checks (also in forked workers).
static SHM: OnceLock<SharedMem> = OnceLock::new();
static IN_WORKER: AtomicBool = AtomicBool::new(false);
static START: OnceLock<Instant> = OnceLock::new();

/// Longest log text sent in one frame; the rest is cut (the console gets it all).
const MAX_LOG_TEXT: usize = 16 * 1024;
/// Output chunk per frame.
const OUTPUT_CHUNK: usize = 16 * 1024;
/// Pause between retries while the host drains a full ring.
const RING_FULL_PAUSE: Duration = Duration::from_micros(200);

/// Marks the runtime's start; [`elapsed_ms`] counts from here.
pub fn mark_start() {
    START.get_or_init(Instant::now);
}

pub fn elapsed_ms() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Attaches the writer to the host's region.
pub fn attach(shm: &SharedMem) -> Result<(), ktstr_wire::WireError> {
    let w = Writer::attach(shm)?;
    let _ = SHM.set(shm.clone());
    *lock() = Some(w);
    Ok(())
}

pub fn ring_attached() -> bool {
    SHM.get().is_some()
}

/// Called in a freshly forked worker: never touch the ring from there.
pub fn enter_worker() {
    IN_WORKER.store(true, Ordering::Relaxed);
}

pub fn in_worker() -> bool {
    IN_WORKER.load(Ordering::Relaxed)
}

/// True once the host asked the guest to stop.
pub fn stop_requested() -> bool {
    SHM.get().is_some_and(ktstr_wire::stop_requested)
}

fn lock() -> std::sync::MutexGuard<'static, Option<Writer>> {
    // A panic while holding the lock leaves a consistent writer (frames are published
    // atomically), so a poisoned lock is still usable.
    RING.lock().unwrap_or_else(|p| p.into_inner())
}

fn console(line: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "ktstr-guest: {line}");
}

/// Writes one frame, waiting while the ring is full. Returns false when there is no ring
/// (or this is a worker), so the caller can use the console instead.
fn write_frame(kind: Kind, payload: &[u8]) -> bool {
    if in_worker() {
        return false;
    }
    let mut guard = lock();
    let Some(w) = guard.as_mut() else {
        return false;
    };
    match w.write(kind, payload, || std::thread::sleep(RING_FULL_PAUSE)) {
        Ok(()) => true,
        // Only TooLarge: `write` retries while the ring is full.
        Err(e) => {
            drop(guard);
            console(&format!(
                "dropping a {kind} frame the ring cannot carry: {e}"
            ));
            true
        }
    }
}

/// Largest message the ring carries in one frame (the message limit without a ring).
pub fn max_msg_bytes() -> usize {
    let ring = lock()
        .as_ref()
        .map_or(u64::MAX, ktstr_wire::Writer::max_payload);
    usize::try_from(ring)
        .unwrap_or(usize::MAX)
        .min(ktstr_wire::msg::MAX_MSG_BYTES)
}

/// Sends a message to the host (console JSON line without a ring).
pub fn send(msg: &GuestMsg) {
    let payload = encode_msg(msg);
    if !write_frame(Kind::MSG, &payload) {
        console(&format!("msg {}", String::from_utf8_lossy(&payload)));
    }
}

/// Streams program output to the host, in chunks (straight to our own stdio without a
/// ring).
pub fn send_output(stream: OutputStream, bytes: &[u8]) {
    for chunk in bytes.chunks(OUTPUT_CHUNK) {
        if !write_frame(Kind::OUTPUT, &stream.encode(chunk)) {
            let _ = match stream {
                OutputStream::Stdout => std::io::stdout().lock().write_all(chunk),
                _ => std::io::stderr().lock().write_all(chunk),
            };
        }
    }
}

/// A log line: always on the console, and as a Log message when the ring is attached.
pub fn log(level: LogLevel, text: String) {
    let tag = match level {
        LogLevel::Error => "error: ",
        LogLevel::Warn => "warning: ",
        LogLevel::Info | LogLevel::Debug => "",
    };
    console(&format!("{tag}{text}"));
    if in_worker() || !ring_attached() {
        return;
    }
    let mut text = text;
    if text.len() > MAX_LOG_TEXT {
        let mut cut = MAX_LOG_TEXT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str(" [truncated]");
    }
    let payload = encode_msg(&GuestMsg::Log { level, text });
    write_frame(Kind::MSG, &payload);
}

/// Best effort for the panic hook: never blocks on the lock (the panicking thread may
/// hold it) and gives up after a bounded number of tries if the ring stays full.
pub fn send_from_panic(msg: &GuestMsg) {
    if in_worker() {
        return;
    }
    let Ok(mut guard) = RING.try_lock().or_else(|e| match e {
        std::sync::TryLockError::Poisoned(p) => Ok(p.into_inner()),
        std::sync::TryLockError::WouldBlock => Err(()),
    }) else {
        console("(panic not sent on the ring: the writer was busy)");
        return;
    };
    let Some(w) = guard.as_mut() else { return };
    let payload = encode_msg(msg);
    for _ in 0..10_000 {
        match w.try_write(Kind::MSG, &payload) {
            Err(TryWriteError::Full { .. }) => std::thread::sleep(RING_FULL_PAUSE),
            _ => return,
        }
    }
    console("(panic not sent on the ring: it stayed full)");
}

macro_rules! log_info {
    ($($a:tt)*) => { $crate::report::log(ktstr_wire::msg::LogLevel::Info, format!($($a)*)) };
}
macro_rules! log_warn {
    ($($a:tt)*) => { $crate::report::log(ktstr_wire::msg::LogLevel::Warn, format!($($a)*)) };
}
macro_rules! log_error {
    ($($a:tt)*) => { $crate::report::log(ktstr_wire::msg::LogLevel::Error, format!($($a)*)) };
}
pub(crate) use {log_error, log_info, log_warn};
