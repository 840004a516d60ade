//! The scheduler's wait queue with its policies: FIFO, round-robin (fair across tenants, then
//! across agents within a tenant) and priority.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

/// How queued requests are ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueuePolicy {
    /// First come, first served.
    Fifo,
    /// Round-robin across tenants, and across agents within each tenant: an agent with many
    /// queued requests does not starve one with few.
    #[default]
    RoundRobin,
    /// Highest priority first; FIFO among equals.
    Priority,
}

/// A queued item's owner, used by round-robin.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    /// The tenant.
    pub tenant: String,
    /// The agent.
    pub agent: String,
}

struct TenantQueue<T> {
    agents: VecDeque<String>,
    per_agent: HashMap<String, VecDeque<T>>,
}

impl<T> Default for TenantQueue<T> {
    fn default() -> Self {
        Self {
            agents: VecDeque::new(),
            per_agent: HashMap::new(),
        }
    }
}

/// The wait queue.
pub struct RequestQueue<T> {
    policy: QueuePolicy,
    len: usize,
    seq: u64,
    fifo: VecDeque<T>,
    priority: BTreeMap<(std::cmp::Reverse<u8>, u64), T>,
    tenants: VecDeque<String>,
    per_tenant: HashMap<String, TenantQueue<T>>,
}

impl<T> std::fmt::Debug for RequestQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestQueue")
            .field("policy", &self.policy)
            .field("len", &self.len)
            .field("tenants", &self.tenants.len())
            .finish_non_exhaustive()
    }
}

impl<T> RequestQueue<T> {
    /// An empty queue with `policy`.
    pub fn new(policy: QueuePolicy) -> Self {
        Self {
            policy,
            len: 0,
            seq: 0,
            fifo: VecDeque::new(),
            priority: BTreeMap::new(),
            tenants: VecDeque::new(),
            per_tenant: HashMap::new(),
        }
    }

    /// Queued items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds an item.
    pub fn push(&mut self, owner: &Owner, priority: u8, item: T) {
        self.len += 1;
        self.seq += 1;
        match self.policy {
            QueuePolicy::Fifo => self.fifo.push_back(item),
            QueuePolicy::Priority => {
                self.priority
                    .insert((std::cmp::Reverse(priority), self.seq), item);
            }
            QueuePolicy::RoundRobin => {
                if !self.per_tenant.contains_key(&owner.tenant) {
                    self.tenants.push_back(owner.tenant.clone());
                }
                let t = self.per_tenant.entry(owner.tenant.clone()).or_default();
                let q = t.per_agent.entry(owner.agent.clone()).or_default();
                if q.is_empty() {
                    t.agents.push_back(owner.agent.clone());
                }
                q.push_back(item);
            }
        }
    }

    /// The item [`RequestQueue::pop`] would return.
    pub fn peek(&self) -> Option<&T> {
        match self.policy {
            QueuePolicy::Fifo => self.fifo.front(),
            QueuePolicy::Priority => self.priority.values().next(),
            QueuePolicy::RoundRobin => {
                let t = self.per_tenant.get(self.tenants.front()?)?;
                t.per_agent.get(t.agents.front()?)?.front()
            }
        }
    }

    /// Takes the next item by the policy.
    pub fn pop(&mut self) -> Option<T> {
        let item = match self.policy {
            QueuePolicy::Fifo => self.fifo.pop_front(),
            QueuePolicy::Priority => self.priority.pop_first().map(|(_, v)| v),
            QueuePolicy::RoundRobin => self.pop_round_robin(),
        }?;
        self.len -= 1;
        Some(item)
    }

    fn pop_round_robin(&mut self) -> Option<T> {
        let tenant = self.tenants.pop_front()?;
        let t = self.per_tenant.get_mut(&tenant)?;
        let agent = t.agents.pop_front()?;
        let q = t.per_agent.get_mut(&agent)?;
        let item = q.pop_front();
        if q.is_empty() {
            t.per_agent.remove(&agent);
        } else {
            t.agents.push_back(agent);
        }
        if t.agents.is_empty() {
            self.per_tenant.remove(&tenant);
        } else {
            self.tenants.push_back(tenant);
        }
        item
    }

    /// Removes and returns every item matching `pred` (for cancellation).
    pub fn remove_where(&mut self, mut pred: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut out = Vec::new();
        match self.policy {
            QueuePolicy::Fifo => {
                let (gone, keep): (VecDeque<T>, VecDeque<T>) = std::mem::take(&mut self.fifo)
                    .into_iter()
                    .partition(|i| pred(i));
                self.fifo = keep;
                out.extend(gone);
            }
            QueuePolicy::Priority => {
                let keys: Vec<_> = self
                    .priority
                    .iter()
                    .filter(|(_, v)| pred(v))
                    .map(|(k, _)| *k)
                    .collect();
                out.extend(keys.into_iter().filter_map(|k| self.priority.remove(&k)));
            }
            QueuePolicy::RoundRobin => {
                for t in self.per_tenant.values_mut() {
                    for q in t.per_agent.values_mut() {
                        let (gone, keep): (VecDeque<T>, VecDeque<T>) =
                            std::mem::take(q).into_iter().partition(|i| pred(i));
                        *q = keep;
                        out.extend(gone);
                    }
                    t.per_agent.retain(|_, q| !q.is_empty());
                    let per_agent = &t.per_agent;
                    t.agents.retain(|a| per_agent.contains_key(a));
                }
                self.per_tenant.retain(|_, t| !t.agents.is_empty());
                let per_tenant = &self.per_tenant;
                self.tenants.retain(|t| per_tenant.contains_key(t));
            }
        }
        self.len -= out.len();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn owner(tenant: &str, agent: &str) -> Owner {
        Owner {
            tenant: tenant.into(),
            agent: agent.into(),
        }
    }

    #[test]
    fn round_robin_alternates_agents_and_tenants() {
        let mut q = RequestQueue::new(QueuePolicy::RoundRobin);
        for i in 0..4 {
            q.push(&owner("t1", "greedy"), 0, format!("g{i}"));
        }
        q.push(&owner("t1", "modest"), 0, "m0".to_string());
        q.push(&owner("t2", "other"), 0, "o0".to_string());
        let order: Vec<String> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, ["g0", "o0", "m0", "g1", "g2", "g3"]);
    }

    #[test]
    fn priority_then_fifo_and_removal() {
        let mut q = RequestQueue::new(QueuePolicy::Priority);
        let o = owner("t", "a");
        q.push(&o, 1, 1);
        q.push(&o, 9, 2);
        q.push(&o, 1, 3);
        q.push(&o, 9, 4);
        assert_eq!(q.remove_where(|v| *v == 4), vec![4]);
        let order: Vec<i32> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, [2, 1, 3]);
    }

    proptest! {
        /// Whatever the policy and the operations, every pushed item comes out exactly once,
        /// `len` is exact, `peek` agrees with `pop`, and each agent's items stay in order.
        #[test]
        fn items_are_conserved(ops in proptest::collection::vec((0u8..3, 0u8..3, 0u8..4, any::<bool>()), 1..200),
                               policy in prop_oneof![Just(QueuePolicy::Fifo), Just(QueuePolicy::RoundRobin), Just(QueuePolicy::Priority)]) {
            let mut q = RequestQueue::new(policy);
            let mut pushed = 0u32;
            let mut seen = Vec::new();
            for (tenant, agent, prio, pop) in ops {
                if pop {
                    let peeked = q.peek().copied();
                    let got = q.pop();
                    prop_assert_eq!(peeked.map(|v: (u8, u8, u32)| v), got);
                    seen.extend(got);
                } else {
                    q.push(&owner(&tenant.to_string(), &agent.to_string()), prio, (tenant, agent, pushed));
                    pushed += 1;
                }
                prop_assert_eq!(q.len() as u32, pushed - seen.len() as u32);
            }
            let removed = q.remove_where(|v| v.2 % 2 == 0);
            seen.extend(removed);
            seen.extend(std::iter::from_fn(|| q.pop()));
            prop_assert!(q.is_empty());
            let mut ids: Vec<u32> = seen.iter().map(|v| v.2).collect();
            ids.sort_unstable();
            prop_assert_eq!(ids, (0..pushed).collect::<Vec<_>>());
        }
    }
}
