//! Context-aware retrieval: candidates by similarity, re-ranked by similarity, recency and
//! importance, diversified by maximal marginal relevance, and assembled into a block within
//! a token budget.

use super::types::{DEFAULT_SEARCH_TIMEOUT, Query};
use super::vector::dot;
use super::{
    HashEmbedder, Hit, K_MAX, MemoryError, MemoryStore, RecallRequest, Recalled, SearchRequest,
    shard::now_ms,
};

impl MemoryStore {
    /// Context-aware retrieval: candidates by similarity, re-ranked by similarity, recency and
    /// importance, diversified by MMR, and assembled into a block within the token budget.
    ///
    /// # Errors
    /// As [`MemoryStore::search`].
    pub async fn recall(
        &self,
        namespace: &str,
        request: RecallRequest,
    ) -> Result<Recalled, MemoryError> {
        self.recall_with(namespace, request, true).await
    }

    /// [`MemoryStore::recall`], its search on the serving node (`routed`) or on this node's
    /// shards only.
    pub(crate) async fn recall_with(
        &self,
        namespace: &str,
        request: RecallRequest,
        routed: bool,
    ) -> Result<Recalled, MemoryError> {
        let k = request.k.clamp(1, K_MAX);
        let search = SearchRequest {
            query: Query::Text(request.text),
            k: (k * 4).clamp(20, K_MAX),
            filter: request.filter,
            timeout: DEFAULT_SEARCH_TIMEOUT,
        };
        let found = if routed {
            self.search(namespace, search).await?
        } else {
            self.search_here(namespace, search).await?
        };
        let w = request.weights;
        let now = now_ms();
        let half_life_ms = w.half_life.as_millis().max(1) as f64;
        let mut candidates: Vec<Hit> = found
            .hits
            .into_iter()
            .map(|mut h| {
                let age = now.saturating_sub(h.meta.created_ms) as f64;
                let recency = 0.5f64.powf(age / half_life_ms) as f32;
                h.score = w.similarity * h.similarity
                    + w.recency * recency
                    + w.importance * h.meta.importance;
                h
            })
            .collect();
        candidates.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        let chosen = match w.mmr_lambda {
            Some(lambda) => mmr(candidates, k, lambda),
            None => {
                candidates.truncate(k);
                candidates
            }
        };
        let budget_bytes = request.token_budget.saturating_mul(4);
        let mut block = String::new();
        let mut hits = Vec::new();
        for h in chosen {
            let line = format!("- {}\n", h.text.replace('\n', " "));
            if block.len() + line.len() > budget_bytes {
                break;
            }
            block.push_str(&line);
            hits.push(h);
        }
        Ok(Recalled {
            hits,
            block,
            partial: found.partial,
        })
    }
}

/// Maximal marginal relevance over `candidates` (best first): each pick maximises
/// `lambda * score - (1 - lambda) * max similarity to what was picked`, the similarity taken
/// between the texts' lexical embeddings.
fn mmr(candidates: Vec<Hit>, k: usize, lambda: f32) -> Vec<Hit> {
    let lexical = HashEmbedder::new(256);
    let vectors: Vec<Vec<f32>> = candidates
        .iter()
        .map(|h| lexical.embed_one(&h.text))
        .collect();
    let mut left: Vec<usize> = (0..candidates.len()).collect();
    let mut picked: Vec<usize> = Vec::new();
    while picked.len() < k && !left.is_empty() {
        let (best_pos, _) = left
            .iter()
            .enumerate()
            .map(|(pos, &i)| {
                let redundancy = picked
                    .iter()
                    .map(|&j| dot(&vectors[i], &vectors[j]))
                    .fold(0.0f32, f32::max);
                (
                    pos,
                    lambda * candidates[i].score - (1.0 - lambda) * redundancy,
                )
            })
            .fold((0, f32::MIN), |best, c| if c.1 > best.1 { c } else { best });
        picked.push(left.remove(best_pos));
    }
    let mut slots: Vec<Option<Hit>> = candidates.into_iter().map(Some).collect();
    picked.into_iter().filter_map(|i| slots[i].take()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aios_core::MemoryMeta;

    fn hit(id: u64, text: &str, score: f32) -> Hit {
        Hit {
            id,
            similarity: score,
            score,
            text: text.into(),
            meta: MemoryMeta::default(),
            shard: 0,
        }
    }

    #[test]
    fn mmr_prefers_a_different_second_item() {
        let c = vec![
            hit(1, "the deploy failed on friday", 0.9),
            hit(2, "the deploy failed on friday night", 0.89),
            hit(3, "lunch is at noon", 0.6),
        ];
        let picked: Vec<u64> = mmr(c.clone(), 2, 0.5).iter().map(|h| h.id).collect();
        assert_eq!(picked, vec![1, 3]);
        let picked: Vec<u64> = mmr(c, 2, 1.0).iter().map(|h| h.id).collect();
        assert_eq!(picked, vec![1, 2]);
    }
}
