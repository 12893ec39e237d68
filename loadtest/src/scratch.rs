//! A NATS namespace and a Postgres database of a run's own, so that benchmarks never touch
//! the pipeline's data or another run's, and are removed afterwards whatever happened.
use std::sync::{Arc, Mutex};

use async_nats::jetstream;
use codigo_common::Names;
use sqlx::{Connection, PgConnection};
use url::Url;

use crate::error::LoadError;

/// The Postgres server scratch databases live on, and the scratches not yet removed.
#[derive(Debug, Clone)]
pub struct Server {
    base: Url,
    live: Arc<Mutex<Vec<Scratch>>>,
}

/// One run's namespace and database.
#[derive(Debug, Clone)]
pub struct Scratch {
    pub names: Names,
    pub database: String,
    pub database_url: String,
}

fn live(server: &Server) -> std::sync::MutexGuard<'_, Vec<Scratch>> {
    server
        .live
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Server {
    /// The server of `database_url` (its database name is ignored; query parameters such as
    /// `sslmode` are kept).
    pub fn from_database_url(database_url: &str) -> Result<Self, LoadError> {
        let base = Url::parse(database_url).map_err(|e| {
            LoadError::Invalid(format!(
                "DATABASE_URL is not a URL ({e}); use postgres://user@host:port/db"
            ))
        })?;
        if !matches!(base.scheme(), "postgres" | "postgresql") {
            return Err(LoadError::Invalid(
                "DATABASE_URL must start with postgres:// or postgresql://".into(),
            ));
        }
        Ok(Self {
            base,
            live: Arc::default(),
        })
    }

    pub fn database_url(&self, database: &str) -> String {
        let mut url = self.base.clone();
        url.set_path(&format!("/{database}"));
        url.to_string()
    }

    async fn admin(&self) -> Result<PgConnection, LoadError> {
        PgConnection::connect(&self.database_url("postgres"))
            .await
            .map_err(|e| LoadError::postgres("connecting to the postgres database", e))
    }

    /// Creates an empty database and picks a fresh namespace (nothing created in NATS yet).
    pub async fn create(&self) -> Result<Scratch, LoadError> {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let names = Names::new(&format!("lt{}", &suffix[..12]))?;
        let database = format!("codigo_lt_{}", &suffix[..16]);
        let mut admin = self.admin().await?;
        sqlx::query(&format!("CREATE DATABASE {database}"))
            .execute(&mut admin)
            .await
            .map_err(|e| LoadError::postgres(format!("creating database {database}"), e))?;
        let scratch = Scratch {
            names,
            database_url: self.database_url(&database),
            database,
        };
        live(self).push(scratch.clone());
        Ok(scratch)
    }

    /// Deletes the namespace's streams and drops the database.
    pub async fn destroy(&self, scratch: &Scratch, js: &jetstream::Context) {
        codigo_common::jetstream::delete_topology(js, &scratch.names).await;
        match self.admin().await {
            Ok(mut admin) => {
                let dropped = sqlx::query(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    scratch.database
                ))
                .execute(&mut admin)
                .await;
                if let Err(error) = dropped {
                    tracing::warn!(database = %scratch.database, %error, "cannot drop the scratch database; drop it by hand");
                }
            }
            Err(error) => {
                tracing::warn!(database = %scratch.database, %error, "cannot drop the scratch database; drop it by hand");
            }
        }
        live(self).retain(|s| s.database != scratch.database);
    }

    /// Asks Postgres to write out what earlier work left dirty (pages, WAL) now, rather than
    /// during the next measurement. Needs superuser or `pg_checkpoint`; without, it is skipped.
    pub async fn checkpoint(&self) {
        let done = match self.admin().await {
            Ok(mut admin) => sqlx::query("CHECKPOINT")
                .execute(&mut admin)
                .await
                .map(drop),
            Err(error) => {
                tracing::warn!(%error, "cannot connect for a checkpoint");
                return;
            }
        };
        if let Err(error) = done {
            tracing::warn!(%error, "CHECKPOINT refused; measurements may pay for earlier writes");
        }
    }

    /// Scratches created and not removed yet.
    pub fn alive(&self) -> usize {
        live(self).len()
    }

    /// Removes every scratch still alive (after an error or an interruption).
    pub async fn destroy_all(&self, js: &jetstream::Context) {
        let left: Vec<Scratch> = live(self).clone();
        for scratch in &left {
            self.destroy(scratch, js).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_keep_server_and_parameters() {
        let server = Server::from_database_url("postgres://u:p@db:5433/codigo?sslmode=require")
            .expect("valid");
        assert_eq!(
            server.database_url("x"),
            "postgres://u:p@db:5433/x?sslmode=require"
        );
        assert!(Server::from_database_url("mysql://h/db").is_err());
        assert!(Server::from_database_url("not a url").is_err());
    }
}
