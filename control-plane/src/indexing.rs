//! Indexing one image: embed it and write its point to the vector index; and looking for an
//! image's near-duplicates among its owner's images. Used by the `process` job (new images, from pixels already
//! decoded) and the `embed` job (re-embedding after a model change, from a stored variant).
//!
//! The point is written before the SQL commit that makes the image `ready`: a crash between
//! the two leaves a point whose image is not ready yet (search hides it, because hits are
//! read back from SQL) and a job that runs again; the upsert is idempotent.

use std::sync::Arc;

use uuid::Uuid;

use crate::config::{IndexChoice, ModelChoice, SearchConfig};
use crate::embed::{EmbedSettings, Embedder, ImageEmbedding, RgbImage};
use crate::index::{
    IndexPoint, PointPayload, SearchFilter, VectorIndex, VectorName, VectorQuery, VectorSpace,
};
use crate::state::AppState;
use crate::store::images::{status, ImageRow};
use crate::store::search::{IndexRecord, NearDuplicate};

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

/// Loads the configured embedder and opens the vector index; `None` when search is off.
/// The flag says the index was recreated (its vector sizes changed) and must be refilled.
pub async fn open(cfg: &SearchConfig) -> Result<Option<(Search, bool)>, String> {
    let settings = match &cfg.model {
        ModelChoice::None => return Ok(None),
        ModelChoice::Conse { model_dir } => EmbedSettings {
            conse_top_k: cfg.conse_top_k,
            ..EmbedSettings::conse(model_dir.clone())
        },
        ModelChoice::Clip { dir } => EmbedSettings::clip(dir.clone()),
    };
    let embedder = tokio::task::spawn_blocking(move || crate::embed::load(&settings))
        .await
        .map_err(|e| format!("loading the model: {e}"))?
        .map_err(|e| format!("search.model: {e}"))?;
    let info = embedder.info().clone();
    let space = VectorSpace {
        semantic_dims: info.semantic_dims,
        visual_dims: info.visual_dims,
    };
    let opened = match &cfg.index {
        IndexChoice::Embedded { dir } => crate::index::open_embedded(dir, space)
            .await
            .map_err(|e| format!("search.index_dir {}: {e}", dir.display()))?,
        IndexChoice::Server {
            url,
            api_key,
            collection,
        } => crate::index::connect_server(url, api_key.as_deref(), collection, space)
            .await
            .map_err(|e| format!("search.qdrant_url {url}: {e}"))?,
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

/// Why indexing failed (all may pass on a retry except a bad image, which the caller has
/// already refused before getting here).
#[derive(Debug, thiserror::Error)]
pub enum IndexingError {
    /// The embedder failed.
    #[error("embedding failed: {0}")]
    Embed(#[from] crate::embed::EmbedError),
    /// The index failed.
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The worker threads refused or lost the work.
    #[error("worker threads: {0}")]
    Pool(String),
}

/// Filter fields of an image as the index keeps them.
pub fn payload_for(img: &ImageRow, model: &str) -> PointPayload {
    PointPayload {
        owner: img.owner.clone(),
        uploaded_at: img.uploaded_at.timestamp_micros(),
        status: img.status.clone(),
        tags: img.tags.0.clone(),
        camera_make: img.camera_make.clone(),
        camera_model: img.camera_model.clone(),
        review_state: img.review_state.clone(),
        model: model.to_owned(),
    }
}

/// Number of differing bits between two 64-bit hashes.
pub fn hamming(a: i64, b: i64) -> u32 {
    (a ^ b).count_ones()
}

/// Embeds `rgb` on the worker threads.
pub async fn embed(
    state: &AppState,
    search: &Search,
    rgb: RgbImage,
) -> Result<ImageEmbedding, IndexingError> {
    let embedder = Arc::clone(&search.embedder);
    state
        .pool
        .submit(None, move || embedder.embed_image(&rgb))
        .map_err(|e| IndexingError::Pool(e.to_string()))?
        .await
        .map_err(|e| IndexingError::Pool(e.to_string()))?
        .map_err(IndexingError::from)
}

/// Near-duplicates of image `id` among `owner`'s ready images, by perceptual hash and by
/// visual embedding, closest first, at most `max_pairs` per method.
pub async fn near_duplicates(
    state: &AppState,
    search: Option<&Search>,
    id: Uuid,
    owner: &str,
    phash: Option<i64>,
    visual: Option<&[f32]>,
) -> Result<Vec<NearDuplicate>, IndexingError> {
    let cfg = &state.cfg.search;
    let max = cfg.max_pairs as usize;
    let mut found = Vec::new();
    if let (Some(limit), Some(hash)) = (cfg.phash_max_distance, phash) {
        let mut by_hash: Vec<NearDuplicate> = state
            .db
            .phash_candidates(owner, id)
            .await?
            .into_iter()
            .filter_map(|(other, h)| {
                let d = hamming(hash, h);
                (d <= limit).then_some(NearDuplicate {
                    other,
                    method: "phash",
                    distance: f64::from(d),
                })
            })
            .collect();
        by_hash.sort_by(|a, b| {
            a.distance
                .total_cmp(&b.distance)
                .then(a.other.cmp(&b.other))
        });
        by_hash.truncate(max);
        found.extend(by_hash);
    }
    if let (Some(min), Some(search), Some(vector)) = (cfg.min_similarity, search, visual) {
        let filter = SearchFilter {
            owner: Some(owner.to_owned()),
            status: Some(status::READY.to_owned()),
            exclude: vec![id],
            ..SearchFilter::default()
        };
        let hits = search
            .index
            .search(VectorQuery {
                using: VectorName::Visual,
                vector,
                filter: &filter,
                limit: max,
                offset: 0,
                score_threshold: Some(min),
            })
            .await?;
        found.extend(hits.into_iter().map(|h| NearDuplicate {
            other: h.id,
            method: "embedding",
            distance: f64::from((1.0 - h.score).max(0.0)),
        }));
    }
    Ok(found)
}

/// Embeds an image and writes its point with `payload`; returns what to record in SQL.
/// Idempotent. Near-duplicates are looked for later, by the `duplicates` job.
pub async fn index_image(
    state: &AppState,
    search: &Search,
    id: Uuid,
    payload: PointPayload,
    rgb: RgbImage,
) -> Result<IndexRecord, IndexingError> {
    let emb = embed(state, search, rgb).await?;
    search
        .index
        .upsert(vec![IndexPoint {
            id,
            semantic: emb.semantic,
            visual: emb.visual,
            payload,
        }])
        .await?;
    Ok(IndexRecord {
        model: Some(search.model_id.clone()),
        concepts: emb.concepts,
        duplicates: Vec::new(),
    })
}
