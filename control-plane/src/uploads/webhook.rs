//! S3 bucket notifications (as MinIO and AWS send them): an `ObjectCreated` event for an
//! original's key completes its upload, idempotently. Everything else in the event is
//! ignored with a reason.

use serde::Serialize;

use super::complete::complete_image;
use crate::domain::{ImageId, Owner};
use crate::state::AppState;
use crate::store::images::Completion;
use crate::store::StoreError;

/// Why an event body was refused as a whole.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadEvent(pub String);

/// One record of an event, as parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// `s3:ObjectCreated:Put` and the like.
    pub event: String,
    /// The object key, percent-decoded.
    pub key: String,
}

/// What happened to one record.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RecordOutcome {
    /// The object key.
    pub key: String,
    /// The image it belongs to, when it is an original's key.
    pub id: Option<ImageId>,
    /// `enqueued`, `already …`, `ignored: …` or `refused: …`.
    pub result: String,
}

/// Parses the `Records` of an S3 event notification.
pub fn parse(body: &[u8]) -> Result<Vec<EventRecord>, BadEvent> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| BadEvent(format!("bad JSON body: {e}")))?;
    let records = v
        .get("Records")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| BadEvent("expected an S3 event with a Records array".into()))?;
    Ok(records
        .iter()
        .map(|r| EventRecord {
            event: r
                .get("eventName")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("")
                .to_owned(),
            key: decode_key(
                r.pointer("/s3/object/key")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or(""),
            ),
        })
        .collect())
}

/// S3 event keys are form-encoded: `+` is a space, `%XX` a byte.
fn decode_key(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// The image id in an upload's key: the staging key of a presigned upload
/// (`uploads/{id}.ext`) or an original's own key (`YYYY/MM/DD/{id}-original.ext`).
pub fn id_from_key(key: &str) -> Option<ImageId> {
    if let Some(name) = key.strip_prefix("uploads/") {
        let (id, rest) = name.split_at_checked(36)?;
        rest.starts_with('.').then_some(())?;
        return id.parse().ok();
    }
    let name = key.rsplit('/').next()?;
    let (id, rest) = name.split_at_checked(36)?;
    rest.starts_with("-original.").then_some(())?;
    id.parse().ok()
}

/// Completes the uploads the records announce; `scope` limits it to one owner's images.
pub async fn handle(
    state: &AppState,
    records: Vec<EventRecord>,
    scope: Option<&Owner>,
) -> Result<Vec<RecordOutcome>, StoreError> {
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let outcome = |id, result: &str| RecordOutcome {
            key: r.key.clone(),
            id,
            result: result.to_owned(),
        };
        if !r.event.contains("ObjectCreated") {
            out.push(outcome(None, "ignored: not an ObjectCreated event"));
            continue;
        }
        let Some(id) = id_from_key(&r.key) else {
            out.push(outcome(None, "ignored: not an original's key"));
            continue;
        };
        let img = match state.db.get_image(id).await? {
            Some(i) if i.source_key() == r.key => i,
            _ => {
                out.push(outcome(Some(id), "ignored: no such upload"));
                continue;
            }
        };
        if scope.is_some_and(|s| *s != img.owner) {
            out.push(outcome(Some(id), "ignored: another owner's image"));
            continue;
        }
        let result = match complete_image(state, &img).await {
            Ok(Completion::Enqueued) => "enqueued".to_owned(),
            Ok(Completion::AlreadyCompleted(s)) => format!("already {s}"),
            Ok(Completion::Gone) => "ignored: no such upload".to_owned(),
            Err(e) => format!("refused: {e}"),
        };
        out.push(outcome(Some(id), &result));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_events() {
        let id = ImageId::new();
        assert_eq!(
            id_from_key(&format!("2026/01/02/{id}-original.jpg")),
            Some(id)
        );
        assert_eq!(id_from_key(&format!("2026/01/02/{id}-thumb.webp")), None);
        assert_eq!(id_from_key(&format!("uploads/{id}.jpg")), Some(id));
        assert_eq!(id_from_key(&format!("uploads/x/{id}.jpg")), None);
        assert_eq!(id_from_key("x"), None);
        assert_eq!(decode_key("2026%2F01%2Fa+b"), "2026/01/a b");
        assert_eq!(decode_key("100%"), "100%");
        let body = br#"{"Records":[{"eventName":"s3:ObjectCreated:Put","s3":{"object":{"key":"a%2Fb"}}}]}"#;
        assert_eq!(
            parse(body).unwrap(),
            vec![EventRecord {
                event: "s3:ObjectCreated:Put".into(),
                key: "a/b".into()
            }]
        );
        assert!(parse(b"{}").is_err());
    }
}
