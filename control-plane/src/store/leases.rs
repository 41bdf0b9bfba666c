//! Leases on deployment-wide roles: one row per role, taken by one holder at a time, renewed
//! while held, and taken over once it expires. Times come from the database's clock, so
//! processes on different machines compare like with like.

use std::time::Duration;

use super::{Db, Result};
use crate::on_db;

/// Unix milliseconds now, by the database's clock.
const NOW_PG: &str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";
const NOW_SQLITE: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

/// A lease as stored, with the database's time when it was read.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LeaseRow {
    /// The role.
    pub name: String,
    /// Who holds it (an opaque holder id).
    pub holder: String,
    /// JSON describing the holder (host, pid, URL).
    pub holder_info: String,
    /// When the current holder took it, Unix ms.
    pub acquired_at: i64,
    /// Last renewal, Unix ms.
    pub renewed_at: i64,
    /// When it lapses unless renewed, Unix ms.
    pub expires_at: i64,
    /// The database's clock at the read, Unix ms.
    pub now: i64,
}

impl LeaseRow {
    /// Whether the lease is still in force.
    pub fn live(&self) -> bool {
        self.expires_at > self.now
    }
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2)
}

impl Db {
    /// Takes or renews the lease `name` for `holder` for `ttl`. Succeeds when nobody holds
    /// it, when `holder` already does (even if it lapsed and nobody took it), or when the
    /// other holder's lease has expired; returns whether `holder` holds it now.
    pub async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        holder_info: &str,
        ttl: Duration,
    ) -> Result<bool> {
        let ttl = ttl_ms(ttl);
        let got: Option<(String,)> = on_db!(self, |p, pg| {
            let now = if pg { NOW_PG } else { NOW_SQLITE };
            let sql = format!(
                "INSERT INTO leases (name, holder, holder_info, acquired_at, renewed_at, expires_at) \
                 VALUES ($1, $2, $3, {now}, {now}, {now} + $4) \
                 ON CONFLICT (name) DO UPDATE SET \
                   acquired_at = CASE WHEN leases.holder = excluded.holder \
                                 THEN leases.acquired_at ELSE excluded.acquired_at END, \
                   holder = excluded.holder, holder_info = excluded.holder_info, \
                   renewed_at = excluded.renewed_at, expires_at = excluded.expires_at \
                 WHERE leases.holder = excluded.holder OR leases.expires_at <= excluded.renewed_at \
                 RETURNING holder"
            );
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(name)
                .bind(holder)
                .bind(holder_info)
                .bind(ttl)
                .fetch_optional(p)
                .await?
        });
        Ok(got.is_some_and(|(h,)| h == holder))
    }

    /// Gives the lease up at once (a clean shutdown), if `holder` holds it.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        on_db!(self, |p, _pg| {
            sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
                .bind(name)
                .bind(holder)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// The lease `name`, live or lapsed.
    pub async fn lease(&self, name: &str) -> Result<Option<LeaseRow>> {
        Ok(self
            .all_leases()
            .await?
            .into_iter()
            .find(|l| l.name == name))
    }

    /// Every lease, by name.
    pub async fn all_leases(&self) -> Result<Vec<LeaseRow>> {
        Ok(on_db!(self, |p, pg| {
            let now = if pg { NOW_PG } else { NOW_SQLITE };
            let sql = format!(
                "SELECT name, holder, holder_info, acquired_at, renewed_at, expires_at, \
                 {now} AS now FROM leases ORDER BY name"
            );
            sqlx::query_as::<_, LeaseRow>(sqlx::AssertSqlSafe(sql))
                .fetch_all(p)
                .await?
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseUrl;

    async fn sqlite() -> (Db, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("fp-leases-{}", uuid::Uuid::new_v4()));
        let db = Db::connect(&DatabaseUrl::Sqlite(dir.join("db.sqlite")), 2)
            .await
            .unwrap();
        (db, dir)
    }

    /// What to remove after a test: the SQLite directory or the Postgres database.
    enum Scratch {
        Dir(std::path::PathBuf),
        Pg(crate::store::scratch::ScratchPg),
    }

    async fn cleanup(db: Db, scratch: Scratch) {
        db.close().await;
        match scratch {
            Scratch::Dir(d) => {
                let _ = std::fs::remove_dir_all(d);
            }
            Scratch::Pg(pg) => drop(pg),
        }
    }

    async fn dbs() -> Vec<(Db, Scratch)> {
        let (s, dir) = sqlite().await;
        let mut v = vec![(s, Scratch::Dir(dir))];
        // A fresh database per run so parallel runs never share leases.
        if let Some(pg) = crate::store::scratch::ScratchPg::create("fp_leases").await {
            let db = Db::connect(&DatabaseUrl::Postgres(pg.url.clone()), 2)
                .await
                .unwrap();
            v.push((db, Scratch::Pg(pg)));
        }
        v
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_takeover_after_expiry() {
        for (db, dir) in dbs().await {
            let ttl = Duration::from_millis(400);
            assert!(db.try_lease("r", "a", "{}", ttl).await.unwrap());
            assert!(
                !db.try_lease("r", "b", "{}", ttl).await.unwrap(),
                "{}",
                db.backend()
            );
            // Renewal keeps it and keeps the first acquisition time.
            let first = db.lease("r").await.unwrap().unwrap();
            assert!(db.try_lease("r", "a", "{}", ttl).await.unwrap());
            let renewed = db.lease("r").await.unwrap().unwrap();
            assert_eq!(renewed.acquired_at, first.acquired_at);
            assert!(renewed.live());
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(!db.lease("r").await.unwrap().unwrap().live());
            // Expired: another holder takes it, and the old one cannot renew.
            assert!(db.try_lease("r", "b", "{\"pid\":2}", ttl).await.unwrap());
            assert!(!db.try_lease("r", "a", "{}", ttl).await.unwrap());
            let now = db.lease("r").await.unwrap().unwrap();
            assert_eq!(
                (now.holder.as_str(), now.holder_info.as_str()),
                ("b", "{\"pid\":2}")
            );
            assert!(now.acquired_at > first.acquired_at);
            // Release hands it over at once; releasing someone else's lease does nothing.
            db.release_lease("r", "a").await.unwrap();
            assert!(db.lease("r").await.unwrap().is_some());
            db.release_lease("r", "b").await.unwrap();
            assert!(db.try_lease("r", "a", "{}", ttl).await.unwrap());
            // Roles are independent.
            assert!(db.try_lease("other", "b", "{}", ttl).await.unwrap());
            assert_eq!(db.all_leases().await.unwrap().len(), 2);
            cleanup(db, dir).await;
        }
    }

    #[tokio::test]
    async fn concurrent_claims_elect_one_holder() {
        for (db, dir) in dbs().await {
            let mut tasks = Vec::new();
            for i in 0..8 {
                let db = db.clone();
                tasks.push(tokio::spawn(async move {
                    db.try_lease("race", &format!("h{i}"), "{}", Duration::from_secs(30))
                        .await
                        .unwrap()
                }));
            }
            let mut winners = 0;
            for t in tasks {
                winners += usize::from(t.await.unwrap());
            }
            assert_eq!(winners, 1, "{}", db.backend());
            cleanup(db, dir).await;
        }
    }
}
