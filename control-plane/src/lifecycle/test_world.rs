//! A control plane on a real database for the lifecycle tests: SQLite, and a fresh Postgres
//! database when FLEXPHOTO_TEST_PG_URL is set, with a clock the tests move by hand.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::clock::ManualClock;
use crate::config::RawConfig;
use crate::state::AppState;
use crate::store::scratch::ScratchPg;

/// One control plane state, its clock, and what to clean up.
pub(crate) struct World {
    pub state: Arc<AppState>,
    pub clock: Arc<ManualClock>,
    /// Its data directory (removed with it).
    pub dir: std::path::PathBuf,
    /// The Postgres database made for this world, dropped with it.
    _pg: Option<ScratchPg>,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The same world on SQLite, and on a fresh Postgres database when FLEXPHOTO_TEST_PG_URL is
/// set, its clock at `start`; `extra_toml` is added to the configuration.
pub(crate) async fn worlds(extra_toml: &str, start: DateTime<Utc>) -> Vec<World> {
    let mut v = vec![world_on(extra_toml, start, None).await];
    if let Some(pg) = ScratchPg::create("fp_life").await {
        v.push(world_on(extra_toml, start, Some(pg)).await);
    }
    v
}

/// One world on SQLite, or on the Postgres database `pg` when given.
pub(crate) async fn world_on(
    extra_toml: &str,
    start: DateTime<Utc>,
    pg: Option<ScratchPg>,
) -> World {
    let dir = std::env::temp_dir().join(format!("fp-lifecycle-{}", uuid::Uuid::new_v4().simple()));
    let db = pg.as_ref().map(|p| p.url.clone()).unwrap_or_default();
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
        _pg: pg,
    }
}
