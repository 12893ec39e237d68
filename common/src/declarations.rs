//! Declared job types live in a JetStream key-value bucket, one key per type holding its
//! declaration as JSON. A declaration is one put: it is stored whole or not at all, every
//! replica sees the change through a watch within moments, and the bucket is replicated and
//! backed up with the streams it describes. The gateway and the workers follow it into a
//! [`Catalog`]; `codigo-ctl types` and `PUT /v1/job-types/{type}` write it.
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use codigo_schemas::{Catalog, Declaration, DeclarationError, DeclaredType};
use futures::StreamExt;
use tokio::sync::watch;

use crate::config::JetStreamArgs;
use crate::shutdown::Shutdown;
use crate::Names;

/// Past declarations kept per type, for `nats kv history` when a change needs undoing.
const HISTORY: i64 = 10;

#[derive(Debug, thiserror::Error)]
pub enum DeclarationsError {
    #[error("cannot open the job-type bucket {bucket}: {reason}; run `codigo-ctl setup` (and check that this NATS user may use $KV.{bucket}.>)")]
    Open { bucket: String, reason: String },
    #[error(
        "cannot {action} job type {name:?} in bucket {bucket}: {reason}; check NATS and retry"
    )]
    Write {
        action: &'static str,
        name: String,
        bucket: String,
        reason: String,
    },
    #[error("cannot read the job-type bucket {bucket}: {reason}; check NATS and retry")]
    Read { bucket: String, reason: String },
    #[error("the stored declaration of {name:?} is not valid: {source}; apply a corrected one with `codigo-ctl types apply`")]
    Invalid {
        name: String,
        source: DeclarationError,
    },
}

pub fn bucket_config(names: &Names, args: &JetStreamArgs) -> kv::Config {
    kv::Config {
        bucket: names.job_types_bucket(),
        description: "Codigo declared job types".into(),
        history: HISTORY,
        max_value_size: 1024 * 1024,
        storage: jetstream::stream::StorageType::File,
        num_replicas: args.stream_replicas,
        ..Default::default()
    }
}

/// The job-type bucket of a namespace.
#[derive(Debug, Clone)]
pub struct Declarations {
    store: kv::Store,
    bucket: String,
}

impl Declarations {
    /// Creates the bucket, or brings its settings up to date.
    pub async fn ensure(
        js: &jetstream::Context,
        names: &Names,
        args: &JetStreamArgs,
    ) -> Result<Self, DeclarationsError> {
        let bucket = names.job_types_bucket();
        let store = js
            .create_or_update_key_value(bucket_config(names, args))
            .await
            .map_err(|e| DeclarationsError::Open {
                bucket: bucket.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self { store, bucket })
    }

    /// Opens the bucket `codigo-ctl setup` made.
    pub async fn open(js: &jetstream::Context, names: &Names) -> Result<Self, DeclarationsError> {
        let bucket = names.job_types_bucket();
        let store = js
            .get_key_value(&bucket)
            .await
            .map_err(|e| DeclarationsError::Open {
                bucket: bucket.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self { store, bucket })
    }

    /// Opens the bucket, creating it where this process owns the topology.
    pub async fn prepare(
        js: &jetstream::Context,
        names: &Names,
        args: &JetStreamArgs,
    ) -> Result<Self, DeclarationsError> {
        if args.ensure_topology {
            Self::ensure(js, names, args).await
        } else {
            Self::open(js, names).await
        }
    }

    /// Stores a declaration; taking it checked, a broken one never reaches the bucket.
    pub async fn put(&self, declared: &DeclaredType) -> Result<u64, DeclarationsError> {
        let declaration = &declared.declaration;
        self.store
            .put(&declaration.name, declaration.to_json().into())
            .await
            .map_err(|e| self.write_error("store", &declaration.name, e))
    }

    /// Deletes a declaration; false when there was none.
    pub async fn delete(&self, name: &str) -> Result<bool, DeclarationsError> {
        if self.get(name).await?.is_none() {
            return Ok(false);
        }
        self.store
            .delete(name)
            .await
            .map_err(|e| self.write_error("delete", name, e))?;
        Ok(true)
    }

    pub async fn get(&self, name: &str) -> Result<Option<Declaration>, DeclarationsError> {
        if !codigo_schemas::is_type_name(name) {
            return Ok(None);
        }
        let value = self.store.get(name).await.map_err(|e| self.read_error(e))?;
        value
            .map(|bytes| {
                Declaration::from_json(&bytes).map_err(|source| DeclarationsError::Invalid {
                    name: name.to_owned(),
                    source,
                })
            })
            .transpose()
    }

    /// Every stored declaration, in name order, with the bucket's last revision: changes
    /// after it are the ones a watch from the next revision sees.
    pub async fn snapshot(&self) -> Result<(Vec<Declaration>, u64), DeclarationsError> {
        let status = self.store.status().await.map_err(|e| self.read_error(e))?;
        let last = status.info.state.last_sequence;
        let mut keys: Vec<String> = self
            .store
            .keys()
            .await
            .map_err(|e| self.read_error(e))?
            .filter_map(|key| async move { key.ok() })
            .collect()
            .await;
        keys.sort();
        let mut declarations = Vec::with_capacity(keys.len());
        for key in keys {
            match self.get(&key).await {
                Ok(Some(declaration)) => declarations.push(declaration),
                Ok(None) => {}
                Err(DeclarationsError::Invalid { name, source }) => {
                    tracing::error!(job_type = %name, error = %source, "skipping a stored declaration that is not valid");
                }
                Err(error) => return Err(error),
            }
        }
        Ok((declarations, last))
    }

    /// Keeps `catalog` equal to the bucket until `shutdown`: a full load, then every change
    /// as it happens, and a full load again whenever the watch breaks. `changed` counts the
    /// catalog's versions, for whoever acts on them.
    pub async fn follow(
        self,
        catalog: Arc<Catalog>,
        changed: watch::Sender<u64>,
        shutdown: Shutdown,
    ) {
        loop {
            let followed = tokio::select! {
                result = self.follow_once(&catalog, &changed) => result,
                () = shutdown.cancelled() => return,
            };
            if let Err(error) = followed {
                tracing::warn!(%error, "following the job-type bucket failed; starting over");
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    async fn follow_once(
        &self,
        catalog: &Catalog,
        changed: &watch::Sender<u64>,
    ) -> Result<(), DeclarationsError> {
        let (declarations, last) = self.snapshot().await?;
        let loaded = declarations
            .into_iter()
            .filter_map(|declaration| checked(&declaration.name.clone(), declaration))
            .collect();
        catalog.replace_declared(loaded);
        changed.send_modify(|version| *version += 1);
        let mut watch = self
            .store
            .watch_all_from_revision(last + 1)
            .await
            .map_err(|e| self.read_error(e))?;
        while let Some(entry) = watch.next().await {
            let entry = entry.map_err(|e| self.read_error(e))?;
            match entry.operation {
                kv::Operation::Put => {
                    let parsed = Declaration::from_json(&entry.value);
                    match parsed.map_err(|source| (entry.key.clone(), source)) {
                        Ok(declaration) => {
                            if let Some(declared) = checked(&entry.key, declaration) {
                                tracing::info!(job_type = %entry.key, "job type declared");
                                catalog.declare(declared);
                            }
                        }
                        Err((name, source)) => {
                            let error = DeclarationsError::Invalid { name, source };
                            tracing::error!(%error, "ignoring a stored declaration");
                        }
                    }
                }
                kv::Operation::Delete | kv::Operation::Purge => {
                    tracing::info!(job_type = %entry.key, "job type deleted");
                    catalog.remove(&entry.key);
                }
            }
            changed.send_modify(|version| *version += 1);
        }
        Err(DeclarationsError::Read {
            bucket: self.bucket.clone(),
            reason: "the watch ended".into(),
        })
    }

    fn write_error(
        &self,
        action: &'static str,
        name: &str,
        error: impl ToString,
    ) -> DeclarationsError {
        DeclarationsError::Write {
            action,
            name: name.to_owned(),
            bucket: self.bucket.clone(),
            reason: error.to_string(),
        }
    }

    fn read_error(&self, error: impl ToString) -> DeclarationsError {
        DeclarationsError::Read {
            bucket: self.bucket.clone(),
            reason: error.to_string(),
        }
    }
}

/// A stored declaration checked again as it is loaded (the bucket may have been written by
/// hand); one that fails is logged and left out, the others still load.
fn checked(key: &str, declaration: Declaration) -> Option<codigo_schemas::DeclaredType> {
    if declaration.name != key {
        tracing::error!(key, declared = %declaration.name, "ignoring a declaration stored under another type's key");
        return None;
    }
    match declaration.check() {
        Ok(declared) => Some(declared),
        Err(source) => {
            let error = DeclarationsError::Invalid {
                name: key.to_owned(),
                source,
            };
            tracing::error!(%error, "ignoring a stored declaration");
            None
        }
    }
}
