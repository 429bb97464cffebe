//! The `wake` scenario: what this host charges for waking a sleeping
//! thread, the step every request takes a few times inside a broker
//! (connection thread → writer thread → connection thread). Two threads
//! hand a turn back and forth, each asleep on a futex until the other wakes
//! it: first both on one CPU, then on two. On a virtual machine that halts
//! an idle virtual CPU, the second case pays for waking the CPU as well as
//! the thread. No broker is involved.

use crate::cpu;
use crate::stats::{self, new_histogram, Summary};
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Round trips when `--messages` is not given.
pub const DEFAULT_ROUND_TRIPS: u64 = 100_000;

/// Whose turn it is: the measuring thread's or its partner's.
const MINE: u32 = 0;
const YOURS: u32 = 1;

/// One run of the ping-pong.
struct PingPong {
    elapsed: Duration,
    cpu: Duration,
    hist: Histogram<u64>,
}

/// Hands the turn back and forth `round_trips` times between two new
/// threads, on `here` and `there` (the same CPU or two).
fn ping_pong(round_trips: u64, here: usize, there: usize) -> Result<PingPong, String> {
    std::thread::Builder::new()
        .name("wake-measure".into())
        .spawn(move || measure(round_trips, here, there))
        .map_err(|e| format!("start the measuring thread: {e}"))?
        .join()
        .map_err(|_| "the measuring thread panicked".to_string())?
}

/// The measuring side of [`ping_pong`], on its own thread.
fn measure(round_trips: u64, here: usize, there: usize) -> Result<PingPong, String> {
    cpu::pin_to(here);
    let turn = Arc::new(AtomicU32::new(MINE));
    let stop = Arc::new(AtomicBool::new(false));
    let me = std::thread::current();
    let partner = {
        let (turn, stop) = (turn.clone(), stop.clone());
        std::thread::Builder::new()
            .name("wake-partner".into())
            .spawn(move || {
                cpu::pin_to(there);
                let cpu_start = cpu::thread_time();
                loop {
                    while turn.load(Ordering::Acquire) != YOURS {
                        if stop.load(Ordering::Acquire) {
                            return cpu::thread_time().saturating_sub(cpu_start);
                        }
                        std::thread::park();
                    }
                    turn.store(MINE, Ordering::Release);
                    me.unpark();
                }
            })
            .map_err(|e| format!("start the partner thread: {e}"))?
    };
    let mut hist = new_histogram();
    let (start, cpu_start) = (Instant::now(), cpu::thread_time());
    for _ in 0..round_trips {
        let sent = Instant::now();
        turn.store(YOURS, Ordering::Release);
        partner.thread().unpark();
        while turn.load(Ordering::Acquire) != MINE {
            std::thread::park();
        }
        stats::record_ns(&mut hist, sent.elapsed().as_nanos() as u64);
    }
    let (elapsed, mine) = (start.elapsed(), cpu::thread_time().saturating_sub(cpu_start));
    stop.store(true, Ordering::Release);
    partner.thread().unpark();
    let theirs = partner.join().map_err(|_| "the partner thread panicked".to_string())?;
    Ok(PingPong { elapsed, cpu: mine + theirs, hist })
}

/// The cost of one system call that does no work (`getppid`), in ns.
fn syscall_ns() -> f64 {
    const CALLS: u32 = 1_000_000;
    let start = Instant::now();
    for _ in 0..CALLS {
        // SAFETY: getppid takes no arguments and cannot fail.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    start.elapsed().as_nanos() as f64 / f64::from(CALLS)
}

/// A summary line for one case: wall time and CPU per round trip
/// (`round_trips` is at least 1, as [`run`] makes it).
fn describe(run: &PingPong, round_trips: u64) -> String {
    let per = |d: Duration| d.as_secs_f64() * 1e6 / round_trips as f64;
    format!(
        "{:.1} µs per round trip (p50 {} µs), {:.1} µs of CPU",
        per(run.elapsed),
        run.hist.value_at_quantile(0.5),
        per(run.cpu)
    )
}

/// Runs the scenario. Its throughput and latency are those of the two-CPU
/// case (the one-CPU case where only one CPU is allowed).
pub fn run(round_trips: u64) -> Result<Summary, String> {
    let round_trips = round_trips.max(1);
    let cpus = cpu::allowed_cpus();
    let first = cpus.first().copied().ok_or("no CPU is allowed to this process")?;
    let same = ping_pong(round_trips, first, first)?;
    let mut notes = vec![("one CPU".to_string(), describe(&same, round_trips))];
    let measured = match cpus.get(1) {
        Some(&second) => {
            let apart = ping_pong(round_trips, first, second)?;
            notes.push(("two CPUs".to_string(), describe(&apart, round_trips)));
            apart
        }
        None => {
            notes.push(("two CPUs".to_string(), "not measured: one CPU allowed".to_string()));
            same
        }
    };
    notes.push(("syscall".to_string(), format!("{:.0} ns (getppid)", syscall_ns())));
    Ok(Summary {
        scenario: "wake".into(),
        messages: round_trips,
        bytes: 0,
        errors: 0,
        elapsed: measured.elapsed,
        hist: measured.hist,
        latency_of: "round trip",
        fields: Vec::new(),
        notes,
    })
}
