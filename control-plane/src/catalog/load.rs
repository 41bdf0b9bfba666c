//! Reading the catalog's state back: a collection by id or name (or the owner's default), its
//! compiled schema (cached by version: versions never change once written), and an image's
//! descriptive record from its rows.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;
use uuid::Uuid;

use super::record::Record;
use super::schema::{FieldDef, Schema, SchemaDoc};
use super::vocab::TermDef;
use super::CatalogError;
use crate::domain::Owner;
use crate::store::catalog::{CatalogRow, CollectionRow};
use crate::store::images::ImageRow;
use crate::store::Db;

/// Compiled schemas kept in memory.
const CACHE_ENTRIES: usize = 512;

/// Compiled schemas by (collection, version).
type SchemaCache = Mutex<HashMap<(Uuid, i32), Arc<Schema>>>;

fn cache() -> &'static SchemaCache {
    static CACHE: OnceLock<SchemaCache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The collection a request names (its id, or a name of `owner`'s), or `owner`'s default.
/// A collection of another owner is not found.
pub async fn collection(
    db: &Db,
    owner: &Owner,
    given: Option<&str>,
) -> Result<CollectionRow, CatalogError> {
    let found = match given.map(str::trim).filter(|s| !s.is_empty()) {
        None => return Ok(db.default_collection(owner).await?),
        Some(g) => match Uuid::parse_str(g) {
            Ok(id) => db.get_collection(id).await?,
            Err(_) => db.find_collection(owner, g).await?,
        },
    };
    match found {
        Some(c) if c.owner == *owner => Ok(c),
        _ => Err(CatalogError::NotFound("collection")),
    }
}

/// A collection's schema at `version` (its current one when `None`), compiled.
pub async fn schema(
    db: &Db,
    c: &CollectionRow,
    version: Option<i32>,
) -> Result<Arc<Schema>, CatalogError> {
    let v = version.unwrap_or(c.schema_version);
    if v == 0 {
        return Ok(Arc::new(Schema::builtin_only()));
    }
    if let Some(s) = cache()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&(c.id, v))
    {
        return Ok(Arc::clone(s));
    }
    let row = db
        .schema_version(c.id, Some(v))
        .await?
        .ok_or(CatalogError::NotFound("schema version"))?;
    let doc = SchemaDoc {
        fields: serde_json::from_value::<Vec<FieldDef>>(row.fields.0)
            .map_err(|e| CatalogError::Invalid(format!("stored schema: {e}")))?,
        terms: Some(
            serde_json::from_value::<Vec<TermDef>>(row.terms.0)
                .map_err(|e| CatalogError::Invalid(format!("stored vocabulary: {e}")))?,
        ),
    };
    let compiled = Arc::new(
        doc.compile(i64::from(v), Vec::new())
            .map_err(|e| CatalogError::Invalid(format!("stored schema: {e}")))?,
    );
    let mut map = cache().lock().unwrap_or_else(|p| p.into_inner());
    if map.len() >= CACHE_ENTRIES {
        map.clear();
    }
    map.insert((c.id, v), Arc::clone(&compiled));
    Ok(compiled)
}

/// The schema of the collection `id` at its current version.
pub async fn schema_of(db: &Db, id: Uuid) -> Result<(CollectionRow, Arc<Schema>), CatalogError> {
    let c = db
        .get_collection(id)
        .await?
        .ok_or(CatalogError::NotFound("collection"))?;
    let s = schema(db, &c, None).await?;
    Ok((c, s))
}

/// An image's descriptive values as stored: caption and keywords from the image row, the
/// rest from its catalog record.
pub fn values_of(img: &ImageRow, cat: Option<&CatalogRow>) -> BTreeMap<String, Value> {
    let mut v: BTreeMap<String, Value> = cat.map(|c| c.fields.0.clone()).unwrap_or_default();
    if let Some(c) = &img.caption {
        v.insert("caption".into(), Value::String(c.clone()));
    }
    if !img.tags.0.is_empty() {
        v.insert(
            "keywords".into(),
            Value::Array(img.tags.0.iter().cloned().map(Value::String).collect()),
        );
    }
    v
}

/// An image's stored record (values and sources, without re-validating).
pub fn stored_record(img: &ImageRow, cat: Option<&CatalogRow>) -> Record {
    Record {
        values: values_of(img, cat),
        sources: cat.map(|c| c.sources.0.clone()).unwrap_or_default(),
        terms: cat.map(|c| c.terms.0.clone()).unwrap_or_default(),
        term_matches: Vec::new(),
        report: Default::default(),
    }
}
