//! What a checkpoint makes durable besides the log, on the blocking pool:
//! aged consume-queue tails, fsyncs of the queue and system files, the
//! producers' snapshot, and the checkpoint file last.

use crate::store::checkpoint::{sync_filesystem, Checkpoint};
use crate::store::consume_queue::TailWrite;
use crate::store::progress::SystemFiles;
use crate::store::StorePaths;
use std::path::PathBuf;

/// What a checkpoint writes besides the checkpoint file.
pub(super) struct Written<'a> {
    /// Aged tails the barrier left to it.
    pub(super) tails: &'a [(u64, TailWrite)],
    /// Consume-queue files written since the last checkpoint.
    pub(super) dirty: Vec<PathBuf>,
    /// The progress files of the system actors.
    pub(super) system_files: Option<&'a SystemFiles>,
    /// The producer table's snapshot, if it changed.
    pub(super) producers: Option<(u64, Vec<u8>)>,
}

/// Writes what a checkpoint names durable, on the blocking pool: the aged
/// tails the barrier left to it (the entries below `cq_durable_offset` must
/// be in their files first), then fsyncs of every written consume-queue
/// file and of the system files, the producer state, then the checkpoint
/// itself.
pub(super) fn write_checkpoint(
    paths: &StorePaths,
    written: Written<'_>,
    checkpoint: Checkpoint,
) -> std::io::Result<()> {
    let Written { tails, mut dirty, system_files, producers } = written;
    for (_, tail) in tails {
        dirty.extend(tail.run()?);
    }
    sync_queue_files(&paths.root, &dirty)?;
    // After the log: a synced progress must not name deliveries whose
    // copies a power loss could still take back.
    if let Some(files) = system_files {
        files.sync()?;
    }
    // Before the checkpoint: recovery replays the log from the checkpoint's
    // position into this snapshot, which must hold at least everything
    // below it.
    if let Some((_, bytes)) = producers {
        crate::store::write_atomically(&paths.producers(), &bytes)?;
    }
    checkpoint.store(&paths.checkpoint())
}

/// Past this many dirty consume-queue files one `syncfs` is cheaper than an
/// fdatasync each (it also flushes unrelated data on the filesystem, which is
/// why it is not the default).
const SYNCFS_THRESHOLD: usize = 512;

fn sync_queue_files(root: &std::path::Path, dirty: &[std::path::PathBuf]) -> std::io::Result<()> {
    if dirty.len() > SYNCFS_THRESHOLD {
        return sync_filesystem(root);
    }
    for path in dirty {
        match crate::store::fd_cache::get(path, false) {
            Ok(file) => file.sync_data()?,
            // Deleted meanwhile (retention, topic deletion): nothing to sync.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
