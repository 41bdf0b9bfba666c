//! SQL access for both backends.
//!
//! [`Db`] is an enum over a Postgres and a SQLite pool. Queries are written once in the SQL
//! both dialects share (`$n` placeholders work on both) and run through [`on_db!`], which
//! expands the same code for each pool type; where the dialects differ (the queue claim) the
//! text is chosen per backend. Migrations are embedded per backend from `migrations/`.
//!
//! Type mapping: UUIDs are `UUID` on Postgres and 16-byte `BLOB`s on SQLite; times are
//! `TIMESTAMPTZ` on Postgres and RFC 3339 UTC text on SQLite (always written from Rust, at
//! microsecond precision, so text order is time order); JSON is `JSONB` on Postgres and text
//! on SQLite.

pub mod catalog;
pub mod dead_jobs;
pub mod images;
pub mod jobs;
pub mod keys;
pub mod leases;
pub mod lifecycle;
pub mod owners;
pub mod privacy;
pub mod search;
pub mod storage_history;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Database, Pool, Transaction};

use crate::config::DatabaseUrl;

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The driver failed (connection, constraint, syntax).
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    /// Migrations could not be applied.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A unique constraint refused the write; the text names the constraint.
    #[error("conflict on {0}")]
    Conflict(String),
    /// The directory for the SQLite file could not be created.
    #[error("cannot create {0}: {1}")]
    Io(String, std::io::Error),
}

impl StoreError {
    /// Whether the database aborted the transaction only because of other transactions
    /// running at the same moment (Postgres deadlock, serialization failure or lock timeout;
    /// SQLite busy or locked past its timeout): running it again can succeed.
    pub fn is_transient(&self) -> bool {
        let StoreError::Sql(sqlx::Error::Database(d)) = self else {
            return false;
        };
        let Some(code) = d.code() else {
            return false;
        };
        if d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
            // Primary result codes SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their
            // extended forms.
            return code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6));
        }
        matches!(code.as_ref(), "40001" | "40P01" | "55P03")
    }

    /// Maps unique violations to [`StoreError::Conflict`].
    pub fn classify(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(d) = &e {
            if d.is_unique_violation() {
                return StoreError::Conflict(d.constraint().unwrap_or("unique").to_owned());
            }
        }
        StoreError::Sql(e)
    }
}

/// Result of store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// The metadata database: Postgres or SQLite.
#[derive(Debug, Clone)]
pub enum Db {
    /// Postgres.
    Pg(PgPool),
    /// SQLite (embedded default).
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$pool` bound to whichever pool `$db` holds, and `$pg` to whether it is
/// Postgres. The body is compiled once per backend.
#[macro_export]
macro_rules! on_db {
    ($db:expr, |$pool:ident, $pg:ident| $body:expr) => {
        match $db {
            $crate::store::Db::Pg($pool) => {
                #[allow(unused_variables)]
                let $pg = true;
                $body
            }
            $crate::store::Db::Sqlite($pool) => {
                #[allow(unused_variables)]
                let $pg = false;
                $body
            }
        }
    };
}

/// [`on_db!`] for a body that is one transaction: when the database aborts it for a
/// transient reason ([`StoreError::is_transient`]), the whole body runs again after a short
/// pause, up to [`TRANSIENT_RETRIES`] times. Such a body must not write outside its
/// transaction, and must evaluate to its result (an early `return` leaves the body only).
#[macro_export]
macro_rules! on_db_retrying {
    ($db:expr, |$pool:ident, $pg:ident| $body:expr) => {{
        let mut attempt: u32 = 0;
        loop {
            let run = async {
                Ok::<_, $crate::store::StoreError>($crate::on_db!($db, |$pool, $pg| $body))
            };
            match run.await {
                Ok(v) => break v,
                Err(e) if e.is_transient() && attempt < $crate::store::TRANSIENT_RETRIES => {
                    attempt += 1;
                    $crate::store::transient_pause(attempt, &e).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }};
}

/// How many times a transaction aborted for a transient reason runs again.
pub const TRANSIENT_RETRIES: u32 = 4;

/// The pause before running an aborted transaction again: growing with each attempt and
/// jittered, so the transactions that collided do not collide again in step.
pub async fn transient_pause(attempt: u32, e: &StoreError) {
    let base = 10u64 << attempt.min(6);
    let jitter = u64::from(Utc::now().timestamp_subsec_micros()) % base;
    tracing::debug!(attempt, error = %e, "transaction aborted by a concurrent one; running it again");
    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
}

/// Starting a transaction that will write. On SQLite it takes the write lock up front
/// (`BEGIN IMMEDIATE`), so two writers queue on the busy timeout instead of one failing when
/// it upgrades a read lock.
pub trait BeginWrite {
    /// The database type.
    type Db: Database;
    /// Begins a write transaction.
    fn begin_write(
        &self,
    ) -> impl std::future::Future<
        Output = std::result::Result<Transaction<'static, Self::Db>, sqlx::Error>,
    > + Send;
}

impl BeginWrite for Pool<sqlx::Postgres> {
    type Db = sqlx::Postgres;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<
        Output = std::result::Result<Transaction<'static, sqlx::Postgres>, sqlx::Error>,
    > + Send {
        self.begin()
    }
}

impl BeginWrite for Pool<sqlx::Sqlite> {
    type Db = sqlx::Sqlite;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<
        Output = std::result::Result<Transaction<'static, sqlx::Sqlite>, sqlx::Error>,
    > + Send {
        self.begin_with("BEGIN IMMEDIATE")
    }
}

/// The current time at the precision both backends keep.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A time at the precision both backends keep.
pub fn trunc(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

impl Db {
    /// Connects (creating the SQLite file and its directory when needed) and applies the
    /// embedded migrations.
    pub async fn connect(url: &DatabaseUrl, max_connections: u32) -> Result<Self> {
        let db = match url {
            DatabaseUrl::Postgres(u) => Db::Pg(
                PgPoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(Duration::from_secs(15))
                    .connect(u)
                    .await?,
            ),
            DatabaseUrl::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| StoreError::Io(dir.display().to_string(), e))?;
                }
                let opts = SqliteConnectOptions::from_str("sqlite:")?
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(15));
                Db::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(max_connections)
                        .acquire_timeout(Duration::from_secs(30))
                        .connect_with(opts)
                        .await?,
                )
            }
        };
        db.migrate().await?;
        Ok(db)
    }

    /// Applies the embedded migrations for this backend.
    pub async fn migrate(&self) -> Result<()> {
        match self {
            Db::Pg(p) => sqlx::migrate!("../migrations/postgres").run(p).await?,
            Db::Sqlite(p) => sqlx::migrate!("../migrations/sqlite").run(p).await?,
        }
        Ok(())
    }

    /// `postgres` or `sqlite`, for logs.
    pub fn backend(&self) -> &'static str {
        match self {
            Db::Pg(_) => "postgres",
            Db::Sqlite(_) => "sqlite",
        }
    }

    /// Closes the pool.
    pub async fn close(&self) {
        on_db!(self, |p, _pg| p.close().await)
    }

    /// Reads a setting.
    pub async fn setting(&self, name: &str) -> Result<Option<String>> {
        let v: Option<(String,)> = on_db!(self, |p, _pg| {
            sqlx::query_as("SELECT value FROM settings WHERE name = $1")
                .bind(name)
                .fetch_optional(p)
                .await?
        });
        Ok(v.map(|(v,)| v))
    }

    /// Stores `value` under `name` unless a value is already there; returns the stored value.
    pub async fn setting_or_insert(&self, name: &str, value: &str) -> Result<String> {
        on_db!(self, |p, _pg| {
            sqlx::query(
                "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(value)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(self
            .setting(name)
            .await?
            .unwrap_or_else(|| value.to_owned()))
    }
}

#[cfg(test)]
pub(crate) mod scratch;
#[cfg(test)]
mod transient_tests;
