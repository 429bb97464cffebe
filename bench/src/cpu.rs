//! CPU time of processes over a run, from `/proc/<pid>/stat`: how much of
//! the two processes sharing the machine one message costs, which tells a
//! run bound by CPU from one bound by waiting. And the CPU time a
//! hypervisor took from this machine over the run, from `/proc/stat`. And
//! which CPUs a thread may run on.

/// A process's CPU time when the run began.
#[derive(Debug, Clone, Copy)]
pub struct CpuClock {
    pid: u32,
    ticks: u64,
}

impl CpuClock {
    /// Starts measuring process `pid` (None if it cannot be read).
    pub fn of(pid: u32) -> Option<CpuClock> {
        Some(CpuClock { pid, ticks: ticks(pid)? })
    }

    /// Starts measuring this process.
    pub fn of_self() -> Option<CpuClock> {
        CpuClock::of(std::process::id())
    }

    /// CPU seconds used since it began.
    fn seconds(&self) -> Option<f64> {
        Some(ticks(self.pid)?.saturating_sub(self.ticks) as f64 / ticks_per_second())
    }
}

/// Clock ticks per second, the unit of `/proc`'s CPU times.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// User plus system clock ticks of `pid`.
fn ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let (utime, stime): (u64, u64) = (fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?);
    Some(utime + stime)
}

/// A summary line: each measured process's CPU µs per message.
pub fn per_message(clocks: &[(&str, Option<CpuClock>)], messages: u64) -> Option<(String, String)> {
    if messages == 0 {
        return None;
    }
    let parts: Vec<String> = clocks
        .iter()
        .filter_map(|(name, clock)| {
            let secs = clock.as_ref()?.seconds()?;
            Some(format!("{name} {:.1} µs", secs * 1e6 / messages as f64))
        })
        .collect();
    (!parts.is_empty()).then(|| ("cpu per message".to_string(), parts.join(", ")))
}

/// The machine's stolen CPU time when the run began: time a hypervisor gave
/// this virtual machine's CPUs to others. It comes in bursts of milliseconds
/// in which every thread stands still, so a run's latency tail can grow
/// without any cause inside broker or harness.
#[derive(Debug, Clone, Copy)]
pub struct StealClock {
    ticks: u64,
}

impl StealClock {
    /// Starts measuring (None where `/proc/stat` has no steal field).
    pub fn start() -> Option<StealClock> {
        Some(StealClock { ticks: steal_ticks()? })
    }

    /// A summary line: CPU seconds stolen since the start.
    pub fn note(&self) -> Option<(String, String)> {
        let secs = steal_ticks()?.saturating_sub(self.ticks) as f64 / ticks_per_second();
        Some(("host steal".to_string(), format!("{secs:.2} s of CPU taken by the hypervisor during the run")))
    }
}

/// The `steal` ticks of all CPUs (the eighth number of `/proc/stat`'s `cpu` line).
fn steal_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    line.split_whitespace().nth(8)?.parse().ok()
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, and the call writes
    // at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&cpu| libc::CPU_ISSET(cpu, &set)).collect()
    }
}

/// Keeps the calling thread on `cpu` (best effort).
pub fn pin_to(cpu: usize) {
    // SAFETY: as above; pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// CPU time the calling thread has used.
pub fn thread_time() -> std::time::Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    std::time::Duration::new(now.tv_sec.max(0) as u64, now.tv_nsec.clamp(0, 999_999_999) as u32)
}
