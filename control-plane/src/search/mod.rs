//! Search: embedders, vector index backends, indexing, the query plan, reconciliation and the
//! quality evaluation, in one place. The query plan returns domain results; the HTTP views of
//! them are rendered by `routes::search`.
//!
//! # Layout
//! - [`embed`]: image and text embedders behind one trait (ConSE by default, CLIP).
//! - [`index`]: the vector index behind one trait (embedded qdrant-edge, or a Qdrant server).
//! - [`indexing`]: embedding one image, writing its point, finding its near-duplicates.
//! - [`plan`]: the search query plan (similarity with filters inside, or SQL order).
//! - [`reconcile`]: SQL ↔ index drift repair and re-embedding after a model change.
//! - [`eval`]: `flexphoto eval-search`, search and near-duplicate quality on labelled photos;
//!   [`bootstrap`]: the intervals it reports beside its figures.

pub mod bootstrap;
pub mod embed;
pub mod eval;
pub mod index;
pub mod indexing;
pub mod plan;
#[cfg(test)]
mod probe;
pub mod reconcile;

use std::sync::Arc;

use crate::config::{IndexChoice, ModelChoice, SearchConfig};
use embed::{EmbedSettings, Embedder};
use index::{VectorIndex, VectorSpace};

/// The embedder and the index, present when search is on.
#[derive(Clone)]
pub struct Search {
    /// Makes vectors.
    pub embedder: Arc<dyn Embedder>,
    /// Stores and searches them.
    pub index: Arc<dyn VectorIndex>,
    /// `embedder.info().id()`, stored with every vector.
    pub model_id: String,
}

impl std::fmt::Debug for Search {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Search")
            .field("model", &self.model_id)
            .field("index", &self.index.backend())
            .finish()
    }
}

/// Loads the configured embedder and opens the vector index; `None` when search is off or
/// answered by another process (`search.index = "forward"`). The flag says the index was
/// recreated (its vector sizes changed) and must be refilled.
pub async fn open(cfg: &SearchConfig) -> Result<Option<(Search, bool)>, String> {
    if cfg.index == IndexChoice::Forward {
        return Ok(None);
    }
    let settings = match &cfg.model {
        ModelChoice::None => return Ok(None),
        ModelChoice::Conse { model_dir } => EmbedSettings {
            conse_top_k: cfg.conse_top_k,
            conse_faces: cfg.conse_faces,
            conse_appearance: cfg.conse_appearance,
            conse_face_tiles: cfg.conse_face_tiles,
            conse_objects: cfg.conse_objects,
            ..EmbedSettings::conse(model_dir.clone())
        },
        ModelChoice::Clip { dir } => EmbedSettings::clip(dir.clone()),
    };
    let embedder = tokio::task::spawn_blocking(move || embed::load(&settings))
        .await
        .map_err(|e| format!("loading the model: {e}"))?
        .map_err(|e| format!("search.model: {e}"))?;
    let info = embedder.info().clone();
    let space = VectorSpace {
        semantic_dims: info.semantic_dims,
        visual_dims: info.visual_dims,
    };
    let opened = match &cfg.index {
        IndexChoice::Embedded { dir } => {
            let options = index::EmbeddedOptions {
                flush_interval: cfg.index_flush_interval,
                ..index::EmbeddedOptions::default()
            };
            index::open_embedded_with(dir, space, options)
                .await
                .map_err(|e| format!("search.index_dir {}: {e}", dir.display()))?
        }
        IndexChoice::Server {
            url,
            api_key,
            collection,
        } => index::connect_server(url, api_key.as_deref(), collection, space)
            .await
            .map_err(|e| format!("search.qdrant_url {url}: {e}"))?,
        IndexChoice::Forward => return Ok(None),
    };
    if opened.recreated {
        tracing::warn!(model = %info.id(), "the vector index had other vector sizes and was recreated; every image will be re-embedded");
    }
    Ok(Some((
        Search {
            embedder,
            index: opened.index,
            model_id: info.id(),
        },
        opened.recreated,
    )))
}
