//! Catalog benchmark (`cargo bench -p flexphoto-control-plane --bench catalog`).
//!
//! Fills a fresh database (SQLite in a temporary directory; Postgres too when
//! `FLEXPHOTO_TEST_PG_URL` is set) with `BENCH_N` images (default 100000) of one collection
//! whose schema has 20 fields (text, number, date, enum, list, term and URL, with rules and a
//! small vocabulary), each image with every field populated and written through the ingest
//! path's own code: values merged with their sources, normalised and validated against the
//! schema (`Record`), then inserted with its catalog record, history and field index in one
//! transaction (`insert_stored_and_enqueue`). One image in ten breaks a rule and is routed to
//! review. It reports validation throughput (CPU only) and validation + write throughput, then
//! p50/p99 of `BENCH_QUERIES` (default 300) runs of each query a listing or the review queue
//! makes, with the catalog read-back a page of results needs (records, open reasons, terms).
//! Writes `loadtest/results/catalog-<time>.json`.
//!
//! `BENCH_SQLITE_DB=<file>` keeps the SQLite database and, when it already holds the bench's
//! images, queries it as it is (no writing: the ingest figures read 0); `BENCH_PG_DB=<name>`
//! does the same for a Postgres database; `BENCH_ONLY=sqlite|postgres` runs one backend.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flexphoto_control_plane::catalog::explain::PageFacts;
use flexphoto_control_plane::catalog::query::{
    CatalogFilter, FieldCondition, FieldSort, SortPosition,
};
use flexphoto_control_plane::catalog::record::Record;
use flexphoto_control_plane::catalog::review::NewReason;
use flexphoto_control_plane::catalog::schema::{Schema, SchemaDoc};
use flexphoto_control_plane::catalog::sources::{Source, Sourced};
use flexphoto_control_plane::config::DatabaseUrl;
use flexphoto_control_plane::domain::{ImageId, Owner, ReasonKind, WorkflowState};
use flexphoto_control_plane::filter::ImageFilter;
use flexphoto_control_plane::rng::SplitMix64 as Rng;
use flexphoto_control_plane::store::catalog::{
    CatalogInsert, DescriptiveWrite, FieldChange, QueueOrder,
};
use flexphoto_control_plane::store::images::{ListOrder, NewImage};
use flexphoto_control_plane::store::Db;
use serde_json::{json, Value};
use uuid::Uuid;

const SCHEMA: &str = r#"
[[fields]]
name = "title"
required = true
max_length = 200
[[fields]]
name = "caption"
max_length = 2000
[[fields]]
name = "keywords"
[[fields]]
name = "credit"
required = true
max_length = 80
[[fields]]
name = "creator"
recommended = true
[[fields]]
name = "photographer_id"
type = "text"
required = true
pattern = "^P[0-9]{4}$"
[[fields]]
name = "shot_count"
type = "number"
min = 1
max = 1000
[[fields]]
name = "rating"
type = "number"
min = 0
max = 5
[[fields]]
name = "shot_on"
type = "date"
min = "2000-01-01"
[[fields]]
name = "usage"
type = "enum"
required = true
values = ["editorial", "commercial", "internal"]
[[fields]]
name = "region"
type = "enum"
values = ["emea", "amer", "apac"]
[[fields]]
name = "subject"
type = "term"
[[fields]]
name = "people"
type = "list"
max_items = 10
max_length = 60
[[fields]]
name = "source_url"
type = "url"
[[fields]]
name = "campaign"
type = "text"
max_length = 40
[[fields]]
name = "job_number"
type = "text"
pattern = "^J-[0-9]+$"
[[fields]]
name = "budget"
type = "number"
min = 0
[[fields]]
name = "published_on"
type = "date"
[[fields]]
name = "agency"
type = "text"
[[fields]]
name = "notes"
type = "text"
max_length = 500

[[terms]]
id = "animals"
[[terms]]
id = "dogs"
parent = "animals"
synonyms = ["dog", "puppy"]
[[terms]]
id = "cats"
parent = "animals"
synonyms = ["cat", "kitten"]
[[terms]]
id = "places"
[[terms]]
id = "cities"
parent = "places"
synonyms = ["city"]
[[terms]]
id = "beaches"
parent = "places"
synonyms = ["beach"]
[[terms]]
id = "people"
"#;

const SUBJECTS: [&str; 6] = ["dogs", "cats", "cities", "beaches", "people", "animals"];
const KEYWORDS: [&str; 8] = [
    "dog", "kitten", "city", "beach", "sunset", "night", "portrait", "food",
];

/// The 20 values of image `i` (one in ten breaks the photographer id's pattern).
fn values(i: u64) -> BTreeMap<String, Value> {
    let mut r = Rng::new(i.wrapping_mul(0x2545_F491_4F6C_DD1D));
    let usage = ["editorial", "commercial", "internal"][r.below(3) as usize];
    let region = ["emea", "amer", "apac"][r.below(3) as usize];
    let pid = if i % 10 == 7 {
        format!("X{}", r.below(10_000))
    } else {
        format!("P{:04}", r.below(10_000))
    };
    let day = |r: &mut Rng| {
        let d = chrono::NaiveDate::from_ymd_opt(2015, 1, 1).unwrap()
            + chrono::Duration::days(r.below(3650) as i64);
        d.to_string()
    };
    let kw: Vec<&str> = (0..3).map(|_| KEYWORDS[r.below(8) as usize]).collect();
    [
        ("title", json!(format!("Photo {i} of the spring campaign"))),
        (
            "caption",
            json!(format!(
                "A caption for image {i}, describing what it shows in a sentence or two."
            )),
        ),
        ("keywords", json!(kw)),
        ("credit", json!(format!("Agency {}", r.below(50)))),
        ("creator", json!(format!("Photographer {}", r.below(500)))),
        ("photographer_id", json!(pid)),
        ("shot_count", json!(1 + r.below(1000))),
        ("rating", json!(r.below(6))),
        ("shot_on", json!(day(&mut r))),
        ("usage", json!(usage)),
        ("region", json!(region)),
        ("subject", json!(SUBJECTS[r.below(6) as usize])),
        (
            "people",
            json!([
                format!("Person {}", r.below(1000)),
                format!("Person {}", r.below(1000))
            ]),
        ),
        (
            "source_url",
            json!(format!("https://example.com/shoots/{}", r.below(100_000))),
        ),
        ("campaign", json!(format!("campaign-{}", r.below(40)))),
        ("job_number", json!(format!("J-{}", r.below(100_000)))),
        ("budget", json!(r.below(50_000))),
        ("published_on", json!(day(&mut r))),
        ("agency", json!(format!("Agency {}", r.below(50)))),
        (
            "notes",
            json!("Cleared for the spring campaign; see the job sheet."),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Validates image `i`'s values as ingest does.
fn validate(schema: &Schema, i: u64) -> Record {
    let mut s = Sourced::default();
    s.merge(Source::Upload, values(i));
    Record::from_sourced(schema, s, chrono::Utc::now())
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

struct Timings(BTreeMap<String, Vec<f64>>);
impl Timings {
    fn add(&mut self, name: &str, d: Duration) {
        self.0
            .entry(name.into())
            .or_default()
            .push(d.as_secs_f64() * 1e3);
    }
}

/// Runs one statement (the bench's own setup).
async fn exec(db: &Db, sql: &'static str) {
    match db {
        Db::Pg(p) => {
            sqlx::query(sql).execute(p).await.unwrap();
        }
        Db::Sqlite(p) => {
            sqlx::query(sql).execute(p).await.unwrap();
        }
    }
}

/// What the API reads for a page of images besides their rows: records, open reasons and
/// terms ([`PageFacts`]).
async fn read_back(db: &Db, ids: &[ImageId]) {
    PageFacts::load(db, ids).await.unwrap();
}

async fn run(label: &str, db: Db, n: u64, queries: usize) -> Value {
    let owner = Owner::parse("bench").unwrap();
    let doc = SchemaDoc::parse(SCHEMA, false).unwrap();
    let compiled = doc
        .compile(1, doc.terms.clone().unwrap_or_default())
        .unwrap();
    let schema: Arc<Schema> = Arc::new(compiled.clone());
    assert_eq!(doc.fields.len(), 20, "20 schema fields");
    // A database kept from an earlier run (BENCH_SQLITE_DB) is queried as it is.
    let (coll, written) = match db.find_collection(&owner, "bench").await.unwrap() {
        Some(coll) => (coll, None),
        None => {
            let w = populate(label, &db, &owner, &doc, compiled, n).await;
            (
                db.find_collection(&owner, "bench").await.unwrap().unwrap(),
                Some(w),
            )
        }
    };
    // Statistics, and on Postgres the visibility map its index-only scans need (autovacuum's
    // work in a running deployment).
    exec(
        &db,
        if matches!(db, Db::Pg(_)) {
            "VACUUM ANALYZE"
        } else {
            "ANALYZE"
        },
    )
    .await;
    let (validate_per_s, ingest_per_s) = written.unwrap_or((0.0, 0.0));
    query(
        label,
        &db,
        &owner,
        coll.id,
        &schema,
        n,
        queries,
        validate_per_s,
        ingest_per_s,
    )
    .await
}

/// Creates the collection and its schema, then writes `n` images through the ingest path.
/// Returns validation throughput (records/s) and validation + write throughput (images/s).
async fn populate(
    label: &str,
    db: &Db,
    owner: &Owner,
    doc: &SchemaDoc,
    compiled: Schema,
    n: u64,
) -> (f64, f64) {
    let coll = db
        .create_collection(owner, "bench", None, "review", true, false)
        .await
        .unwrap();
    let kinds: Vec<(String, &'static str)> = compiled
        .fields
        .values()
        .map(|f| (f.def.name.clone(), f.kind.as_str()))
        .collect();
    db.put_schema(
        coll.id,
        &serde_json::to_value(&doc.fields).unwrap(),
        &serde_json::to_value(compiled.vocabulary.defs()).unwrap(),
        &kinds,
        "bench",
        None,
    )
    .await
    .unwrap();
    let schema: Arc<Schema> = Arc::new(compiled);

    // Validation alone (CPU).
    let sample = 20_000.min(n);
    let t = Instant::now();
    let mut failing = 0;
    for i in 0..sample {
        failing += usize::from(!validate(&schema, i).report.ok());
    }
    let validate_per_s = sample as f64 / t.elapsed().as_secs_f64();
    assert_eq!(failing as u64, sample / 10, "one in ten fails");

    // Validation and the ingest transaction, four writers.
    let t0 = chrono::Utc::now();
    let t = Instant::now();
    let writers = 4u64;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let db = db.clone();
        let schema = Arc::clone(&schema);
        let owner = owner.clone();
        let coll_id = coll.id;
        let label = label.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < n {
                let record = validate(&schema, i);
                let mut reasons = Vec::new();
                if !record.report.ok() {
                    reasons.push(NewReason::validation(
                        &record.report.failures,
                        schema.version,
                    ));
                }
                let changes: Vec<FieldChange> = record
                    .values
                    .iter()
                    .map(|(k, v)| FieldChange {
                        field: k.clone(),
                        old: None,
                        new: Some(v.clone()),
                        source: Source::Upload.as_str().into(),
                    })
                    .collect();
                let id = ImageId(Uuid::new_v4());
                let img = NewImage {
                    id,
                    owner: owner.clone(),
                    mime: "image/jpeg".into(),
                    bytes: Some(250_000),
                    sha256: Some(format!("{:064x}", i)),
                    caption: record.caption(),
                    original_key: format!("bench/{}.jpg", id.0),
                    uploaded_at: flexphoto_control_plane::store::trunc(
                        t0 - chrono::Duration::seconds((n - i) as i64),
                    ),
                    upload_expires_at: None,
                    uploaded_by: None,
                    upload_key: None,
                    private: false,
                    catalog: Some(CatalogInsert {
                        collection_id: coll_id,
                        write: DescriptiveWrite::of(&record, &schema),
                        workflow: WorkflowState::Draft,
                        reasons,
                        derived_from: None,
                        changes,
                        actor: "bench".into(),
                    }),
                };
                db.insert_stored_and_enqueue(&img, 3).await.unwrap();
                i += writers;
                if w == 0 && i % 10_000 < writers {
                    eprintln!("{label}: {i} of {n} written");
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let ingest_secs = t.elapsed().as_secs_f64();
    let ingest_per_s = n as f64 / ingest_secs;
    // Processed: ready, and no jobs left behind.
    exec(
        db,
        "UPDATE images SET status = 'ready' WHERE owner = 'bench'",
    )
    .await;
    exec(db, "DELETE FROM jobs").await;
    println!("  validation + ingest transaction (4 writers): {ingest_per_s:.0} images/s ({ingest_secs:.0} s)");
    (validate_per_s, ingest_per_s)
}

/// Runs each query `queries` times and reports p50/p99.
#[allow(clippy::too_many_arguments)]
async fn query(
    label: &str,
    db: &Db,
    owner: &Owner,
    coll_id: Uuid,
    schema: &Schema,
    n: u64,
    queries: usize,
    validate_per_s: f64,
    ingest_per_s: f64,
) -> Value {
    let field = |text: &str| {
        let mut c = FieldCondition::parse(text).unwrap();
        c.kind = schema.field(&c.field).map(|f| f.kind);
        c
    };
    let filter = |catalog: CatalogFilter| ImageFilter {
        owner: Some(owner.clone()),
        catalog,
        ..ImageFilter::default()
    };
    let mut tm = Timings(BTreeMap::new());
    let mut r = Rng::new(42);
    let limit = 50;
    for q in 0..queries {
        let usage = ["editorial", "commercial", "internal"][q % 3];
        let min = 1 + r.below(900);
        // 1. Collection + two field conditions, newest first.
        let f = filter(CatalogFilter {
            collection: Some(coll_id),
            fields: vec![
                field(&format!("usage={usage}")),
                field(&format!("shot_count>={min}")),
            ],
            ..CatalogFilter::default()
        });
        let t = Instant::now();
        let rows = db
            .list_images(&f, ListOrder::NewestFirst, None, limit)
            .await
            .unwrap();
        let ids: Vec<ImageId> = rows.iter().map(|r| r.id).collect();
        let alone = t.elapsed();
        read_back(db, &ids).await;
        tm.add(
            "list: collection + usage= + shot_count>=, newest first",
            t.elapsed(),
        );
        tm.add(
            "list: collection + usage= + shot_count>=, newest first [query alone]",
            alone,
        );
        assert!(!rows.is_empty());

        // 2. A term with its descendants + workflow state + a field.
        let f = filter(CatalogFilter {
            terms: vec![["animals", "places"][q % 2].into()],
            workflow_state: Some(WorkflowState::Draft),
            fields: vec![field(&format!(
                "region={}",
                ["emea", "amer", "apac"][q % 3]
            ))],
            ..CatalogFilter::default()
        });
        let t = Instant::now();
        let rows = db
            .list_images(&f, ListOrder::NewestFirst, None, limit)
            .await
            .unwrap();
        let ids: Vec<ImageId> = rows.iter().map(|r| r.id).collect();
        let alone = t.elapsed();
        read_back(db, &ids).await;
        tm.add(
            "list: term (with narrower) + workflow + region=",
            t.elapsed(),
        );
        tm.add(
            "list: term (with narrower) + workflow + region= [query alone]",
            alone,
        );
        assert!(!rows.is_empty());

        // 3. Sorted by a schema field, filtered, and its next page (keyset).
        let sort = FieldSort {
            field: "shot_on".into(),
            kind: schema.field("shot_on").unwrap().kind,
            descending: q % 2 == 1,
        };
        let f = filter(CatalogFilter {
            fields: vec![field(&format!("rating>={}", r.below(5)))],
            ..CatalogFilter::default()
        });
        let t = Instant::now();
        let rows = db.list_by_field(&f, &sort, None, limit).await.unwrap();
        let ids: Vec<ImageId> = rows.iter().map(|r| r.0.id).collect();
        let alone = t.elapsed();
        read_back(db, &ids).await;
        tm.add("list: rating>= sorted by shot_on, page 1", t.elapsed());
        tm.add(
            "list: rating>= sorted by shot_on, page 1 [query alone]",
            alone,
        );
        let last = rows.last().unwrap();
        let pos = SortPosition {
            value: last.1.clone(),
            id: last.0.id.0,
        };
        let t = Instant::now();
        let rows2 = db
            .list_by_field(&f, &sort, Some(&pos), limit)
            .await
            .unwrap();
        let ids: Vec<ImageId> = rows2.iter().map(|r| r.0.id).collect();
        let alone = t.elapsed();
        read_back(db, &ids).await;
        tm.add(
            "list: rating>= sorted by shot_on, page 2 (keyset)",
            t.elapsed(),
        );
        tm.add(
            "list: rating>= sorted by shot_on, page 2 (keyset) [query alone]",
            alone,
        );
        assert!(rows2.iter().all(|r| !ids.is_empty() && r.0.id != last.0.id));

        // 5. A selective field (about one image in 10,000 has a given photographer id).
        let f = filter(CatalogFilter {
            fields: vec![field(&format!("photographer_id=P{:04}", r.below(10_000)))],
            ..CatalogFilter::default()
        });
        let t = Instant::now();
        let rows = db
            .list_images(&f, ListOrder::NewestFirst, None, limit)
            .await
            .unwrap();
        let alone = t.elapsed();
        let ids: Vec<ImageId> = rows.iter().map(|r| r.id).collect();
        read_back(db, &ids).await;
        tm.add(
            "list: photographer_id= (selective), newest first",
            t.elapsed(),
        );
        tm.add(
            "list: photographer_id= (selective), newest first [query alone]",
            alone,
        );

        // 4. The review queue: oldest first, by priority, by reason, and a next page.
        let t = Instant::now();
        let page = db
            .review_queue(Some(owner), None, None, QueueOrder::Oldest, None, limit)
            .await
            .unwrap();
        let ids: Vec<ImageId> = page.iter().map(|r| r.image.id).collect();
        db.open_reasons(&ids).await.unwrap();
        tm.add("queue: oldest first", t.elapsed());
        assert_eq!(page.len(), limit as usize);
        let last = page.last().unwrap();
        let pos = (last.review_priority, last.queued_at, last.image.id.0);
        let t = Instant::now();
        let page2 = db
            .review_queue(
                Some(owner),
                None,
                None,
                QueueOrder::Oldest,
                Some(pos),
                limit,
            )
            .await
            .unwrap();
        let ids: Vec<ImageId> = page2.iter().map(|r| r.image.id).collect();
        db.open_reasons(&ids).await.unwrap();
        tm.add("queue: oldest first, page 2 (keyset)", t.elapsed());
        let t = Instant::now();
        let page = db
            .review_queue(
                Some(owner),
                Some(coll_id),
                Some(ReasonKind::Validation),
                QueueOrder::Priority,
                None,
                limit,
            )
            .await
            .unwrap();
        let ids: Vec<ImageId> = page.iter().map(|r| r.image.id).collect();
        db.open_reasons(&ids).await.unwrap();
        tm.add("queue: validation reason, by priority", t.elapsed());
        if q % 10 == 0 {
            let t = Instant::now();
            let stats = db.queue_stats_by_reason(Some(owner)).await.unwrap();
            tm.add("queue metrics: waiting and age by reason", t.elapsed());
            assert!(stats.iter().any(|s| s.waiting as u64 == n / 10));
        }
    }
    println!("\n{label}: {n} images, 20 schema fields, {queries} runs per query");
    println!("  validation alone: {validate_per_s:.0} records/s (one core; 0: database reused)");
    println!("  validation + ingest transaction (4 writers): {ingest_per_s:.0} images/s (0: database reused)");
    println!(
        "  {:<72} {:>8} {:>8}",
        "query (incl. read-back of a 50-row page)", "p50 ms", "p99 ms"
    );
    let mut out = serde_json::Map::new();
    for (name, v) in tm.0.iter_mut() {
        let (p50, p99) = (pct(v, 0.5), pct(v, 0.99));
        println!("  {name:<72} {p50:>8.2} {p99:>8.2}");
        out.insert(
            name.clone(),
            json!({"p50_ms": p50, "p99_ms": p99, "runs": v.len()}),
        );
    }
    json!({
        "backend": label,
        "images": n,
        "schema_fields": 20,
        "validate_records_per_s": validate_per_s,
        "ingest_images_per_s": ingest_per_s,
        "queries": out,
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: u64 = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let queries: usize = std::env::var("BENCH_QUERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut results = Vec::new();
    let only = std::env::var("BENCH_ONLY").ok();
    rt.block_on(async {
        if only.as_deref() != Some("postgres") {
            // BENCH_SQLITE_DB: keep the database there, and reuse it when it exists.
            let kept = std::env::var("BENCH_SQLITE_DB")
                .ok()
                .map(std::path::PathBuf::from);
            let dir = std::env::temp_dir()
                .join(format!("flexphoto-bench-catalog-{}", std::process::id()));
            let path = kept.clone().unwrap_or_else(|| dir.join("bench.db"));
            let db = Db::connect(&DatabaseUrl::Sqlite(path), 8).await.unwrap();
            results.push(run("sqlite", db.clone(), n, queries).await);
            if let Db::Sqlite(p) = db {
                p.close().await;
            }
            if kept.is_none() {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        if only.as_deref() == Some("sqlite") {
            return;
        }
        if let Ok(base) = std::env::var("FLEXPHOTO_TEST_PG_URL") {
            // BENCH_PG_DB: keep the database of that name, and reuse it when it exists.
            let kept = std::env::var("BENCH_PG_DB").ok();
            let name = kept
                .clone()
                .unwrap_or_else(|| format!("fp_bench_{}", Uuid::new_v4().simple()));
            let admin = sqlx::PgPool::connect(&base).await.unwrap();
            let exists: Option<(i32,)> =
                sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
                    .bind(&name)
                    .fetch_optional(&admin)
                    .await
                    .unwrap();
            if exists.is_none() {
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&admin)
                    .await
                    .unwrap();
            }
            let (prefix, _) = base.rsplit_once('/').unwrap();
            let db = Db::connect(&DatabaseUrl::Postgres(format!("{prefix}/{name}")), 8)
                .await
                .unwrap();
            results.push(run("postgres", db.clone(), n, queries).await);
            if let Db::Pg(p) = db {
                p.close().await;
            }
            if kept.is_none() {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&admin)
                .await;
            }
        } else {
            eprintln!("SKIP postgres: set FLEXPHOTO_TEST_PG_URL to measure it too");
        }
    });
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../loadtest/results/catalog-{}.json",
        chrono::Utc::now().format("%Y%m%d-%H%M%S")
    ));
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&json!({ "runs": results })).unwrap(),
    )
    .unwrap();
    println!("\nwrote {}", out.display());
}
