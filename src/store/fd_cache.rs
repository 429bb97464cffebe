//! Open consume-queue files, bounded. Tens of thousands of queues cannot each
//! hold a descriptor (the open-file limit is per process), so queues ask
//! this least-recently-used cache for their files and a file that falls out
//! is closed once nobody holds it. The cache is process-wide because the
//! limit it respects is.

use lru::LruCache;
use parking_lot::Mutex;
use std::fs::{File, OpenOptions};
use std::io;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Default number of consume-queue files kept open.
pub const DEFAULT_CAPACITY: usize = 4096;

static CACHE: OnceLock<Mutex<LruCache<PathBuf, Arc<File>>>> = OnceLock::new();

fn cache() -> &'static Mutex<LruCache<PathBuf, Arc<File>>> {
    CACHE.get_or_init(|| {
        let cap = NonZeroUsize::new(DEFAULT_CAPACITY).unwrap_or(NonZeroUsize::MIN);
        Mutex::new(LruCache::new(cap))
    })
}

/// Sets how many files stay open (at start, before heavy use).
pub fn set_capacity(capacity: usize) {
    let cap = NonZeroUsize::new(capacity.max(16)).unwrap_or(NonZeroUsize::MIN);
    cache().lock().resize(cap);
}

/// The open file at `path`; created when `create` is set, else it must
/// exist.
pub fn get(path: &Path, create: bool) -> io::Result<Arc<File>> {
    if let Some(file) = cache().lock().get(path) {
        return Ok(file.clone());
    }
    // Opened outside the lock: a slow open must not stall every queue.
    let file = Arc::new(OpenOptions::new().read(true).write(true).create(create).truncate(false).open(path)?);
    cache().lock().put(path.to_path_buf(), file.clone());
    Ok(file)
}

/// Forgets `path` (its file was deleted).
pub fn forget(path: &Path) {
    cache().lock().pop(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_reopened_after_eviction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths: Vec<PathBuf> = (0..40).map(|i| dir.path().join(format!("f{i}"))).collect();
        for p in &paths {
            get(p, true).expect("create");
        }
        // Whatever was evicted opens again; nothing is lost.
        for p in &paths {
            get(p, false).expect("reopen");
        }
        forget(&paths[0]);
        std::fs::remove_file(&paths[0]).expect("remove");
        assert!(get(&paths[0], false).is_err());
    }
}
