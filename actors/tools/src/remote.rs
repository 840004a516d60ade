//! Tools across the nodes of a cluster: a tool this node cannot run — an MCP server only
//! another node reaches, a plugin tool only another node has — is run by a node that can.
//!
//! ```text
//! ToolService::call ─ runs here? ─ yes ─► call_here (grants, schemas, cache, host actor)
//!                                  └ no ─► the node it was last run on, else each peer:
//!                                          RemoteTools::call(node) ─► node: call_here
//! ```
//!
//! The node asked runs the call itself with its own grants and schemas ([`ToolService::
//! call_here`] never forwards), so a call never bounces between nodes. A peer that does not
//! have the tool answers `not_found` and the next is asked; a call lost with its node after
//! it was sent is not repeated elsewhere (a tool may have side effects): the caller gets
//! `crashed`, which says so.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::TOOL_TIMEOUT_MAX;
use super::registry::ToolRequirement;
use super::service::{CallContext, ToolCallError, ToolService};

/// Requirements whose node is remembered at most (the map is emptied when full).
const LOCATED_MAX: usize = 10_000;

/// A tool call sent to another node. Fields are matched by name on the wire: never rename
/// one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemoteToolCall {
    /// The requirement, as text (`name` or `name@range`).
    pub requirement: String,
    /// The arguments.
    pub args: Value,
    /// Who calls.
    pub ctx: CallContext,
}

/// A forwarded call that got no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ToolForwardError {
    /// False when nothing reached the node (safe to ask another).
    pub sent: bool,
    /// Why.
    pub reason: String,
}

/// How tools reach the other nodes of a cluster (implemented by the runtime over
/// ractor_cluster); the node asked runs [`ToolService::call_here`].
#[async_trait::async_trait]
pub trait RemoteTools: Send + Sync + 'static {
    /// The names of the other nodes reachable now.
    fn peers(&self) -> Vec<String>;

    /// [`ToolService::call_here`] on `node`, waiting at most `timeout`: its answer, or why
    /// there was none.
    ///
    /// # Errors
    /// [`ToolForwardError`] when the node did not answer.
    async fn call(
        &self,
        node: &str,
        call: RemoteToolCall,
        timeout: Duration,
    ) -> Result<Result<Value, ToolCallError>, ToolForwardError>;
}

impl ToolService {
    /// Connects the tools to the other nodes of a cluster. Set once; later calls return
    /// false.
    pub fn set_remote(&self, remote: std::sync::Arc<dyn RemoteTools>) -> bool {
        self.remote_cell().set(remote).is_ok()
    }

    /// Runs a call this node cannot run on a node that can: the one it last ran on first,
    /// then every other reachable peer. `not_here` is why it cannot run here.
    pub(super) async fn call_elsewhere(
        &self,
        requirement: &ToolRequirement,
        args: Value,
        ctx: &CallContext,
        not_here: String,
    ) -> Result<Value, ToolCallError> {
        let Some(remote) = self.remote_cell().get() else {
            return Err(ToolCallError::NotFound {
                requirement: not_here,
            });
        };
        let key = requirement.to_string();
        let mut nodes = remote.peers();
        nodes.sort();
        if let Some(last) = self.located().get(&key).map(|n| n.clone())
            && let Some(i) = nodes.iter().position(|n| *n == last)
        {
            let last = nodes.remove(i);
            nodes.insert(0, last);
        }
        // Its manifest here, when known, gives the timeout; otherwise the longest allowed.
        // The node asked may queue the call for a busy host up to that long again before
        // running it: a caller that gave up sooner would report a call still running as lost.
        let timeout = self
            .registry()
            .resolve(requirement)
            .map_or(TOOL_TIMEOUT_MAX, |m| m.timeout)
            * 2
            + Duration::from_secs(2);
        let call = RemoteToolCall {
            requirement: key.clone(),
            args,
            ctx: ctx.clone(),
        };
        let mut unasked = Vec::new();
        for node in nodes {
            match remote.call(&node, call.clone(), timeout).await {
                Ok(Err(ToolCallError::NotFound { .. })) => {}
                Ok(answer) => {
                    let located = &self.located();
                    if located.len() >= LOCATED_MAX {
                        located.clear();
                    }
                    located.insert(key, node);
                    return answer;
                }
                Err(e) if !e.sent => {
                    tracing::debug!(tool = %key, %node, error = %e, "tool call not sent to a node");
                    unasked.push(format!("{node}: {e}"));
                }
                Err(e) => {
                    self.located().remove(&key);
                    return Err(ToolCallError::Crashed {
                        tool: key,
                        detail: format!(
                            "node {node}, which was running the call, was lost (the call may have run): {e}"
                        ),
                    });
                }
            }
        }
        if !unasked.is_empty() {
            // Maybe one of them has it: not "no such tool", but "cannot be run now".
            return Err(ToolCallError::Failed {
                tool: key,
                message: format!(
                    "this node cannot run it and no node asked could; not asked: {}",
                    unasked.join("; ")
                ),
            });
        }
        Err(ToolCallError::NotFound {
            requirement: format!("{not_here}; no other node of the cluster has it"),
        })
    }

    /// Answers a call another node sent (see [`RemoteToolCall`]).
    ///
    /// # Errors
    /// [`ToolCallError`] from the call; an unparsable requirement is `not_found`.
    pub async fn serve_remote(&self, call: RemoteToolCall) -> Result<Value, ToolCallError> {
        let requirement =
            ToolRequirement::parse(&call.requirement).map_err(|e| ToolCallError::NotFound {
                requirement: format!("{}: {e}", call.requirement),
            })?;
        self.call_here(&requirement, call.args, &call.ctx).await
    }

    /// Brings this node's tool registry up to the shared store (see
    /// [`super::ToolRegistry::sync_from_store`]), keeping the tools this node runs. Returns
    /// how many manifests changed.
    ///
    /// # Errors
    /// Store failures.
    pub async fn sync_tools(&self) -> Result<usize, super::ToolRegistryError> {
        self.registry()
            .sync_from_store(|id| self.runs_here(id))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_and_its_errors_cross_the_wire_unchanged() {
        let call = RemoteToolCall {
            requirement: "t__echo@^1".into(),
            args: serde_json::json!({"text": "hi"}),
            ctx: CallContext {
                agent: "a".into(),
                role: "executor".into(),
                tenant: "t".into(),
                instance: "s-1".into(),
            },
        };
        let back: RemoteToolCall =
            serde_json::from_str(&serde_json::to_string(&call).unwrap()).unwrap();
        assert_eq!(back, call);
        let errors = [
            ToolCallError::NotFound {
                requirement: "x".into(),
            },
            ToolCallError::Timeout {
                tool: "x".into(),
                after_ms: 5,
            },
            ToolCallError::InvalidArguments {
                tool: "x".into(),
                violations: crate::Violations(vec![crate::Violation {
                    path: "/a".into(),
                    message: "bad".into(),
                }]),
            },
        ];
        for e in errors {
            let back: ToolCallError =
                serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
            assert_eq!(back, e);
        }
    }
}
