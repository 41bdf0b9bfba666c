//! Scratch Postgres databases for unit tests: a fresh database per test on the server
//! `FLEXPHOTO_TEST_PG_URL` names, so parallel tests never share rows, dropped afterwards.

/// A database made for one test; dropped (with its connections) when this is dropped.
pub(crate) struct ScratchPg {
    /// Its URL.
    pub url: String,
    name: String,
    base: String,
}

impl ScratchPg {
    /// A fresh database named `{prefix}_{random}`, or `None` (saying the test skips
    /// Postgres, or failing where Postgres is required) when `FLEXPHOTO_TEST_PG_URL` is unset.
    pub async fn create(prefix: &str) -> Option<ScratchPg> {
        let Ok(base) = std::env::var("FLEXPHOTO_TEST_PG_URL") else {
            crate::test_skip::skip("postgres", "FLEXPHOTO_TEST_PG_URL is not set");
            return None;
        };
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let admin = sqlx::PgPool::connect(&base).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let (server, _) = base.rsplit_once('/').unwrap();
        Some(ScratchPg {
            url: format!("{server}/{name}"),
            name,
            base,
        })
    }
}

impl Drop for ScratchPg {
    fn drop(&mut self) {
        let (base, name) = (self.base.clone(), self.name.clone());
        // Drop may run inside a test's runtime: do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                if let Ok(pool) = sqlx::PgPool::connect(&base).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&pool)
                    .await;
                }
            });
            Ok::<(), std::io::Error>(())
        })
        .join();
    }
}
