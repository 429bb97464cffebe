//! Counting and timing: latency histograms per task (merged at the end),
//! counters shared by all tasks, and the progress bar.

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shared by every task of a run.
pub struct Stats {
    /// Messages done.
    pub messages: AtomicU64,
    /// Body bytes done.
    pub bytes: AtomicU64,
    /// Failed requests.
    pub errors: AtomicU64,
    hist: Mutex<Histogram<u64>>,
    /// Progress display.
    pub bar: ProgressBar,
    steal: Option<crate::cpu::StealClock>,
}

impl Stats {
    /// Counters for a run expecting `total` messages (0: by time).
    pub fn new(total: u64) -> Stats {
        let bar = ProgressBar::new(total);
        if std::io::stderr().is_terminal() {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        } else {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        if let Ok(style) = ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} {per_sec}") {
            bar.set_style(style);
        }
        Stats {
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            hist: Mutex::new(new_histogram()),
            bar,
            steal: crate::cpu::StealClock::start(),
        }
    }

    /// Adds a task's latencies.
    pub fn merge(&self, local: &Histogram<u64>) {
        if let Ok(mut hist) = self.hist.lock() {
            let _ = hist.add(local);
        }
    }

    /// Counts done messages.
    pub fn done(&self, messages: u64, bytes: u64) {
        self.messages.fetch_add(messages, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.bar.inc(messages);
    }

    /// The merged histogram.
    pub fn histogram(&self) -> Histogram<u64> {
        self.hist.lock().map(|h| h.clone()).unwrap_or_else(|_| new_histogram())
    }

    /// Ends the run: clears the progress bar and sums it up.
    pub fn summary(
        &self,
        scenario: &str,
        elapsed: Duration,
        latency_of: &'static str,
        mut notes: Vec<(String, String)>,
    ) -> Summary {
        self.bar.finish_and_clear();
        notes.extend(self.steal.and_then(|steal| steal.note()));
        Summary {
            scenario: scenario.to_string(),
            messages: self.messages.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            elapsed,
            hist: self.histogram(),
            latency_of,
            fields: Vec::new(),
            notes,
        }
    }
}

/// A latency histogram in microseconds, auto-resizing, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used, reason = "3 significant figures is a valid precision: this cannot fail")]
    Histogram::new(3).expect("3 significant figures")
}

/// Records the time since `start`.
pub fn record(hist: &mut Histogram<u64>, start: Instant) {
    let _ = hist.record((start.elapsed().as_micros() as u64).max(1));
}

/// Records a latency of `ns` nanoseconds.
pub fn record_ns(hist: &mut Histogram<u64>, ns: u64) {
    let _ = hist.record((ns / 1_000).max(1));
}

/// The summary of one run.
pub struct Summary {
    /// Scenario name.
    pub scenario: String,
    /// Messages done.
    pub messages: u64,
    /// Body bytes done.
    pub bytes: u64,
    /// Failed requests.
    pub errors: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Latencies (µs).
    pub hist: Histogram<u64>,
    /// What the latency measures.
    pub latency_of: &'static str,
    /// Extra lines for the table.
    pub notes: Vec<(String, String)>,
    /// Extra `key=value` fields for the RESULT line.
    pub fields: Vec<(String, String)>,
}

impl Summary {
    /// Prints the table and the machine-readable RESULT line.
    pub fn print(&self) {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let rate = self.messages as f64 / secs;
        let mb = self.bytes as f64 / secs / 1e6;
        let q = |p: f64| if self.hist.is_empty() { 0 } else { self.hist.value_at_quantile(p) };
        println!("scenario          {}", self.scenario);
        println!("messages          {}", self.messages);
        println!("elapsed           {:.2} s", secs);
        println!("throughput        {:.0} msgs/s, {:.1} MB/s", rate, mb);
        println!(
            "latency ({})  p50 {} µs  p99 {} µs  p999 {} µs  max {} µs",
            self.latency_of,
            q(0.5),
            q(0.99),
            q(0.999),
            if self.hist.is_empty() { 0 } else { self.hist.max() }
        );
        println!("errors            {}", self.errors);
        for (k, v) in &self.notes {
            println!("{k:<17} {v}");
        }
        let fields: String = self.fields.iter().map(|(k, v)| format!(" {k}={v}")).collect();
        println!(
            "RESULT scenario={} msgs_per_s={:.0} mb_per_s={:.1} p50_us={} p99_us={} p999_us={} errors={}{fields}",
            self.scenario,
            rate,
            mb,
            q(0.5),
            q(0.99),
            q(0.999),
            self.errors
        );
    }
}
