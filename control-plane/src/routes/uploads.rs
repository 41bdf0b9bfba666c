//! Uploads: `POST /v1/images` (JSON → presigned two-step; multipart → one-shot),
//! `POST /v1/images/{id}/complete`, the local store's signed `PUT /v1/uploads/{id}`, the S3
//! bucket-notification webhook, and the sweeper for uploads never completed.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use flexphoto_edge::origin::OriginError;
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::auth::{Caller, Role};
use crate::blob;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::images::{status, Completion, ImageRow, NewImage};
use crate::store::{now, StoreError};

/// Checks an owner id: 1–128 characters, no control characters or slashes.
pub fn check_owner(owner: &str) -> ApiResult<()> {
    if owner.is_empty()
        || owner.chars().count() > 128
        || owner.chars().any(|c| c.is_control() || c == '/')
    {
        return Err(ApiError::Invalid(
            "owner must be 1 to 128 characters without control characters or '/'".into(),
        ));
    }
    Ok(())
}

/// The content type of `head` from its magic bytes, if it is an image type we know.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if head.len() >= 12 && &head[0..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        Some("image/webp")
    } else if head.starts_with(b"II*\0") || head.starts_with(b"MM\0*") {
        Some("image/tiff")
    } else if head.len() >= 12 && &head[4..8] == b"ftyp" {
        match &head[8..12] {
            b"avif" | b"avis" => Some("image/avif"),
            b"heic" | b"heix" | b"heim" | b"heis" | b"hevc" | b"hevx" => Some("image/heic"),
            b"mif1" | b"msf1" => Some("image/heif"),
            _ => None,
        }
    } else {
        None
    }
}

/// `POST /v1/images`: JSON starts a presigned upload; `multipart/form-data` uploads at once.
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
        let body = axum::body::to_bytes(req.into_body(), state.cfg.max_json_bytes)
            .await
            .map_err(|_| ApiError::TooLarge("the JSON body is too large".into()))?;
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

/// Body of a two-step upload request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUpload {
    owner: String,
    content_type: String,
    size: u64,
    sha256: Option<String>,
    caption: Option<String>,
}

fn check_caption(c: &Option<String>) -> ApiResult<()> {
    if c.as_ref().is_some_and(|c| c.chars().count() > 2000) {
        return Err(ApiError::Invalid(
            "caption must be at most 2000 characters".into(),
        ));
    }
    Ok(())
}

async fn two_step(state: &AppState, caller: &Caller, req: CreateUpload) -> ApiResult<Response> {
    check_owner(&req.owner)?;
    caller.require_owner(Role::Uploader, &req.owner)?;
    check_caption(&req.caption)?;
    let ct = req.content_type.trim().to_ascii_lowercase();
    if !state.cfg.allowed_types.contains(&ct) {
        return Err(ApiError::UnsupportedType(format!(
            "content_type {ct:?} is not accepted; accepted: {}",
            state.cfg.allowed_types.join(", ")
        )));
    }
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
        if let Some(existing) = state.db.find_duplicate(&req.owner, s).await? {
            return Err(ApiError::Duplicate(existing));
        }
    }
    let id = Uuid::new_v4();
    let t = now();
    let key = blob::original_key(id, t, &ct);
    let upload = state
        .blobs
        .presign_put(id, &key, &ct, req.size, state.cfg.upload_url_ttl)
        .await?;
    let img = NewImage {
        id,
        owner: req.owner.clone(),
        mime: ct,
        bytes: Some(req.size as i64),
        sha256: sha.clone(),
        caption: req.caption,
        original_key: key,
        uploaded_at: t,
        upload_expires_at: Some(upload.expires_at),
    };
    match state.db.insert_uploading(&img).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            return Err(duplicate_of(state, &req.owner, sha.as_deref()).await)
        }
        Err(e) => return Err(e.into()),
    }
    let body = json!({
        "id": id,
        "status": status::UPLOADING,
        "upload": upload,
        "complete_url": format!("{}/v1/images/{id}/complete", state.cfg.public_url),
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn duplicate_of(state: &AppState, owner: &str, sha: Option<&str>) -> ApiError {
    match sha {
        Some(s) => match state.db.find_duplicate(owner, s).await {
            Ok(Some(id)) => ApiError::Duplicate(id),
            Ok(None) => ApiError::Conflict("a concurrent upload conflicted; try again".into()),
            Err(e) => e.into(),
        },
        None => ApiError::Conflict("a concurrent upload conflicted; try again".into()),
    }
}

/// A temporary file removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn tmp_path(state: &AppState) -> ApiResult<TempFile> {
    let dir = state.cfg.data_dir.join("tmp");
    std::fs::create_dir_all(&dir)
        .map_err(|e| ApiError::Internal(format!("creating {}: {e}", dir.display())))?;
    Ok(TempFile(dir.join(format!("upload-{}", Uuid::new_v4()))))
}

/// What streaming a body to disk measured.
struct Spooled {
    size: u64,
    sha256: String,
    head: Vec<u8>,
}

/// Streams chunks to a file, hashing them, refusing more than `limit` bytes.
struct Spooler {
    file: tokio::fs::File,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
    head: Vec<u8>,
    limit: u64,
}

impl Spooler {
    async fn create(path: &FsPath, limit: u64) -> ApiResult<Self> {
        let file = tokio::fs::File::create(path)
            .await
            .map_err(|e| ApiError::Internal(format!("creating {}: {e}", path.display())))?;
        Ok(Self {
            file,
            path: path.to_owned(),
            hasher: Sha256::new(),
            size: 0,
            head: Vec::with_capacity(32),
            limit,
        })
    }

    async fn write(&mut self, chunk: &[u8]) -> ApiResult<()> {
        self.size += chunk.len() as u64;
        if self.size > self.limit {
            return Err(ApiError::TooLarge(format!(
                "the upload is over the limit of {} bytes",
                self.limit
            )));
        }
        if self.head.len() < 32 {
            let take = (32 - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        self.hasher.update(chunk);
        self.file
            .write_all(chunk)
            .await
            .map_err(|e| ApiError::Internal(format!("writing {}: {e}", self.path.display())))
    }

    async fn finish(mut self) -> ApiResult<Spooled> {
        self.file
            .flush()
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        self.file
            .sync_all()
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(Spooled {
            size: self.size,
            sha256: hex::encode(self.hasher.finalize()),
            head: self.head,
        })
    }
}

async fn one_shot(state: &AppState, caller: &Caller, mut mp: Multipart) -> ApiResult<Response> {
    let mut owner: Option<String> = None;
    let mut caption: Option<String> = None;
    let mut file: Option<(TempFile, Spooled, Option<String>)> = None;
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::Invalid(format!("bad multipart body: {}", e.body_text()))
    };
    while let Some(mut field) = mp.next_field().await.map_err(bad)? {
        match field.name().unwrap_or("") {
            "owner" => owner = Some(field.text().await.map_err(bad)?.trim().to_owned()),
            "caption" => caption = Some(field.text().await.map_err(bad)?),
            "file" => {
                if file.is_some() {
                    return Err(ApiError::Invalid("send one file per request".into()));
                }
                // Refuse early when the owner came first and the key may not upload for it.
                if let Some(o) = &owner {
                    check_owner(o)?;
                    caller.require_owner(Role::Uploader, o)?;
                }
                let declared = field.content_type().map(|c| c.to_ascii_lowercase());
                let tmp = tmp_path(state)?;
                let mut sp = Spooler::create(&tmp.0, state.cfg.max_upload_bytes).await?;
                while let Some(chunk) = field.chunk().await.map_err(bad)? {
                    sp.write(&chunk).await?;
                }
                let spooled = sp.finish().await?;
                file = Some((tmp, spooled, declared));
            }
            other => {
                return Err(ApiError::Invalid(format!(
                    "unknown field {other:?}; send owner, file and optionally caption"
                )))
            }
        }
    }
    let owner = owner.ok_or_else(|| ApiError::Invalid("the owner field is required".into()))?;
    check_owner(&owner)?;
    caller.require_owner(Role::Uploader, &owner)?;
    check_caption(&caption)?;
    let (tmp, spooled, declared) =
        file.ok_or_else(|| ApiError::Invalid("the file field is required".into()))?;
    // What the bytes are decides; a declared type only stands in for bytes we cannot
    // recognise, which the worker then refuses with a reason.
    let mime = match sniff(&spooled.head) {
        Some(m) if state.cfg.allowed_types.iter().any(|a| a == m) => m.to_owned(),
        Some(m) => return Err(ApiError::UnsupportedType(format!("{m} is not accepted"))),
        None => declared
            .filter(|d| state.cfg.allowed_types.contains(d))
            .unwrap_or_else(|| "application/octet-stream".to_owned()),
    };
    if let Some(existing) = state.db.find_duplicate(&owner, &spooled.sha256).await? {
        return Err(ApiError::Duplicate(existing));
    }
    let id = Uuid::new_v4();
    let t = now();
    let key_s = blob::original_key(id, t, &mime);
    let key = blob::key(&key_s)?;
    state.blobs.store().put_file(&key, &tmp.0, &mime).await?;
    drop(tmp);
    let img = NewImage {
        id,
        owner: owner.clone(),
        mime,
        bytes: Some(spooled.size as i64),
        sha256: Some(spooled.sha256.clone()),
        caption,
        original_key: key_s,
        uploaded_at: t,
        upload_expires_at: None,
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
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id, "status": status::PROCESSING, "bytes": spooled.size, "sha256": spooled.sha256 })),
    )
        .into_response())
}

/// Verifies the object behind an `uploading` image and enqueues processing. Shared by the
/// complete endpoint, the webhook and the sweeper.
pub async fn complete_image(state: &AppState, img: &ImageRow) -> ApiResult<Completion> {
    if img.status != status::UPLOADING {
        return Ok(Completion::AlreadyCompleted(img.status.clone()));
    }
    let key = blob::key(&img.original_key)?;
    let meta = match state.blobs.store().head(&key).await {
        Ok(m) => m,
        Err(OriginError::NotFound(_)) => {
            return Err(ApiError::UploadIncomplete(
                "no uploaded object was found for this image yet".into(),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(declared) = img.declared_bytes {
        if meta.size != declared as u64 {
            return Err(ApiError::UploadIncomplete(format!(
                "the uploaded object is {} bytes, but {declared} were declared",
                meta.size
            )));
        }
    }
    if let Some(ct) = &meta.content_type {
        let ct = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !ct.is_empty() && ct != img.declared_mime {
            return Err(ApiError::UploadIncomplete(format!(
                "the uploaded object is {ct}, but {} was declared",
                img.declared_mime
            )));
        }
    }
    Ok(state
        .db
        .complete_and_enqueue(img.id, meta.size as i64, state.cfg.max_attempts)
        .await?)
}

/// `POST /v1/images/{id}/complete`: idempotent.
pub async fn complete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let img = super::images::load_for(&state, &caller, &id, Role::Uploader).await?;
    let outcome = complete_image(&state, &img).await?;
    let (code, st, repeated) = match outcome {
        Completion::Enqueued => (StatusCode::ACCEPTED, status::PROCESSING.to_owned(), false),
        Completion::AlreadyCompleted(s) => (StatusCode::OK, s, true),
    };
    Ok((
        code,
        Json(json!({ "id": img.id, "status": st, "already_completed": repeated })),
    )
        .into_response())
}

/// Query of the local signed upload URL.
#[derive(Debug, Deserialize)]
pub struct UploadQuery {
    exp: i64,
    sig: String,
}

/// `PUT /v1/uploads/{id}?exp=…&sig=…`: the local store's presigned upload. The signature is
/// the credential; the body must have the declared type and size.
pub async fn local_put(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<UploadQuery>,
    req: Request,
) -> ApiResult<Response> {
    let id = Uuid::parse_str(&id)
        .map_err(|_| ApiError::BadSignature("the upload signature is not valid".into()))?;
    let img = state
        .db
        .get_image(id)
        .await?
        .ok_or_else(|| ApiError::BadSignature("the upload signature is not valid".into()))?;
    let declared = img.declared_bytes.unwrap_or(0).max(0) as u64;
    state
        .blobs
        .verify_local_upload(
            id,
            q.exp,
            &q.sig,
            &img.declared_mime,
            declared,
            chrono::Utc::now(),
        )
        .map_err(|m| ApiError::BadSignature(m.into()))?;
    if img.status != status::UPLOADING {
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
    let tmp = tmp_path(&state)?;
    let mut body: Body = req.into_body();
    let mut sp = Spooler::create(&tmp.0, declared).await?;
    while let Some(frame) = body.frame().await {
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
    let key = blob::key(&img.original_key)?;
    let meta = state
        .blobs
        .store()
        .put_file(&key, &tmp.0, &img.declared_mime)
        .await?;
    Ok((
        StatusCode::OK,
        Json(json!({ "id": id, "bytes": meta.size })),
    )
        .into_response())
}

/// `POST /v1/webhooks/s3`: S3 event notifications (as MinIO sends them) complete uploads,
/// idempotently. Needs an uploader or admin key (MinIO's webhook `auth_token`).
pub async fn s3_webhook(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Uploader)?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::Invalid(format!("bad JSON body: {e}")))?;
    let records = v
        .get("Records")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::Invalid("expected an S3 event with a Records array".into()))?;
    let mut results = Vec::new();
    for r in records {
        let event = r.get("eventName").and_then(Value::as_str).unwrap_or("");
        let key = r
            .pointer("/s3/object/key")
            .and_then(Value::as_str)
            .unwrap_or("");
        let key = percent_decode(key);
        if !event.contains("ObjectCreated") {
            results.push(json!({ "key": key, "result": "ignored: not an ObjectCreated event" }));
            continue;
        }
        let Some(id) = id_from_key(&key) else {
            results.push(json!({ "key": key, "result": "ignored: not an original's key" }));
            continue;
        };
        let img = match state.db.get_image(id).await? {
            Some(i) if i.original_key == key => i,
            _ => {
                results.push(json!({ "key": key, "result": "ignored: no such upload" }));
                continue;
            }
        };
        if caller
            .owner_scope
            .as_deref()
            .is_some_and(|s| s != img.owner)
        {
            results.push(json!({ "key": key, "result": "ignored: another owner's image" }));
            continue;
        }
        let result = match complete_image(&state, &img).await {
            Ok(Completion::Enqueued) => "enqueued".to_owned(),
            Ok(Completion::AlreadyCompleted(s)) => format!("already {s}"),
            Err(e) => format!("refused: {e}"),
        };
        results.push(json!({ "key": key, "id": id, "result": result }));
    }
    Ok(Json(json!({ "records": results })))
}

fn percent_decode(s: &str) -> String {
    let plus = s.replace('+', " ");
    let bytes = plus.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The image id in an original's key (`YYYY/MM/DD/{id}-original.ext`).
pub fn id_from_key(key: &str) -> Option<Uuid> {
    let name = key.rsplit('/').next()?;
    let (id, rest) = name.split_at_checked(36)?;
    rest.starts_with("-original.").then_some(())?;
    Uuid::parse_str(id).ok()
}

/// Reconciles two-step uploads whose URL expired: a present object is completed (enqueued);
/// an absent one fails the image. Returns how many were handled.
pub async fn sweep_once(state: &AppState) -> Result<usize, StoreError> {
    // A little grace: a PUT that started just before expiry may still be finishing.
    let grace = state
        .cfg
        .upload_url_ttl
        .min(std::time::Duration::from_secs(30));
    let before = now() - chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::seconds(30));
    let rows = state.db.expired_uploads(before, 100).await?;
    let n = rows.len();
    for img in rows {
        match complete_image(state, &img).await {
            Ok(_) => tracing::info!(id = %img.id, "sweeper completed an upload"),
            Err(ApiError::UploadIncomplete(reason)) => {
                let reason =
                    format!("the upload was not completed before its URL expired ({reason})");
                state.db.fail_image(img.id, &reason).await?;
                tracing::info!(id = %img.id, "sweeper failed an abandoned upload");
            }
            Err(e) => tracing::warn!(id = %img.id, error = %e, "sweeper could not check an upload"),
        }
    }
    Ok(n)
}

/// Runs [`sweep_once`] every `interval` until shutdown.
pub async fn run_sweeper(state: Arc<AppState>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let Some(interval) = state.cfg.sweep_interval else {
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        if let Err(e) = sweep_once(&state).await {
            tracing::warn!(error = %e, "sweep failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_magic() {
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some("image/jpeg"));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nxxxx"), Some("image/png"));
        assert_eq!(sniff(b"\0\0\0\x1cftypheic"), Some("image/heic"));
        assert_eq!(sniff(b"hello world"), None);
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn ids_from_keys() {
        let id = Uuid::new_v4();
        assert_eq!(
            id_from_key(&format!("2026/01/02/{id}-original.jpg")),
            Some(id)
        );
        assert_eq!(id_from_key(&format!("2026/01/02/{id}-thumb.webp")), None);
        assert_eq!(id_from_key("x"), None);
        assert_eq!(percent_decode("2026%2F01%2Fa+b"), "2026/01/a b");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
