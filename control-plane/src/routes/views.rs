//! The API's JSON documents, rendered from domain rows. Every type here is in the OpenAPI
//! document, generated from these definitions.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use flexphoto_url::encode::img_path;
use flexphoto_url::ImageKey;
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::ImageStatus;
use crate::search::plan::{Explanation, Hit, SearchPage};
use crate::state::AppState;
use crate::store::images::ImageRow;

/// The error document every failure answers with.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
    /// For `duplicate`: the existing image's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub existing_id: Option<uuid::Uuid>,
    /// For `validation_failed`: every failing field and rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures: Option<Vec<crate::catalog::validate::Failure>>,
    /// For `stale_version`: the image's version now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_version: Option<i64>,
}

/// The code and message of an error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code (`invalid_request`, `not_found`, `duplicate` …).
    pub code: String,
    /// What is wrong, for people.
    pub message: String,
}

/// One page of a list. Every paged answer has this shape; pass `next_cursor` back as
/// `cursor` for the next page (absent on the last page).
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T: ToSchema> {
    /// The items of this page.
    pub items: Vec<T>,
    /// The next page's cursor; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Object keys of an image's original and variants.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImageKeys {
    /// The original's key.
    pub original: String,
    /// Each variant's key by name.
    pub variants: BTreeMap<String, String>,
    /// Where a presigned upload lands until processing pins it under `original`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload: Option<String>,
}

/// Where a photo was taken.
#[derive(Debug, Serialize, ToSchema)]
pub struct Gps {
    /// Degrees north.
    pub lat: f64,
    /// Degrees east.
    pub lon: f64,
}

/// An image: descriptive metadata, workflow state, technical metadata and URLs.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImageView {
    /// Id.
    #[schema(value_type = String, format = Uuid)]
    pub id: uuid::Uuid,
    /// Owner.
    #[schema(value_type = String)]
    pub owner: String,
    /// `uploading`, `processing`, `ready` or `failed`.
    #[schema(value_type = String)]
    pub status: String,
    /// Why processing failed.
    pub error: Option<String>,
    /// Processing attempts.
    pub attempts: i32,
    /// `unreviewed`, `needs_review`, `approved` or `rejected`.
    #[schema(value_type = String)]
    pub review_state: String,
    /// Why it was routed to review, or the reviewer's note.
    pub review_reason: Option<String>,
    /// When the upload was accepted.
    pub uploaded_at: DateTime<Utc>,
    /// When processing finished.
    pub processed_at: Option<DateTime<Utc>>,
    /// Size of the original.
    pub bytes: Option<i64>,
    /// SHA-256 of the original.
    pub sha256: Option<String>,
    /// Content type of the original.
    pub mime: String,
    /// Format of the original (`jpeg`, `heif` …).
    pub format: Option<String>,
    /// Width after orientation.
    pub width: Option<i32>,
    /// Height after orientation.
    pub height: Option<i32>,
    /// Storage tier of the original.
    pub storage_tier: String,
    /// Perceptual hash, hex.
    pub phash: Option<String>,
    /// Caption.
    pub caption: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Camera make.
    pub camera_make: Option<String>,
    /// Camera model.
    pub camera_model: Option<String>,
    /// Lens.
    pub lens: Option<String>,
    /// When the photo was taken.
    pub taken_at: Option<DateTime<Utc>>,
    /// ISO.
    pub iso: Option<i32>,
    /// Exposure, seconds.
    pub exposure_time: Option<f64>,
    /// Aperture.
    pub f_number: Option<f64>,
    /// Focal length, mm.
    pub focal_length: Option<f64>,
    /// Where it was taken.
    pub gps: Option<Gps>,
    /// Raw EXIF orientation.
    pub orientation: Option<i32>,
    /// Every EXIF field (and selected XMP) as text; left out of search results.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exif: Option<serde_json::Value>,
    /// Object keys.
    pub keys: ImageKeys,
    /// Edge URL of each variant (ready images).
    pub variants: BTreeMap<String, String>,
    /// Edge URL of the original as the edge serves it (ready images).
    pub original_url: Option<String>,
    /// Edge URLs at common widths (ready images).
    pub sized_urls: Option<BTreeMap<String, String>>,
    /// A template for any size: replace `{width}` and `{height}` (unsigned edges only).
    pub url_template: Option<String>,
    /// Private: its URLs are signed and expire, and the edges serve it to signed requests
    /// only (its own flag, or its owner's policy).
    pub private: bool,
    /// Where its bytes are stored and how often they are requested.
    pub lifecycle: LifecycleView,
}

/// Storage tier and traffic of an image.
#[derive(Debug, Serialize, ToSchema)]
pub struct LifecycleView {
    /// `standard` (hot) or `cold` (some objects moved to cold storage).
    pub tier: String,
    /// When the tier last changed.
    pub tier_changed_at: Option<DateTime<Utc>>,
    /// When an edge last served it (any size or variant).
    pub last_accessed_at: Option<DateTime<Utc>>,
    /// `restoring` or `restored` during an archive restore.
    pub restore_state: Option<String>,
    /// Requests in the last 7 and 30 days (single-image reads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access: Option<crate::store::lifecycle::AccessSummary>,
    /// Each stored object with its size and tier (single-image reads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objects: Option<Vec<ObjectView>>,
}

/// One stored object of an image.
#[derive(Debug, Serialize, ToSchema)]
pub struct ObjectView {
    /// `original` or the variant's name.
    pub kind: String,
    /// Object key.
    pub key: String,
    /// Size, once known.
    pub bytes: Option<i64>,
    /// `standard` or `cold`.
    pub tier: String,
}

/// An edge URL for `key` with `query` options, signed when the edges have keys.
pub fn edge_url(state: &AppState, key: &str, query: &str) -> String {
    let Ok(k) = ImageKey::parse(key) else {
        return String::new();
    };
    if !state.edge_signer.enabled() {
        return unsigned_edge_url(&state.cfg.edge_public_url, &k, query);
    }
    let path = img_path(&k, query);
    let path = match state.edge_signer.sign_path(&path, state.cfg.max_dimension) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "could not sign an edge URL");
            path
        }
    };
    format!("{}{path}", state.cfg.edge_public_url)
}

/// `key`'s edge URL under `edge_public_url` with `query` options, unsigned: the one place
/// keys are written into edge URLs, shared by the API's links and cache purges (a CDN
/// matches what it cached byte for byte).
pub fn unsigned_edge_url(edge_public_url: &str, key: &ImageKey, query: &str) -> String {
    format!("{edge_public_url}{}", img_path(key, query))
}

/// Widths offered in `sized_urls`.
const SIZED_WIDTHS: [u32; 4] = [320, 640, 1280, 1920];

/// The edge URLs of an image's document.
#[derive(Debug, Default)]
pub struct Links {
    /// Each variant's URL by name.
    pub variants: BTreeMap<String, String>,
    /// The original as the edge serves it.
    pub original_url: Option<String>,
    /// URLs at [`SIZED_WIDTHS`].
    pub sized_urls: Option<BTreeMap<String, String>>,
    /// A template for any size (only for URLs that need no signature and never expire).
    pub url_template: Option<String>,
}

/// A private image cannot have URLs: the edges have no signing keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoSigningKeys;

/// When a private image's URLs issued now must stop working; `None` for a public image.
pub fn private_expiry(state: &AppState, img: &ImageRow) -> Result<Option<i64>, NoSigningKeys> {
    if !state.cfg.privacy.is_private(img.private, &img.owner) {
        return Ok(None);
    }
    if !state.edge_signer.enabled() {
        return Err(NoSigningKeys);
    }
    Ok(Some(
        state
            .cfg
            .privacy
            .url_expiry(crate::store::now().timestamp()),
    ))
}

/// The edge URLs of a ready image, each carrying `exp` when given; none for other images.
pub fn links(state: &AppState, img: &ImageRow, exp: Option<i64>) -> Links {
    if img.status != ImageStatus::Ready {
        return Links::default();
    }
    let q = |base: &str| crate::catalog::rights::with_expiry(base, exp);
    Links {
        variants: img
            .variant_keys
            .0
            .iter()
            .map(|(name, key)| (name.clone(), edge_url(state, key, &q(""))))
            .collect(),
        original_url: Some(edge_url(state, &img.original_key, &q(""))),
        sized_urls: Some(
            SIZED_WIDTHS
                .iter()
                .map(|w| {
                    (
                        w.to_string(),
                        edge_url(state, &img.original_key, &q(&format!("w={w}"))),
                    )
                })
                .collect(),
        ),
        // A template has no expiry to carry, and cannot be signed for every size.
        url_template: exp.is_none().then(|| {
            let path = ImageKey::parse(&img.original_key)
                .map(|k| img_path(&k, "w={width}&h={height}&fit=cover"))
                .unwrap_or_default();
            format!("{}{path}", state.cfg.edge_public_url)
        }),
    }
}

/// The public view of an image; a private image's URLs are signed and expire (none when the
/// edges cannot check signatures).
pub fn image(state: &AppState, img: &ImageRow) -> ImageView {
    let ready = img.status == ImageStatus::Ready;
    let private = state.cfg.privacy.is_private(img.private, &img.owner);
    let Links {
        variants,
        original_url,
        sized_urls,
        url_template,
    } = match private_expiry(state, img) {
        Ok(exp) => links(state, img, exp),
        Err(NoSigningKeys) => Links::default(),
    };
    ImageView {
        id: img.id.0,
        owner: img.owner.as_str().to_owned(),
        status: img.status.as_str().to_owned(),
        error: img.error.clone(),
        attempts: img.attempts,
        review_state: img.review_state.as_str().to_owned(),
        review_reason: img.review_reason.clone(),
        uploaded_at: img.uploaded_at,
        processed_at: img.processed_at,
        bytes: img.bytes.or(img.declared_bytes),
        sha256: img.sha256.clone(),
        mime: img
            .mime
            .clone()
            .unwrap_or_else(|| img.declared_mime.clone()),
        format: img.format.clone(),
        width: img.width,
        height: img.height,
        storage_tier: img.storage_tier.clone(),
        phash: img.phash.map(|p| format!("{:016x}", p as u64)),
        caption: img.caption.clone(),
        tags: img.tags.0.clone(),
        camera_make: img.camera_make.clone(),
        camera_model: img.camera_model.clone(),
        lens: img.lens.clone(),
        taken_at: img.taken_at,
        iso: img.iso,
        exposure_time: img.exposure_time,
        f_number: img.f_number,
        focal_length: img.focal_length,
        gps: match (img.gps_lat, img.gps_lon) {
            (Some(lat), Some(lon)) => Some(Gps { lat, lon }),
            _ => None,
        },
        orientation: img.orientation,
        exif: Some(
            img.exif
                .as_ref()
                .map(|e| e.0.clone())
                .unwrap_or(serde_json::Value::Null),
        ),
        keys: ImageKeys {
            original: img.original_key.clone(),
            variants: img.variant_keys.0.clone(),
            upload: img.upload_key.clone().filter(|_| !ready),
        },
        private,
        original_url,
        variants,
        sized_urls,
        url_template,
        lifecycle: LifecycleView {
            tier: img.storage_tier.clone(),
            tier_changed_at: img.tier_changed_at,
            last_accessed_at: img.last_accessed_at,
            restore_state: img.restore_state.clone(),
            access: None,
            objects: None,
        },
    }
}

/// One search result: the image (without its full EXIF), its score and why it matched.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResult {
    /// The image.
    #[serde(flatten)]
    pub image: ImageView,
    /// The catalog's view of it (descriptive, workflow, technical, rights, lineage).
    #[serde(flatten)]
    pub catalog: super::catalog::CatalogParts,
    /// Cosine similarity (similarity searches only).
    pub score: Option<f32>,
    /// Why it is here.
    pub explanation: Explanation,
}

/// A page of search results.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResults {
    /// Best first (or in list order for filter-only searches).
    pub items: Vec<SearchResult>,
    /// The next page's cursor; `null` on the last page.
    pub next_cursor: Option<String>,
    /// `text`, `like_image`, `image` or `filter`.
    pub mode: String,
    /// `relevance`, `newest`, `oldest` or `field`.
    pub sort: String,
    /// The model that made the vectors (similarity searches).
    pub model: Option<String>,
}

/// Renders a search page.
pub async fn search_results(
    state: &AppState,
    page: SearchPage,
) -> crate::error::ApiResult<SearchResults> {
    let ids: Vec<crate::domain::ImageId> = page.hits.iter().map(|h| h.image.id).collect();
    let facts = crate::catalog::explain::PageFacts::load(&state.db, &ids).await?;
    Ok(SearchResults {
        items: page
            .hits
            .into_iter()
            .map(
                |Hit {
                     image: row,
                     score,
                     explanation,
                 }| {
                    let mut image = image(state, &row);
                    image.exif = None;
                    super::catalog::apply_rights_to_urls(
                        state,
                        &mut image,
                        &row,
                        facts.catalogs.get(&row.id),
                    );
                    SearchResult {
                        catalog: super::catalog::parts(&row, &facts),
                        image,
                        score,
                        explanation,
                    }
                },
            )
            .collect(),
        next_cursor: page.next_cursor,
        mode: page.mode.to_owned(),
        sort: page.sort.to_owned(),
        model: page.model,
    })
}
