//! Embedding models: the [`Embedder`] trait, the built-in offline [`HashEmbedder`] (the
//! default), and [`OpenAiEmbedder`] for any OpenAI-compatible `/v1/embeddings` server
//! (OpenAI, Ollama, vLLM, llama.cpp).

use std::sync::Arc;

use serde_json::{Value, json};

use super::MemoryError;
use super::vector::normalize;
use aios_llm::http::{read_body, send_checked};
use aios_llm::openai::endpoint;
use aios_llm::{ApiKey, HttpOptions, LlmError, RetryPolicy};

/// Texts embedded per request at most; longer lists are split.
pub const EMBED_BATCH_MAX: usize = 256;
/// The default dimension of the built-in embedder (that of all-MiniLM-L6-v2, so namespaces
/// can move between them with a re-embed).
pub const HASH_EMBEDDER_DIM: usize = 384;

/// Turns texts into unit vectors of a fixed dimension.
#[async_trait::async_trait]
pub trait Embedder: Send + Sync + 'static {
    /// The model's name, recorded with every namespace built with it.
    fn model(&self) -> &str;
    /// The vectors' dimension.
    fn dim(&self) -> usize;
    /// One unit vector per text, in order.
    ///
    /// # Errors
    /// [`MemoryError::Embedding`] when the model fails or answers with the wrong shape.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, MemoryError>;
}

/// A shared embedder.
pub type SharedEmbedder = Arc<dyn Embedder>;

/// The built-in offline embedder: signed feature hashing of lower-cased words (weight 1),
/// word bigrams (0.5) and character trigrams of each word (0.25) into `dim` buckets, then
/// unit length. Needs no model files and is deterministic.
///
/// Quality, honestly: it measures lexical overlap, including partial word overlap through
/// the trigrams ("embedding" is close to "embeddings"), but knows no meaning — "car" and
/// "automobile" are unrelated to it. Good for tests, offline use and exact-ish recall of
/// what an agent said; configure a real model for semantic search.
#[derive(Clone, Debug)]
pub struct HashEmbedder {
    dim: usize,
    model: String,
}

impl HashEmbedder {
    /// An embedder of dimension `dim` (at least 8).
    pub fn new(dim: usize) -> Self {
        let dim = dim.max(8);
        Self {
            dim,
            model: format!("hash-ngram-v1-{dim}"),
        }
    }

    /// Embeds one text (synchronously).
    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0.0f32; self.dim];
        let words: Vec<String> = text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        let mut add = |feature: &[u8], weight: f32| {
            let h = fnv1a(feature);
            let index = (h % self.dim as u64) as usize;
            let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
            v[index] += sign * weight;
        };
        for (i, w) in words.iter().enumerate() {
            add(w.as_bytes(), 1.0);
            if let Some(next) = words.get(i + 1) {
                add(format!("{w} {next}").as_bytes(), 0.5);
            }
            let chars: Vec<char> = format!("<{w}>").chars().collect();
            for tri in chars.windows(3) {
                let s: String = tri.iter().collect();
                add(format!("#{s}").as_bytes(), 0.25);
            }
        }
        if !normalize(&mut v) {
            // An empty text: a fixed unit vector, so every text has a valid embedding.
            v[0] = 1.0;
        }
        v
    }
}

impl Default for HashEmbedder {
    /// Dimension [`HASH_EMBEDDER_DIM`].
    fn default() -> Self {
        Self::new(HASH_EMBEDDER_DIM)
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[async_trait::async_trait]
impl Embedder for HashEmbedder {
    fn model(&self) -> &str {
        &self.model
    }

    fn dim(&self) -> usize {
        self.dim
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, MemoryError> {
        Ok(texts.iter().map(|t| self.embed_one(t)).collect())
    }
}

/// Settings of an [`OpenAiEmbedder`].
#[derive(Clone, Debug)]
pub struct OpenAiEmbedderConfig {
    /// A name for errors and logs.
    pub name: String,
    /// Base URL (with or without `/v1`).
    pub base_url: String,
    /// The model, e.g. `text-embedding-3-small` or `nomic-embed-text`.
    pub model: String,
    /// The dimension the model returns (checked on every answer).
    pub dim: usize,
    /// The API key, if the server needs one.
    pub api_key: Option<ApiKey>,
    /// Timeouts.
    pub http: HttpOptions,
    /// Retries on 429, 5xx and connection errors.
    pub retry: RetryPolicy,
}

/// An OpenAI-compatible `/v1/embeddings` client.
#[derive(Clone, Debug)]
pub struct OpenAiEmbedder {
    config: OpenAiEmbedderConfig,
    url: String,
    client: reqwest::Client,
}

impl OpenAiEmbedder {
    /// A client for `config`.
    ///
    /// # Errors
    /// A bad base URL, a zero dimension, or an HTTP client that cannot be built.
    pub fn new(config: OpenAiEmbedderConfig) -> Result<Self, String> {
        if config.dim == 0 {
            return Err("dim must be positive".into());
        }
        let url = endpoint(&config.base_url, "/v1/embeddings")?;
        let client = config.http.client()?;
        Ok(Self {
            config,
            url,
            client,
        })
    }

    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
        let c = &self.config;
        let key = c.api_key.as_ref();
        let timeout = c.http.request_timeout;
        let body = json!({"model": c.model, "input": texts});
        c.retry
            .run(|_| {
                let mut builder = self.client.post(&self.url).json(&body);
                if let Some(k) = key {
                    builder = builder.bearer_auth(k.expose());
                }
                async move {
                    let response = send_checked(&c.name, key, timeout, builder).await?;
                    let bytes = read_body(&c.name, key, timeout, response).await?;
                    parse_embeddings(&c.name, bytes.as_ref(), texts.len())
                }
            })
            .await
    }
}

fn parse_embeddings(provider: &str, bytes: &[u8], n: usize) -> Result<Vec<Vec<f32>>, LlmError> {
    let invalid = |message: String| LlmError::InvalidResponse {
        provider: provider.to_string(),
        message,
    };
    let v: Value = serde_json::from_slice(bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let data = v["data"]
        .as_array()
        .ok_or_else(|| invalid("no `data` list".into()))?;
    let mut out = vec![Vec::new(); n];
    for (pos, item) in data.iter().enumerate() {
        let index = item["index"].as_u64().map_or(pos, |i| i as usize);
        let slot = out
            .get_mut(index)
            .ok_or_else(|| invalid(format!("index {index} out of range")))?;
        *slot = item["embedding"]
            .as_array()
            .ok_or_else(|| invalid("an item has no `embedding` list".into()))?
            .iter()
            .map(|x| x.as_f64().map(|f| f as f32))
            .collect::<Option<Vec<f32>>>()
            .ok_or_else(|| invalid("an embedding holds a non-number".into()))?;
    }
    if out.iter().any(Vec::is_empty) {
        return Err(invalid(format!("{} embeddings for {n} inputs", data.len())));
    }
    Ok(out)
}

#[async_trait::async_trait]
impl Embedder for OpenAiEmbedder {
    fn model(&self) -> &str {
        &self.config.model
    }

    fn dim(&self) -> usize {
        self.config.dim
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, MemoryError> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(EMBED_BATCH_MAX) {
            let vectors = self
                .embed_batch(chunk)
                .await
                .map_err(|e| MemoryError::Embedding(e.to_string()))?;
            for mut v in vectors {
                if v.len() != self.config.dim {
                    return Err(MemoryError::Embedding(format!(
                        "{} returned {} dimensions, expected {}",
                        self.config.model,
                        v.len(),
                        self.config.dim
                    )));
                }
                if !normalize(&mut v) {
                    return Err(MemoryError::Embedding(format!(
                        "{} returned a zero or non-finite vector",
                        self.config.model
                    )));
                }
                out.push(v);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vector::dot;

    #[test]
    fn related_texts_score_higher_than_unrelated_ones() {
        let e = HashEmbedder::default();
        let a = e.embed_one("the agent stores its memories in sled");
        let b = e.embed_one("memories of the agent are stored in sled");
        let c = e.embed_one("bananas grow in tropical climates");
        assert!((dot(&a, &a) - 1.0).abs() < 1e-5);
        assert!(
            dot(&a, &b) > dot(&a, &c) + 0.3,
            "{} vs {}",
            dot(&a, &b),
            dot(&a, &c)
        );
        assert_eq!(e.embed_one(""), e.embed_one("   "));
        assert_eq!(e.embed_one("Same Text"), e.embed_one("same text"));
    }

    #[test]
    fn embeddings_are_parsed_by_index_and_checked() {
        let body = br#"{"data":[{"index":1,"embedding":[0,1]},{"index":0,"embedding":[1,0]}]}"#;
        let v = parse_embeddings("p", body, 2).expect("parsed");
        assert_eq!(v, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        assert!(parse_embeddings("p", br#"{"data":[]}"#, 1).is_err());
        assert!(parse_embeddings("p", b"nope", 1).is_err());
    }
}
