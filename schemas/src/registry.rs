use std::collections::BTreeMap;
use std::sync::LazyLock;

use jsonschema::Validator;
use serde::Serialize;
use serde_json::Value;

use crate::jobs::KINDS;
use crate::kind::KindInfo;

/// One failed rule: where in the instance (RFC 6901 JSON pointer) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub pointer: String,
    pub message: String,
}

/// A job kind's schema that is not valid JSON or not a valid JSON Schema.
#[derive(Debug, thiserror::Error)]
#[error("the schema of job type {name:?} is broken: {reason}; fix its schema file")]
pub struct BadSchema {
    pub name: &'static str,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("unknown job type {0:?}; GET /v1/job-types lists the registered ones")]
    UnknownType(String),
    #[error("{} schema violation(s); fix the fields named by each pointer", .0.len())]
    Invalid(Vec<Violation>),
}

/// A registered job type and its compiled payload schema.
pub struct JobType {
    pub name: &'static str,
    pub version: u32,
    pub schema: Value,
    validator: Validator,
}

impl JobType {
    /// Compiles a kind's schema.
    pub fn compile(info: KindInfo) -> Result<Self, BadSchema> {
        let bad = |reason: String| BadSchema {
            name: info.name,
            reason,
        };
        let schema: Value = serde_json::from_str(info.schema).map_err(|e| bad(e.to_string()))?;
        let validator = validator(&schema).map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            name: info.name,
            version: info.version,
            schema,
            validator,
        })
    }

    /// Compiles a declared type's schema (see [`crate::Declaration`]).
    pub fn compile_declared(
        name: &'static str,
        version: u32,
        schema: &Value,
    ) -> Result<Self, BadSchema> {
        let validator = validator(schema).map_err(|e| BadSchema {
            name,
            reason: e.to_string(),
        })?;
        Ok(Self {
            name,
            version,
            schema: schema.clone(),
            validator,
        })
    }

    /// Violations are reported with pointers relative to the payload itself.
    pub fn validate(&self, payload: &Value) -> Result<(), SchemaError> {
        collect(&self.validator, payload, "")
    }
}

impl std::fmt::Debug for JobType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobType")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// The envelope schema and every job type, compiled once per process.
pub struct Registry {
    envelope_schema: Value,
    envelope: Validator,
    types: BTreeMap<&'static str, JobType>,
}

impl Registry {
    pub fn job_type(&self, name: &str) -> Result<&JobType, SchemaError> {
        self.types
            .get(name)
            .ok_or_else(|| SchemaError::UnknownType(name.to_owned()))
    }

    pub fn job_types(&self) -> impl Iterator<Item = &JobType> {
        self.types.values()
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.types.keys().copied()
    }

    pub fn envelope_schema(&self) -> &Value {
        &self.envelope_schema
    }

    /// Validates a whole envelope: its own shape first, then the payload against its type's
    /// schema, with pointers relative to the envelope (`/payload/...`).
    pub fn validate_envelope(&self, envelope: &Value) -> Result<(), SchemaError> {
        collect(&self.envelope, envelope, "")?;
        let name = envelope
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let job_type = self.job_type(name)?;
        let payload = envelope.get("payload").unwrap_or(&Value::Null);
        collect(&job_type.validator, payload, "/payload")
    }

    /// Validates an envelope whose payload is of `job_type`, registered here or not (a kind
    /// a consumer serves on its own).
    pub fn validate_envelope_as(
        &self,
        envelope: &Value,
        job_type: &JobType,
    ) -> Result<(), SchemaError> {
        collect(&self.envelope, envelope, "")?;
        let payload = envelope.get("payload").unwrap_or(&Value::Null);
        collect(&job_type.validator, payload, "/payload")
    }
}

fn collect(validator: &Validator, instance: &Value, prefix: &str) -> Result<(), SchemaError> {
    // Every job passes through here on both sides: the boolean check skips building error
    // iterators and paths for the valid majority.
    if validator.is_valid(instance) {
        return Ok(());
    }
    let violations: Vec<Violation> = validator
        .iter_errors(instance)
        .map(|error| Violation {
            pointer: format!("{prefix}{}", error.instance_path()),
            message: match error.kind() {
                // The library's wording ("{schema} is not allowed for {value}") reads backwards.
                jsonschema::error::ValidationErrorKind::Not { .. } => {
                    format!("{} is not an allowed value here", error.instance())
                }
                _ => error.to_string(),
            },
        })
        .collect();
    if violations.is_empty() {
        Ok(())
    } else {
        Err(SchemaError::Invalid(violations))
    }
}

fn validator(schema: &Value) -> Result<Validator, jsonschema::ValidationError<'static>> {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(schema)
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    // The schemas are compiled into the binary; a broken one is a build defect caught by the
    // unit tests, never a runtime condition.
    #[allow(clippy::expect_used)]
    let envelope_schema: Value = serde_json::from_str(include_str!("../envelope.schema.json"))
        .expect("embedded envelope schema is valid JSON");
    #[allow(clippy::expect_used)]
    let envelope = validator(&envelope_schema).expect("embedded envelope schema compiles");
    #[allow(clippy::expect_used)]
    let types = KINDS
        .iter()
        .map(|info| {
            let job_type = JobType::compile(*info).expect("embedded job schema compiles");
            (info.name, job_type)
        })
        .collect();
    Registry {
        envelope_schema,
        envelope,
        types,
    }
});

pub fn registry() -> &'static Registry {
    &REGISTRY
}
