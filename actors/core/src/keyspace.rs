//! The storage key space: every prefix the system writes into its snapshot store (sled, or
//! PostgreSQL's `<ns>_snapshots` and `<ns>_leases`), with its owner, tenant scope, lease or
//! fence, and durability. This is the system's real schema: owners build their keys from
//! these constants, and usage accounting, retention and backup read them from [`PREFIXES`]
//! instead of spelling literals. ARCHITECTURE.md renders [`markdown_table`] (a test keeps the
//! two equal).
//!
//! Conventions:
//! - Tenant-scoped names (agents, memory namespaces) enter keys already scoped, as
//!   `<tenant>.<name>` ([`TENANT_SEP`]); names never hold `/` or `@`.
//! - On a shared (PostgreSQL) store, records that each node appends to on its own take a
//!   per-node form, `<family>@<node>/…` ([`NODE_SEP`]), so nodes never write each other's keys.
//! - Numbers in keys are zero-padded so that the lexical order is the numeric order.
//!
//! Architecture invariant: no scanned prefix is a prefix of another family's prefix, so a
//! scan of one family never returns another's records (tested below).

/// The prefix of every key, for a scan of the whole store (usage, backup).
pub const ALL: &str = "";
/// Separates the tenant from a name inside keys: `acme.writer`.
pub const TENANT_SEP: char = '.';
/// Joins a per-node family to its node: `audit@node-1/…`.
pub const NODE_SEP: char = '@';

/// Agent actor snapshots: `agent/<tenant>.<agent>/<instance>`.
pub const AGENT_SNAPSHOT: &str = "agent/";
/// Agent transcripts: `agentlog/<tenant>.<agent>/<instance>/<seq:012>`.
pub const AGENT_TRANSCRIPT: &str = "agentlog/";
/// Agent definitions: `agentdef/<tenant>.<agent>/head` and `…/v/<version:010>`.
pub const AGENT_DEF: &str = "agentdef/";
/// Agent placements: `placement/<tenant>.<agent>`.
pub const AGENT_PLACEMENT: &str = "placement/";
/// Memory items: `mem/<tenant>.<ns>/<generation:06>/<shard:04>/<id:016x>`.
pub const MEMORY_ITEMS: &str = "mem/";
/// Memory namespace metadata: `memns/<tenant>.<ns>`.
pub const MEMORY_NAMESPACE: &str = "memns/";
/// Memory namespace placements: `memplace/<tenant>.<ns>`.
pub const MEMORY_PLACEMENT: &str = "memplace/";
/// Leases (not records) of the node serving a namespace, `memserve/<tenant>.<ns>`, and of
/// the node hosting one of its shards, `memserve/<tenant>.<ns>/<shard:04>`.
pub const MEMORY_SERVE_LEASE: &str = "memserve/";
/// The cost ledger of a node-local store: `cost/<scope>/<id>`.
pub const COST: &str = "cost/";
/// The cost ledger on a shared store, one per node: `cost@<node>/<scope>/<id>`.
pub const COST_PER_NODE: &str = "cost@";
/// Session metadata: `sessmeta/<session>`.
pub const SESSION_META: &str = "sessmeta/";
/// Session entries: `sesslog/<session>/<seq:012>`.
pub const SESSION_LOG: &str = "sesslog/";
/// Run actor snapshots: `run/<run>`.
pub const RUN: &str = "run/";
/// The index of unfinished runs: `runidx/<run>`.
pub const RUN_INDEX: &str = "runidx/";
/// Schedules: `sched/<schedule>`.
pub const SCHEDULE: &str = "sched/";
/// The lease (not a record) of the node that fires schedules.
pub const SCHEDULES_LEADER_LEASE: &str = "schedules-leader";
/// Tool manifests: `toolman/<tool>/<version>`.
pub const TOOL_MANIFEST: &str = "toolman/";
/// Tool version pins: `toolpin/<tool>`.
pub const TOOL_PIN: &str = "toolpin/";
/// Tool usage counters: `toolusage/<tool>@<version>`.
pub const TOOL_USAGE: &str = "toolusage/";
/// Tool grants (one record).
pub const TOOL_GRANTS: &str = "toolgrants";
/// MCP servers: `mcpsrv/<server>`.
pub const MCP_SERVER: &str = "mcpsrv/";
/// Request quotas of a node-local store: `quota/<tenant>`.
pub const QUOTA: &str = "quota/";
/// Request quotas on a shared store, one per node: `quota@<node>/<tenant>`.
pub const QUOTA_PER_NODE: &str = "quota@";
/// Token and cost quota baselines: `quotabase/<tenant>`.
pub const QUOTA_BASE: &str = "quotabase/";
/// Webhook subscriptions: `whsub/<subscription>`.
pub const WEBHOOK_SUBSCRIPTION: &str = "whsub/";
/// Webhook delivery queue: `whq/<seq:020>`, on a shared store `whq@<node>/<seq:020>`.
pub const WEBHOOK_QUEUE: &str = "whq/";
/// Webhook delivery queue on a shared store, one per node.
pub const WEBHOOK_QUEUE_PER_NODE: &str = "whq@";
/// Webhook dead letters: `whdead/<seq:020>`.
pub const WEBHOOK_DEAD: &str = "whdead/";
/// Webhook dead letters on a shared store, one per node.
pub const WEBHOOK_DEAD_PER_NODE: &str = "whdead@";
/// The next webhook delivery sequence number (one record).
pub const WEBHOOK_SEQ: &str = "whseq";
/// The next webhook delivery sequence number on a shared store: `whseq@<node>`.
pub const WEBHOOK_SEQ_PER_NODE: &str = "whseq@";
/// The audit chain: `audit/<seq:020>`. Part of the signed checkpoint: never change it.
pub const AUDIT: &str = "audit/";
/// The audit chains on a shared store, one per node: `audit@<node>/<seq:020>`.
pub const AUDIT_PER_NODE: &str = "audit@";
/// The audit chain's head (one record; `auditlog-head@<node>` on a shared store).
pub const AUDIT_HEAD: &str = "auditlog-head";
/// The audit chain's head on a shared store, one per node: `auditlog-head@<node>`.
pub const AUDIT_HEAD_PER_NODE: &str = "auditlog-head@";
/// The audit chain's signed prune checkpoint (one record; `auditlog-checkpoint@<node>` on a
/// shared store).
pub const AUDIT_CHECKPOINT: &str = "auditlog-checkpoint";
/// The audit chain's signed prune checkpoint on a shared store: `auditlog-checkpoint@<node>`.
pub const AUDIT_CHECKPOINT_PER_NODE: &str = "auditlog-checkpoint@";
/// API keys (hashes only): `apikey/<key id>`.
pub const API_KEY: &str = "apikey/";
/// Idempotency records: `idem/<key id>/<sha256 of method, path and idempotency key>`.
pub const IDEMPOTENCY: &str = "idem/";
/// Interface preferences: `prefs/<key id>`.
pub const PREFERENCES: &str = "prefs/";

/// What a family's keys are: records under a prefix, one record, or a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// Records under the prefix.
    Prefix,
    /// One record with exactly this key (its per-node form, if any, is a separate family).
    Single,
    /// A lease in the store's lease table, never a record.
    Lease,
}

/// Whose a family's records are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// A tenant's; the tenant is the `<tenant>.` part of the key's first segment.
    TenantInName,
    /// A tenant's; the key's first segment is the tenant.
    TenantSegment,
    /// A tenant's; the tenant is a field of the value.
    TenantInValue,
    /// A tenant's, through the API key named in the key.
    ApiKey,
    /// The node's (or, on a shared store, the cluster's).
    Node,
    /// One node's, on a shared store: `<family>@<node>/…`.
    PerNode,
    /// A tenant's, kept per node on a shared store: `<family>@<node>/<tenant>`.
    TenantAfterNode,
}

/// What keeps two nodes from writing a family's records at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guard {
    /// Nothing: writes are serialised in the process, and the last writer wins across nodes.
    None,
    /// The record's key is itself a lease (single activation); every write carries its epoch.
    OwnLease,
    /// Writes are fenced by the store (`SnapshotStore::fence_prefix`) under a lease.
    Fence(&'static str),
    /// Each node writes only its own per-node keys.
    NodePartition,
    /// Written only by the lease's holder (checked before each write, not fenced).
    HeldLease(&'static str),
}

/// One family of keys.
#[derive(Clone, Copy, Debug)]
pub struct Family {
    /// The constant the key starts with.
    pub prefix: &'static str,
    /// The whole key, with its parts in angle brackets.
    pub pattern: &'static str,
    /// What its keys are.
    pub form: Form,
    /// The module that writes it.
    pub owner: &'static str,
    /// Whose its records are.
    pub scope: Scope,
    /// Its lease or fence.
    pub guard: Guard,
    /// How it is written.
    pub durability: &'static str,
    /// The kind `GET /v1/usage/disk` counts it under.
    pub usage: &'static str,
    /// What removes old records, if anything.
    pub retention: &'static str,
}

#[allow(
    clippy::too_many_arguments,
    reason = "one row of the table, each column named"
)]
const fn family(
    prefix: &'static str,
    pattern: &'static str,
    form: Form,
    owner: &'static str,
    scope: Scope,
    guard: Guard,
    durability: &'static str,
    usage: &'static str,
    retention: &'static str,
) -> Family {
    Family {
        prefix,
        pattern,
        form,
        owner,
        scope,
        guard,
        durability,
        usage,
        retention,
    }
}

use Form::{Lease, Prefix as Records, Single};
use Guard::{Fence, HeldLease, NodePartition, OwnLease};
use Scope::{ApiKey, Node, PerNode, TenantAfterNode, TenantInName, TenantInValue, TenantSegment};

/// Every family, in the order of ARCHITECTURE.md's table.
#[rustfmt::skip]
pub const PREFIXES: &[Family] = &[
    family(AGENT_SNAPSHOT, "agent/<tenant>.<agent>/<instance>", Records, "agent::AgentSystem (through the supervisor)", TenantInName, OwnLease, "durable snapshot per message", "agents", "deleted with the agent, session or run step"),
    family(AGENT_TRANSCRIPT, "agentlog/<tenant>.<agent>/<instance>/<seq:012>", Records, "agent::transcript", TenantInName, HeldLease("agent/<tenant>.<agent>/<instance>"), "buffered, durable with the agent's snapshot", "transcripts", "retention::prune_transcripts; a cap per instance"),
    family(AGENT_DEF, "agentdef/<tenant>.<agent>/head, …/v/<version:010>", Records, "agent::AgentRegistry", TenantInName, Guard::None, "version buffered, head durable", "definitions", "versions capped per agent"),
    family(AGENT_PLACEMENT, "placement/<tenant>.<agent>", Records, "agent::AgentSystem", TenantInName, Guard::None, "durable", "definitions", "none"),
    family(MEMORY_ITEMS, "mem/<tenant>.<ns>/<generation:06>/<shard:04>/<id:016x>", Records, "memory (shards, migrations)", TenantInName, Fence("memserve/<tenant>.<ns>[/<shard:04>]"), "buffered batch and one flush", "memory", "expiry cleanup; stale generations"),
    family(MEMORY_NAMESPACE, "memns/<tenant>.<ns>", Records, "memory::MemoryStore", TenantInName, Guard::None, "durable", "memory", "none (namespaces are kept)"),
    family(MEMORY_PLACEMENT, "memplace/<tenant>.<ns>", Records, "memory (spread)", TenantInName, Guard::None, "durable", "memory", "none"),
    family(MEMORY_SERVE_LEASE, "memserve/<tenant>.<ns>, memserve/<tenant>.<ns>/<shard:04>", Lease, "memory (spread)", TenantInName, Guard::None, "lease", "-", "-"),
    family(COST, "cost/<scope>/<id>", Records, "cost::CostLedger", Node, Guard::None, "buffered batch, flushed when a caller waits", "costs", "none"),
    family(COST_PER_NODE, "cost@<node>/<scope>/<id>", Records, "cost::CostLedger", PerNode, NodePartition, "buffered batch, flushed when a caller waits", "costs", "none"),
    family(SESSION_META, "sessmeta/<session>", Records, "orchestration::Sessions", TenantInValue, Guard::None, "durable", "sessions", "kept; rewritten by pruning"),
    family(SESSION_LOG, "sesslog/<session>/<seq:012>", Records, "orchestration::Sessions", TenantInValue, Guard::None, "durable", "sessions", "Orchestrator::prune_sessions; a cap per session"),
    family(RUN, "run/<run>", Records, "orchestration::Orchestrator (through the supervisor)", TenantInValue, OwnLease, "durable snapshot per message", "runs", "Orchestrator::prune_runs"),
    family(RUN_INDEX, "runidx/<run>", Records, "orchestration::Orchestrator", Node, Guard::None, "durable", "runs", "removed when the run ends"),
    family(SCHEDULE, "sched/<schedule>", Records, "orchestration::Schedules", TenantInValue, Guard::None, "durable", "schedules", "deleted with the schedule"),
    family(SCHEDULES_LEADER_LEASE, "schedules-leader", Lease, "orchestration::Schedules", Node, Guard::None, "lease", "-", "-"),
    family(TOOL_MANIFEST, "toolman/<tool>/<version>", Records, "tools::ToolRegistry", Node, Guard::None, "durable", "tools", "versions capped per tool"),
    family(TOOL_PIN, "toolpin/<tool>", Records, "tools::ToolRegistry", Node, Guard::None, "durable", "tools", "none"),
    family(TOOL_USAGE, "toolusage/<tool>@<version>", Records, "tools::ToolService", Node, Guard::None, "buffered, the last of a flush durable", "tools", "none"),
    family(TOOL_GRANTS, "toolgrants", Single, "tools::ToolService", Node, Guard::None, "durable", "tools", "none"),
    family(MCP_SERVER, "mcpsrv/<server>", Records, "tools::ToolService", Node, Guard::None, "durable", "tools", "deleted with the server"),
    family(QUOTA, "quota/<tenant>", Records, "daemon::quota", TenantSegment, Guard::None, "buffered", "quotas", "overwritten daily"),
    family(QUOTA_PER_NODE, "quota@<node>/<tenant>", Records, "daemon::quota", TenantAfterNode, NodePartition, "buffered", "quotas", "overwritten daily"),
    family(QUOTA_BASE, "quotabase/<tenant>", Records, "scheduler::TenantQuota", TenantSegment, Guard::None, "buffered", "quotas", "overwritten daily"),
    family(WEBHOOK_SUBSCRIPTION, "whsub/<subscription>", Records, "daemon::webhooks", TenantInValue, Guard::None, "durable", "webhooks", "deleted with the subscription"),
    family(WEBHOOK_QUEUE, "whq/<seq:020>", Records, "daemon::webhooks", Node, Guard::None, "buffered, then the sequence durable", "webhooks", "deleted when delivered"),
    family(WEBHOOK_QUEUE_PER_NODE, "whq@<node>/<seq:020>", Records, "daemon::webhooks", PerNode, NodePartition, "buffered, then the sequence durable", "webhooks", "deleted when delivered"),
    family(WEBHOOK_DEAD, "whdead/<seq:020>", Records, "daemon::webhooks", Node, Guard::None, "durable", "webhooks", "capped"),
    family(WEBHOOK_DEAD_PER_NODE, "whdead@<node>/<seq:020>", Records, "daemon::webhooks", PerNode, NodePartition, "durable", "webhooks", "capped"),
    family(WEBHOOK_SEQ, "whseq", Single, "daemon::webhooks", Node, Guard::None, "durable", "webhooks", "none"),
    family(WEBHOOK_SEQ_PER_NODE, "whseq@<node>", Records, "daemon::webhooks", PerNode, NodePartition, "durable", "webhooks", "none"),
    family(AUDIT, "audit/<seq:020>", Records, "daemon::audit", Node, Guard::None, "buffered, flushed for durable entries", "audit", "AuditLog::prune (signed checkpoint)"),
    family(AUDIT_PER_NODE, "audit@<node>/<seq:020>", Records, "daemon::audit", PerNode, NodePartition, "buffered, flushed for durable entries", "audit", "AuditLog::prune (signed checkpoint)"),
    family(AUDIT_HEAD, "auditlog-head", Single, "daemon::audit", Node, Guard::None, "buffered, flushed for durable entries", "audit", "none"),
    family(AUDIT_HEAD_PER_NODE, "auditlog-head@<node>", Records, "daemon::audit", PerNode, NodePartition, "buffered, flushed for durable entries", "audit", "none"),
    family(AUDIT_CHECKPOINT, "auditlog-checkpoint", Single, "daemon::audit", Node, Guard::None, "durable", "audit", "rewritten by AuditLog::prune"),
    family(AUDIT_CHECKPOINT_PER_NODE, "auditlog-checkpoint@<node>", Records, "daemon::audit", PerNode, NodePartition, "durable", "audit", "rewritten by AuditLog::prune"),
    family(API_KEY, "apikey/<key id>", Records, "daemon::keys", TenantInValue, Guard::None, "durable", "keys", "none (revoked keys are kept)"),
    family(IDEMPOTENCY, "idem/<key id>/<sha256>", Records, "daemon::idempotency", ApiKey, Guard::None, "durable", "idempotency", "swept after 24 h"),
    family(PREFERENCES, "prefs/<key id>", Records, "daemon::api (preferences)", ApiKey, Guard::None, "durable", "preferences", "none"),
];

/// The family a stored key belongs to (the longest prefix that matches), if any. Keys of
/// embedders' own actors (`Persistence::new("demo/…")`) belong to none.
pub fn family_of(key: &str) -> Option<&'static Family> {
    PREFIXES
        .iter()
        .filter(|f| match f.form {
            Single => key == f.prefix,
            Records => key.starts_with(f.prefix),
            Lease => false,
        })
        .max_by_key(|f| f.prefix.len())
}

/// The tenant a key names, for families scoped [`Scope::TenantInName`]
/// (`agent/acme.writer/main` → `acme`), [`Scope::TenantSegment`] (`quota/acme` → `acme`) or
/// [`Scope::TenantAfterNode`] (`quota@n1/acme` → `acme`).
/// Names without a tenant part (written before tenants existed) have none.
pub fn tenant_of(key: &str) -> Option<&str> {
    let family = family_of(key)?;
    let mut segments = key[family.prefix.len()..].split('/');
    let first = segments.next()?;
    match family.scope {
        Scope::TenantInName => first.split_once(TENANT_SEP).map(|(tenant, _)| tenant),
        Scope::TenantSegment => Some(first),
        Scope::TenantAfterNode => segments.next(),
        _ => None,
    }
}

/// A per-node prefix: `audit@` and `node-1` → `audit@node-1/`.
pub fn per_node(family: &str, node: &str) -> String {
    debug_assert!(
        family.ends_with(NODE_SEP),
        "{family:?} is not a per-node family"
    );
    format!("{family}{node}/")
}

/// An agent instance's snapshot key: `agent/<name>/<instance>`.
pub fn agent_snapshot_key(name: &str, instance: &str) -> String {
    format!("{AGENT_SNAPSHOT}{name}/{instance}")
}

/// An agent's placement record: `placement/<name>`.
pub fn agent_placement_key(name: &str) -> String {
    format!("{AGENT_PLACEMENT}{name}")
}

/// The prefix of a memory namespace's items: `mem/<ns>/`.
pub fn memory_items_prefix(ns: &str) -> String {
    format!("{MEMORY_ITEMS}{ns}/")
}

/// A memory namespace's placement record: `memplace/<ns>`.
pub fn memory_placement_key(ns: &str) -> String {
    format!("{MEMORY_PLACEMENT}{ns}")
}

/// The lease of the node serving memory namespace `ns`: `memserve/<ns>`.
pub fn memory_serve_lease(ns: &str) -> String {
    format!("{MEMORY_SERVE_LEASE}{ns}")
}

/// The lease of the node hosting shard `shard` of `ns`: `memserve/<ns>/<shard:04>`.
pub fn memory_shard_lease(ns: &str, shard: u32) -> String {
    format!("{MEMORY_SERVE_LEASE}{ns}/{shard:04}")
}

/// An API key's preferences record: `prefs/<key id>`.
pub fn preferences_key(key_id: &str) -> String {
    format!("{PREFERENCES}{key_id}")
}

fn scope_text(s: Scope) -> &'static str {
    match s {
        Scope::TenantInName => "tenant (`<tenant>.` of the name)",
        Scope::TenantSegment => "tenant (key segment)",
        Scope::TenantInValue => "tenant (in the value)",
        Scope::ApiKey => "API key",
        Scope::Node => "node",
        Scope::PerNode => "one node of a shared store",
        Scope::TenantAfterNode => "tenant (key segment after the node)",
    }
}

fn guard_text(g: Guard) -> String {
    match g {
        Guard::None => "none".into(),
        Guard::OwnLease => "its own key is the lease".into(),
        Guard::Fence(lease) => format!("fenced under `{lease}`"),
        Guard::NodePartition => "per-node keys".into(),
        Guard::HeldLease(lease) => format!("written by the holder of `{lease}`"),
    }
}

/// The key space as the markdown table ARCHITECTURE.md holds.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| key | owner | scope | lease or fence | durability | usage kind | removed by |\n|---|---|---|---|---|---|---|\n",
    );
    for f in PREFIXES {
        let kind = match f.form {
            Lease => " (lease)",
            Single | Records => "",
        };
        out.push_str(&format!(
            "| `{}`{kind} | `{}` | {} | {} | {} | {} | {} |\n",
            f.pattern,
            f.owner,
            scope_text(f.scope),
            guard_text(f.guard),
            f.durability,
            f.usage,
            f.retention
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_scanned_prefix_overlaps_another_family() {
        for a in PREFIXES.iter().filter(|f| f.form == Records) {
            for b in PREFIXES {
                if a.prefix != b.prefix {
                    assert!(
                        !b.prefix.starts_with(a.prefix),
                        "a scan of {:?} would return {:?}",
                        a.prefix,
                        b.prefix
                    );
                }
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for f in PREFIXES {
            assert!(seen.insert(f.prefix), "{:?} is listed twice", f.prefix);
            assert!(f.pattern.starts_with(f.prefix), "{:?}", f.pattern);
        }
    }

    #[test]
    fn keys_find_their_family_and_tenant() {
        assert_eq!(
            family_of("agentlog/acme.w/main/000000000001").map(|f| f.prefix),
            Some(AGENT_TRANSCRIPT)
        );
        assert_eq!(
            family_of("agent/acme.w/main").map(|f| f.prefix),
            Some(AGENT_SNAPSHOT)
        );
        assert_eq!(family_of("whseq").map(|f| f.prefix), Some(WEBHOOK_SEQ));
        assert_eq!(
            family_of("whseq@n1").map(|f| f.prefix),
            Some(WEBHOOK_SEQ_PER_NODE)
        );
        assert_eq!(
            family_of("audit@n1/00000000000000000001").map(|f| f.prefix),
            Some(AUDIT_PER_NODE)
        );
        assert_eq!(family_of("demo/visits").map(|f| f.prefix), None);
        assert!(
            family_of("memserve/acme.kb").is_none(),
            "leases are not records"
        );
        assert_eq!(tenant_of("agent/acme.w/main"), Some("acme"));
        assert_eq!(
            tenant_of("mem/acme.kb/000001/0000/00000000000000ff"),
            Some("acme")
        );
        assert_eq!(tenant_of("quota/acme"), Some("acme"));
        assert_eq!(tenant_of("quota@n1/acme"), Some("acme"));
        assert_eq!(tenant_of("agent/w/main"), None);
        assert_eq!(tenant_of("run/abc"), None);
        assert_eq!(per_node(AUDIT_PER_NODE, "n1"), "audit@n1/");
        assert_eq!(memory_shard_lease("acme.kb", 3), "memserve/acme.kb/0003");
    }
}
