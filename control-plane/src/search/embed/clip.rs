//! CLIP embedder for users who bring their own weights: a Hugging Face-format CLIP directory
//! (`config.json`, `model.safetensors`, `tokenizer.json`) run through candle-transformers'
//! CLIP model. The image embedding is both the semantic and the visual vector; there are no
//! concepts.
//!
//! **Quality is not verified here**: no real CLIP weights can be fetched on this project's
//! machines, so only the plumbing (config parsing, loading, tokenising, shapes, normalisation,
//! determinism) is tested, on a tiny randomly initialised model. Only the OpenAI CLIP
//! architecture is supported (quick-GELU activations, pooling at the end-of-text token, which
//! must have the highest token id as in OpenAI's vocabulary); SigLIP is not.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::clip::{
    text_model::{Activation, ClipTextConfig},
    vision_model::ClipVisionConfig,
    ClipConfig, ClipModel,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use super::conse::l2_normalised;
use super::minilm::read_model_file;
use super::preprocess::{centre_crop_normalised, Normalise};
use super::{EmbedError, Embedder, ImageEmbedding, ModelInfo, RgbImage};

/// The parts of a Hugging Face `CLIPConfig` this loader reads; absent keys take the
/// Hugging Face defaults (their configs often omit them).
#[derive(Debug, Deserialize)]
struct HfClipConfig {
    #[serde(default)]
    text_config: HfTextConfig,
    #[serde(default)]
    vision_config: HfVisionConfig,
    #[serde(default = "default_projection_dim")]
    projection_dim: usize,
    #[serde(default = "default_logit_scale")]
    logit_scale_init_value: f32,
}

fn default_projection_dim() -> usize {
    512
}
fn default_logit_scale() -> f32 {
    2.6592
}
fn default_act() -> String {
    "quick_gelu".into()
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct HfTextConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    max_position_embeddings: usize,
    #[serde(default = "default_act")]
    hidden_act: String,
}

impl Default for HfTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: default_act(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct HfVisionConfig {
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_channels: usize,
    image_size: usize,
    patch_size: usize,
    #[serde(default = "default_act")]
    hidden_act: String,
}

impl Default for HfVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: default_act(),
        }
    }
}

impl HfClipConfig {
    fn to_candle(&self, file: &Path) -> Result<ClipConfig, EmbedError> {
        for act in [&self.text_config.hidden_act, &self.vision_config.hidden_act] {
            if act != "quick_gelu" {
                return Err(EmbedError::Model(format!(
                    "{}: activation {act:?} is not supported (only OpenAI CLIP's quick_gelu)",
                    file.display()
                )));
            }
        }
        if self.vision_config.num_channels != 3 {
            return Err(EmbedError::Model(format!(
                "{}: only RGB models",
                file.display()
            )));
        }
        let t = &self.text_config;
        let v = &self.vision_config;
        Ok(ClipConfig {
            text_config: ClipTextConfig {
                vocab_size: t.vocab_size,
                embed_dim: t.hidden_size,
                activation: Activation::QuickGelu,
                intermediate_size: t.intermediate_size,
                max_position_embeddings: t.max_position_embeddings,
                pad_with: None,
                num_hidden_layers: t.num_hidden_layers,
                num_attention_heads: t.num_attention_heads,
                projection_dim: self.projection_dim,
            },
            vision_config: ClipVisionConfig {
                embed_dim: v.hidden_size,
                activation: Activation::QuickGelu,
                intermediate_size: v.intermediate_size,
                num_hidden_layers: v.num_hidden_layers,
                num_attention_heads: v.num_attention_heads,
                projection_dim: self.projection_dim,
                num_channels: v.num_channels,
                image_size: v.image_size,
                patch_size: v.patch_size,
            },
            logit_scale_init_value: self.logit_scale_init_value,
            image_size: v.image_size,
        })
    }
}

/// A CLIP model from a Hugging Face-format directory.
pub struct ClipEmbedder {
    info: ModelInfo,
    model: ClipModel,
    tokenizer: Tokenizer,
    image_size: usize,
    max_tokens: usize,
}

fn inf(e: candle_core::Error) -> EmbedError {
    EmbedError::Inference(e.to_string())
}

impl ClipEmbedder {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from `dir`.
    ///
    /// The model's version in [`ModelInfo`] is a hash of the config, the tokenizer and the
    /// weights' size, header and first and last mebibyte, so swapped weights re-embed.
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        let config_path = dir.join("config.json");
        let config_bytes = read_model_file(&config_path)?;
        let hf: HfClipConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| EmbedError::Model(format!("{}: {e}", config_path.display())))?;
        let config = hf.to_candle(&config_path)?;

        let tok_path = dir.join("tokenizer.json");
        let tok_bytes = read_model_file(&tok_path)?;
        let mut tokenizer = Tokenizer::from_bytes(&tok_bytes)
            .map_err(|e| EmbedError::Model(format!("{}: {e}", tok_path.display())))?;
        // One text at a time: no padding, and truncation is done by hand to keep the end token.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| EmbedError::Model(format!("{}: {e}", tok_path.display())))?;

        let weights_path = dir.join("model.safetensors");
        let weights = read_model_file(&weights_path)?;
        let mut h = Sha256::new();
        h.update(&config_bytes);
        h.update(&tok_bytes);
        h.update((weights.len() as u64).to_le_bytes());
        h.update(&weights[..weights.len().min(1 << 20)]);
        h.update(&weights[weights.len().saturating_sub(1 << 20)..]);
        let version = hex::encode(&h.finalize()[..6]);

        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(|e| EmbedError::Model(format!("{}: {e}", weights_path.display())))?;
        // candle fills a missing class embedding with random numbers; refuse instead.
        if !vb.contains_tensor("vision_model.embeddings.class_embedding") {
            return Err(EmbedError::Model(format!(
                "{}: no vision_model.embeddings.class_embedding",
                weights_path.display()
            )));
        }
        let model = ClipModel::new(vb, &config)
            .map_err(|e| EmbedError::Model(format!("{}: {e}", weights_path.display())))?;
        let name = dir
            .file_name()
            .map(|n| format!("clip-{}", n.to_string_lossy()))
            .unwrap_or_else(|| "clip".into());
        let info = ModelInfo {
            name,
            version,
            semantic_dims: hf.projection_dim,
            visual_dims: hf.projection_dim,
        };
        Ok(Self {
            info,
            model,
            tokenizer,
            image_size: config.image_size,
            max_tokens: config.text_config.max_position_embeddings,
        })
    }
}

impl Embedder for ClipEmbedder {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn input_size(&self) -> u32 {
        // Room for the shorter side of a 3:2 photo to stay above the model's input.
        (self.image_size as u32 * 3).div_ceil(2)
    }

    fn embed_image(&self, image: &RgbImage) -> Result<ImageEmbedding, EmbedError> {
        let s = self.image_size;
        let chw = centre_crop_normalised(image, s, 1.0, Normalise::CLIP)?;
        let x = Tensor::from_vec(chw, (1, 3, s, s), &Device::Cpu).map_err(inf)?;
        let v = self
            .model
            .get_image_features(&x)
            .and_then(|t| t.squeeze(0))
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(inf)?;
        let v = l2_normalised(v);
        Ok(ImageEmbedding {
            semantic: v.clone(),
            visual: v,
            concepts: Vec::new(),
            faces: None,
            people: None,
        })
    }

    fn embed_text(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        if text.trim().is_empty() {
            return Err(EmbedError::Input("empty text".into()));
        }
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| EmbedError::Inference(format!("tokenizer: {e}")))?;
        let mut ids: Vec<u32> = enc.get_ids().to_vec();
        if ids.len() > self.max_tokens {
            // Keep the end-of-text token: the text embedding is read there.
            let last = ids[ids.len() - 1];
            ids.truncate(self.max_tokens - 1);
            ids.push(last);
        }
        let n = ids.len();
        let ids = Tensor::from_vec(ids, (1, n), &Device::Cpu).map_err(inf)?;
        let v = self
            .model
            .get_text_features(&ids)
            .and_then(|t| t.squeeze(0))
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(inf)?;
        Ok(l2_normalised(v))
    }

    fn explain(&self, _query: &[f32], _concepts: &[super::Concept]) -> Vec<super::Concept> {
        Vec::new()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_nn::VarMap;

    const TINY_CONFIG: &str = r#"{
      "projection_dim": 8,
      "text_config": {"vocab_size": 12, "hidden_size": 16, "intermediate_size": 24,
        "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 8},
      "vision_config": {"hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
        "num_attention_heads": 2, "image_size": 32, "patch_size": 8}
    }"#;

    /// A word-level tokenizer whose end token has the highest id, as CLIP's pooling expects.
    const TINY_TOKENIZER: &str = r#"{
      "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
      "normalizer": {"type": "Lowercase"},
      "pre_tokenizer": {"type": "Whitespace"},
      "post_processor": {"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                   {"Sequence": {"id": "A", "type_id": 0}},
                   {"SpecialToken": {"id": "</s>", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {
          "<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]},
          "</s>": {"id": "</s>", "ids": [11], "tokens": ["</s>"]}}},
      "decoder": null,
      "model": {"type": "WordLevel", "unk_token": "<unk>",
        "vocab": {"<unk>": 0, "<s>": 1, "a": 2, "photo": 3, "of": 4, "dog": 5, "cat": 6,
                  "red": 7, "car": 8, "on": 9, "street": 10, "</s>": 11}}
    }"#;

    /// Writes a tiny randomly initialised CLIP directory.
    pub(crate) fn write_tiny_clip(dir: &Path) {
        std::fs::write(dir.join("config.json"), TINY_CONFIG).unwrap();
        std::fs::write(dir.join("tokenizer.json"), TINY_TOKENIZER).unwrap();
        let hf: HfClipConfig = serde_json::from_str(TINY_CONFIG).unwrap();
        let config = hf.to_candle(Path::new("config.json")).unwrap();
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        // Created here so it is saved (candle would otherwise make a random one per load).
        vb.pp("vision_model.embeddings")
            .get(16, "class_embedding")
            .unwrap();
        ClipModel::new(vb, &config).unwrap();
        varmap.save(dir.join("model.safetensors")).unwrap();
    }

    fn gradient(w: u32, h: u32) -> RgbImage {
        let mut pixels = Vec::new();
        for y in 0..h {
            for x in 0..w {
                pixels.extend_from_slice(&[(x * 255 / w) as u8, (y * 255 / h) as u8, 90]);
            }
        }
        RgbImage {
            width: w,
            height: h,
            pixels,
        }
    }

    fn norm(v: &[f32]) -> f32 {
        v.iter().map(|x| x * x).sum::<f32>().sqrt()
    }

    #[test]
    fn tiny_clip_loads_and_embeds() {
        let tmp = tempfile::tempdir().unwrap();
        write_tiny_clip(tmp.path());
        let clip = ClipEmbedder::load(tmp.path()).unwrap();
        assert_eq!(clip.info().semantic_dims, 8);
        assert_eq!(clip.info().visual_dims, 8);
        assert!(clip.info().name.starts_with("clip-"));

        let img = gradient(60, 40);
        let a = clip.embed_image(&img).unwrap();
        assert_eq!(a.semantic.len(), 8);
        assert_eq!(a.semantic, a.visual);
        assert!(a.concepts.is_empty());
        assert!((norm(&a.semantic) - 1.0).abs() < 1e-4);
        let b = clip.embed_image(&img).unwrap();
        assert_eq!(a.semantic, b.semantic, "image embedding is deterministic");

        let t = clip.embed_text("a photo of a dog").unwrap();
        assert_eq!(t.len(), 8);
        assert!((norm(&t) - 1.0).abs() < 1e-4);
        assert_eq!(t, clip.embed_text("a photo of a dog").unwrap());
        assert_ne!(t, clip.embed_text("a red car").unwrap());
        // Longer than the 8 positions: truncated, still embeds.
        let long = clip
            .embed_text("a photo of a red car on a street of a dog")
            .unwrap();
        assert_eq!(long.len(), 8);
        assert!(clip.embed_text("  ").is_err());

        // A second load of the same files gives the same vectors and version.
        let again = ClipEmbedder::load(tmp.path()).unwrap();
        assert_eq!(again.info(), clip.info());
        assert_eq!(again.embed_image(&img).unwrap().semantic, a.semantic);
    }

    #[test]
    fn unsupported_activation_is_refused() {
        let hf: HfClipConfig =
            serde_json::from_str(r#"{"vision_config": {"hidden_act": "gelu"}}"#).unwrap();
        let err = hf.to_candle(Path::new("config.json")).unwrap_err();
        assert!(err.to_string().contains("gelu"));
    }

    #[test]
    fn missing_files_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let err = ClipEmbedder::load(tmp.path()).err().unwrap().to_string();
        assert!(err.contains("config.json"), "{err}");
    }
}
