//! Routing: where an operation on a namespace runs. One node of a cluster serves each
//! namespace; [`Routing`] owns the route to the other nodes and what this node last found
//! about who serves which namespace, and the methods below send an operation there (or run
//! it here, starting the namespace when nobody serves it).
//!
//! Architecture invariant: `served_by` is a hint, never trusted for a write that may have
//! been applied: a write sent to a node that no longer serves the namespace fails with 503
//! and is not sent again, a read is tried here at once.

use std::sync::{Arc, OnceLock};

use dashmap::DashMap;

use super::remote::{MemoryAnswer, MemoryOp, RemoteMemory};
use super::{MemoryError, MemoryStore};

/// The route to the other nodes of a cluster, and who serves which namespace as last found.
#[derive(Default)]
pub(crate) struct Routing {
    /// The other nodes (cluster mode only); set once.
    remote: OnceLock<Arc<dyn RemoteMemory>>,
    /// Namespaces another node serves: the node's name, as last found.
    served_by: DashMap<String, String>,
}

impl Routing {
    /// The route to the other nodes, in cluster mode.
    pub(crate) fn remote(&self) -> Option<&Arc<dyn RemoteMemory>> {
        self.remote.get()
    }

    /// Whether the node is part of a cluster.
    pub(crate) fn in_cluster(&self) -> bool {
        self.remote.get().is_some()
    }

    /// Notes that node `node` serves namespace `ns`.
    pub(crate) fn note_served_by(&self, ns: &str, node: &str) {
        self.served_by.insert(ns.to_owned(), node.to_owned());
    }

    /// Forgets who serves namespace `ns` (this node does now, or it is to be found again).
    pub(crate) fn forget_served_by(&self, ns: &str) {
        self.served_by.remove(ns);
    }
}

impl MemoryStore {
    /// This node's name in a cluster.
    pub(crate) fn node_name(&self) -> Option<&str> {
        self.inner.routing.remote().map(|r| r.node())
    }

    /// On a drained node, a namespace operation is sent to the node serving the namespace
    /// (the holder of its lease), or when none does to a node that is not drained, as
    /// [`MemoryOp::Forwarded`]. Nothing ran here, so a write is as safe to send on as a read.
    /// `None` when the operation runs here.
    pub(crate) async fn forward_off_drained(
        &self,
        op: &MemoryOp,
    ) -> Option<Result<MemoryAnswer, MemoryError>> {
        let shard_op = matches!(
            op,
            MemoryOp::HostShard { .. } | MemoryOp::Shard { .. } | MemoryOp::ReleaseShard { .. }
        );
        if shard_op || !self.is_draining() {
            return None;
        }
        let remote = self.inner.routing.remote()?;
        // Who serves it: the holder of its lease, read without taking it.
        let holder = self
            .server_of(op.namespace())
            .await
            .unwrap_or_else(|e| {
                tracing::debug!(namespace = %op.namespace(), error = %e, "reading who serves a namespace");
                None
            });
        let node = match holder {
            Some(node) if node != remote.node() && remote.reachable(&node) => node,
            _ => match remote.placeable_peers().await.into_iter().next() {
                Some(node) => node,
                None => {
                    return Some(Err(MemoryError::Unavailable(
                        "this node is drained and no other node may serve memory".into(),
                    )));
                }
            },
        };
        let forwarded = MemoryOp::Forwarded {
            op: Box::new(op.clone()),
        };
        Some(
            remote
                .call(&node, forwarded, op.timeout())
                .await
                .unwrap_or_else(|e| {
                    Err(MemoryError::Unavailable(format!(
                        "this node is drained and node {node} did not answer: {e}"
                    )))
                }),
        )
    }

    /// True when the operation runs on this node without asking: no cluster, or this node
    /// serves the namespace.
    pub(crate) fn runs_here(&self, namespace: &str) -> bool {
        !self.inner.routing.in_cluster() || self.inner.running.contains(namespace)
    }

    /// Runs `op` where its namespace is served: on the node last found serving it, else
    /// here (which starts the namespace when no node serves it), else on the node found
    /// holding it meanwhile.
    pub(crate) async fn routed(&self, op: MemoryOp) -> Result<MemoryAnswer, MemoryError> {
        let namespace = op.namespace().to_owned();
        if let Some((node, remote)) = self.served_elsewhere(&namespace) {
            match remote.call(&node, op.clone(), op.timeout()).await {
                // It no longer serves the namespace (or a shard of it failed): found anew
                // on the next call. A read is tried here at once; a write may have been
                // applied in part.
                Ok(Err(MemoryError::Unavailable(why))) => {
                    self.inner.routing.forget_served_by(&namespace);
                    if !op.is_read() {
                        return Err(MemoryError::Unavailable(why));
                    }
                    tracing::debug!(%namespace, %node, %why, "memory namespace not served where it was; trying here");
                }
                Ok(answer) => return answer,
                Err(e) if !e.sent || op.is_read() => {
                    tracing::debug!(%namespace, %node, error = %e, "memory operation forwarded in vain; trying here");
                }
                Err(e) => {
                    return Err(MemoryError::Unavailable(format!(
                        "node {node}, which serves memory namespace {namespace}, was lost with the request (it may have been applied): {e}"
                    )));
                }
            }
        }
        match self.serve_remote(op.clone()).await {
            Err(MemoryError::Unavailable(why)) => match self.served_elsewhere(&namespace) {
                Some((node, remote)) => {
                    remote
                        .call(&node, op.clone(), op.timeout())
                        .await
                        .unwrap_or_else(|e| {
                            Err(MemoryError::Unavailable(format!(
                                "memory namespace {namespace} is served by node {node}, which did not answer: {e}"
                            )))
                        })
                }
                None => Err(MemoryError::Unavailable(why)),
            },
            other => other,
        }
    }

    /// Connects the store to the other nodes of a cluster: operations on a namespace another
    /// node serves go there through `remote`, and a background task watches the shards this
    /// node hosts (`host_watch`). Set once; later calls return false.
    pub fn set_remote(&self, remote: Arc<dyn RemoteMemory>) -> bool {
        if self.inner.routing.remote.set(remote).is_err() {
            return false;
        }
        tokio::spawn(super::hosting::host_watch(Arc::downgrade(&self.inner)));
        true
    }

    /// The node serving `namespace` when it is not this one, and the route to it.
    pub(crate) fn served_elsewhere(
        &self,
        namespace: &str,
    ) -> Option<(String, &Arc<dyn RemoteMemory>)> {
        let remote = self.inner.routing.remote()?;
        let node = self.inner.routing.served_by.get(namespace)?.clone();
        Some((node, remote))
    }
}
