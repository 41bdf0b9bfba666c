//! [`VectorIndex`] on the embedded Qdrant engine (`qdrant-edge` 0.7.2), one shard directory per
//! index.
//!
//! # Durability
//! `qdrant-edge` 0.7.2 appends every update to its WAL (an mmap, not synced) and applies it to
//! the in-process segments, but `EdgeShard::load` does **not** replay the WAL. A write is only
//! on disk once `EdgeShard::flush` has synced the WAL and every segment, which costs about as
//! much CPU as the rest of an image's indexing. So:
//!
//! - `set_payload` and `delete` return only after a flush that began after their update: when
//!   they return `Ok`, the write survives `kill -9` and a power cut (a payload carries what
//!   filters check, such as the owner; a deleted image must not come back). Writers that
//!   arrive together share one flush (group commit).
//! - `upsert` does the same unless [`EmbeddedOptions::flush_interval`] is set (the service
//!   sets it): then a background thread flushes at that interval, a durable write or
//!   [`VectorIndex::sync`] flushes everything before it, and so does dropping the last handle.
//!   A crash can lose the upserts of the last interval. They are new vectors, and SQL is the
//!   truth: the reconciliation every process start runs (`search::reconcile`) finds each ready
//!   image without a point and queues its `embed` job, so the image is embedded again.
//!
//! # Optimization
//! `qdrant-edge` has no background optimizer: new points land in a plain (brute-force)
//! appendable segment until `EdgeShard::optimize` builds HNSW and payload indexes. This backend
//! counts written points and, once [`EmbeddedOptions::optimize_after_writes`] have accumulated,
//! starts one optimization on a blocking thread (never two at once, never on a request). It
//! also runs one after opening. [`EmbeddedIndex::optimize`] runs one on demand.
//!
//! # Locking
//! `EdgeShard::flush` panics if the WAL or the segment holder is locked at that moment, so
//! updates, flushes and optimizations are serialized by one gate. Searches never take
//! it. A write that arrives during an optimization waits for it to finish.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Instant;

use qdrant_edge::{
    Condition, CountRequest, Distance, EdgeConfig, EdgeOptimizersConfig, EdgeShard,
    EdgeVectorParams, FieldCondition, Filter, JsonPath, Match, NamedQuery, OperationError, Payload,
    PayloadFieldSchema, PayloadSchemaType, PointId, PointInsertOperations, PointOperations,
    PointStruct, QuantizationConfig, QuantizationSearchParams, Range, Record,
    ScalarQuantizationConfig, ScalarType, ScrollRequest, SearchParams, SearchRequest,
    UpdateOperation, VectorInternal, VectorStructInternal, Vectors, WithPayloadInterface,
    WithVector,
};
use qdrant_edge::{CreateIndex, FieldIndexOperations, PayloadOps, QueryEnum, SetPayloadOp};
use uuid::Uuid;

use super::{
    Clause, Hit, IndexError, IndexPoint, Opened, PointPayload, Result, SearchFilter, StoredVectors,
    VectorIndex, VectorName, VectorQuery, VectorSpace, INTEGER_FIELDS, KEYWORD_FIELDS,
};

/// How the `visual` vectors are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VisualStorage {
    /// Full f32 vectors in RAM (default): fastest, ~5 KB per 1280-d point.
    #[default]
    Ram,
    /// f32 vectors on disk (mmap) plus an int8 scalar-quantized copy in RAM; searches use the
    /// int8 copy and rescore the best candidates with the original vectors. About a quarter of
    /// the RAM for `visual`, slightly lower recall before rescoring.
    QuantizedOnDisk,
}

/// Tuning of the embedded backend. Storage options apply when a shard is created; an existing
/// shard keeps the layout it was created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// Storage of the `visual` vectors.
    pub visual_storage: VisualStorage,
    /// Start a background optimization once this many points were written (upserted, updated or
    /// deleted) since the last one. `0` disables automatic optimization.
    pub optimize_after_writes: u64,
    /// Segments larger than this (KB of vectors) get HNSW indexes when optimized; `None` keeps
    /// qdrant's default. Applies at creation. Tests lower it to exercise the HNSW path.
    pub indexing_threshold_kb: Option<usize>,
    /// `Some`: upserts return before their flush, and a background flush runs this often
    /// (see the module docs: a crash loses at most this much of upserts, which reconciliation
    /// restores). `None` (default): every upsert is durable when it returns.
    pub flush_interval: Option<std::time::Duration>,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            visual_storage: VisualStorage::Ram,
            optimize_after_writes: 2_000,
            indexing_threshold_kb: None,
            flush_interval: None,
        }
    }
}

/// The shared state of one open shard directory.
struct Inner {
    dir: PathBuf,
    space: VectorSpace,
    shard: EdgeShard,
    /// Serializes updates and flushes with optimizations; see the module docs.
    gate: Mutex<()>,
    /// How many updates have been applied (counted under `gate`).
    applied: AtomicU64,
    /// How many of them a flush has made durable; held while flushing, so that writers
    /// waiting for a flush share the next one.
    durable: Mutex<u64>,
    /// Flushes made for writes (for tests).
    flushes: AtomicU64,
    /// Upserts return before their flush ([`EmbeddedOptions::flush_interval`]).
    defer_upserts: bool,
    /// Points written since the last optimization started.
    pending: AtomicU64,
    /// An optimization is running or queued.
    optimizing: AtomicBool,
    optimize_after: u64,
}

/// The embedded Qdrant backend. Cheap to clone; clones share one open shard.
#[derive(Clone)]
pub struct EmbeddedIndex {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EmbeddedIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedIndex")
            .field("dir", &self.inner.dir)
            .field("space", &self.inner.space)
            .finish()
    }
}

/// Shard directories open in this process: a directory can be opened only once (WAL lock), so
/// a second open returns the live instance.
fn registry() -> &'static Mutex<HashMap<PathBuf, Weak<Inner>>> {
    static OPEN: OnceLock<Mutex<HashMap<PathBuf, Weak<Inner>>>> = OnceLock::new();
    OPEN.get_or_init(|| Mutex::new(HashMap::new()))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a gate cannot leave `()` inconsistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn op_err(e: impl std::fmt::Display) -> IndexError {
    IndexError::Operation(e.to_string())
}

fn unavailable(e: impl std::fmt::Display) -> IndexError {
    IndexError::Unavailable(e.to_string())
}

/// Flushes `inner`'s deferred upserts every `every` until its last handle is dropped.
fn spawn_flusher(inner: Weak<Inner>, every: std::time::Duration) -> Result<()> {
    std::thread::Builder::new()
        .name("vector-flush".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            let Some(inner) = inner.upgrade() else { return };
            inner.make_all_durable();
        })
        .map(|_| ())
        .map_err(|e| unavailable(format!("cannot start the index flush thread: {e}")))
}

/// Runs blocking shard work off the async runtime.
async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| IndexError::Operation(format!("index task failed: {e}")))?
}

fn shard_config(space: VectorSpace, options: &EmbeddedOptions) -> Result<EdgeConfig> {
    let semantic = EdgeVectorParams::builder(space.semantic_dims, Distance::Cosine).build();
    let mut visual = EdgeVectorParams::builder(space.visual_dims, Distance::Cosine);
    if options.visual_storage == VisualStorage::QuantizedOnDisk {
        let quantization = QuantizationConfig::from(ScalarQuantizationConfig {
            r#type: ScalarType::Int8,
            quantile: Some(0.99),
            always_ram: Some(true),
        });
        visual = visual.on_disk(true).quantization_config(quantization);
    }
    let optimizers = EdgeOptimizersConfig {
        indexing_threshold: options.indexing_threshold_kb,
        ..Default::default()
    };
    Ok(EdgeConfig::builder()
        .vector(VectorName::Semantic.as_str(), semantic)
        .vector(VectorName::Visual.as_str(), visual.build())
        .optimizers(optimizers)
        .build())
}

/// The vector sizes an existing shard was created with, if it has a readable config.
fn existing_space(dir: &Path) -> Result<Option<Option<VectorSpace>>> {
    match EdgeConfig::load(dir) {
        None => Ok(None),
        Some(Err(e)) => Err(unavailable(format!(
            "cannot read the index config in {}: {e}",
            dir.display()
        ))),
        Some(Ok(config)) => {
            let size = |name: VectorName| config.vectors.get(name.as_str()).map(|v| v.size);
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
    }
}

fn keyword_schema() -> PayloadFieldSchema {
    PayloadFieldSchema::FieldType(PayloadSchemaType::Keyword)
}

fn integer_schema() -> PayloadFieldSchema {
    PayloadFieldSchema::FieldType(PayloadSchemaType::Integer)
}

fn json_path(name: &str) -> Result<JsonPath> {
    name.parse::<JsonPath>()
        .map_err(|_| IndexError::Operation(format!("bad payload key {name}")))
}

/// Creates the payload indexes the shard does not have yet.
fn ensure_payload_indexes(shard: &EdgeShard) -> Result<bool> {
    let existing = shard.info().payload_schema;
    let mut created = false;
    let wanted = KEYWORD_FIELDS
        .iter()
        .map(|f| (*f, keyword_schema()))
        .chain(INTEGER_FIELDS.iter().map(|f| (*f, integer_schema())));
    for (field, schema) in wanted {
        let key = json_path(field)?;
        if existing.contains_key(&key) {
            continue;
        }
        shard
            .update(UpdateOperation::FieldIndexOperation(
                FieldIndexOperations::CreateIndex(CreateIndex {
                    field_name: key,
                    field_schema: Some(schema),
                }),
            ))
            .map_err(unavailable)?;
        created = true;
    }
    Ok(created)
}

fn open_blocking(
    dir: PathBuf,
    space: VectorSpace,
    options: EmbeddedOptions,
) -> Result<(EmbeddedIndex, bool)> {
    let mut open = lock(registry());
    open.retain(|_, weak| weak.strong_count() > 0);
    if let Some(inner) = open.get(&dir).and_then(Weak::upgrade) {
        if inner.space != space {
            return Err(IndexError::Unavailable(format!(
                "index {} is open with {:?}, cannot reopen it with {space:?}",
                dir.display(),
                inner.space
            )));
        }
        return Ok((EmbeddedIndex { inner }, false));
    }

    std::fs::create_dir_all(&dir)
        .map_err(|e| unavailable(format!("cannot create {}: {e}", dir.display())))?;
    let started = Instant::now();
    let mut recreated = false;
    let shard = match existing_space(&dir)? {
        Some(Some(found)) if found == space => EdgeShard::load(&dir, None)
            .map_err(|e| unavailable(format!("cannot open the index in {}: {e}", dir.display())))?,
        Some(found) => {
            tracing::warn!(
                dir = %dir.display(),
                ?found,
                wanted = ?space,
                "vector index dimensions changed: wiping and recreating the index"
            );
            wipe_dir(&dir)?;
            recreated = true;
            EdgeShard::new(&dir, shard_config(space, &options)?).map_err(unavailable)?
        }
        None => {
            // A directory without a config but with leftovers of a failed creation.
            if dir.join("segments").exists() || dir.join("wal").exists() {
                wipe_dir(&dir)?;
            }
            EdgeShard::new(&dir, shard_config(space, &options)?).map_err(unavailable)?
        }
    };
    if ensure_payload_indexes(&shard)? {
        shard.flush();
    }
    let info = shard.info();
    tracing::info!(
        dir = %dir.display(),
        points = info.points_count,
        indexed_vectors = info.indexed_vectors_count,
        segments = info.segments_count,
        recreated,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "vector index opened"
    );
    let inner = Arc::new(Inner {
        dir: dir.clone(),
        space,
        shard,
        gate: Mutex::new(()),
        applied: AtomicU64::new(0),
        durable: Mutex::new(0),
        flushes: AtomicU64::new(0),
        defer_upserts: options.flush_interval.is_some(),
        pending: AtomicU64::new(0),
        optimizing: AtomicBool::new(false),
        optimize_after: options.optimize_after_writes,
    });
    open.insert(dir, Arc::downgrade(&inner));
    drop(open);
    if let Some(every) = options.flush_interval {
        spawn_flusher(Arc::downgrade(&inner), every)?;
    }
    let index = EmbeddedIndex { inner };
    if options.optimize_after_writes > 0 && info.points_count > 0 {
        // Points written before a restart may sit in plain segments.
        index.spawn_optimize();
    }
    Ok((index, recreated))
}

fn wipe_dir(dir: &Path) -> Result<()> {
    std::fs::remove_dir_all(dir)
        .and_then(|()| std::fs::create_dir_all(dir))
        .map_err(|e| unavailable(format!("cannot wipe {}: {e}", dir.display())))
}

/// Opens (or creates) the embedded index in `dir` with default [`EmbeddedOptions`].
///
/// A directory holding an index with other vector sizes is wiped and recreated (logged as a
/// warning, reported as [`Opened::recreated`]); the caller must then re-index. Opening a
/// directory that is already open in this process returns the same shard.
pub async fn open_embedded(dir: &Path, space: VectorSpace) -> Result<Opened> {
    open_embedded_with(dir, space, EmbeddedOptions::default()).await
}

/// [`open_embedded`] with explicit options.
pub async fn open_embedded_with(
    dir: &Path,
    space: VectorSpace,
    options: EmbeddedOptions,
) -> Result<Opened> {
    let (index, recreated) = open_embedded_index(dir, space, options).await?;
    Ok(Opened {
        index: Arc::new(index),
        recreated,
    })
}

/// [`open_embedded_with`] returning the concrete type (for [`EmbeddedIndex::stats`] and
/// benchmarks) and whether the index was recreated.
pub async fn open_embedded_index(
    dir: &Path,
    space: VectorSpace,
    options: EmbeddedOptions,
) -> Result<(EmbeddedIndex, bool)> {
    if space.semantic_dims == 0 || space.visual_dims == 0 {
        return Err(IndexError::Unavailable(format!(
            "vector sizes must be positive, got {space:?}"
        )));
    }
    let dir = std::path::absolute(dir)
        .map_err(|e| unavailable(format!("bad index path {}: {e}", dir.display())))?;
    blocking(move || open_blocking(dir, space, options)).await
}

fn point_id(id: Uuid) -> PointId {
    PointId::Uuid(id)
}

fn uuid_of(id: &PointId) -> Result<Uuid> {
    match id {
        PointId::Uuid(u) => Ok(*u),
        PointId::NumId(n) => Err(IndexError::Operation(format!(
            "unexpected numeric point id {n} in the index"
        ))),
    }
}

fn payload_of(payload: &PointPayload) -> Result<Payload> {
    match serde_json::to_value(payload).map_err(op_err)? {
        serde_json::Value::Object(map) => Ok(Payload(map.into_iter().collect())),
        other => Err(IndexError::Operation(format!(
            "payload is not an object: {other}"
        ))),
    }
}

fn decode_payload(payload: Option<Payload>) -> Result<PointPayload> {
    let map = payload.map(|p| p.0).unwrap_or_default();
    serde_json::from_value(serde_json::Value::Object(map.into_iter().collect())).map_err(op_err)
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

fn condition(clause: &Clause) -> Result<Condition> {
    Ok(match *clause {
        Clause::Keyword(field, value) => Condition::Field(FieldCondition::new_match(
            json_path(field)?,
            Match::from(value.to_owned()),
        )),
        Clause::Range {
            field,
            gt,
            gte,
            lt,
            lte,
        } => Condition::Field(FieldCondition::new_range(
            json_path(field)?,
            Range {
                gt: gt.map(Into::into),
                gte: gte.map(Into::into),
                lt: lt.map(Into::into),
                lte: lte.map(Into::into),
            },
        )),
        Clause::Ids(ids) => Condition::HasId(ids.iter().copied().map(point_id).collect()),
    })
}

/// Translates a [`SearchFilter`] into a qdrant filter evaluated inside the search.
pub(crate) fn to_filter(filter: &SearchFilter) -> Result<Option<Filter>> {
    let clauses = filter.clauses();
    if clauses.is_empty() {
        return Ok(None);
    }
    let all = |list: &[Clause]| -> Result<Option<Vec<Condition>>> {
        let conditions = list.iter().map(condition).collect::<Result<Vec<_>>>()?;
        Ok((!conditions.is_empty()).then_some(conditions))
    };
    let mut out = Filter::new();
    out.must = all(&clauses.must)?;
    out.must_not = all(&clauses.must_not)?;
    out.should = all(&clauses.should)?;
    Ok(Some(out))
}

impl EmbeddedIndex {
    /// The index open in this process for `dir`, if any.
    pub fn live(dir: &Path) -> Option<EmbeddedIndex> {
        let dir = std::path::absolute(dir).ok()?;
        let open = lock(registry());
        let inner = open.get(&dir).and_then(Weak::upgrade)?;
        Some(EmbeddedIndex { inner })
    }

    /// The shard directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Points in the shard and how many of their vectors are in HNSW indexes (both vectors
    /// counted), as `(points, indexed_vectors, segments)`.
    pub async fn stats(&self) -> Result<(usize, usize, usize)> {
        let inner = self.inner.clone();
        blocking(move || {
            let info = inner.shard.info();
            Ok((
                info.points_count,
                info.indexed_vectors_count,
                info.segments_count,
            ))
        })
        .await
    }

    /// Runs the optimizers now and waits (builds HNSW and payload indexes, merges and vacuums
    /// segments). Returns whether anything changed. Writes wait while it runs.
    pub async fn optimize(&self) -> Result<bool> {
        let inner = self.inner.clone();
        blocking(move || inner.optimize_now()).await
    }

    /// Starts one background optimization unless one is already running.
    fn spawn_optimize(&self) {
        if self.inner.optimizing.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = self.inner.clone();
        let run = move || {
            if let Err(e) = inner.optimize_now() {
                tracing::warn!(dir = %inner.dir.display(), error = %e, "vector index optimization failed");
            }
            inner.optimizing.store(false, Ordering::Release);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(run);
            }
            Err(_) => {
                if let Err(e) = std::thread::Builder::new()
                    .name("vector-optimize".into())
                    .spawn(run)
                {
                    tracing::warn!(error = %e, "cannot start a vector index optimization");
                    self.inner.optimizing.store(false, Ordering::Release);
                }
            }
        }
    }

    /// Counts written points and starts an optimization when enough have accumulated.
    fn note_writes(&self, n: usize) {
        if self.inner.optimize_after == 0 {
            return;
        }
        let total = self.inner.pending.fetch_add(n as u64, Ordering::AcqRel) + n as u64;
        if total >= self.inner.optimize_after && !self.inner.optimizing.load(Ordering::Acquire) {
            self.spawn_optimize();
        }
    }

    /// Applies one update and, when `durable`, waits until it is on disk; `false` when it
    /// named a missing point.
    async fn write(&self, op: UpdateOperation, points: usize, durable: bool) -> Result<bool> {
        let inner = self.inner.clone();
        let applied = blocking(move || {
            let (result, seq) = {
                let _gate = lock(&inner.gate);
                let result = inner.shard.update(op);
                (result, inner.applied.fetch_add(1, Ordering::AcqRel) + 1)
            };
            // Also after a failed update: its WAL record is written either way.
            if durable {
                inner.make_durable(seq);
            }
            match result {
                Ok(()) => Ok(true),
                Err(OperationError::PointIdError { .. }) => Ok(false),
                Err(e) => Err(op_err(e)),
            }
        })
        .await?;
        self.note_writes(points);
        Ok(applied)
    }
}

impl Inner {
    /// Returns once the first `seq` updates are on disk. One flush covers every update
    /// applied before it began, so writers that arrive while another one flushes wait for it
    /// and share the next flush (group commit): concurrent ingest pays one flush per batch
    /// instead of one per image.
    fn make_durable(&self, seq: u64) {
        let mut durable = lock(&self.durable);
        if *durable >= seq {
            return;
        }
        let _gate = lock(&self.gate);
        let upto = self.applied.load(Ordering::Acquire);
        self.shard.flush();
        self.flushes.fetch_add(1, Ordering::Relaxed);
        *durable = upto;
    }

    /// Returns once every update applied so far is on disk (deferred upserts included).
    fn make_all_durable(&self) {
        self.make_durable(self.applied.load(Ordering::Acquire));
    }

    fn optimize_now(&self) -> Result<bool> {
        let _gate = lock(&self.gate);
        self.pending.store(0, Ordering::Release);
        let started = Instant::now();
        let changed = self.shard.optimize().map_err(op_err)?;
        if changed {
            self.shard.flush();
        }
        let info = self.shard.info();
        tracing::info!(
            dir = %self.dir.display(),
            changed,
            points = info.points_count,
            indexed_vectors = info.indexed_vectors_count,
            segments = info.segments_count,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "vector index optimized"
        );
        Ok(changed)
    }
}

#[async_trait::async_trait]
impl VectorIndex for EmbeddedIndex {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn upsert(&self, points: Vec<IndexPoint>) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        let space = self.inner.space;
        let n = points.len();
        let mut list = Vec::with_capacity(n);
        for p in points {
            check_dims(VectorName::Semantic, p.semantic.len(), space.semantic_dims)?;
            check_dims(VectorName::Visual, p.visual.len(), space.visual_dims)?;
            let payload = payload_of(&p.payload)?;
            let vectors = Vectors::new_named([
                (VectorName::Semantic.as_str(), p.semantic),
                (VectorName::Visual.as_str(), p.visual),
            ]);
            let mut point = PointStruct::new(point_id(p.id), vectors, serde_json::json!({}));
            point.0.payload = Some(payload);
            list.push(point.into());
        }
        self.write(
            UpdateOperation::PointOperation(PointOperations::UpsertPoints(
                PointInsertOperations::PointsList(list),
            )),
            n,
            !self.inner.defer_upserts,
        )
        .await
        .map(|_| ())
    }

    async fn set_payload(&self, id: Uuid, payload: &PointPayload) -> Result<()> {
        let op = SetPayloadOp {
            payload: payload_of(payload)?,
            points: Some(vec![point_id(id)]),
            filter: None,
            key: None,
        };
        // A missing point is not an error.
        self.write(
            UpdateOperation::PayloadOperation(PayloadOps::OverwritePayload(op)),
            1,
            true,
        )
        .await
        .map(|_applied| ())
    }

    async fn delete(&self, ids: &[Uuid]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<PointId> = ids.iter().copied().map(point_id).collect();
        let n = ids.len();
        self.write(
            UpdateOperation::PointOperation(PointOperations::DeletePoints { ids }),
            n,
            true,
        )
        .await
        .map(|_| ())
    }

    async fn search(&self, query: VectorQuery<'_>) -> Result<Vec<Hit>> {
        let expected = match query.using {
            VectorName::Semantic => self.inner.space.semantic_dims,
            VectorName::Visual => self.inner.space.visual_dims,
        };
        check_dims(query.using, query.vector.len(), expected)?;
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let request = SearchRequest {
            query: QueryEnum::Nearest(NamedQuery::new(
                VectorInternal::Dense(query.vector.to_vec()),
                query.using.as_str(),
            )),
            filter: to_filter(query.filter)?,
            params: Some(SearchParams {
                quantization: Some(QuantizationSearchParams {
                    ignore: false,
                    rescore: Some(true),
                    oversampling: Some(2.0),
                }),
                ..Default::default()
            }),
            limit: query.limit,
            offset: query.offset,
            with_payload: Some(WithPayloadInterface::Bool(false)),
            with_vector: Some(WithVector::Bool(false)),
            score_threshold: query.score_threshold,
        };
        let inner = self.inner.clone();
        let points = blocking(move || inner.shard.search(request).map_err(op_err)).await?;
        points
            .iter()
            .map(|p| {
                Ok(Hit {
                    id: uuid_of(&p.id)?,
                    score: p.score,
                })
            })
            .collect()
    }

    async fn get(&self, id: Uuid) -> Result<Option<StoredVectors>> {
        let inner = self.inner.clone();
        let records: Vec<Record> = blocking(move || {
            inner
                .shard
                .retrieve(
                    &[point_id(id)],
                    Some(WithPayloadInterface::Bool(true)),
                    Some(WithVector::Bool(true)),
                )
                .map_err(op_err)
        })
        .await?;
        let Some(record) = records.into_iter().next() else {
            return Ok(None);
        };
        let mut named = match record.vector {
            Some(VectorStructInternal::Named(named)) => named,
            other => {
                return Err(IndexError::Operation(format!(
                    "point {id} has unexpected vectors: {other:?}"
                )))
            }
        };
        let mut take = |name: VectorName| match named.remove(name.as_str()) {
            Some(VectorInternal::Dense(v)) => Ok(v),
            other => Err(IndexError::Operation(format!(
                "point {id} has no dense {} vector: {other:?}",
                name.as_str()
            ))),
        };
        let semantic = take(VectorName::Semantic)?;
        let visual = take(VectorName::Visual)?;
        Ok(Some(StoredVectors {
            semantic,
            visual,
            payload: decode_payload(record.payload)?,
        }))
    }

    async fn list(&self, after: Option<Uuid>, limit: usize) -> Result<Vec<(Uuid, String)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let inner = self.inner.clone();
        let model = json_path("model")?;
        let request = ScrollRequest {
            offset: after.map(point_id),
            // The offset is inclusive: ask for one more and drop `after` itself.
            limit: Some(limit + 1),
            filter: None,
            with_payload: Some(WithPayloadInterface::Fields(vec![model])),
            with_vector: WithVector::Bool(false),
            order_by: None,
        };
        let (records, _) = blocking(move || inner.shard.scroll(request).map_err(op_err)).await?;
        let mut out = Vec::with_capacity(limit);
        for record in records {
            let id = uuid_of(&record.id)?;
            if Some(id) == after {
                continue;
            }
            let model = record
                .payload
                .as_ref()
                .and_then(|p| p.0.get("model"))
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned();
            out.push((id, model));
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    async fn count(&self, filter: &SearchFilter) -> Result<u64> {
        let request = CountRequest {
            filter: to_filter(filter)?,
            exact: true,
        };
        let inner = self.inner.clone();
        let n = blocking(move || inner.shard.count(request).map_err(op_err)).await?;
        Ok(n as u64)
    }

    async fn optimize(&self) -> Result<bool> {
        EmbeddedIndex::optimize(self).await
    }

    async fn sync(&self) -> Result<()> {
        let inner = self.inner.clone();
        blocking(move || {
            inner.make_all_durable();
            Ok(())
        })
        .await
    }
}

impl Drop for Inner {
    /// The last handle is gone: deferred upserts go to disk now rather than never.
    fn drop(&mut self) {
        self.make_all_durable();
    }
}

#[cfg(test)]
mod group_commit_tests {
    use super::*;
    use crate::search::index::VectorIndex;

    const SPACE: VectorSpace = VectorSpace {
        semantic_dims: 4,
        visual_dims: 4,
    };

    fn point(n: u64) -> crate::search::index::IndexPoint {
        crate::search::index::IndexPoint {
            id: Uuid::from_u128(u128::from(n)),
            semantic: vec![1.0, 0.0, 0.0, 0.0],
            visual: vec![0.0, 1.0, 0.0, 0.0],
            payload: crate::search::index::PointPayload {
                owner: "o".into(),
                uploaded_at: 0,
                status: "ready".into(),
                tags: Vec::new(),
                camera_make: None,
                camera_model: None,
                review_state: "unreviewed".into(),
                model: "m".into(),
                faces: None,
                people: None,
                catalog: Default::default(),
            },
        }
    }

    fn scratch_dir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("flexphoto-{name}-{}", Uuid::new_v4()))
    }

    /// A new shard in `dir` that defers upserts' flushes to a thread running `every`.
    async fn open_flushing_every(dir: &Path, every: std::time::Duration) -> EmbeddedIndex {
        let options = EmbeddedOptions {
            optimize_after_writes: 0,
            flush_interval: Some(every),
            ..EmbeddedOptions::default()
        };
        open_embedded_index(dir, SPACE, options).await.unwrap().0
    }

    /// With a flush interval, an upsert returns unflushed; a payload change or a deletion
    /// flushes it with itself, `sync` flushes what is left, and so does dropping the last
    /// handle: a reopened shard has every point.
    #[tokio::test]
    async fn deferred_upserts_reach_disk_with_durable_writes_sync_and_drop() {
        let dir = scratch_dir("deferred-flush");
        // Never within this test: only the other paths flush.
        let index = open_flushing_every(&dir, std::time::Duration::from_secs(3600)).await;
        let flushes = || index.inner.flushes.load(Ordering::Relaxed);
        let start = flushes();
        index.upsert(vec![point(1)]).await.unwrap();
        assert_eq!(flushes(), start, "an upsert alone does not flush");
        index
            .set_payload(Uuid::from_u128(1), &point(1).payload)
            .await
            .unwrap();
        assert_eq!(flushes(), start + 1);
        index.upsert(vec![point(2)]).await.unwrap();
        index.upsert(vec![point(3)]).await.unwrap();
        assert_eq!(flushes(), start + 1);
        index.sync().await.unwrap();
        assert_eq!(flushes(), start + 2);
        index.sync().await.unwrap();
        assert_eq!(flushes(), start + 2, "nothing left to flush");
        index.upsert(vec![point(4)]).await.unwrap();
        drop(index);
        let (reopened, _) = open_embedded_index(&dir, SPACE, EmbeddedOptions::default())
            .await
            .unwrap();
        let all = crate::search::index::SearchFilter::default();
        assert_eq!(reopened.count(&all).await.unwrap(), 4);
        drop(reopened);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The background flush makes deferred upserts durable by itself.
    #[tokio::test]
    async fn the_flush_thread_flushes_deferred_upserts() {
        let dir = scratch_dir("flush-thread");
        let index = open_flushing_every(&dir, std::time::Duration::from_millis(20)).await;
        index.upsert(vec![point(1)]).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while *lock(&index.inner.durable) < index.inner.applied.load(Ordering::Acquire) {
            assert!(std::time::Instant::now() < deadline, "never flushed");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        drop(index);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// One flush covers every update applied before it; a writer whose update it covered
    /// does not flush again, and one that came after does.
    #[tokio::test]
    async fn one_flush_covers_every_update_applied_before_it() {
        let dir = std::env::temp_dir().join(format!("flexphoto-group-commit-{}", Uuid::new_v4()));
        let space = VectorSpace {
            semantic_dims: 4,
            visual_dims: 4,
        };
        let options = EmbeddedOptions {
            optimize_after_writes: 0,
            ..EmbeddedOptions::default()
        };
        let (index, _) = open_embedded_index(&dir, space, options).await.unwrap();
        let inner = Arc::clone(&index.inner);
        let before = inner.flushes.load(Ordering::Relaxed);
        // Three updates applied as `write` applies them, none flushed yet.
        let seqs: Vec<u64> = (0..3)
            .map(|_| {
                let _gate = lock(&inner.gate);
                inner.applied.fetch_add(1, Ordering::AcqRel) + 1
            })
            .collect();
        inner.make_durable(seqs[0]);
        inner.make_durable(seqs[2]);
        inner.make_durable(seqs[1]);
        assert_eq!(inner.flushes.load(Ordering::Relaxed) - before, 1);
        let later = {
            let _gate = lock(&inner.gate);
            inner.applied.fetch_add(1, Ordering::AcqRel) + 1
        };
        inner.make_durable(later);
        assert_eq!(inner.flushes.load(Ordering::Relaxed) - before, 2);
        // Concurrent writers: every point lands, in at most one flush per write.
        let writes = 16u64;
        let before = inner.flushes.load(Ordering::Relaxed);
        let tasks: Vec<_> = (0..writes)
            .map(|i| {
                let index = index.clone();
                tokio::spawn(async move { index.upsert(vec![point(i + 1)]).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let flushed = inner.flushes.load(Ordering::Relaxed) - before;
        assert!((1..=writes).contains(&flushed), "{flushed} flushes");
        assert_eq!(
            index
                .count(&crate::search::index::SearchFilter::default())
                .await
                .unwrap(),
            writes
        );
        drop(inner);
        drop(index);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
