//! A supervisor's children, in start order, findable by id and by ractor actor id.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{ActorCell, ActorId};
use rustc_hash::FxHashMap;

use crate::spec::ChildSpec;

use super::{ChildInfo, ChildStatus};

pub(crate) enum Status {
    Running(ActorCell),
    /// Waiting for `RestartDue(token)`.
    Restarting(u64),
    Stopped,
}

pub(crate) struct Child {
    pub(crate) spec: ChildSpec,
    pub(crate) seq: u64,
    pub(crate) status: Status,
    pub(crate) generation: u64,
    pub(crate) restarts: u64,
    /// Restart times within the intensity period, for the backoff exponent. Bounded by
    /// `max_restarts + 1` because older entries are pruned on every push.
    pub(crate) recent: VecDeque<Instant>,
}

impl Child {
    /// The child's report; `parent` is its supervisor's path.
    pub(crate) fn info(&self, parent: &str) -> ChildInfo {
        ChildInfo {
            id: self.spec.id.to_string(),
            path: super::join_path(parent, &self.spec.id),
            kind: self.spec.kind,
            restart: self.spec.restart,
            status: match self.status {
                Status::Running(_) => ChildStatus::Running {
                    generation: self.generation,
                },
                Status::Restarting(_) => ChildStatus::Restarting,
                Status::Stopped => ChildStatus::Stopped,
            },
            mailbox_len: self.spec.handle.as_ref().map_or(0, |h| h.mailbox_len()),
            restarts: self.restarts,
            snapshot_key: self.spec.persistence.as_ref().map(|p| p.key.clone()),
        }
    }

    /// Records a restart and returns how many happened within `period`, this one included.
    pub(crate) fn note_restart(&mut self, now: Instant, period: Duration) -> u32 {
        self.restarts += 1;
        self.recent.push_back(now);
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > period)
        {
            self.recent.pop_front();
        }
        u32::try_from(self.recent.len()).unwrap_or(u32::MAX)
    }
}

#[derive(Default)]
pub(crate) struct Children {
    by_id: FxHashMap<Arc<str>, Child>,
    order: BTreeMap<u64, Arc<str>>,
    by_actor: FxHashMap<ActorId, Arc<str>>,
}

impl Children {
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Child> {
        self.by_id.get(id)
    }

    pub(crate) fn get_mut(&mut self, id: &str) -> Option<&mut Child> {
        self.by_id.get_mut(id)
    }

    pub(crate) fn insert(&mut self, child: Child) {
        self.order.insert(child.seq, child.spec.id.clone());
        self.by_id.insert(child.spec.id.clone(), child);
    }

    pub(crate) fn remove(&mut self, id: &str) -> Option<Child> {
        let child = self.by_id.remove(id)?;
        self.order.remove(&child.seq);
        if let Status::Running(cell) = &child.status {
            self.by_actor.remove(&cell.get_id());
        }
        Some(child)
    }

    /// Marks `id` running as `cell`.
    pub(crate) fn set_running(&mut self, id: &str, cell: ActorCell, generation: u64) {
        if let Some(child) = self.by_id.get_mut(id) {
            self.by_actor.insert(cell.get_id(), child.spec.id.clone());
            child.status = Status::Running(cell);
            child.generation = generation;
        }
    }

    /// Takes the running cell of `id` (the child is then `Stopped`); `None` if not running.
    pub(crate) fn take_running(&mut self, id: &str) -> Option<ActorCell> {
        let child = self.by_id.get_mut(id)?;
        match std::mem::replace(&mut child.status, Status::Stopped) {
            Status::Running(cell) => {
                self.by_actor.remove(&cell.get_id());
                Some(cell)
            }
            other => {
                child.status = other;
                None
            }
        }
    }

    /// The child id of a running actor, forgetting the actor: a later event about the same
    /// actor is then ignored.
    pub(crate) fn take_actor(&mut self, actor: &ActorId) -> Option<Arc<str>> {
        let id = self.by_actor.remove(actor)?;
        if let Some(child) = self.by_id.get_mut(&id) {
            child.status = Status::Stopped;
        }
        Some(id)
    }

    /// Ids in start order.
    pub(crate) fn ids(&self) -> Vec<Arc<str>> {
        self.order.values().cloned().collect()
    }

    /// Ids of `id` and every child started after it, in start order.
    pub(crate) fn ids_from(&self, id: &str) -> Vec<Arc<str>> {
        match self.by_id.get(id) {
            Some(child) => self
                .order
                .range(child.seq..)
                .map(|(_, v)| v.clone())
                .collect(),
            None => Vec::new(),
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Child> {
        self.order.values().filter_map(|id| self.by_id.get(id))
    }
}
