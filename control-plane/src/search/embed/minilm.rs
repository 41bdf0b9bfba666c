//! MiniLM sentence encoder (all-MiniLM-L6-v2: BERT, 6 layers, 384 dims) on candle.
//!
//! Text → WordPiece tokens (`tokenizer.json`) → BERT → mean over the real tokens (attention
//! mask; padding never counts) → L2-normalised 384-d vector, as sentence-transformers does.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use sha2::{Digest, Sha256};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer};

use super::EmbedError;

/// Texts embedded per forward pass when embedding many at once.
const BATCH: usize = 64;

/// The MiniLM text encoder.
pub struct MiniLm {
    model: BertModel,
    tokenizer: Tokenizer,
    dims: usize,
    fingerprint: String,
}

fn inf(e: candle_core::Error) -> EmbedError {
    EmbedError::Inference(e.to_string())
}

/// Reads a file, naming it and the fix in the error.
pub(crate) fn read_model_file(path: &Path) -> Result<Vec<u8>, EmbedError> {
    std::fs::read(path).map_err(|e| {
        EmbedError::Model(format!(
            "cannot read {}: {e} (run scripts/fetch-models to install the model files)",
            path.display()
        ))
    })
}

impl MiniLm {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        let config_path = dir.join("config.json");
        let config_bytes = read_model_file(&config_path)?;
        let config: Config = serde_json::from_slice(&config_bytes)
            .map_err(|e| EmbedError::Model(format!("{}: {e}", config_path.display())))?;
        let tok_path = dir.join("tokenizer.json");
        let tok_bytes = read_model_file(&tok_path)?;
        let tokenizer = load_tokenizer(&tok_path, &tok_bytes)?;
        let weights_path = dir.join("model.safetensors");
        let weights = read_model_file(&weights_path)?;
        let mut h = Sha256::new();
        for part in [&config_bytes, &tok_bytes, &weights] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        let fingerprint = hex::encode(h.finalize());
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(|e| EmbedError::Model(format!("{}: {e}", weights_path.display())))?;
        let model = BertModel::load(vb, &config)
            .map_err(|e| EmbedError::Model(format!("{}: {e}", weights_path.display())))?;
        Ok(Self {
            model,
            tokenizer,
            dims: config.hidden_size,
            fingerprint,
        })
    }

    /// SHA-256 (hex) over the config, tokenizer and weights: changes whenever the files do.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Length of the vectors.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Embeds one text (L2-normalised).
    pub fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let mut out = self.embed_batch(&[text])?;
        out.pop()
            .ok_or_else(|| EmbedError::Inference("no embedding returned".into()))
    }

    /// Embeds many texts (each L2-normalised), `BATCH` per forward pass.
    pub fn embed_many(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(BATCH) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            out.extend(self.embed_batch(&refs)?);
        }
        Ok(out)
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.iter().any(|t| t.trim().is_empty()) {
            return Err(EmbedError::Input("empty text".into()));
        }
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EmbedError::Inference(format!("tokenizer: {e}")))?;
        let len = enc.iter().map(|e| e.get_ids().len()).max().unwrap_or(0);
        let n = enc.len();
        let mut ids = Vec::with_capacity(n * len);
        let mut mask = Vec::with_capacity(n * len);
        for e in &enc {
            ids.extend(e.get_ids().iter().map(|&i| i as i64));
            mask.extend(e.get_attention_mask().iter().map(|&m| m as i64));
        }
        if ids.len() != n * len {
            return Err(EmbedError::Inference(
                "tokenizer returned ragged batch".into(),
            ));
        }
        let dev = Device::Cpu;
        let ids = Tensor::from_vec(ids, (n, len), &dev).map_err(inf)?;
        let mask = Tensor::from_vec(mask, (n, len), &dev).map_err(inf)?;
        let types = ids.zeros_like().map_err(inf)?;
        let hidden = self.model.forward(&ids, &types, Some(&mask)).map_err(inf)?;
        mean_pool_normalised(&hidden, &mask).map_err(inf)
    }
}

/// Mean over the tokens whose mask is 1, then L2 normalisation: `(B, T, H)` → `B × H`.
fn mean_pool_normalised(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Vec<Vec<f32>>> {
    let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?;
    let mean = summed.broadcast_div(&counts)?;
    let norm = mean
        .sqr()?
        .sum_keepdim(1)?
        .sqrt()?
        .clamp(1e-12f32, f32::MAX)?;
    mean.broadcast_div(&norm)?.to_vec2()
}

/// Loads a tokenizer and pads batches to their longest text instead of a fixed length (the
/// MiniLM file pads everything to 128 tokens, which only costs time: padding is masked out).
fn load_tokenizer(path: &Path, bytes: &[u8]) -> Result<Tokenizer, EmbedError> {
    let mut tokenizer = Tokenizer::from_bytes(bytes)
        .map_err(|e| EmbedError::Model(format!("{}: {e}", path.display())))?;
    let padding = match tokenizer.get_padding() {
        Some(p) => PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..p.clone()
        },
        None => PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        },
    };
    tokenizer.with_padding(Some(padding));
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::embed::testutil;

    #[test]
    fn mean_pool_ignores_padding() {
        let dev = Device::Cpu;
        // Two tokens, the second is padding with a huge value that must not count.
        let hidden = Tensor::new(&[[[3f32, 4.0], [1000.0, -1000.0]]], &dev).unwrap();
        let mask = Tensor::new(&[[1i64, 0]], &dev).unwrap();
        let v = mean_pool_normalised(&hidden, &mask).unwrap();
        assert!((v[0][0] - 0.6).abs() < 1e-6 && (v[0][1] - 0.8).abs() < 1e-6);
    }

    #[test]
    fn real_minilm_embeds_and_ranks() {
        let Some(dir) = testutil::model_dir() else {
            return;
        };
        let m = MiniLm::load(&dir.join("minilm")).unwrap();
        let q = m.embed("a dog").unwrap();
        assert_eq!(q.len(), 384);
        assert_eq!(m.fingerprint().len(), 64);
        let norm: f32 = q.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
        let texts = [
            "a puppy playing".to_string(),
            "a stock market report".to_string(),
        ];
        let many = m.embed_many(&texts).unwrap();
        let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        assert!(cos(&q, &many[0]) > cos(&q, &many[1]) + 0.2);
        // Batched (padded) and single embeddings agree.
        let single = m.embed("a puppy playing").unwrap();
        assert!(cos(&single, &many[0]) > 0.9999);
        assert!(m.embed("   ").is_err());
    }
}
