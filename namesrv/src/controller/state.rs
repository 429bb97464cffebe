//! The controller's replicated state and the commands that change it:
//! replica sets, their members' persistent ids, the master and its epoch,
//! the in-sync set and its epoch. Every voter applies the same commands in
//! the same order (Raft's log), so `apply` decides only from the state and
//! the command: no clock, no liveness, no randomness.

use brook_proto::controller::ReplicaSetView;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A command in the controller's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// A new broker joins `broker_name`: it gets the next id.
    AddBroker {
        /// Its cluster.
        cluster: String,
        /// Its replica set.
        broker_name: String,
        /// Its client address.
        addr: String,
        /// The id it had (a controller whose state was lost learns it
        /// again from the broker's disk).
        wanted: Option<u64>,
    },
    /// A known broker now listens at `addr`.
    UpdateAddr {
        /// Its replica set.
        broker_name: String,
        /// Its id.
        broker_id: u64,
        /// Its client address.
        addr: String,
    },
    /// `new_master` becomes master, if the set's master epoch is still
    /// `expected_epoch`; its epoch is the next one, at least `min_epoch`.
    Elect {
        /// The replica set.
        broker_name: String,
        /// The member elected.
        new_master: u64,
        /// The master epoch the decision was taken in.
        expected_epoch: u32,
        /// The least epoch it may take (past every member's own epochs).
        min_epoch: u32,
    },
    /// The master of `master_epoch` changes the in-sync set of
    /// `in_sync_epoch`.
    AlterInSync {
        /// The replica set.
        broker_name: String,
        /// The asking master.
        master_id: u64,
        /// Its epoch.
        master_epoch: u32,
        /// The in-sync epoch it changes.
        in_sync_epoch: u32,
        /// The new set, the master included.
        in_sync: BTreeSet<u64>,
    },
}

/// What applying a command gave.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The id a new broker got.
    pub broker_id: Option<u64>,
    /// Why the command changed nothing (fenced or invalid).
    pub refused: Option<String>,
}

impl Outcome {
    fn refused(why: String) -> Self {
        Self { broker_id: None, refused: Some(why) }
    }
}

/// One replica set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SetState {
    /// Its cluster.
    pub cluster: String,
    /// Members: id → client address.
    pub members: BTreeMap<u64, String>,
    /// The next id given.
    pub next_id: u64,
    /// The master.
    pub master: Option<u64>,
    /// The master's epoch.
    pub master_epoch: u32,
    /// The in-sync set, the master included.
    pub in_sync: BTreeSet<u64>,
    /// The in-sync set's epoch.
    pub in_sync_epoch: u32,
}

impl SetState {
    /// The view of it brokers and tools get (liveness filled in by the
    /// leader).
    pub fn view(&self, broker_name: &str) -> ReplicaSetView {
        ReplicaSetView {
            cluster: self.cluster.clone(),
            broker_name: broker_name.to_string(),
            members: self.members.clone(),
            master: self.master,
            master_epoch: self.master_epoch,
            master_ha_addr: String::new(),
            in_sync: self.in_sync.iter().copied().collect(),
            in_sync_epoch: self.in_sync_epoch,
            alive: Vec::new(),
        }
    }
}

/// Every replica set, by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ControllerState {
    /// The sets.
    pub sets: BTreeMap<String, SetState>,
}

impl ControllerState {
    /// Applies one command.
    pub fn apply(&mut self, command: &Command) -> Outcome {
        match command {
            Command::AddBroker { cluster, broker_name, addr, wanted } => {
                let set = self.sets.entry(broker_name.clone()).or_insert_with(|| SetState {
                    cluster: cluster.clone(),
                    next_id: 1,
                    ..SetState::default()
                });
                let id = match wanted {
                    Some(id) if *id > 0 && !set.members.contains_key(id) => *id,
                    _ => set.next_id.max(1),
                };
                set.next_id = set.next_id.max(id + 1);
                set.members.insert(id, addr.clone());
                Outcome { broker_id: Some(id), refused: None }
            }
            Command::UpdateAddr { broker_name, broker_id, addr } => {
                match self.sets.get_mut(broker_name).and_then(|s| s.members.get_mut(broker_id)) {
                    Some(known) => {
                        known.clone_from(addr);
                        Outcome::default()
                    }
                    None => Outcome::refused(format!("{broker_name}/{broker_id} is not a member")),
                }
            }
            Command::Elect { broker_name, new_master, expected_epoch, min_epoch } => {
                let Some(set) = self.sets.get_mut(broker_name) else {
                    return Outcome::refused(format!("no replica set {broker_name:?}"));
                };
                if set.master_epoch != *expected_epoch {
                    return Outcome::refused(format!(
                        "master epoch is {}, not {expected_epoch}: decided on a stale view",
                        set.master_epoch
                    ));
                }
                if !set.members.contains_key(new_master) {
                    return Outcome::refused(format!("{broker_name}/{new_master} is not a member"));
                }
                set.master = Some(*new_master);
                set.master_epoch = (set.master_epoch + 1).max(*min_epoch);
                set.in_sync = BTreeSet::from([*new_master]);
                set.in_sync_epoch += 1;
                Outcome::default()
            }
            Command::AlterInSync { broker_name, master_id, master_epoch, in_sync_epoch, in_sync } => {
                let Some(set) = self.sets.get_mut(broker_name) else {
                    return Outcome::refused(format!("no replica set {broker_name:?}"));
                };
                if set.master != Some(*master_id) || set.master_epoch != *master_epoch {
                    return Outcome::refused(format!(
                        "{broker_name}/{master_id} in epoch {master_epoch} is not the master (epoch {}, master {:?})",
                        set.master_epoch, set.master
                    ));
                }
                if set.in_sync_epoch != *in_sync_epoch {
                    return Outcome::refused(format!("in-sync epoch is {}, not {in_sync_epoch}", set.in_sync_epoch));
                }
                if !in_sync.contains(master_id) || in_sync.iter().any(|id| !set.members.contains_key(id)) {
                    return Outcome::refused("the in-sync set must hold the master and members only".into());
                }
                set.in_sync.clone_from(in_sync);
                set.in_sync_epoch += 1;
                Outcome::default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(state: &mut ControllerState, addr: &str) -> u64 {
        let add = Command::AddBroker { cluster: "c".into(), broker_name: "b".into(), addr: addr.into(), wanted: None };
        state.apply(&add).broker_id.expect("an id")
    }

    #[test]
    fn ids_are_persistent_and_elections_fence_stale_decisions() {
        let mut state = ControllerState::default();
        assert_eq!((add(&mut state, "a:1"), add(&mut state, "a:2"), add(&mut state, "a:3")), (1, 2, 3));
        let back =
            Command::AddBroker { cluster: "c".into(), broker_name: "b".into(), addr: "a:7".into(), wanted: Some(7) };
        assert_eq!(state.apply(&back).broker_id, Some(7), "an id kept on a broker's disk is taken back");
        assert_eq!(add(&mut state, "a:8"), 8);
        let elect =
            |m, e, min| Command::Elect { broker_name: "b".into(), new_master: m, expected_epoch: e, min_epoch: min };
        assert_eq!(state.apply(&elect(1, 0, 5)), Outcome::default());
        let set = &state.sets["b"];
        assert_eq!((set.master, set.master_epoch, set.in_sync_epoch), (Some(1), 5, 1), "past the members' epochs");
        assert_eq!(set.in_sync, BTreeSet::from([1]));
        assert!(state.apply(&elect(2, 0, 0)).refused.is_some(), "decided in epoch 0: stale");
        let alter = |m, e, ie, set: &[u64]| Command::AlterInSync {
            broker_name: "b".into(),
            master_id: m,
            master_epoch: e,
            in_sync_epoch: ie,
            in_sync: set.iter().copied().collect(),
        };
        assert_eq!(state.apply(&alter(1, 5, 1, &[1, 2, 3])), Outcome::default());
        assert!(state.apply(&alter(1, 5, 1, &[1])).refused.is_some(), "in-sync epoch moved on");
        assert!(state.apply(&alter(2, 5, 2, &[2])).refused.is_some(), "not the master");
        assert!(state.apply(&alter(1, 5, 2, &[2])).refused.is_some(), "without the master");
        assert!(state.apply(&alter(1, 5, 2, &[1, 9])).refused.is_some(), "not a member");
        assert_eq!(state.apply(&elect(3, 5, 0)), Outcome::default());
        let set = &state.sets["b"];
        assert_eq!((set.master, set.master_epoch, set.in_sync_epoch), (Some(3), 6, 3));
        assert!(state.apply(&alter(1, 5, 3, &[1])).refused.is_some(), "the old master is fenced");
        assert_eq!(state.sets["b"].in_sync, BTreeSet::from([3]));
    }
}
