//! The `index` scenario: the key index alone (no broker), filled to
//! `--messages` keys (one per message, as order ids are) in files of the
//! default shape, measuring insert cost per key and lookup latency as it
//! grows — with a time window (how queries usually run) and over the whole
//! history.

use crate::stats::{new_histogram, Summary};
use brook::store::index::{key_hash, IndexShape, KeyEntry, KeyIndex};
use std::time::{Duration, Instant};

/// Keys per millisecond of simulated store time (100,000 msgs/s).
const PER_MS: u64 = 100;

/// Keys per drain: the broker's indexer takes its buffer every 20 ms.
const DRAIN: u64 = PER_MS * 20;

fn entry(i: u64) -> KeyEntry {
    KeyEntry { hash: key_hash("orders", &format!("order-{i}")), log_offset: i * 200, store_ts: (i / PER_MS) as i64 }
}

/// Looks 2,000 random keys of the first `inserted` up, each in its own time
/// window and over the whole history; the two latency histograms (µs).
fn sample_lookups(
    index: &mut KeyIndex,
    inserted: u64,
    rng: &mut u64,
) -> Result<(hdrhistogram::Histogram<u64>, hdrhistogram::Histogram<u64>), String> {
    let (mut window, mut full) = (new_histogram(), new_histogram());
    for _ in 0..2_000 {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        let i = *rng % inserted;
        let e = entry(i);
        let t = Instant::now();
        let hits = index.lookup(e.hash, e.store_ts, e.store_ts, 16).map_err(|err| err.to_string())?;
        let _ = window.record((t.elapsed().as_nanos() as u64 / 1000).max(1));
        if !hits.contains(&e.log_offset) {
            return Err(format!("key order-{i} not found"));
        }
        let t = Instant::now();
        let hits = index.lookup(e.hash, 0, i64::MAX, 16).map_err(|err| err.to_string())?;
        let _ = full.record((t.elapsed().as_nanos() as u64 / 1000).max(1));
        if !hits.contains(&e.log_offset) {
            return Err(format!("key order-{i} not found over the whole history"));
        }
    }
    Ok((window, full))
}

/// Runs the scenario.
pub fn run(total: u64, shape: IndexShape) -> Result<Summary, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut index = KeyIndex::open(dir.path().join("index"), shape).map_err(|e| e.to_string())?;
    let marks: Vec<u64> = [total / 10, total / 2, total].into_iter().filter(|m| *m > 0).collect();
    let mut notes = Vec::new();
    let mut inserted = 0u64;
    let started = Instant::now();
    let mut insert_time = Duration::ZERO;
    let mut last_window = new_histogram();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut drain = Vec::with_capacity(DRAIN as usize);
    for mark in marks {
        while inserted < mark {
            // Keys arrive as the broker's indexer takes them: a drain's worth
            // at a time. Making them (hashing formatted keys) is not timed.
            let upto = (inserted + DRAIN).min(mark);
            drain.clear();
            drain.extend((inserted..upto).map(entry));
            let t = Instant::now();
            index.insert_all(&drain).map_err(|e| e.to_string())?;
            // A checkpoint a second's worth of keys.
            if upto / (PER_MS * 1000) > inserted / (PER_MS * 1000) {
                index.flush(upto * 200).map_err(|e| e.to_string())?;
            }
            insert_time += t.elapsed();
            inserted = upto;
        }
        let per_key = insert_time.as_nanos() as f64 / inserted as f64;
        let (window, full) = sample_lookups(&mut index, inserted, &mut rng)?;
        let q = |h: &hdrhistogram::Histogram<u64>, p: f64| h.value_at_quantile(p);
        notes.push((
            format!("at {inserted} keys"),
            format!(
                "insert {per_key:.0} ns/key (cumulative); lookup in its time window p50 {} µs p99 {} µs; over all history p50 {} µs p99 {} µs; {} files",
                q(&window, 0.5),
                q(&window, 0.99),
                q(&full, 0.5),
                q(&full, 0.99),
                index.files()
            ),
        ));
        last_window = window;
    }
    let bytes: u64 = std::fs::read_dir(dir.path().join("index"))
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.blocks() * 512
        })
        .sum();
    notes.push((
        "index on disk".into(),
        format!("{:.1} MiB allocated ({:.1} B/key)", bytes as f64 / 1048576.0, bytes as f64 / inserted as f64),
    ));
    notes.push(("shape".into(), format!("{} slots, {} entries per file", shape.slots, shape.capacity)));
    Ok(Summary {
        scenario: "index".into(),
        messages: inserted,
        bytes: 0,
        errors: 0,
        elapsed: started.elapsed().min(insert_time.max(Duration::from_nanos(1))),
        hist: last_window,
        latency_of: "lookup, time window",
        fields: Vec::new(),
        notes,
    })
}
