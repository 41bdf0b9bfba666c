//! Transactions aborted by concurrent ones: classified as transient on both engines, and run
//! again by `on_db_retrying!`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

use super::scratch::ScratchPg;
use super::{BeginWrite, Db, StoreError};
use crate::config::DatabaseUrl;

/// Moves `from` then `to` in one transaction, pausing between them so that two of these in
/// opposite orders deadlock; counts its attempts.
async fn cross_update(db: &Db, from: i32, to: i32, attempts: &AtomicU32) -> super::Result<()> {
    on_db_retrying!(db, |p, _pg| {
        attempts.fetch_add(1, Ordering::SeqCst);
        let mut tx = p.begin_write().await?;
        for (i, id) in [from, to].into_iter().enumerate() {
            sqlx::query("UPDATE cross_rows SET v = v + 1 WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            if i == 0 {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        tx.commit().await?;
    });
    Ok(())
}

#[tokio::test]
async fn a_deadlocked_transaction_runs_again_on_postgres() {
    let Some(scratch) = ScratchPg::create("fp_transient").await else {
        return;
    };
    let db = Db::connect(&DatabaseUrl::Postgres(scratch.url.clone()), 4)
        .await
        .unwrap();
    let Db::Pg(pool) = &db else { unreachable!() };
    sqlx::query("CREATE TABLE cross_rows (id INT PRIMARY KEY, v INT NOT NULL)")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO cross_rows VALUES (1, 0), (2, 0)")
        .execute(pool)
        .await
        .unwrap();

    // Without the retry, one of the two is aborted, and says it may run again.
    let mut a = pool.begin().await.unwrap();
    let mut b = pool.begin().await.unwrap();
    let up = "UPDATE cross_rows SET v = v + 1 WHERE id = $1";
    sqlx::query(up).bind(1).execute(&mut *a).await.unwrap();
    sqlx::query(up).bind(2).execute(&mut *b).await.unwrap();
    let (ra, rb) = tokio::join!(
        sqlx::query(up).bind(2).execute(&mut *a),
        sqlx::query(up).bind(1).execute(&mut *b)
    );
    let err = ra.err().or(rb.err()).expect("one of the two deadlocked");
    assert!(StoreError::from(err).is_transient());
    drop((a, b));

    // With it, both finish and each row moved twice.
    let attempts = AtomicU32::new(0);
    let (x, y) = tokio::join!(
        cross_update(&db, 1, 2, &attempts),
        cross_update(&db, 2, 1, &attempts)
    );
    x.unwrap();
    y.unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 3, "one of them ran twice");
    let v: Vec<(i32,)> = sqlx::query_as("SELECT v FROM cross_rows ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(v, [(2,), (2,)]);

    db.close().await;
}

#[tokio::test]
async fn a_busy_sqlite_database_is_transient_and_a_constraint_is_not() {
    let dir = std::env::temp_dir().join(format!("fp-transient-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let opts = SqliteConnectOptions::new()
        .filename(dir.join("t.db"))
        .create_if_missing(true)
        .busy_timeout(Duration::ZERO);
    let pool = SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(opts)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .execute(&pool)
        .await
        .unwrap();
    let mut holder = pool.begin_write().await.unwrap();
    sqlx::query("INSERT INTO t VALUES (1)")
        .execute(&mut *holder)
        .await
        .unwrap();
    let busy = pool
        .begin_write()
        .await
        .expect_err("the write lock is held");
    assert!(StoreError::from(busy).is_transient());
    holder.commit().await.unwrap();
    let dup = sqlx::query("INSERT INTO t VALUES (1)")
        .execute(&pool)
        .await
        .expect_err("a duplicate key");
    assert!(!StoreError::from(dup).is_transient());
    pool.close().await;
    let _ = std::fs::remove_dir_all(dir);
}
