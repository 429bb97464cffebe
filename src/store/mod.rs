//! The storage engine: one commit log for every topic, thin consume queues
//! pointing into it, the checkpoint, recovery and retention.
//!
//! On-disk layout under the data dir (docs/FORMAT.md has the byte layouts):
//! ```text
//! lock                         flock'd while a broker runs
//! checkpoint                   JSON: cq_durable_offset, log_end, clean
//! commitlog/<20-digit base>    fixed-size segments
//! consumequeue/<topic>/<queue>/<20-digit first entry>
//! config/topics.json           the topic table
//! config/groups/<group>.json    a consumer group's mode, start policy, offsets
//! schedule/level-<L>           a delay level's delivered-up-to offset
//! timer/progress               the timer wheel's ingested offset and watermark
//! timer/<bucket start ms>      pending exact-time messages due in that span
//! txn/progress                 oldest unresolved half message, transaction counts
//! index/<20-digit sequence>    key index files (slot table + chained entries)
//! producers                    idempotent producers' sequence state (snapshot)
//! config/producer-ids          the end of the block of producer ids handed out
//! reserve                      space kept for a start or stop on a full disk
//! epochs                       JSON: (master epoch, start offset) pairs
//! truncate                     JSON: a cut of the log not yet finished
//! in-sync                      JSON: a master's in-sync slaves
//! ```

pub mod checkpoint;
pub mod commitlog;
pub mod consume_queue;
pub mod epochs;
pub mod fd_cache;
pub mod group_state;
pub mod index;
pub mod producer_ids;
pub mod producers;
pub mod progress;
pub mod record;
pub mod recovery;
pub mod reserve;
pub mod retention;
pub mod segment;
pub mod timer;
pub mod topics;
pub mod truncation;

use std::path::{Path, PathBuf};

/// Paths of everything under a data dir.
#[derive(Debug, Clone)]
pub struct StorePaths {
    /// The data dir.
    pub root: PathBuf,
}

impl StorePaths {
    /// Paths under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Commit-log segments.
    pub fn commitlog(&self) -> PathBuf {
        self.root.join("commitlog")
    }

    /// Root of all consume queues.
    pub fn consumequeue(&self) -> PathBuf {
        self.root.join("consumequeue")
    }

    /// One queue's directory.
    pub fn queue_dir(&self, topic: &str, queue: u32) -> PathBuf {
        self.consumequeue().join(topic).join(queue.to_string())
    }

    /// The checkpoint file.
    pub fn checkpoint(&self) -> PathBuf {
        self.root.join("checkpoint")
    }

    /// Consumer-group state files.
    pub fn groups(&self) -> PathBuf {
        self.root.join("config").join("groups")
    }

    /// The topic table.
    pub fn topics(&self) -> PathBuf {
        self.root.join("config").join("topics.json")
    }

    /// Delay-level progress files.
    pub fn schedule(&self) -> PathBuf {
        self.root.join("schedule")
    }

    /// The timer wheel's buckets and progress.
    pub fn timer(&self) -> PathBuf {
        self.root.join("timer")
    }

    /// The transaction checker's progress.
    pub fn txn(&self) -> PathBuf {
        self.root.join("txn")
    }

    /// The key index.
    pub fn index(&self) -> PathBuf {
        self.root.join("index")
    }

    /// The idempotent producers' state snapshot.
    pub fn producers(&self) -> PathBuf {
        self.root.join("producers")
    }

    /// The epoch file (see `epochs`).
    pub fn epochs(&self) -> PathBuf {
        self.root.join("epochs")
    }

    /// A pending cut of the log (see `truncation`).
    pub fn truncation(&self) -> PathBuf {
        self.root.join("truncate")
    }

    /// The master's in-sync set (see `ha`).
    pub fn in_sync(&self) -> PathBuf {
        self.root.join("in-sync")
    }

    /// The id the controller gave this broker (see `ha::controller`).
    pub fn controller_id(&self) -> PathBuf {
        self.root.join("controller-id")
    }

    /// The space reserve (see `reserve`).
    pub fn reserve(&self) -> PathBuf {
        self.root.join("reserve")
    }

    /// The producer id reservation.
    pub fn producer_ids(&self) -> PathBuf {
        self.root.join("config").join("producer-ids")
    }

    /// Creates the directories a store needs.
    pub fn create_dirs(&self) -> std::io::Result<()> {
        for dir in [self.root.clone(), self.commitlog(), self.root.join("config")] {
            std::fs::create_dir_all(&dir)?;
        }
        Ok(())
    }
}

/// Replaces the file at `path` with `bytes` so that a crash leaves either
/// the old or the new content: written to `<path>.tmp`, synced, renamed
/// over `path`, and the directory synced. Writers of one path must take
/// turns: they share the temporary.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let written = std::fs::File::create(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    if let Err(e) = written {
        // A half-written temporary on a full disk holds space for nothing.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Every `(topic, queue)` with a consume-queue directory under `root`.
pub fn list_queue_dirs(root: &Path) -> std::io::Result<Vec<(String, u32)>> {
    let mut out = Vec::new();
    let topics = match std::fs::read_dir(root) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for topic in topics {
        let topic = topic?;
        let Some(name) = topic.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !topic.file_type()?.is_dir() {
            continue;
        }
        for queue in std::fs::read_dir(topic.path())? {
            let queue = queue?;
            if let Some(id) = queue.file_name().to_str().and_then(|q| q.parse::<u32>().ok()) {
                out.push((name.clone(), id));
            }
        }
    }
    out.sort();
    Ok(out)
}
