//! The vector index of one shard: exact search (a scan with the vectorised dot product) for
//! small shards, HNSW (our own, `hnsw.rs`) for large ones. Both search with a filter
//! applied during the search, so a filtered query still returns up to k matches.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use serde::{Deserialize, Serialize};

use super::hnsw::Hnsw;
use super::vector::dot;

/// Which index a namespace uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexKind {
    /// Exact below [`AnnParams::threshold`] items per shard, HNSW from there on.
    #[default]
    Auto,
    /// Always exact.
    Exact,
    /// Always HNSW.
    Ann,
}

/// HNSW settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnParams {
    /// Neighbours per node and layer (`M`), 4..=64.
    pub m: usize,
    /// Candidates explored while inserting, 16..=1024.
    pub ef_construction: usize,
    /// Candidates explored while searching (at least k), 16..=4096.
    pub ef_search: usize,
    /// Items per shard from which `Auto` switches to HNSW.
    pub threshold: usize,
}

impl Default for AnnParams {
    /// M 16, ef_construction 100, ef_search 64, threshold 20,000.
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 100,
            ef_search: 64,
            threshold: 20_000,
        }
    }
}

impl AnnParams {
    /// Checks the bounds.
    ///
    /// # Errors
    /// Names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(4..=64).contains(&self.m) {
            return Err("ann.m: must be 4..=64".into());
        }
        if !(16..=1024).contains(&self.ef_construction) {
            return Err("ann.ef_construction: must be 16..=1024".into());
        }
        if !(16..=4096).contains(&self.ef_search) {
            return Err("ann.ef_search: must be 16..=4096".into());
        }
        Ok(())
    }
}

/// A scored candidate; ordered so that a `BinaryHeap` is a min-heap on the score.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Scored(f32, u64);

impl Eq for Scored {}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.total_cmp(&self.0).then(other.1.cmp(&self.1))
    }
}

/// Keeps the best `k` of a stream of scores.
pub(crate) struct TopK {
    k: usize,
    heap: BinaryHeap<Scored>,
}

impl TopK {
    pub(crate) fn new(k: usize) -> Self {
        Self {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, score: f32, id: u64) {
        if self.heap.len() < self.k {
            self.heap.push(Scored(score, id));
        } else if let Some(worst) = self.heap.peek()
            && score > worst.0
        {
            self.heap.pop();
            self.heap.push(Scored(score, id));
        }
    }

    /// Best first.
    pub(crate) fn into_sorted(self) -> Vec<(u64, f32)> {
        let mut v: Vec<(u64, f32)> = self.heap.into_iter().map(|s| (s.1, s.0)).collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }
}

/// Exact search over a contiguous matrix.
#[derive(Default)]
struct Exact {
    dim: usize,
    ids: Vec<u64>,
    data: Vec<f32>,
    pos: HashMap<u64, usize>,
}

impl Exact {
    fn insert(&mut self, id: u64, v: &[f32]) {
        if let Some(&p) = self.pos.get(&id) {
            self.data[p * self.dim..(p + 1) * self.dim].copy_from_slice(v);
            return;
        }
        self.pos.insert(id, self.ids.len());
        self.ids.push(id);
        self.data.extend_from_slice(v);
    }

    fn remove(&mut self, id: u64) {
        let Some(p) = self.pos.remove(&id) else {
            return;
        };
        let last = self.ids.len() - 1;
        if p != last {
            let moved = self.ids[last];
            self.ids[p] = moved;
            self.data
                .copy_within(last * self.dim..(last + 1) * self.dim, p * self.dim);
            self.pos.insert(moved, p);
        }
        self.ids.pop();
        self.data.truncate(last * self.dim);
    }

    fn search(&self, q: &[f32], k: usize, keep: &dyn Fn(u64) -> bool) -> Vec<(u64, f32)> {
        let mut top = TopK::new(k);
        for (id, row) in self.ids.iter().zip(self.data.chunks_exact(self.dim)) {
            if keep(*id) {
                top.push(dot(q, row), *id);
            }
        }
        top.into_sorted()
    }
}

/// HNSW with tombstones: a removed item stays in the graph, filtered out of results, until
/// the shard rebuilds the index.
struct Ann {
    hnsw: Hnsw,
    /// Node → memory id; `None` once removed.
    slots: Vec<Option<u64>>,
    slot_of: HashMap<u64, u32>,
    ef_search: usize,
}

impl Ann {
    fn new(dim: usize, params: &AnnParams, capacity: usize) -> Self {
        Self {
            hnsw: Hnsw::new(dim, params.m, params.ef_construction, capacity),
            slots: Vec::with_capacity(capacity),
            slot_of: HashMap::with_capacity(capacity),
            ef_search: params.ef_search,
        }
    }

    fn insert(&mut self, id: u64, v: &[f32]) {
        self.remove(id);
        let node = self.hnsw.insert(v);
        debug_assert_eq!(node as usize, self.slots.len());
        self.slots.push(Some(id));
        self.slot_of.insert(id, node);
    }

    fn remove(&mut self, id: u64) {
        if let Some(node) = self.slot_of.remove(&id) {
            self.slots[node as usize] = None;
        }
    }

    fn search(&self, q: &[f32], k: usize, keep: &dyn Fn(u64) -> bool) -> Vec<(u64, f32)> {
        let filter = |node: u32| {
            self.slots
                .get(node as usize)
                .copied()
                .flatten()
                .is_some_and(keep)
        };
        self.hnsw
            .search(q, k, self.ef_search.max(k), &filter)
            .into_iter()
            .filter_map(|(node, similarity)| {
                Some((
                    self.slots.get(node as usize).copied().flatten()?,
                    similarity,
                ))
            })
            .collect()
    }

    fn tombstones(&self) -> usize {
        self.slots.len() - self.slot_of.len()
    }
}

enum Inner {
    Exact(Exact),
    Ann(Ann),
}

/// One shard's index.
pub struct VectorIndex {
    kind: IndexKind,
    params: AnnParams,
    dim: usize,
    inner: Inner,
}

impl std::fmt::Debug for VectorIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorIndex")
            .field("kind", &self.kind)
            .field("params", &self.params)
            .field("dim", &self.dim)
            .finish_non_exhaustive()
    }
}

impl VectorIndex {
    /// An empty index of `dim`-dimensional unit vectors.
    pub fn new(dim: usize, kind: IndexKind, params: AnnParams) -> Self {
        let inner = match kind {
            IndexKind::Ann => Inner::Ann(Ann::new(dim, &params, 0)),
            IndexKind::Auto | IndexKind::Exact => Inner::Exact(Exact {
                dim,
                ..Exact::default()
            }),
        };
        Self {
            kind,
            params,
            dim,
            inner,
        }
    }

    /// Builds an index over `items`.
    pub fn build<'a>(
        dim: usize,
        kind: IndexKind,
        params: AnnParams,
        items: impl ExactSizeIterator<Item = (u64, &'a [f32])>,
    ) -> Self {
        let n = items.len();
        let ann = match kind {
            IndexKind::Ann => true,
            IndexKind::Exact => false,
            IndexKind::Auto => n >= params.threshold,
        };
        if !ann {
            let mut index = Self::new(dim, IndexKind::Exact, params);
            index.kind = kind;
            for (id, v) in items {
                index.insert(id, v);
            }
            return index;
        }
        let mut a = Ann::new(dim, &params, n);
        for (id, v) in items {
            a.insert(id, v);
        }
        Self {
            kind,
            params,
            dim,
            inner: Inner::Ann(a),
        }
    }

    /// Items indexed.
    pub fn len(&self) -> usize {
        match &self.inner {
            Inner::Exact(e) => e.ids.len(),
            Inner::Ann(a) => a.slot_of.len(),
        }
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when the index is HNSW.
    pub fn is_ann(&self) -> bool {
        matches!(self.inner, Inner::Ann(_))
    }

    /// Adds or replaces `id`.
    pub fn insert(&mut self, id: u64, v: &[f32]) {
        debug_assert_eq!(v.len(), self.dim, "the shard checks dimensions");
        match &mut self.inner {
            Inner::Exact(e) => e.insert(id, v),
            Inner::Ann(a) => a.insert(id, v),
        }
    }

    /// Removes `id` (a tombstone in HNSW).
    pub fn remove(&mut self, id: u64) {
        match &mut self.inner {
            Inner::Exact(e) => e.remove(id),
            Inner::Ann(a) => a.remove(id),
        }
    }

    /// True when `Auto` should switch to HNSW, or HNSW holds too many tombstones: the shard
    /// then rebuilds the index from its items.
    pub fn wants_rebuild(&self) -> bool {
        match &self.inner {
            Inner::Exact(e) => self.kind == IndexKind::Auto && e.ids.len() >= self.params.threshold,
            Inner::Ann(a) => a.tombstones() > 1024 && a.tombstones() * 4 > a.slots.len(),
        }
    }

    /// The `k` best matches of unit vector `q` among the ids `keep` accepts, best first, as
    /// (id, cosine similarity).
    pub fn search(&self, q: &[f32], k: usize, keep: &dyn Fn(u64) -> bool) -> Vec<(u64, f32)> {
        if k == 0 {
            return Vec::new();
        }
        match &self.inner {
            Inner::Exact(e) => e.search(q, k, keep),
            Inner::Ann(a) => a.search(q, k, keep),
        }
    }

    /// The vector of `id`, if indexed.
    pub fn vector(&self, id: u64) -> Option<&[f32]> {
        match &self.inner {
            Inner::Exact(e) => e.pos.get(&id).map(|&p| &e.data[p * e.dim..(p + 1) * e.dim]),
            Inner::Ann(a) => a.slot_of.get(&id).map(|&node| a.hnsw.vector_of(node)),
        }
    }

    /// Changes how many candidates HNSW explores per query (no effect on exact search).
    pub fn set_ef_search(&mut self, ef: usize) {
        self.params.ef_search = ef;
        if let Inner::Ann(a) = &mut self.inner {
            a.ef_search = ef;
        }
    }

    /// The index kind and parameters it was made with.
    pub fn config(&self) -> (IndexKind, AnnParams) {
        (self.kind, self.params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vector::normalize;

    fn random_unit(rng: &mut fastrand::Rng, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim).map(|_| rng.f32() - 0.5).collect();
        normalize(&mut v);
        v
    }

    #[test]
    fn exact_search_finds_itself_and_respects_filters_and_removal() {
        let mut rng = fastrand::Rng::with_seed(7);
        let vs: Vec<Vec<f32>> = (0..200).map(|_| random_unit(&mut rng, 16)).collect();
        let mut index = VectorIndex::new(16, IndexKind::Exact, AnnParams::default());
        for (i, v) in vs.iter().enumerate() {
            index.insert(i as u64, v);
        }
        let hits = index.search(&vs[42], 3, &|_| true);
        assert_eq!(hits[0].0, 42);
        assert!((hits[0].1 - 1.0).abs() < 1e-5);
        let hits = index.search(&vs[42], 3, &|id| id % 2 == 1);
        assert!(hits.iter().all(|(id, _)| id % 2 == 1) && hits.len() == 3);
        index.remove(42);
        index.remove(199);
        assert_eq!(index.len(), 198);
        assert!(
            index
                .search(&vs[42], 5, &|_| true)
                .iter()
                .all(|(id, _)| *id != 42)
        );
        assert_eq!(index.search(&vs[10], 1, &|_| true)[0].0, 10);
    }

    #[test]
    fn hnsw_recall_against_exact_search() {
        let mut rng = fastrand::Rng::with_seed(11);
        let dim = 32;
        let vs: Vec<Vec<f32>> = (0..3000).map(|_| random_unit(&mut rng, dim)).collect();
        let exact = VectorIndex::build(
            dim,
            IndexKind::Exact,
            AnnParams::default(),
            vs.iter().enumerate().map(|(i, v)| (i as u64, v.as_slice())),
        );
        let mut ann = VectorIndex::build(
            dim,
            IndexKind::Ann,
            AnnParams::default(),
            vs.iter().enumerate().map(|(i, v)| (i as u64, v.as_slice())),
        );
        assert!(ann.is_ann());
        let mut found = 0;
        let queries = 50;
        for _ in 0..queries {
            let q = random_unit(&mut rng, dim);
            let truth: Vec<u64> = exact
                .search(&q, 10, &|_| true)
                .iter()
                .map(|h| h.0)
                .collect();
            let got = ann.search(&q, 10, &|_| true);
            found += got.iter().filter(|h| truth.contains(&h.0)).count();
        }
        let recall = found as f64 / (queries * 10) as f64;
        assert!(recall >= 0.95, "recall@10 {recall}");
        // Removed items never come back; filters hold.
        ann.remove(5);
        assert!(ann.search(&vs[5], 10, &|_| true).iter().all(|h| h.0 != 5));
        assert!(
            ann.search(&vs[6], 10, &|id| id >= 100)
                .iter()
                .all(|h| h.0 >= 100)
        );
    }
}
