//! Where a cluster activates an agent that is active nowhere: [`Placement`] (per agent, kept as
//! a record beside its definition) and [`choose`], the decision over this node and its peers.
//!
//! An agent without a placement is activated on the node asked, as on a single node. A
//! draining node is never chosen: its agents go to the least loaded of the others.

use serde::{Deserialize, Serialize};

/// The most tags in a placement or on a node.
pub const TAGS_MAX: usize = 16;

/// Where new activations of an agent go.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// This node only (its name, as in `[store] node`).
    #[serde(default)]
    pub node: Option<String>,
    /// A node with every one of these tags (`[cluster] tags`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Among the nodes allowed, the one with the fewest active agents; otherwise the node
    /// asked when it is allowed. For a memory namespace: each shard, as it is placed, on
    /// the allowed node hosting the fewest memory shards.
    #[serde(default)]
    pub least_loaded: bool,
}

impl Placement {
    /// Checks the node name and tags.
    ///
    /// # Errors
    /// What is wrong, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(node) = &self.node {
            crate::name::validate_node_name(node).map_err(|e| format!("node: {e}"))?;
        }
        if self.tags.len() > TAGS_MAX {
            return Err(format!("tags: at most {TAGS_MAX}"));
        }
        for tag in &self.tags {
            crate::name::validate_tag(tag).map_err(|e| format!("tags: {e}"))?;
        }
        Ok(())
    }

    /// True for the default: activate where asked.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// A node that could activate an agent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Candidate {
    /// Its name.
    pub node: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its active agents.
    pub load: usize,
    /// True while it is being drained.
    pub draining: bool,
}

/// Chooses where to activate an agent with `placement`: `Ok(None)` for this node (`here`),
/// `Ok(Some(node))` for a peer.
///
/// # Errors
/// No node satisfies the placement (the named node is not reachable, or no reachable node has
/// the tags).
pub fn choose(
    placement: &Placement,
    here: &Candidate,
    peers: &[Candidate],
) -> Result<Option<String>, String> {
    let allowed = |c: &Candidate| {
        !c.draining
            && placement.node.as_ref().is_none_or(|n| *n == c.node)
            && placement.tags.iter().all(|t| c.tags.contains(t))
    };
    if allowed(here) && !placement.least_loaded {
        return Ok(None);
    }
    let best_peer = peers
        .iter()
        .filter(|c| c.node != here.node && allowed(c))
        .min_by(|a, b| a.load.cmp(&b.load).then_with(|| a.node.cmp(&b.node)));
    match best_peer {
        // Ties go to this node: no hop.
        Some(peer) if !allowed(here) || peer.load < here.load => Ok(Some(peer.node.clone())),
        _ if allowed(here) => Ok(None),
        // A draining node with no peer to take its agents keeps serving them.
        None if here.draining && placement.is_default() => Ok(None),
        _ => Err(match (&placement.node, placement.tags.is_empty()) {
            (Some(node), _) => format!("placement: node {node:?} is not reachable"),
            (None, false) => format!(
                "placement: no reachable node has the tags {:?}",
                placement.tags
            ),
            (None, true) => "placement: no node can take the agent".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, tags: &[&str], load: usize) -> Candidate {
        Candidate {
            node: name.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            load,
            draining: false,
        }
    }

    #[test]
    fn the_default_is_the_node_asked_and_least_loaded_picks_the_emptiest() {
        let here = node("a", &[], 5);
        let peers = [node("b", &[], 2), node("c", &[], 1)];
        assert_eq!(choose(&Placement::default(), &here, &peers), Ok(None));
        let least = Placement {
            least_loaded: true,
            ..Placement::default()
        };
        assert_eq!(choose(&least, &here, &peers), Ok(Some("c".into())));
        // A tie stays here.
        assert_eq!(choose(&least, &node("a", &[], 1), &peers), Ok(None));
    }

    #[test]
    fn a_named_node_or_tags_are_obeyed_or_refused() {
        let here = node("a", &[], 0);
        let peers = [node("b", &["gpu"], 9), node("c", &["gpu", "eu"], 3)];
        let on_b = Placement {
            node: Some("b".into()),
            ..Placement::default()
        };
        assert_eq!(choose(&on_b, &here, &peers), Ok(Some("b".into())));
        let on_a = Placement {
            node: Some("a".into()),
            ..Placement::default()
        };
        assert_eq!(choose(&on_a, &here, &peers), Ok(None));
        let on_z = Placement {
            node: Some("z".into()),
            ..Placement::default()
        };
        assert!(choose(&on_z, &here, &peers).unwrap_err().contains("\"z\""));
        let gpu = Placement {
            tags: vec!["gpu".into()],
            ..Placement::default()
        };
        // Not here; the least loaded of the tagged peers.
        assert_eq!(choose(&gpu, &here, &peers), Ok(Some("c".into())));
        let tpu = Placement {
            tags: vec!["tpu".into()],
            ..Placement::default()
        };
        assert!(choose(&tpu, &here, &peers).unwrap_err().contains("tpu"));
    }

    #[test]
    fn a_draining_node_sends_its_agents_elsewhere_unless_alone() {
        let mut here = node("a", &[], 0);
        here.draining = true;
        let peers = [node("b", &[], 4), node("c", &[], 2)];
        assert_eq!(
            choose(&Placement::default(), &here, &peers),
            Ok(Some("c".into()))
        );
        let mut draining_c = peers.clone();
        draining_c[1].draining = true;
        assert_eq!(
            choose(&Placement::default(), &here, &draining_c),
            Ok(Some("b".into()))
        );
        assert_eq!(choose(&Placement::default(), &here, &[]), Ok(None));
    }

    #[test]
    fn placements_are_validated() {
        assert!(Placement::default().validate().is_ok());
        let bad_node = Placement {
            node: Some("no spaces".into()),
            ..Placement::default()
        };
        assert!(bad_node.validate().unwrap_err().starts_with("node"));
        let bad_tag = Placement {
            tags: vec!["GPU".into()],
            ..Placement::default()
        };
        assert!(bad_tag.validate().unwrap_err().starts_with("tags"));
        let many = Placement {
            tags: (0..=TAGS_MAX).map(|i| format!("t{i}")).collect(),
            ..Placement::default()
        };
        assert!(many.validate().is_err());
    }
}
