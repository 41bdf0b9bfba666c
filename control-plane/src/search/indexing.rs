//! Indexing one image: embed it and write its point to the vector index; and looking for an
//! image's near-duplicates among its owner's images. Used by the `process` job (new images, from pixels already
//! decoded) and the `embed` job (re-embedding after a model change, from a stored variant).
//!
//! The point is written before the SQL commit that makes the image `ready`: a crash between
//! the two leaves a point whose image is not ready yet (search hides it, because hits are
//! read back from SQL) and a job that runs again; the upsert is idempotent.

use std::sync::Arc;

use std::collections::HashMap;

use flexphoto_media::fingerprint::{hamming, layout_similarity};
use flexphoto_media::pixels::RgbImage;

use super::embed::ImageEmbedding;
use super::index::{IndexPoint, PointPayload, SearchFilter, VectorName, VectorQuery};
use super::Search;
use crate::domain::Owner;
use crate::domain::{ImageId, ImageStatus};
use crate::state::AppState;
use crate::store::images::ImageRow;
use crate::store::search::{IndexRecord, NearDuplicate};

/// Why indexing failed (all may pass on a retry except a bad image, which the caller has
/// already refused before getting here).
#[derive(Debug, thiserror::Error)]
pub enum IndexingError {
    /// The embedder failed.
    #[error("embedding failed: {0}")]
    Embed(#[from] super::embed::EmbedError),
    /// The index failed.
    #[error(transparent)]
    Index(#[from] super::index::IndexError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The worker threads refused or lost the work.
    #[error("worker threads: {0}")]
    Pool(String),
}

/// Filter fields of an image as the index keeps them; `faces` and `people` as the embedder
/// counted them.
pub fn payload_for(
    img: &ImageRow,
    model: &str,
    faces: Option<u32>,
    people: Option<u32>,
) -> PointPayload {
    PointPayload {
        owner: img.owner.as_str().to_owned(),
        uploaded_at: img.uploaded_at.timestamp_micros(),
        status: img.status.as_str().to_owned(),
        tags: img.tags.0.clone(),
        camera_make: img.camera_make.clone(),
        camera_model: img.camera_model.clone(),
        review_state: img.review_state.as_str().to_owned(),
        model: model.to_owned(),
        faces: faces.map(i64::from),
        people: people.map(i64::from),
        catalog: Default::default(),
    }
}

/// The catalog fields an image's point carries (collection, terms with ancestors, workflow,
/// rights window, superseded versions), read from SQL; empty without a catalog record.
pub async fn catalog_payload(
    state: &AppState,
    id: ImageId,
) -> Result<super::index::CatalogPayload, IndexingError> {
    let Some(cat) = state.db.catalog_of(id).await? else {
        return Ok(Default::default());
    };
    Ok(super::index::CatalogPayload {
        collection: Some(cat.collection_id.to_string()),
        terms: state.db.terms_with_ancestors(id).await?,
        workflow_state: Some(cat.workflow_state.as_str().to_owned()),
        rights_from: cat.rights_from.map(|t| t.timestamp_micros()),
        rights_until: cat.rights_until.map(|t| t.timestamp_micros()),
        lineage: (!cat.is_current).then(|| "superseded".to_owned()),
    })
}

/// Embeds `rgb` on the worker threads; its time is the `embed` ingest stage.
pub async fn embed(
    state: &AppState,
    search: &Search,
    rgb: RgbImage,
) -> Result<ImageEmbedding, IndexingError> {
    let embedder = Arc::clone(&search.embedder);
    let (embedding, took) = state
        .pool
        .submit(None, move |_budget| {
            let start = std::time::Instant::now();
            (embedder.embed_image(&rgb), start.elapsed())
        })
        .map_err(|e| IndexingError::Pool(e.to_string()))?
        .await
        .map_err(|e| IndexingError::Pool(e.to_string()))?;
    state.metrics.observe_embedding(took);
    embedding.map_err(IndexingError::from)
}

/// Near-duplicates of image `id` among `owner`'s images whose vectors are written, by visual
/// embedding (close enough alone, or closer than the candidate floor with matching grey
/// layouts), or by perceptual hash among its ready images when there is no embedding to
/// compare; closest first, at most `max_pairs` per method.
pub async fn near_duplicates(
    state: &AppState,
    search: Option<&Search>,
    id: ImageId,
    owner: &Owner,
    phash: Option<i64>,
    visual: Option<&[f32]>,
) -> Result<Vec<NearDuplicate>, IndexingError> {
    let cfg = &state.cfg.search;
    let max = cfg.max_pairs as usize;
    let mut found = Vec::new();
    // The dHash stands in only where no visual embedding is compared (search off, or an
    // image without vectors): beside the embedding it added false pairs (flat textures hash
    // alike) and no pair the cosine missed (loadtest/README.md, near-duplicates).
    let by_embedding = cfg.min_similarity.is_some() && search.is_some() && visual.is_some();
    if let (Some(limit), Some(hash), false) = (cfg.phash_max_distance, phash, by_embedding) {
        let mut by_hash: Vec<NearDuplicate> = state
            .db
            .phash_candidates(owner, id)
            .await?
            .into_iter()
            .filter_map(|(other, h)| {
                let d = hamming(hash as u64, h as u64);
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
            owner: Some(owner.as_str().to_owned()),
            status: Some(ImageStatus::Ready.as_str().to_owned()),
            exclude: vec![id.0],
            ..SearchFilter::default()
        };
        let floor = cfg.layout_candidate_similarity.map_or(min, |c| c.min(min));
        let hits = search
            .index
            .search(VectorQuery {
                using: VectorName::Visual,
                vector,
                filter: &filter,
                limit: max,
                offset: 0,
                score_threshold: Some(floor),
            })
            .await?;
        // Candidates below `min` must have matching layouts (a crop or a turn of the photo).
        let doubtful: Vec<ImageId> = hits
            .iter()
            .filter(|h| h.score < min)
            .map(|h| ImageId(h.id))
            .chain([id])
            .collect();
        let layouts: HashMap<ImageId, Vec<u8>> = if doubtful.len() > 1 {
            state.db.layouts_of(&doubtful).await?.into_iter().collect()
        } else {
            HashMap::new()
        };
        let own = layouts.get(&id);
        found.extend(
            hits.into_iter()
                .filter(|h| {
                    h.score >= min
                        || own.zip(layouts.get(&ImageId(h.id))).is_some_and(|(a, b)| {
                            layout_similarity(a, b) >= cfg.min_layout_similarity
                        })
                })
                .map(|h| NearDuplicate {
                    other: ImageId(h.id),
                    method: "embedding",
                    distance: f64::from((1.0 - h.score).max(0.0)),
                }),
        );
    }
    Ok(found)
}

/// Embeds an image and writes its point with `payload`; returns what to record in SQL.
/// Idempotent. Near-duplicates are looked for later, by the `duplicates` job.
pub async fn index_image(
    state: &AppState,
    search: &Search,
    id: ImageId,
    payload: PointPayload,
    rgb: RgbImage,
) -> Result<IndexRecord, IndexingError> {
    let layout = flexphoto_media::fingerprint::layout_of_rgb(&rgb.pixels, rgb.width, rgb.height);
    let emb = embed(state, search, rgb).await?;
    let payload = PointPayload {
        faces: emb.faces.map(i64::from),
        people: emb.people.map(i64::from),
        ..payload
    };
    search
        .index
        .upsert(vec![IndexPoint {
            id: id.0,
            semantic: emb.semantic,
            visual: emb.visual,
            payload,
        }])
        .await?;
    Ok(IndexRecord {
        model: Some(search.model_id.clone()),
        concepts: emb.concepts,
        faces: emb.faces,
        people: emb.people,
        layout: Some(layout),
        duplicates: Vec::new(),
    })
}
