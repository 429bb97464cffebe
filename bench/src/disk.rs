//! The disk's own fdatasync, measured beside a run: 4 KiB `pwrite` +
//! `fdatasync` over blocks written before (as the log's preallocated
//! segments are), in a file on the broker's file system. A sync send can
//! be no faster; its ack p50 over this p50 is the share of its time that
//! is not the disk.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

/// What the probe measured, µs.
pub(crate) struct Fsync {
    pub p50_us: u64,
    pub p99_us: u64,
}

/// Runs `rounds` pwrite + fdatasync pairs in a scratch file under `dir`.
pub(crate) fn probe(dir: &Path, rounds: usize) -> std::io::Result<Fsync> {
    const FILE: usize = 16 << 20;
    let path = dir.join("brook-bench-fsync-probe");
    let mut file = std::fs::File::options().read(true).write(true).create(true).truncate(true).open(&path)?;
    let measured = (|| {
        file.write_all(&vec![0u8; FILE])?;
        file.sync_all()?;
        let block = [0x5au8; 4096];
        let mut hist = hdrhistogram::Histogram::<u64>::new(3).map_err(std::io::Error::other)?;
        for i in 0..rounds {
            let began = Instant::now();
            file.write_all_at(&block, ((i * block.len()) % FILE) as u64)?;
            file.sync_data()?;
            hist.saturating_record(began.elapsed().as_micros() as u64);
        }
        Ok(Fsync { p50_us: hist.value_at_quantile(0.5), p99_us: hist.value_at_quantile(0.99) })
    })();
    let _ = std::fs::remove_file(&path);
    measured
}
