//! Postgres pool and schema migrations.
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::config::DatabaseArgs;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("DATABASE_URL is not a valid Postgres URL: {0}")]
    BadUrl(sqlx::Error),
    #[error("cannot reach Postgres: {0}; is it running and is DATABASE_URL right?")]
    Connect(sqlx::Error),
    #[error("applying migrations failed: {0}; the role in DATABASE_URL needs DDL rights for `codigo-ctl setup`")]
    Migrate(sqlx::migrate::MigrateError),
    #[error("the database schema is at version {found:?} but this build needs {needed}; run `codigo-ctl setup` first")]
    NotMigrated { found: Option<i64>, needed: i64 },
}

/// Connections of a process's [`lazy_marks_pool`], beside its `CODIGO_DB_MAX_CONNECTIONS`.
pub const MARK_CONNECTIONS: u32 = 4;

fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        // No round trip before every checkout: a connection that died is found out by the
        // statement that uses it, whose error the callers already treat as transient.
        .test_before_acquire(false)
}

fn connect_options(args: &DatabaseArgs) -> Result<PgConnectOptions, DbError> {
    let options: PgConnectOptions = args.database_url.parse().map_err(DbError::BadUrl)?;
    Ok(options.application_name("codigo"))
}

/// A pool that connects lazily, so a service starts (and reports not-ready) while Postgres
/// is still coming up.
pub fn lazy_pool(args: &DatabaseArgs) -> Result<PgPool, DbError> {
    Ok(pool_options(args.db_max_connections).connect_lazy_with(connect_options(args)?))
}

/// A small lazy pool for rows that only say where a job is (`queued`, `running`): its
/// sessions commit without waiting for the WAL flush, so each such write is one round trip
/// and no fsync. A Postgres crash may lose the last of them; JetStream, not these rows, holds
/// the jobs, and each job's own outcome is still committed durably through [`lazy_pool`].
pub fn lazy_marks_pool(args: &DatabaseArgs) -> Result<PgPool, DbError> {
    Ok(pool_options(MARK_CONNECTIONS)
        .after_connect(|connection, _| {
            Box::pin(async move {
                sqlx::Executor::execute(connection, "SET synchronous_commit = off")
                    .await
                    .map(drop)
            })
        })
        .connect_lazy_with(connect_options(args)?))
}

pub async fn connect(args: &DatabaseArgs) -> Result<PgPool, DbError> {
    let pool = lazy_pool(args)?;
    sqlx::query("SELECT 1")
        .execute(&pool)
        .await
        .map_err(DbError::Connect)?;
    Ok(pool)
}

pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await.map_err(DbError::Migrate)
}

/// Refuses to run against a schema older than this build: the services never run DDL
/// themselves (their role may not), `codigo-ctl setup` does.
pub async fn check_migrated(pool: &PgPool) -> Result<(), DbError> {
    let needed = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let found: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await
            .or_else(|error| match &error {
                // No migrations table at all: never set up.
                sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => Ok(None),
                _ => Err(DbError::Connect(error)),
            })?;
    if found.unwrap_or(0) < needed {
        return Err(DbError::NotMigrated { found, needed });
    }
    Ok(())
}

pub async fn ping(pool: &PgPool) -> bool {
    sqlx::query("SELECT 1").execute(pool).await.is_ok()
}
