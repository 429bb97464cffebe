//! Which ranges of the log's page cache each sync drops (keeping only the
//! newest `store.log_cache_bytes` cached), each range dropped twice.

use std::ops::Range;

/// The ranges of the log whose page cache each sync drops.
///
/// The kernel skips a page it cannot free at that instant (one whose
/// writeback is just ending, or that a reader holds), and a page skipped
/// once would stay cached for good. Each range is therefore dropped twice:
/// with its own sync and with the next one, even a sync that wrote nothing.
#[derive(Debug, Clone, Copy)]
pub(super) struct CacheDrops {
    /// The previous range's start: where the next range starts.
    from: u64,
    /// The previous range's end.
    below: u64,
}

impl CacheDrops {
    /// Nothing below `offset` is dropped (an earlier run's pages are left
    /// to the kernel).
    pub(super) fn from(offset: u64) -> Self {
        Self { from: offset, below: offset }
    }

    /// The range to drop now that the log is durable and may leave the
    /// cache below `upto`, if any.
    pub(super) fn next(&mut self, upto: u64) -> Option<Range<u64>> {
        let upto = upto.max(self.below);
        if self.from >= upto {
            return None;
        }
        let range = self.from..upto;
        (self.from, self.below) = (self.below, upto);
        Some(range)
    }
}

impl super::WriterActor {
    /// Drops the page cache of the synced log below `upto` (on the blocking
    /// pool: freeing hundreds of MB of pages takes milliseconds, which the
    /// appends queued here should not wait for).
    pub(super) fn drop_cached_below(&mut self, upto: u64) {
        if self.config.log_cache_bytes == 0 {
            return;
        }
        let Some(range) = self.drops.next(upto) else { return };
        let (segments, logger) = (self.segments.clone(), self.logger.clone());
        tokio::task::spawn_blocking(move || {
            if let Err(e) = segments.drop_cached(range.start, range.end) {
                slog::warn!(logger, "commit-log page cache not dropped"; "error" => %e);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::CacheDrops;

    #[test]
    fn every_dropped_range_is_dropped_again_by_the_next_sync() {
        let mut drops = CacheDrops::from(100);
        assert_eq!(drops.next(50), None, "nothing below where this run began");
        assert_eq!(drops.next(300), Some(100..300));
        assert_eq!(drops.next(500), Some(100..500), "the next sync repeats 100..300");
        // Syncs that move nothing forward still repeat the last range once.
        assert_eq!(drops.next(500), Some(300..500));
        assert_eq!(drops.next(400), None);
        assert_eq!(drops.next(500), None);
        assert_eq!(drops.next(900), Some(500..900));
    }
}
