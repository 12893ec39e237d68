//! The job-types API: list the built-in and declared types, and declare, replace or delete a
//! type (keys with the `admin` scope). Declarations are checked here before they are stored,
//! and stored whole in the job-type bucket, which every replica follows.
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use codigo_schemas::{registry, Declaration, Known};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::extract::Submission;
use super::openapi::{DeclarationProblems, JsonBodyProblems};
use super::AppState;
use crate::auth::Caller;
use crate::problem::Problem;

#[derive(Debug, Serialize, ToSchema)]
pub struct JobTypeInfo {
    #[serde(rename = "type")]
    pub job_type: &'static str,
    pub version: u32,
    /// JSON Schema of the payload.
    #[schema(value_type = Object)]
    pub schema: Value,
    /// `builtin`, or `declared` (served by an HTTP function).
    pub origin: &'static str,
    /// The declaration of a declared type, as stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub declaration: Option<Value>,
}

impl JobTypeInfo {
    fn of(known: &Known) -> Self {
        let job_type = known.job_type();
        let (origin, declaration) = match known {
            Known::Builtin(_) => ("builtin", None),
            Known::Declared(declared) => {
                ("declared", serde_json::to_value(&declared.declaration).ok())
            }
        };
        Self {
            job_type: job_type.name,
            version: job_type.version,
            schema: job_type.schema.clone(),
            origin,
            declaration,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobTypes {
    pub job_types: Vec<JobTypeInfo>,
    /// JSON Schema of the envelope on the work stream.
    #[schema(value_type = Object)]
    pub envelope: Value,
}

/// Built-in and declared job types with their JSON Schemas.
#[utoipa::path(get, path = "/v1/job-types", tag = "job-types",
    responses((status = 200, description = "built-in and declared job types", body = JobTypes)))]
pub(super) async fn list(State(state): State<Arc<AppState>>) -> Json<JobTypes> {
    let builtin = registry().job_types().map(Known::Builtin);
    let declared = state.catalog.declared().into_iter().map(Known::Declared);
    Json(JobTypes {
        job_types: builtin
            .chain(declared)
            .map(|k| JobTypeInfo::of(&k))
            .collect(),
        envelope: registry().envelope_schema().clone(),
    })
}

/// One job type.
#[utoipa::path(get, path = "/v1/job-types/{type}", tag = "job-types",
    params(("type" = String, Path, description = "job type name")),
    responses(
        (status = 200, description = "the job type", body = JobTypeInfo),
        (status = 404, description = "no such job type", body = Problem),
    ))]
pub(super) async fn show(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<JobTypeInfo>, Problem> {
    state
        .catalog
        .get(&name)
        .map(|known| Json(JobTypeInfo::of(&known)))
        .map_err(|_| no_such_type(&name))
}

fn no_such_type(name: &str) -> Problem {
    Problem::not_found(format!(
        "no job type {name:?}; GET /v1/job-types lists them"
    ))
}

/// Declares a job type, or replaces its declaration; live on every replica within seconds.
#[utoipa::path(put, path = "/v1/job-types/{type}", tag = "job-types",
    params(("type" = String, Path, description = "job type name")),
    request_body(content = Object, description = "the declaration: type, version, schema, target, retry?, concurrency?, jobs_per_sec?"),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "stored; its declaration as stored", body = JobTypeInfo),
        DeclarationProblems, JsonBodyProblems,
    ))]
pub(super) async fn put(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    submission: Submission,
) -> Result<Json<JobTypeInfo>, Problem> {
    submission.caller.may_administer()?;
    let mut body = submission.json()?;
    if let Some(object) = body.as_object_mut() {
        object
            .entry("type")
            .or_insert_with(|| Value::String(name.clone()));
    }
    let declaration: Declaration = serde_json::from_value(body)
        .map_err(|e| Problem::invalid_declaration(format!("not a declaration: {e}")))?;
    if declaration.name != name {
        return Err(Problem::invalid_declaration(format!(
            "the body declares {:?} but the path names {name:?}; make them the same",
            declaration.name
        )));
    }
    let declared = declaration
        .check()
        .map_err(|e| Problem::invalid_declaration(e.to_string()))?;
    let declarations = state.declarations()?;
    declarations.put(&declared).await.map_err(|error| {
        tracing::warn!(%error, "storing a declaration failed");
        Problem::unavailable(
            "the job-type bucket is unreachable; nothing was stored, retry shortly",
        )
    })?;
    // Visible here at once; the other replicas follow the bucket.
    let known = Known::Declared(state.catalog.declare(declared));
    tracing::info!(job_type = %name, tenant = submission.caller.tenant(), "job type declared");
    Ok(Json(JobTypeInfo::of(&known)))
}

/// Deletes a declared type: the gateway stops taking its jobs, queued ones finish or
/// dead-letter by its policy.
#[utoipa::path(delete, path = "/v1/job-types/{type}", tag = "job-types",
    params(("type" = String, Path, description = "job type name")),
    security(("api_key" = [])),
    responses(
        (status = 204, description = "deleted"),
        (status = 404, description = "no such declared type", body = Problem),
        DeclarationProblems,
    ))]
pub(super) async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, Problem> {
    caller.may_administer()?;
    if registry().job_type(&name).is_ok() {
        return Err(Problem::invalid_declaration(format!(
            "{name:?} is built into Codigo and cannot be deleted"
        )));
    }
    let declarations = state.declarations()?;
    let deleted = declarations.delete(&name).await.map_err(|error| {
        tracing::warn!(%error, "deleting a declaration failed");
        Problem::unavailable(
            "the job-type bucket is unreachable; nothing was deleted, retry shortly",
        )
    })?;
    state.catalog.remove(&name);
    if deleted {
        tracing::info!(job_type = %name, tenant = caller.tenant(), "job type deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_such_type(&name))
    }
}
