//! A control plane on a real database for the lifecycle tests: SQLite, and a fresh Postgres
//! database when FLEXPHOTO_TEST_PG_URL is set, with a clock the tests move by hand.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::clock::ManualClock;
use crate::config::RawConfig;
use crate::state::AppState;

/// One control plane state, its clock, and what to clean up.
pub(crate) struct World {
    pub state: Arc<AppState>,
    pub clock: Arc<ManualClock>,
    /// Its data directory (removed with it).
    pub dir: std::path::PathBuf,
    /// The Postgres database made for this world, dropped with it.
    pg_db: Option<String>,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        if let (Some(name), Ok(base)) = (self.pg_db.take(), std::env::var("FLEXPHOTO_TEST_PG_URL"))
        {
            // Drop runs inside the test's runtime: do the async cleanup on a thread of its own.
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
}

/// The same world on SQLite, and on a fresh Postgres database when FLEXPHOTO_TEST_PG_URL is
/// set, its clock at `start`; `extra_toml` is added to the configuration.
pub(crate) async fn worlds(extra_toml: &str, start: DateTime<Utc>) -> Vec<World> {
    let mut v = vec![world_on(extra_toml, start, None).await];
    match std::env::var("FLEXPHOTO_TEST_PG_URL") {
        Ok(base) => {
            let name = format!("fp_life_{}", uuid::Uuid::new_v4().simple());
            let pool = sqlx::PgPool::connect(&base).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&pool)
                .await
                .unwrap();
            let (prefix, _) = base.rsplit_once('/').unwrap();
            let pg = Some((format!("{prefix}/{name}"), name));
            v.push(world_on(extra_toml, start, pg).await);
        }
        Err(_) => eprintln!("SKIP postgres: FLEXPHOTO_TEST_PG_URL is not set"),
    }
    v
}

/// One world on SQLite, or on the Postgres database `pg` (its URL and name) when given.
pub(crate) async fn world_on(
    extra_toml: &str,
    start: DateTime<Utc>,
    pg: Option<(String, String)>,
) -> World {
    let dir = std::env::temp_dir().join(format!("fp-lifecycle-{}", uuid::Uuid::new_v4().simple()));
    let db = pg.as_ref().map(|(u, _)| u.clone()).unwrap_or_default();
    let toml = format!(
        "[server]\ndata_dir = \"{}\"\n[database]\nurl = \"{db}\"\n[search]\nmodel = \"none\"\n[queue]\nworkers = 0\n{extra_toml}",
        dir.display()
    );
    let cfg = RawConfig::from_toml_and_env(&toml, Vec::<(String, String)>::new())
        .unwrap()
        .validate()
        .unwrap();
    let clock = Arc::new(ManualClock::new(start));
    let state = AppState::build_with_clock(cfg, clock.clone())
        .await
        .unwrap();
    World {
        state,
        clock,
        dir,
        pg_db: pg.map(|(_, n)| n),
    }
}
