//! The name registry of one tree: every child's handle by path (`agents/echo`).
//!
//! ractor's own registry is one process-global map, so two nodes in one process (tests, the
//! embedded library) would collide in it; this one belongs to a tree. Supervisors keep it
//! current: a child is registered when its spec is added and removed when the spec is deleted
//! (a restart keeps the entry: the handle follows the new incarnation).

use std::any::Any;
use std::sync::Arc;

use dashmap::DashMap;

use crate::handle::ActorHandle;
use crate::supervisor::SupervisorRef;

/// Paths of every registered child of a tree.
#[derive(Clone, Default)]
pub struct Registry {
    map: Arc<DashMap<String, Arc<dyn Any + Send + Sync>, rustc_hash::FxBuildHasher>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("len", &self.map.len())
            .finish()
    }
}

impl Registry {
    /// The handle registered at `path`, if there is one and its message type is `M`.
    pub fn lookup<M: Send + 'static>(&self, path: &str) -> Option<ActorHandle<M>> {
        let any = self.map.get(path)?.value().clone();
        ActorHandle::from_any(any)
    }

    /// The supervisor registered at `path`.
    pub fn lookup_supervisor(&self, path: &str) -> Option<SupervisorRef> {
        let any = self.map.get(path)?.value().clone();
        SupervisorRef::from_any(any)
    }

    /// Whether something is registered at `path`.
    pub fn contains(&self, path: &str) -> bool {
        self.map.contains_key(path)
    }

    /// Registered paths starting with `prefix`, sorted, at most `limit`.
    pub fn paths(&self, prefix: &str, limit: usize) -> Vec<String> {
        let mut out: Vec<String> = self
            .map
            .iter()
            .filter(|e| e.key().starts_with(prefix))
            .map(|e| e.key().clone())
            .collect();
        out.sort();
        out.truncate(limit);
        out
    }

    /// Number of registered paths.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub(crate) fn insert(&self, path: String, handle: Arc<dyn Any + Send + Sync>) {
        self.map.insert(path, handle);
    }

    pub(crate) fn remove(&self, path: &str) {
        self.map.remove(path);
    }
}
