//! [`VectorIndex`] on a Qdrant server through `qdrant-client` (gRPC).
//!
//! The collection is created with the two named cosine vectors and the payload indexes when it
//! does not exist; an existing collection is checked for the vector sizes and, if they differ,
//! deleted and created anew ([`Opened::recreated`]). Every write uses `wait=true`: it returns
//! once the server has applied it (and written it to its WAL). The server optimizes by itself.

use std::collections::HashMap;

use qdrant_client::qdrant::{
    point_id::PointIdOptions, vector_output, vectors_config, Condition, CountPointsBuilder,
    CreateCollectionBuilder, CreateFieldIndexCollectionBuilder, DeletePointsBuilder, Distance,
    FieldType, Filter, GetPointsBuilder, PayloadIncludeSelector, PointId, PointStruct,
    PointsIdsList, Range, ScrollPointsBuilder, SearchPointsBuilder, SetPayloadPointsBuilder,
    UpsertPointsBuilder, VectorParamsBuilder, VectorsConfigBuilder,
};
use qdrant_client::{Payload, Qdrant};
use uuid::Uuid;

use super::{
    Clause, Hit, IndexError, IndexPoint, Opened, PointPayload, Result, SearchFilter, StoredVectors,
    VectorIndex, VectorName, VectorQuery, VectorSpace, INTEGER_FIELDS, KEYWORD_FIELDS,
};

/// The Qdrant server backend.
pub struct ServerIndex {
    client: Qdrant,
    collection: String,
    space: VectorSpace,
}

impl std::fmt::Debug for ServerIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIndex")
            .field("collection", &self.collection)
            .field("space", &self.space)
            .finish()
    }
}

fn op_err(e: impl std::fmt::Display) -> IndexError {
    IndexError::Operation(e.to_string())
}

fn unavailable(e: impl std::fmt::Display) -> IndexError {
    IndexError::Unavailable(e.to_string())
}

/// Connects to a Qdrant server (gRPC url, e.g. `http://127.0.0.1:6334`), creating or checking
/// `collection`. A collection with other vector sizes is deleted and created anew (logged as a
/// warning, reported as [`Opened::recreated`]).
pub async fn connect_server(
    url: &str,
    api_key: Option<&str>,
    collection: &str,
    space: VectorSpace,
) -> Result<Opened> {
    let mut builder = Qdrant::from_url(url).skip_compatibility_check();
    if let Some(key) = api_key {
        builder = builder.api_key(key.to_owned());
    }
    let client = builder.build().map_err(unavailable)?;
    let index = ServerIndex {
        client,
        collection: collection.to_owned(),
        space,
    };
    let recreated = index.ensure_collection().await?;
    Ok(Opened {
        index: std::sync::Arc::new(index),
        recreated,
    })
}

impl ServerIndex {
    /// The vector sizes of the existing collection, if it exists.
    async fn existing_space(&self) -> Result<Option<Option<VectorSpace>>> {
        let exists = self
            .client
            .collection_exists(&self.collection)
            .await
            .map_err(unavailable)?;
        if !exists {
            return Ok(None);
        }
        let info = self
            .client
            .collection_info(&self.collection)
            .await
            .map_err(unavailable)?;
        let map = info
            .result
            .and_then(|r| r.config)
            .and_then(|c| c.params)
            .and_then(|p| p.vectors_config)
            .and_then(|v| v.config)
            .and_then(|c| match c {
                vectors_config::Config::ParamsMap(map) => Some(map.map),
                vectors_config::Config::Params(_) => None,
            });
        let size = |name: VectorName| {
            map.as_ref()
                .and_then(|m| m.get(name.as_str()))
                .map(|p| p.size as usize)
        };
        Ok(Some(
            match (size(VectorName::Semantic), size(VectorName::Visual)) {
                (Some(semantic_dims), Some(visual_dims)) => Some(VectorSpace {
                    semantic_dims,
                    visual_dims,
                }),
                _ => None,
            },
        ))
    }

    /// Creates the collection and payload indexes as needed; returns whether it was recreated.
    async fn ensure_collection(&self) -> Result<bool> {
        let mut recreated = false;
        match self.existing_space().await? {
            Some(Some(found)) if found == self.space => {}
            Some(found) => {
                tracing::warn!(
                    collection = %self.collection,
                    ?found,
                    wanted = ?self.space,
                    "vector collection dimensions changed: deleting and recreating it"
                );
                self.client
                    .delete_collection(&self.collection)
                    .await
                    .map_err(unavailable)?;
                self.create_collection().await?;
                recreated = true;
            }
            None => self.create_collection().await?,
        }
        // Idempotent: creating an existing index is accepted by the server.
        for field in KEYWORD_FIELDS {
            self.create_index(field, FieldType::Keyword).await?;
        }
        for field in INTEGER_FIELDS {
            self.create_index(field, FieldType::Integer).await?;
        }
        Ok(recreated)
    }

    async fn create_collection(&self) -> Result<()> {
        let mut vectors = VectorsConfigBuilder::default();
        vectors.add_named_vector_params(
            VectorName::Semantic.as_str(),
            VectorParamsBuilder::new(self.space.semantic_dims as u64, Distance::Cosine),
        );
        vectors.add_named_vector_params(
            VectorName::Visual.as_str(),
            VectorParamsBuilder::new(self.space.visual_dims as u64, Distance::Cosine),
        );
        self.client
            .create_collection(
                CreateCollectionBuilder::new(&self.collection).vectors_config(vectors),
            )
            .await
            .map_err(unavailable)?;
        tracing::info!(collection = %self.collection, space = ?self.space, "vector collection created");
        Ok(())
    }

    async fn create_index(&self, field: &str, kind: FieldType) -> Result<()> {
        self.client
            .create_field_index(
                CreateFieldIndexCollectionBuilder::new(&self.collection, field, kind).wait(true),
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

fn point_id(id: Uuid) -> PointId {
    PointId::from(id.to_string())
}

fn uuid_of(id: Option<PointId>) -> Result<Uuid> {
    match id.and_then(|p| p.point_id_options) {
        Some(PointIdOptions::Uuid(s)) => Uuid::parse_str(&s).map_err(op_err),
        other => Err(IndexError::Operation(format!(
            "unexpected point id {other:?} in the collection"
        ))),
    }
}

fn payload_of(payload: &PointPayload) -> Result<Payload> {
    let value = serde_json::to_value(payload).map_err(op_err)?;
    Payload::try_from(value).map_err(op_err)
}

fn decode_payload(payload: HashMap<String, qdrant_client::qdrant::Value>) -> Result<PointPayload> {
    let map: serde_json::Map<String, serde_json::Value> = payload
        .into_iter()
        .map(|(k, v)| (k, v.into_json()))
        .collect();
    serde_json::from_value(serde_json::Value::Object(map)).map_err(op_err)
}

fn check_dims(name: VectorName, got: usize, expected: usize) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(IndexError::Dimensions {
            name: name.as_str(),
            got,
            expected,
        })
    }
}

fn condition(clause: &Clause) -> Condition {
    match *clause {
        Clause::Keyword(field, value) => Condition::matches(field, value.to_owned()),
        Clause::Range {
            field,
            gt,
            gte,
            lt,
            lte,
        } => Condition::range(field, Range { gt, gte, lt, lte }),
        Clause::Ids(ids) => Condition::has_id(ids.iter().copied().map(point_id)),
    }
}

/// Translates a [`SearchFilter`] into a server filter (applied inside the search).
fn to_filter(filter: &SearchFilter) -> Option<Filter> {
    let clauses = filter.clauses();
    if clauses.is_empty() {
        return None;
    }
    let all = |list: &[Clause]| list.iter().map(condition).collect::<Vec<_>>();
    let mut out = Filter::must(all(&clauses.must));
    out.must_not = all(&clauses.must_not);
    out.should = all(&clauses.should);
    Some(out)
}

fn ids_selector(ids: impl IntoIterator<Item = Uuid>) -> PointsIdsList {
    PointsIdsList {
        ids: ids.into_iter().map(point_id).collect(),
    }
}

#[async_trait::async_trait]
impl VectorIndex for ServerIndex {
    fn backend(&self) -> &'static str {
        "server"
    }

    async fn upsert(&self, points: Vec<IndexPoint>) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        let mut list = Vec::with_capacity(points.len());
        for p in points {
            check_dims(
                VectorName::Semantic,
                p.semantic.len(),
                self.space.semantic_dims,
            )?;
            check_dims(VectorName::Visual, p.visual.len(), self.space.visual_dims)?;
            let vectors: HashMap<String, Vec<f32>> = HashMap::from([
                (VectorName::Semantic.as_str().to_owned(), p.semantic),
                (VectorName::Visual.as_str().to_owned(), p.visual),
            ]);
            list.push(PointStruct::new(
                point_id(p.id),
                vectors,
                payload_of(&p.payload)?,
            ));
        }
        self.client
            .upsert_points(UpsertPointsBuilder::new(&self.collection, list).wait(true))
            .await
            .map_err(op_err)?;
        Ok(())
    }

    async fn set_payload(&self, id: Uuid, payload: &PointPayload) -> Result<()> {
        let result = self
            .client
            .overwrite_payload(
                SetPayloadPointsBuilder::new(&self.collection, payload_of(payload)?)
                    .points_selector(ids_selector([id]))
                    .wait(true),
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            // A missing point is not an error.
            Err(e) if e.to_string().contains("No point with id") => Ok(()),
            Err(e) => Err(op_err(e)),
        }
    }

    async fn delete(&self, ids: &[Uuid]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.client
            .delete_points(
                DeletePointsBuilder::new(&self.collection)
                    .points(ids_selector(ids.iter().copied()))
                    .wait(true),
            )
            .await
            .map_err(op_err)?;
        Ok(())
    }

    async fn search(&self, query: VectorQuery<'_>) -> Result<Vec<Hit>> {
        let expected = match query.using {
            VectorName::Semantic => self.space.semantic_dims,
            VectorName::Visual => self.space.visual_dims,
        };
        check_dims(query.using, query.vector.len(), expected)?;
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let mut request =
            SearchPointsBuilder::new(&self.collection, query.vector.to_vec(), query.limit as u64)
                .vector_name(query.using.as_str())
                .offset(query.offset as u64)
                .with_payload(false);
        if let Some(filter) = to_filter(query.filter) {
            request = request.filter(filter);
        }
        if let Some(threshold) = query.score_threshold {
            request = request.score_threshold(threshold);
        }
        let response = self.client.search_points(request).await.map_err(op_err)?;
        response
            .result
            .into_iter()
            .map(|p| {
                Ok(Hit {
                    id: uuid_of(p.id)?,
                    score: p.score,
                })
            })
            .collect()
    }

    async fn get(&self, id: Uuid) -> Result<Option<StoredVectors>> {
        let response = self
            .client
            .get_points(
                GetPointsBuilder::new(&self.collection, vec![point_id(id)])
                    .with_payload(true)
                    .with_vectors(true),
            )
            .await
            .map_err(op_err)?;
        let Some(point) = response.result.into_iter().next() else {
            return Ok(None);
        };
        let vectors = point
            .vectors
            .ok_or_else(|| IndexError::Operation(format!("point {id} has no vectors")))?;
        let take = |name: VectorName| match vectors.get_vector_by_name(name.as_str()) {
            Some(vector_output::Vector::Dense(d)) => Ok(d.data),
            other => Err(IndexError::Operation(format!(
                "point {id} has no dense {} vector: {other:?}",
                name.as_str()
            ))),
        };
        Ok(Some(StoredVectors {
            semantic: take(VectorName::Semantic)?,
            visual: take(VectorName::Visual)?,
            payload: decode_payload(point.payload)?,
        }))
    }

    async fn list(&self, after: Option<Uuid>, limit: usize) -> Result<Vec<(Uuid, String)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut request = ScrollPointsBuilder::new(&self.collection)
            .limit(u32::try_from(limit + 1).unwrap_or(u32::MAX))
            .with_payload(PayloadIncludeSelector {
                fields: vec!["model".to_owned()],
            })
            .with_vectors(false);
        if let Some(after) = after {
            // The offset is inclusive: one more is asked for and `after` dropped.
            request = request.offset(point_id(after));
        }
        let response = self.client.scroll(request).await.map_err(op_err)?;
        let mut out = Vec::with_capacity(limit);
        for point in response.result {
            let id = uuid_of(point.id)?;
            if Some(id) == after {
                continue;
            }
            let model = point
                .payload
                .get("model")
                .cloned()
                .and_then(|v| v.into_json().as_str().map(str::to_owned))
                .unwrap_or_default();
            out.push((id, model));
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    async fn count(&self, filter: &SearchFilter) -> Result<u64> {
        let mut request = CountPointsBuilder::new(&self.collection).exact(true);
        if let Some(filter) = to_filter(filter) {
            request = request.filter(filter);
        }
        let response = self.client.count(request).await.map_err(op_err)?;
        Ok(response.result.map(|r| r.count).unwrap_or(0))
    }
}
