//! Where queue states live: a table per thread, on the queue actors' thread
//! (the writer's). The rule this file keeps: a queue's [`QueueState`] is
//! only ever touched on that one thread — by its actor, by the fanout's
//! appends and by the writer's answers — so it needs no lock, and appends
//! reach it without a mailbox. Everything here is `!Send` on purpose.

use crate::actors::queue::spec::QueueSpec;
use crate::actors::queue::state::QueueState;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A queue's state as this thread keeps it.
pub(super) type SharedState = Rc<RefCell<QueueState>>;

/// The queues' states on this thread. A state's slot is noted on its spec
/// when it opens, so appends and the writer's answers reach it by index:
/// with 50,000 queues, two hash lookups per append in a map that large were
/// a tenth of the extra cost of many queues. The id map serves checkpoints,
/// stops and a spec whose noted slot is stale or another thread's.
pub(super) struct Slots<T> {
    slots: Vec<Option<(u64, T)>>,
    free: Vec<usize>,
    by_id: HashMap<u64, usize, crate::actors::FastHash>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Self { slots: Vec::new(), free: Vec::new(), by_id: HashMap::default() }
    }
}

impl<T> Slots<T> {
    /// The slot of `id`, tried at `hint` first.
    pub(super) fn find(&self, id: u64, hint: usize) -> Option<usize> {
        let holds = |slot: usize| matches!(self.slots.get(slot), Some(Some((owner, _))) if *owner == id);
        if holds(hint) {
            return Some(hint);
        }
        self.by_id.get(&id).copied().filter(|&slot| holds(slot))
    }

    /// The value of `id`, tried at `hint` first.
    pub(super) fn get(&self, id: u64, hint: usize) -> Option<&T> {
        let slot = self.find(id, hint)?;
        self.slots[slot].as_ref().map(|(_, value)| value)
    }

    /// The slot of `id`'s value, made by `make` unless there is one.
    pub(super) fn open(&mut self, id: u64, hint: usize, make: impl FnOnce() -> T) -> usize {
        if let Some(slot) = self.find(id, hint) {
            return slot;
        }
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        self.slots[slot] = Some((id, make()));
        self.by_id.insert(id, slot);
        slot
    }

    pub(super) fn remove(&mut self, id: u64) {
        if let Some(slot) = self.by_id.remove(&id) {
            self.slots[slot] = None;
            self.free.push(slot);
        }
    }

    pub(super) fn ids(&self) -> Vec<u64> {
        self.by_id.keys().copied().collect()
    }
}

thread_local! {
    /// The state of every queue on this thread.
    pub(super) static STATES: RefCell<Slots<SharedState>> = RefCell::new(Slots::default());
}

/// The state of `spec`'s queue on this thread, opened on first use (by its
/// actor or by the first append to reach it, whichever comes first).
pub(super) fn state_for(spec: &Arc<QueueSpec>) -> SharedState {
    STATES.with(|states| {
        let mut states = states.borrow_mut();
        let slot =
            states.open(spec.id, spec.slot.load(Ordering::Relaxed), || Rc::new(RefCell::new(QueueState::open(spec))));
        spec.slot.store(slot, Ordering::Relaxed);
        states.get(spec.id, slot).cloned().expect("just opened")
    })
}

pub(super) fn local_state(spec: &QueueSpec) -> Option<SharedState> {
    STATES.with(|states| states.borrow().get(spec.id, spec.slot.load(Ordering::Relaxed)).cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_found_by_hint_or_id_and_a_stale_hint_finds_nothing_else() {
        let mut slots: Slots<&str> = Slots::default();
        let a = slots.open(10, usize::MAX, || "a");
        let b = slots.open(11, usize::MAX, || "b");
        assert_ne!(a, b);
        assert_eq!(slots.open(10, usize::MAX, || panic!("opened twice")), a);
        assert_eq!(slots.get(10, a), Some(&"a"));
        // A wrong hint falls back to the id.
        assert_eq!(slots.get(10, b), Some(&"a"));
        assert_eq!(slots.get(10, 999), Some(&"a"));
        slots.remove(10);
        assert_eq!(slots.get(10, a), None);
        // The freed slot is reused; the old id's hint must not reach the
        // new value.
        let c = slots.open(12, usize::MAX, || "c");
        assert_eq!(c, a);
        assert_eq!(slots.get(10, a), None);
        assert_eq!(slots.get(12, a), Some(&"c"));
        let mut ids = slots.ids();
        ids.sort_unstable();
        assert_eq!(ids, vec![11, 12]);
    }
}
