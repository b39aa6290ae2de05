//! Work types that run several threads inside one worker: a futex lock convoy, a
//! yielding spin lock, a timer storm, thread create/join churn, a thread per burst and
//! an epoll request/response server.
//!
//! The worker's own thread takes part like any other and checkpoints its own units;
//! the helper threads count theirs in a shared counter that is added to the worker's
//! at the end, and hand back the latency samples they took.

use std::collections::VecDeque;
use std::hint::black_box;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ktstr_wire::msg::MAX_LATENCY_SAMPLES;

use super::{
    futex_wake, mono_ns, read_stamp, spin, timed_sleep, write_stamp, Meter, SHORT_SPIN, WAIT_SLICE,
};

/// What the threads of one worker share.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    /// Units completed by the helper threads.
    units: AtomicU64,
}

/// Latency samples a helper thread keeps (the first ones; the worker's reservoir then
/// samples them with its own).
#[derive(Default)]
struct Samples(Vec<u64>);

impl Samples {
    fn push(&mut self, v: u64) {
        if self.0.len() < MAX_LATENCY_SAMPLES {
            self.0.push(v);
        }
    }
}

/// Helper threads and what they share; [`Crew::finish`] stops and joins them and
/// moves their units and samples into the meter.
struct Crew {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<(Samples, Samples)>>,
}

impl Crew {
    fn new() -> Self {
        Self {
            shared: Arc::new(Shared::default()),
            threads: Vec::new(),
        }
    }

    /// Starts a helper; `body` returns its (wake, timer) samples.
    fn spawn(
        &mut self,
        m: &mut Meter,
        body: impl FnOnce(&Shared) -> (Samples, Samples) + Send + 'static,
    ) -> bool {
        let shared = Arc::clone(&self.shared);
        match std::thread::Builder::new().spawn(move || body(&shared)) {
            Ok(h) => {
                self.threads.push(h);
                true
            }
            Err(e) => {
                m.error(format!("starting a thread: {e}"));
                false
            }
        }
    }

    fn finish(self, m: &mut Meter) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for h in self.threads {
            match h.join() {
                Ok((wake, timer)) => {
                    wake.0.into_iter().for_each(|v| m.wake_latency(v));
                    timer.0.into_iter().for_each(|v| m.timer_latency(v));
                }
                Err(_) => m.error("a helper thread panicked".into()),
            }
        }
        m.add_units(self.shared.units.load(Ordering::Relaxed));
    }
}

/// Spins for about `d`.
fn spin_for(x: u64, d: Duration) -> u64 {
    let until = Instant::now() + d;
    let mut x = x;
    while Instant::now() < until {
        x = spin(x, 64);
    }
    x
}

/// FUTEX_WAIT that says whether it was woken (0) rather than timed out or refused.
fn futex_wait_woken(word: &AtomicU32, expected: u32, timeout: Duration) -> bool {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT on a live, aligned u32 with a relative timeout; it returns at
    // once if the word no longer holds `expected`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        )
    };
    r == 0
}

/// A futex mutex (Drepper's three states: 0 free, 1 taken, 2 taken with waiters) that
/// stamps each release so a woken waiter can measure its wake latency.
#[derive(Default)]
pub struct FutexLock {
    state: AtomicU32,
    released_at_ns: AtomicU64,
}

impl FutexLock {
    /// Takes the lock; `Err(())` when `stop()` said so while waiting. Wake latencies
    /// (release stamp to running again after a futex wake) go to `lat`.
    fn lock(&self, stop: impl Fn() -> bool, mut lat: impl FnMut(u64)) -> Result<(), ()> {
        if self
            .state
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return Ok(());
        }
        while self.state.swap(2, Ordering::Acquire) != 0 {
            if futex_wait_woken(&self.state, 2, WAIT_SLICE) {
                lat(mono_ns().saturating_sub(self.released_at_ns.load(Ordering::Relaxed)));
            }
            if stop() {
                return Err(());
            }
        }
        Ok(())
    }

    fn unlock(&self) {
        self.released_at_ns.store(mono_ns(), Ordering::Relaxed);
        if self.state.swap(0, Ordering::Release) == 2 {
            futex_wake(&self.state);
        }
    }
}

/// `LockConvoy`: `threads` threads (this one included) take one futex lock in turn and
/// spin `hold_us` holding it.
pub fn lock_convoy(m: &mut Meter, threads: u32, hold_us: u32) {
    let hold = Duration::from_micros(u64::from(hold_us));
    let lock = Arc::new(FutexLock::default());
    let mut crew = Crew::new();
    for _ in 1..threads {
        let lock = Arc::clone(&lock);
        crew.spawn(m, move |sh| {
            let mut wake = Samples::default();
            let mut x = 1u64;
            while lock
                .lock(|| sh.stop.load(Ordering::Relaxed), |v| wake.push(v))
                .is_ok()
            {
                x = spin_for(x, hold);
                lock.unlock();
                sh.units.fetch_add(1, Ordering::Relaxed);
                if sh.stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            black_box(x);
            (wake, Samples::default())
        });
    }
    let stop = Arc::clone(&crew.shared);
    let mut x = 1u64;
    loop {
        let began = Instant::now();
        let mut lat = Vec::new();
        // The runtime's stop request is looked at while waiting too: the other
        // threads can keep taking the lock (barging) long enough to starve this one
        // past the runtime's grace.
        let stopping = || stop.stop.load(Ordering::Relaxed) || m.should_stop();
        if lock.lock(stopping, |v| lat.push(v)).is_err() {
            break;
        }
        // Waiting for the lock is the point of the convoy, not a stall of this worker.
        m.rested(began.elapsed());
        lat.into_iter().for_each(|v| m.wake_latency(v));
        x = spin_for(x, hold);
        lock.unlock();
        m.checkpoint();
        if m.should_stop() {
            break;
        }
    }
    black_box(x);
    crew.finish(m);
}

/// `YieldSpinLock`: `threads` threads take a spin lock, hold it for a short spin and
/// call `sched_yield` while another holds it.
pub fn yield_spin_lock(m: &mut Meter, threads: u32) {
    let lock = Arc::new(AtomicBool::new(false));
    fn take(lock: &AtomicBool, stop: impl Fn() -> bool) -> bool {
        while lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            if stop() {
                return false;
            }
            nix::sched::sched_yield().ok();
        }
        true
    }
    let mut crew = Crew::new();
    for _ in 1..threads {
        let lock = Arc::clone(&lock);
        crew.spawn(m, move |sh| {
            let mut x = 1u64;
            while take(&lock, || sh.stop.load(Ordering::Relaxed)) {
                x = spin(x, SHORT_SPIN);
                lock.store(false, Ordering::Release);
                sh.units.fetch_add(1, Ordering::Relaxed);
                if sh.stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            black_box(x);
            Default::default()
        });
    }
    let mut x = 1u64;
    loop {
        // Waiting, too, looks at the stop request: the others may hold on to the lock
        // long enough to starve this thread past the runtime's grace.
        if !take(&lock, || m.should_stop()) {
            break;
        }
        x = spin(x, SHORT_SPIN);
        lock.store(false, Ordering::Release);
        m.checkpoint();
        if m.should_stop() {
            break;
        }
    }
    black_box(x);
    crew.finish(m);
}

/// One relative `clock_nanosleep`; returns how late it ended.
fn short_sleep(d: Duration) -> u64 {
    let target = mono_ns().saturating_add(super::ns(d));
    super::sleep_until_mono_ns(target);
    mono_ns().saturating_sub(target)
}

/// `TimerStorm`: `threads` threads (this one included) sleep `interval_us` over and
/// over.
pub fn timer_storm(m: &mut Meter, threads: u32, interval_us: u32) {
    let d = Duration::from_micros(u64::from(interval_us));
    let mut crew = Crew::new();
    for _ in 1..threads {
        crew.spawn(m, move |sh| {
            let mut timer = Samples::default();
            while !sh.stop.load(Ordering::Relaxed) {
                timer.push(short_sleep(d));
                sh.units.fetch_add(1, Ordering::Relaxed);
            }
            (Samples::default(), timer)
        });
    }
    loop {
        if !timed_sleep(m, d) {
            break;
        }
        m.checkpoint();
        if m.should_stop() {
            break;
        }
    }
    crew.finish(m);
}

/// `ThreadChurn`: create a thread that returns at once and join it.
pub fn thread_churn(m: &mut Meter) {
    loop {
        match std::thread::Builder::new().spawn(|| black_box(1u64)) {
            Ok(h) => {
                if h.join().is_err() {
                    m.error("ThreadChurn: a thread panicked".into());
                    break;
                }
            }
            Err(e) => {
                m.error(format!("ThreadChurn: starting a thread: {e}"));
                break;
            }
        }
        m.checkpoint();
        if m.should_stop() {
            break;
        }
    }
}

/// `ThreadBurst`: every `gap_ms` a new thread spins `burst_us` and exits; the time from
/// the spawn call to the thread running is a wake latency.
pub fn thread_burst(m: &mut Meter, burst_us: u32, gap_ms: u32) {
    let burst = Duration::from_micros(u64::from(burst_us));
    let gap = Duration::from_millis(u64::from(gap_ms));
    loop {
        let asked = mono_ns();
        let h = std::thread::Builder::new().spawn(move || {
            let started = mono_ns().saturating_sub(asked);
            black_box(spin_for(started | 1, burst));
            started
        });
        match h.map(JoinHandle::join) {
            Ok(Ok(lat)) => m.wake_latency(lat),
            Ok(Err(_)) => {
                m.error("ThreadBurst: a burst thread panicked".into());
                break;
            }
            Err(e) => {
                m.error(format!("ThreadBurst: starting a thread: {e}"));
                break;
            }
        }
        m.checkpoint();
        if m.should_stop() || !timed_sleep(m, gap) {
            break;
        }
    }
}

/// A connected pair of Unix stream sockets.
pub fn socket_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fills two descriptors on success, which are then owned here.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The request queue between the epoll thread and the pool: (client, request stamp).
#[derive(Default)]
struct Queue {
    items: Mutex<VecDeque<(usize, u64)>>,
    ready: Condvar,
}

/// One request of a client: send a stamp, wait for the reply; the round trip, or None
/// when it should stop or the server is gone.
fn request(stop: &dyn Fn() -> bool, fd: &OwnedFd) -> Option<u64> {
    let sent = mono_ns();
    if !write_stamp(fd, sent) {
        return None;
    }
    loop {
        let mut fds = [nix::poll::PollFd::new(
            fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let slice = nix::poll::PollTimeout::try_from(WAIT_SLICE.as_millis() as i32)
            .unwrap_or(nix::poll::PollTimeout::MAX);
        match nix::poll::poll(&mut fds, slice) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => {}
            Ok(_) => break,
            Err(_) => return None,
        }
        if stop() {
            return None;
        }
    }
    read_stamp(fd).map(|_| mono_ns().saturating_sub(sent))
}

/// `EpollServer`: `clients` client threads (this one is client 0) send requests over
/// Unix sockets to one epoll thread, which queues them for `pool` threads that spin
/// `work_us` and reply.
pub fn epoll_server(m: &mut Meter, clients: u32, pool: u32, work_us: u32) {
    let work = Duration::from_micros(u64::from(work_us));
    let mut client_ends = Vec::new();
    let mut server_ends = Vec::new();
    for _ in 0..clients {
        match socket_pair() {
            Ok((c, s)) => {
                client_ends.push(c);
                server_ends.push(s);
            }
            Err(e) => {
                m.error(format!("EpollServer: socketpair: {e}"));
                return;
            }
        }
    }
    // SAFETY: creates a new epoll descriptor, owned below.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        m.error(format!(
            "EpollServer: epoll_create1: {}",
            std::io::Error::last_os_error()
        ));
        return;
    }
    // SAFETY: `ep` is a fresh descriptor owned by nothing else.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    for (i, s) in server_ends.iter().enumerate() {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        // SAFETY: registers a live descriptor with a valid event.
        if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev) }
            != 0
        {
            m.error(format!(
                "EpollServer: epoll_ctl: {}",
                std::io::Error::last_os_error()
            ));
            return;
        }
    }
    let server_ends = Arc::new(server_ends);
    let queue = Arc::new(Queue::default());
    let mut crew = Crew::new();
    // The epoll thread: read requests, queue them.
    {
        let server_ends = Arc::clone(&server_ends);
        let queue = Arc::clone(&queue);
        crew.spawn(m, move |sh| {
            let mut events = [libc::epoll_event { events: 0, u64: 0 }; 16];
            while !sh.stop.load(Ordering::Relaxed) {
                // SAFETY: waits on a live epoll descriptor into a buffer of 16 events.
                let n = unsafe {
                    libc::epoll_wait(
                        ep.as_raw_fd(),
                        events.as_mut_ptr(),
                        events.len() as i32,
                        WAIT_SLICE.as_millis() as i32,
                    )
                };
                for ev in events.iter().take(n.max(0) as usize) {
                    let i = ev.u64 as usize;
                    let Some(stamp) = server_ends.get(i).and_then(read_stamp) else {
                        return Default::default();
                    };
                    if let Ok(mut q) = queue.items.lock() {
                        q.push_back((i, stamp));
                    }
                    queue.ready.notify_one();
                }
            }
            Default::default()
        });
    }
    // The pool: take a request, work, reply.
    for _ in 0..pool {
        let server_ends = Arc::clone(&server_ends);
        let queue = Arc::clone(&queue);
        crew.spawn(m, move |sh| {
            let mut x = 1u64;
            while !sh.stop.load(Ordering::Relaxed) {
                let item = {
                    let Ok(mut q) = queue.items.lock() else { break };
                    if q.is_empty() {
                        q = match queue.ready.wait_timeout(q, WAIT_SLICE) {
                            Ok((q, _)) => q,
                            Err(_) => break,
                        };
                    }
                    q.pop_front()
                };
                if let Some((i, stamp)) = item {
                    x = spin_for(x, work);
                    if let Some(fd) = server_ends.get(i) {
                        write_stamp(fd, stamp);
                    }
                }
            }
            black_box(x);
            Default::default()
        });
    }
    // Clients 1..: count units and keep round trips.
    let mut ends = client_ends.into_iter();
    let mine = ends.next();
    for fd in ends {
        crew.spawn(m, move |sh| {
            let mut wake = Samples::default();
            let stop = || sh.stop.load(Ordering::Relaxed);
            while let Some(rt) = request(&stop, &fd) {
                wake.push(rt);
                sh.units.fetch_add(1, Ordering::Relaxed);
            }
            (wake, Samples::default())
        });
    }
    if let Some(fd) = mine {
        loop {
            let began = Instant::now();
            let Some(rt) = request(&|| m.should_stop(), &fd) else {
                break;
            };
            m.rested(began.elapsed());
            m.wake_latency(rt);
            m.checkpoint();
            if m.should_stop() {
                break;
            }
        }
    }
    crew.finish(m);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter(ms: u64) -> Meter {
        let now = Instant::now();
        Meter::new(None, now, now + Duration::from_millis(ms))
    }

    #[test]
    fn lock_convoy_counts_every_thread_and_measures_wake_latency() {
        let mut m = meter(60);
        lock_convoy(&mut m, 3, 20);
        let r = m.into_report("t", 0, "LockConvoy");
        assert!(r.work_units > 3 && r.errors.is_empty(), "{r:?}");
        assert!(r.wake_samples_total > 0, "{r:?}");
    }

    #[test]
    fn yield_spin_lock_counts_every_thread() {
        let mut m = meter(40);
        yield_spin_lock(&mut m, 3);
        let r = m.into_report("t", 0, "YieldSpinLock");
        assert!(r.work_units > 3 && r.errors.is_empty(), "{r:?}");
    }

    #[test]
    fn timer_storm_measures_every_thread() {
        let mut m = meter(40);
        timer_storm(&mut m, 4, 100);
        let r = m.into_report("t", 0, "TimerStorm");
        assert!(r.work_units > 4 && r.timer_samples_total > 4, "{r:?}");
    }

    #[test]
    fn thread_churn_and_bursts_make_progress() {
        let mut m = meter(30);
        thread_churn(&mut m);
        assert!(m.units > 0);

        let mut m = meter(40);
        thread_burst(&mut m, 200, 2);
        let r = m.into_report("t", 0, "ThreadBurst");
        assert!(r.work_units > 0 && r.wake_samples_total > 0, "{r:?}");
    }

    #[test]
    fn epoll_server_answers_every_client() {
        let mut m = meter(60);
        epoll_server(&mut m, 3, 2, 20);
        let r = m.into_report("t", 0, "EpollServer");
        assert!(r.work_units > 3 && r.errors.is_empty(), "{r:?}");
        assert!(r.wake_samples_total >= r.work_units / 2, "{r:?}");
    }
}
