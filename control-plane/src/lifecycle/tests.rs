//! The lifecycle against a real SQLite database and real directory stores, with a clock the
//! tests move by hand: ageing, traffic windows, the policy, moves that stop between steps,
//! rewarming and archive restores, without sleeping.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Duration, TimeZone, Utc};
use flexphoto_storage::local::LocalDirStore;
use flexphoto_storage::{ArchiveState, ImageKey, Object, ObjectMeta, ObjectStore, StorageError};

use super::access::{AccessBatch, AccessItem};
use super::mover::move_image;
use super::policy::{plan, Direction};
use super::settings::ColdTarget;
use crate::blob::Blobs;
use crate::clock::ManualClock;
use crate::domain::{ImageId, JobKind};
use crate::on_db;

use super::test_world::World;

/// The lifecycle world on SQLite (and Postgres), its clock at [`t0`].
async fn worlds(extra_toml: &str) -> Vec<World> {
    super::test_world::worlds(extra_toml, t0()).await
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 10, 12, 0, 0).unwrap()
}

/// A ready image uploaded at `at` with an original and a `thumb` and a `full` variant, each
/// stored hot.
async fn image(w: &World, owner: &str, at: DateTime<Utc>) -> ImageId {
    let id = ImageId::new();
    let objects = [
        ("original", format!("o/{id}-original.jpg"), vec![1u8; 3000]),
        ("full", format!("o/{id}-full.jpg"), vec![2u8; 2000]),
        ("thumb", format!("o/{id}-thumb.webp"), vec![3u8; 100]),
    ];
    for (_, key, bytes) in &objects {
        w.state
            .blobs
            .hot()
            .put(
                &ImageKey::parse(key).unwrap(),
                Bytes::from(bytes.clone()),
                "image/jpeg",
            )
            .await
            .unwrap();
    }
    on_db!(&w.state.db, |p, _pg| {
        sqlx::query(
            "INSERT INTO images (id, owner, uploaded_at, original_key, declared_mime, status, created_at, updated_at, bytes) \
             VALUES ($1, $2, $3, $4, 'image/jpeg', 'ready', $3, $3, 3000)",
        )
        .bind(id)
        .bind(owner)
        .bind(at)
        .bind(&objects[0].1)
        .execute(p)
        .await
        .unwrap();
        for (kind, key, bytes) in &objects {
            sqlx::query(
                "INSERT INTO image_objects (image_id, kind, key, bytes) VALUES ($1, $2, $3, $4)",
            )
            .bind(id)
            .bind(*kind)
            .bind(key)
            .bind(bytes.len() as i64)
            .execute(p)
            .await
            .unwrap();
        }
    });
    id
}

async fn hits(w: &World, batch: &str, key: &str, n: u64) {
    let now = w.clock.now_for_tests();
    let b = AccessBatch {
        batch_id: batch.into(),
        edge: "edge-a".into(),
        edge_url: None,
        period_start: now - Duration::minutes(1),
        period_end: now,
        items: vec![AccessItem {
            key: key.into(),
            requests: n,
            bytes: n * 100,
            hits: n / 2,
        }],
        dropped: 0,
    };
    let items = b.check(100, now).unwrap();
    w.state
        .db
        .record_access(&b.batch_id, &b.edge, None, now.date_naive(), now, &items, 0)
        .await
        .unwrap();
}

impl ManualClock {
    fn now_for_tests(&self) -> DateTime<Utc> {
        crate::clock::Clock::now(self)
    }
}

fn key_of(id: ImageId, kind: &str) -> String {
    let ext = if kind == "thumb" { "webp" } else { "jpg" };
    format!("o/{id}-{kind}.{ext}")
}

async fn exists(store: &Arc<dyn ObjectStore>, key: &str) -> bool {
    store.head(&ImageKey::parse(key).unwrap()).await.is_ok()
}

fn cold(w: &World) -> Arc<dyn ObjectStore> {
    Arc::clone(w.state.blobs.cold().expect("a cold store"))
}

#[tokio::test]
async fn age_and_traffic_decide_what_goes_cold() {
    for w in worlds("").await {
        let a = image(&w, "ann", t0()).await;
        let b = image(&w, "ann", t0()).await;
        let cfg = &w.state.cfg.tiering;
        w.clock.advance(Duration::days(89));
        assert!(plan(&w.state.db, cfg, w.clock.now_for_tests(), None)
            .await
            .unwrap()
            .moves
            .is_empty());
        w.clock.advance(Duration::days(2));
        // Image a is requested 10 times (≥ 5): it stays; b goes.
        hits(&w, "b1", &key_of(a, "thumb"), 10).await;
        let p = plan(&w.state.db, cfg, w.clock.now_for_tests(), None)
            .await
            .unwrap();
        let ids: Vec<ImageId> = p.moves.iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![b]);
        assert_eq!(p.moves[0].direction, Direction::ToCold);
        // Original and full move (5000 bytes); the thumbnail stays.
        assert_eq!((p.to_cold_bytes, p.moves[0].objects), (5000, 2));
        assert!(
            p.moves[0].reason.contains("91 days"),
            "{}",
            p.moves[0].reason
        );
        // Thirty days later a's requests are out of the window: it goes too.
        w.clock.advance(Duration::days(30));
        let p = plan(&w.state.db, cfg, w.clock.now_for_tests(), None)
            .await
            .unwrap();
        assert_eq!(p.moves.len(), 2);
        // The totals alone, the streamed listing and the plan agree.
        let now = w.clock.now_for_tests();
        let totals = super::policy::totals(&w.state.db, cfg, now).await.unwrap();
        assert_eq!(
            (
                totals.images_to_cold,
                totals.bytes_to_cold,
                totals.objects_to_cold
            ),
            (2, p.to_cold_bytes, 4)
        );
        let mut streamed = Vec::new();
        super::policy::each_move(&w.state.db, cfg, now, |m| streamed.push(m))
            .await
            .unwrap();
        assert_eq!(streamed, p.moves);
        // The limit truncates and says so.
        let p = plan(&w.state.db, cfg, w.clock.now_for_tests(), Some(1))
            .await
            .unwrap();
        assert!(p.truncated && p.moves.len() == 1);
    }
}

#[tokio::test]
async fn owner_overrides_apply_only_to_that_owner() {
    for w in worlds("[[tiering.owners]]\nowner = \"arc\"\ncold_after_days = 10\n[[tiering.owners]]\nowner = \"keep\"\nenabled = false\n").await {
    let arc = image(&w, "arc", t0()).await;
    let _other = image(&w, "bea", t0()).await;
    let _kept = image(&w, "keep", t0()).await;
    w.clock.advance(Duration::days(11));
    let p = plan(&w.state.db, &w.state.cfg.tiering, w.clock.now_for_tests(), None).await.unwrap();
    assert_eq!(p.moves.iter().map(|m| m.id).collect::<Vec<_>>(), vec![arc]);
    w.clock.advance(Duration::days(100));
    let p = plan(&w.state.db, &w.state.cfg.tiering, w.clock.now_for_tests(), None).await.unwrap();
    assert_eq!(p.moves.len(), 2, "keep's images never move: {p:?}");
    }
}

#[tokio::test]
async fn access_batches_count_once_and_roll_up_to_images() {
    for w in worlds("").await {
        let id = image(&w, "cy", t0()).await;
        hits(&w, "batch-1", &key_of(id, "original"), 4).await;
        hits(&w, "batch-2", &key_of(id, "thumb"), 6).await;
        // A retried push changes nothing.
        hits(&w, "batch-2", &key_of(id, "thumb"), 6).await;
        let today = w.clock.now_for_tests().date_naive();
        let s = w.state.db.access_summary(id, today).await.unwrap();
        assert_eq!((s.requests_7d, s.requests_30d, s.bytes_30d), (10, 10, 1000));
        let img = w.state.db.get_image(id).await.unwrap().unwrap();
        assert_eq!(img.last_accessed_at, Some(w.clock.now_for_tests()));
        // Keys outside the catalog are counted as unmatched, not lost silently.
        let now = w.clock.now_for_tests();
        let out = w
            .state
            .db
            .record_access(
                "batch-3",
                "edge-a",
                None,
                now.date_naive(),
                now,
                &[crate::store::lifecycle::KeyTraffic {
                    key: "elsewhere.jpg".into(),
                    requests: 1,
                    bytes: 1,
                    edge_hits: 0,
                }],
                7,
            )
            .await
            .unwrap();
        assert_eq!((out.matched, out.unmatched, out.duplicate), (0, 1, false));
        let edges = w.state.db.edges().await.unwrap();
        assert_eq!(edges[0].requests, 11);
        assert_eq!(edges[0].dropped, 7);
        // Eight days later the 7-day count is empty and the 30-day one is not.
        w.clock.advance(Duration::days(8));
        let s = w
            .state
            .db
            .access_summary(id, w.clock.now_for_tests().date_naive())
            .await
            .unwrap();
        assert_eq!((s.requests_7d, s.requests_30d), (0, 10));
    }
}

#[tokio::test]
async fn a_move_finishes_from_any_step_and_comes_back_when_requested() {
    for w in worlds("").await {
        let id = image(&w, "dee", t0()).await;
        let hot = Arc::clone(w.state.blobs.hot());
        let cold = cold(&w);
        let original = key_of(id, "original");
        // Stopped after the copy (before the switch): the image is hot and whole; a run finishes.
        let bytes = hot
            .get(&ImageKey::parse(&original).unwrap(), 1 << 20)
            .await
            .unwrap()
            .bytes;
        cold.put(
            &ImageKey::parse(&original).unwrap(),
            bytes.clone(),
            "image/jpeg",
        )
        .await
        .unwrap();
        assert_eq!(
            w.state
                .db
                .get_image(id)
                .await
                .unwrap()
                .unwrap()
                .storage_tier,
            "standard"
        );
        let m = move_image(&w.state, id, Direction::ToCold, "test")
            .await
            .unwrap();
        assert!(m.switched);
        assert_eq!((m.objects, m.deleted), (2, 2));
        let img = w.state.db.get_image(id).await.unwrap().unwrap();
        assert_eq!(img.storage_tier, "cold");
        for kind in ["original", "full"] {
            assert!(!exists(&hot, &key_of(id, kind)).await, "{kind} still hot");
            assert!(exists(&cold, &key_of(id, kind)).await, "{kind} not cold");
        }
        assert!(
            exists(&hot, &key_of(id, "thumb")).await,
            "thumbnails stay hot"
        );
        // Readers find cold objects through the tiered store, byte for byte.
        let read = w
            .state
            .blobs
            .store()
            .get(&ImageKey::parse(&original).unwrap(), 1 << 20)
            .await
            .unwrap();
        assert_eq!(read.bytes, bytes);
        // The history says why.
        let h = w.state.db.history_of(id).await.unwrap();
        assert!(h.iter().any(|e| e.field == "storage_tier"));
        // Running again does nothing more.
        let again = move_image(&w.state, id, Direction::ToCold, "test")
            .await
            .unwrap();
        assert!(!again.switched && again.objects == 0);

        // Requested 25 times in a week: it comes back hot.
        w.clock.advance(Duration::days(3));
        hits(&w, "r1", &original, 25).await;
        let p = plan(
            &w.state.db,
            &w.state.cfg.tiering,
            w.clock.now_for_tests(),
            None,
        )
        .await
        .unwrap();
        assert_eq!(p.moves.len(), 1);
        assert_eq!(p.moves[0].direction, Direction::ToHot);
        // Stopped after the switch (before the deletes): both copies exist; a run cleans up.
        let kinds = vec!["original".to_owned(), "full".to_owned()];
        for k in &kinds {
            let key = ImageKey::parse(&key_of(id, k)).unwrap();
            let b = cold.get(&key, 1 << 20).await.unwrap().bytes;
            hot.put(&key, b, "image/jpeg").await.unwrap();
        }
        w.state
            .db
            .switch_tier(id, &kinds, "standard", "test", w.clock.now_for_tests())
            .await
            .unwrap();
        let m = move_image(&w.state, id, Direction::ToHot, "test")
            .await
            .unwrap();
        assert_eq!(m.objects, 0, "nothing left to copy");
        assert!(m.deleted >= 2);
        assert_eq!(
            w.state
                .db
                .get_image(id)
                .await
                .unwrap()
                .unwrap()
                .storage_tier,
            "standard"
        );
        for k in &kinds {
            assert!(exists(&hot, &key_of(id, k)).await);
            assert!(!exists(&cold, &key_of(id, k)).await, "{k} left cold");
        }
    }
}

/// A store whose objects go to an archive class and come back only through a restore the
/// test completes by hand.
struct FakeArchive {
    inner: LocalDirStore,
    state: Mutex<HashMap<String, ArchiveState>>,
}

#[async_trait]
impl ObjectStore for FakeArchive {
    async fn head(&self, key: &ImageKey) -> Result<ObjectMeta, StorageError> {
        self.inner.head(key).await
    }
    async fn get(&self, key: &ImageKey, max: u64) -> Result<Object, StorageError> {
        let archived = matches!(
            self.state.lock().unwrap().get(key.as_str()),
            Some(ArchiveState::Archived | ArchiveState::Restoring)
        );
        if archived {
            return Err(StorageError::Archived(key.to_string()));
        }
        self.inner.get(key, max).await
    }
    async fn put(&self, key: &ImageKey, body: Bytes, ct: &str) -> Result<ObjectMeta, StorageError> {
        self.inner.put(key, body, ct).await
    }
    async fn put_file(
        &self,
        key: &ImageKey,
        path: &std::path::Path,
        ct: &str,
    ) -> Result<ObjectMeta, StorageError> {
        self.inner.put_file(key, path, ct).await
    }
    async fn delete(&self, key: &ImageKey) -> Result<(), StorageError> {
        self.inner.delete(key).await
    }
    async fn set_storage_class(
        &self,
        key: &ImageKey,
        class: &str,
    ) -> Result<ObjectMeta, StorageError> {
        {
            let mut s = self.state.lock().unwrap();
            let now = s.get(key.as_str()).cloned().unwrap_or(ArchiveState::Online);
            if class == "STANDARD" {
                if now == ArchiveState::Archived || now == ArchiveState::Restoring {
                    return Err(StorageError::Archived(key.to_string()));
                }
                s.insert(key.as_str().to_owned(), ArchiveState::Online);
            } else {
                s.insert(key.as_str().to_owned(), ArchiveState::Archived);
            }
        }
        self.inner.head(key).await
    }
    async fn archive_state(&self, key: &ImageKey) -> Result<ArchiveState, StorageError> {
        Ok(self
            .state
            .lock()
            .unwrap()
            .get(key.as_str())
            .cloned()
            .unwrap_or(ArchiveState::Online))
    }
    async fn restore(&self, key: &ImageKey, _days: u32) -> Result<ArchiveState, StorageError> {
        let mut s = self.state.lock().unwrap();
        if s.get(key.as_str()) == Some(&ArchiveState::Archived) {
            s.insert(key.as_str().to_owned(), ArchiveState::Restoring);
        }
        Ok(s.get(key.as_str()).cloned().unwrap_or(ArchiveState::Online))
    }
    fn describe(&self) -> String {
        "fake-archive".into()
    }
}

#[tokio::test]
async fn archived_images_come_back_through_a_restore() {
    let mut w = super::test_world::world_on("", t0(), None).await;
    let archive = Arc::new(FakeArchive {
        inner: LocalDirStore::new(w.dir.join("archive")).unwrap(),
        state: Mutex::new(HashMap::new()),
    });
    {
        let st = Arc::get_mut(&mut w.state).expect("no other reference yet");
        st.blobs = Blobs::over(archive.clone());
        st.cfg.tiering.cold = ColdTarget::StorageClass("DEEP_ARCHIVE".into());
        st.cfg.tiering.cold_class = "DEEP_ARCHIVE".into();
    }
    let id = image(&w, "eli", t0()).await;
    let m = move_image(&w.state, id, Direction::ToCold, "test")
        .await
        .unwrap();
    assert!(m.switched && m.objects == 2);
    let original = ImageKey::parse(&key_of(id, "original")).unwrap();
    assert!(matches!(
        w.state.blobs.store().get(&original, 1 << 20).await,
        Err(StorageError::Archived(_))
    ));
    // Moving back without a restore is refused with what to do.
    let e = move_image(&w.state, id, Direction::ToHot, "test")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("restore"), "{e}");
    // The restore is asked for, runs for a while, and ends.
    assert_eq!(
        super::restore::request(&w.state, id).await.unwrap(),
        super::restore::RestoreStatus::Restoring
    );
    assert_eq!(
        w.state
            .db
            .get_image(id)
            .await
            .unwrap()
            .unwrap()
            .restore_state
            .as_deref(),
        Some("restoring")
    );
    assert_eq!(super::restore::poll(&w.state).await.unwrap(), 0);
    for o in ["original", "full"] {
        archive
            .state
            .lock()
            .unwrap()
            .insert(key_of(id, o), ArchiveState::Restored { until: None });
    }
    w.clock.advance(Duration::hours(5));
    assert_eq!(super::restore::poll(&w.state).await.unwrap(), 1);
    let img = w.state.db.get_image(id).await.unwrap().unwrap();
    assert_eq!(img.restore_state.as_deref(), Some("restored"));
    assert!(
        w.state.db.has_open_job(id).await.unwrap(),
        "the move back is queued"
    );
    // The queued move brings it back hot and ends the restore.
    let m = move_image(&w.state, id, Direction::ToHot, "restored")
        .await
        .unwrap();
    assert!(m.switched);
    let img = w.state.db.get_image(id).await.unwrap().unwrap();
    assert_eq!(
        (img.storage_tier.as_str(), img.restore_state),
        ("standard", None)
    );
    let _ = JobKind::TierHot;
}
