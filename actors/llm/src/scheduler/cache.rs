//! The response cache for identical deterministic requests (temperature 0).

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;
use serde::{Deserialize, Serialize};

use crate::{ChatRequest, ChatResponse};

/// The largest cache a scheduler may be configured with.
pub const CACHE_ENTRIES_MAX: usize = 1_000_000;

/// Response cache settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CacheConfig {
    /// How long an answer stays valid.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// The most answers kept (least recently used ones go first).
    pub entries_max: usize,
}

impl CacheConfig {
    /// Checks the bounds.
    ///
    /// # Errors
    /// Names the bad field.
    pub fn validate(&self) -> Result<(), String> {
        if self.entries_max == 0 || self.entries_max > CACHE_ENTRIES_MAX {
            return Err(format!(
                "cache.entries_max must be 1..={CACHE_ENTRIES_MAX}, got {}",
                self.entries_max
            ));
        }
        if self.ttl.is_zero() {
            return Err("cache.ttl must be more than zero".into());
        }
        Ok(())
    }
}

/// An LRU of answers keyed by the whole request, each valid for the TTL.
#[derive(Debug)]
pub struct ResponseCache {
    ttl: Duration,
    entries: LruCache<String, (Instant, ChatResponse)>,
}

impl ResponseCache {
    /// An empty cache.
    pub fn new(config: &CacheConfig) -> Self {
        let cap = NonZeroUsize::new(config.entries_max.clamp(1, CACHE_ENTRIES_MAX))
            .unwrap_or(NonZeroUsize::MIN);
        Self {
            ttl: config.ttl,
            entries: LruCache::new(cap),
        }
    }

    /// The cache key of a request, or `None` when it must not be cached (not deterministic).
    pub fn key(request: &ChatRequest) -> Option<String> {
        if !request.is_deterministic() {
            return None;
        }
        serde_json::to_string(request).ok()
    }

    /// A fresh answer for `key`.
    pub fn get(&mut self, key: &str, now: Instant) -> Option<ChatResponse> {
        match self.entries.get(key) {
            Some((at, r)) if now.saturating_duration_since(*at) < self.ttl => Some(r.clone()),
            Some(_) => {
                self.entries.pop(key);
                None
            }
            None => None,
        }
    }

    /// Stores an answer.
    pub fn put(&mut self, key: String, response: ChatResponse, now: Instant) {
        self.entries.put(key, (now, response));
    }

    /// Entries held (fresh or not yet evicted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
