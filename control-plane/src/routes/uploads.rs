//! Upload routes: `POST /v1/images` (JSON → presigned two-step; multipart → one-shot),
//! `POST /v1/images/{id}/complete`, the local store's signed `PUT /v1/uploads/{id}`, and the
//! S3 bucket-notification webhook. The pipeline behind them is in `uploads/`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use flexphoto_media::ImageFormat;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::body::{self as read, idle_limit};
use super::extract::{ApiPath, ApiQuery};
use super::views::ErrorBody;
use crate::auth::{Caller, Role};
use crate::blob::{self, PresignedUpload};
use crate::catalog::ingest::{self as catalog_ingest, Incoming, IngestOutcome};
use crate::catalog::lineage::Relation;
use crate::catalog::sources::Source;
use crate::domain::{ImageId, ImageStatus, Owner};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::images::{Completion, NewImage};
use crate::store::{now, StoreError};
use crate::uploads::complete::complete_image;
use crate::uploads::spool::{Spooled, Spooler, TempFile};
use crate::uploads::webhook::{self, RecordOutcome};

/// Body of a two-step (presigned) upload request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUpload {
    /// Owner of the image.
    owner: String,
    /// The content type the client will PUT (one of `upload.allowed_types`).
    content_type: String,
    /// Exact size in bytes the client will PUT.
    size: u64,
    /// SHA-256 of the bytes, hex; lets an exact duplicate be refused at once and is checked
    /// against what arrives.
    sha256: Option<String>,
    /// Caption (at most 2000 characters).
    caption: Option<String>,
    /// The collection (id, or name of the owner's; default: the owner's default collection).
    collection: Option<String>,
    /// Descriptive values by field name (title, keywords, credit, creator, rights fields, the
    /// schema's own), validated against the collection's schema. Metadata embedded in the file
    /// is merged in when it is processed.
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// The image this one derives from (same owner).
    #[schema(value_type = Option<String>, format = Uuid)]
    derived_from: Option<ImageId>,
    /// `version` (default: it becomes the chain's current version) or `derivative`.
    relation: Option<String>,
    /// Private: only signed, expiring URLs serve it (default: `privacy.default_private`;
    /// an owner listed in `privacy.private_owners` makes every image private).
    private: Option<bool>,
}

/// A presigned upload was created: PUT the bytes to `upload.url` with `upload.headers`, then
/// call `complete_url`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadCreated {
    /// The new image's id.
    #[schema(value_type = String, format = Uuid)]
    pub id: ImageId,
    /// `uploading`.
    pub status: String,
    /// Where and how to send the bytes.
    pub upload: PresignedUpload,
    /// `POST` here once the bytes are sent.
    pub complete_url: String,
    /// Validation at ingest: collection, failures (routed to review), value sources.
    pub catalog: IngestOutcome,
}

/// A one-shot upload was stored and queued for processing.
#[derive(Debug, Serialize, ToSchema)]
pub struct OneShotCreated {
    /// The new image's id.
    #[schema(value_type = String, format = Uuid)]
    pub id: ImageId,
    /// `processing`.
    pub status: String,
    /// Bytes received.
    pub bytes: u64,
    /// Their SHA-256.
    pub sha256: String,
    /// Validation at ingest: collection, failures (routed to review), value sources.
    pub catalog: IngestOutcome,
}

/// How a completion ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct Completed {
    /// The image.
    #[schema(value_type = String, format = Uuid)]
    pub id: ImageId,
    /// Its status now.
    pub status: String,
    /// Whether it had been completed before (an idempotent repeat).
    pub already_completed: bool,
}

/// `POST /v1/images`: `application/json` ([`CreateUpload`]) starts a presigned upload;
/// `multipart/form-data` with `owner`, `file` and optionally `caption` uploads at once.
/// Catalog fields in the form: `collection`, `metadata` (a JSON object of values),
/// `metadata_source` (`upload`, or `csv` for values from a manifest), a `sidecar` XMP file,
/// `derived_from` and `relation`, and any descriptive field by name (`title`, `keywords`,
/// `credit`, `creator`, `rights_holder`, `licence`, `usage_restrictions`,
/// `rights_valid_from`, `rights_valid_until`) or as `fields.NAME`. Values (and IPTC/XMP
/// embedded in the file) are validated against the collection's schema: a collection that
/// refuses invalid uploads answers 422 listing every failing field and rule; one that
/// reviews them accepts the upload and routes it to review.
#[utoipa::path(post, path = "/v1/images", tag = "uploads",
    request_body(content(
        (CreateUpload = "application/json"),
        (String = "multipart/form-data")
    )),
    responses(
        (status = 201, description = "Presigned upload created (JSON) or stored and queued (multipart)", body = UploadCreated),
        (status = 400, body = ErrorBody), (status = 409, description = "Exact duplicate", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, description = "The collection refuses uploads failing its rules; every failure is listed", body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    req: Request,
) -> ApiResult<Response> {
    caller.require(Role::Uploader)?;
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ct.starts_with("multipart/form-data") {
        let mp = Multipart::from_request(req, &state)
            .await
            .map_err(|e| ApiError::Invalid(format!("bad multipart body: {}", e.body_text())))?;
        one_shot(&state, &caller, mp).await
    } else if ct.starts_with("application/json") {
        let body = read::bytes(
            &state,
            req.into_body(),
            state.cfg.max_json_bytes,
            "JSON body",
        )
        .await?;
        let create: CreateUpload = serde_json::from_slice(&body)
            .map_err(|e| ApiError::Invalid(format!("bad JSON body: {e}")))?;
        two_step(&state, &caller, create).await
    } else {
        Err(ApiError::UnsupportedType(
            "send application/json (presigned upload) or multipart/form-data (one-shot upload)"
                .into(),
        ))
    }
}

fn check_caption(c: &Option<String>) -> ApiResult<()> {
    if c.as_ref().is_some_and(|c| c.chars().count() > 2000) {
        return Err(ApiError::Invalid(
            "caption must be at most 2000 characters".into(),
        ));
    }
    Ok(())
}

fn allowed(state: &AppState) -> String {
    state
        .cfg
        .allowed_formats
        .iter()
        .map(|f| f.mime())
        .collect::<Vec<_>>()
        .join(", ")
}

async fn two_step(state: &AppState, caller: &Caller, req: CreateUpload) -> ApiResult<Response> {
    let owner = Owner::parse(&req.owner)?;
    caller.require_owner(Role::Uploader, &owner)?;
    check_caption(&req.caption)?;
    let ct = req.content_type.trim().to_ascii_lowercase();
    let format = ImageFormat::from_mime(&ct)
        .filter(|f| state.cfg.allowed_formats.contains(f))
        .ok_or_else(|| {
            ApiError::UnsupportedType(format!(
                "content_type {ct:?} is not accepted; accepted: {}",
                allowed(state)
            ))
        })?;
    if req.size == 0 {
        return Err(ApiError::Invalid("size must be at least 1".into()));
    }
    if req.size > state.cfg.max_upload_bytes {
        return Err(ApiError::TooLarge(format!(
            "size {} is over the limit of {} bytes",
            req.size, state.cfg.max_upload_bytes
        )));
    }
    let sha = match &req.sha256 {
        Some(s) if s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()) => {
            Some(s.to_ascii_lowercase())
        }
        Some(_) => return Err(ApiError::Invalid("sha256 must be 64 hex digits".into())),
        None => None,
    };
    if let Some(s) = &sha {
        if let Some(existing) = state.db.find_duplicate(&owner, s).await? {
            return Err(ApiError::Duplicate(existing));
        }
    }
    let mut declared: std::collections::BTreeMap<String, serde_json::Value> =
        req.metadata.unwrap_or_default().into_iter().collect();
    if let Some(c) = &req.caption {
        declared.insert("caption".into(), serde_json::Value::String(c.clone()));
    }
    let prepared = catalog_ingest::prepare(
        state,
        &owner,
        &caller.actor,
        Incoming {
            collection: req.collection,
            declared,
            declared_source: Some(Source::Upload),
            derived_from: req.derived_from,
            relation: req
                .relation
                .as_deref()
                .map(Relation::parse)
                .transpose()
                .map_err(ApiError::Invalid)?,
            ..Default::default()
        },
    )
    .await?;
    let id = ImageId::new();
    let t = now();
    // The presigned URL names a staging key; processing copies what it read to the
    // original's key, which no URL can write, so reusing the URL cannot swap the image.
    let staging = blob::staging_key(id, Some(format));
    let upload = state
        .blobs
        .presign_put(id, &staging, &ct, req.size, state.cfg.upload_url_ttl)
        .await?;
    let img = NewImage {
        id,
        owner: owner.clone(),
        mime: ct,
        bytes: Some(req.size as i64),
        sha256: sha.clone(),
        caption: prepared.caption.clone(),
        original_key: blob::original_key(id, t, Some(format)),
        uploaded_at: t,
        upload_expires_at: Some(upload.expires_at),
        uploaded_by: Some(caller.key_id),
        upload_key: Some(staging),
        private: state.cfg.privacy.initial(req.private),
        catalog: Some(prepared.insert),
    };
    match state.db.insert_uploading(&img).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            return Err(duplicate_of(state, &owner, sha.as_deref()).await)
        }
        Err(e) => return Err(e.into()),
    }
    let body = UploadCreated {
        id,
        status: ImageStatus::Uploading.as_str().to_owned(),
        upload,
        complete_url: format!("{}/v1/images/{id}/complete", state.cfg.public_url),
        catalog: prepared.outcome,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn duplicate_of(state: &AppState, owner: &Owner, sha: Option<&str>) -> ApiError {
    match sha {
        Some(s) => match state.db.find_duplicate(owner, s).await {
            Ok(Some(id)) => ApiError::Duplicate(id),
            Ok(None) => ApiError::Conflict("a concurrent upload conflicted; try again".into()),
            Err(e) => e.into(),
        },
        None => ApiError::Conflict("a concurrent upload conflicted; try again".into()),
    }
}

async fn one_shot(state: &AppState, caller: &Caller, mut mp: Multipart) -> ApiResult<Response> {
    let mut owner: Option<Owner> = None;
    let mut caption: Option<String> = None;
    let mut file: Option<(TempFile, Spooled, Option<String>)> = None;
    let mut inc = Incoming::default();
    let mut metadata_source = Source::Upload;
    let mut private: Option<bool> = None;
    while let Some(mut field) = read::next_field(state, &mut mp).await? {
        match field.name().unwrap_or("") {
            "owner" => {
                let o = Owner::parse(read::text(state, &mut field).await?.trim())?;
                // Refuse early when the key may not upload for this owner.
                caller.require_owner(Role::Uploader, &o)?;
                owner = Some(o);
            }
            "caption" => caption = Some(read::text(state, &mut field).await?),
            "file" => {
                if file.is_some() {
                    return Err(ApiError::Invalid("send one file per request".into()));
                }
                let declared = field.content_type().map(|c| c.to_ascii_lowercase());
                let tmp = TempFile::new_in(&state.cfg.data_dir)?;
                let mut sp = Spooler::create(tmp.path(), state.cfg.max_upload_bytes).await?;
                while let Some(chunk) = read::chunk(state, &mut field).await? {
                    sp.write(&chunk).await?;
                }
                let spooled = sp.finish().await?;
                file = Some((tmp, spooled, declared));
            }
            "collection" => inc.collection = Some(read::text(state, &mut field).await?),
            "metadata" => {
                let text = read::text(state, &mut field).await?;
                let m: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
                    .map_err(|e| {
                        ApiError::Invalid(format!("metadata must be a JSON object: {e}"))
                    })?;
                inc.declared.extend(m);
            }
            "metadata_source" => {
                metadata_source = match read::text(state, &mut field).await?.trim() {
                    "upload" => Source::Upload,
                    "csv" => Source::Csv,
                    other => {
                        return Err(ApiError::Invalid(format!(
                            "metadata_source must be upload or csv, not {other:?}"
                        )))
                    }
                }
            }
            "sidecar" => {
                let mut buf = Vec::new();
                while let Some(chunk) = read::chunk(state, &mut field).await? {
                    if buf.len() + chunk.len() > catalog_ingest::MAX_SIDECAR {
                        return Err(ApiError::TooLarge(format!(
                            "the sidecar is over {} bytes",
                            catalog_ingest::MAX_SIDECAR
                        )));
                    }
                    buf.extend_from_slice(&chunk);
                }
                inc.sidecar = Some(buf);
            }
            "derived_from" => {
                let text = read::text(state, &mut field).await?;
                inc.derived_from = Some(text.trim().parse::<ImageId>()?);
            }
            "relation" => {
                let text = read::text(state, &mut field).await?;
                inc.relation = Some(Relation::parse(text.trim()).map_err(ApiError::Invalid)?);
            }
            "private" => {
                private = Some(match read::text(state, &mut field).await?.trim() {
                    "true" | "1" | "on" => true,
                    "false" | "0" | "off" => false,
                    other => {
                        return Err(ApiError::Invalid(format!(
                            "private must be true or false, not {other:?}"
                        )))
                    }
                })
            }
            other => {
                let other = other.to_owned();
                let name = other.strip_prefix("fields.").unwrap_or(&other).to_owned();
                let known = other.starts_with("fields.")
                    || crate::catalog::fields::builtin(&name).is_some();
                if !known || crate::catalog::fields::check_name(&name).is_err() {
                    return Err(ApiError::Invalid(format!(
                        "unknown field {other:?}; send owner, file and optionally caption, \
                         collection, metadata, metadata_source, sidecar, derived_from, relation, private, \
                         descriptive fields by name or fields.NAME"
                    )));
                }
                let text = read::text(state, &mut field).await?;
                inc.declared.insert(name, serde_json::Value::String(text));
            }
        }
    }
    let owner = owner.ok_or_else(|| ApiError::Invalid("the owner field is required".into()))?;
    check_caption(&caption)?;
    let (tmp, spooled, declared) =
        file.ok_or_else(|| ApiError::Invalid("the file field is required".into()))?;
    // What the bytes are decides, never the declared type: the loader libvips picks for
    // them must be on the allow-list and their header must read within the pixel limit,
    // or nothing is stored.
    let _ = declared;
    let format = probe_upload(state, tmp.path()).await?;
    let mime = format.mime();
    if let Some(existing) = state.db.find_duplicate(&owner, &spooled.sha256).await? {
        return Err(ApiError::Duplicate(existing));
    }
    // Validation at ingest, before anything is stored: declared values, a sidecar, and what
    // the file embeds.
    if let Some(c) = &caption {
        inc.declared
            .insert("caption".into(), serde_json::Value::String(c.clone()));
    }
    inc.declared_source = Some(metadata_source);
    inc.head = Some(read_head(tmp.path()).await?);
    let prepared = catalog_ingest::prepare(state, &owner, &caller.actor, inc).await?;
    let id = ImageId::new();
    let t = now();
    let key_s = blob::original_key(id, t, Some(format));
    let key = blob::key(&key_s)?;
    state.blobs.store().put_file(&key, tmp.path(), mime).await?;
    drop(tmp);
    let img = NewImage {
        id,
        owner: owner.clone(),
        mime: mime.to_owned(),
        bytes: Some(spooled.size as i64),
        sha256: Some(spooled.sha256.clone()),
        caption: prepared.caption.clone(),
        original_key: key_s,
        uploaded_at: t,
        upload_expires_at: None,
        uploaded_by: Some(caller.key_id),
        upload_key: None,
        private: state.cfg.privacy.initial(private),
        catalog: Some(prepared.insert),
    };
    if let Err(e) = state
        .db
        .insert_stored_and_enqueue(&img, state.cfg.max_attempts)
        .await
    {
        let _ = state.blobs.store().delete(&key).await;
        return Err(match e {
            StoreError::Conflict(_) => duplicate_of(state, &owner, Some(&spooled.sha256)).await,
            other => other.into(),
        });
    }
    tracing::info!(%id, %owner, bytes = spooled.size, "one-shot upload stored");
    let body = OneShotCreated {
        id,
        status: ImageStatus::Processing.as_str().to_owned(),
        bytes: spooled.size,
        sha256: spooled.sha256,
        catalog: prepared.outcome,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Checks a spooled one-shot upload as a worker will read it, before it is stored: the
/// loader libvips picks must be allowed (`upload.allowed_types`; 415 otherwise, also for
/// bytes no loader reads) and the header must declare no more than the source pixel limit
/// (422). Runs on the bounded image pool, which also bounds the memory of reading the file.
async fn probe_upload(state: &AppState, path: &std::path::Path) -> ApiResult<ImageFormat> {
    use flexphoto_media::pool::PoolError;
    use flexphoto_media::transform::{self, TransformError};
    let limits = *state.ingest.limits();
    let path = path.to_owned();
    let deadline = std::time::Instant::now() + state.ingest.timeout();
    let probed = state
        .pool
        .submit(Some(deadline), move |_budget| {
            let bytes = bytes::Bytes::from(std::fs::read(&path).map_err(|e| {
                TransformError::Internal(format!("reading the spooled upload: {e}"))
            })?);
            let header = transform::probe_allowed(&bytes, limits.formats)?;
            let pixels = u64::from(header.width) * u64::from(header.page_height);
            if pixels > limits.max_source_pixels {
                return Err(TransformError::TooManyPixels {
                    width: header.width,
                    height: header.page_height,
                    limit: limits.max_source_pixels,
                });
            }
            ImageFormat::from_loader(&header.loader, &bytes).ok_or(TransformError::NotAnImage)
        })
        .map_err(|_| ApiError::Busy("the image threads are busy; retry shortly".into()))?
        .await;
    let refused =
        |why: String| ApiError::UnsupportedType(format!("{why}; accepted: {}", allowed(state)));
    match probed {
        Ok(Ok(f)) => Ok(f),
        Ok(Err(e @ TransformError::TooManyPixels { .. })) => {
            Err(ApiError::Unprocessable(e.to_string()))
        }
        Ok(Err(TransformError::Internal(m))) => Err(ApiError::Internal(m)),
        Ok(Err(TransformError::DeadlineExceeded)) | Err(PoolError::Expired | PoolError::Full) => {
            Err(ApiError::Busy(
                "the image threads are busy; retry shortly".into(),
            ))
        }
        Ok(Err(e)) => Err(refused(e.to_string())),
        Err(PoolError::Panicked) => Err(refused("the file could not be read as an image".into())),
    }
}

/// The first MiB of a spooled upload, where embedded XMP and IPTC are.
async fn read_head(path: &std::path::Path) -> ApiResult<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let f = tokio::fs::File::open(path)
        .await
        .map_err(|e| ApiError::Internal(format!("reading the upload: {e}")))?;
    let mut buf = Vec::new();
    f.take(1 << 20)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| ApiError::Internal(format!("reading the upload: {e}")))?;
    Ok(buf)
}

/// `POST /v1/images/{id}/complete`: checks the uploaded object and queues processing;
/// idempotent.
#[utoipa::path(post, path = "/v1/images/{id}/complete", tag = "uploads",
    params(("id" = String, Path, description = "Image id")),
    responses((status = 202, description = "Queued for processing", body = Completed),
        (status = 200, description = "Already completed", body = Completed),
        (status = 409, description = "No object yet, or not what was declared", body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn complete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let img = super::images::load_for(&state, &caller, &id, Role::Uploader).await?;
    let (code, st, repeated) = match complete_image(&state, &img).await? {
        Completion::Enqueued => (StatusCode::ACCEPTED, ImageStatus::Processing, false),
        Completion::AlreadyCompleted(s) => (StatusCode::OK, s, true),
        Completion::Gone => return Err(ApiError::NotFound("image")),
    };
    let body = Completed {
        id: img.id,
        status: st.as_str().to_owned(),
        already_completed: repeated,
    };
    Ok((code, Json(body)).into_response())
}

/// Query of the local signed upload URL.
#[derive(Debug, Deserialize)]
pub struct UploadQuery {
    exp: i64,
    sig: String,
}

/// What a local upload stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct LocalUploadStored {
    /// The image.
    #[schema(value_type = String, format = Uuid)]
    pub id: ImageId,
    /// Bytes stored.
    pub bytes: u64,
}

/// `PUT /v1/uploads/{id}?exp=…&sig=…`: the local store's presigned upload. The signature is
/// the credential; the body must have the declared type and size.
#[utoipa::path(put, path = "/v1/uploads/{id}", tag = "uploads",
    params(("id" = String, Path, description = "Image id"),
        ("exp" = i64, Query, description = "Expiry, Unix seconds"),
        ("sig" = String, Query, description = "Signature")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = LocalUploadStored), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn local_put(
    State(state): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<UploadQuery>,
    req: Request,
) -> ApiResult<Response> {
    let bad_sig = || ApiError::BadSignature("the upload signature is not valid".into());
    let id: ImageId = id.parse().map_err(|_| bad_sig())?;
    let img = state.db.get_image(id).await?.ok_or_else(bad_sig)?;
    let declared = img.declared_bytes.unwrap_or(0).max(0) as u64;
    state
        .blobs
        .verify_local_upload(id, q.exp, &q.sig, &img.declared_mime, declared, Utc::now())
        .map_err(|m| ApiError::BadSignature(m.into()))?;
    if img.status != ImageStatus::Uploading {
        return Err(ApiError::Conflict(format!(
            "the image is already {}",
            img.status
        )));
    }
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if ct != img.declared_mime {
        return Err(ApiError::BadSignature(format!(
            "Content-Type must be {} as signed",
            img.declared_mime
        )));
    }
    let tmp = TempFile::new_in(&state.cfg.data_dir)?;
    let mut body: Body = req.into_body();
    let mut sp = Spooler::create(tmp.path(), declared).await?;
    while let Some(frame) = idle_limit(&state, body.frame()).await? {
        let frame =
            frame.map_err(|e| ApiError::Invalid(format!("reading the upload failed: {e}")))?;
        if let Ok(d) = frame.into_data() {
            sp.write(&d).await?;
        }
    }
    let spooled = sp.finish().await?;
    if spooled.size != declared {
        return Err(ApiError::Invalid(format!(
            "the body is {} bytes, but {declared} were declared",
            spooled.size
        )));
    }
    let key = blob::key(img.source_key())?;
    let meta = state
        .blobs
        .store()
        .put_file(&key, tmp.path(), &img.declared_mime)
        .await?;
    let body = LocalUploadStored {
        id,
        bytes: meta.size,
    };
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// What the webhook did with each record.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookOutcome {
    /// One entry per record of the event.
    pub records: Vec<RecordOutcome>,
}

/// Most records one notification may carry.
const MAX_WEBHOOK_RECORDS: usize = 100;

/// `POST /v1/webhooks/s3`: S3 event notifications (as MinIO sends them) complete uploads,
/// idempotently. Authenticated by `upload.webhook_secret` as a bearer token (MinIO's webhook
/// `auth_token`); off when no secret is configured. At most 100 records per notification.
#[utoipa::path(post, path = "/v1/webhooks/s3", tag = "uploads",
    request_body(content = Object, description = "An S3 event notification with Records"),
    responses((status = 200, body = WebhookOutcome), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn s3_webhook(
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Json<WebhookOutcome>> {
    let Some(secret) = &state.cfg.webhook_secret else {
        return Err(ApiError::Forbidden(
            "the S3 webhook is off (upload.webhook_secret is empty)".into(),
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        given.as_bytes(),
        secret.as_bytes(),
    )) {
        return Err(ApiError::Forbidden(
            "the webhook secret is missing or wrong".into(),
        ));
    }
    let records = webhook::parse(&body).map_err(|e| ApiError::Invalid(e.to_string()))?;
    if records.len() > MAX_WEBHOOK_RECORDS {
        return Err(ApiError::TooLarge(format!(
            "a notification may carry at most {MAX_WEBHOOK_RECORDS} records"
        )));
    }
    let records = webhook::handle(&state, records, None).await?;
    Ok(Json(WebhookOutcome { records }))
}
