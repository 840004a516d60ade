//! A local transformer embedding model (feature `local-embedder`): a BERT-family sentence
//! encoder such as all-MiniLM-L6-v2, loaded from a directory holding `config.json`,
//! `model.safetensors` and `tokenizer.json`, run on the CPU with candle. Sentence vectors
//! are the attention-masked mean of the last hidden states, unit normalised (the
//! sentence-transformers recipe for these models).

use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, DTYPE};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use super::{Embedder, MemoryError};
use crate::vector::normalize;

/// Tokens per text at most (longer texts are truncated).
pub const LOCAL_TOKENS_MAX: usize = 256;
/// Texts run through the model at once.
const LOCAL_BATCH: usize = 32;

struct Model {
    bert: BertModel,
    tokenizer: Tokenizer,
}

/// A BERT-family model from a directory.
pub struct LocalEmbedder {
    model: Arc<Mutex<Model>>,
    name: String,
    dim: usize,
}

impl std::fmt::Debug for LocalEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEmbedder")
            .field("model", &self.name)
            .field("dim", &self.dim)
            .finish()
    }
}

fn load_err(dir: &Path, what: &str, e: impl std::fmt::Display) -> String {
    format!("{}: {what}: {e}", dir.display())
}

impl LocalEmbedder {
    /// Loads the model in `dir`; `name` is recorded with namespaces built with it (for
    /// example `all-MiniLM-L6-v2`).
    ///
    /// # Errors
    /// A missing or unreadable file, named.
    pub fn load(dir: &Path, name: impl Into<String>) -> Result<Self, String> {
        let config: Config = serde_json::from_str(
            &std::fs::read_to_string(dir.join("config.json"))
                .map_err(|e| load_err(dir, "config.json", e))?,
        )
        .map_err(|e| load_err(dir, "config.json", e))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| load_err(dir, "tokenizer.json", e))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..PaddingParams::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: LOCAL_TOKENS_MAX,
                ..TruncationParams::default()
            }))
            .map_err(|e| load_err(dir, "tokenizer truncation", e))?;
        let weights = std::fs::read(dir.join("model.safetensors"))
            .map_err(|e| load_err(dir, "model.safetensors", e))?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DTYPE, &Device::Cpu)
            .map_err(|e| load_err(dir, "model.safetensors", e))?;
        let bert = BertModel::load(vb, &config).map_err(|e| load_err(dir, "weights", e))?;
        Ok(Self {
            dim: config.hidden_size,
            name: name.into(),
            model: Arc::new(Mutex::new(Model { bert, tokenizer })),
        })
    }
}

fn embed_batch(model: &Model, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let encodings = model
        .tokenizer
        .encode_batch(texts.to_vec(), true)
        .map_err(|e| err(&e))?;
    let rows = |f: &dyn Fn(&tokenizers::Encoding) -> Vec<u32>| -> Result<Tensor, String> {
        let v: Vec<Tensor> = encodings
            .iter()
            .map(|e| Tensor::new(f(e).as_slice(), &Device::Cpu))
            .collect::<Result<_, _>>()
            .map_err(|e| err(&e))?;
        Tensor::stack(&v, 0).map_err(|e| err(&e))
    };
    let ids = rows(&|e| e.get_ids().to_vec())?;
    let types = rows(&|e| e.get_type_ids().to_vec())?;
    let mask = rows(&|e| e.get_attention_mask().to_vec())?;
    let hidden = model
        .bert
        .forward(&ids, &types, Some(&mask))
        .map_err(|e| err(&e))?;
    // Mean over the real tokens.
    let mask = mask
        .to_dtype(DType::F32)
        .and_then(|m| m.unsqueeze(2))
        .map_err(|e| err(&e))?;
    let summed = hidden
        .broadcast_mul(&mask)
        .and_then(|h| h.sum(1))
        .map_err(|e| err(&e))?;
    let counts = mask.sum(1).map_err(|e| err(&e))?;
    let mean = summed.broadcast_div(&counts).map_err(|e| err(&e))?;
    let mut out: Vec<Vec<f32>> = mean.to_vec2().map_err(|e| err(&e))?;
    for v in &mut out {
        normalize(v);
    }
    Ok(out)
}

#[async_trait::async_trait]
impl Embedder for LocalEmbedder {
    fn model(&self) -> &str {
        &self.name
    }

    fn dim(&self) -> usize {
        self.dim
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, MemoryError> {
        let model = self.model.clone();
        let texts = texts.to_vec();
        // CPU-bound: off the async workers.
        tokio::task::spawn_blocking(move || {
            let model = model
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut out = Vec::with_capacity(texts.len());
            for chunk in texts.chunks(LOCAL_BATCH) {
                out.extend(embed_batch(&model, chunk)?);
            }
            Ok(out)
        })
        .await
        .map_err(|e| MemoryError::Embedding(format!("the embedding task failed: {e}")))?
        .map_err(MemoryError::Embedding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vector::dot;

    /// Runs when `AIOS_LOCAL_MODEL_DIR` points at all-MiniLM-L6-v2 (`.ci/run` fetches it);
    /// skips loudly otherwise (and fails under `CI=true`).
    #[tokio::test]
    async fn related_sentences_score_higher_than_unrelated_ones() {
        let Some(dir) = std::env::var_os("AIOS_LOCAL_MODEL_DIR") else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "AIOS_LOCAL_MODEL_DIR must be set under CI"
            );
            eprintln!(
                "SKIPPED: set AIOS_LOCAL_MODEL_DIR to a BERT model directory to run this test"
            );
            return;
        };
        let e = LocalEmbedder::load(Path::new(&dir), "all-MiniLM-L6-v2").expect("model loads");
        assert_eq!(e.dim(), 384);
        let v = e
            .embed(&[
                "A man is playing a guitar.".into(),
                "Someone performs music on a guitar.".into(),
                "The stock market fell sharply today.".into(),
            ])
            .await
            .expect("embed");
        assert!((dot(&v[0], &v[0]) - 1.0).abs() < 1e-4);
        let related = dot(&v[0], &v[1]);
        let unrelated = dot(&v[0], &v[2]);
        assert!(related > unrelated + 0.3, "{related} vs {unrelated}");
    }
}
