//! Host pauses: one probe thread per CPU, pinned to it and at real-time
//! priority where the system allows, wakes every millisecond and notes each
//! wake-up that came late. A real-time thread preempts broker and harness
//! at once, so a late one means its CPU ran nothing in user space at all:
//! the kernel or the hypervisor held it. e2e checks its slow messages
//! against these pauses, to tell a stall of the machine from one of brook.

use crate::cpu;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often each probe wakes.
const PERIOD: Duration = Duration::from_millis(1);
/// Lateness that counts as a pause.
const PAUSE: Duration = Duration::from_millis(2);

/// A stretch of time in which a CPU ran none of the probe: from when the
/// probe was due to when it ran (ns since the epoch, the clock e2e stamps
/// messages with).
#[derive(Debug, Clone, Copy)]
struct Pause {
    from_ns: u64,
    to_ns: u64,
}

/// The running probes.
pub struct Probe {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<(Vec<Pause>, bool)>>,
}

/// What the probes saw.
pub struct Pauses {
    /// Every CPU's pauses, merged where they overlap, in time order.
    merged: Vec<Pause>,
    count: usize,
    longest: Duration,
    cpus: usize,
    realtime: bool,
}

impl Probe {
    /// Starts one probe per CPU this process may run on.
    pub fn start() -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = cpu::allowed_cpus()
            .into_iter()
            .filter_map(|cpu| {
                let stop = stop.clone();
                std::thread::Builder::new().name(format!("pause-probe-{cpu}")).spawn(move || watch(cpu, &stop)).ok()
            })
            .collect();
        Probe { stop, threads }
    }

    /// Stops the probes and gathers what they saw.
    pub fn finish(self) -> Pauses {
        self.stop.store(true, Ordering::Relaxed);
        let cpus = self.threads.len();
        let mut all = Vec::new();
        let mut realtime = cpus > 0;
        for thread in self.threads {
            if let Ok((pauses, rt)) = thread.join() {
                all.extend(pauses);
                realtime &= rt;
            }
        }
        let count = all.len();
        let longest = all.iter().map(|p| Duration::from_nanos(p.to_ns - p.from_ns)).max().unwrap_or_default();
        all.sort_by_key(|p| p.from_ns);
        let mut merged: Vec<Pause> = Vec::with_capacity(all.len());
        for p in all {
            match merged.last_mut() {
                Some(last) if p.from_ns <= last.to_ns => last.to_ns = last.to_ns.max(p.to_ns),
                _ => merged.push(p),
            }
        }
        Pauses { merged, count, longest, cpus, realtime }
    }
}

impl Pauses {
    /// Whether some CPU paused between `from_ns` and `to_ns`.
    pub fn during(&self, from_ns: u64, to_ns: u64) -> bool {
        // The first pause ending at or after `from_ns` is the only candidate.
        let i = self.merged.partition_point(|p| p.to_ns < from_ns);
        self.merged.get(i).is_some_and(|p| p.from_ns <= to_ns)
    }

    /// The summary line.
    pub fn note(&self) -> (String, String) {
        let total: u64 = self.merged.iter().map(|p| p.to_ns - p.from_ns).sum();
        let probes =
            if self.realtime { "real-time probes" } else { "probes at normal priority (no real-time allowed)" };
        (
            "host pauses".to_string(),
            format!(
                "{} of ≥ {} ms on {} CPUs ({probes}), longest {:.1} ms, {:.0} ms in all",
                self.count,
                PAUSE.as_millis(),
                self.cpus,
                self.longest.as_secs_f64() * 1e3,
                total as f64 / 1e6
            ),
        )
    }
}

/// The probe loop of one CPU; returns its pauses and whether it ran at
/// real-time priority.
fn watch(cpu: usize, stop: &AtomicBool) -> (Vec<Pause>, bool) {
    cpu::pin_to(cpu);
    let realtime = make_realtime();
    let mut pauses = Vec::new();
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(PERIOD);
        let now = Instant::now();
        let late = now.saturating_duration_since(last + PERIOD);
        if late >= PAUSE {
            let to_ns = crate::load::now_ns();
            pauses.push(Pause { from_ns: to_ns.saturating_sub(late.as_nanos() as u64), to_ns });
        }
        last = now;
    }
    (pauses, realtime)
}

/// Moves the calling thread to SCHED_FIFO at the lowest real-time priority;
/// false where that is not permitted.
fn make_realtime() -> bool {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pauses(spans: &[(u64, u64)]) -> Pauses {
        Pauses {
            merged: spans.iter().map(|&(from_ns, to_ns)| Pause { from_ns, to_ns }).collect(),
            count: spans.len(),
            longest: Duration::ZERO,
            cpus: 2,
            realtime: true,
        }
    }

    #[test]
    fn a_span_is_during_a_pause_only_if_they_overlap() {
        let p = pauses(&[(100, 200), (500, 600)]);
        assert!(p.during(150, 160));
        assert!(p.during(50, 100));
        assert!(p.during(200, 300));
        assert!(p.during(0, 1000));
        assert!(!p.during(201, 499));
        assert!(!p.during(0, 99));
        assert!(!p.during(601, 700));
        assert!(!pauses(&[]).during(0, u64::MAX));
    }
}
