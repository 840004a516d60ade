//! A hierarchical navigable small-world graph (Malkov & Yashunin, 2016) over unit vectors,
//! ranked by dot product (cosine similarity).
//!
//! Layout for speed: every vector in one contiguous matrix, level-0 links in one flat array
//! (`2M` slots per node), upper levels only for the few nodes that have them, a visited set
//! stamped with a generation counter instead of cleared. Search takes a filter that is
//! applied to results but not to traversal, so a restrictive filter still finds its matches
//! (by exploring further) and never cuts the graph.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Mutex;

use super::vector::dot;

/// The most levels a node can have.
const LEVELS_MAX: usize = 16;

/// A node and its similarity to the query; ordered by similarity.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Near(f32, u32);

impl Eq for Near {}

impl PartialOrd for Near {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Near {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
    }
}

/// Min-heap adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Far(std::cmp::Reverse<Near>);

struct Visited {
    stamp: Vec<u32>,
    generation: u32,
}

impl Visited {
    fn reset(&mut self, n: usize) {
        if self.stamp.len() < n {
            self.stamp.resize(n, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.stamp.iter_mut().for_each(|s| *s = 0);
            self.generation = 1;
        }
    }

    /// Marks `i`; true when it was not marked yet.
    #[inline]
    fn insert(&mut self, i: u32) -> bool {
        let s = &mut self.stamp[i as usize];
        if *s == self.generation {
            false
        } else {
            *s = self.generation;
            true
        }
    }
}

/// The graph. Nodes are numbered from 0 in insertion order.
pub(crate) struct Hnsw {
    dim: usize,
    m: usize,
    m0: usize,
    ef_construction: usize,
    level_mult: f64,
    vectors: Vec<f32>,
    /// Level-0 links: node i's at `[i * m0 .. i * m0 + counts0[i]]`.
    links0: Vec<u32>,
    counts0: Vec<u16>,
    /// Links of levels 1.. for nodes that reach them: `upper[i][l - 1]`.
    upper: Vec<Vec<Vec<u32>>>,
    entry: Option<u32>,
    top_level: usize,
    rng: fastrand::Rng,
    visited: Mutex<Visited>,
}

impl Hnsw {
    /// An empty graph with `m` links per node and level (`2m` at level 0).
    pub(crate) fn new(dim: usize, m: usize, ef_construction: usize, capacity: usize) -> Self {
        let m = m.max(2);
        Self {
            dim,
            m,
            m0: 2 * m,
            ef_construction: ef_construction.max(m),
            level_mult: 1.0 / (m as f64).ln(),
            vectors: Vec::with_capacity(capacity * dim),
            links0: Vec::with_capacity(capacity * 2 * m),
            counts0: Vec::with_capacity(capacity),
            upper: Vec::with_capacity(capacity),
            entry: None,
            top_level: 0,
            rng: fastrand::Rng::with_seed(0x5eed),
            visited: Mutex::new(Visited {
                stamp: Vec::new(),
                generation: 0,
            }),
        }
    }

    /// Nodes in the graph.
    pub(crate) fn len(&self) -> usize {
        self.counts0.len()
    }

    /// Node `i`'s vector.
    pub(crate) fn vector_of(&self, i: u32) -> &[f32] {
        self.vector(i)
    }

    #[inline]
    fn vector(&self, i: u32) -> &[f32] {
        let start = i as usize * self.dim;
        &self.vectors[start..start + self.dim]
    }

    #[inline]
    fn links(&self, i: u32, level: usize) -> &[u32] {
        if level == 0 {
            let start = i as usize * self.m0;
            &self.links0[start..start + self.counts0[i as usize] as usize]
        } else {
            &self.upper[i as usize][level - 1]
        }
    }

    fn set_links(&mut self, i: u32, level: usize, links: &[u32]) {
        if level == 0 {
            let start = i as usize * self.m0;
            let n = links.len().min(self.m0);
            self.links0[start..start + n].copy_from_slice(&links[..n]);
            self.counts0[i as usize] = n as u16;
        } else {
            self.upper[i as usize][level - 1] = links.to_vec();
        }
    }

    fn random_level(&mut self) -> usize {
        let u = self.rng.f64().max(f64::MIN_POSITIVE);
        ((-u.ln() * self.level_mult) as usize).min(LEVELS_MAX - 1)
    }

    /// Greedy descent: the single nearest node at `level`, starting from `from`.
    fn greedy(&self, q: &[f32], mut from: Near, level: usize) -> Near {
        loop {
            let mut improved = false;
            for &n in self.links(from.1, level) {
                let s = dot(q, self.vector(n));
                if s > from.0 {
                    from = Near(s, n);
                    improved = true;
                }
            }
            if !improved {
                return from;
            }
        }
    }

    /// Beam search at one level: the best `ef` nodes accepted by `keep`, best first. The
    /// traversal itself goes through every node.
    fn search_level(
        &self,
        q: &[f32],
        entries: &[Near],
        ef: usize,
        level: usize,
        keep: &dyn Fn(u32) -> bool,
    ) -> Vec<Near> {
        let mut visited = self
            .visited
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        visited.reset(self.len());
        let mut candidates: BinaryHeap<Near> = BinaryHeap::new();
        let mut results: BinaryHeap<Far> = BinaryHeap::new();
        for &e in entries {
            visited.insert(e.1);
            candidates.push(e);
            if keep(e.1) {
                results.push(Far(std::cmp::Reverse(e)));
            }
        }
        // The worst similarity still in the results once they are full.
        let floor = |results: &BinaryHeap<Far>| {
            if results.len() >= ef {
                results.peek().map_or(f32::MIN, |w| (w.0).0.0)
            } else {
                f32::MIN
            }
        };
        while let Some(c) = candidates.pop() {
            if c.0 < floor(&results) {
                break;
            }
            for &n in self.links(c.1, level) {
                if !visited.insert(n) {
                    continue;
                }
                let s = dot(q, self.vector(n));
                if s > floor(&results) || results.len() < ef {
                    candidates.push(Near(s, n));
                    if keep(n) {
                        results.push(Far(std::cmp::Reverse(Near(s, n))));
                        if results.len() > ef {
                            results.pop();
                        }
                    }
                }
            }
        }
        let mut out: Vec<Near> = results.into_iter().map(|f| (f.0).0).collect();
        out.sort_by(|a, b| b.cmp(a));
        out
    }

    /// Malkov's heuristic: keep a candidate only if it is closer to the base than to every
    /// neighbour kept so far (spreads links across directions); fill up with the closest
    /// pruned ones so that nodes in tight clusters stay connected.
    fn select(&self, candidates: &[Near], max: usize) -> Vec<u32> {
        let mut kept: Vec<Near> = Vec::with_capacity(max);
        let mut pruned: Vec<Near> = Vec::new();
        for &c in candidates {
            if kept.len() >= max {
                break;
            }
            let v = self.vector(c.1);
            if kept.iter().all(|k| dot(v, self.vector(k.1)) < c.0) {
                kept.push(c);
            } else {
                pruned.push(c);
            }
        }
        for p in pruned {
            if kept.len() >= max {
                break;
            }
            kept.push(p);
        }
        kept.into_iter().map(|n| n.1).collect()
    }

    /// Adds a node (returns its number).
    pub(crate) fn insert(&mut self, v: &[f32]) -> u32 {
        debug_assert_eq!(v.len(), self.dim);
        let id = self.len() as u32;
        let level = self.random_level();
        self.vectors.extend_from_slice(v);
        self.links0.extend(std::iter::repeat_n(0, self.m0));
        self.counts0.push(0);
        self.upper.push(vec![Vec::new(); level]);
        let Some(entry) = self.entry else {
            self.entry = Some(id);
            self.top_level = level;
            return id;
        };
        let q = v.to_vec();
        let mut ep = Near(dot(&q, self.vector(entry)), entry);
        for l in (level + 1..=self.top_level).rev() {
            ep = self.greedy(&q, ep, l);
        }
        let mut entries = vec![ep];
        let all = |_: u32| true;
        for l in (0..=level.min(self.top_level)).rev() {
            let found = self.search_level(&q, &entries, self.ef_construction, l, &all);
            let max = if l == 0 { self.m0 } else { self.m };
            let neighbours = self.select(&found, self.m);
            self.set_links(id, l, &neighbours);
            for &n in &neighbours {
                let mut links = self.links(n, l).to_vec();
                if links.len() < max {
                    links.push(id);
                    self.set_links(n, l, &links);
                } else {
                    // Over capacity: re-select among the old links and the new node.
                    let base = self.vector(n);
                    let mut cands: Vec<Near> = links
                        .iter()
                        .chain(std::iter::once(&id))
                        .map(|&x| Near(dot(base, self.vector(x)), x))
                        .collect();
                    cands.sort_by(|a, b| b.cmp(a));
                    let chosen = self.select(&cands, max);
                    self.set_links(n, l, &chosen);
                }
            }
            entries = found;
        }
        if level > self.top_level {
            self.top_level = level;
            self.entry = Some(id);
        }
        id
    }

    /// The `k` nodes most similar to `q` among those `keep` accepts, best first, exploring
    /// at least `ef` candidates at level 0.
    pub(crate) fn search(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        keep: &dyn Fn(u32) -> bool,
    ) -> Vec<(u32, f32)> {
        let Some(entry) = self.entry else {
            return Vec::new();
        };
        let mut ep = Near(dot(q, self.vector(entry)), entry);
        for l in (1..=self.top_level).rev() {
            ep = self.greedy(q, ep, l);
        }
        let mut found = self.search_level(q, &[ep], ef.max(k), 0, keep);
        found.truncate(k);
        found.into_iter().map(|n| (n.1, n.0)).collect()
    }

    /// The top level of node `i` (for tests).
    #[cfg(test)]
    fn levels(&self, i: u32) -> usize {
        self.upper[i as usize].len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vector::normalize;

    fn unit(rng: &mut fastrand::Rng, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim).map(|_| rng.f32() - 0.5).collect();
        normalize(&mut v);
        v
    }

    #[test]
    fn finds_each_point_itself_and_keeps_link_bounds() {
        let mut rng = fastrand::Rng::with_seed(3);
        let vs: Vec<Vec<f32>> = (0..2000).map(|_| unit(&mut rng, 24)).collect();
        let mut g = Hnsw::new(24, 8, 64, 0);
        for v in &vs {
            g.insert(v);
        }
        for (i, v) in vs.iter().enumerate().step_by(37) {
            assert_eq!(g.search(v, 1, 32, &|_| true)[0].0, i as u32);
        }
        for i in 0..g.len() as u32 {
            assert!(g.links(i, 0).len() <= 16);
            for l in 1..=g.levels(i) {
                assert!(g.links(i, l).len() <= 8);
            }
        }
        // A filter that keeps a tenth of the nodes still yields k matches.
        let hits = g.search(&vs[5], 10, 32, &|n| n % 10 == 3);
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|h| h.0 % 10 == 3));
    }
}
