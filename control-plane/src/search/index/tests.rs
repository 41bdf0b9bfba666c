//! One behaviour suite for every [`VectorIndex`] backend: the embedded one always, the server
//! one when `QDRANT_URL` is set (`QDRANT_API_KEY` optional).

use std::collections::HashSet;
use std::path::PathBuf;

use uuid::Uuid;

use super::*;
use crate::rng::SplitMix64;

const SPACE: VectorSpace = VectorSpace {
    semantic_dims: 48,
    visual_dims: 64,
};

/// Deterministic generated data, so failures reproduce.
struct Rng(SplitMix64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(SplitMix64::new(seed))
    }
    fn unit(&mut self, dims: usize) -> Vec<f32> {
        self.0.unit_vector(dims)
    }
    fn uuid(&mut self) -> Uuid {
        Uuid::from_u64_pair(self.0.next_u64(), self.0.next_u64())
    }
}

const T0: i64 = 1_700_000_000_000_000;
const HOUR: i64 = 3_600_000_000;

fn make_point(rng: &mut Rng, i: usize, space: VectorSpace) -> IndexPoint {
    let mut tags = vec![format!("t{}", i % 5)];
    if i.is_multiple_of(3) {
        tags.push("sunset".into());
    }
    IndexPoint {
        id: rng.uuid(),
        semantic: rng.unit(space.semantic_dims),
        visual: rng.unit(space.visual_dims),
        payload: PointPayload {
            owner: format!("owner-{:03}", i % 100),
            uploaded_at: T0 + (i as i64) * HOUR,
            status: if i.is_multiple_of(7) {
                "pending"
            } else {
                "ready"
            }
            .into(),
            tags,
            camera_make: (!i.is_multiple_of(4)).then(|| format!("make-{}", i % 3)),
            camera_model: (!i.is_multiple_of(4)).then(|| format!("model-{}", i % 6)),
            review_state: if i.is_multiple_of(2) {
                "approved"
            } else {
                "unreviewed"
            }
            .into(),
            model: format!("m{}", i % 2),
            faces: (!i.is_multiple_of(5)).then_some((i % 4) as i64),
            people: (!i.is_multiple_of(7)).then_some((i % 3) as i64),
            catalog: Default::default(),
        },
    }
}

fn matches(p: &IndexPoint, f: &SearchFilter) -> bool {
    let pl = &p.payload;
    f.owner.as_ref().is_none_or(|o| *o == pl.owner)
        && f.uploaded_from.is_none_or(|v| pl.uploaded_at >= v)
        && f.uploaded_to.is_none_or(|v| pl.uploaded_at < v)
        && f.camera_make
            .as_ref()
            .is_none_or(|m| Some(m) == pl.camera_make.as_ref())
        && f.camera_model
            .as_ref()
            .is_none_or(|m| Some(m) == pl.camera_model.as_ref())
        && f.tags.iter().all(|t| pl.tags.contains(t))
        && f.status.as_ref().is_none_or(|s| *s == pl.status)
        && f.review_state
            .as_ref()
            .is_none_or(|s| *s == pl.review_state)
        && f.faces_min.is_none_or(|m| pl.faces.is_some_and(|n| n >= m))
        && f.faces_max.is_none_or(|m| pl.faces.is_some_and(|n| n <= m))
        && f.people_min
            .is_none_or(|m| pl.people.is_some_and(|n| n >= m))
        && f.people_max
            .is_none_or(|m| pl.people.is_some_and(|n| n <= m))
        && !f.exclude.contains(&p.id)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Exact answer: matching points by cosine similarity, best first.
fn brute_force(points: &[IndexPoint], q: &[f32], f: &SearchFilter, using: VectorName) -> Vec<Hit> {
    let mut hits: Vec<Hit> = points
        .iter()
        .filter(|p| matches(p, f))
        .map(|p| Hit {
            id: p.id,
            score: dot(
                q,
                match using {
                    VectorName::Semantic => &p.semantic,
                    VectorName::Visual => &p.visual,
                },
            ),
        })
        .collect();
    hits.sort_by(|a, b| b.score.total_cmp(&a.score));
    hits
}

async fn search(
    index: &dyn VectorIndex,
    using: VectorName,
    q: &[f32],
    filter: &SearchFilter,
    limit: usize,
    offset: usize,
    threshold: Option<f32>,
) -> Vec<Hit> {
    index
        .search(VectorQuery {
            using,
            vector: q,
            filter,
            limit,
            offset,
            score_threshold: threshold,
        })
        .await
        .unwrap()
}

/// Upsert, get, overwrite, set_payload, delete, dimension errors.
pub(super) async fn crud_suite(index: &dyn VectorIndex) {
    let mut rng = Rng::new(1);
    let points: Vec<IndexPoint> = (0..3).map(|i| make_point(&mut rng, i, SPACE)).collect();
    index.upsert(points.clone()).await.unwrap();
    assert_eq!(index.count(&SearchFilter::default()).await.unwrap(), 3);

    let got = index
        .get(points[1].id)
        .await
        .unwrap()
        .expect("point stored");
    assert_eq!(got.payload, points[1].payload);
    assert_eq!(got.semantic.len(), SPACE.semantic_dims);
    assert!(dot(&got.semantic, &points[1].semantic) > 0.9999);
    assert!(dot(&got.visual, &points[1].visual) > 0.9999);
    assert!(index.get(Uuid::new_v4()).await.unwrap().is_none());

    // Overwrite: same id, new vectors and payload.
    let mut changed = make_point(&mut rng, 50, SPACE);
    changed.id = points[1].id;
    index.upsert(vec![changed.clone()]).await.unwrap();
    let got = index
        .get(points[1].id)
        .await
        .unwrap()
        .expect("point stored");
    assert_eq!(got.payload, changed.payload);
    assert!(dot(&got.visual, &changed.visual) > 0.9999);
    assert_eq!(index.count(&SearchFilter::default()).await.unwrap(), 3);
    let hits = search(
        index,
        VectorName::Visual,
        &changed.visual,
        &SearchFilter::default(),
        1,
        0,
        None,
    )
    .await;
    assert_eq!(hits[0].id, changed.id);
    assert!(hits[0].score > 0.999);

    // set_payload replaces the whole payload; a missing point is not an error.
    let mut payload = changed.payload.clone();
    payload.status = "deleted".into();
    payload.tags = vec!["x".into()];
    payload.camera_make = None;
    index.set_payload(changed.id, &payload).await.unwrap();
    assert_eq!(
        index.get(changed.id).await.unwrap().expect("point").payload,
        payload
    );
    let deleted = SearchFilter {
        status: Some("deleted".into()),
        ..Default::default()
    };
    assert_eq!(index.count(&deleted).await.unwrap(), 1);
    index.set_payload(Uuid::new_v4(), &payload).await.unwrap();
    assert_eq!(index.count(&SearchFilter::default()).await.unwrap(), 3);

    // Delete; missing ids are ignored.
    index.delete(&[points[0].id, Uuid::new_v4()]).await.unwrap();
    assert!(index.get(points[0].id).await.unwrap().is_none());
    assert_eq!(index.count(&SearchFilter::default()).await.unwrap(), 2);
    index.delete(&[]).await.unwrap();

    // Wrong dimensions.
    let mut bad = make_point(&mut rng, 9, SPACE);
    bad.visual.pop();
    match index.upsert(vec![bad]).await {
        Err(IndexError::Dimensions {
            name: "visual",
            got,
            expected,
        }) => {
            assert_eq!(got, SPACE.visual_dims - 1);
            assert_eq!(expected, SPACE.visual_dims);
        }
        other => panic!("expected a dimensions error, got {other:?}"),
    }
    let short = vec![0.1; 3];
    assert!(matches!(
        index
            .search(VectorQuery {
                using: VectorName::Semantic,
                vector: &short,
                filter: &SearchFilter::default(),
                limit: 5,
                offset: 0,
                score_threshold: None,
            })
            .await,
        Err(IndexError::Dimensions {
            name: "semantic",
            ..
        })
    ));
}

/// Builds the data set of [`search_suite`].
pub(super) fn dataset(n: usize) -> Vec<IndexPoint> {
    let mut rng = Rng::new(7);
    (0..n).map(|i| make_point(&mut rng, i, SPACE)).collect()
}

/// Filters, pagination, threshold, count, list on `points` (already written and optimized).
pub(super) async fn search_suite(index: &dyn VectorIndex, points: &[IndexPoint]) {
    let mut rng = Rng::new(99);
    let n = points.len();
    let filters = [
        SearchFilter::default(),
        SearchFilter {
            owner: Some("owner-042".into()),
            ..Default::default()
        },
        SearchFilter {
            uploaded_from: Some(T0 + 100 * HOUR),
            uploaded_to: Some(T0 + 900 * HOUR),
            ..Default::default()
        },
        SearchFilter {
            camera_make: Some("make-1".into()),
            camera_model: Some("model-1".into()),
            ..Default::default()
        },
        SearchFilter {
            tags: vec!["t3".into(), "sunset".into()],
            ..Default::default()
        },
        SearchFilter {
            status: Some("pending".into()),
            review_state: Some("approved".into()),
            ..Default::default()
        },
        SearchFilter {
            faces_min: Some(1),
            faces_max: Some(2),
            ..Default::default()
        },
        SearchFilter {
            owner: Some("owner-003".into()),
            faces_min: Some(3),
            ..Default::default()
        },
        SearchFilter {
            people_min: Some(1),
            people_max: Some(1),
            ..Default::default()
        },
        SearchFilter {
            owner: Some("owner-007".into()),
            uploaded_from: Some(T0 + 500 * HOUR),
            exclude: points.iter().take(2_000).map(|p| p.id).collect(),
            ..Default::default()
        },
    ];
    for (k, filter) in filters.iter().enumerate() {
        let expected_count = points.iter().filter(|p| matches(p, filter)).count();
        assert_eq!(
            index.count(filter).await.unwrap(),
            expected_count as u64,
            "count, filter {k}: {filter:?}"
        );
        for using in [VectorName::Semantic, VectorName::Visual] {
            let dims = match using {
                VectorName::Semantic => SPACE.semantic_dims,
                VectorName::Visual => SPACE.visual_dims,
            };
            let q = rng.unit(dims);
            let exact = brute_force(points, &q, filter, using);
            let hits = search(index, using, &q, filter, 10, 0, None).await;
            // A full page whenever enough points match, even for the 1%-selective ones.
            assert_eq!(hits.len(), exact.len().min(10), "page size, filter {k}");
            let by_id: std::collections::HashMap<Uuid, &IndexPoint> =
                points.iter().map(|p| (p.id, p)).collect();
            for h in &hits {
                assert!(matches(by_id[&h.id], filter), "hit outside filter {k}");
            }
            assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
            let want: HashSet<Uuid> = exact.iter().take(10).map(|h| h.id).collect();
            let found = hits.iter().filter(|h| want.contains(&h.id)).count();
            assert!(
                found * 10 >= want.len() * 9,
                "recall {found}/{} for filter {k} on {using:?}",
                want.len()
            );
        }
    }

    // Selective filter (1% of points): pages do not overlap and join up to one longer page.
    let owner = &filters[1];
    let q = rng.unit(SPACE.semantic_dims);
    let page1 = search(index, VectorName::Semantic, &q, owner, 5, 0, None).await;
    let page2 = search(index, VectorName::Semantic, &q, owner, 5, 5, None).await;
    let both = search(index, VectorName::Semantic, &q, owner, 10, 0, None).await;
    assert_eq!(page1.len(), 5);
    assert_eq!(page2.len(), 5);
    let ids1: HashSet<Uuid> = page1.iter().map(|h| h.id).collect();
    assert!(page2.iter().all(|h| !ids1.contains(&h.id)), "pages overlap");
    let joined: Vec<Uuid> = page1.iter().chain(&page2).map(|h| h.id).collect();
    assert_eq!(joined, both.iter().map(|h| h.id).collect::<Vec<_>>());
    assert!(page1.last().map(|h| h.score) >= page2.first().map(|h| h.score));

    // Score threshold: only hits at or above it, and all of them up to the limit.
    let exact = brute_force(points, &q, owner, VectorName::Semantic);
    let threshold = exact[3].score - 1e-4;
    let hits = search(
        index,
        VectorName::Semantic,
        &q,
        owner,
        50,
        0,
        Some(threshold),
    )
    .await;
    assert!(hits.iter().all(|h| h.score >= threshold));
    assert_eq!(
        hits.len(),
        exact.iter().filter(|h| h.score >= threshold).count()
    );
    let none = search(index, VectorName::Semantic, &q, owner, 10, 0, Some(1.01)).await;
    assert!(none.is_empty());

    // list: id order, every point once, with its model.
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = index.list(after, 97).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 97);
        after = page.last().map(|(id, _)| *id);
        listed.extend(page);
    }
    assert_eq!(listed.len(), n);
    assert!(
        listed.windows(2).all(|w| w[0].0 < w[1].0),
        "list not in id order"
    );
    let by_id: std::collections::HashMap<Uuid, &IndexPoint> =
        points.iter().map(|p| (p.id, p)).collect();
    for (id, model) in &listed {
        assert_eq!(*model, by_id[id].payload.model);
    }
    assert!(index.list(None, 0).await.unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Embedded backend

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("flexphoto-index-test-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn test_options() -> EmbeddedOptions {
    EmbeddedOptions {
        // Small enough that the test data gets real HNSW indexes.
        indexing_threshold_kb: Some(200),
        ..Default::default()
    }
}

async fn open(dir: &TempDir, space: VectorSpace) -> Opened {
    open_embedded_with(&dir.0, space, test_options())
        .await
        .unwrap()
}

#[tokio::test]
async fn embedded_crud() {
    let dir = TempDir::new();
    let opened = open(&dir, SPACE).await;
    assert!(!opened.recreated);
    assert_eq!(opened.index.backend(), "embedded");
    crud_suite(opened.index.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_search_and_reopen() {
    let dir = TempDir::new();
    let points = dataset(5_000);
    {
        let opened = open(&dir, SPACE).await;
        for chunk in points.chunks(1_000) {
            opened.index.upsert(chunk.to_vec()).await.unwrap();
        }
        // Unoptimized (plain segments) first, then on HNSW indexes.
        search_suite(opened.index.as_ref(), &points).await;
        opened.index.optimize().await.unwrap();
        let embedded = EmbeddedIndex::live(&dir.0).expect("open");
        let (count, indexed, _) = embedded.stats().await.unwrap();
        assert_eq!(count, points.len());
        assert!(indexed >= points.len(), "vectors not indexed: {indexed}");
        search_suite(opened.index.as_ref(), &points).await;
    }
    // Dropped: reopen keeps data and indexes.
    let opened = open(&dir, SPACE).await;
    assert!(!opened.recreated);
    let embedded = EmbeddedIndex::live(&dir.0).expect("open");
    let (count, indexed, _) = embedded.stats().await.unwrap();
    assert_eq!(count, points.len());
    assert!(indexed >= points.len(), "indexes lost on reopen: {indexed}");
    search_suite(opened.index.as_ref(), &points).await;
}

#[tokio::test]
async fn embedded_dims_change_recreates() {
    let dir = TempDir::new();
    {
        let opened = open(&dir, SPACE).await;
        opened.index.upsert(dataset(10)).await.unwrap();
    }
    let other = VectorSpace {
        semantic_dims: 32,
        visual_dims: 64,
    };
    let opened = open(&dir, other).await;
    assert!(opened.recreated);
    assert_eq!(
        opened.index.count(&SearchFilter::default()).await.unwrap(),
        0
    );
    let mut rng = Rng::new(3);
    opened
        .index
        .upsert(vec![make_point(&mut rng, 1, other)])
        .await
        .unwrap();
    drop(opened);
    let opened = open(&dir, other).await;
    assert!(!opened.recreated);
    assert_eq!(
        opened.index.count(&SearchFilter::default()).await.unwrap(),
        1
    );
}

#[tokio::test]
async fn embedded_one_shard_per_directory() {
    let dir = TempDir::new();
    let a = open(&dir, SPACE).await;
    let b = open(&dir, SPACE).await;
    a.index.upsert(dataset(3)).await.unwrap();
    assert_eq!(b.index.count(&SearchFilter::default()).await.unwrap(), 3);
    let other = VectorSpace {
        semantic_dims: 8,
        visual_dims: 8,
    };
    assert!(matches!(
        open_embedded(&dir.0, other).await,
        Err(IndexError::Unavailable(_))
    ));
}

/// A write that returned is on disk: a child process upserts, then aborts without any cleanup
/// (like `kill -9`); the parent reopens the directory and finds the points.
#[tokio::test]
async fn embedded_upsert_survives_abort() {
    const CHILD: &str = "FLEXPHOTO_INDEX_ABORT_CHILD_DIR";
    if let Ok(dir) = std::env::var(CHILD) {
        let opened = open_embedded_with(
            std::path::Path::new(&dir),
            SPACE,
            EmbeddedOptions {
                optimize_after_writes: 0,
                ..test_options()
            },
        )
        .await
        .unwrap();
        opened.index.upsert(dataset(20)).await.unwrap();
        let mut rng = Rng::new(5);
        let mut p = make_point(&mut rng, 77, SPACE);
        p.id = dataset(20)[0].id;
        opened.index.upsert(vec![p]).await.unwrap();
        std::process::abort();
    }
    let dir = TempDir::new();
    let exe = std::env::current_exe().unwrap();
    let status = std::process::Command::new(exe)
        .args([
            "--exact",
            "search::index::tests::embedded_upsert_survives_abort",
            "--nocapture",
        ])
        .env(CHILD, &dir.0)
        .status()
        .unwrap();
    assert!(!status.success(), "the child should have aborted");
    let opened = open(&dir, SPACE).await;
    assert_eq!(
        opened.index.count(&SearchFilter::default()).await.unwrap(),
        20
    );
    let first = dataset(20)[0].id;
    let got = opened.index.get(first).await.unwrap().expect("point");
    let mut rng = Rng::new(5);
    assert_eq!(got.payload, make_point(&mut rng, 77, SPACE).payload);
}

// ---------------------------------------------------------------------------------------------
// Server backend (only with QDRANT_URL)

async fn server(space: VectorSpace, collection: &str) -> Option<Opened> {
    let Ok(url) = std::env::var("QDRANT_URL") else {
        crate::test_skip::skip(
            "qdrant",
            "QDRANT_URL is not set, the Qdrant server backend is not tested",
        );
        return None;
    };
    let key = std::env::var("QDRANT_API_KEY").ok();
    Some(
        connect_server(&url, key.as_deref(), collection, space)
            .await
            .unwrap(),
    )
}

fn collection_name() -> String {
    format!("flexphoto-test-{}", Uuid::new_v4().simple())
}

#[tokio::test]
async fn server_crud() {
    let Some(opened) = server(SPACE, &collection_name()).await else {
        return;
    };
    assert_eq!(opened.index.backend(), "server");
    crud_suite(opened.index.as_ref()).await;
}

#[tokio::test]
async fn server_search_and_dims_change() {
    let name = collection_name();
    let Some(opened) = server(SPACE, &name).await else {
        return;
    };
    let points = dataset(5_000);
    for chunk in points.chunks(500) {
        opened.index.upsert(chunk.to_vec()).await.unwrap();
    }
    search_suite(opened.index.as_ref(), &points).await;
    drop(opened);
    let Some(again) = server(SPACE, &name).await else {
        return;
    };
    assert!(!again.recreated);
    assert_eq!(
        again.index.count(&SearchFilter::default()).await.unwrap(),
        points.len() as u64
    );
    let other = VectorSpace {
        semantic_dims: 16,
        visual_dims: 64,
    };
    let Some(changed) = server(other, &name).await else {
        return;
    };
    assert!(changed.recreated);
    assert_eq!(
        changed.index.count(&SearchFilter::default()).await.unwrap(),
        0
    );
}

/// The catalog's conditions as both backends receive them: rights windows as ranges (left out
/// when usable is asked, one of them when withheld is), superseded versions left out,
/// candidates and exclusions as ids.
#[test]
fn catalog_conditions_become_clauses() {
    let only = vec![Uuid::from_u128(1)];
    let f = SearchFilter {
        owner: Some("ann".into()),
        faces_min: Some(2),
        exclude: vec![Uuid::from_u128(2)],
        catalog: CatalogConditions {
            collection: Some("c".into()),
            terms: vec!["dogs".into()],
            usable_at: Some(10),
            withheld_at: Some(20),
            current_only: true,
            only: Some(only.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    let range = |field, gt, lte| Clause::Range {
        field,
        gt,
        gte: None,
        lt: None,
        lte,
    };
    let c = f.clauses();
    assert_eq!(
        c.must,
        [
            Clause::Keyword("owner", "ann"),
            Clause::Keyword("collection", "c"),
            Clause::Keyword("terms", "dogs"),
            Clause::Range {
                field: "faces",
                gt: None,
                gte: Some(2.0),
                lt: None,
                lte: None
            },
            Clause::Ids(&only),
        ]
    );
    assert_eq!(
        c.must_not,
        [
            Clause::Ids(&[Uuid::from_u128(2)]),
            range("rights_from", Some(10.0), None),
            range("rights_until", None, Some(10.0)),
            Clause::Keyword("lineage", "superseded"),
        ]
    );
    assert_eq!(
        c.should,
        [
            range("rights_from", Some(20.0), None),
            range("rights_until", None, Some(20.0)),
        ]
    );
    assert!(SearchFilter::default().clauses().is_empty());
}
